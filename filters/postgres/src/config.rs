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

/// Largest `max_session_bytes`.
const MAX_SESSION_BYTES: usize = 1024 * 1024 * 1024;

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
    /// Server settings a client may give in its StartupMessage, besides `user`
    /// and `database` (compared as the server compares setting names: without
    /// regard to case). Any other parameter refuses the session; see
    /// [`crate::startup`]. `client_encoding` is also checked for its value.
    pub startup_parameters: Vec<String>,
    /// Functions a client may call through the fast-path interface
    /// (FunctionCall), as `schema.name` or `name` (in `pg_catalog`). A call is
    /// judged by the statement policy as the SQL call it is; a function not
    /// named here is refused. See [`crate::fastpath`].
    pub fast_path_functions: Vec<String>,
    /// Most bytes one session may hold (requests awaiting answers, statement
    /// texts, prepared statements and portals, queued records, masking state,
    /// partial frames). A client that sends more without reading the answers
    /// ends its session with `FATAL 53200`.
    pub max_session_bytes: usize,
}

/// Startup parameters allowed by default: what psql, pgbench, libpq's
/// environment (`PGDATESTYLE`, `PGTZ`, `PGGEQO`), psycopg, JDBC, node-postgres,
/// tokio-postgres and asyncpg send, none of which changes how statements are
/// lexed or who runs them.
pub const DEFAULT_STARTUP_PARAMETERS: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "extra_float_digits",
    "search_path",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "geqo",
];

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
            startup_parameters: DEFAULT_STARTUP_PARAMETERS
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
            fast_path_functions: Vec::new(),
            max_session_bytes: 32 * 1024 * 1024,
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
        // Room for a whole frame held in each direction, and what comes with it.
        let min_session = 4 * self.max_buffered_bytes;
        if !(min_session..=MAX_SESSION_BYTES).contains(&self.max_session_bytes) {
            return Err(ConfigError::new(
                "max_session_bytes",
                format!(
                    "must be between 4 x max_buffered_bytes ({min_session}) and {MAX_SESSION_BYTES}"
                ),
            ));
        }
        for (i, name) in self.startup_parameters.iter().enumerate() {
            crate::startup::check_allowed_name(name)
                .map_err(|e| ConfigError::new(format!("startup_parameters[{i}]"), e.to_string()))?;
        }
        for (i, name) in self.fast_path_functions.iter().enumerate() {
            crate::fastpath::FunctionName::parse(name).map_err(|e| {
                ConfigError::new(format!("fast_path_functions[{i}]"), e.to_string())
            })?;
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
    fn startup_parameters_that_would_bypass_the_policy_cannot_be_allowed() {
        for (name, why) in [
            ("options", "options"),
            ("replication", "replication"),
            ("_pq_.compression", "protocol option"),
            ("standard_conforming_strings", "lexes"),
            ("Backslash_Quote", "lexes"),
            ("role", "role"),
            ("session_authorization", "role"),
            ("bad name", "not a setting name"),
            ("", "not a setting name"),
        ] {
            let json = format!(r#"{{"startup_parameters": ["application_name", "{name}"]}}"#);
            let e = EngineConfig::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(e.path, "startup_parameters[1]", "{name}");
            assert!(e.to_string().contains(why), "{name}: {e}");
        }
        let c = EngineConfig::from_json(br#"{"startup_parameters": ["work_mem", "myapp.tenant"]}"#)
            .unwrap();
        assert_eq!(c.startup_parameters, ["work_mem", "myapp.tenant"]);
    }

    #[test]
    fn fast_path_functions_must_be_plain_names() {
        let c = EngineConfig::from_json(
            br#"{"fast_path_functions": ["lo_open", "pg_catalog.loread", "app.Fn"]}"#,
        )
        .unwrap();
        assert_eq!(c.fast_path_functions.len(), 3);
        for bad in [
            r#""a.b.c""#,
            r#""""#,
            r#""x\\y""#,
            r#""lo_open()""#,
            r#"".lo_open""#,
        ] {
            let json = format!(r#"{{"fast_path_functions": ["lo_open", {bad}]}}"#);
            let e = EngineConfig::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(e.path, "fast_path_functions[1]", "{bad}: {e}");
        }
    }

    #[test]
    fn session_bound_leaves_room_for_the_frame_buffers() {
        let e = EngineConfig::from_json(
            br#"{"max_buffered_bytes": 1048576, "max_session_bytes": 2097152}"#,
        )
        .unwrap_err();
        assert_eq!(e.path, "max_session_bytes");
        assert!(
            EngineConfig::from_json(br#"{"max_session_bytes": 4194304}"#).is_ok(),
            "4 x the default buffer"
        );
    }

    #[test]
    fn ssl_policy_parses_snake_case() {
        let c = EngineConfig::from_json(br#"{"ssl_request": "refuse", "redact_literals": true}"#)
            .unwrap();
        assert_eq!(c.ssl_request, SslRequestPolicy::Refuse);
        assert!(c.redact_literals);
    }
}
