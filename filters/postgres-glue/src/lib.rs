//! The Postgres network filter's glue, shared by both builds.
//!
//! A connection's events (bytes from either side, the close) reach
//! [`PgConnection`], which feeds them to the sans-IO engine in
//! `gatehouse-postgres` and applies what it returns through a [`Host`]: the
//! proxy-wasm host (`gatehouse-postgres-wasm`) or Envoy's dynamic-modules ABI
//! (`gatehouse-native`). It makes no decisions, and neither does a host: a host
//! only moves bytes, reads the clock and keeps stats, filter state and records
//! where its Envoy extension point puts them.
//!
//! # Data path
//! Each data event reads the whole buffer, hands it to the session, and when
//! the engine asks for it replaces the whole buffer. Partial messages live in
//! engine memory, never in Envoy's buffer. A failed host call is logged and
//! counted, never a panic; when the engine cannot see or apply the bytes, the
//! connection is closed rather than passed unobserved.
//!
//! # What Envoy sees
//! - Stats ([`Counter`], [`Gauge`], [`HistogramStat`], [`Family`]), the same
//!   names in both builds.
//! - Filter state per connection, for the TCP access log:
//!   `gatehouse_pg_user`, `gatehouse_pg_database`, `gatehouse_pg_subject` (the
//!   verified caller, under token login), `gatehouse_pg_statements`,
//!   `gatehouse_pg_errors`, `gatehouse_pg_last_sequence`,
//!   `gatehouse_pg_session_end_reason` and `gatehouse_build` (a host may prefix
//!   the keys: the Wasm host's become `wasm.<key>`).
//! - One record per statement and session event, as a JSON line.
//!
//! # Approvals
//! With the approval service ([`Approvals`] in the [`Setup`]), the session asks
//! for calls to it: filing a request as a statement is refused, and using up a
//! single-use grant a statement relies on. The glue starts them through the
//! host; a data event whose client bytes rely on a grant returns
//! [`Flow::Hold`], and the bytes stay in Envoy's buffer until
//! [`PgConnection::on_approval_answer`] has every use confirmed (a refused use
//! ends the connection: held bytes can only go on unchanged or not at all).
//!
//! A host that can send client bytes on its own and have Envoy hand it held
//! bytes again ([`Host::inject_client`], [`Host::redeliver_client`]: the
//! native build, [`Approvals::holds`]) lets the session hold a statement for
//! a decision: the engine keeps the Query and the bytes that came with it,
//! what the client sends meanwhile stays in Envoy's buffer unread, and the
//! service's answer releases the engine's output: sent at once when nothing
//! waits in Envoy's buffer, else put after what is there when Envoy hands it
//! again (so the client's order holds).

pub mod stats;

pub use stats::{Counter, Family, Gauge, HistogramStat};

use gatehouse_core::approval::GrantBook;
use gatehouse_core::record::{EndReason, FilterMode, Record, Shared, StatementRecord};
use gatehouse_postgres::approval::{ApprovalCall, ApprovalGate};
use gatehouse_postgres::login::TokenLogin;
use gatehouse_postgres::masking::{MaskingPolicy, SessionMasker};
use gatehouse_postgres::policy::PgPolicy;
use gatehouse_postgres::{
    CachedPolicy, CloseReason, ConnectionInfo, EngineConfig, Forward, Session, SessionSummary,
    Verdict,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Which of a connection's two directions an event is about. Envoy calls
/// client → server bytes "downstream" (its read path) and server → client
/// bytes "upstream" (its write path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    FromClient,
    FromServer,
}

pub use gatehouse_core::host::{HostError, Level};

