//! gatehouse's developer commands (`cargo xtask --help` lists them).
//!
//! ```text
//! cargo xtask install          wasm target + pinned Envoy; checks for PostgreSQL and kubectl
//!                              (--test-clients: also the clients the tests drive)
//! cargo xtask build            the filter modules (wasm32-wasip1, release, then wasm-opt -Oz);
//!                              with --native, the Envoy dynamic modules (release-native)
//! cargo xtask demo [--detach]  the whole gateway on this machine, with demo data
//!                              (--native: the Postgres and Kubernetes filters as an Envoy dynamic module)
//! cargo xtask down             stops a detached demo
//! cargo xtask token <identity>  a fresh token for a demo identity (`--ttl 15m`)
//! cargo xtask gatehouse ...    the gatehouse command line
//! cargo xtask tour             the README's five-minute tour, against the running demo
//! cargo xtask package          each filter as a Wasm OCI image layout tarball (target/package/)
//! cargo xtask measure-modules  module sizes and cold start against the targets
//! cargo xtask test             everything CI runs: fmt, clippy (native + wasm), unit tests,
//!                              `gatehouse validate` of every example, Prometheus rules,
//!                              integration tests, the demo with the README's tour
//! cargo xtask demo-test        that last part alone
//! ```

mod demo;
mod measure;
mod package;
mod shrink;
mod tour;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use gatehouse_integration::tools;
use std::process::Command;

/// gatehouse's developer commands.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what the demo runs: the wasm32-wasip1 target and the pinned Envoy;
    /// check for PostgreSQL and kubectl.
    Install {
        /// Also the clients the tests drive (psycopg, node-postgres, JDBC,
        /// wasm-opt, promtool).
        #[arg(long)]
        test_clients: bool,
    },
    /// Build the filter modules (wasm32-wasip1, release, shrunk by wasm-opt -Oz).
    Build {
        /// Build the native build instead: the Envoy 1.40 dynamic modules
        /// (target/release-native/libgatehouse.so; see docs/native.md).
        #[arg(long)]
        native: bool,
    },
    /// Run the whole gateway on this machine, with demo data, until Ctrl-C.
    Demo {
        /// Keep it running in the background (stop it with `cargo xtask down`).
        #[arg(long)]
        detach: bool,
        /// The background process of --detach.
        #[arg(long, hide = true)]
        serve: bool,
        /// Run the Postgres filter as the native build (libgatehouse.so,
        /// envoy/gatehouse-native.yaml) instead of Wasm.
        #[arg(long)]
        native: bool,
    },
    /// Stop a detached demo.
    Down,
    /// Print a fresh token for a demo identity (developer, dba, ci, agent, admin).
    Token {
        identity: String,
        /// How long it lasts (90s, 15m, 1h).
        #[arg(long, default_value = "15m")]
        ttl: String,
        /// Print it as a kubectl ExecCredential (client.authentication.k8s.io/v1),
        /// for the demo kubeconfig's credential plugin.
        #[arg(long)]
        exec_credential: bool,
    },
    /// Run the gatehouse command line (`cargo xtask gatehouse audit --help`).
    #[command(disable_help_flag = true)]
    Gatehouse {
        /// Its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the README's five-minute tour against the running demo.
    Tour,
    /// Package each filter as a Wasm OCI image layout tarball (target/package/).
    Package,
    /// Print module sizes and cold start against the targets.
    MeasureModules,
    /// Run everything CI runs.
    Test,
    /// Run only the suite's demo test: `demo --detach`, the README's tour and
    /// `down`, with the test clients hidden (needs root, for a mount namespace).
    DemoTest,
}

