//! Requests a `require_approval` rule matches, when the approval service is
//! configured: hold and release.
//!
//! An HTTP filter can pause a request, call out, and then forward it or answer
//! it itself, so a request needing approval is held while a person decides,
//! up to the rule's `hold`:
//!
//! - a window grant covering it (published by the service): forwarded at once;
//! - a single-use grant for exactly it (same verb and path): used up at the
//!   service, then forwarded (403 if the service says it is gone);
//! - otherwise the request is filed (or, if one is pending, found) and the
//!   service holds its answer until the request is decided or the hold ends,
//!   using a single-use grant up as it answers: approved → forwarded; denied,
//!   expired or still pending → a 403 Status naming the request and how to
//!   retry. With no `hold`, the 403 comes at once and the client retries.
//!
//! The glue makes the one call an [`ApprovalStep`] names and hands the answer
//! to [`ApprovalStep::conclude`]; other requests go on meanwhile. The reason
//! comes from the `X-Gatehouse-Reason` header (not forwarded).

use super::{Admission, Forward, Gate, LocalResponse, RequestHead, event_json_in_place};
use crate::audit::Stage;
use crate::exec::authorization_verb;
use crate::recording::RecordingPlan;
use crate::request_info::RequestInfo;
use crate::status;
use gatehouse_core::approval::grant::{request_hash, request_id, too_many_pending};
use gatehouse_core::approval::{
    ApprovalRef, ApprovalRequest, GrantBook, Lookup, NewRequest, PendingRef, Principal, State,
    Target,
};
use gatehouse_core::identity::Identity;
use gatehouse_core::policy::Decision;
use std::cell::RefCell;
use std::rc::Rc;

/// The header a client gives its reason in; read, recorded and not forwarded.
pub const REASON_HEADER: &str = "x-gatehouse-reason";

/// Extra time a held call gets beyond the hold, for the service to answer.
const ANSWER_MARGIN_MS: u64 = 5_000;

/// How long a refusal is repeated at once to the same caller for the same
/// request: kubectl retries a refused WebSocket exec over SPDY straight away,
/// which must not file a second request or wait a second hold.
const REPEAT_REFUSAL_MICROS: i64 = 5_000_000;
/// Most refusals remembered.
const MAX_RECENT_REFUSALS: usize = 64;

/// The worker's approvals: the grants it knows, what it filed, and what the
/// workers share between two publications of the service.
#[derive(Debug)]
pub(super) struct GateApprovals {
    book: Rc<RefCell<GrantBook>>,
    filed: u64,
    memory: Rc<dyn ApprovalMemory>,
}

/// What the workers of one Envoy tell each other at once about approvals,
/// between two publications of the service: refusals just given (kubectl's
/// SPDY retry may reach another worker) and single-use grants being used.
pub trait ApprovalMemory: std::fmt::Debug {
    /// The refusal given to `subject` for `hash` that still stands at `now_micros`.
    fn repeated_refusal(&self, subject: &str, hash: &str, now_micros: i64) -> Option<String>;
    /// Remembers a refusal until `until_micros`.
    fn remember_refusal(&self, subject: &str, hash: &str, until_micros: i64, reason: &str);
    /// An approval came through: refusals of that request are over.
    fn forget_refusals(&self, subject: &str, hash: &str);
    /// Whether some worker is using grant `id`.
    fn in_use(&self, id: &str) -> bool;
    /// Notes that this worker is using grant `id`.
    fn mark_in_use(&self, id: &str);
}

/// One worker's own memory (tests, and glue that shares nothing).
#[derive(Debug, Default)]
pub struct LocalMemory {
    refusals: RefCell<Vec<RecentRefusal>>,
    used: RefCell<Vec<String>>,
}

/// A refusal given to `subject` for `hash` until `until_micros`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentRefusal {
    pub subject: String,
    pub hash: String,
    pub until_micros: i64,
    pub reason: String,
}

impl RecentRefusal {
    pub fn new(subject: &str, hash: &str, until_micros: i64, reason: &str) -> RecentRefusal {
        RecentRefusal {
            subject: subject.to_owned(),
            hash: hash.to_owned(),
            until_micros,
            reason: reason.to_owned(),
        }
    }

    /// One line (tab-separated; the reason loses tabs and newlines).
    pub fn to_line(&self) -> String {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        format!(
            "{}\t{}\t{}\t{}",
            self.until_micros,
            clean(&self.subject),
            clean(&self.hash),
            clean(&self.reason)
        )
    }