/// What the glue needs from the Envoy it runs in, for one event of one
/// connection. Every call that can fail says so; none may panic.
pub trait Host {
    /// The host's clock, unix microseconds.
    fn now_us(&mut self) -> Result<u64, HostError>;
    /// Envoy's id of this connection.
    fn connection_id(&mut self) -> Result<u64, HostError>;
    /// The client's address (`ip:port`).
    fn client_address(&mut self) -> Result<String, HostError>;
    /// The first `size` bytes of a direction's buffer.
    fn read(&mut self, direction: Direction, size: usize) -> Result<Vec<u8>, HostError>;
    /// Replaces the first `size` bytes of a direction's buffer with `bytes`.
    fn replace(&mut self, direction: Direction, size: usize, bytes: &[u8])
    -> Result<(), HostError>;
    /// Closes the connection now (after flushing what was already written).
    fn close(&mut self) -> Result<(), HostError>;
    /// Closes the connection once the bytes this event writes to the client
    /// are on their way (closing inside the event would drop them).
    fn close_after_write(&mut self);
    /// Sets connection filter state `key`.
    fn set_filter_state(&mut self, key: &str, value: &[u8]) -> Result<(), HostError>;
    /// Adds `by` to a counter.
    fn count(&mut self, counter: Counter, by: u64);
    /// Moves a gauge by `delta`.
    fn adjust_gauge(&mut self, gauge: Gauge, delta: i64);
    /// Sets a gauge.
    fn set_gauge(&mut self, gauge: Gauge, value: u64);
    /// Records one sample of a histogram.
    fn record(&mut self, histogram: HistogramStat, value: u64);
    /// Adds `by` to the stat of a labelled family for `class` (a fixed
    /// vocabulary: the action) and `name` (from the configuration: a rule).
    fn count_labelled(&mut self, family: Family, class: &'static str, name: &str, by: u64);
    /// The event's labelled counts are complete (a host may have batched them).
    fn flush_labelled(&mut self) {}
    /// Hands one record (a JSON line) to the record path.
    fn emit_record(&mut self, line: &str, now_us: u64);
    /// The connection ended: records still held for coalescing go now.
    fn flush_records(&mut self);
    /// Writes to Envoy's log.
    fn log(&mut self, level: Level, message: &str);
    /// The login deadline of this connection changed: `Some` (unix µs) when it
    /// must be closed if still logging in then, `None` when that is over.
    fn login_deadline(&mut self, deadline_us: Option<u64>);
    /// Starts `POST path` with `body` to the approval service, with the
    /// service's timeout or `timeout_ms`; its answer goes to
    /// [`PgConnection::on_approval_answer`] with the returned token.
    fn approval_call(
        &mut self,
        path: &str,
        body: &[u8],
        timeout_ms: Option<u64>,
    ) -> Result<u32, HostError>;
    /// Tells the other sessions of this Envoy that single-use grant `id` is
    /// being used, so none relies on it too.
    fn share_grant_use(&mut self, id: &str);
    /// Lets the client bytes held since a [`Flow::Hold`] go on.
    fn resume_client(&mut self) -> Result<(), HostError>;
    /// Sends `bytes` on to the server now, outside a data event, as if they
    /// had come from the client (only with [`Approvals::holds`]).
    fn inject_client(&mut self, _bytes: &[u8]) -> Result<(), HostError> {
        Err(HostError(
            "this build cannot send client bytes later".into(),
        ))
    }
    /// Has Envoy hand the client bytes held since a [`Flow::Hold`] to
    /// [`PgConnection::on_data`] again (only with [`Approvals::holds`]).
    fn redeliver_client(&mut self) -> Result<(), HostError> {
        Err(HostError(
            "this build cannot read held client bytes again".into(),
        ))
    }
}

/// What a data event asks of the host for the bytes it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Flow {
    /// Let the (possibly replaced) bytes go on.
    Continue,
    /// Keep the client's bytes in Envoy's buffer until
    /// [`Host::resume_client`]: they rely on a grant the service has yet to
    /// confirm.
    Hold,
}

