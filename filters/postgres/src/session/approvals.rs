//! The session's side of approvals (see [`crate::approval`]): statements a
//! `require_approval` rule matches, when the filter is connected to the
//! approval service.
//!
//! - A simple Query is checked at once, its hash over its exact text. With a
//!   gate that holds (the native build) and a rule with a `hold`, a Query
//!   with no grant is held: the session stops reading the client's bytes at
//!   it, keeps it and the bytes after it ([`Session::holds_statement`]), and
//!   reads them again once the service answers
//!   ([`Session::on_hold_answer`]), the Query then judged by that answer.
//! - A Parse is forwarded (preparing runs nothing) and its text kept with
//!   the statement in the ledger; each Bind is checked with its parameters,
//!   against every text the server may hold under the name. A refused Bind
//!   is replaced by
//!   Close + Parse of a private statement holding the raising block + Bind of
//!   the client's portal to it, so the portal's Execute raises the refusal
//!   (the Close's and Parse's answers are not the client's and are dropped).
//! - `SET gatehouse.reason = '…'` sets the session's reason: it is recorded,
//!   sent with every request, and reaches the server only as
//!   [`REASON_REPLACEMENT`].
//!
//! Without the approval service, `require_approval` refuses like a denial.

use super::Dir;
use super::ledger::{Guard, Injected, Pending};
use super::{Disposition, Session, StatementText};
use crate::approval::{
    ApprovalAsk, ApprovalCall, ApprovalGate, GateAnswer, HeldRequest, HoldOutcome,
    REASON_REPLACEMENT,
};
use crate::deny;
use crate::framing::{Forward, Verdict};
use crate::protocol::{self as pg, FrontendMessage};
use gatehouse_core::approval::ApprovalRef;
use gatehouse_core::approval::grant::statement_hash;
use gatehouse_core::policy::{Action as PolicyAction, Decision};
use gatehouse_core::record::Shared;
use std::sync::Arc;

/// The private statement a refused Bind's portal is bound to. Statement names
/// are arbitrary bytes; a client never picks one starting with a control byte.
const PRIVATE_STATEMENT: &[u8] = b"\x01gatehouse_approval";

/// Approval state of one session.
pub(super) struct SessionApprovals {
    gate: ApprovalGate,
    /// What the session said it is doing (`SET gatehouse.reason`).
    reason: Option<Shared<str>>,
    /// The Query held while the service decides, once its bytes are set aside.
    held: Option<HeldStatement>,
    /// A hold began with the message being handled: the session stops there.
    hold_began: bool,
    /// The service's answer about the held Query, while it is read again.
    concluded: Option<(HeldRequest, HoldOutcome)>,
}

/// A simple Query held while the approval service decides its request.
struct HeldStatement {
    request: HeldRequest,
    /// Its text and the decision that asked for approval (for its record if
    /// the client leaves first).
    sql: Vec<u8>,
    decision: Decision,
    /// Its message as the client sent it, then the client's bytes after it
    /// that arrived with it, unread.
    bytes: Vec<u8>,
}

/// How a statement needing approval goes on.
pub(super) enum Gated {
    /// Forward it; records name the approval.
    Run(ApprovalRef),
    /// Refuse it with this decision (the rule's, with its message) and HINT.
    Refuse(Decision, String),
    /// Hold it: the session stops at it until the service answers.
    Hold,
}

impl Session {
    /// Connects the session to the approval service through `gate`: statements
    /// a `require_approval` rule matches are then refused with a request filed,
    /// and pass once approved.
    pub fn set_approval_gate(&mut self, gate: ApprovalGate) {
        self.approvals = Some(SessionApprovals {
            gate,
            reason: None,
            held: None,
            hold_began: false,
            concluded: None,
        });
    }

    /// Whether a Query is held for the approval service's answer: the
    /// client's bytes after it must wait, unread, for
    /// [`Session::on_hold_answer`].
    pub fn holds_statement(&self) -> bool {
        self.approvals.as_ref().is_some_and(|a| a.held.is_some())
    }

    /// The approval service answered the hold (HTTP `status`, 0: no answer):
    /// the held Query is judged by that answer (run, or refused as at once),
    /// and the bytes that came after it are read. Returns everything to
    /// forward to the server in their place; another Query among those bytes
    /// may begin a new hold.
    pub fn on_hold_answer(&mut self, status: u16, body: &[u8], now_us: u64) -> Verdict {
        let Some(approvals) = self.approvals.as_mut() else {
            return nothing();
        };
        let Some(held) = approvals.held.take() else {
            return nothing();
        };
        let outcome = approvals.gate.conclude_hold(&held.request, status, body);
        approvals.concluded = Some((held.request, outcome));
        let verdict = self.process(Dir::Frontend, &held.bytes, now_us);
        if let Some(approvals) = self.approvals.as_mut() {
            // Used by the held Query, or by nothing: never by a later one.
            approvals.concluded = None;
        }
        Verdict {
            forward: Forward::Replace(verdict.bytes(&held.bytes).to_vec()),
            close_connection: verdict.close_connection,
        }
    }

