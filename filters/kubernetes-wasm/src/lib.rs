//! proxy-wasm glue for gatehouse's Kubernetes HTTP filter.
//!
//! Maps Envoy's HTTP-filter callbacks onto `gatehouse-kubernetes` and applies
//! what it returns. It makes no decisions.

use gatehouse_host as host;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        host::log(LogLevel::Critical, &format!("gatehouse kubernetes filter panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(KubernetesRoot::default()) });
}}

#[derive(Default, Clone, Copy)]
struct Metrics {
    requests: Option<u32>,
}

#[derive(Default)]
struct KubernetesRoot {
    metrics: Metrics,
}

impl Context for KubernetesRoot {}

impl RootContext for KubernetesRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        self.metrics = Metrics {
            requests: host::define_metric(
                host::MetricType::Counter,
                "gatehouse_k8s_requests_total",
            )
            .ok(),
        };
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(KubernetesRequest {
            metrics: self.metrics,
        }))
    }
}

struct KubernetesRequest {
    metrics: Metrics,
}

impl Context for KubernetesRequest {}

impl HttpContext for KubernetesRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(id) = self.metrics.requests {
            let _ = host::increment_metric(id, 1);
        }
        let _ = host::set_property(
            &["gatehouse_build"],
            gatehouse_core::build::VERSION.as_bytes(),
        );
        Action::Continue
    }
}
