//! The native build: a gatehouse dynamic module loads into the pinned Envoy
//! 1.40, reports the ABI version Envoy was built with, sees a connection's
//! bytes in both directions and carries a real pgbench run; and the native
//! Postgres filter gives TLS to clients that ask for it with an SSLRequest,
//! which the Wasm build cannot; and an HTTP filter of the same module carries
//! real kubectl to the stand-in API server, answers locally and calls out.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::clients::{self, stdout};
use gatehouse_integration::envoy::{self, Envoy};
use gatehouse_integration::postgres::{PgOptions, Postgres};
use gatehouse_integration::stack::demo_postgres_filter_config;
use gatehouse_integration::tools::Build;
use gatehouse_integration::{Stack, StackOptions, scratch_dir, tools};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

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
          filter_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: ${PASSTHROUGH_CONFIG}}
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
        ("PASSTHROUGH_CONFIG", "\"\"".to_string()),
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

/// The demo gateway on the native build, with token login, policy and masking.
fn native_stack(name: &str) -> Stack {
    let options = StackOptions {
        build: Some(Build::Native),
        postgres_filter: demo_postgres_filter_config(),
        ..StackOptions::default()
    };
    Stack::start("it", name, options).expect("stack starts")
}

/// The pg.connection line of the connection a record (`session`) is about.
fn connection_line(stack: &Stack, session: &serde_json::Value) -> serde_json::Value {
    let id = &session["connection_id"];
    stack
        .wait_for_record("the connection's line", |r| {
            r["type"] == "pg.connection" && r["connection_id"] == *id
        })
        .unwrap()
}

const JDBC_TLS_PROGRAM: &str = r#"
import java.sql.*;
public class JdbcTls {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], "app", args[1]);
             Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("select 'jdbc over tls', current_user")) {
            rs.next();
            if (!"app".equals(rs.getString(2))) throw new AssertionError(rs.getString(2));
        }
        System.out.println("ok");
    }
}
"#;

