//! Malformed and out-of-protocol input, TLS requests and other startup paths.

use super::*;
use crate::SslRequestPolicy;
use crate::protocol::{BackendMessage, FrontendMessage, StartupPacket};
use gatehouse_core::record::EndReason;

fn fe(bytes: Vec<u8>) -> Read {
    Read {
        side: Side::Client,
        bytes,
    }
}

fn be(bytes: Vec<u8>) -> Read {
    Read {
        side: Side::Server,
        bytes,
    }
}

fn startup() -> Vec<u8> {
    let mut out = Vec::new();
    StartupPacket::Startup {
        version: 3 << 16,
        params: vec![("user", "alice"), ("database", "app")],
    }
    .encode(&mut out);
    out
}

fn backend(msgs: &[BackendMessage<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    msgs.iter().for_each(|m| m.encode(&mut out));
    out
}

fn frontend(msgs: &[FrontendMessage<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    msgs.iter().for_each(|m| m.encode(&mut out));
    out
}

fn login_ok() -> Vec<u8> {
    backend(&[
        BackendMessage::Authentication { code: 0, data: b"" },
        BackendMessage::BackendKeyData {
            pid: 99,
            key: &[1, 2, 3, 4],
        },
        BackendMessage::ReadyForQuery { status: b'I' },
    ])
}

fn ready() -> Vec<u8> {
    backend(&[BackendMessage::ReadyForQuery { status: b'I' }])
}

fn tagged(tag: u8, len: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The FATAL 08P01 ErrorResponse at the end of what the client received.
fn assert_ends_with_08p01(run: &Run, case: &str) {
    let bytes = &run.to_client;
    let start = (0..bytes.len())
        .rev()
        .find(|&i| bytes[i] == b'E' && bytes.len() - i > 5)
        .unwrap_or_else(|| panic!("{case}: no error"));
    let msg =
        BackendMessage::decode(b'E', &bytes[start + 5..]).unwrap_or_else(|e| panic!("{case}: {e}"));
    let BackendMessage::ErrorResponse { fields } = msg else {
        panic!("{case}")
    };
    assert_eq!(
        crate::protocol::error_field(&fields, b'C'),
        Some(&b"08P01"[..]),
        "{case}"
    );
    assert_eq!(
        crate::protocol::error_field(&fields, b'S'),
        Some(&b"FATAL"[..]),
        "{case}"
    );
    assert!(run.closed, "{case}: not closed");
}

fn end_record(run: &Run) -> &gatehouse_core::record::SessionEndRecord {
    run.records
        .iter()
        .find_map(|r| match r {
            Record::SessionEnd(e) => Some(e),
            _ => None,
        })
        .expect("session_end")
}

#[test]
fn malformed_input_ends_the_session_with_08p01_and_a_reason() {
    let after_login = |bad: Vec<u8>| vec![fe(startup()), be(login_ok()), fe(bad), be(ready())];
    let cases: Vec<(&str, Vec<Read>, &str)> = vec![
        (
            "startup length below minimum",
            vec![fe(vec![0, 0, 0, 2]), be(b"N".to_vec())],
            "client: invalid message length 2",
        ),
        (
            "startup too short for a code",
            vec![fe(vec![0, 0, 0, 6, 0, 3]), be(b"N".to_vec())],
            "client: startup packet: message body too short",
        ),
        (
            "startup over 10000 bytes",
            vec![fe(vec![0, 0, 0x30, 0, 0, 3]), be(b"N".to_vec())],
            "client: startup packet length 12288",
        ),
        (
            "unknown startup code",
            vec![
                fe(vec![0, 0, 0, 8, 0x12, 0x34, 0x56, 0x78]),
                be(b"N".to_vec()),
            ],
            "unsupported startup request code",
        ),
        (
            "protocol 2",
            vec![fe(vec![0, 0, 0, 9, 0, 2, 0, 0, 0]), be(b"N".to_vec())],
            "unsupported startup request code",
        ),
        (
            "unterminated startup parameter",
            vec![
                fe(vec![0, 0, 0, 11, 0, 3, 0, 0, b'u', b's', b'r']),
                be(b"N".to_vec()),
            ],
            "StartupMessage: unterminated string",
        ),
        (
            "unknown frontend tag",
            after_login(tagged(b'Y', 4, b"")),
            "client: unknown message type 'Y'",
        ),
        (
            "query without terminator",
            after_login(tagged(b'Q', 7, b"sel")),
            "Query: unterminated string",
        ),
        (
            "tagged length below 4",
            after_login(tagged(b'Q', 3, b"")),
            "client: invalid message length 3",
        ),
        (
            "bind with hostile parameter count",
            after_login(tagged(b'B', 12, &[0, 0, 0, 0, 0x7f, 0xff, 0, 0])),
            "Bind: invalid parameter count",
        ),
        (
            "parse with trailing bytes",
            after_login(tagged(b'P', 12, b"\0s\0\0\0zzz")),
            "Parse: trailing bytes",
        ),
        (
            "sync with a body",
            after_login(tagged(b'S', 5, b"x")),
            "trailing bytes",
        ),
        (
            "describe of unknown target",
            after_login(tagged(b'D', 7, b"Zx\0")),
            "Describe: invalid target type",
        ),
        (
            "over-limit describe",
            after_login(tagged(b'D', 4 << 20, b"S")),
            "length 4194300 over max_buffered_bytes",
        ),
        (
            "over-protocol-limit query",
            after_login(tagged(b'Q', 0x7fff_ffff, b"")),
            "over the protocol maximum",
        ),
        (
            "password after login",
            after_login(tagged(b'p', 5, b"\0")),
            "password message after authentication",
        ),
        (
            "query during authentication",
            vec![
                fe(startup()),
                be(backend(&[BackendMessage::Authentication {
                    code: 3,
                    data: b"",
                }])),
                fe(frontend(&[FrontendMessage::Query { sql: b"select 1" }])),
                be(backend(&[BackendMessage::ErrorResponse {
                    fields: vec![(b'S', b"FATAL"), (b'C', b"08P01")],
                }])),
            ],
            "client: message type 'Q' during authentication",
        ),
        (
            "unknown backend tag",
            vec![fe(startup()), be(login_ok()), be(tagged(b'!', 4, b""))],
            "server: unknown message type '!'",
        ),
        (
            "bad transaction status",
            vec![fe(startup()), be(login_ok()), be(tagged(b'Z', 5, b"Q"))],
            "ReadyForQuery: invalid transaction status",
        ),
        (
            "backend length below 4",
            vec![fe(startup()), be(login_ok()), be(tagged(b'C', 0, b""))],
            "server: invalid message length 0",
        ),
        (
            "authentication request after login",
            vec![
                fe(startup()),
                be(login_ok()),
                be(backend(&[BackendMessage::Authentication {
                    code: 3,
                    data: b"",
                }])),
            ],
            "server: message type 'R' after login",
        ),
        (
            "server speaks before startup",
            vec![be(ready())],
            "server: message type 'Z' before startup",
        ),
        (
            "data row during authentication",
            vec![
                fe(startup()),
                be(backend(&[BackendMessage::DataRow { values: vec![] }])),
            ],
            "server: message type 'D' during authentication",
        ),
        (
            "data after cancel request",
            vec![fe(cancel()), fe(frontend(&[FrontendMessage::Sync]))],
            "client: data after CancelRequest",
        ),
    ];
    for (case, reads, reason) in cases {
        let run = replay(EngineConfig::default(), &reads, &whole);
        let end = end_record(&run);
        assert_eq!(end.reason, EndReason::ProtocolError, "{case}");
        let detail = end.detail.clone().unwrap_or_default();
        assert!(
            detail.contains(reason),
            "{case}: {detail:?} lacks {reason:?}"
        );
        if case != "data after cancel request" {
            assert_ends_with_08p01(&run, case);
        }
        // Nothing after the violation is forwarded to the server but the engine's own request.
        let byte_by_byte_run = replay(EngineConfig::default(), &reads, &byte_by_byte);
        assert_eq!(byte_by_byte_run.to_client, run.to_client, "{case}");
        assert_eq!(byte_by_byte_run.to_server, run.to_server, "{case}");
    }
}

fn cancel() -> Vec<u8> {
    let mut out = Vec::new();
    StartupPacket::Cancel {
        pid: 99,
        key: &[1, 2, 3, 4],
    }
    .encode(&mut out);
    out
}

#[test]
fn frontend_violation_replaces_the_message_and_waits_for_the_server() {
    let bad = tagged(b'Y', 4, b"");
    let reads = [fe(startup()), be(login_ok()), fe(bad.clone())];
    let run = replay(EngineConfig::default(), &reads, &whole);
    // The server got CopyFail + Sync + Terminate instead of the bad message.
    let injected = frontend(&[
        FrontendMessage::CopyFail {
            message: b"gatehouse: protocol violation",
        },
        FrontendMessage::Sync,
        FrontendMessage::Terminate,
    ]);
    assert_eq!(run.to_server, [startup(), injected].concat());
    assert!(
        !run.closed,
        "the client's error comes with the server's answer"
    );

    // When the server closes without answering, the error goes out at end of stream.
    let mut s = session(EngineConfig::default());
    let _ = s.on_frontend(&startup(), 1);
    let _ = s.on_backend(&login_ok(), 2);
    let _ = s.on_frontend(&bad, 3);
    let v = s.on_backend(&[], 4);
    assert!(v.close_connection);
    assert_eq!(v.bytes(&[])[0], b'E');
    // Later client bytes are discarded.
    let v = s.on_frontend(&frontend(&[FrontendMessage::Query { sql: b"select 1" }]), 5);
    assert_eq!(v.forward, crate::Forward::Replace(Vec::new()));
}

#[test]
fn the_end_record_keeps_the_first_reason_a_phase_learned() {
    let shutdown = || {
        be(backend(&[BackendMessage::ErrorResponse {
            fields: vec![
                (b'S', b"FATAL"),
                (b'C', b"57P01"),
                (b'M', b"terminating connection due to administrator command"),
            ],
        }]))
    };
    let terminate = || fe(frontend(&[FrontendMessage::Terminate]));
    let shutdown_detail = Some("57P01 terminating connection due to administrator command");
    let cases: [(&str, Vec<Read>, EndReason, Option<&str>); 5] = [
        (
            "server shutdown, then the client's Terminate",
            vec![fe(startup()), be(login_ok()), shutdown(), terminate()],
            EndReason::ServerClosed,
            shutdown_detail,
        ),
        (
            "Terminate, then a server shutdown",
            vec![fe(startup()), be(login_ok()), terminate(), shutdown()],
            EndReason::ServerClosed,
            shutdown_detail,
        ),
        (
            "Terminate alone",
            vec![fe(startup()), be(login_ok()), terminate()],
            EndReason::ClientTerminate,
            None,
        ),
        (
            "a login refused, then the client's Terminate",
            vec![
                fe(startup()),
                be(backend(&[BackendMessage::ErrorResponse {
                    fields: vec![(b'C', b"28P01"), (b'M', b"bad password")],
                }])),
                terminate(),
            ],
            EndReason::AuthenticationFailed,
            Some("28P01 bad password"),
        ),
        (
            "a server shutdown, then a client violation",
            vec![
                fe(startup()),
                be(login_ok()),
                shutdown(),
                fe(tagged(b'Y', 4, b"")),
            ],
            EndReason::ProtocolError,
            Some("client: unknown message type 'Y'"),
        ),
    ];
    for (case, reads, reason, detail) in cases {
        let run = replay(EngineConfig::default(), &reads, &whole);
        let end = end_record(&run);
        assert_eq!(end.reason, reason, "{case}");
        assert_eq!(end.detail.as_deref(), detail, "{case}");
        let ends = run
            .records
            .iter()
            .filter(|r| matches!(r, Record::SessionEnd(_)))
            .count();
        assert_eq!(ends, 1, "{case}");
    }
}

#[test]
fn statement_in_flight_when_the_connection_closes_is_recorded_as_unanswered() {
    let reads = [
        fe(startup()),
        be(login_ok()),
        fe(frontend(&[FrontendMessage::Query {
            sql: b"select pg_sleep(60)",
        }])),
    ];
    let run = replay(EngineConfig::default(), &reads, &whole);
    let statement = run.records.iter().find_map(|r| match r {
        Record::Statement(s) => Some(s),
        _ => None,
    });
    assert_eq!(statement.unwrap().error.as_ref().unwrap().sqlstate, "08006");
    assert_eq!(end_record(&run).reason, EndReason::ClientClosed);
}

fn ssl_request() -> Vec<u8> {
    let mut out = Vec::new();
    StartupPacket::SslRequest.encode(&mut out);
    out
}

fn gssenc_request() -> Vec<u8> {
    let mut out = Vec::new();
    StartupPacket::GssEncRequest.encode(&mut out);
    out
}

#[test]
fn ssl_request_answered_no_lets_the_client_continue_in_plaintext() {
    let reads = [
        fe(ssl_request()),
        be(b"N".to_vec()),
        fe(startup()),
        be(login_ok()),
    ];
    let run = replay(EngineConfig::default(), &reads, &whole);
    assert_eq!(run.to_server, [ssl_request(), startup()].concat());
    assert_eq!(run.to_client, [b"N".to_vec(), login_ok()].concat());
    assert!(!run.closed);
}

#[test]
fn gssenc_request_goes_to_the_server_as_ssl_request() {
    let reads = [
        fe(gssenc_request()),
        be(b"N".to_vec()),
        fe(startup()),
        be(login_ok()),
    ];
    let run = replay(EngineConfig::default(), &reads, &whole);
    assert_eq!(run.to_server, [ssl_request(), startup()].concat());
    assert_eq!(run.to_client, [b"N".to_vec(), login_ok()].concat());
}

#[test]
fn server_accepting_tls_is_refused_as_opaque() {
    for request in [ssl_request(), gssenc_request()] {
        let reads = [fe(request), be(b"S".to_vec())];
        let run = replay(EngineConfig::default(), &reads, &whole);
        assert_ends_with_08p01(&run, "S answer");
        let end = end_record(&run);
        assert_eq!(end.reason, EndReason::TlsRefused);
        assert!(
            end.detail
                .as_deref()
                .unwrap()
                .contains("opaque TLS refused")
        );
    }
}

#[test]
fn refuse_policy_refuses_even_when_the_server_says_no() {
    let config = EngineConfig {
        ssl_request: SslRequestPolicy::Refuse,
        ..EngineConfig::default()
    };
    let run = replay(config, &[fe(ssl_request()), be(b"N".to_vec())], &whole);
    assert_ends_with_08p01(&run, "refuse");
    assert_eq!(end_record(&run).reason, EndReason::TlsRefused);
}

#[test]
fn scram_plus_is_removed_from_the_mechanism_list() {
    let sasl = backend(&[BackendMessage::Authentication {
        code: 10,
        data: b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0",
    }]);
    let run = replay(
        EngineConfig::default(),
        &[fe(startup()), be(sasl)],
        &byte_by_byte,
    );
    assert_eq!(
        run.to_client,
        backend(&[BackendMessage::Authentication {
            code: 10,
            data: b"SCRAM-SHA-256\0\0"
        }])
    );
}

#[test]
fn cancel_request_passes_and_is_recorded() {
    let run = replay(EngineConfig::default(), &[fe(cancel())], &whole);
    assert_eq!(run.to_server, cancel());
    assert_eq!(end_record(&run).reason, EndReason::CancelRequest);
    assert!(
        !run.records
            .iter()
            .any(|r| matches!(r, Record::SessionStart(_)))
    );
}

#[test]
fn failed_login_is_recorded_as_authentication_failed() {
    let err = backend(&[BackendMessage::ErrorResponse {
        fields: vec![
            (b'S', b"FATAL"),
            (b'C', b"28P01"),
            (b'M', b"password authentication failed"),
        ],
    }]);
    let run = replay(EngineConfig::default(), &[fe(startup()), be(err)], &whole);
    let end = end_record(&run);
    assert_eq!(end.reason, EndReason::AuthenticationFailed);
    assert_eq!(
        end.detail.as_deref(),
        Some("28P01 password authentication failed")
    );
}

#[test]
fn tls_request_after_gssenc_is_refused_clearly() {
    let server_refusal = backend(&[BackendMessage::ErrorResponse {
        fields: vec![
            (b'S', b"FATAL"),
            (b'C', b"08P01"),
            (b'M', b"unsupported frontend protocol"),
        ],
    }]);
    let reads = [
        fe(gssenc_request()),
        be(b"N".to_vec()),
        fe(ssl_request()),
        be(server_refusal),
    ];
    let run = replay(EngineConfig::default(), &reads, &byte_by_byte);
    assert_eq!(&run.to_client[..1], b"N");
    assert_ends_with_08p01(&run, "second request");
    let end = end_record(&run);
    assert_eq!(end.reason, EndReason::TlsRefused);
    assert!(
        end.detail
            .as_deref()
            .unwrap()
            .contains("gssencmode=disable")
    );
}
