//! The `masking` section: what the filter masks in responses, and the
//! compiled `fields` rules.
//!
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
use gatehouse_core::mask::{MaskConfig, Masker};
use gatehouse_core::policy::{Wildcard, compile_wildcards};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// The `masking` section as written; compiled into [`MaskingConfig`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MaskingDocument {
    #[serde(default = "super::yes")]
    secrets: bool,
    #[serde(default = "super::yes")]
    pod_env: bool,
    #[serde(default = "default_mask_text")]
    mask_text: String,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    /// Detector rules over JSON paths (see [`FieldMasking`]).
    #[serde(default)]
    fields: Vec<Value>,
    /// The shared detectors' settings for `fields`.
    #[serde(default)]
    detectors: Option<MaskConfig>,
}

impl Default for MaskingDocument {
    fn default() -> Self {
        Self {
            secrets: true,
            pod_env: true,
            mask_text: default_mask_text(),
            max_body_bytes: default_max_body_bytes(),
            fields: Vec::new(),
            detectors: None,
        }
    }
}

impl MaskingDocument {
    pub(super) fn compile(self) -> Result<MaskingConfig, ConfigError> {
        if self.mask_text.is_empty() || self.mask_text.len() > 256 {
            return Err(ConfigError::new("mask_text", "must be 1 to 256 bytes"));
        }
        Ok(MaskingConfig {
            fields: FieldMasking::compile(&self.fields, self.detectors.as_ref())?,
            secrets: self.secrets,
            pod_env: self.pod_env,
            mask_text: self.mask_text,
            max_body_bytes: self.max_body_bytes,
        })
    }
}

/// What the filter masks in responses.
#[derive(Debug, Clone)]
pub struct MaskingConfig {
    /// Secret `data` / `stringData` values (and their copy in the
    /// last-applied-configuration annotation).
    pub secrets: bool,
    /// The `value` of each variable in every `env` array: containers in pods,
    /// pod templates and custom resources alike.
    pub pod_env: bool,
    /// The text a masked value is replaced with (base64-encoded in Secret `data`).
    pub mask_text: String,
    /// Largest response body buffered for masking; larger ones fail with a 500.
    pub max_body_bytes: usize,
    /// The shared detectors over configured JSON paths of chosen resources.
    pub fields: FieldMasking,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        Self {
            secrets: true,
            pod_env: true,
            mask_text: default_mask_text(),
            max_body_bytes: default_max_body_bytes(),
            fields: FieldMasking::default(),
        }
    }
}

impl MaskingConfig {
    /// Parses and compiles a `masking` section on its own (error paths are
    /// relative to it).
    pub fn from_json(json: &[u8]) -> Result<MaskingConfig, ConfigError> {
        ConfigError::parse_json::<MaskingDocument>(json)?.compile()
    }
}

fn default_mask_text() -> String {
    "********".to_owned()
}
fn default_max_body_bytes() -> usize {
    8 * 1024 * 1024
}

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
pub(crate) enum Segment {
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
    pub(crate) segments: Vec<Segment>,
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
pub(crate) struct FieldRule {
    pub(crate) resources: Vec<Wildcard>,
    /// Object kinds, compared exactly (`DatabaseCredential`).
    pub(crate) kinds: Vec<String>,
    pub(crate) paths: Vec<FieldPath>,
    /// Replace every value under the paths instead of running the detectors.
    pub(crate) whole: bool,
}

#[derive(Debug)]
pub(crate) struct FieldRules {
    pub(crate) rules: Vec<FieldRule>,
    pub(crate) masker: Masker,
}

/// The compiled `masking.fields` rules with their detectors; cheap to clone.
/// The default has no rules.
#[derive(Debug, Clone, Default)]
pub struct FieldMasking {
    pub(crate) compiled: Option<Arc<FieldRules>>,
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
