//! The bound on what one session holds, in bytes ([`EngineConfig::max_session_bytes`]).
//!
//! A client can send requests without reading the answers: each one leaves a
//! pending entry, statement texts, portal and prepared-statement entries,
//! masking state and, once answered, records. Counts alone do not bound that
//! (one entry can carry a megabyte), so the session counts the bytes it holds
//! ([`Session::accounted_bytes`]).
//!
//! Counting walks every queue and map, too slow to repeat for each message of
//! a client that pipelines thousands. So each message is first charged with
//! the most its handling can add ([`growth_bound`]); only when the charges
//! since the last count could take the session past its bound (or past a
//! sixteenth of it, so that a session kept near its bound is not counted at
//! every message) is it counted again. When that count is over the bound, the
//! session ends before the message is forwarded: `FATAL 53200` for the client
//! in place of the server's next answer, and a session end `memory_limit`. A
//! session therefore holds at most 17/16 of the bound plus one message's worth.
//!
//! [`EngineConfig::max_session_bytes`]: crate::EngineConfig::max_session_bytes

use super::ledger::{Pending, Statement, Undo};
use super::{Dir, Portal, Session, StatementRun, StatementText};
use crate::protocol as pg;
use gatehouse_core::record::{ParameterValue, Record};
use std::mem::size_of;
use std::sync::Arc;

/// Bytes of bookkeeping per request (a pending entry, a statement run) and per
/// map entry, beyond what they point to.
const PER_REQUEST: usize = 512;
/// A statement's run and text, beyond its characters.
const PER_STATEMENT: usize = size_of::<StatementRun>() + size_of::<StatementText>() + 64;
/// A record, beyond its texts.
const PER_RECORD: usize = 1024;
/// Recorded texts can be longer than what the client sent: literals replaced by
/// `$n`, invalid UTF-8 by U+FFFD.
const TEXT_GROWTH: usize = 6;

/// The last count and what has been charged since.
#[derive(Debug, Default)]
pub(super) struct MemoryWatch {
    counted: usize,
    charged: usize,
}

/// The most that handling one message can add to what the session holds.
pub(super) fn growth_bound(dir: Dir, tag: u8, body_len: usize) -> usize {
    match (dir, tag) {
        (Dir::Frontend, pg::QUERY_TAG) => {
            let statements = (body_len / 2 + 1).min(super::MAX_STATEMENTS_PER_QUERY);
            TEXT_GROWTH * body_len + statements * PER_STATEMENT + PER_REQUEST
        }
        // Texts, names (the masker keeps them whole), parameters as recorded
        // (a NULL takes 4 bytes on the wire, more as a value), a rendered call.
        (Dir::Frontend, pg::PARSE_TAG | pg::BIND_TAG | pg::FUNCTION_CALL_TAG) => {
            16 * body_len + PER_STATEMENT + PER_REQUEST
        }
        (
            Dir::Frontend,
            pg::COPY_DATA_TAG
            | pg::COPY_DONE_TAG
            | pg::COPY_FAIL_TAG
            | pg::FLUSH_TAG
            | pg::TERMINATE_TAG
            | pg::PASSWORD_TAG,
        ) => 0,
        (Dir::Frontend, _) => 2 * body_len + PER_REQUEST,
        (Dir::Backend, pg::DATA_ROW_TAG | pg::COPY_DATA_TAG) => 0,
        // A description the masker keeps for the statement or portal.
        (Dir::Backend, pg::ROW_DESCRIPTION_TAG) => 16 * body_len + PER_REQUEST,
        // A completion or error becomes a record.
        (Dir::Backend, _) => 2 * body_len + PER_RECORD,
    }
}

impl Session {
    /// Bytes the session holds: partial frames, requests awaiting answers with
    /// their statement texts and parameters, prepared statements, portals and
    /// denials, records not yet taken, masking and login state. An estimate
    /// (allocator overhead aside), and a walk over all of it: see the module docs.
    pub fn accounted_bytes(&self) -> usize {
        let frames = self.frontend.held_bytes() + self.backend.held_bytes();
        let pending: usize = self
            .ledger
            .requests
            .iter()
            .map(pending_bytes)
            .sum::<usize>()
            + self.ledger.requests.capacity() * size_of::<Pending>();
        let statements: usize = self.ledger.statements.iter().map(statement_bytes).sum();
        let portals: usize = self.ledger.portals.iter().map(portal_bytes).sum();
        let records: usize = self.records.iter().map(record_bytes).sum();
        let masking = self.masker.as_ref().map_or(0, |m| m.held_bytes());
        let login = self.stage.held_bytes();
        size_of::<Session>()
            + frames
            + pending
            + statements
            + portals
            + records
            + masking
            + login
            + self.fast_path.held_bytes()
    }