fn main() {
    let result = match Cli::parse().task {
        Task::Install { test_clients } => install(test_clients),
        Task::Build { native: false } => build_filters(shrink::Shrink::Required),
        Task::Build { native: true } => build_native(),
        Task::Demo {
            detach,
            serve,
            native,
        } => demo::run(detach, serve, native),
        Task::Down => demo::down(),
        Task::Token {
            identity,
            ttl,
            exec_credential,
        } => demo::token(&identity, &ttl, exec_credential),
        Task::Gatehouse { args } => gatehouse(&args),
        Task::Tour => tour::run(),
        Task::Test => test(),
        Task::DemoTest => demo::smoke_test(),
        Task::Package => package::run(),
        Task::MeasureModules => measure::run(),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Crates compiled to WebAssembly (checked with clippy for wasm32-wasip1 too).
const WASM_CRATES: &[&str] = &[
    "gatehouse-core",
    "gatehouse-postgres",
    "gatehouse-kubernetes",
    "gatehouse-host",
    "gatehouse-postgres-glue",
    "gatehouse-postgres-wasm",
    "gatehouse-kubernetes-glue",
    "gatehouse-kubernetes-wasm",
    "gatehouse-audit-wasm",
];

/// The filter modules Envoy loads.
const FILTER_MODULES: &[&str] = &[
    "gatehouse-postgres-wasm",
    "gatehouse-kubernetes-wasm",
    "gatehouse-audit-wasm",
    // Test-only: emits numbered records for the record-path integration tests.
    "gatehouse-record-producer",
    // Bench-only: a filter that does nothing, the end-to-end benches' floor.
    "gatehouse-bench-noop",
];

/// The native build's crates: Envoy dynamic modules (shared libraries).
const NATIVE_MODULES: &[&str] = &[
    // libgatehouse.so: the Postgres and Kubernetes filters and the record sink.
    "gatehouse-native",
    // Test- and bench-only: passes bytes on, the native build's floor.
    "gatehouse-native-passthrough",
];

/// Integration tests that exercise the Postgres and Kubernetes filters' glue and the record
/// sink: `cargo xtask test` runs them on the native build too (`GATEHOUSE_BUILD=native`).
const NATIVE_GLUE_TESTS: &[&str] = &[
    "foundation",
    "postgres",
    "postgres_login",
    "postgres_policy",
    "postgres_masking",
    "postgres_copy_masking",
    "postgres_approvals",
    "stats",
    "kubernetes",
    "kubernetes_hostile",
    "exec_recording",
    "records",
    "kubernetes_approvals",
];

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(gatehouse_integration::workspace_root());
    cmd
}

/// Runs a command with inherited output; fails when it fails.
fn step(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {what}");
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Installs what the demo runs and reports what must come from OS packages
/// (PostgreSQL and kubectl); with `test_clients`, also what the tests drive.
fn install(test_clients: bool) -> Result<()> {
    let targets = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let has_wasm = targets
        .as_ref()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip1")
        })
        .unwrap_or(false);
    if !has_wasm {
        step(
            "rustup target add wasm32-wasip1",
            Command::new("rustup").args(["target", "add", "wasm32-wasip1"]),
        )?;
    }
    let envoy = tools::install_envoy()?;
    eprintln!("envoy: {}", envoy.display());
    let pg = tools::pg_bin_dir()?;
    eprintln!("postgresql: {}", pg.display());
    eprintln!("psql: {}", tools::pg_client("psql")?.display());
    let kubectl = tools::kubectl(None)?;
    eprintln!("kubectl: {}", kubectl.display());
    if test_clients {
        eprintln!("psycopg: {}", tools::install_psycopg()?.display());
        eprintln!("node-postgres: {}", tools::install_node_pg()?.display());
        eprintln!("jdbc: {}", tools::jdbc_jar()?.display());
        let wasm_opt = shrink::wasm_opt()
            .context("wasm-opt not found: install the Debian package `binaryen`")?;
        eprintln!("wasm-opt: {}", wasm_opt.display());
        eprintln!("promtool: {}", tools::promtool()?.display());
    }
    Ok(())
}

/// Builds the filter modules and shrinks them with wasm-opt; with
/// `Shrink::IfAvailable` a machine without wasm-opt gets them unshrunk, with a note.
fn build_filters(shrink: shrink::Shrink) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--target", "wasm32-wasip1"]);
    for m in FILTER_MODULES {
        cmd.args(["-p", m]);
    }
    step("build filter modules (wasm32-wasip1, release)", &mut cmd)?;
    let wasm_opt = match (shrink::wasm_opt(), shrink) {
        (Some(wasm_opt), _) => wasm_opt,
        (None, shrink::Shrink::IfAvailable) => {
            eprintln!("{}", shrink::UNSHRUNK_NOTE);
            return Ok(());
        }
        (None, shrink::Shrink::Required) => {
            bail!("wasm-opt not found: install the Debian package `binaryen`")
        }
    };
    eprintln!("==> wasm-opt the modules Envoy loads");
    for m in shrink::filter_modules_built() {
        let (before, after) = shrink::optimize(&wasm_opt, &m)?;
        eprintln!("    {} ({before} -> {after} bytes)", m.display());
    }
    Ok(())
}

/// Builds the Envoy dynamic modules (profile `release-native`, into
/// `target/release-native/lib<name>.so`).
fn build_native() -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--profile", "release-native"]);
    for m in NATIVE_MODULES {
        cmd.args(["-p", m]);
    }
    step(
        "build native modules (Envoy dynamic modules, release-native)",
        &mut cmd,
    )
}

/// `cargo xtask gatehouse ...`: the command line, built if needed, run in
/// the caller's directory.
fn gatehouse(args: &[String]) -> Result<()> {
    let status = cargo()
        .args(["run", "--quiet", "-p", "gatehouse-cli", "--"])
        .args(args)
        .current_dir(std::env::current_dir()?)
        .status()
        .context("running the gatehouse command line")?;
    std::process::exit(status.code().unwrap_or(1));
}

