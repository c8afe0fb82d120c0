//! What a policy can decide, shared by every filter.

use crate::config::ConfigError;
use crate::identity::Identity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The action a matching rule (or the default) takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let it through.
    Allow,
    /// Refuse it with the rule's message; the session or client carries on.
    Deny,
    /// Let it through but record what the rule would have done (shadow mode).
    Observe,
    /// Needs a human's approval first; until approvals exist this refuses like
    /// `Deny`, with a distinct reason in the record.
    RequireApproval,
}

impl Action {
    /// Whether the request is stopped.
    pub fn blocks(self) -> bool {
        matches!(self, Action::Deny | Action::RequireApproval)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Observe => "observe",
            Action::RequireApproval => "require_approval",
        }
    }
}

/// The outcome of judging one statement or request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub action: Action,
    /// Name of the rule that decided; `None` when the policy's default did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Message shown to the client when the action blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Decision {
    /// Allowed with no policy involved (the engine's behaviour before policy is loaded).
    pub fn allow() -> Self {
        Self {
            action: Action::Allow,
            rule: None,
            message: None,
        }
    }
}

/// A name pattern from a policy: `*` matches any run of characters (including none),
/// everything else matches itself. `"*"` matches every name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wildcard {
    pattern: String,
}

impl Wildcard {
    /// Compiles `pattern`; an empty pattern is an error (it would match only the
    /// empty name, which is never what was meant).
    pub fn new(pattern: &str) -> Result<Self, ConfigError> {
        if pattern.is_empty() {
            return Err(ConfigError::new("", "pattern must not be empty"));
        }
        Ok(Self {
            pattern: pattern.to_string(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `name` matches: linear-time greedy matching with one backtrack point,
    /// so hostile names cannot make it slow.
    pub fn matches(&self, name: &str) -> bool {
        let (p, s) = (self.pattern.as_bytes(), name.as_bytes());
        let (mut pi, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            match p.get(pi) {
                Some(b'*') => {
                    star = Some((pi, si));
                    pi += 1;
                }
                Some(c) if Some(c) == s.get(si) => {
                    pi += 1;
                    si += 1;
                }
                _ => match star {
                    Some((star_pi, star_si)) => {
                        pi = star_pi + 1;
                        si = star_si + 1;
                        star = Some((star_pi, star_si + 1));
                    }
                    None => return false,
                },
            }
        }
        p.get(pi..)
            .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
    }
}

/// Compiles a list of patterns, naming the bad one by `field[index]`.
pub fn compile_wildcards(field: &str, patterns: &[String]) -> Result<Vec<Wildcard>, ConfigError> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| Wildcard::new(p).map_err(|e| e.under(&format!("{field}[{i}]"))))
        .collect()
}

/// One string or a list of strings in a policy document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// An identity match as written in a configuration: `{"subjects": […],
/// "groups": […], "claims": {"name": "value" or […]}}`, every part optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityMatchDoc {
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub claims: BTreeMap<String, OneOrMany>,
}

impl IdentityMatchDoc {
    /// Compiles it; errors are relative to the match object (e.g. `groups[1]`).
    pub fn compile(&self) -> Result<IdentityMatch, ConfigError> {
        IdentityMatch::new(&self.subjects, &self.groups, &self.claims)
    }
}

/// The identity part of a rule, shared by every filter's policy: who the rule is for.
///
/// Each listed part must match (subjects AND groups AND every claim); inside a part
/// any pattern may match. An empty part places no constraint, so the default matches
/// every caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityMatch {
    subjects: Vec<Wildcard>,
    groups: Vec<Wildcard>,
    claims: Vec<(String, Vec<Wildcard>)>,
}

impl IdentityMatch {
    /// Compiles the `subjects`, `groups` and `claims` fields of a rule's match;
    /// errors are relative to the match object (e.g. `groups[1]`).
    pub fn new(
        subjects: &[String],
        groups: &[String],
        claims: &BTreeMap<String, OneOrMany>,
    ) -> Result<Self, ConfigError> {
        let claims = claims
            .iter()
            .map(|(name, values)| {
                compile_wildcards(&format!("claims.{name}"), values.as_slice())
                    .map(|patterns| (name.clone(), patterns))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            subjects: compile_wildcards("subjects", subjects)?,
            groups: compile_wildcards("groups", groups)?,
            claims,
        })
    }

    /// Whether the rule places no constraint on the caller.
    pub fn is_any(&self) -> bool {
        self.subjects.is_empty() && self.groups.is_empty() && self.claims.is_empty()
    }

    /// Whether `identity` is one of the callers this matches.
    pub fn matches(&self, identity: &Identity) -> bool {
        let any = |patterns: &[Wildcard], value: &str| patterns.iter().any(|p| p.matches(value));
        (self.subjects.is_empty() || any(&self.subjects, &identity.subject))
            && (self.groups.is_empty() || identity.groups.iter().any(|g| any(&self.groups, g)))
            && self.claims.iter().all(|(name, patterns)| {
                identity
                    .claims
                    .get(name)
                    .is_some_and(|value| claim_matches(value, patterns))
            })
    }
}

/// A claim matches when it is (or, for an array, contains) a scalar whose text
/// matches one of the patterns.
fn claim_matches(value: &serde_json::Value, patterns: &[Wildcard]) -> bool {
    use serde_json::Value;
    let scalar = |v: &Value| match v {
        Value::String(s) => patterns.iter().any(|p| p.matches(s)),
        Value::Bool(_) | Value::Number(_) => {
            let text = v.to_string();
            patterns.iter().any(|p| p.matches(&text))
        }
        _ => false,
    };
    match value {
        Value::Array(items) => items.iter().any(scalar),
        other => scalar(other),
    }
}

#[cfg(test)]
mod identity_match_tests {
    use super::*;

    fn groups(names: &[&str]) -> Identity {
        Identity {
            subject: "alice".into(),
            groups: names.iter().map(|s| s.to_string()).collect(),
            ..Identity::default()
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wildcard_matches_runs_anywhere() {
        let w = Wildcard::new("pg_*_file").unwrap();
        assert!(w.matches("pg_read_file"));
        assert!(w.matches("pg_read_binary_file"));
        assert!(!w.matches("pg_read_file2"));
        assert!(Wildcard::new("*").unwrap().matches(""));
        assert!(Wildcard::new("a*b*c").unwrap().matches("aXbYbZc"));
        assert!(!Wildcard::new("abc").unwrap().matches("ab"));
    }

    #[test]
    fn empty_match_is_everyone() {
        let m = IdentityMatch::new(&[], &[], &BTreeMap::new()).unwrap();
        assert!(m.is_any());
        assert!(m.matches(&Identity::claimed("anyone")));
    }

    #[test]
    fn all_parts_must_match_and_any_pattern_within_a_part() {
        let mut claims = BTreeMap::new();
        claims.insert("team".to_string(), OneOrMany::One("pay*".to_string()));
        let m =
            IdentityMatch::new(&strings(&["ali*"]), &strings(&["dev", "ops"]), &claims).unwrap();
        let mut who = groups(&["ops"]);
        assert!(!m.matches(&who), "claim missing");
        who.claims
            .insert("team".into(), serde_json::json!(["search", "payments"]));
        assert!(m.matches(&who));
        who.subject = "bob".into();
        assert!(!m.matches(&who), "subject does not match");
    }

    #[test]
    fn empty_pattern_is_named_by_path() {
        let err = IdentityMatch::new(&[], &strings(&["dev", ""]), &BTreeMap::new()).unwrap_err();
        assert_eq!(err.to_string(), "groups[1]: pattern must not be empty");
    }
}
