//! Statement policy on the wire: denied statements never reach the server, and the
//! client sees the server's own permission error without the DO block's traces.

use super::*;
use crate::deny;
use crate::policy::PgPolicy;
use crate::protocol::{BackendMessage, Bind, ErrorField, FrontendMessage, StartupPacket};
use gatehouse_core::identity::Identity;
use gatehouse_core::policy::Action;
use gatehouse_core::record::StatementRecord;

const DROP_MESSAGE: &str = "gatehouse: DROP is not allowed";

pub(super) const TEST_POLICY: &str = r#"{
  "version": "deny-tests",
  "default": { "action": "allow" },
  "rules": [
    { "name": "no-drop", "action": "deny", "message": "gatehouse: DROP is not allowed",
      "match": { "kinds": ["drop"] } },
    { "name": "approve-truncate", "action": "require_approval",
      "approval": { "approvers": ["dba"] },
      "match": { "kinds": ["truncate"] } },
    { "name": "watch-delete", "action": "observe", "match": { "kinds": ["delete"] } },
    { "name": "no-server-files", "action": "deny", "message": "gatehouse: no server files",
      "match": { "functions": ["lo_import", "pg_read_file"] } }
  ]
}"#;

/// A logged-in session with a policy, driven message by message.
pub(super) struct Wire {
    pub(super) session: Session,
    pub(super) records: Vec<Record>,
    now: u64,
    /// Deliver every input one byte at a time.
    byte_by_byte: bool,
}

impl Wire {
    pub(super) fn new(policy_json: &str, identity: Option<Identity>) -> Self {
        Self::with_chunking(policy_json, identity, false)
    }

    pub(super) fn with_chunking(
        policy_json: &str,
        identity: Option<Identity>,
        byte_by_byte: bool,
    ) -> Self {
        Self::with_config(policy_json, identity, byte_by_byte, EngineConfig::default())
    }

    pub(super) fn with_config(
        policy_json: &str,
        identity: Option<Identity>,
        byte_by_byte: bool,
        config: EngineConfig,
    ) -> Self {
        let policy = Arc::new(PgPolicy::from_json(policy_json.as_bytes()).unwrap());
        let mut session = session(config);
        session.set_statement_policy(Box::new(policy));
        if let Some(identity) = identity {
            session.set_identity(identity);
        }
        let mut wire = Self {
            session,
            records: Vec::new(),
            now: 2_000,
            byte_by_byte,
        };
        let mut startup = Vec::new();
        StartupPacket::Startup {
            version: 3 << 16,
            params: vec![("user", "alice"), ("database", "app")],
        }
        .encode(&mut startup);
        assert_eq!(wire.client(&startup), startup);
        let login = backend(&[
            BackendMessage::Authentication { code: 0, data: b"" },
            BackendMessage::ReadyForQuery { status: b'I' },
        ]);
        assert_eq!(wire.server(&login), login);
        wire.records.clear();
        wire
    }

    pub(super) fn feed(&mut self, bytes: &[u8], to_server: bool) -> Vec<u8> {
        self.now += 10;
        let chunks: Vec<Vec<u8>> = if self.byte_by_byte {
            byte_by_byte(0, bytes)
        } else {
            whole(0, bytes)
        };
        let mut out = Vec::new();
        for chunk in chunks {
            let verdict = if to_server {
                self.session.on_frontend(&chunk, self.now)
            } else {
                self.session.on_backend(&chunk, self.now)
            };
            assert!(!verdict.close_connection, "session closed");
            out.extend_from_slice(verdict.bytes(&chunk));
        }
        self.records.extend(self.session.take_records());
        out
    }

    /// Client bytes in; the bytes the server gets.
    pub(super) fn client(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.feed(bytes, true)
    }

    /// Server bytes in; the bytes the client gets.
    pub(super) fn server(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.feed(bytes, false)
    }

    pub(super) fn statements(&self) -> Vec<&StatementRecord> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::Statement(s) => Some(s.as_ref()),
                _ => None,
            })
            .collect()
    }
}

pub(super) fn query(sql: &str) -> Vec<u8> {
    frontend(&[FrontendMessage::Query {
        sql: sql.as_bytes(),
    }])
}

