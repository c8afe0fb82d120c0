//! `cargo xtask demo`: the whole gateway on this machine, with demo data.

use anyhow::{Context, Result, bail};
use gatehouse_integration::{Stack, StackOptions, process, workspace_root};
use std::path::PathBuf;

fn demo_dir() -> PathBuf {
    workspace_root().join("target/demo")
}

fn pids_file() -> PathBuf {
    demo_dir().join("pids")
}

pub fn run(detach: bool) -> Result<()> {
    if let Some(pids) = running_pids() {
        bail!("a demo is already running (pids {pids:?}): stop it with `cargo xtask down`");
    }
    super::install()?;
    super::build_filters()?;
    super::step(
        "build the stand-in Kubernetes API server",
        super::cargo().args(["build", "-q", "-p", "kube-standin"]),
    )?;
    let standin = workspace_root().join("target/debug/kube-standin");

    let dir = demo_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!("==> starting PostgreSQL, the stand-in Kubernetes API server and Envoy");
    let opts = StackOptions {
        kube_standin_binary: Some(standin),
        ..StackOptions::default()
    };
    let stack = Stack::start_in(dir.clone(), opts)?;
    let env_file = dir.join("env");
    std::fs::write(&env_file, env_lines(&stack))?;
    print_instructions(&stack, &env_file);

    if detach {
        let pids = stack.detach();
        std::fs::write(
            pids_file(),
            pids.iter().map(|p| format!("{p}\n")).collect::<String>(),
        )?;
        println!("\nThe demo keeps running; stop it with `cargo xtask down`.");
        return Ok(());
    }
    println!("\nPress Ctrl-C to stop.");
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })?;
    let _ = rx.recv();
    eprintln!("\nstopping");
    drop(stack);
    Ok(())
}

pub fn down() -> Result<()> {
    let Some(pids) = running_pids() else {
        println!("no demo is running");
        return Ok(());
    };
    for pid in &pids {
        // PostgreSQL treats INT as "fast shutdown"; Envoy and the stand-in exit on it too.
        process::signal(*pid, "INT");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pids.iter().any(|p| process::alive(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for pid in pids.iter().filter(|p| process::alive(**p)) {
        process::signal(*pid, "KILL");
    }
    std::fs::remove_file(pids_file())?;
    println!("demo stopped");
    Ok(())
}

/// Pids of a detached demo that is still running.
fn running_pids() -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(pids_file()).ok()?;
    let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    pids.iter().any(|p| process::alive(*p)).then_some(pids)
}

fn env_lines(stack: &Stack) -> String {
    let vars = [
        ("GATEHOUSE_PG_URL", stack.pg_url()),
        (
            "GATEHOUSE_PG_DIRECT_URL",
            stack
                .postgres
                .direct_url(gatehouse_integration::postgres::DEMO_DATABASE),
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
        // Until token login exists the caller names its database role itself.
        ("PGUSER", "app".to_string()),
    ];
    vars.iter()
        .map(|(k, v)| format!("{k}={}\n", shell_quote(v)))
        .collect()
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

fn print_instructions(stack: &Stack, env_file: &std::path::Path) {
    println!(
        "
gatehouse demo is up.

  Postgres through Envoy:
    PGUSER=app psql \"{pg}\" -c 'select count(*) from customers'
  Kubernetes through Envoy:
    kubectl --kubeconfig {kubeconfig} get pods -A

  Records (one JSON object per line): {log}
  Envoy admin: http://{admin}   (stats: /stats?filter=gatehouse)
  Everything above as shell variables: set -a; . {env}; set +a",
        pg = stack.pg_url(),
        kubeconfig = stack.kubeconfig.display(),
        log = stack.access_log.display(),
        admin = stack.envoy.admin,
        env = env_file.display(),
    );
}
