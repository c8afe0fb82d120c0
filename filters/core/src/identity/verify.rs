//! Token verification: from a compact JWT to a verified [`Identity`], or a
//! distinct [`TokenRejection`].
//!
//! Checks run in this order, so each token gets the most specific reason:
//!
//! 1. size (`oversized`) and structure (`malformed`);
//! 2. `alg` (`alg_none`, or `alg_not_allowed` for anything unsupported);
//! 3. the unverified `iss` selects the issuer (`unknown_issuer`), whose size limit
//!    and algorithm list then apply;
//! 4. the key: by `kid` in that issuer's set (`unknown_kid`; `wrong_issuer` when the
//!    kid belongs to another trusted issuer; `alg_key_mismatch` when the key's type
//!    or pinned `alg` does not fit). A token without `kid` is verified only when
//!    exactly one key of the set fits its `alg`; otherwise it is `unknown_kid`, so
//!    a token never costs more than one signature check;
//! 5. the signature (`bad_signature`);
//! 6. `exp` (required: `missing_expiry`, `expired`) and `nbf` (`not_yet_valid`),
//!    both with the issuer's leeway;
//! 7. `aud` (`missing_audience`, `wrong_audience`);
//! 8. the subject and groups claims (`missing_subject`, `malformed`).

use super::Identity;
use super::algorithm::{JwsAlgorithm, KeyFamily};
use super::cache::{JwksCache, JwksCachePolicy};
use super::config::{IdentityConfig, IssuerConfig, RemoteJwksConfig, limits};
#[cfg(feature = "es384")]
use super::es384::Es384;
use super::jwks::{Jwks, VerifyingKey, decode_base64url};
use super::token_cache::{TokenCache, Validity};
use crate::config::ConfigError;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Rsa};
use jwt_compact::{AlgorithmExt as _, Claims, Empty, TimeOptions, UntrustedToken, ValidationError};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Why a token was refused. [`TokenRejection::code`] is stable for records and
/// metrics; `Display` is safe to show the client (it never includes the token,
/// keys or secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejection {
    /// Larger than the size limit.
    #[error("token is too large")]
    Oversized,
    /// Not a well-formed JWS compact token, or a claim has the wrong type.
    #[error("token is malformed")]
    Malformed,
    /// `alg: none`.
    #[error("unsigned tokens (alg none) are not accepted")]
    AlgNone,
    /// `alg` is unsupported or not allowed for the issuer.
    #[error("token signing algorithm is not allowed")]
    AlgNotAllowed,
    /// The key named by `kid` is of another type, or pinned to another `alg`.
    #[error("token algorithm does not match its signing key")]
    AlgKeyMismatch,
    /// `iss` is missing or not a trusted issuer.
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    /// The `kid` belongs to another trusted issuer than the token's `iss`.
    #[error("token is signed by a key of a different issuer")]
    WrongIssuer,
    /// No key of the issuer's set has the token's `kid` (a refetch may help).
    #[error("token is signed by an unknown key")]
    UnknownKid {
        /// The configured issuer whose set lacks the key.
        issuer: String,
    },
    /// The issuer's remote key set has not been fetched, or is stale beyond its bound.
    #[error("signing keys of the token issuer are unavailable")]
    KeysUnavailable {
        /// The configured issuer whose keys are missing.
        issuer: String,
    },
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// No `exp` claim.
    #[error("token has no expiry")]
    MissingExpiry,
    /// `exp` has passed (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// No `aud` claim.
    #[error("token has no audience")]
    MissingAudience,
    /// `aud` names none of the accepted audiences.
    #[error("token is not meant for this service")]
    WrongAudience,
    /// The subject claim is missing or empty.
    #[error("token has no subject")]
    MissingSubject,
}

impl TokenRejection {
    /// Stable machine-readable reason, e.g. `expired`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::Malformed => "malformed",
            Self::AlgNone => "alg_none",
            Self::AlgNotAllowed => "alg_not_allowed",
            Self::AlgKeyMismatch => "alg_key_mismatch",
            Self::UnknownIssuer => "unknown_issuer",
            Self::WrongIssuer => "wrong_issuer",
            Self::UnknownKid { .. } => "unknown_kid",
            Self::KeysUnavailable { .. } => "keys_unavailable",
            Self::BadSignature => "bad_signature",
            Self::MissingExpiry => "missing_expiry",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::MissingAudience => "missing_audience",
            Self::WrongAudience => "wrong_audience",
            Self::MissingSubject => "missing_subject",
        }
    }
}

