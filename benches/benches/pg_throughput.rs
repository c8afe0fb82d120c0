//! End-to-end Postgres throughput: `pgbench -S` straight to PostgreSQL, through
//! Envoy's tcp_proxy alone, and through Envoy with gatehouse's Postgres filter,
//! in one run on one server, printing TPS and the gatehouse / tcp_proxy ratio.
//!
//! Needs the filter modules built (`cargo xtask build`, or `GATEHOUSE_WASM_DIR`)
//! and PostgreSQL, pgbench and Envoy installed (`cargo xtask install`). Run with
//! `cargo bench -p gatehouse-benches --bench pg_throughput`; environment knobs:
//! `PG_BENCH_SECONDS` (default 10), `PG_BENCH_CLIENTS` (4), `PG_BENCH_THREADS` (2).

use anyhow::{Context, Result, bail};
use gatehouse_integration::envoy::{self, Envoy};
use gatehouse_integration::{Stack, StackOptions, scratch_dir, tools};
use std::collections::BTreeMap;
use std::process::Command;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Runs `pgbench -S` against 127.0.0.1:`port` and returns its TPS.
fn pgbench_tps(port: u16, mode: &str) -> Result<f64> {
    let out = Command::new(tools::pg_client("pgbench")?)
        .args(["-n", "-S", "-M", mode, "-h", "127.0.0.1", "-U", "postgres"])
        .arg("-p")
        .arg(port.to_string())
        .arg("-c")
        .arg(env_or("PG_BENCH_CLIENTS", "4"))
        .arg("-j")
        .arg(env_or("PG_BENCH_THREADS", "2"))
        .arg("-T")
        .arg(env_or("PG_BENCH_SECONDS", "10"))
        .arg("shop")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !text.contains("number of failed transactions: 0") {
        bail!("pgbench reported failures:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no tps line in pgbench output:\n{text}"))
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; a filter argument that is not ours means skip.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && a != "pg_throughput")
    {
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
    let init = Command::new(tools::pg_client("pgbench")?)
        .args(["-i", "-q", "-s", "10", "-d"])
        .arg(stack.postgres.direct_url("shop"))
        .output()?;
    if !init.status.success() {
        bail!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }

    let baseline_dir = scratch_dir("bench", "tcp_proxy")?;
    let template = std::fs::read_to_string(
        gatehouse_integration::workspace_root().join("envoy/tcp-proxy-baseline.yaml"),
    )?;
    let mut vars = BTreeMap::new();
    vars.insert("PG_UPSTREAM_PORT", stack.postgres.port.to_string());
    let baseline = Envoy::start(&baseline_dir, &envoy::render(&template, &vars)?)?;
    let baseline_port = baseline.listener_port("postgres")?;

    println!(
        "pgbench -S, {} clients, {} threads, {} s per run; Envoy --concurrency 2",
        env_or("PG_BENCH_CLIENTS", "4"),
        env_or("PG_BENCH_THREADS", "2"),
        env_or("PG_BENCH_SECONDS", "10")
    );
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>18}",
        "mode", "direct", "tcp_proxy", "gatehouse", "gatehouse/tcp_proxy"
    );
    for mode in ["simple", "prepared"] {
        let direct = pgbench_tps(stack.postgres.port, mode)?;
        let tcp_proxy = pgbench_tps(baseline_port, mode)?;
        let gatehouse = pgbench_tps(stack.pg_port, mode)?;
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
