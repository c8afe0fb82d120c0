//! proxy-wasm glue for gatehouse's Postgres network filter.
//!
//! Maps Envoy's network-filter callbacks onto the sans-IO engine in
//! `gatehouse-postgres` and applies what it returns. It makes no decisions.
//! Envoy calls client→server bytes "downstream data" and server→client bytes
//! "upstream data".
//!
//! # Configuration
//! The plugin configuration is [`gatehouse_postgres::FilterConfig`]: one JSON
//! object, every part optional, unknown keys rejected. A bad configuration is
//! refused (Envoy keeps the previous one) and the error, naming the offending
//! JSON path, is in Envoy's log.
//!
//! # Data path
//! Each callback reads the whole buffer, hands it to the session, and when the
//! engine asks for it replaces the whole buffer (`set_buffer(…, 0, size, …)`, the
//! only form Envoy accepts). It always returns `Action::Continue`: partial
//! messages live in engine memory, never in Envoy's paused buffer. A failed host
//! call is logged and counted, never a panic; when the engine cannot see or
//! apply the bytes, the connection is closed rather than passed unobserved.
//!
//! # What Envoy sees
//! - Stats `wasmcustom.gatehouse_pg_*` (see [`Metrics`]).
//! - Filter state per connection, for the TCP access log:
//!   `wasm.gatehouse_pg_user`, `wasm.gatehouse_pg_database`,
//!   `wasm.gatehouse_pg_subject` (the verified caller, under token login),
//!   `wasm.gatehouse_pg_statements`, `wasm.gatehouse_pg_errors`,
//!   `wasm.gatehouse_pg_last_sequence`, `wasm.gatehouse_pg_session_end_reason`,
//!   and `wasm.gatehouse_build`.

use gatehouse_core::approval::{ApprovalServiceConfig, GrantBook};
use gatehouse_core::identity::Verifier;
use gatehouse_core::record::{EndReason, FilterMode, Record, Shared, StatementRecord};
use gatehouse_host as host;
use gatehouse_postgres::approval::{ApprovalCall, ApprovalGate};
use gatehouse_postgres::login::{LoginConfig, TokenLogin, WantedFetches};
use gatehouse_postgres::masking::{MaskingPolicy, SessionMasker};
use gatehouse_postgres::policy::{PgPolicy, PolicyCache};
use gatehouse_postgres::{
    CachedPolicy, CloseReason, ConnectionInfo, EngineConfig, FilterConfig, Forward, PolicyConfig,
    Session, SessionSummary, Verdict,
};
use host::approvals::GrantDistribution;
use host::keys::KeyDistribution;
use host::metrics::{Histogram, LabelledCounter, Tally};
use host::{BufferType, LogLevel, MetricType};
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, PeerType};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        host::log(LogLevel::Critical, &format!("gatehouse postgres filter panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(PostgresRoot::default()) });
}}

/// Largest plugin configuration read, in bytes.
const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// Stats this filter keeps (Envoy prefixes them with `wasmcustom.`). A metric
/// the host would not define is `None` and simply not kept.
#[derive(Default, Clone, Copy)]
pub struct Metrics {
    /// `gatehouse_pg_connections_total`: connections seen.
    connections: Option<u32>,
    /// `gatehouse_pg_statements_total`: statements completed (or failed).
    statements: Option<u32>,
    /// `gatehouse_pg_errors_total`: statements that ended in an error.
    errors: Option<u32>,
    /// `gatehouse_pg_protocol_errors_total`: sessions ended for malformed bytes.
    protocol_errors: Option<u32>,
    /// `gatehouse_pg_records_total`: records produced.
    records: Option<u32>,
    /// `gatehouse_pg_records_dropped_total`: records the engine could not hold.
    records_dropped: Option<u32>,
    /// `gatehouse_pg_client_bytes_total`: bytes client → server (as received).
    bytes_from_client: Option<u32>,
    /// `gatehouse_pg_server_bytes_total`: bytes server → client (as received).
    bytes_from_server: Option<u32>,
    /// `gatehouse_pg_buffered_bytes_max` (gauge): most bytes one connection held.
    buffered_high_water: Option<u32>,
    /// `gatehouse_pg_host_errors_total`: host calls that failed.
    host_errors: Option<u32>,
    /// `gatehouse_pg_denied_total`: statements the policy refused.
    denied: Option<u32>,
    /// `gatehouse_pg_masked_total`: values masked for clients.
    masked: Option<u32>,
    /// `gatehouse_pg_logins_total`: token logins that succeeded.
    logins: Option<u32>,
    /// `gatehouse_pg_login_failures_total`: logins refused (bad token, role, server).
    login_failures: Option<u32>,
    /// `gatehouse_pg_sessions_active` (gauge): connections open now.
    sessions_active: Option<u32>,
    /// `gatehouse_pg_config_loaded_total`: configurations a VM accepted.
    config_loaded: Option<u32>,
    /// `gatehouse_pg_config_rejected_total`: configurations a VM refused.
    config_rejected: Option<u32>,
    /// `gatehouse_pg_statement_duration_us` (histogram): each statement's duration.
    statement_duration: Histogram,
    /// `gatehouse_pg_filter_time_us` (histogram): time the filter spent per data callback.
    filter_time: Histogram,
}

