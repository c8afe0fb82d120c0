//! End-to-end Postgres masking throughput: `SELECT` of 1,000,000 rows (about
//! 100 MB on the wire) with two columns under masking rules and every detector
//! on the other text, through Envoy's tcp_proxy alone and through Envoy with
//! gatehouse's Postgres filter, in one run on one server; prints MB/s and the
//! gatehouse / tcp_proxy ratio.
//!
//! Needs the filter modules built (`cargo xtask build`, or `GATEHOUSE_WASM_DIR`)
//! and PostgreSQL, psql and Envoy installed (`cargo xtask install`). Run with
//! `cargo bench -p gatehouse-benches --bench pg_masking_throughput`; environment
//! knobs: `PG_MASKING_ROWS` (default 1000000), `PG_MASKING_RUNS` (3, best kept).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use anyhow::{Context, Result, bail};
use gatehouse_benches::pgbench;
use gatehouse_integration::{Stack, StackOptions, tools};
use serde_json::json;
use std::process::Command;
use std::time::Instant;

/// Seconds to read the whole table through `port` with psql (best of `runs`),
/// and what psql printed the last time.
fn read_all(port: u16, runs: usize) -> Result<(f64, Vec<u8>)> {
    let psql = tools::pg_client("psql")?;
    let mut best = f64::MAX;
    let mut printed = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let out = Command::new(&psql)
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!(
                "postgresql://127.0.0.1:{port}/shop?user=postgres&sslmode=disable"
            ))
            .args(["-c", "select * from masking_bench"])
            .output()
            .context("psql runs")?;
        let seconds = start.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        printed = out.stdout;
        best = best.min(seconds);
    }
    Ok((best, printed))
}

fn main() -> Result<()> {
    if pgbench::skipped("pg_masking_throughput") {
        return Ok(());
    }
    let rows: u64 = pgbench::env_or("PG_MASKING_ROWS", "1000000").parse()?;
    let runs: usize = pgbench::env_or("PG_MASKING_RUNS", "3").parse()?;
    let masking = json!({
        "rules": [
            { "name": "bench-email", "table": "masking_bench", "column": "email",
              "style": "partial", "kind": "email" },
            { "name": "bench-ssn", "table": "masking_bench", "column": "ssn", "style": "redact" }
        ]
    });
    let stack = Stack::start(
        "bench",
        "pg_masking_throughput",
        StackOptions {
            postgres_filter: json!({ "masking": masking }),
            ..pgbench::stack_options()
        },
    )?;
    // About 100 bytes per row on the wire: id, e-mail, SSN, a 32-character note.
    let create = format!(
        "create table masking_bench as select i::bigint as id, \
         'user' || i || '@example.com' as email, \
         lpad((100 + i % 500)::text, 3, '0') || '-' || lpad((1 + i % 98)::text, 2, '0') || '-' \
         || lpad((1 + i % 9998)::text, 4, '0') as ssn, md5(i::text) as note \
         from generate_series(1, {rows}) i"
    );
    let out = Command::new(tools::pg_client("psql")?)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!(
            "postgresql://127.0.0.1:{}/shop?user=postgres&sslmode=disable",
            stack.postgres.port
        ))
        .args(["-c", &create])
        .output()?;
    if !out.status.success() {
        bail!(
            "creating the table: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (_baseline, baseline_port) = pgbench::start_tcp_proxy_baseline(&stack)?;

    let (tcp_seconds, tcp_printed) = read_all(baseline_port, runs)?;
    let (gate_seconds, gate_printed) = read_all(stack.pg_port, runs)?;
    // The wire carries about as many bytes as psql prints plus per-row framing.
    let wire_bytes = tcp_printed.len() as f64 + rows as f64 * 23.0;
    let mb = |seconds: f64| wire_bytes / seconds / 1e6;
    println!(
        "rows {rows}, about {:.0} MB on the wire, best of {runs}",
        wire_bytes / 1e6
    );
    println!(
        "{:<12} {:>10} {:>10}\n{:<12} {:>10.2} {:>10.0}\n{:<12} {:>10.2} {:>10.0}",
        "path",
        "seconds",
        "MB/s",
        "tcp_proxy",
        tcp_seconds,
        mb(tcp_seconds),
        "gatehouse",
        gate_seconds,
        mb(gate_seconds)
    );
    println!("gatehouse/tcp_proxy: {:.3}", tcp_seconds / gate_seconds);
    check_masked(&tcp_printed, &gate_printed, rows)?;
    let statements = stack
        .envoy
        .stat("wasmcustom.gatehouse_pg_statements_total")?
        .unwrap_or(0);
    println!("statements the filter recorded: {statements}");
    Ok(())
}

/// A fast path that skipped masking would look like a win: every row must
/// have arrived, each with its e-mail partly and its SSN wholly masked.
fn check_masked(clear: &[u8], masked: &[u8], rows: u64) -> Result<()> {
    let lines = |text: &[u8]| {
        text.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64
    };
    if lines(clear) != rows || lines(masked) != rows {
        bail!(
            "expected {rows} rows: tcp_proxy printed {}, gatehouse {}",
            lines(clear),
            lines(masked)
        );
    }
    for line in masked.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let fields: Vec<&[u8]> = line.split(|&b| b == b'|').collect();
        match fields.as_slice() {
            [_, email, ssn, _]
                if email.windows(3).any(|w| w == b"***") && !ssn.iter().any(u8::is_ascii_digit) => {
            }
            _ => bail!(
                "a row came back unmasked: {}",
                String::from_utf8_lossy(line)
            ),
        }
    }
    Ok(())
}
