//! A caller's self-checks, answered by the gate from its own policy instead of
//! being forwarded (where the API server would answer from its RBAC, which
//! is not what the gateway enforces):
//!
//! | kubectl | request | answer |
//! |---|---|---|
//! | `kubectl auth whoami` | `POST /apis/authentication.k8s.io/{v1,v1beta1,v1alpha1}/selfsubjectreviews` | the verified identity |
//! | `kubectl auth can-i VERB RESOURCE` | `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews` | the policy's decision for that request, naming the rule |
//! | `kubectl auth can-i --list` | `POST /apis/authorization.k8s.io/v1/selfsubjectrulesreviews` | the rules that can decide for the caller in the namespace |
//!
//! Every authenticated caller may ask about itself (as the API server's
//! `system:basic-user` role allows); the answer reveals only the caller's
//! own identity and the policy's verdicts for it. Access and rules reviews need
//! the request body: [`Gate::admit`] returns [`Admission::ReadBody`] and the
//! glue hands the whole body to [`Gate::answer_review`]. Each is recorded as an
//! audit Event with the rule [`SELF_REVIEW_RULE`]; a shadow instance forwards
//! them like any request.

use super::{Admission, Gate, LocalResponse, RequestHead, event_json};
use crate::audit::{RequestAudit, Stage};
use crate::policy::{Policy, Request, RuleSummary};
use crate::request_info::RequestInfo;
use crate::status::{self, Status};
use gatehouse_core::identity::Identity;
use gatehouse_core::policy::{Action, Decision};
use serde::Deserialize;
use serde_json::{Value, json};

/// The rule named in a self-check's audit Event and decision stats.
pub const SELF_REVIEW_RULE: &str = "gatehouse:self-review";
/// Largest review body read; kubectl's are a few hundred bytes.
pub const MAX_REVIEW_BODY_BYTES: usize = 64 * 1024;

/// Which self-check a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Review {
    /// `SelfSubjectReview` (whoami).
    Subject,
    /// `SelfSubjectAccessReview` (can-i).
    Access,
    /// `SelfSubjectRulesReview` (can-i --list).
    Rules,
}

impl Review {
    fn of(info: &RequestInfo) -> Option<Review> {
        if !info.is_resource_request
            || info.verb != "create"
            || !info.namespace.is_empty()
            || !info.name.is_empty()
            || !info.subresource.is_empty()
        {
            return None;
        }
        match (info.api_group.as_str(), info.resource.as_str()) {
            ("authentication.k8s.io", "selfsubjectreviews") => Some(Review::Subject),
            ("authorization.k8s.io", "selfsubjectaccessreviews") => Some(Review::Access),
            ("authorization.k8s.io", "selfsubjectrulesreviews") => Some(Review::Rules),
            _ => None,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Review::Subject => "SelfSubjectReview",
            Review::Access => "SelfSubjectAccessReview",
            Review::Rules => "SelfSubjectRulesReview",
        }
    }
}

/// An access or rules review waiting for its body.
#[derive(Debug, Clone)]
pub struct PendingReview {
    review: Review,
    api_version: String,
    identity: Identity,
    audit: RequestAudit,
}

impl Gate {
    /// A self-check the gate answers itself, for an authenticated caller.
    pub(super) fn self_review(
        &self,
        head: &RequestHead<'_>,
        info: &RequestInfo,
        identity: &Identity,
    ) -> Option<Admission> {
        let review = Review::of(info).filter(|_| self.mode().is_enforce())?;
        let audit = self
            .audit_for(head, info, identity)
            .with_decision(&self_review_decision());
        let pending = PendingReview {
            review,
            api_version: format!("{}/{}", info.api_group, info.api_version),
            identity: identity.clone(),
            audit,
        };
        Some(match review {
            Review::Subject => {
                Admission::Respond(self.answer_review(pending, b"", head.now_micros))
            }
            Review::Access | Review::Rules => Admission::ReadBody(Box::new(pending)),
        })
    }

