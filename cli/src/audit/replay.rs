//! `gatehouse audit replay` of a Postgres session: a psql-like transcript,
//! naming the person behind the database role.

use super::log::{Log, masking_total};
use serde_json::Value;

/// The transcript of session `id`, each line with the time of the record it
/// came from, or `None` when the log has no such session.
pub fn timed_transcript(log: &Log, id: &str) -> Option<Vec<(Option<String>, String)>> {
    let records = log.session(id);
    if records.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut times: Vec<Option<String>> = Vec::new();
    let mut introduced = false;
    for r in records {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
        match r["type"].as_str().unwrap_or("") {
            "pg.session_start" => {
                out.push(format!("-- {} session {id} start", s("time")));
                out.push(format!("-- {}", person(r)));
                if let Some(refusal) = r["login_refusal"].as_str() {
                    out.push(format!("-- login would have been refused: {refusal}"));
                }
                introduced = true;
            }
            "pg.statement" => {
                if !introduced {
                    out.push(format!("-- session {id} (its start is not in the log)"));
                    out.push(format!("-- {}", person(r)));
                    introduced = true;
                }
                out.extend(statement(r));
            }
            "pg.session_end" => {
                if !introduced {
                    out.push(format!("-- session {id}"));
                    out.push(format!("-- {}", person(r)));
                    introduced = true;
                }
                let mut end = format!("-- {} session end ({})", s("time"), s("reason"));
                if let Some(detail) = r["detail"].as_str() {
                    end.push_str(&format!(": {detail}"));
                }
                out.push(format!(
                    "{end}; {} statements, {} denied, {} errors, {} values masked, last sequence {}",
                    r["statements"].as_u64().unwrap_or(0),
                    r["denied"].as_u64().unwrap_or(0),
                    r["errors"].as_u64().unwrap_or(0),
                    r["masked"].as_u64().unwrap_or(0),
                    r["last_sequence"]
                ));
            }
            _ => {}
        }
        let time = r["time"].as_str().map(str::to_owned);
        times.resize(out.len(), time);
    }
    Some(times.into_iter().zip(out).collect())
}

/// Who the session is: the verified person, their groups and token, then the
/// role, database and address.
fn person(r: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let identity = &r["identity"];
    let mut line = match identity["subject"].as_str() {
        Some(subject) => {
            let mut who = subject.to_owned();
            let groups: Vec<&str> = identity["groups"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !groups.is_empty() {
                who.push_str(&format!(" (groups {})", groups.join(", ")));
            }
            if let Some(issuer) = identity["issuer"].as_str() {
                who.push_str(&format!(", token from {issuer}"));
            }
            format!("{who}, as role {}", text(&r["user"]))
        }
        None => format!("role {} (no verified identity)", text(&r["user"])),
    };
    line.push_str(&format!(" on database {}", text(&r["database"])));
    if let Some(from) = r["client_address"].as_str() {
        line.push_str(&format!(" from {from}"));
    }
    line
}

/// A statement and its outcome, with the masking counts.
fn statement(r: &Value) -> Vec<String> {
    let decision = &r["decision"];
    let mut verdict = decision["action"].as_str().unwrap_or("?").to_owned();
    if let Some(rule) = decision["rule"].as_str() {
        verdict.push_str(&format!(" by rule {rule}"));
    }
    if r["mode"] == "shadow" {
        verdict.push_str(" (shadow: not applied)");
    }
    let mut result = match (&r["error"], r["command_tag"].as_str()) {
        (Value::Object(e), _) => format!(
            "{}: {} ({})",
            e.get("severity").and_then(Value::as_str).unwrap_or("ERROR"),
            e.get("message").and_then(Value::as_str).unwrap_or(""),
            e.get("sqlstate").and_then(Value::as_str).unwrap_or("")
        ),
        (_, Some(tag)) => tag.to_owned(),
        _ => String::new(),
    };
    if let Some(rows) = r["rows"].as_u64() {
        result.push_str(&format!(" [{rows} rows]"));
    }
    let masking = &r["masking"];
    if masking.is_object() {
        let parts: Vec<String> = ["rules", "detectors"]
            .iter()
            .filter_map(|part| masking[*part].as_object())
            .flatten()
            .map(|(name, n)| format!("{name} {n}"))
            .chain(
                masking["over_cap"]
                    .as_u64()
                    .filter(|n| *n > 0)
                    .map(|n| format!("over cap {n}")),
            )
            .collect();
        let total = masking_total(masking);
        result.push_str(&if masking["exempt"] == true {
            format!(" [exempt: {total} values seen clear: {}]", parts.join(", "))
        } else {
            format!(" [{total} values masked: {}]", parts.join(", "))
        });
    }
    vec![
        format!(
            "{}=> {};",
            r["database"].as_str().unwrap_or(""),
            r["statement"].as_str().unwrap_or("<unknown statement>")
        ),
        format!(
            "   {result}  -- #{} {verdict}, {} us",
            r["sequence"], r["duration_us"]
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::log::tests::LOG;
    use super::*;

    fn transcript(log: &Log, id: &str) -> Option<Vec<String>> {
        timed_transcript(log, id).map(|lines| lines.into_iter().map(|(_, line)| line).collect())
    }

    #[test]
    fn a_replay_names_the_person_and_what_was_masked_and_refused() {
        let log = Log::parse(LOG);
        let lines = transcript(&log, "7").unwrap();
        assert_eq!(lines[0], "-- 2026-12-07T01:00:00.000000Z session 7 start");
        assert_eq!(
            lines[1],
            "-- developer (groups developers), token from https://idp, as role app on database shop from 127.0.0.1:5000"
        );
        assert_eq!(lines[2], "shop=> select email from customers;");
        assert!(
            lines[3].contains("SELECT 2 [2 rows] [3 values masked: customer-email 2, email 1]"),
            "{}",
            lines[3]
        );
        assert!(
            lines[5].contains("ERROR: no DDL (42501)") && lines[5].contains("deny by rule no-ddl")
        );
        assert!(lines[6].contains("2 statements, 1 denied, 1 errors, 3 values masked"));
    }

    #[test]
    fn a_refused_login_says_why_and_an_unknown_session_is_none() {
        let log = Log::parse(LOG);
        let lines = transcript(&log, "9").unwrap();
        assert_eq!(
            lines[1],
            "-- role postgres (no verified identity) on database shop from 127.0.0.1:5001"
        );
        assert!(
            lines[2].contains("session end (authentication_failed): token refused: expired"),
            "{}",
            lines[2]
        );
        let exempt = transcript(&log, "11").unwrap();
        assert!(
            exempt[3].contains("[exempt: 1 values seen clear: customer-ssn 1]"),
            "{}",
            exempt[3]
        );
        assert_eq!(transcript(&log, "8"), None);
    }
}
