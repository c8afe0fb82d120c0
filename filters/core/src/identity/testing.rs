//! Minting tokens for demos and tests (native only, behind the `mint` feature).
//!
//! A [`Minter`] is a tiny identity provider: one signing key, one issuer, one
//! audience. It publishes its public key set and signs tokens, including deliberately
//! bad ones (expired, signed by an impostor key), and can be saved and restored so a
//! demo can mint more tokens later from the same key.

use super::algorithm::{JwsAlgorithm, KeyFamily};
#[cfg(feature = "es384")]
use super::es384::{COORDINATE_BYTES, Es384, P384SigningKey};
use jwt_compact::alg::{
    Ed25519, Es256, Hs256, Hs256Key, ModulusBits, Rsa, RsaPrivateKey, SecretBytes,
};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmExt as _, Claims, Header};
use rand_core::{OsRng, RngCore as _};
use serde_json::{Map, Value, json};
use std::fmt;

type P256SigningKey = <Es256 as Algorithm>::SigningKey;
type Ed25519SecretKey = <Ed25519 as Algorithm>::SigningKey;

/// Why minting, generating or restoring failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MintError(String);

fn mint_error(context: &str, error: impl fmt::Display) -> MintError {
    MintError(format!("{context}: {error}"))
}

#[derive(Clone)]
enum SigningKey {
    // Boxed: an RSA key is several times larger than the others.
    Rsa(Box<RsaPrivateKey>),
    P256(P256SigningKey),
    #[cfg(feature = "es384")]
    P384(P384SigningKey),
    Ed25519(Ed25519SecretKey),
    Hmac(Vec<u8>),
}

impl SigningKey {
    fn generate(family: KeyFamily) -> Result<Self, MintError> {
        Ok(match family {
            KeyFamily::Rsa => {
                let (private, _) = Rsa::generate(&mut OsRng, ModulusBits::TwoKibibytes)
                    .map_err(|e| mint_error("generating an RSA key", e))?;
                Self::Rsa(Box::new(private.into_inner()))
            }
            KeyFamily::P256 => {
                let mut scalar = [0_u8; 32];
                OsRng.fill_bytes(&mut scalar);
                Self::P256(
                    <P256SigningKey as jwt_compact::alg::SigningKey<Es256>>::from_slice(&scalar)
                        .map_err(|e| mint_error("generating a P-256 key", e))?,
                )
            }
            #[cfg(feature = "es384")]
            KeyFamily::P384 => Self::P384(P384SigningKey::random(&mut OsRng)),
            #[cfg(not(feature = "es384"))]
            KeyFamily::P384 => return Err(no_es384()),
            KeyFamily::Ed25519 => Self::Ed25519(Ed25519::generate(&mut OsRng).0),
            KeyFamily::Hmac => {
                let mut secret = vec![0_u8; 32];
                OsRng.fill_bytes(&mut secret);
                Self::Hmac(secret)
            }
        })
    }

    fn family(&self) -> KeyFamily {
        match self {
            Self::Rsa(_) => KeyFamily::Rsa,
            Self::P256(_) => KeyFamily::P256,
            #[cfg(feature = "es384")]
            Self::P384(_) => KeyFamily::P384,
            Self::Ed25519(_) => KeyFamily::Ed25519,
            Self::Hmac(_) => KeyFamily::Hmac,
        }
    }

    fn private_jwk(&self) -> Result<Value, MintError> {
        let jwk = match self {
            Self::Rsa(key) => JsonWebKey::from(key.as_ref()),
            Self::P256(key) => JsonWebKey::from(key),
            #[cfg(feature = "es384")]
            Self::P384(key) => p384_jwk(key, true),
            Self::Ed25519(key) => JsonWebKey::from(key),
            Self::Hmac(secret) => JsonWebKey::Symmetric {
                secret: SecretBytes::borrowed(secret),
            },
        };
        serde_json::to_value(&jwk).map_err(|e| mint_error("serializing the key", e))
    }

    fn from_private_jwk(family: KeyFamily, jwk: &Value) -> Result<Self, MintError> {
        let jwk: JsonWebKey<'_> =
            serde_json::from_value(jwk.clone()).map_err(|e| mint_error("reading the key", e))?;
        let restore = |e: jwt_compact::jwk::JwkError| mint_error("restoring the key", e);
        Ok(match family {
            KeyFamily::Rsa => Self::Rsa(Box::new(RsaPrivateKey::try_from(&jwk).map_err(restore)?)),
            KeyFamily::P256 => Self::P256(P256SigningKey::try_from(&jwk).map_err(restore)?),
            #[cfg(feature = "es384")]
            KeyFamily::P384 => match &jwk {
                JsonWebKey::EllipticCurve {
                    curve,
                    secret: Some(secret),
                    ..
                } if curve.as_ref() == "P-384" => Self::P384(
                    P384SigningKey::from_slice(secret)
                        .map_err(|e| mint_error("restoring the key", e))?,
                ),
                _ => return Err(MintError("not a private P-384 key".into())),
            },
            #[cfg(not(feature = "es384"))]
            KeyFamily::P384 => return Err(no_es384()),
            KeyFamily::Ed25519 => Self::Ed25519(Ed25519SecretKey::try_from(&jwk).map_err(restore)?),
            KeyFamily::Hmac => {
                Self::Hmac(Hs256Key::try_from(&jwk).map_err(restore)?.as_ref().to_vec())
            }
        })
    }

