//! COPY TO STDOUT rows through a real session: the describe sent ahead of the
//! COPY, its answers consumed, and the rows masked by column rule.

use super::super::tests::{
    CUSTOMERS_OID, INT4, TEXT, Wire, customers_description, demo_policy, encode_backend,
    encode_frontend, query, row_description, select_answer, with_portal_describes,
};
use super::*;
use crate::masking::{ColumnPlan, MaskingPolicy, StreamRewrite};
use crate::protocol::{BackendMessage, Bind, CopyResponse, FrontendMessage};
use gatehouse_core::mask::Masked;
use std::sync::Arc;

/// A session past its first request (so the catalog lookup is done).
fn wire(identity: Option<gatehouse_core::identity::Identity>) -> Wire {
    wire_fed(identity, false)
}

/// [`wire`], its bytes fed one at a time when `byte_by_byte`.
fn wire_fed(identity: Option<gatehouse_core::identity::Identity>, byte_by_byte: bool) -> Wire {
    let mut wire = Wire::with(crate::EngineConfig::default(), identity, byte_by_byte);
    wire.first_request(&query("SELECT 1"));
    let one = row_description(&[("?column?", 0, 0, INT4, 0)]);
    wire.server(&select_answer(&one, &[], b"SELECT 0"));
    wire
}

/// The server's answers to the describe: consumed, none reaches the client.
fn describe_answer(description: &[u8], status: u8) -> Vec<u8> {
    encode_backend(&[
        BackendMessage::ParseComplete,
        BackendMessage::ParameterDescription { types: Vec::new() },
        BackendMessage::RowDescription { body: description },
        BackendMessage::ReadyForQuery { status },
    ])
}

