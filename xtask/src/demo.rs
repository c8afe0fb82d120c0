//! `cargo xtask demo`: the whole gateway on this machine, with demo data.
//! With `--native`, the Postgres filter runs as the native build (the Envoy
//! dynamic module `libgatehouse.so`, `envoy/gatehouse-native.yaml`).
//!
//! The stack is owned by one process that stops it in order on Ctrl-C or
//! SIGTERM. With `--detach` that process is a background copy of this command
//! (`demo --serve`), so the stack outlives the terminal; `down` signals it.
//!
//! The demo needs only what it runs: PostgreSQL, kubectl and (installed into
//! `./tools` when missing) Envoy; wasm-opt shrinks the modules when the machine
//! has it. It builds the `gatehouse` command line into `tools/bin`, and
//! `target/demo/env` puts it on PATH with the rest of the demo's settings.

use anyhow::{Context, Result, bail};
use gatehouse_core::identity::testing::Minter;
use gatehouse_integration::approvals::filter_section;
use gatehouse_integration::stack::{
    ApprovalOptions, default_kubernetes_filter_config, demo_postgres_filter_config,
    exec_kubeconfig_yaml,
};
use gatehouse_integration::tools::Build;
use gatehouse_integration::{Stack, StackOptions, idp, process, tools, workspace_root};
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

/// The copy of this program the kubeconfig's credential plugin runs (a copy,
/// so rebuilding xtask while the demo runs does not pull it away).
fn credential_plugin() -> PathBuf {
    demo_dir().join("xtask")
}

/// Where the demo puts the `gatehouse` command line.
fn cli_bin_dir() -> PathBuf {
    tools::tools_dir().join("bin")
}

/// How long the tokens in `target/demo/env` last.
const ENV_TOKEN_TTL_SECONDS: i64 = 3600;

pub fn run(detach: bool, serve: bool, native: bool) -> Result<()> {
    if serve {
        return serve_until_stopped(native);
    }
    if let Some(pid) = running_pid() {
        bail!("a demo is already running (pid {pid}): stop it with `cargo xtask down`");
    }
    super::install(false)?;
    super::build_filters(super::shrink::Shrink::IfAvailable)?;
    if native {
        super::build_native()?;
    }
    super::step(
        "build the stand-in Kubernetes API server, the gatehouse command line and the approval service",
        super::cargo().args([
            "build",
            "-q",
            "-p",
            "kube-standin",
            "-p",
            "gatehouse-cli",
            "-p",
            "gatehouse-approvals",
        ]),
    )?;
    let dir = demo_dir();
    clear(&dir)?;
    install_cli()?;
    copy_or_link(&std::env::current_exe()?, &credential_plugin())?;
    if !detach {
        return serve_until_stopped(native);
    }

    let log = dir.join("demo.log");
    let mut server = Command::new(std::env::current_exe()?);
    server.args(["demo", "--serve"]);
    if native {
        server.arg("--native");
    }
    server
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

/// Empties `dir` (creating it if needed), keeping the directory itself.
fn clear(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("clearing {}", path.display()))?;
    }
    Ok(())
}

/// Puts the freshly built `gatehouse` into `tools/bin`.
fn install_cli() -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let bin = cli_bin_dir();
    std::fs::create_dir_all(&bin)?;
    copy_or_link(&target.join("debug/gatehouse"), &bin.join("gatehouse"))
}