    /// Answers a self-check with its request body (the whole body, at most
    /// [`MAX_REVIEW_BODY_BYTES`]; a longer one is refused).
    pub fn answer_review(
        &self,
        pending: PendingReview,
        body: &[u8],
        now_micros: i64,
    ) -> LocalResponse {
        let answer = if body.len() > MAX_REVIEW_BODY_BYTES {
            Err(Box::new(status::status(
                413,
                "RequestEntityTooLarge",
                &format!("gatehouse reads self-reviews of at most {MAX_REVIEW_BODY_BYTES} bytes"),
            )))
        } else {
            match pending.review {
                Review::Subject => {
                    Ok(json!({"status": {"userInfo": user_info(&pending.identity)}}))
                }
                Review::Access => access_review(&self.policy, &pending.identity, body),
                Review::Rules => rules_review(&self.policy, &pending.identity, body),
            }
        };
        let (code, body) = match answer {
            Ok(mut object) => {
                if let Some(fields) = object.as_object_mut() {
                    fields.insert("kind".into(), json!(pending.review.kind()));
                    fields.insert("apiVersion".into(), json!(pending.api_version));
                    fields.insert("metadata".into(), json!({"creationTimestamp": null}));
                }
                (201, object.to_string())
            }
            Err(refusal) => (refusal.http_status(), refusal.to_json()),
        };
        LocalResponse {
            status: code,
            record: event_json(
                &pending.audit,
                Stage::ResponseComplete,
                &Status::code_only(code),
                now_micros,
            ),
            body,
            decision: Some(self_review_decision()),
        }
    }
}

fn self_review_decision() -> Decision {
    Decision {
        action: Action::Allow,
        rule: Some(SELF_REVIEW_RULE.to_owned()),
        message: None,
    }
}

/// `userInfo` as the API server gives it: the verified subject and groups
/// (with `system:authenticated`, which every authenticated caller has).
fn user_info(identity: &Identity) -> Value {
    let mut groups = identity.groups.clone();
    groups.push("system:authenticated".to_owned());
    let mut extra = serde_json::Map::new();
    if let Some(issuer) = &identity.issuer {
        extra.insert("gatehouse.dev/issuer".into(), json!([issuer]));
    }
    json!({"username": identity.subject, "groups": groups, "extra": extra})
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessSpec {
    #[serde(default)]
    resource_attributes: Option<ResourceAttributes>,
    #[serde(default)]
    non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Debug, Default, Deserialize)]
struct ResourceAttributes {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Default, Deserialize)]
struct NonResourceAttributes {
    #[serde(default)]
    path: String,
    #[serde(default)]
    verb: String,
}

/// The review's `spec` (from JSON, or from the protobuf kubectl sends), or a
/// 400 naming what is wrong.
fn spec<T: serde::de::DeserializeOwned>(
    body: &[u8],
    kind: &str,
) -> Result<(T, Value), Box<Status>> {
    let bad = |why: String| Box::new(status::status(400, "BadRequest", &format!("{kind}: {why}")));
    let spec = match body.strip_prefix(protobuf::MAGIC) {
        Some(envelope) => protobuf::review_spec(envelope, kind == Review::Rules.kind())
            .map_err(|e| bad(e.to_owned()))?,
        None => {
            let object: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
            object.get("spec").cloned().unwrap_or(Value::Null)
        }
    };
    let parsed = serde_json::from_value(spec.clone()).map_err(|e| bad(format!("spec: {e}")))?;
    Ok((parsed, spec))
}

