//! The native build against the Wasm build, in one run on one server.
//!
//! **Postgres.** `pgbench -S` (simple and prepared) through Envoy's tcp_proxy
//! alone, through the Wasm build and through the native build, both with the
//! demo configuration (token login as `app` with a developer token, the
//! statement policy, masking, and every statement's record delivered to the
//! access log), and through the native build with the same configuration but
//! no record delivery (`records off`: the records are made and counted as
//! dropped, which splits the filter's cost from the record path's): median TPS
//! over alternating rounds, and the Envoy CPU each
//! statement cost (user + system time of the Envoy process from `/proc`,
//! summed over the rounds, divided by the statements). All clients use
//! `sslmode=disable`, so the native build's TLS does not enter the figures.
//!
//! **Startup.** Envoy started with the Postgres listener only (tcp_proxy,
//! the Wasm filter, the native filter), from Envoy's own log: milliseconds
//! from the line that follows loading the bootstrap (`runtime: …`) to
//! "starting main dispatch loop", median of three starts; what a filter adds
//! over tcp_proxy is when its module is ready.
//!
//! Needs both builds (`cargo xtask build`, `cargo xtask build --native`) and
//! the tools (`cargo xtask install`). Run with `cargo bench -p
//! gatehouse-benches --bench native_throughput`; knobs as in
//! [`gatehouse_benches::pgbench`].

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use anyhow::{Context, Result};
use gatehouse_benches::cpu::Usage;
use gatehouse_benches::pgbench::{self, Login};
use gatehouse_integration::envoy::{Envoy, yaml_quote};
use gatehouse_integration::stack::{
    demo_postgres_filter_config, native_kubernetes_config, native_postgres_config,
};
use gatehouse_integration::{Stack, StackOptions, process, tools};
use serde_json::json;

/// One configuration under test.
struct Proxy {
    port: u16,
    pid: Option<u32>,
}

fn main() -> Result<()> {
    if pgbench::skipped("native_throughput") {
        return Ok(());
    }
    tools::native_module("gatehouse")?;
    let stack = Stack::start(
        "bench",
        "native_throughput",
        StackOptions {
            postgres_filter: demo_postgres_filter_config(),
            build: Some(tools::Build::Wasm),
            ..pgbench::stack_options()
        },
    )?;
    pgbench::init(&stack)?;
    stack
        .postgres
        .psql_in("shop", "grant select on all tables in schema public to app")?;
    let (baseline, baseline_port) = pgbench::start_tcp_proxy_baseline(&stack)?;
    let (native, native_port) = start_native_gateway(&stack, true)?;
    let (quiet, quiet_port) = start_native_gateway(&stack, false)?;
    let token = stack.token("developer")?;
    let login = Login {
        user: "app",
        password: Some(&token),
    };
    let proxies = [
        Proxy {
            port: baseline_port,
            pid: baseline.pid(),
        },
        Proxy {
            port: stack.pg_port,
            pid: stack.envoy.pid(),
        },
        Proxy {
            port: native_port,
            pid: native.pid(),
        },
        Proxy {
            port: quiet_port,
            pid: quiet.pid(),
        },
    ];
    let rounds: usize = pgbench::env_or("PG_BENCH_ROUNDS", "3").parse()?;
    println!(
        "{}; median of {rounds} alternating rounds; demo configuration (token login as app, \
         policy, masking, records to the access log; nat-norec: records not delivered); \
         sslmode=disable; cpu: Envoy µs per statement",
        pgbench::settings()
    );
    println!(
        "{:<9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} | {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "mode",
        "tcp_proxy",
        "wasm",
        "native",
        "nat-norec",
        "wasm/tcp",
        "nat/tcp",
        "norec/tcp",
        "cpu tcp",
        "cpu wasm",
        "cpu nat",
        "cpu norec",
        "wasm/tcp",
        "nat/tcp",
        "norec/tcp"
    );
    for mode in ["simple", "prepared"] {
        let mut tps: Vec<Vec<f64>> = vec![Vec::new(); proxies.len()];
        let mut cpu = vec![Usage::default(); proxies.len()];
        let mut statements = vec![0u64; proxies.len()];
        for _ in 0..rounds.max(1) {
            for (index, proxy) in proxies.iter().enumerate() {
                let before = Usage::now(proxy.pid);
                let run = pgbench::run_as(proxy.port, &login, &["-M", mode])?;
                let spent = Usage::now(proxy.pid).since(&before);
                if let (Some(samples), Some(total), Some(count)) = (
                    tps.get_mut(index),
                    cpu.get_mut(index),
                    statements.get_mut(index),
                ) {
                    samples.push(run.tps);
                    total.add(spent);
                    *count += run.transactions;
                }
            }
        }
        let median = |samples: &mut Vec<f64>| {
            samples.sort_by(f64::total_cmp);
            samples.get(samples.len() / 2).copied().unwrap_or_default()
        };
        let [tcp, wasm, native, quiet] =
            [0, 1, 2, 3].map(|i| tps.get_mut(i).map(median).unwrap_or_default());
        let [cpu_tcp, cpu_wasm, cpu_native, cpu_quiet] = [0, 1, 2, 3].map(|i| {
            cpu.get(i)
                .zip(statements.get(i))
                .map(|(usage, count)| usage.proxy_micros_per(*count))
                .unwrap_or_default()
        });
        println!(
            "{mode:<9} {tcp:>9.0} {wasm:>9.0} {native:>9.0} {quiet:>9.0} {:>9.3} {:>9.3} {:>9.3} | {cpu_tcp:>8.1} {cpu_wasm:>8.1} {cpu_native:>8.1} {cpu_quiet:>8.1} {:>9.2} {:>9.2} {:>9.2}",
            wasm / tcp,
            native / tcp,
            quiet / tcp,
            cpu_wasm / cpu_tcp,
            cpu_native / cpu_tcp,
            cpu_quiet / cpu_tcp,
        );
    }
    for (build, pg) in [
        ("wasm", stack.pg_stat("gatehouse_pg_statements_total")?),
        (
            "native",
            native.stat("dynamicmodulescustom.gatehouse_pg_statements_total")?,
        ),
    ] {
        println!(
            "statements the {build} filter recorded: {}",
            pg.unwrap_or(0)
        );
    }
    drop(quiet);
    drop(native);
    drop(baseline);
    startup(&stack)?;
    Ok(())
}

