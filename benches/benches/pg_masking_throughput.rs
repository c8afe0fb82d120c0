//! End-to-end Postgres masking throughput: `SELECT *` of 1,000,000 rows
//! (about 100 MB on the wire) with two columns under masking rules and every
//! detector on the other text, straight to PostgreSQL, through Envoy's
//! tcp_proxy alone, through the no-op Wasm filter (the Wasm runtime's floor)
//! and through Envoy with gatehouse's Postgres filter masking, as the Wasm
//! build and as the native build (`libgatehouse.so`) with the same masking
//! configuration, in one run on one server.
//!
//! The client is [`gatehouse_benches::pg_wire`]: it reads the answer off the
//! wire and counts bytes, so it costs far less than any proxy measured (its
//! own CPU per MB is printed to show it). Each round reads the table once
//! through every path in turn; the bench prints the medians over the rounds
//! of MB/s (wire bytes over the time from Query to ReadyForQuery) and of the
//! CPU each path's Envoy spent per MB (from /proc around the query), and
//! each build's gatehouse / tcp_proxy for both (target: throughput at least
//! 0.75).
//!
//! Every run must bring back every row; through either build of gatehouse
//! each row's e-mail
//! must be partly masked and its SSN wholly, elsewhere both in the clear,
//! so a path that skipped masking cannot pass for a fast one.
//!
//! Needs both builds (`cargo xtask build`, or `GATEHOUSE_WASM_DIR`; `cargo
//! xtask build --native`, or `GATEHOUSE_NATIVE_DIR`) and PostgreSQL and Envoy
//! installed (`cargo xtask install`). Run with
//! `cargo bench -p gatehouse-benches --bench pg_masking_throughput`; knobs:
//! `PG_MASKING_ROWS` (default 1000000), `PG_MASKING_ROUNDS` (5).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use anyhow::{Result, bail};
use gatehouse_benches::cpu::{Usage, process_time, wait_until_idle};
use gatehouse_benches::median;
use gatehouse_benches::pg_wire::Connection;
use gatehouse_benches::pgbench;
use gatehouse_integration::{Stack, StackOptions, tools};
use serde_json::json;
use std::time::Duration;

/// One path to the server.
struct Path {
    name: &'static str,
    port: u16,
    /// The Envoy in the way, if any.
    pid: Option<u32>,
    masks: bool,
}

/// What one read of the table through a path measured.
#[derive(Default)]
struct Samples {
    /// MB/s of wire bytes.
    rate: Vec<f64>,
    /// Envoy CPU ms per MB.
    proxy: Vec<f64>,
    /// This client's CPU ms per MB.
    client: Vec<f64>,
    bytes: u64,
}

/// Reads the whole table through `path`, checking every row; records what it measured.
fn read_all(path: &Path, rows: u64, samples: &mut Samples) -> Result<()> {
    let mut connection = Connection::connect(path.port, "postgres", "shop")?;
    let client = std::process::id();
    let client_before = process_time(client);
    let before = Usage::now(path.pid);
    let mut bad = None;
    let answer = connection.query("select * from masking_bench", |values| {
        if bad.is_none() && !row_as_expected(values, path.masks) {
            bad = Some(());
        }
        Ok(())
    })?;
    let spent = Usage::now(path.pid).since(&before);
    let client_spent = process_time(client).saturating_sub(client_before);
    if bad.is_some() {
        bail!(
            "{}: a row came back {}",
            path.name,
            if path.masks { "unmasked" } else { "masked" }
        );
    }
    if answer.rows != rows {
        bail!("{}: {} rows, expected {rows}", path.name, answer.rows);
    }
    let megabytes = answer.bytes as f64 / 1e6;
    samples
        .rate
        .push(megabytes / answer.elapsed.as_secs_f64().max(f64::EPSILON));
    samples
        .proxy
        .push(spent.proxy.as_secs_f64() * 1e3 / megabytes);
    samples
        .client
        .push(client_spent.as_secs_f64() * 1e3 / megabytes);
    samples.bytes = answer.bytes;
    Ok(())
}

/// A row (id, e-mail, SSN, note) as it must arrive: masked, the e-mail
/// partly (`u***@example.com`) and the SSN wholly; or in the clear.
fn row_as_expected(values: &mut dyn Iterator<Item = Option<&[u8]>>, masked: bool) -> bool {
    let (Some(Some(_id)), Some(Some(email)), Some(Some(ssn)), Some(Some(_note)), None) = (
        values.next(),
        values.next(),
        values.next(),
        values.next(),
        values.next(),
    ) else {
        return false;
    };
    let email_masked = email.windows(4).any(|w| w == b"***@");
    let ssn_digits = ssn.iter().filter(|b| b.is_ascii_digit()).count();
    if masked {
        email_masked && ssn_digits == 0
    } else {
        !email_masked && email.ends_with(b"@example.com") && ssn_digits == 9
    }
}

