//! The record path with real Envoy: producers enqueue records on the audit
//! service's queue, the service delivers them in batches to the record
//! listener, and the access log holds one JSON line per record.
//!
//! A test-only producer module (integration/record-producer) emits numbered
//! records through `gatehouse_host::records::emit`, the same call the filters use.
//!
//! Runs on both builds (`GATEHOUSE_BUILD`): the record listener's sink is the
//! Wasm audit module's on the Wasm build and libgatehouse.so's on the native one.

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
use std::io::{Read, Write};
use std::net::TcpStream;
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

/// Sends `request` (head and body as written) to the record listener over
/// HTTP/1.1 on a connection of its own; the status of the answer (0: none,
/// the connection was closed or reset first).
fn send_raw(listener: &str, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(listener).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A sink that refuses early may close while the rest is on its way.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// A POST of `body` to the record listener, as a producer sends a batch.
fn batch(body: &str) -> Vec<u8> {
    let mut request = format!(
        "POST /record HTTP/1.1\r\nhost: gatehouse-records\r\n\
         content-type: application/x-ndjson\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());
    request
}

/// A record of the hostile batches, marked with its case.
fn marked(case: &str) -> String {
    format!(r#"{{"type":"test.hostile","case":"{case}"}}"#)
}

#[test]
fn the_sink_refuses_whatever_is_not_whole_records_and_logs_none_of_it() {
    let (stack, _producer) = start("records-hostile", None);
    let listener = format!(
        "127.0.0.1:{}",
        stack.envoy.listener_port("gatehouse_records").unwrap()
    );
    // Over the sink's default max_batch_bytes (4 MiB): refused, 413 while it
    // arrives or 400 once whole, however Envoy cuts it (0: the answer came
    // while the upload went on and the connection closed under it).
    let mut oversize = String::new();
    while oversize.len() <= 4 << 20 {
        oversize.push_str(&marked("oversize"));
        oversize.push('\n');
    }
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "a line that is not JSON",
            batch(&format!("{}\nnot json\n", marked("not-json"))),
            &[400],
        ),
        (
            "a record cut in two",
            batch(&format!("{}\n{{\"type\":\"test.hostile\",", marked("cut"))),
            &[400],
        ),
        (
            "two records on one line",
            batch(&format!("{} {}", marked("two"), marked("two"))),
            &[400],
        ),
        (
            "an empty line between records",
            batch(&format!(
                "{}\n\n{}",
                marked("empty-line"),
                marked("empty-line")
            )),
            &[400],
        ),
        (
            "a carriage return that would split the log line",
            batch(&format!("{}\r\n{}", marked("cr"), marked("cr"))),
            &[400],
        ),
        ("an oversize batch", batch(&oversize), &[0, 400, 413]),
        ("a request without a body", batch(""), &[400]),
        (
            "a GET",
            b"GET /record HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
            &[400],
        ),
    ];
    for (what, request, expected) in &cases {
        let status = send_raw(&listener, request);
        assert!(expected.contains(&status), "{what}: answered {status}");
    }
    // A good batch after them all: accepted, each record on its own line.
    let good = format!("{}\n{}\n", marked("good"), marked("good"));
    assert_eq!(send_raw(&listener, &batch(&good)), 204);
    stack
        .wait_for_record("the good batch", |r| r["case"] == "good")
        .unwrap();
    // Every line of the log is one JSON object (access_log_records parses
    // each), and of the hostile cases only the good batch's records are there.
    let logged: Vec<String> = stack
        .access_log_records()
        .unwrap()
        .into_iter()
        .filter(|r| r["type"] == "test.hostile")
        .map(|r| r["case"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(logged, ["good", "good"]);
    assert_eq!(
        stack
            .envoy
            .stat(&format!(
                "{}gatehouse_records_host_errors",
                stack.build.stat_prefix()
            ))
            .unwrap(),
        Some(0),
        "no host call failed"
    );
}
