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
//! # Data path and what Envoy sees
//! The connection glue is `gatehouse-postgres-glue`, shared with the native
//! build; this crate is its proxy-wasm host ([`WasmHost`]) and the root
//! context that holds a worker's shared state. Stats are `wasmcustom.<name>`
//! and filter state keys `wasm.<key>` (see the glue crate for the names).

use gatehouse_core::approval::ApprovalServiceConfig;
use gatehouse_core::identity::Verifier;
use gatehouse_core::record::{FilterMode, Shared};
use gatehouse_host as host;
use gatehouse_postgres::login::{LoginConfig, TokenLogin, WantedFetches};
use gatehouse_postgres::masking::MaskingPolicy;
use gatehouse_postgres::policy::{PgPolicy, PolicyCache};
use gatehouse_postgres::{CachedPolicy, CloseReason, EngineConfig, FilterConfig, PolicyConfig};
use gatehouse_postgres_glue::{
    Approvals, Counter, Direction, Family, Flow, Gauge, HistogramStat, Host, HostError, Level,
    PgConnection, Setup,
};
use host::approvals::GrantDistribution;
use host::keys::KeyDistribution;
use host::metrics::{Histogram, LabelledCounter, Tally};
use host::{BufferType, LogLevel, MetricType};
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, PeerType};
use std::cell::RefCell;
use std::collections::BTreeMap;
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

/// Stats this filter keeps (Envoy prefixes them with `wasmcustom.`), by the
/// glue's names. A metric the host would not define is `None` and simply not kept.
#[derive(Default, Clone, Copy)]
pub struct Metrics {
    counters: [Option<u32>; Counter::ALL.len()],
    gauges: [Option<u32>; Gauge::ALL.len()],
    histograms: [Histogram; HistogramStat::ALL.len()],
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
        Metrics {
            counters: Counter::ALL.map(|c| define(MetricType::Counter, c.name())),
            gauges: Gauge::ALL.map(|g| define(MetricType::Gauge, g.name())),
            histograms: HistogramStat::ALL.map(|h| Histogram::define(h.name(), "postgres")),
        }
    }

    fn counter(&self, counter: Counter) -> Option<u32> {
        self.counters.get(counter as usize).copied().flatten()
    }

    fn gauge(&self, gauge: Gauge) -> Option<u32> {
        self.gauges.get(gauge as usize).copied().flatten()
    }

    /// Counts a configuration this VM refused; `false` for `on_configure`.
    fn rejected(&self) -> bool {
        self.bump(Counter::ConfigRejected, 1);
        false
    }

    fn bump(&self, counter: Counter, by: u64) {
        if by == 0 {
            return;
        }
        if let Some(id) = self.counter(counter) {
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
        self.bump(Counter::HostErrors, 1);
    }
}

/// Labelled stats (see [`host::metrics`]), defined on first use and shared by
/// this worker's connections.
#[derive(Default)]
struct RuleStats {
    families: Vec<(Family, LabelledCounter)>,
}