/// A second gateway in front of the stack's PostgreSQL and identity provider,
/// from `envoy/gatehouse-native.yaml`, with its own record listener, to which
/// the native filter delivers records when `records` holds.
fn start_native_gateway(stack: &Stack, records: bool) -> Result<(Envoy, u16)> {
    let records_port = process::free_port()?;
    let modules = tools::filter_modules()?;
    pgbench::start_envoy(
        stack,
        if records {
            "native_gateway"
        } else {
            "native_gateway_norec"
        },
        "gatehouse-native.yaml",
        &[
            ("KUBE_PORT", "0".into()),
            ("KUBE_UPSTREAM_PORT", stack.kube_upstream.port().to_string()),
            ("IDP_PORT", stack.idp.port().to_string()),
            ("KUBE_WASM", modules.kubernetes.display().to_string()),
            ("KUBE_CONFIG", yaml_quote("{}")),
            (
                "KUBE_NATIVE_CONFIG",
                yaml_quote(&native_kubernetes_config(&json!({}), records_port).to_string()),
            ),
            ("RECORDS_PORT", records_port.to_string()),
            (
                "PG_NATIVE_CONFIG",
                yaml_quote(
                    &native_postgres_config(
                        &demo_postgres_filter_config(),
                        records.then_some(records_port),
                    )
                    .to_string(),
                ),
            ),
        ],
    )
}

/// Milliseconds from the line that follows loading the bootstrap (`runtime:`)
/// to "starting main dispatch loop" in an Envoy log.
fn startup_millis(log: &str) -> Option<f64> {
    let at = |marker: &str| {
        log.lines()
            .find(|line| line.contains(marker))
            .and_then(|line| line.get(1..24))
            .and_then(|stamp| {
                // [2026-12-07 02:29:35.525]: seconds within the day suffice.
                let time = stamp.get(11..)?;
                let mut parts = time.split(':');
                let hours: f64 = parts.next()?.parse().ok()?;
                let minutes: f64 = parts.next()?.parse().ok()?;
                let seconds: f64 = parts.next()?.parse().ok()?;
                Some((hours * 3600.0 + minutes * 60.0 + seconds) * 1000.0)
            })
    };
    Some(at("starting main dispatch loop")? - at("] runtime: ")?)
}

/// A bootstrap to time: its name, the template and its extra variables.
type Variant = (&'static str, &'static str, Vec<(&'static str, String)>);

/// Starts Envoy with the Postgres listener only, three times for each of
/// tcp_proxy, the Wasm filter and the native filter, and prints the medians.
fn startup(stack: &Stack) -> Result<()> {
    let config = yaml_quote(&json!({}).to_string());
    let native_config = yaml_quote(&native_postgres_config(&json!({}), None).to_string());
    let variants: [Variant; 3] = [
        ("tcp_proxy", "tcp-proxy-baseline.yaml", vec![]),
        ("wasm", "postgres.yaml", vec![("PG_CONFIG", config)]),
        (
            "native",
            "postgres-native.yaml",
            vec![("PG_NATIVE_CONFIG", native_config)],
        ),
    ];
    println!("\nstartup: ms from the bootstrap loaded to the main dispatch loop (median of 3)");
    let mut medians = Vec::new();
    for (name, template, vars) in &variants {
        let mut samples = Vec::new();
        for attempt in 0..3 {
            let (envoy, _) =
                pgbench::start_envoy(stack, &format!("startup_{name}_{attempt}"), template, vars)?;
            let log = std::fs::read_to_string(envoy.log_path())?;
            samples.push(
                startup_millis(&log)
                    .with_context(|| format!("no startup milestones in the {name} log"))?,
            );
        }
        samples.sort_by(f64::total_cmp);
        let median = samples.get(1).copied().unwrap_or_default();
        medians.push(median);
        println!("{name:<10} {median:>8.1} ms");
    }
    if let [tcp, wasm, native] = medians.as_slice() {
        println!(
            "module ready after Envoy loads its config: wasm +{:.1} ms, native +{:.1} ms over tcp_proxy",
            wasm - tcp,
            native - tcp
        );
    }
    Ok(())
}
