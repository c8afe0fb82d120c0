//! End-to-end Postgres benches: pgbench through Envoy configurations started
//! by the integration harness.
//!
//! Environment knobs shared by every end-to-end bench: `PG_BENCH_SECONDS`
//! (default 10), `PG_BENCH_CLIENTS` (4), `PG_BENCH_THREADS` (2).

use crate::cpu::Usage;
use anyhow::{Context, Result, bail};
use gatehouse_integration::envoy::{self, Envoy};
use gatehouse_integration::postgres::PgOptions;
use gatehouse_integration::stack::native_postgres_config;
use gatehouse_integration::{Stack, StackOptions, scratch_dir, tools, workspace_root};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// The value of environment variable `name`, or `default`.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// `cargo bench` passes `--bench` and maybe a filter: true when a filter was
/// given that does not name this bench, so it should do nothing.
pub fn skipped(bench_name: &str) -> bool {
    std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && a != bench_name)
}

/// One line describing the pgbench settings in force.
pub fn settings() -> String {
    format!(
        "pgbench -S, {} clients, {} threads, {} s per run; Envoy --concurrency 2",
        env_or("PG_BENCH_CLIENTS", "4"),
        env_or("PG_BENCH_THREADS", "2"),
        env_or("PG_BENCH_SECONDS", "10")
    )
}

/// What every end-to-end bench starts: the demo data, and no statement log
/// (writing it would be the server's bottleneck).
pub fn stack_options() -> StackOptions {
    StackOptions {
        postgres: PgOptions {
            seed_demo: true,
            log_statements: false,
        },
        ..StackOptions::default()
    }
}

/// The demo policy (`examples/postgres-policy.json`) with every rule for the
/// `developers` group matching pgbench's user (`postgres`, the startup user,
/// without token login) instead, so every statement runs the whole rule list.
pub fn demo_policy_for_pgbench() -> serde_json::Value {
    demo_policy_for_subject("postgres")
}

/// The demo policy with every rule for the `developers` group matching the
/// subject `subject` instead (without token login, the startup user).
pub fn demo_policy_for_subject(subject: &str) -> serde_json::Value {
    let mut policy = gatehouse_integration::stack::example("postgres-policy.json");
    if let Some(rules) = policy
        .get_mut("rules")
        .and_then(serde_json::Value::as_array_mut)
    {
        for rule in rules {
            let Some(matcher) = rule
                .get_mut("match")
                .and_then(serde_json::Value::as_object_mut)
            else {
                continue;
            };
            let for_developers = matcher
                .get("groups")
                .and_then(serde_json::Value::as_array)
                .is_some_and(|groups| groups.iter().any(|g| g == "developers"));
            if for_developers {
                matcher.remove("groups");
                matcher.insert("subjects".into(), serde_json::json!([subject]));
            }
        }
    }
    policy
}

/// Creates pgbench's tables (scale 10) in the stack's demo database.
pub fn init(stack: &Stack) -> Result<()> {
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
    Ok(())
}

/// Runs `pgbench -S` (`mode`: `simple`, `extended` or `prepared`) against
/// 127.0.0.1:`port` and returns its TPS; any failed transaction is an error.
pub fn tps(port: u16, mode: &str) -> Result<f64> {
    tps_as(port, &Login::superuser(), &["-M", mode])
}

/// The median TPS of `pgbench -S` (`mode`) against each port, over
/// `PG_BENCH_ROUNDS` rounds (default 3) that each run every port once, in turn.
pub fn median_tps_alternating<const N: usize>(ports: &[u16; N], mode: &str) -> Result<[f64; N]> {
    let rounds: usize = env_or("PG_BENCH_ROUNDS", "3").parse()?;
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); N];
    for _ in 0..rounds.max(1) {
        for (port, runs) in ports.iter().zip(samples.iter_mut()) {
            runs.push(tps(*port, mode)?);
        }
    }
    let mut medians = [0.0; N];
    for (median, mut runs) in medians.iter_mut().zip(samples) {
        runs.sort_by(f64::total_cmp);
        *median = runs.get(runs.len() / 2).copied().unwrap_or_default();
    }
    Ok(medians)
}

/// Who pgbench logs in as.
pub struct Login<'a> {
    pub user: &'a str,
    /// `PGPASSWORD` (a token under token login).
    pub password: Option<&'a str>,
}

impl Login<'static> {
    /// The server's superuser, no password (the benches' servers trust local clients).
    pub fn superuser() -> Self {
        Login {
            user: "postgres",
            password: None,
        }
    }
}

