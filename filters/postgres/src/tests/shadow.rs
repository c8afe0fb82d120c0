//! Shadow mode: the session judges, masks and checks tokens as an enforcing one
//! would, but every byte passes unchanged and its records say what it would
//! have done.

use super::{backend, frontend, session};
use crate::login::{Authenticator, LoginRefusal};
use crate::masking::{MaskingPolicy, SessionMasker};
use crate::policy::PgPolicy;
use crate::protocol::{BackendMessage, FrontendMessage, StartupPacket};
use crate::{EngineConfig, Session};
use gatehouse_core::identity::Identity;
use gatehouse_core::policy::Action;
use gatehouse_core::record::{FilterMode, Record};
use std::sync::Arc;

const POLICY: &str = r#"{
  "version": "shadow-tests",
  "default": { "action": "allow" },
  "rules": [
    { "name": "no-drop", "action": "deny", "message": "gatehouse: DROP is not allowed",
      "match": { "kinds": ["drop"] } }
  ]
}"#;

const GOOD_TOKEN: &[u8] = b"good-token\0";

/// Accepts exactly [`GOOD_TOKEN`], as `alice`.
struct FixedTokens;

impl Authenticator for FixedTokens {
    fn authenticate(
        &mut self,
        password: &[u8],
        _role: &str,
        _now_us: u64,
    ) -> Result<Identity, LoginRefusal> {
        if password != GOOD_TOKEN {
            return Err(LoginRefusal {
                sqlstate: "28P01",
                message: "gatehouse: token rejected".into(),
                code: "bad_signature",
                identity: None,
            });
        }
        Ok(Identity {
            subject: "alice".into(),
            groups: vec!["developers".into()],
            verified: true,
            ..Identity::default()
        })
    }
}

fn startup() -> Vec<u8> {
    let mut out = Vec::new();
    StartupPacket::Startup {
        version: 3 << 16,
        params: vec![("user", "app"), ("database", "shop")],
    }
    .encode(&mut out);
    out
}

/// A shadow session fed whole messages; every verdict must forward unchanged.
struct Shadow {
    session: Session,
    records: Vec<Record>,
}

impl Shadow {
    fn new() -> Self {
        let mut session = session(EngineConfig::default());
        session.set_mode(FilterMode::Shadow);
        Shadow {
            session,
            records: Vec::new(),
        }
    }

    fn client(&mut self, bytes: &[u8]) {
        let verdict = self.session.on_frontend(bytes, 5_000);
        assert_eq!(verdict.bytes(bytes), bytes, "client bytes changed");
        assert!(!verdict.close_connection);
        self.records.extend(self.session.take_records());
    }

    fn server(&mut self, bytes: &[u8]) {
        let verdict = self.session.on_backend(bytes, 5_000);
        assert_eq!(verdict.bytes(bytes), bytes, "server bytes changed");
        assert!(!verdict.close_connection);
        self.records.extend(self.session.take_records());
    }

    /// Startup with a trusting server (no token login).
    fn logged_in(mut self) -> Self {
        self.client(&startup());
        self.server(&backend(&[
            BackendMessage::Authentication { code: 0, data: b"" },
            BackendMessage::ReadyForQuery { status: b'I' },
        ]));
        self
    }

    fn json(&self) -> Vec<serde_json::Value> {
        self.records
            .iter()
            .map(|r| serde_json::from_str(&r.to_json()).unwrap())
            .collect()
    }
}