impl Metrics {
    fn define() -> Metrics {
        let define = |kind, name| match host::define_metric(kind, name) {
            Ok(id) => Some(id),
            Err(status) => {
                host::log(
                    LogLevel::Warn,
                    &format!("gatehouse postgres: metric {name} not defined: {status:?}"),
                );
                None
            }
        };
        let counter = |name| define(MetricType::Counter, name);
        Metrics {
            connections: counter("gatehouse_pg_connections_total"),
            statements: counter("gatehouse_pg_statements_total"),
            errors: counter("gatehouse_pg_errors_total"),
            protocol_errors: counter("gatehouse_pg_protocol_errors_total"),
            records: counter("gatehouse_pg_records_total"),
            records_dropped: counter("gatehouse_pg_records_dropped_total"),
            bytes_from_client: counter("gatehouse_pg_client_bytes_total"),
            bytes_from_server: counter("gatehouse_pg_server_bytes_total"),
            buffered_high_water: define(MetricType::Gauge, "gatehouse_pg_buffered_bytes_max"),
            host_errors: counter("gatehouse_pg_host_errors_total"),
            denied: counter("gatehouse_pg_denied_total"),
            masked: counter("gatehouse_pg_masked_total"),
            logins: counter("gatehouse_pg_logins_total"),
            login_failures: counter("gatehouse_pg_login_failures_total"),
            sessions_active: define(MetricType::Gauge, "gatehouse_pg_sessions_active"),
            config_loaded: counter("gatehouse_pg_config_loaded_total"),
            config_rejected: counter("gatehouse_pg_config_rejected_total"),
            statement_duration: Histogram::define("gatehouse_pg_statement_duration_us", "postgres"),
            filter_time: Histogram::define("gatehouse_pg_filter_time_us", "postgres"),
        }
    }

    /// Counts a configuration this VM refused; `false` for `on_configure`.
    fn rejected(&self) -> bool {
        self.bump(self.config_rejected, 1);
        false
    }

    fn bump(&self, metric: Option<u32>, by: u64) {
        if by == 0 {
            return;
        }
        if let Some(id) = metric {
            // Not routed through `host_error`: a failing metric call would recurse.
            if let Err(status) = host::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX)) {
                host::log(
                    LogLevel::Debug,
                    &format!("gatehouse postgres: metric update failed: {status:?}"),
                );
            }
        }
    }

    /// Logs a failed host call and counts it.
    fn host_error(&self, what: &str, status: host::Status) {
        host::log(
            LogLevel::Warn,
            &format!("gatehouse postgres: {what} failed: {status:?}"),
        );
        self.bump(self.host_errors, 1);
    }
}

#[derive(Default)]
struct PostgresRoot {
    config: Arc<EngineConfig>,
    /// The statement policy with this worker's decision cache, shared by its sessions.
    policy: Option<CachedPolicy>,
    /// The compiled masking policy, shared by every session.
    masking: Option<Arc<MaskingPolicy>>,
    metrics: Metrics,
    /// Stats labelled by rule, shared by this worker's connections.
    rule_stats: Rc<RefCell<RuleStats>>,
    /// Highest `buffered_bytes` any connection reported, for the gauge.
    buffered_high_water: Arc<std::sync::atomic::AtomicUsize>,
    /// Connections to close once the bytes written in their last callback left.
    closing: Rc<RefCell<Vec<u32>>>,
    /// Token login, when configured.
    login: Option<LoginRuntime>,
    /// The configuration in force, stamped on every record.
    policy_hash: Option<Shared<str>>,
    /// Connections still logging in: context id → deadline (unix µs).
    login_deadlines: Rc<RefCell<BTreeMap<u32, u64>>>,
    ticks: u32,
    /// Enforce, or observe only (the engine decides what that means).
    mode: FilterMode,
    /// The approval service and this worker's grants, when configured.
    approvals: Option<GrantDistribution>,
    /// The compiled policy, whose `require_approval` rules the sessions' gates read.
    policy_document: Option<Arc<PgPolicy>>,
}

/// This worker's token-login state: the verifier its sessions share and the
/// upkeep of its remote key sets.
struct LoginRuntime {
    verifier: Rc<RefCell<Verifier>>,
    config: Arc<LoginConfig>,
    /// Fetches refused logins asked for; started on the next tick.
    wanted: WantedFetches,
    keys: KeyDistribution,
}