    fn public_jwk(&self) -> Result<Value, MintError> {
        let jwk = match self {
            Self::Rsa(key) => serde_json::to_value(JsonWebKey::from(&key.to_public_key())),
            Self::P256(key) => serde_json::to_value(JsonWebKey::from(key.verifying_key())),
            #[cfg(feature = "es384")]
            Self::P384(key) => serde_json::to_value(p384_jwk(key, false)),
            Self::Ed25519(key) => serde_json::to_value(JsonWebKey::from(&key.public_key())),
            Self::Hmac(_) => return Err(MintError("a shared secret has no public key".into())),
        };
        jwk.map_err(|e| mint_error("serializing the public key", e))
    }
}

#[cfg(not(feature = "es384"))]
fn no_es384() -> MintError {
    MintError("ES384 needs a build with the es384 feature".into())
}

/// The JWK of a P-384 key, with the private scalar when `private`.
#[cfg(feature = "es384")]
fn p384_jwk(key: &P384SigningKey, private: bool) -> JsonWebKey<'static> {
    let point = key.verifying_key().to_encoded_point(false);
    let coordinate = |c: Option<&p384::FieldBytes>| {
        std::borrow::Cow::Owned(c.map_or_else(|| vec![0; COORDINATE_BYTES], |c| c.to_vec()))
    };
    JsonWebKey::EllipticCurve {
        curve: "P-384".into(),
        x: coordinate(point.x()),
        y: coordinate(point.y()),
        secret: private.then(|| SecretBytes::owned(key.to_bytes().to_vec())),
    }
}

/// A signing key with the issuer, audience and key id its tokens carry.
#[derive(Clone)]
pub struct Minter {
    alg: JwsAlgorithm,
    issuer: String,
    audience: String,
    kid: String,
    key: SigningKey,
}

