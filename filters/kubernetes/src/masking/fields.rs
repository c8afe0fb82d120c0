//! Masking over configured JSON paths (`masking.fields`): the shared detectors
//! (e-mail, card numbers, tokens, keys, `password=…`, …) run over the values at
//! the listed paths of the objects a rule selects, e.g. ConfigMap `data.*` or
//! every object's annotations; or, with `"whole": true`, every value there is
//! replaced, as Secret data is (for custom resources that hold credentials).
//!
//! ```json
//! "masking": {
//!   "fields": [
//!     {"resources": ["configmaps"], "paths": ["data.*", "binaryData.*"]},
//!     {"resources": ["*"], "paths": ["metadata.annotations.*"]},
//!     {"resources": ["pods"], "paths": ["spec.containers[].args[]"]},
//!     {"kinds": ["DatabaseCredential"], "paths": ["spec.password"], "whole": true}
//!   ],
//!   "detectors": {"detectors": ["jwt", "private_key", "secret_assignment"]}
//! }
//! ```
//!
//! A rule selects objects by `resources` (every object in a response to a
//! request for one of them, its subresources included) or by `kinds` (every
//! object of that `kind` wherever it appears in any response: in a list, a
//! Table, a watch event, another object). A `whole` rule also masks the
//! cells a Table prints of its objects, but for the name and age columns:
//! a custom resource's printer columns may show any field. Rows of metadata
//! only do not say their kind, so name the resource too for those. A path is dot-separated member names
//! of the object (not of its list, Table or watch event); `*` is every member
//! (or element), `name[]` every element of the array `name`. Everything under
//! a selected value is scanned: strings, and numbers (a card number stored as
//! a number becomes a string). A string whose member name names a secret
//! (`DB_PASSWORD`) is masked whole when it looks like one, as in the other
//! filters. `detectors` is the shared masking configuration ([`MaskConfig`]);
//! every detector when absent.

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
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    kinds: Vec<String>,
    paths: Vec<String>,
    #[serde(default)]
    whole: bool,
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
    /// Object kinds, compared exactly (`DatabaseCredential`).
    kinds: Vec<String>,
    paths: Vec<FieldPath>,
    /// Replace every value under the paths instead of running the detectors.
    whole: bool,
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

    /// Whether any rule is configured.
    pub fn is_empty(&self) -> bool {
        self.compiled.is_none()
    }

    /// The rules that apply to a response to a request for `resource`: those
    /// naming it, and every rule naming kinds.
    pub(crate) fn for_response(&self, resource: &str) -> Option<FieldSelection<'_>> {
        let compiled = self.compiled.as_deref()?;
        let by_resource: Vec<&FieldRule> = compiled
            .rules
            .iter()
            .filter(|r| r.resources.iter().any(|w| w.matches(resource)))
            .collect();
        let by_kind: Vec<&FieldRule> = compiled
            .rules
            .iter()
            .filter(|r| !r.kinds.is_empty())
            .collect();
        (!by_resource.is_empty() || !by_kind.is_empty()).then_some(FieldSelection {
            by_resource,
            by_kind,
            masker: &compiled.masker,
        })
    }
}

/// The `fields` rules that may apply to one response.
#[derive(Debug, Clone)]
pub(crate) struct FieldSelection<'a> {
    by_resource: Vec<&'a FieldRule>,
    by_kind: Vec<&'a FieldRule>,
    masker: &'a Masker,
}

impl<'a> FieldSelection<'a> {
    /// Whether `body` may hold an object these rules act on: always when a
    /// rule names the requested resource, else when the body names one of the
    /// kinds (a string starting `"Kind`, which `"KindList"` does too; an
    /// escaped spelling counts, since the body then holds a backslash).
    pub(crate) fn may_apply(&self, body: &[u8]) -> bool {
        !self.by_resource.is_empty()
            || self.by_kind.iter().flat_map(|r| &r.kinds).any(|kind| {
                let needle = format!("\"{kind}");
                memchr::memmem::find(body, needle.as_bytes()).is_some()
            })
            || (!self.by_kind.is_empty() && memchr::memchr(b'\\', body).is_some())
    }

