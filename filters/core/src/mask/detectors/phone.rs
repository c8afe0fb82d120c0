//! Phone numbers in two written forms, and never bare digit runs (order ids,
//! timestamps and amounts are bare digit runs):
//!
//! - E.164 with a leading `+`: country code not starting with `0`, 8–15 digits
//!   in total, optionally grouped by single spaces, dashes or dots and one pair
//!   of parentheses (`+44 (0)20 7946 0958`, `+1-415-555-0132`); a compact
//!   `+…` run needs at least 10 digits.
//! - NANP with separators: `NXX-NXX-XXXX`, `NXX.NXX.XXXX`, `(NXX) NXX-XXXX`,
//!   `(NXX)NXX-XXXX`, optionally preceded by `1-`/`1 `/`1.`; area code and
//!   exchange start with 2–9.

use std::ops::Range;

use super::{byte_at, byte_before, is_alnum, is_digit, number_ends_at, number_starts_at};
use crate::mask::kind::{Detector, DetectorKind};

/// Finds phone numbers.
pub struct PhoneDetector;

const E164_MIN_DIGITS: usize = 8;
const E164_MIN_COMPACT_DIGITS: usize = 10;
const E164_MAX_DIGITS: usize = 15;

impl Detector for PhoneDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Phone
    }

    fn find(&self, text: &[u8], out: &mut Vec<Range<usize>>) {
        let first = out.len();
        let mut next_allowed = 0;
        for plus in memchr::memchr_iter(b'+', text) {
            if plus < next_allowed {
                continue;
            }
            if let Some(end) = e164_at(text, plus) {
                out.push(plus..end);
                next_allowed = end;
            }
        }
        let e164_end = out.len();
        let mut next_allowed = 0;
        for sep in memchr::memchr2_iter(b'-', b'.', text) {
            let Some(range) = nanp_with_line_separator_at(text, sep) else {
                continue;
            };
            let overlaps_e164 = out
                .get(first..e164_end)
                .is_some_and(|e| e.iter().any(|r| r.start < range.end && range.start < r.end));
            if range.start >= next_allowed && !overlaps_e164 {
                next_allowed = range.end;
                out.push(range);
            }
        }
        if let Some(added) = out.get_mut(first..) {
            added.sort_by_key(|r| r.start);
        }
    }
}

/// An E.164 number starting at the `+` at `plus`; returns its end.
fn e164_at(text: &[u8], plus: usize) -> Option<usize> {
    if is_alnum(byte_before(text, plus)) || !matches!(byte_at(text, plus + 1), Some(b'1'..=b'9')) {
        return None;
    }
    let mut digits = 0;
    let mut separators = 0;
    let mut open_paren = false;
    let mut parens = 0;
    let mut j = plus + 1;
    let mut end = j;
    loop {
        match byte_at(text, j) {
            Some(b) if b.is_ascii_digit() => {
                digits += 1;
                j += 1;
                end = j;
                if digits > E164_MAX_DIGITS {
                    return None;
                }
                continue;
            }
            _ => {}
        }
        // Between digit groups: one of ` `, `-`, `.`, optionally with a
        // parenthesis on either side, e.g. `) `, ` (`, `)-`.
        let gap_start = j;
        let mut plain = 0;
        while let Some(b) = byte_at(text, j) {
            match b {
                b' ' | b'-' | b'.' => plain += 1,
                b'(' if !open_paren && parens == 0 => {
                    open_paren = true;
                    parens += 1;
                }
                b')' if open_paren => open_paren = false,
                _ => break,
            }
            j += 1;
        }
        if j == gap_start || plain > 1 || !is_digit(byte_at(text, j)) {
            break;
        }
        separators += 1;
    }
    if open_paren || !number_ends_at(text, end) {
        return None;
    }
    let min = if separators == 0 {
        E164_MIN_COMPACT_DIGITS
    } else {
        E164_MIN_DIGITS
    };
    (digits >= min).then_some(end)
}

fn all_digits(s: Option<&[u8]>) -> bool {
    s.is_some_and(|s| s.iter().all(u8::is_ascii_digit))
}

/// A NANP area code or exchange: three digits, the first 2–9.
fn nxx(s: Option<&[u8]>) -> bool {
    matches!(s, Some([b'2'..=b'9', b, c]) if b.is_ascii_digit() && c.is_ascii_digit())
}

/// A NANP number whose exchange/line separator is at `sep`.
fn nanp_with_line_separator_at(text: &[u8], sep: usize) -> Option<Range<usize>> {
    let separator = byte_at(text, sep)?;
    let line_end = sep + 5;
    if !all_digits(text.get(sep + 1..line_end)) || !number_ends_at(text, line_end) {
        return None;
    }
    let exchange = sep.checked_sub(3)?;
    if !nxx(text.get(exchange..sep)) {
        return None;
    }
    let area_of = |at: usize| at.checked_sub(3).filter(|&a| nxx(text.get(a..at)));
    let start = match (
        byte_before(text, exchange),
        byte_before(text, exchange.checked_sub(1)?),
    ) {
        // NXX-NXX-XXXX with one separator throughout.
        (Some(b), _) if b == separator => {
            let area = area_of(exchange - 1)?;
            with_country_prefix(text, area, Some(separator))?
        }
        // (NXX)NXX-XXXX
        (Some(b')'), _) => paren_area(text, exchange - 1)?,
        // (NXX) NXX-XXXX
        (Some(b' '), Some(b')')) if separator == b'-' => paren_area(text, exchange - 2)?,
        _ => return None,
    };
    Some(start..line_end)
}

/// Start of `(NXX)` whose `)` is at `close`, with an optional `1 ` before it.
fn paren_area(text: &[u8], close: usize) -> Option<usize> {
    let open = close.checked_sub(4)?;
    if byte_at(text, open) != Some(b'(') || !nxx(text.get(open + 1..close)) {
        return None;
    }
    with_country_prefix(text, open, None)
}

/// Extends a match starting at `start` over a `1-`, `1.` or `1 ` country
/// prefix; checks the left boundary of the result. `separator` is the
/// separator the prefix must use (any of the three when `None`).
fn with_country_prefix(text: &[u8], start: usize, separator: Option<u8>) -> Option<usize> {
    let prefixed = start.checked_sub(2).filter(|&p| {
        text.get(p..start).is_some_and(|s| match s {
            [b'1', sep @ (b'-' | b'.' | b' ')] => {
                separator.is_none_or(|x| x == *sep) && number_starts_at(text, p)
            }
            _ => false,
        })
    });
    prefixed.or_else(|| number_starts_at(text, start).then_some(start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::detectors::corpus;

    #[test]
    fn corpus() {
        corpus::check(
            DetectorKind::Phone,
            include_str!("../../../testdata/mask/phone.positive.txt"),
            include_str!("../../../testdata/mask/phone.negative.txt"),
        );
    }
}
