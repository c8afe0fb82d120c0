//! End-to-end Postgres cost per statement: `pgbench -S` (simple and prepared)
//! through five Envoy configurations in front of one server, every one logged
//! in as the same user (`app`):
//!
//! - `tcp_proxy`: Envoy's tcp_proxy alone, the baseline;
//! - `no-op`: a Wasm filter that does nothing in the Postgres filter's place
//!   (`benches/noop-filter`): what Envoy's Wasm runtime alone costs, the
//!   floor under every Wasm figure;
//! - `engine`: the Postgres filter with no configuration (`envoy/postgres.yaml`,
//!   `{}`): framing, the ledger and records made but not delivered;
//! - `+pol+mask`: the same with the demo's statement policy (its developer
//!   rules made to match the subject `app`, so every statement runs the whole
//!   rule list) and the demo's masking rules;
//! - `full demo`: the demo gateway (`envoy/gatehouse.yaml` with
//!   `examples/postgres-filter.json`): token login as `app` with a developer
//!   token, the policy, masking, and every statement's record delivered to the
//!   access log.
//!
//! Each round runs both modes through every configuration in turn, so a noisy
//! moment on the shared machine hits one round of each rather than one
//! configuration. Per run, Envoy's CPU is read from /proc around pgbench and
//! divided by the transactions pgbench counted (one statement each under
//! `-S`); the bench prints the medians over the rounds of TPS and of Envoy µs
//! per statement, and the two ratios the cost target names: full demo CPU /
//! tcp_proxy CPU (target at most 1.4) and full demo TPS / no-op TPS (target
//! at least 0.90).
//!
//! A broken path must not pass for a fast one, so it fails unless: the policy
//! refuses a TRUNCATE and allows pgbench's SELECT through both policy
//! configurations, masking masks the demo customers' e-mails through both,
//! every run's statements were counted by the filter, and every record of the
//! full demo arrived (delivered, none dropped).
//!
//! Needs the filter modules built (`cargo xtask build`, or `GATEHOUSE_WASM_DIR`)
//! and PostgreSQL, pgbench and Envoy installed (`cargo xtask install`). Run with
//! `cargo bench -p gatehouse-benches --bench pg_throughput`; knobs:
//! `PG_BENCH_SECONDS` (default 10), `PG_BENCH_CLIENTS` (4), `PG_BENCH_THREADS` (2),
//! `PG_BENCH_ROUNDS` (3).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use anyhow::{Result, bail};
use gatehouse_benches::cpu::wait_until_idle;
use gatehouse_benches::pgbench::{self, Login, Samples, env_or};
use gatehouse_integration::envoy::{Envoy, yaml_quote};
use gatehouse_integration::stack::{demo_postgres_filter_config, example};
use gatehouse_integration::{Stack, StackOptions};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The user every configuration logs in as.
const USER: &str = "app";
const STATEMENTS: &str = "gatehouse_pg_statements_total";
const PRODUCED: &str = "gatehouse_records_produced";
const DELIVERED: &str = "gatehouse_records_delivered";
const DROPPED: &str = "gatehouse_records_dropped";

/// One configuration under test.
struct Proxy<'a> {
    name: &'static str,
    port: u16,
    envoy: &'a Envoy,
    /// The prefix of its filter's stats; `None` for the configurations
    /// without the Postgres filter.
    stats: Option<&'static str>,
    login: Login<'a>,
    /// Delivers its records (the full demo): its runs end when they arrived.
    delivers_records: bool,
}

impl Proxy<'_> {
    fn stat(&self, name: &str) -> Result<u64> {
        match self.stats {
            Some(prefix) => Ok(self.envoy.stat(&format!("{prefix}{name}"))?.unwrap_or(0)),
            None => Ok(0),
        }
    }
}

/// An Envoy with only the Postgres filter, configured with `config`.
fn start_filter_only(stack: &Stack, name: &str, config: &Value) -> Result<(Envoy, u16)> {
    pgbench::start_envoy(
        stack,
        name,
        "postgres.yaml",
        &[("PG_CONFIG", yaml_quote(&config.to_string()))],
    )
}

