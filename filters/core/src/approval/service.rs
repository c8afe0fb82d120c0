//! How a filter reaches the approval service: the `approvals` section of its
//! configuration.
//!
//! ```json
//! "approvals": {"cluster": "gatehouse_approvals", "key": "…", "poll_ms": 1000}
//! ```
//!
//! The filter calls the service through an Envoy cluster with the shared
//! `key` (`Authorization: Bearer <key>`): it files requests, reads the grants
//! every `poll_ms`, and uses up single-use grants.

use crate::config::ConfigError;
use crate::identity::Secret;
use serde::Deserialize;

/// The filter's connection to the approval service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalServiceConfig {
    /// The Envoy cluster of the service.
    pub cluster: String,
    /// `:authority` of the calls; the cluster name when absent.
    #[serde(default)]
    pub authority: Option<String>,
    /// The secret the service expects from filters.
    pub key: Secret,
    /// How often the grants are read.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u32,
    /// Timeout of one call.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
}

fn default_poll_ms() -> u32 {
    1000
}
fn default_timeout_ms() -> u32 {
    2000
}

impl ApprovalServiceConfig {
    /// Parses and checks the section; errors are relative to it.
    pub fn from_json(json: &[u8]) -> Result<ApprovalServiceConfig, ConfigError> {
        let config: ApprovalServiceConfig = ConfigError::parse_json(json)?;
        if config.cluster.trim().is_empty() {
            return Err(ConfigError::new("cluster", "must name an Envoy cluster"));
        }
        let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| (0x21..0x7f).contains(&b));
        if !printable(&config.key.0) {
            return Err(ConfigError::new("key", "must be non-empty printable text"));
        }
        if !(100..=60_000).contains(&config.poll_ms) {
            return Err(ConfigError::new("poll_ms", "must be 100 to 60000"));
        }
        if !(100..=30_000).contains(&config.timeout_ms) {
            return Err(ConfigError::new("timeout_ms", "must be 100 to 30000"));
        }
        Ok(config)
    }

    /// The `:authority` of calls.
    pub fn authority(&self) -> &str {
        self.authority.as_deref().unwrap_or(&self.cluster)
    }

    /// The `authorization` header value.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.key.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = ApprovalServiceConfig::from_json(br#"{"cluster": "svc", "key": "k123"}"#).unwrap();
        assert_eq!(
            (c.poll_ms, c.timeout_ms, c.authority()),
            (1000, 2000, "svc")
        );
        assert_eq!(c.authorization(), "Bearer k123");
        let err = |json: &[u8]| {
            ApprovalServiceConfig::from_json(json)
                .unwrap_err()
                .to_string()
        };
        assert!(err(br#"{"cluster": "", "key": "k"}"#).starts_with("cluster: "));
        assert!(err(br#"{"cluster": "s", "key": "a b"}"#).starts_with("key: "));
        assert!(err(br#"{"cluster": "s", "key": "k", "poll_ms": 5}"#).starts_with("poll_ms: "));
        assert!(err(br#"{"cluster": "s"}"#).contains("missing field `key`"));
    }
}
