//! Policy enforcement hooks of the session: judging Query and Parse texts and
//! rewriting what a blocking decision touches (see [`crate::deny`]).
//!
//! Extended protocol, for a statement whose Parse was denied:
//! - the Parse becomes a Parse of the same name as the raising DO block, and the
//!   statement is guarded as denied in the ledger (undone with it when the
//!   server refuses or skips the Parse; a new Parse or a Close replaces it);
//! - every Bind to it loses its parameters and formats (a DO block takes none), so
//!   the parameters never reach the server either; so does a Bind that may bind
//!   it on the server (see the ledger's `bind_targets`);
//! - Describe of it would reveal the DO block's (empty) description, so it becomes
//!   Bind + Execute of a private portal: the server raises the denial there, and its
//!   BindComplete is dropped;
//! - Execute of a portal bound to it runs the block, which raises the denial.
//!
//! The server's ErrorResponse for the denial loses its CONTEXT, file, line and
//! routine fields on the way back.

use super::approvals::Gated;
use super::ledger::{Guard, Injected, Pending, Undo};
use super::{Disposition, Phase, Session, StatementRun};
use crate::deny;
use crate::framing::{Forward, Output};
use crate::guard::StatementPolicy;
use crate::policy::{Lexing, SessionContext};
use crate::protocol::{self as pg, BackendMessage};
use crate::sql::{Settings, encoding};
use gatehouse_core::identity::Identity;
use gatehouse_core::policy::{Action as PolicyAction, Decision};
use gatehouse_core::record::{EndReason, PgProtocol};
use std::sync::Arc;

/// When the statements of a judged text run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TextRuns {
    /// A simple Query: as it is read.
    Now,
    /// A Parse: at each Bind of it, later.
    AtEachBind,
}

/// The pseudo-rule that refuses an EXECUTE in a Parse while approvals are on.
pub const EXECUTE_IN_PARSE_RULE: &str = "(execute-in-parse)";
/// Its message.
pub const EXECUTE_IN_PARSE: &str = "gatehouse: EXECUTE cannot be sent in a Parse while \
     approvals are on, as it runs whatever the name holds when bound; send it as a simple \
     query";
/// The message of a refused EXECUTE of a prepared statement that needs approval.
pub const EXECUTE_NEEDS_APPROVAL: &str = "gatehouse: a prepared statement that needs \
     approval cannot be run with EXECUTE; run it with Bind, where each run is checked";

impl Session {
    /// Judges every Query and Parse text by `policy` from now on. Without one, every
    /// statement is allowed and recorded as such.
    pub fn set_statement_policy(&mut self, policy: Box<dyn StatementPolicy>) {
        self.statement_policy = Some(policy);
    }

    /// The identity the policy judges statements for. Until it is set, the identity
    /// is the user claimed in the startup message (unverified, no groups).
    pub fn set_identity(&mut self, identity: Identity) {
        self.policy_identity = Some(identity);
    }

    /// Whether a policy judges this session's statements.
    pub fn has_statement_policy(&self) -> bool {
        self.statement_policy.is_some()
    }

    pub(super) fn policy_context(&self) -> SessionContext {
        let client = &*self.client;
        SessionContext {
            identity: self
                .policy_identity
                .clone()
                .unwrap_or_else(|| Identity::claimed(client.user.clone())),
            database: client.database.clone(),
            role: client.user.clone(),
            lexing: self.lexing(),
        }
    }

    /// How the server will lex the text being judged.
    pub(super) fn lexing(&self) -> Lexing {
        Lexing {
            // Anything unanswered may change a setting before the server reads
            // the text being judged (its report comes with ReadyForQuery).
            settings_in_flight: self.ledger.client_requests() > 0,
            ..self.server_lexing.clone()
        }
    }

