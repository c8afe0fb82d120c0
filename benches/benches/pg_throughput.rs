//! End-to-end Postgres throughput: `pgbench -S` straight to PostgreSQL, through
//! Envoy's tcp_proxy alone, and through Envoy with gatehouse's Postgres filter,
//! in one run on one server, printing TPS and the gatehouse / tcp_proxy ratio.
//!
//! The `wasm no-op` column loads a Wasm filter that does nothing in the
//! Postgres filter's place: what Envoy's Wasm runtime costs by itself, the
//! floor under every gatehouse figure.
//!
//! The policy columns compare the filter alone (`envoy/postgres.yaml`, no record
//! delivery) without a statement policy and with the demo policy
//! (`examples/postgres-policy.json`) applied to pgbench's user: the demo's rules
//! for the developer groups are made to match the subject `postgres`, so every
//! SELECT runs the whole rule list (through the decision cache) before it is allowed.
//!
//! Needs the filter modules built (`cargo xtask build`, or `GATEHOUSE_WASM_DIR`)
//! and PostgreSQL, pgbench and Envoy installed (`cargo xtask install`). Run with
//! `cargo bench -p gatehouse-benches --bench pg_throughput`; environment knobs:
//! `PG_BENCH_SECONDS` (default 10), `PG_BENCH_CLIENTS` (4), `PG_BENCH_THREADS` (2),
//! `PG_BENCH_ROUNDS` (3: every configuration runs once per round, in turn, and
//! the median is printed, so a noisy moment on a shared machine hits one round
//! of every configuration rather than one configuration).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use anyhow::Result;
use gatehouse_benches::pgbench;
use gatehouse_integration::envoy::{Envoy, yaml_quote};
use gatehouse_integration::{Stack, StackOptions};
use serde_json::{Value, json};

/// An Envoy with only the Postgres filter, configured with `config`.
fn start_filter_only(stack: &Stack, name: &str, config: &Value) -> Result<(Envoy, u16)> {
    pgbench::start_envoy(
        stack,
        name,
        "postgres.yaml",
        &[("PG_CONFIG", yaml_quote(&config.to_string()))],
    )
}

fn main() -> Result<()> {
    if pgbench::skipped("pg_throughput") {
        return Ok(());
    }
    let stack = Stack::start(
        "bench",
        "pg_throughput",
        StackOptions {
            ..pgbench::stack_options()
        },
    )?;
    pgbench::init(&stack)?;
    let (_baseline, baseline_port) = pgbench::start_tcp_proxy_baseline(&stack)?;
    let (_noop, noop_port) = pgbench::start_noop_filter(&stack)?;
    let (_unpoliced, filter_port) = start_filter_only(&stack, "filter", &json!({}))?;
    let (_policed, policy_port) = start_filter_only(
        &stack,
        "filter_policy",
        &json!({"policy": pgbench::demo_policy_for_pgbench()}),
    )?;

    println!(
        "{}; median of {} alternating rounds",
        pgbench::settings(),
        pgbench::env_or("PG_BENCH_ROUNDS", "3")
    );
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>14} {:>20} {:>17}",
        "mode",
        "direct",
        "tcp_proxy",
        "wasm no-op",
        "gatehouse",
        "filter",
        "+policy",
        "no-op/tcp_proxy",
        "gatehouse/tcp_proxy",
        "policy/tcp_proxy"
    );
    let ports = [
        stack.postgres.port,
        baseline_port,
        noop_port,
        stack.pg_port,
        filter_port,
        policy_port,
    ];
    for mode in ["simple", "prepared"] {
        let [direct, tcp_proxy, noop, gatehouse, filter, policy] =
            pgbench::median_tps_alternating(&ports, mode)?;
        println!(
            "{mode:<10} {direct:>10.0} {tcp_proxy:>10.0} {noop:>10.0} {gatehouse:>10.0} {filter:>10.0} {policy:>10.0} {:>14.3} {:>20.3} {:>17.3}",
            noop / tcp_proxy,
            gatehouse / tcp_proxy,
            policy / tcp_proxy
        );
    }
    let statements = stack
        .envoy
        .stat("wasmcustom.gatehouse_pg_statements_total")?
        .unwrap_or(0);
    println!("statements the filter recorded: {statements}");
    Ok(())
}
