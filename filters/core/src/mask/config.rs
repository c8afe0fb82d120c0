//! Masking configuration as it appears in a filter's JSON configuration, and
//! its compilation into a [`Masker`].
//!
//! ```json
//! {
//!   "detectors": ["email", "payment_card", "us_ssn"],
//!   "styles": { "email": "partial", "payment_card": "partial" },
//!   "default_style": "redact",
//!   "redact_token": "****",
//!   "partial_keep_last": 4,
//!   "hash_key": "c2VjcmV0LWtleS1mb3ItaG1hYy0xMjM0NTY=",
//!   "max_scan_bytes": 1048576,
//!   "over_cap": "redact"
//! }
//! ```
//!
//! Every field is optional: by default every detector is on, every style is
//! `redact` with `****`, and values over 1 MiB are redacted whole without
//! being scanned.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use super::detector::DetectorSet;
use super::kind::DetectorKind;
use super::style::{
    DEFAULT_KEEP_LAST, DEFAULT_MAX_SCAN_BYTES, DEFAULT_REDACT_TOKEN, MaskStyle, Masker,
    OverCapPolicy,
};
use crate::config::ConfigError;

/// Largest accepted `max_scan_bytes` (64 MiB): scanning is linear, but a cap
/// that never triggers is no cap.
pub const MAX_SCAN_BYTES_LIMIT: usize = 64 << 20;
const MAX_TOKEN_LEN: usize = 64;
const MAX_KEEP_LAST: usize = 8;
const MIN_HASH_KEY_BYTES: usize = 16;

/// Raw masking configuration. Names are checked in [`MaskConfig::compile`] so
/// errors can name the offending path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    /// Detectors to run on text; every detector when absent.
    #[serde(default)]
    pub detectors: Option<Vec<String>>,
    /// Style per detector name.
    #[serde(default)]
    pub styles: BTreeMap<String, String>,
    /// Style for detectors not in `styles`; `redact` when absent.
    #[serde(default)]
    pub default_style: Option<String>,
    /// Token written by `redact`; `****` when absent.
    #[serde(default)]
    pub redact_token: Option<String>,
    /// Characters `partial` keeps; 4 when absent.
    #[serde(default)]
    pub partial_keep_last: Option<usize>,
    /// Base64 HMAC key for `hash` (at least 16 bytes decoded). Required when
    /// any style is `hash`.
    #[serde(default)]
    pub hash_key: Option<String>,
    /// Largest value scanned by detectors; 1 MiB when absent.
    #[serde(default)]
    pub max_scan_bytes: Option<usize>,
    /// What happens to longer values: `redact` (default), `null` or `allow`.
    #[serde(default)]
    pub over_cap: Option<String>,
}

impl MaskConfig {
    /// Parses and compiles a masking configuration document.
    pub fn from_json(json: &[u8]) -> Result<Masker, ConfigError> {
        ConfigError::parse_json::<MaskConfig>(json)?.compile()
    }

    /// Checks every name and limit and builds the [`Masker`]. Error paths are
    /// relative to this object (wrap them with [`ConfigError::under`]).
    pub fn compile(&self) -> Result<Masker, ConfigError> {
        let mut masker = Masker::new();

        if let Some(names) = &self.detectors {
            let mut set = DetectorSet::none();
            for (i, name) in names.iter().enumerate() {
                set = set.with(detector_named(name, &format!("detectors[{i}]"))?);
            }
            masker = masker.with_detectors(set);
        }

        let default_style = match &self.default_style {
            Some(name) => style_named(name, "default_style")?,
            None => MaskStyle::Redact,
        };
        for kind in DetectorKind::ALL {
            masker = masker.with_style(kind, default_style);
        }
        for (name, style) in &self.styles {
            let path = format!("styles.{name}");
            let kind = detector_named(name, &path)?;
            masker = masker.with_style(kind, style_named(style, &path)?);
        }

        let token = self.redact_token.as_deref().unwrap_or(DEFAULT_REDACT_TOKEN);
        check_token(token)?;
        masker = masker.with_redact_token(token);

        let keep_last = self.partial_keep_last.unwrap_or(DEFAULT_KEEP_LAST);
        if keep_last > MAX_KEEP_LAST {
            return Err(ConfigError::new(
                "partial_keep_last",
                format!("{keep_last} is more than the maximum of {MAX_KEEP_LAST}"),
            ));
        }
        masker = masker.with_keep_last(keep_last);

        if let Some(key) = &self.hash_key {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|e| ConfigError::new("hash_key", format!("not valid base64: {e}")))?;
            if bytes.len() < MIN_HASH_KEY_BYTES {
                return Err(ConfigError::new(
                    "hash_key",
                    format!(
                        "{} bytes is too short; use at least {MIN_HASH_KEY_BYTES}",
                        bytes.len()
                    ),
                ));
            }
            masker = masker.with_hash_key(&bytes);
        }
        let uses_hash = DetectorKind::ALL
            .into_iter()
            .any(|k| masker.style_for(k) == MaskStyle::Hash);
        if uses_hash && !masker.has_hash_key() {
            return Err(ConfigError::new(
                "hash_key",
                "required when a style is \"hash\"",
            ));
        }

