//! PEM private key blocks: `-----BEGIN <label>-----` where the label contains
//! `PRIVATE KEY` (PKCS#1, PKCS#8, encrypted, EC, DSA, OpenSSH, PGP), through
//! the matching `-----END <label>-----`.
//!
//! A block whose END line is missing (a truncated value) is masked through the
//! end of the text: what follows the BEGIN line is key material.

use std::ops::Range;

use std::sync::LazyLock;

use memchr::memmem;

use crate::mask::kind::{Detector, DetectorKind};

/// Finds PEM private key blocks.
pub struct PrivateKeyDetector;

const BEGIN: &[u8] = b"-----BEGIN ";
const DASHES: &[u8] = b"-----";
const MAX_LABEL: usize = 64;

/// Built once: constructing a searcher per value costs more than searching a
/// short value.
static BEGIN_FINDER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(BEGIN));

impl Detector for PrivateKeyDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::PrivateKey
    }

    fn find(&self, text: &[u8], out: &mut Vec<Range<usize>>) {
        let mut from = 0;
        while let Some(offset) = text.get(from..).and_then(|rest| BEGIN_FINDER.find(rest)) {
            let start = from + offset;
            let label_start = start + BEGIN.len();
            let label = text
                .get(label_start..)
                .and_then(|rest| memmem::find(rest.get(..MAX_LABEL.min(rest.len()))?, DASHES))
                .and_then(|len| text.get(label_start..label_start + len));
            let Some(label) = label.filter(|l| is_private_key_label(l)) else {
                from = label_start;
                continue;
            };
            let body_start = label_start + label.len() + DASHES.len();
            let end = block_end(text, body_start, label).unwrap_or(text.len());
            out.push(start..end);
            from = end;
        }
    }
}

fn is_private_key_label(label: &[u8]) -> bool {
    label
        .iter()
        .all(|&b| b.is_ascii_uppercase() || b == b' ' || b.is_ascii_digit())
        && memmem::find(label, b"PRIVATE KEY").is_some()
}

/// End of `-----END <label>-----` after `from`.
fn block_end(text: &[u8], from: usize, label: &[u8]) -> Option<usize> {
    let mut end_line = Vec::with_capacity(label.len() + 16);
    end_line.extend_from_slice(b"-----END ");
    end_line.extend_from_slice(label);
    end_line.extend_from_slice(DASHES);
    let at = memmem::find(text.get(from..)?, &end_line)?;
    Some(from + at + end_line.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::detectors::corpus;

    #[test]
    fn corpus() {
        corpus::check(
            DetectorKind::PrivateKey,
            include_str!("../../../testdata/mask/private_key.positive.txt"),
            include_str!("../../../testdata/mask/private_key.negative.txt"),
        );
    }
}