    /// Before a message's bytes are handled: `Err` (why) when the session holds
    /// more than its bound and must end instead.
    pub(super) fn admit_message(
        &mut self,
        dir: Dir,
        tag: u8,
        body_len: usize,
    ) -> Result<(), String> {
        let limit = self.config.max_session_bytes;
        let bound = growth_bound(dir, tag, body_len);
        let headroom = limit.saturating_sub(self.memory.counted).max(limit / 16);
        if self.memory.charged.saturating_add(bound) > headroom {
            self.memory = MemoryWatch {
                counted: self.accounted_bytes(),
                charged: 0,
            };
            if self.memory.counted > limit {
                return Err(format!(
                    "the session holds {} bytes, over max_session_bytes ({limit})",
                    self.memory.counted
                ));
            }
        }
        self.memory.charged = self.memory.charged.saturating_add(bound);
        Ok(())
    }

    /// The bytes counted at the last count (see [`Session::accounted_bytes`]).
    pub(super) fn last_counted_bytes(&self) -> usize {
        self.memory.counted
    }
}

/// A statement text's bytes, shared out among the places that hold it, so a
/// text held by a prepared statement and a thousand runs counts once.
fn text_share(text: &Arc<StatementText>) -> usize {
    let bytes = size_of::<StatementText>()
        + text.text.len()
        + text.kind.as_ref().map_or(0, String::len)
        + text.decision.as_ref().map_or(0, |d| {
            d.message.as_ref().map_or(0, String::len) + d.rule.as_ref().map_or(0, String::len)
        });
    bytes.div_ceil(Arc::strong_count(text))
}

fn parameters_bytes(parameters: Option<&Vec<ParameterValue>>) -> usize {
    parameters.map_or(0, |values| {
        values.capacity() * size_of::<ParameterValue>()
            + values
                .iter()
                .map(|v| match v {
                    ParameterValue::Text(text) => text.len(),
                    ParameterValue::Binary { base64 } => base64.len(),
                    _ => 0,
                })
                .sum::<usize>()
    })
}

fn run_bytes(run: &StatementRun) -> usize {
    size_of::<StatementRun>()
        + run.text.as_ref().map_or(0, text_share)
        + run.statement_name.as_ref().map_or(0, String::len)
        + run.portal.as_ref().map_or(0, String::len)
        + parameters_bytes(run.parameters.as_ref())
}

fn pending_bytes(entry: &Pending) -> usize {
    match entry {
        Pending::Query(runs) => {
            runs.iter().map(run_bytes).sum::<usize>()
                + (runs.capacity() - runs.len()) * size_of::<StatementRun>()
        }
        Pending::Execute(run) | Pending::FunctionCall(Some(run)) => run_bytes(run),
        Pending::Parse(undo) | Pending::Bind(undo) | Pending::Close(undo) => match undo {
            Undo::Nothing => 0,
            Undo::Statement { name, previous } => {
                name.len() + previous.as_ref().map_or(0, |s| statement_bytes((name, s)))
            }
            Undo::Portal { name, previous, .. } => {
                name.len() + previous.as_ref().map_or(0, |p| portal_bytes((name, p)))
            }
        },
        _ => 0,
    }
}

fn statement_bytes((name, statement): (&Vec<u8>, &Statement)) -> usize {
    let gated = match &statement.guard {
        super::ledger::Guard::Gated(sql) => sql.len(),
        _ => 0,
    };
    PER_REQUEST + name.len() + text_share(&statement.text) + statement.masking.held_bytes() + gated
}

fn portal_bytes((name, portal): (&Vec<u8>, &Portal)) -> usize {
    PER_REQUEST
        + name.len()
        + portal.statement_name.len()
        + portal.text.as_ref().map_or(0, text_share)
        + parameters_bytes(portal.parameters.as_ref())
        + portal.masking.held_bytes()
}

fn record_bytes(record: &Record) -> usize {
    PER_RECORD
        + match record {
            Record::Statement(statement) => {
                statement.statement.as_deref().map_or(0, str::len)
                    + parameters_bytes(statement.parameters.as_ref())
                    + statement
                        .error
                        .as_ref()
                        .map_or(0, |e| e.message.len() + e.sqlstate.len() + e.severity.len())
            }
            Record::SessionEnd(end) => end.detail.as_ref().map_or(0, String::len),
            Record::SessionStart(start) => start.login_refusal.as_ref().map_or(0, String::len),
        }
}
