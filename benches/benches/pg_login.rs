//! End-to-end cost of token login: `pgbench -S -C` (a new connection, hence a
//! new token login, per transaction) through Envoy's tcp_proxy alone and
//! through Envoy with gatehouse's Postgres filter in its demo configuration
//! (token login, statement policy, masking), in one run on one server, printing
//! TPS and the gatehouse / tcp_proxy ratio. The same pair without `-C` shows the
//! per-statement cost on long-lived sessions for comparison.
//!
//! Needs the filter modules built and the tools installed (see pg_throughput).
//! Run with `cargo bench -p gatehouse-benches --bench pg_login`; knobs as in
//! [`gatehouse_benches::pgbench`].

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use anyhow::Result;
use gatehouse_benches::pgbench::{self, Login};
use gatehouse_integration::stack::demo_postgres_filter_config;
use gatehouse_integration::{Stack, StackOptions};

fn main() -> Result<()> {
    if pgbench::skipped("pg_login") {
        return Ok(());
    }
    let stack = Stack::start(
        "bench",
        "pg_login",
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
    let (_baseline, baseline_port) = pgbench::start_tcp_proxy_baseline(&stack)?;
    let token = stack.token("developer")?;
    let login = Login {
        user: "app",
        password: Some(&token),
    };

    println!(
        "{}; logged in as app with a developer token",
        pgbench::settings()
    );
    println!(
        "{:<28} {:>12} {:>12} {:>20}",
        "mode", "tcp_proxy", "gatehouse", "gatehouse/tcp_proxy"
    );
    for (name, extra) in [
        ("new connection per txn (-C)", &["-C"][..]),
        ("long-lived sessions", &[][..]),
    ] {
        let tcp_proxy = pgbench::tps_as(baseline_port, &login, extra)?;
        let gatehouse = pgbench::tps_as(stack.pg_port, &login, extra)?;
        println!(
            "{name:<28} {tcp_proxy:>12.0} {gatehouse:>12.0} {:>20.3}",
            gatehouse / tcp_proxy
        );
    }
    Ok(())
}
