//! The Kubernetes filter's stats, the same names in both builds.

/// A counter the glue adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Counter {
    /// `gatehouse_k8s_requests_total`: request headers seen.
    Requests,
    /// `gatehouse_k8s_denied_total`: local answers with a 4xx or 5xx status
    /// other than 401.
    Denied,
    /// `gatehouse_k8s_unauthenticated_total`: 401 answers.
    Unauthenticated,
    /// `gatehouse_k8s_config_loaded_total`: configurations a worker accepted.
    ConfigLoaded,
    /// `gatehouse_k8s_config_rejected_total`: configurations a worker refused.
    ConfigRejected,
    /// `gatehouse_k8s_host_errors_total`: host calls that failed (each is
    /// also logged).
    HostErrors,
}

impl Counter {
    pub const ALL: [Counter; 6] = [
        Counter::Requests,
        Counter::Denied,
        Counter::Unauthenticated,
        Counter::ConfigLoaded,
        Counter::ConfigRejected,
        Counter::HostErrors,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::Requests => "gatehouse_k8s_requests_total",
            Counter::Denied => "gatehouse_k8s_denied_total",
            Counter::Unauthenticated => "gatehouse_k8s_unauthenticated_total",
            Counter::ConfigLoaded => "gatehouse_k8s_config_loaded_total",
            Counter::ConfigRejected => "gatehouse_k8s_config_rejected_total",
            Counter::HostErrors => "gatehouse_k8s_host_errors_total",
        }
    }
}

/// A histogram the glue records samples of (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HistogramStat {
    /// `gatehouse_k8s_request_duration_us`: request headers to the end of
    /// the stream, for requests the filter saw both ends of.
    RequestDuration,
    /// `gatehouse_k8s_filter_time_us`: time the filter spent judging a
    /// request's headers, masking a response body callback or recording one
    /// callback of an exec session.
    FilterTime,
}

impl HistogramStat {
    pub const ALL: [HistogramStat; 2] = [HistogramStat::RequestDuration, HistogramStat::FilterTime];

    pub fn name(self) -> &'static str {
        match self {
            HistogramStat::RequestDuration => "gatehouse_k8s_request_duration_us",
            HistogramStat::FilterTime => "gatehouse_k8s_filter_time_us",
        }
    }
}

/// A family of labelled counters, by class (the action) and name (the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// `gatehouse_k8s_decisions_total{action, rule}`: requests by policy
    /// decision.
    Decisions,
    /// `gatehouse_k8s_shadow_decisions_total{action, rule}`: a shadow
    /// instance's would-be decisions, apart from the enforcing instance's.
    ShadowDecisions,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Decisions => "gatehouse_k8s_decisions_total",
            Family::ShadowDecisions => "gatehouse_k8s_shadow_decisions_total",
        }
    }

    /// The label holding the class.
    pub fn class_label(self) -> &'static str {
        "action"
    }

    /// The label holding the name.
    pub fn name_label(self) -> &'static str {
        "rule"
    }
}