impl LoginRuntime {
    fn authenticator(&self) -> TokenLogin {
        TokenLogin::new(
            Rc::clone(&self.verifier),
            Arc::clone(&self.config),
            Rc::clone(&self.wanted),
        )
    }

    /// Adopts key sets other workers fetched, starts the fetches logins asked
    /// for and, once a second, the scheduled refreshes.
    fn upkeep(&mut self, now_seconds: i64, scheduled: bool) {
        let Ok(mut verifier) = self.verifier.try_borrow_mut() else {
            return;
        };
        let wanted = std::mem::take(&mut *self.wanted.borrow_mut());
        for fetch in &wanted {
            self.keys.start(&mut verifier, fetch, now_seconds);
        }
        if scheduled {
            self.keys.on_tick(&mut verifier, now_seconds);
        } else {
            // Cheap when nothing changed (a CAS comparison), and a login must
            // not wait a second for keys another worker already fetched.
            self.keys.adopt_shared(&mut verifier);
        }
    }
}

/// Shared-data key of the grants the approval service publishes.
const GRANTS_KEY: &str = "gatehouse_pg_grants";

/// How often the root context closes connections that asked for it.
const CLOSE_TICK_MS: u32 = 20;
/// Ticks between two scheduled key upkeeps (one second).
const KEY_UPKEEP_TICKS: u32 = 1_000 / CLOSE_TICK_MS;

impl Context for PostgresRoot {
    /// The VM is going away (an ECDS update, Envoy draining): records still
    /// coalescing in it leave now.
    fn on_done(&mut self) -> bool {
        host::records::flush();
        true
    }

    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        if let Some(approvals) = self.approvals.as_mut()
            && approvals.on_response(token, body_size)
        {
            return;
        }
        let now_seconds = now_micros_or_zero().div_euclid(1_000_000);
        if let Some(login) = self.login.as_mut()
            && let Ok(mut verifier) = login.verifier.try_borrow_mut()
        {
            login
                .keys
                .on_response(&mut verifier, token, body_size, now_seconds);
        }
    }
}

/// The host's clock in unix microseconds, or 0 when it cannot be read.
fn now_micros_or_zero() -> i64 {
    host::now_micros()
        .ok()
        .and_then(|micros| i64::try_from(micros).ok())
        .unwrap_or_default()
}

impl RootContext for PostgresRoot {
    fn on_configure(&mut self, config_size: usize) -> bool {
        self.metrics = Metrics::define();
        if let Err(status) = host::set_tick_period_ms(CLOSE_TICK_MS) {
            self.metrics.host_error("starting the close timer", status);
        }
        let json = match host::get_buffer(
            BufferType::PluginConfiguration,
            0,
            config_size.min(MAX_CONFIG_BYTES),
        ) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                self.metrics
                    .host_error("reading the plugin configuration", status);
                return self.metrics.rejected();
            }
        };
        if config_size > MAX_CONFIG_BYTES {
            host::log(
                LogLevel::Error,
                &format!(
                    "gatehouse postgres: configuration rejected: larger than {MAX_CONFIG_BYTES} bytes"
                ),
            );
            return self.metrics.rejected();
        }
        match FilterConfig::from_json(&json) {
            Ok(config) => {
                self.config = Arc::new(config.engine);
                self.policy_hash = Some(Shared(Arc::from(config.hash)));
                self.mode = config.mode;
                self.rule_stats = Rc::new(RefCell::new(RuleStats::for_mode(config.mode)));
                self.masking = config.masking.map(|masking| masking.policy);
                self.policy_document = config.policy.as_ref().map(|p| Arc::clone(&p.0));
                self.policy = config.policy.map(|PolicyConfig(policy)| {
                    CachedPolicy::new(policy, Rc::new(RefCell::new(PolicyCache::default())))
                });
                self.approvals = config
                    .approvals
                    .map(|service| GrantDistribution::new(GRANTS_KEY, service));
                self.login = config.token_login.map(|token_login| LoginRuntime {
                    verifier: Rc::new(RefCell::new(token_login.verifier)),
                    config: token_login.login,
                    wanted: WantedFetches::default(),
                    keys: KeyDistribution::new("gatehouse_pg_jwks"),
                });
                self.metrics.bump(self.metrics.config_loaded, 1);
                true
            }
            Err(error) => {
                host::log(
                    LogLevel::Error,
                    &format!("gatehouse postgres: configuration rejected: {error}"),
                );
                self.metrics.rejected()
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }

    /// Closes the connections whose close was asked for while writing to the
    /// client: closing inside that callback would drop the bytes being written
    /// (Envoy moves them to the socket only after the callback returns).
    fn on_tick(&mut self) {
        host::records::flush();
        self.login_upkeep();
        if let Some(approvals) = self.approvals.as_mut() {
            let now_ms = u64::try_from(now_micros_or_zero() / 1000).unwrap_or_default();
            approvals.on_tick(now_ms);
        }
        let ids = std::mem::take(&mut *self.closing.borrow_mut());
        for id in ids {
            // A connection that is already gone cannot be selected: nothing to do.
            if host::set_effective_context(id).is_ok()
                && let Err(status) = host::close_downstream()
            {
                self.metrics.host_error("closing the connection", status);
            }
        }
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        let login = self.login.as_ref().map(|login| LoginSetup {
            authenticator: login.authenticator(),
            deadline_seconds: login.config.deadline_seconds,
            deadlines: Rc::clone(&self.login_deadlines),
        });
        let approvals = match (&self.approvals, &self.policy_document) {
            (Some(service), Some(policy)) => Some(ApprovalSetup {
                service: Rc::new(service.config().clone()),
                book: service.book(),
                policy: Arc::clone(policy),
            }),
            _ => None,
        };
        Some(Box::new(PostgresConnection {
            context_id,
            approvals,
            held: Held::default(),
            closing: Rc::clone(&self.closing),
            config: Arc::clone(&self.config),
            policy: self.policy.clone(),
            masking: self.masking.clone(),
            metrics: self.metrics,
            rule_stats: Rc::clone(&self.rule_stats),
            buffered_high_water: Arc::clone(&self.buffered_high_water),
            policy_hash: self.policy_hash.clone(),
            mode: self.mode,
            login,
            session: None,
            published: Published::default(),
            last_now_us: 0,
            closed: false,
            open: false,
        }))
    }
}

