//! gatehouse's developer commands.
//!
//! ```text
//! cargo xtask install          wasm target + pinned Envoy; checks for PostgreSQL and kubectl
//! cargo xtask build            the filter modules (wasm32-wasip1, release, then wasm-opt -Oz)
//! cargo xtask demo [--detach]  the whole gateway on this machine, with demo data
//! cargo xtask down             stops a detached demo
//! cargo xtask token <identity>  a fresh token for a demo identity (`--ttl 15m`)
//! cargo xtask package          each filter as a Wasm OCI image layout tarball (target/package/)
//! cargo xtask measure-modules  module sizes and cold start against the targets
//! cargo xtask test             everything CI runs: fmt, clippy (native + wasm), unit tests,
//!                              `gatehouse validate` of every example, integration tests
//! ```

mod demo;
mod measure;
mod package;
mod shrink;

use anyhow::{Context, Result, bail};
use gatehouse_integration::tools;
use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("install") => install().map(|_| ()),
        Some("build") => build_filters(),
        Some("demo") => demo::run(
            args.iter().any(|a| a == "--detach"),
            args.iter().any(|a| a == "--serve"),
        ),
        Some("down") => demo::down(),
        Some("token") => demo::token(&args[1..]),
        Some("test") => test(),
        Some("package") => package::run(),
        Some("measure-modules") => measure::run(),
        _ => {
            eprintln!(
                "usage: cargo xtask <install|build|demo [--detach]|down|token <identity> [--ttl 15m]|test>"
            );
            std::process::exit(2);
        }
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
    "gatehouse-postgres-wasm",
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

/// Installs what a fresh machine lacks; reports what must come from OS packages.
fn install() -> Result<()> {
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
    tools::pg_client("psql")?;
    let kubectl = tools::kubectl(None)?;
    eprintln!("kubectl: {}", kubectl.display());
    eprintln!("psycopg: {}", tools::install_psycopg()?.display());
    eprintln!("node-postgres: {}", tools::install_node_pg()?.display());
    eprintln!("jdbc: {}", tools::jdbc_jar()?.display());
    eprintln!("wasm-opt: {}", shrink::wasm_opt()?.display());
    Ok(())
}

fn build_filters() -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--target", "wasm32-wasip1"]);
    for m in FILTER_MODULES {
        cmd.args(["-p", m]);
    }
    step("build filter modules (wasm32-wasip1, release)", &mut cmd)?;
    let wasm_opt = shrink::wasm_opt()?;
    eprintln!("==> wasm-opt the modules Envoy loads");
    for m in shrink::filter_modules_built() {
        let (before, after) = shrink::optimize(&wasm_opt, &m)?;
        eprintln!("    {} ({before} -> {after} bytes)", m.display());
    }
    Ok(())
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
    install()?;
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
    build_filters()?;
    step(
        "integration tests (real Envoy, PostgreSQL, kubectl)",
        cargo().args(["test", "-p", "gatehouse-integration"]),
    )?;
    demo::smoke_test()
}