impl RuleStats {
    fn id(&mut self, family: Family, class: &'static str, name: &str) -> Option<u32> {
        let index = match self.families.iter().position(|(known, _)| *known == family) {
            Some(index) => index,
            None => {
                let counter = match family.class_label() {
                    Some(class_label) => LabelledCounter::with_class(
                        family.name(),
                        Some(class_label),
                        family.name_label(),
                    ),
                    None => LabelledCounter::new(family.name(), family.name_label()),
                };
                self.families.push((family, counter));
                self.families.len() - 1
            }
        };
        self.families.get_mut(index)?.1.id(class, name)
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
                self.masking = config.masking.map(|masking| masking.policy);
                self.policy_document = config.policy.as_ref().map(|p| Arc::clone(&p.0));
                self.approvals = config
                    .approvals
                    .map(|service| GrantDistribution::new(GRANTS_KEY, service));
                self.policy = config.policy.map(|PolicyConfig(policy)| {
                    CachedPolicy::new(policy, Rc::new(RefCell::new(PolicyCache::default())))
                });
                self.login = config.token_login.map(|token_login| LoginRuntime {
                    verifier: Rc::new(RefCell::new(token_login.verifier)),
                    config: token_login.login,
                    wanted: WantedFetches::default(),
                    keys: KeyDistribution::new("gatehouse_pg_jwks"),
                });
                self.metrics.bump(Counter::ConfigLoaded, 1);
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
        let setup = Setup {
            config: Arc::clone(&self.config),
            policy: self.policy.clone(),
            masking: self.masking.clone(),
            policy_hash: self.policy_hash.clone(),
            mode: self.mode,
            login: self
                .login
                .as_ref()
                .map(|login| (login.authenticator(), login.config.deadline_seconds)),
            buffered_high_water: Arc::clone(&self.buffered_high_water),
            approvals: match (&self.approvals, &self.policy_document) {
                // proxy-wasm cannot send held client bytes later, changed:
                // a statement needing approval is refused at once.
                (Some(grants), Some(policy)) => Some(Approvals {
                    policy: Arc::clone(policy),
                    book: grants.book(),
                    holds: false,
                }),
                _ => None,
            },
        };
        Some(Box::new(PostgresConnection {
            context_id,
            glue: PgConnection::new(setup),
            shared: WorkerShared {
                metrics: self.metrics,
                rule_stats: Rc::clone(&self.rule_stats),
                closing: Rc::clone(&self.closing),
                login_deadlines: Rc::clone(&self.login_deadlines),
                approval_service: self
                    .approvals
                    .as_ref()
                    .map(|grants| Rc::new(grants.config().clone())),
            },
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

/// What a worker's connections share with its root context.
struct WorkerShared {
    metrics: Metrics,
    rule_stats: Rc<RefCell<RuleStats>>,
    /// Connections to close once the bytes written in their last callback left.
    closing: Rc<RefCell<Vec<u32>>>,
    /// Connections still logging in: context id → deadline (unix µs).
    login_deadlines: Rc<RefCell<BTreeMap<u32, u64>>>,
    /// The approval service, when configured.
    approval_service: Option<Rc<ApprovalServiceConfig>>,
}

/// The proxy-wasm host of one callback of one connection.
struct WasmHost<'a> {
    context_id: u32,
    shared: &'a WorkerShared,
    /// Labelled counts of this callback, handed over in few host calls.
    tally: Tally,
}

/// Which of Envoy's two data buffers a direction is.
fn buffer(direction: Direction) -> BufferType {
    match direction {
        Direction::FromClient => BufferType::DownstreamData,
        Direction::FromServer => BufferType::UpstreamData,
    }
}

fn host_error(status: host::Status) -> HostError {
    HostError(format!("{status:?}"))
}

impl Host for WasmHost<'_> {
    fn now_us(&mut self) -> Result<u64, HostError> {
        host::now_micros().map_err(host_error)
    }

    fn connection_id(&mut self) -> Result<u64, HostError> {
        host::get_property(&["connection_id"])
            .map(|bytes| connection_id(bytes.as_deref()))
            .map_err(host_error)
    }

    fn client_address(&mut self) -> Result<String, HostError> {
        host::get_property(&["source", "address"])
            .map(|bytes| String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
            .map_err(host_error)
    }

    fn read(&mut self, direction: Direction, size: usize) -> Result<Vec<u8>, HostError> {
        host::get_buffer(buffer(direction), 0, size)
            .map(Option::unwrap_or_default)
            .map_err(host_error)
    }

    fn replace(
        &mut self,
        direction: Direction,
        size: usize,
        bytes: &[u8],
    ) -> Result<(), HostError> {
        host::set_buffer(buffer(direction), 0, size, bytes).map_err(host_error)
    }

    fn close(&mut self) -> Result<(), HostError> {
        host::close_downstream().map_err(host_error)
    }

    /// Closed by the root context's next tick (see [`PostgresRoot::on_tick`]).
    fn close_after_write(&mut self) {
        self.shared.closing.borrow_mut().push(self.context_id);
    }

    fn set_filter_state(&mut self, key: &str, value: &[u8]) -> Result<(), HostError> {
        host::set_property(&[key], value).map_err(host_error)
    }

    fn count(&mut self, counter: Counter, by: u64) {
        self.shared.metrics.bump(counter, by);
    }

    fn adjust_gauge(&mut self, gauge: Gauge, delta: i64) {
        host::metrics::adjust(self.shared.metrics.gauge(gauge), delta);
    }

    fn set_gauge(&mut self, gauge: Gauge, value: u64) {
        if let Some(id) = self.shared.metrics.gauge(gauge)
            && let Err(status) = host::record_metric(id, value)
        {
            self.shared.metrics.host_error("setting a gauge", status);
        }
    }

    fn record(&mut self, histogram: HistogramStat, value: u64) {
        if let Some(histogram) = self.shared.metrics.histograms.get(histogram as usize) {
            histogram.record(value);
        }
    }

    fn count_labelled(&mut self, family: Family, class: &'static str, name: &str, by: u64) {
        let Ok(mut stats) = self.shared.rule_stats.try_borrow_mut() else {
            return;
        };
        let id = stats.id(family, class, name);
        if by == 1 {
            self.tally.add(id);
        } else {
            host::metrics::increment(id, by);
        }
    }

    fn flush_labelled(&mut self) {
        self.tally.flush();
    }

    /// Hands a record to the record service (through its shared queue); one
    /// the queue cannot take yet waits in this VM's backlog and goes out, in
    /// order, from the root context's tick.
    fn emit_record(&mut self, line: &str, now_us: u64) {
        host::records::emit_at(line, now_us);
    }

    fn flush_records(&mut self) {
        host::records::flush();
    }

    fn log(&mut self, level: Level, message: &str) {
        host::log_at(level, message);
    }

    /// The root context's tick closes connections past their deadline.
    fn login_deadline(&mut self, deadline_us: Option<u64>) {
        let mut deadlines = self.shared.login_deadlines.borrow_mut();
        match deadline_us {
            Some(deadline) => deadlines.insert(self.context_id, deadline),
            None => deadlines.remove(&self.context_id),
        };
    }

    fn approval_call(
        &mut self,
        path: &str,
        body: &[u8],
        timeout_ms: Option<u64>,
    ) -> Result<u32, HostError> {
        let service = self
            .shared
            .approval_service
            .as_ref()
            .ok_or_else(|| HostError("no approval service is configured".into()))?;
        match timeout_ms {
            Some(ms) => host::approvals::call_waiting(
                service,
                "POST",
                path,
                Some(body),
                std::time::Duration::from_millis(ms),
            ),
            None => host::approvals::call(service, "POST", path, Some(body)),
        }
        .map_err(host_error)
    }

    fn share_grant_use(&mut self, id: &str) {
        host::approvals::share_used(GRANTS_KEY, id);
    }

    fn resume_client(&mut self) -> Result<(), HostError> {
        host::resume_downstream().map_err(host_error)
    }
}

struct PostgresConnection {
    /// This connection's context, named when the root context closes it later.
    context_id: u32,
    glue: PgConnection,
    shared: WorkerShared,
}

impl PostgresConnection {
    /// Runs `event` with this callback's host.
    fn with_host(&mut self, event: impl FnOnce(&mut PgConnection, &mut WasmHost<'_>)) {
        let mut host = WasmHost {
            context_id: self.context_id,
            shared: &self.shared,
            tally: Tally::default(),
        };
        event(&mut self.glue, &mut host);
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
    /// The approval service answered one of this connection's calls.
    fn on_http_call_response(&mut self, token: u32, _: usize, _body_size: usize, _: usize) {
        let status = host::approvals::response_status();
        // The body only matters to a held statement, which this build has not.
        self.with_host(|glue, host| glue.on_approval_answer(host, token, status, &[]));
    }
}

/// What Envoy does with the bytes of a data callback.
fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Hold => Action::Pause,
    }
}

impl StreamContext for PostgresConnection {
    fn on_new_connection(&mut self) -> Action {
        self.with_host(|glue, host| glue.on_new_connection(host));
        Action::Continue
    }

    fn on_downstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        let mut flow = Flow::Continue;
        self.with_host(|glue, host| {
            flow = glue.on_data(host, Direction::FromClient, data_size, false);
        });
        action(flow)
    }

    fn on_upstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        let mut flow = Flow::Continue;
        self.with_host(|glue, host| {
            flow = glue.on_data(host, Direction::FromServer, data_size, end_of_stream);
        });
        action(flow)
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {
        self.with_host(|glue, host| glue.on_close(host, CloseReason::Client));
    }

    fn on_upstream_close(&mut self, _peer_type: PeerType) {
        self.with_host(|glue, host| glue.on_close(host, CloseReason::Server));
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
}
