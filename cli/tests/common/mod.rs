//! Running the built `gatehouse` binary and writing its input files.

// Test support: a failure to run the binary or read a fixture fails the test.
#![allow(dead_code, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

/// What one run of the binary printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `gatehouse` with `args`.
pub fn gatehouse(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .output()
        .expect("run gatehouse");
    Run {
        code: output.status.code().expect("exit code"),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    }
}

/// A shipped example, as a path the binary can open.
pub fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Every `*.json` under `examples/`.
pub fn examples() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("examples directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| path.to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

/// Writes `contents` to a fresh file named after the test and returns its path.
pub fn file(test: &str, contents: &str) -> String {
    let dir = std::env::temp_dir().join(format!("gatehouse-cli-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join(format!("{test}.json"));
    std::fs::write(&path, contents).expect("write test file");
    path.to_string_lossy().into_owned()
}
