//! proxy-wasm glue for gatehouse's Postgres network filter.
//!
//! Maps Envoy's network-filter callbacks onto the sans-IO engine in
//! `gatehouse-postgres` and applies what it returns. It makes no decisions.
//! Envoy calls client→server bytes "downstream data" and server→client bytes
//! "upstream data".

use gatehouse_host as host;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, PeerType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        host::log(LogLevel::Critical, &format!("gatehouse postgres filter panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(PostgresRoot::default()) });
}}

/// Stats this filter keeps (Envoy prefixes them with `wasmcustom.`).
#[derive(Default, Clone, Copy)]
struct Metrics {
    connections: Option<u32>,
    bytes_from_client: Option<u32>,
    bytes_from_server: Option<u32>,
}

impl Metrics {
    fn define() -> Metrics {
        let counter = |name| host::define_metric(host::MetricType::Counter, name).ok();
        Metrics {
            connections: counter("gatehouse_pg_connections_total"),
            bytes_from_client: counter("gatehouse_pg_client_bytes_total"),
            bytes_from_server: counter("gatehouse_pg_server_bytes_total"),
        }
    }
}

fn bump(metric: Option<u32>, by: usize) {
    if let Some(id) = metric {
        let _ = host::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
    }
}

#[derive(Default)]
struct PostgresRoot {
    metrics: Metrics,
}

impl Context for PostgresRoot {}

impl RootContext for PostgresRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        self.metrics = Metrics::define();
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(PostgresConnection {
            metrics: self.metrics,
        }))
    }
}

struct PostgresConnection {
    metrics: Metrics,
}

impl Context for PostgresConnection {}

impl StreamContext for PostgresConnection {
    fn on_new_connection(&mut self) -> Action {
        bump(self.metrics.connections, 1);
        let _ = host::set_property(
            &["gatehouse_build"],
            gatehouse_core::build::VERSION.as_bytes(),
        );
        Action::Continue
    }

    fn on_downstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        bump(self.metrics.bytes_from_client, data_size);
        Action::Continue
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        bump(self.metrics.bytes_from_server, data_size);
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {}
}