/// Header fields beyond the ones the token library reads.
#[derive(Debug, Clone, Default, Deserialize)]
struct ExtraHeader {
    /// Critical extensions (RFC 7515 section 4.1.11); gatehouse understands none.
    #[serde(default)]
    crit: Option<Value>,
}

/// A claim name, or a dotted path into nested objects.
#[derive(Debug, Clone)]
struct ClaimPath {
    name: String,
}

impl ClaimPath {
    fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.split('.').any(str::is_empty) {
            return Err(format!("{name:?} is not a claim name or dotted path"));
        }
        Ok(Self {
            name: name.to_owned(),
        })
    }

    /// A top-level claim with the full name wins (namespaced claims such as
    /// `https://example.com/groups` contain dots); otherwise the dotted path.
    fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some(value) = claims.get(&self.name) {
            return Some(value);
        }
        let mut segments = self.name.split('.');
        let first = claims.get(segments.next()?)?;
        segments.try_fold(first, |value, segment| value.get(segment))
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
enum KeySource {
    /// HS256 only: no public keys.
    None,
    Inline(Jwks),
    Remote {
        config: RemoteJwksConfig,
        cache: Box<JwksCache>,
    },
}

#[derive(Clone)]
struct IssuerVerifier {
    issuer: String,
    audiences: Vec<String>,
    subject_claim: ClaimPath,
    groups_claim: ClaimPath,
    leeway_seconds: i64,
    max_token_bytes: usize,
    allowed_algorithms: Vec<JwsAlgorithm>,
    hs256_key: Option<Hs256Key>,
    keys: KeySource,
}

impl IssuerVerifier {
    fn current_keys(&self, now: i64) -> Option<&Jwks> {
        match &self.keys {
            KeySource::None => None,
            KeySource::Inline(jwks) => Some(jwks),
            KeySource::Remote { cache, .. } => cache.keys(now),
        }
    }

    /// The last second the issuer's keys may verify a token signed with
    /// `alg`; `None` when they never go stale (inline keys, HS256's secret).
    fn keys_usable_until(&self, alg: JwsAlgorithm) -> Option<i64> {
        match &self.keys {
            KeySource::Remote { cache, .. } if alg.key_family() != KeyFamily::Hmac => {
                cache.usable_until()
            }
            _ => None,
        }
    }
}

