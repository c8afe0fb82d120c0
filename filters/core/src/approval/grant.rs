//! What the filters learn from the approval service, and how they look it up.
//!
//! The service publishes a [`GrantsDocument`]: every grant that still runs and
//! every pending request. A filter polls it from its root context, shares it
//! with its workers, and on a `require_approval` decision asks its
//! [`GrantBook`]: a window grant lets the statement or request pass; a
//! single-use grant must first be used up at the service (so it holds across
//! workers and Envoy replicas); a pending request is named again instead of
//! filing a new one; else a new request is filed.
//!
//! The filter does not take the service's word for who approved: a grant is
//! honoured only if its reviews satisfy the filter's own rule (see
//! [`Grant::satisfies`]).

use super::filings::{Filings, LocalFilings};
use super::request::{ApprovalRequest, Principal, State, Verdict};
use super::requirement::{ApprovalRequirement, GrantKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::rc::Rc;

/// A grant as published to the filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub rule: String,
    /// Who may use it.
    pub subject: String,
    pub kind: GrantKind,
    /// Single use: the statement or request it lets through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Unix seconds when it ends.
    pub until: u64,
    /// Who approved, with their groups at the time.
    pub approvers: Vec<Principal>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Grant {
    /// The grant an approved request gives, while it runs.
    pub fn from_request(request: &ApprovalRequest) -> Option<Grant> {
        if request.state != State::Approved {
            return None;
        }
        Some(Grant {
            id: request.id.clone(),
            rule: request.rule.clone(),
            subject: request.requester.subject.clone(),
            kind: request.requirement.grant,
            hash: match request.requirement.grant {
                GrantKind::SingleUse => request.target.hash().map(str::to_owned),
                GrantKind::Window => None,
            },
            until: request.grant_until?,
            approvers: request
                .reviews
                .iter()
                .filter(|r| r.verdict == Verdict::Approve)
                .map(|r| r.by.clone())
                .collect(),
            forced: request.forced,
            reason: request.reason.clone(),
        })
    }

    /// Whether the approvals on this grant meet `requirement` as the filter
    /// knows it: enough distinct approvers from its approver groups, none the
    /// user, or one break-glass self-approval; the same kind of grant; no longer
    /// than its validity from now.
    pub fn satisfies(&self, requirement: &ApprovalRequirement, now: u64) -> bool {
        if self.kind != requirement.grant
            || self.until <= now
            || self.until - now > requirement.valid_seconds
        {
            return false;
        }
        if self.forced {
            return self
                .approvers
                .iter()
                .any(|a| a.subject == self.subject && requirement.is_break_glass(&a.groups));
        }
        let mut counted: Vec<&str> = Vec::new();
        for approver in &self.approvers {
            if approver.subject != self.subject
                && requirement.is_approver(&approver.groups)
                && !counted.contains(&approver.subject.as_str())
            {
                counted.push(&approver.subject);
            }
        }
        u32::try_from(counted.len()).unwrap_or(u32::MAX) >= requirement.approvals
    }

    /// How records name this grant.
    pub fn reference(&self) -> ApprovalRef {
        ApprovalRef {
            id: self.id.clone(),
            grant: self.kind,
            approvers: self.approvers.iter().map(|a| a.subject.clone()).collect(),
            forced: self.forced,
            reason: self.reason.clone(),
        }
    }
}

/// The approval behind a statement or request that passed, as records show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRef {
    pub id: String,
    pub grant: GrantKind,
    pub approvers: Vec<String>,
    /// A break-glass self-approval.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// The requester's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A request still waiting, so a retry names it instead of filing another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRef {
    pub id: String,
    pub rule: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// What `GET /v1/grants` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantsDocument {
    pub grants: Vec<Grant>,
    pub pending: Vec<PendingRef>,
    /// Requests no longer pending (denied, used, expired, withdrawn) while
    /// they could still have been: a filter that filed one drops its note of
    /// it, even when it never saw a publication list it as pending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closed: Vec<String>,
    /// Pending requests the service lets one requester have at once: a
    /// filter refuses to file beyond it, saying so, rather than file a
    /// request the service would refuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_per_requester: Option<u32>,
}

