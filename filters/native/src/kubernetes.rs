//! The Kubernetes HTTP filter, native build: the shared glue
//! (`gatehouse-kubernetes-glue`) over Envoy's dynamic-modules HTTP ABI.
//!
//! # Configuration
//! `filter_config` is a `StringValue` holding the Wasm build's configuration
//! as it is, or an envelope around it, as for the Postgres filter:
//! `{"filter": {…}, "records": {"address": "127.0.0.1:7070"},
//! "approvals": {"address": "127.0.0.1:8090"}}` (`records`: where a recorded
//! exec session's records go; without it they are counted as dropped;
//! `approvals`: where the grants of the approval service the filter names are
//! read, required with it, see [`crate::approvals`]).
//!
//! # Differences from the Wasm build
//! - Stats are `dynamicmodulescustom.<name>`; the decision families are
//!   labelled counters (`gatehouse_k8s_decisions_total{action, rule}`).
//! - Filter state keys are the Wasm build's (`wasm.gatehouse_k8s_audit`), so
//!   one access-log format serves both builds.
//! - The approval service's grants are read by a thread of the
//!   configuration and shared with its workers, as are the refusals kubectl's
//!   retry must see again and the single-use grants being used; the calls a
//!   held request waits for are callouts from its stream, as in the Wasm
//!   build.
//! - Key sets are fetched by HTTP callouts from the request that needs them
//!   and shared with the other workers through the configuration.

use crate::approvals::{
    ApprovalsConfig, ApprovalsError, GrantFeed, WorkerGrants, answer_status, call_headers,
};
use crate::records::{RecordWriter, RecordsConfig};
use gatehouse_core::approval::ApprovalServiceConfig;
use gatehouse_core::identity::{KeyFetch, Verifier};
use gatehouse_dynamic_modules_abi::http::{
    BodyStatus, CalloutResponse, CalloutResult, HeaderMap, HeadersStatus, HttpConfigEnvoy,
    HttpFilter, HttpFilterConfig, LabelledCounterId, Message, MetricId, Stream, TrailersStatus,
};
use gatehouse_dynamic_modules_abi::{LogLevel, log};
use gatehouse_kubernetes::gate::Gate;
use gatehouse_kubernetes_glue::{
    Counter, Direction, Family, Flow, Headers, HistogramStat, Host, HostError, Level, Request,
    Worker,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

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
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the configuration is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("{0}")]
    Envelope(serde_json::Error),
    #[error("{0}")]
    Filter(String),
    #[error("the record writer could not start: {0}")]
    Writer(std::io::Error),
    #[error("{0}")]
    Approvals(ApprovalsError),
}

/// The stats of one configuration.
struct Metrics {
    counters: [Option<MetricId>; Counter::ALL.len()],
    histograms: [Option<MetricId>; HistogramStat::ALL.len()],
    decisions: Option<LabelledCounterId>,
    shadow_decisions: Option<LabelledCounterId>,
}

impl Metrics {
    fn define(envoy: &mut HttpConfigEnvoy) -> Metrics {
        let family = |envoy: &mut HttpConfigEnvoy, family: Family| {
            envoy.define_labelled_counter(
                family.name(),
                &[family.class_label(), family.name_label()],
            )
        };
        Metrics {
            counters: Counter::ALL.map(|c| envoy.define_counter(c.name())),
            histograms: HistogramStat::ALL.map(|h| envoy.define_histogram(h.name())),
            decisions: family(envoy, Family::Decisions),
            shadow_decisions: family(envoy, Family::ShadowDecisions),
        }
    }

    fn counter(&self, counter: Counter) -> Option<MetricId> {
        let index = Counter::ALL.iter().position(|c| *c == counter)?;
        self.counters.get(index).copied().flatten()
    }

    fn histogram(&self, histogram: HistogramStat) -> Option<MetricId> {
        let index = HistogramStat::ALL.iter().position(|h| *h == histogram)?;
        self.histograms.get(index).copied().flatten()
    }
}

/// Key sets any worker fetched, for the others to adopt.
#[derive(Debug, Default)]
struct SharedKeySets {
    /// Issuer → (fetch time, unix seconds; the JWKS document).
    sets: Mutex<BTreeMap<String, (i64, Vec<u8>)>>,
    /// Bumped on every publish.
    version: AtomicU64,
}

