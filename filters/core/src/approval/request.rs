//! The life of one approval request, as pure transitions.
//!
//! ```text
//!            approve (N distinct approvers)          use (single-use grant)
//! pending ─────────────────────────────▶ approved ─────────────────────▶ used
//!    │  └── deny (one is enough) ──▶ denied   │
//!    └── pending time over ──▶ expired ◀──────┘ grant time over
//! ```
//!
//! A requester never approves their own request, unless they are in a
//! break-glass group and give a reason: that approval alone grants, and the
//! request is flagged as forced. Reviewers must be in an approver group (or,
//! for forced approval, a break-glass group). Times are unix seconds.

use super::requirement::{ApprovalRequirement, GrantKind};
use serde::{Deserialize, Serialize};

/// Longest reason kept, in bytes.
pub const MAX_REASON_BYTES: usize = 1000;

/// Someone acting on a request: who, and their groups when they acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// What is being asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// One Postgres statement (a single-use grant) or, for a window grant, every
    /// statement its rule covers.
    PostgresStatement {
        database: String,
        role: String,
        /// The statement as records show it (literals masked when configured).
        statement: String,
        /// The statement's shape: the same for every literal value.
        fingerprint: String,
        /// `sha256:` of the exact text and parameters: what a single-use grant lets
        /// run once.
        statement_hash: String,
    },
    /// One Kubernetes API request.
    KubernetesRequest {
        verb: String,
        /// e.g. `pods/exec`.
        resource: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        namespace: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        name: String,
        /// The request path and query, as sent.
        path: String,
        /// `sha256:` of the method and path: what a single-use grant lets through once.
        request_hash: String,
    },
    /// A time window on a named scope (a rule), asked for by a person.
    Scope { name: String },
}

impl Target {
    /// The hash a single-use grant is bound to (none for a scope).
    pub fn hash(&self) -> Option<&str> {
        match self {
            Target::PostgresStatement { statement_hash, .. } => Some(statement_hash),
            Target::KubernetesRequest { request_hash, .. } => Some(request_hash),
            Target::Scope { .. } => None,
        }
    }

    /// A one-line description for people (notifications, the CLI).
    pub fn describe(&self) -> String {
        match self {
            Target::PostgresStatement {
                database,
                role,
                statement,
                ..
            } => format!("`{statement}` on {database} as {role}"),
            Target::KubernetesRequest { verb, path, .. } => format!("{verb} {path}"),
            Target::Scope { name } => format!("access window on scope {name}"),
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Approved,
    Denied,
    Expired,
    Used,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Used => "used",
        }
    }
}

/// A reviewer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Deny,
}

/// One review on record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub by: Principal,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: u64,
    /// A break-glass self-approval.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

/// A request for approval and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub id: String,
    /// The policy rule that asked for approval (or the scope's name).
    pub rule: String,
    pub requester: Principal,
    pub requirement: ApprovalRequirement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub target: Target,
    pub state: State,
    pub created_at: u64,
    /// When a pending request expires.
    pub pending_until: u64,
    /// Length of the grant once approved (at most the requirement's validity).
    pub grant_seconds: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reviews: Vec<Review>,
    /// When the grant ends (set on approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<u64>,
    /// Approved by break-glass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

/// A state change, named as its record is (`approval.<event>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Requested,
    /// An approval that does not yet reach the number needed.
    Reviewed,
    Approved,
    Denied,
    Expired,
    Used,
}

impl Event {
    /// The record `type` of this change.
    pub fn record_type(self) -> &'static str {
        match self {
            Event::Requested => "approval.requested",
            Event::Reviewed => "approval.reviewed",
            Event::Approved => "approval.approved",
            Event::Denied => "approval.denied",
            Event::Expired => "approval.expired",
            Event::Used => "approval.used",
        }
    }
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("request {id} is {state}, not pending", state = .state.as_str())]
    NotPending { id: String, state: State },
    #[error("request {id} is {state}, not an unused approved grant", state = .state.as_str())]
    NotUsable { id: String, state: State },
    #[error(
        "{subject} may not approve their own request (only a break-glass group member may, with a reason)"
    )]
    SelfApproval { subject: String },
    #[error("{subject} is in none of the approver groups ({groups})")]
    NotApprover { subject: String, groups: String },
    #[error("{subject} already reviewed this request")]
    AlreadyReviewed { subject: String },
    #[error("a reason is required: {0}")]
    ReasonRequired(&'static str),
    #[error("the reason is longer than {MAX_REASON_BYTES} bytes")]
    ReasonTooLong,
    #[error("the grant was issued to {owner}, not {subject}")]
    WrongRequester { owner: String, subject: String },
    #[error("the grant is for a different statement or request")]
    WrongTarget,
    #[error("the grant is a time window: nothing to use up")]
    NotSingleUse,
    #[error("asked for {asked}s; the rule allows at most {allowed}s")]
    TooLong { asked: u64, allowed: u64 },
    #[error("invalid request id \"{0}\"")]
    InvalidId(String),
}

