//! Generic secrets written as an assignment: `password=…`, `api_key: "…"`,
//! `"client_secret": "…"`, `Authorization: Bearer …`. The key must name a
//! secret (see [`is_secret_key_name`]) and the value must look like one (see
//! [`is_secret_value`]); only the value is reported.

use std::ops::Range;

use super::{byte_at, byte_before};
use crate::mask::kind::{Detector, DetectorKind};

/// Finds high-entropy values assigned to secret-looking keys.
pub struct SecretAssignmentDetector;

const MAX_KEY: usize = 64;
const MAX_VALUE: usize = 4096;
const MIN_VALUE: usize = 8;

/// Normalised key endings (lower case, `_`, `-` and `.` removed) that name a
/// secret. Matching the ending keeps `db_password` and `x-api-key` in, and
/// `tokenizer`, `password_hash` and `secret_name` out.
const SECRET_KEY_ENDINGS: &[&[u8]] = &[
    b"password",
    b"passwd",
    b"pwd",
    b"passphrase",
    b"secret",
    b"token",
    b"apikey",
    b"accesskey",
    b"secretkey",
    b"privatekey",
    b"credential",
    b"credentials",
    b"authorization",
];

/// Whether a key (e.g. `DB_PASSWORD`, `x-api-key`, `clientSecret`) names a secret.
pub fn is_secret_key_name(key: &[u8]) -> bool {
    // Every entry of SECRET_KEY_ENDINGS ends in one of these letters; most keys seen in text
    // (`10:22`, `status=ok`) fail here without further work.
    let last = key.iter().rev().find(|b| !matches!(b, b'_' | b'-' | b'.'));
    if !last.is_some_and(|b| {
        matches!(
            b.to_ascii_lowercase(),
            b'd' | b'e' | b'n' | b't' | b'y' | b'l' | b's'
        )
    }) {
        return false;
    }
    let mut normal = [0u8; MAX_KEY];
    let mut len = 0;
    for &b in key.iter().filter(|b| !matches!(b, b'_' | b'-' | b'.')) {
        let Some(slot) = normal.get_mut(len) else {
            return false;
        };
        *slot = b.to_ascii_lowercase();
        len += 1;
    }
    let normal = normal.get(..len).unwrap_or_default();
    SECRET_KEY_ENDINGS
        .iter()
        .any(|ending| normal.ends_with(ending))
}

/// Whether `value` is plausibly a secret rather than a placeholder, a number or
/// a word: at least 8 bytes, not only digits, not a template reference
/// (`${X}`, `{{ .x }}`, `<redacted>`, `%(pw)s`), and a Shannon entropy of at
/// least `min(3.0, 0.85 × log2(len))` bits per byte (so `********`, `REDACTED`
/// and `undefined` stay, `Tr0ub4dor&3` and random tokens go).
pub fn is_secret_value(value: &[u8]) -> bool {
    if value.len() < MIN_VALUE || value.len() > MAX_VALUE || value.iter().all(u8::is_ascii_digit) {
        return false;
    }
    if matches!(value.first(), Some(b'$' | b'<' | b'%')) || value.starts_with(b"{{") {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in value {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
    }
    let len = value.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum();
    entropy >= (0.85 * len.log2()).min(3.0)
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Bytes that end an unquoted value.
fn ends_unquoted(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b',' | b';' | b'&' | b'"' | b'\'' | b'`' | b'}' | b')' | b']' | b'<' | b'>'
        )
}

impl Detector for SecretAssignmentDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::SecretAssignment
    }

    fn find(&self, text: &[u8], out: &mut Vec<Range<usize>>) {
        let mut next_allowed = 0;
        for sep in memchr::memchr2_iter(b'=', b':', text) {
            if sep < next_allowed {
                continue;
            }
            let Some(key) = key_before(text, sep) else {
                continue;
            };
            if !is_secret_key_name(key) {
                continue;
            }
            if let Some(value) = value_after(text, sep)
                && text.get(value.clone()).is_some_and(is_secret_value)
            {
                next_allowed = value.end;
                out.push(value);
            }
        }
    }
}

