//! FunctionCall (fast path) on the wire, and the catalog queries the engine
//! sends of its own to judge it (see [`crate::fastpath`]).
//!
//! The engine's own queries go to the server ahead of a client message, in the
//! same write, and are tracked in the engine's queue of pending requests like
//! the client's; their answers (through ReadyForQuery) never reach the client
//! or the masker. They are sent only where the server is sure to answer them:
//! never inside an extended-protocol batch (after an error there the server
//! skips every message, a Query too, up to the next Sync), and never in shadow
//! mode, which adds no traffic.
//!
//! - The fast-path functions the configuration names are looked up once, ahead
//!   of the client's first Query, Parse or FunctionCall. A FunctionCall sent
//!   before the lookup has answered is refused.
//! - A FunctionCall is judged as its equivalent SQL when its OID is one the
//!   lookup found, and refused otherwise; a refused call's function is named by
//!   a second lookup sent ahead of the refusal, for its record.

use super::ledger::{Injected, Owner, Pending};
use super::{Disposition, Session, StatementText};
use crate::deny;
use crate::fastpath::{self, FunctionName, Signature};
use crate::protocol::{self as pg, BackendMessage, FrontendMessage};
use gatehouse_core::policy::{Action as PolicyAction, Decision};
use std::collections::HashMap;
use std::sync::Arc;

/// The rule recorded for FunctionCalls refused because the function may not be
/// called through the fast path.
pub(super) const FAST_PATH_RULE: &str = "gatehouse:fast-path";

/// Where the lookup of the configured functions stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lookup {
    /// Not sent yet.
    #[default]
    Due,
    Sent,
    Done,
    /// The server refused it, or the session never sends it (shadow mode,
    /// nothing configured): no call is allowed.
    Unavailable,
}

/// The session's view of the fast-path functions.
#[derive(Debug, Default)]
pub(super) struct FastPathTable {
    lookup: Lookup,
    /// OID → the function, for every overload of the configured names.
    functions: HashMap<u32, Signature>,
    /// Requests to send ahead of the client message being handled.
    ahead: Vec<OwnRequest>,
    /// An extended-protocol batch is open: no Sync since its first message.
    batch_open: bool,
}

impl FastPathTable {
    /// Bytes held (for the session's memory count).
    pub(super) fn held_bytes(&self) -> usize {
        self.functions
            .values()
            .map(|s| 64 + s.schema.len() + s.name.len() + 4 * s.arg_types.len())
            .sum()
    }
}

/// A query the engine sends of its own.
#[derive(Debug)]
pub(super) enum OwnRequest {
    /// Finds the OIDs of the configured fast-path functions.
    FastPathFunctions,
    /// Names the function of a refused FunctionCall (for its record).
    FunctionName { args: usize, oid: u32 },
}

impl OwnRequest {
    fn sql(&self, configured: &[FunctionName]) -> Option<String> {
        match self {
            OwnRequest::FastPathFunctions => fastpath::lookup_sql(configured),
            OwnRequest::FunctionName { oid, .. } => Some(fastpath::name_sql(*oid)),
        }
    }
}

impl Session {
    fn configured_fast_path_functions(&self) -> Vec<FunctionName> {
        self.config
            .fast_path_functions
            .iter()
            .filter_map(|name| FunctionName::parse(name).ok())
            .collect()
    }

