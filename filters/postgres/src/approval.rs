//! Approvals on a Postgres session: deny and retry, or hold.
//!
//! A proxy-wasm network filter cannot hold a statement and later turn it into
//! an error (see `docs/approvals.md`), so there a statement a
//! `require_approval` rule matches is refused at once, naming the request
//! filed for it; once approved, the same identity running the same statement
//! (same text and parameters) passes once, or, with a window grant,
//! everything the rule covers passes until the window ends.
//!
//! A filter that can answer later (the native build: [`ApprovalGate::holding`])
//! holds a simple Query whose rule has a `hold` instead: the request is filed
//! (or the pending one awaited) with the service's hold, and
//! [`ApprovalGate::conclude_hold`] reads the answer: approved (a single-use
//! grant used up by the service as it answers) runs the statement; anything
//! else refuses it exactly as the at-once refusal would.
//!
//! [`ApprovalGate`] decides which, from the grants the approval service
//! published (a [`GrantBook`] the glue keeps current), and queues the calls
//! the glue must make ([`ApprovalCall`]): file a request (fire and forget),
//! file or await one and hold the statement for the answer, or use up a
//! single-use grant at the service before the statement's bytes go on (so
//! single use holds across workers and Envoy replicas; if the service says no,
//! the glue can only end the connection).
//!
//! The session's reason comes from `SET gatehouse.reason = '…'`, which the
//! filter reads and does not forward (see [`parse_set_reason`]).

use crate::policy::PgPolicy;
use crate::sql::{Settings, lexer};
use gatehouse_core::approval::grant::{fingerprint, request_id, statement_hash, too_many_pending};
use gatehouse_core::approval::{
    ApprovalRef, ApprovalRequest, ApprovalRequirement, GrantBook, GrantKind, Lookup, NewRequest,
    PendingRef, Principal, State, Target,
};
use gatehouse_core::identity::Identity;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// A call the glue makes to the approval service on the session's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalCall {
    /// `POST /v1/requests` with this JSON body; nothing waits for the answer.
    File { id: String, body: String },
    /// `POST /v1/requests/{id}/consume` with this JSON body. The statement's
    /// bytes are held until the service answers: 200 lets them go on, anything
    /// else ends the connection.
    Consume { id: String, body: String },
    /// `POST path` (filing with `?wait_ms=`, or awaiting a pending request):
    /// the service answers once request `id` is decided or the hold ends. The
    /// statement waits in the session for [`ApprovalGate::conclude_hold`].
    Hold {
        id: String,
        path: String,
        body: String,
        timeout_ms: u64,
    },
}

impl ApprovalCall {
    /// The request path of the call.
    pub fn path(&self) -> String {
        match self {
            ApprovalCall::File { .. } => "/v1/requests".to_owned(),
            ApprovalCall::Consume { id, .. } => format!("/v1/requests/{id}/consume"),
            ApprovalCall::Hold { path, .. } => path.clone(),
        }
    }

    pub fn body(&self) -> &str {
        match self {
            ApprovalCall::File { body, .. }
            | ApprovalCall::Consume { body, .. }
            | ApprovalCall::Hold { body, .. } => body,
        }
    }

    /// Whether the session's bytes wait for this call's answer.
    pub fn holds(&self) -> bool {
        !matches!(self, ApprovalCall::File { .. })
    }

    /// The call's own timeout, when it must outlast the service's usual one
    /// (a hold: the hold and a margin for the answer).
    pub fn timeout_ms(&self) -> Option<u64> {
        match self {
            ApprovalCall::Hold { timeout_ms, .. } => Some(*timeout_ms),
            _ => None,
        }
    }
}

/// Extra time a held call gets beyond the hold, for the service to answer.
const ANSWER_MARGIN_MS: u64 = 5_000;

/// A statement held while the service decides request `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRequest {
    pub id: String,
    /// Who runs it, and the hash of its exact text and parameters: the
    /// service's answer must be about exactly this.
    pub subject: String,
    pub hash: String,
}

