//! proxy-wasm glue for gatehouse's Kubernetes HTTP filter.
//!
//! Maps Envoy's HTTP-filter callbacks onto `gatehouse-kubernetes` and applies
//! what it returns. It makes no decisions: [`Gate::admit`] says whether to
//! answer locally, fetch keys first, or forward with which headers.
//!
//! Key sets: the first requests of a worker pause while their own fetch of the
//! issuer's JWKS (from its Envoy cluster) is in flight and resume when it
//! answers; fetched sets reach every worker and scheduled refreshes run on the
//! tick, as [`gatehouse_host::keys`] describes (prefix `gatehouse_k8s_jwks`).
//!
//! Records: each request's audit Events (ResponseStarted for long-running
//! requests, then ResponseComplete) go to filter state `gatehouse_k8s_audit`,
//! one JSON Event per line, which the listener's access log prints. A
//! recorded exec or attach session ([`ExecSession`]) gets both directions of
//! the upgraded stream, in order, and its records go to the audit service
//! ([`gatehouse_host::records`]); the tick seals its aged chunks.

use gatehouse_core::policy::Decision;
use gatehouse_core::record::FilterMode;
use gatehouse_host as host;
use gatehouse_kubernetes::gate::{
    Admission, ApprovalMemory, ApprovalStep, Conclusion, Forward, Gate, LocalResponse,
    MAX_REVIEW_BODY_BYTES, PendingReview, RecentRefusal, RequestHead, audit_filter_state_key,
    audit_id, remember,
};
use gatehouse_kubernetes::masking::{BodyMasker, ResponseHead, ResponsePlan, WatchLines};
use gatehouse_kubernetes::recording::{ExecSession, Output};
use host::approvals::GrantDistribution;
use host::keys::KeyDistribution;
use host::metrics::{Histogram, LabelledCounter};
use host::{BufferType, LogLevel, MapType, MetricType};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::rc::{Rc, Weak};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        host::log(LogLevel::Critical, &format!("gatehouse kubernetes filter panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(KubernetesRoot { context_id, ..KubernetesRoot::default() })
    });
}}

/// Tick period: adopts key sets other workers fetched and runs due refreshes.
const TICK_MS: u32 = 1_000;
/// Tick period with the approval service: grants are read at its poll period.
const APPROVALS_TICK_MS: u32 = 200;
/// Shared-data key of the grants the approval service publishes (and, with
/// suffixes, of what the workers share between publications).
const GRANTS_KEY: &str = "gatehouse_k8s_grants";
/// Shared-data key of the approval refusals workers repeat for a few seconds.
const REFUSALS_KEY: &str = "gatehouse_k8s_grants_refusals";

/// Approval memory shared by this Envoy's workers through shared data, so
/// kubectl's immediate retry gets the same answer on any worker.
#[derive(Debug)]
struct SharedApprovalMemory;

impl SharedApprovalMemory {
    fn refusals() -> Vec<RecentRefusal> {
        host::approvals::shared_lines(REFUSALS_KEY)
            .iter()
            .filter_map(|line| RecentRefusal::from_line(line))
            .collect()
    }

    fn store(refusals: &[RecentRefusal], lines: &mut Vec<String>) {
        *lines = refusals.iter().map(RecentRefusal::to_line).collect();
    }
}

impl ApprovalMemory for SharedApprovalMemory {
    fn repeated_refusal(&self, subject: &str, hash: &str, now_micros: i64) -> Option<String> {
        Self::refusals()
            .into_iter()
            .find(|r| r.subject == subject && r.hash == hash && r.until_micros > now_micros)
            .map(|r| r.reason)
    }