/// A worker's share of the approval service: the grants it reads and the
/// policy whose `require_approval` rules its sessions' gates apply.
#[derive(Clone)]
pub struct Approvals {
    pub policy: Arc<PgPolicy>,
    pub book: Rc<RefCell<GrantBook>>,
    /// The host can send client bytes later and have Envoy hand held ones
    /// again: a rule's `hold` then holds its statements.
    pub holds: bool,
}

/// What every connection of a worker shares: the configuration and the
/// policies, compiled once.
#[derive(Clone)]
pub struct Setup {
    pub config: Arc<EngineConfig>,
    /// The statement policy with this worker's decision cache.
    pub policy: Option<CachedPolicy>,
    /// The compiled masking policy.
    pub masking: Option<Arc<MaskingPolicy>>,
    /// The configuration in force, stamped on every record.
    pub policy_hash: Option<Shared<str>>,
    /// Enforce, or observe only (the engine decides what that means).
    pub mode: FilterMode,
    /// Token login, when configured: the worker's authenticator and how long a
    /// client may take to log in.
    pub login: Option<(TokenLogin, u32)>,
    /// Highest `buffered_bytes` any connection reported, for the gauge.
    pub buffered_high_water: Arc<AtomicUsize>,
    /// The approval service, when configured with a policy.
    pub approvals: Option<Approvals>,
}

/// Client bytes held while single-use grants are used up at the service, or
/// while the session holds a statement for a decision.
#[derive(Default)]
struct Held {
    /// Calls whose answer the held bytes wait for.
    consumes: BTreeSet<u32>,
    /// Requests filed, by call. The refusal naming one waits for its answer:
    /// a client that leaves at once would end the connection, and with it
    /// the call, before the request reached the service. A failed filing is
    /// forgotten, so a retry files anew.
    filings: BTreeMap<u32, String>,
    /// The call the session's held statement waits for.
    hold: Option<u32>,
    /// Envoy's buffer keeps client bytes since the last [`Flow::Hold`].
    buffered: bool,
    /// Bytes at the start of Envoy's held buffer that the engine already
    /// processed; later events carry them again, followed by new ones.
    processed: usize,
    /// After them, bytes the engine has not read (they came while it held a
    /// statement).
    unread: bool,
    /// The engine's output once a hold ended, waiting to go after the
    /// processed bytes when Envoy hands the buffer again.
    released: Vec<u8>,
}

impl Held {
    /// Whether the held bytes still wait for a use to be confirmed or a
    /// request to be filed.
    fn waits_for_calls(&self) -> bool {
        !self.consumes.is_empty() || !self.filings.is_empty()
    }
}

/// What was last written to filter state, so unchanged values are not rewritten.
#[derive(Default)]
struct Published {
    client_known: bool,
    summary: SessionSummary,
}

/// One connection's glue.
pub struct PgConnection {
    setup: Setup,
    /// Created on the first event that needs it.
    session: Option<Session>,
    published: Published,
    /// The last time the host gave; reused if a clock read fails.
    last_now_us: u64,
    closed: bool,
    /// Counted in `gatehouse_pg_sessions_active` and not yet closed.
    open: bool,
    /// A login deadline was handed to the host and not yet withdrawn.
    deadline_set: bool,
    held: Held,
}

impl PgConnection {
    pub fn new(setup: Setup) -> Self {
        PgConnection {
            setup,
            session: None,
            published: Published::default(),
            last_now_us: 0,
            closed: false,
            open: false,
            deadline_set: false,
            held: Held::default(),
        }
    }

    /// The connection was accepted.
    pub fn on_new_connection(&mut self, host: &mut impl Host) {
        host.count(Counter::Connections, 1);
        self.open = true;
        host.adjust_gauge(Gauge::SessionsActive, 1);
        publish(
            host,
            "gatehouse_build",
            gatehouse_core::build::VERSION.as_bytes(),
        );
        let now = self.now_us(host);
        let _ = self.session(host, now);
    }