impl GrantsDocument {
    /// Whether this publication knows of request `id`, in whatever state.
    fn knows(&self, id: &str) -> bool {
        self.pending.iter().any(|p| p.id == id)
            || self.grants.iter().any(|g| g.id == id)
            || self.closed.iter().any(|c| c == id)
    }
}

/// What a filter should do about a statement or request its rule says needs
/// approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A window grant covers it: let it through.
    Window(&'a Grant),
    /// A single-use grant matches: use it up at the service, then let it through.
    SingleUse(&'a Grant),
    /// A request for it is already pending (published, or filed by some
    /// worker since): name that one.
    Pending(String),
    /// Nothing yet, and the requester already has this many requests
    /// pending, the most the service allows: refuse without filing.
    TooManyPending(u32),
    /// Nothing yet: file a request ([`GrantBook::claim_filing`] first).
    Nothing,
}

/// The grants and pending requests a filter knows of.
#[derive(Debug, Clone)]
pub struct GrantBook {
    document: GrantsDocument,
    /// Single-use grants this worker has started using: never offered twice,
    /// even before the service's next publication says they are used.
    used: Vec<String>,
    /// Requests filed that no publication names yet, as every worker sharing
    /// `filings` sees them at once (see [`super::filings`]).
    filings: Rc<dyn Filings>,
    /// Filings a publication this worker adopted knew of: the publications
    /// speak for them from then on, even one that no longer lists them.
    settled: HashSet<String>,
}

impl Default for GrantBook {
    fn default() -> Self {
        GrantBook::sharing_filings(Rc::new(LocalFilings::default()))
    }
}

impl GrantBook {
    /// An empty book whose notes of filings are kept in `filings`, which the
    /// other workers' books share.
    pub fn sharing_filings(filings: Rc<dyn Filings>) -> GrantBook {
        GrantBook {
            document: GrantsDocument::default(),
            used: Vec::new(),
            filings,
            settled: HashSet::new(),
        }
    }

    /// Replaces the document, keeping what this worker used that is still
    /// listed. Notes of filings stay for the workers that have not adopted
    /// it: a publication fetched before a filing reached the service does
    /// not list it; this worker stops naming the ones it knows of.
    pub fn update(&mut self, document: GrantsDocument) {
        self.used
            .retain(|id| document.grants.iter().any(|g| &g.id == id));
        let settled = &mut self.settled;
        self.filings.inspect(&mut |notes| {
            let named: HashSet<&str> = notes.ids().collect();
            settled.retain(|id| named.contains(id.as_str()));
            settled.extend(
                named
                    .iter()
                    .filter(|id| document.knows(id))
                    .map(|id| (*id).to_owned()),
            );
        });
        self.document = document;
    }

    /// Whether a publication speaks for filing `id` on this worker.
    fn is_settled(&self, id: &str) -> bool {
        self.document.knows(id) || self.settled.contains(id)
    }

    /// The document as last published (without this worker's local notes of use).
    pub fn clone_document(&self) -> GrantsDocument {
        self.document.clone()
    }

    /// What to do for `subject` running `hash` under `rule`, at `now`.
    pub fn lookup(
        &self,
        subject: &str,
        rule: &str,
        requirement: &ApprovalRequirement,
        hash: &str,
        now: u64,
    ) -> Lookup<'_> {
        let mine =
            |g: &&Grant| g.subject == subject && g.rule == rule && g.satisfies(requirement, now);
        let grants = &self.document.grants;
        if let Some(grant) = grants
            .iter()
            .filter(mine)
            .find(|g| g.kind == GrantKind::Window)
        {
            return Lookup::Window(grant);
        }
        if let Some(grant) = grants.iter().filter(mine).find(|g| {
            g.kind == GrantKind::SingleUse
                && g.hash.as_deref() == Some(hash)
                && !self.used.contains(&g.id)
        }) {
            return Lookup::SingleUse(grant);
        }
        let published =
            self.document.pending.iter().find(|p| {
                p.subject == subject && p.rule == rule && p.hash.as_deref() == Some(hash)
            });
        if let Some(pending) = published {
            return Lookup::Pending(pending.id.clone());
        }
        let mut filed = None;
        let mut filed_unpublished = 0;
        let settled = |id: &str| self.is_settled(id);
        self.filings.inspect(&mut |notes| {
            filed = notes
                .pending(subject, rule, hash, now, &settled)
                .map(|p| p.id.clone());
            filed_unpublished = notes.live_for(subject, now, &settled);
        });
        if let Some(id) = filed {
            return Lookup::Pending(id);
        }
        let at_limit = self.document.max_pending_per_requester.filter(|most| {
            let published = self
                .document
                .pending
                .iter()
                .filter(|p| p.subject == subject)
                .count();
            published.saturating_add(filed_unpublished)
                >= usize::try_from(*most).unwrap_or(usize::MAX)
        });
        at_limit.map_or(Lookup::Nothing, Lookup::TooManyPending)
    }

    /// Notes that this worker is using a single-use grant.
    pub fn mark_used(&mut self, id: &str) {
        if !self.used.iter().any(|u| u == id) {
            self.used.push(id.to_owned());
        }
    }

    /// Notes a request about to be filed at `now`, so a retry on any worker
    /// names it until a publication that knows of it is adopted; `Err` with
    /// the id of a request for the same thing that another connection filed
    /// since this one's [`GrantBook::lookup`], which is named instead.
    pub fn claim_filing(&self, pending: PendingRef, now: u64) -> Result<(), String> {
        let settled = |id: &str| self.is_settled(id);
        let mut claimed = Ok(());
        self.filings.change(&mut |notes| {
            claimed = notes.claim(pending.clone(), now, &settled);
        });
        claimed
    }

    /// Forgets the note of filing `id`: the filing failed, so there is no
    /// such request to name.
    pub fn forget_filing(&self, id: &str) {
        self.filings.change(&mut |notes| notes.forget(id));
    }
}

