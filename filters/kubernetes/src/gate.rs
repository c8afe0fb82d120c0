//! One request's way through the filter, decided in one place: decode the
//! target, verify the caller's token, apply the policy, and say what the glue
//! must do (answer locally, fetch keys first, or forward with which headers)
//! together with the audit records.
//!
//! Times: `now_micros` is unix microseconds; key-cache times are unix seconds.

use crate::audit::{AUDIT_ID_HEADER, EventHoles, EventText, RequestAudit, Stage};
use crate::exec::StreamRequest;
use crate::masking::{BodyMasker, json_only_accept};
use crate::policy::{Policy, Request, Verdict};
use crate::recording::{RecordingPlan, SessionRequest};
use crate::request_info::{RequestInfo, decode_request};
use crate::status::{self, Status};
use gatehouse_core::config::{ConfigError, config_hash};
pub use gatehouse_core::identity::KeyFetch;
use gatehouse_core::identity::{Identity, TokenRejection, Verifier};
use gatehouse_core::policy::{Action, Decision};
use std::sync::Arc;

mod approval;
mod remembered;
mod self_review;
mod shadow;
pub use approval::{
    ApprovalMemory, ApprovalStep, Conclusion, LocalMemory, REASON_HEADER, RecentRefusal,
    ServiceCall, forget, remember, standing_refusal,
};
pub use remembered::{MAX_REMEMBERED, REMEMBERED_SECONDS};
pub use self_review::{MAX_REVIEW_BODY_BYTES, PendingReview, SELF_REVIEW_RULE};
pub use shadow::{
    MODE_ANNOTATION, WOULD_BE_STATUS_ANNOTATION, WOULD_MASK_ANNOTATION, audit_filter_state_key,
};

/// Username recorded for requests without a verified token.
pub const ANONYMOUS: &str = "system:anonymous";

/// `GET` on this path is a readiness probe the filter answers itself (200,
/// naming its build and policy), without a token and without the API server:
/// it proves the filter is loaded and configured on this listener.
pub const READINESS_PATH: &str = "/gatehouse/ready";
/// The rule named in a readiness probe's audit Event and decision stats.
pub const READINESS_RULE: &str = "gatehouse:readiness";

/// The compiled filter configuration with its key caches.
#[derive(Debug)]
pub struct Gate {
    policy: Policy,
    verifier: Option<Verifier>,
    /// `sha256:<hex>` of the configuration, on every audit Event.
    policy_hash: String,
    /// The grants this worker knows, once the glue connects them.
    approvals: Option<approval::GateApprovals>,
    /// Admissions of requests seen in the last few seconds.
    remembered: remembered::Remembered,
}

/// What the glue knows when a request's headers arrive.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The raw `:path`, query included.
    pub path: &'a str,
    /// Every request header (names lowercase, as Envoy gives them).
    pub headers: &'a [(String, String)],
    /// The peer address (`ip:port`), for `sourceIPs`.
    pub peer: Option<&'a str>,
    /// This request's audit id.
    pub audit_id: &'a str,
    pub now_micros: i64,
}

/// A response the filter sends itself, with its audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    /// A `metav1.Status` JSON body.
    pub body: String,
    /// The `ResponseComplete` audit Event (JSON).
    pub record: String,
    /// The decision behind a refusal after authentication (403); `None` for
    /// requests refused before policy ran (400, 401).
    pub decision: Option<Decision>,
}

/// How to forward an admitted request.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Headers to remove (the caller's credential).
    pub remove_headers: Vec<String>,
    /// Headers to set, replacing any value.
    pub set_headers: Vec<(String, String)>,
    /// Headers to add (repeated names, such as `Impersonate-Group`).
    pub add_headers: Vec<(String, String)>,
    /// Whether the response must be masked.
    pub mask: bool,
    /// What masks the response body (with [`crate::masking::WatchLines`] for
    /// a watch stream), when it must be masked.
    pub body_masker: Option<BodyMasker>,
    /// How to record the exec or attach session this request opens, when
    /// the rule that admitted it asks for a recording.
    pub recording: Option<RecordingPlan>,
    /// What the request's Events say, but for its own audit id, arrival
    /// time and masked fields (below): the requests of one remembered
    /// admission share it.
    audit: Arc<RequestAudit>,
    audit_id: String,
    received_micros: i64,
    /// The masked-fields annotation, once the response was masked.
    masked_fields: Option<String>,
    decision: Decision,
    /// The Events serialized once, with holes for what differs between
    /// writes (built at the first write; shared with a remembered admission).
    text: Option<Arc<EventText>>,
    /// The records as last written by [`Forward::current_records`].
    written: String,
}

impl Forward {
    /// A forward whose Events are `audit`'s.
    fn new(
        audit: RequestAudit,
        decision: Decision,
        (remove_headers, set_headers, add_headers): HeaderChanges,
        body_masker: Option<BodyMasker>,
        mask: bool,
    ) -> Forward {
        Forward {
            remove_headers,
            set_headers,
            add_headers,
            mask,
            body_masker,
            recording: None,
            audit_id: audit.audit_id().to_owned(),
            received_micros: audit.received_micros(),
            audit: Arc::new(audit),
            masked_fields: None,
            decision,
            text: None,
            written: String::new(),
        }
    }