    fn remember_refusal(&self, subject: &str, hash: &str, until_micros: i64, reason: &str) {
        host::approvals::update_shared_lines(REFUSALS_KEY, |lines| {
            let mut refusals: Vec<RecentRefusal> = lines
                .iter()
                .filter_map(|line| RecentRefusal::from_line(line))
                .collect();
            remember(
                &mut refusals,
                RecentRefusal {
                    subject: subject.to_owned(),
                    hash: hash.to_owned(),
                    until_micros,
                    reason: reason.to_owned(),
                },
            );
            Self::store(&refusals, lines);
        });
    }

    fn forget_refusals(&self, subject: &str, hash: &str) {
        host::approvals::update_shared_lines(REFUSALS_KEY, |lines| {
            let refusals: Vec<RecentRefusal> = lines
                .iter()
                .filter_map(|line| RecentRefusal::from_line(line))
                .filter(|r| r.subject != subject || r.hash != hash)
                .collect();
            Self::store(&refusals, lines);
        });
    }

    fn in_use(&self, id: &str) -> bool {
        host::approvals::shared_in_use(GRANTS_KEY, id)
    }

    fn mark_in_use(&self, id: &str) {
        host::approvals::share_used(GRANTS_KEY, id);
    }
}
/// Key fetches one request may wait for before it is judged with what is there.
const MAX_FETCHES_PER_REQUEST: u8 = 2;

#[derive(Default, Clone, Copy)]
struct Metrics {
    requests: Option<u32>,
    denied: Option<u32>,
    unauthenticated: Option<u32>,
    /// `gatehouse_k8s_config_loaded_total` / `_rejected_total`: configurations
    /// a VM accepted or refused.
    config_loaded: Option<u32>,
    config_rejected: Option<u32>,
    /// `gatehouse_k8s_request_duration_us` (histogram): request headers to the
    /// end of the stream, for requests the filter saw both ends of.
    request_duration: Histogram,
    /// `gatehouse_k8s_filter_time_us` (histogram): time the filter spent judging
    /// a request's headers or masking a response body callback.
    filter_time: Histogram,
}

impl Metrics {
    fn define() -> Metrics {
        let counter = |name| host::metrics::define(MetricType::Counter, name, "kubernetes");
        Metrics {
            requests: counter("gatehouse_k8s_requests_total"),
            denied: counter("gatehouse_k8s_denied_total"),
            unauthenticated: counter("gatehouse_k8s_unauthenticated_total"),
            config_loaded: counter("gatehouse_k8s_config_loaded_total"),
            config_rejected: counter("gatehouse_k8s_config_rejected_total"),
            request_duration: Histogram::define("gatehouse_k8s_request_duration_us", "kubernetes"),
            filter_time: Histogram::define("gatehouse_k8s_filter_time_us", "kubernetes"),
        }
    }
}

/// `gatehouse_k8s_decisions_total{action, rule}`: requests by policy decision;
/// a shadow instance's would-be decisions go to
/// `gatehouse_k8s_shadow_decisions_total`, apart from the enforcing instance's.
fn decisions_family(mode: FilterMode) -> LabelledCounter {
    let name = if mode.is_shadow() {
        "gatehouse_k8s_shadow_decisions_total"
    } else {
        "gatehouse_k8s_decisions_total"
    };
    LabelledCounter::with_class(name, Some("action"), "rule")
}

/// Counts a policy decision; no rule means the policy's default.
fn count_decision(decisions: &mut LabelledCounter, decision: &Decision) {
    let rule = decision.rule.as_deref().unwrap_or("default");
    decisions.add(decision.action.as_str(), rule, 1);
}

fn count(metric: Option<u32>) {
    if let Some(id) = metric {
        let _ = host::increment_metric(id, 1);
    }
}

/// Per-worker state shared by the root context and every request on it.
struct Worker {
    gate: Gate,
    keys: KeyDistribution,
    /// The approval service's grants, when configured.
    grants: Option<GrantDistribution>,
    /// Requests seen, part of audit-id seeds.
    sequence: u64,
    decisions: LabelledCounter,
    /// Recorded sessions open on this worker, for the tick.
    sessions: Vec<Weak<RefCell<ExecSession>>>,
}

