//! Running real client programs (psql output, Python with psycopg, Java with
//! the JDBC driver) from tests, with their output checked the same way.

use crate::Stack;
use std::path::Path;
use std::process::{Command, Output};

/// The command's stdout; panics with both streams when it failed.
pub fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a client program that prints `ok` when every check in it passed.
pub fn run_checked(what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} could not start: {e}"));
    let text = stdout(&out);
    assert!(text.contains("ok"), "{what}: {text}");
    text
}

/// Runs a Python script with psycopg importable; `args` follow the script path.
pub fn psycopg(stack: &Stack, name: &str, script: &str, args: &[&str]) -> String {
    let path = stack.dir.join(format!("{name}.py"));
    std::fs::write(&path, script).expect("script written");
    let pythonpath = crate::tools::psycopg_dir().expect("psycopg installed");
    run_checked(
        "psycopg",
        Command::new("python3")
            .arg(&path)
            .args(args)
            .env("PYTHONPATH", &pythonpath),
    )
}

/// Compiles and runs a Java program (public class `class`) with the JDBC driver
/// on the class path; `args` go to `main`.
pub fn jdbc(stack: &Stack, class: &str, source: &str, args: &[&str]) -> String {
    let dir = stack.dir.join(format!("java-{class}"));
    std::fs::create_dir_all(&dir).expect("java directory");
    let file = dir.join(format!("{class}.java"));
    std::fs::write(&file, source).expect("java source written");
    let jar = crate::tools::jdbc_jar().expect("JDBC driver installed");
    // The driver's own classes (large objects, PGConnection) on the compile path too.
    let javac = Command::new("javac")
        .arg("-cp")
        .arg(&jar)
        .arg("-d")
        .arg(&dir)
        .arg(&file)
        .output()
        .expect("javac runs (install a JDK: apt-get install default-jdk-headless)");
    stdout(&javac);
    run_checked(
        "JDBC",
        Command::new("java")
            .arg("-cp")
            .arg(class_path(&dir, &jar))
            .arg(class)
            .args(args),
    )
}

fn class_path(classes: &Path, jar: &Path) -> String {
    format!("{}:{}", classes.display(), jar.display())
}
