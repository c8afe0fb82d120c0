//! Judging requests: the first of the configured rules (see [`crate::config`])
//! that matches a request decides it, else the default does. Exec, attach and
//! port-forward are judged as verb `create`, whatever the HTTP method, so one
//! rule covers both the WebSocket and the SPDY attempt.

use crate::config::{Config, RequestMatch};
use crate::exec::{StreamRequest, authorization_verb};
use crate::recording::RecordingConfig;
use crate::request_info::RequestInfo;
use gatehouse_core::approval::{ApprovalRequirement, ApprovalServiceConfig};
use gatehouse_core::config::ConfigError;
use gatehouse_core::identity::{Identity, IdentityConfig};
use gatehouse_core::policy::{Action, Decision, Wildcard};
use gatehouse_core::record::FilterMode;
use std::sync::Arc;

// The configuration types live in `crate::config`; re-exported here where
// they used to be.
pub use crate::config::{MAX_RULES, MaskingConfig, Scope, UpstreamConfig, UpstreamHeader};

impl RequestMatch {
    /// Whether `request` is one this rule covers.
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

/// The Kubernetes filter's configuration, ready to judge requests.
#[derive(Debug, Clone)]
pub struct Policy {
    config: Config,
}

impl Policy {
    /// Parses and checks a configuration document; errors name the JSON path,
    /// e.g. `rules[2].match.verbs[0]: unknown verb "lst"`.
    pub fn from_json(json: &[u8]) -> Result<Policy, ConfigError> {
        Config::from_json(json).map(|config| Policy { config })
    }

    /// `enforce` (the default) or `shadow`: observe only (see [`crate::gate`]).
    pub fn mode(&self) -> FilterMode {
        self.config.mode
    }

    /// The configured policy version, if any.
    pub fn version(&self) -> Option<&str> {
        self.config.version.as_deref()
    }

    /// The trusted token issuers (`None`: every request is refused as unauthenticated).
    pub fn identity(&self) -> Option<&IdentityConfig> {
        self.config.identity.as_ref()
    }

    /// What goes upstream instead of the caller's credential.
    pub fn upstream(&self) -> &UpstreamConfig {
        &self.config.upstream
    }

    /// Masking settings.
    pub fn masking(&self) -> &MaskingConfig {
        &self.config.masking
    }

    /// The approval service, when configured: without it `require_approval`
    /// refuses like `deny`.
    pub fn approval_service(&self) -> Option<&ApprovalServiceConfig> {
        self.config.approvals.as_ref()
    }

    /// The approval settings of the `require_approval` rule named `rule`.
    pub fn approval_requirement(&self, rule: &str) -> Option<&Arc<ApprovalRequirement>> {
        self.config
            .rules
            .iter()
            .find(|r| r.name == rule)
            .and_then(|r| r.approval.as_ref())
    }

    /// Judges a request: the first matching rule, else the default.
    pub fn decide(&self, request: &Request<'_>) -> Verdict {
        for rule in &self.config.rules {
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
            decision: self.config.default.clone(),
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
        self.config.rules.iter().filter_map(move |rule| {
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
