//! Recording `kubectl exec` and `attach` sessions (including the attach of
//! `kubectl debug`): the upgraded stream decoded in both directions
//! ([`websocket`] for `v4`/`v5.channel.k8s.io`, [`spdy`] for SPDY/3.1),
//! events recorded as chained, masked, bounded records ([`recorder`], the
//! record types in `gatehouse_core::exec_record`), typed lines rebuilt and
//! judged ([`typed`]), all driven by [`session::ExecSession`], which the glue
//! feeds bytes and whose output it applies. A rule's `record` section
//! ([`config`]) turns it on.

pub mod config;
mod plan;
pub mod recorder;
pub mod session;
pub mod spdy;
pub mod typed;
pub mod websocket;
pub mod wire;

pub use config::RecordingConfig;
pub use plan::{RecordingPlan, SessionRequest, WEBSOCKET_PROTOCOLS};
pub use recorder::SessionInfo;
pub use session::{ExecSession, Output, TransportKind};

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests;
