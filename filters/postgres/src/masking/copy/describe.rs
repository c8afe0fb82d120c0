//! The describe sent ahead of a COPY: the messages that ask the server for
//! its columns, when they may be sent, and its answers, consumed.

use super::super::{
    Disposition, Expect, OwnAnswer, OwnRequest, SessionMasker, Transaction, values,
};
use super::{CopyStatement, DescribedFields, copy_statements};
use crate::protocol::{BackendMessage, FrontendMessage};
use std::collections::VecDeque;
use std::rc::Rc;

/// The statement the extended-protocol describe prepares (and closes): named,
/// so the client's unnamed statement is left alone.
const DESCRIBE_STATEMENT: &[u8] = b"gatehouse_copy_describe";

/// The Parse + Describe + Sync that asks for a COPY's columns, with the
/// unnamed statement (ahead of a simple Query, which destroys it anyway).
pub fn describe_messages(sql: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len() + 32);
    for msg in [
        FrontendMessage::Parse {
            name: b"",
            sql: sql.as_bytes(),
            param_types: Vec::new(),
        },
        FrontendMessage::Describe {
            kind: b'S',
            name: b"",
        },
        FrontendMessage::Sync,
    ] {
        msg.encode(&mut out);
    }
    out
}

/// The same with a statement of its own, closed again (Parse + Describe +
/// Close + Sync), ahead of an extended-protocol Parse or Bind.
pub fn named_describe_messages(sql: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len() + 96);
    for msg in [
        FrontendMessage::Parse {
            name: DESCRIBE_STATEMENT,
            sql: sql.as_bytes(),
            param_types: Vec::new(),
        },
        FrontendMessage::Describe {
            kind: b'S',
            name: DESCRIBE_STATEMENT,
        },
        FrontendMessage::Close {
            kind: b'S',
            name: DESCRIBE_STATEMENT,
        },
        FrontendMessage::Sync,
    ] {
        msg.encode(&mut out);
    }
    out
}

impl SessionMasker {
    /// Follows extended-protocol batches: a describe is never sent inside one
    /// (its Sync would end the client's implicit transaction early, and its
    /// failure abort the client's batch).
    /// Also follows prepared statements that are a `COPY … TO STDOUT`.
    pub(in crate::masking) fn note_batch(&mut self, msg: &FrontendMessage<'_>) {
        self.at_boundary = !self.batch_open;
        self.copy_describe_next = None;
        match msg {
            FrontendMessage::Parse { .. }
            | FrontendMessage::Bind(_)
            | FrontendMessage::Close { .. }
            | FrontendMessage::Describe { .. }
            | FrontendMessage::Execute { .. }
            | FrontendMessage::Flush => self.batch_open = true,
            FrontendMessage::Sync => self.batch_open = false,
            _ => {}
        }
    }

    /// A Parse: the `COPY … TO STDOUT` the statement is, if it is one (kept
    /// on the statement's ledger entry).
    pub(in crate::masking) fn note_prepared(&mut self, sql: &[u8]) -> Option<Rc<CopyStatement>> {
        if self.policy.rules.is_empty() {
            return None;
        }
        let mut copies = copy_statements(sql, self.lexing.settings());
        if copies.len() != 1 {
            return None;
        }
        let statement = Rc::new(copies.pop_front()?);
        // A statement may be prepared and never run: its describe must not be
        // able to abort the client's transaction block, so it is sent here
        // only outside one (inside, at each Bind, where the COPY runs next).
        if matches!(self.transaction, Transaction::Idle) {
            self.copy_describe_next = Some(Rc::clone(&statement));
        }
        Some(statement)
    }

    /// The COPY statements of a simple Query, tracked with it.
    pub(in crate::masking) fn copies_of(&self, sql: &[u8]) -> VecDeque<CopyStatement> {
        if self.policy.rules.is_empty() {
            return VecDeque::new();
        }
        copy_statements(sql, self.lexing.settings())
    }

