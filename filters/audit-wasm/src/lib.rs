//! gatehouse's audit path inside Envoy: one module, two roles chosen by its
//! configuration (`"role"`):
//!
//! - `service` — a singleton Wasm service (bootstrap extension `envoy.bootstrap.wasm`,
//!   `singleton: true`, vm_id [`gatehouse_host::records::AUDIT_VM_ID`]). It owns the shared queue
//!   [`RECORD_QUEUE`] the filters emit records on, drains it into a bounded
//!   [`Outbox`], and POSTs the records in batches (NDJSON, one record per line,
//!   one batch in flight; a partial batch waits up to `linger_ms`) to the record
//!   listener. Failed batches are retried in
//!   order with backoff; overflow is counted and reported by a
//!   `gatehouse.records_dropped` record.
//! - `sink` — the HTTP filter on that listener. It checks that every line of the
//!   request body is one record, puts the body (records joined by `\n`) into
//!   filter state `wasm.gatehouse_record` and answers 204, so the listener's
//!   access log, `%FILTER_STATE(wasm.gatehouse_record:PLAIN)%\n`, writes each
//!   record of the batch as its own line. Loggers that take each entry as one
//!   event (OpenTelemetry, gRPC) see one event per batch unless the service
//!   sends one record per batch (`max_batch_records: 1`).
//!
//! Counters (`wasmcustom.…`): `gatehouse_records_accepted`, `_delivered`,
//! `_dropped`, `_retried`, `_batches` (sends); gauge `gatehouse_records_buffered`.

use gatehouse_core::delivery::{DeliveryConfig, DeliveryTotals, Outbox, Ticket};
use gatehouse_host as host;
use gatehouse_host::records::RECORD_QUEUE;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        host::log(LogLevel::Critical, &format!("gatehouse audit module panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(AuditRoot::default()) });
}}

/// Filter-state key (`wasm.<key>`) the sink puts the record in.
pub const RECORD_PROPERTY: &str = "gatehouse_record";

/// The module's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuditConfig {
    /// The singleton delivery service.
    Service(ServiceConfig),
    /// The record listener's HTTP filter.
    Sink(SinkConfig),
}

/// Settings of the record listener's filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Largest record (one line of a batch) accepted, in bytes.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Largest batch body accepted, in bytes. The listener's
    /// `per_connection_buffer_limit_bytes` must be at least this.
    #[serde(default = "default_sink_max_batch_bytes")]
    pub max_batch_bytes: usize,
}

/// Settings of the delivery service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Queue the filters enqueue records on.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Cluster leading to the record listener.
    pub cluster: String,
    #[serde(default = "default_authority")]
    pub authority: String,
    #[serde(default = "default_path")]
    pub path: String,
    /// Records held at most before the newest are dropped.
    #[serde(default = "default_max_buffer")]
    pub max_buffer: usize,
    /// Batches sent and not yet answered, at most. More than one may reorder
    /// records when a batch fails while a later one succeeds.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Records per batch, at most (1: one request and one access-log entry per record).
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: usize,
    /// Bytes per batch body, at most (a larger record goes alone).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// How long a record waits for its batch to fill before a partial batch goes.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Per-send timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How often the service looks for a lingering batch or the end of a backoff.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u32,
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

fn default_queue() -> String {
    RECORD_QUEUE.to_string()
}
fn default_authority() -> String {
    "gatehouse-records".to_string()
}
fn default_path() -> String {
    "/record".to_string()
}
fn default_max_buffer() -> usize {
    DeliveryConfig::default().max_buffer
}
fn default_max_in_flight() -> usize {
    DeliveryConfig::default().max_in_flight
}
fn default_max_batch_records() -> usize {
    DeliveryConfig::default().max_batch_records
}
fn default_max_batch_bytes() -> usize {
    DeliveryConfig::default().max_batch_bytes
}
/// Room for the service's default batch or its largest record, with slack.
fn default_sink_max_batch_bytes() -> usize {
    4 << 20
}
fn default_max_record_bytes() -> usize {
    DeliveryConfig::default().max_record_bytes
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_linger_ms() -> u64 {
    DeliveryConfig::default().linger_us / 1_000
}
fn default_tick_ms() -> u32 {
    10
}
fn default_initial_backoff_ms() -> u64 {
    100
}
fn default_max_backoff_ms() -> u64 {
    5_000
}

impl AuditConfig {
    /// Parses the plugin configuration.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let config: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if let AuditConfig::Service(s) = &config {
            if s.cluster.is_empty() {
                return Err("service: cluster must not be empty".into());
            }
            if s.max_buffer == 0
                || s.max_in_flight == 0
                || s.max_batch_records == 0
                || s.max_batch_bytes == 0
            {
                return Err("service: max_buffer, max_in_flight, max_batch_records and \
                     max_batch_bytes must be at least 1"
                    .into());
            }
        }
        Ok(config)
    }
}

