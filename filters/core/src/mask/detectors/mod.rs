//! One scanner per [`DetectorKind`](super::DetectorKind), plus the byte-level
//! helpers they share.

mod aws;
mod card;
mod email;
mod iban;
mod jwt;
mod phone;
mod private_key;
mod secret;
mod ssn;

pub use aws::AwsAccessKeyDetector;
pub use card::PaymentCardDetector;
pub use email::EmailDetector;
pub use iban::IbanDetector;
pub use jwt::JwtDetector;
pub use phone::PhoneDetector;
pub use private_key::PrivateKeyDetector;
pub use secret::{SecretAssignmentDetector, is_secret_key_name, is_secret_value};
pub use ssn::UsSsnDetector;

use super::kind::{Detector, DetectorKind};

impl DetectorKind {
    /// The detector implementation.
    pub fn detector(self) -> &'static dyn Detector {
        match self {
            DetectorKind::PrivateKey => &PrivateKeyDetector,
            DetectorKind::Jwt => &JwtDetector,
            DetectorKind::AwsAccessKey => &AwsAccessKeyDetector,
            DetectorKind::SecretAssignment => &SecretAssignmentDetector,
            DetectorKind::Email => &EmailDetector,
            DetectorKind::PaymentCard => &PaymentCardDetector,
            DetectorKind::Iban => &IbanDetector,
            DetectorKind::UsSsn => &UsSsnDetector,
            DetectorKind::Phone => &PhoneDetector,
        }
    }
}

/// The byte at `i`, or `None` past either end.
fn byte_at(text: &[u8], i: usize) -> Option<u8> {
    text.get(i).copied()
}

/// The byte just before `i`, or `None` at the start.
fn byte_before(text: &[u8], i: usize) -> Option<u8> {
    i.checked_sub(1).and_then(|j| text.get(j)).copied()
}

/// Whether `b` is an ASCII letter or digit.
fn is_alnum(b: Option<u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_alphanumeric())
}

fn is_digit(b: Option<u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_digit())
}

/// Whether a number-like value can start at `i`: the byte before is not a
/// letter or digit, and not a separator that continues a token on its left
/// (`0.4111…`, `12-4111…`, `ORD-4111…`, `12,4111…`).
fn number_starts_at(text: &[u8], i: usize) -> bool {
    let before = byte_before(text, i);
    if is_alnum(before) {
        return false;
    }
    let two_before = i.checked_sub(1).and_then(|j| byte_before(text, j));
    match before {
        // `ORD-4111…`, `v1.4111…`: part of a longer token.
        Some(b'.' | b'-' | b'+' | b'_') => !is_alnum(two_before),
        // `12,4111…` continues a number; `csv,4111…` does not.
        Some(b',' | b'/') => !is_digit(two_before),
        _ => true,
    }
}

/// Whether a number-like value can end at `end` (exclusive): the byte after is
/// not a letter or digit, and not a separator that continues the token.
fn number_ends_at(text: &[u8], end: usize) -> bool {
    let after = byte_at(text, end);
    if is_alnum(after) {
        return false;
    }
    let two_after = byte_at(text, end + 1);
    match after {
        Some(b'.' | b'-' | b'_') => !is_alnum(two_after),
        Some(b',' | b'/') => !is_digit(two_after),
        _ => true,
    }
}

/// Whether a distinctive value (a card or SSN, whose shape and checks already
/// set it apart) can start at `i`: only a letter or digit right before it
/// joins it to a longer token. A separator never does, whatever precedes it:
/// `'2,' || ssn` or a record's text `(2,4111…)` must not hide the value.
fn value_starts_at(text: &[u8], i: usize) -> bool {
    !is_alnum(byte_before(text, i))
}

/// Whether such a value can end at `end` (exclusive): only a letter or digit
/// right after it joins it to a longer token.
fn value_ends_at(text: &[u8], end: usize) -> bool {
    !is_alnum(byte_at(text, end))
}

