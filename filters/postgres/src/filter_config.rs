//! The Postgres filter's whole configuration: one JSON object with a key per
//! part, every part optional, unknown keys rejected. Errors name the JSON path of
//! the offending value (`engine.max_buffered_bytes`, `policy.rules[2].action`).
//!
//! ```json
//! { "engine": { "max_buffered_bytes": 1048576 }, "policy": { "rules": [] } }
//! ```
//!
//! - `engine`: [`EngineConfig`] (buffer limits, what records contain, the answer
//!   to SSLRequest).
//! - `policy`: a statement policy ([`PgPolicy`], see `examples/postgres-policy.json`);
//!   without it every statement is allowed.
//! - `identity` and `login` (together): token login. `identity` names the trusted
//!   token issuers ([`IdentityConfig`](gatehouse_core::identity::IdentityConfig)),
//!   `login` which identities may use which database roles ([`LoginConfig`]).
//!   Without them the session's identity is the user the client claims, unverified.
//! - `masking`: masking of what the server sends back ([`MaskingPolicy`], shape in
//!   [`crate::masking::config`], demo in `examples/postgres-masking.json`); without
//!   it nothing is masked.
//! - `approvals`: the approval service
//!   ([`ApprovalServiceConfig`](gatehouse_core::approval::ApprovalServiceConfig)):
//!   with it, statements a `require_approval` rule matches are refused with a
//!   request filed, and pass once approved (see [`crate::approval`]); without
//!   it they are refused like denials.
//! - `mode`: `"enforce"` (the default) or `"shadow"`: observe only. A shadow
//!   instance never changes the traffic; its records (`"mode": "shadow"`) say
//!   what it would have denied and masked. See `envoy/README.md` for running one
//!   beside the enforcing instance.

use crate::config::EngineConfig;
use crate::login::LoginConfig;
use crate::masking::MaskingPolicy;
use crate::policy::PgPolicy;
use gatehouse_core::approval::ApprovalServiceConfig;
use gatehouse_core::config::{ConfigError, config_hash};
use gatehouse_core::identity::Verifier;
use gatehouse_core::record::FilterMode;
use serde::Deserialize;
use std::sync::Arc;

/// The filter's configuration, as documented in the module doc.
#[derive(Debug, Default)]
pub struct FilterConfig {
    /// The wire engine's settings.
    pub engine: EngineConfig,
    /// The statement policy, when configured.
    pub policy: Option<PolicyConfig>,
    /// Token login, when configured.
    pub token_login: Option<TokenLoginConfig>,
    /// `sha256:<hex>` of the configuration document, stamped on every record.
    pub hash: String,
    /// Masking of server results, when configured.
    pub masking: Option<MaskingConfig>,
    /// Enforce, or observe only.
    pub mode: FilterMode,
    /// The approval service, when configured.
    pub approvals: Option<ApprovalServiceConfig>,
}

/// A compiled masking policy; two are equal when compiled from the same document.
#[derive(Debug, Clone)]
pub struct MaskingConfig {
    pub policy: Arc<MaskingPolicy>,
    source: serde_json::Value,
}

impl PartialEq for MaskingConfig {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// A compiled statement policy; two are equal when compiled from the same document.
#[derive(Debug, Clone)]
pub struct PolicyConfig(pub Arc<PgPolicy>);

impl PartialEq for PolicyConfig {
    fn eq(&self, other: &Self) -> bool {
        self.0.fingerprint() == other.0.fingerprint()
    }
}

/// Token login: the verifier of the trusted issuers and the role grants.
#[derive(Debug, Clone)]
pub struct TokenLoginConfig {
    pub verifier: Verifier,
    pub login: Arc<LoginConfig>,
}

/// The top level, with each part kept raw so its errors can be re-rooted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilterConfig {
    #[serde(default)]
    engine: Option<serde_json::Value>,
    #[serde(default)]
    policy: Option<serde_json::Value>,
    #[serde(default)]
    identity: Option<serde_json::Value>,
    #[serde(default)]
    login: Option<serde_json::Value>,
    #[serde(default)]
    masking: Option<serde_json::Value>,
    #[serde(default)]
    mode: Option<serde_json::Value>,
    #[serde(default)]
    approvals: Option<serde_json::Value>,
}

impl FilterConfig {
    /// Parses the plugin configuration; an empty one means all defaults. Errors
    /// name the JSON path of the offending value (`engine.max_buffered_bytes`).
    pub fn from_json(json: &[u8]) -> Result<FilterConfig, ConfigError> {
        if json.iter().all(u8::is_ascii_whitespace) {
            return Ok(FilterConfig {
                hash: config_hash(json),
                ..FilterConfig::default()
            });
        }
        let raw: RawFilterConfig = ConfigError::parse_json(json)?;
        let engine = part(raw.engine, "engine", EngineConfig::from_json)?.unwrap_or_default();
        let policy = part(raw.policy, "policy", |json| {
            PgPolicy::from_json(json).map(|policy| PolicyConfig(Arc::new(policy)))
        })?;
        let verifier = part(raw.identity, "identity", Verifier::from_json)?;
        let login = part(raw.login, "login", LoginConfig::from_json)?;
        let token_login = match (verifier, login) {
            (Some(verifier), Some(login)) => Some(TokenLoginConfig {
                verifier,
                login: Arc::new(login),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "login",
                    "token login needs a login section saying which identities may use which roles",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "identity",
                    "token login needs an identity section naming the trusted token issuers",
                ));
            }
        };
        let source = raw.masking.clone().unwrap_or_default();
        let masking =
            part(raw.masking, "masking", MaskingPolicy::from_json)?.map(|policy| MaskingConfig {
                policy: Arc::new(policy),
                source,
            });
        let mode =
            part(raw.mode, "mode", ConfigError::parse_json::<FilterMode>)?.unwrap_or_default();
        let approvals = part(raw.approvals, "approvals", ApprovalServiceConfig::from_json)?;
        Ok(FilterConfig {
            engine,
            policy,
            token_login,
            masking,
            mode,
            approvals,
            hash: config_hash(json),
        })
    }
}

