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
        self.grant_request("apr-granted1", kind, hash);
    }

    /// Publishes request `id` as approved.
    fn grant_request(&self, id: &str, kind: GrantKind, hash: Option<String>) {
        self.book.borrow_mut().update(GrantsDocument {
            grants: vec![Grant {
                id: id.into(),
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
            ..GrantsDocument::default()
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
    wire.grant_request(
        &id,
        GrantKind::SingleUse,
        Some(statement_hash(sql.as_bytes(), &[])),
    );
    let message = query(sql);
    assert_eq!(wire.client(&message), message);
    let calls = wire.session.take_approval_calls();
    assert!(matches!(calls.as_slice(), [ApprovalCall::Consume { id: used, .. }] if *used == id));
    wire.server(&backend(&[
        BackendMessage::CommandComplete { tag: b"DELETE 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    let record = wire.last_statement();
    let approval = record.approval.as_ref().unwrap();
    assert_eq!(
        (approval.id.as_str(), approval.approvers.as_slice()),
        (id.as_str(), &["dba".to_string()][..])
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

/// Holding (the native build): a rule with a `hold` keeps a simple Query and
/// everything after it until the service answers.
mod holding {
    use super::*;
    use gatehouse_core::approval::{ApprovalRequest, NewRequest, State, Target, Verdict as Review};

    const HOLDING_POLICY: &str = r#"{
      "default": { "action": "allow" },
      "rules": [
        { "name": "customer-writes", "action": "require_approval",
          "message": "writes to customers need a dba's approval",
          "approval": { "approvers": ["dba"], "valid": "15m", "hold": "2s" },
          "match": { "kinds": ["update", "delete"], "writes": ["customers"] } }
      ]
    }"#;

    fn wire() -> Wire {
        let mut wire = Wire::new();
        let policy = Arc::new(PgPolicy::from_json(HOLDING_POLICY.as_bytes()).unwrap());
        wire.session
            .set_statement_policy(Box::new(Arc::clone(&policy)));
        wire.session
            .set_approval_gate(ApprovalGate::new(policy, Rc::clone(&wire.book), 9).holding());
        wire
    }

    /// The one hold call queued, and the request as the service files it.
    fn filed(wire: &mut Wire) -> ApprovalRequest {
        let calls = wire.session.take_approval_calls();
        let [
            ApprovalCall::Hold {
                id,
                path,
                body,
                timeout_ms,
            },
        ] = calls.as_slice()
        else {
            panic!("{calls:?}");
        };
        assert_eq!(path, "/v1/requests?wait_ms=2000");
        assert_eq!(*timeout_ms, 7_000);
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        let new: NewRequest = serde_json::from_value(body["request"].clone()).unwrap();
        let requester: Principal = serde_json::from_value(body["requester"].clone()).unwrap();
        ApprovalRequest::new(id.clone(), new, requester, wire.now / 1_000_000).unwrap()
    }

    fn dba() -> Principal {
        Principal {
            subject: "dana".into(),
            groups: vec!["dba".into()],
        }
    }

    /// The service's answer to the hold, as it would send it.
    fn answer(wire: &mut Wire, request: &ApprovalRequest) -> Vec<u8> {
        let verdict = wire.session.on_hold_answer(
            200,
            serde_json::to_string(request).unwrap().as_bytes(),
            wire.now,
        );
        assert!(!verdict.close_connection);
        wire.records.extend(wire.session.take_records());
        verdict.bytes(&[]).to_vec()
    }

    #[test]
    fn a_held_query_waits_with_what_follows_it_and_runs_once_approved() {
        let mut wire = wire();
        let delete = query("DELETE FROM customers WHERE id = 7");
        let after = query("SELECT 2");
        let sent = wire.client(&[query("SELECT 1"), delete.clone(), after.clone()].concat());
        // What came before the held Query goes on; it and what follows wait.
        assert_eq!(sent, query("SELECT 1"));
        assert!(wire.session.holds_statement());
        let mut request = filed(&mut wire);
        // More from the client is not the session's to read until then.
        wire.server(&backend(&[
            BackendMessage::CommandComplete { tag: b"SELECT 1" },
            BackendMessage::ReadyForQuery { status: b'I' },
        ]));

        request
            .review(&dba(), Review::Approve, None, wire.now / 1_000_000)
            .unwrap();
        request
            .consume(
                "developer",
                &statement_hash(b"DELETE FROM customers WHERE id = 7", &[]),
                wire.now / 1_000_000,
            )
            .unwrap();
        assert_eq!(request.state, State::Used);
        // The held Query unchanged, then what followed it, in order.
        assert_eq!(answer(&mut wire, &request), [delete, after].concat());
        assert!(!wire.session.holds_statement());
        assert!(wire.session.take_approval_calls().is_empty());
        wire.server(&backend(&[
            BackendMessage::CommandComplete { tag: b"DELETE 1" },
            BackendMessage::ReadyForQuery { status: b'I' },
        ]));
        let record = wire
            .records
            .iter()
            .find_map(|r| match r {
                Record::Statement(s) if s.command_tag.as_deref() == Some("DELETE 1") => {
                    Some(s.as_ref())
                }
                _ => None,
            })
            .unwrap();
        let approval = record.approval.as_ref().unwrap();
        assert_eq!(approval.id, request.id);
        assert_eq!(approval.approvers, ["dana".to_string()]);
        // The grant was used for it: a retry asks anew.
        wire.client(&query("DELETE FROM customers WHERE id = 7"));
        assert!(wire.session.holds_statement());
    }

    /// What the service answers (status, body) about the request it filed.
    type ServiceAnswer = dyn Fn(&mut ApprovalRequest) -> (u16, Vec<u8>);

    #[test]
    fn anything_but_an_approval_for_exactly_it_refuses_it_as_at_once() {
        let sql = "DELETE FROM customers WHERE id = 7";
        let outcomes: Vec<(&str, Box<ServiceAnswer>)> = vec![
            (
                "denied",
                Box::new(|r| {
                    r.review(&dba(), Review::Deny, Some("not today".into()), r.created_at)
                        .unwrap();
                    (200, serde_json::to_vec(r).unwrap())
                }),
            ),
            (
                "still pending",
                Box::new(|r| (200, serde_json::to_vec(r).unwrap())),
            ),
            ("no answer", Box::new(|_| (0, Vec::new()))),
            (
                "garbled",
                Box::new(|_| (200, b"{\"state\": \"used\"".to_vec())),
            ),
            (
                "refused",
                Box::new(|_| (409, b"{\"error\": \"used\"}".to_vec())),
            ),
            (
                "another statement's approval",
                Box::new(|r| {
                    r.review(&dba(), Review::Approve, None, r.created_at)
                        .unwrap();
                    let mut other = r.clone();
                    other.target = Target::PostgresStatement {
                        database: "shop".into(),
                        role: "app".into(),
                        statement: "DELETE FROM customers WHERE id = 8".into(),
                        fingerprint: String::new(),
                        statement_hash: statement_hash(b"DELETE FROM customers WHERE id = 8", &[]),
                    };
                    let hash = statement_hash(b"DELETE FROM customers WHERE id = 8", &[]);
                    other.consume("developer", &hash, r.created_at).unwrap();
                    (200, serde_json::to_vec(&other).unwrap())
                }),
            ),
        ];
        for (what, outcome) in outcomes {
            let mut wire = wire();
            let sent = wire.client(&[query(sql), query("SELECT 2")].concat());
            assert!(sent.is_empty(), "{what}");
            let mut request = filed(&mut wire);
            let (status, body) = outcome(&mut request);
            let verdict = wire.session.on_hold_answer(status, &body, wire.now);
            let out = verdict.bytes(&[]).to_vec();
            // The refusal replaces the Query, the next statement follows.
            assert!(!text_of(&out).contains("DELETE FROM"), "{what}");
            assert!(out.ends_with(&query("SELECT 2")), "{what}");
            let refusal = &out[..out.len() - query("SELECT 2").len()];
            let (id, hint) = hint_in(refusal);
            assert_eq!(id, request.id, "{what}");
            if what == "denied" {
                assert_eq!(
                    hint,
                    format!(
                        "approval request {id} was denied by dana: not today; run the same \
                         statement again to ask anew"
                    )
                );
            } else {
                // Exactly the at-once refusal's HINT.
                assert_eq!(
                    hint,
                    format!(
                        "approval request {id} is pending; once approved, run the same \
                         statement again. An approver runs: gatehouse approve {id}"
                    ),
                    "{what}"
                );
            }
            // The session goes on: the refusal and the next statement are answered.
            wire.server(
                &[
                    raised(MESSAGE, &hint),
                    backend(&[
                        BackendMessage::ReadyForQuery { status: b'I' },
                        BackendMessage::CommandComplete { tag: b"SELECT 1" },
                        BackendMessage::ReadyForQuery { status: b'I' },
                    ]),
                ]
                .concat(),
            );
            let refused = wire
                .records
                .iter()
                .find_map(|r| match r {
                    Record::Statement(s) if s.approval.is_none() && s.error.is_some() => {
                        Some(s.as_ref())
                    }
                    _ => None,
                })
                .unwrap();
            assert_eq!(refused.decision.rule.as_deref(), Some("customer-writes"));
            assert_eq!(
                wire.last_statement().command_tag.as_deref(),
                Some("SELECT 1")
            );
        }
    }

    #[test]
    fn a_second_held_query_behind_the_first_is_held_in_its_turn() {
        let mut wire = wire();
        let first = "DELETE FROM customers WHERE id = 7";
        let second = query("DELETE FROM customers WHERE id = 8");
        let third = query("SELECT 3");
        wire.client(&[query(first), second.clone(), third.clone()].concat());
        let request = filed(&mut wire);
        let out = wire
            .session
            .on_hold_answer(0, &[], wire.now)
            .bytes(&[])
            .to_vec();
        // The first is refused; the second is held now, with the third.
        let (id, _) = hint_in(&out);
        assert_eq!(id, request.id);
        assert!(!text_of(&out).contains("id = 8") && !text_of(&out).contains("SELECT 3"));
        assert!(wire.session.holds_statement());
        let next = filed(&mut wire);
        assert_ne!(next.id, request.id);
        assert_eq!(
            next.target.hash(),
            Some(statement_hash(b"DELETE FROM customers WHERE id = 8", &[]).as_str())
        );
    }

    #[test]
    fn a_pending_request_is_awaited_again_and_a_bind_is_never_held() {
        let mut wire = wire();
        let sql = "DELETE FROM customers WHERE id = 7";
        wire.client(&query(sql));
        let request = filed(&mut wire);
        let _ = wire.session.on_hold_answer(0, &[], wire.now);
        wire.server(
            &[
                raised(MESSAGE, "x"),
                backend(&[BackendMessage::ReadyForQuery { status: b'I' }]),
            ]
            .concat(),
        );
        // The retry waits for the same request.
        wire.client(&query(sql));
        let calls = wire.session.take_approval_calls();
        let [ApprovalCall::Hold { path, body, .. }] = calls.as_slice() else {
            panic!("{calls:?}");
        };
        assert_eq!(path, &format!("/v1/requests/{}/await", request.id));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["wait_ms"], 2000);
        assert_eq!(body["hash"], statement_hash(sql.as_bytes(), &[]));
        let _ = wire.session.on_hold_answer(0, &[], wire.now);
        wire.server(
            &[
                raised(MESSAGE, "x"),
                backend(&[BackendMessage::ReadyForQuery { status: b'I' }]),
            ]
            .concat(),
        );
        // The extended protocol: refused at once, as in every build.
        let bind = frontend(&[
            FrontendMessage::Parse {
                name: b"s1",
                sql: b"DELETE FROM customers WHERE id = $1",
                param_types: vec![],
            },
            FrontendMessage::Bind(Bind {
                portal: b"",
                statement: b"s1",
                param_formats: vec![],
                params: vec![Some(b"7")],
                result_formats: vec![],
            }),
        ]);
        let sent = wire.client(&bind);
        assert!(!wire.session.holds_statement());
        assert!(text_of(&sent).contains("gatehouse approve apr-"));
        assert!(matches!(
            wire.session.take_approval_calls().as_slice(),
            [ApprovalCall::File { .. }]
        ));
    }

    #[test]
    fn a_client_leaving_during_a_hold_runs_nothing_and_is_recorded() {
        let mut wire = wire();
        wire.client(&query("DELETE FROM customers WHERE id = 7"));
        let _ = filed(&mut wire);
        wire.session.on_close(CloseReason::Client, wire.now);
        wire.records.extend(wire.session.take_records());
        assert!(!wire.session.holds_statement());
        let record = wire.last_statement();
        assert_eq!(record.decision.rule.as_deref(), Some("customer-writes"));
        assert!(record.approval.is_none() && record.error.is_some());
        // An answer arriving after the close changes nothing.
        let late = wire.session.on_hold_answer(200, b"{}", wire.now);
        assert!(late.bytes(&[]).is_empty());
    }

    #[test]
    fn a_gate_that_cannot_hold_refuses_at_once_as_before() {
        let mut wire = Wire::new();
        let policy = Arc::new(PgPolicy::from_json(HOLDING_POLICY.as_bytes()).unwrap());
        wire.session
            .set_statement_policy(Box::new(Arc::clone(&policy)));
        wire.session
            .set_approval_gate(ApprovalGate::new(policy, Rc::clone(&wire.book), 9));
        let sent = wire.client(&query("DELETE FROM customers WHERE id = 7"));
        assert!(!wire.session.holds_statement());
        assert!(text_of(&sent).contains("is pending; once approved"));
        assert!(matches!(
            wire.session.take_approval_calls().as_slice(),
            [ApprovalCall::File { .. }]
        ));
    }
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
