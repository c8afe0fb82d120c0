//! proxy-wasm glue for gatehouse's Kubernetes HTTP filter.
//!
//! Maps Envoy's HTTP-filter callbacks onto `gatehouse-kubernetes` and applies
//! what it returns. It makes no decisions: [`Gate::admit`] says whether to
//! answer locally, fetch keys first, or forward with which headers.
//!
//! Key sets: the first requests of a worker pause while their own fetch of the
//! issuer's JWKS (from its Envoy cluster) is in flight and resume when it
//! answers; every fetched set is published in shared data (`gatehouse_k8s_jwks|
//! <issuer>`: 8 bytes of fetch time, then the JWKS) and every worker adopts sets
//! published by others on its tick. Scheduled refreshes run on the tick, claimed
//! across workers by compare-and-swap so one worker fetches.
//!
//! Records: each request's audit Events (ResponseStarted for long-running
//! requests, then ResponseComplete) go to filter state `gatehouse_k8s_audit`,
//! one JSON Event per line, which the listener's access log prints.

use gatehouse_host as host;
use gatehouse_kubernetes::gate::{Admission, Forward, Gate, KeyFetch, RequestHead, audit_id};
use gatehouse_kubernetes::masking::{WatchLines, mask_body};
use gatehouse_kubernetes::policy::MaskingConfig;
use host::{BufferType, LogLevel, MapType};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        host::log(LogLevel::Critical, &format!("gatehouse kubernetes filter panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(KubernetesRoot { context_id, ..KubernetesRoot::default() })
    });
}}

/// Filter state holding the request's audit Events.
const AUDIT_PROPERTY: &str = "gatehouse_k8s_audit";
/// Tick period: adopts key sets other workers fetched and runs due refreshes.
const TICK_MS: u32 = 1_000;
/// Largest key-set response read from the identity provider.
const MAX_JWKS_RESPONSE: usize = 256 * 1024;
/// Key fetches one request may wait for before it is judged with what is there.
const MAX_FETCHES_PER_REQUEST: u8 = 2;

#[derive(Default, Clone, Copy)]
struct Metrics {
    requests: Option<u32>,
    denied: Option<u32>,
    unauthenticated: Option<u32>,
}

fn count(metric: Option<u32>) {
    if let Some(id) = metric {
        let _ = host::increment_metric(id, 1);
    }
}

/// Per-worker state shared by the root context and every request on it.
struct Worker {
    gate: Gate,
    /// CAS of the shared key set last adopted, per issuer.
    adopted: BTreeMap<String, u32>,
    /// Requests seen, part of audit-id seeds.
    sequence: u64,
}

type SharedWorker = Rc<RefCell<Option<Worker>>>;

fn now_micros() -> i64 {
    host::now_micros()
        .ok()
        .and_then(|micros| i64::try_from(micros).ok())
        .unwrap_or_default()
}

fn shared_key(issuer: &str) -> String {
    format!("gatehouse_k8s_jwks|{issuer}")
}

fn claim_key(issuer: &str) -> String {
    format!("gatehouse_k8s_jwks_claim|{issuer}")
}

impl Worker {
    /// Adopts key sets other workers published; whether any was new.
    fn adopt_shared_keys(&mut self) -> bool {
        let mut adopted_any = false;
        for issuer in self.gate.remote_issuers() {
            let Ok(Some((value, cas))) = host::get_shared_data(&shared_key(&issuer)) else {
                continue;
            };
            if self.adopted.get(&issuer) == Some(&cas) {
                continue;
            }
            self.adopted.insert(issuer.clone(), cas);
            let Some((stamp, body)) = value.split_first_chunk::<8>() else {
                continue;
            };
            let fetched_at = i64::from_be_bytes(*stamp);
            match self.gate.keys_fetched(&issuer, body, fetched_at) {
                Ok(()) => adopted_any = true,
                Err(error) => host::log(
                    LogLevel::Warn,
                    &format!("gatehouse: shared key set of {issuer} unusable: {error}"),
                ),
            }
        }
        adopted_any
    }