    /// The same admission for another request with its own audit id and
    /// arrival time (the `Audit-ID` header it sets changes with it).
    fn for_request(&self, audit_id: &str, received_micros: i64) -> Forward {
        let mut set_headers = self.set_headers.clone();
        for (name, value) in &mut set_headers {
            if name == AUDIT_ID_HEADER {
                audit_id.clone_into(value);
            }
        }
        Forward {
            remove_headers: self.remove_headers.clone(),
            set_headers,
            add_headers: self.add_headers.clone(),
            mask: self.mask,
            body_masker: self.body_masker.clone(),
            recording: None,
            audit: Arc::clone(&self.audit),
            audit_id: audit_id.to_owned(),
            received_micros,
            masked_fields: None,
            decision: self.decision.clone(),
            text: self.text.clone(),
            written: String::new(),
        }
    }

    /// Serializes the Events' skeleton, unless done.
    fn prepare_text(&mut self) {
        if self.text.is_none() {
            self.text = EventText::of(&self.audit).map(Arc::new);
        }
    }

    /// The policy decision that let the request through (for stats).
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// Records that `approval` lets the request through.
    pub fn approve(&mut self, approval: &gatehouse_core::approval::ApprovalRef) {
        Arc::make_mut(&mut self.audit).approve(approval);
        self.text = None;
    }

    /// Notes the response fields that were masked in the records.
    pub fn set_masked_fields(&mut self, fields: &[String]) {
        if !fields.is_empty() {
            self.masked_fields = Some(fields.join(","));
        }
    }

    /// Whether the API server treats the request as long-running (exec, watch,
    /// logs): it is recorded at `ResponseStarted` and `ResponseComplete`.
    pub fn is_long_running(&self) -> bool {
        self.audit.is_long_running()
    }

    /// The records to deliver once the response status is known, newline-separated
    /// (`ResponseStarted` first for long-running requests, then `ResponseComplete`),
    /// each Event serialized in full: what [`Forward::current_records`] must equal.
    pub fn records(&self, status_code: u16, started_micros: i64, now_micros: i64) -> String {
        let mut audit = self.audit.for_request(&self.audit_id, self.received_micros);
        if let Some(fields) = &self.masked_fields {
            audit.set_masked_fields(std::slice::from_ref(fields));
        }
        let response = Status::code_only(status_code);
        let mut out = String::new();
        for stage in audit.stages() {
            let at = match stage {
                Stage::ResponseStarted => started_micros,
                _ => now_micros,
            };
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&event_json(&audit, *stage, &response, at));
        }
        out
    }

    /// [`Forward::records`], for a glue that writes them more than once (at
    /// response headers, in case the stream ends without a last body, and
    /// again at the end): the Events are serialized once, and each write
    /// fills in what moved (status, times, masked fields).
    pub fn current_records(
        &mut self,
        status_code: u16,
        started_micros: i64,
        now_micros: i64,
    ) -> &str {
        self.prepare_text();
        let Some(text) = &self.text else {
            self.written = self.records(status_code, started_micros, now_micros);
            return &self.written;
        };
        let response = unserializable(serde_json::to_string(
            &Status::code_only(status_code).for_audit(),
        ));
        self.written.clear();
        for stage in self.audit.stages() {
            let at = match stage {
                Stage::ResponseStarted => started_micros,
                _ => now_micros,
            };
            if !self.written.is_empty() {
                self.written.push('\n');
            }
            let holes = EventHoles {
                audit_id: &self.audit_id,
                stage: *stage,
                response_status: &response,
                received_micros: self.received_micros,
                stage_micros: at,
                masked_fields: self.masked_fields.as_deref(),
            };
            text.render(&mut self.written, &holes);
        }
        &self.written
    }
}

/// The request header changes of a forward: removed, set, added.
type HeaderChanges = (Vec<String>, Vec<(String, String)>, Vec<(String, String)>);

/// The outcome of a request's headers.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Answer locally (400, 401 or 403); the request goes no further.
    Respond(LocalResponse),
    /// Fetch this key set, hand it to [`Verifier::keys_fetched`] (or
    /// [`Verifier::keys_failed`]) through [`Gate::verifier_mut`], then call [`Gate::admit`] again.
    FetchKeys(KeyFetch),
    /// Let it through with these changes.
    Forward(Box<Forward>),
    /// Needs approval: make the step's call, and hand its answer to
    /// [`Gate::conclude_approval`].
    Approval(Box<ApprovalStep>),
    /// A self-check the gate answers itself once it has the request body:
    /// hand the whole body to [`Gate::answer_review`].
    ReadBody(Box<PendingReview>),
}

