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

use crate::sql::lexer::{self, Lexed, TokenKind};
use crate::sql::{self, Analysis, Limits, Settings, StatementInfo, StatementKind, encoding};
use config::Rule;
use gatehouse_core::approval::ApprovalRequirement;
use gatehouse_core::config::ConfigError;
use gatehouse_core::identity::Identity;
use gatehouse_core::policy::{Action, Decision};
use serde::Serialize;
use std::sync::Arc;

/// What the policy may match on besides the SQL: who is connected, to what, as whom,
/// and how the server will read the text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionContext {
    pub identity: Identity,
    /// The database named in the startup message.
    pub database: String,
    /// The database role (startup `user`) the session runs as.
    pub role: String,
    pub lexing: Lexing,
}

/// The server state that decides how it lexes the session's next text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexing {
    /// `standard_conforming_strings` as the server last reported it.
    pub standard_conforming_strings: bool,
    /// `client_encoding` as the server last reported it.
    pub client_encoding: String,
    /// A request is still unanswered that may change either setting before the
    /// server reads this text (a client can pipeline `SET …` and the next text in
    /// one write; a function can change them too).
    pub settings_in_flight: bool,
}

impl Lexing {
    /// The settings the server last reported.
    pub fn settings(&self) -> Settings {
        Settings {
            standard_conforming_strings: self.standard_conforming_strings,
        }
    }

    /// Lexes `sql` as the server will, or `None` when that is not certain: a
    /// setting that changes the lexing may change before the server reads the
    /// text, and the text reads differently under the other value.
    pub fn lex(&self, sql: &str) -> Option<Lexed> {
        let encoding_uncertain =
            self.settings_in_flight || !encoding::is_safe_client_encoding(&self.client_encoding);
        if encoding_uncertain && encoding::ambiguous_under_unsafe_encodings(sql.as_bytes()) {
            return None;
        }
        let settings = self.settings();
        let lexed = lexer::tokenize_with(sql, settings);
        // Only backslashes and `U&'` read differently under the other setting.
        if self.settings_in_flight && (sql.contains('\\') || sql.contains("&'")) {
            let other = lexer::tokenize_with(
                sql,
                Settings {
                    standard_conforming_strings: !settings.standard_conforming_strings,
                },
            );
            if !same_reading(sql, &lexed, &other) {
                return None;
            }
        }
        Some(lexed)
    }
}

impl Default for Lexing {
    /// The server defaults, nothing in flight.
    fn default() -> Self {
        Self {
            standard_conforming_strings: true,
            client_encoding: "UTF8".into(),
            settings_in_flight: false,
        }
    }
}

/// Name of the pseudo-rule that refuses a text whose lexing depends on a setting a
/// request in flight may change.
pub const UNCERTAIN_LEXING_RULE: &str = "(uncertain-lexing)";
/// Name of the pseudo-rule that refuses a switch to a client encoding the filter
/// cannot read.
pub const UNSAFE_ENCODING_RULE: &str = "(unsafe-client-encoding)";

fn builtin_denial(rule: &str, message: &str) -> Decision {
    Decision {
        action: Action::Deny,
        rule: Some(rule.to_string()),
        message: Some(message.to_string()),
    }
}

fn uncertain_lexing() -> Decision {
    builtin_denial(
        UNCERTAIN_LEXING_RULE,
        "gatehouse: this text would be read differently if a request still in flight \
         changes standard_conforming_strings or client_encoding; send it after that \
         request's answer",
    )
}

