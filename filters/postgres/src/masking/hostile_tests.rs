//! Masking against a client that tries to get around it, through a real
//! session: results it never described, names it redefined behind the
//! protocol, computed columns, sinks, fast-path calls, records and result
//! limits.

use super::tests::{
    CUSTOMERS_OID, INT4, TEXT, Wire, data_row, encode_backend, encode_frontend, query,
    row_description, with_portal_describes,
};
use super::*;
use crate::EngineConfig;
use crate::protocol::{Bind, FunctionCall};
use gatehouse_core::identity::Identity;

const SSN: &[u8] = b"536-22-1234";
const CARD: &[u8] = b"4111111111111111";
const EMAIL: &[u8] = b"eve@example.net";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn assert_no_clear_values(bytes: &[u8]) {
    for secret in [SSN, CARD, EMAIL] {
        assert!(
            !contains(bytes, secret),
            "{} in {:?}",
            String::from_utf8_lossy(secret),
            String::from_utf8_lossy(bytes)
        );
    }
}

/// A session whose first request (a harmless Query) has been answered.
fn ready_wire() -> Wire {
    let mut wire = Wire::new(None);
    wire.first_request(&query("SELECT 1"));
    wire.server(&encode_backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    wire
}

fn parse(name: &'static [u8], sql: &'static str) -> FrontendMessage<'static> {
    FrontendMessage::Parse {
        name,
        sql: sql.as_bytes(),
        param_types: vec![],
    }
}

fn bind(statement: &'static [u8], formats: Vec<i16>) -> FrontendMessage<'static> {
    FrontendMessage::Bind(Bind {
        portal: b"",
        statement,
        param_formats: vec![],
        params: vec![],
        result_formats: formats,
    })
}

const EXECUTE: FrontendMessage<'static> = FrontendMessage::Execute {
    portal: b"",
    max_rows: 0,
};