    /// Ends the session because the server reported a client encoding the filter
    /// cannot read: the client gets a FATAL in place of the report.
    fn end_for_encoding(&mut self, value: &str, now_us: u64) -> Disposition {
        let reason = if self.phase() == Phase::Authenticating {
            EndReason::StartupRefused
        } else {
            EndReason::ProtocolError
        };
        let failure = super::Failure {
            sqlstate: "0A000",
            client_message: format!(
                "gatehouse: client encoding {value} is refused: a character can hold a \
                 quote or backslash byte; use UTF8"
            ),
            reason,
            detail: format!(
                "the server switched client_encoding to {value}, in which statements \
                 cannot be read reliably"
            ),
        };
        let mut out = Output::new(&[]);
        self.fail(super::Dir::Backend, failure, &mut out, now_us);
        match out.finish(false).forward {
            Forward::Replace(bytes) => Disposition::Replace(bytes),
            Forward::Unchanged => Disposition::Drop,
        }
    }

    /// How the server lexes the session's next text, as it last reported.
    pub(super) fn lexer_settings(&self) -> Settings {
        self.server_lexing.settings()
    }

    /// A ParameterStatus from the server: the settings that decide how it lexes are
    /// tracked. A client encoding the filter cannot read (see
    /// [`crate::sql::encoding`]) ends the session with a clean error at once, before
    /// anything else from the client is forwarded.
    pub(super) fn on_parameter_status(
        &mut self,
        name: &[u8],
        value: &[u8],
        now_us: u64,
    ) -> Option<Disposition> {
        let value = String::from_utf8_lossy(value);
        match name {
            b"standard_conforming_strings" => {
                self.server_lexing.standard_conforming_strings = value == "on";
            }
            b"client_encoding" => {
                self.server_lexing.client_encoding = value.to_string();
                if !encoding::is_safe_client_encoding(&value) {
                    return Some(self.end_for_encoding(&value, now_us));
                }
            }
            _ => {}
        }
        None
    }

    /// The decision about a Query or Parse text: a denial once the login token
    /// expired, else the policy's; `None` without either.
    pub(super) fn judge_text(&mut self, sql: &[u8], now_us: u64) -> Option<Decision> {
        self.judge_text_as(sql, TextRuns::Now, now_us)
    }

    /// [`Self::judge_text`] for a text that runs `when`.
    pub(super) fn judge_text_as(
        &mut self,
        sql: &[u8],
        when: TextRuns,
        now_us: u64,
    ) -> Option<Decision> {
        if let Some(expired) = self.expired_token_denial(now_us) {
            return Some(expired);
        }
        let ctx = self.policy_context();
        let text = String::from_utf8_lossy(sql);
        let verdict = self
            .statement_policy
            .as_mut()
            .map(|policy| policy.decide(&ctx, &text));
        let decision = verdict.map(|verdict| {
            self.execute_refusal(&verdict.executes, when)
                .filter(|_| verdict.decision.action != PolicyAction::Deny)
                .unwrap_or(verdict.decision)
        });
        self.with_masking_refusal(sql, decision)
    }

    /// With approvals on, an EXECUTE must not run a statement that needs
    /// approval, whose Binds alone are checked: refused when the name may hold
    /// one, and in a Parse refused outright, since it runs whatever the name
    /// holds at each Bind.
    fn execute_refusal(&self, executes: &[String], when: TextRuns) -> Option<Decision> {
        self.approvals.as_ref()?;
        if executes.is_empty() {
            return None;
        }
        if when == TextRuns::AtEachBind {
            return Some(Decision {
                action: PolicyAction::Deny,
                rule: Some(EXECUTE_IN_PARSE_RULE.to_string()),
                message: Some(EXECUTE_IN_PARSE.to_string()),
            });
        }
        let gated = executes.iter().find_map(|name| {
            self.ledger
                .bind_targets(name.as_bytes())
                .into_iter()
                .find(|target| matches!(target.guard, Guard::Gated(_)))
        })?;
        let rule = gated.text.decision.as_ref().and_then(|d| d.rule.clone());
        Some(Decision {
            action: PolicyAction::Deny,
            rule,
            message: Some(EXECUTE_NEEDS_APPROVAL.to_string()),
        })
    }

