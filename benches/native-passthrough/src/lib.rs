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
//! With `{"close_on": "<text>"}` it answers a client chunk that holds `<text>`
//! itself (`closed by the filter\n`) and closes the connection after it, and
//! with `{"abort_on": "<text>"}` it aborts the connection at once, both from
//! inside its read hook, where Envoy calls the filter back (its own bytes pass
//! its write hook, the close raises its event hook). The filter state then
//! says `nested` if either reached the filter while its read hook ran: the
//! integration test's proof that the bindings never re-enter a filter.
//!
//! The same module has an HTTP filter, `http_passthrough` ([`http`]): the HTTP
//! floor, and the proof that the HTTP part of the bindings works in Envoy.

use gatehouse_dynamic_modules_abi::network::{
    Buffer, CloseKind, Connection, ConnectionEvent, FilterStatus, MetricId, NetworkFilter,
    NetworkFilterConfig,
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
    let config: serde_json::Value = if config.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(config).map_err(|e| format!("configuration: {e}"))?
    };
    let marker = |key: &str| {
        config
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(|s| s.as_bytes().to_vec())
    };
    Ok(Box::new(PassthroughConfig {
        client_bytes: envoy.define_counter("passthrough_client_bytes"),
        server_bytes: envoy.define_counter("passthrough_server_bytes"),
        panic_on: marker("panic_on"),
        close_on: marker("close_on"),
        abort_on: marker("abort_on"),
    }))
}

struct PassthroughConfig {
    client_bytes: Option<MetricId>,
    server_bytes: Option<MetricId>,
    panic_on: Option<Vec<u8>>,
    close_on: Option<Vec<u8>>,
    abort_on: Option<Vec<u8>>,
}

impl NetworkFilterConfig for PassthroughConfig {
    fn new_filter(&self, _connection: &mut Connection) -> Option<Box<dyn NetworkFilter>> {
        Some(Box::new(Passthrough {
            client_bytes: self.client_bytes,
            server_bytes: self.server_bytes,
            panic_on: self.panic_on.clone(),
            close_on: self.close_on.clone(),
            abort_on: self.abort_on.clone(),
            from_client: 0,
            from_server: 0,
            in_read: false,
            nested: false,
        }))
    }
}

struct Passthrough {
    panic_on: Option<Vec<u8>>,
    close_on: Option<Vec<u8>>,
    abort_on: Option<Vec<u8>>,
    /// The read hook is running.
    in_read: bool,
    /// Another hook reached the filter while the read hook ran.
    nested: bool,
    client_bytes: Option<MetricId>,
    server_bytes: Option<MetricId>,
    from_client: u64,
    from_server: u64,
}

impl NetworkFilter for Passthrough {
    fn on_read(&mut self, connection: &mut Connection, length: usize, _end: bool) -> FilterStatus {
        let chunk = connection.buffer_bytes(Buffer::Read);
        if holds(&chunk, &self.panic_on) {
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
        if holds(&chunk, &self.close_on) {
            self.in_read = true;
            connection.write_to_client(b"closed by the filter\n", false);
            connection.close(CloseKind::FlushWrite);
            self.in_read = false;
            return FilterStatus::StopIteration;
        }
        if holds(&chunk, &self.abort_on) {
            self.in_read = true;
            connection.close(CloseKind::Abort);
            self.in_read = false;
            return FilterStatus::StopIteration;
        }
        FilterStatus::Continue
    }

    fn on_write(&mut self, connection: &mut Connection, length: usize, _end: bool) -> FilterStatus {
        self.nested |= self.in_read;
        self.from_server += length as u64;
        if let Some(id) = self.server_bytes {
            connection.increment_counter(id, length as u64);
        }
        FilterStatus::Continue
    }

    fn on_event(&mut self, connection: &mut Connection, event: ConnectionEvent) {
        self.nested |= self.in_read;
        if matches!(
            event,
            ConnectionEvent::RemoteClose | ConnectionEvent::LocalClose
        ) {
            let nested = if self.nested { " nested" } else { "" };
            let summary = format!(
                "client={} server={}{nested}",
                self.from_client, self.from_server
            );
            connection.set_filter_state("gatehouse.passthrough", summary.as_bytes());
        }
    }
}

/// Whether `chunk` holds `marker`.
fn holds(chunk: &[u8], marker: &Option<Vec<u8>>) -> bool {
    marker.as_ref().is_some_and(|marker| {
        chunk
            .windows(marker.len().max(1))
            .any(|window| window == marker.as_slice())
    })
}
