//! Whole sessions through [`ExecSession`]: what reaches the pod, what the
//! user sees, and what is recorded, at every split of the bytes.

use super::config::RecordingConfig;
use super::recorder::SessionInfo;
use super::session::{ExecSession, Output, TransportKind};
use super::spdy;
use super::websocket;
use super::wire::Channel;
use gatehouse_core::exec_record::ChainCheck;
use serde_json::{Value, json};
use std::sync::Arc;

const T0: u64 = 1_795_308_488_000_000;
const KEY: Option<[u8; 4]> = Some([0x11, 0x22, 0x33, 0x44]);
const SUCCESS: &[u8] = br#"{"metadata":{},"status":"Success"}"#;

fn info(tty: bool) -> SessionInfo {
    SessionInfo {
        audit_id: "0f5cbb4c-8f6e-4b0e-9c7e-000000000001".into(),
        user: "developer".into(),
        groups: vec!["developers".into()],
        namespace: "dev".into(),
        pod: "web-0".into(),
        container: Some("app".into()),
        subresource: "exec".into(),
        command: vec!["sh".into()],
        tty,
        stdin: true,
        rule: "exec-recorded".into(),
        policy_hash: Some("sha256:00".into()),
    }
}

fn config(record: Value) -> Arc<RecordingConfig> {
    Arc::new(RecordingConfig::from_value(record).unwrap())
}

fn ws_client(channel: Channel, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    websocket::encode_channel_message(channel, data, KEY, &mut out);
    out
}

fn ws_server(channel: Channel, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    websocket::encode_channel_message(channel, data, None, &mut out);
    out
}

/// One step of a session: bytes from one side at a time (µs after T0).
enum Step {
    Client(Vec<u8>, u64),
    Server(Vec<u8>, u64),
}

/// What a run produced: bytes that went on each way, records, whether ended.
#[derive(Debug, Default, PartialEq, Eq)]
struct Run {
    to_pod: Vec<u8>,
    to_user: Vec<u8>,
    records: Vec<String>,
    ended: bool,
}

fn apply(output: Output, input: &[u8], sent: &mut Vec<u8>, run: &mut Run) {
    sent.extend_from_slice(output.rewrite.as_deref().unwrap_or(input));
    run.records.extend(output.records);
    run.ended |= output.end;
}

/// Runs the steps, each side's bytes cut at `cut` (a byte offset in that
/// step, 0 for none).
fn run(
    transport: TransportKind,
    info: SessionInfo,
    config: &Arc<RecordingConfig>,
    steps: &[Step],
    cut: usize,
) -> Run {
    let (mut session, first) =
        ExecSession::start(info, Arc::clone(config), transport, "v5.channel.k8s.io", T0);
    let mut run = Run::default();
    run.records.extend(first.records);
    for step in steps {
        let (bytes, at, from_client) = match step {
            Step::Client(bytes, at) => (bytes, *at, true),
            Step::Server(bytes, at) => (bytes, *at, false),
        };
        let cut = cut.min(bytes.len());
        for part in [&bytes[..cut], &bytes[cut..]] {
            if part.is_empty() {
                continue;
            }
            if from_client {
                let output = session.on_client(part, T0 + at);
                let mut sent = std::mem::take(&mut run.to_pod);
                apply(output, part, &mut sent, &mut run);
                run.to_pod = sent;
            } else {
                let output = session.on_server(part, T0 + at);
                let mut sent = std::mem::take(&mut run.to_user);
                apply(output, part, &mut sent, &mut run);
                run.to_user = sent;
            }
        }
    }
    run.records.extend(session.finish(T0 + 60_000_000));
    run
}

fn parsed(run: &Run) -> Vec<Value> {
    run.records
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect()
}

fn of_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