impl PostgresRoot {
    /// Keeps the token issuers' keys fresh and disconnects clients that did not
    /// finish logging in by their deadline.
    fn login_upkeep(&mut self) {
        let Some(login) = self.login.as_mut() else {
            return;
        };
        let now = now_micros_or_zero();
        let scheduled = self.ticks.is_multiple_of(KEY_UPKEEP_TICKS);
        self.ticks = self.ticks.wrapping_add(1);
        login.upkeep(now.div_euclid(1_000_000), scheduled);
        let now = u64::try_from(now).unwrap_or_default();
        let overdue: Vec<u32> = {
            let mut deadlines = self.login_deadlines.borrow_mut();
            let overdue = deadlines
                .iter()
                .filter(|(_, deadline)| **deadline <= now)
                .map(|(id, _)| *id)
                .collect::<Vec<_>>();
            for id in &overdue {
                deadlines.remove(id);
            }
            overdue
        };
        for id in overdue {
            host::log(
                LogLevel::Info,
                "gatehouse postgres: closing a connection that did not log in by its deadline",
            );
            if host::set_effective_context(id).is_ok()
                && let Err(status) = host::close_downstream()
            {
                self.metrics.host_error("closing an overdue login", status);
            }
        }
    }
}

/// What a connection needs for token login.
struct LoginSetup {
    authenticator: TokenLogin,
    deadline_seconds: u32,
    /// The root's registry of connections still logging in.
    deadlines: Rc<RefCell<BTreeMap<u32, u64>>>,
}

/// What was last written to filter state, so unchanged values are not rewritten.
#[derive(Default)]
struct Published {
    client_known: bool,
    summary: SessionSummary,
}

/// Which of Envoy's two data buffers a callback is about.
#[derive(Clone, Copy)]
enum Direction {
    FromClient,
    FromServer,
}

impl Direction {
    fn buffer(self) -> BufferType {
        match self {
            Direction::FromClient => BufferType::DownstreamData,
            Direction::FromServer => BufferType::UpstreamData,
        }
    }
}

/// What a connection needs for approvals.
struct ApprovalSetup {
    service: Rc<ApprovalServiceConfig>,
    book: Rc<RefCell<GrantBook>>,
    policy: Arc<PgPolicy>,
}

/// Client bytes held while single-use grants are used up at the service.
#[derive(Default)]
struct Held {
    /// Calls whose answer the held bytes wait for.
    consumes: BTreeSet<u32>,
    /// Requests filed (answers only logged).
    filings: BTreeSet<u32>,
    /// Bytes at the start of Envoy's paused buffer that the engine already
    /// processed (and let through); later callbacks carry them again.
    processed: usize,
}

