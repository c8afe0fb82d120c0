//! The Postgres network filter, native build: the shared glue
//! (`gatehouse-postgres-glue`) over Envoy's dynamic-modules ABI.
//!
//! # Configuration
//! `filter_config` is a `StringValue` holding either the Wasm build's filter
//! configuration as it is ([`gatehouse_postgres::FilterConfig`]), or an
//! envelope around it:
//!
//! ```json
//! {"filter": { …the same JSON as the Wasm build… },
//!  "records": {"address": "127.0.0.1:7070"},
//!  "approvals": {"address": "127.0.0.1:8090"},
//!  "starttls": true}
//! ```
//!
//! - `filter`: taken verbatim, so its `policy_hash` is the Wasm build's.
//! - `records` ([`RecordsConfig`]): where the record listener is; without it
//!   records are counted as dropped (as in the Wasm build without the service).
//! - `approvals` ([`ApprovalsConfig`]): where the grants of the approval
//!   service the filter's `approvals` section names are read; required with
//!   that section (see [`crate::approvals`]).
//! - `starttls`: answer an SSLRequest with `S` and switch the client to TLS;
//!   the listener's transport socket must be `envoy.transport_sockets.starttls`.
//!
//! # Differences from the Wasm build
//! - Stats are `dynamicmodulescustom.<name>`; labelled ones are defined with
//!   the configuration for the rule names it holds (see [`crate::stats`]).
//! - Filter state keys are the Wasm build's (`wasm.gatehouse_pg_*`), so one
//!   access-log format serves both builds.
//! - A client asking for TLS with an SSLRequest gets it (`starttls`).
//! - A login deadline closes the connection from an alarm, not a 20 ms tick.
//! - A login whose token needs keys the worker lacks (a key the identity
//!   provider rotated in) waits for them instead of being refused with "try
//!   again" (see [`PgFilter::hold_for_keys`]).
//! - The approval service's grants are read by a thread of the
//!   configuration and shared with its workers (see [`crate::approvals`]);
//!   filing requests and using grants are callouts from the connection, as in
//!   the Wasm build.
//! - A simple Query a `require_approval` rule with a `hold` matches is held
//!   while a person decides, instead of refused at once: the glue keeps what
//!   the client sends meanwhile in Envoy's read buffer, sends the session's
//!   output on its own when the answer comes ([`Connection::inject_read_data`]),
//!   or, when client bytes wait in the buffer, has Envoy hand them again (a
//!   read disabled and enabled) so the output goes ahead of them. A client
//!   ending its side during a hold ends the connection.

use crate::approvals::{
    ApprovalsConfig, ApprovalsError, GrantFeed, WorkerGrants, answer_status, call_headers,
};
use crate::keys::{BeforeLogin, Fetch, SharedKeys, WorkerKeys};
use crate::records::{RecordWriter, RecordsConfig};
use crate::starttls::{Gate, SSL_REQUEST, StartTlsGate};
use crate::stats::{LabelledStats, Metrics, rule_names};
use crate::{EVENT_CLOSE, EVENT_KEYS_FETCHED, EVENT_LOGIN_DEADLINE, EVENT_START_TLS, timer};
use gatehouse_core::identity::Verifier;
use gatehouse_core::record::{FilterMode, Shared};
use gatehouse_dynamic_modules_abi::network::{
    Buffer, CalloutResponse, CalloutResult, CloseKind, ConfigEnvoy, Connection, ConnectionEvent,
    FilterStatus, NetworkFilter, NetworkFilterConfig, Scheduler,
};
use gatehouse_dynamic_modules_abi::{LogLevel, log};
use gatehouse_postgres::login::{LoginConfig, TokenLogin};
use gatehouse_postgres::masking::MaskingPolicy;
use gatehouse_postgres::policy::{PgPolicy, PolicyCache};
use gatehouse_postgres::{CachedPolicy, CloseReason, EngineConfig, FilterConfig, PolicyConfig};
use gatehouse_postgres_glue::{
    Approvals, Counter, Direction, Family, Flow, Gauge, HistogramStat, Host, HostError, Level,
    PgConnection, Setup,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long after answering `S` the client side switches to TLS (see
/// [`PgFilter::answer_ssl_request`]).
const START_TLS_DELAY: Duration = Duration::from_millis(5);

/// Largest key-set response used.
const MAX_JWKS_RESPONSE: usize = 256 * 1024;

/// The envelope around the filter's configuration (see the module docs).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    filter: &'a RawValue,
    #[serde(default)]
    records: Option<RecordsConfig>,
    #[serde(default)]
    approvals: Option<ApprovalsConfig>,
    #[serde(default)]
    starttls: bool,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the configuration is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("{0}")]
    Envelope(serde_json::Error),
    #[error("{0}")]
    Filter(gatehouse_core::config::ConfigError),
    #[error("the record writer could not start: {0}")]
    Writer(std::io::Error),
    #[error("{0}")]
    Approvals(ApprovalsError),
}