/// `can-i`: the policy's decision for the described request.
fn access_review(policy: &Policy, identity: &Identity, body: &[u8]) -> Result<Value, Box<Status>> {
    let (spec, echoed): (AccessSpec, Value) = spec(body, "SelfSubjectAccessReview")?;
    let info = match (spec.resource_attributes, spec.non_resource_attributes) {
        (Some(r), None) => {
            let mut parts = vec![r.resource.clone()];
            parts.extend(
                [r.name.clone(), r.subresource.clone()]
                    .into_iter()
                    .filter(|p| !p.is_empty()),
            );
            RequestInfo {
                is_resource_request: true,
                path: String::new(),
                verb: r.verb,
                api_prefix: if r.group.is_empty() { "api" } else { "apis" }.to_owned(),
                api_group: r.group,
                api_version: if r.version.is_empty() {
                    "v1".to_owned()
                } else {
                    r.version
                },
                namespace: r.namespace,
                resource: r.resource,
                subresource: r.subresource,
                name: r.name,
                parts,
                ..RequestInfo::default()
            }
        }
        (None, Some(n)) => RequestInfo {
            is_resource_request: false,
            path: n.path,
            verb: n.verb,
            ..RequestInfo::default()
        },
        _ => {
            return Err(Box::new(status::status(
                400,
                "BadRequest",
                "SelfSubjectAccessReview: spec needs exactly one of resourceAttributes and nonResourceAttributes",
            )));
        }
    };
    let verdict = policy.decide(&Request {
        info: &info,
        stream: None,
        identity,
    });
    let decision = &verdict.decision;
    let rule = decision.rule.as_deref();
    let named = |what: &str| match (rule, &decision.message) {
        (Some(rule), Some(message)) => format!("{what} gatehouse rule {rule}: {message}"),
        (Some(rule), None) => format!("{what} gatehouse rule {rule}"),
        (None, Some(message)) => format!("{what} the gatehouse policy's default: {message}"),
        (None, None) => format!("{what} the gatehouse policy's default"),
    };
    let status = match decision.action {
        Action::Allow | Action::Observe => json!({"allowed": true, "reason": named("allowed by")}),
        Action::RequireApproval => {
            json!({"allowed": false, "reason": named("needs approval under")})
        }
        Action::Deny => json!({"allowed": false, "denied": true, "reason": named("denied by")}),
    };
    Ok(json!({"spec": echoed, "status": status}))
}

#[derive(Debug, Default, Deserialize)]
struct RulesSpec {
    #[serde(default)]
    namespace: String,
}

/// `can-i --list`: the rules that let the caller do something in the namespace.
///
/// The policy's rules are tried in order and the first match decides, where
/// Kubernetes RBAC rules only add; so an allowing rule is listed as it is
/// written, and when a refusing rule for the caller comes before it the
/// answer is marked incomplete (some of what it lists is refused).
fn rules_review(policy: &Policy, identity: &Identity, body: &[u8]) -> Result<Value, Box<Status>> {
    let (spec, echoed): (RulesSpec, Value) = spec(body, "SelfSubjectRulesReview")?;
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    let mut refusing_before: Vec<&str> = Vec::new();
    let mut shadowed = false;
    let mut narrower = false;
    for rule in policy.rules_for(identity, &spec.namespace) {
        if !matches!(rule.action, Action::Allow | Action::Observe) {
            refusing_before.push(rule.name);
            continue;
        }
        shadowed |= !refusing_before.is_empty();
        narrower |= rule.narrower;
        let verbs = every_or(rule.verbs.iter().map(String::as_str).collect());
        if rule.paths.is_empty() {
            resource_rules.push(resource_rule(&rule, verbs));
        } else {
            non_resource_rules.push(json!({"verbs": verbs, "nonResourceURLs": rule.paths}));
        }
    }
    let mut status = serde_json::Map::new();
    status.insert("resourceRules".into(), json!(resource_rules));
    status.insert("nonResourceRules".into(), json!(non_resource_rules));
    status.insert("incomplete".into(), json!(shadowed || narrower));
    let mut why = Vec::new();
    if shadowed {
        why.push(format!(
            "gatehouse rules decide in order, and rules refusing some of this come first ({}): \
             ask `kubectl auth can-i VERB RESOURCE` for one action",
            refusing_before.join(", ")
        ));
    }
    if narrower {
        why.push("some rules allow only certain exec commands".to_owned());
    }
    if !why.is_empty() {
        status.insert("evaluationError".into(), json!(why.join("; ")));
    }
    Ok(json!({"spec": echoed, "status": status}))
}

