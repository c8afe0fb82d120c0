//! The ground the native build stands on: a gatehouse dynamic module loads into
//! the pinned Envoy 1.40, reports the ABI version Envoy was built with, sees a
//! connection's bytes in both directions, and carries a real pgbench run.

use gatehouse_integration::envoy::{self, Envoy};
use gatehouse_integration::postgres::{PgOptions, Postgres};
use gatehouse_integration::{scratch_dir, tools};
use std::collections::BTreeMap;
use std::process::Command;

/// A listener whose network filter is the pass-through module, before tcp_proxy.
const PASSTHROUGH: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: postgres
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.dynamic_modules
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter
          dynamic_module_config: {name: gatehouse_passthrough}
          filter_name: passthrough
          filter_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: ""}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: passthrough
          cluster: postgres
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: "${ACCESS_LOG}"
              log_format:
                text_format_source:
                  inline_string: "%FILTER_STATE(gatehouse.passthrough:PLAIN)% received=%BYTES_RECEIVED% sent=%BYTES_SENT%\n"
  clusters:
  - name: postgres
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: postgres
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ${PG_UPSTREAM_PORT}}}}
"#;

/// Runs `cmd`; its standard output, or a failed test with both outputs.
fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().expect(what);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_native_passthrough_filter_carries_pgbench_both_ways() {
    tools::native_module("gatehouse_passthrough").expect("module built");
    let dir = scratch_dir("it", "native-passthrough").unwrap();
    let postgres = Postgres::start(&dir.join("postgres"), &PgOptions::default()).unwrap();
    let access_log = dir.join("access.log");
    let vars = BTreeMap::from([
        ("PG_UPSTREAM_PORT", postgres.port.to_string()),
        ("ACCESS_LOG", access_log.display().to_string()),
    ]);
    let envoy_dir = dir.join("envoy");
    std::fs::create_dir_all(&envoy_dir).unwrap();
    let envoy = Envoy::start(&envoy_dir, &envoy::render(PASSTHROUGH, &vars).unwrap()).unwrap();
    let port = envoy.listener_port("postgres").unwrap();

    let log = std::fs::read_to_string(envoy.log_path()).unwrap();
    assert!(
        log.contains("Dynamic module ABI version v0.2.0 matched"),
        "Envoy accepted the module's ABI version:\n{log}"
    );

    let pgbench = tools::pg_client("pgbench").unwrap();
    run(
        "pgbench -i",
        Command::new(&pgbench)
            .args(["-i", "-q", "-s", "1", "-d"])
            .arg(postgres.direct_url("postgres")),
    );
    let out = run(
        "pgbench through the native module",
        Command::new(&pgbench)
            .args(["-n", "-S", "-h", "127.0.0.1", "-U", "postgres", "-c", "4"])
            .args(["-j", "2", "-t", "200", "-M", "prepared", "-p"])
            .arg(port.to_string())
            .arg("postgres"),
    );
    assert!(
        out.contains("number of transactions actually processed: 800/800"),
        "{out}"
    );
    assert!(out.contains("number of failed transactions: 0"), "{out}");

    let from_client = envoy
        .stat("dynamicmodulescustom.passthrough_client_bytes")
        .unwrap();
    let from_server = envoy
        .stat("dynamicmodulescustom.passthrough_server_bytes")
        .unwrap();
    let stats = envoy::http_get(&envoy.admin, "/stats?filter=passthrough")
        .unwrap()
        .1;
    assert!(
        from_client.unwrap_or(0) > 0 && from_server.unwrap_or(0) > 0,
        "the module counted both directions:\n{stats}"
    );

    // Each connection's own count, written at close, matches what Envoy moved.
    drop(envoy);
    let lines = std::fs::read_to_string(&access_log).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    // pgbench's 4 clients, and its own first connection.
    assert!(lines.len() >= 4, "one line per connection:\n{lines:?}");
    for line in lines {
        let words: BTreeMap<&str, u64> = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k, v.parse().unwrap()))
            .collect();
        assert!(words["client"] > 0, "{line}");
        assert_eq!(words["client"], words["received"], "{line}");
        assert_eq!(words["server"], words["sent"], "{line}");
    }
}