/// Verifies tokens of the configured issuers.
///
/// Built once from the configuration; each worker holds its own. Its changing
/// state is the remote key sets, updated through [`Verifier::jwks_cache_mut`],
/// and the tokens it verified recently ([`Verifier::verify_cached`]).
#[derive(Clone)]
pub struct Verifier {
    issuers: Vec<IssuerVerifier>,
    /// Largest per-issuer limit: the bound before the issuer is known.
    max_token_bytes: usize,
    pub(super) trusted: TokenCache,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Issuer names only: the HS256 secrets stay out of logs.
        f.debug_struct("Verifier")
            .field(
                "issuers",
                &self.issuers.iter().map(|i| &i.issuer).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Checks and compiles the configuration; errors name the offending path
    /// (e.g. `issuers[1].allowed_algorithms[0]`).
    pub fn from_config(config: &IdentityConfig) -> Result<Verifier, ConfigError> {
        if config.issuers.is_empty() {
            return Err(ConfigError::new(
                "issuers",
                "at least one issuer is required",
            ));
        }
        if config.issuers.len() > limits::MAX_ISSUERS {
            return Err(ConfigError::new(
                "issuers",
                format!("at most {} issuers are supported", limits::MAX_ISSUERS),
            ));
        }
        let mut issuers: Vec<IssuerVerifier> = Vec::with_capacity(config.issuers.len());
        for (index, issuer) in config.issuers.iter().enumerate() {
            let path = format!("issuers[{index}]");
            let compiled = compile_issuer(issuer).map_err(|e| e.under(&path))?;
            if issuers.iter().any(|i| i.issuer == compiled.issuer) {
                return Err(ConfigError::new(
                    format!("{path}.issuer"),
                    format!("issuer {:?} is configured twice", compiled.issuer),
                ));
            }
            issuers.push(compiled);
        }
        let max_token_bytes = issuers.iter().map(|i| i.max_token_bytes).max().unwrap_or(0);
        Ok(Verifier {
            issuers,
            max_token_bytes,
            trusted: TokenCache::default(),
        })
    }

    /// Parses a JSON configuration and compiles it.
    pub fn from_json(config: &[u8]) -> Result<Verifier, ConfigError> {
        Self::from_config(&ConfigError::parse_json(config)?)
    }

    /// The issuers whose keys are fetched remotely, with their fetch settings.
    pub fn remote_jwks(&self) -> impl Iterator<Item = (&str, &RemoteJwksConfig)> {
        self.issuers.iter().filter_map(|i| match &i.keys {
            KeySource::Remote { config, .. } => Some((i.issuer.as_str(), config)),
            _ => None,
        })
    }

    /// The key cache of a remote issuer.
    pub fn jwks_cache(&self, issuer: &str) -> Option<&JwksCache> {
        self.issuers
            .iter()
            .find(|i| i.issuer == issuer)
            .and_then(|i| match &i.keys {
                KeySource::Remote { cache, .. } => Some(&**cache),
                _ => None,
            })
    }

    /// The key cache of a remote issuer, to record fetches.
    pub fn jwks_cache_mut(&mut self, issuer: &str) -> Option<&mut JwksCache> {
        self.issuers
            .iter_mut()
            .find(|i| i.issuer == issuer)
            .and_then(|i| match &mut i.keys {
                KeySource::Remote { cache, .. } => Some(&mut **cache),
                _ => None,
            })
    }

    /// Verifies `token` at `now_unix_seconds` and maps its claims to an identity.
    pub fn verify(&self, token: &str, now_unix_seconds: i64) -> Result<Identity, TokenRejection> {
        self.verify_with_validity(token, now_unix_seconds)
            .map(|(identity, _)| identity)
    }

    /// [`Verifier::verify`], but a token this verifier accepted recently is
    /// not checked again while that verdict still holds (see
    /// [`super::token_cache`]): the result is the same, and so is a refusal,
    /// which is never kept.
    pub fn verify_cached(&mut self, token: &str, now: i64) -> Result<Identity, TokenRejection> {
        let key_generation = self.key_generation();
        self.trusted.keep_only(key_generation);
        if let Some(identity) = self.trusted.get(token, now, key_generation) {
            return Ok(identity.clone());
        }
        let (identity, validity) = self.verify_with_validity(token, now)?;
        self.trusted
            .insert(token, &identity, validity, now, key_generation);
        Ok(identity)
    }

    /// How many tokens [`Verifier::verify_cached`] trusts without a new check.
    pub fn trusted_tokens(&self) -> usize {
        self.trusted.len()
    }

    /// Moves whenever any issuer's remote key set is replaced by a different
    /// one (the sum of the caches' generations, each of which only grows).
    fn key_generation(&self) -> u64 {
        self.issuers
            .iter()
            .filter_map(|issuer| match &issuer.keys {
                KeySource::Remote { cache, .. } => Some(cache.generation()),
                _ => None,
            })
            .fold(0, u64::wrapping_add)
    }

    /// Verifies `token` at `now`, and says until when verifying it again
    /// would give the same identity.
    fn verify_with_validity(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(Identity, Validity), TokenRejection> {
        let Unverified {
            issuer,
            alg,
            untrusted,
            claims,
        } = self.unverified(token)?;
        self.check_signature(issuer, alg, &untrusted, now)?;
        check_times(&claims, issuer.leeway_seconds, now)?;
        check_audience(&claims.custom, &issuer.audiences)?;
        let from = claims
            .not_before
            .map(|nbf| nbf.timestamp().saturating_sub(issuer.leeway_seconds));
        let keys_end = issuer
            .keys_usable_until(alg)
            .map(|last| last.saturating_add(1));
        let identity = identity_from_claims(issuer, claims)?;
        let before = match (identity.valid_before, keys_end) {
            (Some(expiry), Some(keys_end)) => expiry.min(keys_end),
            (Some(end), None) | (None, Some(end)) => end,
            (None, None) => i64::MIN,
        };
        Ok((identity, Validity { from, before }))
    }

    /// Whether [`Verifier::verify`] would refuse `token` at `now` for lack of
    /// its issuer's keys ([`TokenRejection::UnknownKid`] or
    /// [`TokenRejection::KeysUnavailable`]) and for nothing found before that;
    /// that rejection if so. Checks no signature: a host asks this before it
    /// judges a login, to fetch the keys first and judge once.
    pub fn lacks_keys(&self, token: &str, now: i64) -> Option<TokenRejection> {
        if self
            .trusted
            .get(token, now, self.key_generation())
            .is_some()
        {
            return None;
        }
        let unverified = self.unverified(token).ok()?;
        if unverified.alg.key_family() == KeyFamily::Hmac {
            return None;
        }
        let kid = unverified.untrusted.header().key_id.as_deref();
        match self.select_key(unverified.issuer, unverified.alg, kid, now) {
            Err(
                rejection @ (TokenRejection::UnknownKid { .. }
                | TokenRejection::KeysUnavailable { .. }),
            ) => Some(rejection),
            _ => None,
        }
    }

    /// The token taken apart, its issuer found and its algorithm allowed:
    /// every check before the signature.
    fn unverified<'t>(&self, token: &'t str) -> Result<Unverified<'t, '_>, TokenRejection> {
        if token.len() > self.max_token_bytes {
            return Err(TokenRejection::Oversized);
        }
        let untrusted = UntrustedToken::<ExtraHeader>::try_from(token)
            .map_err(|_| TokenRejection::Malformed)?;
        if untrusted.header().other_fields.crit.is_some() {
            return Err(TokenRejection::Malformed);
        }
        let alg_name = untrusted.algorithm();
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(TokenRejection::AlgNone);
        }
        let alg = JwsAlgorithm::from_name(alg_name).ok_or(TokenRejection::AlgNotAllowed)?;
        let claims: Claims<Map<String, Value>> = untrusted
            .deserialize_claims_unchecked()
            .map_err(|_| TokenRejection::Malformed)?;

        let token_issuer = claims.custom.get("iss").and_then(Value::as_str);
        let issuer = self
            .issuers
            .iter()
            .find(|i| Some(i.issuer.as_str()) == token_issuer)
            .ok_or(TokenRejection::UnknownIssuer)?;
        if token.len() > issuer.max_token_bytes {
            return Err(TokenRejection::Oversized);
        }
        if !issuer.allowed_algorithms.contains(&alg) {
            return Err(TokenRejection::AlgNotAllowed);
        }
        Ok(Unverified {
            issuer,
            alg,
            untrusted,
            claims,
        })
    }