/// What PostgreSQL 15 answers to the raising DO block (see testdata/deny/).
fn raised_error_fields(message: &str) -> Vec<ErrorField<'_>> {
    vec![
        (b'S', b"ERROR".as_slice()),
        (b'V', b"ERROR"),
        (b'C', b"42501"),
        (b'M', message.as_bytes()),
        (b'W', b"PL/pgSQL function inline_code_block line 1 at RAISE"),
        (b'F', b"pl_exec.c"),
        (b'L', b"3907"),
        (b'R', b"exec_stmt_raise"),
    ]
}

pub(super) fn raised_error(message: &str) -> Vec<u8> {
    backend(&[BackendMessage::ErrorResponse {
        fields: raised_error_fields(message),
    }])
}

/// The error the client must see: severity, code and message only (these
/// synthetic answers carry no DETAIL).
pub(super) fn clean_error(message: &str) -> Vec<u8> {
    clean_error_with_detail(message, None)
}

/// The error the client must see: severity, code, message and, from a real
/// server's answer, the DETAIL naming the rule.
fn clean_error_with_detail(message: &str, detail: Option<&str>) -> Vec<u8> {
    let mut fields = vec![
        (b'S', b"ERROR".as_slice()),
        (b'V', b"ERROR"),
        (b'C', b"42501"),
        (b'M', message.as_bytes()),
    ];
    fields.extend(detail.map(|detail| (b'D', detail.as_bytes())));
    backend(&[BackendMessage::ErrorResponse { fields }])
}

pub(super) fn ready(status: u8) -> Vec<u8> {
    backend(&[BackendMessage::ReadyForQuery { status }])
}

pub(super) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn assert_denied(record: &StatementRecord, rule: &str, statement: &str) {
    assert_eq!(record.decision.action, Action::Deny);
    assert_eq!(record.decision.rule.as_deref(), Some(rule));
    assert_eq!(record.statement.as_deref(), Some(statement));
    assert_eq!(
        record.error.as_ref().map(|e| e.sqlstate.as_str()),
        Some("42501")
    );
}

/// What the client is told for a statement `rule` refuses with `message`.
pub(super) fn denial(message: &str, rule: &str) -> deny::Denial {
    deny::Denial {
        message: message.to_owned(),
        detail: Some(format!("denied by gatehouse rule {rule}")),
        hint: None,
    }
}

/// What the client is told for a statement TEST_POLICY blocks for the claimed user.
fn policy_message(sql: &str) -> deny::Denial {
    let policy = PgPolicy::from_json(TEST_POLICY.as_bytes()).unwrap();
    let ctx = crate::policy::SessionContext {
        identity: Identity::claimed("alice"),
        database: "app".into(),
        role: "alice".into(),
        ..Default::default()
    };
    let decision = policy.decide(&ctx, sql).decision;
    assert!(decision.action.blocks(), "{sql} is not blocked");
    deny::denial_message(&decision)
}

#[test]
fn denied_query_becomes_the_raising_block_and_the_next_statement_passes() {
    for byte_by_byte in [false, true] {
        let mut wire = Wire::with_chunking(TEST_POLICY, None, byte_by_byte);
        let sent = wire.client(&query("DROP TABLE users"));
        assert_eq!(
            sent,
            query(
                "DO $gh$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', \
                 MESSAGE = E'gatehouse: DROP is not allowed', \
                 DETAIL = E'denied by gatehouse rule no-drop'; END$gh$"
            )
        );
        let answer = cat(&[&raised_error(DROP_MESSAGE), &ready(b'I')]);
        assert_eq!(
            wire.server(&answer),
            cat(&[&clean_error(DROP_MESSAGE), &ready(b'I')])
        );
        let allowed = query("select 1");
        assert_eq!(wire.client(&allowed), allowed);
        let rows = backend(&[
            BackendMessage::CommandComplete { tag: b"SELECT 1" },
            BackendMessage::ReadyForQuery { status: b'I' },
        ]);
        assert_eq!(wire.server(&rows), rows);
        let records = wire.statements();
        assert_eq!(records.len(), 2);
        assert_denied(records[0], "no-drop", "DROP TABLE users");
        assert_eq!(records[1].decision.action, Action::Allow);
        assert!(records[1].error.is_none());
        assert_eq!(wire.session.summary().denied, 1);
        wire.session.on_close(crate::CloseReason::Client, wire.now);
        let end = wire.session.take_records();
        let [Record::SessionEnd(end)] = end.as_slice() else {
            panic!("{end:?}");
        };
        assert_eq!((end.statements, end.denied, end.masked), (2, 1, 0));
    }
}

