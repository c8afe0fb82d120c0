//! `gatehouse audit` run as a program: help, errors, and following a growing log.

// Test helpers: a missing value fails the test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::gatehouse;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const STATEMENT: &str = r#"{"type":"pg.statement","schema":1,"sequence":2,"connection_id":7,"time":"2026-12-07T01:00:01.000000Z","user":"app","database":"shop","identity":{"subject":"developer","groups":["developers"]},"statement":"select 1","command_tag":"SELECT 1","rows":1,"duration_us":5,"decision":{"action":"allow"}}"#;
const OTHER: &str = r#"{"type":"pg.statement","schema":1,"sequence":2,"connection_id":8,"time":"2026-12-07T01:00:02.000000Z","user":"app","database":"shop","identity":{"subject":"ci","groups":["ci"]},"statement":"select 2","command_tag":"SELECT 1","rows":1,"duration_us":5,"decision":{"action":"allow"}}"#;

fn log_file(name: &str, lines: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!("gatehouse-audit-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(
        &path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn help_is_help_on_every_audit_subcommand() {
    for args in [
        &["audit", "--help"][..],
        &["audit", "follow", "--help"],
        &["audit", "records", "-h"],
        &["audit", "sessions", "--help"],
        &["audit", "replay", "--help"],
        &["audit", "verify", "--help"],
        &["help", "audit"],
    ] {
        let run = gatehouse(args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(
            run.stdout.contains("Usage: gatehouse audit"),
            "{args:?}: {}",
            run.stdout
        );
    }
    assert_eq!(gatehouse(&["audit"]).code, 2, "a subcommand is required");
    assert_eq!(
        gatehouse(&["audit", "follow"]).code,
        2,
        "a file is required"
    );
}

#[test]
fn an_unknown_session_is_an_error_and_a_known_one_replays() {
    let path = log_file("replay.log", &[STATEMENT]);
    let unknown = gatehouse(&["audit", "replay", &path, "--session", "999"]);
    assert_eq!(unknown.code, 1, "{}{}", unknown.stdout, unknown.stderr);
    assert!(
        unknown
            .stderr
            .contains("no Postgres session or recorded exec session 999"),
        "{}",
        unknown.stderr
    );
    let known = gatehouse(&["audit", "replay", &path, "--session", "7"]);
    assert_eq!(known.code, 0, "{}", known.stderr);
    assert!(
        known
            .stdout
            .contains("-- developer (groups developers), as role app"),
        "{}",
        known.stdout
    );
    let last = gatehouse(&["audit", "replay", &path, "--subject", "developer", "--last"]);
    assert_eq!(last.stdout, known.stdout, "the developer's last session");
    let nobody = gatehouse(&["audit", "replay", &path, "--subject", "nobody", "--last"]);
    assert_eq!(nobody.code, 1);
    assert_eq!(
        gatehouse(&["audit", "replay", &path]).code,
        2,
        "which session?"
    );
    let missing = gatehouse(&["audit", "records", "/nonexistent/access.log"]);
    assert_eq!(missing.code, 2);
}

#[test]
fn follow_prints_matching_records_as_the_log_grows() {
    let path = log_file("follow.log", &[STATEMENT, OTHER]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args([
            "audit",
            "follow",
            &path,
            "--subject",
            "developer",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        STATEMENT,
        "what the file held"
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let later = STATEMENT.replace("select 1", "select 3");
    // Another identity's record, then half a line, then the rest of it.
    writeln!(file, "{OTHER}").unwrap();
    let (head, tail) = later.split_at(40);
    write!(file, "{head}").unwrap();
    file.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    writeln!(file, "{tail}").unwrap();
    let next = lines.next().unwrap().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(next, later, "only the developer's record, whole");
}

#[test]
fn records_and_sessions_show_the_person_in_a_table() {
    let path = log_file("table.log", &[STATEMENT, OTHER]);
    let records = gatehouse(&["audit", "records", &path, "--group", "developers"]);
    assert_eq!(records.code, 0, "{}", records.stderr);
    let lines: Vec<&str> = records.stdout.lines().collect();
    assert!(lines[0].starts_with("TIME"), "{}", records.stdout);
    assert_eq!(lines.len(), 2, "{}", records.stdout);
    assert!(lines[1].contains("developer (app)") && lines[1].contains("select 1"));
    let sessions = gatehouse(&["audit", "sessions", &path, "--role", "app", "-o", "json"]);
    let listed: Vec<serde_json::Value> = sessions
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["subject"], "ci");
    assert_eq!(listed[1]["statements"], 1);
}
