//! The session lexes as the server does: standard_conforming_strings and
//! client_encoding follow the server's ParameterStatus, a text whose reading a
//! request in flight could change is refused, and an encoding the filter cannot
//! read ends the session before anything more is forwarded.

use super::*;
use crate::policy::{PgPolicy, UNCERTAIN_LEXING_RULE};
use crate::protocol::StartupPacket;
use gatehouse_core::record::{EndReason, Record};

const POLICY: &str = r#"{
  "default": { "action": "allow" },
  "rules": [ { "name": "no-drop", "action": "deny", "match": { "kinds": ["drop"] } } ]
}"#;

/// A text that is one SELECT when backslashes escape, and a SELECT and a DROP
/// when they do not.
const SMUGGLER: &str = r"select 'a\'; drop table users; --'";

struct Conn {
    session: Session,
    now: u64,
    closed: bool,
}

impl Conn {
    /// A logged-in session whose server reported `status` at login.
    fn new(status: &[(&[u8], &[u8])]) -> (Self, Vec<u8>) {
        let policy = Arc::new(PgPolicy::from_json(POLICY.as_bytes()).unwrap());
        let mut session = session(EngineConfig::default());
        session.set_statement_policy(Box::new(policy));
        let mut conn = Self {
            session,
            now: 2_000,
            closed: false,
        };
        let mut startup = Vec::new();
        StartupPacket::Startup {
            version: 3 << 16,
            params: vec![("user", "alice"), ("database", "app")],
        }
        .encode(&mut startup);
        conn.client(&startup);
        let mut login = vec![BackendMessage::Authentication { code: 0, data: b"" }];
        login.extend(
            status
                .iter()
                .map(|(name, value)| BackendMessage::ParameterStatus { name, value }),
        );
        login.push(BackendMessage::ReadyForQuery { status: b'I' });
        let to_client = conn.server(&backend(&login));
        (conn, to_client)
    }

    fn feed(&mut self, bytes: &[u8], from_client: bool) -> Vec<u8> {
        self.now += 10;
        let verdict = if from_client {
            self.session.on_frontend(bytes, self.now)
        } else {
            self.session.on_backend(bytes, self.now)
        };
        self.closed |= verdict.close_connection;
        verdict.bytes(bytes).to_vec()
    }

    fn client(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.feed(bytes, true)
    }

    fn server(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.feed(bytes, false)
    }

    /// Sends `sql` as a Query; whether it reached the server unchanged.
    fn passes(&mut self, sql: &str) -> bool {
        let bytes = query(sql);
        self.client(&bytes) == bytes
    }

    /// The server answers one Query, reporting `status` before ReadyForQuery.
    fn answer(&mut self, status: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut messages = vec![BackendMessage::CommandComplete { tag: b"SET" }];
        messages.extend(
            status
                .iter()
                .map(|(name, value)| BackendMessage::ParameterStatus { name, value }),
        );
        messages.push(BackendMessage::ReadyForQuery { status: b'I' });
        self.server(&backend(&messages))
    }
}

fn query(sql: &str) -> Vec<u8> {
    frontend(&[FrontendMessage::Query {
        sql: sql.as_bytes(),
    }])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn strings_are_read_under_the_setting_the_server_reports() {
    let (mut conn, _) = Conn::new(&[(b"standard_conforming_strings", b"off")]);
    assert!(conn.passes(SMUGGLER), "one SELECT when backslashes escape");
    conn.answer(&[(b"standard_conforming_strings", b"on")]);
    assert!(!conn.passes(SMUGGLER), "a DROP when they do not");
    let (mut conn, _) = Conn::new(&[(b"standard_conforming_strings", b"on")]);
    assert!(!conn.passes(SMUGGLER));
}

#[test]
fn a_text_pipelined_behind_a_setting_change_is_refused_if_it_would_read_differently() {
    let (mut conn, _) = Conn::new(&[]);
    // Both in one write: the second is judged before the server answers the first.
    let set = query("set standard_conforming_strings = off");
    let pipelined = [set.clone(), query(r"select 'a\'")].concat();
    let to_server = conn.client(&pipelined);
    assert!(to_server.starts_with(&set));
    assert_ne!(to_server, pipelined, "the second text was forwarded");
    assert!(contains(&to_server, b"42501"));
    // One that reads the same either way goes through.
    let (mut conn, _) = Conn::new(&[]);
    let plain = [set, query("select 'a'; select $$\\$$")].concat();
    assert_eq!(conn.client(&plain), plain);
    // Once the answer is in, the text is read under the new setting.
    conn.answer(&[(b"standard_conforming_strings", b"off")]);
    conn.answer(&[]);
    assert!(conn.passes(SMUGGLER));
    let records = conn.session.take_records();
    let refused = records.iter().any(|r| {
        matches!(r, Record::Statement(s)
            if s.decision.rule.as_deref() == Some(UNCERTAIN_LEXING_RULE))
    });
    assert!(!refused);
}

#[test]
fn the_refusal_names_its_rule_in_the_record() {
    let (mut conn, _) = Conn::new(&[]);
    let pipelined = [
        query("set standard_conforming_strings = off"),
        query(r"select 'a\'"),
    ]
    .concat();
    conn.client(&pipelined);
    conn.session.on_close(CloseReason::Client, 9_000);
    let records = conn.session.take_records();
    assert!(
        records.iter().any(|r| matches!(r, Record::Statement(s)
            if s.decision.rule.as_deref() == Some(UNCERTAIN_LEXING_RULE))),
        "{records:?}"
    );
}

#[test]
fn an_unsafe_client_encoding_from_the_server_ends_the_session_at_once() {
    // Reported after a statement (say a function that set it).
    let (mut conn, _) = Conn::new(&[(b"client_encoding", b"UTF8")]);
    assert!(conn.passes("select f()"));
    let to_client = conn.answer(&[(b"client_encoding", b"SJIS")]);
    assert!(conn.closed);
    assert!(contains(&to_client, b"FATAL"), "{to_client:?}");
    assert!(contains(&to_client, b"SJIS"));
    let ready = backend(&[BackendMessage::ReadyForQuery { status: b'I' }]);
    assert!(
        !contains(&to_client, &ready),
        "nothing after the report passes"
    );
    assert!(conn.client(&query("select 1")).is_empty());
    let records = conn.session.take_records();
    assert!(records.iter().any(|r| matches!(r, Record::SessionEnd(e)
        if e.reason == EndReason::ProtocolError
            && e.detail.as_deref().is_some_and(|d| d.contains("SJIS")))));
    // Reported at login (a role's or database's default).
    let (conn, to_client) = Conn::new(&[(b"client_encoding", b"BIG5")]);
    assert!(conn.closed);
    assert!(contains(&to_client, b"FATAL"));
    // A safe one is just tracked.
    let (mut conn, _) = Conn::new(&[(b"client_encoding", b"LATIN1")]);
    assert!(!conn.closed);
    assert!(conn.passes("select 1"));
}

#[test]
fn switching_to_an_unsafe_encoding_is_refused_whatever_the_policy_says() {
    let (mut conn, _) = Conn::new(&[]);
    for sql in [
        "set client_encoding = 'SJIS'",
        "SET NAMES 'gbk'",
        "select set_config('client_encoding', 'BIG5', false)",
    ] {
        assert!(!conn.passes(sql), "{sql}");
        conn.answer(&[]);
    }
    assert!(conn.passes("set client_encoding = 'UTF8'"));
}