impl fmt::Debug for Minter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of debug output.
        f.debug_struct("Minter")
            .field("alg", &self.alg)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Minter {
    /// Generates a fresh key for `alg` (RSA keys are 2048 bits). An empty `kid`
    /// leaves the `kid` out of tokens and the JWK.
    pub fn generate(
        alg: JwsAlgorithm,
        issuer: impl Into<String>,
        audience: impl Into<String>,
        kid: impl Into<String>,
    ) -> Result<Minter, MintError> {
        Ok(Minter {
            alg,
            issuer: issuer.into(),
            audience: audience.into(),
            kid: kid.into(),
            key: SigningKey::generate(alg.key_family())?,
        })
    }

    /// An HS256 minter with the given shared secret (which may be deliberately weak
    /// or wrong, to test rejections).
    pub fn hs256(
        secret: &[u8],
        issuer: impl Into<String>,
        audience: impl Into<String>,
        kid: impl Into<String>,
    ) -> Minter {
        Minter {
            alg: JwsAlgorithm::Hs256,
            issuer: issuer.into(),
            audience: audience.into(),
            kid: kid.into(),
            key: SigningKey::Hmac(secret.to_vec()),
        }
    }

    /// The same key used with another algorithm of its family (e.g. RS256 → PS256).
    pub fn with_algorithm(&self, alg: JwsAlgorithm) -> Result<Minter, MintError> {
        if alg.key_family() != self.key.family() {
            return Err(MintError(format!(
                "{alg} cannot sign with a {:?} key",
                self.key.family()
            )));
        }
        Ok(Minter {
            alg,
            ..self.clone()
        })
    }

    /// The same key announced under another `kid` (empty: tokens and JWK carry none).
    pub fn with_kid(&self, kid: impl Into<String>) -> Minter {
        Minter {
            kid: kid.into(),
            ..self.clone()
        }
    }

    /// The same key issuing as another issuer.
    pub fn with_issuer(&self, issuer: impl Into<String>) -> Minter {
        Minter {
            issuer: issuer.into(),
            ..self.clone()
        }
    }

    /// A fresh key posing as this minter: same issuer, audience, kid and algorithm,
    /// so its tokens fail signature verification.
    pub fn impostor(&self) -> Result<Minter, MintError> {
        Ok(Minter {
            key: SigningKey::generate(self.key.family())?,
            ..self.clone()
        })
    }

    /// The algorithm tokens are signed with.
    pub fn algorithm(&self) -> JwsAlgorithm {
        self.alg
    }

    /// The `iss` of minted tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` of minted tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The `kid` in minted tokens' headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The shared secret, for HS256 minters.
    pub fn hmac_secret(&self) -> Option<&[u8]> {
        match &self.key {
            SigningKey::Hmac(secret) => Some(secret),
            _ => None,
        }
    }

    /// The public key as a JWK with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> Result<Value, MintError> {
        let mut jwk = self.key.public_jwk()?;
        if let Some(fields) = jwk.as_object_mut() {
            if !self.kid.is_empty() {
                fields.insert("kid".into(), Value::from(self.kid.as_str()));
            }
            fields.insert("alg".into(), Value::from(self.alg.name()));
            fields.insert("use".into(), Value::from("sig"));
        }
        Ok(jwk)
    }

    /// The public key set (`{"keys":[…]}`) to serve or configure inline; an HS256
    /// minter has none and yields an empty set.
    pub fn jwks_json(&self) -> String {
        let keys: Vec<Value> = self.public_jwk().into_iter().collect();
        json!({ "keys": keys }).to_string()
    }

    /// Mints a token valid from `now` for `ttl_seconds`, with `iss`, `aud`, `iat`,
    /// `nbf`, `exp` and the `kid` header set; fields of `claims` (an object) override
    /// those defaults, so tests can mint a wrong `aud` or a missing `exp` (`null`
    /// removes a claim).
    pub fn mint(&self, claims: &Value, ttl_seconds: i64, now: i64) -> Result<String, MintError> {
        let mut all = Map::new();
        all.insert("iss".into(), Value::from(self.issuer.as_str()));
        all.insert("aud".into(), Value::from(self.audience.as_str()));
        all.insert("iat".into(), Value::from(now));
        all.insert("nbf".into(), Value::from(now));
        all.insert("exp".into(), Value::from(now.saturating_add(ttl_seconds)));
        match claims {
            Value::Object(extra) => {
                for (name, value) in extra {
                    if value.is_null() {
                        all.remove(name);
                    } else {
                        all.insert(name.clone(), value.clone());
                    }
                }
            }
            Value::Null => {}
            _ => return Err(MintError("claims must be a JSON object".into())),
        }
        self.sign(all)
    }

    /// Mints a token that expired an hour before `now`.
    pub fn mint_expired(&self, claims: &Value, now: i64) -> Result<String, MintError> {
        self.mint(claims, 600, now.saturating_sub(3600 + 600))
    }

    /// Signs exactly `claims`, adding nothing.
    pub fn sign_claims(&self, claims: &Value) -> Result<String, MintError> {
        match claims {
            Value::Object(claims) => self.sign(claims.clone()),
            _ => Err(MintError("claims must be a JSON object".into())),
        }
    }

    fn sign(&self, claims: Map<String, Value>) -> Result<String, MintError> {
        let header = Header::empty().with_token_type("JWT");
        let header = if self.kid.is_empty() {
            header
        } else {
            header.with_key_id(self.kid.as_str())
        };
        let claims = Claims::new(claims);
        let signed = match (&self.key, self.alg) {
            (SigningKey::Rsa(key), alg) if alg.key_family() == KeyFamily::Rsa => {
                let rsa: Rsa = alg.name().parse().map_err(|e| mint_error("RSA", e))?;
                rsa.token(&header, &claims, key.as_ref())
            }
            (SigningKey::P256(key), JwsAlgorithm::Es256) => Es256.token(&header, &claims, key),
            #[cfg(feature = "es384")]
            (SigningKey::P384(key), JwsAlgorithm::Es384) => Es384.token(&header, &claims, key),
            (SigningKey::Ed25519(key), JwsAlgorithm::EdDsa) => Ed25519.token(&header, &claims, key),
            (SigningKey::Hmac(secret), JwsAlgorithm::Hs256) => {
                Hs256.token(&header, &claims, &Hs256Key::new(secret))
            }
            (_, alg) => return Err(MintError(format!("{alg} does not fit the key"))),
        };
        signed.map_err(|e| mint_error("signing", e))
    }

    /// Saves the minter, private key included, as JSON (see [`Minter::from_json`]).
    pub fn to_json(&self) -> Result<String, MintError> {
        Ok(json!({
            "alg": self.alg.name(),
            "issuer": self.issuer,
            "audience": self.audience,
            "kid": self.kid,
            "private_jwk": self.key.private_jwk()?,
        })
        .to_string())
    }

    /// Restores a minter saved with [`Minter::to_json`].
    pub fn from_json(saved: &str) -> Result<Minter, MintError> {
        let saved: Value =
            serde_json::from_str(saved).map_err(|e| mint_error("reading the saved minter", e))?;
        let text = |name: &str| {
            saved
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| MintError(format!("saved minter has no {name}")))
        };
        let alg_name = text("alg")?;
        let alg = JwsAlgorithm::from_name(&alg_name)
            .ok_or_else(|| MintError(format!("unsupported alg {alg_name:?}")))?;
        let jwk = saved
            .get("private_jwk")
            .ok_or_else(|| MintError("saved minter has no private_jwk".into()))?;
        Ok(Minter {
            alg,
            issuer: text("issuer")?,
            audience: text("audience")?,
            kid: text("kid")?,
            key: SigningKey::from_private_jwk(alg.key_family(), jwk)?,
        })
    }
}