/// One Kubernetes filter configuration, shared by every worker.
pub struct KubeConfig {
    /// Tells this configuration's per-worker state apart from others'.
    id: u64,
    /// The filter's configuration as the Wasm build takes it.
    filter: Vec<u8>,
    metrics: Metrics,
    keys: SharedKeySets,
    records: Option<RecordWriter>,
    /// The approval service's grants, read for every worker.
    grants: Option<Arc<GrantFeed>>,
}

impl KubeConfig {
    pub fn new(bytes: &[u8], envoy: &mut HttpConfigEnvoy) -> Result<KubeConfig, ConfigError> {
        let document: serde_json::Value =
            serde_json::from_slice(bytes).map_err(ConfigError::NotJson)?;
        let (filter, records, approvals) = if document.get("filter").is_some() {
            let envelope: Envelope<'_> =
                serde_json::from_slice(bytes).map_err(ConfigError::Envelope)?;
            (
                envelope.filter.get().as_bytes().to_vec(),
                envelope.records,
                envelope.approvals,
            )
        } else {
            (bytes.to_vec(), None, None)
        };
        let metrics = Metrics::define(envoy);
        let count = |envoy: &mut HttpConfigEnvoy, counter: Counter| {
            if let Some(id) = metrics.counter(counter) {
                envoy.increment_counter(id, 1);
            }
        };
        let gate = match Gate::from_json(&filter) {
            Ok(gate) => gate,
            Err(error) => {
                count(envoy, Counter::ConfigRejected);
                return Err(ConfigError::Filter(error.to_string()));
            }
        };
        let grants = match GrantFeed::start(gate.policy().approval_service(), approvals) {
            Ok(grants) => grants.map(Arc::new),
            Err(error) => {
                count(envoy, Counter::ConfigRejected);
                return Err(ConfigError::Approvals(error));
            }
        };
        let records = records
            .map(RecordWriter::start)
            .transpose()
            .map_err(ConfigError::Writer)?;
        static IDS: AtomicU64 = AtomicU64::new(1);
        Ok(KubeConfig {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            filter,
            metrics,
            keys: SharedKeySets::default(),
            records,
            grants,
        })
    }

    /// This worker's state for this configuration, made on first use.
    fn worker(self: &Arc<Self>, stream: &mut Stream) -> Rc<RefCell<WorkerState>> {
        WORKERS.with(|workers| {
            let mut workers = workers.borrow_mut();
            workers.retain(|_, (config, _)| config.strong_count() > 0);
            if let Some((_, worker)) = workers.get(&self.id) {
                return Rc::clone(worker);
            }
            let mut host = NativeHost {
                stream,
                config: self,
                adopted: &mut 0,
                fetches: &mut BTreeMap::new(),
            };
            let id = u32::try_from(self.id).unwrap_or(u32::MAX);
            let mut glue = Worker::configure(&mut host, id, &self.filter);
            let grants = self.grants.as_ref().map(|feed| feed.worker());
            if let (Some(glue), Some(feed), Some(grants)) = (&mut glue, &self.grants, &grants) {
                glue.gate_mut().set_grant_book(grants.book());
                glue.gate_mut().set_approval_memory(feed.memory());
            }
            let worker = Rc::new(RefCell::new(WorkerState {
                glue,
                adopted: 0,
                grants,
            }));
            workers.insert(self.id, (Arc::downgrade(self), Rc::clone(&worker)));
            worker
        })
    }
}

/// What one worker thread keeps per configuration.
struct WorkerState {
    /// `None` when the configuration could not be compiled here.
    glue: Option<Worker>,
    /// The shared key-set version last adopted.
    adopted: u64,
    /// The grant book this worker's gate reads.
    grants: Option<WorkerGrants>,
}

type WorkerEntry = (std::sync::Weak<KubeConfig>, Rc<RefCell<WorkerState>>);

thread_local! {
    static WORKERS: RefCell<BTreeMap<u64, WorkerEntry>> = const { RefCell::new(BTreeMap::new()) };
}

/// The configuration Envoy holds.
pub struct KubeFilterConfig(pub Arc<KubeConfig>);

