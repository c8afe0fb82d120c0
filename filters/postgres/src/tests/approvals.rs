//! Approvals on the wire: a statement a `require_approval` rule matches is
//! refused with its request named, filed with the service, and passes once a
//! grant for exactly that statement is published; Binds are checked with their
//! parameters; the session's reason never reaches the server.

use super::*;
use crate::approval::{ApprovalCall, ApprovalGate, REASON_REPLACEMENT};
use crate::policy::{PREPARE_NEEDS_APPROVAL, PgPolicy};
use crate::protocol::{BackendMessage, Bind, ErrorField, FrontendMessage, StartupPacket};
use gatehouse_core::approval::grant::statement_hash;
use gatehouse_core::approval::{Grant, GrantBook, GrantKind, GrantsDocument, Principal};
use gatehouse_core::identity::Identity;
use gatehouse_core::policy::Action as PolicyAction;
use gatehouse_core::record::StatementRecord;
use std::cell::RefCell;
use std::rc::Rc;

const POLICY: &str = r#"{
  "default": { "action": "allow" },
  "rules": [
    { "name": "customer-writes", "action": "require_approval",
      "message": "writes to customers need a dba's approval",
      "approval": { "approvers": ["dba"], "valid": "15m" },
      "match": { "kinds": ["update", "delete"], "writes": ["customers"] } }
  ]
}"#;

const MESSAGE: &str = "writes to customers need a dba's approval";

struct Wire {
    session: Session,
    book: Rc<RefCell<GrantBook>>,
    records: Vec<Record>,
    now: u64,
}

impl Wire {
    fn new() -> Wire {
        let policy = Arc::new(PgPolicy::from_json(POLICY.as_bytes()).unwrap());
        let book = Rc::new(RefCell::new(GrantBook::default()));
        let mut session = session(EngineConfig::default());
        session.set_statement_policy(Box::new(Arc::clone(&policy)));
        session.set_identity(Identity {
            subject: "developer".into(),
            groups: vec!["developers".into()],
            verified: true,
            ..Identity::default()
        });
        session.set_approval_gate(ApprovalGate::new(policy, Rc::clone(&book), 9));
        let mut wire = Wire {
            session,
            book,
            records: Vec::new(),
            now: 1_000_000_000_000,
        };
        let mut startup = Vec::new();
        StartupPacket::Startup {
            version: 3 << 16,
            params: vec![("user", "app"), ("database", "shop")],
        }
        .encode(&mut startup);
        wire.client(&startup);
        wire.server(&backend(&[
            BackendMessage::Authentication { code: 0, data: b"" },
            BackendMessage::ReadyForQuery { status: b'I' },
        ]));
        wire.records.clear();
        wire
    }

    fn client(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.now += 10;
        let verdict = self.session.on_frontend(bytes, self.now);
        assert!(!verdict.close_connection);
        let out = verdict.bytes(bytes).to_vec();
        self.records.extend(self.session.take_records());
        out
    }

    fn server(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.now += 10;
        let verdict = self.session.on_backend(bytes, self.now);
        assert!(!verdict.close_connection);
        let out = verdict.bytes(bytes).to_vec();
        self.records.extend(self.session.take_records());
        out
    }

    fn grant(&self, kind: GrantKind, hash: Option<String>) {
        self.book.borrow_mut().update(GrantsDocument {
            grants: vec![Grant {
                id: "apr-granted1".into(),
                rule: "customer-writes".into(),
                subject: "developer".into(),
                kind,
                hash,
                until: self.now / 1_000_000 + 600,
                approvers: vec![Principal {
                    subject: "dba".into(),
                    groups: vec!["dba".into()],
                }],
                forced: false,
                reason: None,
            }],
            pending: vec![],
        });
    }

    fn last_statement(&self) -> &StatementRecord {
        self.records
            .iter()
            .rev()
            .find_map(|r| match r {
                Record::Statement(s) => Some(s.as_ref()),
                _ => None,
            })
            .unwrap()
    }
}