fn unsafe_encoding() -> Decision {
    builtin_denial(
        UNSAFE_ENCODING_RULE,
        "gatehouse: client encodings in which a character can hold a quote or backslash \
         byte (SJIS, BIG5, GBK, GB18030, UHC, JOHAB) are refused; use UTF8",
    )
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
    /// The prepared statements an EXECUTE anywhere in the text runs: the
    /// session refuses one that needs approval (its Binds are checked, an
    /// EXECUTE would not be).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub executes: Vec<String>,
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
        let applicable = self.applicability(ctx);
        match self.lex(ctx, sql) {
            Ok(lexed) => self.judge(&applicable, &sql::analyze_lexed(sql, &lexed, &self.limits)),
            Err(refusal) => refusal,
        }
    }

    /// Lexes `sql` as the server will for the session, or the refusal when that is
    /// not certain: a setting that changes the lexing may change before the server
    /// reads the text, and the text reads differently under the other value.
    pub fn lex(&self, ctx: &SessionContext, sql: &str) -> Result<Lexed, Verdict> {
        if sql.len() > self.limits.max_sql_len {
            // Analysis refuses it whole; no need to lex it.
            return Ok(Lexed {
                error: Some(lexer::LexError {
                    offset: 0,
                    message: "text too long to analyze",
                }),
                ..Lexed::default()
            });
        }
        ctx.lexing
            .lex(sql)
            .ok_or_else(|| Verdict::refused(uncertain_lexing()))
    }

    /// Judges an analysis for a session with the given applicability.
    pub fn judge(&self, applicable: &Applicability, analysis: &Analysis) -> Verdict {
        let mut executes = Vec::new();
        let statements: Vec<StatementVerdict> = analysis
            .statements
            .iter()
            .enumerate()
            .map(|(index, statement)| {
                let walked = statement.walk();
                executes.extend(
                    walked
                        .iter()
                        .filter(|s| s.kind == StatementKind::Execute)
                        .filter_map(|s| s.prepared_name.clone()),
                );
                let decisions = walked.into_iter().map(|s| self.judge_one(applicable, s));
                let decision = strongest(decisions).unwrap_or_else(Decision::allow);
                StatementVerdict {
                    index,
                    kind: statement.kind,
                    prepared_name: statement.prepared_name.clone(),
                    decision: refuse_approval_in_prepare(statement.kind, decision),
                }
            })
            .collect();
        let decision = strongest(statements.iter().map(|s| s.decision.clone()))
            .unwrap_or_else(Decision::allow);
        let blocked_by = decision
            .action
            .blocks()
            .then(|| statements.iter().position(|s| s.decision == decision))
            .flatten();
        Verdict {
            decision,
            blocked_by,
            statements,
            executes,
        }
    }

    /// The first rule matching one statement (not what it runs), else the default.
    fn judge_one(&self, applicable: &Applicability, statement: &StatementInfo) -> Decision {
        if statement.unsafe_client_encoding {
            return unsafe_encoding();
        }
        if statement.unparseable {
            return self.judge_unknown(applicable, statement.kind);
        }
        self.rules
            .iter()
            .enumerate()
            .find(|(i, rule)| applicable.get(*i) && rule_matches(rule, statement))
            .map_or_else(|| self.default.clone(), |(_, rule)| rule.decision.clone())
    }
}

impl PgPolicy {
    /// A statement that could not be analyzed, of `kind` as far as its leading
    /// keywords tell: the rules are tried in order as far as that knowledge
    /// decides them. A rule that cannot match is skipped; one that surely matches
    /// (one that depends only on who is asking, such as an allow-everything rule
    /// for DBAs) decides. Otherwise (a rule that might match, or none left) the
    /// policy's `unparseable` setting decides.
    fn judge_unknown(&self, applicable: &Applicability, kind: StatementKind) -> Decision {
        let kinds = possible_kinds(kind);
        for (i, rule) in self.rules.iter().enumerate() {
            if !applicable.get(i) {
                continue;
            }
            match could_match(rule, &kinds) {
                Some(false) => continue,
                Some(true) => return rule.decision.clone(),
                None => break,
            }
        }
        self.unparseable.clone()
    }
}

/// The kinds an unanalyzed statement led by `kind`'s keywords, and what it runs,
/// can have.
fn possible_kinds(kind: StatementKind) -> Vec<StatementKind> {
    use StatementKind as K;
    match kind {
        K::Other => StatementKind::ALL.iter().map(|(k, _)| *k).collect(),
        K::Select
        | K::Insert
        | K::Update
        | K::Delete
        | K::Merge
        | K::Explain
        | K::Prepare
        | K::Create
        | K::Copy
        | K::Cursor => {
            let mut kinds = vec![
                K::Select,
                K::Insert,
                K::Update,
                K::Delete,
                K::Merge,
                K::Create,
                K::Execute,
                K::Cursor,
            ];
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
            kinds
        }
        other => vec![other],
    }
}

