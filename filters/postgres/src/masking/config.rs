//! The `masking` part of the filter configuration and its compiled form.
//!
//! ```json
//! {
//!   "rules": [
//!     {"name": "customer-email", "table": "shop.customers", "column": "email",
//!      "style": "partial", "kind": "email"},
//!     {"name": "any-ssn", "column_pattern": "*ssn*", "style": "redact"}
//!   ],
//!   "masker": {"detectors": ["email", "payment_card"], "redact_token": "****"},
//!   "exempt": {"groups": ["dba", "platform-admins"]}
//! }
//! ```
//!
//! - `rules`: column rules. `table` (`schema.table`, or a bare table name for
//!   schema `public`) with `column` matches the column wherever a result carries
//!   it, by table OID and attribute number, so aliases (`SELECT ssn AS x`) and
//!   columns of views selecting it unchanged are matched too; `column_pattern`
//!   (a `*` wildcard) matches result field names. `style` is a mask style
//!   (`redact`, `redact_keep_length`, `partial`, `hash`, `null`); `kind` (a
//!   detector name) shapes `partial` and `hash` (`email` keeps the first
//!   character and the domain). `name` appears in records; it defaults to
//!   `table.column` or the pattern.
//! - `masker`: the detectors run on every other text value and the style
//!   settings shared with the rules (core `MaskConfig`: `detectors`, `styles`,
//!   `default_style`, `redact_token`, `partial_keep_last`, `hash_key`,
//!   `max_scan_bytes`, `over_cap`). Absent: every detector, `redact`.
//! - `exempt`: identities (`subjects`, `groups`, `claims`, wildcards) that see
//!   values clear; their records still count what would have been masked.
//! - `lineage`: what happens to result columns computed from masked columns
//!   (`derived`) and to those computed by something the filter cannot follow,
//!   such as a function whose body it cannot see (`opaque`): `"mask"` (the
//!   default) masks the value whole, `"refuse"` refuses the statement. Masked
//!   values written where they would not be masked are always refused (see
//!   [`crate::sql::lineage`]).
//! - `limits`: result-size guardrails per identity (see [`ResultLimit`]).
//! - `records`: `"mask"` (the default) masks statement texts, parameters and
//!   error messages before records are written; `"clear"` records them as
//!   they came.

use gatehouse_core::config::ConfigError;
use gatehouse_core::identity::Identity;
use gatehouse_core::mask::{
    DetectorKind, MaskConfig, MaskStyle, Masker, OverCapPolicy, detector_named, style_named,
};
use gatehouse_core::policy::{IdentityMatch, IdentityMatchDoc, Wildcard};
use serde::Deserialize;

/// Most column rules one configuration may hold (the catalog lookup names each).
pub const MAX_RULES: usize = 256;
/// Longest schema, table or column name (Postgres's NAMEDATALEN - 1).
const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMasking {
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    masker: Option<MaskConfig>,
    #[serde(default)]
    exempt: Option<IdentityMatchDoc>,
    #[serde(default)]
    lineage: Option<RawLineage>,
    #[serde(default)]
    limits: Vec<RawLimit>,
    #[serde(default)]
    records: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLineage {
    #[serde(default)]
    derived: Option<String>,
    #[serde(default)]
    opaque: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    #[serde(rename = "match")]
    matches: IdentityMatchDoc,
    #[serde(default)]
    max_rows: Option<u64>,
    #[serde(default)]
    max_bytes: Option<u64>,
    #[serde(default)]
    past_limit: Option<String>,
}

/// What lineage does with a result column it finds tainted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineageAction {
    /// Mask the value whole.
    #[default]
    Mask,
    /// Refuse the statement before it runs.
    Refuse,
}

/// What happens to the rest of a result past a [`ResultLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PastLimit {
    /// The statement ends with an error (SQLSTATE 54000).
    #[default]
    Error,
    /// The rest of the rows is withheld; a NoticeResponse says so.
    Truncate,
}

