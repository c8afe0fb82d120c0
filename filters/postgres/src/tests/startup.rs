//! Startup parameters on the wire: a refused StartupMessage never reaches the
//! server, the client gets a FATAL that says why, and the session's end is
//! recorded.

use super::*;
use crate::protocol::StartupPacket;
use gatehouse_core::record::{EndReason, FilterMode};

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    StartupPacket::Startup {
        version: 3 << 16,
        params: params.to_vec(),
    }
    .encode(&mut out);
    out
}

fn ssl_request() -> Vec<u8> {
    let mut out = Vec::new();
    StartupPacket::SslRequest.encode(&mut out);
    out
}

/// The FATAL's SQLSTATE and message.
fn fatal_fields(bytes: &[u8]) -> (String, String) {
    let Ok(BackendMessage::ErrorResponse { fields }) =
        BackendMessage::decode(bytes[0], &bytes[5..])
    else {
        panic!("not an ErrorResponse: {bytes:?}")
    };
    let field = |code| {
        String::from_utf8_lossy(crate::protocol::error_field(&fields, code).unwrap()).into_owned()
    };
    assert_eq!(field(b'S'), "FATAL");
    (field(b'C'), field(b'M'))
}

fn end_reason(records: &[Record]) -> (EndReason, Option<String>) {
    records
        .iter()
        .find_map(|r| match r {
            Record::SessionEnd(end) => Some((end.reason, end.detail.clone())),
            _ => None,
        })
        .expect("a session end")
}

#[test]
fn refused_startup_never_reaches_the_server_and_the_client_gets_a_clear_fatal() {
    for (params, sqlstate, says) in [
        (
            vec![
                ("user", "app"),
                ("options", "-c standard_conforming_strings=off"),
            ],
            "42501",
            "\"options\" is not allowed",
        ),
        (
            vec![("user", "app"), ("client_encoding", "SJIS")],
            "22023",
            "multibyte character can contain a quote or backslash",
        ),
        (
            vec![("user", "app"), ("replication", "database")],
            "42501",
            "replication connections",
        ),
        (
            vec![("user", "app"), ("user", "postgres")],
            "08P01",
            "more than once",
        ),
        (
            vec![("user", "app"), ("role", "postgres")],
            "42501",
            "\"role\" is not allowed",
        ),
    ] {
        let mut s = session(EngineConfig::default());
        let packet = startup(&params);
        let verdict = s.on_frontend(&packet, 1_100);
        assert_eq!(verdict.bytes(&packet), ssl_request(), "{params:?}");
        // The server answers the SSLRequest; the client gets the refusal instead.
        let verdict = s.on_backend(b"N", 1_200);
        assert!(verdict.close_connection);
        let (code, message) = fatal_fields(verdict.bytes(b"N"));
        assert_eq!(code, sqlstate, "{message}");
        assert!(message.contains(says), "{message}");
        // Nothing more goes to the server.
        let query = frontend(&[FrontendMessage::Query { sql: b"select 1" }]);
        assert_eq!(s.on_frontend(&query, 1_300).bytes(&query), b"");
        s.on_close(CloseReason::Client, 1_400);
        let records = s.take_records();
        assert!(!records.iter().any(|r| matches!(r, Record::SessionStart(_))));
        let (reason, detail) = end_reason(&records);
        assert_eq!(reason, EndReason::StartupRefused);
        assert_eq!(detail.as_deref(), Some(message.as_str()));
    }
}

#[test]
fn after_a_refused_tls_request_the_servers_error_becomes_the_refusal() {
    let mut s = session(EngineConfig::default());
    let ssl = ssl_request();
    assert_eq!(s.on_frontend(&ssl, 1_100).bytes(&ssl), ssl);
    assert_eq!(s.on_backend(b"N", 1_150).bytes(b"N"), b"N");
    let packet = startup(&[("user", "app"), ("options", "-c role=postgres")]);
    assert_eq!(s.on_frontend(&packet, 1_200).bytes(&packet), ssl_request());
    // A server refuses a second SSLRequest with an ErrorResponse.
    let server_error = backend(&[BackendMessage::ErrorResponse {
        fields: vec![
            (b'S', b"FATAL"),
            (b'C', b"08P01"),
            (b'M', b"unsupported frontend protocol"),
        ],
    }]);
    let verdict = s.on_backend(&server_error, 1_300);
    assert!(verdict.close_connection);
    let (code, message) = fatal_fields(verdict.bytes(&server_error));
    assert_eq!(code, "42501");
    assert!(message.contains("options"), "{message}");
}

