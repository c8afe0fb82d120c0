//! A network filter that passes every byte on unchanged, for the native
//! build's load test and as the end-to-end benches' native floor.
//!
//! Loaded as `dynamic_module_config: {name: gatehouse_passthrough}` with
//! `filter_name: passthrough`. It counts the bytes of each direction in the
//! stats `passthrough_client_bytes` and `passthrough_server_bytes`, and sets
//! the connection's filter state `gatehouse.passthrough` to
//! `client=<n> server=<n>` at close, so a test can see that both directions
//! reached it.
//!
//! With the configuration `{"panic_on": "<text>"}` it panics on a client
//! chunk that holds `<text>`: the integration test's proof that a panic is
//! caught at the module boundary, ends only its own connection and leaves
//! Envoy and every other connection running.
//!
//! The same module has an HTTP filter, `http_passthrough` ([`http`]): the HTTP
//! floor, and the proof that the HTTP part of the bindings works in Envoy.

use gatehouse_dynamic_modules_abi::network::{
    Buffer, Connection, ConnectionEvent, FilterStatus, MetricId, NetworkFilter, NetworkFilterConfig,
};
use gatehouse_dynamic_modules_abi::{declare_filters, network::ConfigEnvoy};

mod http;

declare_filters!(network: new_config, http: http::new_config);

fn new_config(
    name: &str,
    config: &[u8],
    envoy: &mut ConfigEnvoy,
) -> Result<Box<dyn NetworkFilterConfig>, String> {
    if name != "passthrough" {
        return Err(format!(
            "unknown filter {name:?} (this module has \"passthrough\")"
        ));
    }
    let panic_on = if config.is_empty() {
        None
    } else {
        let config: serde_json::Value =
            serde_json::from_slice(config).map_err(|e| format!("configuration: {e}"))?;
        config
            .get("panic_on")
            .and_then(serde_json::Value::as_str)
            .map(|s| s.as_bytes().to_vec())
    };
    Ok(Box::new(PassthroughConfig {
        client_bytes: envoy.define_counter("passthrough_client_bytes"),
        server_bytes: envoy.define_counter("passthrough_server_bytes"),
        panic_on,
    }))
}

struct PassthroughConfig {
    client_bytes: Option<MetricId>,
    server_bytes: Option<MetricId>,
    panic_on: Option<Vec<u8>>,
}

impl NetworkFilterConfig for PassthroughConfig {
    fn new_filter(&self, _connection: &mut Connection) -> Option<Box<dyn NetworkFilter>> {
        Some(Box::new(Passthrough {
            client_bytes: self.client_bytes,
            server_bytes: self.server_bytes,
            panic_on: self.panic_on.clone(),
            from_client: 0,
            from_server: 0,
        }))
    }
}

struct Passthrough {
    panic_on: Option<Vec<u8>>,
    client_bytes: Option<MetricId>,
    server_bytes: Option<MetricId>,
    from_client: u64,
    from_server: u64,
}

impl NetworkFilter for Passthrough {
    fn on_read(&mut self, connection: &mut Connection, length: usize, _end: bool) -> FilterStatus {
        if let Some(marker) = &self.panic_on
            && connection
                .buffer_bytes(Buffer::Read)
                .windows(marker.len().max(1))
                .any(|window| window == marker.as_slice())
        {
            // The test's deliberate panic: the boundary must catch it.
            #[allow(clippy::panic)]
            {
                panic!("deliberate panic on a marked client chunk");
            }
        }
        self.from_client += length as u64;
        if let Some(id) = self.client_bytes {
            connection.increment_counter(id, length as u64);
        }
        FilterStatus::Continue
    }

    fn on_write(&mut self, connection: &mut Connection, length: usize, _end: bool) -> FilterStatus {
        self.from_server += length as u64;
        if let Some(id) = self.server_bytes {
            connection.increment_counter(id, length as u64);
        }
        FilterStatus::Continue
    }

    fn on_event(&mut self, connection: &mut Connection, event: ConnectionEvent) {
        if matches!(
            event,
            ConnectionEvent::RemoteClose | ConnectionEvent::LocalClose
        ) {
            let summary = format!("client={} server={}", self.from_client, self.from_server);
            connection.set_filter_state("gatehouse.passthrough", summary.as_bytes());
        }
    }
}
