//! gatehouse's audit path inside Envoy: one module, two roles chosen by its
//! configuration (`"role"`, [`AuditConfig`]):
//!
//! - `service` — a singleton Wasm service (bootstrap extension `envoy.bootstrap.wasm`,
//!   `singleton: true`, vm_id [`gatehouse_host::records::AUDIT_VM_ID`]). It owns the shared queue
//!   [`gatehouse_core::delivery::RECORD_QUEUE`] the filters emit records on, drains it into a bounded
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
//! Every decision (configuration, batching, retry classification, what the
//! sink accepts) is `gatehouse_core::delivery`'s; this crate makes the host
//! calls. A host call that fails is logged and counted in
//! `gatehouse_records_host_errors`, in both roles.
//!
//! Counters (`wasmcustom.…`): `gatehouse_records_accepted`, `_delivered`,
//! `_dropped`, `_retried`, `_batches` (sends), `_host_errors`; gauge
//! `gatehouse_records_buffered`.

use gatehouse_core::delivery::config::{AuditConfig, ServiceConfig, SinkConfig};
use gatehouse_core::delivery::sink::{self, HOST_ERRORS_METRIC};
use gatehouse_core::delivery::{
    DeliveryCounter, DeliveryTotals, Outbox, SendOutcome, Ticket, classify,
};
use gatehouse_host as host;
use gatehouse_host::Status;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        host::log(LogLevel::Critical, &format!("gatehouse audit module panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(AuditRoot::default()) });
}}

/// The one host-error policy of both roles: a failed host call is logged and
/// counted, never ignored. Shared by the root context and its requests.
#[derive(Clone, Default)]
struct HostErrors {
    metric: Option<u32>,
    /// Failures so far in this VM, also when the counter could not be defined.
    count: Rc<Cell<u64>>,
}

impl HostErrors {
    fn define() -> Self {
        let mut errors = Self::default();
        errors.metric = errors.check(
            "defining the host-error counter",
            host::define_metric(host::MetricType::Counter, HOST_ERRORS_METRIC),
        );
        errors
    }

    /// Logs and counts a failed call to `what`.
    fn failed(&self, what: &str, status: Status) {
        self.count.set(self.count.get().saturating_add(1));
        host::log(
            LogLevel::Warn,
            &format!(
                "gatehouse audit: {what} failed ({status:?}); {} host-call failures so far",
                self.count.get()
            ),
        );
        if let Some(id) = self.metric
            && let Err(status) = host::increment_metric(id, 1)
        {
            // Counting into the counter that just failed would recurse.
            host::log(
                LogLevel::Warn,
                &format!("gatehouse audit: counting a host error failed ({status:?})"),
            );
        }
    }

    /// The call's value, or `None` after logging and counting its failure.
    fn check<T>(&self, what: &str, result: Result<T, Status>) -> Option<T> {
        result.map_err(|status| self.failed(what, status)).ok()
    }
}

#[derive(Default)]
struct AuditRoot {
    role: Option<AuditConfig>,
    service: Option<Service>,
    errors: HostErrors,
}

struct Service {
    config: ServiceConfig,
    queue_id: u32,
    outbox: Outbox,
    /// Host call token -> outbox ticket.
    calls: BTreeMap<u32, Ticket>,
    /// Metric ids of the delivery counters.
    counters: [(DeliveryCounter, Option<u32>); DeliveryCounter::ALL.len()],
    buffered: Option<u32>,
    reported: DeliveryTotals,
    errors: HostErrors,
}

impl AuditRoot {
    fn now_us(&self) -> u64 {
        self.errors
            .check("reading the clock", host::now_micros())
            .unwrap_or_default()
    }

