//! End-to-end Kubernetes API throughput: kubectl-like GETs (a ~100-pod list as
//! `kubectl get pods` asks for it, a pod, a Secret and a ConfigMap as `-o
//! yaml` asks for them, and discovery) through
//! Envoy with gatehouse's Kubernetes filter (default policy, masking on), and
//! through the same Envoy route without any filter (the baseline), with a
//! Wasm filter that does nothing (what Envoy's Wasm runtime costs alone) and
//! with one that only holds each response whole and writes it back (what
//! holding a body for masking costs before any masking), with the native
//! build's pass-through HTTP filter alone and holding each response (the
//! dynamic-module floor) and gatehouse's Kubernetes filter as the native
//! build (`libgatehouse.so`, column "native gh"), in one run against
//! the stand-in API server. Prints requests/s and their ratios to the
//! baseline, and the CPU each request cost Envoy and the whole machine, which
//! is steadier than requests/s on a shared machine.
//!
//! The listeners are plaintext HTTP/1.1 in one Envoy, identical but for the
//! filter; runs alternate between them so drift on a shared machine hits all.
//! Needs the filter modules built (`cargo xtask build`, or `GATEHOUSE_WASM_DIR`)
//! and Envoy installed. Run with `cargo bench -p gatehouse-benches --bench
//! k8s_throughput`; knobs: `K8S_BENCH_SECONDS` (per run, default 5),
//! `K8S_BENCH_CONNECTIONS` (4), `K8S_BENCH_ROUNDS` (2), `K8S_BENCH_ONLY` (only
//! the requests whose name contains it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use anyhow::{Result, bail};
use gatehouse_benches::cpu::Usage;
use gatehouse_benches::http_load::{self, Connection, Load};
use gatehouse_benches::pgbench::{self, env_or, skipped};
use gatehouse_integration::{Stack, StackOptions, tools};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

/// Pods in the listed namespace (the demo seeds one).
const PODS: usize = 100;
const NAMESPACE: &str = "dev";
/// What `kubectl get` asks for.
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// The HTTP filter a bench listener runs in front of the router.
enum Filter {
    None,
    /// gatehouse's Kubernetes filter with the default policy.
    Gatehouse,
    /// A Wasm filter that does nothing: what Envoy's Wasm runtime costs alone.
    Noop,
    /// A Wasm filter that holds each response whole and writes it back.
    Hold,
    /// The native pass-through HTTP filter (`gatehouse_passthrough`): what a
    /// dynamic module costs alone.
    NativePassthrough,
    /// The same, holding each response whole and writing it back.
    NativeHold,
    /// gatehouse's Kubernetes filter, native build (`libgatehouse.so`).
    NativeGatehouse,
}

/// The native pass-through HTTP filter with `config`.
fn native(config: &str) -> Result<String> {
    native_filter("gatehouse_passthrough", "http_passthrough", config)
}

/// HTTP filter `filter` of native module `module`, with `config`.
fn native_filter(module: &str, filter: &str, config: &str) -> Result<String> {
    tools::native_module(module)?;
    Ok(format!(
        r#"          - name: envoy.filters.http.dynamic_modules
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {{name: {module}}}
              filter_name: {filter}
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: {}
"#,
        gatehouse_integration::envoy::yaml_quote(config)
    ))
}

/// A plaintext HTTP listener routing to the stand-in API server, with `filter`.
fn listener(name: &str, filter: Filter) -> Result<String> {
    let wasm = |root_id: &str, config: &str, module: &std::path::Path| {
        format!(
            r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {root_id}
                root_id: {root_id}
                failure_policy: FAIL_RELOAD
                allow_on_headers_stop_iteration: true
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {}
                vm_config:
                  vm_id: {root_id}
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: "{}"}}}}
"#,
            gatehouse_integration::envoy::yaml_quote(config),
            module.display()
        )
    };
    let filter = match filter {
        Filter::None => String::new(),
        Filter::Gatehouse => wasm(
            "gatehouse_kubernetes",
            &gatehouse_integration::stack::default_kubernetes_filter_config().to_string(),
            &tools::filter_modules()?.kubernetes,
        ),
        Filter::Noop => wasm("bench_noop", "http", &pgbench::noop_module()?),
        Filter::Hold => wasm("bench_hold", "http-hold", &pgbench::noop_module()?),
        Filter::NativePassthrough => native(r#"{}"#)?,
        Filter::NativeHold => native(r#"{"hold_responses": true}"#)?,
        Filter::NativeGatehouse => native_filter(
            "gatehouse",
            "kubernetes",
            &json!({"filter": gatehouse_integration::stack::default_kubernetes_filter_config()})
                .to_string(),
        )?,
    };
    Ok(format!(
        r#"  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          route_config:
            virtual_hosts:
            - name: kubernetes
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: kube_apiserver, timeout: 0s}}
          http_filters:
{filter}          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    ))
}