impl HttpFilterConfig for KubeFilterConfig {
    fn new_filter(&self, stream: &mut Stream) -> Option<Box<dyn HttpFilter>> {
        static REQUESTS: AtomicU64 = AtomicU64::new(1);
        let context = REQUESTS.fetch_add(1, Ordering::Relaxed);
        Some(Box::new(KubeFilter {
            worker: self.0.worker(stream),
            config: Arc::clone(&self.0),
            glue: Request::new(u32::try_from(context % u64::from(u32::MAX)).unwrap_or(0)),
            fetches: BTreeMap::new(),
        }))
    }
}

/// One request's filter.
struct KubeFilter {
    config: Arc<KubeConfig>,
    worker: Rc<RefCell<WorkerState>>,
    glue: Request,
    /// Key fetches this request started: token → issuer.
    fetches: BTreeMap<u32, String>,
}

/// The [`Host`] for one hook of one request.
struct NativeHost<'a> {
    stream: &'a mut Stream,
    config: &'a KubeConfig,
    /// The worker's adopted key-set version.
    adopted: &'a mut u64,
    fetches: &'a mut BTreeMap<u32, String>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn seconds(micros: u64) -> i64 {
    i64::try_from(micros / 1_000_000).unwrap_or(i64::MAX)
}

fn map(headers: Headers) -> HeaderMap {
    match headers {
        Headers::Request => HeaderMap::RequestHeaders,
        Headers::Response => HeaderMap::ResponseHeaders,
    }
}

fn message(direction: Direction) -> Message {
    match direction {
        Direction::FromClient => Message::Request,
        Direction::FromServer => Message::Response,
    }
}

fn refused(what: &str) -> HostError {
    HostError(format!("Envoy refused {what}"))
}