impl Gate {
    /// Compiles the filter configuration (policy and trusted issuers).
    pub fn from_json(json: &[u8]) -> Result<Gate, ConfigError> {
        let policy = Policy::from_json(json)?;
        let verifier = policy
            .identity()
            .map(|config| Verifier::from_config(config).map_err(|e| e.under("identity")))
            .transpose()?;
        Ok(Gate {
            policy,
            verifier,
            policy_hash: config_hash(json),
            approvals: None,
            remembered: remembered::Remembered::default(),
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Judges a request's headers: a repeat of a request let through in the
    /// last few seconds, by a caller its token still proves to be the same,
    /// is answered from memory ([`remembered`]).
    pub fn admit(&mut self, head: &RequestHead<'_>) -> Admission {
        let key = self
            .mode()
            .is_enforce()
            .then(|| remembered::key(head))
            .flatten();
        let Some(key) = key else {
            return self.admit_in_full(head);
        };
        if let Some(identity) = self.current_identity(head)
            && let Some(forward) = self.remembered.get(&key, head, &identity)
        {
            return Admission::Forward(Box::new(forward));
        }
        let admission = self.admit_in_full(head);
        if let Admission::Forward(forward) = &admission
            && forward.recording.is_none()
            && matches!(forward.decision.action, Action::Allow | Action::Observe)
            && let Some(identity) = self.current_identity(head)
        {
            let now = head.now_micros.div_euclid(1_000_000);
            self.remembered.insert(key, forward, identity, now);
        }
        admission
    }

    /// Who the request's bearer token proves the caller to be now, as the
    /// verifier says (its kept verdicts included); `None` when it proves
    /// nothing.
    fn current_identity(&mut self, head: &RequestHead<'_>) -> Option<Identity> {
        let now = head.now_micros.div_euclid(1_000_000);
        let token = head
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, value)| bearer_token(value))?;
        self.verifier.as_mut()?.verify_cached(token, now).ok()
    }

    /// How many admissions are remembered.
    pub fn remembered_admissions(&self) -> usize {
        self.remembered.len()
    }

    /// Forgets every remembered admission: the next request of each kind is
    /// judged the whole way (what the benches measure as a first request).
    pub fn forget_admissions(&mut self) {
        self.remembered.clear();
    }

    /// Judges a request's headers the whole way.
    fn admit_in_full(&mut self, head: &RequestHead<'_>) -> Admission {
        let now_seconds = head.now_micros.div_euclid(1_000_000);
        let decoded = match decode_request(head.method, head.path) {
            Ok(decoded) => decoded,
            Err(error) => {
                let info = RequestInfo {
                    path: head.path.split('?').next().unwrap_or_default().to_owned(),
                    verb: head.method.to_ascii_lowercase(),
                    ..RequestInfo::default()
                };
                let refusal = status::status(
                    error.http_status(),
                    error.reason(),
                    &format!("gatehouse refused an ambiguous request: {error}"),
                );
                return self.respond(head, &info, &Identity::claimed(ANONYMOUS), None, refusal);
            }
        };
        let info = &decoded.info;
        if let Some((name, _)) = head
            .headers
            .iter()
            .find(|(name, _)| is_method_override_header(name))
        {
            let refusal = status::status(
                400,
                "BadRequest",
                &format!("gatehouse refused an ambiguous request: {name} names another method"),
            );
            return self.respond(head, info, &Identity::claimed(ANONYMOUS), None, refusal);
        }
        if head.method == "GET" && info.path == READINESS_PATH && self.mode().is_enforce() {
            return self.answer_readiness(head, info);
        }
        let identity = match self.authenticate(head, now_seconds) {
            Ok(identity) => identity,
            Err(Authentication::Fetch(fetch)) => return Admission::FetchKeys(fetch),
            Err(Authentication::Refused(message)) => {
                let refusal = status::unauthorized(&message);
                return self.respond(head, info, &Identity::claimed(ANONYMOUS), None, refusal);
            }
        };
        if let Some((name, _)) = head
            .headers
            .iter()
            .find(|(name, _)| is_impersonation_header(name))
        {
            let decision = Decision {
                action: Action::Deny,
                rule: None,
                message: Some(format!("gatehouse does not forward {name} headers")),
            };
            let refusal = status::forbidden(
                info,
                &identity.subject,
                decision.message.as_deref().unwrap_or_default(),
            );
            return self.respond(head, info, &identity, Some(&decision), refusal);
        }
        if let Some(admission) = self.self_review(head, info, &identity) {
            return admission;
        }
        let stream = StreamRequest::from_request(
            info,
            &decoded.query,
            head.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let Verdict {
            decision,
            mask,
            recording,
        } = self.policy.decide(&Request {
            info,
            stream: stream.as_ref(),
            identity: &identity,
        });
        let mut plan = recording.and_then(|config| {
            let session = SessionRequest {
                info,
                stream: stream.as_ref()?,
                identity: &identity,
                rule: decision.rule.as_deref(),
                audit_id: head.audit_id,
                policy_hash: &self.policy_hash,
            };
            RecordingPlan::for_request(config, &session)
        });
        if decision.action == Action::RequireApproval
            && let Some(admission) =
                self.admit_with_approval(head, info, &identity, &decision, mask, &mut plan)
        {
            return admission;
        }
        if decision.action.blocks() {
            let reason = refusal_reason(&decision);
            let refusal = status::forbidden(info, &identity.subject, &reason);
            return self.respond(head, info, &identity, Some(&decision), refusal);
        }
        let audit = self
            .audit_for(head, info, &identity)
            .with_decision(&decision);
        if self.mode().is_shadow() {
            return self.observe_forward(audit, decision, mask);
        }
        let body_masker = mask
            .then(|| BodyMasker::for_request(info, self.policy.masking()))
            .flatten();
        let mut forward = self.forward(head, &identity, (audit, decision), mask, body_masker);
        forward.recording = plan;
        Admission::Forward(Box::new(forward))
    }

    /// The token verifier, whose remote key sets the glue keeps fresh (see
    /// [`gatehouse_core::identity`]); `None` when no issuer is trusted.
    pub fn verifier_mut(&mut self) -> Option<&mut Verifier> {
        self.verifier.as_mut()
    }

    fn authenticate(
        &mut self,
        head: &RequestHead<'_>,
        now: i64,
    ) -> Result<Identity, Authentication> {
        let Some(verifier) = self.verifier.as_mut() else {
            return Err(Authentication::Refused(
                "gatehouse trusts no token issuer".to_owned(),
            ));
        };
        let token = head
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, value)| bearer_token(value));
        let Some(token) = token else {
            return Err(Authentication::Refused(
                "gatehouse needs a bearer token from a trusted issuer".to_owned(),
            ));
        };
        verifier.verify_cached(token, now).map_err(|rejection| {
            match verifier.fetch_for(&rejection, now) {
                Some(fetch) => Authentication::Fetch(fetch),
                None => Authentication::Refused(rejection_message(&rejection)),
            }
        })
    }