    fn check_signature(
        &self,
        issuer: &IssuerVerifier,
        alg: JwsAlgorithm,
        token: &UntrustedToken<'_, ExtraHeader>,
        now: i64,
    ) -> Result<(), TokenRejection> {
        if alg.key_family() == KeyFamily::Hmac {
            let key = issuer
                .hs256_key
                .as_ref()
                .ok_or(TokenRejection::AlgNotAllowed)?;
            return signature_result(Hs256.validator::<Empty>(key).validate(token));
        }
        let key = self.select_key(issuer, alg, token.header().key_id.as_deref(), now)?;
        let result = match (alg, key) {
            (JwsAlgorithm::Es256, VerifyingKey::P256(key)) => {
                Es256.validator::<Empty>(key).validate(token)
            }
            #[cfg(feature = "es384")]
            (JwsAlgorithm::Es384, VerifyingKey::P384(key)) => {
                Es384.validator::<Empty>(key).validate(token)
            }
            (JwsAlgorithm::EdDsa, VerifyingKey::Ed25519(key)) => {
                Ed25519.validator::<Empty>(key).validate(token)
            }
            (alg, VerifyingKey::Rsa(key)) if alg.key_family() == KeyFamily::Rsa => {
                let rsa: Rsa = alg
                    .name()
                    .parse()
                    .map_err(|_| TokenRejection::AlgNotAllowed)?;
                rsa.validator::<Empty>(key).validate(token)
            }
            _ => return Err(TokenRejection::AlgKeyMismatch),
        };
        signature_result(result)
    }

