//! The `upstream` section: the credential the gateway sends in place of the
//! caller's.

use gatehouse_core::config::ConfigError;
use gatehouse_core::identity::Secret;
use serde::Deserialize;

/// What the gateway sends upstream in place of the caller's credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The gateway's own bearer token (e.g. a service-account token), sent as
    /// `Authorization: Bearer ...`.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Or any other header carrying the gateway's credential.
    #[serde(default)]
    pub header: Option<UpstreamHeader>,
    /// Send `Impersonate-User` / `Impersonate-Group` naming the verified caller.
    #[serde(default)]
    pub impersonate: bool,
}

/// A header the gateway adds upstream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamHeader {
    pub name: String,
    pub value: Secret,
}

impl UpstreamConfig {
    /// Refuses an ambiguous or malformed credential, and headers that would
    /// let the configuration impersonate someone.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let upstream = self;
        if upstream.bearer_token.is_some() && upstream.header.is_some() {
            return Err(ConfigError::new(
                "upstream",
                "set either bearer_token or header, not both",
            ));
        }
        if let Some(header) = &upstream.header {
            let valid = !header.name.is_empty()
                && header
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(ConfigError::new(
                    "upstream.header.name",
                    format!("\"{}\" is not a valid header name", header.name),
                ));
            }
            if header.name.eq_ignore_ascii_case("impersonate-user")
                || header.name.to_ascii_lowercase().starts_with("impersonate-")
            {
                return Err(ConfigError::new(
                    "upstream.header.name",
                    "impersonation headers are set from the verified caller",
                ));
            }
        }
        let unprintable = |s: &str| s.bytes().any(|b| b < 0x20 || b == 0x7f);
        let token = upstream
            .bearer_token
            .as_ref()
            .map(|t| t.0.as_str())
            .or(upstream.header.as_ref().map(|h| h.value.0.as_str()));
        if token.is_some_and(|t| t.is_empty() || unprintable(t)) {
            return Err(ConfigError::new(
                "upstream",
                "the credential must be non-empty printable text",
            ));
        }
        Ok(())
    }
}