fn query(sql: &str) -> Vec<u8> {
    frontend(&[FrontendMessage::Query {
        sql: sql.as_bytes(),
    }])
}

fn text_of(message: &[u8]) -> String {
    String::from_utf8_lossy(message).into_owned()
}

/// What PostgreSQL answers to the raising block, hint included.
fn raised(message: &str, hint: &str) -> Vec<u8> {
    let fields: Vec<ErrorField<'_>> = vec![
        (b'S', b"ERROR"),
        (b'V', b"ERROR"),
        (b'C', b"42501"),
        (b'M', message.as_bytes()),
        (b'H', hint.as_bytes()),
        (b'W', b"PL/pgSQL function inline_code_block line 1 at RAISE"),
    ];
    backend(&[BackendMessage::ErrorResponse { fields }])
}

/// The request id and hint in a refusal's raising block.
fn hint_in(sent: &[u8]) -> (String, String) {
    let text = text_of(sent);
    let start = text.find("HINT = E'").unwrap() + "HINT = E'".len();
    let hint = text[start..].split("';").next().unwrap().replace("''", "'");
    let id = hint
        .split_whitespace()
        .find(|w| w.starts_with("apr-"))
        .unwrap()
        .to_owned();
    (id, hint)
}

#[test]
fn a_refused_query_names_its_request_and_a_single_use_grant_lets_it_run_once() {
    let mut wire = Wire::new();
    let sql = "DELETE FROM customers WHERE id = 7";
    let sent = wire.client(&query(sql));
    assert!(
        !text_of(&sent).contains("DELETE FROM"),
        "the statement never reaches the server"
    );
    assert!(text_of(&sent).contains("need a dba"));
    let (id, hint) = hint_in(&sent);
    assert!(hint.contains(&format!("gatehouse approve {id}")), "{hint}");
    let calls = wire.session.take_approval_calls();
    assert!(matches!(calls.as_slice(), [ApprovalCall::File { id: filed, .. }] if *filed == id));
    // The client sees the error with its hint, not the DO block's traces.
    let answer = wire.server(
        &[
            raised(MESSAGE, &hint),
            backend(&[BackendMessage::ReadyForQuery { status: b'I' }]),
        ]
        .concat(),
    );
    assert!(text_of(&answer).contains(&hint) && !text_of(&answer).contains("inline_code_block"));
    assert_eq!(
        wire.last_statement().decision.rule.as_deref(),
        Some("customer-writes")
    );

    // Approved for exactly this text: it passes once, through the service.
    wire.grant(
        GrantKind::SingleUse,
        Some(statement_hash(sql.as_bytes(), &[])),
    );
    let message = query(sql);
    assert_eq!(wire.client(&message), message);
    let calls = wire.session.take_approval_calls();
    assert!(matches!(calls.as_slice(), [ApprovalCall::Consume { id, .. }] if id == "apr-granted1"));
    wire.server(&backend(&[
        BackendMessage::CommandComplete { tag: b"DELETE 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    let record = wire.last_statement();
    let approval = record.approval.as_ref().unwrap();
    assert_eq!(
        (approval.id.as_str(), approval.approvers.as_slice()),
        ("apr-granted1", &["dba".to_string()][..])
    );
    assert_eq!(record.command_tag.as_deref(), Some("DELETE 1"));

    // A third run needs a new approval.
    let sent = wire.client(&query(sql));
    let (third, _) = hint_in(&sent);
    assert_ne!(third, id);
    // Another statement never matches the grant.
    wire.grant(
        GrantKind::SingleUse,
        Some(statement_hash(sql.as_bytes(), &[])),
    );
    let other = wire.client(&query("DELETE FROM customers WHERE id = 8"));
    assert!(text_of(&other).contains("HINT"));
}

#[test]
fn an_approval_does_not_get_a_statement_past_masking() {
    let mut wire = Wire::new();
    let masking = crate::masking::MaskingPolicy::from_json(include_bytes!(
        "../../../../examples/postgres-masking.json"
    ))
    .unwrap();
    wire.session
        .set_masker(crate::masking::SessionMasker::new(Arc::new(masking)));
    // The policy wants an approval; masking refuses it outright (it would copy
    // a masked column into one that is not masked), granted or not.
    let sql = "UPDATE customers SET notes = ssn WHERE id = 7";
    wire.grant(
        GrantKind::SingleUse,
        Some(statement_hash(sql.as_bytes(), &[])),
    );
    let sent = text_of(&wire.client(&query(sql)));
    assert!(!sent.contains(sql), "{sent}");
    assert!(sent.contains("refused by masking"), "{sent}");
    assert!(wire.session.take_approval_calls().is_empty());
}

#[test]
fn binds_are_checked_with_their_parameters() {
    let mut wire = Wire::new();
    let sql = "UPDATE customers SET email = $1 WHERE id = $2";
    let parse = frontend(&[FrontendMessage::Parse {
        name: b"s1",
        sql: sql.as_bytes(),
        param_types: vec![],
    }]);
    // Preparing runs nothing: the Parse goes on unchanged.
    assert_eq!(wire.client(&parse), parse);
    let bind = |email: &'static [u8]| {
        frontend(&[
            FrontendMessage::Bind(Bind {
                portal: b"",
                statement: b"s1",
                param_formats: vec![],
                params: vec![Some(email), Some(b"7")],
                result_formats: vec![],
            }),
            FrontendMessage::Execute {
                portal: b"",
                max_rows: 0,
            },
            FrontendMessage::Sync,
        ])
    };
    let sent = wire.client(&bind(b"a@example.com"));
    let text = text_of(&sent);
    assert!(
        text.contains("gatehouse_approval") && !text.contains("a@example.com"),
        "{text}"
    );
    let (id, hint) = hint_in(&sent);
    // Close and Parse of the private statement are answered, and dropped.
    let answer = wire.server(
        &[
            backend(&[
                BackendMessage::ParseComplete,
                BackendMessage::CloseComplete,
                BackendMessage::ParseComplete,
                BackendMessage::BindComplete,
            ]),
            raised(MESSAGE, &hint),
            backend(&[BackendMessage::ReadyForQuery { status: b'I' }]),
        ]
        .concat(),
    );
    let expected_head = backend(&[BackendMessage::ParseComplete, BackendMessage::BindComplete]);
    assert_eq!(&answer[..expected_head.len()], expected_head.as_slice());
    assert!(text_of(&answer).contains(&id));
    assert_eq!(
        wire.last_statement().error.as_ref().unwrap().sqlstate,
        "42501"
    );

    // Approved with these parameters: the same Bind passes; others do not.
    let params: [Option<&[u8]>; 2] = [Some(b"a@example.com"), Some(b"7")];
    wire.grant(
        GrantKind::SingleUse,
        Some(statement_hash(sql.as_bytes(), &params)),
    );
    let other = bind(b"b@example.com");
    assert_ne!(wire.client(&other), other);
    wire.server(&backend(&[
        BackendMessage::CloseComplete,
        BackendMessage::ParseComplete,
        BackendMessage::BindComplete,
    ]));
    wire.server(
        &[
            raised(MESSAGE, "x"),
            backend(&[BackendMessage::ReadyForQuery { status: b'I' }]),
        ]
        .concat(),
    );
    let approved = bind(b"a@example.com");
    assert_eq!(wire.client(&approved), approved);
    assert!(matches!(
        wire.session.take_approval_calls().last(),
        Some(ApprovalCall::Consume { .. })
    ));
    wire.server(&backend(&[
        BackendMessage::BindComplete,
        BackendMessage::CommandComplete { tag: b"UPDATE 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    assert_eq!(
        wire.last_statement().approval.as_ref().unwrap().id,
        "apr-granted1"
    );
}

#[test]
fn a_bind_to_a_longer_name_the_server_reads_as_the_same_is_checked_too() {
    let mut wire = Wire::new();
    // The server keys statements by their first 63 bytes.
    let prepared = format!("{}a", "s".repeat(63));
    let alias = format!("{}b", "s".repeat(63));
    let parse = frontend(&[FrontendMessage::Parse {
        name: prepared.as_bytes(),
        sql: b"DELETE FROM customers WHERE id = $1",
        param_types: vec![],
    }]);
    assert_eq!(wire.client(&parse), parse);
    let bind = frontend(&[
        FrontendMessage::Bind(Bind {
            portal: b"",
            statement: alias.as_bytes(),
            param_formats: vec![],
            params: vec![Some(b"7")],
            result_formats: vec![],
        }),
        FrontendMessage::Execute {
            portal: b"",
            max_rows: 0,
        },
        FrontendMessage::Sync,
    ]);
    let sent = wire.client(&bind);
    assert_ne!(sent, bind, "the aliased Bind went through unchecked");
    assert!(text_of(&sent).contains("gatehouse_approval"));
}

/// A prepared DELETE that needs approval, as the server holds it.
fn prepared_delete(wire: &mut Wire) -> Vec<u8> {
    let parse = frontend(&[
        FrontendMessage::Parse {
            name: b"s1",
            sql: b"DELETE FROM customers WHERE id = $1",
            param_types: vec![],
        },
        FrontendMessage::Sync,
    ]);
    assert_eq!(wire.client(&parse), parse);
    wire.server(&backend(&[
        BackendMessage::ParseComplete,
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    frontend(&[
        FrontendMessage::Bind(Bind {
            portal: b"",
            statement: b"s1",
            param_formats: vec![],
            params: vec![Some(b"7")],
            result_formats: vec![],
        }),
        FrontendMessage::Execute {
            portal: b"",
            max_rows: 0,
        },
        FrontendMessage::Sync,
    ])
}

/// A Parse of `s1` as a harmless text, which the server refuses while `s1`
/// is in use.
fn redefinition() -> Vec<u8> {
    frontend(&[
        FrontendMessage::Parse {
            name: b"s1",
            sql: b"SELECT 1",
            param_types: vec![],
        },
        FrontendMessage::Sync,
    ])
}

/// The server's refusal of [`redefinition`] (42P05), through its ReadyForQuery.
fn name_in_use() -> Vec<u8> {
    let refused: Vec<ErrorField<'_>> = vec![
        (b'S', b"ERROR"),
        (b'C', b"42P05"),
        (b'M', b"prepared statement \"s1\" already exists"),
    ];
    backend(&[
        BackendMessage::ErrorResponse { fields: refused },
        BackendMessage::ReadyForQuery { status: b'I' },
    ])
}

#[test]
fn a_redefinition_the_server_refuses_leaves_the_statement_needing_approval() {
    let mut wire = Wire::new();
    let bind = prepared_delete(&mut wire);
    // `s1` is in use: the server refuses the new Parse and keeps the DELETE
    // under the name.
    let parse = redefinition();
    assert_eq!(wire.client(&parse), parse);
    wire.server(&name_in_use());
    let sent = wire.client(&bind);
    assert_ne!(sent, bind, "the DELETE ran without approval");
    assert!(text_of(&sent).contains("gatehouse_approval"));
}

#[test]
fn a_bind_pipelined_behind_a_redefinition_is_checked_against_what_the_server_may_hold() {
    let mut wire = Wire::new();
    let bind = prepared_delete(&mut wire);
    // Written before any answer: if the server refuses the Close or the
    // Parse (or skips them after an error), `s1` is still the DELETE when
    // the next batch binds it.
    let redefine = frontend(&[
        FrontendMessage::Close {
            kind: b'S',
            name: b"s1",
        },
        FrontendMessage::Parse {
            name: b"s1",
            sql: b"SELECT 1",
            param_types: vec![],
        },
        FrontendMessage::Sync,
    ]);
    assert_eq!(wire.client(&redefine), redefine);
    let sent = wire.client(&bind);
    assert_ne!(sent, bind, "the DELETE could run without approval");
    assert!(text_of(&sent).contains("gatehouse_approval"));
    // Within one batch a refused redefinition skips the Bind too: it is
    // checked against the new text only, which needs nothing.
    let mut wire = Wire::new();
    let bind = prepared_delete(&mut wire);
    let batch = [&redefine[..redefine.len() - 5], &bind[..]].concat();
    assert_eq!(wire.client(&batch), batch);
}

#[test]
fn an_approved_run_behind_a_refused_redefinition_is_recorded_with_its_approval() {
    let mut wire = Wire::new();
    let bind = prepared_delete(&mut wire);
    let params: [Option<&[u8]>; 1] = [Some(b"7")];
    wire.grant(
        GrantKind::SingleUse,
        Some(statement_hash(
            b"DELETE FROM customers WHERE id = $1",
            &params,
        )),
    );
    // The redefinition is refused: the batch behind it is applied again on
    // the DELETE, which runs under the approval its Bind was checked with.
    let pipelined = [redefinition(), bind].concat();
    assert_eq!(wire.client(&pipelined), pipelined);
    let ran = backend(&[
        BackendMessage::BindComplete,
        BackendMessage::CommandComplete { tag: b"DELETE 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    wire.server(&[name_in_use(), ran].concat());
    let record = wire.last_statement();
    assert_eq!(record.command_tag.as_deref(), Some("DELETE 1"));
    assert!(
        record.statement.as_deref().unwrap().starts_with("DELETE"),
        "{record:?}"
    );
    assert_eq!(
        record.approval.as_ref().map(|a| a.id.as_str()),
        Some("apr-granted1")
    );
}

#[test]
fn a_window_grant_passes_every_statement_of_its_rule_until_it_ends() {
    let mut wire = Wire::new();
    let policy = POLICY.replace(
        "\"valid\": \"15m\"",
        "\"valid\": \"15m\", \"grant\": \"window\"",
    );
    let policy = Arc::new(PgPolicy::from_json(policy.as_bytes()).unwrap());
    wire.session
        .set_statement_policy(Box::new(Arc::clone(&policy)));
    wire.session
        .set_approval_gate(ApprovalGate::new(policy, Rc::clone(&wire.book), 9));
    wire.grant(GrantKind::Window, None);
    for sql in [
        "DELETE FROM customers WHERE id = 1",
        "UPDATE customers SET name = 'x' WHERE id = 2",
    ] {
        let message = query(sql);
        assert_eq!(wire.client(&message), message, "{sql}");
    }
    assert!(
        wire.session.take_approval_calls().is_empty(),
        "nothing to use up"
    );
    // Once the window is over, refused again.
    wire.now += 700 * 1_000_000;
    let sent = wire.client(&query("DELETE FROM customers WHERE id = 3"));
    assert!(text_of(&sent).contains("HINT"));
}

#[test]
fn the_reason_is_read_recorded_and_not_forwarded() {
    let mut wire = Wire::new();
    let sent = wire.client(&query(
        "SET gatehouse.reason = 'INC-42: restore a customer'",
    ));
    assert_eq!(sent, query(REASON_REPLACEMENT));
    wire.server(&backend(&[
        BackendMessage::CommandComplete { tag: b"SET" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    let sent = wire.client(&query("DELETE FROM customers WHERE id = 9"));
    let calls = wire.session.take_approval_calls();
    let body: serde_json::Value = serde_json::from_str(calls[0].body()).unwrap();
    assert_eq!(body["request"]["reason"], "INC-42: restore a customer");
    let (_, hint) = hint_in(&sent);
    wire.server(
        &[
            raised(MESSAGE, &hint),
            backend(&[BackendMessage::ReadyForQuery { status: b'I' }]),
        ]
        .concat(),
    );
    let record = wire.last_statement();
    assert_eq!(
        record.access_reason.as_deref(),
        Some("INC-42: restore a customer")
    );
}

/// An approval covers one run; a PREPARE it let through would let every later
/// EXECUTE run the statement unchecked. So the PREPARE is refused by the rule,
/// granted or not, and the session carries on.
#[test]
fn a_prepare_of_a_statement_needing_approval_is_refused_even_when_granted() {
    for window in [false, true] {
        let mut wire = Wire::new();
        let prepare = "PREPARE purge AS DELETE FROM customers WHERE id = 7";
        if window {
            wire.grant(GrantKind::Window, None);
        } else {
            wire.grant(
                GrantKind::SingleUse,
                Some(statement_hash(prepare.as_bytes(), &[])),
            );
        }
        let sent = text_of(&wire.client(&query(prepare)));
        assert!(!sent.contains("PREPARE purge"), "{sent}");
        assert!(sent.contains("cannot be prepared with PREPARE"), "{sent}");
        assert!(
            wire.session.take_approval_calls().is_empty(),
            "nothing filed, nothing used up"
        );
        let message = PREPARE_NEEDS_APPROVAL;
        let answer = wire.server(
            &[
                raised(message, ""),
                backend(&[BackendMessage::ReadyForQuery { status: b'I' }]),
            ]
            .concat(),
        );
        assert!(text_of(&answer).contains(message), "{}", text_of(&answer));
        let record = wire.last_statement();
        assert_eq!(record.decision.action, PolicyAction::Deny);
        assert_eq!(record.decision.rule.as_deref(), Some("customer-writes"));
        // The session stays usable.
        let next = query("SELECT 1");
        assert_eq!(wire.client(&next), next);
    }
}

/// SQL EXECUTE reaches statements prepared with Parse too, and its run is
/// never checked: one that may run a statement needing approval is refused
/// by that statement's rule.
#[test]
fn an_execute_of_a_parsed_statement_needing_approval_is_refused() {
    let mut wire = Wire::new();
    prepared_delete(&mut wire);
    wire.grant(GrantKind::Window, None);
    for sql in [
        "EXECUTE s1(7)",
        "execute S1 (7)",
        "EXPLAIN ANALYZE EXECUTE s1(7)",
        "CREATE TABLE t AS EXECUTE s1(7)",
        "SELECT 1; EXECUTE s1(7)",
    ] {
        let sent = text_of(&wire.client(&query(sql)));
        assert!(!sent.contains(sql), "{sql} ran without its Bind's check");
        assert!(sent.contains("cannot be run with EXECUTE"), "{sent}");
        wire.server(
            &[
                raised("", ""),
                backend(&[BackendMessage::ReadyForQuery { status: b'I' }]),
            ]
            .concat(),
        );
        let record = wire.last_statement();
        assert_eq!(record.decision.action, PolicyAction::Deny, "{sql}");
        assert_eq!(
            record.decision.rule.as_deref(),
            Some("customer-writes"),
            "{sql}"
        );
    }
    assert!(wire.session.take_approval_calls().is_empty());
    // Another name runs.
    let other = query("EXECUTE s2(7)");
    assert_eq!(wire.client(&other), other);
}

/// An EXECUTE in a Parse runs whatever its name holds at each Bind, which
/// may be a statement needing approval prepared later: refused outright.
#[test]
fn an_execute_in_a_parse_is_refused() {
    let mut wire = Wire::new();
    let parse = frontend(&[
        FrontendMessage::Parse {
            name: b"e",
            sql: b"EXECUTE s1(7)",
            param_types: vec![],
        },
        FrontendMessage::Sync,
    ]);
    let sent = text_of(&wire.client(&parse));
    assert!(!sent.contains("EXECUTE s1"), "{sent}");
    assert!(sent.contains("EXECUTE cannot be sent in a Parse"), "{sent}");
    // A Parse without EXECUTE is untouched.
    let plain = frontend(&[
        FrontendMessage::Parse {
            name: b"p",
            sql: b"SELECT 1",
            param_types: vec![],
        },
        FrontendMessage::Sync,
    ]);
    assert_eq!(wire.client(&plain), plain);
}