#[test]
fn allowed_startup_passes_unchanged() {
    let mut s = session(EngineConfig::default());
    let packet = startup(&[
        ("user", "app"),
        ("database", "shop"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "UTC"),
        ("extra_float_digits", "3"),
        ("application_name", "PostgreSQL JDBC Driver"),
    ]);
    assert_eq!(s.on_frontend(&packet, 1_100).bytes(&packet), packet);
    assert_eq!(s.phase(), crate::Phase::Authenticating);
}

#[test]
fn the_allow_list_comes_from_the_configuration() {
    let config = EngineConfig {
        startup_parameters: vec!["work_mem".into()],
        ..EngineConfig::default()
    };
    let mut s = session(config.clone());
    let packet = startup(&[("user", "app"), ("WORK_MEM", "64MB")]);
    assert_eq!(s.on_frontend(&packet, 1_100).bytes(&packet), packet);
    let mut s = session(config);
    let packet = startup(&[("user", "app"), ("application_name", "psql")]);
    assert_eq!(s.on_frontend(&packet, 1_100).bytes(&packet), ssl_request());
}

#[test]
fn a_shadow_session_lets_it_pass_and_records_the_refusal_it_would_have_made() {
    let mut s = session(EngineConfig::default());
    s.set_mode(FilterMode::Shadow);
    let packet = startup(&[("user", "app"), ("options", "-c search_path=evil")]);
    assert_eq!(s.on_frontend(&packet, 1_100).bytes(&packet), packet);
    let records = s.take_records();
    let refusal = records
        .iter()
        .find_map(|r| match r {
            Record::SessionStart(start) => start.login_refusal.clone(),
            _ => None,
        })
        .expect("the session start says why");
    assert!(refusal.contains("\"options\" is not allowed"), "{refusal}");
}

fn negotiate(unrecognized: &[&[u8]]) -> Vec<u8> {
    backend(&[BackendMessage::NegotiateProtocolVersion {
        newest_minor: 0,
        unrecognized: unrecognized.to_vec(),
    }])
}

#[test]
fn a_protocol_option_passes_only_when_the_server_does_not_know_it() {
    let packet = startup(&[("user", "app"), ("_pq_.compression", "on")]);
    let auth_ok = backend(&[BackendMessage::Authentication { code: 0, data: b"" }]);
    // The server lists it as unrecognized: the session goes on.
    let mut s = session(EngineConfig::default());
    assert_eq!(s.on_frontend(&packet, 1_100).bytes(&packet), packet);
    let answer = cat_bytes(&negotiate(&[b"_pq_.compression"]), &auth_ok);
    let verdict = s.on_backend(&answer, 1_200);
    assert_eq!(verdict.bytes(&answer), answer);
    assert!(!verdict.close_connection);
    // The server accepted it: the protocol may have changed, the session ends.
    let mut s = session(EngineConfig::default());
    assert_eq!(s.on_frontend(&packet, 1_100).bytes(&packet), packet);
    let verdict = s.on_backend(&auth_ok, 1_200);
    assert!(verdict.close_connection);
    let (code, message) = fatal_fields(verdict.bytes(&auth_ok));
    assert_eq!(code, "0A000");
    assert!(message.contains("_pq_.compression"), "{message}");
    s.on_close(CloseReason::Server, 1_300);
    assert_eq!(end_reason(&s.take_records()).0, EndReason::StartupRefused);
}

fn cat_bytes(a: &[u8], b: &[u8]) -> Vec<u8> {
    [a, b].concat()
}
