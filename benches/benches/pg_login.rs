//! End-to-end cost of token login: `pgbench -S -C` (a new connection, hence a
//! new token login, per transaction) through Envoy's tcp_proxy alone and
//! through Envoy with gatehouse's Postgres filter in its demo configuration
//! (token login, statement policy, masking), in one run on one server. The same
//! pair without `-C` shows the per-statement cost on long-lived sessions for
//! comparison.
//!
//! Rounds interleave every configuration (each round runs both modes through
//! both proxies, in turn); the bench prints the median TPS and the median
//! Envoy CPU per transaction (read from /proc around each run and divided by
//! the transactions pgbench counted), with gatehouse / tcp_proxy ratios. It
//! fails unless every run completed without a failed transaction and the
//! filter's counters show that it did the work: a token login per `-C`
//! transaction, none refused, and every statement of the long-lived sessions.
//!
//! Needs the filter modules built and the tools installed (see pg_throughput).
//! Run with `cargo bench -p gatehouse-benches --bench pg_login`; knobs as in
//! [`gatehouse_benches::pgbench`] (`PG_BENCH_SECONDS`, `PG_BENCH_CLIENTS`,
//! `PG_BENCH_THREADS`, `PG_BENCH_ROUNDS`). With `PG_LOGIN_NO_CATALOG=1` the
//! filter runs the demo configuration without what makes a session send the
//! engine's own catalog queries (masking's table rules and the fast-path
//! functions): what the login costs were those queries free.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use anyhow::{Result, bail};
use gatehouse_benches::pgbench::{self, Login, Samples, env_or};
use gatehouse_integration::stack::demo_postgres_filter_config;
use gatehouse_integration::{Stack, StackOptions};

/// The two modes measured, with their extra pgbench arguments.
const MODES: [(&str, &[&str]); 2] = [
    ("new connection per txn (-C)", &["-C"]),
    ("long-lived sessions", &[]),
];

fn main() -> Result<()> {
    if pgbench::skipped("pg_login") {
        return Ok(());
    }
    let stack = Stack::start(
        "bench",
        "pg_login",
        StackOptions {
            postgres_filter: filter_config(),
            token_ttl_seconds: 3600,
            ..pgbench::stack_options()
        },
    )?;
    pgbench::init(&stack)?;
    stack
        .postgres
        .psql_in("shop", "grant select on all tables in schema public to app")?;
    let (baseline, baseline_port) = pgbench::start_tcp_proxy_baseline(&stack)?;
    let token = stack.token("developer")?;
    let login = Login {
        user: "app",
        password: Some(&token),
    };
    let rounds: usize = env_or("PG_BENCH_ROUNDS", "3").parse()?;
    let proxies = [
        (baseline.pid(), baseline_port),
        (stack.envoy.pid(), stack.pg_port),
    ];

    // [mode][proxy]: 0 tcp_proxy, 1 gatehouse.
    let mut samples: [[Samples; 2]; 2] = Default::default();
    let counters = [
        "gatehouse_pg_logins_total",
        "gatehouse_pg_login_failures_total",
        "gatehouse_pg_statements_total",
    ];
    let read_counters = || -> Result<[u64; 3]> {
        let mut values = [0; 3];
        for (value, name) in values.iter_mut().zip(counters) {
            *value = stack.pg_stat(name)?.unwrap_or(0);
        }
        Ok(values)
    };
    for _ in 0..rounds.max(1) {
        for ((_, extra), by_proxy) in MODES.iter().zip(samples.iter_mut()) {
            for ((pid, port), samples) in proxies.iter().zip(by_proxy.iter_mut()) {
                let gatehouse = *port == stack.pg_port;
                let counted_before = read_counters()?;
                let measured = pgbench::measure(*port, *pid, &login, extra)?;
                samples.push(&measured);
                if gatehouse {
                    check_work(
                        counted_before,
                        read_counters()?,
                        extra,
                        measured.run.transactions,
                    )?;
                }
            }
        }
    }

    println!(
        "{}; logged in as app with a developer token; median of {rounds} interleaved rounds; \
         cpu: Envoy µs per transaction",
        pgbench::settings()
    );
    println!(
        "{:<28} {:>10} {:>10} {:>8} | {:>9} {:>9} {:>8}",
        "mode", "tcp_proxy", "gatehouse", "ratio", "cpu tcp", "cpu gh", "ratio"
    );
    for ((name, _), [tcp, gatehouse]) in MODES.iter().zip(samples) {
        let (tps_tcp, tps_gh) = (tcp.median_tps(), gatehouse.median_tps());
        let (cpu_tcp, cpu_gh) = (tcp.median_cpu(), gatehouse.median_cpu());
        println!(
            "{name:<28} {tps_tcp:>10.0} {tps_gh:>10.0} {:>8.3} | {cpu_tcp:>9.1} {cpu_gh:>9.1} {:>8.2}",
            tps_gh / tps_tcp,
            cpu_gh / cpu_tcp
        );
    }
    Ok(())
}

/// The demo configuration, without the catalog queries' causes under
/// `PG_LOGIN_NO_CATALOG=1`.
fn filter_config() -> serde_json::Value {
    let mut config = demo_postgres_filter_config();
    if env_or("PG_LOGIN_NO_CATALOG", "") == "1" {
        if let Some(rules) = config.pointer_mut("/masking/rules") {
            *rules = serde_json::json!([]);
        }
        if let Some(engine) = config.get_mut("engine").and_then(|e| e.as_object_mut()) {
            engine.remove("fast_path_functions");
        }
        println!("without the catalog queries (PG_LOGIN_NO_CATALOG=1)");
    }
    config
}

/// Fails unless the filter's counters grew by what one gatehouse run did:
/// under `-C` a successful token login per transaction; otherwise at least
/// one recorded statement per transaction; never a refused login.
fn check_work(before: [u64; 3], after: [u64; 3], extra: &[&str], transactions: u64) -> Result<()> {
    let [logins, failures, statements] = [0, 1, 2].map(|i| {
        after
            .get(i)
            .zip(before.get(i))
            .map_or(0, |(a, b)| a.saturating_sub(*b))
    });
    if failures > 0 {
        bail!("the filter refused {failures} token logins");
    }
    if extra.contains(&"-C") && logins < transactions {
        bail!("{transactions} transactions with -C but only {logins} token logins");
    }
    if statements < transactions {
        bail!("{transactions} transactions but the filter counted {statements} statements");
    }
    Ok(())
}
