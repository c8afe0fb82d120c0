//! `gatehouse audit verify`: is every record there, and unaltered?

use super::log::{Log, session_id};
use super::recording::verify_sessions;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// Prints every problem and a summary; exit 1 when a record is missing or
/// a recorded session's chain is broken.
pub fn run(log: &Log) -> ExitCode {
    let records: Vec<&Value> = log.records.iter().map(|r| &r.value).collect();
    let mut report = verify(&records);
    let (exec_sessions, exec_problems) = verify_sessions(log);
    report.problems.extend(exec_problems);
    for problem in &report.problems {
        println!("{problem}");
    }
    println!(
        "{} connections, {} recorded exec sessions, {} records checked, {} problems, {} records reported dropped",
        report.connections,
        exec_sessions,
        report.records,
        report.problems.len(),
        report.reported_dropped
    );
    if report.problems.is_empty() && report.reported_dropped == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub connections: usize,
    pub records: usize,
    pub problems: Vec<String>,
    /// Sum of `dropped` over `gatehouse.records_dropped` notices.
    pub reported_dropped: u64,
}

/// Checks that every connection's records number 1..=n without gaps or
/// repeats, and that its `pg.session_end` summary matches what was seen.
pub fn verify(records: &[&Value]) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut by_conn: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in records {
        if r["type"] == "gatehouse.records_dropped" {
            let n = r["dropped"].as_u64().unwrap_or(0);
            report.reported_dropped += n;
            report.problems.push(format!(
                "{} records dropped by the audit service between {} and {}",
                n, r["first_drop_time"], r["last_drop_time"]
            ));
        } else if let Some(id) = session_id(r) {
            by_conn.entry(id).or_default().push(r);
        }
    }
    report.connections = by_conn.len();
    for (conn, recs) in by_conn {
        report.records += recs.len();
        let mut seqs: Vec<u64> = recs.iter().filter_map(|r| r["sequence"].as_u64()).collect();
        seqs.sort_unstable();
        let mut expected = 1u64;
        for s in &seqs {
            if *s < expected {
                report
                    .problems
                    .push(format!("connection {conn}: sequence {s} appears twice"));
            } else {
                if *s > expected {
                    report.problems.push(format!(
                        "connection {conn}: sequences {expected}..={} missing",
                        s - 1
                    ));
                }
                expected = s + 1;
            }
        }
        let statements = recs.iter().filter(|r| r["type"] == "pg.statement").count() as u64;
        if let Some(end) = recs.iter().find(|r| r["type"] == "pg.session_end") {
            let last = end["last_sequence"].as_u64().unwrap_or(0);
            if seqs.last().copied() != Some(last) {
                report.problems.push(format!(
                    "connection {conn}: summary says last sequence {last}, log has {:?}",
                    seqs.last()
                ));
            }
            let claimed = end["statements"].as_u64().unwrap_or(0);
            if claimed != statements {
                report.problems.push(format!(
                    "connection {conn}: summary says {claimed} statements, log has {statements}"
                ));
            }
        }
    }
    report
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    const SESSION: &str = r#"{"type":"pg.session_start","schema":1,"sequence":1,"connection_id":7,"time":"t0","user":"alice","database":"app","client_address":"1.2.3.4:5"}
{"type":"pg.connection","connection_id":"7"}
not json
{"type":"pg.statement","schema":1,"sequence":2,"connection_id":7,"user":"alice","database":"app","statement":"select 1","command_tag":"SELECT 1","rows":1,"duration_us":5,"decision":{"action":"allow"}}
{"type":"pg.statement","schema":1,"sequence":3,"connection_id":7,"user":"alice","database":"app","statement":"drop table t","error":{"sqlstate":"42501","message":"denied","severity":"ERROR"},"duration_us":5,"decision":{"action":"deny","rule":"no-ddl"}}
{"type":"pg.session_end","schema":1,"sequence":4,"connection_id":7,"reason":"client_terminate","statements":2,"errors":1,"last_sequence":4}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","user":{"username":"alice"}}"#;

    fn values(log: &Log) -> Vec<&Value> {
        log.records.iter().map(|r| &r.value).collect()
    }

    #[test]
    fn a_complete_session_verifies() {
        let log = Log::parse(SESSION);
        assert_eq!(log.skipped, 1);
        let report = verify(&values(&log));
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!((report.connections, report.records), (1, 4));
    }

    #[test]
    fn a_missing_statement_is_a_gap_and_a_summary_mismatch() {
        let text: String = SESSION
            .lines()
            .filter(|l| !l.contains("\"sequence\":2"))
            .collect::<Vec<_>>()
            .join("\n");
        let report = verify(&values(&Log::parse(&text)));
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(report.problems[0].contains("2..=2 missing"));
        assert!(report.problems[1].contains("says 2 statements, log has 1"));
    }

    #[test]
    fn drop_notices_fail_verification() {
        let text = format!(
            "{SESSION}\n{}",
            r#"{"type":"gatehouse.records_dropped","dropped":3}"#
        );
        let report = verify(&values(&Log::parse(&text)));
        assert_eq!(report.reported_dropped, 3);
        assert_eq!(report.problems.len(), 1);
    }
}
