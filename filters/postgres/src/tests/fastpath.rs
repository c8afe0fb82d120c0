//! FunctionCall (fast path): judged as the SQL call it is, by the OIDs the
//! server's catalog gives; everything else refused.

use super::deny::{
    TEST_POLICY, Wire, cat, clean_error, denial, messages, query, raised_error, ready,
};
use super::*;
use crate::deny;
use crate::fastpath;
use crate::protocol::{BackendMessage, FunctionCall};

fn function_call(oid: u32, formats: Vec<i16>, args: Vec<Option<&[u8]>>) -> Vec<u8> {
    frontend(&[FrontendMessage::FunctionCall(FunctionCall {
        oid,
        arg_formats: formats,
        args,
        result_format: 1,
    })])
}

fn row(values: &[&[u8]]) -> Vec<u8> {
    backend(&[BackendMessage::DataRow {
        values: values.iter().map(|v| Some(*v)).collect(),
    }])
}

/// The server's answer to a Query returning `rows`.
fn answer(rows: &[Vec<u8>]) -> Vec<u8> {
    let mut out = backend(&[BackendMessage::RowDescription { body: b"\0\0" }]);
    for r in rows {
        out.extend_from_slice(r);
    }
    out.extend(backend(&[BackendMessage::CommandComplete {
        tag: b"SELECT 1",
    }]));
    out.extend(ready(b'I'));
    out
}

fn config(functions: &[&str]) -> EngineConfig {
    EngineConfig {
        fast_path_functions: functions.iter().map(|f| (*f).to_owned()).collect(),
        ..EngineConfig::default()
    }
}

/// A session whose fast-path lookup went ahead of `select 1` and was answered
/// with lo_open(oid, int4) and lo_import(text).
fn resolved_wire() -> Wire {
    let mut wire = Wire::with_config(
        TEST_POLICY,
        None,
        false,
        config(&["lo_open", "pg_catalog.lo_import"]),
    );
    let sent = wire.client(&query("select 1"));
    let names = vec![
        crate::fastpath::FunctionName::parse("lo_open").unwrap(),
        crate::fastpath::FunctionName::parse("pg_catalog.lo_import").unwrap(),
    ];
    let lookup = query(&fastpath::lookup_sql(&names).unwrap());
    assert_eq!(sent, cat(&[&lookup, &query("select 1")]));
    let lookup_answer = answer(&[
        row(&[b"952", b"pg_catalog", b"lo_open", b"26 23"]),
        row(&[b"764", b"pg_catalog", b"lo_import", b"25"]),
    ]);
    let select_answer = answer(&[row(&[b"1"])]);
    // The lookup's answers never reach the client.
    assert_eq!(
        wire.server(&cat(&[&lookup_answer, &select_answer])),
        select_answer
    );
    wire.records.clear();
    wire
}

#[test]
fn an_allowed_function_is_judged_and_recorded_as_its_sql_call() {
    let mut wire = resolved_wire();
    let open = function_call(
        952,
        vec![1],
        vec![Some(&[0, 0, 0x40, 0x10]), Some(&[0, 4, 0, 0])],
    );
    assert_eq!(wire.client(&open), open);
    let result = cat(&[
        &backend(&[BackendMessage::FunctionCallResponse {
            result: Some(&[0, 0, 0, 0]),
        }]),
        &ready(b'T'),
    ]);
    assert_eq!(wire.server(&result), result);
    let records = wire.statements();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].statement.as_deref(),
        Some(r#"SELECT "pg_catalog"."lo_open"(16400, 262144)"#)
    );
    assert_eq!(records[0].kind.as_deref(), Some("FUNCTION CALL"));
    assert_eq!(records[0].function_oid, Some(952));
    assert!(!records[0].decision.action.blocks());
}