/// Shipped examples that hold one part of the Postgres filter configuration
/// (`gatehouse validate --part`); every other example is a whole document.
const PART_EXAMPLES: &[(&str, &str)] = &[("postgres-masking.json", "masking")];

/// Checks every `examples/*.json` with `gatehouse validate`, the filters' own parsers.
fn validate_examples() -> Result<()> {
    let dir = gatehouse_integration::workspace_root().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    for file in files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let mut cmd = cargo();
        cmd.args(["run", "-q", "-p", "gatehouse-cli", "--", "validate"]);
        if let Some((_, part)) = PART_EXAMPLES.iter().find(|(example, _)| *example == name) {
            cmd.args(["--part", part]);
        }
        step(
            &format!("gatehouse validate examples/{name}"),
            cmd.arg(&file),
        )?;
    }
    Ok(())
}

fn test() -> Result<()> {
    install(true)?;
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    step(
        "clippy (native)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    let mut wasm_clippy = cargo();
    wasm_clippy.args(["clippy", "--target", "wasm32-wasip1"]);
    for c in WASM_CRATES {
        wasm_clippy.args(["-p", c]);
    }
    step(
        "clippy (wasm32-wasip1)",
        wasm_clippy.args(["--", "-D", "warnings"]),
    )?;
    step(
        "unit tests",
        cargo().args(["test", "--workspace", "--exclude", "gatehouse-integration"]),
    )?;
    // ES384 is an optional feature of the core (it adds to every module's size):
    // lint and test the build that has it too.
    step(
        "clippy with the es384 feature",
        cargo().args([
            "clippy",
            "-p",
            "gatehouse-core",
            "--features",
            "es384",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "identity tests with the es384 feature",
        cargo().args([
            "test",
            "-p",
            "gatehouse-core",
            "--features",
            "es384",
            "--lib",
            "identity::",
        ]),
    )?;
    validate_examples()?;
    let runner = format!(
        "node --no-warnings {}",
        gatehouse_integration::workspace_root()
            .join("xtask/wasi/run.mjs")
            .display()
    );
    step(
        "core unit tests compiled to wasm32-wasip1 (run under Node's WASI)",
        cargo()
            .args([
                "test",
                "-p",
                "gatehouse-core",
                "--target",
                "wasm32-wasip1",
                "--lib",
            ])
            // The shared masking, record and config code, as it runs inside Envoy;
            // the identity tests generate RSA keys, which is slow in unoptimised Wasm.
            .args(["--", "mask::", "config::", "record::"])
            .env("CARGO_TARGET_WASM32_WASIP1_RUNNER", runner),
    )?;
    build_filters(shrink::Shrink::Required)?;
    build_native()?;
    prometheus_rules()?;
    step(
        "integration tests (real Envoy, PostgreSQL, kubectl)",
        cargo().args(["test", "-p", "gatehouse-integration"]),
    )?;
    let mut native = cargo();
    native.args(["test", "-p", "gatehouse-integration"]);
    for test in NATIVE_GLUE_TESTS {
        native.args(["--test", test]);
    }
    step(
        "integration tests of the Postgres and Kubernetes glue on the native build",
        native.env("GATEHOUSE_BUILD", "native"),
    )?;
    demo::smoke_test()?;
    // The smoke test builds the demo's modules as a machine without wasm-opt would.
    build_filters(shrink::Shrink::Required)
}

/// The shipped Prometheus alerting rules: valid (`promtool check rules`) and
/// firing as their unit tests say (`promtool test rules`).
fn prometheus_rules() -> Result<()> {
    let promtool = tools::promtool()?;
    let dir = gatehouse_integration::workspace_root().join("ops/prometheus");
    step(
        "promtool check rules ops/prometheus/gatehouse-alerts.yaml",
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(dir.join("gatehouse-alerts.yaml")),
    )?;
    step(
        "promtool test rules ops/prometheus/gatehouse-alerts.test.yaml",
        Command::new(&promtool)
            .args(["test", "rules"])
            .arg(dir.join("gatehouse-alerts.test.yaml")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_task_answers_help() {
        Cli::command().debug_assert();
        for task in Cli::command().get_subcommands() {
            let name = task.get_name();
            if name == "gatehouse" {
                // Its --help is the command line's own.
                continue;
            }
            let error = Cli::try_parse_from(["cargo xtask", name, "--help"])
                .err()
                .map(|e| e.kind());
            assert_eq!(error, Some(clap::error::ErrorKind::DisplayHelp), "{name}");
        }
        let token = Cli::try_parse_from(["cargo xtask", "token", "--help"]).map(|_| ());
        assert!(token.is_err(), "token --help is help, not an identity");
        let passed = Cli::try_parse_from(["cargo xtask", "gatehouse", "audit", "--help"]).unwrap();
        assert!(
            matches!(passed.task, Task::Gatehouse { ref args } if args == &["audit", "--help"]),
            "{passed:?}"
        );
    }
}
