//! Detector masking over configured JSON paths (`masking.fields`): the shared
//! detectors (e-mail, card numbers, tokens, keys, `password=…`, …) run over the
//! values at the listed paths of every object in responses to reads of the
//! listed resources, e.g. ConfigMap `data.*` or every object's annotations.
//!
//! ```json
//! "masking": {
//!   "fields": [
//!     {"resources": ["configmaps"], "paths": ["data.*", "binaryData.*"]},
//!     {"resources": ["*"], "paths": ["metadata.annotations.*"]},
//!     {"resources": ["pods"], "paths": ["spec.containers[].args[]"]}
//!   ],
//!   "detectors": {"detectors": ["jwt", "private_key", "secret_assignment"]}
//! }
//! ```
//!
//! A path is dot-separated member names of the object (not of its list,
//! Table or watch event); `*` is every member (or element), `name[]` every
//! element of the array `name`. Everything under a selected value is scanned:
//! strings, and numbers (a card number stored as a number becomes a string).
//! A string whose member name names a secret (`DB_PASSWORD`) is masked whole
//! when it looks like one, as in the other filters. `detectors` is the shared
//! masking configuration ([`MaskConfig`]); every detector when absent.

use gatehouse_core::config::ConfigError;
use gatehouse_core::mask::{
    DetectorKind, MaskConfig, MaskStyle, Masked, Masker, ValueType, is_secret_key_name,
    is_secret_value,
};
use gatehouse_core::policy::{Wildcard, compile_wildcards};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// Most `fields` rules.
pub const MAX_FIELD_RULES: usize = 64;
/// Most paths in one rule.
pub const MAX_PATHS_PER_RULE: usize = 64;
/// Longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 256;
/// Most segments in one path.
pub const MAX_PATH_SEGMENTS: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldRuleDocument {
    resources: Vec<String>,
    paths: Vec<String>,
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// The member with this name.
    Member(String),
    /// Every member of an object, or every element of an array (`*`).
    Any,
    /// Every element of an array (`[]`).
    Elements,
}

/// A compiled path such as `spec.containers[].env[].value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<Segment>,
}