    /// Whether `decision` blocks here: in shadow mode nothing is blocked, the
    /// decision is only recorded.
    pub(super) fn applies(&self, decision: &Decision) -> bool {
        decision.action.blocks() && self.mode.is_enforce()
    }

    /// A simple Query: enqueued as usual when allowed; when blocked, recorded as one
    /// denied statement (the whole text) and replaced by the raising block.
    pub(super) fn enforce_query(&mut self, sql: &[u8], now_us: u64) -> Disposition {
        if let Some(action) = self.set_reason_query(sql, now_us) {
            return action;
        }
        let decision = self.judge_text(sql, now_us);
        let Some(blocking) = decision.clone().filter(|d| self.applies(d)) else {
            self.enqueue_query(sql, false, decision, now_us);
            return Disposition::Pass;
        };
        let mut hint = String::new();
        if self.approval_applies(&blocking) {
            match self.gate(&blocking, sql, &[], false, now_us) {
                Gated::Run(approval) => {
                    self.enqueue_query(sql, false, decision, now_us);
                    self.attach_approval_to_last_query(&approval);
                    return Disposition::Pass;
                }
                Gated::Refuse(_, refusal_hint) => hint = refusal_hint,
                // Nothing goes on now: the session sets the Query aside with
                // the bytes after it (see `Session::holds_statement`).
                Gated::Hold => return Disposition::Drop,
            }
        }
        self.refuse_query(sql, blocking, &hint, now_us)
    }

    /// A simple Query refused: recorded as one denied statement (the whole
    /// text) and replaced by the block raising `blocking`'s message with
    /// `hint`.
    pub(super) fn refuse_query(
        &mut self,
        sql: &[u8],
        blocking: Decision,
        hint: &str,
        now_us: u64,
    ) -> Disposition {
        let denial = deny::denial_message(&blocking).with_hint(hint);
        let mut text = self.statement_text(sql, false);
        text.decision = Some(blocking);
        let mut run = StatementRun::new(PgProtocol::Simple, Some(Arc::new(text)), now_us);
        run.bytes_from_client = std::mem::take(&mut self.frontend_bytes_since_record);
        self.ledger.requests.push_back(Pending::Query([run].into()));
        Disposition::Replace(deny::query(&denial))
    }

    /// A Parse: registered with its decision (with what it replaced in the
    /// ledger, to undo); a blocked one is remembered by name and replaced by a
    /// Parse of the raising block.
    pub(super) fn enforce_parse(
        &mut self,
        name: &[u8],
        sql: &[u8],
        now_us: u64,
    ) -> Result<(Disposition, Undo), String> {
        let decision = self.judge_text_as(sql, TextRuns::AtEachBind, now_us);
        let undo = self.register_statement(name, sql, false, decision.clone());
        let Some(blocking) = decision.filter(|d| self.applies(d)) else {
            return Ok((Disposition::Pass, undo));
        };
        // Approval is checked at each Bind, with the parameters, against the
        // text kept with the statement (see the ledger's `Guard`).
        if self.approval_applies(&blocking)
            && self
                .ledger
                .guard_statement(name, Guard::Gated(Arc::from(sql)))
        {
            return Ok((Disposition::Pass, undo));
        }
        // A denied statement the ledger cannot track could have its Binds'
        // parameters reach the server: the session ends instead.
        if !self.ledger.guard_statement(name, Guard::Denied) {
            return Err(format!(
                "more than {} prepared statements, one of them denied",
                self.config.max_prepared_statements
            ));
        }
        let message = deny::denial_message(&blocking);
        Ok((Disposition::Replace(deny::parse(name, &message)), undo))
    }

