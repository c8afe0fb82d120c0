//! The Kubernetes filter's configuration and policy: who may do what to which
//! objects, what the gateway sends upstream, and what is masked.
//!
//! ```json
//! {
//!   "identity": {"issuers": [...]},
//!   "default": {"action": "deny", "message": "no rule allows this"},
//!   "rules": [
//!     {"name": "no-exec-in-prod", "action": "deny",
//!      "match": {"groups": ["developers"], "verbs": ["create"],
//!                "resources": ["pods/exec", "pods/attach"], "namespaces": ["prod"]}},
//!     {"name": "read-dev", "action": "allow",
//!      "match": {"verbs": ["get", "list", "watch"], "namespaces": ["dev"]}},
//!     {"name": "exec-in-dev", "action": "allow",
//!      "match": {"resources": ["pods/exec", "pods/attach"], "namespaces": ["dev"]},
//!      "record": {"deny_commands": ["rm -rf /"]}}
//!   ],
//!   "upstream": {"bearer_token": "...", "impersonate": true},
//!   "masking": {"secrets": true, "pod_env": true,
//!               "fields": [{"resources": ["configmaps"], "paths": ["data.*"]}]},
//!   "mode": "enforce"
//! }
//! ```
//!
//! `approvals` names the approval service (`{"cluster", "key", "poll_ms"?}`):
//! with it, a request a `require_approval` rule matches is held while a
//! person decides (up to the rule's `hold`), then forwarded or refused (see
//! [`crate::gate`]); without it, such a request is refused like a denial.
//!
//! `mode` is `enforce` (the default) or `shadow`: a shadow instance never changes
//! a request or answers one itself; its audit Events say what it would have done
//! (see [`crate::gate`]).
//!
//! A rule's `record` section records the exec and attach sessions it admits
//! (see [`crate::recording::config`]).
//!
//! Rules are tried in order and the first that matches decides; when none does,
//! `default` does. Within a `match`, every listed field must match and any
//! pattern of a field may match (`*` is a wildcard). Exec, attach and
//! port-forward are judged as verb `create`, whatever the HTTP method, so one
//! rule covers both the WebSocket and the SPDY attempt.

use crate::exec::{StreamRequest, authorization_verb};
use crate::masking::FieldMasking;
use crate::recording::RecordingConfig;
use crate::request_info::RequestInfo;
use gatehouse_core::approval::{
    ApprovalRequirement, ApprovalServiceConfig, Holding, rule_requirement,
};
use gatehouse_core::config::ConfigError;
use gatehouse_core::identity::{Identity, IdentityConfig, Secret};
use gatehouse_core::mask::MaskConfig;
use gatehouse_core::policy::{
    Action, Decision, IdentityMatch, OneOrMany, Wildcard, compile_wildcards,
};
use gatehouse_core::record::FilterMode;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most rules a policy may hold.
pub const MAX_RULES: usize = 1024;

/// Verbs a rule may name: the RequestInfo verbs, plus `*`.
const KNOWN_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "head",
    "options",
    "post",
    "put",
    "*",
];

/// The document as written; compiled into [`Policy`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDocument {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    identity: Option<IdentityConfig>,
    #[serde(default)]
    default: Option<Value>,
    #[serde(default)]
    rules: Vec<Value>,
    #[serde(default)]
    upstream: UpstreamConfig,
    #[serde(default)]
    masking: MaskingDocument,
    #[serde(default)]
    mode: Option<Value>,
    /// The approval service (see [`ApprovalServiceConfig`]).
    #[serde(default)]
    approvals: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultDocument {
    action: Action,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDocument {
    name: String,
    action: Action,
    #[serde(default)]
    message: Option<String>,
    /// Whether responses to requests this rule lets through are masked.
    #[serde(default = "yes")]
    mask: bool,
    /// Settings of a `require_approval` rule (see [`ApprovalRequirement`]).
    #[serde(default)]
    approval: Option<Value>,
    #[serde(rename = "match", default)]
    matcher: Option<Value>,
    /// Record the exec and attach sessions this rule admits (see
    /// [`crate::recording::config`]).
    #[serde(default)]
    record: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchDocument {
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    claims: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    scope: Option<Scope>,
    #[serde(default)]
    commands: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
}

/// Whether a rule covers namespaced or cluster-scoped resource requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Requests naming a namespace (including the Namespace object itself).
    Namespaced,
    /// Requests on cluster-scoped resources (nodes, clusterroles, ...).
    Cluster,
}

/// What the gateway sends upstream in place of the caller's credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The gateway's own bearer token (e.g. a service-account token), sent as
    /// `Authorization: Bearer ...`.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Or any other header carrying the gateway's credential.
    #[serde(default)]
    pub header: Option<UpstreamHeader>,
    /// Send `Impersonate-User` / `Impersonate-Group` naming the verified caller.
    #[serde(default)]
    pub impersonate: bool,
}

