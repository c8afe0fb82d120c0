//! The session's memory bound: a client that pipelines without reading the
//! answers ends with `FATAL 53200` once the session holds more than
//! `max_session_bytes`; one that reads them never does.

use super::*;
use crate::protocol::StartupPacket;
use gatehouse_core::record::EndReason;

const LIMIT: usize = 4 * 1024 * 1024;

fn logged_in(config: EngineConfig) -> Session {
    let mut s = session(config);
    let mut startup = Vec::new();
    StartupPacket::Startup {
        version: 3 << 16,
        params: vec![("user", "app"), ("database", "shop")],
    }
    .encode(&mut startup);
    let _ = s.on_frontend(&startup, 1_100);
    let login = backend(&[
        BackendMessage::Authentication { code: 0, data: b"" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    let _ = s.on_backend(&login, 1_200);
    s.take_records();
    s
}

fn bounded() -> EngineConfig {
    EngineConfig {
        max_session_bytes: LIMIT,
        record_parameters: true,
        ..EngineConfig::default()
    }
}

/// A Query of about 8 KiB whose text the session keeps until it is answered.
fn big_query(i: usize) -> Vec<u8> {
    let sql = format!("select {i}, '{}'", "x".repeat(8000));
    frontend(&[FrontendMessage::Query {
        sql: sql.as_bytes(),
    }])
}

/// Parse, Bind with a large text parameter, Execute, Sync: an extended-protocol
/// round whose statement text and recorded parameter stay until answered.
fn extended_round(i: usize) -> Vec<u8> {
    let name = "";
    let sql = format!("select $1::text || '{i}{}'", "y".repeat(8000));
    let param = vec![b'p'; 200];
    frontend(&[
        FrontendMessage::Parse {
            name: name.as_bytes(),
            sql: sql.as_bytes(),
            param_types: vec![],
        },
        FrontendMessage::Bind(crate::protocol::Bind {
            portal: b"",
            statement: name.as_bytes(),
            param_formats: vec![],
            params: vec![Some(&param)],
            result_formats: vec![],
        }),
        FrontendMessage::Execute {
            portal: b"",
            max_rows: 0,
        },
        FrontendMessage::Sync,
    ])
}

fn fatal_code(bytes: &[u8]) -> Option<String> {
    let mut rest = bytes;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        if let Ok(BackendMessage::ErrorResponse { fields }) =
            BackendMessage::decode(rest[0], &rest[5..1 + len])
        {
            return crate::protocol::error_field(&fields, b'C')
                .map(|c| String::from_utf8_lossy(c).into_owned());
        }
        rest = &rest[1 + len..];
    }
    None
}

/// Pipelines `request(i)` without reading; returns how many were forwarded
/// before the session refused, and the accounted bytes measured after each.
fn pipeline(
    s: &mut Session,
    request: impl Fn(usize) -> Vec<u8>,
    max: usize,
) -> (usize, Vec<usize>) {
    let mut accounted = Vec::new();
    for i in 0..max {
        let bytes = request(i);
        let verdict = s.on_frontend(&bytes, 2_000 + i as u64);
        accounted.push(s.accounted_bytes());
        if verdict.bytes(&bytes) != bytes.as_slice() {
            return (i, accounted);
        }
    }
    (max, accounted)
}

fn assert_ends_with_53200(s: &mut Session) {
    // Whatever the client sends now never reaches the server.
    let late = big_query(0);
    assert!(s.on_frontend(&late, 9_000).bytes(&late).is_empty());
    // The client gets the FATAL in place of the server's next answer.
    let answer = backend(&[
        BackendMessage::RowDescription { body: b"\0\0" },
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    let verdict = s.on_backend(&answer, 9_100);
    assert!(verdict.close_connection);
    assert_eq!(fatal_code(verdict.bytes(&answer)).as_deref(), Some("53200"));
    s.on_close(CloseReason::Server, 9_200);
    let end = s
        .take_records()
        .into_iter()
        .find_map(|r| match r {
            Record::SessionEnd(end) => Some(end),
            _ => None,
        })
        .expect("session end");
    assert_eq!(end.reason, EndReason::MemoryLimit);
    assert!(end.detail.unwrap().contains("max_session_bytes"));
}

#[test]
fn pipelined_queries_without_reading_end_the_session_at_the_bound() {
    let mut s = logged_in(bounded());
    let (forwarded, accounted) = pipeline(&mut s, big_query, 5_000);
    // The held texts are what is counted: about 8 KiB per unanswered Query.
    assert!(accounted[99] >= 100 * 8000, "{}", accounted[99]);
    assert!(
        (400..1000).contains(&forwarded),
        "refused after {forwarded} queries"
    );
    let most = accounted.iter().max().copied().unwrap();
    assert!(most <= LIMIT + LIMIT / 16 + 64 * 1024, "held {most} bytes");
    eprintln!(
        "Queries of 8 KiB: refused after {forwarded}, at most {most} bytes held (bound {LIMIT}); \
         {} bytes after 100",
        accounted[99]
    );
    assert_ends_with_53200(&mut s);
}

#[test]
fn pipelined_extended_rounds_without_reading_end_the_session_at_the_bound() {
    let mut s = logged_in(bounded());
    let (forwarded, accounted) = pipeline(&mut s, extended_round, 20_000);
    assert!(forwarded < 10_000, "never refused");
    let most = accounted.iter().max().copied().unwrap();
    assert!(most <= LIMIT + LIMIT / 16 + 64 * 1024, "held {most} bytes");
    eprintln!(
        "extended rounds: refused after {forwarded}, at most {most} bytes held (bound {LIMIT})"
    );
    assert_ends_with_53200(&mut s);
}

#[test]
fn a_client_that_reads_the_answers_is_never_refused() {
    let mut s = logged_in(bounded());
    let answer = backend(&[
        BackendMessage::RowDescription { body: b"\0\0" },
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    for i in 0..3_000 {
        let q = big_query(i);
        assert_eq!(
            s.on_frontend(&q, 2_000).bytes(&q),
            q.as_slice(),
            "query {i}"
        );
        let verdict = s.on_backend(&answer, 2_001);
        assert_eq!(verdict.bytes(&answer), answer.as_slice());
        s.take_records();
    }
    assert!(s.accounted_bytes() < 256 * 1024, "{}", s.accounted_bytes());
}
