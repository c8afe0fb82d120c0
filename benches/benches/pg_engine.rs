//! Postgres engine throughput on captured pgbench sessions (decode, statement
//! tracking and records; no policy): MB/s of wire traffic and cost per statement.
//!
//! Each capture's login runs once outside the measurement; the measured loop
//! replays the captured transactions on the logged-in session, read by read as
//! they arrived from the sockets, and takes the records as the glue would.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatehouse_benches::{feed, parse_log};
use gatehouse_postgres::{ConnectionInfo, EngineConfig, Phase, Session};
use std::sync::Arc;

const CAPTURES: &[(&str, &[u8])] = &[
    (
        "pgbench_simple",
        include_bytes!("../../filters/postgres/testdata/pgbench_simple.log"),
    ),
    (
        "pgbench_extended",
        include_bytes!("../../filters/postgres/testdata/pgbench_extended.log"),
    ),
    (
        "pgbench_prepared",
        include_bytes!("../../filters/postgres/testdata/pgbench_prepared.log"),
    ),
    (
        "pgbench_tpcb_prepared",
        include_bytes!("../../filters/postgres/testdata/pgbench_tpcb_prepared.log"),
    ),
];

fn pg_engine(c: &mut Criterion) {
    let config = Arc::new(EngineConfig::default());
    for (name, log) in CAPTURES {
        let reads = parse_log(log);
        let mut login = Session::new(config.clone(), ConnectionInfo::default(), 0);
        let login_end = reads
            .iter()
            .position(|(from_client, bytes)| {
                let _ = if *from_client {
                    login.on_frontend(bytes, 0)
                } else {
                    login.on_backend(bytes, 0)
                };
                login.phase() == Phase::Ready
            })
            .expect("capture logs in")
            + 1;
        // Leave out the final Terminate so the session stays usable.
        let body: Vec<_> = reads
            .get(login_end..)
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(|(_, b)| *b != b"X\0\0\0\x04")
            .collect();
        let bytes: usize = body.iter().map(|(_, b)| b.len()).sum();
        let statements = feed(&mut login, &body, 1);

        let mut group = c.benchmark_group("pg_engine");
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(format!("{name}/bytes"), |b| {
            b.iter(|| feed(&mut login, &body, 2))
        });
        group.throughput(Throughput::Elements(statements as u64));
        group.bench_function(format!("{name}/statements"), |b| {
            b.iter(|| feed(&mut login, &body, 3))
        });
        group.finish();
    }
}

criterion_group!(benches, pg_engine);
criterion_main!(benches);