impl Host for NativeHost<'_> {
    fn now_us(&mut self) -> Result<u64, HostError> {
        Ok(now_us())
    }

    fn request_headers(&mut self) -> Result<Vec<(String, String)>, HostError> {
        Ok(self
            .stream
            .headers(HeaderMap::RequestHeaders)
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect())
    }

    fn header(&mut self, headers: Headers, name: &str) -> Result<Option<String>, HostError> {
        Ok(self
            .stream
            .header(map(headers), name)
            .map(|v| String::from_utf8_lossy(v).into_owned()))
    }

    fn set_header(&mut self, headers: Headers, name: &str, value: &str) -> Result<(), HostError> {
        self.stream
            .set_header(map(headers), name, value.as_bytes())
            .then_some(())
            .ok_or_else(|| refused("setting a header"))
    }

    fn add_header(&mut self, headers: Headers, name: &str, value: &str) -> Result<(), HostError> {
        self.stream
            .add_header(map(headers), name, value.as_bytes())
            .then_some(())
            .ok_or_else(|| refused("adding a header"))
    }

    fn remove_header(&mut self, headers: Headers, name: &str) -> Result<(), HostError> {
        self.stream
            .remove_header(map(headers), name)
            .then_some(())
            .ok_or_else(|| refused("removing a header"))
    }

    fn peer_address(&mut self) -> Result<Option<String>, HostError> {
        Ok(self.stream.source_address())
    }

    fn read_body(&mut self, direction: Direction, size: usize) -> Result<Vec<u8>, HostError> {
        let mut body = self.stream.whole_body(message(direction));
        body.truncate(size);
        Ok(body)
    }

    fn replace_body(
        &mut self,
        direction: Direction,
        size: usize,
        bytes: &[u8],
    ) -> Result<(), HostError> {
        let whole = self.stream.whole_body(message(direction));
        let mut replaced = bytes.to_vec();
        replaced.extend_from_slice(whole.get(size..).unwrap_or_default());
        self.stream
            .replace_whole_body(message(direction), &replaced)
            .then_some(())
            .ok_or_else(|| refused("replacing a body"))
    }

    fn send_response(&mut self, status: u16, json_body: &[u8]) -> Result<(), HostError> {
        self.stream
            .send_response(
                u32::from(status),
                &[("content-type", b"application/json")],
                json_body,
                "gatehouse",
            )
            .then_some(())
            .ok_or_else(|| refused("a local response"))
    }

    fn resume_request(&mut self) -> Result<(), HostError> {
        self.stream.continue_decoding();
        Ok(())
    }

    fn reset_stream(&mut self) -> Result<(), HostError> {
        self.stream
            .reset_stream("gatehouse")
            .then_some(())
            .ok_or_else(|| refused("a reset"))
    }

    fn set_filter_state(&mut self, key: &str, value: &[u8]) -> Result<(), HostError> {
        // The Wasm build's keys (proxy-wasm prefixes `wasm.`).
        self.stream
            .set_filter_state(&format!("wasm.{key}"), value)
            .then_some(())
            .ok_or_else(|| refused("setting filter state"))
    }

    /// A callout from this request's stream; the answer comes to
    /// [`KubeFilter::on_http_callout_done`].
    fn approval_call(
        &mut self,
        service: &ApprovalServiceConfig,
        method: &str,
        path: &str,
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        let authorization = service.authorization();
        let headers = call_headers(service, method, path, &authorization);
        let id = self
            .stream
            .http_callout(&service.cluster, &headers, body, timeout_ms)
            .map_err(|error| HostError(error.to_string()))?;
        u32::try_from(id).map_err(|_| HostError(format!("callout id {id} too large")))
    }

    fn adopt_shared_keys(&mut self, verifier: &mut Verifier) -> bool {
        let shared = &self.config.keys;
        let version = shared.version.load(Ordering::Acquire);
        if version == *self.adopted {
            return false;
        }
        let Ok(sets) = shared.sets.lock() else {
            return false;
        };
        *self.adopted = version;
        for (issuer, (fetched_at, body)) in sets.iter() {
            // A set this worker cannot use was logged when it was fetched.
            let _ = verifier.keys_fetched(issuer, body, *fetched_at);
        }
        true
    }

    fn start_key_fetch(
        &mut self,
        verifier: &mut Verifier,
        fetch: &KeyFetch,
        now_seconds: i64,
    ) -> Option<u32> {
        let headers = [
            (":method", "GET"),
            (":path", fetch.path.as_str()),
            ("host", fetch.authority.as_str()),
        ];
        let started = self
            .stream
            .http_callout(&fetch.cluster, &headers, b"", u64::from(fetch.timeout_ms))
            .map_err(|error| error.to_string())
            .and_then(|id| u32::try_from(id).map_err(|_| format!("callout id {id} too large")));
        match started {
            Ok(token) => {
                self.fetches.insert(token, fetch.issuer.clone());
                Some(token)
            }
            Err(reason) => {
                self.count(Counter::HostErrors, 1);
                verifier.keys_failed(&fetch.issuer, now_seconds, &reason);
                None
            }
        }
    }

    fn count(&mut self, counter: Counter, by: u64) {
        if let Some(id) = self.config.metrics.counter(counter) {
            self.stream.increment_counter(id, by);
        }
    }

    fn record(&mut self, histogram: HistogramStat, value: u64) {
        if let Some(id) = self.config.metrics.histogram(histogram) {
            self.stream.record_histogram(id, value);
        }
    }

    fn count_labelled(&mut self, family: Family, class: &'static str, name: &str, by: u64) {
        let id = match family {
            Family::Decisions => self.config.metrics.decisions,
            Family::ShadowDecisions => self.config.metrics.shadow_decisions,
        };
        if let Some(id) = id {
            self.stream.increment_labelled(id, &[class, name], by);
        }
    }

    fn emit_record(&mut self, line: &str, _now_us: u64) {
        match &self.config.records {
            Some(writer) => writer.emit(&mut vec![line.to_owned()]),
            None => log(
                LogLevel::Warn,
                "gatehouse: a session record was dropped (no records address configured)",
            ),
        }
    }

    fn log(&mut self, level: Level, message: &str) {
        crate::log_at(level, message);
    }
}

fn headers_status(flow: Flow) -> HeadersStatus {
    match flow {
        Flow::Continue => HeadersStatus::Continue,
        Flow::Pause => HeadersStatus::StopIteration,
    }
}

fn body_status(flow: Flow) -> BodyStatus {
    match flow {
        Flow::Continue => BodyStatus::Continue,
        Flow::Pause => BodyStatus::StopIterationAndBuffer,
    }
}

