//! Inspecting a value no rule masks whole: every type, text and binary
//! format alike, goes through the detectors, and what they find is masked
//! so that the value stays valid for its type.
//!
//! - Text-like values (text, varchar, char, name, xml, enums and other types
//!   the masker does not know) are scanned as text and their findings
//!   replaced in place; so are the text forms of containers (arrays,
//!   composites and records, ranges, tsvector), whose syntax the
//!   replacements (no quotes, commas, braces or backslashes) keep.
//! - Numbers (integers, floats, numeric), in either format, are read as
//!   their decimal digits; one that holds a finding becomes `0`.
//! - bytea is decoded (hex text form, or the raw binary) and scanned as the
//!   bytes it holds; findings are replaced and the value encoded again.
//! - Binary containers are taken apart: array elements and record fields are
//!   inspected by their own type (lengths recomputed); a range or tsvector
//!   with a finding in a bound or lexeme becomes NULL.
//! - A binary value of a type the masker does not know is read as a record
//!   when its bytes are exactly one, else scanned as raw bytes; a finding
//!   makes it NULL.
//! - Other scalar types (bool, dates and times, uuid, network addresses) are
//!   scanned in text form, a finding making them NULL; their binary forms
//!   hold no text.
//!
//! Values nested deeper than [`MAX_NESTING`] cannot be read: NULL.

use super::config::MaskingPolicy;
use super::values::ValueCounts;
use gatehouse_core::mask::{Masked, Masker};
use std::borrow::Cow;

/// Containers nested deeper than this (arrays of records of arrays…) are
/// not read: such a value becomes NULL.
pub const MAX_NESTING: usize = 8;

/// What the masker knows of a type, for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Json,
    Jsonb,
    Bytea,
    Int(usize),
    Float(usize),
    Numeric,
    Array,
    Record,
    Range(Option<u32>),
    TsVector,
    /// Fixed binary forms without text (bool, dates, uuid, …).
    Fixed,
    Unknown,
}

fn kind(type_oid: u32) -> Kind {
    match type_oid {
        25 | 1043 | 1042 | 19 | 18 | 705 | 142 | 3734 | 2275 => Kind::Text,
        114 => Kind::Json,
        3802 => Kind::Jsonb,
        17 => Kind::Bytea,
        21 => Kind::Int(2),
        23 | 26 => Kind::Int(4),
        20 => Kind::Int(8),
        700 => Kind::Float(4),
        701 => Kind::Float(8),
        1700 => Kind::Numeric,
        2249 => Kind::Record,
        3904 => Kind::Range(Some(23)),
        3926 => Kind::Range(Some(20)),
        3906 => Kind::Range(Some(1700)),
        3908 | 3910 | 3912 => Kind::Range(None),
        3614 => Kind::TsVector,
        16 | 1082 | 1083 | 1114 | 1184 | 1186 | 1266 | 2950 | 869 | 650 | 829 | 774 | 790 | 600
        | 601 | 602 | 603 | 604 | 628 | 718 | 3615 | 1560 | 1562 | 2206 | 24 | 2202 | 2203
        | 2204 | 2205 | 3769 | 4089 | 4096 | 3220 | 28 | 29 | 27 | 3500 | 2276 => Kind::Fixed,
        // Array types: their binary form names the element type.
        1000..=1041
        | 1115
        | 1182
        | 1183
        | 1185
        | 1187
        | 1231
        | 1263
        | 1270
        | 143
        | 199
        | 2287
        | 2951
        | 3807
        | 3643
        | 3645
        | 3905
        | 3907
        | 3909
        | 3911
        | 3913
        | 3927
        | 651 => Kind::Array,
        _ => Kind::Unknown,
    }
}

/// Inspects one non-NULL value of type `type_oid` in text or binary format.
pub fn inspect<'a>(
    policy: &MaskingPolicy,
    type_oid: u32,
    binary: bool,
    value: &'a [u8],
    counts: &mut ValueCounts,
) -> Masked<'a> {
    inspect_at(policy, type_oid, binary, value, counts, 0)
}