/// The parts of a native configuration.
#[derive(Debug)]
struct Unwrapped<'a> {
    /// The filter's configuration as the Wasm build takes it, byte for byte.
    filter: &'a [u8],
    records: Option<RecordsConfig>,
    approvals: Option<ApprovalsConfig>,
    starttls: bool,
}

/// Takes the filter's configuration out of its envelope, if it has one.
fn unwrap(bytes: &[u8]) -> Result<Unwrapped<'_>, ConfigError> {
    let document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(ConfigError::NotJson)?;
    if document.get("filter").is_none() {
        return Ok(Unwrapped {
            filter: bytes,
            records: None,
            approvals: None,
            starttls: false,
        });
    }
    let envelope: Envelope<'_> = serde_json::from_slice(bytes).map_err(ConfigError::Envelope)?;
    Ok(Unwrapped {
        filter: envelope.filter.get().as_bytes(),
        records: envelope.records,
        approvals: envelope.approvals,
        starttls: envelope.starttls,
    })
}

/// One Postgres filter configuration, shared by every worker.
pub struct PgConfig {
    /// Tells this configuration's per-worker state apart from others'.
    id: u64,
    config: Arc<EngineConfig>,
    policy: Option<Arc<PgPolicy>>,
    masking: Option<Arc<MaskingPolicy>>,
    policy_hash: Shared<str>,
    mode: FilterMode,
    login: Option<(Verifier, Arc<LoginConfig>)>,
    keys: SharedKeys,
    /// The approval service's grants, read for every worker (with a policy).
    grants: Option<GrantFeed>,
    starttls: bool,
    records: Option<RecordWriter>,
    metrics: Metrics,
    labelled: LabelledStats,
    buffered_high_water: Arc<AtomicUsize>,
}

impl PgConfig {
    /// Parses `bytes` (see the module docs) and defines the stats.
    pub fn new(bytes: &[u8], envoy: &mut ConfigEnvoy) -> Result<PgConfig, ConfigError> {
        let Unwrapped {
            filter,
            records,
            approvals,
            starttls,
        } = unwrap(bytes)?;
        let metrics = Metrics::define(envoy);
        let parsed = match FilterConfig::from_json(filter) {
            Ok(parsed) => parsed,
            Err(error) => {
                count_config(envoy, &metrics, Counter::ConfigRejected);
                return Err(ConfigError::Filter(error));
            }
        };
        let grants = match GrantFeed::start(parsed.approvals.as_ref(), approvals) {
            Ok(grants) => grants,
            Err(error) => {
                count_config(envoy, &metrics, Counter::ConfigRejected);
                return Err(ConfigError::Approvals(error));
            }
        };
        let document: serde_json::Value = serde_json::from_slice(filter).unwrap_or_default();
        let labelled = LabelledStats::define(
            envoy,
            parsed.mode.is_shadow(),
            &rule_names(&document, "policy"),
            &rule_names(&document, "masking"),
        );
        let records = records
            .map(RecordWriter::start)
            .transpose()
            .map_err(ConfigError::Writer)?;
        count_config(envoy, &metrics, Counter::ConfigLoaded);
        static IDS: AtomicU64 = AtomicU64::new(1);
        Ok(PgConfig {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            config: Arc::new(parsed.engine),
            policy: parsed.policy.map(|PolicyConfig(policy)| policy),
            masking: parsed.masking.map(|masking| masking.policy),
            policy_hash: Shared(Arc::from(parsed.hash)),
            mode: parsed.mode,
            login: parsed
                .token_login
                .map(|login| (login.verifier, login.login)),
            keys: SharedKeys::default(),
            grants,
            starttls,
            records,
            metrics,
            labelled,
            buffered_high_water: Arc::default(),
        })
    }

    /// This worker's state for this configuration, made on first use.
    fn worker(self: &Arc<Self>) -> Rc<Worker> {
        WORKERS.with(|workers| {
            let mut workers = workers.borrow_mut();
            workers.retain(|_, (config, _)| config.strong_count() > 0);
            if let Some((_, worker)) = workers.get(&self.id) {
                return Rc::clone(worker);
            }
            let worker = Rc::new(Worker {
                policy: self.policy.as_ref().map(|policy| {
                    CachedPolicy::new(
                        Arc::clone(policy),
                        Rc::new(RefCell::new(PolicyCache::default())),
                    )
                }),
                keys: self
                    .login
                    .as_ref()
                    .map(|(verifier, _)| RefCell::new(WorkerKeys::new(verifier.clone()))),
                grants: self.grants.as_ref().map(|feed| RefCell::new(feed.worker())),
            });
            workers.insert(self.id, (Arc::downgrade(self), Rc::clone(&worker)));
            worker
        })
    }
}