/// What a held statement comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Approved within the hold (a single-use grant used up for it): run it.
    Run(ApprovalRef),
    /// Refused as the at-once refusal would be; the client is told this.
    Refuse { hint: String },
}

/// What to do with a statement that needs approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateAnswer {
    /// A window grant covers it: run it.
    Pass(ApprovalRef),
    /// A single-use grant matches: run it once the service confirms the use
    /// (an [`ApprovalCall::Consume`] is queued).
    UseOnce(ApprovalRef),
    /// Refused; the client is told this (the HINT of the error).
    Refuse { hint: String },
    /// Held: an [`ApprovalCall::Hold`] is queued, whose answer goes to
    /// [`ApprovalGate::conclude_hold`].
    Hold(HeldRequest),
}

/// One statement a `require_approval` rule matched.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalAsk<'a> {
    pub identity: &'a Identity,
    pub database: &'a str,
    pub role: &'a str,
    pub rule: &'a str,
    /// The exact text, as sent.
    pub sql: &'a [u8],
    /// How the server lexes this session's text (for the request's fingerprint).
    pub lexing: Settings,
    /// Bind parameters (`None` for NULL); empty for a simple Query.
    pub params: &'a [Option<&'a [u8]>],
    /// The text as records show it (literals masked when configured).
    pub recorded_text: &'a str,
    pub reason: Option<&'a str>,
    pub now_us: u64,
    /// Whether the session can hold this statement (a simple Query; a Bind is
    /// refused at once in every build).
    pub may_hold: bool,
}

/// A session's access to approvals: the worker's grant book, the policy's
/// approval settings, and the calls waiting for the glue.
pub struct ApprovalGate {
    policy: Arc<PgPolicy>,
    book: Rc<RefCell<GrantBook>>,
    /// Seeds request ids (the connection id), with `filed` below.
    connection_id: u64,
    filed: u64,
    calls: Vec<ApprovalCall>,
    /// Whether the glue can hold a statement and answer it later.
    holds: bool,
}

impl ApprovalGate {
    pub fn new(policy: Arc<PgPolicy>, book: Rc<RefCell<GrantBook>>, connection_id: u64) -> Self {
        ApprovalGate {
            policy,
            book,
            connection_id,
            filed: 0,
            calls: Vec::new(),
            holds: false,
        }
    }

    /// A gate whose glue can hold a statement and answer it later: a rule's
    /// `hold` then holds its statements instead of refusing them at once.
    pub fn holding(mut self) -> Self {
        self.holds = true;
        self
    }

    /// The settings of `rule`, when it is a `require_approval` rule of the policy.
    pub fn requirement(&self, rule: &str) -> Option<&Arc<ApprovalRequirement>> {
        self.policy.approval_requirement(rule)
    }

    /// The filing of request `id` failed: retries file anew instead of
    /// naming it.
    pub fn filing_failed(&mut self, id: &str) {
        if let Ok(book) = self.book.try_borrow() {
            book.forget_filing(id);
        }
    }

    /// Calls queued since the last take, in order.
    pub fn take_calls(&mut self) -> Vec<ApprovalCall> {
        std::mem::take(&mut self.calls)
    }