fn inspect_at<'a>(
    policy: &MaskingPolicy,
    type_oid: u32,
    binary: bool,
    value: &'a [u8],
    counts: &mut ValueCounts,
    depth: usize,
) -> Masked<'a> {
    if depth > MAX_NESTING {
        counts.detectors.over_cap = counts.detectors.over_cap.saturating_add(1);
        return Masked::Null;
    }
    let masker = &policy.masker;
    match (kind(type_oid), binary) {
        (Kind::Json, _) | (Kind::Jsonb, false) => json(masker, value, counts),
        (Kind::Jsonb, true) => match value.split_first() {
            Some((&version, document)) => match json(masker, document, counts) {
                Masked::Value(Cow::Borrowed(_)) => Masked::Value(Cow::Borrowed(value)),
                Masked::Value(Cow::Owned(mut masked)) => {
                    masked.insert(0, version);
                    Masked::Value(Cow::Owned(masked))
                }
                Masked::Null => Masked::Null,
            },
            None => Masked::Value(Cow::Borrowed(value)),
        },
        // Text, and the text forms of containers and unknown types: the
        // replacements keep their syntax.
        (Kind::Text | Kind::Array | Kind::Record | Kind::TsVector | Kind::Unknown, false)
        | (Kind::Text | Kind::Bytea, true) => scan(masker, value, counts),
        (Kind::Bytea, false) => bytea_text(masker, value, counts),
        (Kind::Int(_) | Kind::Float(_) | Kind::Numeric, false) => {
            whole_if_found(masker, value, value, counts, Some(b"0"))
        }
        (Kind::Range(_) | Kind::Fixed, false) => whole_if_found(masker, value, value, counts, None),
        (Kind::Int(width), true) => {
            let digits = int_digits(value, width);
            let zero = vec![0u8; value.len()];
            whole_if_found(masker, value, digits.as_bytes(), counts, Some(&zero))
        }
        (Kind::Float(width), true) => {
            let digits = float_digits(value, width);
            let zero = vec![0u8; value.len()];
            whole_if_found(masker, value, digits.as_bytes(), counts, Some(&zero))
        }
        (Kind::Numeric, true) => match numeric_digits(value) {
            Some(digits) => whole_if_found(
                masker,
                value,
                digits.as_bytes(),
                counts,
                Some(&NUMERIC_ZERO),
            ),
            None => Masked::Null,
        },
        (Kind::Array, true) => binary_array(policy, value, counts, depth),
        (Kind::Record, true) => binary_record(policy, value, counts, depth).unwrap_or(Masked::Null),
        (Kind::Range(subtype), true) => binary_range(policy, subtype, value, counts, depth),
        (Kind::TsVector, true) => match tsvector_lexemes(value) {
            Some(lexemes) => whole_if_found(masker, value, &lexemes, counts, None),
            None => Masked::Null,
        },
        (Kind::Fixed, true) => Masked::Value(Cow::Borrowed(value)),
        (Kind::Unknown, true) => match binary_record(policy, value, counts, depth) {
            Some(masked) => masked,
            None => whole_if_found(masker, value, value, counts, None),
        },
    }
}

/// Text scanned and its findings replaced in place.
fn scan<'a>(masker: &Masker, value: &'a [u8], counts: &mut ValueCounts) -> Masked<'a> {
    let masked = masker.mask_text(value);
    counts.detectors.merge(&masked.counts);
    masked.value
}

/// `readable` (the value's text, or `value` itself) scanned: on a finding
/// the whole value becomes `replacement` (NULL when `None`).
fn whole_if_found<'a>(
    masker: &Masker,
    value: &'a [u8],
    readable: &[u8],
    counts: &mut ValueCounts,
    replacement: Option<&[u8]>,
) -> Masked<'a> {
    let masked = masker.mask_text(readable);
    counts.detectors.merge(&masked.counts);
    if masked.value.is_unchanged() {
        return Masked::Value(Cow::Borrowed(value));
    }
    match replacement {
        Some(r) => Masked::Value(Cow::Owned(r.to_vec())),
        None => Masked::Null,
    }
}

pub(super) fn json<'a>(masker: &Masker, value: &'a [u8], counts: &mut ValueCounts) -> Masked<'a> {
    if value.len() > masker.max_scan_bytes() {
        let masked = masker.mask_text(value);
        counts.detectors.merge(&masked.counts);
        return match masked.value {
            Masked::Value(Cow::Owned(_)) => Masked::Value(Cow::Owned(b"null".to_vec())),
            other => other,
        };
    }
    match masker.mask_json_strings(value) {
        Ok(masked) => {
            counts.detectors.merge(&masked.counts);
            Masked::Value(masked.json)
        }
        // Not JSON after all: nothing in it can be trusted to be safe.
        Err(_) => {
            counts.detectors.over_cap = counts.detectors.over_cap.saturating_add(1);
            Masked::Value(Cow::Owned(b"null".to_vec()))
        }
    }
}