    /// Sends what the window and backoff allow.
    fn pump(&mut self) {
        let now = self.now_us();
        let Some(service) = self.service.as_mut() else {
            return;
        };
        let sends: Vec<_> = std::iter::from_fn(|| service.outbox.next_send(now)).collect();
        let mut dispatched = Vec::with_capacity(sends.len());
        let mut failed = Vec::new();
        if let Some(service) = self.service.as_ref() {
            let config = &service.config;
            let headers = config.send_headers();
            let timeout = Duration::from_millis(config.timeout_ms);
            for batch in sends {
                // The SDK maps every status Envoy's http_call returns (Ok,
                // BadArgument, InternalFailure) and must see the call to route
                // its response back, so this one goes through the SDK.
                match self.dispatch_http_call(
                    &config.cluster,
                    headers.to_vec(),
                    Some(batch.body.as_bytes()),
                    vec![],
                    timeout,
                ) {
                    Ok(token) => dispatched.push((token, batch.ticket)),
                    Err(status) => {
                        self.errors.failed("sending a batch", status);
                        failed.push(batch.ticket);
                    }
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
    fn new(config: &ServiceConfig, queue_id: u32, errors: HostErrors) -> Self {
        let define = |kind, name: &str| {
            errors.check(
                &format!("defining metric {name}"),
                host::define_metric(kind, name),
            )
        };
        Self {
            counters: DeliveryCounter::ALL
                .map(|counter| (counter, define(host::MetricType::Counter, counter.name()))),
            buffered: define(host::MetricType::Gauge, "gatehouse_records_buffered"),
            config: config.clone(),
            queue_id,
            outbox: Outbox::new(config.delivery()),
            calls: BTreeMap::new(),
            reported: DeliveryTotals::default(),
            errors,
        }
    }

    fn sync_metrics(&mut self) {
        let totals = self.outbox.totals();
        if totals == self.reported {
            return;
        }
        for (counter, delta) in totals.increases_since(&self.reported) {
            let id = self.counters.iter().find(|(c, _)| *c == counter);
            if let Some((_, Some(id))) = id {
                let delta = i64::try_from(delta).unwrap_or(i64::MAX);
                self.errors.check(
                    "incrementing a delivery counter",
                    host::increment_metric(*id, delta),
                );
            }
        }
        if let Some(id) = self.buffered {
            self.errors.check(
                "setting the buffered gauge",
                host::record_metric(id, self.outbox.held() as u64),
            );
        }
        self.reported = totals;
    }

    /// Moves everything on the queue into the outbox; returns how many messages it took.
    fn drain(&mut self, now_us: u64) -> usize {
        // Envoy signals every enqueue separately; the first signal takes them all
        // and the rest find the queue empty.
        let mut taken = 0;
        while let Some(Some(message)) = self.errors.check(
            "dequeuing records",
            host::records::dequeue_shared_queue(self.queue_id),
        ) {
            taken += 1;
            // Refusals are counted by the outbox and reported by its notice.
            self.outbox.offer_message(&message, now_us);
        }
        taken
    }
}

impl Context for AuditRoot {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, _body: usize, _tr: usize) {
        let status = self
            .errors
            .check(
                "reading a send's status",
                host::get_header(host::MapType::HttpCallResponseHeaders, ":status"),
            )
            .flatten();
        let now = self.now_us();
        if let Some(service) = self.service.as_mut()
            && let Some(ticket) = service.calls.remove(&token)
        {
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
        self.errors = HostErrors::define();
        let bytes = self
            .errors
            .check(
                "reading the plugin configuration",
                host::get_buffer(host::BufferType::PluginConfiguration, 0, usize::MAX),
            )
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
            let Some(queue_id) = self.errors.check(
                &format!("registering queue {}", s.queue),
                host::records::register_shared_queue(&s.queue),
            ) else {
                return false;
            };
            if self
                .errors
                .check(
                    "setting the tick period",
                    host::records::set_tick_period_ms(s.tick_period_ms()),
                )
                .is_none()
            {
                return false;
            }
            self.service = Some(Service::new(s, queue_id, self.errors.clone()));
        }
        self.role = Some(config);
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        let now = self.now_us();
        if let Some(service) = self.service.as_mut()
            && service.queue_id == queue_id
            && service.drain(now) > 0
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
            Some(AuditConfig::Sink(config)) => Some(Box::new(RecordSinkRequest {
                config,
                errors: self.errors.clone(),
                body_size: 0,
            })),
            _ => None,
        }
    }
}

/// One batch of records arriving at the record listener.
struct RecordSinkRequest {
    config: SinkConfig,
    errors: HostErrors,
    /// The size of the body so far, as the last body hook said.
    body_size: usize,
}

impl sink::SinkHost for RecordSinkRequest {
    fn body(&mut self) -> Option<Vec<u8>> {
        self.errors
            .check(
                "reading a batch",
                host::get_buffer(host::BufferType::HttpRequestBody, 0, self.body_size),
            )
            .map(Option::unwrap_or_default)
    }

    fn store(&mut self, records: &[u8]) -> bool {
        self.errors
            .check(
                "storing a batch in filter state",
                host::set_property(&[sink::RECORD_STATE_KEY], records),
            )
            .is_some()
    }

    fn answer(&mut self, status: u32) {
        // A failed local reply leaves the request to time out; the service retries it.
        self.errors.check(
            "answering a batch",
            host::send_http_response(status, &[], b""),
        );
    }

    fn refused(&mut self, why: sink::BatchRefusal) {
        host::log(LogLevel::Warn, &format!("record sink: {why}"));
    }
}

impl Context for RecordSinkRequest {}

impl HttpContext for RecordSinkRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        sink::request_headers(self, end_of_stream);
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.body_size = body_size;
        let config = self.config;
        sink::request_body(self, &config, body_size, end_of_stream);
        Action::Pause
    }
}