    fn select_key<'a>(
        &'a self,
        issuer: &'a IssuerVerifier,
        alg: JwsAlgorithm,
        kid: Option<&str>,
        now: i64,
    ) -> Result<&'a VerifyingKey, TokenRejection> {
        let unknown_kid = || TokenRejection::UnknownKid {
            issuer: issuer.issuer.clone(),
        };
        let jwks = match &issuer.keys {
            KeySource::None => return Err(unknown_kid()),
            KeySource::Inline(jwks) => jwks,
            KeySource::Remote { cache, .. } => {
                cache
                    .keys(now)
                    .ok_or_else(|| TokenRejection::KeysUnavailable {
                        issuer: issuer.issuer.clone(),
                    })?
            }
        };
        let Some(kid) = kid else {
            let mut fitting = jwks.entries().iter().filter(|entry| entry.accepts(alg));
            return match (fitting.next(), fitting.next()) {
                (Some(only), None) => Ok(&only.key),
                _ => Err(unknown_kid()),
            };
        };
        match jwks.find(kid) {
            Some(entry) if entry.accepts(alg) => Ok(&entry.key),
            Some(_) => Err(TokenRejection::AlgKeyMismatch),
            None => {
                let elsewhere = self.issuers.iter().any(|other| {
                    other.issuer != issuer.issuer
                        && other
                            .current_keys(now)
                            .is_some_and(|keys| keys.find(kid).is_some())
                });
                Err(if elsewhere {
                    TokenRejection::WrongIssuer
                } else {
                    unknown_kid()
                })
            }
        }
    }
}

/// A token before its signature is checked (see [`Verifier::unverified`]).
struct Unverified<'t, 'v> {
    issuer: &'v IssuerVerifier,
    alg: JwsAlgorithm,
    untrusted: UntrustedToken<'t, ExtraHeader>,
    claims: Claims<Map<String, Value>>,
}

fn signature_result<T>(result: Result<T, ValidationError>) -> Result<(), TokenRejection> {
    match result {
        Ok(_) => Ok(()),
        Err(ValidationError::AlgorithmMismatch { .. }) => Err(TokenRejection::AlgKeyMismatch),
        Err(ValidationError::MalformedClaims(_)) => Err(TokenRejection::Malformed),
        Err(_) => Err(TokenRejection::BadSignature),
    }
}