#[test]
fn denial_inside_begin_aborts_the_transaction_as_the_server_decides() {
    let mut wire = Wire::new(TEST_POLICY, None);
    assert_eq!(wire.client(&query("BEGIN")), query("BEGIN"));
    let begun = backend(&[
        BackendMessage::CommandComplete { tag: b"BEGIN" },
        BackendMessage::ReadyForQuery { status: b'T' },
    ]);
    assert_eq!(wire.server(&begun), begun);
    let sent = wire.client(&query("drop table accounts"));
    assert_eq!(sent, deny::query(&denial(DROP_MESSAGE, "no-drop")));
    assert_eq!(
        wire.server(&cat(&[&raised_error(DROP_MESSAGE), &ready(b'E')])),
        cat(&[&clean_error(DROP_MESSAGE), &ready(b'E')])
    );
    // The server refuses everything until ROLLBACK; its own error passes untouched.
    assert_eq!(wire.client(&query("select 1")), query("select 1"));
    let aborted = backend(&[
        BackendMessage::ErrorResponse {
            fields: vec![
                (b'S', b"ERROR"),
                (b'V', b"ERROR"),
                (b'C', b"25P02"),
                (
                    b'M',
                    b"current transaction is aborted, commands ignored until end of transaction block",
                ),
                (b'F', b"postgres.c"),
                (b'L', b"1105"),
                (b'R', b"exec_simple_query"),
            ],
        },
        BackendMessage::ReadyForQuery { status: b'E' },
    ]);
    assert_eq!(wire.server(&aborted), aborted);
    assert_eq!(wire.client(&query("ROLLBACK")), query("ROLLBACK"));
    let records = wire.statements();
    assert_denied(records[1], "no-drop", "drop table accounts");
    assert_eq!(records[2].error.as_ref().unwrap().sqlstate, "25P02");
}

#[test]
fn one_denied_statement_denies_the_whole_query_message() {
    let mut wire = Wire::new(TEST_POLICY, None);
    let sql = "select 1; insert into t values (1); DROP TABLE t; select 2";
    let sent = wire.client(&query(sql));
    assert_eq!(sent, deny::query(&denial(DROP_MESSAGE, "no-drop")));
    wire.server(&cat(&[&raised_error(DROP_MESSAGE), &ready(b'I')]));
    let records = wire.statements();
    assert_eq!(records.len(), 1);
    assert_denied(records[0], "no-drop", sql);
}

