//! US social security numbers, only in the dashed `ddd-dd-dddd` form.
//!
//! Unformatted nine-digit runs are deliberately not matched: zip+4 codes, order
//! numbers and phone fragments make them far too ambiguous. Validity follows the
//! SSA rules: area not `000`, `666` or `900`–`999`; group not `00`; serial not
//! `0000`; and the well-known invalid `078-05-1120`.

use std::ops::Range;

use crate::mask::kind::{Detector, DetectorKind};

/// Finds dashed US SSNs.
pub struct UsSsnDetector;

const SSN_LEN: usize = 11;

impl Detector for UsSsnDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::UsSsn
    }

    fn find(&self, text: &[u8], out: &mut Vec<Range<usize>>) {
        // Anchor on the first dash (`ddd-`): dashes are rarer than digits.
        let mut next_allowed = 0;
        for dash in memchr::memchr_iter(b'-', text) {
            let Some(start) = dash.checked_sub(3) else {
                continue;
            };
            if start < next_allowed {
                continue;
            }
            let end = start + SSN_LEN;
            let Some(candidate) = text.get(start..end) else {
                continue;
            };
            if is_ssn(candidate) && ssn_bounded(text, start, end) {
                out.push(start..end);
                next_allowed = end;
            }
        }
    }
}

/// Whether the SSN at `start..end` stands apart: no letter right before or
/// after it. Digits and separators around the dashed shape do not hide it
/// (`2123-45-6789`, `2,123-45-6789`, `ref 123-45-6789-01`): the shape is
/// distinctive enough.
fn ssn_bounded(text: &[u8], start: usize, end: usize) -> bool {
    let letter = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphabetic());
    let before = start.checked_sub(1).and_then(|i| text.get(i));
    !letter(before) && !letter(text.get(end))
}

/// Whether `s` is exactly a valid `ddd-dd-dddd` SSN.
pub(crate) fn is_ssn(s: &[u8]) -> bool {
    let [a1, a2, a3, b'-', g1, g2, b'-', s1, s2, s3, s4] = *s else {
        return false;
    };
    let digits = [a1, a2, a3, g1, g2, s1, s2, s3, s4];
    if !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let area = [a1, a2, a3];
    let group = [g1, g2];
    let serial = [s1, s2, s3, s4];
    area != *b"000"
        && area != *b"666"
        && a1 != b'9'
        && group != *b"00"
        && serial != *b"0000"
        && s != b"078-05-1120"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::detectors::corpus;

    #[test]
    fn corpus() {
        corpus::check(
            DetectorKind::UsSsn,
            include_str!("../../../testdata/mask/us_ssn.positive.txt"),
            include_str!("../../../testdata/mask/us_ssn.negative.txt"),
        );
    }

    #[test]
    fn ssa_rules_reject_reserved_parts() {
        assert!(is_ssn(b"536-22-1234"));
        for bad in [
            "000-22-1234",
            "666-22-1234",
            "912-22-1234",
            "536-00-1234",
            "536-22-0000",
            "078-05-1120",
        ] {
            assert!(!is_ssn(bad.as_bytes()), "{bad}");
        }
    }
}
