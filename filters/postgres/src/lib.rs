//! PostgreSQL v3 wire protocol as gatehouse sees it: decoding, session state, records.

pub mod policy;
pub mod sql;

pub mod approval;
pub mod config;
pub mod deny;
pub mod disposition;
pub mod fastpath;
pub mod filter_config;
pub mod framing;
pub mod guard;
pub mod login;
pub mod masking;
pub mod protocol;
pub mod session;
pub mod startup;

pub use config::{EngineConfig, SslRequestPolicy};
pub use disposition::Disposition;
pub use filter_config::{FilterConfig, MaskingConfig, PolicyConfig};
pub use framing::{Forward, Verdict};
pub use guard::{CachedPolicy, StatementPolicy};
pub use session::{
    CloseReason, ConnectionInfo, Phase, READINESS_MESSAGE, READINESS_USER, Session, SessionSummary,
};

#[cfg(test)]
mod tests;
