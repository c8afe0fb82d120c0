//! Recording `kubectl exec` and `attach` sessions.

pub mod spdy;
pub mod websocket;
pub mod wire;
