//! Postgres masking on the wire: a Query answered by 1,000 customer rows (three
//! columns under the demo rules, every detector on the other text) through a
//! session with the demo masking, against the same session without masking.
//! Prints the masked/pass-through throughput ratio.
//!
//! Then the engine's share of `pg_masking_throughput`: 1,000 rows of that
//! bench's table (id, e-mail, SSN, a 32-character hex note) under its masking
//! (the e-mail partly, the SSN redacted, every detector on the rest), read by
//! the engine alone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use gatehouse_benches::pg_messages::{catalog_answer, encode, query, row_description, session};
use gatehouse_postgres::Session;
use gatehouse_postgres::protocol::BackendMessage;
use std::time::Instant;

const MASKING: &[u8] = include_bytes!("../../examples/postgres-masking.json");
const CUSTOMERS_OID: u32 = 16_400;
const BENCH_TABLE_OID: u32 = 16_500;
const ROWS: usize = 1_000;

/// The server's answer to `SELECT * FROM customers` for `ROWS` demo-like rows.
fn customers_answer() -> Vec<u8> {
    let description = row_description(&[
        ("id", CUSTOMERS_OID, 1, 20),
        ("name", CUSTOMERS_OID, 2, 25),
        ("email", CUSTOMERS_OID, 3, 25),
        ("card_number", CUSTOMERS_OID, 4, 25),
        ("ssn", CUSTOMERS_OID, 5, 25),
        ("notes", CUSTOMERS_OID, 6, 25),
    ]);
    let mut out = encode(&[BackendMessage::RowDescription { body: &description }]);
    for i in 0..ROWS {
        let id = i.to_string();
        let email = format!("grace.hopper{i}@mail.test");
        let notes = match i % 3 {
            0 => "prefers email contact".to_string(),
            1 => format!("called support, callback on +1 415 555 {:04}", i % 10_000),
            _ => format!("VIP since {}", 2010 + i % 14),
        };
        BackendMessage::DataRow {
            values: vec![
                Some(id.as_bytes()),
                Some(b"Grace Hopper"),
                Some(email.as_bytes()),
                Some(b"5105105105105100"),
                Some(b"137-14-7718"),
                Some(notes.as_bytes()),
            ],
        }
        .encode(&mut out);
    }
    out.extend(encode(&[
        BackendMessage::CommandComplete {
            tag: b"SELECT 1000",
        },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    out
}

/// The demo masking's catalog answer for `customers`.
fn customers_catalog() -> Vec<u8> {
    catalog_answer(
        CUSTOMERS_OID,
        "customers",
        &[
            ("3", "0", "email"),
            ("4", "1", "card_number"),
            ("5", "2", "ssn"),
        ],
    )
}

/// `pg_masking_throughput`'s masking: its table's e-mail partly, its SSN
/// redacted, every detector on the rest.
const BENCH_TABLE_MASKING: &str = r#"{
  "rules": [
    { "name": "bench-email", "table": "masking_bench", "column": "email",
      "style": "partial", "kind": "email" },
    { "name": "bench-ssn", "table": "masking_bench", "column": "ssn", "style": "redact" }
  ]
}"#;

/// What `pg_masking_throughput`'s table answers to `select *`, `rows` rows
/// as PostgreSQL makes them (the note a 32-digit hex string like md5's).
fn bench_table_answer(rows: u64) -> Vec<u8> {
    let description = row_description(&[
        ("id", BENCH_TABLE_OID, 1, 20),
        ("email", BENCH_TABLE_OID, 2, 25),
        ("ssn", BENCH_TABLE_OID, 3, 25),
        ("note", BENCH_TABLE_OID, 4, 25),
    ]);
    let mut out = encode(&[BackendMessage::RowDescription { body: &description }]);
    for i in 1..=rows {
        let id = i.to_string();
        let email = format!("user{i}@example.com");
        let ssn = format!("{:03}-{:02}-{:04}", 100 + i % 500, 1 + i % 98, 1 + i % 9998);
        let mix = |x: u64| {
            let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        let note = format!("{:016x}{:016x}", mix(i), mix(i + rows));
        BackendMessage::DataRow {
            values: vec![
                Some(id.as_bytes()),
                Some(email.as_bytes()),
                Some(ssn.as_bytes()),
                Some(note.as_bytes()),
            ],
        }
        .encode(&mut out);
    }
    let tag = format!("SELECT {rows}");
    out.extend(encode(&[
        BackendMessage::CommandComplete {
            tag: tag.as_bytes(),
        },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    out
}

/// The demo masking's rules with no detector: what the rules alone cost.
fn rules_only() -> Vec<u8> {
    let mut config: serde_json::Value = serde_json::from_slice(MASKING).expect("demo masking");
    // The demo masking leaves `detectors` out: every detector.
    config
        .get_mut("masker")
        .and_then(|masker| masker.as_object_mut())
        .expect("the demo masking has a masker section")
        .insert("detectors".into(), serde_json::json!([]));
    serde_json::to_vec(&config).expect("serializes")
}

fn round_trip(session: &mut Session, query: &[u8], answer: &[u8]) -> usize {
    let _ = session.on_frontend(query, 1);
    let verdict = session.on_backend(answer, 2);
    let len = verdict.bytes(answer).len();
    black_box(session.take_records());
    len
}

fn pg_masking(c: &mut Criterion) {
    let answer = customers_answer();
    let catalog = customers_catalog();
    let query = query(b"SELECT * FROM customers");
    let mut group = c.benchmark_group("pg_masking");
    group.throughput(Throughput::Bytes(answer.len() as u64));
    let rules = rules_only();
    let variants: [(&str, Option<&[u8]>); 3] = [
        ("pass_through", None),
        ("rules_only", Some(&rules)),
        ("demo_masking", Some(MASKING)),
    ];
    for (name, masking) in variants {
        let mut session = session(masking, &catalog, &query, &answer).expect("a logged-in session");
        group.bench_function(format!("{ROWS}_rows/{name}"), |b| {
            b.iter(|| round_trip(&mut session, &query, &answer))
        });
    }
    group.finish();

    // The ratio, measured once more side by side.
    let mut rates = Vec::new();
    for (_, masking) in variants {
        let mut session = session(masking, &catalog, &query, &answer).expect("a logged-in session");
        let rounds = 50;
        let start = Instant::now();
        for _ in 0..rounds {
            round_trip(&mut session, &query, &answer);
        }
        let seconds = start.elapsed().as_secs_f64();
        rates.push(answer.len() as f64 * rounds as f64 / seconds / 1e6);
    }
    let [pass_through, rules_only, demo] = rates[..] else {
        unreachable!("three configurations measured")
    };
    println!(
        "pg_masking: pass-through {:.0} MB/s, rules only {:.0} MB/s, demo masking {:.0} MB/s, \
         demo/pass-through {:.2}",
        pass_through,
        rules_only,
        demo,
        demo / pass_through
    );
}

/// The engine's share of `pg_masking_throughput`: its table and masking.
fn pg_masking_bench_table(c: &mut Criterion) {
    let rows = 1_000;
    let answer = bench_table_answer(rows);
    let catalog = catalog_answer(
        BENCH_TABLE_OID,
        "masking_bench",
        &[("2", "0", "email"), ("3", "1", "ssn")],
    );
    let query = query(b"select * from masking_bench");
    let mut session = session(
        Some(BENCH_TABLE_MASKING.as_bytes()),
        &catalog,
        &query,
        &answer,
    )
    .expect("a logged-in session");
    // The rows must come back masked, or the figure is a pass-through's.
    let _ = session.on_frontend(&query, 1);
    let verdict = session.on_backend(&answer, 2);
    let masked = verdict.bytes(&answer);
    assert!(
        masked.windows(4).filter(|w| w == b"***@").count() == rows as usize,
        "every e-mail partly masked"
    );
    session.take_records();
    let mut group = c.benchmark_group("pg_masking_bench_table");
    group.throughput(Throughput::Bytes(answer.len() as u64));
    group.bench_function(format!("{rows}_rows/masking"), |b| {
        b.iter(|| round_trip(&mut session, &query, &answer))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(3));
    targets = pg_masking, pg_masking_bench_table
}
criterion_main!(benches);