struct PostgresConnection {
    /// The approval service, when configured with a policy.
    approvals: Option<ApprovalSetup>,
    held: Held,
    /// A shadow instance writes no filter state: the enforcing one's stands.
    mode: FilterMode,
    /// This connection's context, named when the root context closes it later.
    context_id: u32,
    closing: Rc<RefCell<Vec<u32>>>,
    config: Arc<EngineConfig>,
    policy: Option<CachedPolicy>,
    masking: Option<Arc<MaskingPolicy>>,
    metrics: Metrics,
    rule_stats: Rc<RefCell<RuleStats>>,
    buffered_high_water: Arc<std::sync::atomic::AtomicUsize>,
    /// Token login, when configured; taken when the session is created.
    login: Option<LoginSetup>,
    policy_hash: Option<Shared<str>>,
    /// Created on the first callback that needs it.
    session: Option<Session>,
    published: Published,
    /// The last time the host gave; reused if a clock read fails.
    last_now_us: u64,
    closed: bool,
    /// Counted in `gatehouse_pg_sessions_active` and not yet closed.
    open: bool,
}

impl PostgresConnection {
    fn now_us(&mut self) -> u64 {
        match host::now_micros() {
            Ok(now) => self.last_now_us = now,
            Err(status) => self.metrics.host_error("reading the clock", status),
        }
        self.last_now_us
    }

    /// The connection's session, created at time `now` if this is its first callback.
    fn session(&mut self, now: u64) -> &mut Session {
        let metrics = self.metrics;
        let config = &self.config;
        let policy = &self.policy;
        let masking = &self.masking;
        let login = &mut self.login;
        let policy_hash = &self.policy_hash;
        let mode = self.mode;
        let context_id = self.context_id;
        let approvals = &self.approvals;
        self.session.get_or_insert_with(|| {
            let id = match host::get_property(&["connection_id"]) {
                Ok(bytes) => connection_id(bytes.as_deref()),
                Err(status) => {
                    metrics.host_error("reading connection_id", status);
                    0
                }
            };
            let client_address = match host::get_property(&["source", "address"]) {
                Ok(bytes) => String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned(),
                Err(status) => {
                    metrics.host_error("reading source.address", status);
                    String::new()
                }
            };
            let mut session = Session::new(
                Arc::clone(config),
                ConnectionInfo { id, client_address },
                now,
            );
            session.set_mode(mode);
            if let Some(policy) = policy {
                session.set_statement_policy(Box::new(policy.clone()));
            }
            if let Some(hash) = policy_hash {
                session.set_policy_hash(hash.clone());
            }
            if let Some(masking) = masking {
                session.set_masker(SessionMasker::new(Arc::clone(masking)));
            }
            if let Some(setup) = approvals {
                session.set_approval_gate(ApprovalGate::new(
                    Arc::clone(&setup.policy),
                    Rc::clone(&setup.book),
                    id,
                ));
            }
            if let Some(setup) = login.as_ref() {
                session.set_authenticator(
                    Box::new(setup.authenticator.clone()),
                    setup.deadline_seconds,
                );
                if let Some(deadline) = session.login_deadline_us() {
                    setup.deadlines.borrow_mut().insert(context_id, deadline);
                }
            }
            session
        })
    }

    /// Feeds one callback's bytes to the engine and applies its verdict.
    fn on_data(&mut self, direction: Direction, size: usize, server_finished: bool) {
        let chunk = if size == 0 {
            Vec::new()
        } else {
            match host::get_buffer(direction.buffer(), 0, size) {
                Ok(bytes) => bytes.unwrap_or_default(),
                Err(status) => {
                    // The engine would lose its place in the stream: end the connection
                    // rather than pass bytes it has not seen.
                    self.metrics.host_error("reading connection data", status);
                    self.close();
                    return;
                }
            }
        };
        let counter = match direction {
            Direction::FromClient => self.metrics.bytes_from_client,
            Direction::FromServer => self.metrics.bytes_from_server,
        };
        self.metrics.bump(counter, chunk.len() as u64);
        let now = self.now_us();
        let session = self.session(now);
        let mut verdict = if chunk.is_empty() {
            unchanged()
        } else {
            match direction {
                Direction::FromClient => session.on_frontend(&chunk, now),
                Direction::FromServer => session.on_backend(&chunk, now),
            }
        };
        if server_finished {
            // The client may be owed an error in place of the server's last word.
            let last = session.on_backend(&[], now);
            verdict = merge(verdict, &chunk, last);
        }
        if let Forward::Replace(bytes) = &verdict.forward
            && let Err(status) = host::set_buffer(direction.buffer(), 0, size, bytes)
        {
            self.metrics.host_error("replacing connection data", status);
            verdict.close_connection = true;
        }
        if verdict.close_connection {
            match direction {
                Direction::FromClient => self.close(),
                Direction::FromServer => self.close_after_write(),
            }
        }
        self.after_engine();
        let spent = self.now_us().saturating_sub(now);
        self.metrics.filter_time.record(spent);
    }