/// Counts a configuration event on the main thread.
fn count_config(envoy: &mut ConfigEnvoy, metrics: &Metrics, counter: Counter) {
    if let Some(id) = metrics.counter(counter) {
        envoy.increment_counter(id, 1);
    }
}

/// What one worker thread keeps per configuration.
struct Worker {
    /// The statement policy with this worker's decision cache.
    policy: Option<CachedPolicy>,
    /// Token login's verifier and key upkeep; a held login is woken through
    /// its connection's scheduler.
    keys: Option<RefCell<Keys>>,
    /// The grant book this worker's sessions read.
    grants: Option<RefCell<WorkerGrants>>,
}

/// A worker's key upkeep.
type Keys = WorkerKeys<Arc<Scheduler>>;

/// A worker's state for one configuration, with a way to tell the
/// configuration went away.
type WorkerEntry = (std::sync::Weak<PgConfig>, Rc<Worker>);

thread_local! {
    /// Per-worker state by configuration id (a configuration that went away is
    /// pruned on the next lookup).
    static WORKERS: RefCell<BTreeMap<u64, WorkerEntry>> = const { RefCell::new(BTreeMap::new()) };
}

/// The configuration Envoy holds (an `Arc`, so workers can tell when it went).
pub struct PgFilterConfig(pub Arc<PgConfig>);

impl NetworkFilterConfig for PgFilterConfig {
    fn new_filter(&self, _connection: &mut Connection) -> Option<Box<dyn NetworkFilter>> {
        let config = &self.0;
        let worker = config.worker();
        let login = match (&config.login, &worker.keys) {
            (Some((_, login)), Some(keys)) => {
                let keys = keys.borrow();
                Some((
                    TokenLogin::new(
                        Rc::clone(&keys.verifier),
                        Arc::clone(login),
                        Rc::clone(&keys.wanted),
                    ),
                    login.deadline_seconds,
                ))
            }
            _ => None,
        };
        let setup = Setup {
            config: Arc::clone(&config.config),
            policy: worker.policy.clone(),
            masking: config.masking.clone(),
            policy_hash: Some(config.policy_hash.clone()),
            mode: config.mode,
            login,
            buffered_high_water: Arc::clone(&config.buffered_high_water),
            approvals: match (&config.policy, &worker.grants) {
                (Some(policy), Some(grants)) => Some(Approvals {
                    policy: Arc::clone(policy),
                    book: grants.borrow().book(),
                    holds: true,
                }),
                _ => None,
            },
        };
        Some(Box::new(PgFilter {
            glue: PgConnection::new(setup),
            config: Arc::clone(config),
            worker: Rc::downgrade(&worker),
            state: FilterState::default(),
        }))
    }
}

/// What a connection keeps besides its glue.
#[derive(Default)]
struct FilterState {
    /// Wakes this connection later (created when first needed).
    scheduler: Option<Arc<Scheduler>>,
    /// The login deadline in force (unix µs).
    deadline_us: Option<u64>,
    /// A close is on its way through the scheduler.
    close_scheduled: bool,
    /// Records of the current event, handed over in one go.
    records: Vec<String>,
    /// The client's SSLRequest (`starttls` only).
    gate: StartTlsGate,
    /// Key fetches this connection started: callout id → issuer.
    key_fetches: BTreeMap<u64, String>,
    /// Approval service calls this connection started (callout ids).
    approval_calls: BTreeSet<u64>,
    /// The client's bytes wait in Envoy's buffer for keys: the worker's first
    /// keys (a fetch of this connection is in flight for an issuer it has none
    /// of), or those the client's token needs (see [`PgFilter::hold_for_keys`]).
    waiting_for_keys: bool,
    /// The login waited for a fetch this connection started: it is judged
    /// with what that fetch brought, never held for another of its own.
    login_fetched: bool,
    closed: bool,
}

struct PgFilter {
    glue: PgConnection,
    config: Arc<PgConfig>,
    worker: Weak<Worker>,
    state: FilterState,
}

impl PgFilter {
    /// Runs `event` with this event's host, then hands over its records and
    /// starts the key fetches it called for.
    fn with_host(
        &mut self,
        connection: &mut Connection,
        event: impl FnOnce(&mut PgConnection, &mut NativeHost<'_>),
    ) {
        let Some(worker) = self.worker.upgrade() else {
            return;
        };
        let mut host = NativeHost {
            connection,
            config: &self.config,
            worker: &worker,
            state: &mut self.state,
        };
        event(&mut self.glue, &mut host);
        host.finish();
    }
}

impl NetworkFilter for PgFilter {
    fn on_new_connection(&mut self, connection: &mut Connection) -> FilterStatus {
        self.with_host(connection, |glue, host| glue.on_new_connection(host));
        FilterStatus::Continue
    }