    /// Whether the message just handled began a hold (then its bytes and
    /// the rest of the chunk go to [`Session::set_aside_held`]).
    pub(super) fn hold_began(&mut self) -> bool {
        self.approvals
            .as_mut()
            .is_some_and(|a| std::mem::take(&mut a.hold_began))
    }

    /// Keeps the held Query's message and the unread bytes after it.
    pub(super) fn set_aside_held(&mut self, message_len: usize, bytes: Vec<u8>) {
        // Read again on release, where the message is counted once more.
        self.frontend_bytes_since_record = self
            .frontend_bytes_since_record
            .saturating_sub(message_len as u64);
        if let Some(held) = self.approvals.as_mut().and_then(|a| a.held.as_mut()) {
            held.bytes = bytes;
        }
    }

    /// The client left during a hold: the held Query never ran. It is
    /// recorded as refused (its request stays filed at the service).
    pub(super) fn abandon_hold(&mut self, now_us: u64) {
        let Some(held) = self.approvals.as_mut().and_then(|a| a.held.take()) else {
            return;
        };
        let _ = self.refuse_query(&held.sql, held.decision, "", now_us);
    }

    /// The glue could not file request `id` (the call failed, or the
    /// service refused it): a retry files anew instead of naming it.
    pub fn approval_filing_failed(&mut self, id: &str) {
        if let Some(approvals) = self.approvals.as_mut() {
            approvals.gate.filing_failed(id);
        }
    }

    /// Calls to the approval service the glue must make, in order (see
    /// [`ApprovalCall`]).
    pub fn take_approval_calls(&mut self) -> Vec<ApprovalCall> {
        self.approvals
            .as_mut()
            .map(|a| a.gate.take_calls())
            .unwrap_or_default()
    }

    /// The session's reason, for records.
    pub(super) fn access_reason(&self) -> Option<Shared<str>> {
        self.approvals.as_ref().and_then(|a| a.reason.clone())
    }

    /// A Query that only sets the session's reason: remembered, recorded, and
    /// replaced by [`REASON_REPLACEMENT`]. `None` for any other text.
    pub(super) fn set_reason_query(&mut self, sql: &[u8], now_us: u64) -> Option<Disposition> {
        let approvals = self.approvals.as_mut()?;
        if !starts_with_set(sql) {
            return None;
        }
        let reason = crate::approval::parse_set_reason(sql)?;
        approvals.reason = Some(Shared::from(reason.as_str()));
        self.enqueue_query(sql, false, None, now_us);
        let mut out = Vec::new();
        FrontendMessage::Query {
            sql: REASON_REPLACEMENT.as_bytes(),
        }
        .encode(&mut out);
        Some(Disposition::Replace(out))
    }

    /// Whether the approval service decides about `decision` (an enforced
    /// `require_approval`); otherwise it blocks like a denial.
    pub(super) fn approval_applies(&self, decision: &Decision) -> bool {
        decision.action == PolicyAction::RequireApproval
            && self.approvals.is_some()
            && self.mode.is_enforce()
    }

    /// Checks a statement that needs approval: `sql` exactly as sent, with its
    /// Bind parameters.
    /// `bound`: a Bind's check (never held).
    pub(super) fn gate(
        &mut self,
        decision: &Decision,
        sql: &[u8],
        params: &[Option<&[u8]>],
        bound: bool,
        now_us: u64,
    ) -> Gated {
        if let Some(concluded) = self.concluded_for(sql, params) {
            return match concluded {
                HoldOutcome::Run(approval) => Gated::Run(approval),
                HoldOutcome::Refuse { hint } => Gated::Refuse(decision.clone(), hint),
            };
        }
        let ctx = self.policy_context();
        let recorded = self.statement_text(sql, false);
        let lexing = self.lexer_settings();
        let Some(approvals) = self.approvals.as_mut() else {
            return Gated::Refuse(decision.clone(), String::new());
        };
        let reason = approvals.reason.clone();
        let ask = ApprovalAsk {
            identity: &ctx.identity,
            database: &ctx.database,
            role: &ctx.role,
            rule: decision.rule.as_deref().unwrap_or_default(),
            sql,
            lexing,
            params,
            recorded_text: &recorded.text,
            reason: reason.as_deref(),
            now_us,
            may_hold: params.is_empty() && !bound,
        };
        match approvals.gate.check(&ask) {
            GateAnswer::Pass(approval) | GateAnswer::UseOnce(approval) => Gated::Run(approval),
            GateAnswer::Refuse { hint } => Gated::Refuse(decision.clone(), hint),
            GateAnswer::Hold(request) => {
                approvals.held = Some(HeldStatement {
                    request,
                    sql: sql.to_vec(),
                    decision: decision.clone(),
                    bytes: Vec::new(),
                });
                approvals.hold_began = true;
                Gated::Hold
            }
        }
    }