/// The key ending just before the separator at `sep`: spaces, a closing quote
/// (possibly escaped, `\"`) and then key characters.
fn key_before(text: &[u8], sep: usize) -> Option<&[u8]> {
    let mut end = sep;
    while matches!(byte_before(text, end), Some(b' ' | b'\t')) && sep - end < 4 {
        end -= 1;
    }
    if matches!(byte_before(text, end), Some(b'"' | b'\'')) {
        end -= 1;
        if byte_before(text, end) == Some(b'\\') {
            end -= 1;
        }
    }
    let head = text.get(end.saturating_sub(MAX_KEY)..end)?;
    let len = head.iter().rev().take_while(|&&b| is_key_char(b)).count();
    (len > 0).then(|| head.get(head.len() - len..)).flatten()
}

/// The value after the separator at `sep`, without quotes and without an
/// HTTP auth scheme (`Bearer `, `Basic `).
fn value_after(text: &[u8], sep: usize) -> Option<Range<usize>> {
    let mut at = sep + 1;
    // `:=`, `=>`
    if matches!(byte_at(text, at), Some(b'=' | b'>')) {
        at += 1;
    }
    while matches!(byte_at(text, at), Some(b' ' | b'\t')) && at - sep < 8 {
        at += 1;
    }
    // Escaped quotes appear when the assignment sits inside a JSON string.
    let escaped =
        byte_at(text, at) == Some(b'\\') && matches!(byte_at(text, at + 1), Some(b'"' | b'\''));
    if escaped {
        at += 1;
    }
    let quote = byte_at(text, at).filter(|b| matches!(b, b'"' | b'\''));
    if quote.is_some() {
        at += 1;
    }
    at = skip_auth_scheme(text, at);
    let rest = text.get(at..)?;
    let rest = rest.get(..rest.len().min(MAX_VALUE + 1))?;
    let len = match quote {
        Some(q) => {
            let close = rest.iter().position(|&b| b == q || b == b'\n')?;
            if rest.get(close) != Some(&q) {
                return None;
            }
            if escaped {
                close
                    .checked_sub(1)
                    .filter(|&c| rest.get(c) == Some(&b'\\'))?
            } else {
                close
            }
        }
        None => rest
            .iter()
            .position(|&b| ends_unquoted(b))
            .unwrap_or(rest.len()),
    };
    (len > 0).then_some(at..at + len)
}

fn skip_auth_scheme(text: &[u8], at: usize) -> usize {
    for scheme in [&b"bearer "[..], b"basic ", b"token "] {
        if text
            .get(at..at + scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        {
            return at + scheme.len();
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::detectors::corpus;

    #[test]
    fn corpus() {
        corpus::check(
            DetectorKind::SecretAssignment,
            include_str!("../../../testdata/mask/secret_assignment.positive.txt"),
            include_str!("../../../testdata/mask/secret_assignment.negative.txt"),
        );
    }

    #[test]
    fn key_names_match_on_their_ending() {
        for ending in SECRET_KEY_ENDINGS {
            assert!(
                is_secret_key_name(ending),
                "{}",
                String::from_utf8_lossy(ending)
            );
        }
        for key in [
            "password",
            "DB_PASSWORD",
            "x-api-key",
            "clientSecret",
            "github.token",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(is_secret_key_name(key.as_bytes()), "{key}");
        }
        for key in [
            "tokenizer",
            "password_hash",
            "secret_name",
            "max_tokens",
            "monkey",
            "user",
        ] {
            assert!(!is_secret_key_name(key.as_bytes()), "{key}");
        }
    }

    #[test]
    fn placeholders_and_low_entropy_values_are_not_secrets() {
        for v in [
            "********",
            "REDACTED",
            "undefined",
            "${DB_PASSWORD}",
            "{{ .Values.pw }}",
            "12345678901",
            "aaaaaaaaaaaa",
        ] {
            assert!(!is_secret_value(v.as_bytes()), "{v}");
        }
        for v in [
            "Tr0ub4dor&3",
            "sk_live_51HqLyjWDarjtT1zdp7dc",
            "changeme",
            "Zx9!kQ2#mP7@",
        ] {
            assert!(is_secret_value(v.as_bytes()), "{v}");
        }
    }
}