#[test]
fn ssl_request_clients_get_tls_from_the_native_filter_and_their_token_never_travels_in_clear() {
    let stack = native_stack("native-tls");
    let token = stack.token("developer").unwrap();

    // psql 15 (libpq 15: SSLRequest, then the handshake on the same connection).
    let out = Command::new(tools::pg_client("psql").unwrap())
        .args(["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!("{}?user=app&sslmode=require", stack.pg_url()))
        .args([
            "-c",
            "select 'psql over tls', current_user",
            "-c",
            "\\conninfo",
        ])
        .env("PGPASSWORD", &token)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "psql: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("psql over tls|app"), "{text}");
    assert!(text.contains("SSL connection (protocol: TLSv1."), "{text}");

    // JDBC with sslmode=require asks the same way.
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/shop?sslmode=require",
        stack.pg_port
    );
    clients::jdbc(&stack, "JdbcTls", JDBC_TLS_PROGRAM, &[&url, &token]);

    // Both sessions logged in with the token, over TLS, on the SSLRequest chain.
    for client in ["psql over tls", "jdbc over tls"] {
        let statement = stack
            .wait_for_record(client, |r| {
                r["type"] == "pg.statement"
                    && r["statement"].as_str().is_some_and(|t| t.contains(client))
            })
            .unwrap();
        assert_eq!(statement["identity"]["subject"], "developer", "{statement}");
        let line = connection_line(&stack, &statement);
        assert_eq!(line["filter_chain"], "postgres_plaintext", "{line}");
        assert!(
            line["tls"]
                .as_str()
                .is_some_and(|v| v.starts_with("TLSv1.")),
            "{client}: {line}"
        );
    }
}

#[test]
fn bytes_smuggled_behind_an_ssl_request_never_reach_the_server() {
    let stack = native_stack("native-tls-smuggle");
    // A plaintext query pipelined behind the SSLRequest, as an attacker on the
    // path would inject it before the handshake.
    let mut payload = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let query = b"select 'smuggled behind sslrequest'\0";
    payload.push(b'Q');
    payload.extend_from_slice(&((query.len() + 4) as u32).to_be_bytes());
    payload.extend_from_slice(query);
    let mut socket = TcpStream::connect(("127.0.0.1", stack.pg_port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.write_all(&payload).unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    assert!(answer.is_empty(), "no answer, not even 'S': {answer:?}");

    // A well-behaved client on the same gateway still gets TLS.
    let out = Command::new(tools::pg_client("psql").unwrap())
        .args(["-X", "-w", "-At", "-d"])
        .arg(format!("{}?user=app&sslmode=require", stack.pg_url()))
        .args(["-c", "select 1"])
        .env("PGPASSWORD", stack.token("developer").unwrap())
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "1");
    let server_log = std::fs::read_to_string(stack.postgres.log_path()).unwrap();
    assert!(!server_log.contains("smuggled"), "{server_log}");
}

#[test]
fn a_panic_in_a_native_filter_ends_only_its_own_connection() {
    tools::native_module("gatehouse_passthrough").expect("module built");
    let dir = scratch_dir("it", "native-panic").unwrap();
    let postgres = Postgres::start(&dir.join("postgres"), &PgOptions::default()).unwrap();
    let vars = BTreeMap::from([
        ("PG_UPSTREAM_PORT", postgres.port.to_string()),
        ("ACCESS_LOG", dir.join("access.log").display().to_string()),
        (
            "PASSTHROUGH_CONFIG",
            envoy::yaml_quote(r#"{"panic_on": "trip the module"}"#),
        ),
    ]);
    let envoy_dir = dir.join("envoy");
    std::fs::create_dir_all(&envoy_dir).unwrap();
    let envoy = Envoy::start(&envoy_dir, &envoy::render(PASSTHROUGH, &vars).unwrap()).unwrap();
    let port = envoy.listener_port("postgres").unwrap();
    let psql = |sql: &str| {
        Command::new(tools::pg_client("psql").unwrap())
            .args(["-X", "-At", "-d"])
            .arg(format!(
                "postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
            ))
            .args(["-c", sql])
            .output()
            .unwrap()
    };

    // A session that stays open across the panic on another connection.
    let mut bystander = Command::new(tools::pg_client("psql").unwrap())
        .args(["-X", "-At", "-d"])
        .arg(format!(
            "postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = bystander.stdin.take().unwrap();
    writeln!(input, "select 'before';").unwrap();

    let tripped = psql("select 'trip the module'");
    assert!(!tripped.status.success(), "the panicking connection ends");
    assert!(
        String::from_utf8_lossy(&tripped.stderr).contains("server closed the connection"),
        "{}",
        String::from_utf8_lossy(&tripped.stderr)
    );

    writeln!(input, "select 'after';").unwrap();
    drop(input);
    let bystander = bystander.wait_with_output().unwrap();
    assert_eq!(
        stdout(&bystander),
        "before\nafter\n",
        "the other session went on"
    );
    assert_eq!(
        stdout(&psql("select 'new connection'")).trim(),
        "new connection"
    );
    let log = std::fs::read_to_string(envoy.log_path()).unwrap();
    assert!(
        log.contains("a panic in network_filter_read was caught at the module boundary"),
        "{log}"
    );
}

#[test]
fn the_native_writer_holds_records_while_the_sink_fails_and_delivers_them_in_order() {
    let options = StackOptions {
        build: Some(Build::Native),
        ..StackOptions::default()
    };
    let stack = Stack::start("it", "native-records", options).expect("stack starts");
    let drill = |percent: u32| {
        let path = format!("/runtime_modify?gatehouse.records.drill_abort_percent={percent}");
        assert_eq!(envoy::http_post(&stack.envoy.admin, &path).unwrap(), 200);
    };
    drill(100);
    let statements: Vec<String> = (1..=20).map(|n| format!("select 'held {n}'")).collect();
    let mut args = Vec::new();
    for statement in &statements {
        args.extend(["-c", statement.as_str()]);
    }
    let out = stack.psql("app", &args).unwrap();
    assert!(out.status.success(), "{out:?}");
    let held = |stack: &Stack| -> Vec<String> {
        stack
            .access_log_records()
            .unwrap()
            .into_iter()
            .filter(|r| r["type"] == "pg.statement")
            .filter_map(|r| r["statement"].as_str().map(str::to_owned))
            .filter(|s| s.contains("held "))
            .collect()
    };
    // The writer retries with a backoff; the sink refuses every batch.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        held(&stack).is_empty(),
        "nothing is logged while the sink fails"
    );

    drill(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = held(&stack);
    while seen.len() < statements.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        seen = held(&stack);
    }
    assert_eq!(seen, statements, "every record, once, in order");
}

/// An HTTP listener whose filter is the module's HTTP pass-through, before
/// the router, in front of the stand-in Kubernetes API server.
const HTTP_PASSTHROUGH: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: kubernetes
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: kubernetes
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: "${ACCESS_LOG}"
              log_format:
                text_format_source:
                  inline_string: "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %FILTER_STATE(gatehouse.http_passthrough:PLAIN)% received=%BYTES_RECEIVED% sent=%BYTES_SENT%\n"
          route_config:
            virtual_hosts:
            - name: kube
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: kube, timeout: 0s}
          http_filters:
          - name: envoy.filters.http.dynamic_modules
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {name: gatehouse_passthrough}
              filter_name: http_passthrough
              filter_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: '{"callout_cluster": "kube"}'}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: kube
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: kube
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ${KUBE_UPSTREAM_PORT}}}}
"#;

