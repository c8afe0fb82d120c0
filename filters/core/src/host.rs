//! What the glue crates (`gatehouse-postgres-glue`, `gatehouse-kubernetes-glue`)
//! say to the host under them, whichever build it is: one error type for a
//! failed host call and one set of log severities, so both builds' hosts map
//! them the same way.

/// A host call that failed, as the host describes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostError(pub String);

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}