type SharedWorker = Rc<RefCell<Option<Worker>>>;

fn now_micros() -> i64 {
    host::now_micros()
        .ok()
        .and_then(|micros| i64::try_from(micros).ok())
        .unwrap_or_default()
}

fn now_unsigned() -> u64 {
    host::now_micros().unwrap_or_default()
}

fn now_seconds() -> i64 {
    now_micros().div_euclid(1_000_000)
}

impl Worker {
    /// Hands a key-fetch answer to the verifier; whether it was a key fetch.
    fn on_key_response(&mut self, token: u32, body_size: usize) -> bool {
        let Worker { gate, keys, .. } = self;
        gate.verifier_mut()
            .and_then(|verifier| keys.on_response(verifier, token, body_size, now_seconds()))
            .is_some()
    }
}

#[derive(Default)]
struct KubernetesRoot {
    metrics: Metrics,
    worker: SharedWorker,
    context_id: u32,
}

impl Context for KubernetesRoot {
    fn on_done(&mut self) -> bool {
        host::records::flush();
        true
    }

    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        if let Some(worker) = self.worker.borrow_mut().as_mut() {
            if let Some(grants) = worker.grants.as_mut()
                && grants.on_response(token, body_size)
            {
                return;
            }
            worker.on_key_response(token, body_size);
        }
    }
}

impl RootContext for KubernetesRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        self.metrics = Metrics::define();
        let config = host::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_else(|| b"{}".to_vec());
        let tick_ms;
        match Gate::from_json(&config) {
            Ok(mut gate) => {
                let mode = gate.mode();
                let grants = gate
                    .policy()
                    .approval_service()
                    .map(|service| GrantDistribution::new(GRANTS_KEY, service.clone()));
                if let Some(grants) = &grants {
                    gate.set_grant_book(grants.book());
                    gate.set_approval_memory(Rc::new(SharedApprovalMemory));
                }
                tick_ms = if grants.is_some() {
                    APPROVALS_TICK_MS
                } else {
                    TICK_MS
                };
                *self.worker.borrow_mut() = Some(Worker {
                    gate,
                    grants,
                    keys: KeyDistribution::new("gatehouse_k8s_jwks"),
                    sequence: 0,
                    decisions: decisions_family(mode),
                    sessions: Vec::new(),
                });
                count(self.metrics.config_loaded);
            }
            Err(error) => {
                host::log(
                    LogLevel::Critical,
                    &format!("gatehouse kubernetes filter configuration: {error}"),
                );
                count(self.metrics.config_rejected);
                return false;
            }
        }
        if let Err(status) = host::set_tick_period_ms(tick_ms) {
            host::log(
                LogLevel::Warn,
                &format!("gatehouse: no tick, keys refresh only on demand: {status:?}"),
            );
        }
        true
    }

    fn on_tick(&mut self) {
        let mut worker = self.worker.borrow_mut();
        if let Some(Worker {
            gate,
            keys,
            grants,
            sessions,
            ..
        }) = worker.as_mut()
        {
            if let Some(grants) = grants.as_mut() {
                grants.on_tick(u64::try_from(now_micros() / 1000).unwrap_or_default());
            }
            if let Some(verifier) = gate.verifier_mut() {
                keys.on_tick(verifier, now_seconds());
            }
            let now = now_unsigned();
            sessions.retain(|session| {
                let Some(session) = session.upgrade() else {
                    return false;
                };
                let Ok(mut session) = session.try_borrow_mut() else {
                    return true;
                };
                for record in session.on_tick(now) {
                    host::records::emit_at(&record, now);
                }
                true
            });
        }
        host::records::flush();
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(KubernetesRequest {
            metrics: self.metrics,
            worker: Rc::clone(&self.worker),
            context_id,
            root_id: self.context_id,
            audit_id: String::new(),
            forward: None,
            approval: None,
            key_fetch: None,
            fetches: 0,
            started_micros: 0,
            request_micros: 0,
            status: 0,
            body_mode: BodyMode::PassThrough,
            audit_key: audit_filter_state_key(Default::default()),
            review: None,
            request_complete: false,
            request_body_bytes: 0,
            session: None,
        }))
    }
}

