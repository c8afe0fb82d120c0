//! A rule's `record` section: whether and how the exec and attach sessions it
//! admits are recorded.
//!
//! ```json
//! {"name": "exec-in-dev", "action": "allow", "match": {...},
//!  "record": {"mask": true, "detectors": {"detectors": ["secret", "jwt"]},
//!             "mask_live": false, "deny_commands": ["rm -rf /", "rm -rf / *"],
//!             "max_session_bytes": 67108864, "on_limit": "truncate"}}
//! ```
//!
//! Every field is optional: `{}` records with every detector masking the
//! recording, the stream left as it is, no refused commands, and a 64 MiB cap
//! past which the recording is truncated.

use super::typed::CommandPolicy;
use gatehouse_core::config::ConfigError;
use gatehouse_core::mask::{MaskConfig, Masker};
use serde::Deserialize;

/// Default byte cap of one session's recording.
pub const DEFAULT_MAX_SESSION_BYTES: u64 = 64 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordDocument {
    #[serde(default = "yes")]
    mask: bool,
    #[serde(default)]
    detectors: Option<MaskConfig>,
    #[serde(default = "yes")]
    mask_typed_secrets: bool,
    #[serde(default)]
    mask_live: bool,
    #[serde(default)]
    deny_commands: Vec<String>,
    #[serde(default = "default_max_session_bytes")]
    max_session_bytes: u64,
    #[serde(default)]
    on_limit: OnLimit,
}

fn yes() -> bool {
    true
}

fn default_max_session_bytes() -> u64 {
    DEFAULT_MAX_SESSION_BYTES
}

/// What happens when a session's recording reaches its byte cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    /// The session goes on; the recording says it was truncated.
    #[default]
    Truncate,
    /// The session is ended.
    End,
}

/// A compiled `record` section.
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    /// Detectors over what is recorded (output, typed lines); `None`: off.
    pub masker: Option<Masker>,
    /// Mask a line typed at a password prompt, and its echoes later on.
    pub mask_typed_secrets: bool,
    /// Mask the stream the user sees too (frame by frame).
    pub mask_live: bool,
    /// Typed lines refused before they reach the pod.
    pub commands: CommandPolicy,
    pub max_session_bytes: u64,
    pub on_limit: OnLimit,
}

impl RecordingConfig {
    /// Compiles a `record` section (error paths relative to it).
    pub fn from_value(value: serde_json::Value) -> Result<RecordingConfig, ConfigError> {
        let doc: RecordDocument =
            serde_json::from_value(value).map_err(|e| ConfigError::new("", e.to_string()))?;
        if doc.max_session_bytes == 0 {
            return Err(ConfigError::new("max_session_bytes", "must be above 0"));
        }
        let masker = match (doc.mask, &doc.detectors) {
            (false, Some(_)) => {
                return Err(ConfigError::new(
                    "detectors",
                    "detectors are set but mask is false",
                ));
            }
            (false, None) => None,
            (true, None) => Some(Masker::new()),
            (true, Some(config)) => Some(config.compile().map_err(|e| e.under("detectors"))?),
        };
        Ok(RecordingConfig {
            masker,
            mask_typed_secrets: doc.mask_typed_secrets,
            mask_live: doc.mask_live,
            commands: CommandPolicy::new(&doc.deny_commands)?,
            max_session_bytes: doc.max_session_bytes,
            on_limit: doc.on_limit,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_empty_section_records_with_masking_and_no_refusals() {
        let config = RecordingConfig::from_value(json!({})).unwrap();
        assert!(config.masker.is_some() && config.mask_typed_secrets && !config.mask_live);
        assert!(!config.commands.is_active());
        assert_eq!(config.max_session_bytes, DEFAULT_MAX_SESSION_BYTES);
        assert_eq!(config.on_limit, OnLimit::Truncate);
    }

    #[test]
    fn bad_sections_name_the_field() {
        for (value, path) in [
            (json!({"on_limit": "stop"}), ""),
            (json!({"max_session_bytes": 0}), "max_session_bytes"),
            (json!({"deny_commands": ["ls", ""]}), "deny_commands[1]"),
            (
                json!({"detectors": {"detectors": ["nope"]}}),
                "detectors.detectors[0]",
            ),
            (json!({"mask": false, "detectors": {}}), "detectors"),
            (json!({"record_input": true}), ""),
        ] {
            let error = RecordingConfig::from_value(value.clone()).unwrap_err();
            assert_eq!(error.path, path, "{value}: {error}");
        }
    }
}