    /// A client message after login: the engine's handling (with masking), and
    /// the engine's own queries sent ahead of it.
    pub(super) fn frontend_with_own_requests(
        &mut self,
        msg: &FrontendMessage<'_>,
        tag: u8,
        body: &[u8],
        now_us: u64,
    ) -> Result<Disposition, String> {
        let first_request = matches!(tag, pg::QUERY_TAG | pg::PARSE_TAG | pg::FUNCTION_CALL_TAG);
        let may_send = !self.fast_path.batch_open && self.mode.is_enforce();
        if self.fast_path.lookup == Lookup::Due && first_request {
            let judged = self.statement_policy.is_some()
                || self.login_method == super::login::LoginMethod::Token;
            if self.config.fast_path_functions.is_empty() || !self.mode.is_enforce() || !judged {
                self.fast_path.lookup = Lookup::Unavailable;
            } else if may_send {
                self.fast_path.lookup = Lookup::Sent;
                self.fast_path.ahead.push(OwnRequest::FastPathFunctions);
            }
        }
        let queued = self.ledger.requests.len();
        let result = self.frontend_with_masking(msg, tag, body, now_us);
        self.note_batch_message(tag);
        let ahead = std::mem::take(&mut self.fast_path.ahead);
        let action = result?;
        if ahead.is_empty() || !may_send {
            return Ok(action);
        }
        let configured = self.configured_fast_path_functions();
        let mut bytes = Vec::new();
        for (i, request) in ahead.into_iter().enumerate() {
            let Some(sql) = request.sql(&configured) else {
                continue;
            };
            FrontendMessage::Query {
                sql: sql.as_bytes(),
            }
            .encode(&mut bytes);
            // Before the client message's own requests: its answers come first.
            let at = (queued + i).min(self.ledger.requests.len());
            self.ledger
                .requests
                .insert(at, Pending::Injected(Injected::FastPath(request)));
        }
        Ok(match action {
            Disposition::Pass => {
                bytes.push(tag);
                let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
                bytes.extend_from_slice(&len.to_be_bytes());
                bytes.extend_from_slice(body);
                Disposition::Replace(bytes)
            }
            Disposition::Replace(rest) => {
                bytes.extend_from_slice(&rest);
                Disposition::Replace(bytes)
            }
            Disposition::Drop | Disposition::Withhold => Disposition::Replace(bytes),
        })
    }

    /// Follows the extended-protocol batches the client opens (streamed
    /// messages included) and closes with Sync.
    pub(super) fn note_batch_message(&mut self, tag: u8) {
        match tag {
            pg::PARSE_TAG | pg::BIND_TAG | pg::DESCRIBE_TAG | pg::EXECUTE_TAG | pg::CLOSE_TAG => {
                self.fast_path.batch_open = true;
            }
            pg::SYNC_TAG => self.fast_path.batch_open = false,
            _ => {}
        }
    }

    /// Whether the next server message answers one of the engine's own queries.
    pub(super) fn answering_own_request(&self) -> bool {
        self.ledger.front_is_injected(Owner::FastPath)
    }

    /// A server message answering one of the engine's own queries: consumed,
    /// except the asynchronous ones, which belong to the client.
    pub(super) fn on_own_answer(
        &mut self,
        tag: u8,
        body: &[u8],
        now_us: u64,
    ) -> Result<Disposition, String> {
        let msg = BackendMessage::decode(tag, body).map_err(|e| e.to_string())?;
        match msg {
            BackendMessage::ParameterStatus { .. }
            | BackendMessage::NoticeResponse { .. }
            | BackendMessage::NotificationResponse { .. } => {
                return self.backend_decoded_with_masking(msg, tag, body, now_us);
            }
            BackendMessage::RowDescription { .. }
            | BackendMessage::CommandComplete { .. }
            | BackendMessage::EmptyQueryResponse => {}
            BackendMessage::DataRow { values } => self.on_own_row(&values),
            BackendMessage::ErrorResponse { .. } => {
                if matches!(
                    self.ledger.requests.front(),
                    Some(Pending::Injected(Injected::FastPath(
                        OwnRequest::FastPathFunctions
                    )))
                ) {
                    self.fast_path.lookup = Lookup::Unavailable;
                    self.fast_path.functions.clear();
                }
            }
            BackendMessage::ReadyForQuery { .. } => {
                if let Some(Pending::Injected(Injected::FastPath(OwnRequest::FastPathFunctions))) =
                    self.ledger.requests.pop_front()
                    && self.fast_path.lookup == Lookup::Sent
                {
                    self.fast_path.lookup = Lookup::Done;
                }
            }
            other => {
                return Err(format!(
                    "message type {} in answer to the gateway's catalog query",
                    pg::tag_name(other.tag())
                ));
            }
        }
        Ok(Disposition::Drop)
    }