    fn on_read(&mut self, connection: &mut Connection, length: usize, end: bool) -> FilterStatus {
        // Once the gate has decided, the client's bytes are not copied out
        // again on every read.
        if self.config.starttls && !self.state.closed && !self.state.gate.decided() {
            let bytes = connection.chunks(Buffer::Read).concat();
            match self.state.gate.on_client_bytes(&bytes) {
                Gate::Pass => {}
                Gate::Wait => return FilterStatus::StopIteration,
                Gate::Upgrade => {
                    self.answer_ssl_request(connection);
                    return FilterStatus::StopIteration;
                }
                Gate::Refuse => {
                    log(
                        LogLevel::Warn,
                        "gatehouse postgres: bytes after an SSLRequest, before TLS: connection closed",
                    );
                    self.state.closed = true;
                    connection.close(CloseKind::Abort);
                    return FilterStatus::StopIteration;
                }
            }
        }
        if end && self.glue.holds_statement() {
            // The client is gone while its statement waits for a decision:
            // nothing of it may reach the server now.
            self.state.closed = true;
            connection.close(CloseKind::Abort);
            return FilterStatus::StopIteration;
        }
        if self.state.waiting_for_keys || self.hold_for_keys(connection) {
            return FilterStatus::StopIteration;
        }
        self.adopt_grants();
        let mut flow = Flow::Continue;
        self.with_host(connection, |glue, host| {
            flow = glue.on_data(host, Direction::FromClient, length, false);
            host.start_key_fetches();
        });
        client_status(flow)
    }

    fn on_write(&mut self, connection: &mut Connection, length: usize, end: bool) -> FilterStatus {
        self.with_host(connection, |glue, host| {
            let _ = glue.on_data(host, Direction::FromServer, length, end);
        });
        FilterStatus::Continue
    }

    fn on_event(&mut self, connection: &mut Connection, event: ConnectionEvent) {
        let reason = match event {
            ConnectionEvent::RemoteClose => CloseReason::Client,
            ConnectionEvent::LocalClose => CloseReason::Server,
            _ => return,
        };
        self.with_host(connection, |glue, host| glue.on_close(host, reason));
        self.abandon_key_fetches();
    }

    fn on_http_callout_done(
        &mut self,
        connection: &mut Connection,
        callout_id: u64,
        response: CalloutResponse<'_>,
    ) {
        if self.state.approval_calls.remove(&callout_id) {
            let status = answer_status(&response);
            let body = response.body_bytes();
            let token = approval_token(callout_id).unwrap_or_default();
            self.with_host(connection, |glue, host| {
                glue.on_approval_answer(host, token, status, &body);
            });
            return;
        }
        let Some(issuer) = self.state.key_fetches.remove(&callout_id) else {
            return;
        };
        let (Some(worker), now) = (self.worker.upgrade(), now_seconds()) else {
            return;
        };
        let Some(keys) = &worker.keys else {
            return;
        };
        let status = response.header(":status").unwrap_or_default();
        let outcome = if response.result != CalloutResult::Success {
            Err(format!("no response ({:?})", response.result))
        } else if status != b"200" {
            Err(format!("status {}", String::from_utf8_lossy(status)))
        } else {
            let body = response.body_bytes();
            if body.len() > MAX_JWKS_RESPONSE {
                Err("key set larger than 256 KiB".into())
            } else {
                keys.borrow_mut()
                    .fetched(&self.config.keys, &issuer, &body, now)
                    .map_err(|error| format!("key set unusable: {error}"))
            }
        };
        if let Err(reason) = outcome {
            log(
                LogLevel::Warn,
                &format!("gatehouse: fetching keys of {issuer} failed: {reason}"),
            );
            keys.borrow_mut().failed(&issuer, now, &reason);
        }
        wake(keys.borrow_mut().ended(&issuer));
        if self.state.waiting_for_keys && self.state.key_fetches.is_empty() {
            self.release_held_bytes(connection);
        }
    }

