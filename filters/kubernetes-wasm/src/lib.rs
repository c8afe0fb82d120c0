//! proxy-wasm host of gatehouse's Kubernetes HTTP filter.
//!
//! Implements the glue's [`Host`] over proxy-wasm and hands every HTTP-filter
//! callback to [`gatehouse_kubernetes_glue`], which decides what happens; this
//! crate only moves bytes, stats and records between it and Envoy.
//!
//! Key sets: the first requests of a worker pause while their own fetch of the
//! issuer's JWKS (from its Envoy cluster) is in flight and resume when it
//! answers; fetched sets reach every worker and scheduled refreshes run on the
//! tick, as [`gatehouse_host::keys`] describes (prefix `gatehouse_k8s_jwks`).
//!
//! Records: each request's audit Events (ResponseStarted for long-running
//! requests, then ResponseComplete) go to filter state `gatehouse_k8s_audit`,
//! one JSON Event per line, which the listener's access log prints. A
//! recorded exec or attach session's records go to the audit service
//! ([`gatehouse_host::records`]); the tick seals its aged chunks.

use gatehouse_core::approval::ApprovalServiceConfig;
use gatehouse_core::identity::{KeyFetch, Verifier};
use gatehouse_host as host;
use gatehouse_kubernetes::gate::{
    ApprovalMemory, RecentRefusal, forget, remember, standing_refusal,
};
use gatehouse_kubernetes_glue::{
    Counter, Direction, Family, Flow, Headers, HistogramStat, Host, HostError, Level, Request,
    Worker,
};
use host::approvals::GrantDistribution;
use host::keys::KeyDistribution;
use host::metrics::LabelledCounter;
use host::{BufferType, LogLevel, MapType, MetricType};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        host::log(LogLevel::Critical, &format!("gatehouse kubernetes filter panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(KubernetesRoot { context_id, state: SharedState::default() })
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
    fn parse(lines: &[String]) -> Vec<RecentRefusal> {
        lines
            .iter()
            .filter_map(|line| RecentRefusal::from_line(line))
            .collect()
    }

    /// Changes the shared refusals with `change`.
    fn update(change: impl Fn(&mut Vec<RecentRefusal>)) {
        host::approvals::update_shared_lines(REFUSALS_KEY, |lines| {
            let mut refusals = Self::parse(lines);
            change(&mut refusals);
            *lines = refusals.iter().map(RecentRefusal::to_line).collect();
        });
    }
}

impl ApprovalMemory for SharedApprovalMemory {
    fn repeated_refusal(&self, subject: &str, hash: &str, now_micros: i64) -> Option<String> {
        let refusals = Self::parse(&host::approvals::shared_lines(REFUSALS_KEY));
        standing_refusal(&refusals, subject, hash, now_micros)
    }

    fn remember_refusal(&self, subject: &str, hash: &str, until_micros: i64, reason: &str) {
        Self::update(|refusals| {
            remember(
                refusals,
                RecentRefusal::new(subject, hash, until_micros, reason),
            );
        });
    }

    fn forget_refusals(&self, subject: &str, hash: &str) {
        Self::update(|refusals| forget(refusals, subject, hash));
    }

    fn in_use(&self, id: &str) -> bool {
        host::approvals::shared_in_use(GRANTS_KEY, id)
    }

    fn mark_in_use(&self, id: &str) {
        host::approvals::share_used(GRANTS_KEY, id);
    }
}
/// This worker's stat ids, defined on configuration.
struct Stats {
    counters: [Option<u32>; Counter::ALL.len()],
    histograms: [Option<u32>; HistogramStat::ALL.len()],
    decisions: LabelledCounter,
    shadow_decisions: LabelledCounter,
}

impl Default for Stats {
    fn default() -> Self {
        let family = |f: Family| {
            LabelledCounter::with_class(f.name(), Some(f.class_label()), f.name_label())
        };
        Stats {
            counters: [None; Counter::ALL.len()],
            histograms: [None; HistogramStat::ALL.len()],
            decisions: family(Family::Decisions),
            shadow_decisions: family(Family::ShadowDecisions),
        }
    }
}

impl Stats {
    fn define() -> Stats {
        let mut stats = Stats::default();
        for (id, counter) in stats.counters.iter_mut().zip(Counter::ALL) {
            *id = host::metrics::define(MetricType::Counter, counter.name(), "kubernetes");
        }
        for (id, histogram) in stats.histograms.iter_mut().zip(HistogramStat::ALL) {
            *id = host::metrics::define(MetricType::Histogram, histogram.name(), "kubernetes");
        }
        stats
    }

    fn counter(&self, counter: Counter) -> Option<u32> {
        let index = Counter::ALL.iter().position(|c| *c == counter)?;
        self.counters.get(index).copied().flatten()
    }

    fn histogram(&self, histogram: HistogramStat) -> Option<u32> {
        let index = HistogramStat::ALL.iter().position(|h| *h == histogram)?;
        self.histograms.get(index).copied().flatten()
    }

    fn family(&mut self, family: Family) -> &mut LabelledCounter {
        match family {
            Family::Decisions => &mut self.decisions,
            Family::ShadowDecisions => &mut self.shadow_decisions,
        }
    }
}

/// A configured worker: the glue's state and this build's key and grant
/// upkeep.
struct Configured {
    glue: Worker,
    keys: KeyDistribution,
    /// The approval service's grants, when configured.
    grants: Option<GrantDistribution>,
}

/// Per-worker state shared by the root context and every request on it.
#[derive(Default)]
struct State {
    stats: Stats,
    /// `None` until configured, and when the configuration was refused.
    worker: Option<Configured>,
}

type SharedState = Rc<RefCell<State>>;

/// The proxy-wasm [`Host`] for one callback: proxy-wasm calls act on the
/// context Envoy is calling.
struct WasmHost<'a> {
    stats: &'a mut Stats,
    keys: Option<&'a mut KeyDistribution>,
    /// The response headers, read whole at the callback's first
    /// [`Host::header`] on them and dropped when it changes them: the glue
    /// reads a few, and one map read costs Envoy about what one header does.
    response_headers: Option<Vec<(String, String)>>,
}

