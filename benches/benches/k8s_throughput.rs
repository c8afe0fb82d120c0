//! End-to-end Kubernetes API throughput: kubectl-like GETs (a ~100-pod list as
//! `kubectl get pods` asks for it, a pod and a Secret as `-o yaml` asks for
//! them, and discovery) through
//! Envoy with gatehouse's Kubernetes filter (default policy, masking on),
//! through the same Envoy route with a Wasm filter that does nothing (the
//! floor: what Envoy's Wasm runtime costs alone) and without any filter, in
//! one run against the stand-in API server, printing requests/s and the
//! ratios to the baseline.
//!
//! The listeners are plaintext HTTP/1.1 in one Envoy, identical but for the
//! filter; runs alternate between them so drift on a shared machine hits all.
//! Needs the filter modules built (`cargo xtask build`, or `GATEHOUSE_WASM_DIR`)
//! and Envoy installed. Run with `cargo bench -p gatehouse-benches --bench
//! k8s_throughput`; knobs: `K8S_BENCH_SECONDS` (per run, default 5),
//! `K8S_BENCH_CONNECTIONS` (4), `K8S_BENCH_ROUNDS` (2).

use anyhow::{Result, bail};
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
        "{}{}{}",
        listener("k8s_bench_gatehouse", Filter::Gatehouse)?,
        listener("k8s_bench_noop", Filter::Noop)?,
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
    let (gatehouse, noop, baseline) = (
        addr("k8s_bench_gatehouse")?,
        addr("k8s_bench_noop")?,
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
        // Decided and recorded, but nothing to mask.
        ("discovery /api", get("/api", "application/json")),
    ];
    // Both answer 200, and only the filtered route masks: check once before measuring.
    for (name, request) in &workloads {
        for (target, masked) in [(gatehouse, true), (baseline, false)] {
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

    println!(
        "{connections} keep-alive connections, {rounds} x {seconds} s per mode and request, \
         alternating; Envoy --concurrency 2, HTTP/1.1 plaintext"
    );
    println!(
        "{:<20} {:>12} {:>12} {:>12} {:>15} {:>18}",
        "request",
        "baseline/s",
        "wasm no-op/s",
        "gatehouse/s",
        "no-op/baseline",
        "gatehouse/baseline"
    );
    let duration = Duration::from_secs(seconds);
    for (name, request) in &workloads {
        let (mut without, mut floor, mut with) =
            (Load::default(), Load::default(), Load::default());
        for _ in 0..rounds {
            without.add(http_load::run(baseline, request, connections, duration)?);
            floor.add(http_load::run(noop, request, connections, duration)?);
            with.add(http_load::run(gatehouse, request, connections, duration)?);
        }
        if without.failed + floor.failed + with.failed > 0 {
            bail!(
                "{name}: {} baseline, {} no-op and {} gatehouse requests failed",
                without.failed,
                floor.failed,
                with.failed
            );
        }
        println!(
            "{name:<20} {:>12.0} {:>12.0} {:>12.0} {:>15.3} {:>18.3}",
            without.per_second(),
            floor.per_second(),
            with.per_second(),
            floor.per_second() / without.per_second(),
            with.per_second() / without.per_second()
        );
    }
    Ok(())
}
