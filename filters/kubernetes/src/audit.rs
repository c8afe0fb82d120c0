//! Audit records in the API server's own `audit.k8s.io/v1` `Event` shape.
//!
//! Pipelines that already read API server audit logs (Falco's k8saudit plugin,
//! Elastic, Datadog, Splunk, Sigma rules) accept these records unchanged. The
//! fields are filled as the API server's `LogRequestMetadata` fills them;
//! gatehouse's own data goes under `gatehouse.dev/` annotation keys.
//!
//! A [`RequestAudit`] is built once per request from what is known at request
//! headers time; [`RequestAudit::event`] then yields one [`Event`] per stage
//! ([`RequestAudit::stages`]). Long-running requests (watch, exec, attach,
//! port-forward, logs, proxy) get a `ResponseStarted` event as well as
//! `ResponseComplete`: Falco's exec rule fires only on `ResponseStarted`.

use crate::request_info::RequestInfo;
use crate::status::Status;
use gatehouse_core::identity::Identity;
use gatehouse_core::policy::{Action, Decision};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The request header carrying the audit id. The API server adopts a client's
/// value and echoes it, so the filter overwrites it upstream with its own
/// `auditID` to join both audit logs.
pub const AUDIT_ID_HEADER: &str = "Audit-ID";
/// `authorization.k8s.io/decision`: `allow` or `forbid`.
pub const DECISION_ANNOTATION: &str = "authorization.k8s.io/decision";
/// `authorization.k8s.io/reason`: why, in words.
pub const REASON_ANNOTATION: &str = "authorization.k8s.io/reason";
/// The policy rule that decided; absent when the policy default did.
pub const RULE_ANNOTATION: &str = "gatehouse.dev/rule";
/// The policy action before it is folded into allow/forbid (`observe`, ...).
pub const ACTION_ANNOTATION: &str = "gatehouse.dev/action";
/// The approval request that let a `require_approval` request through.
pub const APPROVAL_ANNOTATION: &str = "gatehouse.dev/approval";
/// Who approved it, comma-separated.
pub const APPROVERS_ANNOTATION: &str = "gatehouse.dev/approvers";
/// `true` when the requester approved it themselves (break-glass).
pub const APPROVAL_FORCED_ANNOTATION: &str = "gatehouse.dev/approval-forced";
/// The reason the requester gave.
pub const ACCESS_REASON_ANNOTATION: &str = "gatehouse.dev/access-reason";
/// Comma-separated JSON paths masked in the response.
pub const MASKED_FIELDS_ANNOTATION: &str = "gatehouse.dev/masked-fields";
/// The client's `Kubectl-Session` header, to join a command's requests.
pub const KUBECTL_SESSION_ANNOTATION: &str = "gatehouse.dev/kubectl-session";
/// The gatehouse version that wrote the record.
pub const BUILD_ANNOTATION: &str = "gatehouse.dev/build";
/// A hash of the policy in force.
pub const POLICY_HASH_ANNOTATION: &str = "gatehouse.dev/policy-hash";
/// The issuer of the token that proved the identity.
pub const ISSUER_ANNOTATION: &str = "gatehouse.dev/issuer";

/// Longest User-Agent recorded before truncation, as the API server truncates.
const MAX_USER_AGENT_BYTES: usize = 1024;
const USER_AGENT_TRUNCATED_SUFFIX: &str = "...TRUNCATED";
/// Most `X-Forwarded-For` addresses recorded.
const MAX_FORWARDED_IPS: usize = 32;
/// Most groups or extra values taken from impersonation headers.
const MAX_IMPERSONATION_VALUES: usize = 64;
/// Longest `Kubectl-Session` value recorded (kubectl sends a UUID).
const MAX_SESSION_BYTES: usize = 128;

/// How much of the request an event carries. gatehouse writes `Metadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Level {
    Metadata,
    Request,
    RequestResponse,
}

/// The point in the request's life an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Stage {
    RequestReceived,
    /// Response headers sent, body not yet complete (long-running requests only).
    ResponseStarted,
    ResponseComplete,
    Panic,
}

impl Stage {
    /// The stage's name, as its Events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

/// `metav1.MicroTime` from unix microseconds; serializes as
/// `2006-01-02T15:04:05.000000Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MicroTime(pub i64);

impl fmt::Display for MicroTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&gatehouse_core::record::rfc3339_micros_signed(self.0))
    }
}

