//! The Kubernetes HTTP filter's glue, shared by both builds.
//!
//! A request's events (its headers, body chunks either way, call answers, the
//! end of the stream) reach [`Request`], which feeds them to the sans-IO gate
//! in `gatehouse-kubernetes` and applies what it returns through a [`Host`]:
//! the proxy-wasm host (`gatehouse-kubernetes-wasm`) or, later, Envoy's
//! dynamic-modules HTTP filter. A host only moves bytes, reads the clock and
//! keeps stats, filter state and records where its Envoy extension point puts
//! them; what to answer, hold, mask or record is decided here and in the gate.
//!
//! # Admission
//! Request headers go to [`Gate::admit`]. Its outcome is a local answer (a
//! `metav1.Status` refusal, a readiness or self-review answer), a hold for the
//! approval service, a body to read first (self-review), keys to fetch, or a
//! forward with header changes. A request waits for at most
//! [`MAX_FETCHES_PER_REQUEST`] key fetches, then is judged without the keys.
//! Every local answer writes its audit record to filter state before it is
//! sent, including the refusals no gate stands behind (an unconfigured
//! worker).
//!
//! # Responses
//! A response the rule masks is held whole or masked line by line (watch
//! streams); one that cannot be masked is refused with a 500 Status and
//! recorded so. After a `101` for a recorded exec or attach, both directions
//! arrive as body chunks and go to the [`ExecSession`] in order.
//!
//! # Host errors
//! Every failed host call is counted in `gatehouse_k8s_host_errors_total`
//! and logged; none is ignored. Where the glue cannot see or apply bytes it
//! must, the request is refused or the stream ended rather than passed.

pub mod stats;

pub use stats::{Counter, Family, HistogramStat};

use gatehouse_core::approval::ApprovalServiceConfig;
use gatehouse_core::identity::{Identity, KeyFetch, Verifier};
use gatehouse_core::policy::Decision;
use gatehouse_kubernetes::audit::{RequestAudit, Stage};
use gatehouse_kubernetes::gate::{
    ANONYMOUS, Admission, ApprovalStep, Conclusion, Forward, Gate, LocalResponse,
    MAX_REVIEW_BODY_BYTES, PendingReview, RequestHead, audit_filter_state_key, audit_id,
};
use gatehouse_kubernetes::masking::{BodyMasker, ResponseHead, ResponsePlan, WatchLines};
use gatehouse_kubernetes::recording::{ExecSession, Output};
use gatehouse_kubernetes::request_info::decode_request;
use gatehouse_kubernetes::status::{self, Status};
use std::cell::RefCell;
use std::rc::{Rc, Weak};

/// Key fetches one request may wait for before it is judged with what is there.
pub const MAX_FETCHES_PER_REQUEST: u8 = 2;

/// Which body an event is about: the client's (request) or the server's
/// (response). After an upgrade these are the two directions of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    FromClient,
    FromServer,
}

/// Which header map a call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headers {
    Request,
    Response,
}

pub use gatehouse_core::host::{HostError, Level};

/// What an event asks of the host for the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Flow {
    /// Let the (possibly changed) headers or bytes go on.
    Continue,
    /// Stop here: the filter answered, ended the stream, or holds it (and
    /// resumes it with [`Host::resume_request`]).
    Pause,
}