    /// Reads a line of [`RecentRefusal::to_line`].
    pub fn from_line(line: &str) -> Option<RecentRefusal> {
        let mut parts = line.splitn(4, '\t');
        Some(RecentRefusal {
            until_micros: parts.next()?.parse().ok()?,
            subject: parts.next()?.to_owned(),
            hash: parts.next()?.to_owned(),
            reason: parts.next()?.to_owned(),
        })
    }
}

impl ApprovalMemory for LocalMemory {
    fn repeated_refusal(&self, subject: &str, hash: &str, now_micros: i64) -> Option<String> {
        standing_refusal(&self.refusals.borrow(), subject, hash, now_micros)
    }

    fn remember_refusal(&self, subject: &str, hash: &str, until_micros: i64, reason: &str) {
        remember(
            &mut self.refusals.borrow_mut(),
            RecentRefusal::new(subject, hash, until_micros, reason),
        );
    }

    fn forget_refusals(&self, subject: &str, hash: &str) {
        forget(&mut self.refusals.borrow_mut(), subject, hash);
    }

    fn in_use(&self, id: &str) -> bool {
        self.used.borrow().iter().any(|u| u == id)
    }

    fn mark_in_use(&self, id: &str) {
        self.used.borrow_mut().push(id.to_owned());
    }
}

/// Adds `refusal` to a bounded list, dropping what has expired.
pub fn remember(refusals: &mut Vec<RecentRefusal>, refusal: RecentRefusal) {
    let now = refusal.until_micros - REPEAT_REFUSAL_MICROS;
    refusals.retain(|r| r.until_micros > now);
    if refusals.len() >= MAX_RECENT_REFUSALS {
        refusals.remove(0);
    }
    refusals.push(refusal);
}

/// The reason of the refusal given to `subject` for `hash` that still stands
/// at `now_micros`.
pub fn standing_refusal(
    refusals: &[RecentRefusal],
    subject: &str,
    hash: &str,
    now_micros: i64,
) -> Option<String> {
    refusals
        .iter()
        .find(|r| r.subject == subject && r.hash == hash && r.until_micros > now_micros)
        .map(|r| r.reason.clone())
}

/// Ends the refusals given to `subject` for `hash` (an approval came through).
pub fn forget(refusals: &mut Vec<RecentRefusal>, subject: &str, hash: &str) {
    refusals.retain(|r| r.subject != subject || r.hash != hash);
}

/// One call to the approval service, for the glue to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCall {
    pub method: &'static str,
    pub path: String,
    pub body: String,
    pub timeout_ms: u64,
}

/// A request waiting on the approval service.
#[derive(Debug, Clone)]
pub struct ApprovalStep {
    /// The call to make.
    pub call: ServiceCall,
    /// When set, the answer once the call is answered, whatever it says (a
    /// filing without a hold): the refusal names a request the service has,
    /// and ending the stream at once would cancel the filing call.
    pub respond_now: Option<LocalResponse>,
    /// The request id asked about (filed or pending), or the grant used.
    pub request_id: String,
    hash: String,
    /// The grant being used, when a published single-use grant matched.
    using: Option<ApprovalRef>,
    forward: Box<Forward>,
    info: RequestInfo,
    subject: String,
}

/// What an [`ApprovalStep`] comes to.
#[derive(Debug)]
pub enum Conclusion {
    Forward(Box<Forward>),
    Respond(LocalResponse),
}

impl Gate {
    /// Lets this worker's approvals read `book`, which the glue keeps current
    /// from the service's publications.
    pub fn set_grant_book(&mut self, book: Rc<RefCell<GrantBook>>) {
        self.remembered.clear();
        self.approvals = Some(GateApprovals {
            book,
            filed: 0,
            memory: Rc::new(LocalMemory::default()),
        });
    }

    /// Shares refusals and grants in use with the other workers through
    /// `memory` (after [`Gate::set_grant_book`]).
    pub fn set_approval_memory(&mut self, memory: Rc<dyn ApprovalMemory>) {
        self.remembered.clear();
        if let Some(approvals) = self.approvals.as_mut() {
            approvals.memory = memory;
        }
    }