/// Creates the pods to list, through the listener without the filter.
fn seed_pods(baseline: SocketAddr, token: &str) -> Result<()> {
    let mut connection = Connection::open(baseline)?;
    let authorization = format!("Bearer {token}");
    for i in 1..PODS {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("web-{i}"), "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27",
                "env": [{"name": "DB_USER", "value": "app"},
                        {"name": "DB_PASSWORD", "value": "dev-Passw0rd!"}]}]}});
        let request = http_load::request(
            "POST",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
            &[
                ("Authorization", &authorization),
                ("Content-Type", "application/json"),
            ],
            pod.to_string().as_bytes(),
        );
        let (status, body) = connection.exchange(&request)?;
        if status != 201 {
            bail!(
                "creating pod {i}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    if skipped("k8s_throughput") {
        return Ok(());
    }
    let seconds: u64 = env_or("K8S_BENCH_SECONDS", "5").parse()?;
    let connections: usize = env_or("K8S_BENCH_CONNECTIONS", "4").parse()?;
    let rounds: usize = env_or("K8S_BENCH_ROUNDS", "2").parse()?;
    let listeners = format!(
        "{}{}{}{}{}{}{}",
        listener("k8s_bench_gatehouse", Filter::Gatehouse)?,
        listener("k8s_bench_native_gatehouse", Filter::NativeGatehouse)?,
        listener("k8s_bench_noop", Filter::Noop)?,
        listener("k8s_bench_hold", Filter::Hold)?,
        listener("k8s_bench_native", Filter::NativePassthrough)?,
        listener("k8s_bench_native_hold", Filter::NativeHold)?,
        listener("k8s_bench_baseline", Filter::None)?
    );
    let stack = Stack::start(
        "bench",
        "k8s_throughput",
        StackOptions {
            extra_listeners: Some(listeners),
            ..StackOptions::default()
        },
    )?;
    let addr = |name: &str| -> Result<SocketAddr> {
        Ok(SocketAddr::from((
            [127, 0, 0, 1],
            stack.envoy.listener_port(name)?,
        )))
    };
    let (gatehouse, native_gatehouse, noop, hold, native, native_hold, baseline) = (
        addr("k8s_bench_gatehouse")?,
        addr("k8s_bench_native_gatehouse")?,
        addr("k8s_bench_noop")?,
        addr("k8s_bench_hold")?,
        addr("k8s_bench_native")?,
        addr("k8s_bench_native_hold")?,
        addr("k8s_bench_baseline")?,
    );
    let token = stack.token("developer")?;
    seed_pods(baseline, &token)?;

    let authorization = format!("Bearer {token}");
    let get = |path: &str, accept: &str| {
        http_load::request(
            "GET",
            path,
            &[
                ("Authorization", &authorization),
                ("Accept", accept),
                (
                    "User-Agent",
                    "kubectl/v1.33.0 (linux/amd64) kubernetes/bench",
                ),
                ("Accept-Encoding", "gzip"),
            ],
            b"",
        )
    };
    let workloads = [
        (
            "list pods (table)",
            get(
                &format!("/api/v1/namespaces/{NAMESPACE}/pods?limit=500"),
                TABLE_ACCEPT,
            ),
        ),
        (
            "get pod (json)",
            get(
                &format!("/api/v1/namespaces/{NAMESPACE}/pods/web-0"),
                "application/json",
            ),
        ),
        (
            "get secret (json)",
            get(
                "/api/v1/namespaces/prod/secrets/db-credentials",
                "application/json",
            ),
        ),
        // Every resource answer is read for objects to mask; this one has none.
        (
            "read configmap",
            get(
                &format!("/api/v1/namespaces/{NAMESPACE}/configmaps/app-config"),
                "application/json",
            ),
        ),
        // Decided and recorded, but nothing to mask.
        ("discovery /api", get("/api", "application/json")),
    ];
    let only = env_or("K8S_BENCH_ONLY", "");
    let workloads: Vec<_> = workloads
        .into_iter()
        .filter(|(name, _)| name.contains(only.as_str()))
        .collect();
    // Both answer 200, and only the filtered route masks: check once before measuring.
    for (name, request) in &workloads {
        for (target, masked) in [
            (gatehouse, true),
            (native_gatehouse, true),
            (baseline, false),
        ] {
            let (status, body) = Connection::open(target)?.exchange(request)?;
            let body = String::from_utf8_lossy(&body);
            if status != 200 {
                bail!("{name} via {target}: {status} {body}");
            }
            let clear = ["dev-Passw0rd!", "cHIwZC1TM2NyZXQh"]
                .iter()
                .any(|secret| body.contains(secret));
            if name.starts_with("get ") && clear == masked {
                bail!("{name} via {target}: expected masked={masked}: {body}");
            }
        }
    }

    let modes = [
        ("baseline", baseline),
        ("wasm no-op", noop),
        ("hold body", hold),
        ("native no-op", native),
        ("native hold", native_hold),
        ("gatehouse", gatehouse),
        ("native gatehouse", native_gatehouse),
    ];
    println!(
        "{connections} keep-alive connections, {rounds} x {seconds} s per mode and request, \
         alternating; Envoy --concurrency 2, HTTP/1.1 plaintext"
    );
    println!(
        "{:<20} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}   (ratios to the baseline's requests/s)",
        "request",
        "baseline/s",
        "no-op",
        "hold body",
        "native no-op",
        "native hold",
        "gatehouse",
        "native gh"
    );
    let duration = Duration::from_secs(seconds);
    let envoy = stack.envoy.pid();
    let mut costs = Vec::new();
    for (name, request) in &workloads {
        // Requests and CPU per mode, in the order of `modes`.
        let mut measured = [(Load::default(), Usage::default()); 7];
        for _ in 0..rounds {
            for ((_, target), (load, usage)) in modes.iter().zip(&mut measured) {
                let before = Usage::now(envoy);
                load.add(http_load::run(*target, request, connections, duration)?);
                usage.add(Usage::now(envoy).since(&before));
            }
        }
        let failed: Vec<String> = modes
            .iter()
            .zip(&measured)
            .filter(|(_, (load, _))| load.failed > 0)
            .map(|((mode, _), (load, _))| format!("{} {mode}", load.failed))
            .collect();
        if !failed.is_empty() {
            bail!("{name}: requests failed: {}", failed.join(", "));
        }
        let rate = measured.map(|(load, _)| load.per_second());
        println!(
            "{name:<20} {:>12.0} {:>12.3} {:>12.3} {:>12.3} {:>12.3} {:>12.3} {:>12.3}",
            rate[0],
            rate[1] / rate[0],
            rate[2] / rate[0],
            rate[3] / rate[0],
            rate[4] / rate[0],
            rate[5] / rate[0],
            rate[6] / rate[0]
        );
        costs.push((name, measured));
    }
    println!("\nCPU per request in µs, Envoy / whole machine:");
    println!(
        "{:<20} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14}",
        "request",
        "baseline",
        "no-op",
        "hold body",
        "native no-op",
        "native hold",
        "gatehouse",
        "native gh"
    );
    for (name, measured) in costs {
        let cell = |(load, usage): &(Load, Usage)| {
            format!(
                "{:.0} / {:.0}",
                usage.proxy_micros_per(load.ok),
                usage.machine_micros_per(load.ok)
            )
        };
        println!(
            "{name:<20} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14}",
            cell(&measured[0]),
            cell(&measured[1]),
            cell(&measured[2]),
            cell(&measured[3]),
            cell(&measured[4]),
            cell(&measured[5]),
            cell(&measured[6])
        );
    }
    Ok(())
}