    fn audit_for(
        &self,
        head: &RequestHead<'_>,
        info: &RequestInfo,
        identity: &Identity,
    ) -> RequestAudit {
        RequestAudit::new(head.audit_id, head.path, info, identity, head.now_micros)
            .with_headers(
                head.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                head.peer,
            )
            .with_policy_hash(&self.policy_hash)
    }

    /// The readiness answer, recorded like every request.
    fn answer_readiness(&self, head: &RequestHead<'_>, info: &RequestInfo) -> Admission {
        let decision = Decision {
            action: Action::Allow,
            rule: Some(READINESS_RULE.to_owned()),
            message: None,
        };
        let message = format!(
            "gatehouse ready: gatehouse kubernetes filter {}, policy {}",
            gatehouse_core::build::VERSION,
            self.policy_hash
        );
        let audit = self
            .audit_for(head, info, &Identity::claimed(ANONYMOUS))
            .with_decision(&decision);
        Admission::Respond(LocalResponse {
            status: 200,
            body: status::status(200, "", &message).to_json(),
            record: event_json(
                &audit,
                Stage::ResponseComplete,
                &Status::code_only(200),
                head.now_micros,
            ),
            decision: Some(decision),
        })
    }

    fn respond(
        &self,
        head: &RequestHead<'_>,
        info: &RequestInfo,
        identity: &Identity,
        decision: Option<&Decision>,
        refusal: Status,
    ) -> Admission {
        if self.mode().is_shadow() {
            return self.observe_refusal(head, info, identity, decision, &refusal);
        }
        let mut audit = self.audit_for(head, info, identity);
        if let Some(decision) = decision {
            audit = audit.with_decision(decision);
        }
        let record = event_json_in_place(
            &mut audit,
            Stage::ResponseComplete,
            &refusal,
            head.now_micros,
        );
        Admission::Respond(LocalResponse {
            status: refusal.http_status(),
            body: refusal.to_json(),
            record,
            decision: decision.cloned(),
        })
    }

    fn forward(
        &self,
        head: &RequestHead<'_>,
        identity: &Identity,
        (audit, decision): (RequestAudit, Decision),
        mask: bool,
        body_masker: Option<BodyMasker>,
    ) -> Forward {
        let upstream = self.policy.upstream();
        let mut remove_headers = vec!["authorization".to_owned()];
        let mut set_headers = vec![(AUDIT_ID_HEADER.to_owned(), head.audit_id.to_owned())];
        if let Some(token) = &upstream.bearer_token {
            remove_headers.clear();
            set_headers.push(("authorization".to_owned(), format!("Bearer {}", token.0)));
        }
        if let Some(header) = &upstream.header {
            set_headers.push((header.name.clone(), header.value.0.clone()));
        }
        let mut add_headers = Vec::new();
        if upstream.impersonate {
            set_headers.push(("Impersonate-User".to_owned(), identity.subject.clone()));
            add_headers.extend(
                identity
                    .groups
                    .iter()
                    .map(|g| ("Impersonate-Group".to_owned(), g.clone())),
            );
        }
        if body_masker.is_some() {
            // The body must be JSON the filter can read, and uncompressed.
            let accept = head
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("accept"))
                .map_or("application/json", |(_, value)| value.as_str());
            set_headers.push(("accept".to_owned(), json_only_accept(accept)));
            remove_headers.push("accept-encoding".to_owned());
        }
        Forward::new(
            audit,
            decision,
            (remove_headers, set_headers, add_headers),
            body_masker,
            mask,
        )
    }
}

enum Authentication {
    Fetch(KeyFetch),
    Refused(String),
}

/// `Bearer <token>` (scheme case-insensitive), else `None`.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What a client is told about a refused token: the reason, never the token.
fn rejection_message(rejection: &TokenRejection) -> String {
    format!(
        "gatehouse rejected the bearer token: {rejection} ({})",
        rejection.code()
    )
}

/// The reason appended to a 403: the rule's message, naming the rule.
fn refusal_reason(decision: &Decision) -> String {
    let rule = decision.rule.as_deref().unwrap_or("default");
    match (&decision.message, decision.action) {
        (Some(message), Action::RequireApproval) => {
            format!("needs approval under gatehouse rule {rule}: {message}")
        }
        (None, Action::RequireApproval) => format!("needs approval under gatehouse rule {rule}"),
        (Some(message), _) => format!("denied by gatehouse rule {rule}: {message}"),
        (None, _) => format!("denied by gatehouse rule {rule}"),
    }
}

/// Headers that ask the API server to act as someone else.
/// Whether `name` is an `Impersonate-*` header. Callers may not send one (it is
/// refused before policy runs): only the gateway impersonates, on the caller's
/// verified behalf.
pub fn is_impersonation_header(name: &str) -> bool {
    name.get(..12)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("impersonate-"))
}

/// Headers some frameworks and proxies take as the request's real method: the
/// policy judged the method on the request line, so none may say otherwise.
pub fn is_method_override_header(name: &str) -> bool {
    [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ]
    .iter()
    .any(|known| name.eq_ignore_ascii_case(known))
}

fn event_json(audit: &RequestAudit, stage: Stage, status: &Status, at: i64) -> String {
    unserializable(audit.event(stage, status, at).to_json())
}