    /// Decides about one statement (see [`GateAnswer`]).
    pub fn check(&mut self, ask: &ApprovalAsk<'_>) -> GateAnswer {
        let Some(requirement) = self.requirement(ask.rule).cloned() else {
            // A rule without settings cannot be approved: refuse as a denial.
            return GateAnswer::Refuse {
                hint: format!("rule {} names no approvers", ask.rule),
            };
        };
        let hash = statement_hash(ask.sql, ask.params);
        let subject = ask.identity.subject.as_str();
        let now = ask.now_us / 1_000_000;
        let pending = {
            let Ok(mut book) = self.book.try_borrow_mut() else {
                return GateAnswer::Refuse {
                    hint: "approvals are unavailable for a moment; run the statement again".into(),
                };
            };
            match book.lookup(subject, ask.rule, &requirement, &hash, now) {
                Lookup::Window(grant) => return GateAnswer::Pass(grant.reference()),
                Lookup::SingleUse(grant) => {
                    let (id, reference) = (grant.id.clone(), grant.reference());
                    book.mark_used(&id);
                    let body = serde_json::json!({"subject": subject, "hash": hash});
                    self.calls.push(ApprovalCall::Consume {
                        id,
                        body: body.to_string(),
                    });
                    return GateAnswer::UseOnce(reference);
                }
                Lookup::Pending(id) => Some(id),
                Lookup::TooManyPending(most) => {
                    return GateAnswer::Refuse {
                        hint: too_many_pending(most),
                    };
                }
                Lookup::Nothing => None,
            }
        };
        let hold_ms = if self.holds && ask.may_hold {
            requirement.hold_seconds.saturating_mul(1000)
        } else {
            0
        };
        if let Some(id) = pending {
            return self.name_pending(id, subject, hash, hold_ms);
        }
        if requirement.reason_required && ask.reason.is_none() {
            return GateAnswer::Refuse {
                hint: "this statement needs a reason before approval is asked: run \
                       SET gatehouse.reason = '…' and then the statement again"
                    .to_owned(),
            };
        }
        self.filed += 1;
        let mut seed = Vec::with_capacity(64);
        seed.extend_from_slice(&self.connection_id.to_be_bytes());
        seed.extend_from_slice(&ask.now_us.to_be_bytes());
        seed.extend_from_slice(&self.filed.to_be_bytes());
        seed.extend_from_slice(hash.as_bytes());
        let id = request_id(&seed);
        let note = PendingRef {
            id: id.clone(),
            rule: ask.rule.to_owned(),
            subject: subject.to_owned(),
            hash: Some(hash.clone()),
        };
        // Another connection, on any worker, may have filed the same since
        // the lookup: name its request rather than file a second.
        let claimed = match self.book.try_borrow() {
            Ok(book) => book.claim_filing(note, now),
            Err(_) => Ok(()),
        };
        if let Err(earlier) = claimed {
            return self.name_pending(earlier, subject, hash, hold_ms);
        }
        let sql = String::from_utf8_lossy(ask.sql);
        let shape = lexer::redact_literals(&sql, &lexer::tokenize_with(&sql, ask.lexing));
        let request = NewRequest {
            id: Some(id.clone()),
            rule: ask.rule.to_owned(),
            requirement: (*requirement).clone(),
            reason: ask.reason.map(str::to_owned),
            target: Target::PostgresStatement {
                database: ask.database.to_owned(),
                role: ask.role.to_owned(),
                statement: ask.recorded_text.to_owned(),
                fingerprint: fingerprint(&shape),
                statement_hash: hash.clone(),
            },
            grant_seconds: None,
        };
        let requester = Principal {
            subject: subject.to_owned(),
            groups: ask.identity.groups.clone(),
        };
        let body = serde_json::json!({"requester": requester, "request": request}).to_string();
        if hold_ms == 0 {
            self.calls.push(ApprovalCall::File {
                id: id.clone(),
                body,
            });
            return GateAnswer::Refuse {
                hint: pending_hint(&id),
            };
        }
        self.calls.push(ApprovalCall::Hold {
            id: id.clone(),
            path: format!("/v1/requests?wait_ms={hold_ms}"),
            body,
            timeout_ms: hold_ms + ANSWER_MARGIN_MS,
        });
        GateAnswer::Hold(HeldRequest {
            id,
            subject: subject.to_owned(),
            hash,
        })
    }