    /// The service's answer about the held Query, when `sql` (with `params`)
    /// is that Query being read again.
    fn concluded_for(&mut self, sql: &[u8], params: &[Option<&[u8]>]) -> Option<HoldOutcome> {
        let approvals = self.approvals.as_mut()?;
        let (request, _) = approvals.concluded.as_ref()?;
        if !params.is_empty() || request.hash != statement_hash(sql, params) {
            return None;
        }
        approvals.concluded.take().map(|(_, outcome)| outcome)
    }

    /// A Bind (already registered) to a gated statement: checked with its
    /// parameters. `None` when the statement is not gated.
    pub(super) fn gate_bind(&mut self, bind: &pg::Bind<'_>, now_us: u64) -> Option<Disposition> {
        // The statement the server may hold that needs approval (see the
        // ledger's `bind_targets`), checked with these parameters.
        self.approvals.as_ref()?;
        let (sql, text) = self
            .ledger
            .bind_targets(bind.statement)
            .into_iter()
            .find_map(|target| match &target.guard {
                Guard::Gated(sql) => Some((Arc::clone(sql), Arc::clone(&target.text))),
                _ => None,
            })?;
        let decision = text.decision.clone()?;
        let (text, replacement) = match self.gate(&decision, &sql, &bind.params, true, now_us) {
            Gated::Run(approval) => (with_approval(&text, approval), None),
            // A Bind is never held (see `gate`); were it asked to be, it is
            // refused with the rule's message.
            refused @ (Gated::Refuse(..) | Gated::Hold) => {
                let (decision, hint) = match refused {
                    Gated::Refuse(decision, hint) => (decision, hint),
                    _ => (decision, String::new()),
                };
                let denial = deny::denial_message(&decision).with_hint(&hint);
                let mut out = Vec::new();
                FrontendMessage::Close {
                    kind: b'S',
                    name: PRIVATE_STATEMENT,
                }
                .encode(&mut out);
                out.extend(deny::parse(PRIVATE_STATEMENT, &denial));
                out.extend(deny::bind(bind.portal, PRIVATE_STATEMENT));
                (text, Some(out))
            }
        };
        if let Some(portal) = self.ledger.portals.get_mut(super::server_name(bind.portal)) {
            portal.text = Some(text);
        }
        let replacement = replacement?;
        // The server answers CloseComplete and ParseComplete before the
        // BindComplete the client is owed: those two are dropped.
        let bind_entry = self.ledger.requests.pop_back();
        self.ledger
            .requests
            .push_back(Pending::Injected(Injected::DenialPrelude));
        self.ledger
            .requests
            .push_back(Pending::Injected(Injected::DenialPrelude));
        self.ledger.requests.extend(bind_entry);
        Some(Disposition::Replace(replacement))
    }

    /// Marks the statements of the Query just enqueued as run under `approval`.
    pub(super) fn attach_approval_to_last_query(&mut self, approval: &ApprovalRef) {
        if let Some(Pending::Query(runs)) = self.ledger.requests.back_mut() {
            for run in runs {
                if let Some(text) = run.text.as_mut() {
                    *text = with_approval(text, approval.clone());
                }
            }
        }
    }
}

/// Nothing to forward.
fn nothing() -> Verdict {
    Verdict {
        forward: Forward::Replace(Vec::new()),
        close_connection: false,
    }
}

/// A copy of `text` that names the approval it runs under.
fn with_approval(text: &Arc<StatementText>, approval: ApprovalRef) -> Arc<StatementText> {
    Arc::new(StatementText {
        text: text.text.clone(),
        truncated: text.truncated,
        kind: text.kind.clone(),
        decision: text.decision.clone(),
        approval: Some(approval),
    })
}

/// Whether `sql` starts (after whitespace) with `SET`, case-insensitively: the
/// cheap test before reading a reason.
fn starts_with_set(sql: &[u8]) -> bool {
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sql.len());
    sql.get(start..start + 3)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"set"))
}