/// Position of the first ASCII digit at or after `from`.
///
/// Eight bytes at a time: most row text has long stretches without digits,
/// and this is the inner loop of the card and IBAN scanners.
fn find_digit(text: &[u8], from: usize) -> Option<usize> {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Adding these sets a byte's high bit when it is >= '0' / >= ':' (no carry
    // crosses bytes because each byte is at most 0x7f before the add).
    const GE_ZERO: u64 = 0x5050_5050_5050_5050;
    const GE_COLON: u64 = 0x4646_4646_4646_4646;
    let rest = text.get(from..)?;
    let mut chunks = rest.chunks_exact(8);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let low = word & LOW7;
        let digits = (low + GE_ZERO) & !(low + GE_COLON) & !word & HIGH;
        if digits != 0 {
            return Some(from + offset + (digits.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(u8::is_ascii_digit)
        .map(|i| from + offset + i)
}

/// End of the run of digits starting at `start`.
fn digit_run_end(text: &[u8], start: usize) -> usize {
    start
        + text.get(start..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        })
}

/// Digits of `text[range]` in order, skipping every other byte.
fn digits_of(text: &[u8]) -> impl Iterator<Item = u8> + '_ {
    text.iter().filter(|b| b.is_ascii_digit()).map(|b| b - b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_digit_matches_a_plain_search_at_every_offset() {
        let text = "abc\u{e9}\u{ff}xx 9 ~/:;@ 0123 \u{1F600}zz5".as_bytes();
        for from in 0..=text.len() {
            let plain = text
                .get(from..)
                .and_then(|r| r.iter().position(u8::is_ascii_digit))
                .map(|i| from + i);
            assert_eq!(find_digit(text, from), plain, "from {from}");
        }
        let all_bytes: Vec<u8> = (0..=255u8).collect();
        let digits: Vec<usize> = (0..all_bytes.len())
            .filter_map(|i| find_digit(&all_bytes, i))
            .collect();
        assert!(
            digits
                .iter()
                .all(|&d| all_bytes.get(d).is_some_and(u8::is_ascii_digit))
        );
        assert_eq!(find_digit(&all_bytes, 0), Some(48));
        assert_eq!(find_digit(&all_bytes, 58), None);
    }
}

#[cfg(test)]
pub(crate) mod corpus {
    //! Shared loader for the detector corpora in `testdata/mask/`.
    //!
    //! One case per line; `#` starts a comment line; `\n` in a line stands for a
    //! newline. In positive corpora the expected matches are wrapped in `[[` and
    //! `]]`.

    use super::super::{DetectorKind, DetectorSet};

    /// A case with its expected match ranges.
    pub struct Case {
        pub line: usize,
        pub text: String,
        pub expected: Vec<std::ops::Range<usize>>,
    }

    pub fn cases(corpus: &str) -> Vec<Case> {
        corpus
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|(n, l)| {
                let unescaped = l.replace("\\n", "\n");
                let mut text = String::new();
                let mut expected = Vec::new();
                let mut rest = unescaped.as_str();
                while let Some(open) = rest.find("[[") {
                    text.push_str(&rest[..open]);
                    let after = &rest[open + 2..];
                    let close = after.find("]]").expect("unclosed [[");
                    let start = text.len();
                    text.push_str(&after[..close]);
                    expected.push(start..text.len());
                    rest = &after[close + 2..];
                }
                text.push_str(rest);
                Case {
                    line: n + 1,
                    text,
                    expected,
                }
            })
            .collect()
    }

    /// Runs one detector over a positive and a negative corpus and asserts each
    /// case finds exactly its marked ranges (none for negatives).
    pub fn check(kind: DetectorKind, positives: &str, negatives: &str) {
        let set = DetectorSet::only(kind);
        let pos = cases(positives);
        let neg = cases(negatives);
        assert!(pos.len() >= 40, "{kind}: only {} positive cases", pos.len());
        assert!(neg.len() >= 40, "{kind}: only {} negative cases", neg.len());
        let mut failures = Vec::new();
        for case in pos.iter().chain(neg.iter()) {
            let found: Vec<_> = set
                .scan(case.text.as_bytes())
                .into_iter()
                .map(|f| f.range)
                .collect();
            if found != case.expected {
                let shown: Vec<_> = found.iter().map(|r| &case.text[r.clone()]).collect();
                failures.push(format!(
                    "line {}: {:?}: expected {:?}, found {:?}",
                    case.line, case.text, case.expected, shown
                ));
            }
        }
        assert!(failures.is_empty(), "{kind}:\n{}", failures.join("\n"));
        for case in &pos {
            assert!(
                !case.expected.is_empty(),
                "{kind}: positive line {} marks no match",
                case.line
            );
        }
    }
}
