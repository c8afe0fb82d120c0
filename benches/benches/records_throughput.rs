//! What delivering records costs, end to end: `pgbench -S` through Envoy's
//! tcp_proxy alone, through gatehouse's Postgres filter with no record service
//! (records off: `envoy/postgres.yaml`), and through the whole gateway with
//! every statement record delivered to the access log (records on:
//! `envoy/gatehouse.yaml`), in one run of interleaved rounds; prints the median
//! TPS, on/off and on/tcp_proxy ratios, the records per second the path
//! delivered and how long the last record took to arrive after pgbench ended
//! (lag). Then the
//! record path alone: a test producer bursts records at it and the time until
//! the last one is delivered gives the records per second it sustains.
//!
//! Needs the filter modules and the test record producer built (`cargo xtask
//! build`, or `GATEHOUSE_WASM_DIR`), PostgreSQL, pgbench and Envoy. Run with
//! `cargo bench -p gatehouse-benches --bench records_throughput`; knobs as in
//! [`gatehouse_benches::pgbench`], plus `RECORDS_BENCH_ROUNDS` (default 3) and
//! `RECORDS_BENCH_BURST` (records the producer bursts, default 100000).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use anyhow::{Result, bail};
use gatehouse_benches::pgbench::{self, env_or};
use gatehouse_integration::envoy::{self, Envoy, http_get};
use gatehouse_integration::{Stack, StackOptions};
use std::time::{Duration, Instant};

/// The Postgres filter's configuration on both gatehouse Envoys: defaults, no
/// policy, so the two differ only in the record path.
const PG_FILTER_CONFIG: &str = "{}";
const PRODUCED: &str = "wasmcustom.gatehouse_records_produced";
const DELIVERED: &str = "wasmcustom.gatehouse_records_delivered";
const DROPPED: &str = "wasmcustom.gatehouse_records_dropped";

fn stat(envoy: &Envoy, name: &str) -> Result<u64> {
    Ok(envoy.stat(name)?.unwrap_or(0))
}

/// Waits until every record produced so far is delivered or counted dropped;
/// returns how long that took.
fn settle(envoy: &Envoy) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let produced = stat(envoy, PRODUCED)?;
        if done(envoy)? >= produced {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("records still undelivered after 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The median of some values (0 for none).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Records delivered or dropped so far.
fn done(envoy: &Envoy) -> Result<u64> {
    Ok(stat(envoy, DELIVERED)? + stat(envoy, DROPPED)?)
}

/// Waits until at least `count` records are delivered or dropped.
fn settle_after(envoy: &Envoy, count: u64) -> Result<()> {
    let start = Instant::now();
    while done(envoy)? < count {
        if start.elapsed() > Duration::from_secs(300) {
            bail!("records still undelivered after 300 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn main() -> Result<()> {
    if pgbench::skipped("records_throughput") {
        return Ok(());
    }
    let stack = Stack::start(
        "bench",
        "records_throughput",
        StackOptions {
            postgres_filter: serde_json::from_str(PG_FILTER_CONFIG)?,
            extra_listeners: Some(envoy::record_producer_listener()?),
            ..pgbench::stack_options()
        },
    )?;
    pgbench::init(&stack)?;
    let (_tcp_proxy, tcp_proxy_port) = pgbench::start_tcp_proxy_baseline(&stack)?;
    let (_records_off, records_off_port) = pgbench::start_envoy(
        &stack,
        "records_off",
        "postgres.yaml",
        &[("PG_CONFIG", envoy::yaml_quote(PG_FILTER_CONFIG))],
    )?;

    println!("{}", pgbench::settings());
    println!(
        "{:<10} {:>10} {:>12} {:>11} {:>8} {:>13} {:>10} {:>9}",
        "mode",
        "tcp_proxy",
        "records off",
        "records on",
        "on/off",
        "on/tcp_proxy",
        "records/s",
        "lag ms"
    );
    let rounds: usize = env_or("RECORDS_BENCH_ROUNDS", "3").parse()?;
    for mode in ["simple", "prepared"] {
        // Interleaved rounds, medians: the machine's load drifts between runs.
        let mut runs = Vec::new();
        for _ in 0..rounds.max(1) {
            let tcp_proxy = pgbench::tps(tcp_proxy_port, mode)?;
            let off = pgbench::tps(records_off_port, mode)?;
            let delivered_before = stat(&stack.envoy, DELIVERED)?;
            let started = Instant::now();
            let on = pgbench::tps(stack.pg_port, mode)?;
            let run_seconds = started.elapsed().as_secs_f64();
            let delivered = (stat(&stack.envoy, DELIVERED)? - delivered_before) as f64;
            let lag = settle(&stack.envoy)?.as_secs_f64() * 1e3;
            runs.push([
                tcp_proxy,
                off,
                on,
                on / off,
                on / tcp_proxy,
                delivered / run_seconds,
                lag,
            ]);
        }
        let [tcp_proxy, off, on, on_off, on_tcp, records, lag] = std::array::from_fn(|column| {
            median(runs.iter().filter_map(|run| run.get(column).copied()))
        });
        println!(
            "{mode:<10} {tcp_proxy:>10.0} {off:>12.0} {on:>11.0} {on_off:>8.3} {on_tcp:>13.3} {records:>10.0} {lag:>9.0}"
        );
    }

    let burst: u64 = env_or("RECORDS_BENCH_BURST", "100000").parse()?;
    let producer = format!(
        "127.0.0.1:{}",
        stack.envoy.listener_port("test_record_producer")?
    );
    let delivered_before = stat(&stack.envoy, DELIVERED)?;
    let done_before = done(&stack.envoy)?;
    let start = Instant::now();
    // In requests of at most 10 000, so one producer callback stays short; in
    // parallel, since each answer's connection closes only after Envoy's
    // delayed-close timeout.
    let requests: Vec<_> = (0..burst.div_ceil(10_000))
        .map(|i| {
            let count = (burst - i * 10_000).min(10_000);
            let producer = producer.clone();
            std::thread::spawn(move || {
                http_get(
                    &producer,
                    &format!("/produce?session=burst{i}&count={count}&pad=300"),
                )
            })
        })
        .collect();
    settle_after(&stack.envoy, done_before + burst)?;
    let elapsed = start.elapsed().as_secs_f64();
    for request in requests {
        let (code, _) = request
            .join()
            .map_err(|_| anyhow::anyhow!("producer request panicked"))??;
        if code != 200 {
            bail!("record producer answered {code}");
        }
    }
    let delivered = stat(&stack.envoy, DELIVERED)? - delivered_before;
    println!(
        "record path alone: {burst} records of ~400 bytes, {delivered} delivered in {elapsed:.2} s = {:.0} records/s",
        delivered as f64 / elapsed
    );
    println!(
        "totals: produced {}, delivered {}, dropped {}",
        stat(&stack.envoy, PRODUCED)?,
        stat(&stack.envoy, DELIVERED)?,
        stat(&stack.envoy, DROPPED)?
    );
    Ok(())
}