    /// A Bind (already registered): to a denied statement it loses its
    /// parameters; to one needing approval it is checked with them.
    pub(super) fn enforce_bind(&mut self, bind: &pg::Bind<'_>, now_us: u64) -> Disposition {
        if let Some(action) = self.gate_bind(bind, now_us) {
            return action;
        }
        let (portal, statement) = (bind.portal, bind.statement);
        let targets = self.ledger.bind_targets(statement);
        if targets.iter().all(|target| target.guard != Guard::Denied) {
            return Disposition::Pass;
        }
        // Denied, or may be on the server: its parameters stay here.
        let denied = targets
            .first()
            .filter(|target| target.guard == Guard::Denied)
            .map(|target| Arc::clone(&target.text));
        if let Some(text) = denied
            && let Some(entry) = self.ledger.portals.get_mut(super::server_name(portal))
        {
            entry.text = Some(text);
        }
        Disposition::Replace(deny::bind(portal, statement))
    }

    /// A Describe: of a denied statement it makes the server raise the denial.
    pub(super) fn enforce_describe(&mut self, kind: u8, name: &[u8], now_us: u64) -> Disposition {
        // Only when the server holds the raising block whatever is pending
        // (else the private portal could run a text the client only
        // described): the block's empty description is all it could reveal.
        let denied = (kind == b'S')
            .then(|| {
                let targets = self.ledger.bind_targets(name);
                let all_denied = targets.iter().all(|t| t.guard == Guard::Denied);
                all_denied.then(|| targets.first().map(|t| Arc::clone(&t.text)))
            })
            .flatten()
            .flatten();
        let Some(text) = denied else {
            self.ledger.requests.push_back(Pending::Describe);
            return Disposition::Pass;
        };
        let mut run = StatementRun::new(PgProtocol::Extended, Some(text), now_us);
        run.statement_name = super::non_empty(name);
        run.bytes_from_client = std::mem::take(&mut self.frontend_bytes_since_record);
        self.ledger
            .requests
            .push_back(Pending::Injected(Injected::DenialBind));
        self.ledger.requests.push_back(Pending::Execute(run));
        Disposition::Replace(deny::describe_replacement(name))
    }

    /// What the client gets in place of a server message that answers a denial:
    /// nothing for the private portal's BindComplete, a clean error for the raised
    /// denial. `None` for every other message.
    pub(super) fn denial_reply(
        &mut self,
        msg: &BackendMessage<'_>,
        now_us: u64,
    ) -> Option<Disposition> {
        match msg {
            BackendMessage::BindComplete
                if matches!(
                    self.ledger.requests.front(),
                    Some(Pending::Injected(Injected::DenialBind))
                ) =>
            {
                self.ledger.requests.pop_front();
                Some(Disposition::Drop)
            }
            BackendMessage::CloseComplete | BackendMessage::ParseComplete
                if matches!(
                    self.ledger.requests.front(),
                    Some(Pending::Injected(Injected::DenialPrelude))
                ) =>
            {
                self.ledger.requests.pop_front();
                Some(Disposition::Drop)
            }
            BackendMessage::ErrorResponse { fields } => {
                let text = self.ledger.answering_run()?.text.as_ref()?;
                let decision = text.decision.as_ref().filter(|d| d.action.blocks())?;
                if !deny::is_denial(fields, &deny::denial_message(decision)) {
                    return None;
                }
                self.on_error_response(super::statement_error(fields), now_us);
                Some(Disposition::Replace(deny::client_error(fields)))
            }
            _ => None,
        }
    }

    /// A Query or Parse too large to hold cannot be judged, so it cannot be forwarded;
    /// nor can a large Bind while some statement is denied.
    pub(super) fn refuse_unjudgeable(&self, tag: u8, len: usize) -> Result<(), String> {
        let unjudgeable = match tag {
            pg::QUERY_TAG | pg::PARSE_TAG | pg::FUNCTION_CALL_TAG => {
                self.statement_policy.is_some()
            }
            // It might bind a denied statement, whose parameters must not pass.
            pg::BIND_TAG => self.ledger.any_denied(),
            _ => false,
        };
        if unjudgeable {
            return Err(format!(
                "message type {} of {len} bytes is over max_buffered_bytes and cannot be \
                 judged by the statement policy",
                pg::tag_name(tag)
            ));
        }
        Ok(())
    }
}