impl KubeFilter {
    /// Runs one glue event with the worker and a host over this hook's stream.
    fn with<T>(
        &mut self,
        stream: &mut Stream,
        event: impl FnOnce(&mut Request, Option<&mut Worker>, &mut NativeHost<'_>) -> T,
    ) -> T {
        let mut state = match self.worker.try_borrow_mut() {
            Ok(state) => state,
            Err(_) => {
                // Envoy runs one hook at a time per worker; judged as
                // unconfigured (which refuses) rather than panicking.
                log(
                    LogLevel::Error,
                    "gatehouse: worker state busy in a request event",
                );
                let mut host = NativeHost {
                    stream,
                    config: &self.config,
                    adopted: &mut 0,
                    fetches: &mut self.fetches,
                };
                return event(&mut self.glue, None, &mut host);
            }
        };
        let WorkerState {
            glue,
            adopted,
            grants,
        } = &mut *state;
        if let (Some(feed), Some(grants)) = (&self.config.grants, grants) {
            grants.adopt(feed);
        }
        let mut host = NativeHost {
            stream,
            config: &self.config,
            adopted,
            fetches: &mut self.fetches,
        };
        event(&mut self.glue, glue.as_mut(), &mut host)
    }
}

impl HttpFilter for KubeFilter {
    fn on_request_headers(&mut self, stream: &mut Stream, end_stream: bool) -> HeadersStatus {
        headers_status(self.with(stream, |request, worker, host| {
            request.on_request_headers(worker, host, end_stream)
        }))
    }

    fn on_request_body(&mut self, stream: &mut Stream, end_stream: bool) -> BodyStatus {
        let size = stream.whole_body_size(Message::Request);
        body_status(self.with(stream, |request, worker, host| {
            request.on_request_body(worker, host, size, end_stream)
        }))
    }

    fn on_request_trailers(&mut self, _stream: &mut Stream) -> TrailersStatus {
        match self.glue.on_request_trailers() {
            Flow::Continue => TrailersStatus::Continue,
            Flow::Pause => TrailersStatus::StopIteration,
        }
    }

    fn on_response_headers(&mut self, stream: &mut Stream, end_stream: bool) -> HeadersStatus {
        headers_status(self.with(stream, |request, worker, host| {
            request.on_response_headers(worker, host, end_stream)
        }))
    }

    fn on_response_body(&mut self, stream: &mut Stream, end_stream: bool) -> BodyStatus {
        let size = stream.whole_body_size(Message::Response);
        body_status(self.with(stream, |request, _, host| {
            request.on_response_body(host, size, end_stream)
        }))
    }

    fn on_http_callout_done(
        &mut self,
        stream: &mut Stream,
        callout_id: u64,
        response: CalloutResponse<'_>,
    ) {
        let Ok(token) = u32::try_from(callout_id) else {
            return;
        };
        if self.glue.awaits_approval(token) {
            let status = answer_status(&response);
            let body = response.body_bytes();
            self.with(stream, |request, worker, host| {
                request.on_approval_answer(worker, host, token, status, &body)
            });
            return;
        }
        let Some(issuer) = self.fetches.remove(&token) else {
            return;
        };
        let status = response.header(":status").unwrap_or_default().to_vec();
        let ok = response.result == CalloutResult::Success && status == b"200";
        let body = response.body_bytes();
        let config = Arc::clone(&self.config);
        self.with(stream, |request, mut worker, host| {
            let now = seconds(now_us());
            if let Some(verifier) = worker.as_mut().and_then(|w| w.gate_mut().verifier_mut()) {
                let applied = if !ok {
                    Err(format!(
                        "status {} ({:?})",
                        String::from_utf8_lossy(&status),
                        response.result
                    ))
                } else if body.len() > MAX_JWKS_RESPONSE {
                    Err(format!("key set of {} bytes is too large", body.len()))
                } else {
                    verifier
                        .keys_fetched(&issuer, &body, now)
                        .map_err(|error| error.to_string())
                };
                match applied {
                    Ok(()) => {
                        if let Ok(mut sets) = config.keys.sets.lock() {
                            sets.insert(issuer.clone(), (now, body.clone()));
                            let version = config.keys.version.fetch_add(1, Ordering::AcqRel) + 1;
                            // This worker's own publish needs no adopting.
                            *host.adopted = version;
                        }
                    }
                    Err(reason) => {
                        host.log(
                            Level::Warn,
                            &format!("gatehouse: fetching keys of {issuer} failed: {reason}"),
                        );
                        verifier.keys_failed(&issuer, now, &reason);
                    }
                }
            }
            request.on_keys_answer(worker, host, token)
        });
    }

    fn on_stream_complete(&mut self, stream: &mut Stream) {
        self.with(stream, |request, _, host| request.on_log(host));
    }
}
