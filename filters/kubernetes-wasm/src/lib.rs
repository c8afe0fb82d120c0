//! proxy-wasm glue for the kubernetes filter.