/// Every recorded event of one code, data joined.
fn events(records: &[Value], code: &str) -> String {
    of_type(records, "k8s.exec.chunk")
        .iter()
        .flat_map(|chunk| chunk["events"].as_array().unwrap().clone())
        .filter(|event| event[1] == code)
        .map(|event| event[2].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// What a run says, whatever the grouping of its events: each code's data
/// in order, the commands, and the end record's counts.
fn summary(run: &Run) -> Vec<String> {
    let records = parsed(run);
    let mut out: Vec<String> = ["i", "o", "e", "r", "x", "m"]
        .iter()
        .map(|code| format!("{code}: {:?}", events(&records, code)))
        .collect();
    for command in of_type(&records, "k8s.exec.command") {
        out.push(format!("command {} {}", command["line"], command["action"]));
    }
    let end = records.last().unwrap();
    for field in [
        "reason",
        "exit_code",
        "stdin_bytes",
        "stdout_bytes",
        "commands",
        "denied",
        "truncated",
    ] {
        out.push(format!("{field}: {}", end[field]));
    }
    out
}

fn verify(run: &Run) {
    let mut check = ChainCheck::default();
    for line in &run.records {
        check.push(line, &serde_json::from_str(line).unwrap());
    }
    assert_eq!(check.broken, None, "{:#?}", run.records);
    assert!(check.ended);
}

fn shell_session() -> Vec<Step> {
    vec![
        Step::Client(
            ws_client(Channel::Resize, br#"{"Width":100,"Height":30}"#),
            10,
        ),
        Step::Server(ws_server(Channel::Stdout, b"$ "), 20),
        Step::Client(ws_client(Channel::Stdin, b"e"), 1_000_000),
        Step::Server(ws_server(Channel::Stdout, b"e"), 1_000_100),
        Step::Client(ws_client(Channel::Stdin, b"cho hi\r"), 1_500_000),
        Step::Server(ws_server(Channel::Stdout, b"cho hi\r\nhi\r\n$ "), 1_500_100),
        Step::Client(ws_client(Channel::Stdin, b"exit\r"), 3_000_000),
        Step::Server(
            [
                ws_server(Channel::Stdout, b"exit\r\n"),
                ws_server(Channel::Error, SUCCESS),
            ]
            .concat(),
            3_000_100,
        ),
    ]
}

#[test]
fn a_shell_session_is_recorded_in_chained_chunks_with_its_commands() {
    let config = config(json!({}));
    let whole = run(
        TransportKind::WebSocket,
        info(true),
        &config,
        &shell_session(),
        0,
    );
    verify(&whole);
    let records = parsed(&whole);
    assert_eq!(records[0]["type"], "k8s.exec.session_start");
    assert_eq!(records[0]["pod"], "web-0");
    assert_eq!(records[0]["transport"], "websocket");
    assert!(records.iter().all(
        |r| r["session"] == "0f5cbb4c-8f6e-4b0e-9c7e-000000000001" && r["user"] == "developer"
    ));
    let commands: Vec<&str> = of_type(&records, "k8s.exec.command")
        .iter()
        .map(|c| c["line"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["echo hi", "exit"]);
    assert_eq!(events(&records, "o"), "$ echo hi\r\nhi\r\n$ exit\r\n");
    assert_eq!(events(&records, "i"), "echo hi\rexit\r");
    assert_eq!(events(&records, "r"), "100x30");
    let end = records.last().unwrap();
    assert_eq!(end["type"], "k8s.exec.session_end");
    assert_eq!(end["reason"], "completed");
    assert_eq!(end["exit_code"], 0);
    assert_eq!(end["commands"], 2);
    assert_eq!(
        whole.to_pod,
        shell_session()
            .iter()
            .filter_map(|s| match s {
                Step::Client(b, _) => Some(b.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat(),
        "recording alone changes nothing"
    );
    // The first line's command record comes after the chunk with its echo:
    // records are in time order.
    let first_command = records
        .iter()
        .position(|r| r["type"] == "k8s.exec.command")
        .unwrap();
    assert!(
        records[..first_command]
            .iter()
            .any(|r| r["type"] == "k8s.exec.chunk")
    );
    for cut in 1..40 {
        let split = run(
            TransportKind::WebSocket,
            info(true),
            &config,
            &shell_session(),
            cut,
        );
        verify(&split);
        assert_eq!(summary(&split), summary(&whole), "cut {cut}");
        assert_eq!(
            (&split.to_pod, &split.to_user),
            (&whole.to_pod, &whole.to_user),
            "cut {cut}"
        );
    }
}

#[test]
fn a_refused_line_on_a_terminal_gets_interrupt_instead_of_its_enter_and_the_user_is_told() {
    let config = config(json!({"deny_commands": ["rm -rf /"]}));
    let steps = vec![
        Step::Server(ws_server(Channel::Stdout, b"$ "), 10),
        Step::Client(ws_client(Channel::Stdin, b"rm -rf /"), 100),
        Step::Server(ws_server(Channel::Stdout, b"rm -rf /"), 110),
        Step::Client(ws_client(Channel::Stdin, b"\r"), 200),
        Step::Server(ws_server(Channel::Stdout, b"^C\r\n$ "), 210),
        Step::Client(ws_client(Channel::Stdin, b"ls\r"), 300),
        Step::Server(ws_server(Channel::Stdout, b"ls\r\nbin\r\n$ "), 310),
    ];
    let whole = run(TransportKind::WebSocket, info(true), &config, &steps, 0);
    verify(&whole);
    let expected_to_pod = [
        ws_client(Channel::Stdin, b"rm -rf /"),
        ws_client(Channel::Stdin, &[0x03]),
        ws_client(Channel::Stdin, b"ls\r"),
    ]
    .concat();
    assert_eq!(
        whole.to_pod, expected_to_pod,
        "the pod never got the line's Enter"
    );
    let notice = "\r\ngatehouse: refused \"rm -rf /\": matches deny pattern \"rm -rf /\"; it was not run\r\n";
    let expected_to_user = [
        ws_server(Channel::Stdout, b"$ "),
        ws_server(Channel::Stdout, b"rm -rf /"),
        ws_server(Channel::Stdout, notice.as_bytes()),
        ws_server(Channel::Stdout, b"^C\r\n$ "),
        ws_server(Channel::Stdout, b"ls\r\nbin\r\n$ "),
    ]
    .concat();
    assert_eq!(whole.to_user, expected_to_user);
    let records = parsed(&whole);
    let commands = of_type(&records, "k8s.exec.command");
    assert_eq!(commands[0]["line"], "rm -rf /");
    assert_eq!(commands[0]["action"], "deny");
    assert_eq!(commands[0]["reason"], "matches deny pattern \"rm -rf /\"");
    assert_eq!(commands[1]["action"], "allow");
    assert!(events(&records, "m").contains("refused: matches deny pattern"));
    assert!(events(&records, "o").contains("gatehouse: refused"));
    assert_eq!(records.last().unwrap()["denied"], 1);
    for cut in 1..12 {
        let split = run(TransportKind::WebSocket, info(true), &config, &steps, cut);
        verify(&split);
        assert_eq!(summary(&split), summary(&whole), "cut {cut}");
        // Split input is re-framed per part: the bytes differ, the stream does not.
        assert_eq!(
            decode_stdin(&split.to_pod),
            decode_stdin(&whole.to_pod),
            "cut {cut}"
        );
    }
}

/// Stdin as the pod would read it from client WebSocket frames.
fn decode_stdin(wire: &[u8]) -> Vec<u8> {
    let mut decoder = websocket::WebSocketDecoder::new(websocket::Sender::Client);
    let mut stdin = Vec::new();
    decoder
        .feed(wire, &mut |piece| {
            if let super::wire::Piece::Payload {
                channel: Some(Channel::Stdin),
                data,
                ..
            } = piece
            {
                stdin.extend_from_slice(data);
            }
        })
        .unwrap();
    stdin
}

#[test]
fn without_a_terminal_a_refused_line_is_dropped_whole() {
    let config = config(json!({"deny_commands": ["rm -rf /*"]}));
    let steps = vec![
        Step::Client(ws_client(Channel::Stdin, b"echo a\nrm -rf /tm"), 10),
        Step::Client(ws_client(Channel::Stdin, b"p/x\nuname"), 20),
        Step::Server(ws_server(Channel::Stdout, b"a\n"), 30),
        Step::Client(
            {
                let mut close = Vec::new();
                websocket::encode_frame(true, 2, KEY, &[255, 0], &mut close);
                close
            },
            40,
        ),
    ];
    let whole = run(TransportKind::WebSocket, info(false), &config, &steps, 0);
    verify(&whole);
    assert_eq!(
        decode_stdin(&whole.to_pod),
        b"echo a\nuname",
        "the last line is sent at the close"
    );
    let user = String::from_utf8_lossy(&whole.to_user).into_owned();
    assert!(
        user.contains("gatehouse: refused \"rm -rf /tmp/x\""),
        "{user}"
    );
    let records = parsed(&whole);
    let commands: Vec<(&str, &str)> = of_type(&records, "k8s.exec.command")
        .iter()
        .map(|c| (c["line"].as_str().unwrap(), c["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        commands,
        [
            ("echo a", "allow"),
            ("rm -rf /tmp/x", "deny"),
            ("uname", "allow")
        ]
    );
}

#[test]
fn uncertain_editing_is_refused_only_when_patterns_are_configured() {
    let steps = vec![Step::Client(
        ws_client(Channel::Stdin, b"rm -rf /tmp/a\x1b[D\x7f\r"),
        10,
    )];
    let guarded = run(
        TransportKind::WebSocket,
        info(true),
        &config(json!({"deny_commands": ["shutdown*"]})),
        &steps,
        0,
    );
    assert!(!decode_stdin(&guarded.to_pod).contains(&b'\r'));
    let command = &of_type(&parsed(&guarded), "k8s.exec.command")[0].clone();
    assert_eq!(command["action"], "deny");
    assert_eq!(command["uncertain"], true);
    let open = run(
        TransportKind::WebSocket,
        info(true),
        &config(json!({})),
        &steps,
        0,
    );
    assert_eq!(decode_stdin(&open.to_pod), b"rm -rf /tmp/a\x1b[D\x7f\r");
    assert_eq!(
        of_type(&parsed(&open), "k8s.exec.command")[0]["action"],
        "allow"
    );
}

#[test]
fn a_password_typed_at_a_prompt_and_echoed_later_is_masked_in_the_recording() {
    let config = config(json!({}));
    let steps = vec![
        Step::Server(ws_server(Channel::Stdout, b"$ "), 10),
        Step::Client(ws_client(Channel::Stdin, b"read -s p; echo got $p\r"), 20),
        Step::Server(
            ws_server(Channel::Stdout, b"read -s p; echo got $p\r\nPassword: "),
            30,
        ),
        Step::Client(ws_client(Channel::Stdin, b"hunter2-horse\r"), 2_000_000),
        Step::Server(
            ws_server(Channel::Stdout, b"\r\ngot hunter2-horse\r\n$ "),
            2_000_100,
        ),
        Step::Client(
            ws_client(Channel::Stdin, b"export DB_PASSWORD=Sup3r-s3cret\r"),
            3_000_000,
        ),
        Step::Server(
            ws_server(Channel::Stdout, b"export DB_PASSWORD=Sup3r-s3cret\r\n$ "),
            3_000_100,
        ),
    ];
    let whole = run(TransportKind::WebSocket, info(true), &config, &steps, 0);
    verify(&whole);
    let everything = whole.records.join("\n");
    assert!(!everything.contains("hunter2-horse"), "{everything}");
    assert!(!everything.contains("Sup3r-s3cret"), "{everything}");
    assert!(
        String::from_utf8_lossy(&whole.to_user).contains("got hunter2-horse"),
        "the live stream is left alone unless mask_live"
    );
    let records = parsed(&whole);
    let commands = of_type(&records, "k8s.exec.command");
    assert_eq!(commands[1]["secret"], true);
    assert_eq!(commands[1]["line"], "****");
    assert!(events(&records, "o").contains("got ****"));
    let masked_typed: u64 = of_type(&records, "k8s.exec.chunk")
        .iter()
        .filter_map(|c| c["masking"]["typed_secrets"].as_u64())
        .sum();
    assert_eq!(masked_typed, 1);
}

#[test]
fn a_command_line_whose_echo_ends_like_a_password_prompt_is_not_taken_for_a_secret() {
    // The terminal sends the line in two pieces and the shell echoes the
    // first before the second arrives: for a moment the output's last line
    // ends in "Password:", which is the echo of the typing, not a prompt.
    let steps = vec![
        Step::Server(ws_server(Channel::Stdout, b"$ "), 10),
        Step::Client(ws_client(Channel::Stdin, b"read -s -p Password:"), 20),
        Step::Server(ws_server(Channel::Stdout, b"read -s -p Password:"), 30),
        Step::Client(ws_client(Channel::Stdin, b" p\r"), 40),
        Step::Server(ws_server(Channel::Stdout, b" p\r\nPassword:"), 50),
        Step::Client(ws_client(Channel::Stdin, b"hunter2-horse\r"), 60),
    ];
    let whole = run(
        TransportKind::WebSocket,
        info(true),
        &config(json!({})),
        &steps,
        0,
    );
    let records = parsed(&whole);
    let lines: Vec<_> = of_type(&records, "k8s.exec.command")
        .iter()
        .map(|c| (c["line"].clone(), c["secret"].clone()))
        .collect();
    assert_eq!(
        lines,
        [
            (json!("read -s -p Password: p"), Value::Null),
            (json!("****"), json!(true)),
        ]
    );
    assert!(!whole.records.join("\n").contains("hunter2-horse"));
}

#[test]
fn live_masking_rewrites_what_the_user_sees_frame_by_frame() {
    let config = config(json!({"mask_live": true}));
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    let steps = vec![Step::Server(
        ws_server(Channel::Stdout, format!("token={jwt}\n").as_bytes()),
        10,
    )];
    let whole = run(TransportKind::WebSocket, info(false), &config, &steps, 0);
    let user = String::from_utf8_lossy(&whole.to_user).into_owned();
    assert!(!user.contains(jwt) && user.contains("token="), "{user}");
    assert!(!whole.records.join("\n").contains(jwt));
}

#[test]
fn past_the_byte_cap_the_recording_is_truncated_or_the_session_ended() {
    let steps = vec![
        Step::Server(ws_server(Channel::Stdout, &[b'a'; 600]), 10),
        Step::Server(ws_server(Channel::Stdout, &[b'b'; 600]), 20),
        Step::Server(ws_server(Channel::Stdout, &[b'c'; 600]), 30),
    ];
    let truncated = run(
        TransportKind::WebSocket,
        info(false),
        &config(json!({"max_session_bytes": 1000})),
        &steps,
        0,
    );
    verify(&truncated);
    let records = parsed(&truncated);
    assert!(!truncated.ended);
    assert_eq!(
        truncated.to_user.len(),
        3 * (600 + 5),
        "the session went on"
    );
    let output = events(&records, "o");
    assert!(output.contains('a') && !output.contains('b') && !output.contains('c'));
    assert!(events(&records, "m").contains("recording truncated"));
    assert_eq!(records.last().unwrap()["truncated"], true);
    assert_eq!(records.last().unwrap()["stdout_bytes"], 1800);

    let ended = run(
        TransportKind::WebSocket,
        info(false),
        &config(json!({"max_session_bytes": 1000, "on_limit": "end"})),
        &steps,
        0,
    );
    verify(&ended);
    assert!(ended.ended);
    assert_eq!(parsed(&ended).last().unwrap()["reason"], "byte_limit");
}

#[test]
fn chunks_hold_at_most_16_kib_or_a_second() {
    let mut steps = Vec::new();
    for i in 0..40u64 {
        steps.push(Step::Server(
            ws_server(
                Channel::Stdout,
                &[b'x'; 1023]
                    .iter()
                    .chain(b"\n")
                    .copied()
                    .collect::<Vec<_>>(),
            ),
            i * 100_000,
        ));
    }
    let whole = run(
        TransportKind::WebSocket,
        info(false),
        &config(json!({})),
        &steps,
        0,
    );
    verify(&whole);
    for chunk in of_type(&parsed(&whole), "k8s.exec.chunk") {
        let events = chunk["events"].as_array().unwrap();
        let first = events.first().unwrap()[0].as_u64().unwrap();
        let last = events.last().unwrap()[0].as_u64().unwrap();
        assert!(chunk["bytes"].as_u64().unwrap() <= 16 * 1024, "{chunk}");
        assert!(last - first < 1_000_000, "{first}..{last}");
    }
}

#[test]
fn bytes_gatehouse_cannot_read_end_the_session_and_say_why() {
    let steps = vec![Step::Server(vec![0x81, 0x01, b'x'], 10)];
    let failed = run(
        TransportKind::WebSocket,
        info(false),
        &config(json!({})),
        &steps,
        0,
    );
    verify(&failed);
    assert!(failed.ended);
    let end = parsed(&failed).last().unwrap().clone();
    assert_eq!(end["reason"], "protocol_error");
    assert!(end["detail"].as_str().unwrap().contains("text message"));
}

/// SPDY: the client opens its streams, types a refused line, and the notice
/// reaches the user on the stdout stream.
#[test]
fn spdy_sessions_are_recorded_and_refused_lines_stopped() {
    use flate2::{Compress, Compression, FlushCompress};
    let mut compress = Compress::new(Compression::best(), true);
    compress.set_dictionary(spdy::DICTIONARY).unwrap();
    let mut syn = |id: u32, kind: &str| {
        let mut plain = 1u32.to_be_bytes().to_vec();
        for part in ["streamtype", kind] {
            plain.extend_from_slice(&(part.len() as u32).to_be_bytes());
            plain.extend_from_slice(part.as_bytes());
        }
        let mut block = Vec::with_capacity(256);
        compress
            .compress_vec(&plain, &mut block, FlushCompress::Sync)
            .unwrap();
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&[0; 6]);
        body.extend_from_slice(&block);
        let mut frame = vec![0x80, 3, 0, 1, 0];
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(&body);
        frame
    };
    let opened = [
        syn(1, "error"),
        syn(3, "stdin"),
        syn(5, "stdout"),
        syn(7, "resize"),
    ]
    .concat();
    let data = |id: u32, fin: bool, bytes: &[u8]| {
        let mut out = Vec::new();
        spdy::encode_data_frame(id, fin, bytes, &mut out);
        out
    };
    let steps = vec![
        Step::Client(opened, 1),
        Step::Client(data(7, false, br#"{"Width":80,"Height":24}"#), 2),
        Step::Server(data(5, false, b"$ "), 3),
        Step::Client(data(3, false, b"rm -rf /\r"), 4),
        Step::Server(data(5, false, b"rm -rf /^C\r\n$ "), 5),
        Step::Client(data(3, false, b"id\r"), 6),
        Step::Server(
            [data(5, false, b"id\r\nuid=0\r\n"), data(1, true, SUCCESS)].concat(),
            7,
        ),
    ];
    let config = config(json!({"deny_commands": ["rm -rf /"]}));
    let whole = run(TransportKind::Spdy, info(true), &config, &steps, 0);
    verify(&whole);
    let mut streams = spdy::StreamMap::default();
    let mut client = spdy::SpdyDecoder::new(spdy::Sender::Client);
    let mut stdin = Vec::new();
    client
        .feed(&whole.to_pod, &mut streams, &mut |piece| {
            if let super::wire::Piece::Payload {
                channel: Some(Channel::Stdin),
                data,
                ..
            } = piece
            {
                stdin.extend_from_slice(data);
            }
        })
        .unwrap();
    assert_eq!(stdin, b"rm -rf /\x03id\r");
    let user = String::from_utf8_lossy(&whole.to_user).into_owned();
    assert!(user.contains("gatehouse: refused \"rm -rf /\""), "{user}");
    let records = parsed(&whole);
    assert_eq!(records[0]["transport"], "spdy");
    assert_eq!(events(&records, "r"), "80x24");
    assert!(events(&records, "o").contains("uid=0"));
    assert_eq!(records.last().unwrap()["exit_code"], 0);
    for cut in 1..30 {
        let split = run(TransportKind::Spdy, info(true), &config, &steps, cut);
        verify(&split);
        assert_eq!(summary(&split), summary(&whole), "cut {cut}");
    }
}

/// Real kubectl 1.29 bytes (testdata/README.md): its streams, resize and
/// typed lines are read, and a refused line loses its Enter at every split.
#[test]
fn captured_kubectl_1_29_input_is_recorded_and_a_refused_line_stopped() {
    let wire = include_bytes!("../../testdata/kubectl-1.29-spdy-exec-client.bin").to_vec();
    let config = config(json!({"deny_commands": ["echo hi"]}));
    let steps = vec![Step::Client(wire.clone(), 10)];
    for cut in 0..=wire.len() {
        let run = run(TransportKind::Spdy, info(true), &config, &steps, cut);
        verify(&run);
        let mut streams = spdy::StreamMap::default();
        let mut client = spdy::SpdyDecoder::new(spdy::Sender::Client);
        let mut stdin = Vec::new();
        client
            .feed(&run.to_pod, &mut streams, &mut |piece| {
                if let super::wire::Piece::Payload {
                    channel: Some(Channel::Stdin),
                    data,
                    ..
                } = piece
                {
                    stdin.extend_from_slice(data);
                }
            })
            .unwrap();
        assert_eq!(stdin, b"echo hi\x03exit\r", "cut {cut}");
        let records = parsed(&run);
        let commands: Vec<(&str, &str)> = of_type(&records, "k8s.exec.command")
            .iter()
            .map(|c| (c["line"].as_str().unwrap(), c["action"].as_str().unwrap()))
            .collect();
        assert_eq!(
            commands,
            [("echo hi", "deny"), ("exit", "allow")],
            "cut {cut}"
        );
        assert_eq!(events(&records, "r"), "0x0");
    }
}

/// Echoed pieces keep their times; a line masking changed is one event, when
/// its last piece came, so the pieces cannot spell the secret.
#[test]
fn output_keeps_its_timing_unless_masking_changed_the_line() {
    let mut steps = vec![Step::Server(ws_server(Channel::Stdout, b"$ "), 10)];
    for (i, c) in b"ls\r\n".iter().enumerate() {
        steps.push(Step::Server(
            ws_server(Channel::Stdout, &[*c]),
            100 + i as u64,
        ));
    }
    for (i, piece) in ["export DB_PASS", "WORD=Sup3r-s3", "cret\r\n"]
        .iter()
        .enumerate()
    {
        steps.push(Step::Server(
            ws_server(Channel::Stdout, piece.as_bytes()),
            200 + i as u64,
        ));
    }
    let whole = run(
        TransportKind::WebSocket,
        info(true),
        &config(json!({})),
        &steps,
        0,
    );
    let records = parsed(&whole);
    let timed: Vec<(u64, String)> = of_type(&records, "k8s.exec.chunk")
        .iter()
        .flat_map(|c| c["events"].as_array().unwrap().clone())
        .filter(|e| e[1] == "o")
        .map(|e| (e[0].as_u64().unwrap(), e[2].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        timed,
        [
            (10, "$ ".to_owned()),
            (100, "l".to_owned()),
            (101, "s".to_owned()),
            (102, "\r".to_owned()),
            (103, "\n".to_owned()),
            (202, "export DB_PASSWORD=****\r\n".to_owned()),
        ]
    );
}

/// A megabyte in one frame (with and without line ends) still makes records
/// of at most 16 KiB of events, which the audit service takes (it refuses
/// records over 1 MiB), and none of it is lost.
#[test]
fn a_huge_frame_is_spread_over_bounded_chunks() {
    let lines: String = (1..=150_000).map(|n| format!("{n}\n")).collect();
    let unbroken = "é".repeat(300_000);
    for text in [lines.as_str(), unbroken.as_str()] {
        let steps = vec![Step::Server(
            ws_server(Channel::Stdout, text.as_bytes()),
            10,
        )];
        for cut in [0, 100_000, 333_333] {
            let run = run(
                TransportKind::WebSocket,
                info(false),
                &config(json!({"mask": false})),
                &steps,
                cut,
            );
            verify(&run);
            let records = parsed(&run);
            for (line, record) in run.records.iter().zip(&records) {
                assert!(line.len() < 24 * 1024, "{} bytes", line.len());
                if record["type"] == "k8s.exec.chunk" {
                    assert!(record["bytes"].as_u64().unwrap() <= 16 * 1024);
                }
            }
            assert_eq!(events(&records, "o"), text, "cut {cut}");
        }
    }
}
