//! The Postgres filter's stats, named once for both builds. Envoy prefixes
//! them (`wasmcustom.` for the Wasm build, `dynamicmodulescustom.` for the
//! native one); labelled families encode their labels in the name
//! ([`gatehouse_core::stats::labelled_name`]).

/// Counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Counter {
    /// Connections seen.
    Connections,
    /// Statements completed (or failed).
    Statements,
    /// Statements that ended in an error.
    Errors,
    /// Sessions ended for malformed bytes.
    ProtocolErrors,
    /// Records produced.
    Records,
    /// Records the engine could not hold.
    RecordsDropped,
    /// Bytes client → server (as received).
    ClientBytes,
    /// Bytes server → client (as received).
    ServerBytes,
    /// Host calls that failed.
    HostErrors,
    /// Statements the policy refused.
    Denied,
    /// Values masked for clients.
    Masked,
    /// Token logins that succeeded.
    Logins,
    /// Logins refused (bad token, role, server).
    LoginFailures,
    /// Configurations accepted.
    ConfigLoaded,
    /// Configurations refused.
    ConfigRejected,
}

impl Counter {
    pub const ALL: [Counter; 15] = [
        Counter::Connections,
        Counter::Statements,
        Counter::Errors,
        Counter::ProtocolErrors,
        Counter::Records,
        Counter::RecordsDropped,
        Counter::ClientBytes,
        Counter::ServerBytes,
        Counter::HostErrors,
        Counter::Denied,
        Counter::Masked,
        Counter::Logins,
        Counter::LoginFailures,
        Counter::ConfigLoaded,
        Counter::ConfigRejected,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::Connections => "gatehouse_pg_connections_total",
            Counter::Statements => "gatehouse_pg_statements_total",
            Counter::Errors => "gatehouse_pg_errors_total",
            Counter::ProtocolErrors => "gatehouse_pg_protocol_errors_total",
            Counter::Records => "gatehouse_pg_records_total",
            Counter::RecordsDropped => "gatehouse_pg_records_dropped_total",
            Counter::ClientBytes => "gatehouse_pg_client_bytes_total",
            Counter::ServerBytes => "gatehouse_pg_server_bytes_total",
            Counter::HostErrors => "gatehouse_pg_host_errors_total",
            Counter::Denied => "gatehouse_pg_denied_total",
            Counter::Masked => "gatehouse_pg_masked_total",
            Counter::Logins => "gatehouse_pg_logins_total",
            Counter::LoginFailures => "gatehouse_pg_login_failures_total",
            Counter::ConfigLoaded => "gatehouse_pg_config_loaded_total",
            Counter::ConfigRejected => "gatehouse_pg_config_rejected_total",
        }
    }
}

/// Gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gauge {
    /// Most bytes one connection held.
    BufferedHighWater,
    /// Connections open now.
    SessionsActive,
}

impl Gauge {
    pub const ALL: [Gauge; 2] = [Gauge::BufferedHighWater, Gauge::SessionsActive];

    pub fn name(self) -> &'static str {
        match self {
            Gauge::BufferedHighWater => "gatehouse_pg_buffered_bytes_max",
            Gauge::SessionsActive => "gatehouse_pg_sessions_active",
        }
    }
}

/// Histograms, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HistogramStat {
    /// Each statement's duration.
    StatementDuration,
    /// Time the filter spent per data event.
    FilterTime,
}

impl HistogramStat {
    pub const ALL: [HistogramStat; 2] =
        [HistogramStat::StatementDuration, HistogramStat::FilterTime];

    pub fn name(self) -> &'static str {
        match self {
            HistogramStat::StatementDuration => "gatehouse_pg_statement_duration_us",
            HistogramStat::FilterTime => "gatehouse_pg_filter_time_us",
        }
    }
}

/// Counter families labelled by rule or detector. A shadow instance counts its
/// would-be decisions and masking under `gatehouse_pg_shadow_*`, so they never
/// add to the enforcing instance's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// `{action, rule}`: statements by decision.
    Decisions { shadow: bool },
    /// `{rule}`: values masked by column rule.
    MaskedByRule { shadow: bool },
    /// `{detector}`: findings masked by detector.
    MaskedByDetector { shadow: bool },
}

impl Family {
    /// The family's name as Prometheus shows it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Decisions { shadow: false } => "gatehouse_pg_decisions_total",
            Family::Decisions { shadow: true } => "gatehouse_pg_shadow_decisions_total",
            Family::MaskedByRule { shadow: false } => "gatehouse_pg_masked_by_rule_total",
            Family::MaskedByRule { shadow: true } => "gatehouse_pg_shadow_masked_by_rule_total",
            Family::MaskedByDetector { shadow: false } => "gatehouse_pg_masked_by_detector_total",
            Family::MaskedByDetector { shadow: true } => {
                "gatehouse_pg_shadow_masked_by_detector_total"
            }
        }
    }

    /// The label whose values come from the code, if the family has one.
    pub fn class_label(self) -> Option<&'static str> {
        match self {
            Family::Decisions { .. } => Some("action"),
            _ => None,
        }
    }

    /// The label whose values come from the configuration.
    pub fn name_label(self) -> &'static str {
        match self {
            Family::Decisions { .. } | Family::MaskedByRule { .. } => "rule",
            Family::MaskedByDetector { .. } => "detector",
        }
    }

    /// The stat name for `class` and `name` in this family.
    pub fn stat_name(self, class: &str, name: &str) -> String {
        match self.class_label() {
            Some(class_label) => gatehouse_core::stats::labelled_name(
                self.name(),
                &[(class_label, class), (self.name_label(), name)],
            ),
            None => gatehouse_core::stats::labelled_name(self.name(), &[(self.name_label(), name)]),
        }
    }
}