    fn on_scheduled(&mut self, connection: &mut Connection, event_id: u64) {
        match event_id {
            EVENT_CLOSE => {
                connection.close(CloseKind::FlushWrite);
            }
            // The fetch another connection made for this login's keys ended.
            EVENT_KEYS_FETCHED
                if self.state.waiting_for_keys && self.state.key_fetches.is_empty() =>
            {
                self.release_held_bytes(connection);
            }
            EVENT_START_TLS => {
                if connection.start_tls() {
                    connection.read_disable(false);
                } else {
                    log(
                        LogLevel::Error,
                        "gatehouse postgres: starting TLS failed (is the listener's transport \
                         socket envoy.transport_sockets.starttls?): connection closed",
                    );
                    connection.close(CloseKind::Abort);
                }
            }
            EVENT_LOGIN_DEADLINE => {
                let now = now_us();
                if self.state.deadline_us.is_some_and(|at| at <= now) {
                    log(
                        LogLevel::Info,
                        "gatehouse postgres: closing a connection that did not log in by its deadline",
                    );
                    self.state.deadline_us = None;
                    connection.close(CloseKind::FlushWrite);
                }
            }
            _ => {}
        }
    }
}

impl PgFilter {
    /// Answers the SSLRequest in the read buffer with `S`, and starts TLS once
    /// that answer left in plaintext.
    ///
    /// Envoy writes the `S` on the next turn of the worker's event loop, and
    /// the ABI tells no filter when bytes were sent; an event committed now
    /// would run in this turn, before the write, and the `S` would then wait
    /// behind a TLS handshake that never starts. So TLS starts from an alarm
    /// [`START_TLS_DELAY`] later, long after that next turn, and reading stops
    /// until then: the client's ClientHello must wait in the socket for the
    /// TLS socket, not be read in plaintext. A turn slower than the delay
    /// fails this one handshake (the client sees no answer and the login
    /// deadline closes the connection); it never falls back to plaintext.
    fn answer_ssl_request(&mut self, connection: &mut Connection) {
        let scheduler = scheduler(connection, &mut self.state);
        let Some(scheduler) = scheduler else {
            connection.close(CloseKind::Abort);
            return;
        };
        if !connection.replace(Buffer::Read, SSL_REQUEST.len(), b"") {
            connection.close(CloseKind::Abort);
            return;
        }
        if !connection.read_disable(true)
            || !connection.write_to_client(b"S", false)
            || !timer::after(START_TLS_DELAY, scheduler, EVENT_START_TLS)
        {
            connection.close(CloseKind::Abort);
        }
    }

    /// Holds the client's bytes when they carry the login's token and its
    /// keys must come first ([`WorkerKeys::before_login`] decides): judged
    /// now, a token signed by a key the identity provider just rotated in
    /// would be refused, and the fetch it calls for would run on the
    /// connection its client closes on reading the refusal. Returns whether
    /// the bytes are held; [`PgFilter::release_held_bytes`] asks again when
    /// the fetch ends (the login deadline bounds the wait).
    fn hold_for_keys(&mut self, connection: &mut Connection) -> bool {
        // Only while logging in: the data path pays nothing after it.
        if self.state.deadline_us.is_none() || self.state.closed {
            return false;
        }
        let Some(worker) = self.worker.upgrade() else {
            return false;
        };
        let Some(keys) = &worker.keys else {
            return false;
        };
        let bytes = connection.buffer_bytes(Buffer::Read);
        let Some(token) = self.glue.token_ahead(&bytes) else {
            return false;
        };
        let decision = keys.borrow_mut().before_login(
            &self.config.keys,
            token,
            now_seconds(),
            !self.state.login_fetched,
        );
        let held = match decision {
            BeforeLogin::Judge => false,
            BeforeLogin::Fetch(fetch) => {
                self.state.login_fetched = true;
                start_fetch(connection, keys, &mut self.state.key_fetches, fetch)
            }
            BeforeLogin::Wait { issuer } => match scheduler(connection, &mut self.state) {
                Some(scheduler) => {
                    keys.borrow_mut().wait(issuer, scheduler);
                    true
                }
                None => false,
            },
        };
        self.state.waiting_for_keys = held;
        held
    }

    /// The keys came (or their fetch ended without them): the client's bytes
    /// that waited go through the glue now, then on to the server, unless
    /// they must wait again ([`PgFilter::hold_for_keys`]).
    fn release_held_bytes(&mut self, connection: &mut Connection) {
        self.state.waiting_for_keys = false;
        if self.hold_for_keys(connection) {
            return;
        }
        let length = connection
            .chunks(Buffer::Read)
            .iter()
            .map(|c| c.len())
            .sum();
        let mut flow = Flow::Continue;
        if length > 0 {
            self.adopt_grants();
            self.with_host(connection, |glue, host| {
                flow = glue.on_data(host, Direction::FromClient, length, false);
            });
        }
        if flow == Flow::Continue {
            connection.continue_reading();
        }
    }

    /// Brings this worker's grant book up to the configuration's last
    /// publication before client bytes are judged.
    fn adopt_grants(&self) {
        if let (Some(feed), Some(worker)) = (&self.config.grants, self.worker.upgrade())
            && let Some(grants) = &worker.grants
            && let Ok(mut grants) = grants.try_borrow_mut()
        {
            grants.adopt(feed);
        }
    }