    /// A request the policy says needs approval. `None` when the approval
    /// service cannot decide it (not configured, shadow mode, a rule without
    /// settings): it is then refused like a denial.
    pub(super) fn admit_with_approval(
        &mut self,
        head: &RequestHead<'_>,
        info: &RequestInfo,
        identity: &Identity,
        decision: &Decision,
        mask: bool,
        recording: &mut Option<RecordingPlan>,
    ) -> Option<Admission> {
        if !self.mode().is_enforce() || self.policy.approval_service().is_none() {
            return None;
        }
        let rule = decision.rule.clone()?;
        let requirement = self.policy.approval_requirement(&rule)?.clone();
        let hash = request_hash(authorization_verb(info), head.path);
        let reason = head
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(REASON_HEADER))
            .map(|(_, value)| value.trim().to_owned())
            .filter(|r| !r.is_empty());
        let now = u64::try_from(head.now_micros / 1_000_000).unwrap_or_default();
        let audit = self.audit_for(head, info, identity).with_decision(decision);
        let body_masker = mask
            .then(|| crate::masking::BodyMasker::for_request(info, self.policy.masking()))
            .flatten();
        let mut forward =
            self.forward(head, identity, (audit, decision.clone()), mask, body_masker);
        forward.remove_headers.push(REASON_HEADER.to_owned());
        // An approved exec is recorded as its rule asks, like any admitted one.
        forward.recording = recording.take();
        let approvals = self.approvals.as_mut()?;
        let mut too_many = None;
        let lookup = {
            let book = approvals.book.try_borrow().ok()?;
            match book.lookup(&identity.subject, &rule, &requirement, &hash, now) {
                Lookup::Window(grant) => Err(grant.reference()),
                // Another worker is using it: the service will say it is gone.
                Lookup::SingleUse(grant) if approvals.memory.in_use(&grant.id) => {
                    Ok((None, String::new()))
                }
                Lookup::SingleUse(grant) => Ok((Some(grant.reference()), grant.id.clone())),
                Lookup::Pending(id) => Ok((None, id)),
                Lookup::TooManyPending(most) => {
                    too_many = Some(most);
                    Ok((None, String::new()))
                }
                Lookup::Nothing => Ok((None, String::new())),
            }
        };
        let (using, pending) = match lookup {
            Err(window) => {
                forward.approve(&window);
                return Some(Admission::Forward(Box::new(forward)));
            }
            Ok(found) => found,
        };
        let hold_ms = requirement.hold_seconds.saturating_mul(1000);
        let mut step = ApprovalStep {
            call: ServiceCall {
                method: "POST",
                path: String::new(),
                body: String::new(),
                timeout_ms: hold_ms + ANSWER_MARGIN_MS,
            },
            respond_now: None,
            request_id: pending.clone(),
            hash: hash.clone(),
            using: None,
            forward: Box::new(forward),
            info: info.clone(),
            subject: identity.subject.clone(),
        };
        let subject_and_hash = || serde_json::json!({"subject": identity.subject, "hash": hash});
        if let Some(grant) = using {
            if let Ok(mut book) = approvals.book.try_borrow_mut() {
                book.mark_used(&grant.id);
            }
            approvals.memory.mark_in_use(&grant.id);
            step.call.path = format!("/v1/requests/{}/consume", grant.id);
            step.call.body = subject_and_hash().to_string();
            step.call.timeout_ms = ANSWER_MARGIN_MS;
            step.using = Some(grant);
            return Some(Admission::Approval(Box::new(step)));
        }
        let repeated = approvals
            .memory
            .repeated_refusal(&identity.subject, &hash, head.now_micros);
        if let Some(reason) = repeated {
            return Some(Admission::Respond(self.approval_refusal(
                &mut step,
                &reason,
                head.now_micros,
            )));
        }
        if let Some(most) = too_many {
            let reason = too_many_pending(most);
            return Some(Admission::Respond(self.approval_refusal(
                &mut step,
                &reason,
                head.now_micros,
            )));
        }
        let mut pending = pending;
        if pending.is_empty() {
            approvals.filed += 1;
            let seed = format!(
                "{}\0{}\0{}\0{hash}",
                head.audit_id, head.now_micros, approvals.filed
            );
            let id = request_id(seed.as_bytes());
            let note = PendingRef {
                id: id.clone(),
                rule: rule.clone(),
                subject: identity.subject.clone(),
                hash: Some(hash.clone()),
            };
            // Another request, on any worker, may have filed the same since
            // the lookup: name its request rather than file a second.
            let claimed = match approvals.book.try_borrow() {
                Ok(book) => book.claim_filing(note, now),
                Err(_) => Ok(()),
            };
            match claimed {
                Err(earlier) => pending = earlier,
                Ok(()) => {
                    let request = NewRequest {
                        id: Some(id.clone()),
                        rule,
                        requirement: (*requirement).clone(),
                        reason,
                        target: Target::KubernetesRequest {
                            verb: authorization_verb(info).to_owned(),
                            resource: info.resource_path(),
                            namespace: info.namespace.clone(),
                            name: info.name.clone(),
                            path: head.path.to_owned(),
                            request_hash: hash,
                        },
                        grant_seconds: None,
                    };
                    let requester = Principal {
                        subject: identity.subject.clone(),
                        groups: identity.groups.clone(),
                    };
                    step.call.path = if hold_ms > 0 {
                        format!("/v1/requests?wait_ms={hold_ms}")
                    } else {
                        "/v1/requests".to_owned()
                    };
                    step.call.body =
                        serde_json::json!({"requester": requester, "request": request}).to_string();
                    step.request_id = id;
                }
            }
        }
        if !pending.is_empty() {
            step.call.path = format!("/v1/requests/{pending}/await");
            step.call.body = serde_json::json!({
                "subject": identity.subject, "hash": step.hash, "wait_ms": hold_ms
            })
            .to_string();
            step.request_id = pending;
        }
        if hold_ms == 0 {
            let reason = retry_reason(&step.request_id, "is waiting for approval");
            let response = self.approval_refusal(&mut step, &reason, head.now_micros);
            step.respond_now = Some(response);
        }
        Some(Admission::Approval(Box::new(step)))
    }

    /// An approval came through: earlier refusals of the same request are over.
    fn forget_refusals(&mut self, step: &ApprovalStep) {
        if let Some(approvals) = self.approvals.as_ref() {
            approvals.memory.forget_refusals(&step.subject, &step.hash);
        }
    }

    /// The 403 for a step that did not end in approval.
    fn approval_refusal(
        &self,
        step: &mut ApprovalStep,
        reason: &str,
        now_micros: i64,
    ) -> LocalResponse {
        let refusal = status::forbidden(&step.info, &step.subject, reason);
        let record = event_json_in_place(
            std::sync::Arc::make_mut(&mut step.forward.audit),
            Stage::ResponseComplete,
            &refusal,
            now_micros,
        );
        LocalResponse {
            status: refusal.http_status(),
            body: refusal.to_json(),
            record,
            decision: Some(step.forward.decision.clone()),
        }
    }

    /// What the service's answer to `step`'s call means (`status` 0: no
    /// answer, a timeout or a failed connection).
    pub fn conclude_approval(
        &mut self,
        mut step: ApprovalStep,
        status: u16,
        body: &[u8],
        now_micros: i64,
    ) -> Conclusion {
        let id = step.request_id.clone();
        if let Some(refusal) = step.respond_now.take() {
            if (200..300).contains(&status) {
                return Conclusion::Respond(refusal);
            }
            // Not filed: a retry files anew rather than naming it, and the
            // refusal says why instead of naming a request that does not exist.
            if let Some(approvals) = self.approvals.as_ref()
                && let Ok(book) = approvals.book.try_borrow()
            {
                book.forget_filing(&id);
            }
            let reason = format!(
                "the approval request could not be filed ({}); run the same command again later",
                service_failure(status, body)
            );
            return Conclusion::Respond(self.approval_refusal(&mut step, &reason, now_micros));
        }
        if let Some(grant) = step.using.take() {
            if status == 200 {
                self.forget_refusals(&step);
                step.forward.approve(&grant);
                return Conclusion::Forward(step.forward);
            }
            let reason = format!(
                "approval {} was already used or has ended; run the same command again to ask anew",
                grant.id
            );
            return Conclusion::Respond(self.approval_refusal(&mut step, &reason, now_micros));
        }
        let answer = (status == 200)
            .then(|| serde_json::from_slice::<ApprovalRequest>(body).ok())
            .flatten();
        let reason = match answer {
            Some(request) if matches!(request.state, State::Used | State::Approved) => {
                self.forget_refusals(&step);
                step.forward.approve(&request.approval_ref());
                return Conclusion::Forward(step.forward);
            }
            Some(request) if request.state == State::Denied => {
                let by = request
                    .reviews
                    .last()
                    .map(|r| {
                        let why = r
                            .reason
                            .as_deref()
                            .map(|w| format!(": {w}"))
                            .unwrap_or_default();
                        format!(" by {}{why}", r.by.subject)
                    })
                    .unwrap_or_default();
                format!(
                    "approval request {id} was denied{by}; run the same command again to ask anew"
                )
            }
            Some(request) if request.state == State::Expired => {
                format!("approval request {id} expired; run the same command again to ask anew")
            }
            Some(_) => retry_reason(&id, "is still waiting for approval"),
            None => retry_reason(
                &id,
                &format!("could not be confirmed ({})", service_failure(status, body)),
            ),
        };
        if let Some(approvals) = self.approvals.as_ref() {
            approvals.memory.remember_refusal(
                &step.subject,
                &step.hash,
                now_micros + REPEAT_REFUSAL_MICROS,
                &reason,
            );
        }
        Conclusion::Respond(self.approval_refusal(&mut step, &reason, now_micros))
    }
}

