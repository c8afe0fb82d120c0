//! The post-build size pass: every module Envoy loads is rewritten by binaryen's
//! `wasm-opt` (Debian package `binaryen`). The demo runs without it: a machine
//! that lacks it gets the modules unshrunk, with [`UNSHRUNK_NOTE`].
//!
//! rustc's linker leaves relocatable padding (five-byte LEB128 indices) and code
//! binaryen can still shrink; `-Oz` takes about 13% off the Postgres filter, which
//! matters because module size drives Envoy's cold start and every ECDS rollout.
//! The pass keeps the module's behaviour: the integration tests run the rewritten
//! modules.

use anyhow::{Context, Result, bail};
use gatehouse_integration::tools;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Optimisation level, the Wasm features rustc's `wasm32-wasip1` target enables
/// (`rustc --print cfg --target wasm32-wasip1`; the stripped module no longer
/// carries its `target_features` section, so wasm-opt cannot detect them), and
/// what is dropped: debug info and the producers section (the name section is
/// already gone: the release profile strips symbols).
const WASM_OPT_ARGS: &[&str] = &[
    "-Oz",
    "--enable-bulk-memory",
    "--enable-multivalue",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-reference-types",
    "--enable-sign-ext",
    "--strip-debug",
    "--strip-producers",
];

/// The filter modules Envoy loads, where the cargo build just wrote them
/// (`CARGO_TARGET_DIR` when set, relative to the workspace root where the build
/// ran, else the workspace's `target/`).
pub fn filter_modules_built() -> Vec<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    let dir = gatehouse_integration::workspace_root()
        .join(target)
        .join("wasm32-wasip1/release");
    [
        "gatehouse_postgres_wasm",
        "gatehouse_kubernetes_wasm",
        "gatehouse_audit_wasm",
    ]
    .iter()
    .map(|name| dir.join(format!("{name}.wasm")))
    .collect()
}

/// Whether a build must shrink the modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shrink {
    /// Fail without wasm-opt (CI, packages, measurements).
    Required,
    /// Build unshrunk without it, saying so (the demo).
    IfAvailable,
}

/// What a build without wasm-opt says, once.
pub const UNSHRUNK_NOTE: &str = "note: wasm-opt not found, so the filter modules are not shrunk \
     (about 13% larger, same behaviour); `apt-get install binaryen` shrinks them next time";

/// `wasm-opt` on PATH.
pub fn wasm_opt() -> Option<PathBuf> {
    tools::find_on_path(&["wasm-opt"])
}

/// Rewrites `module` in place with `wasm-opt`; returns (bytes before, bytes after).
///
/// The last input and output are kept beside the module (`.wasm-opt.in`,
/// `.wasm-opt.out`): cargo links its unchanged output back on every build, and the
/// same input is then replaced by the kept output instead of being optimised again
/// (minutes for the Postgres filter); a module that already is the output is left
/// alone. Every write goes to a temporary file renamed over the module, so an
/// interrupted run never leaves a truncated module, and cargo's own copy under
/// `deps/` (the module is a hard link to it) stays the linker's output.
pub fn optimize(wasm_opt: &Path, module: &Path) -> Result<(u64, u64)> {
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let input = read(module)?;
    let last_input = module.with_extension("wasm-opt.in");
    let last_output = module.with_extension("wasm-opt.out");
    let kept = |path: &Path| std::fs::read(path).ok();
    let output = match (kept(&last_input), kept(&last_output)) {
        (_, Some(out)) if out == input => out,
        (Some(inp), Some(out)) if inp == input => out,
        _ => {
            // Kept only beside the output made from it.
            let _ = std::fs::remove_file(&last_input);
            let status = Command::new(wasm_opt)
                .args(WASM_OPT_ARGS)
                .arg(module)
                .arg("-o")
                .arg(&last_output)
                .status()
                .context("running wasm-opt")?;
            if !status.success() {
                let _ = std::fs::remove_file(&last_output);
                bail!("wasm-opt failed on {} ({status})", module.display());
            }
            std::fs::write(&last_input, &input)
                .with_context(|| format!("writing {}", last_input.display()))?;
            read(&last_output)?
        }
    };
    let temporary = module.with_extension("wasm-opt.tmp");
    std::fs::write(&temporary, &output)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, module)
        .with_context(|| format!("replacing {}", module.display()))?;
    Ok((len(&input), len(&output)))
}

fn len(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}