/// The Kubernetes protobuf encoding of the reviews, as kubectl sends them
/// (`application/vnd.kubernetes.protobuf`): a `k8s\0` magic, then a
/// `runtime.Unknown` whose `raw` field holds the review message. Only the
/// fields gatehouse reads are decoded, into the JSON the API documents; every
/// length is checked and unknown fields are skipped.
mod protobuf {
    use serde_json::{Map, Value};

    pub const MAGIC: &[u8] = b"k8s\0";

    /// Field numbers of `runtime.Unknown.raw` and of the reviews' `spec`.
    const UNKNOWN_RAW: u64 = 2;
    const REVIEW_SPEC: u64 = 2;
    /// `SelfSubjectAccessReviewSpec`.
    const RESOURCE_ATTRIBUTES: u64 = 1;
    const NON_RESOURCE_ATTRIBUTES: u64 = 2;
    /// `ResourceAttributes` fields 1 to 7, in order.
    const RESOURCE_FIELDS: [&str; 7] = [
        "namespace",
        "verb",
        "group",
        "version",
        "resource",
        "subresource",
        "name",
    ];
    /// `NonResourceAttributes` fields 1 and 2.
    const NON_RESOURCE_FIELDS: [&str; 2] = ["path", "verb"];

    /// One field: its number and, for a length-delimited one, its bytes.
    struct Field<'a> {
        number: u64,
        bytes: Option<&'a [u8]>,
    }

    fn varint(input: &mut &[u8]) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = input.split_first().ok_or("truncated varint")?;
            *input = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long")
    }

    fn fields(mut input: &[u8]) -> Result<Vec<Field<'_>>, &'static str> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let key = varint(&mut input)?;
            let number = key >> 3;
            let skip = |input: &mut &[u8], n: usize| -> Result<(), &'static str> {
                *input = input.get(n..).ok_or("truncated field")?;
                Ok(())
            };
            let bytes = match key & 7 {
                0 => {
                    varint(&mut input)?;
                    None
                }
                1 => {
                    skip(&mut input, 8)?;
                    None
                }
                2 => {
                    let len = usize::try_from(varint(&mut input)?).map_err(|_| "bad length")?;
                    let bytes = input.get(..len).ok_or("truncated field")?;
                    skip(&mut input, len)?;
                    Some(bytes)
                }
                5 => {
                    skip(&mut input, 4)?;
                    None
                }
                _ => return Err("unsupported protobuf wire type"),
            };
            out.push(Field { number, bytes });
        }
        Ok(out)
    }

    /// The last length-delimited field `number` (protobuf's last-one-wins).
    fn message(input: &[u8], number: u64) -> Result<Option<&[u8]>, &'static str> {
        Ok(fields(input)?
            .into_iter()
            .rev()
            .filter(|f| f.number == number)
            .find_map(|f| f.bytes))
    }

    /// A message of string fields numbered 1.. as a JSON object.
    fn strings(input: &[u8], names: &[&str]) -> Result<Value, &'static str> {
        let mut object = Map::new();
        for field in fields(input)? {
            let name = usize::try_from(field.number)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| names.get(i));
            if let (Some(name), Some(bytes)) = (name, field.bytes) {
                let text = std::str::from_utf8(bytes).map_err(|_| "a string is not UTF-8")?;
                object.insert((*name).to_owned(), Value::String(text.to_owned()));
            }
        }
        Ok(Value::Object(object))
    }

    /// The `spec` of an access review (`rules` false) or a rules review
    /// (`SelfSubjectRulesReviewSpec`: `namespace`, field 1) as JSON.
    pub fn review_spec(envelope: &[u8], rules: bool) -> Result<Value, &'static str> {
        let raw = message(envelope, UNKNOWN_RAW)?.ok_or("no object in the envelope")?;
        let Some(spec) = message(raw, REVIEW_SPEC)? else {
            return Ok(Value::Object(Map::new()));
        };
        if rules {
            return strings(spec, &["namespace"]);
        }
        let mut object = Map::new();
        if let Some(bytes) = message(spec, RESOURCE_ATTRIBUTES)? {
            object.insert(
                "resourceAttributes".to_owned(),
                strings(bytes, &RESOURCE_FIELDS)?,
            );
        }
        if let Some(bytes) = message(spec, NON_RESOURCE_ATTRIBUTES)? {
            object.insert(
                "nonResourceAttributes".to_owned(),
                strings(bytes, &NON_RESOURCE_FIELDS)?,
            );
        }
        Ok(Value::Object(object))
    }
}