/// The server's answer to a batch ending in an Execute of a one-row result:
/// `before` (ParseComplete, BindComplete, …), the masker's own describe's
/// RowDescription, the row, CommandComplete, ReadyForQuery.
fn executed(before: &[BackendMessage<'_>], description: &[u8], row: &[u8]) -> Vec<u8> {
    let mut out = encode_backend(before);
    out.extend(encode_backend(&[BackendMessage::RowDescription {
        body: description,
    }]));
    out.extend_from_slice(row);
    out.extend(encode_backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    out
}

#[test]
fn an_execute_nobody_described_is_described_and_masked_in_binary() {
    for statement in [&b""[..], b"named"] {
        let mut wire = ready_wire();
        let name: &'static [u8] = if statement.is_empty() { b"" } else { b"named" };
        let batch = encode_frontend(&[
            parse(name, "SELECT id, email, card_number, ssn FROM customers"),
            bind(name, vec![1]),
            EXECUTE,
            FrontendMessage::Sync,
        ]);
        assert_eq!(wire.client(&batch), with_portal_describes(&batch));
        let description = row_description(&[
            ("id", CUSTOMERS_OID, 1, INT4, 1),
            ("email", CUSTOMERS_OID, 2, TEXT, 1),
            ("card_number", CUSTOMERS_OID, 3, TEXT, 1),
            ("ssn", CUSTOMERS_OID, 4, TEXT, 1),
        ]);
        let row = data_row(&[
            Some(&7i32.to_be_bytes()),
            Some(EMAIL),
            Some(CARD),
            Some(SSN),
        ]);
        let answer = executed(
            &[BackendMessage::ParseComplete, BackendMessage::BindComplete],
            &description,
            &row,
        );
        let to_client = wire.server(&answer);
        assert_no_clear_values(&to_client);
        // The masker's describe is its own: no RowDescription reaches the client.
        assert!(!decoded(&to_client).contains(&b'T'));
        // The id is untouched: masked right, not everything starred.
        assert!(contains(&to_client, &7i32.to_be_bytes()));
    }
}

#[test]
fn a_client_describe_right_before_its_execute_is_used_as_is() {
    let mut wire = ready_wire();
    let batch = encode_frontend(&[
        parse(b"", "SELECT ssn FROM customers"),
        bind(b"", vec![1]),
        FrontendMessage::Describe {
            kind: b'P',
            name: b"",
        },
        EXECUTE,
        FrontendMessage::Sync,
    ]);
    // Nothing added.
    assert_eq!(wire.client(&batch), batch);
    let description = row_description(&[("ssn", CUSTOMERS_OID, 4, TEXT, 1)]);
    let answer = executed(
        &[BackendMessage::ParseComplete, BackendMessage::BindComplete],
        &description,
        &data_row(&[Some(SSN)]),
    );
    let to_client = wire.server(&answer);
    assert_no_clear_values(&to_client);
    // The client's describe is answered to the client.
    assert!(decoded(&to_client).contains(&b'T'));
}

#[test]
fn a_reparsed_unnamed_statement_after_a_describe_of_another_is_masked() {
    let mut wire = ready_wire();
    let batch = encode_frontend(&[
        parse(b"", "SELECT id FROM customers"),
        FrontendMessage::Describe {
            kind: b'S',
            name: b"",
        },
        parse(b"", "SELECT ssn FROM customers"),
        bind(b"", vec![1]),
        EXECUTE,
        FrontendMessage::Sync,
    ]);
    assert_eq!(wire.client(&batch), with_portal_describes(&batch));
    let first = row_description(&[("id", CUSTOMERS_OID, 1, INT4, 0)]);
    let second = row_description(&[("ssn", CUSTOMERS_OID, 4, TEXT, 1)]);
    let answer = executed(
        &[
            BackendMessage::ParseComplete,
            BackendMessage::ParameterDescription { types: vec![] },
            BackendMessage::RowDescription { body: &first },
            BackendMessage::ParseComplete,
            BackendMessage::BindComplete,
        ],
        &second,
        &data_row(&[Some(SSN)]),
    );
    assert_no_clear_values(&wire.server(&answer));
}

#[test]
fn a_statement_redefined_by_sql_prepare_has_no_trusted_lineage() {
    let mut wire = ready_wire();
    let prepare = encode_frontend(&[
        parse(b"s", "SELECT name FROM customers"),
        FrontendMessage::Sync,
    ]);
    wire.client(&prepare);
    wire.server(&encode_backend(&[
        BackendMessage::ParseComplete,
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    let redefine = query("DEALLOCATE s; PREPARE s AS SELECT upper(ssn) FROM customers");
    assert_eq!(wire.client(&redefine), redefine);
    wire.server(&encode_backend(&[
        BackendMessage::CommandComplete { tag: b"DEALLOCATE" },
        BackendMessage::CommandComplete { tag: b"PREPARE" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    let run = encode_frontend(&[bind(b"s", vec![0]), EXECUTE, FrontendMessage::Sync]);
    wire.client(&run);
    // The server runs PREPARE's statement: a computed column.
    let description = row_description(&[("upper", 0, 0, TEXT, 0)]);
    let answer = executed(
        &[BackendMessage::BindComplete],
        &description,
        &data_row(&[Some(b"A-536-22-1234-X")]),
    );
    let to_client = wire.server(&answer);
    assert_no_clear_values(&to_client);
    assert!(contains(&to_client, b"****"));
    assert!(
        wire.statements()
            .last()
            .unwrap()
            .masking
            .as_ref()
            .unwrap()
            .opaque
            >= 1
    );
}

/// A cursor declared in SQL under the name of a portal the client bound to
/// a harmless statement runs its own text: what masking knew of the portal
/// is forgotten at the Query, so its computed column is masked whole.
#[test]
fn a_portal_redeclared_by_sql_has_no_trusted_lineage() {
    let mut wire = ready_wire();
    wire.client(&query("BEGIN"));
    let in_block = BackendMessage::ReadyForQuery { status: b'T' };
    wire.server(&encode_backend(&[
        BackendMessage::CommandComplete { tag: b"BEGIN" },
        in_block.clone(),
    ]));
    let bind_c = FrontendMessage::Bind(Bind {
        portal: b"c",
        statement: b"s",
        param_formats: vec![],
        params: vec![],
        result_formats: vec![0],
    });
    wire.client(&encode_frontend(&[
        parse(b"s", "SELECT name FROM customers"),
        bind_c,
        FrontendMessage::Sync,
    ]));
    wire.server(&encode_backend(&[
        BackendMessage::ParseComplete,
        BackendMessage::BindComplete,
        in_block.clone(),
    ]));
    let redeclare = query("CLOSE c; DECLARE c CURSOR FOR SELECT md5(ssn) FROM customers");
    assert_eq!(wire.client(&redeclare), redeclare);
    wire.server(&encode_backend(&[
        BackendMessage::CommandComplete {
            tag: b"CLOSE CURSOR",
        },
        BackendMessage::CommandComplete {
            tag: b"DECLARE CURSOR",
        },
        in_block,
    ]));
    wire.client(&encode_frontend(&[
        FrontendMessage::Execute {
            portal: b"c",
            max_rows: 0,
        },
        FrontendMessage::Sync,
    ]));
    // The server runs the cursor's query: a computed column whose values no
    // detector knows.
    let description = row_description(&[("md5", 0, 0, TEXT, 0)]);
    let digest = b"2f1e0c6b9d4a";
    let answer = executed(&[], &description, &data_row(&[Some(digest)]));
    let to_client = wire.server(&answer);
    assert!(!contains(&to_client, digest), "{to_client:?}");
    assert!(contains(&to_client, b"****"));
}

#[test]
fn computed_columns_are_masked_by_their_lineage() {
    let mut wire = ready_wire();
    let sql = "SELECT id, replace(ssn, '-', ''), reverse(card_number), lower(email) FROM customers";
    wire.client(&query(sql));
    let description = row_description(&[
        ("id", CUSTOMERS_OID, 1, INT4, 0),
        ("replace", 0, 0, TEXT, 0),
        ("reverse", 0, 0, TEXT, 0),
        ("lower", 0, 0, TEXT, 0),
    ]);
    let row = data_row(&[
        Some(b"7"),
        Some(b"536221234"),
        Some(b"1111111111111114"),
        Some(b"eve@example.net"),
    ]);
    let mut answer = encode_backend(&[BackendMessage::RowDescription { body: &description }]);
    answer.extend(row);
    answer.extend(encode_backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    let to_client = wire.server(&answer);
    // Whole values redacted (a partial style would show the wrong part).
    let expected = data_row(&[Some(b"7"), Some(b"****"), Some(b"****"), Some(b"****")]);
    assert!(contains(&to_client, &expected), "{to_client:?}");
    let counts = wire.statements().last().unwrap().masking.clone().unwrap();
    assert_eq!(counts.rules["customer-ssn"], 1);
    assert_eq!(counts.rules["customer-card"], 1);
    assert_eq!(counts.rules["customer-email"], 1);
}

#[test]
fn lineage_reads_a_text_under_the_settings_the_server_reported() {
    let mut wire = ready_wire();
    wire.client(&query("SET standard_conforming_strings = off"));
    wire.server(&encode_backend(&[
        BackendMessage::CommandComplete { tag: b"SET" },
        BackendMessage::ParameterStatus {
            name: b"standard_conforming_strings",
            value: b"off",
        },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    // With backslashes escaping, a string and a computed column; read with
    // them not escaping, one string.
    let sql = r"SELECT 'a\' || ', upper(ssn) x FROM customers --'";
    let sent = wire.client(&query(sql));
    assert_eq!(sent, query(sql));
    let description = row_description(&[("?column?", 0, 0, TEXT, 0), ("x", 0, 0, TEXT, 0)]);
    let mut answer = encode_backend(&[BackendMessage::RowDescription { body: &description }]);
    // A value no detector would catch: only lineage masks it.
    answer.extend(data_row(&[Some(b"a' || "), Some(b"UPPERCASED-SSN")]));
    answer.extend(encode_backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    let to_client = wire.server(&answer);
    let expected = data_row(&[Some(b"a' || "), Some(b"****")]);
    assert!(contains(&to_client, &expected), "{to_client:?}");
}

#[test]
fn statements_that_would_carry_masked_values_elsewhere_are_refused() {
    for sql in [
        "SELECT pg_notify('c', ssn) FROM customers",
        "UPDATE customers SET notes = ssn WHERE id = 1",
        "INSERT INTO orders (note) SELECT card_number FROM customers",
        "SELECT set_config('x.y', email, false) FROM customers",
    ] {
        let mut wire = ready_wire();
        let sent = wire.client(&query(sql));
        assert!(!contains(&sent, sql.as_bytes()), "{sql} reached the server");
        assert!(contains(&sent, b"42501"), "{sql}");
        assert!(contains(&sent, b"refused by masking"), "{sql}");
    }
}

#[test]
fn fast_path_results_are_inspected_and_opaque_functions_masked_whole() {
    let call = |oid: u32| {
        encode_frontend(&[FrontendMessage::FunctionCall(FunctionCall {
            oid,
            arg_formats: vec![],
            args: vec![],
            result_format: 0,
        })])
    };
    let answer = |result: &[u8]| {
        encode_backend(&[
            BackendMessage::FunctionCallResponse {
                result: Some(result),
            },
            BackendMessage::ReadyForQuery { status: b'I' },
        ])
    };
    // A built-in: detectors.
    let mut wire = ready_wire();
    wire.client(&call(1_000));
    let to_client = wire.server(&answer(b"ssn 536-22-1234"));
    assert_no_clear_values(&to_client);
    assert!(contains(&to_client, b"ssn "));
    // A function defined in the database: opaque, masked whole.
    let mut wire = ready_wire();
    wire.client(&call(20_000));
    let to_client = wire.server(&answer(b"536221234"));
    assert!(!contains(&to_client, b"536221234"));
}

#[test]
fn records_hold_no_clear_values() {
    let mut wire = ready_wire();
    let notify = query("NOTIFY c, 'card 4111111111111111 for eve@example.net'");
    wire.client(&notify);
    wire.server(&encode_backend(&[
        BackendMessage::CommandComplete { tag: b"NOTIFY" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    // Literals of a statement that names masked columns, whatever their form.
    wire.client(&query("SELECT id FROM customers WHERE ssn = '536221234'"));
    let description = row_description(&[("id", CUSTOMERS_OID, 1, INT4, 0)]);
    let mut answer = encode_backend(&[BackendMessage::RowDescription { body: &description }]);
    answer.extend(encode_backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 0" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    wire.server(&answer);
    // An error quoting a value glued to other text.
    wire.client(&query("SELECT (ssn || 'x')::numeric FROM customers"));
    wire.server(&encode_backend(&[
        BackendMessage::ErrorResponse {
            fields: vec![
                (b'S', b"ERROR"),
                (b'C', b"22P02"),
                (b'M', b"invalid input syntax: \"536-22-1234x\""),
            ],
        },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    let records: Vec<String> = wire
        .statements()
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
    let all = records.join("\n");
    for secret in [
        "4111111111111111",
        "eve@example.net",
        "536221234",
        "536-22-1234",
    ] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
    assert!(all.contains("NOTIFY c"));
}

fn limited_wire(past_limit: &str) -> Wire {
    let json = format!(
        r#"{{"rules": [{{"table": "customers", "column": "ssn", "style": "redact"}}],
            "limits": [{{"match": {{"groups": ["agents"]}}, "max_rows": 2, "past_limit": "{past_limit}"}}]}}"#
    );
    let policy = Arc::new(MaskingPolicy::from_json(json.as_bytes()).unwrap());
    let identity = Identity {
        subject: "agent".into(),
        groups: vec!["agents".into()],
        ..Default::default()
    };
    let mut wire = Wire::with_policy(policy, EngineConfig::default(), Some(identity), false);
    wire.first_request(&query("SELECT id FROM orders"));
    wire
}

fn five_rows() -> Vec<u8> {
    let description = row_description(&[("id", 16_900, 1, INT4, 0)]);
    let mut answer = encode_backend(&[BackendMessage::RowDescription { body: &description }]);
    for i in 0..5u8 {
        answer.extend(data_row(&[Some(&[b'0' + i])]));
    }
    answer.extend(encode_backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 5" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    answer
}

/// The message tags of a byte stream.
fn decoded(bytes: &[u8]) -> Vec<u8> {
    let mut tags = Vec::new();
    let mut rest = bytes;
    while let Some((&tag, tail)) = rest.split_first() {
        let len = u32::from_be_bytes(tail[..4].try_into().unwrap()) as usize;
        tags.push(tag);
        rest = &tail[len..];
    }
    tags
}

/// What the last statement record says the limit did.
fn last_limited(wire: &Wire) -> gatehouse_core::record::LimitedResult {
    let statements = wire.statements();
    let masking = statements.last().unwrap().masking.clone().unwrap();
    masking.limited.unwrap()
}

#[test]
fn a_result_past_its_limit_is_truncated_with_a_notice() {
    let mut wire = limited_wire("truncate");
    let to_client = wire.server(&five_rows());
    assert_eq!(decoded(&to_client), b"TDDNCZ");
    assert!(contains(&to_client, b"SELECT 2\0"));
    let limited = last_limited(&wire);
    assert_eq!(limited.limit, "max_rows");
    assert_eq!(limited.rows_withheld, 3);
    assert_eq!(limited.action, "truncate");
}

#[test]
fn a_result_past_its_limit_ends_with_an_error() {
    let mut wire = limited_wire("error");
    let to_client = wire.server(&five_rows());
    assert_eq!(decoded(&to_client), b"TDDEZ");
    assert!(contains(&to_client, b"54000"));
    let limited = last_limited(&wire);
    assert_eq!(limited.action, "error");
    // The next statement starts afresh.
    wire.client(&query("SELECT id FROM orders"));
    let to_client = wire.server(&five_rows());
    assert_eq!(decoded(&to_client), b"TDDEZ");
}

#[test]
fn identities_without_a_limit_get_every_row() {
    let mut wire = Wire::new(None);
    wire.first_request(&query("SELECT id FROM orders"));
    assert_eq!(decoded(&wire.server(&five_rows())), b"TDDDDDCZ");
}

#[test]
fn errors_of_statements_reading_masked_columns_lose_their_quoted_values() {
    let mut wire = ready_wire();
    wire.client(&query(
        "SELECT (ssn || 'x')::numeric FROM customers WHERE id = 1",
    ));
    let error = |message: &[u8]| {
        encode_backend(&[
            BackendMessage::ErrorResponse {
                fields: vec![(b'S', b"ERROR"), (b'C', b"22P02"), (b'M', message)],
            },
            BackendMessage::ReadyForQuery { status: b'I' },
        ])
    };
    let to_client = wire.server(&error(
        b"invalid input syntax for type numeric: \"536-22-1234x\"",
    ));
    assert!(!contains(&to_client, b"536-22-1234"));
    assert!(contains(&to_client, b"type numeric: \"****\""));
    // A statement reading nothing masked keeps its error as it came.
    wire.client(&query("SELECT 'abc'::numeric"));
    let original = error(b"invalid input syntax for type numeric: \"abc\"");
    assert_eq!(wire.server(&original), original);
}

#[test]
fn quoted_values_and_failing_rows_are_masked_whole() {
    assert_eq!(
        mask_quoted(b"value \"a1\" and \"b\" end", b"**").unwrap(),
        b"value \"**\" and \"**\" end"
    );
    assert_eq!(
        mask_quoted(b"Failing row contains (1, x, 536-22-1234x).", b"**").unwrap(),
        b"Failing row contains (**)."
    );
    assert_eq!(mask_quoted(b"open \"quote", b"**").unwrap(), b"open \"**");
    assert_eq!(mask_quoted(b"nothing quoted", b"**"), None);
}

#[test]
fn a_statement_past_the_name_tracking_cap_is_still_described_and_masked() {
    let mut wire = ready_wire();
    let tracked = EngineConfig::default().max_prepared_statements;
    let names: Vec<String> = (0..=tracked).map(|i| format!("s{i}")).collect();
    let mut batch = Vec::new();
    for name in &names {
        FrontendMessage::Parse {
            name: name.as_bytes(),
            sql: b"SELECT 1",
            param_types: vec![],
        }
        .encode(&mut batch);
    }
    FrontendMessage::Sync.encode(&mut batch);
    wire.client(&batch);
    let mut answers = Vec::new();
    for _ in &names {
        BackendMessage::ParseComplete.encode(&mut answers);
    }
    BackendMessage::ReadyForQuery { status: b'I' }.encode(&mut answers);
    wire.server(&answers);
    // Past the cap: the statement's lineage is not kept.
    let run = encode_frontend(&[
        parse(b"over", "SELECT upper(ssn), ssn FROM customers"),
        bind(b"over", vec![1]),
        EXECUTE,
        FrontendMessage::Sync,
    ]);
    assert_eq!(wire.client(&run), with_portal_describes(&run));
    let description =
        row_description(&[("upper", 0, 0, TEXT, 1), ("ssn", CUSTOMERS_OID, 4, TEXT, 1)]);
    let answer = executed(
        &[BackendMessage::ParseComplete, BackendMessage::BindComplete],
        &description,
        &data_row(&[Some(b"536-22-1234"), Some(SSN)]),
    );
    let to_client = wire.server(&answer);
    assert_no_clear_values(&to_client);
    assert!(contains(
        &to_client,
        &data_row(&[Some(b"****"), Some(b"****")])
    ));
}
