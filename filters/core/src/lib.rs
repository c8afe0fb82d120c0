//! gatehouse's shared core: the pieces every filter uses, as plain Rust.
//!
//! Nothing here talks to a host: no proxy-wasm, no sockets, no clock reads.
//! Callers pass bytes and the current time in and get decisions and records out,
//! so the same code is unit-tested natively and runs unchanged inside Envoy.

pub mod approval;
pub mod build;
pub mod config;
pub mod delivery;
pub mod exec_record;
pub mod host;
pub mod identity;
pub mod mask;
pub mod policy;
pub mod record;
pub mod stats;
