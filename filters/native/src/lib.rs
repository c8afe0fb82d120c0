//! gatehouse's filters as one Envoy dynamic module, `libgatehouse.so`, for
//! **Envoy 1.40** (dynamic-modules ABI v0.2.0).
//!
//! The same engines and the same glue as the Wasm build, over Envoy's native
//! ABI (`gatehouse-dynamic-modules-abi`) instead of proxy-wasm: no Wasm runtime
//! between Envoy and the filter, no module compile at start. Load it with
//! `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` pointing at its directory and
//!
//! ```yaml
//! - name: envoy.filters.network.dynamic_modules
//!   typed_config:
//!     "@type": type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter
//!     dynamic_module_config: {name: gatehouse}
//!     filter_name: postgres
//!     filter_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: '{…}'}
//! ```
//!
//! Filters: the network filter `postgres` ([`postgres`]) and the HTTP filters
//! `kubernetes` ([`kubernetes`]) and `sink` ([`sink`], the record listener's),
//! both `envoy.filters.http.dynamic_modules`. Build it with
//! `cargo xtask build --native` (profile `release-native`, which unwinds so
//! that each hook catches a panic at the module boundary).

pub mod approvals;
mod connect;
pub mod keys;
pub mod kubernetes;
pub mod postgres;
pub mod records;
pub mod sink;
pub mod starttls;
pub mod stats;
pub mod timer;

use gatehouse_dynamic_modules_abi::declare_filters;
use gatehouse_dynamic_modules_abi::http::{HttpConfigEnvoy, HttpFilterConfig};
use gatehouse_dynamic_modules_abi::network::{ConfigEnvoy, NetworkFilterConfig};
use std::sync::Arc;

/// A connection's scheduled events.
pub const EVENT_CLOSE: u64 = 1;
pub const EVENT_START_TLS: u64 = 2;
pub const EVENT_LOGIN_DEADLINE: u64 = 3;
/// A fetch of keys a held login waits for ended.
pub const EVENT_KEYS_FETCHED: u64 = 4;

declare_filters!(network: new_network_filter, http: new_http_filter);

/// Builds the HTTP filter `name` from its configuration.
fn new_http_filter(
    name: &str,
    config: &[u8],
    envoy: &mut HttpConfigEnvoy,
) -> Result<Box<dyn HttpFilterConfig>, String> {
    match name {
        "kubernetes" => kubernetes::KubeConfig::new(config, envoy)
            .map(|config| {
                Box::new(kubernetes::KubeFilterConfig(Arc::new(config)))
                    as Box<dyn HttpFilterConfig>
            })
            .map_err(|error| error.to_string()),
        "sink" => sink::SinkFilterConfig::new(config, envoy)
            .map(|config| {
                Box::new(sink::SinkConfigSlot(Arc::new(config))) as Box<dyn HttpFilterConfig>
            })
            .map_err(|error| error.to_string()),
        other => Err(format!(
            "unknown HTTP filter {other:?} (this module has \"kubernetes\" and \"sink\")"
        )),
    }
}

/// Builds the network filter `name` from its configuration.
fn new_network_filter(
    name: &str,
    config: &[u8],
    envoy: &mut ConfigEnvoy,
) -> Result<Box<dyn NetworkFilterConfig>, String> {
    match name {
        "postgres" => postgres::PgConfig::new(config, envoy)
            .map(|config| {
                Box::new(postgres::PgFilterConfig(Arc::new(config))) as Box<dyn NetworkFilterConfig>
            })
            .map_err(|error| error.to_string()),
        other => Err(format!(
            "unknown network filter {other:?} (this module has \"postgres\")"
        )),
    }
}

/// Writes to Envoy's log (the `dynamic_modules` logger) at a glue crate's
/// severity.
fn log_at(level: gatehouse_core::host::Level, message: &str) {
    use gatehouse_core::host::Level;
    use gatehouse_dynamic_modules_abi::LogLevel;
    let level = match level {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
        Level::Critical => LogLevel::Critical,
    };
    gatehouse_dynamic_modules_abi::log(level, message);
}
