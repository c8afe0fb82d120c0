//! `ES384` (ECDSA on P-384 with SHA-384, RFC 7518 section 3.4), which the token
//! library lacks, plugged into it through its `Algorithm` trait.

use jwt_compact::{Algorithm, AlgorithmSignature};
use p384::ecdsa::signature::{Signer as _, Verifier as _};
use std::borrow::Cow;
use std::num::NonZeroUsize;

pub(crate) use p384::ecdsa::{SigningKey as P384SigningKey, VerifyingKey as P384VerifyingKey};

/// Length of one P-384 coordinate, and of each half of a JWS signature.
pub(crate) const COORDINATE_BYTES: usize = 48;

/// An ES384 signature: `r || s`, 96 bytes.
#[derive(Debug)]
pub(crate) struct Es384Signature(p384::ecdsa::Signature);

impl AlgorithmSignature for Es384Signature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(2 * COORDINATE_BYTES);

    fn try_from_slice(bytes: &[u8]) -> anyhow::Result<Self> {
        p384::ecdsa::Signature::from_slice(bytes)
            .map(Self)
            .map_err(|e| anyhow::anyhow!(e))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.to_bytes().to_vec())
    }
}

/// The ES384 algorithm.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Es384;

impl Algorithm for Es384 {
    type SigningKey = P384SigningKey;
    type VerifyingKey = P384VerifyingKey;
    type Signature = Es384Signature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("ES384")
    }

    fn sign(&self, signing_key: &Self::SigningKey, message: &[u8]) -> Self::Signature {
        Es384Signature(signing_key.sign(message))
    }

    fn verify_signature(
        &self,
        signature: &Self::Signature,
        verifying_key: &Self::VerifyingKey,
        message: &[u8],
    ) -> bool {
        verifying_key.verify(message, &signature.0).is_ok()
    }
}

/// A P-384 public key from its JWK coordinates.
pub(crate) fn verifying_key(x: &[u8], y: &[u8]) -> Result<P384VerifyingKey, String> {
    if x.len() != COORDINATE_BYTES || y.len() != COORDINATE_BYTES {
        return Err(format!(
            "P-384 coordinates must be {COORDINATE_BYTES} bytes"
        ));
    }
    let mut point = Vec::with_capacity(1 + 2 * COORDINATE_BYTES);
    point.push(0x04); // uncompressed SEC1 point
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    P384VerifyingKey::from_sec1_bytes(&point).map_err(|_| "not a P-384 curve point".to_owned())
}