    /// Closes the connection once the bytes of the current server → client
    /// callback are on their way (see [`PostgresRoot::on_tick`]).
    fn close_after_write(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.closing.borrow_mut().push(self.context_id);
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Err(status) = host::close_downstream() {
            self.metrics.host_error("closing the connection", status);
        }
    }

    /// Drains the engine's records and brings stats and filter state up to date.
    fn after_engine(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let records = session.take_records();
        let summary = session.summary();
        if session.login_deadline_us().is_none()
            && let Some(setup) = self.login.take()
        {
            setup.deadlines.borrow_mut().remove(&self.context_id);
        }
        let metrics = self.metrics;
        let mut rule_stats = self.rule_stats.try_borrow_mut().ok();
        let mut decisions = Tally::default();
        for record in &records {
            match record {
                Record::SessionStart(start) => {
                    if !self.published.client_known && self.mode.is_enforce() {
                        self.published.client_known = true;
                        publish(&metrics, "gatehouse_pg_user", start.client.user.as_bytes());
                        publish(
                            &metrics,
                            "gatehouse_pg_database",
                            start.client.database.as_bytes(),
                        );
                        if let Some(identity) = &start.client.identity {
                            metrics.bump(metrics.logins, 1);
                            publish(
                                &metrics,
                                "gatehouse_pg_subject",
                                identity.subject.as_bytes(),
                            );
                        }
                    }
                }
                Record::SessionEnd(end) => {
                    match end.reason {
                        EndReason::ProtocolError => metrics.bump(metrics.protocol_errors, 1),
                        EndReason::AuthenticationFailed => {
                            metrics.bump(metrics.login_failures, 1);
                        }
                        _ => {}
                    }
                    let reason = serde_json::to_value(end.reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    if self.mode.is_enforce() {
                        publish(
                            &metrics,
                            "gatehouse_pg_session_end_reason",
                            reason.as_bytes(),
                        );
                    }
                }
                Record::Statement(statement) => {
                    metrics.statement_duration.record(statement.duration_us);
                    if let Some(rule_stats) = rule_stats.as_deref_mut() {
                        rule_stats.count(statement, &mut decisions);
                    }
                }
            }
        }
        decisions.flush();
        deliver(&metrics, records, self.last_now_us);
        let before = &self.published.summary;
        metrics.bump(
            metrics.statements,
            summary.statements.saturating_sub(before.statements),
        );
        metrics.bump(metrics.errors, summary.errors.saturating_sub(before.errors));
        metrics.bump(metrics.denied, summary.denied.saturating_sub(before.denied));
        metrics.bump(metrics.masked, summary.masked.saturating_sub(before.masked));
        metrics.bump(
            metrics.records_dropped,
            summary
                .records_dropped
                .saturating_sub(before.records_dropped),
        );
        self.note_buffered(summary.buffered_bytes);
        self.published.summary = summary;
    }

    fn note_buffered(&self, buffered: usize) {
        use std::sync::atomic::Ordering;
        let previous = self
            .buffered_high_water
            .fetch_max(buffered, Ordering::Relaxed);
        if buffered > previous
            && let Some(id) = self.metrics.buffered_high_water
            && let Err(status) = host::record_metric(id, buffered as u64)
        {
            self.metrics.host_error("recording buffered bytes", status);
        }
    }

    /// Writes the per-connection counters to filter state. Done at close only:
    /// the TCP access log reads them after every close callback has run, and
    /// rewriting them per statement would cost on the data path.
    fn publish_counters(&self) {
        if self.mode.is_shadow() {
            return;
        }
        let summary = &self.published.summary;
        let metrics = &self.metrics;
        publish(
            metrics,
            "gatehouse_pg_statements",
            summary.statements.to_string().as_bytes(),
        );
        publish(
            metrics,
            "gatehouse_pg_errors",
            summary.errors.to_string().as_bytes(),
        );
        publish(
            metrics,
            "gatehouse_pg_last_sequence",
            summary.last_sequence.to_string().as_bytes(),
        );
    }

    fn on_close(&mut self, reason: CloseReason) {
        if std::mem::take(&mut self.open) {
            host::metrics::adjust(self.metrics.sessions_active, -1);
        }
        if let Some(setup) = self.login.take() {
            setup.deadlines.borrow_mut().remove(&self.context_id);
        }
        let now = self.now_us();
        if let Some(session) = self.session.as_mut() {
            session.on_close(reason, now);
        }
        self.after_engine();
        // The session's last records go now rather than with the next tick.
        host::records::flush();
        self.publish_counters();
    }
}

/// Stats labelled by rule and detector (see [`host::metrics`]).
struct RuleStats {
    /// `gatehouse_pg_decisions_total{action, rule}`: statements by decision.
    decisions: LabelledCounter,
    /// `gatehouse_pg_masked_by_rule_total{rule}`: values masked by column rule.
    masked_by_rule: LabelledCounter,
    /// `gatehouse_pg_masked_by_detector_total{detector}`: findings masked by detector.
    masked_by_detector: LabelledCounter,
}

/// The `rule` label of a decision no rule made: the policy's default.
const DEFAULT_RULE: &str = "default";

impl Default for RuleStats {
    fn default() -> Self {
        RuleStats::for_mode(FilterMode::Enforce)
    }
}

impl RuleStats {
    /// A shadow instance counts its would-be decisions and masking under
    /// `gatehouse_pg_shadow_*`, so they never add to the enforcing instance's.
    fn for_mode(mode: FilterMode) -> Self {
        let [decisions, masked_by_rule, masked_by_detector] = if mode.is_shadow() {
            [
                "gatehouse_pg_shadow_decisions_total",
                "gatehouse_pg_shadow_masked_by_rule_total",
                "gatehouse_pg_shadow_masked_by_detector_total",
            ]
        } else {
            [
                "gatehouse_pg_decisions_total",
                "gatehouse_pg_masked_by_rule_total",
                "gatehouse_pg_masked_by_detector_total",
            ]
        };
        RuleStats {
            decisions: LabelledCounter::with_class(decisions, Some("action"), "rule"),
            masked_by_rule: LabelledCounter::new(masked_by_rule, "rule"),
            masked_by_detector: LabelledCounter::new(masked_by_detector, "detector"),
        }
    }
}

impl RuleStats {
    /// Counts one statement's decision and what masking did to its results
    /// (not for an exempt identity: its values reached the client clear).
    fn count(&mut self, statement: &StatementRecord, decisions: &mut Tally) {
        let decision = &statement.decision;
        let rule = decision.rule.as_deref().unwrap_or(DEFAULT_RULE);
        decisions.add(self.decisions.id(decision.action.as_str(), rule));
        let Some(masking) = statement.masking.as_ref().filter(|m| !m.exempt) else {
            return;
        };
        for (rule, count) in &masking.rules {
            self.masked_by_rule.add("", rule, *count);
        }
        for (detector, count) in &masking.detectors {
            self.masked_by_detector.add("", detector, *count);
        }
    }
}

/// Forward the bytes as they are, keep the connection.
fn unchanged() -> Verdict {
    Verdict {
        forward: Forward::Unchanged,
        close_connection: false,
    }
}

/// Combines a data callback's verdict with the one given at the server's end of
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

/// Hands finished records to the record service (one JSON line each, through
/// its shared queue); a record the queue cannot take yet waits in this VM's
/// backlog and goes out, in order, from the root context's tick.
fn deliver(metrics: &Metrics, records: Vec<Record>, now_us: u64) {
    metrics.bump(metrics.records, records.len() as u64);
    for record in records {
        host::records::emit_at(&record.to_json(), now_us);
    }
}

/// Sets filter state `wasm.<key>`.
fn publish(metrics: &Metrics, key: &str, value: &[u8]) {
    if let Err(status) = host::set_property(&[key], value) {
        metrics.host_error("setting filter state", status);
    }
}

/// Envoy reports `connection_id` as a little-endian u64.
fn connection_id(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .unwrap_or_default()
}

impl Context for PostgresConnection {
    /// An approval call answered: a confirmed use releases the held bytes once
    /// every use they wait for is confirmed; a refused one ends the connection
    /// (the bytes can only go on unchanged or not at all).
    fn on_http_call_response(&mut self, token: u32, _: usize, _body_size: usize, _: usize) {
        let status = host::approvals::response_status();
        if self.held.filings.remove(&token) {
            if !(200..300).contains(&status) {
                host::log(
                    LogLevel::Warn,
                    &format!("gatehouse postgres: filing an approval request failed ({status})"),
                );
            }
            return;
        }
        if !self.held.consumes.remove(&token) {
            return;
        }
        if status != 200 {
            host::log(
                LogLevel::Warn,
                &format!(
                    "gatehouse postgres: the approval service refused to use a grant ({status}); \
                     closing the connection"
                ),
            );
            self.held.consumes.clear();
            self.close();
            return;
        }
        if self.held.consumes.is_empty() {
            self.held.processed = 0;
            if let Err(status) = host::resume_downstream() {
                self.metrics
                    .host_error("releasing held client bytes", status);
                self.close();
            }
        }
    }
}

impl PostgresConnection {
    /// Starts the approval service calls the session asked for.
    fn start_approval_calls(&mut self) {
        let Some(service) = self.approvals.as_ref().map(|s| Rc::clone(&s.service)) else {
            return;
        };
        let Some(session) = self.session.as_mut() else {
            return;
        };
        for call in session.take_approval_calls() {
            let started =
                host::approvals::call(&service, "POST", &call.path(), Some(call.body().as_bytes()));
            match (started, &call) {
                (Ok(token), ApprovalCall::Consume { id, .. }) => {
                    host::approvals::share_used(GRANTS_KEY, id);
                    self.held.consumes.insert(token);
                }
                (Ok(token), ApprovalCall::File { .. }) => {
                    self.held.filings.insert(token);
                }
                (Err(status), ApprovalCall::Consume { .. }) => {
                    // The grant cannot be confirmed: its statement must not run.
                    self.metrics.host_error("using an approval", status);
                    self.close();
                }
                (Err(status), ApprovalCall::File { .. }) => {
                    self.metrics
                        .host_error("filing an approval request", status);
                }
            }
        }
    }