fn check_times(
    claims: &Claims<Map<String, Value>>,
    leeway_seconds: i64,
    now: i64,
) -> Result<(), TokenRejection> {
    let at = DateTime::<Utc>::from_timestamp(now, 0).unwrap_or(if now < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    let options = TimeOptions::new(Duration::seconds(leeway_seconds), move || at);
    match claims.validate_expiration(&options) {
        Ok(_) => {}
        Err(ValidationError::Expired) => return Err(TokenRejection::Expired),
        Err(_) => return Err(TokenRejection::MissingExpiry),
    }
    // Not `validate_maturity`: it subtracts the leeway from `nbf` with an operator
    // that panics when `nbf` is the earliest representable time.
    if let Some(not_before) = claims.not_before
        && now < not_before.timestamp().saturating_sub(leeway_seconds)
    {
        return Err(TokenRejection::NotYetValid);
    }
    Ok(())
}

fn check_audience(claims: &Map<String, Value>, accepted: &[String]) -> Result<(), TokenRejection> {
    let accepts = |aud: &str| accepted.iter().any(|a| a == aud);
    match claims.get("aud") {
        None | Some(Value::Null) => Err(TokenRejection::MissingAudience),
        Some(Value::String(aud)) if accepts(aud) => Ok(()),
        Some(Value::String(_)) => Err(TokenRejection::WrongAudience),
        Some(Value::Array(auds)) if auds.is_empty() => Err(TokenRejection::MissingAudience),
        Some(Value::Array(auds)) => {
            if auds.iter().any(|aud| !aud.is_string()) {
                Err(TokenRejection::Malformed)
            } else if auds.iter().filter_map(Value::as_str).any(accepts) {
                Ok(())
            } else {
                Err(TokenRejection::WrongAudience)
            }
        }
        Some(_) => Err(TokenRejection::Malformed),
    }
}

fn identity_from_claims(
    issuer: &IssuerVerifier,
    claims: Claims<Map<String, Value>>,
) -> Result<Identity, TokenRejection> {
    let subject = match issuer.subject_claim.lookup(&claims.custom) {
        Some(Value::String(subject)) if !subject.is_empty() => subject.clone(),
        _ => return Err(TokenRejection::MissingSubject),
    };
    let groups = match issuer.groups_claim.lookup(&claims.custom) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(group)) if group.is_empty() => Vec::new(),
        Some(Value::String(group)) => vec![group.clone()],
        Some(Value::Array(groups)) => groups
            .iter()
            .map(|group| group.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(TokenRejection::Malformed)?,
        Some(_) => return Err(TokenRejection::Malformed),
    };
    let token_id = claims
        .custom
        .get("jti")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let expires_at = claims.expiration.map(|exp| exp.timestamp());
    let mut all_claims: BTreeMap<String, Value> = claims.custom.into_iter().collect();
    // The time claims were taken apart by the parser; policy rules may still read them.
    for (name, time) in [
        ("exp", claims.expiration),
        ("nbf", claims.not_before),
        ("iat", claims.issued_at),
    ] {
        if let Some(time) = time {
            all_claims.insert(name.to_owned(), Value::from(time.timestamp()));
        }
    }
    Ok(Identity {
        subject,
        groups,
        issuer: Some(issuer.issuer.clone()),
        token_id,
        verified: true,
        expires_at,
        valid_before: expires_at
            .map(|exp| exp.saturating_add(issuer.leeway_seconds).saturating_add(1)),
        claims: all_claims,
    })
}

fn compile_issuer(config: &IssuerConfig) -> Result<IssuerVerifier, ConfigError> {
    if config.issuer.is_empty() {
        return Err(ConfigError::new("issuer", "must not be empty"));
    }
    if config.audiences.is_empty() {
        return Err(ConfigError::new(
            "audiences",
            "at least one audience is required",
        ));
    }
    if let Some(index) = config.audiences.iter().position(String::is_empty) {
        return Err(ConfigError::new(
            format!("audiences[{index}]"),
            "must not be empty",
        ));
    }
    let subject_claim = ClaimPath::parse(&config.subject_claim)
        .map_err(|e| ConfigError::new("subject_claim", e))?;
    let groups_claim =
        ClaimPath::parse(&config.groups_claim).map_err(|e| ConfigError::new("groups_claim", e))?;
    if config.leeway_seconds > limits::MAX_LEEWAY_SECONDS {
        return Err(ConfigError::new(
            "leeway_seconds",
            format!("at most {} seconds", limits::MAX_LEEWAY_SECONDS),
        ));
    }
    if !(limits::MIN_TOKEN_BYTES..=limits::MAX_TOKEN_BYTES).contains(&config.max_token_bytes) {
        return Err(ConfigError::new(
            "max_token_bytes",
            format!(
                "must be {} to {}",
                limits::MIN_TOKEN_BYTES,
                limits::MAX_TOKEN_BYTES
            ),
        ));
    }
    let hs256_key = config
        .hs256_secret
        .as_ref()
        .map(|secret| hs256_key(&secret.0))
        .transpose()?;
    let keys = match (&config.jwks, &config.remote_jwks) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "remote_jwks",
                "set either jwks or remote_jwks, not both",
            ));
        }
        (Some(jwks), None) => KeySource::Inline(inline_jwks(jwks)?),
        (None, Some(remote)) => KeySource::Remote {
            config: remote.clone(),
            cache: Box::new(JwksCache::new(cache_policy(remote)?)),
        },
        (None, None) if hs256_key.is_some() => KeySource::None,
        (None, None) => {
            return Err(ConfigError::new(
                "jwks",
                "a key source is required: jwks, remote_jwks or hs256_secret",
            ));
        }
    };
    let has_public_keys = !matches!(keys, KeySource::None);
    let allowed_algorithms = allowed_algorithms(config, has_public_keys, hs256_key.is_some())?;
    if !has_public_keys && allowed_algorithms.iter().any(|a| a.is_asymmetric()) {
        return Err(ConfigError::new(
            "allowed_algorithms",
            "asymmetric algorithms need jwks or remote_jwks",
        ));
    }
    Ok(IssuerVerifier {
        issuer: config.issuer.clone(),
        audiences: config.audiences.clone(),
        subject_claim,
        groups_claim,
        leeway_seconds: i64::from(config.leeway_seconds),
        max_token_bytes: config.max_token_bytes,
        allowed_algorithms,
        hs256_key,
        keys,
    })
}