    /// `size` bytes arrived from one side; `server_finished` when the server
    /// closed its side with them. Feeds them to the engine and applies its
    /// verdict. While client bytes are held, Envoy hands them again with the new
    /// ones: only the new ones go to the engine, and everything stays held.
    pub fn on_data(
        &mut self,
        host: &mut impl Host,
        direction: Direction,
        size: usize,
        server_finished: bool,
    ) -> Flow {
        let from_client = direction == Direction::FromClient;
        let holding = from_client && self.held.buffered;
        let held_flow = if holding { Flow::Hold } else { Flow::Continue };
        let buffer = if size == 0 {
            Vec::new()
        } else {
            match host.read(direction, size) {
                Ok(bytes) => bytes,
                Err(error) => {
                    // The engine would lose its place in the stream: end the connection
                    // rather than pass bytes it has not seen.
                    host_error(host, "reading connection data", &error);
                    self.close(host);
                    return held_flow;
                }
            }
        };
        let processed = if holding {
            self.held.processed.min(buffer.len())
        } else {
            0
        };
        let (done, chunk) = buffer.split_at(processed);
        let released = if from_client {
            std::mem::take(&mut self.held.released)
        } else {
            Vec::new()
        };
        if from_client && self.holds_statement() {
            // The session holds a statement: what came after it waits,
            // unread, behind what is already done.
            return self.keep_unread(host, size, [done, &released].concat(), chunk);
        }
        let counter = match direction {
            Direction::FromClient => Counter::ClientBytes,
            Direction::FromServer => Counter::ServerBytes,
        };
        host.count(counter, chunk.len() as u64);
        let now = self.now_us(host);
        let session = self.session(host, now);
        let mut verdict = if chunk.is_empty() {
            unchanged()
        } else {
            match direction {
                Direction::FromClient => session.on_frontend(chunk, now),
                Direction::FromServer => session.on_backend(chunk, now),
            }
        };
        if server_finished {
            // The client may be owed an error in place of the server's last word.
            let last = session.on_backend(&[], now);
            verdict = merge(verdict, chunk, last);
        }
        self.after_engine(host);
        let mut refused = Vec::new();
        verdict.close_connection |= self.start_approval_calls(host, &mut refused);
        let mut buffered = buffer.len();
        let joined;
        let out: Option<&[u8]> = match &verdict.forward {
            // The common case: the engine's bytes are the whole output.
            Forward::Replace(bytes)
                if done.is_empty() && released.is_empty() && refused.is_empty() =>
            {
                Some(bytes)
            }
            Forward::Replace(bytes) => {
                joined = [done, &released, bytes, &refused].concat();
                Some(&joined)
            }
            Forward::Unchanged if !released.is_empty() || !refused.is_empty() => {
                joined = [done, &released, chunk, &refused].concat();
                Some(&joined)
            }
            Forward::Unchanged => None,
        };
        if let Some(out) = out {
            match host.replace(direction, size, out) {
                Ok(()) => buffered = out.len(),
                Err(error) => {
                    host_error(host, "replacing connection data", &error);
                    verdict.close_connection = true;
                }
            }
        }
        if verdict.close_connection {
            match direction {
                Direction::FromClient => self.close(host),
                Direction::FromServer => self.close_after_write(host),
            }
        }
        let spent = self.now_us(host).saturating_sub(now);
        host.record(HistogramStat::FilterTime, spent);
        if from_client && self.held.waits_for_calls() {
            // What the engine let through waits in Envoy's buffer until the
            // service confirms every single-use grant it relies on, and has
            // every request it names.
            self.held.buffered = buffered > 0;
            self.held.processed = buffered;
            self.held.unread = false;
            return Flow::Hold;
        }
        if from_client {
            self.held.buffered = false;
            self.held.unread = false;
        }
        Flow::Continue
    }

