//! IBANs: a country code with its registered length, two check digits, and the
//! BBAN, written compact (`DE89370400440532013000`) or in the printed form with
//! groups of four (`DE89 3704 0044 0532 0130 00`); upper case only; mod-97 must
//! equal 1.

use std::ops::Range;

use super::{byte_at, byte_before, digit_run_end, find_digit, is_alnum};
use crate::mask::kind::{Detector, DetectorKind};

/// Finds IBANs.
pub struct IbanDetector;

/// Registered IBAN lengths per country (SWIFT IBAN registry).
const COUNTRY_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

fn country_length(code: &[u8]) -> Option<usize> {
    COUNTRY_LENGTHS
        .iter()
        .find(|(c, _)| c.as_slice() == code)
        .map(|&(_, len)| len)
}

fn is_iban_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

impl Detector for IbanDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Iban
    }

    fn find(&self, text: &[u8], out: &mut Vec<Range<usize>>) {
        // Anchor on the check digits: an IBAN is `[A-Z]{2}[0-9]{2}…`, and digits
        // are rarer than letters in most text.
        let mut i = 2;
        while let Some(digit) = find_digit(text, i) {
            // Only the first digit of a run can follow the country letters.
            i = digit_run_end(text, digit);
            let start = digit - 2;
            let shape = text.get(start..start + 4).is_some_and(|s| {
                matches!(s, [c1, c2, d1, d2] if c1.is_ascii_uppercase() && c2.is_ascii_uppercase()
                    && d1.is_ascii_digit() && d2.is_ascii_digit())
            });
            if !shape || is_alnum(byte_before(text, start)) {
                continue;
            }
            if let Some(end) = iban_at(text, start) {
                out.push(start..end);
                i = end;
            }
        }
    }
}

/// The end of a valid IBAN starting at `start`, compact or grouped.
fn iban_at(text: &[u8], start: usize) -> Option<usize> {
    let len = country_length(text.get(start..start + 2)?)?;
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut j = start;
    let mut group = 0;
    while n < len {
        match byte_at(text, j) {
            Some(b) if is_iban_char(b) => {
                *chars.get_mut(n)? = b;
                n += 1;
                group += 1;
                j += 1;
            }
            // Printed form: a single space after every complete group of four.
            Some(b' ')
                if group == 4 && byte_at(text, j + 1).is_some_and(is_iban_char) && n < len =>
            {
                group = 0;
                j += 1;
            }
            _ => return None,
        }
        if group > 4 && j - start != n {
            return None;
        }
    }
    if is_alnum(byte_at(text, j)) {
        return None;
    }
    mod97_is_one(chars.get(..n)?).then_some(j)
}

/// The ISO 13616 check: move the first four characters to the end, read letters
/// as 10–35, and the number mod 97 must be 1.
fn mod97_is_one(iban: &[u8]) -> bool {
    let (head, tail) = iban.split_at_checked(4).unwrap_or((iban, &[]));
    let remainder = tail.iter().chain(head.iter()).fold(0u32, |rem, &b| {
        if b.is_ascii_digit() {
            (rem * 10 + u32::from(b - b'0')) % 97
        } else {
            (rem * 100 + u32::from(b - b'A') + 10) % 97
        }
    });
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::detectors::corpus;

    #[test]
    fn corpus() {
        corpus::check(
            DetectorKind::Iban,
            include_str!("../../../testdata/mask/iban.positive.txt"),
            include_str!("../../../testdata/mask/iban.negative.txt"),
        );
    }

    #[test]
    fn checksum_detects_a_changed_digit() {
        assert!(mod97_is_one(b"DE89370400440532013000"));
        assert!(!mod97_is_one(b"DE89370400440532013001"));
    }
}
