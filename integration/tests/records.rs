//! The record path with real Envoy: producers enqueue records on the audit
//! service's queue, the service delivers each one to the record listener, and
//! the access log holds one JSON line per record.
//!
//! A test-only producer module (integration/record-producer) emits numbered
//! records through `gatehouse_host::records::emit`, the same call the filters use.

use gatehouse_integration::envoy::http_get;
use gatehouse_integration::stack::{Stack, StackOptions};
use gatehouse_integration::tools;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn producer_listener() -> String {
    let module = tools::filter_modules().unwrap().record_producer();
    format!(
        r#"  - name: test_record_producer
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: test_record_producer
          route_config:
            virtual_hosts:
            - name: produce
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, direct_response: {{status: 404}}}}]
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: test_record_producer
                root_id: test_record_producer
                vm_config:
                  vm_id: test_record_producer
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: "{}"}}}}
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#,
        module.display()
    )
}

fn start(name: &str, audit_service: Option<Value>) -> (Stack, String) {
    let stack = Stack::start(
        "it",
        name,
        StackOptions {
            audit_service,
            extra_listeners: Some(producer_listener()),
            ..StackOptions::default()
        },
    )
    .unwrap();
    let port = stack.envoy.listener_port("test_record_producer").unwrap();
    (stack, format!("127.0.0.1:{port}"))
}

/// Asks the producer for `count` records of `session`.
fn produce(producer: &str, session: &str, count: u64) {
    let (code, body) = http_get(
        producer,
        &format!("/produce?session={session}&count={count}&pad=100"),
    )
    .unwrap();
    assert_eq!((code, body.trim()), (200, count.to_string().as_str()));
}

fn test_records(stack: &Stack, session: &str) -> Vec<u64> {
    stack
        .access_log_records()
        .unwrap()
        .into_iter()
        .filter(|r| r["type"] == "test.record" && r["session"] == session)
        .map(|r| r["sequence"].as_u64().unwrap())
        .collect()
}

fn wait_for_records(stack: &Stack, session: &str, count: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = test_records(stack, session);
        if seen.len() >= count || Instant::now() > deadline {
            return seen;
        }
    }
}

fn stat(stack: &Stack, name: &str) -> u64 {
    stack.envoy.stat(name).unwrap().unwrap_or(0)
}

fn admin_post(stack: &Stack, path: &str) {
    let mut s = TcpStream::connect(&stack.envoy.admin).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn a_thousand_records_arrive_as_a_thousand_lines_in_order() {
    let (stack, producer) = start("records-order", None);
    produce(&producer, "order", 1000);
    let seen = wait_for_records(&stack, "order", 1000);
    assert_eq!(seen, (1..=1000).collect::<Vec<_>>());
    assert!(stat(&stack, "wasmcustom.gatehouse_records_produced") >= 1000);
    assert!(stat(&stack, "wasmcustom.gatehouse_records_delivered") >= 1000);
    assert_eq!(stat(&stack, "wasmcustom.gatehouse_records_dropped"), 0);
}

#[test]
fn records_held_while_the_sink_fails_all_arrive_after_it_recovers() {
    let (stack, producer) = start("records-stall", None);
    admin_post(
        &stack,
        "/runtime_modify?gatehouse.records.drill_abort_percent=100",
    );
    produce(&producer, "stall", 300);
    let deadline = Instant::now() + Duration::from_secs(20);
    while stat(&stack, "wasmcustom.gatehouse_records_retried") < 3 {
        assert!(Instant::now() < deadline, "the service never retried");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        test_records(&stack, "stall").is_empty(),
        "nothing is logged while the sink fails"
    );
    admin_post(
        &stack,
        "/runtime_modify?gatehouse.records.drill_abort_percent=0",
    );
    let mut seen = wait_for_records(&stack, "stall", 300);
    seen.sort_unstable();
    assert_eq!(seen, (1..=300).collect::<Vec<_>>(), "every record, once");
    assert_eq!(stat(&stack, "wasmcustom.gatehouse_records_dropped"), 0);
}

#[test]
fn a_burst_over_the_bound_is_counted_and_recorded() {
    let (stack, producer) = start(
        "records-burst",
        Some(json!({"role": "service", "cluster": "gatehouse_records", "max_buffer": 100})),
    );
    // One producer callback enqueues all of them before the service drains any.
    produce(&producer, "burst", 3000);
    let notice = stack
        .wait_for_record("a records_dropped notice", |r| {
            r["type"] == "gatehouse.records_dropped"
        })
        .unwrap();
    let dropped_in_notice = notice["dropped"].as_u64().unwrap();
    assert!(dropped_in_notice > 0);
    assert_eq!(notice["schema"], 1);
    let dropped = stat(&stack, "wasmcustom.gatehouse_records_dropped");
    assert_eq!(dropped, dropped_in_notice);
    let delivered = wait_for_records(&stack, "burst", (3000 - dropped) as usize);
    assert_eq!(
        delivered.len() as u64 + dropped,
        3000,
        "each record is either logged or counted"
    );
    // Drops take the newest; what arrived is still in order.
    assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{delivered:?}");
}