    /// While the session holds a statement: Envoy's buffer becomes `done`
    /// (processed, in order) followed by `unread`, and waits.
    fn keep_unread(
        &mut self,
        host: &mut impl Host,
        size: usize,
        done: Vec<u8>,
        unread: &[u8],
    ) -> Flow {
        if done.len() != self.held.processed.min(size)
            && let Err(error) = host.replace(Direction::FromClient, size, &[&done, unread].concat())
        {
            host_error(host, "replacing connection data", &error);
            self.close(host);
        }
        // An empty buffer is not handed again: nothing is kept then.
        self.held.buffered = !done.is_empty() || !unread.is_empty();
        self.held.processed = done.len();
        self.held.unread = !unread.is_empty();
        Flow::Hold
    }

    /// Whether the session holds a statement for the approval service's
    /// answer: a client ending its side meanwhile ends the connection.
    pub fn holds_statement(&self) -> bool {
        self.session.as_ref().is_some_and(Session::holds_statement)
    }

    /// The approval service answered call `token` with HTTP `status` (0: no
    /// answer). A confirmed use releases the held bytes once every use they
    /// wait for is confirmed; a refused one ends the connection.
    pub fn on_approval_answer(
        &mut self,
        host: &mut impl Host,
        token: u32,
        status: u16,
        body: &[u8],
    ) {
        if self.held.hold == Some(token) {
            self.held.hold = None;
            self.release_hold(host, status, body);
            return;
        }
        if let Some(id) = self.held.filings.remove(&token) {
            if !(200..300).contains(&status) {
                host.log(
                    Level::Warn,
                    &format!("gatehouse postgres: filing approval request {id} failed ({status})"),
                );
                if let Some(session) = self.session.as_mut() {
                    session.approval_filing_failed(&id);
                }
            }
            if !self.held.waits_for_calls() {
                self.release_buffer(host);
            }
            return;
        }
        if !self.held.consumes.remove(&token) {
            return;
        }
        if status != 200 {
            host.log(
                Level::Warn,
                &format!(
                    "gatehouse postgres: the approval service refused to use a grant ({status}); \
                     closing the connection"
                ),
            );
            self.held.consumes.clear();
            self.close(host);
            return;
        }
        if !self.held.waits_for_calls() {
            self.release_buffer(host);
        }
    }

    /// Nothing the held client bytes wait for is left: they go on as they
    /// are, or, when some are unread or a hold's output must go after them,
    /// Envoy hands them to [`PgConnection::on_data`] again.
    fn release_buffer(&mut self, host: &mut impl Host) {
        let result = if self.held.unread || !self.held.released.is_empty() {
            host.redeliver_client()
        } else {
            self.held.buffered = false;
            self.held.processed = 0;
            host.resume_client()
        };
        if let Err(error) = result {
            host_error(host, "releasing held client bytes", &error);
            self.close(host);
        }
    }

    /// The service answered the held statement's call: the session judges it
    /// by that answer and reads what came after it; the output goes to the
    /// server now, or after what waits in Envoy's buffer.
    fn release_hold(&mut self, host: &mut impl Host, status: u16, body: &[u8]) {
        if self.closed {
            return;
        }
        let now = self.now_us(host);
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let verdict = session.on_hold_answer(status, body, now);
        let mut output = verdict.bytes(&[]).to_vec();
        let mut close = verdict.close_connection;
        self.after_engine(host);
        close |= self.start_approval_calls(host, &mut output);
        if self.held.buffered {
            self.held.released.extend_from_slice(&output);
            if self.held.consumes.is_empty() {
                self.release_buffer(host);
            }
        } else if !output.is_empty()
            && let Err(error) = host.inject_client(&output)
        {
            host_error(host, "sending released client bytes", &error);
            self.close(host);
        }
        if close {
            self.close(host);
        }
    }

