//! `gatehouse replay` (`gatehouse audit replay`) and `gatehouse audit
//! verify` over recorded sessions: a log written by the filter's own session
//! recorder, among other records.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::{file, gatehouse};
use gatehouse_kubernetes::recording::websocket::encode_channel_message;
use gatehouse_kubernetes::recording::wire::Channel;
use gatehouse_kubernetes::recording::{ExecSession, RecordingConfig, SessionInfo, TransportKind};
use serde_json::{Value, json};
use std::sync::Arc;

const SESSION: &str = "0f5cbb4c-8f6e-4b0e-9c7e-00000000abcd";
const T0: u64 = 1_795_308_488_000_000;

/// A recorded shell session: a command, a refused line, a password typed
/// at a prompt and echoed, and exit 3; then a Postgres session and an Event.
fn log() -> String {
    let info = SessionInfo {
        audit_id: SESSION.into(),
        user: "developer".into(),
        groups: vec!["developers".into()],
        namespace: "dev".into(),
        pod: "web-0".into(),
        container: Some("app".into()),
        subresource: "exec".into(),
        command: vec!["sh".into()],
        tty: true,
        stdin: true,
        rule: "exec-in-dev-recorded".into(),
        policy_hash: None,
    };
    let config =
        Arc::new(RecordingConfig::from_value(json!({"deny_commands": ["rm -rf /"]})).unwrap());
    let (mut session, first) = ExecSession::start(
        info,
        config,
        TransportKind::WebSocket,
        "v5.channel.k8s.io",
        T0,
    );
    let mut records = first.records;
    let client = |data: &[u8], channel| {
        let mut out = Vec::new();
        encode_channel_message(channel, data, Some([1, 2, 3, 4]), &mut out);
        out
    };
    let server = |data: &[u8], channel| {
        let mut out = Vec::new();
        encode_channel_message(channel, data, None, &mut out);
        out
    };
    let steps: Vec<(bool, Vec<u8>, u64)> = vec![
        (true, client(br#"{"Width":100,"Height":30}"#, Channel::Resize), 1),
        (false, server(b"$ ", Channel::Stdout), 10_000),
        (true, client(b"hostname\r", Channel::Stdin), 500_000),
        (false, server(b"hostname\r\nweb-0\r\n$ ", Channel::Stdout), 510_000),
        (true, client(b"rm -rf /\r", Channel::Stdin), 1_500_000),
        (false, server(b"rm -rf /^C\r\n$ ", Channel::Stdout), 1_510_000),
        (true, client(b"read -s -p Password: p\r", Channel::Stdin), 2_500_000),
        (false, server(b"read -s -p Password: p\r\nPassword:", Channel::Stdout), 2_510_000),
        (true, client(b"hunter2-horse\r", Channel::Stdin), 4_000_000),
        (false, server(b"\r\n$ ", Channel::Stdout), 4_010_000),
        (true, client(b"echo $p\r", Channel::Stdin), 5_000_000),
        (false, server(b"echo $p\r\nhunter2-horse\r\n$ ", Channel::Stdout), 5_010_000),
        (true, client(b"exit 3\r", Channel::Stdin), 6_000_000),
        (
            false,
            [
                server(b"exit 3\r\n", Channel::Stdout),
                server(
                    br#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#,
                    Channel::Error,
                ),
            ]
            .concat(),
            6_010_000,
        ),
    ];
    for (from_client, bytes, at) in steps {
        let output = if from_client {
            session.on_client(&bytes, T0 + at)
        } else {
            session.on_server(&bytes, T0 + at)
        };
        records.extend(output.records);
    }
    records.extend(session.finish(T0 + 6_100_000));
    let mut lines = vec![
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"0f5cbb4c-8f6e-4b0e-9c7e-00000000abcd","stage":"ResponseStarted"}"#.to_owned(),
        r#"{"type":"pg.session_start","schema":1,"sequence":1,"connection_id":7,"time":"2026-11-22T00:48:08.000000Z","user":"alice","database":"shop","client_address":"1.2.3.4:5"}"#.to_owned(),
    ];
    lines.extend(records);
    lines.push(r#"{"type":"pg.statement","schema":1,"sequence":2,"connection_id":7,"time":"2026-11-22T00:48:09.000000Z","user":"alice","database":"shop","statement":"select email from customers","command_tag":"SELECT 3","rows":3,"duration_us":5,"decision":{"action":"allow"},"masking":{"detectors":{"email":3}}}"#.to_owned());
    lines.push(r#"{"type":"pg.statement","schema":1,"sequence":3,"connection_id":7,"time":"2026-11-22T00:48:10.000000Z","user":"alice","database":"shop","statement":"drop table orders","error":{"sqlstate":"42501","message":"denied","severity":"ERROR"},"duration_us":5,"decision":{"action":"deny","rule":"no-ddl"}}"#.to_owned());
    lines.push(r#"{"type":"pg.session_end","schema":1,"sequence":4,"connection_id":7,"time":"2026-11-22T00:48:11.000000Z","reason":"client_terminate","statements":2,"errors":1,"denied":1,"masked":3,"last_sequence":4}"#.to_owned());
    lines.join("\n") + "\n"
}

#[test]
fn an_exec_session_replays_as_asciicast_v2() {
    let path = file("replay-asciicast", &log());
    let run = gatehouse(&[
        "replay",
        &path,
        "--session",
        SESSION,
        "--format",
        "asciicast",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.is_empty(), "the chain holds: {}", run.stderr);
    let mut lines = run.stdout.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(100), Some(30))
    );
    assert_eq!(header["timestamp"], 1_795_308_488);
    assert_eq!(
        header["title"],
        "kubectl exec dev/web-0 -c app -- sh (developer)"
    );
    let events: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut last = 0.0;
    let mut output = String::new();
    for event in &events {
        let at = event[0].as_f64().unwrap();
        assert!(at >= last, "events in time order: {event}");
        last = at;
        assert!(
            ["o", "i", "r", "m"].contains(&event[1].as_str().unwrap()),
            "{event}"
        );
        if event[1] == "o" {
            output.push_str(event[2].as_str().unwrap());
        }
    }
    assert!(output.starts_with("$ hostname\r\nweb-0\r\n"), "{output}");
    assert!(
        output.contains("gatehouse: refused \"rm -rf /\""),
        "{output}"
    );
    assert!(
        !run.stdout.contains("hunter2-horse"),
        "the echoed password is masked"
    );
    assert!(output.contains("echo $p\r\n****\r\n"), "{output}");
    if asciinema_installed() {
        // asciinema opens /dev/tty: `script` gives it a terminal.
        let cast = file_with("replay-asciicast.cast", &run.stdout);
        let cat = std::process::Command::new("script")
            .args(["-qec", &format!("asciinema cat {cast}"), "/dev/null"])
            .output()
            .unwrap();
        assert!(
            cat.status.success(),
            "{}",
            String::from_utf8_lossy(&cat.stderr)
        );
        let shown = String::from_utf8_lossy(&cat.stdout);
        assert!(
            shown.contains("web-0") && shown.contains("gatehouse: refused"),
            "{shown}"
        );
    }
}

/// Whether `asciinema` is installed (CI installs it; see .ci/run).
fn asciinema_installed() -> bool {
    std::process::Command::new("asciinema")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

fn file_with(name: &str, contents: &str) -> String {
    let path = std::path::PathBuf::from(file(name, "")).with_file_name(name);
    std::fs::write(&path, contents).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn an_exec_session_replays_as_a_transcript_with_its_commands() {
    let path = file("replay-text", &log());
    let run = gatehouse(&["replay", &path, "--session", SESSION, "--format", "text"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let last = gatehouse(&["audit", "replay", &path, "--subject", "developer", "--last"]);
    assert_eq!(
        last.stdout, run.stdout,
        "the developer's last session is the exec session, after alice's Postgres session"
    );
    let text = &run.stdout;
    assert!(text.starts_with("-- 2026-11-22T00:48:08.000000Z 0f5cbb4c-8f6e-4b0e-9c7e-00000000abcd: kubectl exec dev/web-0 -c app -- sh (developer) (rule exec-in-dev-recorded, websocket)\n"), "{text}");
    assert!(text.contains("$ hostname\nweb-0\n$ "), "{text}");
    assert!(
        text.contains("[gatehouse: refused: matches deny pattern \"rm -rf /\"]"),
        "{text}"
    );
    assert!(
        text.contains("deny rm -rf /: matches deny pattern \"rm -rf /\""),
        "{text}"
    );
    assert!(text.contains("allow **** (secret)"), "{text}");
    assert!(
        text.contains("end (completed, exit code 3): 6 commands, 1 refused"),
        "{text}"
    );
    assert!(!text.contains("hunter2-horse"), "{text}");
}

#[test]
fn a_postgres_session_replays_as_a_statement_transcript() {
    let path = file("replay-pg", &log());
    let run = gatehouse(&["replay", &path, "--session", "7"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "-- 2026-11-22T00:48:08.000000Z session 7 start");
    assert_eq!(
        lines[1],
        "-- role alice (no verified identity) on database shop from 1.2.3.4:5"
    );
    assert_eq!(lines[2], "shop=> select email from customers;");
    assert!(
        lines[3].contains("SELECT 3 [3 rows] [3 values masked: email 3]")
            && lines[3].contains("allow"),
        "{}",
        lines[3]
    );
    assert!(lines[5].contains("ERROR: denied (42501)") && lines[5].contains("deny by rule no-ddl"));
    assert!(
        lines[6].contains("2 statements, 1 denied, 1 errors, 3 values masked"),
        "{}",
        lines[6]
    );
    let cast = gatehouse(&["replay", &path, "--session", "7", "--format", "asciicast"]);
    assert_eq!(cast.code, 0);
    let events: Vec<Value> = cast
        .stdout
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), lines.len());
    assert_eq!(
        events[3][0], 1.0,
        "the first statement's outcome a second in"
    );
    assert_eq!(events[4][0], 2.0, "the second statement two seconds in");
    let missing = gatehouse(&["replay", &path, "--session", "8"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("no Postgres session or recorded exec session 8")
    );
}

#[test]
fn audit_verify_checks_each_sessions_chain_and_names_the_first_break() {
    let log = log();
    let intact = gatehouse(&["audit", "verify", &file("verify-intact", &log)]);
    assert_eq!(intact.code, 0, "{}{}", intact.stdout, intact.stderr);

    // A chunk's output altered: its digest no longer matches.
    let tampered = log.replacen("web-0\\r\\n", "web-1\\r\\n", 1);
    assert_ne!(tampered, log);
    let run = gatehouse(&["audit", "verify", &file("verify-tampered", &tampered)]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains(&format!("exec session {SESSION}: sequence"))
            && run.stdout.contains("altered"),
        "{}",
        run.stdout
    );

    // A command record removed: the sequence has a gap.
    let lines: Vec<&str> = log.lines().collect();
    let command = lines
        .iter()
        .position(|l| l.contains("\"k8s.exec.command\""))
        .unwrap();
    let sequence: Value = serde_json::from_str(lines[command]).unwrap();
    let without: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != command)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let run = gatehouse(&["audit", "verify", &file("verify-gap", &without)]);
    assert_eq!(run.code, 1);
    let n = sequence["sequence"].as_u64().unwrap();
    assert!(
        run.stdout
            .contains(&format!("sequence {n} missing (next is {})", n + 1)),
        "{}",
        run.stdout
    );

    // The end cut off.
    let cut: String = lines
        .iter()
        .filter(|l| !l.contains("k8s.exec.session_end"))
        .map(|l| format!("{l}\n"))
        .collect();
    let run = gatehouse(&["audit", "verify", &file("verify-cut", &cut)]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("without k8s.exec.session_end"),
        "{}",
        run.stdout
    );

    // Replay still plays an altered session, and says so.
    let replay = gatehouse(&[
        "replay",
        &file("replay-tampered", &tampered),
        "--session",
        SESSION,
    ]);
    assert_eq!(replay.code, 0);
    assert!(
        replay.stderr.contains("warning") && replay.stderr.contains("altered"),
        "{}",
        replay.stderr
    );
}
