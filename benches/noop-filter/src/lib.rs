//! A Wasm filter that does nothing, for the end-to-end benches' floor column.
//!
//! Envoy pays for a Wasm filter before the filter does any work: a call into
//! the VM per data or header callback, and the context bookkeeping around it.
//! Loaded in place of a gatehouse module (same bootstrap, same position in the
//! chain), this module measures that fixed price, so a bench can tell how much
//! of gatehouse's distance from plain Envoy is its own work.
//!
//! The plugin configuration names the context type: `http` for an HTTP
//! filter, `http-hold` for an HTTP filter that holds each response until its
//! body is complete and writes the body back unchanged (the least any filter
//! that must see a whole body before it leaves, such as a masking one, costs),
//! anything else for a network filter.

use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot::default()) });
}}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Mode {
    #[default]
    Network,
    Http,
    HttpHold,
}

#[derive(Default)]
struct NoopRoot {
    mode: Mode,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        self.mode = match self
            .get_plugin_configuration()
            .as_deref()
            .map(<[u8]>::trim_ascii)
        {
            Some(b"http") => Mode::Http,
            Some(b"http-hold") => Mode::HttpHold,
            _ => Mode::Network,
        };
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(match self.mode {
            Mode::Network => ContextType::StreamContext,
            Mode::Http | Mode::HttpHold => ContextType::HttpContext,
        })
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Noop))
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match self.mode {
            Mode::HttpHold => Box::new(Hold),
            _ => Box::new(Noop),
        })
    }
}

/// Every callback keeps its default: continue, untouched.
struct Noop;

impl Context for Noop {}
impl StreamContext for Noop {}
impl HttpContext for Noop {}

/// Holds the response headers until the body is complete, then reads the body
/// and writes it back as it was.
struct Hold;

impl Context for Hold {}

impl HttpContext for Hold {
    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            return Action::Continue;
        }
        self.set_http_response_header("content-length", None);
        Action::Pause
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self
            .get_http_response_body(0, body_size)
            .unwrap_or_default();
        self.set_http_response_body(0, body_size, &body);
        self.set_http_response_header("content-length", Some(&body.len().to_string()));
        Action::Continue
    }
}
