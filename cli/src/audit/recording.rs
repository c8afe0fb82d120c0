//! Recorded exec and attach sessions in an audit log: gathered by session,
//! their events put back in order, and their hash chains checked.

use super::log::{Log, Record, exec_session_id};
use base64::Engine as _;
use gatehouse_core::exec_record::ChainCheck;
use serde_json::Value;
use std::collections::BTreeMap;

/// One session's records, in sequence order.
#[derive(Debug, Default)]
pub struct SessionRecords<'a> {
    pub records: Vec<&'a Record>,
}

/// One event of a session, as replay uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub offset_us: u64,
    pub code: String,
    pub data: String,
}

impl<'a> SessionRecords<'a> {
    /// The first record of a type.
    pub fn first(&self, kind: &str) -> Option<&'a Value> {
        self.all(kind).next()
    }

    /// Every record of a type.
    pub fn all<'s>(&'s self, kind: &'s str) -> impl Iterator<Item = &'a Value> + 's {
        self.records
            .iter()
            .map(|record| &record.value)
            .filter(move |record| record["type"] == kind)
    }

    /// Every chunk's events, by time (a line of output is stamped with its
    /// first byte, so a later chunk may hold an earlier event).
    pub fn events(&self) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .all("k8s.exec.chunk")
            .filter_map(|chunk| chunk["events"].as_array())
            .flatten()
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
        for record in &self.records {
            check.push(&record.line, &record.value);
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

/// Every recorded session of a log, by its id (the request's audit ID).
pub fn sessions(log: &Log) -> BTreeMap<String, SessionRecords<'_>> {
    let mut sessions: BTreeMap<String, SessionRecords<'_>> = BTreeMap::new();
    for record in &log.records {
        if let Some(id) = exec_session_id(&record.value) {
            sessions.entry(id).or_default().records.push(record);
        }
    }
    for session in sessions.values_mut() {
        session
            .records
            .sort_by_key(|record| record.value["sequence"].as_u64());
    }
    sessions
}

/// What `gatehouse audit verify` adds for recorded sessions: how many there
/// are, and one problem per broken session, naming its first break.
pub fn verify_sessions(log: &Log) -> (usize, Vec<String>) {
    let sessions = sessions(log);
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