/// A COPY's answer: CopyOutResponse, one CopyData per entry, the end.
fn copy_answer(format: u8, columns: usize, rows: &[&[u8]]) -> Vec<u8> {
    let mut msgs = vec![BackendMessage::CopyOutResponse(CopyResponse {
        format,
        column_formats: vec![i16::from(format); columns],
    })];
    msgs.extend(rows.iter().map(|data| BackendMessage::CopyData { data }));
    msgs.extend([
        BackendMessage::CopyDone,
        BackendMessage::CommandComplete { tag: b"COPY 2" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    encode_backend(&msgs)
}

/// Sends a COPY Query, checks the describe of `describe_sql` goes ahead of it
/// and answers it with `description`.
fn copy_with_describe(wire: &mut Wire, sql: &str, describe_sql: &str, description: &[u8]) {
    let request = query(sql);
    let to_server = wire.client(&request);
    assert_eq!(
        to_server,
        [describe_messages(describe_sql), request].concat(),
        "describe sent ahead of the COPY"
    );
    assert_eq!(wire.server(&describe_answer(description, b'I')), b"");
}

#[test]
fn text_copy_of_a_table_masks_rule_columns_and_keeps_escapes_and_nulls() {
    for byte_by_byte in [false, true] {
        text_copy_of_a_table(byte_by_byte);
    }
}

fn text_copy_of_a_table(byte_by_byte: bool) {
    let mut wire = wire_fed(None, byte_by_byte);
    copy_with_describe(
        &mut wire,
        "copy customers to stdout",
        "SELECT * FROM \"customers\"",
        &customers_description(0),
    );
    let rows: [&[u8]; 2] = [
        b"1\talice@example.com\t4111 1111 1111 1111\t536\\t22\\\\1234\ttab\\there bob@example.org\n",
        b"2\t\\N\t\\N\t\\N\t\\N\n",
    ];
    let to_client = wire.server(&copy_answer(0, 5, &rows));
    let expected: [&[u8]; 2] = [
        b"1\ta***@example.com\t**** **** **** 1111\t****\ttab\\there ****\n",
        b"2\t\\N\t\\N\t\\N\t\\N\n",
    ];
    assert_eq!(to_client, copy_answer(0, 5, &expected));
    let masking = wire.statements().last().unwrap().masking.clone().unwrap();
    assert_eq!(masking.rules["customer-email"], 1);
    assert_eq!(masking.rules["customer-card"], 1);
    assert_eq!(masking.rules["customer-ssn"], 1);
    assert_eq!(masking.detectors["email"], 1);
    assert_eq!(masking.over_cap, 0);
}

#[test]
fn csv_copy_of_a_query_masks_aliased_rule_columns_and_passes_the_header() {
    let mut wire = wire(None);
    let description = row_description(&[
        ("x", CUSTOMERS_OID, 4, TEXT, 0),
        ("note", CUSTOMERS_OID, 5, TEXT, 0),
        ("n", 0, 0, INT4, 0),
    ]);
    copy_with_describe(
        &mut wire,
        "COPY (SELECT ssn AS x, note, 1 AS n FROM customers) TO STDOUT WITH (FORMAT csv, HEADER)",
        "SELECT ssn AS x, note, 1 AS n FROM customers",
        &description,
    );
    let rows: [&[u8]; 4] = [
        b"x,note,n\n",
        b"536-22-1234,\"a, \"\"quoted\"\" note\",1\n",
        b"\"536,22\n1234\",,1\n",
        b",\"\",1\n",
    ];
    let to_client = wire.server(&copy_answer(0, 3, &rows));
    let expected: [&[u8]; 4] = [
        b"x,note,n\n",
        b"\"****\",\"a, \"\"quoted\"\" note\",1\n",
        b"\"****\",,1\n",
        b",\"\",1\n",
    ];
    assert_eq!(to_client, copy_answer(0, 3, &expected));
    let masking = wire.statements().last().unwrap().masking.clone().unwrap();
    assert_eq!(masking.rules["customer-ssn"], 2);
}

#[test]
fn csv_options_decide_how_fields_are_split_and_quoted() {
    let mut wire = wire(None);
    let description = row_description(&[
        ("ssn", CUSTOMERS_OID, 4, TEXT, 0),
        ("note", CUSTOMERS_OID, 5, TEXT, 0),
    ]);
    copy_with_describe(
        &mut wire,
        "COPY customers (SSN, \"note\") TO STDOUT WITH DELIMITER ';' NULL 'nil' CSV QUOTE ''''",
        "SELECT \"ssn\", \"note\" FROM \"customers\"",
        &description,
    );
    let rows: [&[u8]; 2] = [b"'it''s;1234';a\n", b"nil;''\n"];
    let to_client = wire.server(&copy_answer(0, 2, &rows));
    let expected: [&[u8]; 2] = [b"'****';a\n", b"nil;''\n"];
    assert_eq!(to_client, copy_answer(0, 2, &expected));
}

/// A binary tuple of `values` (None = NULL).
fn tuple(values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut out = (values.len() as i16).to_be_bytes().to_vec();
    for value in values {
        match value {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

fn binary_header() -> Vec<u8> {
    let mut out = BINARY_SIGNATURE.to_vec();
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out
}

#[test]
fn binary_copy_masks_rule_columns_and_recomputes_lengths() {
    let mut wire = wire(None);
    let description = row_description(&[
        ("id", CUSTOMERS_OID, 1, INT4, 0),
        ("ssn", CUSTOMERS_OID, 4, TEXT, 0),
        ("email", CUSTOMERS_OID, 2, TEXT, 0),
    ]);
    copy_with_describe(
        &mut wire,
        "COPY public.customers (id, ssn, email) TO STDOUT (FORMAT binary)",
        "SELECT \"id\", \"ssn\", \"email\" FROM \"public\".\"customers\"",
        &description,
    );
    let one = 1i32.to_be_bytes();
    let two = 2i32.to_be_bytes();
    let first = [
        binary_header(),
        tuple(&[Some(&one), Some(b"536-22-1234"), Some(b"alice@example.com")]),
    ]
    .concat();
    let second = tuple(&[Some(&two), None, None]);
    let trailer = (-1i16).to_be_bytes();
    let to_client = wire.server(&copy_answer(1, 3, &[&first, &second, &trailer]));
    let masked_first = [
        binary_header(),
        tuple(&[Some(&one), Some(b"****"), Some(b"a***@example.com")]),
    ]
    .concat();
    assert_eq!(
        to_client,
        copy_answer(1, 3, &[&masked_first, &second, &trailer])
    );
    let masking = wire.statements().last().unwrap().masking.clone().unwrap();
    assert_eq!(masking.rules["customer-ssn"], 1);
    assert_eq!(masking.rules["customer-email"], 1);
}

#[test]
fn without_a_description_every_value_becomes_null() {
    let mut wire = wire(None);
    // Not the Query's first statement: no describe, the columns are unknown.
    let request = query("SELECT 1; COPY customers TO STDOUT");
    assert_eq!(wire.client(&request), request);
    let one = row_description(&[("?column?", 0, 0, INT4, 0)]);
    let mut answer = encode_backend(&[
        BackendMessage::RowDescription { body: &one },
        BackendMessage::CommandComplete { tag: b"SELECT 0" },
    ]);
    answer.extend(copy_answer(0, 2, &[b"1\tfull name\n"]));
    let to_client = wire.server(&answer);
    let mut expected = encode_backend(&[
        BackendMessage::RowDescription { body: &one },
        BackendMessage::CommandComplete { tag: b"SELECT 0" },
    ]);
    expected.extend(copy_answer(0, 2, &[b"\\N\t\\N\n"]));
    assert_eq!(to_client, expected);
    let masking = wire.statements().last().unwrap().masking.clone().unwrap();
    assert_eq!(masking.over_cap, 2);

    // Binary rows describe themselves: NULLs too.
    let request = query("SELECT 1; COPY customers TO STDOUT (FORMAT binary)");
    assert_eq!(wire.client(&request), request);
    let first = [binary_header(), tuple(&[Some(b"Ann")])].concat();
    let nulled = [binary_header(), tuple(&[None])].concat();
    let trailer = (-1i16).to_be_bytes();
    let to_client = wire.server(&copy_answer(1, 1, &[&first, &trailer]));
    assert_eq!(to_client, copy_answer(1, 1, &[&nulled, &trailer]));
}

#[test]
fn a_description_that_does_not_match_the_copy_is_not_used() {
    let mut wire = wire(None);
    // `*` selects a generated column the COPY leaves out: 5 fields, 4 copied.
    copy_with_describe(
        &mut wire,
        "COPY customers TO STDOUT",
        "SELECT * FROM \"customers\"",
        &customers_description(0),
    );
    let to_client = wire.server(&copy_answer(0, 4, &[b"1\tx\ty\tz\n"]));
    assert_eq!(to_client, copy_answer(0, 4, &[b"\\N\t\\N\t\\N\t\\N\n"]));
}

#[test]
fn a_failed_describe_in_a_transaction_block_gives_the_copy_its_own_error() {
    let mut wire = wire(None);
    let begin = query("BEGIN");
    assert_eq!(wire.client(&begin), begin);
    let began = encode_backend(&[
        BackendMessage::CommandComplete { tag: b"BEGIN" },
        BackendMessage::ReadyForQuery { status: b'T' },
    ]);
    assert_eq!(wire.server(&began), began);
    let request = query("COPY nosuch TO STDOUT");
    let to_server = wire.client(&request);
    assert!(to_server.starts_with(&describe_messages("SELECT * FROM \"nosuch\"")));
    let missing: Vec<(u8, &[u8])> = vec![
        (b'S', b"ERROR"),
        (b'C', b"42P01"),
        (b'M', b"relation \"nosuch\" does not exist"),
        (b'P', b"15"),
    ];
    let describe_failed = encode_backend(&[
        BackendMessage::ErrorResponse {
            fields: missing.clone(),
        },
        BackendMessage::ReadyForQuery { status: b'E' },
    ]);
    assert_eq!(wire.server(&describe_failed), b"");
    let aborted = encode_backend(&[
        BackendMessage::ErrorResponse {
            fields: vec![
                (b'S', b"ERROR"),
                (b'C', b"25P02"),
                (b'M', b"current transaction is aborted"),
            ],
        },
        BackendMessage::ReadyForQuery { status: b'E' },
    ]);
    let expected = encode_backend(&[
        BackendMessage::ErrorResponse {
            fields: missing[..3].to_vec(),
        },
        BackendMessage::ReadyForQuery { status: b'E' },
    ]);
    assert_eq!(wire.server(&aborted), expected);
    // In the failed transaction no describe is sent.
    let again = query("COPY customers TO STDOUT");
    assert_eq!(wire.client(&again), again);
}

#[test]
fn an_exempt_identity_gets_clear_rows_and_the_counts() {
    let identity = gatehouse_core::identity::Identity {
        subject: "dora".into(),
        groups: vec!["dba".into()],
        ..Default::default()
    };
    let mut wire = wire(Some(identity));
    copy_with_describe(
        &mut wire,
        "COPY customers TO STDOUT",
        "SELECT * FROM \"customers\"",
        &customers_description(0),
    );
    let rows: [&[u8]; 1] = [b"1\talice@example.com\t4111 1111 1111 1111\t536-22-1234\tx\n"];
    let answer = copy_answer(0, 5, &rows);
    assert_eq!(wire.server(&answer), answer);
    let masking = wire.statements().last().unwrap().masking.clone().unwrap();
    assert!(masking.exempt);
    assert_eq!(masking.rules.len(), 3);
}

#[test]
fn copy_statements_are_read_with_their_options() {
    let read = |sql: &str| copy_statements(sql.as_bytes(), Default::default());
    let copies = read("COPY Shop.\"Customers\" (Name, \"SSN\") TO STDOUT WITH CSV HEADER");
    assert_eq!(copies.len(), 1);
    assert_eq!(
        copies[0].describe_sql.as_deref(),
        Some("SELECT \"name\", \"SSN\" FROM \"shop\".\"Customers\"")
    );
    let options = copies[0].options.clone().unwrap();
    assert_eq!(options.format, CopyFormat::Csv);
    assert!(options.header);
    assert_eq!(
        (options.delimiter, options.quote, options.escape),
        (b',', b'"', b'"')
    );
    assert_eq!(options.null, b"");

    let copies = read(
        "copy (select 1 from t where a = ')') to stdout (format text, null 'NULL', delimiter '|')",
    );
    assert_eq!(
        copies[0].describe_sql.as_deref(),
        Some("select 1 from t where a = ')'")
    );
    let options = copies[0].options.clone().unwrap();
    assert_eq!(
        (options.format, options.delimiter),
        (CopyFormat::Text, b'|')
    );
    assert_eq!(options.null, b"NULL");
    assert_eq!(
        read("COPY t TO STDOUT BINARY")[0]
            .options
            .clone()
            .unwrap()
            .format,
        CopyFormat::Binary
    );
    assert_eq!(
        read("copy t to stdout (format csv, escape '\\')")[0]
            .options
            .clone()
            .unwrap()
            .escape,
        b'\\'
    );
    // The old `COPY BINARY t` form: a COPY to the client, not described.
    let copies = read("COPY BINARY customers TO STDOUT");
    assert_eq!(copies.len(), 1);
    assert!(copies[0].describe_sql.is_none() && copies[0].options.is_none());
    // No rows for the client.
    assert!(read("COPY t FROM STDIN").is_empty());
    assert!(read("COPY t TO '/tmp/x'").is_empty());
    assert!(read("SELECT 'copy'").is_empty());
    // Only the first statement is described.
    let copies = read("COPY a TO STDOUT; COPY b TO STDOUT");
    assert_eq!(copies.len(), 2);
    assert!(copies[0].describe_sql.is_some() && copies[1].describe_sql.is_none());
    // The old syntax in any order, as the server takes it.
    let options =
        read("copy t to stdout with csv header delimiter as E'\\t' null 'x' force quote *")[0]
            .options
            .clone()
            .unwrap();
    assert_eq!(options.format, CopyFormat::Csv);
    assert!(options.header);
    assert_eq!(
        (options.delimiter, options.null.as_slice()),
        (b'\t', &b"x"[..])
    );
    assert_eq!(
        read("COPY t TO STDOUT DELIMITER ';' CSV QUOTE '''' HEADER")[0]
            .options
            .clone()
            .unwrap()
            .quote,
        b'\''
    );
    // Options sqlparser does not know: the rows are treated as unknown.
    assert!(
        read("COPY t TO STDOUT WITH CSV HEADER DELIMITER 'ab'")[0]
            .options
            .is_none()
    );
    assert!(read("COPY t TO STDOUT (FORMAT fancy)")[0].options.is_none());
}

#[test]
fn text_escapes_round_trip() {
    let raw = b"a\\tb\\\\c\\nd\\101\\x41\\.\\|";
    let value = unescape_text(raw);
    assert_eq!(value.as_ref(), b"a\tb\\c\nd\x41\x41.|");
    let mut out = Vec::new();
    escape_text(b"a\tb\\c\nd|e\r", b'|', &mut out);
    assert_eq!(out, b"a\\tb\\\\c\\nd\\|e\\r");
    assert_eq!(unescape_text(&out).as_ref(), b"a\tb\\c\nd|e\r");
}

#[test]
fn unparseable_rows_are_starred_whole() {
    let mut rows = start_rows(
        true,
        &CopyResponse {
            format: 0,
            column_formats: vec![0],
        },
        Some(&CopyStatement {
            options: Some(CopyOptions::defaults(CopyFormat::Csv)),
            ..CopyStatement::default()
        }),
        None,
    );
    let mut counts = CopyCounts::default();
    let policy = demo_policy();
    // An unterminated quoted field.
    let masked = rows.mask(&policy, b"\"open,1\n", &mut counts);
    assert_eq!(masked.unwrap(), b"********");
    // Text rows whose options are unknown keep only their shape.
    let mut rows = start_rows(
        true,
        &CopyResponse {
            format: 0,
            column_formats: vec![0, 0],
        },
        None,
        None,
    );
    let masked = rows.mask(&policy, b"Ann\\tB\tx\n", &mut counts);
    assert_eq!(masked.unwrap(), b"***\\t*\t*\n");
}

#[test]
fn streamed_copy_rows_under_rules_are_starred_even_when_over_cap_is_allowed() {
    let mut json: serde_json::Value = serde_json::from_str(include_str!(
        "../../../../../examples/postgres-masking.json"
    ))
    .unwrap();
    json["masker"]["over_cap"] = "allow".into();
    let policy = Arc::new(MaskingPolicy::from_json(json.to_string().as_bytes()).unwrap());
    let row = b"Ann Smith\t42\n";
    let mut out = Vec::new();
    StreamRewrite::copy_data(Arc::clone(&policy), true, row.len()).feed(row, &mut out);
    assert_eq!(out, b"*********\t**\n");
    let mut out = Vec::new();
    StreamRewrite::copy_data(policy, false, row.len()).feed(row, &mut out);
    assert_eq!(out, row);
}

#[test]
fn a_header_sharing_its_message_with_rows_passes_alone() {
    let ssn = ColumnPlan {
        rule: Some(2),
        ..ColumnPlan::scanned(25, false)
    };
    let policy = demo_policy();
    for (format, data, expected, later) in [
        (
            CopyFormat::Csv,
            &b"\"a,\nb\"\n536-22-1234\n"[..],
            &b"\"a,\nb\"\n\"****\"\n"[..],
            &b"\"****\"\n"[..],
        ),
        (
            CopyFormat::Text,
            b"ssn\n536-22-1234\n",
            b"ssn\n****\n",
            b"****\n",
        ),
    ] {
        let mut options = CopyOptions::defaults(format);
        options.header = true;
        let mut rows = start_rows(
            true,
            &CopyResponse {
                format: 0,
                column_formats: vec![0],
            },
            Some(&CopyStatement {
                options: Some(options),
                ..CopyStatement::default()
            }),
            Some(vec![ssn]),
        );
        let mut counts = CopyCounts::default();
        assert_eq!(rows.mask(&policy, data, &mut counts).unwrap(), expected);
        assert_eq!(counts.rules[2], 1);
        // Later messages hold no header.
        assert_eq!(
            rows.mask(
                &policy,
                b"ssn
",
                &mut counts
            )
            .unwrap(),
            later
        );
    }
}

#[test]
fn without_column_rules_rows_go_through_the_detectors_only() {
    let response = CopyResponse {
        format: 0,
        column_formats: vec![0, 0],
    };
    let statement = CopyStatement {
        options: Some(CopyOptions::defaults(CopyFormat::Text)),
        ..CopyStatement::default()
    };
    let mut rows = start_rows(false, &response, Some(&statement), None);
    let mut counts = CopyCounts::default();
    let policy = demo_policy();
    let masked = rows.mask(&policy, b"alice@example.com\t536-22-1234\n", &mut counts);
    assert_eq!(masked.unwrap(), b"****\t****\n");
    assert_eq!(rows.mask(&policy, b"\\N\tAnn\n", &mut counts), None);
    assert!(counts.rules.is_empty());
    assert_eq!(counts.detectors.over_cap, 0);
}

/// The server's answers to the extended-protocol describe.
fn named_describe_answer(description: &[u8]) -> Vec<u8> {
    encode_backend(&[
        BackendMessage::ParseComplete,
        BackendMessage::ParameterDescription { types: Vec::new() },
        BackendMessage::RowDescription { body: description },
        BackendMessage::CloseComplete,
        BackendMessage::ReadyForQuery { status: b'I' },
    ])
}

#[test]
fn a_prepared_copy_is_described_at_its_parse_and_at_each_bind() {
    let mut wire = wire(None);
    let copy_sql = b"COPY customers (id, ssn) TO STDOUT (FORMAT binary)";
    let describe_sql = "SELECT \"id\", \"ssn\" FROM \"customers\"";
    let description = row_description(&[
        ("id", CUSTOMERS_OID, 1, INT4, 0),
        ("ssn", CUSTOMERS_OID, 4, TEXT, 0),
    ]);
    // Prepared in a batch of its own.
    let prepare = encode_frontend(&[
        FrontendMessage::Parse {
            name: b"s0",
            sql: copy_sql,
            param_types: vec![],
        },
        FrontendMessage::Describe {
            kind: b'S',
            name: b"s0",
        },
        FrontendMessage::Sync,
    ]);
    assert_eq!(
        wire.client(&prepare),
        [named_describe_messages(describe_sql), prepare].concat()
    );
    assert_eq!(wire.server(&named_describe_answer(&description)), b"");
    let prepared = encode_backend(&[
        BackendMessage::ParseComplete,
        BackendMessage::ParameterDescription { types: vec![] },
        BackendMessage::NoData,
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    assert_eq!(wire.server(&prepared), prepared);

    // Executed in the next: described again ahead of the Bind.
    let execute = encode_frontend(&[
        FrontendMessage::Bind(Bind {
            portal: b"",
            statement: b"s0",
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
    assert_eq!(
        wire.client(&execute),
        [
            named_describe_messages(describe_sql),
            with_portal_describes(&execute)
        ]
        .concat()
    );
    assert_eq!(wire.server(&named_describe_answer(&description)), b"");
    let one = 1i32.to_be_bytes();
    let first = [binary_header(), tuple(&[Some(&one), Some(b"536-22-1234")])].concat();
    let trailer = (-1i16).to_be_bytes();
    // The portal's own describe (a COPY: NoData) is the masker's.
    let answer = |first: &[u8], described: bool| {
        let mut out = encode_backend(&[BackendMessage::BindComplete]);
        if described {
            out.extend(encode_backend(&[BackendMessage::NoData]));
        }
        out.extend(copy_answer(1, 2, &[first, &trailer]));
        out
    };
    let masked = [binary_header(), tuple(&[Some(&one), Some(b"****")])].concat();
    assert_eq!(wire.server(&answer(&first, true)), answer(&masked, false));
    let masking = wire.statements().last().unwrap().masking.clone().unwrap();
    assert_eq!(masking.rules["customer-ssn"], 1);
}

#[test]
fn no_describe_is_sent_inside_a_batch() {
    let mut wire = wire(None);
    // A Parse of a COPY after another message of its batch.
    let batch = encode_frontend(&[
        FrontendMessage::Parse {
            name: b"other",
            sql: b"SELECT 1",
            param_types: vec![],
        },
        FrontendMessage::Parse {
            name: b"",
            sql: b"COPY customers TO STDOUT",
            param_types: vec![],
        },
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
    assert_eq!(wire.client(&batch), with_portal_describes(&batch));
    // Its rows: the columns are unknown, so NULL.
    let answer = |row: &[u8], described: bool| {
        let mut out = encode_backend(&[
            BackendMessage::ParseComplete,
            BackendMessage::ParseComplete,
            BackendMessage::BindComplete,
        ]);
        if described {
            out.extend(encode_backend(&[BackendMessage::NoData]));
        }
        out.extend(copy_answer(0, 2, &[row]));
        out
    };
    assert_eq!(
        wire.server(&answer(b"Ann\tx\n", true)),
        answer(b"\\N\t\\N\n", false)
    );
}

#[test]
fn a_copy_prepared_in_a_transaction_block_is_described_at_its_bind_only() {
    let mut wire = wire(None);
    let begin = query("BEGIN");
    assert_eq!(wire.client(&begin), begin);
    let began = encode_backend(&[
        BackendMessage::CommandComplete { tag: b"BEGIN" },
        BackendMessage::ReadyForQuery { status: b'T' },
    ]);
    assert_eq!(wire.server(&began), began);
    let prepare = encode_frontend(&[
        FrontendMessage::Parse {
            name: b"s1",
            sql: b"COPY customers (ssn) TO STDOUT",
            param_types: vec![],
        },
        FrontendMessage::Sync,
    ]);
    assert_eq!(wire.client(&prepare), prepare);
    let prepared = encode_backend(&[
        BackendMessage::ParseComplete,
        BackendMessage::ReadyForQuery { status: b'T' },
    ]);
    assert_eq!(wire.server(&prepared), prepared);
    let execute = encode_frontend(&[
        FrontendMessage::Bind(Bind {
            portal: b"",
            statement: b"s1",
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
    assert_eq!(
        wire.client(&execute),
        [
            named_describe_messages("SELECT \"ssn\" FROM \"customers\""),
            with_portal_describes(&execute)
        ]
        .concat()
    );
}

#[test]
fn copy_statements_are_found_as_the_server_lexes_the_text() {
    // With backslashes escaping, a string and then a COPY; without, one string.
    let sql = br"select 'a\' || '; copy customers to stdout --'";
    let off = crate::sql::Settings {
        standard_conforming_strings: false,
    };
    assert_eq!(copy_statements(sql, off).len(), 1);
    assert_eq!(copy_statements(sql, Default::default()).len(), 0);
}

/// Bounded, seeded fuzzing of the COPY row codecs (fixed seed and case count).
mod fuzz {
    use super::*;
    use crate::masking::values::ColumnPlan;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    fn config(cases: u32) -> Config {
        Config {
            cases,
            rng_seed: RngSeed::Fixed(0x636f_7079),
            failure_persistence: None,
            ..Config::default()
        }
    }

    /// The demo policy's `customer-ssn` rule: redacts the whole value.
    const SSN_RULE: usize = 2;

    /// Rows of three columns: the middle one under the SSN rule.
    fn rows_under_rules(format: CopyFormat) -> CopyRows {
        let binary = format == CopyFormat::Binary;
        let column = |rule| ColumnPlan {
            rule,
            ..ColumnPlan::scanned(crate::masking::tests::TEXT, binary)
        };
        start_rows(
            true,
            &CopyResponse {
                format: u8::from(binary),
                column_formats: vec![i16::from(binary); 3],
            },
            Some(&CopyStatement {
                options: Some(CopyOptions::defaults(format)),
                ..CopyStatement::default()
            }),
            Some(vec![column(None), column(Some(SSN_RULE)), column(None)]),
        )
    }

    type Row = [Option<Vec<u8>>; 3];

    fn value() -> impl Strategy<Value = Option<Vec<u8>>> {
        let bytes = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..24),
            prop::collection::vec(prop::sample::select(b"\\\t\n\r,\"Na1.".to_vec()), 0..24),
        ];
        prop::option::weighted(0.8, bytes)
    }

    fn rows() -> impl Strategy<Value = Vec<Row>> {
        prop::collection::vec([value(), value(), value()], 0..6)
    }

    /// The rows as one CopyData in `format` (binary: with its header).
    fn encode(format: CopyFormat, rows: &[Row]) -> Vec<u8> {
        let options = CopyOptions::defaults(format);
        let mut out = Vec::new();
        if format == CopyFormat::Binary {
            out = binary_header();
        }
        for row in rows {
            if format == CopyFormat::Binary {
                out.extend(tuple(&row.each_ref().map(Option::as_deref)));
                continue;
            }
            for (i, value) in row.iter().enumerate() {
                if i > 0 {
                    out.push(options.delimiter);
                }
                match (value, format) {
                    (None, _) => out.extend_from_slice(&options.null),
                    (Some(v), CopyFormat::Csv) => quote_csv(v, &options, &mut out),
                    (Some(v), _) => escape_text(v, options.delimiter, &mut out),
                }
            }
            out.push(b'\n');
        }
        out
    }

    /// The rows of `data` as the server would read them (`None` for NULL).
    fn decode(format: CopyFormat, data: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
        let options = CopyOptions::defaults(format);
        let mut out = Vec::new();
        match format {
            CopyFormat::Binary => {
                let mut at = BINARY_SIGNATURE.len() + 8;
                while at < data.len() {
                    assert_eq!(&data[at..at + 2], &3i16.to_be_bytes());
                    at += 2;
                    let mut values = Vec::new();
                    for _ in 0..3 {
                        let len = i32::from_be_bytes(data[at..at + 4].try_into().unwrap());
                        at += 4;
                        values.push(usize::try_from(len).ok().map(|len| {
                            at += len;
                            data[at - len..at].to_vec()
                        }));
                    }
                    out.push(values);
                }
            }
            CopyFormat::Csv => {
                let mut at = 0;
                while at < data.len() {
                    let (fields, end) = split_csv_row(&options, data, at).unwrap();
                    out.push(
                        fields
                            .iter()
                            .map(|field| {
                                (field.quoted || field.raw != options.null.as_slice())
                                    .then(|| field.value.to_vec())
                            })
                            .collect(),
                    );
                    at = end + 1;
                }
            }
            _ => {
                for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    let mut fields = Vec::new();
                    let (mut start, mut i) = (0, 0);
                    while i < line.len() {
                        match line[i] {
                            b'\\' => i += 2,
                            b'\t' => {
                                fields.push(&line[start..i]);
                                i += 1;
                                start = i;
                            }
                            _ => i += 1,
                        }
                    }
                    fields.push(&line[start..]);
                    out.push(
                        fields
                            .iter()
                            .map(|field| {
                                (*field != options.null.as_slice())
                                    .then(|| unescape_text(field).into_owned())
                            })
                            .collect(),
                    );
                }
            }
        }
        out
    }

    fn format() -> impl Strategy<Value = CopyFormat> {
        prop::sample::select(vec![CopyFormat::Text, CopyFormat::Csv, CopyFormat::Binary])
    }

    proptest! {
        #![proptest_config(config(512))]

        /// Well-formed rows of any values, in each format: the masked message
        /// still has every row and column, the rule's column is `****` where
        /// it held a value and NULL where it was NULL, and the other columns
        /// are as the detectors leave them.
        #[test]
        fn fuzz_copy_rows_keep_their_shape_and_lose_the_rule_column(
            format in format(),
            rows in rows(),
        ) {
            let data = encode(format, &rows);
            let policy = demo_policy();
            let masked = rows_under_rules(format)
                .mask(&policy, &data, &mut CopyCounts::default())
                .unwrap_or_else(|| data.clone());
            let detected = |value: &Option<Vec<u8>>| {
                value.as_ref().and_then(|v| match policy.masker.mask_text(v).value {
                    Masked::Value(masked) => Some(masked.into_owned()),
                    Masked::Null => None,
                })
            };
            let expected: Vec<Vec<_>> = rows
                .iter()
                .map(|row| {
                    vec![
                        detected(&row[0]),
                        row[1].as_ref().map(|_| b"****".to_vec()),
                        detected(&row[2]),
                    ]
                })
                .collect();
            prop_assert_eq!(decode(format, &masked), expected);
        }

        /// Arbitrary and mutated CopyData, header expected or not, under rules
        /// or detectors only: masking never panics.
        #[test]
        fn fuzz_copy_rows_of_any_bytes_never_panic(
            format in format(),
            rows in rows(),
            edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
            header_seen in any::<bool>(),
        ) {
            let mut data = encode(format, &rows);
            for (at, byte) in edits {
                if !data.is_empty() {
                    let at = at % data.len();
                    data[at] = byte;
                }
            }
            data.truncate(cut % (data.len() + 1));
            let policy = demo_policy();
            let mut counts = CopyCounts::default();
            let mut under_rules = rows_under_rules(format);
            if header_seen {
                under_rules.streamed();
            }
            let _ = under_rules.mask(&policy, &data, &mut counts);
            let mut detectors = start_rows(
                false,
                &CopyResponse {
                    format: u8::from(format == CopyFormat::Binary),
                    column_formats: vec![0; 3],
                },
                None,
                None,
            );
            let _ = detectors.mask(&policy, &data, &mut counts);
        }

        /// Text escaping round-trips every value under every delimiter the
        /// server accepts (one ASCII byte, not `\`, `.`, a newline, a lowercase
        /// letter or a digit, as in its copy.c).
        #[test]
        fn fuzz_text_escapes_round_trip(
            value in prop::collection::vec(any::<u8>(), 0..64),
            delimiter in (1..0x80u8).prop_filter("a delimiter the server accepts", |d| {
                !b"\\.\r\nabcdefghijklmnopqrstuvwxyz0123456789".contains(d)
            }),
        ) {
            let mut escaped = Vec::new();
            escape_text(&value, delimiter, &mut escaped);
            prop_assert!(!escaped.contains(&b'\n'));
            let unescaped = unescape_text(&escaped);
            prop_assert_eq!(unescaped.as_ref(), value.as_slice());
        }
    }
}
