//! Who is acting: the verified caller behind a Postgres session or a Kubernetes
//! request. Policy rules match on it and every record carries it.
//!
//! Verified identities come from JWTs: [`Verifier`] (built from an
//! [`IdentityConfig`]) checks a token against the trusted issuers' keys and maps
//! its claims to an [`Identity`], or says why not with a [`TokenRejection`].
//! Remote key sets are kept in a [`JwksCache`] per issuer, which decides when the
//! glue should fetch them. [`Verifier::verify_cached`] checks each distinct
//! token once while its verdict holds (see [`token_cache`] for when it stops).
//!
//! Driving remote key sets from the glue (every time is unix seconds):
//!
//! - on a timer, for each `(issuer, remote)` of [`Verifier::remote_jwks`]: if
//!   `jwks_cache(issuer).needs_refresh(now)`, call `on_fetch_started(now)` and fetch
//!   `remote.path` from `remote.cluster`;
//! - on the response: `on_fetch_ok(body, now)` (non-200 or timeout:
//!   `on_fetch_failed(now, reason)`); workers that receive the bytes through shared
//!   data call `on_fetch_ok(bytes, fetched_at)` with the fetching worker's time;
//! - on [`TokenRejection::UnknownKid`]: if `on_unknown_kid(now)` says so, fetch now
//!   and verify again once the response is in (rotation without restart).

mod algorithm;
mod cache;
mod config;
#[cfg(feature = "es384")]
mod es384;
mod jwks;
mod keys;
#[cfg(any(test, feature = "mint"))]
pub mod testing;
#[cfg(test)]
mod tests;
pub mod token_cache;
mod verify;

pub use algorithm::{JwsAlgorithm, KeyFamily};
pub use cache::{JwksCache, JwksCachePolicy};
pub use config::{IdentityConfig, IssuerConfig, RemoteJwksConfig, Secret};
pub use jwks::{Jwks, JwksError, MAX_JWKS_BYTES, MAX_KEYS, SkippedKey};
pub use keys::KeyFetch;
pub use token_cache::TRUSTED_SECONDS;
pub use verify::{TokenRejection, Verifier};

use serde::Serialize;
use std::collections::BTreeMap;

/// A caller as far as policy and records are concerned.
///
/// Before token verification exists for a path, `subject` is the name the client
/// claimed (e.g. the Postgres startup user) and `verified` is false.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Identity {
    /// Unique name of the caller (the JWT `sub`, or a claimed name when unverified).
    pub subject: String,
    /// Groups the caller belongs to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Token issuer, when verified from a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Token id (`jti`), when the token has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Whether `subject` was proven (a verified token) or only claimed.
    pub verified: bool,
    /// When the token proving the identity expires (unix seconds), so long
    /// sessions can re-check it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The first second (unix) the token is refused: `exp` plus the issuer's
    /// clock-skew leeway, plus one. The one rule for a token's end, at login and
    /// for everything after it ([`Identity::token_expired`]); set by verification.
    #[serde(skip)]
    pub valid_before: Option<i64>,
    /// Further claims exposed to policy rules as `claims.<name>`; never recorded
    /// in full (they may hold personal data).
    #[serde(skip)]
    pub claims: BTreeMap<String, serde_json::Value>,
}

impl Identity {
    /// An identity that only rests on what the client claimed.
    pub fn claimed(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            ..Self::default()
        }
    }

    /// Whether the token behind this identity is no longer accepted at `now`
    /// (unix seconds): from [`Identity::valid_before`], the same instant token
    /// verification starts refusing it, so a session never outlives what a new
    /// login would be allowed. Without it, at `expires_at`.
    pub fn token_expired(&self, now: i64) -> bool {
        self.valid_before
            .or(self.expires_at)
            .is_some_and(|end| now >= end)
    }

    /// Whether the caller belongs to `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}
