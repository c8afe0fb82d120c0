//! The record path with real Envoy: producers enqueue records on the audit
//! service's queue, the service delivers them in batches to the record
//! listener, and the access log holds one JSON line per record.
//!
//! A test-only producer module (integration/record-producer) emits numbered
//! records through `gatehouse_host::records::emit`, the same call the filters use.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::envoy::{self, http_get};
use gatehouse_integration::stack::{Stack, StackOptions};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn start(name: &str, audit_service: Option<Value>) -> (Stack, String) {
    let stack = Stack::start(
        "it",
        name,
        StackOptions {
            audit_service,
            extra_listeners: Some(envoy::record_producer_listener().unwrap()),
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
    let status = gatehouse_integration::envoy::http_post(&stack.envoy.admin, path).unwrap();
    assert_eq!(status, 200, "POST {path}");
}

fn set_drill_abort_percent(stack: &Stack, percent: u32) {
    admin_post(
        stack,
        &format!("/runtime_modify?gatehouse.records.drill_abort_percent={percent}"),
    );
}

/// Raw access-log lines of the producer's records for `session`.
fn raw_lines(stack: &Stack, session: &str) -> Vec<String> {
    let needle = format!(r#""session":"{session}""#);
    std::fs::read_to_string(&stack.access_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
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
fn a_batch_is_written_as_one_line_per_record() {
    let (stack, producer) = start("records-batch", None);
    // One producer callback enqueues them all: they leave in a few batches.
    produce(&producer, "batch", 2000);
    let seen = wait_for_records(&stack, "batch", 2000);
    assert_eq!(seen, (1..=2000).collect::<Vec<_>>());
    let batches = stat(&stack, "wasmcustom.gatehouse_records_batches");
    assert!(
        (2..=1000).contains(&batches),
        "2000 records went in {batches} batches"
    );
    // Each line is exactly one record object, as the producer made it.
    let lines = raw_lines(&stack, "batch");
    assert_eq!(lines.len(), 2000);
    for (i, line) in lines.iter().enumerate() {
        let record: Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["sequence"], i as u64 + 1, "{line}");
        assert_eq!(record["pad"].as_str().map(str::len), Some(100));
    }
}

#[test]
fn records_held_while_the_sink_fails_all_arrive_in_order_after_it_recovers() {
    let (stack, producer) = start("records-stall", None);
    set_drill_abort_percent(&stack, 100);
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
    set_drill_abort_percent(&stack, 0);
    let seen = wait_for_records(&stack, "stall", 300);
    assert_eq!(
        seen,
        (1..=300).collect::<Vec<_>>(),
        "every record, once, in order"
    );
    assert_eq!(stat(&stack, "wasmcustom.gatehouse_records_dropped"), 0);
}

#[test]
fn with_a_flaky_sink_every_record_arrives_once_and_in_order() {
    let (stack, producer) = start("records-flaky", None);
    set_drill_abort_percent(&stack, 50);
    for part in 0..10 {
        // Several requests, so batches form while others are failing.
        let (code, _) = http_get(
            &producer,
            &format!("/produce?session=flaky{part}&count=100&pad=10"),
        )
        .unwrap();
        assert_eq!(code, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while stat(&stack, "wasmcustom.gatehouse_records_retried") == 0 {
        assert!(Instant::now() < deadline, "no delivery failed");
        std::thread::sleep(Duration::from_millis(50));
    }
    set_drill_abort_percent(&stack, 0);
    for part in 0..10 {
        let seen = wait_for_records(&stack, &format!("flaky{part}"), 100);
        assert_eq!(seen, (1..=100).collect::<Vec<_>>(), "session flaky{part}");
    }
    assert_eq!(stat(&stack, "wasmcustom.gatehouse_records_dropped"), 0);
    assert_eq!(stat(&stack, "wasmcustom.gatehouse_records_delivered"), 1000);
}

#[test]
fn a_burst_over_the_bound_is_counted_and_recorded() {
    let (stack, producer) = start(
        "records-burst",
        Some(json!({"role": "service", "cluster": "gatehouse_records", "max_buffer": 100})),
    );
    // With the sink failing nothing leaves the buffer: exactly the first 100
    // are held and the newest 2900 dropped.
    set_drill_abort_percent(&stack, 100);
    produce(&producer, "burst", 3000);
    let deadline = Instant::now() + Duration::from_secs(20);
    while stat(&stack, "wasmcustom.gatehouse_records_dropped") < 2900 {
        assert!(Instant::now() < deadline, "drops were not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    set_drill_abort_percent(&stack, 0);
    let notice = stack
        .wait_for_record("a records_dropped notice", |r| {
            r["type"] == "gatehouse.records_dropped"
        })
        .unwrap();
    assert_eq!(notice["dropped"], 2900);
    assert_eq!(notice["schema"], 1);
    assert_eq!(stat(&stack, "wasmcustom.gatehouse_records_dropped"), 2900);
    let delivered = wait_for_records(&stack, "burst", 100);
    assert_eq!(
        delivered,
        (1..=100).collect::<Vec<_>>(),
        "the oldest are kept, in order"
    );
}