    /// The connection ends: its key fetches will never answer. They did not
    /// fail (see [`WorkerKeys::abandoned`]): the logins waiting for them are
    /// woken to fetch themselves, and no later login is held back. A login
    /// this connection held stops waiting.
    fn abandon_key_fetches(&mut self) {
        let fetches = std::mem::take(&mut self.state.key_fetches);
        let Some(worker) = self.worker.upgrade() else {
            return;
        };
        let Some(keys) = &worker.keys else {
            return;
        };
        let mut keys = keys.borrow_mut();
        if let Some(ours) = &self.state.scheduler {
            keys.stop_waiting(|waker| Arc::ptr_eq(waker, ours));
        }
        for issuer in fetches.values() {
            wake(keys.abandoned(issuer));
        }
    }
}

impl Drop for PgFilter {
    fn drop(&mut self) {
        self.abandon_key_fetches();
    }
}

/// What Envoy does with client bytes the glue saw: a [`Flow::Hold`] keeps
/// them in the read buffer until the glue resumes reading.
fn client_status(flow: Flow) -> FilterStatus {
    match flow {
        Flow::Continue => FilterStatus::Continue,
        Flow::Hold => FilterStatus::StopIteration,
    }
}

/// The glue's token for an approval call: the callout id (Envoy counts them
/// per worker from 1, so one never outgrows a `u32` in practice).
fn approval_token(callout_id: u64) -> Option<u32> {
    u32::try_from(callout_id).ok()
}

/// Wakes logins held for keys (see [`PgFilter::hold_for_keys`]).
fn wake(logins: Vec<Arc<Scheduler>>) {
    for login in logins {
        login.commit(EVENT_KEYS_FETCHED);
    }
}

/// Starts `fetch` from `connection`; whether it is under way (one that could
/// not start is recorded as failed).
fn start_fetch(
    connection: &mut Connection,
    keys: &RefCell<Keys>,
    key_fetches: &mut BTreeMap<u64, String>,
    fetch: Fetch,
) -> bool {
    let headers = [
        (":method", "GET"),
        (":path", fetch.path.as_str()),
        ("host", fetch.authority.as_str()),
        (":authority", fetch.authority.as_str()),
        ("accept", "application/json"),
    ];
    match connection.http_callout(&fetch.cluster, &headers, b"", u64::from(fetch.timeout_ms)) {
        Ok(id) => {
            keys.borrow_mut().started(&fetch.issuer);
            key_fetches.insert(id, fetch.issuer);
            true
        }
        Err(code) => {
            keys.borrow_mut().failed(
                &fetch.issuer,
                now_seconds(),
                &format!("dispatch failed: {code}"),
            );
            false
        }
    }
}

/// The connection's scheduler, created on first use.
fn scheduler(connection: &mut Connection, state: &mut FilterState) -> Option<Arc<Scheduler>> {
    if state.scheduler.is_none() {
        state.scheduler = connection.scheduler().map(Arc::new);
    }
    state.scheduler.clone()
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

fn now_seconds() -> i64 {
    i64::try_from(now_us() / 1_000_000).unwrap_or(i64::MAX)
}

/// The dynamic-modules host of one event of one connection.
struct NativeHost<'a> {
    connection: &'a mut Connection,
    config: &'a PgConfig,
    worker: &'a Worker,
    state: &'a mut FilterState,
}

fn buffer(direction: Direction) -> Buffer {
    match direction {
        Direction::FromClient => Buffer::Read,
        Direction::FromServer => Buffer::Write,
    }
}

impl NativeHost<'_> {
    /// After the glue's event: its records leave.
    fn finish(&mut self) {
        if let Some(writer) = &self.config.records {
            writer.emit(&mut self.state.records);
        } else if !self.state.records.is_empty() {
            let lost = self.state.records.len() as u64;
            self.state.records.clear();
            self.count(Counter::RecordsDropped, lost);
        }
    }

    /// Starts the key fetches the worker needs, from this connection (called
    /// on the client's bytes). A first fetch of an issuer holds this client's
    /// next bytes until it answers.
    fn start_key_fetches(&mut self) {
        let Some(keys) = &self.worker.keys else {
            return;
        };
        let fetches = keys.borrow_mut().upkeep(&self.config.keys, now_seconds());
        for fetch in fetches {
            let first = !keys.borrow().has_keys(&fetch.issuer);
            if start_fetch(self.connection, keys, &mut self.state.key_fetches, fetch) && first {
                self.state.waiting_for_keys = true;
                self.state.login_fetched = true;
            }
        }
    }
}