impl FieldPath {
    /// Parses a path; errors say what is wrong with it.
    pub fn parse(text: &str) -> Result<FieldPath, ConfigError> {
        if text.is_empty() || text.len() > MAX_PATH_BYTES {
            return Err(ConfigError::new(
                "",
                format!("a path must be 1 to {MAX_PATH_BYTES} bytes"),
            ));
        }
        let mut segments = Vec::new();
        for part in text.split('.') {
            let mut name = part;
            let mut elements = 0;
            while let Some(rest) = name.strip_suffix("[]") {
                name = rest;
                elements += 1;
            }
            if name.is_empty() || name.contains(['[', ']']) {
                return Err(ConfigError::new(
                    "",
                    format!(
                        "{text:?}: each segment is a member name or `*`, optionally followed by `[]`"
                    ),
                ));
            }
            segments.push(if name == "*" {
                Segment::Any
            } else {
                Segment::Member(name.to_owned())
            });
            segments.extend(std::iter::repeat_n(Segment::Elements, elements));
        }
        if segments.len() > MAX_PATH_SEGMENTS {
            return Err(ConfigError::new(
                "",
                format!("{text:?} has more than {MAX_PATH_SEGMENTS} segments"),
            ));
        }
        Ok(FieldPath {
            text: text.to_owned(),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[derive(Debug)]
struct FieldRule {
    resources: Vec<Wildcard>,
    paths: Vec<FieldPath>,
}

#[derive(Debug)]
struct FieldRules {
    rules: Vec<FieldRule>,
    masker: Masker,
}

/// The compiled `masking.fields` rules with their detectors; cheap to clone.
/// The default has no rules.
#[derive(Debug, Clone, Default)]
pub struct FieldMasking {
    compiled: Option<Arc<FieldRules>>,
}

impl FieldMasking {
    /// Compiles the `fields` rules (JSON values, so errors name their index)
    /// and the detector settings. Error paths are relative to `masking`.
    pub fn compile(
        rules: &[Value],
        detectors: Option<&MaskConfig>,
    ) -> Result<FieldMasking, ConfigError> {
        if rules.is_empty() {
            if detectors.is_some() {
                return Err(ConfigError::new(
                    "detectors",
                    "the detectors run over `fields` paths, and none are configured",
                ));
            }
            return Ok(FieldMasking::default());
        }
        if rules.len() > MAX_FIELD_RULES {
            return Err(ConfigError::new(
                "fields",
                format!("at most {MAX_FIELD_RULES} rules are allowed"),
            ));
        }
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, value)| compile_rule(value).map_err(|e| e.under(&format!("fields[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        let masker = match detectors {
            Some(config) => config.compile().map_err(|e| e.under("detectors"))?,
            None => Masker::new(),
        };
        Ok(FieldMasking {
            compiled: Some(Arc::new(FieldRules { rules, masker })),
        })
    }

    /// Whether any rule covers reads of `resource` (e.g. `configmaps`).
    pub fn covers(&self, resource: &str) -> bool {
        self.compiled.as_ref().is_some_and(|c| {
            c.rules
                .iter()
                .any(|r| r.resources.iter().any(|w| w.matches(resource)))
        })
    }

    /// The paths masked in objects of `resource`, with the masker to apply.
    pub(crate) fn for_resource(&self, resource: &str) -> Option<SelectedFields<'_>> {
        let compiled = self.compiled.as_deref()?;
        let paths: Vec<&FieldPath> = compiled
            .rules
            .iter()
            .filter(|r| r.resources.iter().any(|w| w.matches(resource)))
            .flat_map(|r| r.paths.iter())
            .collect();
        (!paths.is_empty()).then_some(SelectedFields {
            paths,
            masker: &compiled.masker,
        })
    }
}

fn compile_rule(value: &Value) -> Result<FieldRule, ConfigError> {
    let doc =
        FieldRuleDocument::deserialize(value).map_err(|e| ConfigError::new("", e.to_string()))?;
    if doc.resources.is_empty() {
        return Err(ConfigError::new(
            "resources",
            "name at least one resource (`*` for all)",
        ));
    }
    if doc.paths.is_empty() || doc.paths.len() > MAX_PATHS_PER_RULE {
        return Err(ConfigError::new(
            "paths",
            format!("list 1 to {MAX_PATHS_PER_RULE} paths"),
        ));
    }
    let paths = doc
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| FieldPath::parse(p).map_err(|e| e.under(&format!("paths[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FieldRule {
        resources: compile_wildcards("resources", &doc.resources)?,
        paths,
    })
}

/// The field paths that apply to one response.
#[derive(Debug, Clone)]
pub(crate) struct SelectedFields<'a> {
    paths: Vec<&'a FieldPath>,
    masker: &'a Masker,
}

impl SelectedFields<'_> {
    /// Masks every selected value in `object`; returns the paths (as written)
    /// under which something was masked.
    pub(crate) fn mask(&self, object: &mut Value) -> Vec<&str> {
        let mut masked = Vec::new();
        for path in &self.paths {
            if visit(object, None, &path.segments, self.masker) {
                masked.push(path.as_str());
            }
        }
        masked
    }
}

/// Follows `segments` from `node` (reached under member `name`) and masks what
/// they select; whether anything changed.
fn visit(node: &mut Value, name: Option<&str>, segments: &[Segment], masker: &Masker) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return mask_values(node, name, masker);
    };
    let mut changed = false;
    match (first, node) {
        (Segment::Member(member), Value::Object(map)) => {
            if let Some(child) = map.get_mut(member) {
                changed = visit(child, Some(member), rest, masker);
            }
        }
        (Segment::Any, Value::Object(map)) => {
            for (key, child) in map.iter_mut() {
                changed |= visit(child, Some(key), rest, masker);
            }
        }
        (Segment::Any | Segment::Elements, Value::Array(items)) => {
            for child in items {
                changed |= visit(child, None, rest, masker);
            }
        }
        _ => {}
    }
    changed
}

/// Masks every string and number in `node`; whether anything changed.
fn mask_values(node: &mut Value, name: Option<&str>, masker: &Masker) -> bool {
    let replacement = match node {
        Value::String(text) => {
            let named_secret = name.is_some_and(|n| is_secret_key_name(n.as_bytes()))
                && masker.detectors().contains(DetectorKind::SecretAssignment)
                && is_secret_value(text.as_bytes());
            if named_secret {
                let style = masker.style_for(DetectorKind::SecretAssignment);
                let hint = Some(DetectorKind::SecretAssignment);
                masked_scalar(match style {
                    MaskStyle::Null => Masked::Null,
                    _ => masker.mask_value(style, text.as_bytes(), ValueType::Text, hint),
                })
            } else {
                masked_scalar(masker.mask_text(text.as_bytes()).value)
            }
        }
        Value::Number(number) => {
            let text = number.to_string();
            masked_scalar(masker.mask_text(text.as_bytes()).value)
        }
        Value::Array(items) => {
            return items.iter_mut().fold(false, |changed, item| {
                mask_values(item, None, masker) | changed
            });
        }
        Value::Object(map) => {
            return map.iter_mut().fold(false, |changed, (key, item)| {
                mask_values(item, Some(key), masker) | changed
            });
        }
        Value::Null | Value::Bool(_) => None,
    };
    match replacement {
        Some(value) => {
            *node = value;
            true
        }
        None => false,
    }
}

/// The JSON value a masked scalar becomes, or `None` when it is unchanged.
fn masked_scalar(masked: Masked<'_>) -> Option<Value> {
    if masked.is_unchanged() {
        return None;
    }
    Some(match masked {
        Masked::Null => Value::Null,
        Masked::Value(value) => Value::String(String::from_utf8_lossy(&value).into_owned()),
    })
}