/// A result-size guardrail: the identities it applies to, at most this many
/// rows and bytes of rows per statement.
#[derive(Debug, Clone)]
pub struct ResultLimit {
    pub matches: IdentityMatch,
    pub max_rows: Option<u64>,
    pub max_bytes: Option<u64>,
    pub past_limit: PastLimit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    column: Option<String>,
    #[serde(default)]
    column_pattern: Option<String>,
    style: String,
    #[serde(default)]
    kind: Option<String>,
}

/// What a column rule matches.
#[derive(Debug, Clone)]
pub enum RuleTarget {
    /// A table's column, resolved to (table OID, attribute number) by the
    /// session's catalog lookup.
    Column {
        schema: String,
        table: String,
        column: String,
    },
    /// Result fields whose name matches.
    FieldName(Wildcard),
}

/// One compiled column rule.
#[derive(Debug, Clone)]
pub struct ColumnRule {
    /// The name records count it under.
    pub name: String,
    pub target: RuleTarget,
    pub style: MaskStyle,
    /// What the values are, when known (shapes `partial` and `hash`).
    pub kind: Option<DetectorKind>,
}

/// The compiled masking configuration, shared by every session of a worker.
#[derive(Debug, Clone)]
pub struct MaskingPolicy {
    pub masker: Masker,
    /// What happens to values longer than the masker's scan cap.
    pub over_cap: OverCapPolicy,
    pub rules: Vec<ColumnRule>,
    exempt: Option<IdentityMatch>,
    /// Result columns computed from masked columns.
    pub derived: LineageAction,
    /// Result columns computed by what lineage cannot follow.
    pub opaque: LineageAction,
    /// Result-size guardrails, first match wins.
    pub limits: Vec<ResultLimit>,
    /// Statement texts, parameters and error messages are masked before
    /// records are written (`"records": "mask"`, the default).
    pub records_masked: bool,
}

