//! proxy-wasm glue for the postgres filter.
