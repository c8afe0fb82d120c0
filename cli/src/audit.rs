//! `gatehouse audit`: follow, replay and verify records in an access-log file.
//!
//! The file holds one JSON object per line: gatehouse records (`pg.*`,
//! `gatehouse.records_dropped`), Kubernetes audit Events and Envoy's own
//! per-connection lines. Lines that are not JSON objects are counted and skipped.

// Reading a `serde_json::Value` by key never panics: an absent key reads as null.
#![allow(clippy::indexing_slicing)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::process::ExitCode;

const USAGE: &str = "usage: gatehouse audit <subcommand> <access-log file> [options]

subcommands:
  follow <file> --session <connection id> | --identity <user>
                 print the records of one Postgres connection or one identity
  replay <file> --session <connection id>
                 print a Postgres session like a psql transcript
  verify <file>  check per-connection sequence numbers and summaries, and
                 each recorded exec session's hash chain (naming its first
                 gap or altered record); exits 1 when a record is missing";

/// Entry point for `gatehouse audit ...`.
pub fn run(args: &[String]) -> ExitCode {
    let (Some(sub), Some(path)) = (args.first(), args.get(1)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let options = args.get(2..).unwrap_or_default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gatehouse audit: cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let log = Log::parse(&text);
    if log.skipped > 0 {
        eprintln!("gatehouse audit: skipped {} non-JSON lines", log.skipped);
    }
    match (
        sub.as_str(),
        option(options, "--session"),
        option(options, "--identity"),
    ) {
        ("follow", Some(session), None) => print_all(log.session(session)),
        ("follow", None, Some(identity)) => print_all(log.identity(identity)),
        ("replay", Some(session), None) => {
            for line in crate::replay::postgres_transcript(&log.session(session)) {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        ("verify", None, None) => {
            let mut report = verify(&log.records);
            let (sessions, problems) = crate::recording::verify_sessions(&text);
            report.connections += sessions;
            report.problems.extend(problems);
            for problem in &report.problems {
                println!("{problem}");
            }
            println!(
                "{} connections, {} records checked, {} problems, {} records reported dropped",
                report.connections,
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
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn print_all(records: Vec<&Value>) -> ExitCode {
    for r in records {
        println!("{r}");
    }
    ExitCode::SUCCESS
}

/// The parsed log.
pub struct Log {
    pub records: Vec<Value>,
    pub skipped: usize,
}

impl Log {
    pub fn parse(text: &str) -> Self {
        let mut records = Vec::new();
        let mut skipped = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Value>(line) {
                Ok(v) if v.is_object() => records.push(v),
                _ => skipped += 1,
            }
        }
        Self { records, skipped }
    }

    /// Records of one Postgres connection, by connection id.
    pub fn session(&self, connection_id: &str) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| is_pg(r) && id_str(&r["connection_id"]) == connection_id)
            .collect()
    }

    /// Records of one identity: Postgres `user` or a Kubernetes Event's `user.username`.
    pub fn identity(&self, subject: &str) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["user"] == subject || r["user"]["username"] == subject)
            .collect()
    }
}

fn is_pg(r: &Value) -> bool {
    r["type"].as_str().is_some_and(|t| t.starts_with("pg.")) && r["type"] != "pg.connection"
}

fn id_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
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
pub fn verify(records: &[Value]) -> VerifyReport {
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
        } else if is_pg(r) {
            by_conn
                .entry(id_str(&r["connection_id"]))
                .or_default()
                .push(r);
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

    #[test]
    fn a_complete_session_verifies() {
        let log = Log::parse(SESSION);
        assert_eq!(log.skipped, 1);
        let report = verify(&log.records);
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
        let report = verify(&Log::parse(&text).records);
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
        let report = verify(&Log::parse(&text).records);
        assert_eq!(report.reported_dropped, 3);
        assert_eq!(report.problems.len(), 1);
    }

    #[test]
    fn follow_selects_by_session_and_identity() {
        let log = Log::parse(SESSION);
        assert_eq!(log.session("7").len(), 4);
        assert_eq!(log.session("8").len(), 0);
        assert_eq!(
            log.identity("alice").len(),
            4,
            "pg records and the k8s Event"
        );
    }
}