struct KubernetesRequest {
    metrics: Metrics,
    worker: SharedWorker,
    context_id: u32,
    root_id: u32,
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
}

/// What happens to the response body.
enum BodyMode {
    PassThrough,
    /// Held whole (headers paused) and masked at the end.
    Buffered(BodyMasker),
    /// A watch stream, masked line by line.
    Watch(BodyMasker, WatchLines),
}

impl KubernetesRequest {
    /// Judges the request and applies the outcome; the action for Envoy.
    fn admit(&mut self) -> Action {
        let now = now_micros();
        let headers = host::get_headers(MapType::HttpRequestHeaders).unwrap_or_default();
        let pseudo = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
        };
        let peer = host::get_property(&["source", "address"])
            .ok()
            .flatten()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let shared = Rc::clone(&self.worker);
        let mut guard = shared.borrow_mut();
        let Some(worker) = guard.as_mut() else {
            drop(guard);
            return self.refuse_unconfigured();
        };
        if self.audit_id.is_empty() {
            worker.sequence = worker.sequence.wrapping_add(1);
            self.audit_id = audit_id(
                u64::try_from(now).unwrap_or_default(),
                (u64::from(self.root_id) << 48)
                    ^ (u64::from(self.context_id) << 24)
                    ^ worker.sequence,
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
        let mut admission = worker.gate.admit(&head);
        if let Admission::FetchKeys(_) = admission {
            // Another worker may already have the keys.
            let Worker { gate, keys, .. } = &mut *worker;
            if gate
                .verifier_mut()
                .is_some_and(|verifier| keys.adopt_shared(verifier))
            {
                admission = worker.gate.admit(&head);
            }
        }
        let keys_missing = match &admission {
            Admission::FetchKeys(fetch) if self.fetches >= MAX_FETCHES_PER_REQUEST => {
                Some(fetch.issuer.clone())
            }
            _ => None,
        };
        if let Some(issuer) = keys_missing {
            // Waited for keys as often as allowed: judged without them.
            admission = worker.gate.keys_unavailable(&head, &issuer);
        }
        match admission {
            Admission::Respond(response) => self.respond(worker, &response),
            Admission::ReadBody(pending) => {
                self.review = Some(pending);
                if self.request_complete {
                    // The body ended while the keys were fetched (or there is none).
                    drop(guard);
                    return self.answer_review(self.request_body_bytes, true);
                }
                Action::Pause
            }
            Admission::Approval(step) => {
                drop(guard);
                self.hold_for_approval(step)
            }
            Admission::FetchKeys(fetch) if self.fetches < MAX_FETCHES_PER_REQUEST => {
                self.fetches = self.fetches.saturating_add(1);
                let Worker { gate, keys, .. } = worker;
                let started = gate
                    .verifier_mut()
                    .and_then(|verifier| keys.start(verifier, &fetch, now.div_euclid(1_000_000)));
                match started {
                    Some(token) => {
                        self.key_fetch = Some(token);
                        Action::Pause
                    }
                    None => {
                        drop(guard);
                        self.admit()
                    }
                }
            }
            Admission::FetchKeys(fetch) => {
                // Waited for keys as often as allowed: refuse rather than loop.
                count(self.metrics.unauthenticated);
                let refusal = gatehouse_kubernetes::status::unauthorized(&format!(
                    "gatehouse could not obtain the signing keys of {}",
                    fetch.issuer
                ));
                let _ = host::send_http_response(
                    401,
                    &[("content-type", "application/json")],
                    refusal.to_json().as_bytes(),
                );
                Action::Pause
            }
            Admission::Forward(forward) => {
                count_decision(&mut worker.decisions, forward.decision());
                drop(guard);
                apply_upstream_headers(&forward);
                self.forward = Some(forward);
                Action::Continue
            }
        }
    }

    /// Sends the gate's own answer, with its record and stats.
    fn respond(&self, worker: &mut Worker, response: &LocalResponse) -> Action {
        match response.status {
            401 => count(self.metrics.unauthenticated),
            400..=599 => count(self.metrics.denied),
            // The filter's own readiness and self-check answers.
            _ => {}
        }
        if let Some(decision) = &response.decision {
            count_decision(&mut worker.decisions, decision);
        }
        let _ = host::set_property(&[self.audit_key], response.record.as_bytes());
        let sent = host::send_http_response(
            u32::from(response.status),
            &[("content-type", "application/json")],
            response.body.as_bytes(),
        );
        if sent.is_err() {
            host::log(LogLevel::Error, "gatehouse: could not send a local answer");
        }
        Action::Pause
    }

    /// Makes the approval service call a step names and holds the request
    /// for its answer (other requests go on); answers at once when the step
    /// says so.
    fn hold_for_approval(&mut self, step: Box<ApprovalStep>) -> Action {
        let service = self
            .worker
            .borrow()
            .as_ref()
            .and_then(|w| w.gate.policy().approval_service().cloned());
        let started = service
            .as_ref()
            .map_or(Err(host::Status::NotFound), |service| {
                host::approvals::call_waiting(
                    service,
                    step.call.method,
                    &step.call.path,
                    Some(step.call.body.as_bytes()),
                    std::time::Duration::from_millis(step.call.timeout_ms),
                )
            });
        if let Some(response) = &step.respond_now {
            if started.is_err() {
                host::log(
                    LogLevel::Warn,
                    "gatehouse: filing an approval request failed",
                );
            }
            return self.respond_locally(response);
        }
        match started {
            Ok(token) => {
                self.approval = Some((token, step));
                Action::Pause
            }
            Err(_) => self.conclude_approval(step, 0, &[]),
        }
    }

    /// Applies the approval service's answer to a held request.
    fn conclude_approval(&mut self, step: Box<ApprovalStep>, status: u16, body: &[u8]) -> Action {
        let conclusion = self.worker.borrow_mut().as_mut().map(|worker| {
            worker
                .gate
                .conclude_approval(*step, status, body, now_micros())
        });
        let Some(conclusion) = conclusion else {
            return self.refuse_unconfigured();
        };
        match conclusion {
            Conclusion::Forward(forward) => {
                if let Some(worker) = self.worker.borrow_mut().as_mut() {
                    count_decision(&mut worker.decisions, forward.decision());
                }
                apply_upstream_headers(&forward);
                self.forward = Some(forward);
                Action::Continue
            }
            Conclusion::Respond(response) => self.respond_locally(&response),
        }
    }

    /// [`Self::respond`] with this worker's state.
    fn respond_locally(&mut self, response: &LocalResponse) -> Action {
        let shared = Rc::clone(&self.worker);
        let mut guard = shared.borrow_mut();
        match guard.as_mut() {
            Some(worker) => self.respond(worker, response),
            None => {
                drop(guard);
                self.refuse_unconfigured()
            }
        }
    }

    /// Answers a self-check once its body is whole (or too large to read).
    fn answer_review(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream && body_size <= MAX_REVIEW_BODY_BYTES {
            return Action::Pause;
        }
        let Some(pending) = self.review.take() else {
            return Action::Continue;
        };
        // One byte past the limit is enough for the gate to refuse it.
        let body = host::get_buffer(
            BufferType::HttpRequestBody,
            0,
            body_size.min(MAX_REVIEW_BODY_BYTES + 1),
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let shared = Rc::clone(&self.worker);
        let mut guard = shared.borrow_mut();
        let Some(worker) = guard.as_mut() else {
            drop(guard);
            return self.refuse_unconfigured();
        };
        let response = worker.gate.answer_review(*pending, &body, now_micros());
        self.respond(worker, &response)
    }

    fn refuse_unconfigured(&mut self) -> Action {
        let body = gatehouse_kubernetes::status::status(
            503,
            "ServiceUnavailable",
            "gatehouse kubernetes filter is not configured",
        )
        .to_json();
        let _ = host::send_http_response(
            503,
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        Action::Pause
    }

    /// Answers with a Status instead of a response that could not be masked.
    fn refuse_response(&mut self, message: &str) -> Action {
        let refusal = gatehouse_kubernetes::status::status(500, "InternalError", message);
        self.status = 500;
        self.body_mode = BodyMode::PassThrough;
        self.record();
        let _ = host::send_http_response(
            500,
            &[("content-type", "application/json")],
            refusal.to_json().as_bytes(),
        );
        Action::Pause
    }

    /// Writes the request's audit Events to filter state (serialized once;
    /// written again, only their end time moves).
    fn record(&mut self) {
        if let Some(forward) = &mut self.forward {
            let records = forward.current_records(self.status, self.started_micros, now_micros());
            let _ = host::set_property(&[self.audit_key], records.as_bytes());
        }
    }
}

fn apply_upstream_headers(forward: &Forward) {
    let map = MapType::HttpRequestHeaders;
    for name in &forward.remove_headers {
        let _ = host::remove_header(map, name);
    }
    for (name, value) in &forward.set_headers {
        let _ = host::replace_header(map, name, value);
    }
    for (name, value) in &forward.add_headers {
        let _ = host::add_header(map, name, value);
    }
}

impl Context for KubernetesRequest {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        if let Some((waiting, step)) = self.approval.take() {
            if waiting != token {
                self.approval = Some((waiting, step));
                return;
            }
            let status = host::approvals::response_status();
            let body = host::approvals::response_body(body_size);
            if let Action::Continue = self.conclude_approval(step, status, &body)
                && host::resume_http_request().is_err()
            {
                host::log(
                    LogLevel::Error,
                    "gatehouse: could not resume an approved request",
                );
            }
            return;
        }
        if self.key_fetch != Some(token) {
            return;
        }
        self.key_fetch = None;
        if let Some(worker) = self.worker.borrow_mut().as_mut() {
            worker.on_key_response(token, body_size);
        }
        if let Action::Continue = self.admit()
            && host::resume_http_request().is_err()
        {
            host::log(LogLevel::Error, "gatehouse: could not resume a request");
        }
    }
}

impl HttpContext for KubernetesRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        count(self.metrics.requests);
        self.request_complete = end_of_stream;
        let _ = host::set_property(
            &["gatehouse_build"],
            gatehouse_core::build::VERSION.as_bytes(),
        );
        self.request_micros = now_micros();
        let action = self.admit();
        self.note_filter_time(self.request_micros);
        action
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.request_complete = end_of_stream;
        self.request_body_bytes = body_size;
        // A request held for approval (an upgrade, such as a WebSocket exec,
        // has a body stream) stays held whatever arrives after its headers:
        // Envoy would otherwise let the headers go on with the first body
        // callback.
        if self.approval.is_some() {
            return Action::Pause;
        }
        if self.review.is_some() {
            return self.answer_review(body_size, end_of_stream);
        }
        // Only an admitted request's body moves on. One still being judged
        // (its issuer's keys are on their way) waits, buffered, with it;
        // continuing here would forward the request unjudged. An admitted
        // one that was upgraded to a recorded session is the client's side
        // of it: the session sees it first.
        if self.forward.is_some() {
            self.feed_session(true, body_size)
        } else {
            Action::Pause
        }
    }

