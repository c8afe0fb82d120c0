//! The record sink, native build: the HTTP filter on the record listener
//! (`filter_name: sink`) that takes one batch of records per request, stores
//! it in filter state `wasm.gatehouse_record` and answers 204, so the
//! listener's access log, `%FILTER_STATE(wasm.gatehouse_record:PLAIN)%\n`,
//! writes each record as its own line — the Wasm audit module's `sink` role
//! without a Wasm runtime in front of every batch.
//!
//! Every decision is `gatehouse_core::delivery::sink`'s, over the same
//! [`SinkHost`] calls the Wasm sink makes; this file makes them on Envoy's
//! dynamic-modules ABI. Its configuration is the Wasm sink's
//! (`{"role": "sink"}`, optionally with `max_record_bytes` and
//! `max_batch_bytes`). A failed host call is logged and counted in
//! `dynamicmodulescustom.gatehouse_records_host_errors`; a batch the host
//! failed to read or store is answered 500, so its sender resends it.

use gatehouse_core::delivery::config::{AuditConfig, SinkConfig};
use gatehouse_core::delivery::sink::{
    self, BatchRefusal, HOST_ERRORS_METRIC, Held, RECORD_STATE_KEY, SinkHost,
};
use gatehouse_dynamic_modules_abi::http::{
    BodyStatus, HeadersStatus, HttpConfigEnvoy, HttpFilter, HttpFilterConfig, Message, MetricId,
    Stream,
};
use gatehouse_dynamic_modules_abi::{LogLevel, log};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a sink configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(#[from] gatehouse_core::delivery::config::AuditConfigError),
    #[error(
        "role \"service\": the native module has no delivery service (its filters deliver \
         with their own writer); configure this filter with {{\"role\": \"sink\"}}"
    )]
    NotASink,
}

/// One sink configuration, shared by every worker.
pub struct SinkFilterConfig {
    config: SinkConfig,
    host_errors: Option<MetricId>,
    /// Failed host calls so far, also when the counter could not be defined.
    failures: AtomicU64,
}

impl SinkFilterConfig {
    pub fn new(bytes: &[u8], envoy: &mut HttpConfigEnvoy) -> Result<SinkFilterConfig, ConfigError> {
        let config = match AuditConfig::parse(bytes)? {
            AuditConfig::Sink(config) => config,
            AuditConfig::Service(_) => return Err(ConfigError::NotASink),
        };
        let host_errors = envoy.define_counter(HOST_ERRORS_METRIC);
        if host_errors.is_none() {
            log(
                LogLevel::Warn,
                "gatehouse record sink: defining the host-error counter failed; failures are \
                 logged only",
            );
        }
        Ok(SinkFilterConfig {
            config,
            host_errors,
            failures: AtomicU64::new(0),
        })
    }
}

/// The configuration as Envoy holds it.
pub struct SinkConfigSlot(pub Arc<SinkFilterConfig>);

impl HttpFilterConfig for SinkConfigSlot {
    fn new_filter(&self, _stream: &mut Stream) -> Option<Box<dyn HttpFilter>> {
        Some(Box::new(SinkFilter {
            config: Arc::clone(&self.0),
        }))
    }
}

/// One batch of records arriving at the record listener.
struct SinkFilter {
    config: Arc<SinkFilterConfig>,
}

impl HttpFilter for SinkFilter {
    fn on_request_headers(&mut self, stream: &mut Stream, end_stream: bool) -> HeadersStatus {
        // Answered or waiting for the body: the route behind never sees a batch.
        sink::request_headers(&mut self.host(stream), end_stream);
        HeadersStatus::StopIteration
    }

    fn on_request_body(&mut self, stream: &mut Stream, end_stream: bool) -> BodyStatus {
        let size = stream.whole_body_size(Message::Request);
        let config = self.config.config;
        match sink::request_body(&mut self.host(stream), &config, size, end_stream) {
            Held::Waiting => BodyStatus::StopIterationAndBuffer,
            Held::Answered => BodyStatus::StopIterationNoBuffer,
        }
    }
}

impl SinkFilter {
    fn host<'a>(&'a self, stream: &'a mut Stream) -> NativeSinkHost<'a> {
        NativeSinkHost {
            config: &self.config,
            stream,
        }
    }
}

/// The sink's host calls on one stream.
struct NativeSinkHost<'a> {
    config: &'a SinkFilterConfig,
    stream: &'a mut Stream,
}

impl NativeSinkHost<'_> {
    /// Logs and counts a failed call to `what`.
    fn failed(&mut self, what: &str) {
        let count = self.config.failures.fetch_add(1, Ordering::Relaxed) + 1;
        log(
            LogLevel::Warn,
            &format!("gatehouse record sink: {what} failed; {count} host-call failures so far"),
        );
        if let Some(id) = self.config.host_errors
            && !self.stream.increment_counter(id, 1)
        {
            // Counting into the counter that just failed would recurse.
            log(
                LogLevel::Warn,
                "gatehouse record sink: counting a host error failed",
            );
        }
    }
}

impl SinkHost for NativeSinkHost<'_> {
    fn body(&mut self) -> Option<Vec<u8>> {
        let body = self.stream.try_whole_body(Message::Request);
        if body.is_none() {
            self.failed("reading a batch");
        }
        body
    }

    fn store(&mut self, records: &[u8]) -> bool {
        // The Wasm build's key (proxy-wasm prefixes `wasm.`).
        let stored = self
            .stream
            .set_filter_state(&format!("wasm.{RECORD_STATE_KEY}"), records);
        if !stored {
            self.failed("storing a batch in filter state");
        }
        stored
    }

    fn answer(&mut self, status: u32) {
        // A failed local reply leaves the request to time out; the sender resends it.
        if !self
            .stream
            .send_response(status, &[], b"", "gatehouse_record_sink")
        {
            self.failed("answering a batch");
        }
    }

    fn refused(&mut self, why: BatchRefusal) {
        log(LogLevel::Warn, &format!("gatehouse record sink: {why}"));
    }
}