    /// Applies a key-set response and publishes a good one to every worker.
    fn on_key_response(&mut self, issuer: &str, body_size: usize) {
        let now = now_micros().div_euclid(1_000_000);
        let status = host::get_header(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .unwrap_or_default();
        if status != "200" {
            let reason = if status.is_empty() {
                "no response (timeout or connection failure)".to_owned()
            } else {
                format!("status {status}")
            };
            host::log(
                LogLevel::Warn,
                &format!("gatehouse: fetching keys of {issuer} failed: {reason}"),
            );
            self.gate.keys_failed(issuer, now, &reason);
            return;
        }
        let body = host::get_buffer(
            BufferType::HttpCallResponseBody,
            0,
            body_size.min(MAX_JWKS_RESPONSE),
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        match self.gate.keys_fetched(issuer, &body, now) {
            Ok(()) => {
                let mut shared = now.to_be_bytes().to_vec();
                shared.extend_from_slice(&body);
                if let Err(status) = host::set_shared_data(&shared_key(issuer), &shared, 0) {
                    host::log(
                        LogLevel::Warn,
                        &format!("gatehouse: sharing keys of {issuer} failed: {status:?}"),
                    );
                }
            }
            Err(error) => host::log(
                LogLevel::Warn,
                &format!("gatehouse: key set of {issuer} unusable: {error}"),
            ),
        }
    }
}

/// Starts a key fetch; the token names the call in `on_http_call_response`.
///
/// Made through the SDK because only its wrapper registers the call with the
/// SDK's dispatcher, which routes the answer to this context (an unregistered
/// answer aborts the VM). Its wrapper panics only on statuses other than Ok,
/// BadArgument and InternalFailure, which Envoy's `http_call` does not return
/// for well-formed headers like these.
fn dispatch_key_fetch(fetch: &KeyFetch) -> Result<u32, host::Status> {
    proxy_wasm::hostcalls::dispatch_http_call(
        &fetch.cluster,
        vec![
            (":method", "GET"),
            (":path", &fetch.path),
            (":authority", &fetch.authority),
            ("accept", "application/json"),
        ],
        None,
        vec![],
        std::time::Duration::from_millis(u64::from(fetch.timeout_ms)),
    )
}

/// Claims a scheduled refresh of `issuer` across workers (compare-and-swap on
/// the claim time), so one worker fetches per period.
fn claim_refresh(issuer: &str, now: i64, min_refetch_seconds: i64) -> bool {
    let key = claim_key(issuer);
    let (previous, cas) = match host::get_shared_data(&key) {
        Ok(Some((value, cas))) => (
            value
                .first_chunk::<8>()
                .map(|stamp| i64::from_be_bytes(*stamp)),
            cas,
        ),
        Ok(None) => (None, 0),
        Err(_) => return false,
    };
    if previous.is_some_and(|at| (0..min_refetch_seconds).contains(&now.saturating_sub(at))) {
        return false;
    }
    host::set_shared_data(&key, &now.to_be_bytes(), cas).is_ok()
}

#[derive(Default)]
struct KubernetesRoot {
    metrics: Metrics,
    worker: SharedWorker,
    /// Key fetches started on the tick: call token → issuer.
    fetches: BTreeMap<u32, String>,
    context_id: u32,
}

impl Context for KubernetesRoot {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let Some(issuer) = self.fetches.remove(&token) else {
            return;
        };
        if let Some(worker) = self.worker.borrow_mut().as_mut() {
            worker.on_key_response(&issuer, body_size);
        }
    }
}

impl RootContext for KubernetesRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        self.metrics = Metrics {
            requests: host::define_metric(
                host::MetricType::Counter,
                "gatehouse_k8s_requests_total",
            )
            .ok(),
            denied: host::define_metric(host::MetricType::Counter, "gatehouse_k8s_denied_total")
                .ok(),
            unauthenticated: host::define_metric(
                host::MetricType::Counter,
                "gatehouse_k8s_unauthenticated_total",
            )
            .ok(),
        };
        let config = host::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_else(|| b"{}".to_vec());
        match Gate::from_json(&config) {
            Ok(gate) => {
                *self.worker.borrow_mut() = Some(Worker {
                    gate,
                    adopted: BTreeMap::new(),
                    sequence: 0,
                });
            }
            Err(error) => {
                host::log(
                    LogLevel::Critical,
                    &format!("gatehouse kubernetes filter configuration: {error}"),
                );
                return false;
            }
        }
        if let Err(status) = host::set_tick_period_ms(TICK_MS) {
            host::log(
                LogLevel::Warn,
                &format!("gatehouse: no tick, keys refresh only on demand: {status:?}"),
            );
        }
        true
    }

    fn on_tick(&mut self) {
        let now = now_micros().div_euclid(1_000_000);
        let shared = Rc::clone(&self.worker);
        let mut guard = shared.borrow_mut();
        let Some(worker) = guard.as_mut() else {
            return;
        };
        worker.adopt_shared_keys();
        for fetch in worker.gate.refreshes_due(now) {
            let min_refetch = worker.gate.min_refetch_seconds(&fetch.issuer);
            if !claim_refresh(&fetch.issuer, now, min_refetch) {
                continue;
            }
            match dispatch_key_fetch(&fetch) {
                Ok(token) => {
                    self.fetches.insert(token, fetch.issuer);
                }
                Err(status) => {
                    worker.gate.keys_failed(
                        &fetch.issuer,
                        now,
                        &format!("dispatch failed: {status:?}"),
                    );
                }
            }
        }
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
            key_fetch: None,
            fetches: 0,
            started_micros: 0,
            status: 0,
            body_mode: BodyMode::PassThrough,
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
    /// The key fetch this request waits for: (token, issuer).
    key_fetch: Option<(u32, String)>,
    fetches: u8,
    started_micros: i64,
    status: u16,
    body_mode: BodyMode,
}

