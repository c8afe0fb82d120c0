//! The Postgres policy document (JSON) and its compilation into matchers.
//!
//! Each level is deserialized on its own so that every error names its JSON path,
//! e.g. `rules[2].match.kinds[0]: unknown statement kind "selct"`.

use crate::sql::{Access, StatementKind};
use gatehouse_core::approval::{ApprovalRequirement, Holding, rule_requirement};
use gatehouse_core::config::ConfigError;
use gatehouse_core::policy::{
    Action, Decision, IdentityMatch, OneOrMany, Wildcard, compile_wildcards,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    default: Option<Value>,
    #[serde(default)]
    unparseable: Option<Value>,
    #[serde(default)]
    rules: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeDoc {
    action: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    name: String,
    action: String,
    #[serde(default)]
    message: Option<String>,
    /// Settings of a `require_approval` rule (see [`ApprovalRequirement`]).
    #[serde(default)]
    approval: Option<Value>,
    #[serde(rename = "match", default)]
    matches: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MatchDoc {
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    claims: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    databases: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default)]
    reads: Vec<String>,
    #[serde(default)]
    writes: Vec<String>,
    #[serde(default)]
    objects: Vec<String>,
    #[serde(default)]
    functions: Vec<String>,
    #[serde(default)]
    properties: BTreeMap<String, bool>,
}

/// A table pattern: `schema.table`, or `table` for any schema; `*` wildcards in each.
#[derive(Debug, Clone)]
pub(crate) struct ObjectPattern {
    schema: Option<Wildcard>,
    name: Wildcard,
}

impl ObjectPattern {
    fn new(pattern: &str) -> Result<Self, ConfigError> {
        match pattern.split_once('.') {
            Some((schema, name)) => Ok(Self {
                schema: Some(Wildcard::new(schema)?),
                name: Wildcard::new(name)?,
            }),
            None => Ok(Self {
                schema: None,
                name: Wildcard::new(pattern)?,
            }),
        }
    }