    /// The messages that describe the columns of the COPY the client message
    /// just seen by [`SessionMasker::on_frontend`] starts (a Query's first
    /// statement) or prepares or binds (a Parse or Bind), to send ahead of it;
    /// `None` when there is none or it must not be sent. Call only when the
    /// server has answered everything before this message (but the masker's
    /// own requests); the request goes into the ledger ahead of the client's.
    pub(crate) fn take_copy_describe(&mut self) -> Option<(Vec<u8>, OwnRequest)> {
        if matches!(self.transaction, Transaction::Failed { .. }) || !self.at_boundary {
            return None;
        }
        let (statement, bytes, at) = match self.copy_describe_next.take() {
            Some(statement) => {
                let sql = statement.describe_sql.as_deref()?;
                // Ahead of the Parse or Bind just expected.
                let at = self.expected.len()
                    - usize::from(matches!(
                        self.expected.back(),
                        Some(Expect::Parse { .. } | Expect::Bind { .. })
                    ));
                (Rc::clone(&statement), named_describe_messages(sql), at)
            }
            // A Query leaves no batch open; a Parse or Bind does.
            None if !self.batch_open => {
                let Some(Expect::Query { copies, .. }) = self.expected.back() else {
                    return None;
                };
                let first = copies.front()?;
                let sql = first.describe_sql.as_deref()?;
                let bytes = describe_messages(sql);
                (Rc::new(first.clone()), bytes, self.expected.len() - 1)
            }
            None => return None,
        };
        // Nothing of the client's may be awaiting answers before it.
        if at > 0 {
            return None;
        }
        // A stale description must not outlive a describe that fails.
        statement.fields.replace(None);
        let request = OwnRequest::CopyDescribe {
            fields: Rc::clone(&statement.fields),
            in_block: matches!(self.transaction, Transaction::InBlock),
            error: None,
        };
        Some((bytes, request))
    }

    /// The answers to the injected describe; the description goes to the
    /// COPY of the Query that follows.
    pub(in crate::masking) fn on_copy_describe_answer(
        &mut self,
        described: &DescribedFields,
        in_block: bool,
        error: &mut Option<Vec<u8>>,
        msg: &BackendMessage<'_>,
    ) -> OwnAnswer {
        match msg {
            BackendMessage::RowDescription { body } => {
                if let Ok(fields) = values::parse_row_description(body) {
                    described.replace(Some(Rc::new(fields)));
                }
            }
            BackendMessage::ErrorResponse { fields } if in_block => {
                // Kept for the COPY's `25P02` answer (see the module docs).
                let kept: Vec<(u8, &[u8])> = fields
                    .iter()
                    .copied()
                    .filter(|(code, _)| *code != b'P')
                    .collect();
                let mut bytes = Vec::new();
                BackendMessage::ErrorResponse { fields: kept }.encode(&mut bytes);
                *error = Some(bytes);
            }
            BackendMessage::ReadyForQuery { status } => {
                let error = error.take();
                self.transaction = match Transaction::from_status(*status) {
                    // The block failed: the error goes to the COPY that
                    // follows (answered `25P02`).
                    Transaction::Failed { .. } => Transaction::Failed {
                        copy_describe_error: error,
                    },
                    other => other,
                };
                return OwnAnswer::Answered;
            }
            _ => {}
        }
        OwnAnswer::Consumed
    }

    /// An ErrorResponse after a COPY's describe failed in a transaction block:
    /// when it is the client request's `25P02`, the describe's error (masked
    /// like any error) takes its place.
    pub(in crate::masking) fn copy_error(
        &mut self,
        msg: &BackendMessage<'_>,
        fields: &[(u8, &[u8])],
    ) -> Option<Disposition> {
        let in_failed_block = fields
            .iter()
            .any(|(code, value)| *code == b'C' && *value == b"25P02");
        if !in_failed_block {
            return None;
        }
        let Transaction::Failed {
            copy_describe_error,
        } = &mut self.transaction
        else {
            return None;
        };
        let saved = copy_describe_error.take()?;
        let quoted = self.statement_reads_masked();
        self.on_error();
        let Ok(BackendMessage::ErrorResponse { fields }) = BackendMessage::decode(
            crate::protocol::ERROR_RESPONSE_TAG,
            saved.get(5..).unwrap_or_default(),
        ) else {
            return None;
        };
        Some(match self.mask_fields(msg, &fields, quoted) {
            Disposition::Pass => Disposition::Replace(saved),
            masked => masked,
        })
    }
}