    /// How many bytes Envoy's client buffer holds now.
    fn buffered_client_bytes(&self, fallback: usize) -> usize {
        match host::get_buffer(BufferType::DownstreamData, 0, usize::MAX) {
            Ok(bytes) => bytes.map_or(0, |b| b.len()),
            Err(_) => fallback,
        }
    }

    /// Client bytes while earlier ones are held: Envoy hands the held bytes
    /// again, followed by the new ones; only the new ones go to the engine,
    /// and everything stays held.
    fn on_held_data(&mut self, size: usize) -> Action {
        let all = match host::get_buffer(BufferType::DownstreamData, 0, size) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                self.metrics
                    .host_error("reading held connection data", status);
                self.close();
                return Action::Pause;
            }
        };
        let processed = self.held.processed.min(all.len());
        let (done, new) = all.split_at(processed);
        self.metrics
            .bump(self.metrics.bytes_from_client, new.len() as u64);
        let now = self.now_us();
        let verdict = self.session(now).on_frontend(new, now);
        if let Forward::Replace(bytes) = &verdict.forward {
            let mut out = done.to_vec();
            out.extend_from_slice(bytes);
            if let Err(status) = host::set_buffer(BufferType::DownstreamData, 0, size, &out) {
                self.metrics
                    .host_error("replacing held connection data", status);
                self.close();
            }
            self.held.processed = out.len();
        } else {
            self.held.processed = all.len();
        }
        if verdict.close_connection {
            self.close();
        }
        self.after_engine();
        self.start_approval_calls();
        Action::Pause
    }
}