impl ServiceConfig {
    fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig {
            max_buffer: self.max_buffer,
            max_in_flight: self.max_in_flight,
            max_batch_records: self.max_batch_records,
            max_batch_bytes: self.max_batch_bytes,
            linger_us: self.linger_ms.saturating_mul(1_000),
            max_record_bytes: self.max_record_bytes,
            initial_backoff_us: self.initial_backoff_ms.saturating_mul(1_000),
            max_backoff_us: self.max_backoff_ms.saturating_mul(1_000),
            gatehouse_version: gatehouse_core::build::VERSION,
        }
    }
}

pub use gatehouse_core::delivery::{SendOutcome, classify};

/// The records of a batch body: its lines without the final newline, if any.
/// Counts them, or says why the sink refuses the body: every line must look
/// like one JSON object (`{` … `}`) of at most `max_record_bytes`, so each
/// becomes exactly one access-log line.
pub fn check_batch_body(body: &[u8], config: &SinkConfig) -> Result<usize, &'static str> {
    if body.len() > config.max_batch_bytes {
        return Err("batch too large");
    }
    let records = body.strip_suffix(b"\n").unwrap_or(body);
    let mut count = 0;
    for line in records.split(|b| *b == b'\n') {
        if line.len() > config.max_record_bytes {
            return Err("record too large");
        }
        match (line.first(), line.last()) {
            (Some(b'{'), Some(b'}')) => count += 1,
            _ => return Err("a line is not one JSON object"),
        }
    }
    Ok(count)
}

#[derive(Default)]
struct AuditRoot {
    role: Option<AuditConfig>,
    service: Option<Service>,
}

struct Service {
    config: ServiceConfig,
    queue_id: u32,
    outbox: Outbox,
    /// Host call token -> outbox ticket.
    calls: BTreeMap<u32, Ticket>,
    metrics: ServiceMetrics,
    reported: DeliveryTotals,
}

#[derive(Default)]
struct ServiceMetrics {
    accepted: Option<u32>,
    delivered: Option<u32>,
    dropped: Option<u32>,
    retried: Option<u32>,
    batches: Option<u32>,
    buffered: Option<u32>,
}

impl ServiceMetrics {
    fn define() -> Self {
        let counter = |name| host::define_metric(host::MetricType::Counter, name).ok();
        Self {
            accepted: counter("gatehouse_records_accepted"),
            delivered: counter("gatehouse_records_delivered"),
            dropped: counter("gatehouse_records_dropped"),
            retried: counter("gatehouse_records_retried"),
            batches: counter("gatehouse_records_batches"),
            buffered: host::define_metric(host::MetricType::Gauge, "gatehouse_records_buffered")
                .ok(),
        }
    }
}

fn now_us() -> u64 {
    host::now_micros().unwrap_or_default()
}

fn add(metric: Option<u32>, from: u64, to: u64) {
    if let (Some(id), Ok(delta)) = (metric, i64::try_from(to.saturating_sub(from)))
        && delta > 0
    {
        let _ = host::increment_metric(id, delta);
    }
}

impl AuditRoot {
    /// Sends what the window and backoff allow.
    fn pump(&mut self) {
        let Some(service) = self.service.as_mut() else {
            return;
        };
        let now = now_us();
        let sends: Vec<_> = std::iter::from_fn(|| service.outbox.next_send(now)).collect();
        let mut dispatched = Vec::with_capacity(sends.len());
        let mut failed = Vec::new();
        if let Some(service) = self.service.as_ref() {
            let config = &service.config;
            let headers = vec![
                (":method", "POST"),
                (":path", config.path.as_str()),
                (":authority", config.authority.as_str()),
                ("content-type", "application/x-ndjson"),
            ];
            let timeout = Duration::from_millis(config.timeout_ms);
            for batch in sends {
                // The SDK maps every status Envoy's http_call returns (Ok,
                // BadArgument, InternalFailure) and must see the call to route
                // its response back, so this one goes through the SDK.
                match self.dispatch_http_call(
                    &config.cluster,
                    headers.clone(),
                    Some(batch.body.as_bytes()),
                    vec![],
                    timeout,
                ) {
                    Ok(token) => dispatched.push((token, batch.ticket)),
                    Err(_) => failed.push(batch.ticket),
                }
            }
        }
        if let Some(service) = self.service.as_mut() {
            service.calls.extend(dispatched);
            for ticket in failed {
                service.outbox.failed(ticket, now);
            }
            service.sync_metrics();
        }
    }
}

