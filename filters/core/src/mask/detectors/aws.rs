//! AWS access key ids: `AKIA` (long-term) or `ASIA` (temporary) followed by 16
//! upper-case letters or digits, standing alone as a word (`_` counts as a
//! word character).

use std::ops::Range;

use super::{byte_at, byte_before};
use crate::mask::kind::{Detector, DetectorKind};

/// Finds AWS access key ids.
pub struct AwsAccessKeyDetector;

const KEY_LEN: usize = 20;

impl Detector for AwsAccessKeyDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::AwsAccessKey
    }

    fn find(&self, text: &[u8], out: &mut Vec<Range<usize>>) {
        let mut next_allowed = 0;
        for start in memchr::memchr_iter(b'A', text) {
            if start < next_allowed {
                continue;
            }
            let end = start + KEY_LEN;
            let Some(candidate) = text.get(start..end) else {
                break;
            };
            let prefix_ok = candidate.starts_with(b"AKIA") || candidate.starts_with(b"ASIA");
            if prefix_ok
                && candidate
                    .iter()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                && !is_word(byte_before(text, start))
                && !is_word(byte_at(text, end))
            {
                out.push(start..end);
                next_allowed = end;
            }
        }
    }
}

/// Letters, digits and `_` continue an identifier (`REF_AKIA…` is not a key id).
fn is_word(b: Option<u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::detectors::corpus;

    #[test]
    fn corpus() {
        corpus::check(
            DetectorKind::AwsAccessKey,
            include_str!("../../../testdata/mask/aws_access_key.positive.txt"),
            include_str!("../../../testdata/mask/aws_access_key.negative.txt"),
        );
    }
}