    /// A statement whose request `id` is pending: refused naming it, or
    /// held while the service awaits its decision.
    fn name_pending(
        &mut self,
        id: String,
        subject: &str,
        hash: String,
        hold_ms: u64,
    ) -> GateAnswer {
        if hold_ms == 0 {
            return GateAnswer::Refuse {
                hint: pending_hint(&id),
            };
        }
        let body = serde_json::json!({"subject": subject, "hash": hash, "wait_ms": hold_ms});
        self.calls.push(ApprovalCall::Hold {
            path: format!("/v1/requests/{id}/await"),
            id: id.clone(),
            body: body.to_string(),
            timeout_ms: hold_ms + ANSWER_MARGIN_MS,
        });
        GateAnswer::Hold(HeldRequest {
            id,
            subject: subject.to_owned(),
            hash,
        })
    }

    /// What the service's answer to a hold means for the statement `held`
    /// (`status` 0: no answer). Only an answer about exactly this request,
    /// requester and statement can let it run: used up for it (single use),
    /// or approved (a window). Anything else (denied, expired, still pending,
    /// a refused use, an unreadable or foreign answer) refuses it, with the
    /// HINT the at-once refusal gives, or one saying how it was decided.
    pub fn conclude_hold(&mut self, held: &HeldRequest, status: u16, body: &[u8]) -> HoldOutcome {
        let answer = (status == 200)
            .then(|| serde_json::from_slice::<ApprovalRequest>(body).ok())
            .flatten()
            .filter(|request| {
                request.id == held.id
                    && request.requester.subject == held.subject
                    && request.target.hash() == Some(held.hash.as_str())
            });
        let id = &held.id;
        let hint = match answer {
            Some(request)
                if request.state == State::Used
                    && request.requirement.grant == GrantKind::SingleUse =>
            {
                // Used up for this statement: no session offers it again.
                if let Ok(mut book) = self.book.try_borrow_mut() {
                    book.mark_used(id);
                }
                return HoldOutcome::Run(request.approval_ref());
            }
            Some(request)
                if request.state == State::Approved
                    && request.requirement.grant == GrantKind::Window =>
            {
                return HoldOutcome::Run(request.approval_ref());
            }
            Some(request) if request.state == State::Denied => {
                let by = request
                    .reviews
                    .last()
                    .map(|review| {
                        let why = review
                            .reason
                            .as_deref()
                            .map(|why| format!(": {why}"))
                            .unwrap_or_default();
                        format!(" by {}{why}", review.by.subject)
                    })
                    .unwrap_or_default();
                format!(
                    "approval request {id} was denied{by}; run the same statement again to \
                     ask anew"
                )
            }
            Some(request) if request.state == State::Expired => {
                format!("approval request {id} expired; run the same statement again to ask anew")
            }
            _ => pending_hint(id),
        };
        HoldOutcome::Refuse { hint }
    }
}

/// The HINT of a refusal while request `id` waits.
fn pending_hint(id: &str) -> String {
    format!(
        "approval request {id} is pending; once approved, run the same statement again. \
         An approver runs: gatehouse approve {id}"
    )
}

/// The reason in `SET gatehouse.reason = '…'` (or `TO`, `SESSION`, a trailing
/// `;`), when `sql` is exactly that; `None` for anything else, which is then
/// judged as ordinary SQL. Only a plain quoted literal is read (`''` escapes a
/// quote); control characters become spaces.
pub fn parse_set_reason(sql: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(sql).ok()?.trim();
    let text = text.strip_suffix(';').unwrap_or(text).trim_end();
    let rest = strip_keyword(text, "set")?;
    let rest = strip_keyword(rest, "session").unwrap_or(rest);
    let rest = strip_keyword(rest, "gatehouse.reason")?;
    let rest = match rest.strip_prefix('=') {
        Some(rest) => rest.trim_start(),
        None => strip_keyword(rest, "to")?,
    };
    let body = rest.strip_prefix('\'')?;
    let mut reason = String::new();
    let mut chars = body.chars().peekable();
    loop {
        match chars.next()? {
            '\'' if chars.peek() == Some(&'\'') => {
                chars.next();
                reason.push('\'');
            }
            '\'' => break,
            c if c.is_control() => reason.push(' '),
            c => reason.push(c),
        }
    }
    if chars.next().is_some() {
        return None;
    }
    let reason = reason.trim().to_owned();
    (!reason.is_empty()).then_some(reason)
}