#[cfg(test)]
mod tests {
    //! Off Wasm every host call fails (`gatehouse_host` reports
    //! `InternalFailure`), which is how these tests reach the error paths.
    use super::*;
    use gatehouse_host::records::AUDIT_VM_ID;

    fn sink_request() -> RecordSinkRequest {
        RecordSinkRequest {
            config: SinkConfig {
                max_record_bytes: 100,
                max_batch_bytes: 1_000,
            },
            errors: HostErrors::default(),
            body_size: 0,
        }
    }

    #[test]
    fn a_sink_whose_host_calls_fail_counts_each_failure_and_answers_500() {
        let mut request = sink_request();
        assert_eq!(request.on_http_request_body(10, true), Action::Pause);
        assert_eq!(
            request.errors.count.get(),
            2,
            "the failed body read and the failed 500 reply"
        );
        assert_eq!(request.on_http_request_headers(0, false), Action::Pause);
        assert_eq!(request.errors.count.get(), 2, "holding makes no host call");
        assert_eq!(request.on_http_request_headers(0, true), Action::Pause);
        assert_eq!(request.errors.count.get(), 3, "the failed 400 reply");
    }

    #[test]
    fn a_service_whose_host_calls_fail_counts_them_and_refuses_its_configuration() {
        let mut root = AuditRoot::default();
        assert!(!root.on_configure(0));
        // Defining the counter and reading the configuration both failed.
        assert_eq!(root.errors.count.get(), 2);
        assert!(root.service.is_none());
    }

    #[test]
    fn a_failed_dequeue_is_counted_and_ends_the_drain() {
        let errors = HostErrors::default();
        let config = match AuditConfig::parse(br#"{"role":"service","cluster":"c"}"#) {
            Ok(AuditConfig::Service(s)) => s,
            other => panic!("{other:?}"),
        };
        let mut service = Service::new(&config, 1, errors.clone());
        let defined = errors.count.get();
        assert_eq!(
            defined,
            DeliveryCounter::ALL.len() as u64 + 1,
            "every define"
        );
        assert_eq!(service.drain(0), 0);
        assert_eq!(errors.count.get(), defined + 1);
        service.outbox.offer("{}".into(), 0).ok();
        service.sync_metrics();
        assert_eq!(service.reported, service.outbox.totals());
        // No counter or gauge was defined, so syncing made no host call.
        assert_eq!(errors.count.get(), defined + 1);
    }

    #[test]
    fn the_service_vm_id_matches_what_producers_resolve() {
        assert_eq!(AUDIT_VM_ID, "gatehouse_audit");
    }
}