impl StreamContext for PostgresConnection {
    fn on_new_connection(&mut self) -> Action {
        self.metrics.bump(self.metrics.connections, 1);
        self.open = true;
        host::metrics::adjust(self.metrics.sessions_active, 1);
        publish(
            &self.metrics,
            "gatehouse_build",
            gatehouse_core::build::VERSION.as_bytes(),
        );
        let now = self.now_us();
        let _ = self.session(now);
        Action::Continue
    }

    fn on_downstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        if !self.held.consumes.is_empty() {
            return self.on_held_data(data_size);
        }
        self.on_data(Direction::FromClient, data_size, false);
        self.start_approval_calls();
        if self.held.consumes.is_empty() {
            return Action::Continue;
        }
        // What the engine let through waits in Envoy's buffer until the service
        // confirms every single-use grant it relies on.
        self.held.processed = self.buffered_client_bytes(data_size);
        Action::Pause
    }

    fn on_upstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        self.on_data(Direction::FromServer, data_size, end_of_stream);
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {
        self.on_close(CloseReason::Client);
    }

    fn on_upstream_close(&mut self, _peer_type: PeerType) {
        self.on_close(CloseReason::Server);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_id_is_little_endian() {
        assert_eq!(connection_id(Some(&7u64.to_le_bytes())), 7);
        assert_eq!(connection_id(Some(b"short")), 0);
        assert_eq!(connection_id(None), 0);
    }

    #[test]
    fn end_of_stream_bytes_follow_the_callbacks_output() {
        let replaced = merge(
            Verdict {
                forward: Forward::Replace(b"ab".to_vec()),
                close_connection: false,
            },
            b"xyz",
            Verdict {
                forward: Forward::Replace(b"E".to_vec()),
                close_connection: true,
            },
        );
        assert_eq!(replaced.forward, Forward::Replace(b"abE".to_vec()));
        assert!(replaced.close_connection);
        let appended = merge(
            unchanged(),
            b"xyz",
            Verdict {
                forward: Forward::Replace(b"E".to_vec()),
                close_connection: false,
            },
        );
        assert_eq!(appended.forward, Forward::Replace(b"xyzE".to_vec()));
        let unchanged = merge(unchanged(), b"xyz", unchanged());
        assert_eq!(unchanged.forward, Forward::Unchanged);
    }
}
