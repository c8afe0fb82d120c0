//! Recorded exec and attach sessions in an access log: gathered by session,
//! their events put back in order, and their hash chains checked.

use base64::Engine as _;
use gatehouse_core::exec_record::ChainCheck;
use serde_json::Value;
use std::collections::BTreeMap;

/// One session's records, in sequence order, each with its line as logged.
#[derive(Debug, Default)]
pub struct SessionRecords {
    pub records: Vec<(String, Value)>,
}

/// One event of a session, as replay uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub offset_us: u64,
    pub code: String,
    pub data: String,
}

impl SessionRecords {
    /// The first record of a type.
    pub fn first(&self, kind: &str) -> Option<&Value> {
        self.records
            .iter()
            .map(|(_, record)| record)
            .find(|record| record.get("type").and_then(Value::as_str) == Some(kind))
    }

    /// Every record of a type.
    pub fn all<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.records
            .iter()
            .map(|(_, record)| record)
            .filter(move |record| record.get("type").and_then(Value::as_str) == Some(kind))
    }

    /// Every chunk's events, by time (a line of output is stamped with its
    /// first byte, so a later chunk may hold an earlier event).
    pub fn events(&self) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .all("k8s.exec.chunk")
            .flat_map(|chunk| {
                chunk
                    .get("events")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|event| {
                let offset_us = event.get(0)?.as_u64()?;
                let code = event.get(1)?.as_str()?.to_owned();
                let data = match event.get(2)? {
                    Value::String(text) => text.clone(),
                    other => {
                        let encoded = other.get("base64")?.as_str()?;
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(encoded)
                            .ok()?;
                        String::from_utf8_lossy(&bytes).into_owned()
                    }
                };
                Some(Event {
                    offset_us,
                    code,
                    data,
                })
            })
            .collect();
        events.sort_by_key(|event| event.offset_us);
        events
    }

    /// Checks the chain: the first problem, if any.
    pub fn verify(&self) -> Option<String> {
        let mut check = ChainCheck::default();
        for (line, record) in &self.records {
            check.push(line, record);
        }
        check.broken.or_else(|| {
            (!check.ended).then(|| {
                format!(
                    "ends at sequence {} without k8s.exec.session_end (still open, or its last records are lost)",
                    check.records
                )
            })
        })
    }
}

/// Gathers every exec session of a log by its `session` (the audit ID).
pub fn sessions(text: &str) -> BTreeMap<String, SessionRecords> {
    let mut sessions: BTreeMap<String, SessionRecords> = BTreeMap::new();
    for line in text.lines() {
        if !line.contains("\"k8s.exec.") {
            continue;
        }
        let Ok(record) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let is_exec = record
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("k8s.exec."));
        let Some(session) = record.get("session").and_then(Value::as_str) else {
            continue;
        };
        if is_exec {
            sessions
                .entry(session.to_owned())
                .or_default()
                .records
                .push((line.to_owned(), record.clone()));
        }
    }
    for session in sessions.values_mut() {
        session
            .records
            .sort_by_key(|(_, record)| record.get("sequence").and_then(Value::as_u64));
    }
    sessions
}

/// What `gatehouse audit verify` adds for recorded sessions: one problem
/// per broken session, naming its first break.
pub fn verify_sessions(text: &str) -> (usize, Vec<String>) {
    let sessions = sessions(text);
    let problems = sessions
        .iter()
        .filter_map(|(id, session)| {
            session
                .verify()
                .map(|problem| format!("exec session {id}: {problem}"))
        })
        .collect();
    (sessions.len(), problems)
}
