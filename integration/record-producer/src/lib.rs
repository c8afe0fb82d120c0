//! Test-only record producer: a request `GET /produce?session=S&count=N&pad=P`
//! emits records `{"type":"test.record","schema":1,"session":S,"sequence":1..=N,"pad":"xx…"}`
//! (P bytes of padding) through `gatehouse_host::records::emit`, exactly as the
//! filters' glue does, and answers 200 with N. Like the glue, its root context
//! calls `gatehouse_host::records::flush` from a tick.
//!
//! `GET /abort` makes the VM fail (a Wasm trap), so tests can watch Envoy's
//! `failure_policy` at work on a module built like the filters. Only this
//! test module has such a path: the filters never trap on purpose.

use gatehouse_host as host;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProducerRoot) });
}}

/// Most records one request may ask for.
const MAX_COUNT: u64 = 1_000_000;
/// Most padding per record.
const MAX_PAD: usize = 1 << 20;

struct ProducerRoot;

/// How often records waiting in this VM are flushed (the Postgres glue's period).
const FLUSH_TICK_MS: u32 = 20;

impl Context for ProducerRoot {}

impl RootContext for ProducerRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        host::records::set_tick_period_ms(FLUSH_TICK_MS).is_ok()
    }

    fn on_tick(&mut self) {
        host::records::flush();
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Produce))
    }
}

struct Produce;

impl Context for Produce {}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

impl HttpContext for Produce {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let path = host::get_header(host::MapType::HttpRequestHeaders, ":path")
            .ok()
            .flatten()
            .unwrap_or_default();
        if path == "/abort" {
            std::process::abort();
        }
        let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let session: String = query_value(query, "session")
            .unwrap_or("s")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let count = query_value(query, "count")
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(1)
            .min(MAX_COUNT);
        let pad = query_value(query, "pad")
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(0)
            .min(MAX_PAD);
        let padding = "x".repeat(pad);
        for sequence in 1..=count {
            host::records::emit(&format!(
                r#"{{"type":"test.record","schema":1,"session":"{session}","sequence":{sequence},"pad":"{padding}"}}"#
            ));
        }
        let _ = host::send_http_response(200, &[], count.to_string().as_bytes());
        Action::Pause
    }
}
