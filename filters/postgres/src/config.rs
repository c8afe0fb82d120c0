//! Engine configuration: parsed once from JSON, validated, shared by every session.

use gatehouse_core::config::ConfigError;
use serde::Deserialize;

/// What to do when a client asks for TLS (SSLRequest or GSSENCRequest) that would
/// make the session opaque to gatehouse.
///
/// TLS belongs in Envoy (direct TLS with ALPN `postgresql`, or the mesh). The engine
/// cannot answer a client by itself, so in both modes it sends the server an
/// SSLRequest and translates the server's one-byte answer. This needs a server
/// running with `ssl = off` behind the gateway: such a server always answers `N`.
/// A server that answers `S` expects a TLS handshake next, which would be opaque,
/// so the session is refused (08P01 to the client, session end `tls_refused`).
/// A GSSENCRequest is sent as an SSLRequest too (a server built with GSSAPI
/// answers `G` to it over TCP). As the server refuses a second SSLRequest on a
/// connection, a client asking for GSSAPI encryption and then for SSL (libpq with
/// a Kerberos ticket and `sslmode=prefer`) is refused; `gssencmode=disable` avoids it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SslRequestPolicy {
    /// The client sees `N` and may continue in plaintext (libpq `sslmode=prefer`
    /// falls back; `require` gives up on its own).
    #[default]
    AnswerNo,
    /// The client gets an ErrorResponse 08P01 and the session ends.
    Refuse,
}

/// Configuration of the Postgres wire-protocol engine.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Most bytes of partial frames the engine holds per direction. A message
    /// that needs decoding and is longer is streamed through, keeping only the
    /// prefix its record needs.
    pub max_buffered_bytes: usize,
    /// Statement text longer than this is cut in records (`statement_truncated`).
    pub max_statement_bytes: usize,
    /// Replace literals in recorded statements by `$n` placeholders.
    pub redact_literals: bool,
    /// Record bind parameter values.
    pub record_parameters: bool,
    /// Bind parameter values longer than this are recorded as their length only.
    pub max_parameter_bytes: usize,
    /// Most prepared statements and portals remembered per session (each); names
    /// beyond it are executed normally but recorded without their text. With
    /// `max_statement_bytes` it bounds the statement text a session keeps
    /// (256 × 8 KiB = 2 MiB by default, on top of the frame buffers).
    pub max_prepared_statements: usize,
    /// Answer to an SSLRequest or GSSENCRequest.
    pub ssl_request: SslRequestPolicy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_buffered_bytes: 1024 * 1024,
            max_statement_bytes: 8 * 1024,
            redact_literals: false,
            record_parameters: false,
            max_parameter_bytes: 256,
            max_prepared_statements: 256,
            ssl_request: SslRequestPolicy::AnswerNo,
        }
    }
}

impl EngineConfig {
    /// Parses and validates a JSON configuration.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let config: Self = ConfigError::parse_json(json)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks value ranges; errors name the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Large enough for any startup packet, error or RowDescription we decode.
        const MIN_BUFFERED: usize = 16 * 1024;
        const MAX_BUFFERED: usize = 256 * 1024 * 1024;
        if !(MIN_BUFFERED..=MAX_BUFFERED).contains(&self.max_buffered_bytes) {
            return Err(ConfigError::new(
                "max_buffered_bytes",
                format!("must be between {MIN_BUFFERED} and {MAX_BUFFERED}"),
            ));
        }
        if self.max_statement_bytes == 0 || self.max_statement_bytes > self.max_buffered_bytes {
            return Err(ConfigError::new(
                "max_statement_bytes",
                "must be at least 1 and at most max_buffered_bytes",
            ));
        }
        if self.max_parameter_bytes > self.max_buffered_bytes {
            return Err(ConfigError::new(
                "max_parameter_bytes",
                "must be at most max_buffered_bytes",
            ));
        }
        if self.max_prepared_statements > 1_000_000 {
            return Err(ConfigError::new(
                "max_prepared_statements",
                "must be at most 1000000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_gives_defaults() {
        assert_eq!(
            EngineConfig::from_json(b"{}").unwrap(),
            EngineConfig::default()
        );
    }

    #[test]
    fn unknown_field_is_rejected() {
        let e = EngineConfig::from_json(br#"{"max_buffer": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let e = EngineConfig::from_json(br#"{"max_buffered_bytes": 10}"#).unwrap_err();
        assert_eq!(e.path, "max_buffered_bytes");
        let e = EngineConfig::from_json(br#"{"max_statement_bytes": 0}"#).unwrap_err();
        assert_eq!(e.path, "max_statement_bytes");
    }

    #[test]
    fn ssl_policy_parses_snake_case() {
        let c = EngineConfig::from_json(br#"{"ssl_request": "refuse", "redact_literals": true}"#)
            .unwrap();
        assert_eq!(c.ssl_request, SslRequestPolicy::Refuse);
        assert!(c.redact_literals);
    }
}
