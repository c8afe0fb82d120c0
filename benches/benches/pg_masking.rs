//! Postgres masking on the wire: a Query answered by 1,000 customer rows (three
//! columns under the demo rules, every detector on the other text) through a
//! session with the demo masking, against the same session without masking.
//! Prints the masked/pass-through throughput ratio.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use gatehouse_postgres::masking::{MaskingPolicy, SessionMasker};
use gatehouse_postgres::protocol::{BackendMessage, FrontendMessage, StartupPacket};
use gatehouse_postgres::{ConnectionInfo, EngineConfig, Session};
use std::sync::Arc;
use std::time::Instant;

const MASKING: &[u8] = include_bytes!("../../examples/postgres-masking.json");
const CUSTOMERS_OID: u32 = 16_400;
const ROWS: usize = 1_000;

fn encode(msgs: &[BackendMessage<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    msgs.iter().for_each(|m| m.encode(&mut out));
    out
}

fn row_description(fields: &[(&str, u32, i16, u32)]) -> Vec<u8> {
    let mut body = (fields.len() as i16).to_be_bytes().to_vec();
    for (name, table, attnum, type_oid) in fields {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&table.to_be_bytes());
        body.extend_from_slice(&attnum.to_be_bytes());
        body.extend_from_slice(&type_oid.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
    }
    body
}

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

fn catalog_answer() -> Vec<u8> {
    let description = row_description(&[
        ("relid", 0, 0, 20),
        ("attnum", 0, 0, 21),
        ("min", 0, 0, 23),
        ("relname", 0, 0, 19),
        ("attname", 0, 0, 19),
    ]);
    let mut out = encode(&[BackendMessage::RowDescription { body: &description }]);
    let oid = CUSTOMERS_OID.to_string();
    for (attnum, rule, column) in [
        ("3", "0", "email"),
        ("4", "1", "card_number"),
        ("5", "2", "ssn"),
    ] {
        BackendMessage::DataRow {
            values: vec![
                Some(oid.as_bytes()),
                Some(attnum.as_bytes()),
                Some(rule.as_bytes()),
                Some(b"customers"),
                Some(column.as_bytes()),
            ],
        }
        .encode(&mut out);
    }
    out.extend(encode(&[
        BackendMessage::CommandComplete { tag: b"SELECT 3" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    out
}

fn query() -> Vec<u8> {
    let mut out = Vec::new();
    FrontendMessage::Query {
        sql: b"SELECT * FROM customers",
    }
    .encode(&mut out);
    out
}

/// The demo masking's rules with no detector: what the rules alone cost.
fn rules_only() -> Vec<u8> {
    let mut config: serde_json::Value = serde_json::from_slice(MASKING).expect("demo masking");
    *config
        .pointer_mut("/masker/detectors")
        .expect("the demo masking has detectors") = serde_json::json!([]);
    serde_json::to_vec(&config).expect("serializes")
}

/// A logged-in session, with `masking` when given (its catalog lookup
/// already answered).
fn session(masking: Option<&[u8]>) -> Session {
    let masked = masking.is_some();
    let mut session = Session::new(
        Arc::new(EngineConfig::default()),
        ConnectionInfo::default(),
        0,
    );
    if let Some(masking) = masking {
        let policy = MaskingPolicy::from_json(masking).expect("masking compiles");
        session.set_masker(SessionMasker::new(Arc::new(policy)));
    }
    let mut startup = Vec::new();
    StartupPacket::Startup {
        version: 3 << 16,
        params: vec![("user", "app"), ("database", "shop")],
    }
    .encode(&mut startup);
    let _ = session.on_frontend(&startup, 0);
    let _ = session.on_backend(
        &encode(&[
            BackendMessage::Authentication { code: 0, data: b"" },
            BackendMessage::ReadyForQuery { status: b'I' },
        ]),
        0,
    );
    let _ = session.on_frontend(&query(), 0);
    if masked {
        let _ = session.on_backend(&catalog_answer(), 0);
    }
    let _ = session.on_backend(&customers_answer(), 0);
    session.take_records();
    session
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
    let query = query();
    let mut group = c.benchmark_group("pg_masking");
    group.throughput(Throughput::Bytes(answer.len() as u64));
    let rules = rules_only();
    let variants: [(&str, Option<&[u8]>); 3] = [
        ("pass_through", None),
        ("rules_only", Some(&rules)),
        ("demo_masking", Some(MASKING)),
    ];
    for (name, masking) in variants {
        let mut session = session(masking);
        group.bench_function(format!("{ROWS}_rows/{name}"), |b| {
            b.iter(|| round_trip(&mut session, &query, &answer))
        });
    }
    group.finish();

    // The ratio, measured once more side by side.
    let mut rates = Vec::new();
    for (_, masking) in variants {
        let mut session = session(masking);
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(3));
    targets = pg_masking
}
criterion_main!(benches);