impl Service {
    fn sync_metrics(&mut self) {
        let t = self.outbox.totals();
        let r = self.reported;
        if t == r {
            return;
        }
        add(self.metrics.accepted, r.accepted, t.accepted);
        add(self.metrics.delivered, r.delivered, t.delivered);
        add(self.metrics.dropped, r.dropped, t.dropped);
        add(self.metrics.retried, r.retried, t.retried);
        add(self.metrics.batches, r.batches, t.batches);
        if let Some(id) = self.metrics.buffered {
            let _ = host::record_metric(id, self.outbox.held() as u64);
        }
        self.reported = t;
    }

    /// Moves everything on the queue into the outbox; returns how many messages it took.
    fn drain(&mut self) -> usize {
        // Envoy signals every enqueue separately; the first signal takes them all
        // and the rest find the queue empty.
        let mut taken = 0;
        let now = now_us();
        while let Ok(Some(bytes)) = host::records::dequeue_shared_queue(self.queue_id) {
            taken += 1;
            // A message holds one or more records, one per line (producers join
            // what they emit within their linger).
            let text = String::from_utf8_lossy(&bytes);
            for line in text.trim_end_matches('\n').split('\n') {
                // Refusals are counted by the outbox and reported by its notice.
                let _ = self.outbox.offer(line.to_string(), now);
            }
        }
        taken
    }
}

impl Context for AuditRoot {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, _body: usize, _tr: usize) {
        let status = host::get_header(host::MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        if let Some(service) = self.service.as_mut()
            && let Some(ticket) = service.calls.remove(&token)
        {
            let now = now_us();
            match classify(status.as_deref()) {
                SendOutcome::Delivered => service.outbox.delivered(ticket, now),
                SendOutcome::Rejected => {
                    host::log(
                        LogLevel::Warn,
                        &format!(
                            "record sink refused a batch (status {status:?}); a batch of \
                             several is resent one record at a time, a single record is dropped"
                        ),
                    );
                    service.outbox.rejected(ticket, now);
                }
                SendOutcome::Retry => service.outbox.failed(ticket, now),
            }
        }
        self.pump();
    }
}

impl RootContext for AuditRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        let bytes = host::get_buffer(host::BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = match AuditConfig::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                host::log(
                    LogLevel::Error,
                    &format!("gatehouse audit configuration: {e}"),
                );
                return false;
            }
        };
        if let AuditConfig::Service(s) = &config {
            let queue_id = match host::records::register_shared_queue(&s.queue) {
                Ok(id) => id,
                Err(e) => {
                    host::log(
                        LogLevel::Error,
                        &format!("gatehouse audit: cannot register queue {}: {e:?}", s.queue),
                    );
                    return false;
                }
            };
            if host::records::set_tick_period_ms(s.tick_ms.max(1)).is_err() {
                return false;
            }
            self.service = Some(Service {
                config: s.clone(),
                queue_id,
                outbox: Outbox::new(s.delivery()),
                calls: BTreeMap::new(),
                metrics: ServiceMetrics::define(),
                reported: DeliveryTotals::default(),
            });
        }
        self.role = Some(config);
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Some(service) = self.service.as_mut()
            && service.queue_id == queue_id
            && service.drain() > 0
        {
            self.pump();
        }
    }

    fn on_tick(&mut self) {
        self.pump();
    }

    fn get_type(&self) -> Option<ContextType> {
        match self.role {
            Some(AuditConfig::Sink(_)) => Some(ContextType::HttpContext),
            _ => None,
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match self.role {
            Some(AuditConfig::Sink(config)) => Some(Box::new(RecordSinkRequest { config })),
            _ => None,
        }
    }
}

/// One batch of records arriving at the record listener.
struct RecordSinkRequest {
    config: SinkConfig,
}

impl RecordSinkRequest {
    fn answer(code: u32) -> Action {
        // A failed local reply leaves the request to time out; the service retries it.
        let _ = host::send_http_response(code, &[], b"");
        Action::Pause
    }
}

