//! The JWS algorithms gatehouse verifies, and the key family each one needs.

use std::fmt;

/// A JWS `alg` value gatehouse can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JwsAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384; verifiable only when built with the `es384`
    /// feature (it adds about 115 KB to a Wasm module).
    Es384,
    /// Ed25519 signatures.
    EdDsa,
    /// HMAC with SHA-256; only with an explicitly configured shared secret.
    Hs256,
}

/// The kind of key an algorithm verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    /// RSA public key (`kty: RSA`).
    Rsa,
    /// EC P-256 public key (`kty: EC`, `crv: P-256`).
    P256,
    /// EC P-384 public key (`kty: EC`, `crv: P-384`).
    P384,
    /// Ed25519 public key (`kty: OKP`, `crv: Ed25519`).
    Ed25519,
    /// Shared secret.
    Hmac,
}

impl JwsAlgorithm {
    /// Every algorithm, asymmetric ones first.
    pub const ALL: [JwsAlgorithm; 10] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
        Self::Es256,
        Self::Es384,
        Self::EdDsa,
        Self::Hs256,
    ];

    /// The algorithm named by a JWS `alg` value (case-sensitive, as RFC 7515 says).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// The JWS `alg` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
        }
    }

    /// The key family this algorithm verifies with.
    pub fn key_family(self) -> KeyFamily {
        match self {
            Self::Rs256 | Self::Rs384 | Self::Rs512 | Self::Ps256 | Self::Ps384 | Self::Ps512 => {
                KeyFamily::Rsa
            }
            Self::Es256 => KeyFamily::P256,
            Self::Es384 => KeyFamily::P384,
            Self::EdDsa => KeyFamily::Ed25519,
            Self::Hs256 => KeyFamily::Hmac,
        }
    }

    /// Whether this build can verify the algorithm.
    pub fn is_built_in(self) -> bool {
        self != Self::Es384 || cfg!(feature = "es384")
    }

    /// Whether the algorithm uses a public key (everything but HMAC).
    pub fn is_asymmetric(self) -> bool {
        self.key_family() != KeyFamily::Hmac
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in JwsAlgorithm::ALL {
            assert_eq!(JwsAlgorithm::from_name(alg.name()), Some(alg));
        }
    }

    #[test]
    fn names_are_case_sensitive_and_none_is_unknown() {
        assert_eq!(JwsAlgorithm::from_name("rs256"), None);
        assert_eq!(JwsAlgorithm::from_name("none"), None);
        assert_eq!(JwsAlgorithm::from_name("ES512"), None);
    }
}
