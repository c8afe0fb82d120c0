//! The `rules` section: what each rule matches, and what it decides.

use crate::recording::RecordingConfig;
use gatehouse_core::approval::{ApprovalRequirement, Holding, rule_requirement};
use gatehouse_core::config::ConfigError;
use gatehouse_core::policy::{Action, IdentityMatch, OneOrMany, Wildcard, compile_wildcards};
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDocument {
    name: String,
    action: Action,
    #[serde(default)]
    message: Option<String>,
    /// Whether responses to requests this rule lets through are masked.
    #[serde(default = "super::yes")]
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

/// One compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct RuleConfig {
    pub(crate) name: String,
    pub(crate) action: Action,
    pub(crate) message: Option<String>,
    pub(crate) mask: bool,
    pub(crate) matcher: RequestMatch,
    /// Who approves what this rule covers, when its action is `require_approval`.
    pub(crate) approval: Option<Arc<ApprovalRequirement>>,
    pub(crate) recording: Option<Arc<RecordingConfig>>,
}

/// The request part of a rule's match.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestMatch {
    pub(crate) identity: IdentityMatch,
    pub(crate) verbs: Vec<String>,
    pub(crate) api_groups: Vec<Wildcard>,
    pub(crate) resources: Vec<Wildcard>,
    pub(crate) namespaces: Vec<Wildcard>,
    pub(crate) names: Vec<Wildcard>,
    pub(crate) scope: Option<Scope>,
    pub(crate) commands: Vec<Wildcard>,
    pub(crate) paths: Vec<Wildcard>,
}

impl RequestMatch {
    /// Whether the rule only concerns resource requests.
    pub(crate) fn needs_resource(&self) -> bool {
        !self.api_groups.is_empty()
            || !self.resources.is_empty()
            || !self.namespaces.is_empty()
            || !self.names.is_empty()
            || self.scope.is_some()
            || !self.commands.is_empty()
    }
}

impl RuleConfig {
    pub(crate) fn compile(value: Value) -> Result<RuleConfig, ConfigError> {
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
        Ok(RuleConfig {
            name: doc.name,
            action: doc.action,
            message: doc.message,
            mask: doc.mask,
            matcher,
            approval,
            recording,
        })
    }
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
