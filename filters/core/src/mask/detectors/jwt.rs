//! JSON Web Tokens in compact form: `header.payload.signature`, each part
//! base64url without padding, the header decoding to a JSON object with an
//! `alg` member and the payload encoding a JSON object (it starts with `e`,
//! the base64 of `{`). The signature may be empty (unsecured JWTs).

use std::ops::Range;

use base64::Engine;
use serde::Deserialize;

use super::{byte_at, byte_before};
use crate::mask::kind::{Detector, DetectorKind};

/// Finds JWTs.
pub struct JwtDetector;

/// Headers longer than this are not decoded (real ones are under 1 KiB).
const MAX_HEADER: usize = 2048;

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

impl Detector for JwtDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Jwt
    }

    fn find(&self, text: &[u8], out: &mut Vec<Range<usize>>) {
        // `eyJ` is the base64 of `{"`, the start of every JWT header in practice.
        let mut next_allowed = 0;
        // Anchored on the `J`: an upper-case J is rare in text, and memchr
        // needs no per-call searcher set-up on short values.
        for j in memchr::memchr_iter(b'J', text) {
            let Some(start) = j.checked_sub(2) else {
                continue;
            };
            if start < next_allowed
                || text.get(start..j) != Some(b"ey")
                || byte_before(text, start).is_some_and(is_b64url)
            {
                continue;
            }
            if let Some(end) = jwt_at(text, start) {
                out.push(start..end);
                next_allowed = end;
            }
        }
    }
}

/// Length of the base64url run starting at `at`.
fn part_len(text: &[u8], at: usize) -> usize {
    text.get(at..)
        .map_or(0, |rest| rest.iter().take_while(|&&b| is_b64url(b)).count())
}

fn jwt_at(text: &[u8], start: usize) -> Option<usize> {
    let header_end = start + part_len(text, start);
    if byte_at(text, header_end) != Some(b'.') || header_end - start > MAX_HEADER {
        return None;
    }
    let payload_start = header_end + 1;
    let payload_end = payload_start + part_len(text, payload_start);
    if payload_end - payload_start < 2 || byte_at(text, payload_start) != Some(b'e') {
        return None;
    }
    if byte_at(text, payload_end) != Some(b'.') {
        return None;
    }
    let signature_start = payload_end + 1;
    let end = signature_start + part_len(text, signature_start);
    header_has_alg(text.get(start..header_end)?).then_some(end)
}

fn header_has_alg(header: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Header {
        #[allow(dead_code)]
        alg: String,
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .is_ok_and(|json| serde_json::from_slice::<Header>(&json).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::detectors::corpus;

    #[test]
    fn corpus() {
        corpus::check(
            DetectorKind::Jwt,
            include_str!("../../../testdata/mask/jwt.positive.txt"),
            include_str!("../../../testdata/mask/jwt.negative.txt"),
        );
    }
}