/// What happens to the response body.
enum BodyMode {
    PassThrough,
    /// Held whole (headers paused) and masked at the end.
    Buffered(MaskingConfig),
    /// A watch stream, masked line by line.
    Watch(MaskingConfig, WatchLines),
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
        let mut admission = worker.gate.admit(&head);
        if let Admission::FetchKeys(_) = admission {
            // Another worker may already have the keys.
            if worker.adopt_shared_keys() {
                admission = worker.gate.admit(&head);
            }
        }
        match admission {
            Admission::Respond(response) => {
                if response.status == 401 {
                    count(self.metrics.unauthenticated);
                } else {
                    count(self.metrics.denied);
                }
                let _ = host::set_property(&[AUDIT_PROPERTY], response.record.as_bytes());
                let sent = host::send_http_response(
                    u32::from(response.status),
                    &[("content-type", "application/json")],
                    response.body.as_bytes(),
                );
                if sent.is_err() {
                    host::log(LogLevel::Error, "gatehouse: could not send a refusal");
                }
                Action::Pause
            }
            Admission::FetchKeys(fetch) if self.fetches < MAX_FETCHES_PER_REQUEST => {
                self.fetches = self.fetches.saturating_add(1);
                match dispatch_key_fetch(&fetch) {
                    Ok(token) => {
                        self.key_fetch = Some((token, fetch.issuer));
                        Action::Pause
                    }
                    Err(status) => {
                        let now_seconds = now.div_euclid(1_000_000);
                        worker.gate.keys_failed(
                            &fetch.issuer,
                            now_seconds,
                            &format!("dispatch failed: {status:?}"),
                        );
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
                drop(guard);
                apply_upstream_headers(&forward);
                self.forward = Some(forward);
                Action::Continue
            }
        }
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

    fn masking_settings(&self) -> Option<MaskingConfig> {
        self.worker
            .borrow()
            .as_ref()
            .map(|worker| worker.gate.policy().masking().clone())
    }

    /// Writes the request's audit Events to filter state.
    fn record(&self) {
        if let Some(forward) = &self.forward {
            let records = forward.records(self.status, self.started_micros, now_micros());
            let _ = host::set_property(&[AUDIT_PROPERTY], records.as_bytes());
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
        let Some((expected, issuer)) = self.key_fetch.take() else {
            return;
        };
        if expected != token {
            return;
        }
        if let Some(worker) = self.worker.borrow_mut().as_mut() {
            worker.on_key_response(&issuer, body_size);
        }
        if let Action::Continue = self.admit()
            && host::resume_http_request().is_err()
        {
            host::log(LogLevel::Error, "gatehouse: could not resume a request");
        }
    }
}

impl HttpContext for KubernetesRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        count(self.metrics.requests);
        let _ = host::set_property(
            &["gatehouse_build"],
            gatehouse_core::build::VERSION.as_bytes(),
        );
        self.admit()
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.started_micros = now_micros();
        self.status = host::get_header(MapType::HttpResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        self.record();
        let must_mask = self.forward.as_ref().is_some_and(|f| f.mask_body);
        if !must_mask || end_of_stream || !(200..300).contains(&self.status) {
            return Action::Continue;
        }
        let Some(settings) = self.masking_settings() else {
            return self.refuse_response("gatehouse has no masking settings");
        };
        let content_type = host::get_header(MapType::HttpResponseHeaders, "content-type")
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !content_type.starts_with("application/json") {
            return self.refuse_response("gatehouse must mask this response but it is not JSON");
        }
        let _ = host::remove_header(MapType::HttpResponseHeaders, "content-length");
        if content_type.contains("stream=watch") {
            self.body_mode = BodyMode::Watch(settings, WatchLines::default());
            Action::Continue
        } else {
            self.body_mode = BodyMode::Buffered(settings);
            // Held until the body is masked, so an oversize body fails cleanly.
            Action::Pause
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &mut self.body_mode {
            BodyMode::PassThrough => {}
            BodyMode::Watch(settings, lines) => {
                let chunk = host::get_buffer(BufferType::HttpResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                match lines.push(&chunk, end_of_stream, settings) {
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
                    }
                    // Headers are gone: end the stream rather than pass clear data.
                    Err(_) => {
                        let _ = host::set_buffer(BufferType::HttpResponseBody, 0, body_size, b"");
                        let _ = host::reset_http_stream();
                        return Action::Pause;
                    }
                }
            }
            BodyMode::Buffered(settings) => {
                if body_size > settings.max_body_bytes {
                    let limit = settings.max_body_bytes;
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
                match mask_body(&body, settings) {
                    Ok(masked) => {
                        if host::set_buffer(
                            BufferType::HttpResponseBody,
                            0,
                            body_size,
                            &masked.body,
                        )
                        .is_err()
                        {
                            return self.refuse_response("gatehouse could not rewrite a response");
                        }
                        let _ = host::replace_header(
                            MapType::HttpResponseHeaders,
                            "content-length",
                            &masked.body.len().to_string(),
                        );
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