/// What a new request says (the requester's identity comes from whoever files it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// Chosen by the filter, which names it to the client before the service
    /// has answered; the service picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub rule: String,
    pub requirement: ApprovalRequirement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub target: Target,
    /// A window's length (default and maximum: the requirement's validity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_seconds: Option<u64>,
}

/// Whether `id` is a request id: `apr-` and 4 to 60 lowercase letters and digits.
pub fn valid_id(id: &str) -> bool {
    id.strip_prefix("apr-").is_some_and(|rest| {
        (4..=60).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

fn checked_reason(reason: Option<String>) -> Result<Option<String>, ApprovalError> {
    let reason = reason
        .map(|r| {
            r.trim()
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect::<String>()
        })
        .filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_BYTES) {
        return Err(ApprovalError::ReasonTooLong);
    }
    Ok(reason)
}

impl ApprovalRequest {
    /// A pending request filed by `requester` at `now`.
    pub fn new(
        id: String,
        new: NewRequest,
        requester: Principal,
        now: u64,
    ) -> Result<ApprovalRequest, ApprovalError> {
        if !valid_id(&id) {
            return Err(ApprovalError::InvalidId(id));
        }
        let reason = checked_reason(new.reason)?;
        if new.requirement.reason_required && reason.is_none() {
            return Err(ApprovalError::ReasonRequired(
                "this rule asks the requester why",
            ));
        }
        let allowed = new.requirement.valid_seconds;
        let grant_seconds = new.grant_seconds.unwrap_or(allowed);
        if grant_seconds == 0 || grant_seconds > allowed {
            return Err(ApprovalError::TooLong {
                asked: grant_seconds,
                allowed,
            });
        }
        Ok(ApprovalRequest {
            id,
            rule: new.rule,
            requester,
            pending_until: now.saturating_add(new.requirement.pending_seconds),
            requirement: new.requirement,
            reason,
            target: new.target,
            state: State::Pending,
            created_at: now,
            grant_seconds,
            reviews: Vec::new(),
            grant_until: None,
            decided_at: None,
            used_at: None,
            forced: false,
        })
    }

    /// Expires the request if its pending time or its grant is over at `now`.
    pub fn expire_if_due(&mut self, now: u64) -> Option<Event> {
        let due = match self.state {
            State::Pending => now >= self.pending_until,
            State::Approved => self.grant_until.is_some_and(|until| now >= until),
            _ => false,
        };
        due.then(|| self.finish(State::Expired, now, Event::Expired))
    }

    /// Ends a pending request or a grant now (an approver withdrawing it).
    pub fn expire(&mut self, by: &Principal, now: u64) -> Result<Event, ApprovalError> {
        if !matches!(self.state, State::Pending | State::Approved) {
            return Err(ApprovalError::NotPending {
                id: self.id.clone(),
                state: self.state,
            });
        }
        if by.subject != self.requester.subject && !self.requirement.is_approver(&by.groups) {
            return Err(self.not_approver(by));
        }
        Ok(self.finish(State::Expired, now, Event::Expired))
    }

    /// Records `by`'s review at `now` and moves the request on when it decides it.
    pub fn review(
        &mut self,
        by: &Principal,
        verdict: Verdict,
        reason: Option<String>,
        now: u64,
    ) -> Result<Event, ApprovalError> {
        self.expire_if_due(now);
        if self.state != State::Pending {
            return Err(ApprovalError::NotPending {
                id: self.id.clone(),
                state: self.state,
            });
        }
        let reason = checked_reason(reason)?;
        let own = by.subject == self.requester.subject;
        let forced = own && verdict == Verdict::Approve;
        if forced {
            if !self.requirement.is_break_glass(&by.groups) {
                return Err(ApprovalError::SelfApproval {
                    subject: by.subject.clone(),
                });
            }
            if reason.is_none() {
                return Err(ApprovalError::ReasonRequired(
                    "a break-glass approval must say why",
                ));
            }
        } else if !own && !self.requirement.is_approver(&by.groups) {
            return Err(self.not_approver(by));
        }
        if verdict == Verdict::Deny && reason.is_none() {
            return Err(ApprovalError::ReasonRequired("a denial must say why"));
        }
        if self.reviews.iter().any(|r| r.by.subject == by.subject) {
            return Err(ApprovalError::AlreadyReviewed {
                subject: by.subject.clone(),
            });
        }
        self.reviews.push(Review {
            by: by.clone(),
            verdict,
            reason,
            at: now,
            forced,
        });
        Ok(match verdict {
            Verdict::Deny => self.finish(State::Denied, now, Event::Denied),
            Verdict::Approve if forced || self.approvals() >= self.requirement.approvals => {
                self.forced = forced;
                self.grant_until = Some(now.saturating_add(self.grant_seconds));
                self.finish(State::Approved, now, Event::Approved)
            }
            Verdict::Approve => Event::Reviewed,
        })
    }

    /// Uses up a single-use grant: `subject` running the statement or request
    /// whose hash is `hash`, at `now`.
    pub fn consume(&mut self, subject: &str, hash: &str, now: u64) -> Result<Event, ApprovalError> {
        self.expire_if_due(now);
        if self.state != State::Approved {
            return Err(ApprovalError::NotUsable {
                id: self.id.clone(),
                state: self.state,
            });
        }
        if self.requirement.grant != GrantKind::SingleUse {
            return Err(ApprovalError::NotSingleUse);
        }
        if subject != self.requester.subject {
            return Err(ApprovalError::WrongRequester {
                owner: self.requester.subject.clone(),
                subject: subject.to_owned(),
            });
        }
        if self.target.hash() != Some(hash) {
            return Err(ApprovalError::WrongTarget);
        }
        self.used_at = Some(now);
        self.state = State::Used;
        Ok(Event::Used)
    }

    /// Distinct approvals so far.
    pub fn approvals(&self) -> u32 {
        let n = self
            .reviews
            .iter()
            .filter(|r| r.verdict == Verdict::Approve)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// How records name the approval behind this request.
    pub fn approval_ref(&self) -> super::ApprovalRef {
        super::ApprovalRef {
            id: self.id.clone(),
            grant: self.requirement.grant,
            approvers: self
                .reviews
                .iter()
                .filter(|r| r.verdict == Verdict::Approve)
                .map(|r| r.by.subject.clone())
                .collect(),
            forced: self.forced,
            reason: self.reason.clone(),
        }
    }

    /// Whether the request is approved and its grant still runs at `now`.
    pub fn grant_active(&self, now: u64) -> bool {
        self.state == State::Approved && self.grant_until.is_some_and(|until| now < until)
    }

    fn finish(&mut self, state: State, now: u64, event: Event) -> Event {
        self.state = state;
        self.decided_at.get_or_insert(now);
        event
    }

    fn not_approver(&self, by: &Principal) -> ApprovalError {
        ApprovalError::NotApprover {
            subject: by.subject.clone(),
            groups: self.requirement.approvers.join(", "),
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::approval::requirement::Holding;
    use serde_json::json;

    fn who(subject: &str, groups: &[&str]) -> Principal {
        Principal {
            subject: subject.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn requirement(extra: serde_json::Value) -> ApprovalRequirement {
        let mut doc = json!({"approvers": ["dba"], "pending": "10m", "valid": "5m",
                             "break_glass": ["oncall"]});
        for (k, v) in extra.as_object().unwrap() {
            doc[k] = v.clone();
        }
        ApprovalRequirement::from_value(doc, Holding::Allowed).unwrap()
    }

    fn statement() -> Target {
        Target::PostgresStatement {
            database: "shop".into(),
            role: "app".into(),
            statement: "DELETE FROM customers WHERE id = $1".into(),
            fingerprint: "delete from customers where id = ?".into(),
            statement_hash: "sha256:aa".into(),
        }
    }

    fn request(extra: serde_json::Value, reason: Option<&str>) -> ApprovalRequest {
        ApprovalRequest::new(
            "apr-test1".into(),
            NewRequest {
                id: None,
                rule: "customer-writes".into(),
                requirement: requirement(extra),
                reason: reason.map(str::to_string),
                target: statement(),
                grant_seconds: None,
            },
            who("dev", &["developer"]),
            1000,
        )
        .unwrap()
    }

    #[test]
    fn one_approval_by_an_approver_grants_for_the_validity() {
        let mut r = request(json!({}), None);
        assert_eq!(r.state, State::Pending);
        assert_eq!(r.pending_until, 1600);
        let e = r
            .review(&who("dana", &["dba"]), Verdict::Approve, None, 1100)
            .unwrap();
        assert_eq!(e, Event::Approved);
        assert_eq!(r.state, State::Approved);
        assert_eq!(r.grant_until, Some(1400));
        assert!(r.grant_active(1399) && !r.grant_active(1400));
        assert!(!r.forced);
    }

    #[test]
    fn n_approvals_need_n_distinct_approvers() {
        let mut r = request(json!({"approvals": 2}), None);
        let dana = who("dana", &["dba"]);
        assert_eq!(
            r.review(&dana, Verdict::Approve, None, 1001),
            Ok(Event::Reviewed)
        );
        assert_eq!(r.state, State::Pending);
        assert!(matches!(
            r.review(&dana, Verdict::Approve, None, 1002),
            Err(ApprovalError::AlreadyReviewed { .. })
        ));
        assert_eq!(
            r.review(&who("erin", &["dba"]), Verdict::Approve, None, 1003),
            Ok(Event::Approved)
        );
        assert_eq!(r.approvals(), 2);
    }

    #[test]
    fn one_denial_ends_it_and_must_say_why() {
        let mut r = request(json!({"approvals": 2}), None);
        r.review(&who("dana", &["dba"]), Verdict::Approve, None, 1001)
            .unwrap();
        let erin = who("erin", &["dba"]);
        assert_eq!(
            r.review(&erin, Verdict::Deny, None, 1002),
            Err(ApprovalError::ReasonRequired("a denial must say why"))
        );
        assert_eq!(
            r.review(&erin, Verdict::Deny, Some("not today".into()), 1002),
            Ok(Event::Denied)
        );
        assert_eq!(r.state, State::Denied);
        assert!(matches!(
            r.review(&who("fay", &["dba"]), Verdict::Approve, None, 1003),
            Err(ApprovalError::NotPending {
                state: State::Denied,
                ..
            })
        ));
    }

    #[test]
    fn the_requester_never_approves_and_others_must_be_approvers() {
        let mut r = request(json!({}), None);
        // Even a requester who is in the approver group.
        let own = who("dev", &["developer", "dba"]);
        assert!(matches!(
            r.review(&own, Verdict::Approve, Some("me".into()), 1001),
            Err(ApprovalError::SelfApproval { .. })
        ));
        assert!(matches!(
            r.review(&who("ops", &["admin"]), Verdict::Approve, None, 1001),
            Err(ApprovalError::NotApprover { .. })
        ));
        assert_eq!(r.state, State::Pending);
        assert!(r.reviews.is_empty());
    }

    #[test]
    fn break_glass_self_approval_needs_a_reason_and_is_forced() {
        let mut r = request(json!({"approvals": 3}), None);
        let own = who("dev", &["developer", "oncall"]);
        assert_eq!(
            r.review(&own, Verdict::Approve, None, 1001),
            Err(ApprovalError::ReasonRequired(
                "a break-glass approval must say why"
            ))
        );
        assert_eq!(
            r.review(&own, Verdict::Approve, Some("outage INC-7".into()), 1001),
            Ok(Event::Approved)
        );
        assert!(r.forced && r.reviews[0].forced);
        assert_eq!(r.state, State::Approved);
    }

    #[test]
    fn pending_requests_and_grants_expire() {
        let mut r = request(json!({}), None);
        assert_eq!(r.expire_if_due(1599), None);
        assert_eq!(r.expire_if_due(1600), Some(Event::Expired));
        assert!(matches!(
            r.review(&who("dana", &["dba"]), Verdict::Approve, None, 1601),
            Err(ApprovalError::NotPending {
                state: State::Expired,
                ..
            })
        ));
        let mut g = request(json!({}), None);
        g.review(&who("dana", &["dba"]), Verdict::Approve, None, 1000)
            .unwrap();
        assert!(matches!(
            g.consume("dev", "sha256:aa", 1300),
            Err(ApprovalError::NotUsable {
                state: State::Expired,
                ..
            })
        ));
    }

    #[test]
    fn a_late_review_finds_the_request_expired() {
        let mut r = request(json!({}), None);
        let late = r.review(&who("dana", &["dba"]), Verdict::Approve, None, 5000);
        assert!(matches!(
            late,
            Err(ApprovalError::NotPending {
                state: State::Expired,
                ..
            })
        ));
    }

    #[test]
    fn single_use_is_used_once_by_its_requester_for_its_statement() {
        let mut r = request(json!({}), None);
        r.review(&who("dana", &["dba"]), Verdict::Approve, None, 1000)
            .unwrap();
        assert!(matches!(
            r.consume("eve", "sha256:aa", 1001),
            Err(ApprovalError::WrongRequester { .. })
        ));
        assert_eq!(
            r.consume("dev", "sha256:bb", 1001),
            Err(ApprovalError::WrongTarget)
        );
        assert_eq!(r.consume("dev", "sha256:aa", 1001), Ok(Event::Used));
        assert_eq!(r.used_at, Some(1001));
        assert!(matches!(
            r.consume("dev", "sha256:aa", 1002),
            Err(ApprovalError::NotUsable {
                state: State::Used,
                ..
            })
        ));
    }

    #[test]
    fn a_window_is_not_used_up() {
        let mut r = request(json!({"grant": "window"}), None);
        r.review(&who("dana", &["dba"]), Verdict::Approve, None, 1000)
            .unwrap();
        assert_eq!(
            r.consume("dev", "sha256:aa", 1001),
            Err(ApprovalError::NotSingleUse)
        );
        assert!(r.grant_active(1299));
    }

    #[test]
    fn reasons_are_required_when_the_rule_says_so_and_bounded() {
        let new = |reason: Option<&str>| {
            ApprovalRequest::new(
                "apr-test2".into(),
                NewRequest {
                    id: None,
                    rule: "r".into(),
                    requirement: requirement(json!({"reason_required": true})),
                    reason: reason.map(str::to_string),
                    target: statement(),
                    grant_seconds: None,
                },
                who("dev", &[]),
                0,
            )
        };
        assert!(matches!(new(None), Err(ApprovalError::ReasonRequired(_))));
        assert!(matches!(
            new(Some("  ")),
            Err(ApprovalError::ReasonRequired(_))
        ));
        assert_eq!(
            new(Some("fix\nticket 4")).unwrap().reason.as_deref(),
            Some("fix ticket 4")
        );
        assert_eq!(
            new(Some(&"x".repeat(1001))),
            Err(ApprovalError::ReasonTooLong)
        );
    }

    #[test]
    fn a_window_is_at_most_the_rules_validity() {
        let mut new = NewRequest {
            id: None,
            rule: "r".into(),
            requirement: requirement(json!({"grant": "window"})),
            reason: None,
            target: Target::Scope { name: "r".into() },
            grant_seconds: Some(301),
        };
        assert!(matches!(
            ApprovalRequest::new("apr-abcd".into(), new.clone(), who("dev", &[]), 0),
            Err(ApprovalError::TooLong {
                asked: 301,
                allowed: 300
            })
        ));
        new.grant_seconds = Some(60);
        let mut r = ApprovalRequest::new("apr-abcd".into(), new, who("dev", &[]), 0).unwrap();
        r.review(&who("dana", &["dba"]), Verdict::Approve, None, 10)
            .unwrap();
        assert_eq!(r.grant_until, Some(70));
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("apr-k3x9q2m1"));
        for bad in ["apr-", "apr-ABC1", "x-abcd", "apr-ab", "apr-abc/d"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn withdrawing_takes_the_requester_or_an_approver() {
        let mut r = request(json!({}), None);
        assert!(r.expire(&who("eve", &["developer"]), 1001).is_err());
        assert_eq!(r.expire(&who("dev", &[]), 1001), Ok(Event::Expired));
        assert!(r.expire(&who("dev", &[]), 1002).is_err());
    }
}