impl Host for NativeHost<'_> {
    fn now_us(&mut self) -> Result<u64, HostError> {
        Ok(now_us())
    }

    fn connection_id(&mut self) -> Result<u64, HostError> {
        self.connection
            .connection_id()
            .ok_or_else(|| HostError("no connection id".into()))
    }

    fn client_address(&mut self) -> Result<String, HostError> {
        Ok(self.connection.remote_address().unwrap_or_default())
    }

    fn read(&mut self, direction: Direction, size: usize) -> Result<Vec<u8>, HostError> {
        let mut bytes = self.connection.buffer_bytes(buffer(direction));
        if bytes.len() < size {
            return Err(HostError(format!(
                "buffer holds {} of {size} bytes",
                bytes.len()
            )));
        }
        bytes.truncate(size);
        Ok(bytes)
    }

    fn replace(
        &mut self,
        direction: Direction,
        size: usize,
        bytes: &[u8],
    ) -> Result<(), HostError> {
        if self.connection.replace(buffer(direction), size, bytes) {
            Ok(())
        } else {
            Err(HostError("buffer not replaced".into()))
        }
    }

    fn close(&mut self) -> Result<(), HostError> {
        self.state.closed = true;
        if self.connection.close(CloseKind::FlushWrite) {
            Ok(())
        } else {
            Err(HostError("close refused".into()))
        }
    }

    /// Closed from the connection's next scheduled event, after this event's
    /// bytes moved to the socket.
    fn close_after_write(&mut self) {
        if std::mem::replace(&mut self.state.close_scheduled, true) {
            return;
        }
        match scheduler(self.connection, self.state) {
            Some(scheduler) => scheduler.commit(EVENT_CLOSE),
            None => {
                self.connection.close(CloseKind::FlushWrite);
            }
        }
    }

    fn set_filter_state(&mut self, key: &str, value: &[u8]) -> Result<(), HostError> {
        // The Wasm build's keys, so one access-log format serves both builds.
        if self
            .connection
            .set_filter_state(&format!("wasm.{key}"), value)
        {
            Ok(())
        } else {
            Err(HostError(format!("filter state {key} not set")))
        }
    }

    fn count(&mut self, counter: Counter, by: u64) {
        if by > 0
            && let Some(id) = self.config.metrics.counter(counter)
        {
            self.connection.increment_counter(id, by);
        }
    }

    fn adjust_gauge(&mut self, gauge: Gauge, delta: i64) {
        let Some(id) = self.config.metrics.gauge(gauge) else {
            return;
        };
        if delta >= 0 {
            self.connection.increment_gauge(id, delta.unsigned_abs());
        } else {
            self.connection.decrement_gauge(id, delta.unsigned_abs());
        }
    }

    fn set_gauge(&mut self, gauge: Gauge, value: u64) {
        if let Some(id) = self.config.metrics.gauge(gauge) {
            self.connection.set_gauge(id, value);
        }
    }

    fn record(&mut self, histogram: HistogramStat, value: u64) {
        if let Some(id) = self.config.metrics.histogram(histogram) {
            self.connection.record_histogram(id, value);
        }
    }

    fn count_labelled(&mut self, family: Family, class: &'static str, name: &str, by: u64) {
        if let Some(id) = self.config.labelled.id(family, class, name) {
            self.connection.increment_counter(id, by);
        }
    }

    fn emit_record(&mut self, line: &str, _now_us: u64) {
        self.state.records.push(line.to_owned());
    }

    /// At close: the records go with [`NativeHost::finish`], right after.
    fn flush_records(&mut self) {}

    fn log(&mut self, level: Level, message: &str) {
        crate::log_at(level, message);
    }

    fn login_deadline(&mut self, deadline_us: Option<u64>) {
        self.state.deadline_us = deadline_us;
        if let Some(deadline) = deadline_us
            && let Some(scheduler) = scheduler(self.connection, self.state)
        {
            let delay = Duration::from_micros(deadline.saturating_sub(now_us()));
            if !timer::after(delay, scheduler, EVENT_LOGIN_DEADLINE) {
                log(
                    LogLevel::Error,
                    "gatehouse postgres: no alarm for a login deadline",
                );
            }
        }
    }

    /// A callout to the filter's approval service cluster; the answer comes
    /// to this connection's [`PgFilter::on_http_callout_done`].
    fn approval_call(
        &mut self,
        path: &str,
        body: &[u8],
        timeout_ms: Option<u64>,
    ) -> Result<u32, HostError> {
        let feed = self
            .config
            .grants
            .as_ref()
            .ok_or_else(|| HostError("no approval service is configured".into()))?;
        let service = feed.service();
        let authorization = service.authorization();
        let headers = call_headers(service, "POST", path, &authorization);
        let id = self
            .connection
            .http_callout(
                &service.cluster,
                &headers,
                body,
                timeout_ms.unwrap_or(u64::from(service.timeout_ms)),
            )
            .map_err(|code| HostError(format!("callout refused ({code})")))?;
        let token =
            approval_token(id).ok_or_else(|| HostError(format!("callout id {id} too large")))?;
        self.state.approval_calls.insert(id);
        Ok(token)
    }

    fn share_grant_use(&mut self, id: &str) {
        if let Some(feed) = &self.config.grants {
            feed.share_used(id);
        }
    }

    fn resume_client(&mut self) -> Result<(), HostError> {
        self.connection.continue_reading();
        Ok(())
    }

    fn inject_client(&mut self, bytes: &[u8]) -> Result<(), HostError> {
        if self.connection.inject_read_data(bytes) {
            Ok(())
        } else {
            Err(HostError("client bytes not injected".into()))
        }
    }

    /// Reading disabled and enabled again: Envoy then hands the bytes its
    /// read buffer holds to the filter chain on the next turn of the loop,
    /// even with nothing new in the socket.
    fn redeliver_client(&mut self) -> Result<(), HostError> {
        if self.connection.read_disable(true) && self.connection.read_disable(false) {
            Ok(())
        } else {
            Err(HostError("reading could not be restarted".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTER: &str = r#"{"mode": "shadow",  "engine": {"redact_literals": true}}"#;

    #[test]
    fn the_wasm_builds_configuration_is_taken_as_it_is() {
        let unwrapped = unwrap(FILTER.as_bytes()).unwrap();
        assert_eq!(unwrapped.filter, FILTER.as_bytes());
        assert!(unwrapped.records.is_none());
        assert!(!unwrapped.starttls);
    }

    #[test]
    fn an_envelope_hands_over_the_filter_byte_for_byte_so_its_hash_is_the_wasm_builds() {
        let envelope = format!(
            r#"{{"filter": {FILTER}, "records": {{"address": "127.0.0.1:7070"}}, "starttls": true}}"#
        );
        let unwrapped = unwrap(envelope.as_bytes()).unwrap();
        assert_eq!(unwrapped.filter, FILTER.as_bytes());
        assert_eq!(
            FilterConfig::from_json(unwrapped.filter).unwrap().hash,
            FilterConfig::from_json(FILTER.as_bytes()).unwrap().hash
        );
        let records = unwrapped.records.unwrap();
        assert_eq!(records.address, "127.0.0.1:7070");
        assert_eq!(records.path, "/record");
        assert!(unwrapped.starttls);
    }

    #[test]
    fn the_envelope_says_where_the_grants_are_read_and_the_filter_names_the_service() {
        let policy = r#""policy": {"rules": [{"name": "writes", "action": "require_approval",
            "approval": {"approvers": ["dba"]}, "match": {"kinds": ["delete"]}}]}"#;
        let filter = format!(
            r#"{{{policy}, "approvals": {{"cluster": "gatehouse_approvals", "key": "k-1"}}}}"#
        );
        let envelope =
            format!(r#"{{"filter": {filter}, "approvals": {{"address": "127.0.0.1:8090"}}}}"#);
        let unwrapped = unwrap(envelope.as_bytes()).unwrap();
        assert_eq!(unwrapped.filter, filter.as_bytes());
        assert_eq!(unwrapped.approvals.unwrap().address, "127.0.0.1:8090");
        let parsed = FilterConfig::from_json(unwrapped.filter).unwrap();
        assert_eq!(parsed.approvals.unwrap().cluster, "gatehouse_approvals");
        // The service without the address is refused (see `GrantFeed::start`);
        // without the service, require_approval rules refuse like deny.
        let config = FilterConfig::from_json(format!("{{{policy}}}").as_bytes()).unwrap();
        let ctx = gatehouse_postgres::policy::SessionContext::default();
        let verdict = config
            .policy
            .unwrap()
            .0
            .decide(&ctx, "delete from t where id = 1");
        assert!(verdict.decision.action.blocks(), "{verdict:?}");
    }

    #[test]
    fn approval_answers_are_read_fail_closed() {
        let answer = |result, status: &'static [u8]| CalloutResponse {
            result,
            headers: vec![(&b":status"[..], status)],
            body: vec![],
        };
        assert_eq!(answer_status(&answer(CalloutResult::Success, b"200")), 200);
        assert_eq!(answer_status(&answer(CalloutResult::Success, b"409")), 409);
        // No answer, or an unreadable one, is no confirmation.
        assert_eq!(answer_status(&answer(CalloutResult::Reset, b"200")), 0);
        assert_eq!(answer_status(&answer(CalloutResult::Success, b"2x0")), 0);
        assert_eq!(client_status(Flow::Hold), FilterStatus::StopIteration);
        assert_eq!(client_status(Flow::Continue), FilterStatus::Continue);
    }

    #[test]
    fn a_bad_envelope_is_refused_with_the_reason() {
        for (bad, reason) in [
            (r#"{"filter": {}, "record": {}}"#, "unknown field `record`"),
            (
                r#"{"filter": {}, "records": {"adress": "x"}}"#,
                "unknown field `adress`",
            ),
            (r#"{"filter": {}, "starttls": "yes"}"#, "invalid type"),
            ("not json", "not JSON"),
        ] {
            let error = unwrap(bad.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(reason), "{bad}: {error}");
        }
    }
}