/// Why a filter files nothing for a requester who already has `most`
/// requests pending ([`Lookup::TooManyPending`]), and what they can do.
pub fn too_many_pending(most: u32) -> String {
    format!(
        "you have {most} approval requests pending, the most the approval service allows: \
         withdraw one (gatehouse withdraw ID; gatehouse approvals list shows them) or wait \
         for a decision, then run this again"
    )
}

/// `sha256:<hex>` of a statement's exact text and parameters (each length-
/// prefixed, `None` for SQL NULL), the identity of what a single-use grant allows.
pub fn statement_hash(text: &[u8], params: &[Option<&[u8]>]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"gatehouse.statement.v1\0");
    hasher.update((text.len() as u64).to_be_bytes());
    hasher.update(text);
    for param in params {
        match param {
            Some(bytes) => {
                hasher.update([1]);
                hasher.update((bytes.len() as u64).to_be_bytes());
                hasher.update(bytes);
            }
            None => hasher.update([0]),
        }
    }
    hex_digest("sha256:", &hasher.finalize())
}

/// `sha256:<hex>` of a Kubernetes request's method and path (query included).
pub fn request_hash(method: &str, path: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"gatehouse.kubernetes.v1\0");
    hasher.update(method.as_bytes());
    hasher.update([0]);
    hasher.update(path.as_bytes());
    hex_digest("sha256:", &hasher.finalize())
}

/// A short stable name for a statement's shape (its text with literals
/// replaced): the first 16 hex digits of its SHA-256.
pub fn fingerprint(shape: &str) -> String {
    let full = hex_digest("", &Sha256::digest(shape.as_bytes()));
    full.get(..16).unwrap_or_default().to_owned()
}

/// A fresh request id from `seed` (which must differ per request: connection,
/// time, counter): `apr-` and 16 base-32 characters of its hash.
pub fn request_id(seed: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let digest = Sha256::digest(seed);
    let mut id = String::from("apr-");
    let mut bits: u32 = 0;
    let mut count = 0;
    for byte in digest.iter().take(10) {
        bits = (bits << 8) | u32::from(*byte);
        count += 8;
        while count >= 5 {
            count -= 5;
            let index = ((bits >> count) & 31) as usize;
            id.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'a')));
        }
    }
    id
}