    fn on_own_row(&mut self, values: &[Option<&[u8]>]) {
        match self.ledger.requests.front() {
            Some(Pending::Injected(Injected::FastPath(OwnRequest::FastPathFunctions))) => {
                if let Some((oid, signature)) = fastpath::parse_lookup_row(values) {
                    self.fast_path.functions.insert(oid, signature);
                }
            }
            Some(Pending::Injected(Injected::FastPath(OwnRequest::FunctionName {
                args, ..
            }))) => {
                let args = *args;
                let Some((schema, name)) = fastpath::parse_name_row(values) else {
                    return;
                };
                // The refused call is the next request.
                let decision = match self.ledger.requests.get(1) {
                    Some(Pending::FunctionCall(Some(run))) => {
                        run.text.as_ref().and_then(|t| t.decision.clone())
                    }
                    _ => return,
                };
                let sql = fastpath::named_call_sql(&schema, &name, args);
                let mut named = self.statement_text(sql.as_bytes(), false);
                named.kind = None;
                named.decision = decision;
                if let Some(Pending::FunctionCall(Some(run))) = self.ledger.requests.get_mut(1) {
                    run.text = Some(Arc::new(named));
                }
            }
            _ => {}
        }
    }

    /// A FunctionCall (already enqueued): judged as the SQL call it is when its
    /// function may be called through the fast path, refused otherwise. A
    /// refused call becomes the raising block, which the server answers as it
    /// would the call: ErrorResponse and ReadyForQuery.
    pub(super) fn enforce_function_call(
        &mut self,
        call: &pg::FunctionCall<'_>,
        now_us: u64,
    ) -> Disposition {
        if self.statement_policy.is_none() && self.login_method != super::login::LoginMethod::Token
        {
            return Disposition::Pass;
        }
        let (sql, decision) = match self.fast_path.functions.get(&call.oid) {
            Some(signature) => {
                let sql = fastpath::equivalent_sql(signature, call);
                let decision = self.judge_text(sql.as_bytes(), now_us);
                (sql, decision)
            }
            None => {
                let refusal = self.fast_path_refusal(call.oid);
                if !self.fast_path.batch_open && self.applies(&refusal) {
                    self.fast_path.ahead.push(OwnRequest::FunctionName {
                        args: call.args.len(),
                        oid: call.oid,
                    });
                }
                (
                    format!("-- fast-path call of function {}", call.oid),
                    Some(refusal),
                )
            }
        };
        let mut text: StatementText = self.statement_text(sql.as_bytes(), false);
        // Recorded as the function call it is, described by the judged text.
        text.kind = None;
        text.decision = decision.clone();
        if let Some(Pending::FunctionCall(Some(run))) = self.ledger.requests.back_mut() {
            run.text = Some(Arc::new(text));
        }
        match decision.filter(|d| self.applies(d)) {
            Some(blocking) => Disposition::Replace(deny::query(&deny::denial_message(&blocking))),
            None => Disposition::Pass,
        }
    }

    /// Why a call of a function the session does not know is refused.
    fn fast_path_refusal(&self, oid: u32) -> Decision {
        let message = match self.fast_path.lookup {
            Lookup::Done | Lookup::Unavailable if self.config.fast_path_functions.is_empty() => {
                format!(
                    "gatehouse: function {oid} may not be called through the fast-path \
                     interface; call it in SQL"
                )
            }
            Lookup::Done => format!(
                "gatehouse: function {oid} is not one the fast-path interface may call \
                 (fast_path_functions); call it in SQL"
            ),
            Lookup::Due | Lookup::Sent => "gatehouse: a fast-path call must wait for the \
                 answer to the session's first statement"
                .to_owned(),
            Lookup::Unavailable => "gatehouse: the functions the fast-path interface may \
                 call could not be looked up; call them in SQL"
                .to_owned(),
        };
        Decision {
            action: PolicyAction::Deny,
            rule: Some(FAST_PATH_RULE.to_owned()),
            message: Some(message),
        }
    }
}
