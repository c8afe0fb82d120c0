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
        Ok(Self {
            masker,
            over_cap,
            rules,
            exempt,
        })
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
