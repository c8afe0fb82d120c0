//! `cargo xtask measure-modules`: each filter module's size (raw and gzip) and
//! its cold start (Envoy started with the single-filter bootstrap until the
//! listener accepts a connection), against the targets.

use anyhow::{Context, Result};
use gatehouse_integration::{configs, envoy::Envoy, scratch_dir, stack, tools};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Each module must stay under this size (bytes).
const SIZE_TARGET: u64 = 1_500_000;
/// Loaded and serving within this many seconds.
const COLD_START_TARGET_SECONDS: f64 = 1.0;

/// Prints one line per filter, for the modules `cargo xtask build` produced.
pub fn run() -> Result<()> {
    let modules = tools::filter_modules()?;
    let dir = scratch_dir("measure", "modules")?;
    let mut vars = configs::vars(&dir)?;
    vars.insert(
        "KUBE_CONFIG",
        gatehouse_integration::envoy::yaml_quote(
            &stack::default_kubernetes_filter_config().to_string(),
        ),
    );
    for (filter, module, template, listener) in [
        ("postgres", &modules.postgres, "postgres.yaml", "postgres"),
        (
            "kubernetes",
            &modules.kubernetes,
            "kubernetes.yaml",
            "kubernetes",
        ),
    ] {
        let raw = std::fs::metadata(module)?.len();
        let gzipped = gzip_size(module)?;
        let yaml = configs::render_file(&configs::envoy_dir().join(template), &vars)?;
        let run_dir = dir.join(filter);
        std::fs::create_dir_all(&run_dir)?;
        let started = Instant::now();
        let envoy = Envoy::start(&run_dir, &yaml)?;
        let port = envoy.listener_port(listener)?;
        TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connecting to the {filter} listener"))?;
        let cold_start = started.elapsed().as_secs_f64();
        drop(envoy);
        println!(
            "{filter:<11} {raw:>9} B raw ({}) {gzipped:>8} B gzip   cold start {cold_start:.2} s ({})",
            verdict(raw <= SIZE_TARGET),
            verdict(cold_start <= COLD_START_TARGET_SECONDS),
        );
    }
    println!("targets: module < {SIZE_TARGET} B, listener serving < {COLD_START_TARGET_SECONDS} s");
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "within target" } else { "OVER TARGET" }
}

/// The module's size after `gzip -9` (how registries store and ship layers).
fn gzip_size(module: &Path) -> Result<u64> {
    let out = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(module)
        .stderr(Stdio::inherit())
        .output()
        .context("running gzip")?;
    Ok(u64::try_from(out.stdout.len())?)
}
