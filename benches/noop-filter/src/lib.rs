//! A Wasm filter that does nothing, for the end-to-end benches' floor column.
//!
//! Envoy pays for a Wasm filter before the filter does any work: a call into
//! the VM per data or header callback, and the context bookkeeping around it.
//! Loaded in place of a gatehouse module (same bootstrap, same position in the
//! chain), this module measures that fixed price, so a bench can tell how much
//! of gatehouse's distance from plain Envoy is its own work.
//!
//! The plugin configuration names the context type: `http` for an HTTP
//! filter, anything else for a network filter.

use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot::default()) });
}}

#[derive(Default)]
struct NoopRoot {
    http: bool,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        self.http = self
            .get_plugin_configuration()
            .is_some_and(|config| config.trim_ascii() == b"http");
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(if self.http {
            ContextType::HttpContext
        } else {
            ContextType::StreamContext
        })
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Noop))
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }
}

/// Every callback keeps its default: continue, untouched.
struct Noop;

impl Context for Noop {}
impl StreamContext for Noop {}
impl HttpContext for Noop {}