#[test]
fn require_approval_blocks_with_its_own_reason_and_observe_lets_it_run() {
    let mut wire = Wire::new(TEST_POLICY, None);
    let sent = wire.client(&query("TRUNCATE audit"));
    let message = policy_message("TRUNCATE audit");
    assert_eq!(sent, deny::query(&message));
    assert_eq!(
        wire.server(&cat(&[&raised_error(&message.message), &ready(b'I')])),
        cat(&[&clean_error(&message.message), &ready(b'I')])
    );
    let delete = query("delete from t where id = 3");
    assert_eq!(wire.client(&delete), delete);
    wire.server(&backend(&[
        BackendMessage::CommandComplete { tag: b"DELETE 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    let records = wire.statements();
    assert_eq!(records[0].decision.action, Action::RequireApproval);
    assert_eq!(records[1].decision.action, Action::Observe);
    assert_eq!(records[1].decision.rule.as_deref(), Some("watch-delete"));
    assert_eq!(records[1].rows, Some(1));
}

#[test]
fn unparseable_text_is_denied_by_default() {
    let mut wire = Wire::new(TEST_POLICY, None);
    let sql = "FROBNICATE ALL THE THINGS";
    let sent = wire.client(&query(sql));
    assert!(!contains(&sent, sql.as_bytes()));
    let records_before = wire.statements().len();
    let message = policy_message(sql);
    assert_eq!(sent, deny::query(&message));
    wire.server(&cat(&[&raised_error(&message.message), &ready(b'I')]));
    let records = wire.statements();
    assert_eq!(records.len(), records_before + 1);
    assert_eq!(
        records[0].decision.rule.as_deref(),
        Some(crate::policy::UNPARSEABLE_RULE)
    );
}

#[test]
fn server_error_that_is_not_the_denial_passes_unchanged() {
    let mut wire = Wire::new(TEST_POLICY, None);
    wire.client(&query("DROP TABLE t"));
    // E.g. a statement timeout: not the raised denial, so nothing is stripped.
    let other = backend(&[
        BackendMessage::ErrorResponse {
            fields: vec![
                (b'S', b"ERROR"),
                (b'C', b"57014"),
                (b'M', b"canceling statement due to statement timeout"),
                (b'W', b"PL/pgSQL function inline_code_block line 1 at RAISE"),
            ],
        },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    assert_eq!(wire.server(&other), other);
}

fn parse(name: &str, sql: &str, param_types: Vec<u32>) -> FrontendMessage<'static> {
    FrontendMessage::Parse {
        name: name.as_bytes().to_vec().leak(),
        sql: sql.as_bytes().to_vec().leak(),
        param_types,
    }
}

fn bind<'a>(
    portal: &'a str,
    statement: &'a str,
    params: Vec<Option<&'a [u8]>>,
) -> FrontendMessage<'a> {
    FrontendMessage::Bind(Bind {
        portal: portal.as_bytes(),
        statement: statement.as_bytes(),
        param_formats: vec![0],
        params,
        result_formats: vec![1, 1],
    })
}

#[test]
fn a_denied_statement_is_tracked_past_the_limit_of_allowed_ones() {
    let config = EngineConfig {
        max_prepared_statements: 2,
        ..EngineConfig::default()
    };
    let mut wire = Wire::with_config(TEST_POLICY, None, false, config);
    let allowed = frontend(&[
        parse("a", "SELECT 1", vec![]),
        parse("b", "SELECT 2", vec![]),
    ]);
    assert_eq!(wire.client(&allowed), allowed);
    // The limit is reached by allowed statements: the denied one is still
    // refused as usual, and its Bind loses its parameter.
    let denied = frontend(&[
        parse("s1", "DROP TABLE t", vec![]),
        bind("", "s1", vec![Some(b"secret-param")]),
    ]);
    let expected = cat(&[
        &deny::parse(b"s1", &denial(DROP_MESSAGE, "no-drop")),
        &deny::bind(b"", b"s1"),
    ]);
    assert_eq!(wire.client(&denied), expected);
}

#[test]
fn extended_named_statement_is_parsed_as_the_block_and_bound_without_parameters() {
    for byte_by_byte in [false, true] {
        let mut wire = Wire::with_chunking(TEST_POLICY, None, byte_by_byte);
        let request = frontend(&[
            parse("s1", "DROP TABLE IF EXISTS t_$1", vec![23]),
            bind("", "s1", vec![Some(b"secret-param")]),
            FrontendMessage::Describe {
                kind: b'P',
                name: b"",
            },
            FrontendMessage::Execute {
                portal: b"",
                max_rows: 0,
            },
            FrontendMessage::Sync,
        ]);
        let sent = wire.client(&request);
        let expected = cat(&[
            &deny::parse(b"s1", &denial(DROP_MESSAGE, "no-drop")),
            &deny::bind(b"", b"s1"),
            &frontend(&[
                FrontendMessage::Describe {
                    kind: b'P',
                    name: b"",
                },
                FrontendMessage::Execute {
                    portal: b"",
                    max_rows: 0,
                },
                FrontendMessage::Sync,
            ]),
        ]);
        assert_eq!(sent, expected);
        assert!(!contains(&sent, b"secret-param"));
        let head = backend(&[
            BackendMessage::ParseComplete,
            BackendMessage::BindComplete,
            BackendMessage::NoData,
        ]);
        let answer = cat(&[&head, &raised_error(DROP_MESSAGE), &ready(b'I')]);
        assert_eq!(
            wire.server(&answer),
            cat(&[&head, &clean_error(DROP_MESSAGE), &ready(b'I')])
        );
        // Binding it again is rewritten again; closing it forgets the denial.
        let again = frontend(&[bind("p", "s1", vec![None])]);
        assert_eq!(wire.client(&again), deny::bind(b"p", b"s1"));
        let close_then_reuse = frontend(&[
            FrontendMessage::Close {
                kind: b'S',
                name: b"s1",
            },
            parse("s1", "select $1::int", vec![23]),
            bind("p", "s1", vec![Some(b"5")]),
        ]);
        assert_eq!(wire.client(&close_then_reuse), close_then_reuse);
        let records = wire.statements();
        assert_eq!(records.len(), 1);
        assert_denied(records[0], "no-drop", "DROP TABLE IF EXISTS t_$1");
    }
}

#[test]
fn describe_of_a_denied_statement_raises_there_without_sync() {
    let mut wire = Wire::new(TEST_POLICY, None);
    // A client that prepares with Parse/Describe/Flush and no Sync.
    let request = frontend(&[
        parse("__stmt_1", "drop table t", vec![]),
        FrontendMessage::Describe {
            kind: b'S',
            name: b"__stmt_1",
        },
        FrontendMessage::Flush,
    ]);
    let sent = wire.client(&request);
    let mut expected = cat(&[
        &deny::parse(b"__stmt_1", &denial(DROP_MESSAGE, "no-drop")),
        &deny::bind(deny::PRIVATE_PORTAL, b"__stmt_1"),
    ]);
    FrontendMessage::Execute {
        portal: deny::PRIVATE_PORTAL,
        max_rows: 0,
    }
    .encode(&mut expected);
    FrontendMessage::Flush.encode(&mut expected);
    assert_eq!(sent, expected);
    // The private portal's BindComplete never reaches the client.
    let answer = cat(&[
        &backend(&[BackendMessage::ParseComplete, BackendMessage::BindComplete]),
        &raised_error(DROP_MESSAGE),
    ]);
    assert_eq!(
        wire.server(&answer),
        cat(&[
            &backend(&[BackendMessage::ParseComplete]),
            &clean_error(DROP_MESSAGE)
        ])
    );
    let sync = frontend(&[FrontendMessage::Sync]);
    assert_eq!(wire.client(&sync), sync);
    assert_eq!(wire.server(&ready(b'I')), ready(b'I'));
    let records = wire.statements();
    assert_eq!(records.len(), 1);
    assert_denied(records[0], "no-drop", "drop table t");
    assert_eq!(records[0].statement_name.as_deref(), Some("__stmt_1"));
}

#[test]
fn pipelined_unnamed_statements_deny_one_and_run_the_next() {
    let mut wire = Wire::new(TEST_POLICY, None);
    let execute = FrontendMessage::Execute {
        portal: b"",
        max_rows: 0,
    };
    let request = frontend(&[
        parse("", "DROP TABLE a", vec![]),
        bind("", "", vec![]),
        execute.clone(),
        FrontendMessage::Sync,
        parse("", "select 1", vec![]),
        bind("", "", vec![]),
        execute.clone(),
        FrontendMessage::Sync,
    ]);
    let sent = wire.client(&request);
    let allowed = frontend(&[
        parse("", "select 1", vec![]),
        bind("", "", vec![]),
        execute.clone(),
        FrontendMessage::Sync,
    ]);
    let expected = cat(&[
        &deny::parse(b"", &denial(DROP_MESSAGE, "no-drop")),
        &deny::bind(b"", b""),
        &frontend(&[execute, FrontendMessage::Sync]),
        &allowed,
    ]);
    assert_eq!(sent, expected);
    let first = cat(&[
        &backend(&[BackendMessage::ParseComplete, BackendMessage::BindComplete]),
        &raised_error(DROP_MESSAGE),
        &ready(b'I'),
    ]);
    let second = backend(&[
        BackendMessage::ParseComplete,
        BackendMessage::BindComplete,
        BackendMessage::DataRow {
            values: vec![Some(b"1")],
        },
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    let to_client = wire.server(&cat(&[&first, &second]));
    let clean_first = cat(&[
        &backend(&[BackendMessage::ParseComplete, BackendMessage::BindComplete]),
        &clean_error(DROP_MESSAGE),
        &ready(b'I'),
    ]);
    assert_eq!(to_client, cat(&[&clean_first, &second]));
    let records = wire.statements();
    assert_eq!(records.len(), 2);
    assert_denied(records[0], "no-drop", "DROP TABLE a");
    assert_eq!(records[1].decision.action, Action::Allow);
    assert_eq!(records[1].rows, Some(1));
}

#[test]
fn requests_written_while_the_server_skips_to_sync_are_judged_and_never_recorded() {
    let mut wire = Wire::new(TEST_POLICY, None);
    let refused = frontend(&[parse("", "select * from missing", vec![])]);
    assert_eq!(wire.client(&refused), refused);
    let error = backend(&[BackendMessage::ErrorResponse {
        fields: vec![(b'S', b"ERROR"), (b'C', b"42P01"), (b'M', b"no such table")],
    }]);
    assert_eq!(wire.server(&error), error);
    // Written after the error, before Sync: the server ignores all of it.
    // What the policy denies does not even reach it; the rest passes as is.
    let denied = [
        frontend(&[FrontendMessage::Query {
            sql: b"drop table t",
        }]),
        frontend(&[parse("d", "drop table t", vec![])]),
    ];
    for message in &denied {
        assert!(wire.client(message).is_empty());
    }
    let ignored = frontend(&[
        parse("s", "select 2", vec![]),
        bind("", "s", vec![]),
        FrontendMessage::Execute {
            portal: b"",
            max_rows: 0,
        },
    ]);
    assert_eq!(wire.client(&ignored), ignored);
    let sync = frontend(&[FrontendMessage::Sync]);
    assert_eq!(wire.client(&sync), sync);
    assert_eq!(wire.server(&ready(b'I')), ready(b'I'));
    assert!(wire.statements().is_empty(), "{:?}", wire.statements());
    // The next request's answers are its own.
    assert_eq!(wire.client(&query("select 1")), query("select 1"));
    let answer = backend(&[
        BackendMessage::DataRow {
            values: vec![Some(b"1")],
        },
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    assert_eq!(wire.server(&answer), answer);
    let records = wire.statements();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].statement.as_deref(), Some("select 1"));
    assert_eq!(records[0].rows, Some(1));
    assert_eq!(wire.session.summary().denied, 0);
}

/// The policy-test identities of testdata/policy/corpus.tsv.
fn corpus_identity(name: &str) -> Identity {
    let group = match name {
        "developer" => Some("developers"),
        "ci" => Some("ci"),
        "agent" => Some("ai-agents"),
        "dba" => Some("dba"),
        "admin" => Some("platform-admins"),
        _ => None,
    };
    Identity {
        subject: name.to_string(),
        groups: group.into_iter().map(str::to_string).collect(),
        verified: true,
        ..Identity::default()
    }
}

#[test]
fn no_denied_statement_of_the_corpus_reaches_the_server_on_either_path() {
    let policy = include_str!("../../../../examples/postgres-policy.json");
    let corpus = include_str!("../../testdata/policy/corpus.tsv");
    let mut denied = 0;
    for line in corpus
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let fields: Vec<&str> = line.splitn(4, '\t').collect();
        let [identity, action, _rule, sql] = fields[..] else {
            panic!("bad corpus line {line}");
        };
        let sql = sql.replace("\\n", "\n");
        let mut wire = Wire::new(policy, Some(corpus_identity(identity)));
        let simple = wire.client(&query(&sql));
        let extended_request = frontend(&[
            parse("s", &sql, vec![]),
            FrontendMessage::Describe {
                kind: b'S',
                name: b"s",
            },
            bind("", "s", vec![Some(b"p1")]),
            FrontendMessage::Execute {
                portal: b"",
                max_rows: 0,
            },
            FrontendMessage::Sync,
        ]);
        let extended = wire.client(&extended_request);
        // Without the approval service, require_approval refuses like deny.
        if action == "deny" || action == "require_approval" {
            denied += 1;
            assert!(
                !contains(&simple, sql.as_bytes()),
                "simple path leaked {sql}"
            );
            assert!(
                !contains(&extended, sql.as_bytes()),
                "extended path leaked {sql}"
            );
            assert!(!contains(&extended, b"p1"), "parameters leaked for {sql}");
        } else {
            assert_eq!(simple, query(&sql), "{sql}");
            assert_eq!(extended, extended_request, "{sql}");
        }
    }
    assert!(
        denied > 100,
        "only {denied} denied statements in the corpus"
    );
}

/// Server answers captured from PostgreSQL 15 (testdata/deny/capture.py).
fn captured(name: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/deny/");
    let read = |suffix: &str| std::fs::read(format!("{dir}{name}.{suffix}.bin")).unwrap();
    (read("fe"), read("be"))
}

/// Splits wire bytes into whole messages (tag, length, body).
pub(super) fn messages(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        out.push(bytes[..len + 1].to_vec());
        bytes = &bytes[len + 1..];
    }
    out
}

fn strip_raised(server: &[u8]) -> Vec<u8> {
    let raised = raised_error_fields(DROP_MESSAGE);
    messages(server)
        .into_iter()
        .flat_map(|m| {
            let is_raise = m[0] == b'E' && contains(&m, b"Rexec_stmt_raise\0");
            assert!(!is_raise || contains(&m, raised[3].1), "unexpected raise");
            if is_raise {
                clean_error_with_detail(DROP_MESSAGE, Some("denied by gatehouse rule no-drop"))
            } else {
                m
            }
        })
        .collect()
}

#[test]
fn real_server_answers_to_the_simple_and_transaction_denials_are_cleaned() {
    for (name, client) in [
        ("simple", vec!["DROP TABLE users", "select 1"]),
        (
            "in_transaction",
            vec!["BEGIN", "DROP TABLE users", "select 1", "ROLLBACK"],
        ),
    ] {
        let (expected_to_server, server) = captured(name);
        let mut wire = Wire::new(TEST_POLICY, None);
        let sent: Vec<u8> = client
            .iter()
            .flat_map(|sql| wire.client(&query(sql)))
            .collect();
        assert_eq!(sent, expected_to_server, "{name}");
        let to_client = wire.server(&server);
        assert_eq!(to_client, strip_raised(&server), "{name}");
        assert!(!contains(&to_client, b"inline_code_block"));
        assert_eq!(wire.session.summary().unmatched_backend_messages, 0);
        let records = wire.statements();
        assert_denied(
            records[usize::from(name != "simple")],
            "no-drop",
            "DROP TABLE users",
        );
    }
}

#[test]
fn real_server_answers_to_the_extended_denial_are_cleaned() {
    let (expected_to_server, server) = captured("extended");
    let mut wire = Wire::new(TEST_POLICY, None);
    let request = frontend(&[
        parse("s1", "DROP TABLE users", vec![]),
        bind("", "s1", vec![]),
        FrontendMessage::Describe {
            kind: b'P',
            name: b"",
        },
        FrontendMessage::Execute {
            portal: b"",
            max_rows: 0,
        },
        FrontendMessage::Sync,
        parse("", "select 1", vec![]),
        FrontendMessage::Bind(Bind {
            portal: b"",
            statement: b"",
            param_formats: vec![],
            params: vec![],
            result_formats: vec![],
        }),
        FrontendMessage::Execute {
            portal: b"",
            max_rows: 0,
        },
        FrontendMessage::Sync,
    ]);
    assert_eq!(wire.client(&request), expected_to_server);
    assert_eq!(wire.server(&server), strip_raised(&server));
    assert_eq!(wire.session.summary().unmatched_backend_messages, 0);
    let records = wire.statements();
    assert_eq!(records.len(), 2);
    assert_denied(records[0], "no-drop", "DROP TABLE users");
    assert_eq!(records[1].rows, Some(1));
}

#[test]
fn real_server_answer_to_a_denied_describe_loses_the_private_bind_complete() {
    let (_, server) = captured("describe");
    let mut wire = Wire::new(TEST_POLICY, None);
    let begin = cat(&[&query("BEGIN"), &query("SAVEPOINT a")]);
    wire.client(&begin);
    let request = frontend(&[
        parse("s2", "DROP TABLE users", vec![]),
        FrontendMessage::Describe {
            kind: b'S',
            name: b"s2",
        },
        FrontendMessage::Flush,
        FrontendMessage::Sync,
    ]);
    wire.client(&request);
    let to_client = wire.server(&server[..messages(&server)[..8].concat().len()]);
    let kinds: Vec<u8> = messages(&to_client).iter().map(|m| m[0]).collect();
    // BEGIN, SAVEPOINT, ParseComplete, the denial, ReadyForQuery (failed block).
    assert_eq!(kinds, b"CZCZ1EZ");
    assert!(contains(
        &to_client,
        &clean_error_with_detail(DROP_MESSAGE, Some("denied by gatehouse rule no-drop"))
    ));
    assert_eq!(wire.session.summary().unmatched_backend_messages, 0);
}