#[test]
fn an_allowed_function_the_policy_denies_in_sql_is_denied_on_the_fast_path() {
    let mut wire = resolved_wire();
    // lo_import(text) reads a server file: the policy denies it by name.
    let import = function_call(764, vec![0], vec![Some(b"/etc/passwd")]);
    assert_eq!(
        wire.client(&import),
        deny::query(&denial("gatehouse: no server files", "no-server-files"))
    );
    assert_eq!(
        wire.server(&cat(&[
            &raised_error("gatehouse: no server files"),
            &ready(b'I')
        ])),
        cat(&[&clean_error("gatehouse: no server files"), &ready(b'I')])
    );
    let records = wire.statements();
    assert_eq!(
        records[0].statement.as_deref(),
        Some(r#"SELECT "pg_catalog"."lo_import"(E'/etc/passwd')"#)
    );
    assert_eq!(records[0].decision.rule.as_deref(), Some("no-server-files"));
    assert_eq!(records[0].error.as_ref().unwrap().sqlstate, "42501");
}

#[test]
fn a_function_not_configured_is_refused_and_named_from_the_catalog_for_its_record() {
    // query_to_xml by OID: the policy allows every statement by default, but
    // nothing may be called through the fast path unless configured.
    let mut wire = resolved_wire();
    let call = function_call(
        2930,
        vec![0],
        vec![
            Some(b"select * from customers"),
            Some(b"t"),
            Some(b"f"),
            Some(b""),
        ],
    );
    let sent = wire.client(&call);
    let sent_messages = messages(&sent);
    assert_eq!(
        sent_messages.len(),
        2,
        "name lookup, then the raising block"
    );
    assert_eq!(sent_messages[0], query(&fastpath::name_sql(2930)));
    let raised_message = "gatehouse: function 2930 is not one the fast-path interface may call \
                          (fast_path_functions); call it in SQL";
    assert_eq!(
        sent_messages[1],
        deny::query(&denial(raised_message, "gatehouse:fast-path"))
    );
    assert!(
        !contains_bytes(&sent, b"customers"),
        "the arguments never reach the server"
    );
    let to_client = wire.server(&cat(&[
        &answer(&[row(&[b"pg_catalog", b"query_to_xml"])]),
        &raised_error(raised_message),
        &ready(b'I'),
    ]));
    assert_eq!(
        to_client,
        cat(&[&clean_error(raised_message), &ready(b'I')])
    );
    let records = wire.statements();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].statement.as_deref(),
        Some(r#"SELECT "pg_catalog"."query_to_xml"($1, $2, $3, $4)"#)
    );
    assert_eq!(
        records[0].decision.rule.as_deref(),
        Some("gatehouse:fast-path")
    );
    assert_eq!(records[0].function_oid, Some(2930));
    assert_eq!(wire.session.summary().unmatched_backend_messages, 0);
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn without_configured_functions_every_call_is_refused_without_a_lookup() {
    let mut wire = Wire::new(TEST_POLICY, None);
    let select = query("select 1");
    assert_eq!(wire.client(&select), select, "no lookup is sent");
    wire.server(&answer(&[row(&[b"1"])]));
    let sent = wire.client(&function_call(952, vec![1], vec![Some(&[0, 0, 0, 1])]));
    let sent_messages = messages(&sent);
    assert_eq!(sent_messages[0], query(&fastpath::name_sql(952)));
    assert!(
        String::from_utf8_lossy(&sent_messages[1])
            .contains("may not be called through the fast-path interface")
    );
}

#[test]
fn a_call_before_the_lookup_answered_is_refused() {
    let mut wire = Wire::with_config(TEST_POLICY, None, false, config(&["lo_open"]));
    // The very first request is the call: the lookup goes ahead of it, too late.
    let sent = wire.client(&function_call(952, vec![1], vec![Some(&[0, 0, 0, 1])]));
    let sent_messages = messages(&sent);
    assert!(sent_messages.len() >= 2);
    let last = String::from_utf8_lossy(sent_messages.last().unwrap()).into_owned();
    assert!(last.contains("must wait for the answer"), "{last}");
}

#[test]
fn no_query_of_the_engine_goes_inside_an_open_extended_batch() {
    let mut wire = Wire::new(TEST_POLICY, None);
    // Parse without Sync: after an error the server would skip a Query too.
    let parse = frontend(&[FrontendMessage::Parse {
        name: b"",
        sql: b"select 1",
        param_types: vec![],
    }]);
    assert_eq!(wire.client(&parse), parse);
    let sent = wire.client(&function_call(2930, vec![], vec![]));
    assert_eq!(messages(&sent).len(), 1, "only the raising block: {sent:?}");
    let sync = frontend(&[FrontendMessage::Sync]);
    assert_eq!(wire.client(&sync), sync);
}
