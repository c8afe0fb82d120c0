//! The Postgres policy: which statements an identity may run against a database.
//!
//! A policy is a JSON document (see `examples/postgres-policy.md`) compiled once into
//! an immutable [`PgPolicy`]. [`PgPolicy::decide`] analyzes a Query or Parse text and
//! judges every statement in it (and every statement those run: EXPLAIN ANALYZE
//! bodies, PREPARE bodies, data-modifying CTEs) against the rules in order; the first
//! rule that matches decides, else the policy's default. One blocking statement
//! blocks the whole text. [`PolicyCache`] memoizes decisions per statement shape.

mod cache;
mod config;

pub use cache::PolicyCache;
pub use config::UNPARSEABLE_RULE;

use crate::sql::{self, Analysis, Limits, StatementInfo, StatementKind};
use config::Rule;
use gatehouse_core::approval::ApprovalRequirement;
use gatehouse_core::config::ConfigError;
use gatehouse_core::identity::Identity;
use gatehouse_core::policy::{Action, Decision};
use serde::Serialize;
use std::sync::Arc;

/// What the policy may match on besides the SQL: who is connected, to what, as whom.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionContext {
    pub identity: Identity,
    /// The database named in the startup message.
    pub database: String,
    /// The database role (startup `user`) the session runs as.
    pub role: String,
}

/// The decision about one statement of a text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementVerdict {
    /// Position of the statement in the text (0-based).
    pub index: usize,
    pub kind: StatementKind,
    /// For PREPARE, EXECUTE and DEALLOCATE: the prepared statement's name, so the
    /// caller can record "executes prepared X" (PREPARE bodies are judged when
    /// prepared, so an EXECUTE only ever runs an allowed body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared_name: Option<String>,
    pub decision: Decision,
}

/// The decision about a whole Query or Parse text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// What to do with the text: the first blocking statement's decision, else the
    /// first observed one, else the first statement's (allow). An empty text is
    /// allowed with no rule.
    pub decision: Decision,
    /// Index of the statement that blocks the text, if one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<usize>,
    pub statements: Vec<StatementVerdict>,
}

/// A compiled, immutable Postgres policy.
#[derive(Debug)]
pub struct PgPolicy {
    version: String,
    fingerprint: u64,
    default: Decision,
    unparseable: Decision,
    rules: Vec<Rule>,
    limits: Limits,
}

/// FNV-1a: a stable identity for a policy document (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Which rules' context part (identity, database, role) matches a session: a bit per
/// rule. Two sessions with the same applicability are judged identically for any SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Applicability(Vec<u64>);

impl Applicability {
    fn get(&self, i: usize) -> bool {
        self.0
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// Appends a compact textual form (for cache keys).
    fn write_key(&self, out: &mut String) {
        for word in &self.0 {
            out.push_str(&format!("{word:x}."));
        }
    }
}

impl PgPolicy {
    /// Parses and compiles a policy document with default analysis limits.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        Self::from_json_with_limits(json, Limits::default())
    }

    /// Parses and compiles a policy document.
    pub fn from_json_with_limits(json: &[u8], limits: Limits) -> Result<Self, ConfigError> {
        let compiled = config::compile(json)?;
        let fingerprint = fnv1a(json);
        Ok(Self {
            version: compiled
                .version
                .unwrap_or_else(|| format!("{fingerprint:016x}")),
            fingerprint,
            default: compiled.default,
            unparseable: compiled.unparseable,
            rules: compiled.rules,
            limits,
        })
    }

    /// The document's `version`, or a hash of the document when it has none; stamped
    /// on records.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Distinguishes policy documents (caches drop their entries when it changes).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The approval settings of the `require_approval` rule named `rule`.
    pub fn approval_requirement(&self, rule: &str) -> Option<&Arc<ApprovalRequirement>> {
        self.rules
            .iter()
            .find(|r| r.decision.rule.as_deref() == Some(rule))
            .and_then(|r| r.approval.as_ref())
    }

    /// Which rules apply to the session at all.
    pub fn applicability(&self, ctx: &SessionContext) -> Applicability {
        let mut bits = vec![0u64; self.rules.len().div_ceil(64)];
        for (i, rule) in self.rules.iter().enumerate() {
            let any = |patterns: &[gatehouse_core::policy::Wildcard], value: &str| {
                patterns.is_empty() || patterns.iter().any(|p| p.matches(value))
            };
            if rule.identity.matches(&ctx.identity)
                && any(&rule.databases, &ctx.database)
                && any(&rule.roles, &ctx.role)
                && let Some(word) = bits.get_mut(i / 64)
            {
                *word |= 1u64 << (i % 64);
            }
        }
        Applicability(bits)
    }

    /// Analyzes `sql` and judges it for the session (no caching; see [`PolicyCache`]).
    pub fn decide(&self, ctx: &SessionContext, sql: &str) -> Verdict {
        let analysis = sql::analyze(sql, &self.limits);
        self.judge(&self.applicability(ctx), &analysis)
    }

    /// Judges an analysis for a session with the given applicability.
    pub fn judge(&self, applicable: &Applicability, analysis: &Analysis) -> Verdict {
        let statements: Vec<StatementVerdict> = analysis
            .statements
            .iter()
            .enumerate()
            .map(|(index, statement)| {
                let decisions = statement
                    .walk()
                    .into_iter()
                    .map(|s| self.judge_one(applicable, s));
                StatementVerdict {
                    index,
                    kind: statement.kind,
                    prepared_name: statement.prepared_name.clone(),
                    decision: strongest(decisions).unwrap_or_else(Decision::allow),
                }
            })
            .collect();
        let blocked_by = statements.iter().position(|s| s.decision.action.blocks());
        let decision = strongest(statements.iter().map(|s| s.decision.clone()))
            .unwrap_or_else(Decision::allow);
        Verdict {
            decision,
            blocked_by,
            statements,
        }
    }

    /// The first rule matching one statement (not what it runs), else the default.
    fn judge_one(&self, applicable: &Applicability, statement: &StatementInfo) -> Decision {
        if statement.unparseable {
            return self.unparseable.clone();
        }
        self.rules
            .iter()
            .enumerate()
            .find(|(i, rule)| applicable.get(*i) && rule_matches(rule, statement))
            .map_or_else(|| self.default.clone(), |(_, rule)| rule.decision.clone())
    }
}

/// The first blocking decision, else the first observed one, else the first.
fn strongest(decisions: impl Iterator<Item = Decision>) -> Option<Decision> {
    let mut first = None;
    let mut observed = None;
    for decision in decisions {
        if decision.action.blocks() {
            return Some(decision);
        }
        if observed.is_none() && decision.action == Action::Observe {
            observed = Some(decision.clone());
        }
        first.get_or_insert(decision);
    }
    observed.or(first)
}

fn rule_matches(rule: &Rule, s: &StatementInfo) -> bool {
    (rule.kinds.is_empty() || rule.kinds.contains(&s.kind))
        && (rule.objects.is_empty()
            || s.objects.iter().any(|o| {
                rule.objects.iter().any(|(pattern, access)| {
                    access.is_none_or(|a| a == o.access)
                        && pattern.matches(o.schema.as_deref(), &o.name)
                })
            }))
        && (rule.functions.is_empty()
            || s.functions
                .iter()
                .any(|f| rule.functions.iter().any(|p| p.matches(f))))
        && rule
            .properties
            .iter()
            .all(|(name, want)| s.properties.get(name) == Some(*want))
}

#[cfg(test)]
mod tests;
