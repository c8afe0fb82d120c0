//! Build identity stamped on every record and stat, so that a log line says which
//! filter version produced it.

/// The crate version of this build of gatehouse.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
