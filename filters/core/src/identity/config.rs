//! Configuration of token verification: the issuers gatehouse trusts.
//!
//! ```json
//! {"issuers": [{
//!    "issuer": "https://idp.example.com",
//!    "audiences": ["gatehouse"],
//!    "remote_jwks": {"cluster": "idp", "path": "/jwks.json", "refresh_seconds": 300},
//!    "groups_claim": "realm_access.roles"
//! }]}
//! ```
//!
//! [`super::Verifier::from_config`] checks the values and compiles them.

use serde::Deserialize;
use std::fmt;

/// Trusted issuers; a token must come from one of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The issuers, each with its own keys and claim mapping.
    pub issuers: Vec<IssuerConfig>,
}

/// One trusted issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` value of its tokens.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    /// Inline key set: a JWKS object, or a string holding one.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Key set fetched from an Envoy cluster (instead of `jwks`).
    #[serde(default)]
    pub remote_jwks: Option<RemoteJwksConfig>,
    /// Claim naming the caller; a dotted path reaches into nested objects.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Claim listing the caller's groups (a string or an array of strings); a dotted
    /// path such as `realm_access.roles` reaches into nested objects.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`: a token is accepted until `exp`
    /// plus this, at login and mid-session alike.
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u32,
    /// Largest token accepted, in bytes.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Accepted `alg` values; defaults to every asymmetric algorithm, plus HS256
    /// when `hs256_secret` is set.
    #[serde(default)]
    pub allowed_algorithms: Option<Vec<String>>,
    /// Base64 shared secret enabling HS256 (at least 32 bytes once decoded).
    #[serde(default)]
    pub hs256_secret: Option<Secret>,
}

/// Where and how often to fetch an issuer's key set. The fetch itself is done by
/// the Envoy glue; [`super::JwksCache`] decides when.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwksConfig {
    /// Envoy cluster serving the key set.
    pub cluster: String,
    /// Request path, e.g. `/.well-known/jwks.json`.
    pub path: String,
    /// `:authority` of the request; the cluster name when absent.
    #[serde(default)]
    pub authority: Option<String>,
    /// Period between scheduled refreshes.
    #[serde(default = "default_refresh_seconds")]
    pub refresh_seconds: u32,
    /// Least time between two fetches (bounds fetches caused by unknown `kid`s).
    #[serde(default = "default_min_refetch_seconds")]
    pub min_refetch_seconds: u32,
    /// How long past its refresh time a key set is still used while the identity
    /// provider cannot be reached; after that, tokens fail with `keys_unavailable`.
    #[serde(default = "default_max_stale_seconds")]
    pub max_stale_seconds: u32,
    /// Timeout of one fetch.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
}

/// A configured secret; never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

fn default_subject_claim() -> String {
    "sub".to_owned()
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}
fn default_leeway_seconds() -> u32 {
    60
}
fn default_max_token_bytes() -> usize {
    8192
}
fn default_refresh_seconds() -> u32 {
    300
}
fn default_min_refetch_seconds() -> u32 {
    30
}
fn default_max_stale_seconds() -> u32 {
    24 * 3600
}
fn default_timeout_ms() -> u32 {
    5000
}

/// Limits on configured values, checked by [`super::Verifier::from_config`].
pub(crate) mod limits {
    pub const MAX_ISSUERS: usize = 32;
    pub const MAX_LEEWAY_SECONDS: u32 = 3600;
    pub const MIN_TOKEN_BYTES: usize = 256;
    pub const MAX_TOKEN_BYTES: usize = 64 * 1024;
    pub const MIN_HS256_SECRET_BYTES: usize = 32;
    pub const MIN_REFRESH_SECONDS: u32 = 10;
    pub const MAX_TIMEOUT_MS: u32 = 60_000;
}