fn main() -> Result<()> {
    if pgbench::skipped("pg_masking_throughput") {
        return Ok(());
    }
    let rows: u64 = pgbench::env_or("PG_MASKING_ROWS", "1000000").parse()?;
    let rounds: usize = pgbench::env_or("PG_MASKING_ROUNDS", "5").parse()?;
    let masking = json!({
        "rules": [
            { "name": "bench-email", "table": "masking_bench", "column": "email",
              "style": "partial", "kind": "email" },
            { "name": "bench-ssn", "table": "masking_bench", "column": "ssn", "style": "redact" }
        ]
    });
    let filter = json!({ "masking": masking });
    let stack = Stack::start(
        "bench",
        "pg_masking_throughput",
        StackOptions {
            postgres_filter: filter.clone(),
            build: Some(tools::Build::Wasm),
            ..pgbench::stack_options()
        },
    )?;
    // About 100 bytes per row on the wire: id, e-mail, SSN, a 32-character note.
    stack.postgres.psql_in(
        "shop",
        &format!(
            "create table masking_bench as select i::bigint as id, \
             'user' || i || '@example.com' as email, \
             lpad((100 + i % 500)::text, 3, '0') || '-' || lpad((1 + i % 98)::text, 2, '0') || '-' \
             || lpad((1 + i % 9998)::text, 4, '0') as ssn, md5(i::text) as note \
             from generate_series(1, {rows}) i"
        ),
    )?;
    let (baseline, baseline_port) = pgbench::start_tcp_proxy_baseline(&stack)?;
    let (noop, noop_port) = pgbench::start_noop_filter(&stack)?;
    let (native, native_port) = pgbench::start_native_postgres(&stack, "native_masking", &filter)?;
    let paths = [
        Path {
            name: "direct",
            port: stack.postgres.port,
            pid: None,
            masks: false,
        },
        Path {
            name: "tcp_proxy",
            port: baseline_port,
            pid: baseline.pid(),
            masks: false,
        },
        Path {
            name: "no-op",
            port: noop_port,
            pid: noop.pid(),
            masks: false,
        },
        Path {
            name: "gh wasm",
            port: stack.pg_port,
            pid: stack.envoy.pid(),
            masks: true,
        },
        Path {
            name: "gh native",
            port: native_port,
            pid: native.pid(),
            masks: true,
        },
    ];
    let pids: Vec<u32> = paths.iter().filter_map(|p| p.pid).collect();
    if !wait_until_idle(&pids, Duration::from_secs(120)) {
        bail!("the Envoys did not settle within 120 s of starting");
    }
    let mut samples: Vec<Samples> = paths.iter().map(|_| Samples::default()).collect();
    // A first read through each path warms the server's cache and Envoy's
    // connection pools; it is checked but not counted.
    for path in &paths {
        read_all(path, rows, &mut Samples::default())?;
    }
    for _ in 0..rounds.max(1) {
        for (path, samples) in paths.iter().zip(samples.iter_mut()) {
            read_all(path, rows, samples)?;
        }
    }

    println!(
        "select * of {rows} rows (about {:.0} MB on the wire), raw wire client; median of \
         {rounds} interleaved rounds; cpu: ms per MB",
        samples.first().map_or(0, |s| s.bytes) as f64 / 1e6
    );
    println!(
        "{:<10} {:>9} {:>12} {:>12}",
        "path", "MB/s", "Envoy cpu", "client cpu"
    );
    for (path, samples) in paths.iter().zip(&samples) {
        println!(
            "{:<10} {:>9.1} {:>12} {:>12.2}",
            path.name,
            median(samples.rate.iter().copied()),
            if path.pid.is_some() {
                format!("{:.2}", median(samples.proxy.iter().copied()))
            } else {
                "-".to_string()
            },
            median(samples.client.iter().copied())
        );
    }
    let at = |index: usize, of: fn(&Samples) -> &Vec<f64>| {
        samples
            .get(index)
            .map_or(0.0, |s| median(of(s).iter().copied()))
    };
    for (index, build) in [(3, "wasm"), (4, "native")] {
        println!(
            "gatehouse {build}/tcp_proxy: throughput {:.3} (target at least 0.75), Envoy cpu per \
             MB {:.2}",
            at(index, |s| &s.rate) / at(1, |s| &s.rate),
            at(index, |s| &s.proxy) / at(1, |s| &s.proxy),
        );
    }
    println!(
        "no-op/tcp_proxy throughput {:.3}",
        at(2, |s| &s.rate) / at(1, |s| &s.rate)
    );
    for (build, statements) in [
        ("wasm", stack.pg_stat("gatehouse_pg_statements_total")?),
        (
            "native",
            native.stat("dynamicmodulescustom.gatehouse_pg_statements_total")?,
        ),
    ] {
        println!(
            "statements the {build} filter recorded: {}",
            statements.unwrap_or(0)
        );
    }
    Ok(())
}
