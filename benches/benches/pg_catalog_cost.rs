//! What the engine's own catalog queries cost PostgreSQL on a new connection:
//! `pgbench -C` straight against the server (no Envoy), each transaction one
//! new connection that sends one script, in interleaved rounds:
//!
//! - `bare`: pgbench's `-S` statement alone (what a connection through
//!   tcp_proxy costs the server);
//! - `fast path`: the fast-path functions lookup (`fastpath::lookup_sql` for
//!   the demo's large-object functions) ahead of it, as one Query;
//! - `masking`: the masking catalog lookup (`masking::catalog::lookup_sql`
//!   for the demo's rules) ahead of it;
//! - `both`: both lookups ahead of it, as a session through the demo
//!   configuration sends them;
//! - `validate`: instead of the masking lookup, the least a validation of a
//!   cached lookup answer must read to be sound (each rule's table and column
//!   by name, with the attribute row's version, and the rewrite rules that
//!   depend on each masked column, with their versions): what a per-worker
//!   cache checked per session would cost;
//! - `versioned`: a call of a function an administrator would install next to
//!   an event trigger that bumps a catalog version on every DDL (both set up
//!   here): it answers nothing while the caller's cached version is current,
//!   and runs the lookup otherwise (here it is current).
//!
//! It prints, per script, the median server CPU per connection (user + system
//! of the backends that ended, read from the postmaster's `/proc` entry) and
//! the median connections per second, with the difference to `bare`. It fails
//! unless every run completed without a failed transaction, the masking
//! lookup finds the demo's three masked columns, and after the runs a view
//! created over a masked column moves the version so that the function
//! answers the lookup with the view's column.
//!
//! Run with `cargo bench -p gatehouse-benches --bench pg_catalog_cost`; knobs
//! `PG_BENCH_SECONDS` (default 10), `PG_BENCH_CLIENTS`, `PG_BENCH_THREADS`,
//! `PG_BENCH_ROUNDS` (default 4).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use anyhow::{Context, Result, bail};
use gatehouse_benches::cpu::reaped_children_time;
use gatehouse_benches::median;
use gatehouse_benches::pgbench::{self, env_or};
use gatehouse_integration::postgres::{PgOptions, Postgres};
use gatehouse_integration::stack::{LARGE_OBJECT_FUNCTIONS, example};
use gatehouse_integration::{scratch_dir, tools};
use gatehouse_postgres::fastpath::{self, FunctionName};
use gatehouse_postgres::masking::{MaskingPolicy, catalog};
use std::path::Path;
use std::process::Command;

/// pgbench's `-S` transaction.
const SELECT_ONLY: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;";

fn main() -> Result<()> {
    if pgbench::skipped("pg_catalog_cost") {
        return Ok(());
    }
    let dir = scratch_dir("bench", "pg_catalog_cost")?;
    let server = Postgres::start(
        &dir,
        &PgOptions {
            seed_demo: true,
            log_statements: false,
        },
    )?;
    let init = Command::new(tools::pg_client("pgbench")?)
        .args(["-i", "-q", "-s", "10", "-d"])
        .arg(server.direct_url("shop"))
        .output()?;
    if !init.status.success() {
        bail!("pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    }
    let policy = MaskingPolicy::from_json(example("postgres-masking.json").to_string().as_bytes())?;
    let masking = catalog::lookup_sql(&policy).context("the demo has table rules")?;
    let functions: Vec<FunctionName> = LARGE_OBJECT_FUNCTIONS
        .iter()
        .map(|name| FunctionName::parse(name))
        .collect::<Result<_, _>>()?;
    let fast_path = fastpath::lookup_sql(&functions).context("functions configured")?;
    let masked = server.psql_in("shop", &masking)?;
    let masked: Vec<(String, String)> = masked
        .lines()
        .filter_map(|row| {
            let mut fields = row.split('|');
            Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
        })
        .collect();
    if masked.len() != 3 {
        bail!("the masking lookup found {masked:?}, not the demo's three columns");
    }
    let validate = validation_sql(&policy, &masked);
    // The validation reads what it must (three base rows, no view yet).
    let read = server.psql_in("shop", &validate)?;
    if read.lines().count() != 3 {
        bail!("the validation read {read:?}");
    }

    server.psql_in("shop", VERSIONED_SETUP)?;
    let versioned = "SELECT * FROM gatehouse.catalog_since(1, '')".to_owned();
    if !server.psql_in("shop", &versioned)?.trim().is_empty() {
        bail!("the catalog version moved during setup");
    }
    let scripts = [
        ("bare", vec![]),
        ("fast path", vec![fast_path.as_str()]),
        ("masking", vec![masking.as_str()]),
        ("both", vec![fast_path.as_str(), masking.as_str()]),
        ("validate", vec![fast_path.as_str(), validate.as_str()]),
        ("versioned", vec![versioned.as_str()]),
    ];
    let files: Vec<_> = scripts
        .iter()
        .enumerate()
        .map(|(i, (_, ahead))| write_script(&dir, i, ahead))
        .collect::<Result<_>>()?;
    let postmaster = server.pid().context("the server's pid")?;
    let rounds: usize = env_or("PG_BENCH_ROUNDS", "4").parse()?;
    // Per script: server CPU per connection (µs) and connections per second.
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); scripts.len()];
    for _ in 0..rounds.max(1) {
        for (file, (cpu, rates)) in files.iter().zip(samples.iter_mut()) {
            let before = reaped_children_time(postmaster);
            let (rate, connections) = run(server.port, file)?;
            let spent = reaped_children_time(postmaster).saturating_sub(before);
            cpu.push(spent.as_secs_f64() * 1e6 / connections.max(1) as f64);
            rates.push(rate);
        }
    }
    println!(
        "pgbench -S -C straight to PostgreSQL, {} clients, {} threads, {} s per run; \
         median of {rounds} interleaved rounds; server CPU per connection from the \
         postmaster's reaped children",
        env_or("PG_BENCH_CLIENTS", "4"),
        env_or("PG_BENCH_THREADS", "2"),
        env_or("PG_BENCH_SECONDS", "10"),
    );
    println!(
        "{:<12} {:>12} {:>10} | {:>10} {:>8}",
        "ahead", "server µs", "+ bare", "conn/s", "ratio"
    );
    let medians: Vec<(f64, f64)> = samples
        .into_iter()
        .map(|(cpu, rates)| (median(cpu), median(rates)))
        .collect();
    let (bare_cpu, bare_rate) = medians.first().copied().unwrap_or_default();
    for ((name, _), (cpu, rate)) in scripts.iter().zip(medians) {
        println!(
            "{name:<12} {cpu:>12.0} {:>10.0} | {rate:>10.0} {:>8.3}",
            cpu - bare_cpu,
            rate / bare_rate
        );
    }
    // The version moves with DDL from any connection, and the function then
    // answers the lookup (a view over a masked column is found).
    server.psql_in("shop", "CREATE VIEW contact AS SELECT email FROM customers")?;
    let after = server.psql_in(
        "shop",
        &format!("SELECT count(*) FROM gatehouse.catalog_since(1, $lookup${masking}$lookup$)"),
    )?;
    if after.trim() != "4" {
        bail!("after a new view the versioned lookup answered {after:?} rows, not 4");
    }
    Ok(())
}