        let max = self.max_scan_bytes.unwrap_or(DEFAULT_MAX_SCAN_BYTES);
        if max == 0 || max > MAX_SCAN_BYTES_LIMIT {
            return Err(ConfigError::new(
                "max_scan_bytes",
                format!("{max} is outside 1..={MAX_SCAN_BYTES_LIMIT}"),
            ));
        }
        let over_cap = match self.over_cap.as_deref() {
            None | Some("redact") => OverCapPolicy::Redact,
            Some("null") => OverCapPolicy::Null,
            Some("allow") => OverCapPolicy::Allow,
            Some(other) => {
                return Err(ConfigError::new(
                    "over_cap",
                    format!("unknown policy {other:?}; expected \"redact\", \"null\" or \"allow\""),
                ));
            }
        };
        Ok(masker.with_max_scan_bytes(max, over_cap))
    }
}

/// Looks up a detector by name, or an error at `path` listing the names.
pub fn detector_named(name: &str, path: &str) -> Result<DetectorKind, ConfigError> {
    DetectorKind::from_name(name).ok_or_else(|| {
        let known: Vec<_> = DetectorKind::ALL.iter().map(|k| k.as_str()).collect();
        ConfigError::new(
            path,
            format!(
                "unknown detector {name:?}; expected one of {}",
                known.join(", ")
            ),
        )
    })
}

/// Looks up a mask style by name, or an error at `path` listing the names.
pub fn style_named(name: &str, path: &str) -> Result<MaskStyle, ConfigError> {
    MaskStyle::from_name(name).ok_or_else(|| {
        let known: Vec<_> = MaskStyle::ALL.iter().map(|s| s.as_str()).collect();
        ConfigError::new(
            path,
            format!(
                "unknown style {name:?}; expected one of {}",
                known.join(", ")
            ),
        )
    })
}

/// The token is written into CSV, COPY text, array literals and JSON strings:
/// restricting it to printable ASCII without quotes, backslashes, commas,
/// braces or whitespace keeps every one of those formats intact.
fn check_token(token: &str) -> Result<(), ConfigError> {
    let bad = token.chars().find(|c| {
        !c.is_ascii_graphic() || matches!(c, '"' | '\'' | '\\' | ',' | '{' | '}' | '(' | ')' | '`')
    });
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(ConfigError::new(
            "redact_token",
            format!("must be 1 to {MAX_TOKEN_LEN} characters"),
        ));
    }
    match bad {
        Some(c) => Err(ConfigError::new(
            "redact_token",
            format!("character {c:?} is not allowed"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{Masked, ValueType};

    fn err(json: &str) -> String {
        MaskConfig::from_json(json.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_config_enables_everything_with_redact() {
        let m = MaskConfig::from_json(b"{}").unwrap();
        assert_eq!(m.detectors(), DetectorSet::all());
        assert!(
            DetectorKind::ALL
                .iter()
                .all(|&k| m.style_for(k) == MaskStyle::Redact)
        );
        assert_eq!(m.max_scan_bytes(), DEFAULT_MAX_SCAN_BYTES);
    }

    #[test]
    fn full_config_compiles() {
        let m = MaskConfig::from_json(
            br#"{"detectors":["email","us_ssn"],"styles":{"email":"hash"},"default_style":"partial",
                "redact_token":"[x]","partial_keep_last":2,"hash_key":"MDEyMzQ1Njc4OWFiY2RlZg==",
                "max_scan_bytes":4096,"over_cap":"null"}"#,
        )
        .unwrap();
        assert_eq!(
            m.detectors(),
            DetectorSet::only(DetectorKind::Email).with(DetectorKind::UsSsn)
        );
        assert_eq!(m.style_for(DetectorKind::Email), MaskStyle::Hash);
        assert_eq!(m.style_for(DetectorKind::UsSsn), MaskStyle::Partial);
        assert_eq!(m.mask_text(&[b'a'; 5000]).value, Masked::Null);
        let out = m.mask_value(MaskStyle::Redact, b"v", ValueType::Text, None);
        assert_eq!(out.as_bytes(), Some(&b"[x]"[..]));
    }

    #[test]
    fn errors_name_the_offending_path() {
        assert_eq!(
            err(r#"{"detectors":["email","ssn"]}"#),
            "detectors[1]: unknown detector \"ssn\"; expected one of private_key, jwt, aws_access_key, \
             secret_assignment, email, payment_card, iban, us_ssn, phone"
        );
        assert!(
            err(r#"{"styles":{"email":"blur"}}"#)
                .starts_with("styles.email: unknown style \"blur\"")
        );
        assert!(
            err(r#"{"styles":{"mail":"redact"}}"#).starts_with("styles.mail: unknown detector")
        );
        assert!(err(r#"{"styles":{"email":"hash"}}"#).starts_with("hash_key: required"));
        assert!(err(r#"{"hash_key":"c2hvcnQ="}"#).starts_with("hash_key: 5 bytes is too short"));
        assert!(err(r#"{"hash_key":"***"}"#).starts_with("hash_key: not valid base64"));
        assert!(err(r#"{"redact_token":"a,b"}"#).starts_with("redact_token: character ','"));
        assert!(err(r#"{"redact_token":""}"#).starts_with("redact_token: must be"));
        assert!(err(r#"{"max_scan_bytes":0}"#).starts_with("max_scan_bytes:"));
        assert!(err(r#"{"over_cap":"drop"}"#).starts_with("over_cap: unknown policy"));
        assert!(err(r#"{"partial_keep_last":20}"#).starts_with("partial_keep_last:"));
        assert!(err(r#"{"detectorz":[]}"#).contains("unknown field `detectorz`"));
    }

    #[test]
    fn nested_errors_can_be_rerooted() {
        let e = MaskConfig {
            over_cap: Some("x".into()),
            ..Default::default()
        }
        .compile()
        .unwrap_err();
        assert!(
            e.under("masking")
                .to_string()
                .starts_with("masking.over_cap:")
        );
    }
}