/// Waits until the full demo's records so far are all delivered or dropped,
/// so their delivery is counted in the run that made them.
fn settle_records(proxy: &Proxy<'_>) -> Result<()> {
    let start = Instant::now();
    while proxy.stat(DELIVERED)? + proxy.stat(DROPPED)? < proxy.stat(PRODUCED)? {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("records still undelivered 60 s after the run");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn main() -> Result<()> {
    if pgbench::skipped("pg_throughput") {
        return Ok(());
    }
    let stack = Stack::start(
        "bench",
        "pg_throughput",
        StackOptions {
            postgres_filter: demo_postgres_filter_config(),
            token_ttl_seconds: 3600,
            ..pgbench::stack_options()
        },
    )?;
    pgbench::init(&stack)?;
    stack
        .postgres
        .psql_in("shop", "grant select on all tables in schema public to app")?;
    let prefix = stack.build.stat_prefix();
    let (baseline, baseline_port) = pgbench::start_tcp_proxy_baseline(&stack)?;
    let (noop, noop_port) = pgbench::start_noop_filter(&stack)?;
    let (engine, engine_port) = start_filter_only(&stack, "engine", &json!({}))?;
    let (policed, policed_port) = start_filter_only(
        &stack,
        "policy_masking",
        &json!({
            "policy": pgbench::demo_policy_for_subject(USER),
            "masking": example("postgres-masking.json"),
        }),
    )?;
    let token = stack.token("developer")?;
    let plain = || Login {
        user: USER,
        password: None,
    };
    let proxies = [
        Proxy {
            name: "tcp_proxy",
            port: baseline_port,
            envoy: &baseline,
            stats: None,
            login: plain(),
            delivers_records: false,
        },
        Proxy {
            name: "no-op",
            port: noop_port,
            envoy: &noop,
            stats: None,
            login: plain(),
            delivers_records: false,
        },
        Proxy {
            name: "engine",
            port: engine_port,
            envoy: &engine,
            stats: Some(prefix),
            login: plain(),
            delivers_records: false,
        },
        Proxy {
            name: "+pol+mask",
            port: policed_port,
            envoy: &policed,
            stats: Some(prefix),
            login: plain(),
            delivers_records: false,
        },
        Proxy {
            name: "full demo",
            port: stack.pg_port,
            envoy: &stack.envoy,
            stats: Some(prefix),
            login: Login {
                user: USER,
                password: Some(&token),
            },
            delivers_records: true,
        },
    ];
    let [_, _, _, policed, full] = &proxies;
    for proxy in [policed, full] {
        pgbench::check_policy_in_force(proxy.port, &proxy.login)?;
        pgbench::check_masking_in_force(proxy.port, &proxy.login)?;
    }
    let pids: Vec<u32> = proxies.iter().filter_map(|p| p.envoy.pid()).collect();
    if !wait_until_idle(&pids, Duration::from_secs(120)) {
        bail!("the Envoys did not settle within 120 s of starting");
    }
    let delivered_before = full.stat(DELIVERED)?;
    let dropped_before = full.stat(DROPPED)?;

    let modes = ["simple", "prepared"];
    let rounds: usize = env_or("PG_BENCH_ROUNDS", "3").parse()?;
    // [mode][proxy]
    let mut samples: Vec<Vec<Samples>> = vec![vec![Samples::default(); proxies.len()]; 2];
    for _ in 0..rounds.max(1) {
        for (mode, by_proxy) in modes.iter().zip(samples.iter_mut()) {
            for (proxy, samples) in proxies.iter().zip(by_proxy.iter_mut()) {
                let counted_before = proxy.stat(STATEMENTS)?;
                let pid = proxy.envoy.pid();
                let extra = ["-M", *mode];
                let measured = if proxy.delivers_records {
                    pgbench::measure_until(proxy.port, pid, &proxy.login, &extra, || {
                        settle_records(proxy)
                    })?
                } else {
                    pgbench::measure(proxy.port, pid, &proxy.login, &extra)?
                };
                let counted = proxy.stat(STATEMENTS)?.saturating_sub(counted_before);
                if proxy.stats.is_some() && counted < measured.run.transactions {
                    bail!(
                        "{}: pgbench processed {} transactions but the filter counted {counted} statements",
                        proxy.name,
                        measured.run.transactions
                    );
                }
                samples.push(&measured);
            }
        }
    }
    let delivered = full.stat(DELIVERED)?.saturating_sub(delivered_before);
    let dropped = full.stat(DROPPED)?.saturating_sub(dropped_before);
    let full_transactions: u64 = samples
        .iter()
        .filter_map(|by_proxy| by_proxy.last())
        .map(|s| s.transactions)
        .sum();
    if dropped > 0 || delivered < full_transactions {
        bail!(
            "full demo: {full_transactions} statements, but {delivered} records delivered and {dropped} dropped"
        );
    }

    println!(
        "{}; login as {USER} everywhere (full demo: developer token); median of {rounds} \
         interleaved rounds; cpu: Envoy µs per statement (pgbench's count)",
        pgbench::settings()
    );
    let width = 11 * proxies.len();
    println!(
        "{:<9}{:>width$} |{:>width$} |",
        "", "TPS", "Envoy µs per statement"
    );
    print!("{:<9}", "mode");
    for _ in ["TPS", "cpu"] {
        for proxy in &proxies {
            print!(" {:>10}", proxy.name);
        }
        print!(" |");
    }
    println!(" {:>13} {:>14}", "cpu full/tcp", "tps full/no-op");
    for (mode, by_proxy) in modes.iter().zip(&samples) {
        print!("{mode:<9}");
        for samples in by_proxy {
            print!(" {:>10.0}", samples.median_tps());
        }
        print!(" |");
        for samples in by_proxy {
            print!(" {:>10.1}", samples.median_cpu());
        }
        let at = |index: usize| by_proxy.get(index).cloned().unwrap_or_default();
        println!(
            " {:>13.2} {:>14.3}",
            at(4).median_cpu() / at(0).median_cpu(),
            at(4).median_tps() / at(1).median_tps()
        );
    }
    println!(
        "targets (full demo): cpu/tcp_proxy at most 1.40, tps/no-op at least 0.90; \
         records delivered {delivered}, dropped {dropped}"
    );
    Ok(())
}
