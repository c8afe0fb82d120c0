//! `cargo xtask demo`: the whole gateway on this machine, with demo data.
//!
//! The stack is owned by one process that stops it in order on Ctrl-C or
//! SIGTERM. With `--detach` that process is a background copy of this command
//! (`demo --serve`), so the stack outlives the terminal; `down` signals it.

use anyhow::{Context, Result, bail};
use gatehouse_core::identity::testing::Minter;
use gatehouse_integration::approvals::filter_section;
use gatehouse_integration::stack::{
    ApprovalOptions, default_kubernetes_filter_config, demo_postgres_filter_config,
};
use gatehouse_integration::{Stack, StackOptions, idp, process, workspace_root};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn demo_dir() -> PathBuf {
    workspace_root().join("target/demo")
}

/// Written by the serving process: its pid.
fn pid_file() -> PathBuf {
    demo_dir().join("pid")
}

/// Written once the stack is up: the shell variables, then the instructions.
fn env_file() -> PathBuf {
    demo_dir().join("env")
}

/// The demo identity provider's signing key, for `cargo xtask token`.
fn signing_key_file() -> PathBuf {
    demo_dir().join("idp-key.json")
}

fn instructions_file() -> PathBuf {
    demo_dir().join("instructions.txt")
}

pub fn run(detach: bool, serve: bool) -> Result<()> {
    if serve {
        return serve_until_stopped();
    }
    if let Some(pid) = running_pid() {
        bail!("a demo is already running (pid {pid}): stop it with `cargo xtask down`");
    }
    super::install()?;
    super::build_filters()?;
    super::step(
        "build the stand-in Kubernetes API server",
        super::cargo().args(["build", "-q", "-p", "kube-standin"]),
    )?;
    super::step(
        "build the approval service and the gatehouse command line",
        super::cargo().args([
            "build",
            "-q",
            "-p",
            "gatehouse-approvals",
            "-p",
            "gatehouse-cli",
        ]),
    )?;
    let dir = demo_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    if !detach {
        return serve_until_stopped();
    }

    let log = dir.join("demo.log");
    let mut server = Command::new(std::env::current_exe()?);
    server
        .args(["demo", "--serve"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(&log)?.try_clone()?)
        .process_group(0);
    let mut child = server
        .spawn()
        .context("starting the demo in the background")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !instructions_file().exists() {
        if let Some(status) = child.try_wait()? {
            bail!("the demo stopped ({status}):\n{}", process::tail(&log, 40));
        }
        if Instant::now() > deadline {
            process::signal(child.id(), "TERM");
            bail!(
                "the demo did not come up in time:\n{}",
                process::tail(&log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    print!("{}", std::fs::read_to_string(instructions_file())?);
    println!("\nThe demo keeps running in the background; stop it with `cargo xtask down`.");
    Ok(())
}

fn serve_until_stopped() -> Result<()> {
    let standin = workspace_root().join("target/debug/kube-standin");
    eprintln!("==> starting PostgreSQL, the stand-in Kubernetes API server and Envoy");
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })?;
    let opts = StackOptions {
        kube_standin_binary: Some(standin),
        postgres_filter: with_approvals(demo_postgres_filter_config()),
        kubernetes_filter: with_approvals(default_kubernetes_filter_config()),
        approvals: Some(ApprovalOptions {
            replicas: 1,
            webhook: std::env::var("GATEHOUSE_DEMO_WEBHOOK").ok(),
        }),
        ..StackOptions::default()
    };
    let stack = Stack::start_in(demo_dir(), opts)?;
    std::fs::write(pid_file(), std::process::id().to_string())?;
    let key = stack
        .minter
        .to_json()
        .map_err(|e| anyhow::anyhow!("saving the signing key: {e}"))?;
    std::fs::write(signing_key_file(), key)?;
    std::fs::write(env_file(), env_lines(&stack)?)?;
    let instructions = instructions(&stack);
    std::fs::write(instructions_file(), &instructions)?;
    print!("{instructions}");
    println!("\nPress Ctrl-C to stop.");
    let _ = rx.recv();
    eprintln!("\nstopping the demo");
    drop(stack);
    let _ = std::fs::remove_file(pid_file());
    Ok(())
}

pub fn down() -> Result<()> {
    let Some(pid) = running_pid() else {
        println!("no demo is running");
        return Ok(());
    };
    process::signal(pid, "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    while process::alive(pid) {
        if Instant::now() > deadline {
            bail!("the demo (pid {pid}) did not stop within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(pid_file());
    println!("demo stopped");
    Ok(())
}

/// What the README promises: `demo --detach`, then psql and kubectl through
/// Envoy using `target/demo/env`, then `down`.
pub fn smoke_test() -> Result<()> {
    eprintln!("==> demo smoke test");
    if running_pid().is_some() {
        eprintln!("    skipped: a demo is already running");
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    super::step(
        "cargo xtask demo --detach",
        Command::new(&exe).args(["demo", "--detach"]),
    )?;
    let result = smoke_checks();
    super::step("cargo xtask down", Command::new(&exe).arg("down"))?;
    result
}

fn smoke_checks() -> Result<()> {
    let script = format!(
        "set -eu; set -a; . {env}; set +a
         test \"$(psql -X -At \"$GATEHOUSE_PG_URL\" -c 'select count(*) from customers')\" = 5000
         psql -X -At \"$GATEHOUSE_PG_URL\" -c 'drop table orders' 2>&1 | grep -q 'schema changes'
         PGPASSWORD=\"$GATEHOUSE_TOKEN_DBA\" PGUSER=postgres psql -X -At \"$GATEHOUSE_PG_URL\" -c 'select 1' >/dev/null
         psql -X -At \"$GATEHOUSE_PG_URL\" -c \"update customers set notes = 'x' where id = 1\" 2>&1 | grep -q 'HINT:  approval request apr-'
         curl -sf \"$GATEHOUSE_APPROVALS_URL/healthz\" >/dev/null
         kubectl --kubeconfig \"$GATEHOUSE_KUBECONFIG\" get pods -A | grep -q web-0
         sleep 0.5
         grep -q '\"type\":\"pg.statement\"' \"$GATEHOUSE_AUDIT_LOG\"
         grep -q '\"kind\":\"Event\"' \"$GATEHOUSE_AUDIT_LOG\"",
        env = env_file().display()
    );
    super::step(
        "psql and kubectl through the demo",
        Command::new("sh").arg("-c").arg(script),
    )
}

/// The pid of a demo that is still running.
fn running_pid() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    process::alive(pid).then_some(pid)
}

/// `cargo xtask token <identity> [--ttl 15m]`: a fresh token from the running
/// demo's identity provider.
pub fn token(args: &[String]) -> Result<()> {
    let identity = args
        .first()
        .context("usage: cargo xtask token <identity> [--ttl 15m]")?;
    let ttl = match args.iter().position(|a| a == "--ttl") {
        Some(i) => idp::parse_ttl(args.get(i + 1).context("--ttl needs a value such as 15m")?)?,
        None => 15 * 60,
    };
    let saved = std::fs::read_to_string(signing_key_file())
        .context("no demo signing key: start the demo first (`cargo xtask demo --detach`)")?;
    let minter =
        Minter::from_json(&saved).map_err(|e| anyhow::anyhow!("reading the signing key: {e}"))?;
    println!("{}", idp::mint(&minter, identity, ttl)?);
    Ok(())
}

/// A filter configuration connected to the demo's approval service.
fn with_approvals(mut config: serde_json::Value) -> serde_json::Value {
    config["approvals"] = filter_section(1000);
    config
}

fn env_lines(stack: &Stack) -> Result<String> {
    let demo_db = gatehouse_integration::postgres::DEMO_DATABASE;
    let mut vars: Vec<(String, String)> = [
        ("GATEHOUSE_PG_URL", stack.pg_url()),
        ("GATEHOUSE_PG_TLS_URL", stack.pg_tls_url()),
        (
            "GATEHOUSE_PG_DIRECT_URL",
            stack.postgres.direct_url(demo_db),
        ),
        ("GATEHOUSE_KUBE_SERVER", stack.kube_server()),
        (
            "GATEHOUSE_KUBE_DIRECT_SERVER",
            format!("http://{}", stack.kube_upstream),
        ),
        (
            "GATEHOUSE_KUBECONFIG",
            stack.kubeconfig.display().to_string(),
        ),
        ("GATEHOUSE_CA", stack.pki.ca_cert.display().to_string()),
        (
            "GATEHOUSE_ENVOY_ADMIN",
            format!("http://{}", stack.envoy.admin),
        ),
        (
            "GATEHOUSE_AUDIT_LOG",
            stack.access_log.display().to_string(),
        ),
        (
            "GATEHOUSE_APPROVALS_URL",
            stack
                .approvals
                .as_ref()
                .map(|service| service.url(0))
                .unwrap_or_default(),
        ),
        // psql and libpq read these: the application role, logged in as `developer`.
        ("PGUSER", "app".to_string()),
        ("PGPASSWORD", stack.token("developer")?),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (name, _) in idp::DEMO_IDENTITIES {
        vars.push((
            format!("GATEHOUSE_TOKEN_{}", name.to_ascii_uppercase()),
            stack.token(name)?,
        ));
    }
    Ok(vars
        .iter()
        .map(|(k, v)| format!("{k}={}\n", shell_quote(v)))
        .collect())
}

fn shell_quote(v: &str) -> String {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/:._-@?=&".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

fn instructions(stack: &Stack) -> String {
    format!(
        "
gatehouse demo is up.

  Postgres through Envoy (the password is a token; role app is open to developer,
  ci and agent, role postgres to dba and admin):
    PGUSER=app PGPASSWORD=$(cargo xtask token developer) psql \"{pg}\" -c 'select count(*) from customers'
  Kubernetes through Envoy:
    kubectl --kubeconfig {kubeconfig} get pods -A

  Approvals: a developer's UPDATE or DELETE of customers is refused with the
  request it filed (HINT); a dba approves it, and the same statement runs once:
    GATEHOUSE_TOKEN=$GATEHOUSE_TOKEN_DBA target/debug/gatehouse approvals list
    GATEHOUSE_TOKEN=$GATEHOUSE_TOKEN_DBA target/debug/gatehouse approve apr-…
  A developer's kubectl exec in prod waits for an admin's approval (up to 2 min).
  The service: {approvals}   (GATEHOUSE_APPROVALS_URL)

  Records (one JSON object per line): {log}
  Envoy admin: http://{admin}   (stats: /stats?filter=gatehouse)
  Everything above as shell variables: set -a; . {env}; set +a
  Tokens for the demo identities (developer, dba, ci, agent, admin) are in it as
  GATEHOUSE_TOKEN_<IDENTITY>; kubeconfig contexts are named after them.
  A fresh one: cargo xtask token developer --ttl 15m
",
        pg = stack.pg_url(),
        approvals = stack
            .approvals
            .as_ref()
            .map(|service| service.url(0))
            .unwrap_or_default(),
        kubeconfig = stack.kubeconfig.display(),
        log = stack.access_log.display(),
        admin = stack.envoy.admin,
        env = env_file().display(),
    )
}