/// A header the gateway adds upstream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamHeader {
    pub name: String,
    pub value: Secret,
}

/// The `masking` section as written; compiled into [`MaskingConfig`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaskingDocument {
    #[serde(default = "yes")]
    secrets: bool,
    #[serde(default = "yes")]
    pod_env: bool,
    #[serde(default = "default_mask_text")]
    mask_text: String,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    /// Detector rules over JSON paths (see [`FieldMasking`]).
    #[serde(default)]
    fields: Vec<Value>,
    /// The shared detectors' settings for `fields`.
    #[serde(default)]
    detectors: Option<MaskConfig>,
}

impl Default for MaskingDocument {
    fn default() -> Self {
        Self {
            secrets: true,
            pod_env: true,
            mask_text: default_mask_text(),
            max_body_bytes: default_max_body_bytes(),
            fields: Vec::new(),
            detectors: None,
        }
    }
}

impl MaskingDocument {
    fn compile(self) -> Result<MaskingConfig, ConfigError> {
        if self.mask_text.is_empty() || self.mask_text.len() > 256 {
            return Err(ConfigError::new("mask_text", "must be 1 to 256 bytes"));
        }
        Ok(MaskingConfig {
            fields: FieldMasking::compile(&self.fields, self.detectors.as_ref())?,
            secrets: self.secrets,
            pod_env: self.pod_env,
            mask_text: self.mask_text,
            max_body_bytes: self.max_body_bytes,
        })
    }
}

/// What the filter masks in responses.
#[derive(Debug, Clone)]
pub struct MaskingConfig {
    /// Secret `data` / `stringData` values (and their copy in the
    /// last-applied-configuration annotation).
    pub secrets: bool,
    /// The `value` of each variable in every `env` array: containers in pods,
    /// pod templates and custom resources alike.
    pub pod_env: bool,
    /// The text a masked value is replaced with (base64-encoded in Secret `data`).
    pub mask_text: String,
    /// Largest response body buffered for masking; larger ones fail with a 500.
    pub max_body_bytes: usize,
    /// The shared detectors over configured JSON paths of chosen resources.
    pub fields: FieldMasking,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        Self {
            secrets: true,
            pod_env: true,
            mask_text: default_mask_text(),
            max_body_bytes: default_max_body_bytes(),
            fields: FieldMasking::default(),
        }
    }
}

impl MaskingConfig {
    /// Parses and compiles a `masking` section on its own (error paths are
    /// relative to it).
    pub fn from_json(json: &[u8]) -> Result<MaskingConfig, ConfigError> {
        ConfigError::parse_json::<MaskingDocument>(json)?.compile()
    }
}

fn yes() -> bool {
    true
}
fn default_mask_text() -> String {
    "********".to_owned()
}
fn default_max_body_bytes() -> usize {
    8 * 1024 * 1024
}

/// One compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    action: Action,
    message: Option<String>,
    mask: bool,
    matcher: RequestMatch,
    /// Who approves what this rule covers, when its action is `require_approval`.
    approval: Option<Arc<ApprovalRequirement>>,
    recording: Option<Arc<RecordingConfig>>,
}

/// The request part of a rule's match.
#[derive(Debug, Clone, Default)]
struct RequestMatch {
    identity: IdentityMatch,
    verbs: Vec<String>,
    api_groups: Vec<Wildcard>,
    resources: Vec<Wildcard>,
    namespaces: Vec<Wildcard>,
    names: Vec<Wildcard>,
    scope: Option<Scope>,
    commands: Vec<Wildcard>,
    paths: Vec<Wildcard>,
}

impl RequestMatch {
    /// Whether the rule only concerns resource requests.
    fn needs_resource(&self) -> bool {
        !self.api_groups.is_empty()
            || !self.resources.is_empty()
            || !self.namespaces.is_empty()
            || !self.names.is_empty()
            || self.scope.is_some()
            || !self.commands.is_empty()
    }

