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

/// The review's `spec`, or a 400 naming what is wrong.
fn spec<T: serde::de::DeserializeOwned>(
    body: &[u8],
    kind: &str,
) -> Result<(T, Value), Box<Status>> {
    let bad = |why: String| Box::new(status::status(400, "BadRequest", &format!("{kind}: {why}")));
    let object: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
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
        let minter = Minter::generate(JwsAlgorithm::Es256, ISSUER, "gatehouse", "k1").unwrap();
        let mut gate = Gate::from_json(POLICY.as_bytes()).unwrap();
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
        assert!(
            exec["reason"].as_str().unwrap().contains("no-exec-in-prod"),
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
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
            "team-dev-and-prod"
        );
        assert_eq!(
            rules[1],
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