impl<'a> WasmHost<'a> {
    fn new(stats: &'a mut Stats, keys: Option<&'a mut KeyDistribution>) -> Self {
        WasmHost {
            stats,
            keys,
            response_headers: None,
        }
    }
}

/// Splits the worker state into the glue's worker and the host over the rest.
fn split(state: &mut State) -> (Option<&mut Worker>, WasmHost<'_>) {
    let State { stats, worker } = state;
    match worker.as_mut() {
        Some(Configured { glue, keys, .. }) => (Some(glue), WasmHost::new(stats, Some(keys))),
        None => (None, WasmHost::new(stats, None)),
    }
}

fn host_error(status: host::Status) -> HostError {
    HostError(format!("{status:?}"))
}

fn map(headers: Headers) -> MapType {
    match headers {
        Headers::Request => MapType::HttpRequestHeaders,
        Headers::Response => MapType::HttpResponseHeaders,
    }
}

fn body(direction: Direction) -> BufferType {
    match direction {
        Direction::FromClient => BufferType::HttpRequestBody,
        Direction::FromServer => BufferType::HttpResponseBody,
    }
}

impl WasmHost<'_> {
    /// Header map `headers` is about to change: what was read of it is stale.
    fn changing(&mut self, headers: Headers) {
        if headers == Headers::Response {
            self.response_headers = None;
        }
    }

    /// A stat update failed: counted (when that works) and logged.
    fn stat_failed(&mut self, what: &str, status: host::Status) {
        if let Some(id) = self.stats.counter(Counter::HostErrors) {
            // Not counted again when counting the failure fails too.
            if let Err(again) = host::increment_metric(id, 1) {
                host::log(
                    LogLevel::Warn,
                    &format!("gatehouse: counting a host error failed: {again:?}"),
                );
            }
        }
        host::log(
            LogLevel::Warn,
            &format!("gatehouse: {what} failed: {status:?}"),
        );
    }

    fn increment(&mut self, id: Option<u32>, by: u64) {
        if let Some(id) = id
            && by > 0
            && let Err(status) = host::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX))
        {
            self.stat_failed("updating a counter", status);
        }
    }
}