    fn matches(&self, request: &Request<'_>) -> bool {
        let any = |patterns: &[Wildcard], value: &str| patterns.iter().any(|p| p.matches(value));
        let info = request.info;
        if !self.identity.matches(request.identity) {
            return false;
        }
        let verb = authorization_verb(info);
        if !self.verbs.is_empty() && !self.verbs.iter().any(|v| v == "*" || v == verb) {
            return false;
        }
        if !info.is_resource_request {
            return !self.needs_resource()
                && (self.paths.is_empty() || any(&self.paths, &info.path));
        }
        if !self.paths.is_empty() {
            return false;
        }
        let resource = info.resource_path();
        let group = info.api_group_name();
        let command = request
            .stream
            .map(|s| s.command.join(" "))
            .unwrap_or_default();
        (self.api_groups.is_empty() || any(&self.api_groups, group))
            && (self.resources.is_empty() || any(&self.resources, &resource))
            && (self.namespaces.is_empty()
                || (!info.namespace.is_empty() && any(&self.namespaces, &info.namespace)))
            && (self.names.is_empty() || any(&self.names, &info.name))
            && match self.scope {
                None => true,
                Some(Scope::Namespaced) => !info.namespace.is_empty(),
                Some(Scope::Cluster) => info.namespace.is_empty(),
            }
            && (self.commands.is_empty()
                || (request.stream.is_some_and(|s| !s.command.is_empty())
                    && any(&self.commands, &command)))
    }
}

/// A request as policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub info: &'a RequestInfo,
    /// The exec/attach/port-forward options, when the request opens one.
    pub stream: Option<&'a StreamRequest>,
    pub identity: &'a Identity,
}

/// The verdict on one request.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub decision: Decision,
    /// Whether the response must be masked.
    pub mask: bool,
    /// How exec and attach sessions are recorded, when the deciding rule
    /// asks for it.
    pub recording: Option<Arc<RecordingConfig>>,
}

impl PartialEq for Verdict {
    fn eq(&self, other: &Self) -> bool {
        let same_recording = match (&self.recording, &other.recording) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.decision == other.decision && self.mask == other.mask && same_recording
    }
}

impl Eq for Verdict {}

/// The compiled configuration of the Kubernetes filter.
#[derive(Debug, Clone)]
pub struct Policy {
    version: Option<String>,
    identity: Option<IdentityConfig>,
    default: Decision,
    rules: Vec<Rule>,
    upstream: UpstreamConfig,
    masking: MaskingConfig,
    mode: FilterMode,
    approvals: Option<ApprovalServiceConfig>,
}

