//! What approvals cost the statements that need none: `pgbench -S` through the
//! Postgres filter (`envoy/postgres.yaml`) with the demo policy applied to
//! pgbench's user, once without the approval service and once connected to it
//! (its grants polled, its `customer-writes` rule in force for that user), in
//! alternating rounds. pgbench's SELECTs match no `require_approval` rule, so
//! the hot path should not change: the bench prints TPS and Envoy's CPU per
//! transaction for both, and their ratios.
//!
//! Run with `cargo bench -p gatehouse-benches --bench pg_approvals`; the knobs
//! are `pg_throughput`'s (`PG_BENCH_SECONDS`, `PG_BENCH_CLIENTS`,
//! `PG_BENCH_THREADS`, `PG_BENCH_ROUNDS`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use anyhow::Result;
use gatehouse_benches::cpu::Usage;
use gatehouse_benches::pgbench::{self, env_or};
use gatehouse_integration::approvals::filter_section;
use gatehouse_integration::envoy::yaml_quote;
use gatehouse_integration::stack::ApprovalOptions;
use gatehouse_integration::{Stack, StackOptions};
use serde_json::{Value, json};

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn main() -> Result<()> {
    if pgbench::skipped("pg_approvals") {
        return Ok(());
    }
    let stack = Stack::start(
        "bench",
        "pg_approvals",
        StackOptions {
            approvals: Some(ApprovalOptions {
                replicas: 1,
                webhook: None,
            }),
            ..pgbench::stack_options()
        },
    )?;
    pgbench::init(&stack)?;
    let service_port = stack
        .approvals
        .as_ref()
        .map(|service| service.port(0))
        .unwrap_or_default();
    let policy = json!({"policy": pgbench::demo_policy_for_pgbench()});
    let mut connected = policy.clone();
    if let Some(fields) = connected.as_object_mut() {
        fields.insert("approvals".into(), filter_section(1000));
    }
    let start = |name: &str, config: &Value| {
        pgbench::start_envoy(
            &stack,
            name,
            "postgres.yaml",
            &[
                ("PG_CONFIG", yaml_quote(&config.to_string())),
                ("APPROVALS_PORT", service_port.to_string()),
            ],
        )
    };
    let (without, without_port) = start("policy", &policy)?;
    let (with, with_port) = start("policy_approvals", &connected)?;
    let seconds: f64 = env_or("PG_BENCH_SECONDS", "10").parse()?;
    let rounds: usize = env_or("PG_BENCH_ROUNDS", "3").parse()?;
    println!(
        "{}; median of {rounds} alternating rounds",
        pgbench::settings()
    );
    println!(
        "{:<10} {:>14} {:>14} {:>8} {:>18} {:>18} {:>8}",
        "mode", "TPS policy", "+approvals", "ratio", "Envoy µs/tx", "+approvals", "ratio"
    );
    for mode in ["simple", "prepared"] {
        let mut tps = [Vec::new(), Vec::new()];
        let mut cpu = [Vec::new(), Vec::new()];
        for _ in 0..rounds.max(1) {
            for ((envoy, port), (tps, cpu)) in [(&without, without_port), (&with, with_port)]
                .into_iter()
                .zip(tps.iter_mut().zip(cpu.iter_mut()))
            {
                let before = Usage::now(envoy.pid());
                let rate = pgbench::tps(port, mode)?;
                let spent = Usage::now(envoy.pid()).since(&before);
                let transactions = (rate * seconds).max(1.0);
                tps.push(rate);
                cpu.push(spent.proxy.as_secs_f64() * 1e6 / transactions);
            }
        }
        let [tps_without, tps_with] = tps.map(median);
        let [cpu_without, cpu_with] = cpu.map(median);
        println!(
            "{mode:<10} {tps_without:>14.0} {tps_with:>14.0} {:>8.3} {cpu_without:>18.1} {cpu_with:>18.1} {:>8.3}",
            tps_with / tps_without,
            cpu_with / cpu_without
        );
    }
    Ok(())
}