fn hs256_key(secret: &str) -> Result<Hs256Key, ConfigError> {
    // The error never repeats the secret.
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .ok()
        .or_else(|| decode_base64url(secret.trim()))
        .ok_or_else(|| ConfigError::new("hs256_secret", "is not base64"))?;
    if bytes.len() < limits::MIN_HS256_SECRET_BYTES {
        return Err(ConfigError::new(
            "hs256_secret",
            format!(
                "must decode to at least {} bytes",
                limits::MIN_HS256_SECRET_BYTES
            ),
        ));
    }
    Ok(Hs256Key::new(bytes))
}

/// The configured list, or by default every algorithm the issuer has keys for.
fn allowed_algorithms(
    config: &IssuerConfig,
    has_public_keys: bool,
    has_secret: bool,
) -> Result<Vec<JwsAlgorithm>, ConfigError> {
    let Some(names) = &config.allowed_algorithms else {
        return Ok(JwsAlgorithm::ALL
            .into_iter()
            .filter(|alg| alg.is_built_in())
            .filter(|alg| {
                if alg.is_asymmetric() {
                    has_public_keys
                } else {
                    has_secret
                }
            })
            .collect());
    };
    if names.is_empty() {
        return Err(ConfigError::new("allowed_algorithms", "must not be empty"));
    }
    let mut allowed = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let path = format!("allowed_algorithms[{index}]");
        let alg = JwsAlgorithm::from_name(name)
            .ok_or_else(|| ConfigError::new(&path, format!("unsupported algorithm {name:?}")))?;
        if !alg.is_built_in() {
            return Err(ConfigError::new(
                path,
                format!("{alg} needs a build with the es384 feature"),
            ));
        }
        if alg == JwsAlgorithm::Hs256 && !has_secret {
            return Err(ConfigError::new(path, "HS256 needs hs256_secret"));
        }
        if !allowed.contains(&alg) {
            allowed.push(alg);
        }
    }
    Ok(allowed)
}

fn inline_jwks(jwks: &Value) -> Result<Jwks, ConfigError> {
    let parsed = match jwks {
        Value::String(text) => Jwks::parse(text.as_bytes()),
        other => Jwks::from_value(other),
    };
    parsed.map_err(|e| ConfigError::new("jwks", e.to_string()))
}

fn cache_policy(remote: &RemoteJwksConfig) -> Result<JwksCachePolicy, ConfigError> {
    let error = |field: &str, message: String| {
        Err(ConfigError::new(format!("remote_jwks.{field}"), message))
    };
    if remote.cluster.is_empty() {
        return error("cluster", "must not be empty".to_owned());
    }
    if !remote.path.starts_with('/') {
        return error("path", "must start with '/'".to_owned());
    }
    if remote.refresh_seconds < limits::MIN_REFRESH_SECONDS {
        return error(
            "refresh_seconds",
            format!("at least {}", limits::MIN_REFRESH_SECONDS),
        );
    }
    if remote.min_refetch_seconds == 0 || remote.min_refetch_seconds > remote.refresh_seconds {
        return error(
            "min_refetch_seconds",
            "must be 1 to refresh_seconds".to_owned(),
        );
    }
    if remote.timeout_ms == 0 || remote.timeout_ms > limits::MAX_TIMEOUT_MS {
        return error(
            "timeout_ms",
            format!("must be 1 to {}", limits::MAX_TIMEOUT_MS),
        );
    }
    Ok(JwksCachePolicy {
        refresh_seconds: i64::from(remote.refresh_seconds),
        min_refetch_seconds: i64::from(remote.min_refetch_seconds),
        max_stale_seconds: i64::from(remote.max_stale_seconds),
    })
}
