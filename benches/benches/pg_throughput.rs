//! End-to-end Postgres throughput: `pgbench -S` straight to PostgreSQL, through
//! Envoy's tcp_proxy alone, and through Envoy with gatehouse's Postgres filter,
//! in one run on one server, printing TPS and the gatehouse / tcp_proxy ratio.
//!
//! Needs the filter modules built (`cargo xtask build`, or `GATEHOUSE_WASM_DIR`)
//! and PostgreSQL, pgbench and Envoy installed (`cargo xtask install`). Run with
//! `cargo bench -p gatehouse-benches --bench pg_throughput`; environment knobs:
//! `PG_BENCH_SECONDS` (default 10), `PG_BENCH_CLIENTS` (4), `PG_BENCH_THREADS` (2).

use anyhow::Result;
use gatehouse_benches::pgbench;
use gatehouse_integration::{Stack, StackOptions};

fn main() -> Result<()> {
    if pgbench::skipped("pg_throughput") {
        return Ok(());
    }
    let stack = Stack::start(
        "bench",
        "pg_throughput",
        StackOptions {
            postgres: gatehouse_integration::postgres::PgOptions {
                seed_demo: true,
                log_statements: false,
            },
            ..StackOptions::default()
        },
    )?;
    pgbench::init(&stack)?;
    let (_baseline, baseline_port) = pgbench::start_tcp_proxy_baseline(&stack)?;

    println!("{}", pgbench::settings());
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>18}",
        "mode", "direct", "tcp_proxy", "gatehouse", "gatehouse/tcp_proxy"
    );
    for mode in ["simple", "prepared"] {
        let direct = pgbench::tps(stack.postgres.port, mode)?;
        let tcp_proxy = pgbench::tps(baseline_port, mode)?;
        let gatehouse = pgbench::tps(stack.pg_port, mode)?;
        println!(
            "{mode:<10} {direct:>12.0} {tcp_proxy:>12.0} {gatehouse:>12.0} {:>18.3}",
            gatehouse / tcp_proxy
        );
    }
    let statements = stack
        .envoy
        .stat("wasmcustom.gatehouse_pg_statements_total")?
        .unwrap_or(0);
    println!("statements the filter recorded: {statements}");
    Ok(())
}
