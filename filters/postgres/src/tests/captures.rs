//! Real client traffic captured from PostgreSQL 15 (see testdata/README.md).

use super::*;
use gatehouse_core::record::{EndReason, PgProtocol, StatementRecord};

pub(crate) const CAPTURES: &[(&str, &[u8])] = &[
    (
        "psql_simple",
        include_bytes!("../../testdata/psql_simple.log"),
    ),
    ("psql_copy", include_bytes!("../../testdata/psql_copy.log")),
    (
        "psql_notify",
        include_bytes!("../../testdata/psql_notify.log"),
    ),
    (
        "psql_scram",
        include_bytes!("../../testdata/psql_scram.log"),
    ),
    ("psql_md5", include_bytes!("../../testdata/psql_md5.log")),
    (
        "pgbench_simple",
        include_bytes!("../../testdata/pgbench_simple.log"),
    ),
    (
        "pgbench_extended",
        include_bytes!("../../testdata/pgbench_extended.log"),
    ),
    (
        "pgbench_prepared",
        include_bytes!("../../testdata/pgbench_prepared.log"),
    ),
    (
        "pgbench_tpcb_prepared",
        include_bytes!("../../testdata/pgbench_tpcb_prepared.log"),
    ),
    (
        "raw_extended",
        include_bytes!("../../testdata/raw_extended.log"),
    ),
];

fn capture(name: &str) -> Vec<Read> {
    let (_, log) = CAPTURES.iter().find(|(n, _)| *n == name).unwrap();
    parse_log(log)
}

fn statements(run: &Run) -> Vec<&StatementRecord> {
    run.records
        .iter()
        .filter_map(|r| match r {
            Record::Statement(s) => Some(&**s),
            _ => None,
        })
        .collect()
}

fn summary(s: &StatementRecord) -> (Option<&str>, Option<&str>, Option<u64>, Option<&str>) {
    (
        s.statement.as_deref(),
        s.command_tag.as_deref(),
        s.rows,
        s.error.as_ref().map(|e| e.sqlstate.as_str()),
    )
}

fn session_end(run: &Run) -> &gatehouse_core::record::SessionEndRecord {
    match run.records.last() {
        Some(Record::SessionEnd(e)) => e,
        other => panic!("last record is not session_end: {other:?}"),
    }
}