impl Host for WasmHost<'_> {
    fn now_us(&mut self) -> Result<u64, HostError> {
        host::now_micros().map_err(host_error)
    }

    fn request_headers(&mut self) -> Result<Vec<(String, String)>, HostError> {
        host::get_headers(MapType::HttpRequestHeaders).map_err(host_error)
    }

    fn header(&mut self, headers: Headers, name: &str) -> Result<Option<String>, HostError> {
        if headers == Headers::Request {
            return host::get_header(map(headers), name).map_err(host_error);
        }
        let response = match &mut self.response_headers {
            Some(response) => response,
            cache => {
                cache.insert(host::get_headers(MapType::HttpResponseHeaders).map_err(host_error)?)
            }
        };
        Ok(response
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone()))
    }

    fn set_header(&mut self, headers: Headers, name: &str, value: &str) -> Result<(), HostError> {
        self.changing(headers);
        host::replace_header(map(headers), name, value).map_err(host_error)
    }

    fn add_header(&mut self, headers: Headers, name: &str, value: &str) -> Result<(), HostError> {
        self.changing(headers);
        host::add_header(map(headers), name, value).map_err(host_error)
    }

    fn remove_header(&mut self, headers: Headers, name: &str) -> Result<(), HostError> {
        self.changing(headers);
        host::remove_header(map(headers), name).map_err(host_error)
    }

    fn peer_address(&mut self) -> Result<Option<String>, HostError> {
        host::get_property(&["source", "address"])
            .map(|bytes| bytes.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
            .map_err(host_error)
    }

    fn read_body(&mut self, direction: Direction, size: usize) -> Result<Vec<u8>, HostError> {
        // No buffer is an empty body.
        host::get_buffer(body(direction), 0, size)
            .map(Option::unwrap_or_default)
            .map_err(host_error)
    }

    fn replace_body(
        &mut self,
        direction: Direction,
        size: usize,
        bytes: &[u8],
    ) -> Result<(), HostError> {
        host::set_buffer(body(direction), 0, size, bytes).map_err(host_error)
    }

    fn send_response(&mut self, status: u16, json_body: &[u8]) -> Result<(), HostError> {
        host::send_http_response(
            u32::from(status),
            &[("content-type", "application/json")],
            json_body,
        )
        .map_err(host_error)
    }

    fn resume_request(&mut self) -> Result<(), HostError> {
        host::resume_http_request().map_err(host_error)
    }

    fn reset_stream(&mut self) -> Result<(), HostError> {
        host::reset_http_stream().map_err(host_error)
    }

    fn set_filter_state(&mut self, key: &str, value: &[u8]) -> Result<(), HostError> {
        host::set_property(&[key], value).map_err(host_error)
    }

    fn approval_call(
        &mut self,
        service: &ApprovalServiceConfig,
        method: &str,
        path: &str,
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        host::approvals::call_waiting(
            service,
            method,
            path,
            Some(body),
            std::time::Duration::from_millis(timeout_ms),
        )
        .map_err(host_error)
    }

    fn adopt_shared_keys(&mut self, verifier: &mut Verifier) -> bool {
        self.keys
            .as_mut()
            .is_some_and(|keys| keys.adopt_shared(verifier))
    }

    fn start_key_fetch(
        &mut self,
        verifier: &mut Verifier,
        fetch: &KeyFetch,
        now_seconds: i64,
    ) -> Option<u32> {
        self.keys
            .as_mut()
            .and_then(|keys| keys.start(verifier, fetch, now_seconds))
    }

    fn count(&mut self, counter: Counter, by: u64) {
        let id = self.stats.counter(counter);
        self.increment(id, by);
    }

    fn record(&mut self, histogram: HistogramStat, value: u64) {
        if let Some(id) = self.stats.histogram(histogram)
            && let Err(status) = host::record_metric(id, value)
        {
            self.stat_failed("recording a histogram sample", status);
        }
    }

    fn count_labelled(&mut self, family: Family, class: &'static str, name: &str, by: u64) {
        let id = self.stats.family(family).id(class, name);
        self.increment(id, by);
    }

    fn emit_record(&mut self, line: &str, now_us: u64) {
        host::records::emit_at(line, now_us);
    }

    fn log(&mut self, level: Level, message: &str) {
        host::log_at(level, message);
    }
}

/// The clock for the key and grant upkeep, unix µs (0, counted and logged,
/// when it fails).
fn clock_us(stats: &mut Stats) -> u64 {
    host::now_micros().unwrap_or_else(|status| {
        WasmHost::new(stats, None).stat_failed("reading the clock", status);
        0
    })
}

fn seconds(micros: u64) -> i64 {
    i64::try_from(micros / 1_000_000).unwrap_or(i64::MAX)
}

struct KubernetesRoot {
    state: SharedState,
    context_id: u32,
}

impl Context for KubernetesRoot {
    fn on_done(&mut self) -> bool {
        host::records::flush();
        true
    }

    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            host::log(
                LogLevel::Error,
                "gatehouse: worker state busy for a call answer",
            );
            return;
        };
        let State { stats, worker } = &mut *state;
        if let Some(Configured { glue, keys, grants }) = worker.as_mut() {
            if let Some(grants) = grants.as_mut()
                && grants.on_response(token, body_size)
            {
                return;
            }
            if let Some(verifier) = glue.gate_mut().verifier_mut() {
                keys.on_response(verifier, token, body_size, seconds(clock_us(stats)));
            }
        }
    }
}