fn hex_digest(prefix: &str, digest: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(prefix.len() + digest.len() * 2);
    out.push_str(prefix);
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::request::{NewRequest, Target, valid_id};
    use crate::approval::requirement::Holding;
    use serde_json::json;

    fn who(subject: &str, groups: &[&str]) -> Principal {
        Principal {
            subject: subject.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn requirement(grant: &str) -> ApprovalRequirement {
        ApprovalRequirement::from_value(
            json!({"approvers": ["dba"], "valid": "5m", "grant": grant, "break_glass": ["oncall"]}),
            Holding::Allowed,
        )
        .unwrap()
    }

    fn approved(grant: &str, by: Principal) -> ApprovalRequest {
        let mut r = ApprovalRequest::new(
            request_id(b"seed"),
            NewRequest {
                id: None,
                rule: "writes".into(),
                requirement: requirement(grant),
                reason: Some("ticket 7".into()),
                target: Target::PostgresStatement {
                    database: "d".into(),
                    role: "r".into(),
                    statement: "s".into(),
                    fingerprint: "f".into(),
                    statement_hash: "sha256:h".into(),
                },
                grant_seconds: None,
            },
            who("dev", &["developer", "oncall"]),
            100,
        )
        .unwrap();
        r.review(&by, Verdict::Approve, Some("ok".into()), 100)
            .unwrap();
        r
    }

    #[test]
    fn an_approved_request_publishes_its_grant() {
        let r = approved("single_use", who("dana", &["dba"]));
        let g = Grant::from_request(&r).unwrap();
        assert_eq!((g.subject.as_str(), g.until), ("dev", 400));
        assert_eq!(g.hash.as_deref(), Some("sha256:h"));
        assert!(g.satisfies(&requirement("single_use"), 200));
        let reference = g.reference();
        assert_eq!(reference.approvers, ["dana"]);
        assert_eq!(reference.reason.as_deref(), Some("ticket 7"));
    }

    #[test]
    fn the_filter_checks_the_approvals_against_its_own_rule() {
        let g = Grant::from_request(&approved("single_use", who("dana", &["dba"]))).unwrap();
        // Another rule: different approver group, more approvals, other kind, shorter validity.
        let mut other = requirement("single_use");
        other.approvers = vec!["security".into()];
        assert!(!g.satisfies(&other, 200));
        let mut two = requirement("single_use");
        two.approvals = 2;
        assert!(!g.satisfies(&two, 200));
        assert!(!g.satisfies(&requirement("window"), 200));
        let mut short = requirement("single_use");
        short.valid_seconds = 60;
        assert!(!g.satisfies(&short, 200));
        assert!(!g.satisfies(&requirement("single_use"), 400), "ended");
        // A forged grant naming the user as their own approver.
        let mut forged = g.clone();
        forged.approvers = vec![who("dev", &["dba"])];
        assert!(!forged.satisfies(&requirement("single_use"), 200));
    }

    #[test]
    fn a_forced_grant_needs_the_users_break_glass_group() {
        let r = approved("single_use", who("dev", &["developer", "oncall"]));
        let g = Grant::from_request(&r).unwrap();
        assert!(g.forced);
        assert!(g.satisfies(&requirement("single_use"), 200));
        let mut no_glass = requirement("single_use");
        no_glass.break_glass.clear();
        assert!(!g.satisfies(&no_glass, 200));
    }

    #[test]
    fn lookup_prefers_a_window_then_an_unused_single_use_then_a_pending_request() {
        let single = Grant::from_request(&approved("single_use", who("dana", &["dba"]))).unwrap();
        let mut book = GrantBook::default();
        book.update(GrantsDocument {
            grants: vec![single.clone()],
            pending: vec![PendingRef {
                id: "apr-pend".into(),
                rule: "writes".into(),
                subject: "dev".into(),
                hash: Some("sha256:other".into()),
            }],
            ..GrantsDocument::default()
        });
        let req = requirement("single_use");
        assert_eq!(
            book.lookup("dev", "writes", &req, "sha256:h", 200),
            Lookup::SingleUse(&single)
        );
        assert_eq!(
            book.lookup("eve", "writes", &req, "sha256:h", 200),
            Lookup::Nothing
        );
        assert_eq!(
            book.lookup("dev", "reads", &req, "sha256:h", 200),
            Lookup::Nothing
        );
        assert_eq!(
            book.lookup("dev", "writes", &req, "sha256:other", 200),
            Lookup::Pending("apr-pend".into())
        );
        book.mark_used(&single.id);
        assert_eq!(
            book.lookup("dev", "writes", &req, "sha256:h", 200),
            Lookup::Nothing
        );
        let window = Grant::from_request(&approved("window", who("dana", &["dba"]))).unwrap();
        book.update(GrantsDocument {
            grants: vec![window.clone()],
            pending: vec![],
            ..GrantsDocument::default()
        });
        let req = requirement("window");
        assert_eq!(
            book.lookup("dev", "writes", &req, "sha256:any", 200),
            Lookup::Window(&window)
        );
    }

    fn pending(id: &str) -> PendingRef {
        PendingRef {
            id: id.into(),
            rule: "writes".into(),
            subject: "dev".into(),
            hash: Some("sha256:h".into()),
        }
    }

    #[test]
    fn a_filing_is_named_until_a_publication_knows_of_it() {
        let req = requirement("single_use");
        let mut book = GrantBook::default();
        let named =
            |book: &GrantBook, now| match book.lookup("dev", "writes", &req, "sha256:h", now) {
                Lookup::Pending(id) => Lookup::Pending(id),
                _ => Lookup::Nothing,
            };
        book.claim_filing(pending("apr-1"), 100).unwrap();
        // A publication fetched before the filing reached the service.
        book.update(GrantsDocument::default());
        assert_eq!(
            named(&book, 101),
            Lookup::Pending("apr-1".into()),
            "a stale publication forgot the filing"
        );
        assert_eq!(
            book.lookup("eve", "writes", &req, "sha256:h", 101),
            Lookup::Nothing
        );
        // Listed as pending, then closed without this worker seeing the
        // listing (it adopts only the latest publication): either way the
        // note is settled, and the next run files anew.
        book.update(GrantsDocument {
            closed: vec!["apr-1".into()],
            ..GrantsDocument::default()
        });
        assert_eq!(named(&book, 101), Lookup::Nothing);
        book.claim_filing(pending("apr-2"), 100).unwrap();
        book.update(GrantsDocument {
            pending: vec![pending("apr-2")],
            ..GrantsDocument::default()
        });
        assert_eq!(named(&book, 101), Lookup::Pending("apr-2".into()));
        book.update(GrantsDocument::default());
        assert_eq!(
            named(&book, 101),
            Lookup::Nothing,
            "once published, the publications speak for it"
        );
        // A filing no publication ever names (it never reached the
        // service) is named for a few poll periods, not for ever; one the
        // glue saw fail is forgotten at once.
        book.claim_filing(pending("apr-3"), 100).unwrap();
        assert_eq!(named(&book, 109), Lookup::Pending("apr-3".into()));
        assert_eq!(named(&book, 110), Lookup::Nothing);
        book.claim_filing(pending("apr-5"), 110).unwrap();
        assert_eq!(named(&book, 111), Lookup::Pending("apr-5".into()));
        book.forget_filing("apr-5");
        assert_eq!(named(&book, 111), Lookup::Nothing);
    }

    #[test]
    fn a_requester_at_the_services_limit_files_nothing_more() {
        let req = requirement("single_use");
        let mine = |id: &str, hash: &str| PendingRef {
            hash: Some(hash.into()),
            ..pending(id)
        };
        let mut book = GrantBook::default();
        let document = GrantsDocument {
            pending: vec![mine("apr-1", "sha256:a"), mine("apr-2", "sha256:b")],
            max_pending_per_requester: Some(3),
            ..GrantsDocument::default()
        };
        book.update(document.clone());
        assert_eq!(
            book.lookup("dev", "writes", &req, "sha256:h", 100),
            Lookup::Nothing
        );
        // A filing no publication names yet counts too.
        book.claim_filing(mine("apr-3", "sha256:c"), 100).unwrap();
        assert_eq!(
            book.lookup("dev", "writes", &req, "sha256:h", 100),
            Lookup::TooManyPending(3)
        );
        // What is pending is still named; others are not limited.
        assert_eq!(
            book.lookup("dev", "writes", &req, "sha256:c", 100),
            Lookup::Pending("apr-3".into())
        );
        assert_eq!(
            book.lookup("eve", "writes", &req, "sha256:h", 100),
            Lookup::Nothing
        );
        // Once published, the filing is counted once.
        let mut published = document.clone();
        published.pending.push(mine("apr-3", "sha256:c"));
        book.update(published);
        assert_eq!(
            book.lookup("dev", "writes", &req, "sha256:h", 100),
            Lookup::TooManyPending(3)
        );
        // A decision makes room; a service that publishes no limit has none.
        book.update(document.clone());
        book.update(GrantsDocument {
            closed: vec!["apr-3".into()],
            ..document.clone()
        });
        assert_eq!(
            book.lookup("dev", "writes", &req, "sha256:h", 100),
            Lookup::Nothing
        );
        let mut unlimited = document;
        unlimited.max_pending_per_requester = None;
        unlimited.pending.push(mine("apr-4", "sha256:d"));
        book.update(unlimited);
        assert_eq!(
            book.lookup("dev", "writes", &req, "sha256:h", 100),
            Lookup::Nothing
        );
    }

    #[test]
    fn workers_sharing_filings_name_one_request() {
        let req = requirement("single_use");
        let filings: Rc<dyn Filings> = Rc::new(LocalFilings::default());
        let first = GrantBook::sharing_filings(Rc::clone(&filings));
        let mut second = GrantBook::sharing_filings(Rc::clone(&filings));
        // The second worker has adopted no publication since the first filed.
        assert_eq!(
            second.lookup("dev", "writes", &req, "sha256:h", 100),
            Lookup::Nothing
        );
        first.claim_filing(pending("apr-1"), 100).unwrap();
        assert_eq!(
            second.lookup("dev", "writes", &req, "sha256:h", 101),
            Lookup::Pending("apr-1".into())
        );
        // Both looked before either filed: the second claim loses, and
        // names the first filing instead of filing again.
        assert_eq!(
            second.claim_filing(pending("apr-2"), 101),
            Err("apr-1".to_owned())
        );
        // A worker whose publication settled the request files anew while
        // one still on an older publication names it.
        second.update(GrantsDocument {
            closed: vec!["apr-1".into()],
            ..GrantsDocument::default()
        });
        assert_eq!(second.claim_filing(pending("apr-3"), 102), Ok(()));
        assert_eq!(
            first.lookup("dev", "writes", &req, "sha256:h", 102),
            Lookup::Pending("apr-3".into())
        );
        first.forget_filing("apr-3");
        assert_eq!(
            second.lookup("dev", "writes", &req, "sha256:h", 102),
            Lookup::Nothing
        );
    }

    #[test]
    fn hashes_separate_text_and_parameters() {
        let a = statement_hash(b"select $1", &[Some(b"1")]);
        assert_ne!(a, statement_hash(b"select $1", &[Some(b"2")]));
        assert_ne!(a, statement_hash(b"select $1", &[None]));
        assert_ne!(
            statement_hash(b"ab", &[]),
            statement_hash(b"a", &[Some(b"b")])
        );
        assert_eq!(a, statement_hash(b"select $1", &[Some(b"1")]));
        assert!(a.starts_with("sha256:") && a.len() == 71);
        assert_ne!(request_hash("GET", "/a"), request_hash("POST", "/a"));
    }

    #[test]
    fn request_ids_are_valid_and_differ_by_seed() {
        let a = request_id(b"1");
        assert!(valid_id(&a), "{a}");
        assert_eq!(a.len(), 20);
        assert_ne!(a, request_id(b"2"));
    }
}