/// What the approval service said when it did not do what was asked: its
/// status and its `{"error": …}` message (cut short), or that it did not answer.
fn service_failure(status: u16, body: &[u8]) -> String {
    if status == 0 {
        return "the approval service did not answer".to_owned();
    }
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|answer| answer.get("error")?.as_str().map(str::to_owned))
        .map(|error| {
            let cut: String = error.chars().take(MAX_SERVICE_MESSAGE).collect();
            format!(": {cut}")
        })
        .unwrap_or_default();
    format!("the approval service answered {status}{message}")
}

/// Characters of the service's error message a refusal repeats at most.
const MAX_SERVICE_MESSAGE: usize = 300;

/// A refusal that tells the client how to get through.
fn retry_reason(id: &str, what: &str) -> String {
    format!(
        "approval request {id} {what}; an approver runs: gatehouse approve {id}, \
         then run the same command again"
    )
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::super::tests::{NOW, admit};
    use super::*;
    use gatehouse_core::approval::{
        Filings, Grant, GrantKind, GrantsDocument, LocalFilings, RivalFiling,
    };
    use gatehouse_core::identity::JwsAlgorithm;
    use gatehouse_core::identity::testing::Minter;
    use serde_json::json;

    const ISSUER: &str = "https://idp.gatehouse.test";
    const EXEC: &str = "/api/v1/namespaces/prod/pods/web-0/exec?command=sh&stdin=true&stdout=true";

    fn setup(hold: &str) -> (Gate, Rc<RefCell<GrantBook>>, String) {
        setup_with(hold, None)
    }

    /// [`setup`] with the approval rule's `record` section.
    fn setup_with(
        hold: &str,
        record: Option<serde_json::Value>,
    ) -> (Gate, Rc<RefCell<GrantBook>>, String) {
        let minter = Minter::generate(JwsAlgorithm::Es256, ISSUER, "gatehouse", "k1").unwrap();
        let mut config: serde_json::Value =
            serde_json::from_str(include_str!("../../../../examples/kubernetes-policy.json"))
                .unwrap();
        let mut approval = json!({"approvers": ["platform-admins"], "valid": "10m"});
        if !hold.is_empty() {
            approval["hold"] = json!(hold);
        }
        config["rules"].as_array_mut().unwrap().insert(
            0,
            json!({"name": "prod-exec", "action": "require_approval",
                "message": "exec in prod needs an admin's approval", "approval": approval,
                "match": {"groups": ["developers"], "namespaces": ["prod"],
                          "resources": ["pods/exec"]}}),
        );
        if let Some(record) = record {
            config["rules"][0]["record"] = record;
        }
        config["approvals"] = json!({"cluster": "gatehouse_approvals", "key": "k-123456"});
        let mut gate = Gate::from_json(config.to_string().as_bytes()).unwrap();
        gate.verifier_mut()
            .unwrap()
            .keys_fetched(ISSUER, minter.jwks_json().as_bytes(), NOW)
            .unwrap();
        let book = Rc::new(RefCell::new(GrantBook::default()));
        gate.set_grant_book(Rc::clone(&book));
        let token = minter
            .mint(
                &json!({"sub": "developer", "groups": ["developers"]}),
                600,
                NOW,
            )
            .unwrap();
        (gate, book, format!("Bearer {token}"))
    }

    fn step(admission: Admission) -> ApprovalStep {
        match admission {
            Admission::Approval(step) => *step,
            other => panic!("expected an approval step, got {other:?}"),
        }
    }

    /// The service's answer about `step`'s request, filed with `filing`.
    fn answer(
        step: &ApprovalStep,
        filing: &str,
        state: &str,
        reviews: serde_json::Value,
    ) -> Vec<u8> {
        let filed: serde_json::Value = serde_json::from_str(filing).unwrap();
        let mut request = json!({
            "id": step.request_id, "rule": "prod-exec",
            "requester": {"subject": "developer"},
            "requirement": filed["request"]["requirement"],
            "target": filed["request"]["target"], "state": state,
            "created_at": NOW, "pending_until": NOW + 60, "grant_seconds": 600,
            "reviews": reviews,
        });
        if state == "used" {
            request["grant_until"] = json!(NOW + 600);
        }
        request.to_string().into_bytes()
    }

    #[test]
    fn a_request_is_filed_and_held_and_released_when_approved() {
        let (mut gate, _, bearer) = setup("30s");
        let headers = [
            ("authorization", bearer.as_str()),
            ("x-gatehouse-reason", "INC-7"),
        ];
        let step = step(admit(&mut gate, "GET", EXEC, &headers));
        assert!(step.respond_now.is_none(), "held, not refused");
        assert_eq!(step.call.path, "/v1/requests?wait_ms=30000");
        assert_eq!(step.call.timeout_ms, 35_000);
        let filed: serde_json::Value = serde_json::from_str(&step.call.body).unwrap();
        assert_eq!(filed["request"]["id"], step.request_id.as_str());
        assert_eq!(filed["request"]["reason"], "INC-7");
        assert_eq!(filed["request"]["target"]["resource"], "pods/exec");
        assert_eq!(filed["request"]["target"]["verb"], "create");
        let approved = answer(
            &step,
            &step.call.body,
            "used",
            json!([{"by": {"subject": "admin", "groups": ["platform-admins"]},
                    "verdict": "approve", "at": NOW}]),
        );
        let Conclusion::Forward(forward) =
            gate.conclude_approval(step, 200, &approved, NOW * 1_000_000)
        else {
            panic!("not forwarded");
        };
        assert!(forward.remove_headers.iter().any(|h| h == REASON_HEADER));
        let record = forward.records(101, NOW * 1_000_000, NOW * 1_000_000);
        assert!(
            record.contains("\"gatehouse.dev/approvers\":\"admin\""),
            "{record}"
        );
        assert!(
            record.contains("\"authorization.k8s.io/decision\":\"allow\""),
            "{record}"
        );
    }

    #[test]
    fn an_approved_exec_is_recorded_as_its_rule_asks() {
        let (mut recorded, _, bearer) =
            setup_with("30s", Some(json!({"deny_commands": ["reboot*"]})));
        let headers = [("authorization", bearer.as_str()), ("upgrade", "websocket")];
        let held = step(admit(&mut recorded, "GET", EXEC, &headers));
        assert!(
            held.forward.recording.is_some(),
            "the held exec keeps its plan"
        );
        let (mut plain, _, bearer) = setup("30s");
        let headers = [("authorization", bearer.as_str()), ("upgrade", "websocket")];
        let held = step(admit(&mut plain, "GET", EXEC, &headers));
        assert!(held.forward.recording.is_none());
    }

    #[test]
    fn denied_and_timed_out_requests_get_a_403_naming_the_request() {
        let (mut gate, _, bearer) = setup("30s");
        let headers = [("authorization", bearer.as_str())];
        let now = NOW * 1_000_000;
        let held = step(admit(&mut gate, "GET", EXEC, &headers));
        let id = held.request_id.clone();
        let filing = held.call.body.clone();
        // The same request again while the first is pending (in the book): the
        // service is asked about that one, not a new one.
        let again = step(admit(&mut gate, "GET", EXEC, &headers));
        assert_eq!(again.call.path, format!("/v1/requests/{id}/await"));
        let pending = answer(&again, &filing, "pending", json!([]));
        let Conclusion::Respond(response) = gate.conclude_approval(again, 200, &pending, now)
        else {
            panic!("forwarded a pending request");
        };
        assert!(
            response.body.contains("is still waiting for approval")
                && response.body.contains(&format!("gatehouse approve {id}")),
            "{}",
            response.body
        );
        let denied = answer(
            &held,
            &filing,
            "denied",
            json!([{"by": {"subject": "admin"}, "verdict": "deny", "reason": "not now", "at": NOW}]),
        );
        let Conclusion::Respond(response) = gate.conclude_approval(held, 200, &denied, now) else {
            panic!("forwarded a denied request");
        };
        assert_eq!(response.status, 403);
        let denial = format!("approval request {id} was denied by admin: not now");
        assert!(response.body.contains(&denial), "{}", response.body);
        // kubectl's immediate retry over SPDY gets an answer at once, without
        // a new request or a second hold.
        let Admission::Respond(repeated) = admit(&mut gate, "POST", EXEC, &headers) else {
            panic!("the retry was not refused at once");
        };
        assert_eq!(repeated.status, 403);
        assert!(repeated.body.contains(&id), "{}", repeated.body);
    }

    #[test]
    fn without_a_hold_the_refusal_comes_once_filed_and_a_retry_uses_the_grant() {
        let (mut gate, book, bearer) = setup("");
        let headers = [("authorization", bearer.as_str())];
        let refused = step(admit(&mut gate, "GET", EXEC, &headers));
        assert_eq!(refused.call.path, "/v1/requests");
        let response = refused.respond_now.clone().unwrap();
        assert_eq!(response.status, 403);
        assert!(response.body.contains(&refused.request_id));
        // The refusal goes once the service has the request.
        let Conclusion::Respond(answered) = gate.conclude_approval(refused.clone(), 201, b"{}", 0)
        else {
            panic!("forwarded on a filing");
        };
        assert_eq!(answered.body, response.body);
        // A retry before the next publication names it.
        let again = step(admit(&mut gate, "GET", EXEC, &headers));
        assert_eq!(again.request_id, refused.request_id);
        assert_ne!(again.call.path, "/v1/requests", "filed again");
        // Approved: the grant is published; the retry uses it up, then passes.
        book.borrow_mut().update(GrantsDocument {
            grants: vec![Grant {
                id: refused.request_id.clone(),
                rule: "prod-exec".into(),
                subject: "developer".into(),
                kind: GrantKind::SingleUse,
                hash: Some(request_hash("create", EXEC)),
                until: u64::try_from(NOW).unwrap() + 300,
                approvers: vec![Principal {
                    subject: "admin".into(),
                    groups: vec!["platform-admins".into()],
                }],
                forced: false,
                reason: None,
            }],
            pending: vec![],
            ..GrantsDocument::default()
        });
        let retry = step(admit(&mut gate, "POST", EXEC, &headers));
        assert_eq!(
            retry.call.path,
            format!("/v1/requests/{}/consume", refused.request_id)
        );
        assert!(matches!(
            gate.conclude_approval(retry, 200, b"{}", 0),
            Conclusion::Forward(_)
        ));
        // Used: a third run is refused again, with a new request.
        let third = step(admit(&mut gate, "GET", EXEC, &headers));
        assert_ne!(third.request_id, refused.request_id);
        assert!(third.respond_now.is_some());
        // A use the service refuses (another replica got there first) is a 403.
        let (mut other_gate, other_book, bearer) = setup("");
        other_book
            .borrow_mut()
            .update(book.borrow().clone_document());
        let retry = step(admit(
            &mut other_gate,
            "GET",
            EXEC,
            &[("authorization", bearer.as_str())],
        ));
        let Conclusion::Respond(refusal) = other_gate.conclude_approval(retry, 409, b"{}", 0)
        else {
            panic!("forwarded on a refused use");
        };
        assert!(
            refusal.body.contains("was already used or has ended"),
            "{}",
            refusal.body
        );
    }

    /// [`setup`] (no hold) with the book's notes of filings kept in `filings`.
    fn worker(filings: Rc<dyn Filings>) -> (Gate, String) {
        let (mut gate, _, bearer) = setup("");
        let book = GrantBook::sharing_filings(filings);
        gate.set_grant_book(Rc::new(RefCell::new(book)));
        (gate, bearer)
    }

    #[test]
    fn a_retry_on_another_worker_names_the_request_filed_on_this_one() {
        let filings: Rc<dyn Filings> = Rc::new(LocalFilings::default());
        let (mut first, first_bearer) = worker(Rc::clone(&filings));
        let (mut second, second_bearer) = worker(filings);
        let filed = step(admit(
            &mut first,
            "GET",
            EXEC,
            &[("authorization", first_bearer.as_str())],
        ));
        assert_eq!(filed.call.path, "/v1/requests");
        // No publication has reached the second worker since.
        let retry = step(admit(
            &mut second,
            "GET",
            EXEC,
            &[("authorization", second_bearer.as_str())],
        ));
        assert_eq!(retry.request_id, filed.request_id);
        assert_eq!(
            retry.call.path,
            format!("/v1/requests/{}/await", filed.request_id),
            "filed a second request"
        );
        assert!(retry.respond_now.unwrap().body.contains(&filed.request_id));
    }

    #[test]
    fn a_requester_at_the_services_limit_is_refused_without_a_filing() {
        let (mut gate, book, bearer) = setup("30s");
        book.borrow_mut().update(GrantsDocument {
            pending: vec![PendingRef {
                id: "apr-other".into(),
                rule: "prod-exec".into(),
                subject: "developer".into(),
                hash: Some("sha256:other".into()),
            }],
            max_pending_per_requester: Some(1),
            ..GrantsDocument::default()
        });
        let Admission::Respond(refusal) = admit(
            &mut gate,
            "GET",
            EXEC,
            &[("authorization", bearer.as_str())],
        ) else {
            panic!("not refused at once");
        };
        assert_eq!(refusal.status, 403);
        assert!(
            refusal.body.contains(&too_many_pending(1)),
            "{}",
            refusal.body
        );
    }

    #[test]
    fn a_filing_that_loses_the_race_names_the_winner() {
        let rival = PendingRef {
            id: "apr-rival".into(),
            rule: "prod-exec".into(),
            subject: "developer".into(),
            hash: Some(request_hash("create", EXEC)),
        };
        let now = u64::try_from(NOW).unwrap();
        let (mut gate, bearer) = worker(Rc::new(RivalFiling::new(rival, now)));
        let lost = step(admit(
            &mut gate,
            "GET",
            EXEC,
            &[("authorization", bearer.as_str())],
        ));
        assert_eq!(lost.request_id, "apr-rival");
        assert_eq!(lost.call.path, "/v1/requests/apr-rival/await");
    }

    #[test]
    fn a_filing_the_service_refused_is_not_named_by_the_retry() {
        let (mut gate, _, bearer) = setup("");
        let headers = [("authorization", bearer.as_str())];
        let refused = step(admit(&mut gate, "GET", EXEC, &headers));
        let Conclusion::Respond(response) = gate.conclude_approval(refused.clone(), 503, b"", 0)
        else {
            panic!("forwarded on a failed filing");
        };
        assert_eq!(response.status, 403);
        assert!(
            response.body.contains(
                "the approval request could not be filed (the approval service answered 503)"
            ) && !response.body.contains(&refused.request_id),
            "{}",
            response.body
        );
        let retry = step(admit(&mut gate, "GET", EXEC, &headers));
        assert_eq!(retry.call.path, "/v1/requests");
        assert_ne!(retry.request_id, refused.request_id);
        // The service's own words reach the client, cut short.
        let limit = format!(
            r#"{{"error": "developer has 20 approval requests pending{}"}}"#,
            "!".repeat(1000)
        );
        let Conclusion::Respond(response) = gate.conclude_approval(retry, 429, limit.as_bytes(), 0)
        else {
            panic!("forwarded on a refused filing");
        };
        assert!(
            response.body.contains(
                "(the approval service answered 429: developer has 20 approval requests pending!!"
            ) && !response.body.contains(&"!".repeat(300)),
            "{}",
            response.body
        );
        let unanswered = step(admit(&mut gate, "GET", EXEC, &headers));
        let Conclusion::Respond(response) = gate.conclude_approval(unanswered, 0, b"", 0) else {
            panic!("forwarded on an unanswered filing");
        };
        assert!(
            response
                .body
                .contains("(the approval service did not answer)"),
            "{}",
            response.body
        );
    }

    #[test]
    fn other_requests_are_not_held() {
        let (mut gate, _, bearer) = setup("30s");
        let headers = [("authorization", bearer.as_str())];
        let dev_exec = "/api/v1/namespaces/dev/pods/web-0/exec?command=sh&stdout=true";
        assert!(matches!(
            admit(&mut gate, "GET", dev_exec, &headers),
            Admission::Forward(_)
        ));
        assert!(matches!(
            admit(&mut gate, "GET", "/api/v1/namespaces/prod/pods", &headers),
            Admission::Forward(_)
        ));
    }
}