/// `text` after a leading case-insensitive `keyword` followed by whitespace or
/// the end (or `=` for a setting name), trimmed.
fn strip_keyword<'a>(text: &'a str, keyword: &str) -> Option<&'a str> {
    let head = text.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = text.get(keyword.len()..)?;
    match rest.chars().next() {
        None => Some(rest),
        Some(c) if c.is_whitespace() || c == '=' => Some(rest.trim_start()),
        Some(_) => None,
    }
}

/// What replaces a reason-setting statement on its way to the server: the
/// same command with the value reset, so the client gets the `SET` it expects
/// (and an aborted transaction the error it expects) without the reason's text
/// reaching the server.
pub const REASON_REPLACEMENT: &str = "SET gatehouse.reason TO DEFAULT";

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use gatehouse_core::approval::{
        Filings, Grant, GrantKind, GrantsDocument, LocalFilings, RivalFiling,
    };

    const POLICY: &str = r#"{"default": {"action": "allow"}, "rules": [
        {"name": "writes", "action": "require_approval",
         "approval": {"approvers": ["dba"], "valid": "10m"},
         "match": {"kinds": ["delete"]}},
        {"name": "reasoned", "action": "require_approval",
         "approval": {"approvers": ["dba"], "reason_required": true},
         "match": {"kinds": ["truncate"]}}]}"#;

    fn gate() -> (ApprovalGate, Rc<RefCell<GrantBook>>) {
        let policy = Arc::new(PgPolicy::from_json(POLICY.as_bytes()).unwrap());
        let book = Rc::new(RefCell::new(GrantBook::default()));
        (ApprovalGate::new(policy, Rc::clone(&book), 7), book)
    }

    fn who() -> Identity {
        Identity {
            subject: "developer".into(),
            groups: vec!["developers".into()],
            verified: true,
            ..Identity::default()
        }
    }

    fn ask<'a>(
        identity: &'a Identity,
        rule: &'a str,
        sql: &'a [u8],
        params: &'a [Option<&'a [u8]>],
    ) -> ApprovalAsk<'a> {
        ApprovalAsk {
            identity,
            database: "shop",
            role: "app",
            rule,
            sql,
            lexing: Settings::default(),
            params,
            recorded_text: "delete from customers where id = $1",
            reason: None,
            now_us: 1_000_000_000,
            may_hold: true,
        }
    }

    fn grant(kind: GrantKind, hash: Option<String>) -> Grant {
        Grant {
            id: "apr-granted1".into(),
            rule: "writes".into(),
            subject: "developer".into(),
            kind,
            hash,
            until: 1_300,
            approvers: vec![Principal {
                subject: "dana".into(),
                groups: vec!["dba".into()],
            }],
            forced: false,
            reason: None,
        }
    }

    #[test]
    fn a_run_on_another_worker_names_the_request_filed_on_this_one() {
        let policy = Arc::new(PgPolicy::from_json(POLICY.as_bytes()).unwrap());
        let filings: Rc<dyn Filings> = Rc::new(LocalFilings::default());
        let worker = |connection| {
            let book = GrantBook::sharing_filings(Rc::clone(&filings));
            ApprovalGate::new(Arc::clone(&policy), Rc::new(RefCell::new(book)), connection)
        };
        let (mut first, mut second) = (worker(1), worker(2));
        let who = who();
        let sql = b"delete from customers where id = 1";
        first.check(&ask(&who, "writes", sql, &[]));
        let calls = first.take_calls();
        let [ApprovalCall::File { id, .. }] = calls.as_slice() else {
            panic!("{calls:?}");
        };
        // No publication has reached the second worker since.
        let again = second.check(&ask(&who, "writes", sql, &[]));
        assert_eq!(
            again,
            GateAnswer::Refuse {
                hint: pending_hint(id)
            }
        );
        assert_eq!(second.take_calls(), [], "filed a second request");
    }

    #[test]
    fn a_requester_at_the_services_limit_is_refused_without_a_filing() {
        let (mut gate, book) = gate();
        let pending = |n: u32| PendingRef {
            id: format!("apr-pend{n}"),
            rule: "writes".into(),
            subject: "developer".into(),
            hash: Some(format!("sha256:{n}")),
        };
        book.borrow_mut().update(GrantsDocument {
            pending: vec![pending(1), pending(2)],
            max_pending_per_requester: Some(2),
            ..GrantsDocument::default()
        });
        let who = who();
        let answer = gate.check(&ask(&who, "writes", b"delete from customers", &[]));
        assert_eq!(
            answer,
            GateAnswer::Refuse {
                hint: too_many_pending(2)
            }
        );
        assert_eq!(gate.take_calls(), [], "filed beyond the limit");
    }

    #[test]
    fn a_filing_that_loses_the_race_names_the_winner() {
        let policy = Arc::new(PgPolicy::from_json(POLICY.as_bytes()).unwrap());
        let sql = b"delete from customers where id = 1";
        let rival = PendingRef {
            id: "apr-rival".into(),
            rule: "writes".into(),
            subject: "developer".into(),
            hash: Some(statement_hash(sql, &[])),
        };
        let book = GrantBook::sharing_filings(Rc::new(RivalFiling::new(rival, 1_000)));
        let mut gate = ApprovalGate::new(policy, Rc::new(RefCell::new(book)), 7);
        let who = who();
        let answer = gate.check(&ask(&who, "writes", sql, &[]));
        assert_eq!(
            answer,
            GateAnswer::Refuse {
                hint: pending_hint("apr-rival")
            }
        );
        assert_eq!(gate.take_calls(), [], "filed a second request");
    }

    #[test]
    fn a_first_run_files_a_request_and_a_retry_names_it_again() {
        let (mut gate, _) = gate();
        let who = who();
        let sql = b"delete from customers where id = 1";
        let GateAnswer::Refuse { hint } = gate.check(&ask(&who, "writes", sql, &[])) else {
            panic!("not refused");
        };
        let calls = gate.take_calls();
        let [ApprovalCall::File { id, body }] = calls.as_slice() else {
            panic!("{calls:?}");
        };
        assert!(hint.contains(id.as_str()) && hint.contains(&format!("gatehouse approve {id}")));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["requester"]["subject"], "developer");
        assert_eq!(
            body["request"]["target"]["statement_hash"],
            statement_hash(sql, &[])
        );
        assert_eq!(
            body["request"]["target"]["statement"],
            "delete from customers where id = $1"
        );
        assert_eq!(body["request"]["requirement"]["approvers"][0], "dba");
        // The same statement again before approval: the same request, nothing filed.
        let again = gate.check(&ask(&who, "writes", sql, &[]));
        assert!(matches!(&again, GateAnswer::Refuse { hint } if hint.contains(id.as_str())));
        assert!(gate.take_calls().is_empty());
        // Other parameters are another statement.
        gate.check(&ask(&who, "writes", sql, &[Some(b"2")]));
        assert_eq!(gate.take_calls().len(), 1);
    }

    #[test]
    fn a_single_use_grant_is_used_once_through_the_service() {
        let (mut gate, book) = gate();
        let who = who();
        let sql = b"delete from customers where id = $1";
        let params: [Option<&[u8]>; 1] = [Some(b"42")];
        let hash = statement_hash(sql, &params);
        book.borrow_mut().update(GrantsDocument {
            grants: vec![grant(GrantKind::SingleUse, Some(hash.clone()))],
            pending: vec![],
            ..GrantsDocument::default()
        });
        let answer = gate.check(&ask(&who, "writes", sql, &params));
        assert!(
            matches!(&answer, GateAnswer::UseOnce(r) if r.id == "apr-granted1" && r.approvers == ["dana"])
        );
        let calls = gate.take_calls();
        assert_eq!(calls.len(), 1);
        assert!(calls[0].holds());
        assert_eq!(calls[0].path(), "/v1/requests/apr-granted1/consume");
        // The worker does not offer it twice, even before the next publication.
        assert!(matches!(
            gate.check(&ask(&who, "writes", sql, &params)),
            GateAnswer::Refuse { .. }
        ));
        // Different parameters never match it.
        let (mut fresh, book) = self::gate();
        book.borrow_mut().update(GrantsDocument {
            grants: vec![grant(GrantKind::SingleUse, Some(hash))],
            pending: vec![],
            ..GrantsDocument::default()
        });
        assert!(matches!(
            fresh.check(&ask(&who, "writes", sql, &[Some(b"43")])),
            GateAnswer::Refuse { .. }
        ));
    }

    #[test]
    fn a_window_grant_passes_everything_its_rule_covers() {
        let (mut gate, book) = gate();
        book.borrow_mut().update(GrantsDocument {
            grants: vec![grant(GrantKind::Window, None)],
            pending: vec![],
            ..GrantsDocument::default()
        });
        let who = who();
        let mut windowed = (*gate.requirement("writes").unwrap().clone()).clone();
        windowed.grant = GrantKind::Window;
        // The rule here is single use: a window grant does not satisfy it.
        assert!(matches!(
            gate.check(&ask(&who, "writes", b"delete from t", &[])),
            GateAnswer::Refuse { .. }
        ));
        let policy = Arc::new(
            PgPolicy::from_json(
                POLICY
                    .replace(
                        "\"valid\": \"10m\"",
                        "\"valid\": \"10m\", \"grant\": \"window\"",
                    )
                    .as_bytes(),
            )
            .unwrap(),
        );
        let mut window_gate = ApprovalGate::new(policy, book, 7);
        assert_eq!(
            window_gate.requirement("writes").unwrap().grant,
            windowed.grant
        );
        for sql in [&b"delete from a"[..], b"delete from b where x = 1"] {
            assert!(matches!(
                window_gate.check(&ask(&who, "writes", sql, &[])),
                GateAnswer::Pass(_)
            ));
        }
        assert!(window_gate.take_calls().is_empty());
    }

    #[test]
    fn a_rule_that_wants_a_reason_asks_for_one_first() {
        let (mut gate, _) = gate();
        let who = who();
        let answer = gate.check(&ask(&who, "reasoned", b"truncate t", &[]));
        assert!(
            matches!(&answer, GateAnswer::Refuse { hint } if hint.contains("SET gatehouse.reason"))
        );
        assert!(gate.take_calls().is_empty());
        let mut with_reason = ask(&who, "reasoned", b"truncate t", &[]);
        with_reason.reason = Some("INC-7");
        gate.check(&with_reason);
        let calls = gate.take_calls();
        let body: serde_json::Value = serde_json::from_str(calls[0].body()).unwrap();
        assert_eq!(body["request"]["reason"], "INC-7");
    }

    #[test]
    fn only_an_exact_reason_setting_is_read() {
        assert_eq!(
            parse_set_reason(b"SET gatehouse.reason = 'INC-42 restore'").as_deref(),
            Some("INC-42 restore")
        );
        assert_eq!(
            parse_set_reason(b"  set session GATEHOUSE.REASON to 'it''s fine';").as_deref(),
            Some("it's fine")
        );
        assert_eq!(
            parse_set_reason(b"set gatehouse.reason='a\nb'").as_deref(),
            Some("a b")
        );
        for other in [
            &b"SET gatehouse.reason = 'x'; DROP TABLE t"[..],
            b"SET gatehouse.reasons = 'x'",
            b"SET gatehouse.reason = ''",
            b"SET gatehouse.reason = x",
            b"SET gatehouse.reason = 'x",
            b"SET search_path = 'x'",
            b"SELECT 'SET gatehouse.reason = x'",
        ] {
            assert_eq!(
                parse_set_reason(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
