//! The gateway carries real clients' traffic through real Envoy with both
//! filters loaded, and reports on it through Envoy's stats and access log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::clients::stdout;
use gatehouse_integration::envoy::{self, Envoy};
use gatehouse_integration::{Stack, StackOptions, scratch_dir, tools};
use std::collections::BTreeMap;

fn stack(name: &str) -> Stack {
    Stack::start("it", name, StackOptions::default()).expect("stack starts")
}

#[test]
fn psql_reads_the_demo_schema_through_envoy() {
    let stack = stack("psql");
    let out = stack
        .psql("app", &["-c", "select count(*) from customers"])
        .unwrap();
    assert_eq!(stdout(&out).trim(), "5000");

    let record = stack
        .wait_for_record("the Postgres connection", |r| r["type"] == "pg.connection")
        .unwrap();
    assert_eq!(
        record["build"],
        gatehouse_core::build::VERSION,
        "filter state reaches the access log"
    );
    assert_eq!(record["filter_chain"], "postgres_plaintext");
    assert_eq!(
        stack.pg_stat("gatehouse_pg_connections_total").unwrap(),
        Some(1)
    );
    let from_client = stack
        .pg_stat("gatehouse_pg_client_bytes_total")
        .unwrap()
        .unwrap();
    let from_server = stack
        .pg_stat("gatehouse_pg_server_bytes_total")
        .unwrap()
        .unwrap();
    assert!(
        from_client > 0 && from_server > 0,
        "filter counted traffic: {from_client} / {from_server}"
    );
    assert_eq!(
        record["bytes_from_client"].as_u64(),
        Some(from_client),
        "the filter saw exactly the bytes Envoy received"
    );
}

#[test]
fn kubectl_versions_list_pods_through_envoy() {
    let stack = stack("kubectl");
    for version in ["1.29", "1.33"] {
        let out = stack.kubectl(version, &["get", "pods", "-A"]).unwrap();
        let text = stdout(&out);
        assert!(
            text.contains("web-0"),
            "kubectl {version} lists pods:\n{text}"
        );
        assert!(
            text.contains("dev") && text.contains("prod"),
            "both namespaces:\n{text}"
        );
    }
    let record = stack
        .wait_for_record("a pod list", |r| {
            r["kind"] == "Event"
                && r["requestURI"]
                    .as_str()
                    .is_some_and(|p| p.contains("/pods"))
        })
        .unwrap();
    assert_eq!(
        record["annotations"]["gatehouse.dev/build"],
        gatehouse_core::build::VERSION
    );
    assert_eq!(record["responseStatus"]["code"], 200);
    let requests = stack
        .k8s_stat("gatehouse_k8s_requests_total")
        .unwrap()
        .unwrap();
    assert!(
        requests >= 4,
        "discovery and lists were counted: {requests}"
    );
}

#[test]
fn envoy_that_will_not_start_fails_fast_with_its_log() {
    let dir = scratch_dir("it", "bad-envoy").unwrap();
    let err = Envoy::start(&dir, "static_resources: {listeners: [{name: x}]}\n")
        .err()
        .expect("a broken bootstrap is refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("exited early"), "{msg}");
    assert!(
        msg.contains("Envoy log tail") || msg.contains("last log lines"),
        "{msg}"
    );
}

#[test]
fn listener_port_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = scratch_dir("it", "port-in-use").unwrap();
    let yaml = format!(
        "static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains: [{{filters: [{{name: envoy.filters.network.tcp_proxy, typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: x, cluster: c}}}}]}}]
  clusters: [{{name: c, type: STATIC, load_assignment: {{cluster_name: c, endpoints: []}}}}]
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
"
    );
    let err = Envoy::start(&dir, &yaml)
        .err()
        .expect("a taken port is refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("ddress already in use") || msg.contains("cannot bind"),
        "{msg}"
    );
}

#[test]
fn shipped_bootstrap_passes_envoy_validation() {
    let dir = scratch_dir("it", "validate").unwrap();
    let modules = tools::filter_modules().unwrap();
    let pki = gatehouse_integration::certs::DemoPki::generate(&dir).unwrap();
    let s = |p: &std::path::Path| p.display().to_string();
    let vars: BTreeMap<&str, String> = [
        ("PG_PORT", "0".to_string()),
        ("PG_TLS_PORT", "0".to_string()),
        ("KUBE_PORT", "0".to_string()),
        ("PG_UPSTREAM_PORT", "5432".to_string()),
        ("KUBE_UPSTREAM_PORT", "6443".to_string()),
        ("IDP_PORT", "8080".to_string()),
        ("PG_WASM", s(&modules.postgres)),
        ("KUBE_WASM", s(&modules.kubernetes)),
        ("PG_CONFIG", envoy::yaml_quote("{}")),
        ("KUBE_CONFIG", envoy::yaml_quote("{}")),
        ("TLS_CERT", s(&pki.server_cert)),
        ("TLS_KEY", s(&pki.server_key)),
        ("ACCESS_LOG", s(&dir.join("access.log"))),
    ]
    .into_iter()
    .collect();
    let template = std::fs::read_to_string(
        gatehouse_integration::workspace_root().join("envoy/gatehouse.yaml"),
    )
    .unwrap();
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, envoy::render(&template, &vars).unwrap()).unwrap();
    envoy::validate(&config).unwrap();
}