    /// Whether a `whole` rule applies to the requested resource's objects,
    /// or to objects of `kind`: the columns a Table prints of them may show
    /// what the rule hides, and are masked too.
    pub(crate) fn masks_whole(&self, kind: Option<&str>) -> bool {
        self.by_resource.iter().any(|r| r.whole)
            || kind.is_some_and(|kind| {
                self.by_kind
                    .iter()
                    .any(|r| r.whole && r.kinds.iter().any(|k| k == kind))
            })
    }

    /// The paths to mask in one object of `kind`.
    pub(crate) fn for_object(&self, kind: &str) -> Option<SelectedFields<'a>> {
        let paths: Vec<(&FieldPath, bool)> = self
            .by_resource
            .iter()
            .chain(
                self.by_kind
                    .iter()
                    .filter(|r| r.kinds.iter().any(|k| k == kind)),
            )
            .flat_map(|r| r.paths.iter().map(|p| (p, r.whole)))
            .collect();
        (!paths.is_empty()).then_some(SelectedFields {
            paths,
            masker: self.masker,
        })
    }
}

fn compile_rule(value: &Value) -> Result<FieldRule, ConfigError> {
    let doc =
        FieldRuleDocument::deserialize(value).map_err(|e| ConfigError::new("", e.to_string()))?;
    if doc.resources.is_empty() && doc.kinds.is_empty() {
        return Err(ConfigError::new(
            "resources",
            "name at least one resource (`*` for all) or kind",
        ));
    }
    if let Some(i) = doc
        .kinds
        .iter()
        .position(|k| k.is_empty() || k.contains('*'))
    {
        return Err(ConfigError::new(
            format!("kinds[{i}]"),
            "a kind is named exactly, e.g. \"DatabaseCredential\"",
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
        kinds: doc.kinds,
        paths,
        whole: doc.whole,
    })
}

/// The field paths that apply to one object.
#[derive(Debug, Clone)]
pub(crate) struct SelectedFields<'a> {
    /// Each path, and whether its values are replaced whole.
    paths: Vec<(&'a FieldPath, bool)>,
    masker: &'a Masker,
}

impl SelectedFields<'_> {
    /// Masks every selected value in `object` (`whole` rules replace values
    /// with `mask_text`); returns the paths (as written) under which
    /// something was masked.
    pub(crate) fn mask(&self, object: &mut Value, mask_text: &str) -> Vec<&str> {
        let mut masked = Vec::new();
        for (path, whole) in &self.paths {
            let how = if *whole {
                How::Whole(mask_text)
            } else {
                How::Detect(self.masker)
            };
            if visit(object, None, &path.segments, how) {
                masked.push(path.as_str());
            }
        }
        masked
    }
}

/// How the values a path selects are masked.
#[derive(Clone, Copy)]
enum How<'a> {
    Detect(&'a Masker),
    Whole(&'a str),
}

/// Follows `segments` from `node` (reached under member `name`) and masks what
/// they select; whether anything changed.
fn visit(node: &mut Value, name: Option<&str>, segments: &[Segment], how: How<'_>) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return match how {
            How::Detect(masker) => mask_values(node, name, masker),
            How::Whole(text) => replace_values(node, text),
        };
    };
    let mut changed = false;
    match (first, node) {
        (Segment::Member(member), Value::Object(map)) => {
            if let Some(child) = map.get_mut(member) {
                changed = visit(child, Some(member), rest, how);
            }
        }
        (Segment::Any, Value::Object(map)) => {
            for (key, child) in map.iter_mut() {
                changed |= visit(child, Some(key), rest, how);
            }
        }
        (Segment::Any | Segment::Elements, Value::Array(items)) => {
            for child in items {
                changed |= visit(child, None, rest, how);
            }
        }
        _ => {}
    }
    changed
}

/// Replaces every string and number in `node` with `text`; whether anything
/// changed.
fn replace_values(node: &mut Value, text: &str) -> bool {
    match node {
        Value::String(_) | Value::Number(_) => {
            *node = Value::String(text.to_owned());
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| replace_values(item, text) | changed),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, item| replace_values(item, text) | changed),
        Value::Null | Value::Bool(_) => false,
    }
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