    /// An unqualified table in the SQL could live in any schema on the search_path,
    /// so it matches whatever schema the pattern names.
    pub(crate) fn matches(&self, schema: Option<&str>, name: &str) -> bool {
        let schema_ok = match (&self.schema, schema) {
            (Some(pattern), Some(schema)) => pattern.matches(schema),
            _ => true,
        };
        schema_ok && self.name.matches(name)
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub decision: Decision,
    pub identity: IdentityMatch,
    pub databases: Vec<Wildcard>,
    pub roles: Vec<Wildcard>,
    pub kinds: Vec<StatementKind>,
    /// (pattern, access it applies to; `None` for either).
    pub objects: Vec<(ObjectPattern, Option<Access>)>,
    pub functions: Vec<Wildcard>,
    pub properties: Vec<(&'static str, bool)>,
    /// Who approves what this rule covers, when its action is `require_approval`.
    pub approval: Option<Arc<ApprovalRequirement>>,
}

/// The compiled document.
pub(crate) struct Compiled {
    pub version: Option<String>,
    pub default: Decision,
    pub unparseable: Decision,
    pub rules: Vec<Rule>,
}

/// Name of the pseudo-rule that decides statements that could not be analyzed.
pub const UNPARSEABLE_RULE: &str = "(unparseable)";

fn from_value<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, ConfigError> {
    T::deserialize(value).map_err(|e| ConfigError::new(path, e.to_string()))
}

fn parse_action(action: &str, path: &str) -> Result<Action, ConfigError> {
    match action {
        "allow" => Ok(Action::Allow),
        "deny" => Ok(Action::Deny),
        "observe" => Ok(Action::Observe),
        "require_approval" => Ok(Action::RequireApproval),
        other => Err(ConfigError::new(
            path,
            format!(
                "unknown action \"{other}\" (expected allow, deny, observe or require_approval)"
            ),
        )),
    }
}

fn default_message(action: Action, rule: Option<&str>) -> Option<String> {
    if !action.blocks() {
        return None;
    }
    Some(match (action, rule) {
        (Action::RequireApproval, _) => "statement requires approval by gatehouse policy".into(),
        (_, Some(rule)) => format!("statement denied by gatehouse policy rule \"{rule}\""),
        (_, None) => "statement denied by gatehouse policy".into(),
    })
}

fn outcome(value: Option<Value>, path: &str, rule: Option<&str>) -> Result<Decision, ConfigError> {
    let Some(value) = value else {
        return Ok(Decision {
            action: Action::Deny,
            rule: rule.map(str::to_string),
            message: default_message(Action::Deny, rule),
        });
    };
    let doc: OutcomeDoc = from_value(value, path)?;
    let action = parse_action(&doc.action, &format!("{path}.action"))?;
    if action == Action::RequireApproval {
        return Err(ConfigError::new(
            format!("{path}.action"),
            "require_approval belongs on a named rule with approval settings",
        ));
    }
    Ok(Decision {
        action,
        rule: rule.map(str::to_string),
        message: doc.message.or_else(|| default_message(action, rule)),
    })
}

fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parses and validates a policy document.
pub(crate) fn compile(json: &[u8]) -> Result<Compiled, ConfigError> {
    let doc: PolicyDoc = ConfigError::parse_json(json)?;
    let default = outcome(doc.default, "default", None)?;
    let unparseable = outcome(doc.unparseable, "unparseable", Some(UNPARSEABLE_RULE))?;
    let mut rules: Vec<Rule> = Vec::with_capacity(doc.rules.len());
    for (i, value) in doc.rules.into_iter().enumerate() {
        let path = format!("rules[{i}]");
        let rule = compile_rule(value, &path)?;
        if rules.iter().any(|r| r.decision.rule == rule.decision.rule) {
            let name = rule.decision.rule.unwrap_or_default();
            return Err(ConfigError::new(
                format!("{path}.name"),
                format!("duplicate rule name \"{name}\""),
            ));
        }
        rules.push(rule);
    }
    Ok(Compiled {
        version: doc.version,
        default,
        unparseable,
        rules,
    })
}

fn compile_rule(value: Value, path: &str) -> Result<Rule, ConfigError> {
    let doc: RuleDoc = from_value(value, path)?;
    if !valid_rule_name(&doc.name) {
        return Err(ConfigError::new(
            format!("{path}.name"),
            format!(
                "invalid rule name \"{}\" (use 1-128 letters, digits, '-', '_' or '.')",
                doc.name
            ),
        ));
    }
    let action = parse_action(&doc.action, &format!("{path}.action"))?;
    // `hold` is read in every build; only a build that can answer a held
    // statement later (the native one) holds, the Wasm build refuses at once.
    let approval = rule_requirement(
        action == Action::RequireApproval,
        doc.approval,
        Holding::Allowed,
    )
    .map_err(|e| e.under(path))?
    .map(Arc::new);
    let decision = Decision {
        action,
        message: doc
            .message
            .or_else(|| default_message(action, Some(&doc.name))),
        rule: Some(doc.name),
    };
    let match_path = format!("{path}.match");
    let m: MatchDoc = match doc.matches {
        Some(value) => from_value(value, &match_path)?,
        None => MatchDoc::default(),
    };
    let under = |e: ConfigError| e.under(&match_path);
    let identity = IdentityMatch::new(&m.subjects, &m.groups, &m.claims).map_err(under)?;
    let kinds = m
        .kinds
        .iter()
        .enumerate()
        .map(|(i, name)| {
            StatementKind::from_name(name).ok_or_else(|| {
                ConfigError::new(
                    format!("{match_path}.kinds[{i}]"),
                    format!("unknown statement kind \"{name}\""),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let mut objects = Vec::new();
    for (field, access) in [
        ("reads", Some(Access::Read)),
        ("writes", Some(Access::Write)),
        ("objects", None),
    ] {
        let patterns = match field {
            "reads" => &m.reads,
            "writes" => &m.writes,
            _ => &m.objects,
        };
        for (i, pattern) in patterns.iter().enumerate() {
            let p = ObjectPattern::new(pattern)
                .map_err(|e| e.under(&format!("{match_path}.{field}[{i}]")))?;
            objects.push((p, access));
        }
    }
    let properties = m
        .properties
        .iter()
        .map(|(name, value)| {
            crate::sql::Properties::NAMES
                .iter()
                .find(|n| **n == name.as_str())
                .map(|n| (*n, *value))
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("{match_path}.properties.{name}"),
                        format!(
                            "unknown property \"{name}\" (expected one of {})",
                            crate::sql::Properties::NAMES.join(", ")
                        ),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(Rule {
        decision,
        identity,
        databases: compile_wildcards("databases", &m.databases).map_err(under)?,
        roles: compile_wildcards("roles", &m.roles).map_err(under)?,
        kinds,
        objects,
        functions: compile_wildcards("functions", &m.functions).map_err(under)?,
        properties,
        approval,
    })
}