impl Policy {
    /// Parses and checks a configuration document; errors name the JSON path,
    /// e.g. `rules[2].match.verbs[0]: unknown verb "lst"`.
    pub fn from_json(json: &[u8]) -> Result<Policy, ConfigError> {
        let doc: PolicyDocument = ConfigError::parse_json(json)?;
        if doc.rules.len() > MAX_RULES {
            return Err(ConfigError::new(
                "rules",
                format!("at most {MAX_RULES} rules are allowed"),
            ));
        }
        let default = match doc.default {
            None => Decision {
                action: Action::Deny,
                rule: None,
                message: Some("no policy rule allows this request".to_owned()),
            },
            Some(value) => {
                let d: DefaultDocument = serde_json::from_value(value)
                    .map_err(|e| ConfigError::new("default", e.to_string()))?;
                if d.action == Action::RequireApproval {
                    return Err(ConfigError::new(
                        "default.action",
                        "require_approval belongs on a named rule with approval settings",
                    ));
                }
                Decision {
                    action: d.action,
                    rule: None,
                    message: d.message,
                }
            }
        };
        let rules = doc
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, value)| compile_rule(value).map_err(|e| e.under(&format!("rules[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut names = std::collections::BTreeSet::new();
        for (i, rule) in rules.iter().enumerate() {
            if !names.insert(rule.name.as_str()) {
                return Err(ConfigError::new(
                    format!("rules[{i}].name"),
                    format!("duplicate rule name \"{}\"", rule.name),
                ));
            }
        }
        check_upstream(&doc.upstream)?;
        let masking = doc.masking.compile().map_err(|e| e.under("masking"))?;
        let mode = match doc.mode {
            None => FilterMode::Enforce,
            Some(value) => serde_json::from_value(value)
                .map_err(|e| ConfigError::new("mode", e.to_string()))?,
        };
        let approvals = doc
            .approvals
            .map(|value| {
                ApprovalServiceConfig::from_json(value.to_string().as_bytes())
                    .map_err(|e| e.under("approvals"))
            })
            .transpose()?;
        Ok(Policy {
            mode,
            approvals,
            version: doc.version,
            identity: doc.identity,
            default,
            rules,
            upstream: doc.upstream,
            masking,
        })
    }

    /// `enforce` (the default) or `shadow`: observe only (see [`crate::gate`]).
    pub fn mode(&self) -> FilterMode {
        self.mode
    }

    /// The configured policy version, if any.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The trusted token issuers (`None`: every request is refused as unauthenticated).
    pub fn identity(&self) -> Option<&IdentityConfig> {
        self.identity.as_ref()
    }

    /// What goes upstream instead of the caller's credential.
    pub fn upstream(&self) -> &UpstreamConfig {
        &self.upstream
    }

    /// Masking settings.
    pub fn masking(&self) -> &MaskingConfig {
        &self.masking
    }

    /// The approval service, when configured: without it `require_approval`
    /// refuses like `deny`.
    pub fn approval_service(&self) -> Option<&ApprovalServiceConfig> {
        self.approvals.as_ref()
    }

    /// The approval settings of the `require_approval` rule named `rule`.
    pub fn approval_requirement(&self, rule: &str) -> Option<&Arc<ApprovalRequirement>> {
        self.rules
            .iter()
            .find(|r| r.name == rule)
            .and_then(|r| r.approval.as_ref())
    }

    /// Judges a request: the first matching rule, else the default.
    pub fn decide(&self, request: &Request<'_>) -> Verdict {
        for rule in &self.rules {
            if rule.matcher.matches(request) {
                return Verdict {
                    decision: Decision {
                        action: rule.action,
                        rule: Some(rule.name.clone()),
                        message: rule.message.clone(),
                    },
                    mask: rule.mask,
                    recording: rule.recording.clone(),
                };
            }
        }
        Verdict {
            decision: self.default.clone(),
            mask: true,
            recording: None,
        }
    }
}

/// A rule as a rules review lists it (`kubectl auth can-i --list`): what it
/// covers for one caller in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSummary<'a> {
    pub name: &'a str,
    pub action: Action,
    /// Verbs; empty means every verb.
    pub verbs: &'a [String],
    /// API groups (`core` for the legacy group); empty means every group.
    pub api_groups: Vec<&'a str>,
    /// Resources (`pods/exec` for a subresource); empty means every resource.
    pub resources: Vec<&'a str>,
    /// Object names; empty means every name.
    pub names: Vec<&'a str>,
    /// Non-resource paths; a rule naming paths covers only them.
    pub paths: Vec<&'a str>,
    /// Whether the rule covers only requests on cluster-scoped resources.
    pub cluster_only: bool,
    /// Whether the rule also matches on something a rules review cannot say
    /// (exec commands).
    pub narrower: bool,
}

impl Policy {
    /// The rules that can decide for `identity` on requests in `namespace`
    /// (empty: cluster-scoped and non-resource requests), in policy order; the
    /// first that matches a request decides it.
    pub fn rules_for<'a>(
        &'a self,
        identity: &'a Identity,
        namespace: &'a str,
    ) -> impl Iterator<Item = RuleSummary<'a>> + 'a {
        let texts = |patterns: &'a [Wildcard]| patterns.iter().map(Wildcard::as_str).collect();
        self.rules.iter().filter_map(move |rule| {
            let m = &rule.matcher;
            let in_namespace = if namespace.is_empty() {
                m.namespaces.is_empty() && m.scope != Some(Scope::Namespaced)
            } else {
                m.scope != Some(Scope::Cluster)
                    && (m.namespaces.is_empty()
                        || m.namespaces.iter().any(|p| p.matches(namespace)))
            };
            (m.identity.matches(identity) && (in_namespace || !m.paths.is_empty())).then(|| {
                RuleSummary {
                    name: &rule.name,
                    action: rule.action,
                    verbs: &m.verbs,
                    api_groups: texts(&m.api_groups),
                    resources: texts(&m.resources),
                    names: texts(&m.names),
                    paths: texts(&m.paths),
                    cluster_only: m.scope == Some(Scope::Cluster),
                    narrower: !m.commands.is_empty(),
                }
            })
        })
    }
}