impl MaskingPolicy {
    /// Parses and compiles the `masking` object; error paths are relative to it.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawMasking = ConfigError::parse_json(json)?;
        let masker = match &raw.masker {
            Some(config) => config.compile().map_err(|e| e.under("masker"))?,
            None => Masker::new(),
        };
        if raw.rules.len() > MAX_RULES {
            return Err(ConfigError::new(
                "rules",
                format!("{} rules; at most {MAX_RULES}", raw.rules.len()),
            ));
        }
        let rules = raw
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                compile_rule(rule, &masker).map_err(|e| e.under(&format!("rules[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let exempt = match raw.exempt {
            None => None,
            Some(m) => {
                let matcher = m.compile().map_err(|e| e.under("exempt"))?;
                if matcher.is_any() {
                    // An empty match would exempt everyone: surely a mistake.
                    return Err(ConfigError::new(
                        "exempt",
                        "names no subjects, groups or claims; it would exempt everyone",
                    ));
                }
                Some(matcher)
            }
        };
        let over_cap = match raw.masker.as_ref().and_then(|m| m.over_cap.as_deref()) {
            Some("null") => OverCapPolicy::Null,
            Some("allow") => OverCapPolicy::Allow,
            _ => OverCapPolicy::Redact,
        };
        let action = |value: Option<&str>, path: &str| match value {
            None | Some("mask") => Ok(LineageAction::Mask),
            Some("refuse") => Ok(LineageAction::Refuse),
            Some(other) => Err(ConfigError::new(
                path,
                format!("unknown action {other:?}: \"mask\" or \"refuse\""),
            )),
        };
        let lineage = raw.lineage.as_ref();
        let derived = action(
            lineage.and_then(|l| l.derived.as_deref()),
            "lineage.derived",
        )?;
        let opaque = action(lineage.and_then(|l| l.opaque.as_deref()), "lineage.opaque")?;
        let limits = raw
            .limits
            .iter()
            .enumerate()
            .map(|(i, limit)| compile_limit(limit).map_err(|e| e.under(&format!("limits[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        let records_masked = match raw.records.as_deref() {
            None | Some("mask") => true,
            Some("clear") => false,
            Some(other) => {
                return Err(ConfigError::new(
                    "records",
                    format!("unknown {other:?}: \"mask\" or \"clear\""),
                ));
            }
        };
        Ok(Self {
            masker,
            over_cap,
            rules,
            exempt,
            derived,
            opaque,
            limits,
            records_masked,
        })
    }

    /// The result-size guardrail for `identity`, if any.
    pub fn limit_for(&self, identity: &Identity) -> Option<&ResultLimit> {
        self.limits.iter().find(|l| l.matches.matches(identity))
    }

    /// Whether `identity` sees values clear.
    pub fn exempts(&self, identity: &Identity) -> bool {
        self.exempt.as_ref().is_some_and(|m| m.matches(identity))
    }

    /// Rules by table and column, with their index.
    pub fn column_rules(&self) -> impl Iterator<Item = (usize, &str, &str, &str)> {
        self.rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match &r.target {
                RuleTarget::Column {
                    schema,
                    table,
                    column,
                } => Some((i, schema.as_str(), table.as_str(), column.as_str())),
                RuleTarget::FieldName(_) => None,
            })
    }

    /// The first field-name rule matching `name`.
    pub fn rule_for_field_name(&self, name: &[u8]) -> Option<usize> {
        let name = std::str::from_utf8(name).ok()?;
        self.rules.iter().position(|r| match &r.target {
            RuleTarget::FieldName(pattern) => pattern.matches(name),
            RuleTarget::Column { .. } => false,
        })
    }
}

fn compile_limit(raw: &RawLimit) -> Result<ResultLimit, ConfigError> {
    let matches = raw.matches.compile().map_err(|e| e.under("match"))?;
    if matches.is_any() {
        return Err(ConfigError::new(
            "match",
            "names no subjects, groups or claims; use a wildcard subject to limit everyone",
        ));
    }
    if raw.max_rows.is_none() && raw.max_bytes.is_none() {
        return Err(ConfigError::new(
            "",
            "a limit needs max_rows, max_bytes or both",
        ));
    }
    let past_limit = match raw.past_limit.as_deref() {
        None | Some("error") => PastLimit::Error,
        Some("truncate") => PastLimit::Truncate,
        Some(other) => {
            return Err(ConfigError::new(
                "past_limit",
                format!("unknown {other:?}: \"error\" or \"truncate\""),
            ));
        }
    };
    Ok(ResultLimit {
        matches,
        max_rows: raw.max_rows,
        max_bytes: raw.max_bytes,
        past_limit,
    })
}

fn compile_rule(raw: &RawRule, masker: &Masker) -> Result<ColumnRule, ConfigError> {
    let style = style_named(&raw.style, "style")?;
    if style == MaskStyle::Hash && !masker.has_hash_key() {
        return Err(ConfigError::new("style", "\"hash\" needs masker.hash_key"));
    }
    let kind = raw
        .kind
        .as_deref()
        .map(|k| detector_named(k, "kind"))
        .transpose()?;
    let (target, default_name) = match (&raw.table, &raw.column, &raw.column_pattern) {
        (Some(table), Some(column), None) => {
            let (schema, table) = table.split_once('.').unwrap_or(("public", table));
            for (what, name) in [
                ("table", schema),
                ("table", table),
                ("column", column.as_str()),
            ] {
                // The names go into the catalog lookup's string literals.
                let unsafe_char = name.chars().any(|c| c == '\\' || c.is_control());
                if name.is_empty() || name.len() > MAX_NAME_LEN || unsafe_char {
                    return Err(ConfigError::new(
                        what,
                        format!(
                            "name {name:?} must be 1 to {MAX_NAME_LEN} bytes without \\ or control characters"
                        ),
                    ));
                }
            }
            (
                RuleTarget::Column {
                    schema: schema.to_string(),
                    table: table.to_string(),
                    column: column.clone(),
                },
                format!("{schema}.{table}.{column}"),
            )
        }
        (None, None, Some(pattern)) => (
            RuleTarget::FieldName(Wildcard::new(pattern).map_err(|e| e.under("column_pattern"))?),
            pattern.clone(),
        ),
        _ => {
            return Err(ConfigError::new(
                "",
                "a rule names either \"table\" and \"column\", or \"column_pattern\"",
            ));
        }
    };
    Ok(ColumnRule {
        name: raw.name.clone().unwrap_or(default_name),
        target,
        style,
        kind,
    })
}