/// A catalog version bumped in the transaction of every DDL, and the function
/// a session would call with the version it cached: nothing while that is
/// current, the lookup (`sql`, run only then) otherwise.
const VERSIONED_SETUP: &str = "\
    CREATE SCHEMA gatehouse; \
    CREATE TABLE gatehouse.catalog_version (v bigint NOT NULL); \
    INSERT INTO gatehouse.catalog_version VALUES (1); \
    CREATE FUNCTION gatehouse.bump_catalog_version() RETURNS event_trigger \
    LANGUAGE plpgsql AS $$BEGIN UPDATE gatehouse.catalog_version SET v = v + 1; END$$; \
    CREATE FUNCTION gatehouse.catalog_since(known bigint, sql text) \
    RETURNS TABLE (relid int8, attnum int2, rule int4, relname name, attname name) \
    LANGUAGE plpgsql STABLE AS $$BEGIN \
    IF (SELECT v FROM gatehouse.catalog_version) = known THEN RETURN; END IF; \
    RETURN QUERY EXECUTE sql; END$$; \
    CREATE EVENT TRIGGER gatehouse_ddl ON ddl_command_end \
    EXECUTE FUNCTION gatehouse.bump_catalog_version(); \
    CREATE EVENT TRIGGER gatehouse_drop ON sql_drop \
    EXECUTE FUNCTION gatehouse.bump_catalog_version()";

/// The least a sound validation of a cached masking lookup reads: each
/// rule's table and column by name (with the attribute row's version), and
/// the rewrite rules depending on each masked column (with theirs).
fn validation_sql(policy: &MaskingPolicy, masked: &[(String, String)]) -> String {
    let rules: Vec<String> = policy
        .column_rules()
        .map(|(i, schema, table, column)| format!("('{schema}','{table}','{column}',{i})"))
        .collect();
    let columns: Vec<String> = masked
        .iter()
        .map(|(relid, attnum)| format!("({relid}::oid,{attnum}::int2)"))
        .collect();
    format!(
        "SELECT 'b' || r.rule || ':' || a.attrelid || ':' || a.attnum || ':' || a.xmin \
         FROM (VALUES {}) AS r(nsp, rel, col, rule) \
         JOIN pg_catalog.pg_namespace n ON n.nspname = r.nsp \
         JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = r.rel \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = r.col \
         AND a.attnum > 0 AND NOT a.attisdropped \
         UNION ALL SELECT 'd' || m.relid || ':' || m.attnum || ':' || d.objid || ':' || w.xmin \
         FROM (VALUES {}) AS m(relid, attnum) \
         JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::regclass \
         AND d.refobjid = m.relid AND d.refobjsubid = m.attnum \
         AND d.classid = 'pg_catalog.pg_rewrite'::regclass \
         JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid",
        rules.join(","),
        columns.join(",")
    )
}

/// A pgbench script: the queries `ahead`, then the `-S` statement, as one
/// Query (as the engine sends its own queries in the client's write).
fn write_script(dir: &Path, index: usize, ahead: &[&str]) -> Result<std::path::PathBuf> {
    let mut text = String::from("\\set aid random(1, 1000000)\n");
    for sql in ahead {
        text.push_str(&sql.replace('\n', " "));
        text.push_str(" \\;\n");
    }
    text.push_str(SELECT_ONLY);
    text.push('\n');
    let path = dir.join(format!("script-{index}.sql"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// One `pgbench -C` run of `script`: connections per second and connections.
fn run(port: u16, script: &Path) -> Result<(f64, u64)> {
    let script = script.to_str().context("the script's path is not UTF-8")?;
    let run = pgbench::run_script(port, &pgbench::Login::superuser(), &["-C", "-f", script])?;
    Ok((run.tps, run.transactions))
}