#[test]
fn a_statement_the_policy_denies_passes_unchanged_and_is_recorded_as_a_would_be_denial() {
    let mut wire = Shadow::new();
    let policy = Arc::new(PgPolicy::from_json(POLICY.as_bytes()).unwrap());
    wire.session.set_statement_policy(Box::new(policy));
    let mut wire = wire.logged_in();
    wire.client(&frontend(&[FrontendMessage::Query {
        sql: b"drop table orders",
    }]));
    wire.server(&backend(&[
        BackendMessage::CommandComplete { tag: b"DROP TABLE" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    // Extended protocol: the denied Parse, its Bind, Describe and Execute pass too.
    wire.client(&frontend(&[
        FrontendMessage::Parse {
            name: b"s1",
            sql: b"drop table customers",
            param_types: vec![],
        },
        FrontendMessage::Bind(crate::protocol::Bind {
            portal: b"",
            statement: b"s1",
            param_formats: vec![],
            params: vec![],
            result_formats: vec![],
        }),
        FrontendMessage::Describe {
            kind: b'S',
            name: b"s1",
        },
        FrontendMessage::Execute {
            portal: b"",
            max_rows: 0,
        },
        FrontendMessage::Sync,
    ]));
    wire.server(&backend(&[
        BackendMessage::ParseComplete,
        BackendMessage::BindComplete,
        BackendMessage::NoData,
        BackendMessage::CommandComplete { tag: b"DROP TABLE" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    let records = wire.json();
    let statements: Vec<_> = records
        .iter()
        .filter(|r| r["type"] == "pg.statement")
        .collect();
    assert_eq!(statements.len(), 2, "{records:?}");
    for statement in statements {
        assert_eq!(statement["mode"], "shadow");
        assert_eq!(statement["decision"]["action"], "deny");
        assert_eq!(statement["decision"]["rule"], "no-drop");
        // What really happened: the server ran it.
        assert_eq!(statement["command_tag"], "DROP TABLE");
        assert!(statement.get("error").is_none());
    }
    assert!(records.iter().all(|r| r["mode"] == "shadow"));
    wire.session.on_close(crate::CloseReason::Client, 6_000);
    let end = wire.session.take_records().pop().unwrap();
    let Record::SessionEnd(end) = end else {
        panic!("not the session end");
    };
    assert_eq!(end.denied, 2, "would-be denials are counted");
}

#[test]
fn enforcing_records_carry_no_mode_field() {
    let mut s = session(EngineConfig::default());
    let verdict = s.on_frontend(&startup(), 5_000);
    assert_eq!(verdict.bytes(&startup()), startup().as_slice());
    let record = s.take_records().pop().unwrap();
    let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
    assert!(json.get("mode").is_none(), "{json}");
}

#[test]
fn masking_in_shadow_mode_leaves_rows_intact_and_counts_what_it_would_mask() {
    let mut wire = Shadow::new();
    let masking = MaskingPolicy::from_json(
        include_str!("../../../../examples/postgres-masking.json").as_bytes(),
    )
    .unwrap();
    wire.session
        .set_masker(SessionMasker::new(Arc::new(masking)));
    let mut wire = wire.logged_in();
    // No catalog lookup goes ahead of the query: the client's bytes are all the server gets.
    wire.client(&frontend(&[FrontendMessage::Query {
        sql: b"select email, ssn from customers",
    }]));
    let mut description = 2i16.to_be_bytes().to_vec();
    for name in ["email", "ssn"] {
        description.extend_from_slice(name.as_bytes());
        description.push(0);
        description.extend_from_slice(&16_400u32.to_be_bytes());
        description.extend_from_slice(&1i16.to_be_bytes());
        description.extend_from_slice(&25u32.to_be_bytes());
        description.extend_from_slice(&(-1i16).to_be_bytes());
        description.extend_from_slice(&(-1i32).to_be_bytes());
        description.extend_from_slice(&0i16.to_be_bytes());
    }
    let row = backend(&[BackendMessage::DataRow {
        values: vec![Some(b"alice@example.com"), Some(b"123-45-6789")],
    }]);
    wire.server(&backend(&[BackendMessage::RowDescription {
        body: &description,
    }]));
    // Split inside the row: the bytes still pass as they arrive.
    let (first, second) = row.split_at(9);
    wire.server(first);
    wire.server(second);
    wire.server(&backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    let records = wire.json();
    let statement = records
        .iter()
        .find(|r| r["type"] == "pg.statement")
        .expect("a statement record");
    assert_eq!(statement["mode"], "shadow");
    let masking = &statement["masking"];
    assert_eq!(masking["rules"]["customer-email"], 1, "{statement}");
    assert_eq!(masking["rules"]["customer-ssn"], 1, "{statement}");
}

/// Through the shadow instance in front of an enforcing one with token login.
fn token_login(password: &[u8]) -> Shadow {
    let mut wire = Shadow::new();
    wire.session.set_authenticator(Box::new(FixedTokens), 10);
    assert_eq!(
        wire.session.login_deadline_us(),
        None,
        "a shadow instance never closes a slow login"
    );
    let policy = Arc::new(PgPolicy::from_json(POLICY.as_bytes()).unwrap());
    wire.session.set_statement_policy(Box::new(policy));
    wire.client(&startup());
    // The enforcing instance's request for the token.
    wire.server(&backend(&[BackendMessage::Authentication {
        code: 3,
        data: b"",
    }]));
    wire.client(&frontend(&[FrontendMessage::Password { data: password }]));
    // The server's held startup answer, released by the enforcing instance.
    wire.server(&backend(&[
        BackendMessage::Authentication { code: 0, data: b"" },
        BackendMessage::BackendKeyData {
            pid: 77,
            key: &[0, 0, 0, 1],
        },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    wire.client(&frontend(&[FrontendMessage::Query {
        sql: b"drop table orders",
    }]));
    wire.server(&backend(&[
        BackendMessage::CommandComplete { tag: b"DROP TABLE" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    wire
}

#[test]
fn a_passing_token_gives_the_shadow_session_its_verified_identity() {
    let wire = token_login(GOOD_TOKEN);
    let records = wire.json();
    let start = &records[0];
    assert_eq!(start["type"], "pg.session_start");
    assert_eq!(start["mode"], "shadow");
    assert_eq!(start["identity"]["subject"], "alice");
    assert!(start.get("login_refusal").is_none());
    let statement = &records[1];
    assert_eq!(statement["type"], "pg.statement");
    assert_eq!(statement["identity"]["subject"], "alice");
    assert_eq!(statement["decision"]["action"], "deny");
}

#[test]
fn a_bad_token_yields_an_unverified_session_whose_start_says_the_login_would_fail() {
    let wire = token_login(b"forged\0");
    let records = wire.json();
    let start = &records[0];
    assert_eq!(start["type"], "pg.session_start");
    assert_eq!(start["mode"], "shadow");
    assert!(start.get("identity").is_none(), "{start}");
    assert_eq!(start["login_refusal"], "token refused: bad_signature");
    // The session goes on, judged for the claimed user.
    assert_eq!(records[1]["type"], "pg.statement");
    assert_eq!(records[1]["decision"]["action"], "deny");
    let Record::Statement(statement) = &wire.records[1] else {
        panic!("not a statement");
    };
    assert_eq!(statement.decision.action, Action::Deny);
}

#[test]
fn protocol_violations_in_shadow_mode_are_recorded_but_the_bytes_still_pass() {
    let mut wire = Shadow::new().logged_in();
    // A message type no client may send after login.
    let bogus = [b'R', 0, 0, 0, 8, 0, 0, 0, 0];
    wire.client(&bogus);
    wire.client(&frontend(&[FrontendMessage::Query { sql: b"select 1" }]));
    wire.session.on_close(crate::CloseReason::Client, 6_000);
    let end = wire.session.take_records().pop().unwrap();
    let Record::SessionEnd(end) = end else {
        panic!("not the session end");
    };
    assert_eq!(end.reason, gatehouse_core::record::EndReason::ProtocolError);
}