impl RootContext for KubernetesRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            host::log(
                LogLevel::Critical,
                "gatehouse: worker state busy on configuration",
            );
            return false;
        };
        state.stats = Stats::define();
        let config = match host::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(config) => config.unwrap_or_else(|| b"{}".to_vec()),
            Err(status) => {
                let (_, mut wasm) = split(&mut state);
                wasm.count(Counter::HostErrors, 1);
                wasm.log(
                    Level::Warn,
                    &format!("gatehouse: reading the plugin configuration failed: {status:?}"),
                );
                b"{}".to_vec()
            }
        };
        let glue = {
            let (_, mut wasm) = split(&mut state);
            Worker::configure(&mut wasm, self.context_id, &config)
        };
        let Some(mut glue) = glue else {
            state.worker = None;
            return false;
        };
        let grants = glue
            .gate()
            .policy()
            .approval_service()
            .map(|service| GrantDistribution::new(GRANTS_KEY, service.clone()));
        if let Some(grants) = &grants {
            glue.gate_mut().set_grant_book(grants.book());
            glue.gate_mut()
                .set_approval_memory(Rc::new(SharedApprovalMemory));
        }
        let tick_ms = if grants.is_some() {
            APPROVALS_TICK_MS
        } else {
            TICK_MS
        };
        state.worker = Some(Configured {
            glue,
            keys: KeyDistribution::new("gatehouse_k8s_jwks"),
            grants,
        });
        if let Err(status) = host::set_tick_period_ms(tick_ms) {
            let (_, mut wasm) = split(&mut state);
            wasm.count(Counter::HostErrors, 1);
            wasm.log(
                Level::Warn,
                &format!("gatehouse: no tick, keys refresh only on demand: {status:?}"),
            );
        }
        true
    }

    fn on_tick(&mut self) {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            // Busy: the next tick does this tick's work.
            return;
        };
        let State { stats, worker } = &mut *state;
        if let Some(Configured { glue, keys, grants }) = worker.as_mut() {
            let now_us = clock_us(stats);
            if let Some(grants) = grants.as_mut() {
                grants.on_tick(now_us / 1000);
            }
            if let Some(verifier) = glue.gate_mut().verifier_mut() {
                keys.on_tick(verifier, seconds(now_us));
            }
            glue.on_tick(&mut WasmHost::new(stats, Some(keys)));
        }
        host::records::flush();
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(KubernetesRequest {
            state: Rc::clone(&self.state),
            glue: Request::new(context_id),
        }))
    }
}

struct KubernetesRequest {
    state: SharedState,
    glue: Request,
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl KubernetesRequest {
    /// Runs one glue event with the worker state and a host over it.
    fn with<T>(
        &mut self,
        event: impl FnOnce(&mut Request, Option<&mut Worker>, &mut WasmHost<'_>) -> T,
    ) -> T {
        match self.state.try_borrow_mut() {
            Ok(mut state) => {
                let (worker, mut wasm) = split(&mut state);
                event(&mut self.glue, worker, &mut wasm)
            }
            // Reentered while the worker is in use (Envoy defers its own
            // callbacks, so this should not happen): judged as unconfigured,
            // which refuses, rather than panicking.
            Err(_) => {
                host::log(
                    LogLevel::Error,
                    "gatehouse: worker state busy in a request event",
                );
                let mut state = State::default();
                let (worker, mut wasm) = split(&mut state);
                event(&mut self.glue, worker, &mut wasm)
            }
        }
    }
}

impl Context for KubernetesRequest {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        if self.glue.awaits_approval(token) {
            let status = host::approvals::response_status();
            let body = host::approvals::response_body(body_size);
            self.with(|request, worker, wasm| {
                request.on_approval_answer(worker, wasm, token, status, &body)
            });
            return;
        }
        if self.glue.awaits_keys(token) {
            self.with(|request, mut worker, wasm| {
                let now = seconds(clock_us(wasm.stats));
                if let Some(verifier) = worker.as_mut().and_then(|w| w.gate_mut().verifier_mut())
                    && let Some(keys) = wasm.keys.as_mut()
                {
                    keys.on_response(verifier, token, body_size, now);
                }
                request.on_keys_answer(worker, wasm, token)
            });
        }
    }
}

impl HttpContext for KubernetesRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(
            self.with(|request, worker, wasm| {
                request.on_request_headers(worker, wasm, end_of_stream)
            }),
        )
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.with(|request, worker, wasm| {
            request.on_request_body(worker, wasm, body_size, end_of_stream)
        }))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.glue.on_request_trailers())
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(
            self.with(|request, worker, wasm| {
                request.on_response_headers(worker, wasm, end_of_stream)
            }),
        )
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.with(|request, _, wasm| request.on_response_body(wasm, body_size, end_of_stream)),
        )
    }

    fn on_log(&mut self) {
        self.with(|request, _, wasm| request.on_log(wasm));
    }
}