/// What the glue needs from the Envoy it runs in, for one event of one
/// request (or of the worker, for [`Worker`]). Every call that can fail says
/// so; none may panic. Headers and bodies are the current event's.
pub trait Host {
    /// The host's clock, unix microseconds.
    fn now_us(&mut self) -> Result<u64, HostError>;
    /// Every request header (names lowercase, pseudo-headers included).
    fn request_headers(&mut self) -> Result<Vec<(String, String)>, HostError>;
    /// One header's value (the first, when repeated).
    fn header(&mut self, map: Headers, name: &str) -> Result<Option<String>, HostError>;
    /// Sets a header, replacing any value.
    fn set_header(&mut self, map: Headers, name: &str, value: &str) -> Result<(), HostError>;
    /// Adds a header value (names may repeat).
    fn add_header(&mut self, map: Headers, name: &str, value: &str) -> Result<(), HostError>;
    /// Removes every value of a header.
    fn remove_header(&mut self, map: Headers, name: &str) -> Result<(), HostError>;
    /// The client's address (`ip:port`), when known.
    fn peer_address(&mut self) -> Result<Option<String>, HostError>;
    /// The first `size` bytes of a direction's buffered body.
    fn read_body(&mut self, direction: Direction, size: usize) -> Result<Vec<u8>, HostError>;
    /// Replaces the first `size` bytes of a direction's buffered body.
    fn replace_body(
        &mut self,
        direction: Direction,
        size: usize,
        bytes: &[u8],
    ) -> Result<(), HostError>;
    /// Answers the request locally with `status` and a JSON body.
    fn send_response(&mut self, status: u16, json_body: &[u8]) -> Result<(), HostError>;
    /// Lets a request held by [`Flow::Pause`] go on.
    fn resume_request(&mut self) -> Result<(), HostError>;
    /// Ends the stream both ways at once.
    fn reset_stream(&mut self) -> Result<(), HostError>;
    /// Sets request filter state `key` (the access log prints it).
    fn set_filter_state(&mut self, key: &str, value: &[u8]) -> Result<(), HostError>;
    /// Starts a call to the approval service; its answer goes to
    /// [`Request::on_approval_answer`] with the returned token.
    fn approval_call(
        &mut self,
        service: &ApprovalServiceConfig,
        method: &str,
        path: &str,
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError>;
    /// Adopts into `verifier` the key sets other workers fetched; whether any
    /// was new.
    fn adopt_shared_keys(&mut self, verifier: &mut Verifier) -> bool;
    /// Starts fetching a key set (a failed start is the host's to count and
    /// hand to [`Verifier::keys_failed`]); the call token, whose answer the
    /// host applies to the verifier before calling [`Request::on_keys_answer`].
    fn start_key_fetch(
        &mut self,
        verifier: &mut Verifier,
        fetch: &KeyFetch,
        now_seconds: i64,
    ) -> Option<u32>;
    /// Adds `by` to a counter.
    fn count(&mut self, counter: Counter, by: u64);
    /// Records one sample of a histogram.
    fn record(&mut self, histogram: HistogramStat, value: u64);
    /// Adds `by` to a labelled family's stat for `class` (a fixed
    /// vocabulary: the action) and `name` (from the configuration: a rule).
    fn count_labelled(&mut self, family: Family, class: &'static str, name: &str, by: u64);
    /// Hands one record (a JSON line) to the record path.
    fn emit_record(&mut self, line: &str, now_us: u64);
    /// Writes to Envoy's log.
    fn log(&mut self, level: Level, message: &str);
}

/// Counts and logs a failed host call: the one host-error policy.
fn host_failed(host: &mut impl Host, what: &str, error: &HostError) {
    host.count(Counter::HostErrors, 1);
    host.log(Level::Warn, &format!("gatehouse: {what} failed: {error}"));
}

/// The host's clock; the last reading (or 0) when it fails, counted.
fn clock(host: &mut impl Host, last_us: &mut u64) -> u64 {
    match host.now_us() {
        Ok(now) => *last_us = now,
        Err(error) => host_failed(host, "reading the clock", &error),
    }
    *last_us
}

fn signed(micros: u64) -> i64 {
    i64::try_from(micros).unwrap_or(i64::MAX)
}

fn unsigned(micros: i64) -> u64 {
    u64::try_from(micros).unwrap_or_default()
}

/// Per-worker state shared by every request on it.
pub struct Worker {
    gate: Gate,
    /// Part of audit-id seeds: distinct per worker.
    id: u32,
    /// Requests seen, part of audit-id seeds.
    sequence: u64,
    /// Recorded sessions open on this worker, for the tick.
    sessions: Vec<Weak<RefCell<ExecSession>>>,
    last_now_us: u64,
}

impl Worker {
    /// Compiles a worker's configuration, counting it as loaded or rejected;
    /// `None` (logged) when it cannot be used.
    pub fn configure(host: &mut impl Host, id: u32, config: &[u8]) -> Option<Worker> {
        match Gate::from_json(config) {
            Ok(gate) => {
                host.count(Counter::ConfigLoaded, 1);
                Some(Worker {
                    gate,
                    id,
                    sequence: 0,
                    sessions: Vec::new(),
                    last_now_us: 0,
                })
            }
            Err(error) => {
                host.log(
                    Level::Critical,
                    &format!("gatehouse kubernetes filter configuration: {error}"),
                );
                host.count(Counter::ConfigRejected, 1);
                None
            }
        }
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The gate, for a host connecting its approval grants and key upkeep.
    pub fn gate_mut(&mut self) -> &mut Gate {
        &mut self.gate
    }

    /// On the worker's tick: seals the aged chunks of open recorded sessions
    /// and forgets the ended ones.
    pub fn on_tick(&mut self, host: &mut impl Host) {
        let now = clock(host, &mut self.last_now_us);
        self.sessions.retain(|session| {
            let Some(session) = session.upgrade() else {
                return false;
            };
            // A session busy in a request event is sealed on the next tick.
            let Ok(mut session) = session.try_borrow_mut() else {
                return true;
            };
            for record in session.on_tick(now) {
                host.emit_record(&record, now);
            }
            true
        });
    }

    fn decision_family(&self) -> Family {
        if self.gate.mode().is_shadow() {
            Family::ShadowDecisions
        } else {
            Family::Decisions
        }
    }

    /// Counts a policy decision; no rule means the policy's default.
    fn count_decision(&self, host: &mut impl Host, decision: &Decision) {
        let rule = decision.rule.as_deref().unwrap_or("default");
        host.count_labelled(self.decision_family(), decision.action.as_str(), rule, 1);
    }
}

/// What happens to the response body.
enum BodyMode {
    PassThrough,
    /// Held whole (headers paused) and masked at the end.
    Buffered(BodyMasker),
    /// A watch stream, masked line by line.
    Watch(BodyMasker, WatchLines),
}

/// One request's glue.
pub struct Request {
    /// Part of the audit-id seed: distinct per request of a worker.
    context_id: u32,
    audit_id: String,
    /// Set once the request is admitted.
    forward: Option<Box<Forward>>,
    /// The approval service call this request is held for, and its step.
    approval: Option<(u32, Box<ApprovalStep>)>,
    /// The key fetch (call token) this request waits for.
    key_fetch: Option<u32>,
    fetches: u8,
    started_micros: i64,
    /// When the request's headers arrived (0: not yet).
    request_micros: i64,
    status: u16,
    body_mode: BodyMode,
    /// The response was refused with a Status: its body stays untouched.
    response_refused: bool,
    /// The filter state this instance writes audit Events to (one per mode).
    audit_key: &'static str,
    /// A self-check waiting for its request body.
    review: Option<Box<PendingReview>>,
    /// Whether the request has ended (with its headers or its last body chunk).
    request_complete: bool,
    /// The request body Envoy holds for this filter so far.
    request_body_bytes: usize,
    /// The recorded exec or attach session, once upgraded.
    session: Option<Rc<RefCell<ExecSession>>>,
    /// The glue ended the stream: nothing more passes either way.
    stream_ended: bool,
    last_now_us: u64,
    /// The clock as first read in the current event: one read serves the
    /// whole event (records, audit ids, decisions), not one per use.
    event_micros: Option<i64>,
}

impl Request {
    pub fn new(context_id: u32) -> Self {
        Request {
            context_id,
            audit_id: String::new(),
            forward: None,
            approval: None,
            key_fetch: None,
            fetches: 0,
            started_micros: 0,
            request_micros: 0,
            status: 0,
            body_mode: BodyMode::PassThrough,
            response_refused: false,
            audit_key: audit_filter_state_key(Default::default()),
            review: None,
            request_complete: false,
            request_body_bytes: 0,
            session: None,
            stream_ended: false,
            last_now_us: 0,
            event_micros: None,
        }
    }

    /// The current event's time: the clock is read at its first use in the
    /// event, and not again.
    fn now(&mut self, host: &mut impl Host) -> i64 {
        match self.event_micros {
            Some(now) => now,
            None => {
                let now = signed(clock(host, &mut self.last_now_us));
                self.event_micros = Some(now);
                now
            }
        }
    }

    /// Starts an event from the host: its time is read again when needed.
    fn begin_event(&mut self) {
        self.event_micros = None;
    }

    /// Whether this request waits for approval call `token`.
    pub fn awaits_approval(&self, token: u32) -> bool {
        self.approval.as_ref().is_some_and(|(t, _)| *t == token)
    }

    /// Whether this request waits for key fetch `token`.
    pub fn awaits_keys(&self, token: u32) -> bool {
        self.key_fetch == Some(token)
    }

    /// The request's headers arrived; `end_of_stream` when it has no body.
    pub fn on_request_headers(
        &mut self,
        worker: Option<&mut Worker>,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> Flow {
        self.begin_event();
        host.count(Counter::Requests, 1);
        self.request_complete = end_of_stream;
        if let Err(error) =
            host.set_filter_state("gatehouse_build", gatehouse_core::build::VERSION.as_bytes())
        {
            host_failed(host, "setting filter state gatehouse_build", &error);
        }
        self.request_micros = self.now(host);
        let flow = self.admit(worker, host);
        self.note_filter_time(host, self.request_micros);
        flow
    }

    /// A request body chunk; `size` is everything Envoy holds for the filter.
    pub fn on_request_body(
        &mut self,
        worker: Option<&mut Worker>,
        host: &mut impl Host,
        size: usize,
        end_of_stream: bool,
    ) -> Flow {
        self.begin_event();
        self.request_complete = end_of_stream;
        self.request_body_bytes = size;
        if self.stream_ended {
            return Flow::Pause;
        }
        // A request held for approval (an upgrade, such as a WebSocket exec,
        // has a body stream) stays held whatever arrives after its headers:
        // Envoy would otherwise let the headers go on with the first body
        // callback.
        if self.approval.is_some() {
            return Flow::Pause;
        }
        if self.review.is_some() {
            return self.answer_review(worker, host, size, end_of_stream);
        }
        // Only an admitted request's body moves on. One still being judged
        // (its issuer's keys are on their way) waits, buffered, with it;
        // continuing here would forward the request unjudged. An admitted
        // one that was upgraded to a recorded session is the client's side
        // of it: the session sees it first.
        if self.forward.is_some() {
            self.feed_session(host, Direction::FromClient, size)
        } else {
            Flow::Pause
        }
    }

    /// Request trailers: held with a request held for approval.
    pub fn on_request_trailers(&mut self) -> Flow {
        if self.approval.is_some() {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }

    /// The approval service answered call `token` (status 0: no answer).
    /// Whether it was this request's; the request is resumed or answered.
    pub fn on_approval_answer(
        &mut self,
        worker: Option<&mut Worker>,
        host: &mut impl Host,
        token: u32,
        status: u16,
        body: &[u8],
    ) -> bool {
        if !self.awaits_approval(token) {
            return false;
        }
        self.begin_event();
        let Some((_, step)) = self.approval.take() else {
            return false;
        };
        if self.conclude_approval(worker, host, step, status, body) == Flow::Continue {
            self.resume(host);
        }
        true
    }

    /// Key fetch `token` answered and the host applied it to the verifier:
    /// the request is judged again. Whether it was this request's.
    pub fn on_keys_answer(
        &mut self,
        worker: Option<&mut Worker>,
        host: &mut impl Host,
        token: u32,
    ) -> bool {
        if !self.awaits_keys(token) {
            return false;
        }
        self.begin_event();
        self.key_fetch = None;
        if self.admit(worker, host) == Flow::Continue {
            self.resume(host);
        }
        true
    }

    fn resume(&mut self, host: &mut impl Host) {
        if let Err(error) = host.resume_request() {
            host_failed(host, "resuming a held request", &error);
        }
    }

    /// The response's headers arrived.
    pub fn on_response_headers(
        &mut self,
        worker: Option<&mut Worker>,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> Flow {
        self.begin_event();
        self.started_micros = self.now(host);
        self.status = self
            .response_header(host, ":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        self.record(host);
        if self.status == 101 && self.start_recording(worker, host) == Flow::Pause {
            return Flow::Pause;
        }
        let masker = self.forward.as_ref().and_then(|f| f.body_masker.clone());
        let Some(masker) = masker else {
            return Flow::Continue;
        };
        let content_type = self.response_header(host, "content-type");
        let content_encoding = self.response_header(host, "content-encoding");
        let plan = masker.plan(&ResponseHead {
            status: self.status,
            content_type: content_type.as_deref(),
            content_encoding: content_encoding.as_deref(),
            end_of_stream,
        });
        match plan {
            ResponsePlan::Pass => Flow::Continue,
            ResponsePlan::Refuse(message) => self.refuse_response(host, &message),
            ResponsePlan::Lines => {
                // Masked events change length as they pass.
                if let Err(error) = host.remove_header(Headers::Response, "content-length") {
                    host_failed(host, "removing a watch's content-length", &error);
                }
                self.body_mode = BodyMode::Watch(masker, WatchLines::default());
                Flow::Continue
            }
            ResponsePlan::Hold => {
                self.body_mode = BodyMode::Buffered(masker);
                // Held until the body is masked, so an oversize body fails
                // cleanly; its length is set again only if masking changes it.
                Flow::Pause
            }
        }
    }

    /// A response body chunk; `size` is everything Envoy holds for the filter.
    pub fn on_response_body(
        &mut self,
        host: &mut impl Host,
        size: usize,
        end_of_stream: bool,
    ) -> Flow {
        self.begin_event();
        if self.stream_ended {
            return Flow::Pause;
        }
        if self.session.is_some() {
            let flow = self.feed_session(host, Direction::FromServer, size);
            if end_of_stream {
                self.record(host);
            }
            return flow;
        }
        match &self.body_mode {
            BodyMode::PassThrough => {
                if end_of_stream {
                    self.record(host);
                }
                return Flow::Continue;
            }
            // A chunk of a held body within the limit is only held: no work,
            // so no clock read and no filter-time sample.
            BodyMode::Buffered(masker) if !end_of_stream && size <= masker.max_body_bytes() => {
                return Flow::Pause;
            }
            BodyMode::Buffered(_) | BodyMode::Watch(..) => {}
        }
        let started = self.now(host);
        let flow = self.mask_body(host, size, end_of_stream);
        self.note_filter_time(host, started);
        flow
    }

    /// The stream is over: a recorded session's last records go out, and
    /// the request's duration is recorded.
    pub fn on_log(&mut self, host: &mut impl Host) {
        self.begin_event();
        if let Some(session) = self.session.take()
            && let Ok(mut session) = session.try_borrow_mut()
        {
            let now = unsigned(self.now(host));
            for record in session.finish(now) {
                host.emit_record(&record, now);
            }
        }
        if self.request_micros > 0 {
            let duration = self.now(host).saturating_sub(self.request_micros);
            host.record(HistogramStat::RequestDuration, unsigned(duration));
        }
    }

    /// A response header, `None` when absent or unreadable (counted).
    fn response_header(&mut self, host: &mut impl Host, name: &str) -> Option<String> {
        host.header(Headers::Response, name)
            .unwrap_or_else(|error| {
                host_failed(host, &format!("reading response header {name}"), &error);
                None
            })
    }

    /// Judges the request and applies the outcome.
    fn admit(&mut self, worker: Option<&mut Worker>, host: &mut impl Host) -> Flow {
        let now = self.now(host);
        let (headers, headers_read) = match host.request_headers() {
            Ok(headers) => (headers, true),
            Err(error) => {
                // Judged without them: the gate refuses what it cannot read.
                host_failed(host, "reading request headers", &error);
                (Vec::new(), false)
            }
        };
        let peer = host.peer_address().unwrap_or_else(|error| {
            host_failed(host, "reading the peer address", &error);
            None
        });
        let pseudo = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
        };
        let Some(worker) = worker else {
            let refusal = status::status(
                503,
                "ServiceUnavailable",
                "gatehouse kubernetes filter is not configured",
            );
            let head = RequestHead {
                method: pseudo(":method"),
                path: pseudo(":path"),
                headers: &headers,
                peer: peer.as_deref(),
                audit_id: &self.audit_id,
                now_micros: now,
            };
            let response = gateless_refusal(&head, &refusal);
            return self.respond(None, host, &response);
        };
        if self.audit_id.is_empty() {
            worker.sequence = worker.sequence.wrapping_add(1);
            self.audit_id = audit_id(
                unsigned(now),
                (u64::from(worker.id) << 48) ^ (u64::from(self.context_id) << 24) ^ worker.sequence,
            );
        }
        let head = RequestHead {
            method: pseudo(":method"),
            path: pseudo(":path"),
            headers: &headers,
            peer: peer.as_deref(),
            audit_id: &self.audit_id,
            now_micros: now,
        };
        self.audit_key = audit_filter_state_key(worker.gate.mode());
        match judge(&mut worker.gate, host, &head, self.fetches) {
            Admission::Respond(response) => self.respond(Some(worker), host, &response),
            Admission::ReadBody(pending) => {
                self.review = Some(pending);
                if self.request_complete {
                    // The body ended while the keys were fetched (or there is none).
                    return self.answer_review(Some(worker), host, self.request_body_bytes, true);
                }
                Flow::Pause
            }
            Admission::Approval(step) => self.hold_for_approval(worker, host, step),
            Admission::FetchKeys(fetch) if self.fetches < MAX_FETCHES_PER_REQUEST => {
                self.fetches = self.fetches.saturating_add(1);
                let started = worker.gate.verifier_mut().and_then(|verifier| {
                    host.start_key_fetch(verifier, &fetch, now.div_euclid(1_000_000))
                });
                match started {
                    Some(token) => {
                        self.key_fetch = Some(token);
                        Flow::Pause
                    }
                    // Not started: counts as a fetch; judged again.
                    None => self.admit(Some(worker), host),
                }
            }
            Admission::FetchKeys(fetch) => {
                // The gate asked for keys past the cap (it never should,
                // after `keys_unavailable`): refuse rather than loop.
                let refusal = status::unauthorized(&format!(
                    "gatehouse could not obtain the signing keys of {}",
                    fetch.issuer
                ));
                let response = gateless_refusal(&head, &refusal);
                self.respond(Some(worker), host, &response)
            }
            Admission::Forward(forward) => {
                let current = headers_read.then_some(headers.as_slice());
                self.forward(worker, host, forward, current)
            }
        }
    }

    /// Applies an admitted request's header changes and keeps its forward.
    /// With the request's `current` headers (read in this event), a change
    /// they already show is not made: each is a host call.
    fn forward(
        &mut self,
        worker: &Worker,
        host: &mut impl Host,
        forward: Box<Forward>,
        current: Option<&[(String, String)]>,
    ) -> Flow {
        worker.count_decision(host, forward.decision());
        let map = Headers::Request;
        for name in &forward.remove_headers {
            if current.is_some_and(|headers| values(headers, name).next().is_none()) {
                continue;
            }
            if let Err(error) = host.remove_header(map, name) {
                host_failed(host, &format!("removing request header {name}"), &error);
            }
        }
        for (name, value) in &forward.set_headers {
            if current.is_some_and(|headers| values(headers, name).eq([value.as_str()])) {
                continue;
            }
            if let Err(error) = host.set_header(map, name, value) {
                host_failed(host, &format!("setting request header {name}"), &error);
            }
        }
        for (name, value) in &forward.add_headers {
            if let Err(error) = host.add_header(map, name, value) {
                host_failed(host, &format!("adding request header {name}"), &error);
            }
        }
        self.forward = Some(forward);
        Flow::Continue
    }

    /// Sends a local answer, with its record and stats.
    fn respond(
        &mut self,
        worker: Option<&Worker>,
        host: &mut impl Host,
        response: &LocalResponse,
    ) -> Flow {
        match response.status {
            401 => host.count(Counter::Unauthenticated, 1),
            400..=599 => host.count(Counter::Denied, 1),
            // The filter's own readiness and self-check answers.
            _ => {}
        }
        if let (Some(worker), Some(decision)) = (worker, &response.decision) {
            worker.count_decision(host, decision);
        }
        self.status = response.status;
        if let Err(error) = host.set_filter_state(self.audit_key, response.record.as_bytes()) {
            host_failed(host, "writing a local answer's record", &error);
        }
        if let Err(error) = host.send_response(response.status, response.body.as_bytes()) {
            host_failed(host, "sending a local answer", &error);
        }
        Flow::Pause
    }

    /// Makes the approval service call a step names and holds the request
    /// for its answer (other requests go on); a refusal that names a filed
    /// request also waits for it (see [`ApprovalStep::respond_now`]).
    fn hold_for_approval(
        &mut self,
        worker: &mut Worker,
        host: &mut impl Host,
        step: Box<ApprovalStep>,
    ) -> Flow {
        let started = match worker.gate.policy().approval_service() {
            Some(service) => host.approval_call(
                service,
                step.call.method,
                &step.call.path,
                step.call.body.as_bytes(),
                step.call.timeout_ms,
            ),
            None => Err(HostError("no approval service configured".to_owned())),
        };
        if let Err(error) = &started {
            host_failed(host, "calling the approval service", error);
        }
        match started {
            Ok(token) => {
                self.approval = Some((token, step));
                Flow::Pause
            }
            Err(_) => self.conclude_approval(Some(worker), host, step, 0, &[]),
        }
    }

    /// Applies the approval service's answer to a held request.
    fn conclude_approval(
        &mut self,
        worker: Option<&mut Worker>,
        host: &mut impl Host,
        step: Box<ApprovalStep>,
        status: u16,
        body: &[u8],
    ) -> Flow {
        let now = self.now(host);
        let Some(worker) = worker else {
            return self.admit(None, host);
        };
        match worker.gate.conclude_approval(*step, status, body, now) {
            // Another event than the headers': they are not at hand.
            Conclusion::Forward(forward) => self.forward(worker, host, forward, None),
            Conclusion::Respond(response) => self.respond(Some(worker), host, &response),
        }
    }

    /// Answers a self-check once its body is whole (or too large to read).
    fn answer_review(
        &mut self,
        worker: Option<&mut Worker>,
        host: &mut impl Host,
        size: usize,
        end_of_stream: bool,
    ) -> Flow {
        if !end_of_stream && size <= MAX_REVIEW_BODY_BYTES {
            return Flow::Pause;
        }
        let Some(pending) = self.review.take() else {
            return Flow::Continue;
        };
        // One byte past the limit is enough for the gate to refuse it.
        let body = host
            .read_body(Direction::FromClient, size.min(MAX_REVIEW_BODY_BYTES + 1))
            .unwrap_or_else(|error| {
                // An empty body is refused as malformed.
                host_failed(host, "reading a self-review body", &error);
                Vec::new()
            });
        let now = self.now(host);
        let Some(worker) = worker else {
            return self.admit(None, host);
        };
        let response = worker.gate.answer_review(*pending, &body, now);
        self.respond(Some(worker), host, &response)
    }

    /// Answers with a Status instead of a response that could not be masked.
    fn refuse_response(&mut self, host: &mut impl Host, message: &str) -> Flow {
        let refusal = status::status(500, "InternalError", message);
        self.status = 500;
        self.body_mode = BodyMode::PassThrough;
        self.response_refused = true;
        self.record(host);
        if let Err(error) = host.send_response(500, refusal.to_json().as_bytes()) {
            host_failed(host, "sending a response refusal", &error);
        }
        Flow::Pause
    }

    /// Writes the request's audit Events to filter state (serialized once;
    /// written again, only their end time moves).
    fn record(&mut self, host: &mut impl Host) {
        let now = self.now(host);
        if let Some(forward) = &mut self.forward {
            let records = forward.current_records(self.status, self.started_micros, now);
            if let Err(error) = host.set_filter_state(self.audit_key, records.as_bytes()) {
                host_failed(host, "writing a request's record", &error);
            }
        }
    }

    /// Records the time the filter spent since `started` (unix µs).
    fn note_filter_time(&mut self, host: &mut impl Host, started: i64) {
        let ended = signed(clock(host, &mut self.last_now_us));
        let spent = ended.saturating_sub(started);
        host.record(HistogramStat::FilterTime, unsigned(spent));
    }

    /// Starts recording the upgraded session, when the admitting rule asked;
    /// `Pause` when the stream was ended instead (it cannot be recorded).
    fn start_recording(&mut self, worker: Option<&mut Worker>, host: &mut impl Host) -> Flow {
        let Some(plan) = self.forward.as_mut().and_then(|f| f.recording.take()) else {
            return Flow::Continue;
        };
        let protocol = match self.response_header(host, "sec-websocket-protocol") {
            Some(p) if !p.is_empty() => p,
            _ => self
                .response_header(host, "x-stream-protocol-version")
                .unwrap_or_default(),
        };
        let extensions = self
            .response_header(host, "sec-websocket-extensions")
            .unwrap_or_default();
        let now = unsigned(self.now(host));
        let (session, output) = plan.start(&protocol, &extensions, now);
        let session = Rc::new(RefCell::new(session));
        if let Some(worker) = worker {
            worker.sessions.push(Rc::downgrade(&session));
        }
        self.session = Some(session);
        self.apply_session_output(host, output, None, 0)
    }

    /// Hands one body callback's bytes to the recorded session and applies
    /// what it returns.
    fn feed_session(&mut self, host: &mut impl Host, direction: Direction, size: usize) -> Flow {
        let Some(session) = self.session.clone() else {
            return Flow::Continue;
        };
        let started = self.now(host);
        let bytes = match host.read_body(direction, size) {
            Ok(bytes) => bytes,
            Err(error) => {
                // Unseen bytes cannot be recorded: nothing more passes.
                host_failed(host, "reading an exec stream", &error);
                return self.end_session(host, direction, size);
            }
        };
        let output = match session.try_borrow_mut() {
            Ok(mut session) if direction == Direction::FromClient => {
                session.on_client(&bytes, unsigned(started))
            }
            Ok(mut session) => session.on_server(&bytes, unsigned(started)),
            Err(_) => Output {
                end: true,
                ..Output::default()
            },
        };
        let flow = self.apply_session_output(host, output, Some(direction), size);
        self.note_filter_time(host, started);
        flow
    }

    /// Emits a session's records, puts its bytes in place of the callback's,
    /// and ends the stream when it says so.
    fn apply_session_output(
        &mut self,
        host: &mut impl Host,
        output: Output,
        direction: Option<Direction>,
        size: usize,
    ) -> Flow {
        let now = unsigned(self.now(host));
        for record in &output.records {
            host.emit_record(record, now);
        }
        if let (Some(bytes), Some(direction)) = (&output.rewrite, direction)
            && let Err(error) = host.replace_body(direction, size, bytes)
        {
            host_failed(host, "rewriting an exec stream (ending it)", &error);
            return self.end_session(host, direction, size);
        }
        if output.end {
            return match direction {
                Some(direction) => self.end_session(host, direction, size),
                None => {
                    self.reset(host);
                    Flow::Pause
                }
            };
        }
        Flow::Continue
    }

    /// Ends a session the filter cannot go on recording: nothing more passes.
    fn end_session(&mut self, host: &mut impl Host, direction: Direction, size: usize) -> Flow {
        if let Err(error) = host.replace_body(direction, size, b"") {
            host_failed(host, "dropping a stream's bytes", &error);
        }
        self.reset(host);
        Flow::Pause
    }

    fn reset(&mut self, host: &mut impl Host) {
        self.stream_ended = true;
        if let Err(error) = host.reset_stream() {
            host_failed(host, "resetting a stream", &error);
        }
    }

    /// Masks one response body callback (the body is being masked).
    fn mask_body(&mut self, host: &mut impl Host, size: usize, end_of_stream: bool) -> Flow {
        let body_mode = std::mem::replace(&mut self.body_mode, BodyMode::PassThrough);
        let (flow, body_mode) = match body_mode {
            BodyMode::PassThrough => (Flow::Continue, BodyMode::PassThrough),
            BodyMode::Watch(masker, mut lines) => {
                let flow = self.mask_watch(host, &masker, &mut lines, size, end_of_stream);
                (flow, BodyMode::Watch(masker, lines))
            }
            BodyMode::Buffered(masker) => {
                let flow = self.mask_buffered(host, &masker, size, end_of_stream);
                (flow, BodyMode::Buffered(masker))
            }
        };
        // A refused response's body is left alone for good.
        if !self.response_refused {
            self.body_mode = body_mode;
        }
        if flow == Flow::Continue && end_of_stream {
            self.record(host);
        }
        flow
    }

    /// Masks one chunk of a watch stream, line by line.
    fn mask_watch(
        &mut self,
        host: &mut impl Host,
        masker: &BodyMasker,
        lines: &mut WatchLines,
        size: usize,
        end_of_stream: bool,
    ) -> Flow {
        let chunk = match host.read_body(Direction::FromServer, size) {
            Ok(chunk) => chunk,
            Err(error) => {
                host_failed(host, "reading a watch chunk", &error);
                return self.end_session(host, Direction::FromServer, size);
            }
        };
        let known_fields = lines.fields.len();
        match lines.push(&chunk, end_of_stream, masker) {
            Ok(out) => {
                if let Err(error) = host.replace_body(Direction::FromServer, size, &out) {
                    host_failed(host, "rewriting a watch event", &error);
                    return self.refuse_response(host, "gatehouse could not rewrite a watch event");
                }
                let fields = lines.fields.clone();
                if let Some(forward) = self.forward.as_mut() {
                    forward.set_masked_fields(&fields);
                }
                // A watch usually ends by the client going away, with no
                // last body callback: keep the record current.
                if fields.len() > known_fields {
                    self.record(host);
                }
                Flow::Continue
            }
            // Headers are gone: end the stream rather than pass clear data.
            Err(_) => self.end_session(host, Direction::FromServer, size),
        }
    }

    /// Masks a held response once it is whole.
    fn mask_buffered(
        &mut self,
        host: &mut impl Host,
        masker: &BodyMasker,
        size: usize,
        end_of_stream: bool,
    ) -> Flow {
        if size > masker.max_body_bytes() {
            let limit = masker.max_body_bytes();
            return self.refuse_response(
                host,
                &format!("gatehouse must mask this response but it exceeds {limit} bytes"),
            );
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        let body = match host.read_body(Direction::FromServer, size) {
            Ok(body) => body,
            Err(error) => {
                host_failed(host, "reading a response body", &error);
                return self.refuse_response(host, "gatehouse could not read the response");
            }
        };
        match masker.mask(&body) {
            Ok(masked) => {
                // Nothing masked: the body is unchanged and stays in Envoy.
                if !masked.fields.is_empty() {
                    if let Err(error) = host.replace_body(Direction::FromServer, size, &masked.body)
                    {
                        host_failed(host, "rewriting a response", &error);
                        return self
                            .refuse_response(host, "gatehouse could not rewrite a response");
                    }
                    let length = masked.body.len().to_string();
                    if let Err(error) =
                        host.set_header(Headers::Response, "content-length", &length)
                    {
                        host_failed(host, "setting a masked response's content-length", &error);
                    }
                }
                if let Some(forward) = self.forward.as_mut() {
                    forward.set_masked_fields(&masked.fields);
                }
                Flow::Continue
            }
            Err(error) => self.refuse_response(
                host,
                &format!("gatehouse could not mask the response: {error}"),
            ),
        }
    }
}

/// The values of header `name` (any case) in `headers`.
fn values<'a>(headers: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Asks the gate about a request, adopting other workers' keys when it wants
/// some, and judging without them once the request waited for
/// [`MAX_FETCHES_PER_REQUEST`] fetches.
fn judge(gate: &mut Gate, host: &mut impl Host, head: &RequestHead<'_>, fetches: u8) -> Admission {
    let mut admission = gate.admit(head);
    if let Admission::FetchKeys(_) = admission
        && gate
            .verifier_mut()
            .is_some_and(|verifier| host.adopt_shared_keys(verifier))
    {
        // Another worker already had them.
        admission = gate.admit(head);
    }
    match admission {
        Admission::FetchKeys(fetch) if fetches >= MAX_FETCHES_PER_REQUEST => {
            gate.keys_unavailable(head, &fetch.issuer)
        }
        other => other,
    }
}

/// A refusal no compiled gate stands behind (the worker has no
/// configuration), recorded like every other: an anonymous caller, no policy.
fn gateless_refusal(head: &RequestHead<'_>, refusal: &Status) -> LocalResponse {
    let info = decode_request(head.method, head.path)
        .map(|decoded| decoded.info)
        .unwrap_or_default();
    let mut audit = RequestAudit::new(
        head.audit_id,
        head.path,
        &info,
        &Identity::claimed(ANONYMOUS),
        head.now_micros,
    )
    .with_headers(
        head.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        head.peer,
    );
    let record = audit
        .event_json(Stage::ResponseComplete, refusal, head.now_micros)
        .unwrap_or_else(|_| r#"{"error":"unserializable audit event"}"#.to_owned());
    LocalResponse {
        status: refusal.http_status(),
        body: refusal.to_json(),
        record,
        decision: None,
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests;