fn compile_rule(value: Value) -> Result<Rule, ConfigError> {
    let doc: RuleDocument =
        serde_json::from_value(value).map_err(|e| ConfigError::new("", e.to_string()))?;
    if doc.name.is_empty() {
        return Err(ConfigError::new("name", "must not be empty"));
    }
    let matcher = match doc.matcher {
        None => RequestMatch::default(),
        Some(value) => compile_match(value).map_err(|e| e.under("match"))?,
    };
    let approval = rule_requirement(
        doc.action == Action::RequireApproval,
        doc.approval,
        Holding::Allowed,
    )?
    .map(Arc::new);
    let recording = doc
        .record
        .map(|value| RecordingConfig::from_value(value).map_err(|e| e.under("record")))
        .transpose()?
        .map(Arc::new);
    Ok(Rule {
        name: doc.name,
        action: doc.action,
        message: doc.message,
        mask: doc.mask,
        matcher,
        approval,
        recording,
    })
}

fn compile_match(value: Value) -> Result<RequestMatch, ConfigError> {
    let m: MatchDocument =
        serde_json::from_value(value).map_err(|e| ConfigError::new("", e.to_string()))?;
    for (i, verb) in m.verbs.iter().enumerate() {
        if !KNOWN_VERBS.contains(&verb.as_str()) {
            return Err(ConfigError::new(
                format!("verbs[{i}]"),
                format!("unknown verb \"{verb}\""),
            ));
        }
    }
    for (i, path) in m.paths.iter().enumerate() {
        if !path.starts_with('/') {
            return Err(ConfigError::new(
                format!("paths[{i}]"),
                format!("non-resource path \"{path}\" must start with /"),
            ));
        }
    }
    let matcher = RequestMatch {
        identity: IdentityMatch::new(&m.subjects, &m.groups, &m.claims)?,
        verbs: m.verbs,
        api_groups: compile_group_patterns(&m.api_groups)?,
        resources: compile_wildcards("resources", &m.resources)?,
        namespaces: compile_wildcards("namespaces", &m.namespaces)?,
        names: compile_wildcards("names", &m.names)?,
        scope: m.scope,
        commands: compile_wildcards("commands", &m.commands)?,
        paths: compile_wildcards("paths", &m.paths)?,
    };
    if !matcher.paths.is_empty() && matcher.needs_resource() {
        return Err(ConfigError::new(
            "paths",
            "a rule matches either non-resource paths or resources, not both",
        ));
    }
    Ok(matcher)
}

/// API group patterns; the core group (`""` in RequestInfo) is written `core`,
/// since an empty pattern would be ambiguous.
fn compile_group_patterns(groups: &[String]) -> Result<Vec<Wildcard>, ConfigError> {
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            if g.is_empty() {
                Err(ConfigError::new(
                    format!("api_groups[{i}]"),
                    "write the core API group as \"core\"",
                ))
            } else {
                Wildcard::new(g).map_err(|e| e.under(&format!("api_groups[{i}]")))
            }
        })
        .collect()
}

