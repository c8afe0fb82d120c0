//! `gatehouse audit sessions`: one line per Postgres session.

use super::Output;
use super::log::{Log, Selection, Who, denied, masked_values, session_id};
use super::table::{Table, short_time};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What one session's records add up to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub start: Option<String>,
    pub end: Option<String>,
    pub subject: Option<String>,
    pub groups: Vec<String>,
    pub role: Option<String>,
    pub database: Option<String>,
    pub from: Option<String>,
    pub statements: u64,
    pub denied: u64,
    pub masked: u64,
    /// How it ended (`client_terminate`, `authentication_failed: token
    /// refused: expired`, …); `None` while it is open.
    pub outcome: Option<String>,
}

/// The sessions in log order of their first record.
pub fn sessions(log: &Log) -> Vec<Session> {
    let mut order = Vec::new();
    let mut by_id: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for record in &log.records {
        if let Some(id) = session_id(&record.value) {
            let records = by_id.entry(id.clone()).or_default();
            if records.is_empty() {
                order.push(id);
            }
            records.push(&record.value);
        }
    }
    order
        .into_iter()
        .map(|id| {
            let records = by_id.remove(&id).unwrap_or_default();
            summarize(id, &records)
        })
        .collect()
}

fn summarize(id: String, records: &[&Value]) -> Session {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let mut session = Session {
        id,
        ..Session::default()
    };
    for r in records {
        let who = Who::of(r);
        if session.subject.is_none() {
            session.subject = who.subject;
            session.groups = who.groups;
        }
        session.role = session.role.take().or(who.role);
        session.database = session.database.take().or_else(|| text(&r["database"]));
        session.from = session.from.take().or_else(|| text(&r["client_address"]));
        if session.start.is_none() {
            session.start = text(&r["time"]);
        }
        match r["type"].as_str() {
            Some("pg.statement") => {
                session.statements += 1;
                session.denied += u64::from(denied(r));
                session.masked += masked_values(r);
            }
            Some("pg.session_end") => {
                session.end = text(&r["time"]);
                let mut outcome = text(&r["reason"]).unwrap_or_default();
                if let Some(detail) = r["detail"].as_str() {
                    outcome.push_str(&format!(": {detail}"));
                }
                session.outcome = Some(outcome);
                // The filter's own summary counts what the log may have lost.
                session.statements = session
                    .statements
                    .max(r["statements"].as_u64().unwrap_or(0));
                session.denied = session.denied.max(r["denied"].as_u64().unwrap_or(0));
            }
            Some("pg.session_start") => {
                if let Some(refusal) = r["login_refusal"].as_str() {
                    session.outcome = Some(format!("login would be refused: {refusal}"));
                }
            }
            _ => {}
        }
    }
    session
}

/// Prints the sessions `select` matches (a session matches when any of its
/// records does).
pub fn print(log: &Log, select: &Selection, output: Output) {
    let wanted: std::collections::BTreeSet<String> = log
        .select(select)
        .iter()
        .filter_map(|r| session_id(&r.value))
        .collect();
    let chosen: Vec<Session> = sessions(log)
        .into_iter()
        .filter(|s| wanted.contains(&s.id))
        .collect();
    match output {
        Output::Json => {
            for s in &chosen {
                println!("{}", to_json(s));
            }
        }
        Output::Table => {
            let mut table = Table::new(&[
                "SESSION",
                "START",
                "END",
                "WHO",
                "GROUPS",
                "DATABASE",
                "FROM",
                "STATEMENTS",
                "DENIED",
                "MASKED",
                "OUTCOME",
            ]);
            let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            for s in &chosen {
                table.push(vec![
                    s.id.clone(),
                    short_time(&json!(s.start)),
                    s.end
                        .as_ref()
                        .map_or("open".to_owned(), |e| short_time(&json!(e))),
                    Who {
                        subject: s.subject.clone(),
                        groups: Vec::new(),
                        role: s.role.clone(),
                    }
                    .short(),
                    if s.groups.is_empty() {
                        "-".to_owned()
                    } else {
                        s.groups.join(",")
                    },
                    or_dash(&s.database),
                    or_dash(&s.from),
                    s.statements.to_string(),
                    s.denied.to_string(),
                    s.masked.to_string(),
                    s.outcome.clone().unwrap_or_else(|| "open".to_owned()),
                ]);
            }
            print!("{}", table.render());
        }
    }
}

fn to_json(s: &Session) -> Value {
    json!({
        "session": s.id, "start": s.start, "end": s.end, "subject": s.subject,
        "groups": s.groups, "role": s.role, "database": s.database, "from": s.from,
        "statements": s.statements, "denied": s.denied, "masked": s.masked,
        "outcome": s.outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::super::log::tests::LOG;
    use super::*;

    #[test]
    fn each_session_says_who_when_where_and_what_became_of_it() {
        let all = sessions(&Log::parse(LOG));
        let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["7", "9", "11"]);
        let developer = &all[0];
        assert_eq!(developer.subject.as_deref(), Some("developer"));
        assert_eq!(developer.groups, ["developers"]);
        assert_eq!(developer.role.as_deref(), Some("app"));
        assert_eq!(developer.from.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(
            developer.start.as_deref(),
            Some("2026-12-07T01:00:00.000000Z")
        );
        assert_eq!(
            (developer.statements, developer.denied, developer.masked),
            (2, 1, 3)
        );
        assert_eq!(developer.outcome.as_deref(), Some("client_terminate"));
        let refused = &all[1];
        assert_eq!(refused.subject, None);
        assert_eq!(
            refused.outcome.as_deref(),
            Some("authentication_failed: token refused: expired")
        );
        let open = &all[2];
        assert_eq!(
            (open.masked, open.outcome.as_deref()),
            (0, None),
            "exempt, open"
        );
    }
}