impl Serialize for MicroTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `authentication.k8s.io/v1` `UserInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The user a gatehouse identity stands for.
    pub fn from_identity(identity: &Identity) -> Self {
        Self {
            username: identity.subject.clone(),
            groups: identity.groups.clone(),
            ..Self::default()
        }
    }
}

/// `audit.k8s.io/v1` `ObjectReference`; empty fields are omitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

impl ObjectReference {
    /// The object a resource request names; `None` for non-resource requests.
    pub fn from_request_info(info: &RequestInfo) -> Option<Self> {
        info.is_resource_request.then(|| Self {
            resource: info.resource.clone(),
            namespace: info.namespace.clone(),
            name: info.name.clone(),
            api_group: info.api_group.clone(),
            api_version: info.api_version.clone(),
            subresource: info.subresource.clone(),
            ..Self::default()
        })
    }
}

/// `audit.k8s.io/v1` `Event`, field for field in upstream order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub level: Level,
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: Stage,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// The RequestInfo verb; the lowercase method for non-resource requests.
    pub verb: String,
    pub user: UserInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<UserInfo>,
    #[serde(rename = "sourceIPs", skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    /// A `metav1.Status` in its audit form (no kind/apiVersion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<Status>,
    pub request_received_timestamp: MicroTime,
    pub stage_timestamp: MicroTime,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<&'static str, String>,
}

impl Event {
    /// One JSON line (without the newline).
    pub fn to_json(&self) -> serde_json::Result<String> {
        gatehouse_core::record::to_json_line(self)
    }
}

/// What is known about a request when its headers arrive; yields its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAudit {
    template: Event,
    long_running: bool,
}

impl RequestAudit {
    /// Starts the record of a request. `request_uri` is the raw `:path` with its
    /// query; `received_micros` is when the request arrived (unix microseconds).
    pub fn new(
        audit_id: &str,
        request_uri: &str,
        info: &RequestInfo,
        identity: &Identity,
        received_micros: i64,
    ) -> Self {
        let mut annotations = BTreeMap::new();
        annotations.insert(BUILD_ANNOTATION, gatehouse_core::build::VERSION.to_owned());
        if let Some(issuer) = &identity.issuer {
            annotations.insert(ISSUER_ANNOTATION, issuer.clone());
        }
        let template = Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: Level::Metadata,
            audit_id: audit_id.to_owned(),
            stage: Stage::ResponseComplete,
            request_uri: request_uri.to_owned(),
            verb: info.verb.clone(),
            user: UserInfo::from_identity(identity),
            impersonated_user: None,
            source_ips: Vec::new(),
            user_agent: String::new(),
            object_ref: ObjectReference::from_request_info(info),
            response_status: None,
            request_received_timestamp: MicroTime(received_micros),
            stage_timestamp: MicroTime(received_micros),
            annotations,
        };
        Self {
            template,
            long_running: is_long_running(info),
        }
    }

    /// Fills source IPs, user agent, impersonated user and kubectl session from
    /// the request headers and the peer address (`ip:port` or `ip`).
    pub fn with_headers<I, K, V>(mut self, headers: I, peer: Option<&str>) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let headers: Vec<(K, V)> = headers.into_iter().collect();
        let first = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_ref())
        };
        self.template.source_ips = source_ips(first("x-forwarded-for"), first("x-real-ip"), peer);
        self.template.user_agent = first("user-agent")
            .map(truncate_user_agent)
            .unwrap_or_default();
        if let Some(session) =
            first("kubectl-session").filter(|s| !s.is_empty() && s.len() <= MAX_SESSION_BYTES)
        {
            self.template
                .annotations
                .insert(KUBECTL_SESSION_ANNOTATION, session.to_owned());
        }
        self.template.impersonated_user =
            impersonated_user(headers.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
        self
    }

    /// Records the policy decision as the API server's authorization annotations.
    pub fn with_decision(mut self, decision: &Decision) -> Self {
        let annotations = &mut self.template.annotations;
        let verdict = if decision.action.blocks() {
            "forbid"
        } else {
            "allow"
        };
        annotations.insert(DECISION_ANNOTATION, verdict.to_owned());
        annotations.insert(REASON_ANNOTATION, decision_reason(decision));
        annotations.insert(ACTION_ANNOTATION, decision.action.as_str().to_owned());
        if let Some(rule) = &decision.rule {
            annotations.insert(RULE_ANNOTATION, rule.clone());
        }
        self
    }

    /// Records that `approval` let a `require_approval` request through: the
    /// authorization decision becomes `allow`, and the approval, its approvers
    /// and the requester's reason are annotated.
    pub fn approve(&mut self, approval: &gatehouse_core::approval::ApprovalRef) {
        let annotations = &mut self.template.annotations;
        annotations.insert(DECISION_ANNOTATION, "allow".to_owned());
        let approvers = approval.approvers.join(", ");
        let forced = if approval.forced {
            " (break-glass)"
        } else {
            ""
        };
        annotations.insert(
            REASON_ANNOTATION,
            format!("approved under {} by {approvers}{forced}", approval.id),
        );
        annotations.insert(APPROVAL_ANNOTATION, approval.id.clone());
        annotations.insert(APPROVERS_ANNOTATION, approvers);
        if approval.forced {
            annotations.insert(APPROVAL_FORCED_ANNOTATION, "true".to_owned());
        }
        if let Some(reason) = &approval.reason {
            annotations.insert(ACCESS_REASON_ANNOTATION, reason.clone());
        }
    }

    /// Adds a `gatehouse.dev/` annotation to every Event of the request.
    pub fn annotate(&mut self, key: &'static str, value: String) {
        self.template.annotations.insert(key, value);
    }

    /// Records the hash of the policy in force.
    pub fn with_policy_hash(mut self, hash: &str) -> Self {
        self.template
            .annotations
            .insert(POLICY_HASH_ANNOTATION, hash.to_owned());
        self
    }

    /// Records the response fields that were masked (once the response is
    /// seen); whether that changed the annotation.
    pub fn set_masked_fields<S: AsRef<str>>(&mut self, fields: &[S]) -> bool {
        if fields.is_empty() {
            return false;
        }
        let joined = fields
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(",");
        let annotations = &mut self.template.annotations;
        if annotations.get(MASKED_FIELDS_ANNOTATION) == Some(&joined) {
            return false;
        }
        annotations.insert(MASKED_FIELDS_ANNOTATION, joined);
        true
    }

    /// Whether the API server treats the request as long-running.
    pub fn is_long_running(&self) -> bool {
        self.long_running
    }

    /// The stages this request is recorded at, in order.
    pub fn stages(&self) -> &'static [Stage] {
        if self.long_running {
            &[Stage::ResponseStarted, Stage::ResponseComplete]
        } else {
            &[Stage::ResponseComplete]
        }
    }

    /// The id every event of this request carries.
    pub fn audit_id(&self) -> &str {
        &self.template.audit_id
    }

    /// When the request arrived (unix microseconds).
    pub fn received_micros(&self) -> i64 {
        self.template.request_received_timestamp.0
    }

    /// The same record for another request that shares everything but its
    /// audit id and arrival time.
    pub fn for_request(&self, audit_id: &str, received_micros: i64) -> RequestAudit {
        let mut audit = self.clone();
        audit.template.audit_id = audit_id.to_owned();
        audit.template.request_received_timestamp = MicroTime(received_micros);
        audit.template.stage_timestamp = MicroTime(received_micros);
        audit
    }

    /// The request's annotations so far.
    pub fn annotations(&self) -> &BTreeMap<&'static str, String> {
        &self.template.annotations
    }

    /// [`RequestAudit::event`] as one JSON line, serialized without copying
    /// the request's fields: the stage's own fields are set in place.
    pub fn event_json(
        &mut self,
        stage: Stage,
        response_status: &Status,
        stage_micros: i64,
    ) -> serde_json::Result<String> {
        let template = &mut self.template;
        template.stage = stage;
        template.response_status = Some(response_status.for_audit());
        template.stage_timestamp = MicroTime(stage_micros);
        template.to_json()
    }

    /// The event for `stage`, with the response status in its audit form.
    /// For a success pass `Status::code_only(200)` (or 101 for an upgraded
    /// `ResponseStarted`); for a refusal, the `Status` sent to the client.
    pub fn event(&self, stage: Stage, response_status: &Status, stage_micros: i64) -> Event {
        Event {
            stage,
            response_status: Some(response_status.for_audit()),
            stage_timestamp: MicroTime(stage_micros),
            ..self.template.clone()
        }
    }
}

/// A request's audit Event serialized once, with holes for what differs
/// between writes and between requests that share everything else (an
/// admission the gate remembers): the audit id, the stage, the response
/// status, both timestamps and the masked fields. Filling the holes gives the
/// bytes [`RequestAudit::event_json`] gives for the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventText {
    text: String,
    /// The audit id's value (without its quotes).
    audit_id: std::ops::Range<usize>,
    /// The stage's name.
    stage: std::ops::Range<usize>,
    /// Where `,"responseStatus":…` goes; the two timestamps follow it.
    response_status: usize,
    received: std::ops::Range<usize>,
    stage_timestamp: std::ops::Range<usize>,
    /// The masked-fields annotation member, with the comma that joins it.
    masked: std::ops::Range<usize>,
    masked_comma: Comma,
}

/// Which side of the masked-fields annotation its comma is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comma {
    Before,
    After,
}

/// What differs between two writes of a request's Event.
#[derive(Debug, Clone, Copy)]
pub struct EventHoles<'a> {
    pub audit_id: &'a str,
    pub stage: Stage,
    /// The response status in its audit form, as JSON.
    pub response_status: &'a str,
    pub received_micros: i64,
    pub stage_micros: i64,
    /// The masked fields, comma-separated (none: no annotation).
    pub masked_fields: Option<&'a str>,
}

/// Values no request carries twice in its Event: found exactly once, they
/// mark the holes; found any other number of times, there is no skeleton.
const AUDIT_ID_HOLE: &str = "gatehouse-hole-audit-id";
const MASKED_FIELDS_HOLE: &str = "gatehouse-hole-masked-fields";

impl EventText {
    /// The skeleton of `audit`'s Events; `None` when a hole cannot be told
    /// apart from the request's own text (the caller serializes in full).
    pub fn of(audit: &RequestAudit) -> Option<EventText> {
        let mut template = audit.template.clone();
        template.audit_id = AUDIT_ID_HOLE.to_owned();
        template.stage = Stage::ResponseComplete;
        template.response_status = None;
        template.request_received_timestamp = MicroTime(0);
        template.stage_timestamp = MicroTime(0);
        template
            .annotations
            .insert(MASKED_FIELDS_ANNOTATION, MASKED_FIELDS_HOLE.to_owned());
        let text = template.to_json().ok()?;
        let once = |needle: &str| {
            let mut found = text.match_indices(needle);
            let (at, _) = found.next()?;
            found.next().is_none().then_some(at)
        };
        once(AUDIT_ID_HOLE)?;
        once(MASKED_FIELDS_HOLE)?;
        let id_member = format!("\"auditID\":\"{AUDIT_ID_HOLE}\",\"stage\":\"");
        let id_start = once(&id_member)? + "\"auditID\":\"".len();
        let audit_id = id_start..id_start + AUDIT_ID_HOLE.len();
        let stage_start = audit_id.end + "\",\"stage\":\"".len();
        let stage_name = Stage::ResponseComplete.as_str();
        if text.get(stage_start..stage_start + stage_name.len() + 1)
            != Some(&format!("{stage_name}\"")[..])
        {
            return None;
        }
        let stage = stage_start..stage_start + stage_name.len();
        let zero = MicroTime(0).to_string();
        let times =
            format!(",\"requestReceivedTimestamp\":\"{zero}\",\"stageTimestamp\":\"{zero}\"");
        let response_status = once(&times)?;
        let received_start = response_status + ",\"requestReceivedTimestamp\":\"".len();
        let received = received_start..received_start + zero.len();
        let stage_time_start = received.end + "\",\"stageTimestamp\":\"".len();
        let stage_timestamp = stage_time_start..stage_time_start + zero.len();
        let member = format!("\"{MASKED_FIELDS_ANNOTATION}\":\"{MASKED_FIELDS_HOLE}\"");
        let member_start = once(&member)?;
        let member_end = member_start + member.len();
        let bytes = text.as_bytes();
        let (masked, masked_comma) = if bytes.get(member_start.wrapping_sub(1)) == Some(&b',') {
            (member_start - 1..member_end, Comma::Before)
        } else if bytes.get(member_end) == Some(&b',') {
            (member_start..member_end + 1, Comma::After)
        } else {
            return None;
        };
        let ordered = audit_id.end <= stage.start
            && stage.end <= response_status
            && stage_timestamp.end <= masked.start;
        ordered.then_some(EventText {
            text,
            audit_id,
            stage,
            response_status,
            received,
            stage_timestamp,
            masked,
            masked_comma,
        })
    }

    /// Appends the Event with `holes` filled to `out`.
    pub fn render(&self, out: &mut String, holes: &EventHoles<'_>) {
        let text = |range: std::ops::Range<usize>| self.text.get(range).unwrap_or_default();
        out.push_str(text(0..self.audit_id.start));
        push_json_string_content(out, holes.audit_id);
        out.push_str(text(self.audit_id.end..self.stage.start));
        out.push_str(holes.stage.as_str());
        out.push_str(text(self.stage.end..self.response_status));
        out.push_str(",\"responseStatus\":");
        out.push_str(holes.response_status);
        out.push_str(text(self.response_status..self.received.start));
        out.push_str(&MicroTime(holes.received_micros).to_string());
        out.push_str(text(self.received.end..self.stage_timestamp.start));
        out.push_str(&MicroTime(holes.stage_micros).to_string());
        out.push_str(text(self.stage_timestamp.end..self.masked.start));
        if let Some(fields) = holes.masked_fields {
            if self.masked_comma == Comma::Before {
                out.push(',');
            }
            out.push('"');
            out.push_str(MASKED_FIELDS_ANNOTATION);
            out.push_str("\":\"");
            push_json_string_content(out, fields);
            out.push('"');
            if self.masked_comma == Comma::After {
                out.push(',');
            }
        }
        out.push_str(text(self.masked.end..self.text.len()));
    }
}

/// Appends `value` as the inside of a JSON string literal, escaped as
/// serde_json escapes it.
fn push_json_string_content(out: &mut String, value: &str) {
    let plain = value
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f);
    if plain {
        out.push_str(value);
        return;
    }
    let quoted = serde_json::to_string(value).unwrap_or_default();
    out.push_str(
        quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default(),
    );
}

/// The API server's long-running check: verbs `watch` and `proxy`; subresources
/// `attach`, `exec`, `proxy`, `log` and `portforward`; `/debug/pprof/`.
pub fn is_long_running(info: &RequestInfo) -> bool {
    matches!(info.verb.as_str(), "watch" | "proxy")
        || (info.is_resource_request
            && matches!(
                info.subresource.as_str(),
                "attach" | "exec" | "proxy" | "log" | "portforward"
            ))
        || (!info.is_resource_request && info.path.starts_with("/debug/pprof/"))
}

/// `authorization.k8s.io/reason` for a decision.
fn decision_reason(decision: &Decision) -> String {
    if let Some(message) = decision.message.as_ref().filter(|m| !m.is_empty()) {
        return message.clone();
    }
    let outcome = match decision.action {
        Action::Allow => "allowed",
        Action::Deny => "denied",
        Action::Observe => "observed",
        Action::RequireApproval => "awaiting approval",
    };
    match &decision.rule {
        Some(rule) => format!("{outcome} by rule {rule:?}"),
        None => format!("{outcome} by the policy default"),
    }
}

/// `sourceIPs` as the API server's `utilnet.SourceIPs` builds them: every valid
/// `X-Forwarded-For` address, then `X-Real-Ip` unless already listed, then the
/// peer unless it repeats the last one.
pub fn source_ips(
    forwarded_for: Option<&str>,
    real_ip: Option<&str>,
    peer: Option<&str>,
) -> Vec<String> {
    let mut ips: Vec<IpAddr> = forwarded_for
        .into_iter()
        .flat_map(|list| list.split(','))
        .filter_map(|part| parse_ip(part.trim()))
        .take(MAX_FORWARDED_IPS)
        .collect();
    if let Some(ip) = real_ip.and_then(|value| parse_ip(value.trim()))
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    let peer_ip = peer.and_then(|p| {
        p.parse::<SocketAddr>()
            .ok()
            .map(|a| a.ip())
            .or_else(|| parse_ip(p))
    });
    if let Some(ip) = peer_ip.map(|ip| ip.to_canonical())
        && ips.last() != Some(&ip)
    {
        ips.push(ip);
    }
    ips.iter().map(IpAddr::to_string).collect()
}

/// An address as Go prints it: IPv4-mapped IPv6 as plain IPv4.
fn parse_ip(value: &str) -> Option<IpAddr> {
    value.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn truncate_user_agent(user_agent: &str) -> String {
    if user_agent.len() <= MAX_USER_AGENT_BYTES {
        return user_agent.to_owned();
    }
    let mut end = MAX_USER_AGENT_BYTES;
    while !user_agent.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}{USER_AGENT_TRUNCATED_SUFFIX}",
        user_agent.get(..end).unwrap_or_default()
    )
}

/// The user named by `Impersonate-User` / `-Uid` / `-Group` / `-Extra-*` headers,
/// as requested (the API server authorizes and completes it).
pub fn impersonated_user<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<UserInfo> {
    let mut user = UserInfo::default();
    let mut impersonating = false;
    let mut values = 0;
    for (name, value) in headers {
        let Some(suffix) = name
            .get(..12)
            .filter(|p| p.eq_ignore_ascii_case("impersonate-"))
            .and_then(|_| name.get(12..))
        else {
            continue;
        };
        if values == MAX_IMPERSONATION_VALUES {
            break;
        }
        values += 1;
        if suffix.eq_ignore_ascii_case("user") {
            impersonating = true;
            user.username = value.to_owned();
        } else if suffix.eq_ignore_ascii_case("uid") {
            user.uid = Some(value.to_owned());
        } else if suffix.eq_ignore_ascii_case("group") {
            user.groups.push(value.to_owned());
        } else if let Some(key) = suffix
            .get(..6)
            .filter(|p| p.eq_ignore_ascii_case("extra-"))
            .and_then(|_| suffix.get(6..))
        {
            user.extra
                .entry(key.to_ascii_lowercase())
                .or_default()
                .push(value.to_owned());
        }
    }
    impersonating.then_some(user)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::request_info::decode_request;
    use crate::status::{Status, forbidden};
    use serde_json::Value;

    const EXEC_URI: &str = "/api/v1/namespaces/prod/pods/web-0/exec?command=cat&command=%2Fetc%2Fpasswd&container=app&stderr=true&stdout=true";
    /// 2026-11-22T01:02:03.000004Z
    const RECEIVED: i64 = 1_795_309_323_000_004;

    fn alice() -> Identity {
        Identity {
            subject: "alice@example.com".to_owned(),
            groups: vec!["developer".to_owned()],
            issuer: Some("https://idp.example.com".to_owned()),
            verified: true,
            ..Identity::default()
        }
    }

    const KUBECTL_HEADERS: &[(&str, &str)] = &[
        (
            "user-agent",
            "kubectl/v1.33.0 (linux/amd64) kubernetes/abcdef0",
        ),
        ("kubectl-command", "kubectl exec"),
        ("kubectl-session", "5d3c1f7e-8a0b-4c2d-9e6f-7a8b9c0d1e2f"),
        ("upgrade", "websocket"),
    ];

    fn exec_audit(method: &str, decision: &Decision) -> (RequestAudit, RequestInfo) {
        let info = decode_request(method, EXEC_URI).unwrap().info;
        let audit = RequestAudit::new(
            "9b1d7a3e-0c4f-4e55-8a6b-2f1e0d9c8b7a",
            EXEC_URI,
            &info,
            &alice(),
            RECEIVED,
        )
        .with_headers(KUBECTL_HEADERS.iter().copied(), Some("10.0.0.7:52114"))
        .with_decision(decision)
        .with_policy_hash("sha256:0f1e2d");
        (audit, info)
    }

    fn deny() -> Decision {
        Decision {
            action: Action::Deny,
            rule: Some("no-exec-in-prod".to_owned()),
            message: Some("blocked by policy no-exec-in-prod".to_owned()),
        }
    }

    /// Compares an event's JSON with a golden file; the build annotation is pinned
    /// so that version bumps do not churn the files.
    fn golden(name: &str, event: &Event) {
        let mut event = event.clone();
        event
            .annotations
            .insert(BUILD_ANNOTATION, "0.0.0-test".to_owned());
        let actual = event.to_json().unwrap();
        let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("GATEHOUSE_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, format!("{actual}\n")).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            actual,
            expected.trim_end(),
            "{path} (set GATEHOUSE_UPDATE_GOLDEN=1 to rewrite)"
        );
    }

    #[test]
    fn events_serialized_in_place_match_the_events_of_their_stage() {
        let (mut audit, info) = exec_audit("GET", &deny());
        let refusal = forbidden(&info, "alice@example.com", "denied by gatehouse rule \"x\"");
        for (stage, status, at) in [
            (Stage::ResponseStarted, Status::code_only(101), RECEIVED + 5),
            (
                Stage::ResponseComplete,
                Status::code_only(200),
                RECEIVED + 9,
            ),
            (Stage::ResponseComplete, refusal, RECEIVED),
        ] {
            let expected = audit.event(stage, &status, at).to_json().unwrap();
            assert_eq!(audit.event_json(stage, &status, at).unwrap(), expected);
        }
    }

    #[test]
    fn denied_exec_events_match_golden_files() {
        let (audit, info) = exec_audit("GET", &deny());
        assert_eq!(
            audit.stages(),
            [Stage::ResponseStarted, Stage::ResponseComplete]
        );
        let refusal = forbidden(
            &info,
            "alice@example.com",
            "blocked by policy no-exec-in-prod",
        );
        let started = audit.event(Stage::ResponseStarted, &refusal, RECEIVED + 150);
        let complete = audit.event(Stage::ResponseComplete, &refusal, RECEIVED + 210);
        golden("audit_exec_denied_started.json", &started);
        golden("audit_exec_denied_complete.json", &complete);
    }

    #[test]
    fn allowed_list_event_matches_golden_file() {
        let info = decode_request("GET", "/api/v1/namespaces/dev/pods?limit=500")
            .unwrap()
            .info;
        let audit = RequestAudit::new(
            "0d7e",
            "/api/v1/namespaces/dev/pods?limit=500",
            &info,
            &alice(),
            RECEIVED,
        )
        .with_headers(
            [
                ("X-Forwarded-For", "203.0.113.9, 10.0.0.2"),
                ("X-Real-Ip", "10.0.0.2"),
            ],
            Some("10.0.0.2:443"),
        )
        .with_decision(&Decision {
            action: Action::Allow,
            rule: Some("read-dev".to_owned()),
            message: None,
        });
        assert_eq!(audit.stages(), [Stage::ResponseComplete]);
        let event = audit.event(
            Stage::ResponseComplete,
            &Status::code_only(200),
            RECEIVED + 1_234,
        );
        golden("audit_list_allowed_complete.json", &event);
    }

    /// Falco's k8saudit plugin drops events without `kind: Event` or with a
    /// `stageTimestamp` that is not RFC 3339, and its rules read these fields; the
    /// "Attach/Exec Pod" rule needs `ResponseStarted` with verb create or get.
    #[test]
    fn exec_record_has_everything_falco_reads() {
        let path = format!(
            "{}/testdata/audit_exec_denied_started.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(event["kind"], "Event");
        assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
        for field in ["stageTimestamp", "requestReceivedTimestamp"] {
            let timestamp = event[field].as_str().unwrap();
            assert!(is_rfc3339(timestamp), "{field} {timestamp}");
        }
        assert_eq!(event["stage"], "ResponseStarted");
        assert!(matches!(event["verb"].as_str(), Some("get" | "create")));
        assert!(!event["auditID"].as_str().unwrap().is_empty());
        assert!(
            event["requestURI"]
                .as_str()
                .unwrap()
                .contains("command=cat")
        );
        assert_eq!(event["user"]["username"], "alice@example.com");
        assert_eq!(event["user"]["groups"][0], "developer");
        let object = &event["objectRef"];
        assert_eq!(
            (&object["resource"], &object["subresource"]),
            (&Value::from("pods"), &Value::from("exec"))
        );
        assert_eq!(
            (&object["namespace"], &object["name"]),
            (&Value::from("prod"), &Value::from("web-0"))
        );
        assert!(
            object.get("apiGroup").is_none(),
            "core group omits apiGroup"
        );
        assert_eq!(event["responseStatus"]["code"], 403);
        assert_eq!(event["responseStatus"]["reason"], "Forbidden");
        assert_eq!(event["annotations"][DECISION_ANNOTATION], "forbid");
        assert_eq!(
            event["annotations"][REASON_ANNOTATION],
            "blocked by policy no-exec-in-prod"
        );
        assert!(event["userAgent"].as_str().unwrap().starts_with("kubectl/"));
        assert_eq!(event["sourceIPs"][0], "10.0.0.7");
    }

    /// RFC 3339 `date-time` as Go's `time.RFC3339Nano` parser accepts it.
    fn is_rfc3339(value: &str) -> bool {
        let bytes = value.as_bytes();
        let digits = |range: std::ops::Range<usize>| {
            bytes
                .get(range)
                .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
        };
        let number = |range: std::ops::Range<usize>| {
            value
                .get(range)
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(99)
        };
        let shape = digits(0..4)
            && bytes.get(4) == Some(&b'-')
            && digits(5..7)
            && bytes.get(7) == Some(&b'-')
            && digits(8..10)
            && bytes.get(10) == Some(&b'T')
            && digits(11..13)
            && bytes.get(13) == Some(&b':')
            && digits(14..16)
            && bytes.get(16) == Some(&b':')
            && digits(17..19);
        let ranges = (1..=12).contains(&number(5..7))
            && (1..=31).contains(&number(8..10))
            && number(11..13) < 24
            && number(14..16) < 60
            && number(17..19) < 60;
        let mut rest = value.get(19..).unwrap_or("");
        if let Some(fraction) = rest.strip_prefix('.') {
            let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if len == 0 || len > 9 {
                return false;
            }
            rest = &fraction[len..];
        }
        shape
            && ranges
            && (rest == "Z"
                || (rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-'))))
    }

    #[test]
    fn micro_time_formats_like_metav1() {
        for (micros, expected) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (-1, "1969-12-31T23:59:59.999999Z"),
            (951_782_400_000_000, "2000-02-29T00:00:00.000000Z"),
            (1_709_164_800_000_001, "2024-02-29T00:00:00.000001Z"),
            (1_763_769_600_123_456, "2025-11-22T00:00:00.123456Z"),
            (RECEIVED, "2026-11-22T01:02:03.000004Z"),
            (253_402_300_799_999_999, "9999-12-31T23:59:59.999999Z"),
        ] {
            assert_eq!(MicroTime(micros).to_string(), expected);
        }
    }

    #[test]
    fn long_running_requests_get_a_response_started_stage() {
        for (method, uri, long_running) in [
            ("GET", "/api/v1/namespaces/p/pods?watch=true", true),
            ("GET", "/api/v1/watch/namespaces/p/pods", true),
            ("POST", "/api/v1/namespaces/p/pods/w/exec?command=ls", true),
            ("POST", "/api/v1/namespaces/p/pods/w/attach", true),
            ("GET", "/api/v1/namespaces/p/pods/w/portforward", true),
            ("GET", "/api/v1/namespaces/p/pods/w/log?follow=true", true),
            ("GET", "/api/v1/namespaces/p/pods/w/log", true),
            ("GET", "/api/v1/namespaces/p/services/s/proxy/metrics", true),
            ("GET", "/debug/pprof/profile", true),
            ("GET", "/api/v1/namespaces/p/pods", false),
            ("GET", "/api/v1/namespaces/p/pods/w", false),
            ("DELETE", "/api/v1/namespaces/p", false),
            ("GET", "/version", false),
        ] {
            let info = decode_request(method, uri).unwrap().info;
            assert_eq!(is_long_running(&info), long_running, "{method} {uri}");
        }
    }

    #[test]
    fn upgraded_exec_starts_with_101_and_keeps_the_request_verb() {
        let (audit, _) = exec_audit("GET", &Decision::allow());
        let started = audit.event(
            Stage::ResponseStarted,
            &Status::code_only(101),
            RECEIVED + 5,
        );
        assert_eq!(started.verb, "get");
        assert_eq!(started.response_status.as_ref().map(|s| s.code), Some(101));
        let json = started.to_json().unwrap();
        assert!(
            json.contains(r#""responseStatus":{"metadata":{},"code":101}"#),
            "{json}"
        );
        assert_eq!(audit.annotations()[DECISION_ANNOTATION], "allow");
        assert_eq!(
            audit.annotations()[REASON_ANNOTATION],
            "allowed by the policy default"
        );
        assert!(!audit.annotations().contains_key(RULE_ANNOTATION));
    }

    #[test]
    fn observe_is_allowed_and_approval_is_forbidden() {
        let observe = Decision {
            action: Action::Observe,
            rule: Some("shadow".to_owned()),
            message: None,
        };
        let (audit, _) = exec_audit("POST", &observe);
        assert_eq!(audit.annotations()[DECISION_ANNOTATION], "allow");
        assert_eq!(audit.annotations()[ACTION_ANNOTATION], "observe");
        assert_eq!(
            audit.annotations()[REASON_ANNOTATION],
            "observed by rule \"shadow\""
        );
        let approval = Decision {
            action: Action::RequireApproval,
            rule: None,
            message: None,
        };
        let (audit, _) = exec_audit("POST", &approval);
        assert_eq!(audit.annotations()[DECISION_ANNOTATION], "forbid");
    }

    #[test]
    fn masked_fields_are_annotated_once_known() {
        let (mut audit, _) = exec_audit("GET", &Decision::allow());
        audit.set_masked_fields::<&str>(&[]);
        assert!(!audit.annotations().contains_key(MASKED_FIELDS_ANNOTATION));
        audit.set_masked_fields(&["data.password", "data.token"]);
        let event = audit.event(Stage::ResponseComplete, &Status::code_only(200), RECEIVED);
        assert_eq!(
            event.annotations[MASKED_FIELDS_ANNOTATION],
            "data.password,data.token"
        );
    }

    #[test]
    fn source_ips_follow_the_api_server_order() {
        let ips = |xff, real, peer| source_ips(xff, real, peer);
        assert_eq!(ips(None, None, Some("10.0.0.7:52114")), ["10.0.0.7"]);
        assert_eq!(ips(None, None, Some("[2001:db8::1]:443")), ["2001:db8::1"]);
        assert_eq!(ips(None, None, Some("[::ffff:10.1.2.3]:443")), ["10.1.2.3"]);
        assert_eq!(
            ips(
                Some("203.0.113.9, bogus, 10.0.0.2"),
                Some("198.51.100.4"),
                Some("10.0.0.1:1")
            ),
            ["203.0.113.9", "10.0.0.2", "198.51.100.4", "10.0.0.1"]
        );
        // X-Real-Ip already in the chain and a peer equal to the last entry are not repeated
        assert_eq!(
            ips(
                Some("203.0.113.9,10.0.0.2"),
                Some("203.0.113.9"),
                Some("10.0.0.2:1")
            ),
            ["203.0.113.9", "10.0.0.2"]
        );
        assert!(ips(None, None, Some("not-an-address")).is_empty());
        let long = vec!["10.0.0.1"; 100].join(",");
        assert_eq!(ips(Some(&long), None, None).len(), MAX_FORWARDED_IPS);
    }

    #[test]
    fn impersonation_headers_become_the_impersonated_user() {
        let info = decode_request("GET", "/api/v1/pods").unwrap().info;
        let headers = [
            ("Impersonate-User", "system:serviceaccount:prod:builder"),
            ("Impersonate-Group", "system:serviceaccounts"),
            ("impersonate-group", "system:authenticated"),
            ("Impersonate-Extra-Scopes", "view"),
            ("Impersonate-Uid", "1234"),
        ];
        let audit =
            RequestAudit::new("id", "/api/v1/pods", &info, &alice(), 0).with_headers(headers, None);
        let event = audit.event(Stage::ResponseComplete, &Status::code_only(200), 0);
        let user = event.impersonated_user.unwrap();
        assert_eq!(user.username, "system:serviceaccount:prod:builder");
        assert_eq!(
            user.groups,
            ["system:serviceaccounts", "system:authenticated"]
        );
        assert_eq!(user.uid.as_deref(), Some("1234"));
        assert_eq!(user.extra["scopes"], ["view"]);
        let plain = RequestAudit::new("id", "/api/v1/pods", &info, &alice(), 0)
            .with_headers([("Impersonate-Group", "x")], None);
        assert_eq!(
            plain
                .event(Stage::ResponseComplete, &Status::code_only(200), 0)
                .impersonated_user,
            None
        );
    }

    #[test]
    fn non_resource_requests_have_no_object_ref_and_long_agents_are_truncated() {
        let info = decode_request("GET", "/version?timeout=5s").unwrap().info;
        let agent = "a".repeat(MAX_USER_AGENT_BYTES + 10);
        let audit = RequestAudit::new("id", "/version?timeout=5s", &info, &alice(), 0)
            .with_headers([("User-Agent", agent.as_str())], None);
        let event = audit.event(Stage::ResponseComplete, &Status::code_only(200), 0);
        assert_eq!(event.object_ref, None);
        assert_eq!(event.verb, "get");
        assert_eq!(
            event.user_agent.len(),
            MAX_USER_AGENT_BYTES + USER_AGENT_TRUNCATED_SUFFIX.len()
        );
        assert!(event.user_agent.ends_with("...TRUNCATED"));
    }

    /// Strings a request may carry into its Event: ordinary ones, ones JSON
    /// must escape, and the texts that mark the skeleton's holes.
    fn hostile_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-z0-9./:-]{0,12}",
            "\\PC{0,8}",
            "[\"\\\\\\n\\u{0}\\u{1f}\\u{7f}é,{}:]{0,6}",
            Just(AUDIT_ID_HOLE.to_owned()),
            Just(MASKED_FIELDS_HOLE.to_owned()),
            Just(format!("\",\"stage\":\"{AUDIT_ID_HOLE}")),
            Just("\"gatehouse.dev/masked-fields\":\"x\"".to_owned()),
            Just(",\"requestReceivedTimestamp\":\"1970-01-01T00:00:00.000000Z\"".to_owned()),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 1500,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]
        /// The skeleton filled in gives the bytes the Event serialized in
        /// full gives, whatever the request carries; or there is none.
        #[test]
        fn a_filled_skeleton_is_the_event_serialized_in_full(
            path in proptest::sample::select(vec![
                "/api/v1/namespaces/prod/secrets/db-credentials",
                "/api/v1/namespaces/dev/pods/web-0/exec?command=ls",
                "/apis/apps/v1/namespaces/dev/deployments?watch=true",
                "/version",
            ]),
            query in hostile_text(),
            audit_id in hostile_text(),
            subject in hostile_text(),
            groups in proptest::collection::vec(hostile_text(), 0..3),
            issuer in proptest::option::of(hostile_text()),
            agent in hostile_text(),
            session in hostile_text(),
            peer in proptest::sample::select(vec![None, Some("10.0.0.7:5555"), Some("::ffff:10.0.0.8"), Some("nonsense")]),
            rule in proptest::option::of(hostile_text()),
            message in proptest::option::of(hostile_text()),
            masked in proptest::option::of(hostile_text()),
            annotate in proptest::option::of(hostile_text()),
            stage in proptest::sample::select(vec![Stage::ResponseStarted, Stage::ResponseComplete, Stage::Panic]),
            code in proptest::sample::select(vec![0u16, 101, 200, 403, 500]),
            received in proptest::prop_oneof![proptest::strategy::Just(RECEIVED), -1_000_000_000_000i64..4_000_000_000_000_000],
            at in proptest::prop_oneof![proptest::strategy::Just(RECEIVED + 5), 0i64..i64::MAX],
        ) {
            let uri = format!("{path}{query}");
            let info = decode_request("GET", path).unwrap().info;
            let identity = Identity {
                subject,
                groups,
                issuer,
                verified: true,
                ..Identity::default()
            };
            let decision = Decision { action: Action::Allow, rule, message };
            let mut audit = RequestAudit::new("first-id", &uri, &info, &identity, 7)
                .with_headers([("user-agent", agent.as_str()), ("kubectl-session", session.as_str())], peer)
                .with_decision(&decision)
                .with_policy_hash("sha256:0f1e2d");
            if let Some(value) = annotate {
                audit.annotate(ACCESS_REASON_ANNOTATION, value);
            }
            let Some(skeleton) = EventText::of(&audit) else {
                // Only a request that carries a hole's mark has none.
                let text = audit.event(Stage::ResponseComplete, &Status::code_only(200), 0).to_json().unwrap();
                proptest::prop_assert!(text.contains(AUDIT_ID_HOLE) || text.contains(MASKED_FIELDS_HOLE) || text.contains("1970-01-01T00:00:00.000000Z\",\"stageTimestamp"), "{}", text);
                return Ok(());
            };
            let status = Status::code_only(code).for_audit();
            let mut full = audit.for_request(&audit_id, received);
            if let Some(fields) = &masked {
                full.set_masked_fields(std::slice::from_ref(fields));
            }
            let expected = full.event_json(stage, &status, at).unwrap();
            let mut rendered = String::new();
            skeleton.render(&mut rendered, &EventHoles {
                audit_id: &audit_id,
                stage,
                response_status: &serde_json::to_string(&status).unwrap(),
                received_micros: received,
                stage_micros: at,
                masked_fields: masked.as_deref(),
            });
            proptest::prop_assert_eq!(rendered, expected);
        }
    }
}