/// [`event_json`] of an audit the caller may change (no copy is made).
fn event_json_in_place(audit: &mut RequestAudit, stage: Stage, status: &Status, at: i64) -> String {
    unserializable(audit.event_json(stage, status, at))
}

/// The Event line, or a line saying why there is none.
fn unserializable(json: serde_json::Result<String>) -> String {
    json.unwrap_or_else(|e| format!("{{\"kind\":\"Event\",\"error\":\"{e}\"}}"))
}

/// A UUID-shaped audit id from a seed the glue makes unique (time, worker,
/// context): the bits are mixed so ids do not reveal the seed's structure.
pub fn audit_id(seed_high: u64, seed_low: u64) -> String {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let a = mix(seed_high ^ mix(seed_low));
    let b = mix(seed_low.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ a);
    // The 32 hex digits of `a` then `b`, written straight into the id (one
    // allocation: it is made for every request).
    let digit = |at: usize| {
        let word = if at < 16 { a } else { b };
        let nibble = (word >> (60 - 4 * (at % 16))) & 0xf;
        char::from_digit(u32::try_from(nibble).unwrap_or_default(), 16).unwrap_or('0')
    };
    // Version 4 / variant 1 layout, as clients expect of an Audit-ID: the
    // version digit replaces digit 12, the variant digit (from the two low
    // bits of `b`'s first byte) digit 16.
    let variant = ['8', '9', 'a', 'b']
        .get(usize::try_from((b >> 56) & 3).unwrap_or_default())
        .copied()
        .unwrap_or('8');
    let mut id = String::with_capacity(36);
    for at in 0..32 {
        if matches!(at, 8 | 12 | 16 | 20) {
            id.push('-');
        }
        id.push(match at {
            12 => '4',
            16 => variant,
            _ => digit(at),
        });
    }
    id
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use gatehouse_core::identity::JwsAlgorithm;
    use gatehouse_core::identity::testing::Minter;
    use serde_json::json;

    pub(super) const NOW: i64 = 1_790_000_000;
    pub(super) const ISSUER: &str = "https://idp.gatehouse.test";

    pub(super) fn minter() -> Minter {
        Minter::generate(JwsAlgorithm::Es256, ISSUER, "gatehouse", "k1").unwrap()
    }

    pub(super) fn gate(extra: serde_json::Value) -> Gate {
        let mut config = serde_json::from_str::<serde_json::Value>(include_str!(
            "../../../examples/kubernetes-policy.json"
        ))
        .unwrap();
        if let (Some(config), serde_json::Value::Object(extra)) = (config.as_object_mut(), extra) {
            config.extend(extra);
        }
        Gate::from_json(config.to_string().as_bytes()).unwrap()
    }

    pub(super) fn token(minter: &Minter, who: &str, group: &str) -> String {
        minter
            .mint(&json!({"sub": who, "groups": [group]}), 600, NOW)
            .unwrap()
    }

    pub(super) fn admit(
        gate: &mut Gate,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Admission {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        gate.admit(&RequestHead {
            method,
            path,
            headers: &headers,
            peer: Some("10.0.0.7:5555"),
            audit_id: "0f5cbb4c-8f6e-4b0e-9c7e-000000000001",
            now_micros: NOW * 1_000_000,
        })
    }

    fn response(admission: Admission) -> LocalResponse {
        match admission {
            Admission::Respond(r) => r,
            other => panic!("expected a local response, got {other:?}"),
        }
    }

    pub(super) fn forward(admission: Admission) -> Forward {
        match admission {
            Admission::Forward(f) => *f,
            other => panic!("expected forwarding, got {other:?}"),
        }
    }

    /// A gate whose issuer's keys are loaded as if fetched.
    pub(super) fn warm_gate(minter: &Minter) -> Gate {
        let mut gate = gate(json!({}));
        gate.verifier_mut()
            .unwrap()
            .keys_fetched(ISSUER, minter.jwks_json().as_bytes(), NOW)
            .unwrap();
        gate
    }

    #[test]
    fn first_requests_wait_for_keys_and_then_pass() {
        let minter = minter();
        let mut gate = gate(json!({}));
        let bearer = format!("Bearer {}", token(&minter, "developer", "developers"));
        let headers = [("authorization", bearer.as_str())];
        let path = "/api/v1/namespaces/dev/pods";
        let fetch = match admit(&mut gate, "GET", path, &headers) {
            Admission::FetchKeys(fetch) => fetch,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (fetch.cluster.as_str(), fetch.path.as_str()),
            ("gatehouse_idp", "/jwks.json")
        );
        // A second request arriving before the first fetch answers also waits.
        assert!(matches!(
            admit(&mut gate, "GET", path, &headers),
            Admission::FetchKeys(_)
        ));
        gate.verifier_mut()
            .unwrap()
            .keys_fetched(ISSUER, minter.jwks_json().as_bytes(), NOW)
            .unwrap();
        forward(admit(&mut gate, "GET", path, &headers));
    }

    #[test]
    fn a_failed_first_fetch_refuses_instead_of_waiting_again() {
        let minter = minter();
        let mut gate = gate(json!({}));
        let bearer = format!("Bearer {}", token(&minter, "developer", "developers"));
        let headers = [("authorization", bearer.as_str())];
        assert!(matches!(
            admit(&mut gate, "GET", "/api", &headers),
            Admission::FetchKeys(_)
        ));
        gate.verifier_mut()
            .unwrap()
            .keys_failed(ISSUER, NOW, "status 503");
        let refused = response(admit(&mut gate, "GET", "/api", &headers));
        assert_eq!(refused.status, 401);
        assert!(
            refused.body.contains("keys_unavailable"),
            "{}",
            refused.body
        );
    }

    #[test]
    fn missing_malformed_and_expired_tokens_get_a_401_status() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let expired = minter
            .mint_expired(&json!({"sub": "developer"}), NOW)
            .unwrap();
        for (headers, reason) in [
            (vec![], "needs a bearer token"),
            (
                vec![("authorization", "Basic YTpi".to_owned())],
                "needs a bearer token",
            ),
            (
                vec![("authorization", "Bearer x.y".to_owned())],
                "(malformed)",
            ),
            (
                vec![("authorization", format!("Bearer {expired}"))],
                "(expired)",
            ),
        ] {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let refused = response(admit(&mut gate, "GET", "/api/v1/pods", &headers));
            assert_eq!(refused.status, 401);
            let status: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
            assert_eq!(status["kind"], "Status");
            assert_eq!(status["reason"], "Unauthorized");
            assert!(
                status["message"].as_str().unwrap().contains(reason),
                "{}",
                refused.body
            );
            let event: serde_json::Value = serde_json::from_str(&refused.record).unwrap();
            assert_eq!(event["user"]["username"], ANONYMOUS);
            assert_eq!(event["responseStatus"]["code"], 401);
        }
    }

    #[test]
    fn a_verified_token_is_trusted_until_the_key_set_changes() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let bearer = format!("Bearer {}", token(&minter, "developer", "developers"));
        let headers = vec![("authorization".to_owned(), bearer)];
        let admitted_at = |gate: &mut Gate, seconds: i64| {
            matches!(
                gate.admit(&RequestHead {
                    method: "GET",
                    path: "/api/v1/namespaces/dev/pods",
                    headers: &headers,
                    peer: None,
                    audit_id: "0f5cbb4c-8f6e-4b0e-9c7e-000000000002",
                    now_micros: seconds * 1_000_000,
                }),
                Admission::Forward(_)
            )
        };
        assert!(admitted_at(&mut gate, NOW));
        assert!(admitted_at(&mut gate, NOW + 1));
        assert_eq!(gate.verifier_mut().unwrap().trusted_tokens(), 1);
        // The issuer rotates its key: the token's signature no longer checks
        // out, and the gate stops trusting it as soon as it holds the new set.
        let rotated = Minter::generate(JwsAlgorithm::Es256, ISSUER, "gatehouse", "k2").unwrap();
        gate.verifier_mut()
            .unwrap()
            .keys_fetched(ISSUER, rotated.jwks_json().as_bytes(), NOW + 1)
            .unwrap();
        assert!(!admitted_at(&mut gate, NOW + 1));
    }

    #[test]
    fn records_written_again_are_the_records_of_that_moment() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let bearer = format!("Bearer {}", token(&minter, "developer", "developers"));
        let start = NOW * 1_000_000;
        for path in [
            "/api/v1/namespaces/prod/secrets/db-credentials",
            "/api/v1/namespaces/dev/pods/web-0/exec?command=ls&stdout=true",
        ] {
            let mut forward = forward(admit(&mut gate, "GET", path, &[("authorization", &bearer)]));
            let check = |forward: &mut Forward, status: u16, now: i64| {
                let expected = forward.records(status, start + 7, now);
                assert_eq!(forward.current_records(status, start + 7, now), expected);
            };
            check(&mut forward, 200, start + 10);
            check(&mut forward, 200, start + 999_999);
            check(&mut forward, 200, start + 86_400_000_001);
            forward.set_masked_fields(&["data".to_owned()]);
            check(&mut forward, 200, start + 86_400_000_002);
            forward.set_masked_fields(&["data".to_owned()]);
            check(&mut forward, 200, start + 86_400_000_003);
            check(&mut forward, 500, start + 86_400_000_004);
            // A timestamp of another width is written in full.
            check(&mut forward, 500, 300_000_000_000_000_000);
            check(&mut forward, 500, start);
        }
    }

    #[test]
    fn admitted_requests_lose_the_callers_token_and_name_the_caller() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let bearer = format!("Bearer {}", token(&minter, "developer", "developers"));
        let forward = forward(admit(
            &mut gate,
            "GET",
            "/api/v1/namespaces/prod/secrets/db-credentials",
            &[("authorization", &bearer)],
        ));
        assert_eq!(
            forward.remove_headers,
            ["authorization", "accept-encoding"],
            "a masked read is asked for uncompressed"
        );
        assert!(forward.body_masker.is_some());
        assert!(
            forward
                .set_headers
                .contains(&("accept".to_owned(), "application/json".to_owned()))
        );
        assert!(forward.set_headers.contains(&(
            "Audit-ID".to_owned(),
            "0f5cbb4c-8f6e-4b0e-9c7e-000000000001".to_owned()
        )));
        assert!(
            forward
                .set_headers
                .contains(&("Impersonate-User".to_owned(), "developer".to_owned()))
        );
        assert_eq!(
            forward.add_headers,
            vec![("Impersonate-Group".to_owned(), "developers".to_owned())]
        );
        assert!(forward.mask);
        assert!(!forward.is_long_running());
        let event: serde_json::Value =
            serde_json::from_str(&forward.records(200, NOW * 1_000_000, NOW * 1_000_000)).unwrap();
        assert_eq!(
            event["annotations"]["gatehouse.dev/rule"],
            "team-dev-and-prod"
        );
        let hash = event["annotations"]["gatehouse.dev/policy-hash"]
            .as_str()
            .unwrap();
        assert!(
            hash.starts_with("sha256:") && hash.len() == 71,
            "the configuration in force is named: {hash}"
        );
        assert_eq!(event["sourceIPs"][0], "10.0.0.7");
    }

    #[test]
    fn a_configured_gateway_token_replaces_the_callers() {
        let minter = minter();
        let mut gate = gate(json!({"upstream": {"bearer_token": "gateway-sa-token"}}));
        gate.verifier_mut()
            .unwrap()
            .keys_fetched(ISSUER, minter.jwks_json().as_bytes(), NOW)
            .unwrap();
        let bearer = format!("Bearer {}", token(&minter, "developer", "developers"));
        let forward = forward(admit(
            &mut gate,
            "GET",
            "/api",
            &[("authorization", &bearer)],
        ));
        assert!(forward.remove_headers.is_empty());
        assert!(forward.set_headers.contains(&(
            "authorization".to_owned(),
            "Bearer gateway-sa-token".to_owned()
        )));
        assert!(
            !forward
                .set_headers
                .iter()
                .any(|(name, _)| name == "Impersonate-User"),
            "impersonation is off unless configured"
        );
    }

    #[test]
    fn exec_in_prod_is_a_403_status_naming_the_rule_with_long_running_records_for_dev() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let bearer = format!("Bearer {}", token(&minter, "dba", "dba"));
        for method in ["GET", "POST"] {
            let refused = response(admit(
                &mut gate,
                method,
                "/api/v1/namespaces/prod/pods/web-0/exec?command=ls&stdout=true",
                &[("authorization", &bearer)],
            ));
            assert_eq!(refused.status, 403);
            let status: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
            assert_eq!(
                status["message"],
                "pods \"web-0\" is forbidden: User \"dba\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"prod\": denied by gatehouse rule no-exec-in-prod: exec, attach, port-forward and cp are not allowed in prod"
            );
        }
        let allowed = forward(admit(
            &mut gate,
            "GET",
            "/api/v1/namespaces/dev/pods/web-0/exec?command=ls&stdout=true",
            &[("authorization", &bearer), ("upgrade", "websocket")],
        ));
        assert!(allowed.is_long_running());
        let records = allowed.records(101, NOW * 1_000_000, NOW * 1_000_000 + 5);
        let stages: Vec<String> = records
            .lines()
            .map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).unwrap();
                event["stage"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(stages, ["ResponseStarted", "ResponseComplete"]);
    }

    #[test]
    fn a_rule_with_a_record_section_plans_the_sessions_recording() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let bearer = format!("Bearer {}", token(&minter, "developer", "developers"));
        let exec = forward(admit(
            &mut gate,
            "GET",
            "/api/v1/namespaces/dev/pods/web-0/exec?command=sh&container=app&stdin=true&tty=true&stdout=true",
            &[("authorization", &bearer), ("upgrade", "websocket")],
        ));
        let plan = exec.recording.expect("exec in dev is recorded");
        assert_eq!(plan.info.user, "developer");
        assert_eq!(plan.info.groups, ["developers"]);
        assert_eq!(
            (plan.info.namespace.as_str(), plan.info.pod.as_str()),
            ("dev", "web-0")
        );
        assert_eq!(plan.info.audit_id, "0f5cbb4c-8f6e-4b0e-9c7e-000000000001");
        assert_eq!(plan.info.rule, "exec-in-dev-recorded");
        assert!(plan.info.tty && plan.info.stdin);
        assert!(plan.config.commands.is_active());
        let attach = forward(admit(
            &mut gate,
            "POST",
            "/api/v1/namespaces/dev/pods/web-0/attach?container=debugger&stdin=true&tty=true",
            &[("authorization", &bearer), ("upgrade", "SPDY/3.1")],
        ));
        let plan = attach
            .recording
            .expect("attach (kubectl debug) is recorded too");
        assert_eq!(plan.info.subresource, "attach");
        assert_eq!(plan.info.container.as_deref(), Some("debugger"));
        for (path, upgrade) in [
            ("/api/v1/namespaces/dev/pods/web-0/log", "websocket"),
            ("/api/v1/namespaces/dev/pods/web-0/exec?command=ls", "h2c"),
            ("/api/v1/namespaces/dev/pods/web-0/portforward", "websocket"),
        ] {
            let other = forward(admit(
                &mut gate,
                "GET",
                path,
                &[("authorization", &bearer), ("upgrade", upgrade)],
            ));
            assert!(other.recording.is_none(), "{path}");
        }
    }

    #[test]
    fn the_deciding_rule_and_action_are_told_for_stats() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let bearer = format!("Bearer {}", token(&minter, "dba", "dba"));
        let refused = response(admit(
            &mut gate,
            "POST",
            "/api/v1/namespaces/prod/pods/web-0/exec?command=ls&stdout=true",
            &[("authorization", &bearer)],
        ));
        let decision = refused.decision.unwrap();
        assert_eq!(decision.action, Action::Deny);
        assert_eq!(decision.rule.as_deref(), Some("no-exec-in-prod"));
        let allowed = forward(admit(
            &mut gate,
            "GET",
            "/api/v1/namespaces/dev/pods",
            &[("authorization", &bearer)],
        ));
        assert_eq!(allowed.decision().action, Action::Allow);
        let unauthenticated = response(admit(&mut gate, "GET", "/api/v1/namespaces/dev/pods", &[]));
        assert_eq!(unauthenticated.decision, None);
    }

    #[test]
    fn the_filter_answers_a_readiness_probe_itself_and_records_it() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let ready = response(admit(&mut gate, "GET", READINESS_PATH, &[]));
        assert_eq!(ready.status, 200, "no token needed");
        let body: serde_json::Value = serde_json::from_str(&ready.body).unwrap();
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["status"], "Success");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with("gatehouse ready: gatehouse kubernetes filter "));
        assert!(message.contains("policy sha256:"), "{message}");
        let event: serde_json::Value = serde_json::from_str(&ready.record).unwrap();
        assert_eq!(event["requestURI"], READINESS_PATH);
        assert_eq!(event["responseStatus"]["code"], 200);
        assert_eq!(
            ready.decision.unwrap().rule.as_deref(),
            Some(READINESS_RULE)
        );
        // Only that exact GET: anything else is an ordinary request.
        for (method, path) in [("POST", READINESS_PATH), ("GET", "/gatehouse/ready/x")] {
            let other = response(admit(&mut gate, method, path, &[]));
            assert_eq!(other.status, 401, "{method} {path}");
        }
    }

    #[test]
    fn caller_supplied_impersonation_is_refused() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let bearer = format!("Bearer {}", token(&minter, "developer", "developers"));
        let refused = response(admit(
            &mut gate,
            "GET",
            "/api/v1/namespaces/dev/pods",
            &[("authorization", &bearer), ("impersonate-user", "admin")],
        ));
        assert_eq!(refused.status, 403);
    }

    #[test]
    fn ambiguous_paths_are_a_400_status() {
        let mut gate = warm_gate(&minter());
        let refused = response(admit(
            &mut gate,
            "GET",
            "/api/v1/namespaces/prod/pods/web-0%2Fexec",
            &[],
        ));
        assert_eq!(refused.status, 400);
        assert!(refused.body.contains("\"kind\":\"Status\""));
    }

    #[test]
    fn methods_that_disagree_with_the_path_are_refused_even_for_allowed_callers() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let bearer = format!("Bearer {}", token(&minter, "developer", "developers"));
        let auth = [("authorization", bearer.as_str())];
        // `team-dev-and-prod` allows a watch of prod; these are not watches.
        for method in ["PATCH", "DELETE", "PUT", "POST"] {
            let refused = response(admit(
                &mut gate,
                method,
                "/api/v1/watch/namespaces/prod/secrets/db-credentials",
                &auth,
            ));
            assert_eq!(refused.status, 405, "{method}");
            let status: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
            assert_eq!(status["reason"], "MethodNotAllowed");
            assert_eq!(status["code"], 405);
        }
        let watch = admit(
            &mut gate,
            "GET",
            "/api/v1/watch/namespaces/prod/secrets/db-credentials",
            &auth,
        );
        assert!(matches!(watch, Admission::Forward(_)));
        for header in [
            "X-HTTP-Method-Override",
            "x-http-method",
            "X-Method-Override",
        ] {
            let refused = response(admit(
                &mut gate,
                "GET",
                "/api/v1/namespaces/dev/pods",
                &[auth[0], (header, "DELETE")],
            ));
            assert_eq!(refused.status, 400, "{header}");
            assert!(
                refused.body.contains("names another method"),
                "{}",
                refused.body
            );
        }
    }

    #[test]
    fn every_admitted_resource_request_asks_for_uncompressed_json_and_is_masked() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let bearer = format!("Bearer {}", token(&minter, "developer", "developers"));
        for (method, path) in [
            ("GET", "/api/v1/namespaces/dev/pods/web-0/status"),
            ("PATCH", "/api/v1/namespaces/dev/pods/web-0"),
            ("GET", "/api/v1/namespaces/dev/configmaps"),
            ("GET", "/apis/apps/v1/namespaces/dev/controllerrevisions"),
        ] {
            let forward = forward(admit(
                &mut gate,
                method,
                path,
                &[
                    ("authorization", &bearer),
                    (
                        "accept",
                        "application/yaml, application/vnd.kubernetes.protobuf",
                    ),
                    ("accept-encoding", "gzip"),
                ],
            ));
            assert!(forward.body_masker.is_some(), "{method} {path}");
            assert!(
                forward
                    .set_headers
                    .contains(&("accept".to_owned(), "application/json".to_owned())),
                "{method} {path}: {:?}",
                forward.set_headers
            );
            assert!(
                forward
                    .remove_headers
                    .contains(&"accept-encoding".to_owned())
            );
        }
        let discovery = forward(admit(
            &mut gate,
            "GET",
            "/apis/apps/v1",
            &[("authorization", &bearer)],
        ));
        assert!(discovery.body_masker.is_none());
    }

    /// The audit id as first written (hex through `format!`): the direct
    /// writing must give the same ids.
    fn formatted_audit_id(seed_high: u64, seed_low: u64) -> String {
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let a = mix(seed_high ^ mix(seed_low));
        let b = mix(seed_low.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ a);
        let bytes: Vec<u8> = a.to_be_bytes().into_iter().chain(b.to_be_bytes()).collect();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let variant = ["8", "9", "a", "b"][usize::from(bytes[8] & 3)];
        format!(
            "{}-{}-4{}-{variant}{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 2000,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]
        #[test]
        fn audit_ids_are_the_formatted_ones(high: u64, low: u64) {
            proptest::prop_assert_eq!(audit_id(high, low), formatted_audit_id(high, low));
        }
    }

    #[test]
    fn audit_ids_are_uuid_shaped_and_differ_per_seed() {
        let a = audit_id(1, 2);
        let b = audit_id(1, 3);
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 36, "{id}");
            assert_eq!(id.chars().nth(14), Some('4'), "{id}");
            assert_eq!(id.matches('-').count(), 4, "{id}");
        }
    }
}