    /// Starts the approval service calls the session asked for.
    /// A hold whose call cannot start is refused at once: the session's
    /// output for it (and for what followed it) is added to `output`, which
    /// goes right after this event's. Returns whether the connection must
    /// close once it is written.
    fn start_approval_calls(&mut self, host: &mut impl Host, output: &mut Vec<u8>) -> bool {
        let mut close = false;
        while self.start_calls(host) {
            let now = self.now_us(host);
            let Some(session) = self.session.as_mut() else {
                break;
            };
            let verdict = session.on_hold_answer(0, &[], now);
            output.extend_from_slice(verdict.bytes(&[]));
            close |= verdict.close_connection;
            self.after_engine(host);
        }
        close
    }

    /// Starts the calls the session asked for; whether a hold's call could
    /// not start (no answer will come for it).
    fn start_calls(&mut self, host: &mut impl Host) -> bool {
        let calls = match self.session.as_mut() {
            Some(session) if self.setup.approvals.is_some() => session.take_approval_calls(),
            _ => return false,
        };
        let mut hold_failed = false;
        for call in calls {
            match (
                host.approval_call(&call.path(), call.body().as_bytes(), call.timeout_ms()),
                &call,
            ) {
                (Ok(token), ApprovalCall::Consume { id, .. }) => {
                    host.share_grant_use(id);
                    self.held.consumes.insert(token);
                }
                (Ok(token), ApprovalCall::File { id, .. }) => {
                    self.held.filings.insert(token, id.clone());
                }
                (Ok(token), ApprovalCall::Hold { .. }) => {
                    self.held.hold = Some(token);
                }
                (Err(error), ApprovalCall::Hold { .. }) => {
                    host_error(host, "holding a statement for approval", &error);
                    hold_failed = true;
                }
                (Err(error), ApprovalCall::Consume { .. }) => {
                    // The grant cannot be confirmed: its statement must not run.
                    host_error(host, "using an approval", &error);
                    self.close(host);
                }
                (Err(error), ApprovalCall::File { id, .. }) => {
                    host_error(host, "filing an approval request", &error);
                    if let Some(session) = self.session.as_mut() {
                        session.approval_filing_failed(id);
                    }
                }
            }
        }
        hold_failed
    }

    /// The connection ended (`reason`: who closed it).
    pub fn on_close(&mut self, host: &mut impl Host, reason: CloseReason) {
        if std::mem::take(&mut self.open) {
            host.adjust_gauge(Gauge::SessionsActive, -1);
        }
        self.withdraw_deadline(host);
        let now = self.now_us(host);
        if let Some(session) = self.session.as_mut() {
            session.on_close(reason, now);
        }
        self.after_engine(host);
        // The session's last records go now rather than with the next tick.
        host.flush_records();
        self.publish_counters(host);
    }

