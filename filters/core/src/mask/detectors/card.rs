//! Payment card numbers: 13–19 digits, written plain or in groups separated by
//! one kind of separator (space or dash), with a known issuer prefix (IIN) for
//! that length and a valid Luhn check digit.

use std::ops::Range;

use super::{digit_run_end as run_end, digits_of, find_digit, value_ends_at, value_starts_at};
use crate::mask::kind::{Detector, DetectorKind};

/// Finds payment card numbers.
pub struct PaymentCardDetector;

const MIN_DIGITS: usize = 13;
const MAX_DIGITS: usize = 19;

impl Detector for PaymentCardDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::PaymentCard
    }

    fn find(&self, text: &[u8], out: &mut Vec<Range<usize>>) {
        // Prefilter: a card needs 13 digits; stop counting once there are.
        if text
            .iter()
            .filter(|b| b.is_ascii_digit())
            .nth(MIN_DIGITS - 1)
            .is_none()
        {
            return;
        }
        let mut i = 0;
        while let Some(start) = find_digit(text, i) {
            let first_run_end = run_end(text, start);
            if may_start_card(text, start, first_run_end)
                && value_starts_at(text, start)
                && let Some(end) = card_at(text, start)
            {
                out.push(start..end);
                i = end;
                continue;
            }
            // A later group of the same run may still start a card
            // ("ref 1234 4111 1111 1111 1111").
            i = first_run_end;
        }
    }
}

/// Cheap check before the full parse: a card starts with a 13–19 digit run,
/// or with a group of four followed by a space or dash and a digit.
fn may_start_card(text: &[u8], start: usize, run_end: usize) -> bool {
    match run_end - start {
        4 => {
            matches!(text.get(run_end), Some(b' ' | b'-'))
                && text.get(run_end + 1).is_some_and(u8::is_ascii_digit)
        }
        len => (MIN_DIGITS..=MAX_DIGITS).contains(&len),
    }
}

/// The end of the longest valid card number starting at `start`, if any.
fn card_at(text: &[u8], start: usize) -> Option<usize> {
    // Candidate ends sit at group boundaries once 13 digits are reached.
    let mut candidates = [0usize; MAX_DIGITS - MIN_DIGITS + 1];
    let mut n_candidates = 0;
    let mut digits = 0;
    let mut separator = None;
    let mut group_index = 0;
    let mut j = start;
    loop {
        let end = run_end(text, j);
        let group = end - j;
        digits += group;
        if digits > MAX_DIGITS {
            break;
        }
        // Grouped numbers look like 4-4-4-4, 4-6-5 or 4-4-4-4-3.
        let group_ok = match (separator, group_index) {
            (None, _) => true,
            (Some(_), 0) => group == 4,
            (Some(_), _) => (3..=6).contains(&group),
        };
        if !group_ok {
            break;
        }
        if digits >= MIN_DIGITS
            && value_ends_at(text, end)
            && let Some(slot) = candidates.get_mut(n_candidates)
        {
            *slot = end;
            n_candidates += 1;
        }
        match (text.get(end).copied(), text.get(end + 1)) {
            (Some(sep @ (b' ' | b'-')), Some(next))
                if next.is_ascii_digit() && separator.is_none_or(|s| s == sep) =>
            {
                // The first group decides the separator; a plain 13+ digit run
                // followed by a separator is not a grouped card.
                if group_index == 0 && group != 4 {
                    break;
                }
                separator = Some(sep);
                group_index += 1;
                j = end + 1;
            }
            _ => break,
        }
    }
    candidates
        .get(..n_candidates)?
        .iter()
        .rev()
        .copied()
        .find(|&end| text.get(start..end).is_some_and(is_card_number))
}

/// Whether the digits of `number` (separators ignored) form a card number.
pub(crate) fn is_card_number(number: &[u8]) -> bool {
    let mut digits = [0u8; MAX_DIGITS];
    let mut len = 0;
    for d in digits_of(number) {
        let Some(slot) = digits.get_mut(len) else {
            return false;
        };
        *slot = d;
        len += 1;
    }
    let Some(digits) = digits.get(..len) else {
        return false;
    };
    len >= MIN_DIGITS && issuer_accepts(digits) && luhn_valid(digits)
}

/// Luhn mod-10 check over decimal digits.
fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether a known card scheme issues numbers with this prefix and length.
fn issuer_accepts(digits: &[u8]) -> bool {
    let prefix = |n: usize| {
        digits
            .iter()
            .take(n)
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d))
    };
    let len = digits.len();
    let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
    let visa = p1 == 4 && matches!(len, 13 | 16 | 19);
    let mastercard = ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16;
    let amex = matches!(p2, 34 | 37) && len == 15;
    let long = (16..=19).contains(&len);
    let discover =
        (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6))
            && long;
    let jcb = (3528..=3589).contains(&p4) && long;
    let diners = ((300..=305).contains(&p3) || p4 == 3095 || matches!(p2, 36 | 38 | 39))
        && (14..=19).contains(&len);
    let unionpay = p2 == 62 && long;
    let mir = (2200..=2204).contains(&p4) && long;
    let maestro = matches!(
        p4,
        5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761 | 6762 | 6763
    );
    visa || mastercard || amex || discover || jcb || diners || unionpay || mir || maestro
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::detectors::corpus;

    #[test]
    fn corpus() {
        corpus::check(
            DetectorKind::PaymentCard,
            include_str!("../../../testdata/mask/payment_card.positive.txt"),
            include_str!("../../../testdata/mask/payment_card.negative.txt"),
        );
    }

    #[test]
    fn luhn_rejects_one_changed_digit() {
        assert!(is_card_number(b"4111111111111111"));
        assert!(!is_card_number(b"4111111111111112"));
    }

    #[test]
    fn unknown_issuer_is_rejected_even_when_luhn_valid() {
        // Luhn-valid, but no scheme issues 16-digit numbers starting with 1.
        assert!(luhn_valid(&[
            1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8
        ]));
        assert!(!is_card_number(b"1000000000000008"));
    }
}
