//! Postgres engine with the demo policy loaded: what judging every statement (warm
//! decision cache) adds to replaying captured pgbench sessions, and the cost of one
//! denied Query: the rewrite to the raising block and the cleaned error back.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use gatehouse_benches::{feed, parse_log};
use gatehouse_core::identity::Identity;
use gatehouse_core::record::Record;
use gatehouse_postgres::policy::{PgPolicy, PolicyCache};
use gatehouse_postgres::protocol::{BackendMessage, FrontendMessage};
use gatehouse_postgres::{CachedPolicy, ConnectionInfo, EngineConfig, Phase, Session};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

const POLICY: &[u8] = include_bytes!("../../examples/postgres-policy.json");
const CAPTURES: &[(&str, &[u8])] = &[
    (
        "pgbench_simple",
        include_bytes!("../../filters/postgres/testdata/pgbench_simple.log"),
    ),
    (
        "pgbench_prepared",
        include_bytes!("../../filters/postgres/testdata/pgbench_prepared.log"),
    ),
];

/// A session of the `developers` group with the demo policy, logged in by `reads`;
/// returns it with the reads after login (without the final Terminate).
fn logged_in<'a>(
    policy: &CachedPolicy,
    reads: &[(bool, &'a [u8])],
) -> (Session, Vec<(bool, &'a [u8])>) {
    let mut session = Session::new(
        Arc::new(EngineConfig::default()),
        ConnectionInfo::default(),
        0,
    );
    session.set_statement_policy(Box::new(policy.clone()));
    session.set_identity(Identity {
        subject: "dev".into(),
        groups: vec!["developers".into()],
        verified: true,
        ..Identity::default()
    });
    let login_end = reads
        .iter()
        .position(|(from_client, bytes)| {
            let _ = if *from_client {
                session.on_frontend(bytes, 0)
            } else {
                session.on_backend(bytes, 0)
            };
            session.phase() == Phase::Ready
        })
        .expect("capture logs in")
        + 1;
    let body = reads
        .get(login_end..)
        .unwrap_or_default()
        .iter()
        .copied()
        .filter(|(_, b)| *b != b"X\0\0\0\x04")
        .collect();
    (session, body)
}

/// Replays `body` once; fails unless it held statements and a rule of the
/// policy allowed every one (a policy that did not load, or rules that match
/// nobody, would time the default's decision, not the rule list's).
fn judged_by_policy(session: &mut Session, body: &[(bool, &[u8])], name: &str) -> usize {
    let mut statements = 0;
    for (from_client, bytes) in body {
        let _ = if *from_client {
            session.on_frontend(bytes, 1)
        } else {
            session.on_backend(bytes, 1)
        };
        for record in session.take_records() {
            if let Record::Statement(statement) = record {
                let decision = &statement.decision;
                assert!(
                    !decision.action.blocks() && decision.rule.is_some(),
                    "{name}: a statement was not allowed by a policy rule: {decision:?}"
                );
                statements += 1;
            }
        }
    }
    assert!(statements > 0, "{name}: the capture replayed no statements");
    statements
}

fn pg_policy_wire(c: &mut Criterion) {
    let policy = Arc::new(PgPolicy::from_json(POLICY).expect("demo policy compiles"));
    let cache = Rc::new(RefCell::new(PolicyCache::default()));
    let cached = CachedPolicy::new(policy, cache);
    let mut group = c.benchmark_group("pg_policy_wire");
    for (name, log) in CAPTURES {
        let reads = parse_log(log);
        let (mut session, body) = logged_in(&cached, &reads);
        let statements = judged_by_policy(&mut session, &body, name); // warms the cache
        group.throughput(Throughput::Elements(statements as u64));
        group.bench_function(format!("{name}/statements"), |b| {
            b.iter(|| feed(&mut session, &body, 2))
        });
    }

    // One denied Query and the server's raised error, as PostgreSQL 15 sends it.
    let reads = parse_log(CAPTURES.first().expect("a capture").1);
    let (mut session, _) = logged_in(&cached, &reads);
    let mut denied = Vec::new();
    FrontendMessage::Query {
        sql: b"DELETE FROM pgbench_accounts",
    }
    .encode(&mut denied);
    let message = cached
        .policy()
        .decide(
            &gatehouse_postgres::policy::SessionContext {
                identity: Identity {
                    groups: vec!["developers".into()],
                    ..Identity::default()
                },
                ..Default::default()
            },
            "DELETE FROM pgbench_accounts",
        )
        .decision;
    assert!(
        message.action.blocks() && message.rule.is_some(),
        "the demo policy must deny an unfiltered DELETE by a rule: {message:?}"
    );
    let denial = gatehouse_postgres::deny::denial_message(&message);
    let detail = denial.detail.unwrap_or_default();
    let mut answer = Vec::new();
    BackendMessage::ErrorResponse {
        fields: vec![
            (b'S', b"ERROR"),
            (b'V', b"ERROR"),
            (b'C', b"42501"),
            (b'M', denial.message.as_bytes()),
            (b'D', detail.as_bytes()),
            (b'W', b"PL/pgSQL function inline_code_block line 1 at RAISE"),
            (b'F', b"pl_exec.c"),
            (b'L', b"3891"),
            (b'R', b"exec_stmt_raise"),
        ],
    }
    .encode(&mut answer);
    BackendMessage::ReadyForQuery { status: b'I' }.encode(&mut answer);
    group.throughput(Throughput::Elements(1));
    group.bench_function("denied_query_round_trip", |b| {
        b.iter(|| {
            let to_server = session.on_frontend(&denied, 3);
            let to_client = session.on_backend(&answer, 4);
            black_box((to_server, to_client, session.take_records()))
        })
    });
    group.finish();
}

criterion_group!(benches, pg_policy_wire);
criterion_main!(benches);
