//! E-mail addresses, RFC 5322 "dot-atom" shaped: a local part of common
//! characters, `@`, and a domain of at least two DNS labels whose last label
//! (the TLD) is 2–24 letters or an `xn--` label. File extensions that look like
//! TLDs (`logo@2x.png`) are rejected.

use std::ops::Range;

use super::byte_at;
use crate::mask::kind::{Detector, DetectorKind};

/// Finds e-mail addresses.
pub struct EmailDetector;

const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;

/// Last labels that are file extensions, not TLDs.
const FILE_EXTENSIONS: &[&[u8]] = &[
    b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"bmp", b"ico", b"css", b"js", b"json",
    b"html", b"htm", b"txt", b"pdf", b"log", b"tar", b"gz", b"zip", b"yaml", b"yml", b"lock",
    b"md",
];

fn is_local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-' | b'\'')
}

fn is_domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

impl Detector for EmailDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Email
    }

    fn find(&self, text: &[u8], out: &mut Vec<Range<usize>>) {
        let mut next_allowed = 0;
        for at in memchr::memchr_iter(b'@', text) {
            if at < next_allowed {
                continue;
            }
            if let Some(range) = email_around(text, at, next_allowed) {
                next_allowed = range.end;
                out.push(range);
            }
        }
    }
}

/// The address around the `@` at `at`, if it is one. `floor` is where the
/// previous match ended.
fn email_around(text: &[u8], at: usize, floor: usize) -> Option<Range<usize>> {
    let before = text.get(floor..at)?;
    let local_len = before
        .iter()
        .rev()
        .take_while(|&&b| is_local_char(b))
        .count();
    // Trim leading characters an address cannot start with (`'quoted'`, `.x`).
    let local = before.get(before.len() - local_len..)?;
    let skip = local
        .iter()
        .take_while(|&&b| !b.is_ascii_alphanumeric())
        .count();
    let local = local.get(skip..)?;
    if local.is_empty()
        || local.len() > MAX_LOCAL
        || local.ends_with(b".")
        || contains_double_dot(local)
    {
        return None;
    }
    let start = at - local.len();

    let after = text.get(at + 1..)?;
    let mut domain_len = after.iter().take_while(|&&b| is_domain_char(b)).count();
    // A sentence may end right after the address.
    while domain_len > 0 && matches!(after.get(domain_len - 1), Some(b'.' | b'-')) {
        domain_len -= 1;
    }
    let domain = after.get(..domain_len)?;
    if !valid_domain(domain) {
        return None;
    }
    // `user@example.com@evil` or `a@b.com_x`: not a clean address.
    if matches!(byte_at(text, at + 1 + domain_len), Some(b'@' | b'_')) {
        return None;
    }
    Some(start..at + 1 + domain_len)
}

fn contains_double_dot(s: &[u8]) -> bool {
    s.windows(2).any(|w| w == b"..")
}

fn valid_domain(domain: &[u8]) -> bool {
    if domain.len() > MAX_DOMAIN || contains_double_dot(domain) {
        return false;
    }
    let mut labels = 0;
    let mut last: &[u8] = &[];
    for label in domain.split(|&b| b == b'.') {
        if label.is_empty() || label.len() > 63 || label.starts_with(b"-") || label.ends_with(b"-")
        {
            return false;
        }
        labels += 1;
        last = label;
    }
    let tld_ok = (last.len() >= 2 && last.len() <= 24 && last.iter().all(u8::is_ascii_alphabetic))
        || (last.len() > 4 && last.starts_with(b"xn--"));
    let is_file = FILE_EXTENSIONS
        .iter()
        .any(|ext| last.eq_ignore_ascii_case(ext));
    labels >= 2 && tld_ok && !is_file
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::detectors::corpus;

    #[test]
    fn corpus() {
        corpus::check(
            DetectorKind::Email,
            include_str!("../../../testdata/mask/email.positive.txt"),
            include_str!("../../../testdata/mask/email.negative.txt"),
        );
    }
}
