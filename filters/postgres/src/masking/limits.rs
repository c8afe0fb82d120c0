//! Result-size guardrails: a policy caps the rows and the bytes of rows one
//! statement may return to an identity (see [`ResultLimit`]). Rows are
//! counted per statement (a Query's statement, or a portal across the
//! Executes that suspend it) as they pass. Past the cap:
//! - `error`: the row that crosses it is replaced by an ErrorResponse
//!   (SQLSTATE 54000) and everything after it up to ReadyForQuery is withheld
//!   (the rest of the batch, as after any error). The server has run the
//!   statement: the message says the rest was withheld, not that it failed.
//! - `truncate`: the row that crosses it is replaced by a NoticeResponse and
//!   the statement's remaining rows are withheld; its CommandComplete counts
//!   the rows the client got.
//!
//! Either way the statement's record says so (`masking.limited`). A row
//! that streams through (over the engine's buffer limit) cannot be withheld
//! once its length is sent: past the cap, its values are blanked instead.

use super::config::{PastLimit, ResultLimit};
use super::{Disposition, SessionMasker};
use crate::protocol::BackendMessage;
use gatehouse_core::record::LimitedResult;

/// SQLSTATE program_limit_exceeded.
const LIMIT_SQLSTATE: &[u8] = b"54000";

/// Where the current statement's result stands against the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Guard {
    #[default]
    Open,
    /// Truncated: its remaining rows are withheld.
    Truncating,
    /// Ended with an error: everything up to ReadyForQuery is withheld.
    Failed,
}

/// Per-statement counts against the limit.
#[derive(Debug, Default)]
pub(super) struct ResultGuard {
    pub(super) limit: Option<ResultLimit>,
    rows: u64,
    bytes: u64,
    /// Rows the client got before the limit tripped.
    delivered: u64,
    pub(super) state: Guard,
    /// What the next statement record reports.
    pub(super) limited: Option<LimitedResult>,
}

impl ResultGuard {
    /// A statement's result ended (CommandComplete, an error, ReadyForQuery).
    pub(super) fn statement_ended(&mut self) {
        self.rows = 0;
        self.bytes = 0;
        if self.state == Guard::Truncating {
            self.state = Guard::Open;
        }
    }

    fn withheld(&mut self) {
        if let Some(limited) = self.limited.as_mut() {
            limited.rows_withheld = limited.rows_withheld.saturating_add(1);
        }
    }

    /// Counts one row of `len` bytes; the limit it crosses, if any.
    fn count(&mut self, len: usize) -> Option<(&'static str, u64)> {
        let limit = self.limit.as_ref()?;
        self.rows = self.rows.saturating_add(1);
        self.bytes = self.bytes.saturating_add(len as u64);
        if let Some(max) = limit.max_rows
            && self.rows > max
        {
            return Some(("max_rows", max));
        }
        if let Some(max) = limit.max_bytes
            && self.bytes > max
        {
            return Some(("max_bytes", max));
        }
        None
    }
}

impl SessionMasker {
    /// The result-size limit for this session's identity, if any.
    pub fn set_limit(&mut self, limit: Option<ResultLimit>) {
        self.guard.limit = limit;
    }

    /// A DataRow of `len` bytes: what replaces it when the limit withholds
    /// it; `None` when it goes on to masking.
    pub(super) fn guard_row(&mut self, len: usize) -> Option<Disposition> {
        if self.guard.state != Guard::Open {
            self.guard.withheld();
            return Some(Disposition::Withhold);
        }
        let (limit, value) = self.guard.count(len)?;
        self.guard.delivered = self.guard.rows.saturating_sub(1);
        let past = self.guard.limit.as_ref().map(|l| l.past_limit)?;
        let unit = if limit == "max_rows" { "rows" } else { "bytes" };
        self.guard.limited = Some(LimitedResult {
            limit: limit.into(),
            value,
            action: match past {
                PastLimit::Error => "error".into(),
                PastLimit::Truncate => "truncate".into(),
            },
            rows_withheld: 1,
        });
        let mut out = Vec::new();
        match past {
            PastLimit::Error => {
                self.guard.state = Guard::Failed;
                let message = format!(
                    "gatehouse: the result exceeds the limit of {value} {unit} for your identity; \
                     the rest is withheld (the statement itself ran)"
                );
                BackendMessage::ErrorResponse {
                    fields: vec![
                        (b'S', b"ERROR"),
                        (b'V', b"ERROR"),
                        (b'C', LIMIT_SQLSTATE),
                        (b'M', message.as_bytes()),
                    ],
                }
                .encode(&mut out);
            }
            PastLimit::Truncate => {
                self.guard.state = Guard::Truncating;
                let message = format!(
                    "gatehouse: the result is limited to {value} {unit} for your identity; \
                     the rest is withheld"
                );
                BackendMessage::NoticeResponse {
                    fields: vec![
                        (b'S', b"NOTICE"),
                        (b'V', b"NOTICE"),
                        (b'C', LIMIT_SQLSTATE),
                        (b'M', message.as_bytes()),
                    ],
                }
                .encode(&mut out);
            }
        }
        Some(Disposition::Replace(out))
    }

    /// A server message other than DataRow while the limit withholds: the
    /// action that replaces the masker's own, if any.
    pub(super) fn guard_message(&mut self, msg: &BackendMessage<'_>) -> Option<Disposition> {
        match (self.guard.state, msg) {
            (_, BackendMessage::ReadyForQuery { .. }) => {
                self.guard.state = Guard::Open;
                self.guard.statement_ended();
                None
            }
            // Messages the server sends on its own belong to the client.
            (
                _,
                BackendMessage::NotificationResponse { .. }
                | BackendMessage::ParameterStatus { .. }
                | BackendMessage::NoticeResponse { .. },
            ) => None,
            (Guard::Failed, _) => Some(Disposition::Withhold),
            (Guard::Truncating, BackendMessage::CommandComplete { tag }) => {
                // The client's count: the rows it got.
                let delivered = self.guard.delivered;
                let tag = String::from_utf8_lossy(tag);
                let rewritten = match tag.rsplit_once(' ') {
                    Some((head, count)) if count.parse::<u64>().is_ok() => {
                        format!("{head} {delivered}")
                    }
                    _ => tag.into_owned(),
                };
                self.guard.statement_ended();
                let mut out = Vec::new();
                BackendMessage::CommandComplete {
                    tag: rewritten.as_bytes(),
                }
                .encode(&mut out);
                Some(Disposition::Replace(out))
            }
            (
                _,
                BackendMessage::CommandComplete { .. }
                | BackendMessage::EmptyQueryResponse
                | BackendMessage::ErrorResponse { .. },
            ) => {
                self.guard.statement_ended();
                None
            }
            _ => None,
        }
    }

    /// Whether a streamed DataRow is past the limit (its values are blanked).
    pub(super) fn guard_streamed_row(&mut self, len: usize) -> bool {
        if self.guard.state != Guard::Open {
            self.guard.withheld();
            return true;
        }
        match self.guard.count(len) {
            Some((limit, value)) => {
                self.guard.limited = Some(LimitedResult {
                    limit: limit.into(),
                    value,
                    action: "truncate".into(),
                    rows_withheld: 1,
                });
                self.guard.state = Guard::Truncating;
                true
            }
            None => false,
        }
    }
}