/// A bytea in text form: `\x` and hex digits (the server's default output),
/// or the escape form. Decoded, scanned, encoded again in hex.
fn bytea_text<'a>(masker: &Masker, value: &'a [u8], counts: &mut ValueCounts) -> Masked<'a> {
    let Some(hex) = value.strip_prefix(b"\\x") else {
        // The escape form shows printable bytes as themselves.
        return scan(masker, value, counts);
    };
    let Some(bytes) = decode_hex(hex) else {
        return Masked::Null;
    };
    match scan(masker, &bytes, counts) {
        Masked::Value(Cow::Borrowed(_)) => Masked::Value(Cow::Borrowed(value)),
        Masked::Value(Cow::Owned(masked)) => {
            let mut out = Vec::with_capacity(2 + masked.len() * 2);
            out.extend_from_slice(b"\\x");
            for b in masked {
                out.extend_from_slice(format!("{b:02x}").as_bytes());
            }
            Masked::Value(Cow::Owned(out))
        }
        Masked::Null => Masked::Null,
    }
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks_exact(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

fn int_digits(value: &[u8], width: usize) -> String {
    let n = match (width, value) {
        (2, [a, b]) => i64::from(i16::from_be_bytes([*a, *b])),
        (4, [a, b, c, d]) => i64::from(i32::from_be_bytes([*a, *b, *c, *d])),
        (8, bytes) => bytes.try_into().map(i64::from_be_bytes).unwrap_or_default(),
        _ => 0,
    };
    n.to_string()
}

fn float_digits(value: &[u8], width: usize) -> String {
    match width {
        4 => value
            .try_into()
            .map(|b| f32::from_be_bytes(b).to_string())
            .unwrap_or_default(),
        _ => value
            .try_into()
            .map(|b| f64::from_be_bytes(b).to_string())
            .unwrap_or_default(),
    }
}

/// numeric's binary zero: no digits, weight 0, positive, scale 0.
const NUMERIC_ZERO: [u8; 8] = [0; 8];

/// A binary numeric as its decimal text; `None` when malformed.
fn numeric_digits(value: &[u8]) -> Option<String> {
    let u16_at = |i: usize| {
        value
            .get(i..i + 2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_be_bytes)
    };
    let ndigits = usize::from(u16_at(0)?);
    let weight = i32::from(i16::from_be_bytes(u16_at(2)?.to_be_bytes()));
    let sign = u16_at(4)?;
    if value.len() != 8 + ndigits * 2 {
        return None;
    }
    let digits: Vec<u16> = (0..ndigits).filter_map(|i| u16_at(8 + i * 2)).collect();
    if sign == 0xC000 {
        return Some("NaN".into());
    }
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    // Integer part: groups 0..=weight; fraction: the rest.
    let int_groups = usize::try_from(weight + 1).unwrap_or(0);
    if int_groups == 0 {
        out.push('0');
    }
    for g in 0..int_groups {
        let d = digits.get(g).copied().unwrap_or(0);
        if g == 0 {
            out.push_str(&d.to_string());
        } else {
            out.push_str(&format!("{d:04}"));
        }
    }
    let leading_zero_groups = usize::try_from(-(weight + 1)).unwrap_or(0);
    let fraction: Vec<u16> = std::iter::repeat_n(0, leading_zero_groups)
        .chain(digits.iter().skip(int_groups).copied())
        .collect();
    if !fraction.is_empty() {
        out.push('.');
        for d in fraction {
            out.push_str(&format!("{d:04}"));
        }
    }
    Some(out)
}

fn read_i32(value: &[u8], at: usize) -> Option<i32> {
    value
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(i32::from_be_bytes)
}

/// A binary array: every element inspected by the element type the header
/// names, lengths recomputed. Anything unreadable makes it NULL.
fn binary_array<'a>(
    policy: &MaskingPolicy,
    value: &'a [u8],
    counts: &mut ValueCounts,
    depth: usize,
) -> Masked<'a> {
    let (Some(ndim), Some(element_type)) = (read_i32(value, 0), read_i32(value, 8)) else {
        return Masked::Null;
    };
    let Ok(ndim) = usize::try_from(ndim) else {
        return Masked::Null;
    };
    if ndim > 6 {
        return Masked::Null;
    }
    let element_type = u32::from_ne_bytes(element_type.to_ne_bytes());
    let header_len = 12 + ndim * 8;
    if value.len() < header_len {
        return Masked::Null;
    }
    let mut out: Option<Vec<u8>> = None;
    let mut at = header_len;
    let mut now_null = false;
    while at < value.len() {
        let Some(len) = read_i32(value, at) else {
            return Masked::Null;
        };
        let start = at + 4;
        let Ok(len) = usize::try_from(len) else {
            if let Some(out) = out.as_mut() {
                out.extend_from_slice(&(-1i32).to_be_bytes());
            }
            at = start;
            continue;
        };
        let end = start.saturating_add(len);
        let Some(element) = value.get(start..end) else {
            return Masked::Null;
        };
        let masked = inspect_at(policy, element_type, true, element, counts, depth + 1);
        if !masked.is_unchanged() && out.is_none() {
            let mut fresh = Vec::with_capacity(value.len() + 16);
            fresh.extend_from_slice(value.get(..at).unwrap_or_default());
            out = Some(fresh);
        }
        if let Some(out) = out.as_mut() {
            now_null |= masked.as_bytes().is_none();
            push_length_prefixed(out, masked.as_bytes());
        }
        at = end;
    }
    match out {
        Some(mut out) => {
            if now_null && let Some(flag) = out.get_mut(4..8) {
                flag.copy_from_slice(&1i32.to_be_bytes());
            }
            Masked::Value(Cow::Owned(out))
        }
        None => Masked::Value(Cow::Borrowed(value)),
    }
}