    /// The token of the PasswordMessage the client's next bytes `next` start
    /// with, while the login waits for it (see [`Session::token_ahead`]).
    pub fn token_ahead<'a>(&self, next: &'a [u8]) -> Option<&'a str> {
        self.session.as_ref()?.token_ahead(next)
    }

    /// Whether the glue already asked the host to close this connection.
    pub fn closing(&self) -> bool {
        self.closed
    }

    fn now_us(&mut self, host: &mut impl Host) -> u64 {
        match host.now_us() {
            Ok(now) => self.last_now_us = now,
            Err(error) => host_error(host, "reading the clock", &error),
        }
        self.last_now_us
    }

    /// The connection's session, created at time `now` if this is its first event.
    fn session(&mut self, host: &mut impl Host, now: u64) -> &mut Session {
        let session = match self.session.take() {
            Some(session) => session,
            None => self.new_session(host, now),
        };
        self.session.insert(session)
    }

    fn new_session(&mut self, host: &mut impl Host, now: u64) -> Session {
        let id = host.connection_id().unwrap_or_else(|error| {
            host_error(host, "reading connection_id", &error);
            0
        });
        let client_address = host.client_address().unwrap_or_else(|error| {
            host_error(host, "reading source.address", &error);
            String::new()
        });
        let setup = &self.setup;
        let mut session = Session::new(
            Arc::clone(&setup.config),
            ConnectionInfo { id, client_address },
            now,
        );
        session.set_mode(setup.mode);
        if let Some(policy) = &setup.policy {
            session.set_statement_policy(Box::new(policy.clone()));
        }
        if let Some(hash) = &setup.policy_hash {
            session.set_policy_hash(hash.clone());
        }
        if let Some(masking) = &setup.masking {
            session.set_masker(SessionMasker::new(Arc::clone(masking)));
        }
        if let Some(approvals) = &setup.approvals {
            let gate = ApprovalGate::new(
                Arc::clone(&approvals.policy),
                Rc::clone(&approvals.book),
                id,
            );
            session.set_approval_gate(if approvals.holds {
                gate.holding()
            } else {
                gate
            });
        }
        if let Some((authenticator, deadline_seconds)) = &setup.login {
            session.set_authenticator(Box::new(authenticator.clone()), *deadline_seconds);
            if let Some(deadline) = session.login_deadline_us() {
                host.login_deadline(Some(deadline));
                self.deadline_set = true;
            }
        }
        session
    }

    fn withdraw_deadline(&mut self, host: &mut impl Host) {
        if std::mem::take(&mut self.deadline_set) {
            host.login_deadline(None);
        }
    }

    /// Closes the connection once the bytes of the current server → client
    /// event are on their way.
    fn close_after_write(&mut self, host: &mut impl Host) {
        if self.closed {
            return;
        }
        self.closed = true;
        host.close_after_write();
    }

    fn close(&mut self, host: &mut impl Host) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Err(error) = host.close() {
            host_error(host, "closing the connection", &error);
        }
    }

    /// Drains the engine's records and brings stats and filter state up to date.
    fn after_engine(&mut self, host: &mut impl Host) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let records = session.take_records();
        let summary = session.summary();
        let login_over = session.login_deadline_us().is_none();
        if login_over {
            self.withdraw_deadline(host);
        }
        let mode = self.setup.mode;
        for record in &records {
            match record {
                Record::SessionStart(start) => {
                    if !self.published.client_known && mode.is_enforce() {
                        self.published.client_known = true;
                        publish(host, "gatehouse_pg_user", start.client.user.as_bytes());
                        publish(
                            host,
                            "gatehouse_pg_database",
                            start.client.database.as_bytes(),
                        );
                        if let Some(identity) = &start.client.identity {
                            host.count(Counter::Logins, 1);
                            publish(host, "gatehouse_pg_subject", identity.subject.as_bytes());
                        }
                    }
                }
                Record::SessionEnd(end) => {
                    match end.reason {
                        EndReason::ProtocolError => host.count(Counter::ProtocolErrors, 1),
                        EndReason::AuthenticationFailed => host.count(Counter::LoginFailures, 1),
                        _ => {}
                    }
                    let reason = serde_json::to_value(end.reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    if mode.is_enforce() {
                        publish(host, "gatehouse_pg_session_end_reason", reason.as_bytes());
                    }
                }
                Record::Statement(statement) => {
                    host.record(HistogramStat::StatementDuration, statement.duration_us);
                    count_rules(host, mode, statement);
                }
            }
        }
        host.flush_labelled();
        host.count(Counter::Records, records.len() as u64);
        for record in records {
            host.emit_record(&record.to_json(), self.last_now_us);
        }
        let before = &self.published.summary;
        host.count(
            Counter::Statements,
            summary.statements.saturating_sub(before.statements),
        );
        host.count(
            Counter::Errors,
            summary.errors.saturating_sub(before.errors),
        );
        host.count(
            Counter::Denied,
            summary.denied.saturating_sub(before.denied),
        );
        host.count(
            Counter::Masked,
            summary.masked.saturating_sub(before.masked),
        );
        host.count(
            Counter::RecordsDropped,
            summary
                .records_dropped
                .saturating_sub(before.records_dropped),
        );
        self.note_buffered(host, summary.buffered_bytes);
        self.published.summary = summary;
    }

    fn note_buffered(&self, host: &mut impl Host, buffered: usize) {
        let previous = self
            .setup
            .buffered_high_water
            .fetch_max(buffered, Ordering::Relaxed);
        if buffered > previous {
            host.set_gauge(Gauge::BufferedHighWater, buffered as u64);
        }
    }

    /// Writes the per-connection counters to filter state. Done at close only:
    /// the TCP access log reads them after every close callback has run, and
    /// rewriting them per statement would cost on the data path.
    fn publish_counters(&self, host: &mut impl Host) {
        if self.setup.mode.is_shadow() {
            return;
        }
        let summary = &self.published.summary;
        publish(
            host,
            "gatehouse_pg_statements",
            summary.statements.to_string().as_bytes(),
        );
        publish(
            host,
            "gatehouse_pg_errors",
            summary.errors.to_string().as_bytes(),
        );
        publish(
            host,
            "gatehouse_pg_last_sequence",
            summary.last_sequence.to_string().as_bytes(),
        );
    }
}