/// One HTTP/1.1 request on its own connection: the status, the response's
/// head (lowercase) and its body.
fn raw_request(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: kube\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = socket.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn a_native_http_filter_carries_kubectl_answers_locally_and_calls_out() {
    tools::native_module("gatehouse_passthrough").expect("module built");
    let dir = scratch_dir("it", "native-http-passthrough").unwrap();
    let standin = kube_standin::StandIn::start_demo().unwrap();
    let access_log = dir.join("access.log");
    let vars = BTreeMap::from([
        ("KUBE_UPSTREAM_PORT", standin.addr().port().to_string()),
        ("ACCESS_LOG", access_log.display().to_string()),
    ]);
    let envoy_dir = dir.join("envoy");
    std::fs::create_dir_all(&envoy_dir).unwrap();
    let envoy = Envoy::start(&envoy_dir, &envoy::render(HTTP_PASSTHROUGH, &vars).unwrap()).unwrap();
    let port = envoy.listener_port("kubernetes").unwrap();
    let cache = dir.join("kube-cache");
    let kubectl = |args: &[&str]| {
        run(
            &format!("kubectl {args:?}"),
            Command::new(tools::kubectl(Some("1.33")).unwrap())
                .arg("--kubeconfig=/dev/null")
                .arg(format!("--cache-dir={}", cache.display()))
                .arg(format!("--server=http://127.0.0.1:{port}"))
                .args(args),
        )
    };

    // Real kubectl reads through the filter.
    assert!(kubectl(&["get", "pods", "-n", "dev"]).contains("web-0"));
    let password = kubectl(&[
        "get",
        "secret",
        "db-credentials",
        "-n",
        "prod",
        "-o",
        "jsonpath={.data.password}",
    ]);
    assert!(!password.is_empty());

    // A request body larger than one read, buffered whole by the filter, then
    // passed on intact: what the server stored is what kubectl sent.
    let blob: String = (0..60_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    kubectl(&[
        "create",
        "secret",
        "generic",
        "bulky",
        "-n",
        "dev",
        &format!("--from-literal=blob={blob}"),
    ]);
    let manifest = dir.join("configmap.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: flags, namespace: dev}\ndata: {beta: 'on'}\n",
    )
    .unwrap();
    assert!(kubectl(&["apply", "-f", manifest.to_str().unwrap()]).contains("configmap/flags"));
    let stored = kubectl(&[
        "get",
        "secret",
        "bulky",
        "-n",
        "dev",
        "-o",
        "jsonpath={.data.blob}",
    ]);
    let decoded = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(stored.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(decoded.stdout == blob.as_bytes(), "the body arrived intact");
    assert_eq!(
        kubectl(&[
            "get",
            "cm",
            "flags",
            "-n",
            "dev",
            "-o",
            "jsonpath={.data.beta}"
        ]),
        "on"
    );

    // The server saw the header the filter set (the body's length, which the
    // filter read from Envoy's buffers) and not the one it removed.
    let seen = standin.requests();
    let create = seen
        .iter()
        .find(|r| r.method == "POST" && r.uri.starts_with("/api/v1/namespaces/dev/secrets"))
        .expect("the create reached the server");
    assert_eq!(
        create.header("x-gatehouse-passthrough"),
        create.header("content-length"),
        "{create:?}"
    );
    assert!(
        create
            .header("content-length")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n > blob.len())
    );
    let (status, head, _) = raw_request(
        port,
        "/version",
        &[("x-gatehouse-strip", "secret"), ("x-kept", "yes")],
    );
    assert_eq!(status, 200);
    assert!(head.contains("x-gatehouse-passthrough: seen"), "{head}");
    let version = standin.requests().into_iter().last().unwrap();
    assert_eq!(version.uri, "/version");
    assert_eq!(version.header("x-kept"), Some("yes"));
    assert_eq!(version.header("x-gatehouse-strip"), None, "{version:?}");

    // A local reply: the request never reaches the server.
    let before = standin.requests().len();
    let (status, head, body) = raw_request(
        port,
        "/probe/local",
        &[("x-gatehouse-probe", "local-reply")],
    );
    assert_eq!((status, body.as_str()), (418, "answered by the module\n"));
    assert!(head.contains("x-gatehouse-probe: answered"), "{head}");
    // A callout from the filter to the server, answered with what it got.
    let (status, head, body) =
        raw_request(port, "/probe/callout", &[("x-gatehouse-probe", "callout")]);
    assert_eq!(status, 200, "{head}{body}");
    assert!(head.contains("x-callout-status: 200"), "{head}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("the server's /version");
    assert!(answer["gitVersion"].is_string(), "{answer}");
    let after: Vec<_> = standin.requests().into_iter().skip(before).collect();
    assert_eq!(
        after.len(),
        1,
        "only the callout reached the server: {after:?}"
    );
    assert_eq!(after[0].uri, "/version");

    // A response held whole and replaced, with its length: what masking does.
    let (_, _, original) = raw_request(port, "/version", &[]);
    let (status, head, body) = raw_request(port, "/version", &[("x-gatehouse-probe", "rewrite")]);
    assert_eq!(status, 200, "{head}{body}");
    assert_eq!(body, format!("{{\"rewritten\": {original}}}"));
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    let rewritten: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        rewritten["rewritten"]["gitVersion"].is_string(),
        "{rewritten}"
    );

    // A reset from the filter: no answer at all, and nothing upstream.
    let before = standin.requests().len();
    let (status, head, body) = raw_request(port, "/probe/reset", &[("x-gatehouse-probe", "reset")]);
    assert_eq!(status, 0, "{head}{body}");
    assert_eq!(standin.requests().len(), before);

    // A panic in the filter: answered 500 at the boundary; Envoy serves on.
    let (status, _, body) = raw_request(port, "/probe/panic", &[("x-gatehouse-probe", "panic")]);
    assert_eq!(
        (status, body.as_str()),
        (500, "gatehouse: internal error\n")
    );
    assert!(kubectl(&["get", "pods", "-n", "dev"]).contains("web-0"));
    let log = std::fs::read_to_string(envoy.log_path()).unwrap();
    assert!(
        log.contains("a panic in http_filter_request_headers was caught at the module boundary"),
        "{log}"
    );

    let request_bytes = envoy
        .stat("dynamicmodulescustom.http_passthrough_request_bytes")
        .unwrap();
    let stats = envoy::http_get(&envoy.admin, "/stats?filter=passthrough")
        .unwrap()
        .1;
    assert!(
        request_bytes.is_some_and(|n| n as usize > blob.len()),
        "the module counted the request bodies:\n{stats}"
    );

    // A labelled family: Envoy makes a stat per method counted.
    let prometheus = envoy::http_get(&envoy.admin, "/stats/prometheus")
        .unwrap()
        .1;
    let by_method = |method: &str| {
        let series = format!("http_passthrough_requests{{method=\"{method}\"}} ");
        prometheus
            .lines()
            .find_map(|line| line.split_once(&series).map(|(_, n)| n.trim().to_owned()))
            .and_then(|n| n.parse::<u64>().ok())
    };
    assert_eq!(by_method("POST"), Some(2), "{prometheus}");
    assert!(by_method("GET").is_some_and(|n| n >= 10), "{prometheus}");

    // Every stream reached the filter's end-of-stream hook, the ones it
    // answered or reset itself included (Envoy ends those inside the hook),
    // but for the one whose filter panicked: that filter is inert.
    let completed = envoy
        .stat("dynamicmodulescustom.http_passthrough_streams_completed")
        .unwrap();

    // Every proxied exchange: the filter's own count of both bodies, set as
    // filter state at the end of the stream, matches what Envoy moved.
    drop(envoy);
    let lines = std::fs::read_to_string(&access_log).unwrap();
    let streams = lines.lines().count() as u64;
    assert_eq!(completed, Some(streams - 1), "{lines}");
    let proxied: Vec<&str> = lines.lines().filter(|l| !l.contains("/probe/")).collect();
    assert!(proxied.len() >= 6, "{lines}");
    for line in proxied {
        let words: BTreeMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .collect();
        assert_eq!(words["request"], words["received"], "{line}");
        assert_eq!(words["response"], words["sent"], "{line}");
        assert!(words["source"].starts_with("127.0.0.1:"), "{line}");
    }
}