/// Whether a statement of one of `kinds` could have property `name`.
fn property_possible(name: &str, kinds: &[StatementKind]) -> bool {
    use StatementKind as K;
    let any = |of: &[StatementKind]| kinds.iter().any(|k| of.contains(k));
    match name {
        "without_where" => any(&[K::Update, K::Delete, K::Merge, K::Insert]),
        "copy_program" | "copy_server_file" => any(&[K::Copy]),
        "role_change" => any(&[K::Create, K::Alter, K::Drop, K::Grant, K::Revoke, K::Other]),
        "alter_system" => any(&[K::Alter]),
        "drop_database" => any(&[K::Drop]),
        // Anything that can call set_config, or sets a setting.
        _ => !kinds.iter().all(|k| {
            matches!(
                k,
                K::Transaction
                    | K::Listen
                    | K::Unlisten
                    | K::Notify
                    | K::Deallocate
                    | K::Show
                    | K::Discard
                    | K::Lock
                    | K::Truncate
                    | K::Vacuum
                    | K::Analyze
                    | K::Comment
                    | K::Grant
                    | K::Revoke
                    | K::Drop
            )
        }),
    }
}

/// Whether `rule` matches a statement known only to be of one of `kinds`:
/// `Some(false)` if it cannot, `Some(true)` if it surely does, `None` if unknown.
fn could_match(rule: &Rule, kinds: &[StatementKind]) -> Option<bool> {
    let mut certain = true;
    if !rule.kinds.is_empty() {
        if !kinds.iter().any(|k| rule.kinds.contains(k)) {
            return Some(false);
        }
        certain &= kinds.iter().all(|k| rule.kinds.contains(k));
    }
    for (name, want) in &rule.properties {
        let possible = property_possible(name, kinds);
        if *want && !possible {
            return Some(false);
        }
        certain &= !possible;
    }
    certain &= rule.objects.is_empty() && rule.functions.is_empty();
    certain.then_some(true)
}

/// Whether two lexings of `sql` give the server the same statements: the same
/// tokens, the same string values and the same outcome.
fn same_reading(sql: &str, a: &Lexed, b: &Lexed) -> bool {
    a.error.is_some() == b.error.is_some()
        && a.statements == b.statements
        && a.tokens.len() == b.tokens.len()
        && a.tokens.iter().zip(&b.tokens).all(|(x, y)| {
            x.kind == y.kind
                && x.span == y.span
                && (x.kind != TokenKind::String
                    || lexer::string_bytes(sql.as_bytes(), x)
                        == lexer::string_bytes(sql.as_bytes(), y))
        })
}

impl Verdict {
    /// The whole text refused by `decision`, before any statement was told apart.
    fn refused(decision: Decision) -> Self {
        Self {
            decision,
            blocked_by: Some(0),
            statements: Vec::new(),
            executes: Vec::new(),
        }
    }
}

/// The first denial, else the first decision needing approval, else the first
/// observed one, else the first. A denial outranks an approval: approving a text
/// must never run a statement in it that the policy denies.
fn strongest(decisions: impl Iterator<Item = Decision>) -> Option<Decision> {
    let mut first = None;
    let mut gated = None;
    let mut observed = None;
    for decision in decisions {
        match decision.action {
            Action::Deny => return Some(decision),
            Action::RequireApproval if gated.is_none() => gated = Some(decision.clone()),
            Action::Observe if observed.is_none() => observed = Some(decision.clone()),
            _ => {}
        }
        first.get_or_insert(decision);
    }
    gated.or(observed).or(first)
}

/// The message of a refused PREPARE of a statement that needs approval.
pub const PREPARE_NEEDS_APPROVAL: &str = "gatehouse: statements that need approval cannot be \
     prepared with PREPARE; run the statement itself, or prepare it with the protocol's \
     Parse, where each Bind is checked";

/// A PREPARE whose statement needs approval is denied by the same rule: an
/// approval covers one run, and every later EXECUTE would run it unchecked.
fn refuse_approval_in_prepare(kind: StatementKind, decision: Decision) -> Decision {
    if kind != StatementKind::Prepare || decision.action != Action::RequireApproval {
        return decision;
    }
    Decision {
        action: Action::Deny,
        rule: decision.rule,
        message: Some(PREPARE_NEEDS_APPROVAL.to_string()),
    }
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