fn resource_rule(rule: &RuleSummary<'_>, verbs: Vec<&str>) -> Value {
    let groups: Vec<&str> = rule
        .api_groups
        .iter()
        .map(|g| if *g == "core" { "" } else { g })
        .collect();
    let mut entry = serde_json::Map::new();
    entry.insert("verbs".into(), json!(verbs));
    entry.insert("apiGroups".into(), json!(every_or(groups)));
    entry.insert("resources".into(), json!(every_or(rule.resources.clone())));
    if !rule.names.is_empty() {
        entry.insert("resourceNames".into(), json!(rule.names));
    }
    Value::Object(entry)
}

/// `["*"]` for an empty list (a rule that names none matches every one).
fn every_or(items: Vec<&str>) -> Vec<&str> {
    if items.is_empty() { vec!["*"] } else { items }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::super::tests::{NOW, admit};
    use super::*;
    use gatehouse_core::identity::JwsAlgorithm;
    use gatehouse_core::identity::testing::Minter;

    const ISSUER: &str = "https://idp.gatehouse.test";
    const POLICY: &str = include_str!("../../../../examples/kubernetes-policy.json");

    fn gate_and_token(who: &str, group: &str) -> (Gate, String) {
        gate_in_mode(who, group, "enforce")
    }

    fn gate_in_mode(who: &str, group: &str, mode: &str) -> (Gate, String) {
        let minter = Minter::generate(JwsAlgorithm::Es256, ISSUER, "gatehouse", "k1").unwrap();
        let mut config: Value = serde_json::from_str(POLICY).unwrap();
        config["mode"] = json!(mode);
        let mut gate = Gate::from_json(config.to_string().as_bytes()).unwrap();
        gate.verifier_mut()
            .unwrap()
            .keys_fetched(ISSUER, minter.jwks_json().as_bytes(), NOW)
            .unwrap();
        let token = minter
            .mint(&json!({"sub": who, "groups": [group]}), 600, NOW)
            .unwrap();
        (gate, format!("Bearer {token}"))
    }

    fn review(gate: &mut Gate, bearer: &str, path: &str, body: &Value) -> (u16, Value) {
        let answer = match admit(gate, "POST", path, &[("authorization", bearer)]) {
            Admission::ReadBody(pending) => {
                gate.answer_review(*pending, body.to_string().as_bytes(), NOW * 1_000_000)
            }
            Admission::Respond(response) => response,
            other => panic!("{path}: {other:?}"),
        };
        let event: Value = serde_json::from_str(&answer.record).unwrap();
        assert_eq!(event["annotations"]["gatehouse.dev/rule"], SELF_REVIEW_RULE);
        assert_eq!(event["user"]["username"], "developer");
        (answer.status, serde_json::from_str(&answer.body).unwrap())
    }

    fn can_i(attributes: Value) -> Value {
        let (mut gate, bearer) = gate_and_token("developer", "developers");
        let (code, answer) = review(
            &mut gate,
            &bearer,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                    "spec": attributes}),
        );
        assert_eq!(code, 201, "{answer}");
        assert_eq!(answer["kind"], "SelfSubjectAccessReview");
        assert_eq!(answer["spec"], attributes, "the spec is echoed");
        answer["status"].clone()
    }

    #[test]
    fn whoami_is_the_verified_identity_in_every_api_version() {
        let (mut gate, bearer) = gate_and_token("developer", "developers");
        for version in ["v1", "v1beta1", "v1alpha1"] {
            let path = format!("/apis/authentication.k8s.io/{version}/selfsubjectreviews");
            let (code, answer) = review(&mut gate, &bearer, &path, &json!({}));
            assert_eq!(code, 201);
            assert_eq!(
                answer["apiVersion"],
                format!("authentication.k8s.io/{version}")
            );
            assert_eq!(answer["kind"], "SelfSubjectReview");
            let user = &answer["status"]["userInfo"];
            assert_eq!(user["username"], "developer");
            assert_eq!(
                user["groups"],
                json!(["developers", "system:authenticated"])
            );
        }
        let unauthenticated = admit(
            &mut gate,
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            &[],
        );
        assert!(
            matches!(&unauthenticated, Admission::Respond(r) if r.status == 401),
            "{unauthenticated:?}"
        );
    }

    #[test]
    fn can_i_is_the_policys_decision_naming_the_rule() {
        let denied = can_i(json!({"resourceAttributes": {
            "verb": "delete", "resource": "namespaces", "name": "prod"}}));
        assert_eq!(denied["allowed"], false);
        assert_eq!(denied["denied"], true);
        assert_eq!(
            denied["reason"],
            "denied by gatehouse rule no-namespace-deletion: namespaces are deleted through the platform team, not kubectl"
        );
        let exec = can_i(json!({"resourceAttributes": {
            "namespace": "prod", "verb": "create", "resource": "pods", "subresource": "exec"}}));
        // A developer's exec in prod waits for an admin's approval.
        assert_eq!(exec["allowed"], false);
        assert!(
            exec["reason"]
                .as_str()
                .unwrap()
                .starts_with("needs approval under gatehouse rule prod-exec-needs-admin"),
            "{exec}"
        );
        let allowed = can_i(json!({"resourceAttributes": {
            "namespace": "dev", "verb": "get", "resource": "pods"}}));
        assert_eq!(allowed["allowed"], true);
        assert_eq!(
            allowed["reason"],
            "allowed by gatehouse rule team-dev-and-prod"
        );
        let discovery = can_i(json!({"nonResourceAttributes": {"path": "/apis", "verb": "get"}}));
        assert_eq!(discovery["reason"], "allowed by gatehouse rule discovery");
        let unmatched = can_i(json!({"resourceAttributes": {
            "namespace": "kube-system", "verb": "create", "resource": "pods"}}));
        assert_eq!(
            unmatched["reason"],
            "denied by the gatehouse policy's default: no gatehouse policy rule allows this request"
        );
    }

    #[test]
    fn a_shadow_instance_leaves_self_checks_to_the_enforcing_one() {
        let (mut gate, bearer) = gate_in_mode("developer", "developers", "shadow");
        for path in [
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        ] {
            let admission = admit(&mut gate, "POST", path, &[("authorization", &bearer)]);
            assert!(
                matches!(admission, Admission::Forward(_)),
                "{path}: {admission:?}"
            );
        }
    }

    #[test]
    fn bad_or_oversized_reviews_are_refused() {
        let (mut gate, bearer) = gate_and_token("developer", "developers");
        let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
        let Admission::ReadBody(pending) =
            admit(&mut gate, "POST", path, &[("authorization", &bearer)])
        else {
            panic!("waits for the body");
        };
        for (body, code) in [
            (b"not json".to_vec(), 400),
            (br#"{"spec": {}}"#.to_vec(), 400),
            (
                br#"{"spec": {"resourceAttributes": {}, "nonResourceAttributes": {}}}"#.to_vec(),
                400,
            ),
            (vec![b' '; MAX_REVIEW_BODY_BYTES + 1], 413),
        ] {
            let answer = gate.answer_review((*pending).clone(), &body, NOW * 1_000_000);
            assert_eq!(answer.status, code, "{}", answer.body);
            assert!(answer.body.contains("\"kind\":\"Status\""));
        }
        // Other verbs on the review resources go to policy like any request.
        let list = admit(&mut gate, "GET", path, &[("authorization", &bearer)]);
        assert!(matches!(list, Admission::Forward(_)), "{list:?}");
    }

    /// A protobuf length-delimited field.
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, u8::try_from(bytes.len()).unwrap()];
        out.extend_from_slice(bytes);
        out
    }

    /// What kubectl sends: `k8s\0`, then runtime.Unknown{typeMeta, raw}.
    fn envelope(spec: &[u8]) -> Vec<u8> {
        let type_meta = [
            field(1, b"authorization.k8s.io/v1"),
            field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let object = [field(1, b""), field(2, spec)].concat();
        [
            b"k8s\0".as_slice(),
            &field(1, &type_meta),
            &field(2, &object),
        ]
        .concat()
    }

    #[test]
    fn kubectls_protobuf_reviews_are_read_as_their_json_would_be() {
        let attributes = [
            field(1, b"prod"),
            field(2, b"delete"),
            // An unknown varint field (42) in between is skipped.
            vec![0xd0, 0x02, 0x96, 0x01],
            field(5, b"namespaces"),
            field(7, b"prod"),
        ]
        .concat();
        let body = envelope(&field(1, &attributes));
        assert_eq!(
            protobuf::review_spec(body.strip_prefix(protobuf::MAGIC).unwrap(), false).unwrap(),
            json!({"resourceAttributes": {
                "namespace": "prod", "verb": "delete", "resource": "namespaces", "name": "prod"}})
        );
        let (mut gate, bearer) = gate_and_token("developer", "developers");
        let Admission::ReadBody(pending) = admit(
            &mut gate,
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &[("authorization", &bearer)],
        ) else {
            panic!("waits for the body");
        };
        let answer = gate.answer_review((*pending).clone(), &body, NOW * 1_000_000);
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert!(
            answer.body.contains("no-namespace-deletion"),
            "{}",
            answer.body
        );
        // Cut anywhere, the envelope is a clean 400, never a panic.
        for end in 4..body.len() {
            let cut = gate.answer_review((*pending).clone(), &body[..end], NOW * 1_000_000);
            assert!(
                cut.status == 400 || cut.status == 201,
                "{end}: {}",
                cut.body
            );
        }
        let non_resource = envelope(&field(2, &[field(1, b"/apis"), field(2, b"get")].concat()));
        assert_eq!(
            protobuf::review_spec(non_resource.strip_prefix(protobuf::MAGIC).unwrap(), false)
                .unwrap(),
            json!({"nonResourceAttributes": {"path": "/apis", "verb": "get"}})
        );
        let rules = envelope(&field(1, b"dev"));
        assert_eq!(
            protobuf::review_spec(rules.strip_prefix(protobuf::MAGIC).unwrap(), true).unwrap(),
            json!({"namespace": "dev"})
        );
        for bad in [
            &b"\x12\x05ab"[..],
            b"\x12",
            b"\x0f",
            b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        ] {
            assert!(protobuf::review_spec(bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn can_i_list_gives_the_rules_for_the_namespace_and_says_order_matters() {
        let (mut gate, bearer) = gate_and_token("developer", "developers");
        let (code, answer) = review(
            &mut gate,
            &bearer,
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            &json!({"spec": {"namespace": "dev"}}),
        );
        assert_eq!(code, 201);
        let status = &answer["status"];
        let rules = status["resourceRules"].as_array().unwrap();
        assert_eq!(
            rules[0],
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["pods/exec", "pods/attach"]}),
            "exec-in-dev-recorded"
        );
        assert_eq!(
            rules[1],
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
            "team-dev-and-prod"
        );
        assert_eq!(
            rules[2],
            json!({"verbs": ["get", "list", "watch"], "apiGroups": ["*"], "resources": ["*"]}),
            "team-read-cluster"
        );
        assert_eq!(status["nonResourceRules"][0]["nonResourceURLs"][0], "/api");
        assert_eq!(status["incomplete"], true);
        assert!(
            status["evaluationError"]
                .as_str()
                .unwrap()
                .contains("no-namespace-deletion"),
            "{status}"
        );
        let (_, other) = review(
            &mut gate,
            &bearer,
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            &json!({"spec": {"namespace": "kube-system"}}),
        );
        let rules = other["status"]["resourceRules"].as_array().unwrap();
        assert_eq!(rules.len(), 1, "only cluster-wide reads: {rules:?}");
    }
}