/// Runs `pgbench -S` with `extra` arguments (e.g. `-C` for a new connection per
/// transaction) against 127.0.0.1:`port` as `login`; returns its TPS.
pub fn tps_as(port: u16, login: &Login<'_>, extra: &[&str]) -> Result<f64> {
    run_as(port, login, extra).map(|run| run.tps)
}

/// What one pgbench run reports.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub tps: f64,
    /// Transactions processed (each one statement under `-S`).
    pub transactions: u64,
}

/// [`tps_as`], with the transactions processed. Clients never ask for TLS
/// (`sslmode=disable`): a build that answers an SSLRequest with TLS must not
/// be measured doing TLS against one that does not.
pub fn run_as(port: u16, login: &Login<'_>, extra: &[&str]) -> Result<Run> {
    run_script(port, login, &[&["-S"], extra].concat())
}

/// One pgbench run of the transaction script `script` names (`-S`, or `-f`
/// and a file, with any other options), the clients, threads and seconds from
/// the environment, checked to have failed no transaction.
pub fn run_script(port: u16, login: &Login<'_>, script: &[&str]) -> Result<Run> {
    let mut pgbench = Command::new(tools::pg_client("pgbench")?);
    pgbench
        .args(["-n", "-h", "127.0.0.1", "-U", login.user])
        .args(script)
        .arg("-p")
        .arg(port.to_string())
        .arg("-c")
        .arg(env_or("PG_BENCH_CLIENTS", "4"))
        .arg("-j")
        .arg(env_or("PG_BENCH_THREADS", "2"))
        .arg("-T")
        .arg(env_or("PG_BENCH_SECONDS", "10"))
        .arg("shop")
        .env_remove("PGPASSWORD")
        .env("PGSSLMODE", "disable");
    if let Some(password) = login.password {
        pgbench.env("PGPASSWORD", password);
    }
    let out = pgbench.output()?;
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
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no tps line in pgbench output:\n{text}"))?;
    let transactions = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no transaction count in pgbench output:\n{text}"))?;
    Ok(Run { tps, transactions })
}

/// One pgbench run through a proxy, and the CPU spent meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub run: Run,
    /// Read around the run; the proxy's part is the Envoy's whose pid was given.
    pub spent: Usage,
}

impl Measured {
    /// The proxy's CPU per transaction processed (one statement under `-S`), µs.
    pub fn proxy_micros_per_transaction(&self) -> f64 {
        self.spent.proxy_micros_per(self.run.transactions)
    }
}

/// [`run_as`] through the Envoy with process id `pid`, reading its CPU time
/// from /proc before and after.
pub fn measure(port: u16, pid: Option<u32>, login: &Login<'_>, extra: &[&str]) -> Result<Measured> {
    measure_until(port, pid, login, extra, || Ok(()))
}

/// [`measure`], with the CPU read after `settled` returns: work the run left
/// behind (records still on their way) is part of its cost.
pub fn measure_until(
    port: u16,
    pid: Option<u32>,
    login: &Login<'_>,
    extra: &[&str],
    settled: impl FnOnce() -> Result<()>,
) -> Result<Measured> {
    let before = Usage::now(pid);
    let run = run_as(port, login, extra)?;
    settled()?;
    let spent = Usage::now(pid).since(&before);
    Ok(Measured { run, spent })
}

/// The runs of one configuration: what they measured, for medians.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub tps: Vec<f64>,
    /// The proxy's CPU per transaction, µs.
    pub cpu: Vec<f64>,
    /// Transactions processed, over all runs.
    pub transactions: u64,
}

impl Samples {
    pub fn push(&mut self, measured: &Measured) {
        self.tps.push(measured.run.tps);
        self.cpu.push(measured.proxy_micros_per_transaction());
        self.transactions += measured.run.transactions;
    }

    pub fn median_tps(&self) -> f64 {
        crate::median(self.tps.iter().copied())
    }

    /// The median of the runs' proxy CPU per transaction, µs.
    pub fn median_cpu(&self) -> f64 {
        crate::median(self.cpu.iter().copied())
    }
}

