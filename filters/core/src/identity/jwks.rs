//! JSON Web Key Sets (RFC 7517): the public keys an issuer signs tokens with.
//!
//! A key set from an identity provider often holds keys gatehouse cannot or must
//! not use (encryption keys, curves without a backend, private material). Such keys
//! are skipped with a reason kept for diagnostics; only a document that is not a
//! key set at all, or one without a single usable key, is an error.

use super::algorithm::{JwsAlgorithm, KeyFamily};
#[cfg(feature = "es384")]
use super::es384::{self, P384VerifyingKey};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jwt_compact::Algorithm;
use jwt_compact::alg::{Ed25519, Es256, RsaPublicKey};
use jwt_compact::jwk::JsonWebKey;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// Largest key set document accepted, in bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys accepted in one set.
pub const MAX_KEYS: usize = 64;

/// Smallest RSA modulus accepted (RFC 7518 section 3.3 requires 2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 2048 / 8;
/// Largest RSA modulus accepted; larger keys only make verification slower.
const MAX_RSA_MODULUS_BYTES: usize = 4096 / 8;

pub(crate) type P256VerifyingKey = <Es256 as Algorithm>::VerifyingKey;
pub(crate) type Ed25519VerifyingKey = <Ed25519 as Algorithm>::VerifyingKey;

/// Base64url as JWKs and JWTs use it; padding is tolerated because some key
/// sets in the wild carry it.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A public key ready for signature verification.
#[derive(Debug, Clone)]
pub(crate) enum VerifyingKey {
    Rsa(RsaPublicKey),
    P256(P256VerifyingKey),
    #[cfg(feature = "es384")]
    P384(P384VerifyingKey),
    Ed25519(Ed25519VerifyingKey),
}

impl VerifyingKey {
    pub(crate) fn family(&self) -> KeyFamily {
        match self {
            Self::Rsa(_) => KeyFamily::Rsa,
            Self::P256(_) => KeyFamily::P256,
            #[cfg(feature = "es384")]
            Self::P384(_) => KeyFamily::P384,
            Self::Ed25519(_) => KeyFamily::Ed25519,
        }
    }
}

/// One usable key of a set.
#[derive(Debug, Clone)]
pub(crate) struct JwkEntry {
    pub(crate) kid: Option<String>,
    /// The key's `alg`, when the set pins one; tokens must then use exactly it.
    pub(crate) alg: Option<JwsAlgorithm>,
    pub(crate) key: VerifyingKey,
}

impl JwkEntry {
    /// Whether a token signed with `alg` may be verified with this key.
    pub(crate) fn accepts(&self, alg: JwsAlgorithm) -> bool {
        self.key.family() == alg.key_family() && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

/// A key of the set that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// Position in the `keys` array.
    pub index: usize,
    /// The key's `kid`, when it had a readable one.
    pub kid: Option<String>,
    /// Why the key is not used.
    pub reason: String,
}

impl fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "keys[{}] (kid {kid:?}): {}", self.index, self.reason),
            None => write!(f, "keys[{}]: {}", self.index, self.reason),
        }
    }
}

/// Why a key set document was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The document exceeds [`MAX_JWKS_BYTES`].
    #[error("key set is {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// The document is not JSON.
    #[error("key set is not JSON: {0}")]
    NotJson(String),
    /// The document has no `keys` array.
    #[error("key set has no \"keys\" array")]
    NoKeysArray,
    /// The set holds more than [`MAX_KEYS`] keys.
    #[error("key set has {count} keys, more than the limit of {max}")]
    TooManyKeys { count: usize, max: usize },
    /// No key of the set is usable; the reasons are kept.
    #[error("key set has no usable key{}", reasons(.skipped))]
    NoUsableKeys { skipped: Vec<SkippedKey> },
}

/// `: <first>; <second>…`, or nothing when no key was skipped.
fn reasons(skipped: &[SkippedKey]) -> String {
    let mut out = String::new();
    for (i, key) in skipped.iter().enumerate() {
        out.push_str(if i == 0 { ": " } else { "; " });
        out.push_str(&key.to_string());
    }
    out
}