impl Context for RecordSinkRequest {}

impl HttpContext for RecordSinkRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            return Self::answer(400);
        }
        // Hold the headers: the route behind this filter must never answer a record.
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            if body_size > self.config.max_batch_bytes {
                return Self::answer(413);
            }
            return Action::Pause;
        }
        let body = match host::get_buffer(host::BufferType::HttpRequestBody, 0, body_size) {
            Ok(Some(b)) => b,
            Ok(None) => Vec::new(),
            Err(_) => return Self::answer(500),
        };
        if let Err(why) = check_batch_body(&body, &self.config) {
            host::log(LogLevel::Warn, &format!("record sink: {why}"));
            return Self::answer(400);
        }
        // The log format adds the last line's newline.
        let records = body.strip_suffix(b"\n").unwrap_or(&body);
        match host::set_property(&[RECORD_PROPERTY], records) {
            Ok(()) => Self::answer(204),
            Err(_) => Self::answer(500),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_host::records::AUDIT_VM_ID;

    #[test]
    fn service_config_fills_defaults_and_rejects_unknown_fields() {
        let c = AuditConfig::parse(br#"{"role":"service","cluster":"gatehouse_records"}"#).unwrap();
        let AuditConfig::Service(s) = c else {
            panic!("service expected")
        };
        assert_eq!(s.queue, RECORD_QUEUE);
        assert_eq!(
            s.max_in_flight, 1,
            "one batch in flight keeps records in order"
        );
        assert_eq!(s.max_batch_records, 1_000);
        assert_eq!(s.delivery().max_batch_bytes, 256 << 10);
        assert_eq!(s.delivery().linger_us, 20_000);
        assert!(AuditConfig::parse(br#"{"role":"service","cluster":"c","typo":1}"#).is_err());
        assert!(AuditConfig::parse(br#"{"role":"service","cluster":""}"#).is_err());
        assert!(AuditConfig::parse(br#"{"role":"service","cluster":"c","max_buffer":0}"#).is_err());
        assert!(
            AuditConfig::parse(br#"{"role":"service","cluster":"c","max_batch_records":0}"#)
                .is_err()
        );
        assert_eq!(
            AuditConfig::parse(br#"{"role":"sink"}"#).unwrap(),
            AuditConfig::Sink(SinkConfig {
                max_record_bytes: 1 << 20,
                max_batch_bytes: 4 << 20,
            })
        );
        assert!(AuditConfig::parse(br#"{"role":"sink","max_batch":1}"#).is_err());
    }

    #[test]
    fn statuses_split_into_delivered_rejected_and_retry() {
        assert_eq!(classify(Some("204")), SendOutcome::Delivered);
        assert_eq!(classify(Some("400")), SendOutcome::Rejected);
        assert_eq!(classify(Some("413")), SendOutcome::Rejected);
        assert_eq!(classify(Some("429")), SendOutcome::Retry);
        assert_eq!(classify(Some("503")), SendOutcome::Retry);
        assert_eq!(classify(None), SendOutcome::Retry);
        assert_eq!(classify(Some("junk")), SendOutcome::Retry);
    }

    #[test]
    fn the_sink_counts_the_records_of_a_batch_one_per_line() {
        let config = SinkConfig {
            max_record_bytes: 100,
            max_batch_bytes: 1_000,
        };
        assert_eq!(check_batch_body(br#"{"a":1}"#, &config), Ok(1));
        assert_eq!(
            check_batch_body(b"{\"a\":1}\n{\"b\":2}\n{}", &config),
            Ok(3)
        );
        assert_eq!(
            check_batch_body(b"{\"a\":1}\n{\"b\":2}\n", &config),
            Ok(2),
            "a final newline is allowed"
        );
    }

    #[test]
    fn the_sink_refuses_a_batch_with_any_line_that_is_not_one_record() {
        let config = SinkConfig {
            max_record_bytes: 10,
            max_batch_bytes: 30,
        };
        for bad in [
            &b""[..],
            b"\n",
            b"[1]",
            b"{\"a\":\n1}",
            b"{}\n\n{}",
            b"{}\r\n{}",
            b"{\"a\":\"12345678\"}",
            b"{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        ] {
            assert!(
                check_batch_body(bad, &config).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_service_vm_id_matches_what_producers_resolve() {
        assert_eq!(AUDIT_VM_ID, "gatehouse_audit");
    }
}