    fn on_log(&mut self) {
        if let Some(session) = self.session.take()
            && let Ok(mut session) = session.try_borrow_mut()
        {
            let now = now_unsigned();
            for record in session.finish(now) {
                host::records::emit_at(&record, now);
            }
        }
        if self.request_micros > 0 {
            let duration = now_micros().saturating_sub(self.request_micros);
            self.metrics
                .request_duration
                .record(u64::try_from(duration).unwrap_or_default());
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.started_micros = now_micros();
        self.status = host::get_header(MapType::HttpResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        self.record();
        if self.status == 101
            && let Action::Pause = self.start_recording()
        {
            return Action::Pause;
        }
        let masker = self.forward.as_ref().and_then(|f| f.body_masker.clone());
        let Some(masker) = masker else {
            return Action::Continue;
        };
        let header = |name| {
            host::get_header(MapType::HttpResponseHeaders, name)
                .ok()
                .flatten()
        };
        let (content_type, content_encoding) = (header("content-type"), header("content-encoding"));
        let plan = masker.plan(&ResponseHead {
            status: self.status,
            content_type: content_type.as_deref(),
            content_encoding: content_encoding.as_deref(),
            end_of_stream,
        });
        match plan {
            ResponsePlan::Pass => Action::Continue,
            ResponsePlan::Refuse(message) => self.refuse_response(&message),
            ResponsePlan::Lines => {
                // Masked events change length as they pass.
                let _ = host::remove_header(MapType::HttpResponseHeaders, "content-length");
                self.body_mode = BodyMode::Watch(masker, WatchLines::default());
                Action::Continue
            }
            ResponsePlan::Hold => {
                self.body_mode = BodyMode::Buffered(masker);
                // Held until the body is masked, so an oversize body fails
                // cleanly; its length is set again only if masking changes it.
                Action::Pause
            }
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.approval.is_some() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.session.is_some() {
            let action = self.feed_session(false, body_size);
            if end_of_stream {
                self.record();
            }
            return action;
        }
        if matches!(self.body_mode, BodyMode::PassThrough) {
            if end_of_stream {
                self.record();
            }
            return Action::Continue;
        }
        let started = now_micros();
        let action = self.mask_body(body_size, end_of_stream);
        self.note_filter_time(started);
        action
    }
}

impl KubernetesRequest {
    /// Starts recording the upgraded session, when the admitting rule asked;
    /// `Pause` when the stream was ended instead (it cannot be recorded).
    fn start_recording(&mut self) -> Action {
        let Some(plan) = self.forward.as_mut().and_then(|f| f.recording.take()) else {
            return Action::Continue;
        };
        let header = |name| {
            host::get_header(MapType::HttpResponseHeaders, name)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let protocol = match header("sec-websocket-protocol") {
            p if p.is_empty() => header("x-stream-protocol-version"),
            p => p,
        };
        let extensions = header("sec-websocket-extensions");
        let (session, output) = plan.start(&protocol, &extensions, now_unsigned());
        let session = Rc::new(RefCell::new(session));
        if let Some(worker) = self.worker.borrow_mut().as_mut() {
            worker.sessions.push(Rc::downgrade(&session));
        }
        self.session = Some(session);
        self.apply_session_output(output, None, 0)
    }

    /// Hands one body callback's bytes to the recorded session and applies
    /// what it returns.
    fn feed_session(&mut self, from_client: bool, body_size: usize) -> Action {
        let Some(session) = self.session.clone() else {
            return Action::Continue;
        };
        let started = now_unsigned();
        let buffer = if from_client {
            BufferType::HttpRequestBody
        } else {
            BufferType::HttpResponseBody
        };
        let bytes = host::get_buffer(buffer, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let output = match session.try_borrow_mut() {
            Ok(mut session) if from_client => session.on_client(&bytes, started),
            Ok(mut session) => session.on_server(&bytes, started),
            Err(_) => Output {
                end: true,
                ..Output::default()
            },
        };
        let action = self.apply_session_output(output, Some(buffer), body_size);
        self.note_filter_time(i64::try_from(started).unwrap_or_default());
        action
    }

    /// Emits a session's records, puts its bytes in place of the callback's,
    /// and ends the stream when it says so.
    fn apply_session_output(
        &mut self,
        output: Output,
        buffer: Option<BufferType>,
        size: usize,
    ) -> Action {
        let now = now_unsigned();
        for record in &output.records {
            host::records::emit_at(record, now);
        }
        if let (Some(bytes), Some(buffer)) = (&output.rewrite, buffer)
            && host::set_buffer(buffer, 0, size, bytes).is_err()
        {
            host::log(
                LogLevel::Error,
                "gatehouse: could not rewrite an exec stream; ending it",
            );
            return self.end_session(buffer, size);
        }
        if output.end {
            return match buffer {
                Some(buffer) => self.end_session(buffer, size),
                None => {
                    let _ = host::reset_http_stream();
                    Action::Pause
                }
            };
        }
        Action::Continue
    }

    /// Ends a session the filter cannot go on recording: nothing more passes.
    fn end_session(&mut self, buffer: BufferType, size: usize) -> Action {
        let _ = host::set_buffer(buffer, 0, size, b"");
        let _ = host::reset_http_stream();
        Action::Pause
    }

    /// Records the time the filter spent since `started` (unix µs).
    fn note_filter_time(&self, started: i64) {
        let spent = now_micros().saturating_sub(started);
        self.metrics
            .filter_time
            .record(u64::try_from(spent).unwrap_or_default());
    }

    /// Masks one response body callback (the body is being masked).
    fn mask_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &mut self.body_mode {
            BodyMode::PassThrough => {}
            BodyMode::Watch(masker, lines) => {
                let chunk = host::get_buffer(BufferType::HttpResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let known_fields = lines.fields.len();
                match lines.push(&chunk, end_of_stream, masker) {
                    Ok(out) => {
                        let fields = lines.fields.clone();
                        if host::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out)
                            .is_err()
                        {
                            return self
                                .refuse_response("gatehouse could not rewrite a watch event");
                        }
                        if let Some(forward) = self.forward.as_mut() {
                            forward.set_masked_fields(&fields);
                        }
                        // A watch usually ends by the client going away, with no
                        // last body callback: keep the record current.
                        if fields.len() > known_fields {
                            self.record();
                        }
                    }
                    // Headers are gone: end the stream rather than pass clear data.
                    Err(_) => {
                        let _ = host::set_buffer(BufferType::HttpResponseBody, 0, body_size, b"");
                        let _ = host::reset_http_stream();
                        return Action::Pause;
                    }
                }
            }
            BodyMode::Buffered(masker) => {
                if body_size > masker.max_body_bytes() {
                    let limit = masker.max_body_bytes();
                    return self.refuse_response(&format!(
                        "gatehouse must mask this response but it exceeds {limit} bytes"
                    ));
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = host::get_buffer(BufferType::HttpResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                match masker.mask(&body) {
                    Ok(masked) => {
                        // Nothing masked: the body is unchanged and stays in Envoy.
                        if !masked.fields.is_empty() {
                            if host::set_buffer(
                                BufferType::HttpResponseBody,
                                0,
                                body_size,
                                &masked.body,
                            )
                            .is_err()
                            {
                                return self
                                    .refuse_response("gatehouse could not rewrite a response");
                            }
                            let _ = host::replace_header(
                                MapType::HttpResponseHeaders,
                                "content-length",
                                &masked.body.len().to_string(),
                            );
                        }
                        if let Some(forward) = self.forward.as_mut() {
                            forward.set_masked_fields(&masked.fields);
                        }
                    }
                    Err(error) => {
                        return self.refuse_response(&format!(
                            "gatehouse could not mask the response: {error}"
                        ));
                    }
                }
            }
        }
        if end_of_stream {
            self.record();
        }
        Action::Continue
    }
}
