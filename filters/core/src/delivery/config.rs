//! The audit module's configuration: which role it plays, the delivery
//! service's limits and the record sink's, parsed and validated here so the
//! Wasm glue only reads the plugin configuration and hands it over.

use super::DeliveryConfig;
use serde::Deserialize;

/// Name of the shared queue records travel on.
pub const RECORD_QUEUE: &str = "gatehouse_records";

/// The audit module's configuration (`"role"` picks one).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuditConfig {
    /// The singleton delivery service.
    Service(ServiceConfig),
    /// The record listener's HTTP filter.
    Sink(SinkConfig),
}

/// Why an audit configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuditConfigError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("service: cluster must not be empty")]
    NoCluster,
    #[error("service: {0} must be at least 1")]
    Zero(&'static str),
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
    /// Parses and checks the plugin configuration.
    pub fn parse(bytes: &[u8]) -> Result<Self, AuditConfigError> {
        let config: Self = serde_json::from_slice(bytes)?;
        if let AuditConfig::Service(s) = &config {
            if s.cluster.is_empty() {
                return Err(AuditConfigError::NoCluster);
            }
            for (name, value) in [
                ("max_buffer", s.max_buffer),
                ("max_in_flight", s.max_in_flight),
                ("max_batch_records", s.max_batch_records),
                ("max_batch_bytes", s.max_batch_bytes),
            ] {
                if value == 0 {
                    return Err(AuditConfigError::Zero(name));
                }
            }
        }
        Ok(config)
    }
}

impl ServiceConfig {
    /// The outbox's limits and timings.
    pub fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig {
            max_buffer: self.max_buffer,
            max_in_flight: self.max_in_flight,
            max_batch_records: self.max_batch_records,
            max_batch_bytes: self.max_batch_bytes,
            linger_us: self.linger_ms.saturating_mul(1_000),
            max_record_bytes: self.max_record_bytes,
            initial_backoff_us: self.initial_backoff_ms.saturating_mul(1_000),
            max_backoff_us: self.max_backoff_ms.saturating_mul(1_000),
            gatehouse_version: crate::build::VERSION,
        }
    }

    /// The tick period to ask the host for (a period of 0 would stop ticks,
    /// and with them lingering batches and retries).
    pub fn tick_period_ms(&self) -> u32 {
        self.tick_ms.max(1)
    }

    /// Headers of every batch sent to the record listener.
    pub fn send_headers(&self) -> [(&str, &str); 4] {
        [
            (":method", "POST"),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
            ("content-type", "application/x-ndjson"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(json: &str) -> ServiceConfig {
        match AuditConfig::parse(json.as_bytes()) {
            Ok(AuditConfig::Service(s)) => s,
            other => panic!("service expected, got {other:?}"),
        }
    }

    #[test]
    fn service_config_fills_defaults() {
        let s = service(r#"{"role":"service","cluster":"gatehouse_records"}"#);
        assert_eq!(s.queue, RECORD_QUEUE);
        assert_eq!(
            s.max_in_flight, 1,
            "one batch in flight keeps records in order"
        );
        assert_eq!(s.max_batch_records, 1_000);
        assert_eq!(s.delivery().max_batch_bytes, 256 << 10);
        assert_eq!(s.delivery().linger_us, 20_000);
        assert_eq!(s.delivery().initial_backoff_us, 100_000);
        assert_eq!(s.delivery().max_backoff_us, 5_000_000);
        assert_eq!(s.tick_period_ms(), 10);
        assert_eq!(
            s.send_headers(),
            [
                (":method", "POST"),
                (":path", "/record"),
                (":authority", "gatehouse-records"),
                ("content-type", "application/x-ndjson"),
            ]
        );
    }

    #[test]
    fn milliseconds_become_saturated_microseconds_and_a_zero_tick_still_ticks() {
        let s = service(
            r#"{"role":"service","cluster":"c","linger_ms":18446744073709551615,
                "initial_backoff_ms":7,"max_backoff_ms":9,"tick_ms":0,"path":"/p","authority":"a"}"#,
        );
        assert_eq!(s.delivery().linger_us, u64::MAX);
        assert_eq!(s.delivery().initial_backoff_us, 7_000);
        assert_eq!(s.delivery().max_backoff_us, 9_000);
        assert_eq!(s.tick_period_ms(), 1);
        assert_eq!(s.send_headers()[1], (":path", "/p"));
        assert_eq!(s.send_headers()[2], (":authority", "a"));
    }

    #[test]
    fn service_config_refuses_unknown_fields_an_empty_cluster_and_zero_limits() {
        for (json, expected) in [
            (
                r#"{"role":"service","cluster":"c","typo":1}"#,
                "unknown field `typo`",
            ),
            (r#"{"role":"service"}"#, "missing field `cluster`"),
            (
                r#"{"role":"service","cluster":""}"#,
                "cluster must not be empty",
            ),
            (
                r#"{"role":"service","cluster":"c","max_buffer":0}"#,
                "max_buffer must be at least 1",
            ),
            (
                r#"{"role":"service","cluster":"c","max_in_flight":0}"#,
                "max_in_flight must be at least 1",
            ),
            (
                r#"{"role":"service","cluster":"c","max_batch_records":0}"#,
                "max_batch_records must be at least 1",
            ),
            (
                r#"{"role":"service","cluster":"c","max_batch_bytes":0}"#,
                "max_batch_bytes must be at least 1",
            ),
            (r#"{"role":"proxy"}"#, "unknown variant `proxy`"),
            (r#"{"cluster":"c"}"#, "missing field `role`"),
            ("", "EOF"),
        ] {
            match AuditConfig::parse(json.as_bytes()) {
                Err(e) => assert!(e.to_string().contains(expected), "{json}: {e}"),
                Ok(c) => panic!("{json} accepted as {c:?}"),
            }
        }
    }

    #[test]
    fn sink_config_fills_defaults_and_refuses_unknown_fields() {
        assert_eq!(
            AuditConfig::parse(br#"{"role":"sink"}"#).ok(),
            Some(AuditConfig::Sink(SinkConfig {
                max_record_bytes: 1 << 20,
                max_batch_bytes: 4 << 20,
            }))
        );
        assert!(AuditConfig::parse(br#"{"role":"sink","max_batch":1}"#).is_err());
    }
}
