//! The Kubernetes filter's configuration: who may do what to which objects,
//! what the gateway sends upstream, and what is masked. Every section is
//! parsed and checked here, once; [`crate::policy`] judges requests against
//! the rules and [`crate::masking`] applies the masking section, and neither
//! needs the other.
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
//! Rules are tried in order ([`crate::policy::Policy::decide`]) and the first
//! that matches decides; when none does, `default` does. Within a `match`,
//! every listed field must match and any pattern of a field may match (`*` is
//! a wildcard).

mod masking;
mod rules;
mod upstream;

pub use masking::{
    FieldMasking, FieldPath, MAX_FIELD_RULES, MAX_PATH_BYTES, MAX_PATH_SEGMENTS,
    MAX_PATHS_PER_RULE, MaskingConfig,
};
pub(crate) use masking::{FieldRule, Segment};
pub use rules::{MAX_RULES, Scope};
pub(crate) use rules::{RequestMatch, RuleConfig};
pub use upstream::{UpstreamConfig, UpstreamHeader};

use gatehouse_core::approval::ApprovalServiceConfig;
use gatehouse_core::config::ConfigError;
use gatehouse_core::identity::IdentityConfig;
use gatehouse_core::policy::{Action, Decision};
use gatehouse_core::record::FilterMode;
use masking::MaskingDocument;
use serde::Deserialize;
use serde_json::Value;

/// The document as written; compiled into [`Config`].
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

/// The filter's configuration, parsed and checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) version: Option<String>,
    pub(crate) identity: Option<IdentityConfig>,
    /// What decides when no rule matches.
    pub(crate) default: Decision,
    /// In policy order: the first that matches decides.
    pub(crate) rules: Vec<RuleConfig>,
    pub(crate) upstream: UpstreamConfig,
    pub(crate) masking: MaskingConfig,
    pub(crate) mode: FilterMode,
    pub(crate) approvals: Option<ApprovalServiceConfig>,
}

impl Config {
    /// Parses and checks a configuration document; errors name the JSON path,
    /// e.g. `rules[2].match.verbs[0]: unknown verb "lst"`.
    pub fn from_json(json: &[u8]) -> Result<Config, ConfigError> {
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
            .map(|(i, value)| {
                RuleConfig::compile(value).map_err(|e| e.under(&format!("rules[{i}]")))
            })
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
        doc.upstream.check()?;
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
        Ok(Config {
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
}

/// A `#[serde(default)]` for settings that are on unless turned off.
fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

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
                Config::from_json(json.as_bytes()).unwrap_err().to_string(),
                expected
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused_under_their_rule() {
        let err = Config::from_json(
            br#"{"rules": [{"name":"a","action":"allow","match":{"verb":["get"]}}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.path, "rules[0].match");
        assert!(err.message.contains("unknown field `verb`"), "{err}");
        let err = Config::from_json(br#"{"rules": [{"name":"a","action":"permit"}]}"#).unwrap_err();
        assert_eq!(err.path, "rules[0]");
        assert!(Config::from_json(br#"{"rulez": []}"#).is_err());
    }
}