fn check_upstream(upstream: &UpstreamConfig) -> Result<(), ConfigError> {
    if upstream.bearer_token.is_some() && upstream.header.is_some() {
        return Err(ConfigError::new(
            "upstream",
            "set either bearer_token or header, not both",
        ));
    }
    if let Some(header) = &upstream.header {
        let valid = !header.name.is_empty()
            && header
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ConfigError::new(
                "upstream.header.name",
                format!("\"{}\" is not a valid header name", header.name),
            ));
        }
        if header.name.eq_ignore_ascii_case("impersonate-user")
            || header.name.to_ascii_lowercase().starts_with("impersonate-")
        {
            return Err(ConfigError::new(
                "upstream.header.name",
                "impersonation headers are set from the verified caller",
            ));
        }
    }
    let unprintable = |s: &str| s.bytes().any(|b| b < 0x20 || b == 0x7f);
    let token = upstream
        .bearer_token
        .as_ref()
        .map(|t| t.0.as_str())
        .or(upstream.header.as_ref().map(|h| h.value.0.as_str()));
    if token.is_some_and(|t| t.is_empty() || unprintable(t)) {
        return Err(ConfigError::new(
            "upstream",
            "the credential must be non-empty printable text",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_info::decode_request;

    const DEFAULT_POLICY: &str = include_str!("../../../examples/kubernetes-policy.json");

    fn who(subject: &str, group: &str) -> Identity {
        Identity {
            subject: subject.into(),
            groups: vec![group.into()],
            verified: true,
            ..Identity::default()
        }
    }

    /// The action and rule for `method path` by `identity` (headers: a WebSocket exec).
    fn judge(policy: &Policy, identity: &Identity, method: &str, path: &str) -> (Action, String) {
        let decoded = decode_request(method, path).unwrap();
        let stream =
            StreamRequest::from_request(&decoded.info, &decoded.query, [("upgrade", "websocket")]);
        let verdict = policy.decide(&Request {
            info: &decoded.info,
            stream: stream.as_ref(),
            identity,
        });
        (
            verdict.decision.action,
            verdict.decision.rule.unwrap_or_else(|| "<default>".into()),
        )
    }

    #[test]
    fn default_policy_table() {
        let policy = Policy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
        let developer = who("developer", "developers");
        let dba = who("dba", "dba");
        let admin = who("admin", "platform-admins");
        let stranger = who("mallory", "nobody");
        use Action::*;
        let cases: &[(&Identity, &str, &str, Action, &str)] = &[
            (&developer, "GET", "/api", Allow, "discovery"),
            (&developer, "GET", "/apis/apps/v1", Allow, "discovery"),
            (&stranger, "GET", "/version", Allow, "discovery"),
            (
                &developer,
                "GET",
                "/api/v1/pods?limit=500",
                Allow,
                "team-read-cluster",
            ),
            (
                &developer,
                "GET",
                "/api/v1/namespaces/prod/secrets/db-credentials",
                Allow,
                "team-dev-and-prod",
            ),
            (
                &developer,
                "GET",
                "/api/v1/namespaces/dev/pods/web-0/exec?command=ls",
                Allow,
                "exec-in-dev-recorded",
            ),
            (
                &developer,
                "GET",
                "/api/v1/namespaces/prod/pods/web-0/exec?command=ls",
                RequireApproval,
                "prod-exec-needs-admin",
            ),
            (
                &developer,
                "POST",
                "/api/v1/namespaces/prod/pods/web-0/exec?command=ls",
                RequireApproval,
                "prod-exec-needs-admin",
            ),
            (
                &developer,
                "POST",
                "/api/v1/namespaces/prod/pods/web-0/portforward",
                Deny,
                "no-exec-in-prod",
            ),
            (
                &developer,
                "GET",
                "/api/v1/namespaces/prod/pods/web-0/log?container=app",
                Allow,
                "team-dev-and-prod",
            ),
            (
                &developer,
                "DELETE",
                "/api/v1/namespaces/prod",
                Deny,
                "no-namespace-deletion",
            ),
            (
                &developer,
                "DELETE",
                "/api/v1/namespaces/dev",
                Deny,
                "no-namespace-deletion",
            ),
            (
                &developer,
                "DELETE",
                "/api/v1/namespaces/dev/pods/web-0",
                Allow,
                "team-dev-and-prod",
            ),
            (
                &developer,
                "DELETE",
                "/api/v1/namespaces/prod/pods/web-0",
                Deny,
                "no-writes-in-prod",
            ),
            (
                &developer,
                "POST",
                "/apis/apps/v1/namespaces/prod/deployments",
                Deny,
                "no-writes-in-prod",
            ),
            (
                &developer,
                "POST",
                "/api/v1/nodes",
                Deny,
                "no-cluster-scoped-writes",
            ),
            (
                &developer,
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/dev/rolebindings",
                Deny,
                "no-rbac-changes",
            ),
            (
                &developer,
                "GET",
                "/api/v1/namespaces/staging/pods",
                Allow,
                "team-read-cluster",
            ),
            (
                &developer,
                "POST",
                "/api/v1/namespaces/staging/pods",
                Deny,
                "<default>",
            ),
            (
                &dba,
                "GET",
                "/api/v1/namespaces/prod/pods/web-0/exec?command=ls",
                Deny,
                "no-exec-in-prod",
            ),
            (
                &dba,
                "PATCH",
                "/api/v1/namespaces/dev/configmaps/x",
                Allow,
                "team-dev-and-prod",
            ),
            (
                &admin,
                "DELETE",
                "/api/v1/namespaces/prod",
                Observe,
                "admins-observed",
            ),
            (
                &admin,
                "POST",
                "/api/v1/namespaces/prod/pods/web-0/exec?command=sh",
                Observe,
                "admins-observed",
            ),
            (
                &stranger,
                "GET",
                "/api/v1/namespaces/dev/pods",
                Deny,
                "<default>",
            ),
        ];
        for (identity, method, path, action, rule) in cases {
            assert_eq!(
                judge(&policy, identity, method, path),
                (*action, rule.to_string()),
                "{} {method} {path}",
                identity.subject
            );
        }
    }

    #[test]
    fn admins_see_unmasked_responses_and_others_masked() {
        let policy = Policy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
        let decoded = decode_request("GET", "/api/v1/namespaces/prod/secrets/s").unwrap();
        let verdict = |identity: &Identity| {
            policy.decide(&Request {
                info: &decoded.info,
                stream: None,
                identity,
            })
        };
        assert!(verdict(&who("developer", "developers")).mask);
        assert!(!verdict(&who("admin", "platform-admins")).mask);
    }

    fn command_policy() -> Policy {
        Policy::from_json(
            br#"{"rules": [
                {"name": "no-shells", "action": "deny",
                 "match": {"resources": ["pods/exec"], "commands": ["sh", "sh *", "bash*", "*/sh", "*/sh *", "tar *"]}},
                {"name": "safe-commands", "action": "allow",
                 "match": {"resources": ["pods/exec"], "commands": ["ls", "ls *", "cat *"]}}
            ]}"#,
        )
        .unwrap()
    }

    #[test]
    fn exec_commands_are_judged_by_argv() {
        let policy = command_policy();
        let anyone = who("developer", "developers");
        let base = "/api/v1/namespaces/prod/pods/web-0/exec?container=app";
        for (query, expected) in [
            ("&command=ls", "safe-commands"),
            ("&command=cat&command=/etc/hostname", "safe-commands"),
            ("&command=sh&command=-c&command=id", "no-shells"),
            ("&command=/bin/sh", "no-shells"),
            ("&command=bash", "no-shells"),
            (
                "&command=tar&command=cf&command=-&command=/data",
                "no-shells",
            ),
            ("&command=id", "<default>"),
            ("", "<default>"),
        ] {
            for method in ["GET", "POST"] {
                assert_eq!(
                    judge(&policy, &anyone, method, &format!("{base}{query}")).1,
                    expected,
                    "{method} {query}"
                );
            }
        }
    }

    #[test]
    fn command_rules_never_match_other_requests() {
        let policy = command_policy();
        let anyone = who("developer", "developers");
        assert_eq!(
            judge(&policy, &anyone, "GET", "/api/v1/namespaces/prod/pods/ls").1,
            "<default>"
        );
    }

    #[test]
    fn resource_rules_skip_non_resource_paths_and_vice_versa() {
        let policy = Policy::from_json(
            br#"{"default": {"action": "allow"}, "rules": [
                {"name": "no-pods", "action": "deny", "match": {"resources": ["pods"]}},
                {"name": "no-metrics", "action": "deny", "match": {"paths": ["/metrics"]}}
            ]}"#,
        )
        .unwrap();
        let anyone = who("x", "y");
        assert_eq!(judge(&policy, &anyone, "GET", "/api/v1/pods").1, "no-pods");
        assert_eq!(judge(&policy, &anyone, "GET", "/metrics").1, "no-metrics");
        assert_eq!(judge(&policy, &anyone, "GET", "/api").1, "<default>");
        assert_eq!(
            judge(&policy, &anyone, "GET", "/api/v1/namespaces/a/pods/p/log").1,
            "<default>",
            "pods does not cover the log subresource"
        );
    }

    #[test]
    fn api_groups_name_the_core_group_core() {
        let policy = Policy::from_json(
            br#"{"rules": [{"name": "core", "action": "allow", "match": {"api_groups": ["core"]}},
                           {"name": "apps", "action": "observe", "match": {"api_groups": ["apps"]}}]}"#,
        )
        .unwrap();
        let anyone = who("x", "y");
        assert_eq!(judge(&policy, &anyone, "GET", "/api/v1/pods").1, "core");
        assert_eq!(
            judge(&policy, &anyone, "GET", "/apis/apps/v1/deployments").1,
            "apps"
        );
    }

    #[test]
    fn configuration_errors_name_their_path() {
        let cases = [
            (
                r#"{"rules": [{"name":"a","action":"allow"},{"name":"b","action":"allow"},
                    {"name":"c","action":"allow","match":{"verbs":["get","lst"]}}]}"#,
                "rules[2].match.verbs[1]: unknown verb \"lst\"",
            ),
            (
                r#"{"rules": [{"name":"a","action":"allow","match":{"namespaces":[""]}}]}"#,
                "rules[0].match.namespaces[0]: pattern must not be empty",
            ),
            (
                r#"{"rules": [{"name":"a","action":"allow","match":{"api_groups":[""]}}]}"#,
                "rules[0].match.api_groups[0]: write the core API group as \"core\"",
            ),
            (
                r#"{"rules": [{"name":"a","action":"allow"},{"name":"a","action":"deny"}]}"#,
                "rules[1].name: duplicate rule name \"a\"",
            ),
            (
                r#"{"rules": [{"name":"a","action":"allow","match":{"paths":["/x"],"resources":["pods"]}}]}"#,
                "rules[0].match.paths: a rule matches either non-resource paths or resources, not both",
            ),
            (
                r#"{"upstream": {"header": {"name": "Impersonate-User", "value": "x"}}}"#,
                "upstream.header.name: impersonation headers are set from the verified caller",
            ),
            (
                r#"{"masking": {"fields": [{"resources": ["configmaps"], "paths": ["data"]},
                    {"resources": ["pods"], "paths": ["spec", "spec..env"]}]}}"#,
                "masking.fields[1].paths[1]: \"spec..env\": each segment is a member name or `*`, optionally followed by `[]`",
            ),
            (
                r#"{"masking": {"fields": [{"resources": [], "paths": ["data"]}]}}"#,
                "masking.fields[0].resources: name at least one resource (`*` for all) or kind",
            ),
            (
                r#"{"masking": {"fields": [{"resources": ["configmaps"], "paths": ["data"]}],
                    "detectors": {"detectors": ["email", "ssn"]}}}"#,
                "masking.detectors.detectors[1]: unknown detector \"ssn\"; expected one of private_key, jwt, aws_access_key, secret_assignment, email, payment_card, iban, us_ssn, phone",
            ),
            (
                r#"{"masking": {"detectors": {}}}"#,
                "masking.detectors: the detectors run over `fields` paths, and none are configured",
            ),
            (
                r#"{"masking": {"mask_text": ""}}"#,
                "masking.mask_text: must be 1 to 256 bytes",
            ),
            (
                r#"{"rules": [{"name":"a","action":"require_approval"}]}"#,
                "rules[0].approval: a require_approval rule must say who approves: {\"approvers\": [\"group\"]}",
            ),
            (
                r#"{"rules": [{"name":"a","action":"require_approval","approval":{"approvers":["admin"],"hold":"1h"}}]}"#,
                "rules[0].approval.hold: must be more than 0s and at most 300s",
            ),
            (
                r#"{"rules": [{"name":"a","action":"allow","approval":{"approvers":["admin"]}}]}"#,
                "rules[0].approval: only a require_approval rule takes approval settings",
            ),
            (
                r#"{"default": {"action": "require_approval"}}"#,
                "default.action: require_approval belongs on a named rule with approval settings",
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(
                Policy::from_json(json.as_bytes()).unwrap_err().to_string(),
                expected
            );
        }
    }

    #[test]
    fn a_require_approval_rule_carries_its_approval_settings() {
        let policy = Policy::from_json(
            br#"{"rules": [{"name":"exec-prod","action":"require_approval",
                "approval":{"approvers":["admin"],"hold":"30s","reason_required":true},
                "match":{"resources":["pods/exec"]}}]}"#,
        )
        .unwrap();
        let requirement = policy.approval_requirement("exec-prod").unwrap();
        assert_eq!(requirement.approvers, ["admin"]);
        assert_eq!(requirement.hold_seconds, 30);
        assert!(requirement.reason_required);
        assert!(policy.approval_requirement("other").is_none());
    }

    #[test]
    fn unknown_fields_are_refused_under_their_rule() {
        let err = Policy::from_json(
            br#"{"rules": [{"name":"a","action":"allow","match":{"verb":["get"]}}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.path, "rules[0].match");
        assert!(err.message.contains("unknown field `verb`"), "{err}");
        let err = Policy::from_json(br#"{"rules": [{"name":"a","action":"permit"}]}"#).unwrap_err();
        assert_eq!(err.path, "rules[0]");
        assert!(Policy::from_json(br#"{"rulez": []}"#).is_err());
    }

    #[test]
    fn empty_configuration_denies_everything() {
        let policy = Policy::from_json(b"{}").unwrap();
        assert!(policy.identity().is_none());
        assert_eq!(
            judge(&policy, &who("x", "y"), "GET", "/api").0,
            Action::Deny
        );
    }

    #[test]
    fn default_policy_identity_section_points_at_the_demo_idp() {
        let policy = Policy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
        let identity = policy.identity().unwrap();
        let issuer = identity.issuers.first().unwrap();
        assert_eq!(issuer.issuer, "https://idp.gatehouse.test");
        assert_eq!(
            issuer.remote_jwks.as_ref().unwrap().cluster,
            "gatehouse_idp"
        );
        assert!(policy.upstream().impersonate);
    }
}