/// Runs `sql` with psql through 127.0.0.1:`port` as `login`; returns whether
/// it succeeded and what psql printed (stdout, then stderr).
pub fn psql_as(port: u16, login: &Login<'_>, sql: &str) -> Result<(bool, String)> {
    let mut psql = Command::new(tools::pg_client("psql")?);
    psql.args(["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!(
            "postgresql://127.0.0.1:{port}/shop?user={}&sslmode=disable",
            login.user
        ))
        .args(["-c", sql])
        .env_remove("PGPASSWORD");
    if let Some(password) = login.password {
        psql.env("PGPASSWORD", password);
    }
    let out = psql.output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Fails unless the demo statement policy is in force through `port` for
/// `login` (as a developer, or as the subject [`demo_policy_for_subject`]
/// names): a policy that did not load, or whose rules match nobody, would
/// make a bench time a path that judges nothing.
pub fn check_policy_in_force(port: u16, login: &Login<'_>) -> Result<()> {
    let (ok, printed) = psql_as(port, login, "TRUNCATE pgbench_history")?;
    if ok || !printed.contains("TRUNCATE is not allowed") {
        bail!(
            "the demo policy's no-truncate rule did not refuse TRUNCATE through port {port}:\n{printed}"
        );
    }
    let (ok, printed) = psql_as(port, login, "SELECT count(*) FROM pgbench_branches")?;
    if !ok || printed.trim() != "10" {
        bail!("the demo policy did not allow pgbench's SELECT through port {port}:\n{printed}");
    }
    Ok(())
}

/// Fails unless the demo masking is in force through `port` for `login`: the
/// demo customers' e-mail addresses come back partly masked.
pub fn check_masking_in_force(port: u16, login: &Login<'_>) -> Result<()> {
    let (ok, printed) = psql_as(port, login, "SELECT email FROM customers")?;
    let emails: Vec<&str> = printed.lines().collect();
    if !ok || emails.is_empty() || !emails.iter().all(|email| email.contains("***@")) {
        bail!("the demo masking did not mask customers.email through port {port}:\n{printed}");
    }
    Ok(())
}

/// Starts an Envoy from `envoy/<template>` next to the stack, in front of the
/// stack's PostgreSQL, with `vars` added to the stack's own (upstream port,
/// certificates, modules); returns it with the port of its `postgres` listener.
pub fn start_envoy(
    stack: &Stack,
    name: &str,
    template: &str,
    vars: &[(&'static str, String)],
) -> Result<(Envoy, u16)> {
    let dir = scratch_dir("bench", name)?;
    let text = std::fs::read_to_string(workspace_root().join("envoy").join(template))?;
    let mut all = BTreeMap::new();
    all.insert("PG_PORT", "0".to_string());
    all.insert("PG_TLS_PORT", "0".to_string());
    all.insert("PG_UPSTREAM_PORT", stack.postgres.port.to_string());
    all.insert("TLS_CERT", stack.pki.server_cert.display().to_string());
    all.insert("TLS_KEY", stack.pki.server_key.display().to_string());
    all.insert(
        "PG_WASM",
        tools::filter_modules()?.postgres.display().to_string(),
    );
    all.insert("ACCESS_LOG", dir.join("access.log").display().to_string());
    all.extend(vars.iter().cloned());
    let envoy = Envoy::start(&dir, &envoy::render(&text, &all)?)?;
    let port = envoy.listener_port("postgres")?;
    Ok((envoy, port))
}

/// The bench-only Wasm filter that does nothing (`benches/noop-filter`), which
/// `cargo xtask build` builds next to the filter modules: loaded in a
/// gatehouse module's place, it measures what Envoy's Wasm runtime alone costs.
pub fn noop_module() -> Result<PathBuf> {
    let module = tools::filter_modules()?
        .postgres
        .with_file_name("gatehouse_bench_noop.wasm");
    if !module.is_file() {
        bail!(
            "{} is missing: build the filters first with `cargo xtask build`",
            module.display()
        );
    }
    Ok(module)
}

/// Envoy with the no-op Wasm network filter where the Postgres filter goes.
pub fn start_noop_filter(stack: &Stack) -> Result<(Envoy, u16)> {
    start_envoy(
        stack,
        "noop_filter",
        "postgres.yaml",
        &[
            ("PG_WASM", noop_module()?.display().to_string()),
            ("PG_CONFIG", "network".to_string()),
        ],
    )
}

/// Envoy with the native build's Postgres filter (`libgatehouse.so`, which
/// `cargo xtask build --native` builds; `envoy/postgres-native.yaml`)
/// configured with `filter`, the Wasm build's JSON, in front of the stack's
/// PostgreSQL. Its records are made but not delivered.
pub fn start_native_postgres(
    stack: &Stack,
    name: &str,
    filter: &serde_json::Value,
) -> Result<(Envoy, u16)> {
    tools::native_module("gatehouse")?;
    let config = native_postgres_config(filter, None).to_string();
    start_envoy(
        stack,
        name,
        "postgres-native.yaml",
        &[("PG_NATIVE_CONFIG", envoy::yaml_quote(&config))],
    )
}

/// Envoy's tcp_proxy alone in front of the stack's PostgreSQL (the baseline).
pub fn start_tcp_proxy_baseline(stack: &Stack) -> Result<(Envoy, u16)> {
    start_envoy(stack, "tcp_proxy", "tcp-proxy-baseline.yaml", &[])
}