#[test]
fn every_capture_passes_through_unchanged_and_ends_cleanly() {
    for (name, log) in CAPTURES {
        let reads = parse_log(log);
        let run = replay(EngineConfig::default(), &reads, &whole);
        assert_eq!(run.to_server, side_bytes(&reads, Side::Client), "{name}");
        assert_eq!(run.to_client, side_bytes(&reads, Side::Server), "{name}");
        assert!(!run.closed, "{name}");
        assert!(
            matches!(run.records.first(), Some(Record::SessionStart(_))),
            "{name}"
        );
        let end = session_end(&run);
        assert_eq!(end.reason, EndReason::ClientTerminate, "{name}");
        // Sequence numbers run 1..=n without gaps.
        let seqs: Vec<u64> = run.records.iter().map(|r| r.header().sequence).collect();
        assert_eq!(
            seqs,
            (1..=run.records.len() as u64).collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(end.last_sequence, run.records.len() as u64);
        assert_eq!(end.statements as usize, statements(&run).len(), "{name}");
    }
}

#[test]
fn every_split_point_gives_the_same_bytes_and_records() {
    for (name, log) in CAPTURES {
        let reads = parse_log(log);
        let reference = replay(EngineConfig::default(), &reads, &whole);
        let check = |run: Run, how: &str| {
            assert_eq!(run.to_server, reference.to_server, "{name} {how}");
            assert_eq!(run.to_client, reference.to_client, "{name} {how}");
            assert_eq!(run.records, reference.records, "{name} {how}");
        };
        check(
            replay(EngineConfig::default(), &reads, &byte_by_byte),
            "byte by byte",
        );
        for (target, read) in reads.iter().enumerate() {
            for split in 1..read.bytes.len() {
                let chunker = |i: usize, bytes: &[u8]| {
                    if i == target {
                        vec![bytes[..split].to_vec(), bytes[split..].to_vec()]
                    } else {
                        vec![bytes.to_vec()]
                    }
                };
                check(
                    replay(EngineConfig::default(), &reads, &chunker),
                    &format!("read {target} split at {split}"),
                );
            }
        }
    }
}

#[test]
fn reads_merged_per_direction_give_the_same_records() {
    // Many messages per chunk: merge consecutive reads of the same side.
    for (name, log) in CAPTURES {
        let reads = parse_log(log);
        let mut merged: Vec<Read> = Vec::new();
        for r in &reads {
            match merged.last_mut() {
                Some(last) if last.side == r.side => last.bytes.extend_from_slice(&r.bytes),
                _ => merged.push(r.clone()),
            }
        }
        let a = replay(EngineConfig::default(), &merged, &whole);
        assert_eq!(a.to_server, side_bytes(&reads, Side::Client), "{name}");
        assert_eq!(a.to_client, side_bytes(&reads, Side::Server), "{name}");
        let b = replay(EngineConfig::default(), &merged, &byte_by_byte);
        assert_eq!(a.records, b.records, "{name}");
    }
}

#[test]
fn psql_multi_statement_queries_get_one_record_per_statement() {
    let run = replay(EngineConfig::default(), &capture("psql_simple"), &whole);
    let got: Vec<_> = statements(&run).into_iter().map(summary).collect();
    assert_eq!(
        got,
        [
            (
                Some("create table t(a int, b text)"),
                Some("CREATE TABLE"),
                None,
                None
            ),
            (
                Some("insert into t values (1, 'a;b'), (2, $$x;y$$)"),
                Some("INSERT 0 2"),
                Some(2),
                None
            ),
            (Some("select * from t"), Some("SELECT 2"), Some(2), None),
            (
                Some("select count(*) from t"),
                Some("SELECT 1"),
                Some(1),
                None
            ),
            (Some("select 1/0"), None, None, Some("22012")),
            (Some("begin"), Some("BEGIN"), None, None),
            (Some("select 1"), Some("SELECT 1"), Some(1), None),
            (Some("commit"), Some("COMMIT"), None, None),
            (Some("drop table t"), Some("DROP TABLE"), None, None),
        ]
    );
    let start = match &run.records[0] {
        Record::SessionStart(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (start.client.user.as_str(), start.client.database.as_str()),
        ("postgres", "postgres")
    );
    assert_eq!(
        start.client.application_name.as_deref(),
        Some("gatehouse-capture")
    );
    assert_eq!(start.protocol_version, "3.0");
    let end = session_end(&run);
    assert_eq!((end.statements, end.errors), (9, 1));
    assert!(end.backend_pid.is_some());
    let err = statements(&run)[4].error.clone().unwrap();
    assert_eq!(
        (err.message.as_str(), err.severity.as_str()),
        ("division by zero", "ERROR")
    );
}

#[test]
fn statement_bytes_add_up_to_the_traffic_after_login() {
    let run = replay(EngineConfig::default(), &capture("pgbench_simple"), &whole);
    let s = statements(&run);
    assert_eq!(s.len(), 20);
    assert!(
        s.iter()
            .all(|r| r.kind.as_deref() == Some("SELECT") && r.rows == Some(1))
    );
    assert!(
        s.iter()
            .all(|r| r.protocol == PgProtocol::Simple && r.bytes_to_client > 0)
    );
    assert!(s[1..].iter().all(|r| r.bytes_from_client > 0));
}

#[test]
fn copy_in_and_out_are_recorded_with_their_direction() {
    use gatehouse_core::record::CopyDirection;
    let run = replay(EngineConfig::default(), &capture("psql_copy"), &whole);
    let copies: Vec<_> = statements(&run)
        .into_iter()
        .filter(|s| s.kind.as_deref() == Some("COPY"))
        .collect();
    let got: Vec<_> = copies
        .iter()
        .map(|s| (s.copy, s.command_tag.as_deref(), s.rows))
        .collect();
    assert_eq!(
        got,
        [
            (Some(CopyDirection::In), Some("COPY 3"), Some(3)),
            (Some(CopyDirection::Out), Some("COPY 3"), Some(3)),
            (Some(CopyDirection::Out), Some("COPY 3"), Some(3)),
        ]
    );
}

#[test]
fn listen_notify_and_notices_pass_and_statements_are_recorded() {
    let reads = capture("psql_notify");
    let run = replay(EngineConfig::default(), &reads, &whole);
    let got: Vec<_> = statements(&run)
        .into_iter()
        .map(|s| s.command_tag.as_deref())
        .collect();
    assert_eq!(
        got,
        [Some("LISTEN"), Some("NOTIFY"), Some("SELECT 1"), Some("DO")]
    );
    assert_eq!(run.to_client, side_bytes(&reads, Side::Server));
}

#[test]
fn password_exchanges_pass_untouched() {
    for name in ["psql_scram", "psql_md5"] {
        let reads = capture(name);
        let run = replay(EngineConfig::default(), &reads, &whole);
        assert_eq!(run.to_client, side_bytes(&reads, Side::Server), "{name}");
        let got: Vec<_> = statements(&run).into_iter().map(summary).collect();
        assert_eq!(
            got,
            [(Some("select current_user"), Some("SELECT 1"), Some(1), None)],
            "{name}"
        );
    }
}

#[test]
fn pgbench_extended_and_prepared_get_one_record_per_execute() {
    for name in ["pgbench_extended", "pgbench_prepared"] {
        let run = replay(EngineConfig::default(), &capture(name), &whole);
        let s = statements(&run);
        assert_eq!(s.len(), 20, "{name}");
        for r in &s {
            assert_eq!(r.protocol, PgProtocol::Extended);
            assert_eq!(
                r.statement.as_deref(),
                Some("SELECT abalance FROM pgbench_accounts WHERE aid = $1;")
            );
            assert_eq!(
                (r.command_tag.as_deref(), r.rows),
                (Some("SELECT 1"), Some(1))
            );
        }
        let named = s.iter().filter(|r| r.statement_name.is_some()).count();
        assert_eq!(
            named,
            if name == "pgbench_prepared" { 20 } else { 0 },
            "{name}"
        );
    }
    let run = replay(
        EngineConfig::default(),
        &capture("pgbench_tpcb_prepared"),
        &whole,
    );
    let kinds: Vec<_> = statements(&run)
        .iter()
        .take(7)
        .map(|s| s.kind.clone().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "BEGIN", "UPDATE", "SELECT", "UPDATE", "UPDATE", "INSERT", "END"
        ]
    );
}

#[test]
fn portal_suspension_pipeline_errors_and_function_calls_are_tracked() {
    let config = EngineConfig {
        record_parameters: true,
        ..EngineConfig::default()
    };
    let run = replay(config, &capture("raw_extended"), &whole);
    match &run.records[0] {
        Record::SessionStart(s) => assert_eq!(s.protocol_version, "3.2"),
        other => panic!("{other:?}"),
    }
    let s = statements(&run);
    let got: Vec<_> = s
        .iter()
        .map(|r| {
            (
                r.portal.as_deref(),
                r.command_tag.as_deref(),
                r.rows,
                r.suspended,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("p1"), None, Some(2), true),
            (Some("p1"), None, Some(2), true),
            (Some("p1"), Some("SELECT 1"), Some(1), false),
            (None, Some("SELECT 1"), Some(1), false),
            // Bind of "x" to an int parameter fails: that Execute is the failed
            // statement; the next one before Sync never ran.
            (None, None, None, false),
            (None, Some("SELECT 3"), Some(3), false),
            (None, None, None, false),
        ]
    );
    assert_eq!(
        s[4].error.as_ref().map(|e| e.sqlstate.as_str()),
        Some("22P02")
    );
    assert_eq!(s[4].statement_name.as_deref(), Some("s1"));
    use gatehouse_core::record::ParameterValue;
    assert_eq!(
        s[0].parameters,
        Some(vec![ParameterValue::Text("5".into())])
    );
    assert_eq!(
        s[3].parameters,
        Some(vec![ParameterValue::Text("41".into())])
    );
    assert_eq!(
        s[5].parameters,
        Some(vec![ParameterValue::Binary {
            base64: "AAAAAw==".into()
        }])
    );
    assert_eq!(
        (s[6].protocol, s[6].function_oid),
        (PgProtocol::FunctionCall, Some(1251))
    );
    assert_eq!(
        s[6].parameters,
        Some(vec![ParameterValue::Binary {
            base64: "////+Q==".into()
        }])
    );
}

#[test]
fn redact_literals_applies_to_recorded_text() {
    let config = EngineConfig {
        redact_literals: true,
        ..EngineConfig::default()
    };
    let run = replay(config, &capture("psql_simple"), &whole);
    let texts: Vec<_> = statements(&run)
        .iter()
        .map(|s| s.statement.clone().unwrap())
        .collect();
    assert_eq!(&*texts[1], "insert into t values ($1, $2), ($3, $4)");
    assert_eq!(&*texts[4], "select $1/$2");
}