/// A binary record (composite): a field count, then each field's type OID,
/// length and bytes, inspected by that type. `None` when the bytes are not
/// exactly one record.
fn binary_record<'a>(
    policy: &MaskingPolicy,
    value: &'a [u8],
    counts: &mut ValueCounts,
    depth: usize,
) -> Option<Masked<'a>> {
    let count = usize::try_from(read_i32(value, 0)?).ok()?;
    if count > super::values::MAX_COLUMNS {
        return None;
    }
    // First check the shape, so that a value that is not a record is not
    // half-read.
    let mut at = 4;
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        let type_oid = u32::from_ne_bytes(read_i32(value, at)?.to_ne_bytes());
        let len = read_i32(value, at + 4)?;
        at += 8;
        match usize::try_from(len) {
            Ok(len) => {
                let end = at.checked_add(len)?;
                value.get(at..end)?;
                fields.push((type_oid, Some(at..end)));
                at = end;
            }
            Err(_) if len == -1 => fields.push((type_oid, None)),
            Err(_) => return None,
        }
    }
    if at != value.len() {
        return None;
    }
    let mut out: Option<Vec<u8>> = None;
    let mut previous_end = 4;
    for (type_oid, range) in fields {
        let Some(range) = range else {
            if let Some(out) = out.as_mut() {
                out.extend_from_slice(&type_oid.to_be_bytes());
                out.extend_from_slice(&(-1i32).to_be_bytes());
            }
            previous_end += 8;
            continue;
        };
        let field = value.get(range.clone())?;
        let masked = inspect_at(policy, type_oid, true, field, counts, depth + 1);
        if !masked.is_unchanged() && out.is_none() {
            out = Some(value.get(..previous_end)?.to_vec());
        }
        if let Some(out) = out.as_mut() {
            out.extend_from_slice(&type_oid.to_be_bytes());
            push_length_prefixed(out, masked.as_bytes());
        }
        previous_end = range.end;
    }
    Some(match out {
        Some(out) => Masked::Value(Cow::Owned(out)),
        None => Masked::Value(Cow::Borrowed(value)),
    })
}

/// A binary range: flags, then each present bound with its length. A bound
/// with a finding makes the range NULL (its order may no longer hold).
fn binary_range<'a>(
    policy: &MaskingPolicy,
    subtype: Option<u32>,
    value: &'a [u8],
    counts: &mut ValueCounts,
    depth: usize,
) -> Masked<'a> {
    let Some((&flags, mut rest)) = value.split_first() else {
        return Masked::Null;
    };
    // Empty (0x01), or infinite lower (0x08) / upper (0x10) bounds have no bytes.
    let bounds = if flags & 0x01 != 0 {
        0
    } else {
        usize::from(flags & 0x08 == 0) + usize::from(flags & 0x10 == 0)
    };
    for _ in 0..bounds {
        let Some(len) = read_i32(rest, 0).and_then(|l| usize::try_from(l).ok()) else {
            return Masked::Null;
        };
        let Some(bound) = rest.get(4..4 + len) else {
            return Masked::Null;
        };
        let masked = match subtype {
            Some(subtype) => inspect_at(policy, subtype, true, bound, counts, depth + 1),
            None => whole_if_found(&policy.masker, bound, bound, counts, None),
        };
        if !masked.is_unchanged() {
            return Masked::Null;
        }
        rest = rest.get(4 + len..).unwrap_or_default();
    }
    if !rest.is_empty() {
        return Masked::Null;
    }
    Masked::Value(Cow::Borrowed(value))
}

/// The lexemes of a binary tsvector, joined by spaces; `None` when malformed.
fn tsvector_lexemes(value: &[u8]) -> Option<Vec<u8>> {
    let count = usize::try_from(read_i32(value, 0)?).ok()?;
    let mut at = 4;
    let mut out = Vec::with_capacity(value.len());
    for _ in 0..count {
        let rest = value.get(at..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        out.extend_from_slice(rest.get(..end)?);
        out.push(b' ');
        at += end + 1;
        let positions = value
            .get(at..at + 2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_be_bytes)?;
        at += 2 + usize::from(positions) * 2;
    }
    (at == value.len()).then_some(out)
}

fn push_length_prefixed(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(bytes) => {
            let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
#[path = "inspect_tests.rs"]
mod tests;