/// A parsed key set: the usable signing keys of one issuer.
#[derive(Debug, Clone)]
pub struct Jwks {
    keys: Vec<JwkEntry>,
    skipped: Vec<SkippedKey>,
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`).
    pub fn parse(document: &[u8]) -> Result<Jwks, JwksError> {
        if document.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge {
                len: document.len(),
                max: MAX_JWKS_BYTES,
            });
        }
        let value: Value =
            serde_json::from_slice(document).map_err(|e| JwksError::NotJson(e.to_string()))?;
        Self::from_value(&value)
    }

    /// Builds a key set from an already parsed JWKS document.
    pub fn from_value(document: &Value) -> Result<Jwks, JwksError> {
        let Some(entries) = document.get("keys").and_then(Value::as_array) else {
            return Err(JwksError::NoKeysArray);
        };
        if entries.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys {
                count: entries.len(),
                max: MAX_KEYS,
            });
        }
        let mut keys: Vec<JwkEntry> = Vec::with_capacity(entries.len());
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
            let duplicate = kid.is_some() && keys.iter().any(|k| k.kid == kid);
            let parsed = if duplicate {
                Err("duplicate kid; the first key with it is used".to_owned())
            } else {
                parse_key(entry)
            };
            match parsed {
                Ok((alg, key)) => keys.push(JwkEntry { kid, alg, key }),
                Err(reason) => skipped.push(SkippedKey { index, kid, reason }),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys { skipped });
        }
        Ok(Jwks { keys, skipped })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s of the usable keys, in document order.
    pub fn key_ids(&self) -> impl Iterator<Item = Option<&str>> {
        self.keys.iter().map(|k| k.kid.as_deref())
    }

    /// Keys that were left out, with the reasons.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    pub(crate) fn find(&self, kid: &str) -> Option<&JwkEntry> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }

    pub(crate) fn entries(&self) -> &[JwkEntry] {
        &self.keys
    }
}

/// Reads one key; `Err` is the reason it is skipped.
fn parse_key(entry: &Value) -> Result<(Option<JwsAlgorithm>, VerifyingKey), String> {
    let Some(jwk) = entry.as_object() else {
        return Err("not a JSON object".to_owned());
    };
    if jwk.get("kid").is_some_and(|kid| !kid.is_string()) {
        return Err("kid is not a string".to_owned());
    }
    match jwk.get("use") {
        None => {}
        Some(Value::String(usage)) if usage == "sig" => {}
        Some(other) => return Err(format!("use is {other}, not \"sig\"")),
    }
    if ["d", "p", "q", "k"]
        .iter()
        .any(|field| jwk.contains_key(*field))
    {
        return Err("holds private or secret key material".to_owned());
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => match JwsAlgorithm::from_name(name) {
            Some(alg) if alg.is_asymmetric() => Some(alg),
            _ => return Err(format!("unsupported alg {name:?}")),
        },
        Some(_) => return Err("alg is not a string".to_owned()),
    };
    let kty = text_field(jwk, "kty")?;
    let family = match (kty, jwk.get("crv").and_then(Value::as_str)) {
        ("RSA", _) => Some(KeyFamily::Rsa),
        ("EC", Some("P-256")) => Some(KeyFamily::P256),
        ("EC", Some("P-384")) => Some(KeyFamily::P384),
        ("OKP", _) => Some(KeyFamily::Ed25519),
        _ => None,
    };
    if let (Some(alg), Some(family)) = (alg, family)
        && alg.key_family() != family
    {
        return Err(format!("alg {alg} does not fit kty {kty:?}"));
    }
    let key = match kty {
        "RSA" => VerifyingKey::Rsa(parse_rsa(jwk)?),
        "EC" => match text_field(jwk, "crv")? {
            "P-256" => {
                let jwk = JsonWebKey::EllipticCurve {
                    curve: Cow::Borrowed("P-256"),
                    x: Cow::Owned(bytes_field(jwk, "x")?),
                    y: Cow::Owned(bytes_field(jwk, "y")?),
                    secret: None,
                };
                VerifyingKey::P256(P256VerifyingKey::try_from(&jwk).map_err(|e| e.to_string())?)
            }
            #[cfg(feature = "es384")]
            "P-384" => VerifyingKey::P384(es384::verifying_key(
                &bytes_field(jwk, "x")?,
                &bytes_field(jwk, "y")?,
            )?),
            #[cfg(not(feature = "es384"))]
            "P-384" => return Err("P-384 keys need a build with the es384 feature".to_owned()),
            crv => return Err(format!("unsupported EC curve {crv:?}")),
        },
        "OKP" => match text_field(jwk, "crv")? {
            "Ed25519" => {
                let jwk = JsonWebKey::KeyPair {
                    curve: Cow::Borrowed("Ed25519"),
                    x: Cow::Owned(bytes_field(jwk, "x")?),
                    secret: None,
                };
                VerifyingKey::Ed25519(
                    Ed25519VerifyingKey::try_from(&jwk).map_err(|e| e.to_string())?,
                )
            }
            crv => return Err(format!("unsupported OKP curve {crv:?}")),
        },
        other => return Err(format!("unsupported kty {other:?}")),
    };
    Ok((alg, key))
}

fn parse_rsa(jwk: &Map<String, Value>) -> Result<RsaPublicKey, String> {
    let modulus = bytes_field(jwk, "n")?;
    let significant = modulus.iter().skip_while(|b| **b == 0).count();
    if !(MIN_RSA_MODULUS_BYTES..=MAX_RSA_MODULUS_BYTES).contains(&significant) {
        return Err(format!(
            "RSA modulus of {} bits; 2048 to 4096 are accepted",
            significant * 8
        ));
    }
    let public_exponent = bytes_field(jwk, "e")?;
    let jwk = JsonWebKey::Rsa {
        modulus: Cow::Owned(modulus),
        public_exponent: Cow::Owned(public_exponent),
        private_parts: None,
    };
    RsaPublicKey::try_from(&jwk).map_err(|e| e.to_string())
}

fn text_field<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match jwk.get(name) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(format!("{name} is not a string")),
        None => Err(format!("{name} is missing")),
    }
}

fn bytes_field(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    BASE64URL
        .decode(text_field(jwk, name)?)
        .map_err(|_| format!("{name} is not base64url"))
}

/// Decodes base64url with or without padding (shared with the token code).
pub(crate) fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    BASE64URL.decode(text).ok()
}