/// Compiles one top-level part with its own parser, re-rooting its errors under `name`.
fn part<T>(
    value: Option<serde_json::Value>,
    name: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let bytes = serde_json::to_vec(&value).map_err(|e| ConfigError::new(name, e.to_string()))?;
    parse(&bytes).map(Some).map_err(|e| e.under(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_configuration_means_defaults() {
        for empty in [&b""[..], b" \n", b"{}"] {
            let config = FilterConfig::from_json(empty).unwrap();
            assert_eq!(config.engine, EngineConfig::default());
            assert!(config.policy.is_none());
            assert!(config.token_login.is_none());
        }
    }

    #[test]
    fn token_login_needs_both_identity_and_login() {
        let identity = r#""identity": {"issuers": [{"issuer": "https://idp.test",
            "audiences": ["gatehouse"], "remote_jwks": {"cluster": "idp", "path": "/jwks"}}]}"#;
        let login = r#""login": {"roles": [{"role": "app", "match": {"groups": ["dev"]}}]}"#;
        let both = FilterConfig::from_json(format!("{{{identity}, {login}}}").as_bytes()).unwrap();
        let token_login = both.token_login.expect("token login configured");
        assert_eq!(token_login.login.deadline_seconds, 10);
        let error = FilterConfig::from_json(format!("{{{identity}}}").as_bytes()).unwrap_err();
        assert_eq!(error.path, "login");
        let error = FilterConfig::from_json(format!("{{{login}}}").as_bytes()).unwrap_err();
        assert_eq!(error.path, "identity");
        let error =
            FilterConfig::from_json(br#"{"identity": {"issuers": []}, "login": {"roles": []}}"#)
                .unwrap_err();
        assert_eq!(error.path, "identity.issuers");
    }

    #[test]
    fn policy_is_compiled_from_the_policy_key_and_its_errors_name_the_path() {
        let demo = include_str!("../../../examples/postgres-policy.json");
        let config =
            FilterConfig::from_json(format!(r#"{{"policy": {demo}}}"#).as_bytes()).unwrap();
        let policy = config.policy.expect("policy configured");
        assert_eq!(policy.0.version(), "default-2026-11");
        let error = FilterConfig::from_json(br#"{"policy": {"default": {"action": "maybe"}}}"#)
            .unwrap_err();
        assert!(error.to_string().starts_with("policy."), "{error}");
    }

    #[test]
    fn engine_settings_are_read_from_the_engine_key() {
        let config = FilterConfig::from_json(br#"{"engine": {"redact_literals": true}}"#).unwrap();
        assert!(config.engine.redact_literals);
    }

    #[test]
    fn engine_errors_name_their_path_under_engine() {
        let error =
            FilterConfig::from_json(br#"{"engine": {"max_buffered_bytes": 1}}"#).unwrap_err();
        assert_eq!(error.path, "engine.max_buffered_bytes");
        let error = FilterConfig::from_json(br#"{"engine": {"bogus": 1}}"#).unwrap_err();
        assert!(error.to_string().contains("bogus"), "{error}");
    }

    #[test]
    fn masking_is_compiled_from_the_masking_key_and_its_errors_name_the_path() {
        let demo = include_str!("../../../examples/postgres-masking.json");
        let config =
            FilterConfig::from_json(format!(r#"{{"masking": {demo}}}"#).as_bytes()).unwrap();
        let masking = config.masking.expect("masking configured");
        assert_eq!(masking.policy.rules.len(), 3);
        let error = FilterConfig::from_json(
            br#"{"masking": {"rules": [{"table": "t", "column": "c", "style": "blur"}]}}"#,
        )
        .unwrap_err();
        assert_eq!(error.path, "masking.rules[0].style");
    }

    #[test]
    fn mode_defaults_to_enforce_and_unknown_modes_are_rejected_at_mode() {
        assert_eq!(
            FilterConfig::from_json(b"{}").unwrap().mode,
            FilterMode::Enforce
        );
        let shadow = FilterConfig::from_json(br#"{"mode": "shadow"}"#).unwrap();
        assert_eq!(shadow.mode, FilterMode::Shadow);
        let error = FilterConfig::from_json(br#"{"mode": "audit"}"#).unwrap_err();
        assert_eq!(error.path, "mode");
        assert!(error.to_string().contains("shadow"), "{error}");
    }

    #[test]
    fn the_approval_service_is_read_from_the_approvals_key() {
        let config = FilterConfig::from_json(
            br#"{"approvals": {"cluster": "gatehouse_approvals", "key": "k-1234"}}"#,
        )
        .unwrap();
        assert_eq!(config.approvals.unwrap().cluster, "gatehouse_approvals");
        let error = FilterConfig::from_json(
            br#"{"approvals": {"cluster": "c", "key": "k", "poll_ms": 1}}"#,
        )
        .unwrap_err();
        assert_eq!(error.path, "approvals.poll_ms");
    }

    #[test]
    fn unknown_top_level_keys_are_rejected() {
        let error = FilterConfig::from_json(br#"{"engnie": {}}"#).unwrap_err();
        assert!(error.to_string().contains("engnie"), "{error}");
    }
}