/// The `rule` label of a decision no rule made: the policy's default.
const DEFAULT_RULE: &str = "default";

/// Counts one statement's decision and what masking did to its results (not
/// for an exempt identity: its values reached the client clear). A shadow
/// instance counts under the `gatehouse_pg_shadow_*` families.
fn count_rules(host: &mut impl Host, mode: FilterMode, statement: &StatementRecord) {
    let shadow = mode.is_shadow();
    let decision = &statement.decision;
    let rule = decision.rule.as_deref().unwrap_or(DEFAULT_RULE);
    host.count_labelled(
        Family::Decisions { shadow },
        decision.action.as_str(),
        rule,
        1,
    );
    let Some(masking) = statement.masking.as_ref().filter(|m| !m.exempt) else {
        return;
    };
    for (rule, count) in &masking.rules {
        host.count_labelled(Family::MaskedByRule { shadow }, "", rule, *count);
    }
    for (detector, count) in &masking.detectors {
        host.count_labelled(Family::MaskedByDetector { shadow }, "", detector, *count);
    }
}

/// Logs a failed host call and counts it.
fn host_error(host: &mut impl Host, what: &str, error: &HostError) {
    host.log(
        Level::Warn,
        &format!("gatehouse postgres: {what} failed: {error}"),
    );
    host.count(Counter::HostErrors, 1);
}

/// Sets filter state `key`.
fn publish(host: &mut impl Host, key: &str, value: &[u8]) {
    if let Err(error) = host.set_filter_state(key, value) {
        host_error(host, "setting filter state", &error);
    }
}

/// Forward the bytes as they are, keep the connection.
fn unchanged() -> Verdict {
    Verdict {
        forward: Forward::Unchanged,
        close_connection: false,
    }
}

/// Combines a data event's verdict with the one given at the server's end of
/// stream: the bytes to forward are the first's output followed by the second's.
fn merge(first: Verdict, chunk: &[u8], last: Verdict) -> Verdict {
    let close_connection = first.close_connection || last.close_connection;
    let forward = match (first.forward, last.forward) {
        (first, Forward::Unchanged) => first,
        (Forward::Unchanged, Forward::Replace(tail)) => {
            let mut bytes = chunk.to_vec();
            bytes.extend_from_slice(&tail);
            Forward::Replace(bytes)
        }
        (Forward::Replace(mut head), Forward::Replace(tail)) => {
            head.extend_from_slice(&tail);
            Forward::Replace(head)
        }
    };
    Verdict {
        forward,
        close_connection,
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // a missing key is a failed test
mod tests;
