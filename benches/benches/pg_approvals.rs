//! What approvals cost the statements that need none: `pgbench -S` through the
//! Postgres filter (`envoy/postgres.yaml`) with the demo policy applied to
//! pgbench's user, once without the approval service and once connected to it
//! (its grants polled, its `customer-writes` rule in force for that user), in
//! alternating rounds. pgbench's SELECTs match no `require_approval` rule, so
//! the hot path should not change: the bench prints TPS and Envoy's CPU per
//! transaction for both, and their ratios. It fails unless the policy is in
//! force through both (a TRUNCATE refused, pgbench's SELECT allowed).
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
use gatehouse_benches::pgbench::{self, Login, Samples, env_or};
use gatehouse_integration::approvals::filter_section;
use gatehouse_integration::envoy::yaml_quote;
use gatehouse_integration::stack::ApprovalOptions;
use gatehouse_integration::{Stack, StackOptions};
use serde_json::{Value, json};

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
    for port in [without_port, with_port] {
        pgbench::check_policy_in_force(port, &Login::superuser())?;
    }
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
        let mut samples = [Samples::default(), Samples::default()];
        for _ in 0..rounds.max(1) {
            for ((envoy, port), samples) in [(&without, without_port), (&with, with_port)]
                .into_iter()
                .zip(samples.iter_mut())
            {
                let extra = ["-M", mode];
                samples.push(&pgbench::measure(
                    port,
                    envoy.pid(),
                    &Login::superuser(),
                    &extra,
                )?);
            }
        }
        let [tps_without, tps_with] = samples.each_ref().map(Samples::median_tps);
        let [cpu_without, cpu_with] = samples.each_ref().map(Samples::median_cpu);
        println!(
            "{mode:<10} {tps_without:>14.0} {tps_with:>14.0} {:>8.3} {cpu_without:>18.1} {cpu_with:>18.1} {:>8.3}",
            tps_with / tps_without,
            cpu_with / cpu_without
        );
    }
    Ok(())
}