/// A hard link to `from` at `to` (a copy across file systems), replacing `to`.
fn copy_or_link(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

fn serve_until_stopped(native: bool) -> Result<()> {
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
        build: Some(if native { Build::Native } else { Build::Wasm }),
        ..StackOptions::default()
    };
    let stack = Stack::start_in(demo_dir(), opts)?;
    std::fs::write(pid_file(), std::process::id().to_string())?;
    // In place of the stack's fixed tokens: a credential plugin, so kubectl's
    // tokens never go stale.
    std::fs::write(
        &stack.kubeconfig,
        exec_kubeconfig_yaml(stack.kube_port, &stack.pki.ca_cert, &credential_plugin())?,
    )?;
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

/// Programs the tests drive and the demo must not need (wasm-opt included:
/// the demo builds without it).
const TEST_CLIENTS: &[&str] = &[
    "java", "javac", "jshell", "node", "nodejs", "npm", "npx", "corepack", "pgbench", "wasm-opt",
];

/// What the README promises, on a machine without the test clients: `cargo
/// xtask demo --detach`, the README's tour against it (`cargo xtask tour`),
/// then `cargo xtask down`; and, first, that a missing PostgreSQL or kubectl
/// is named with the package that provides it.
///
/// It runs in a private mount namespace (`unshare --mount`, as root) where the
/// test clients are hidden from PATH and from their usual places (the JDBC
/// driver in /usr/share/java, psycopg and node-postgres under ./tools), and
/// where `target/demo` is a fresh, empty file system: the smoke test always
/// runs its own demo, even beside one a developer left running.
pub fn smoke_test() -> Result<()> {
    eprintln!("==> the README's demo and tour, with the test clients hidden");
    let root = workspace_root();
    let scratch = root.join("target/demo-smoke");
    clear(&scratch)?;
    let path = scratch.join("path");
    path_without(TEST_CLIENTS, &path)?;
    let demo_log = scratch.join("demo.log");
    let hidden: Vec<String> = [
        PathBuf::from("/usr/share/java"),
        tools::tools_dir().join("python"),
        tools::tools_dir().join("node"),
    ]
    .iter()
    .filter(|dir| dir.is_dir())
    .map(|dir| shell_quote(&dir.display().to_string()))
    .collect();
    std::fs::create_dir_all(demo_dir())?;
    let script = format!(
        "set -eu
         for dir in {hidden}; do mount -t tmpfs gatehouse-hidden \"$dir\"; done
         mount -t tmpfs gatehouse-demo {demo}
         export PATH={path}
         for client in {clients}; do
           if command -v \"$client\" >/dev/null; then echo \"$client is still on PATH\"; exit 1; fi
         done
         for missing in PG_BIN_DIR KUBECTL; do
           out=$(env $missing=/nonexistent cargo xtask install 2>&1) && {{ echo \"install passed without $missing\"; exit 1; }}
           echo \"$out\" | grep -q 'install the Debian package' || {{ echo \"$out\"; exit 1; }}
         done
         trap 'cargo xtask down' EXIT
         if ! cargo xtask demo --detach >{log} 2>&1; then cat {log}; exit 1; fi
         grep -q 'note: wasm-opt not found' {log} || {{ echo 'no note about the missing wasm-opt'; cat {log}; exit 1; }}
         cargo xtask tour",
        hidden = hidden.join(" "),
        demo = shell_quote(&demo_dir().display().to_string()),
        path = shell_quote(&path.display().to_string()),
        clients = TEST_CLIENTS.join(" "),
        log = shell_quote(&demo_log.display().to_string()),
    );
    let unshare = tools::find_on_path(&["unshare"])
        .context("the demo smoke test needs `unshare` (util-linux) to hide the test clients")?;
    if !running_as_root() {
        bail!(
            "the demo smoke test hides the test clients with `unshare --mount`, which needs root"
        );
    }
    super::step(
        "cargo xtask demo --detach; cargo xtask tour; cargo xtask down (in a mount namespace)",
        Command::new(unshare)
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .current_dir(&root),
    )?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Fills `farm` with links to every program on PATH except `hidden` ones
/// (and binaryen's other `wasm-*` tools), first match winning as on PATH.
fn path_without(hidden: &[&str], farm: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(farm)?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let text = name.to_string_lossy();
            let link = farm.join(&name);
            if hidden.contains(&text.as_ref())
                || text.starts_with("wasm-")
                || text == "wasm2js"
                || link.symlink_metadata().is_ok()
            {
                continue;
            }
            std::os::unix::fs::symlink(entry.path(), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    Ok(())
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

/// `cargo xtask token <identity> [--ttl 15m] [--exec-credential]`: a fresh
/// token from the running demo's identity provider.
pub fn token(identity: &str, ttl: &str, exec_credential: bool) -> Result<()> {
    let ttl = idp::parse_ttl(ttl)?;
    let saved = std::fs::read_to_string(signing_key_file())
        .context("no demo signing key: start the demo first (`cargo xtask demo --detach`)")?;
    let minter =
        Minter::from_json(&saved).map_err(|e| anyhow::anyhow!("reading the signing key: {e}"))?;
    let expires_at = idp::now_unix() + ttl;
    let token = idp::mint(&minter, identity, ttl)?;
    if exec_credential {
        println!("{}", idp::exec_credential(&token, expires_at));
    } else {
        println!("{token}");
    }
    Ok(())
}

/// A filter configuration connected to the demo's approval service.
fn with_approvals(mut config: serde_json::Value) -> serde_json::Value {
    if let Some(fields) = config.as_object_mut() {
        fields.insert("approvals".into(), filter_section(1000));
    }
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
        ("KUBECONFIG", stack.kubeconfig.display().to_string()),
        (
            "GATEHOUSE_IDENTITIES",
            workspace_root()
                .join("examples/demo/identities.json")
                .display()
                .to_string(),
        ),
        // psql and libpq read these: the application role, logged in as `developer`.
        ("PGUSER", "app".to_string()),
        (
            "PGPASSWORD",
            idp::mint(&stack.minter, "developer", ENV_TOKEN_TTL_SECONDS)?,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (name, _) in idp::DEMO_IDENTITIES {
        vars.push((
            format!("GATEHOUSE_TOKEN_{}", name.to_ascii_uppercase()),
            idp::mint(&stack.minter, name, ENV_TOKEN_TTL_SECONDS)?,
        ));
    }
    let mut lines: String = vars
        .iter()
        .map(|(k, v)| format!("{k}={}\n", shell_quote(v)))
        .collect();
    // The gatehouse command line, first on PATH.
    lines.push_str(&format!(
        "PATH={}:\"$PATH\"\n",
        shell_quote(&cli_bin_dir().display().to_string())
    ));
    Ok(lines)
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
gatehouse demo is up ({build}). In a shell at the repository's root:

  set -a; . target/demo/env; set +a      # the demo's settings; gatehouse on PATH

  Postgres through Envoy, logged in as developer with a token (role app):
    psql \"$GATEHOUSE_PG_URL\" -c 'select name, email, card_number from customers limit 3'  # masked
    psql \"$GATEHOUSE_PG_URL\" -c 'drop table orders'      # denied: DETAIL names the rule
    export PGPASSWORD=$(cargo xtask token developer)      # a fresh token (tokens here last 1 hour)
  Kubernetes through Envoy (kubectl mints tokens itself; context = identity):
    kubectl --context developer delete ns prod             # denied by rule no-namespace-deletion
    kubectl --context developer auth can-i delete ns/prod  # no, and why
  Approvals (a dba approves a developer's customer writes, an admin a developer's
  exec in prod; see the README):
    psql \"$GATEHOUSE_PG_URL\" -c \"update customers set notes = 'x' where id = 1\"  # HINT names the request
    GATEHOUSE_TOKEN=$GATEHOUSE_TOKEN_DBA gatehouse approvals list
    GATEHOUSE_TOKEN=$GATEHOUSE_TOKEN_DBA gatehouse approve apr-...   # then run it again: once
  Who ran what:
    gatehouse audit sessions \"$GATEHOUSE_AUDIT_LOG\"
    gatehouse audit records \"$GATEHOUSE_AUDIT_LOG\" --subject developer

  Postgres: {pg}   Kubernetes: {kube}   Envoy admin: http://{admin}
  Records (one JSON object per line): {log}
  Identities: developer, ci, agent (role app); dba, admin (role postgres)
  The README's five-minute tour: cargo xtask tour
",
        build = match stack.build {
            Build::Wasm => "Wasm build",
            Build::Native => {
                "native build: the Postgres filter is libgatehouse.so, and psql gets TLS"
            }
        },
        pg = stack.pg_url(),
        kube = stack.kube_server(),
        log = stack.access_log.display(),
        admin = stack.envoy.admin,
    )
}
