//! Mask styles, value types, and the [`Masker`] that applies them to whole
//! values (column rules) and to detector findings inside text.
//!
//! What each style keeps:
//!
//! | style                | text result                                   | length |
//! |----------------------|-----------------------------------------------|--------|
//! | `redact`             | the configured token (default `****`)         | fixed token |
//! | `redact_keep_length` | `*` per character                             | character count kept |
//! | `partial`            | last N characters kept, see below             | character count kept, except e-mail |
//! | `hash`               | `h:` + 16 hex digits of HMAC-SHA256(key, value) | fixed, 18 bytes |
//! | `null`               | [`Masked::Null`]: SQL NULL / JSON `null`        | — |
//!
//! `partial` keeps the last `N` letters/digits (`N` = `partial_keep_last`, at most
//! half of them) and replaces the others with `*`, keeping separators, so
//! `4111 1111 1111 1111` becomes `**** **** **** 1111` and `536-22-1234` becomes
//! `***-**-1234`. E-mail keeps the first character and the domain
//! (`a***@example.com`). Credentials (private keys, JWTs, secret assignments)
//! are never partially revealed: `partial` masks every character.
//!
//! `hash` is keyed and stable: equal inputs give equal outputs under the same
//! key, so joins and `GROUP BY` on masked columns still work, and nobody without
//! the key can test guesses. Card, SSN, IBAN and phone values are hashed on their
//! letters and digits only (upper-cased) and e-mail addresses lower-cased, so
//! `4111-1111-1111-1111` and `4111111111111111` hash alike.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::detector::{DetectorCounts, DetectorSet, Finding};
use super::kind::DetectorKind;
use super::write::{push_hex, write_json_string};

/// How a sensitive value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskStyle {
    /// Replace with the configured token.
    Redact,
    /// Replace every character with `*`.
    RedactKeepLength,
    /// Keep the last few characters (or e-mail's first character and domain).
    Partial,
    /// Keyed HMAC-SHA256, stable per key.
    Hash,
    /// The value becomes NULL (SQL) or `null` (JSON).
    Null,
}

impl MaskStyle {
    pub const ALL: [MaskStyle; 5] = [
        MaskStyle::Redact,
        MaskStyle::RedactKeepLength,
        MaskStyle::Partial,
        MaskStyle::Hash,
        MaskStyle::Null,
    ];

    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            MaskStyle::Redact => "redact",
            MaskStyle::RedactKeepLength => "redact_keep_length",
            MaskStyle::Partial => "partial",
            MaskStyle::Hash => "hash",
            MaskStyle::Null => "null",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// What the client expects a value to be, so a masked value stays decodable.
///
/// Policy per type (the style is the rule's; `Null` always gives NULL):
///
/// | type                      | redact / redact_keep_length / partial | hash |
/// |---------------------------|---------------------------------------|------|
/// | `Text` (text, varchar, name, and their binary format, which is the same bytes) | as the style says | `h:` + 16 hex |
/// | `SmallInt`, `Integer`, `BigInt` (text format) | `0` | a non-negative integer from the HMAC that fits the type |
/// | `Numeric` (numeric, float4/8, text format) | `0` | a non-negative integer below 10^15 |
/// | `Uuid` (text format)      | `00000000-0000-0000-0000-000000000000` | a UUID made of HMAC bytes |
/// | `Json` (json, jsonb in text format) | the text result as a JSON string | the hash as a JSON string |
/// | `Bytea` (text format, hex) | `\x` (empty) | `\x` + 32 hex digits |
/// | `Opaque` (any binary-format value other than text, and types without a safe masked form: dates, booleans, …) | NULL | NULL |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    Text,
    SmallInt,
    Integer,
    BigInt,
    Numeric,
    Uuid,
    Json,
    Bytea,
    Opaque,
}

/// A masked value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Masked<'a> {
    /// The value to send; `Cow::Borrowed` means it is the input, unchanged.
    Value(Cow<'a, [u8]>),
    /// The value must become NULL (SQL) or `null` (JSON).
    Null,
}

impl Masked<'_> {
    /// Whether this is the input, unchanged.
    pub fn is_unchanged(&self) -> bool {
        matches!(self, Masked::Value(Cow::Borrowed(_)))
    }

    /// The bytes to send, or `None` for NULL.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Masked::Value(v) => Some(v),
            Masked::Null => None,
        }
    }
}

/// The result of masking detector findings in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextMasked<'a> {
    pub value: Masked<'a>,
    /// Findings per detector (and whether the value was over the scan cap).
    pub counts: DetectorCounts,
}

/// What happens to a value longer than `max_scan_bytes` under detector rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverCapPolicy {
    /// Replace the whole value with the redact token (the default: an unscanned
    /// value may hold anything).
    #[default]
    Redact,
    /// The whole value becomes NULL.
    Null,
    /// Send the value unscanned; the record still counts it as over the cap.
    Allow,
}

/// Default cap on the bytes scanned per value.
pub const DEFAULT_MAX_SCAN_BYTES: usize = 1 << 20;
/// Default token for `redact`.
pub const DEFAULT_REDACT_TOKEN: &str = "****";
/// Default number of characters `partial` keeps.
pub const DEFAULT_KEEP_LAST: usize = 4;

/// Applies mask styles and detectors with one configuration. Immutable, cheap
/// to share across connections; build it with [`super::MaskConfig::compile`] or
/// [`Masker::new`] and the `with_*` methods.
#[derive(Clone)]
pub struct Masker {
    detectors: DetectorSet,
    styles: [MaskStyle; DetectorKind::COUNT],
    redact_token: Vec<u8>,
    keep_last: usize,
    hash_key: Option<Hmac<Sha256>>,
    max_scan_bytes: usize,
    over_cap: OverCapPolicy,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("detectors", &self.detectors)
            .field("styles", &self.styles)
            .field("redact_token", &String::from_utf8_lossy(&self.redact_token))
            .field("keep_last", &self.keep_last)
            .field("hash_key", &self.hash_key.as_ref().map(|_| "<set>"))
            .field("max_scan_bytes", &self.max_scan_bytes)
            .field("over_cap", &self.over_cap)
            .finish()
    }
}

impl Default for Masker {
    fn default() -> Self {
        Self::new()
    }
}

impl Masker {
    /// Every detector, style `redact` with `****`, no hash key (`hash` then
    /// redacts), 1 MiB scan cap, over-cap values redacted.
    pub fn new() -> Self {
        Self {
            detectors: DetectorSet::all(),
            styles: [MaskStyle::Redact; DetectorKind::COUNT],
            redact_token: DEFAULT_REDACT_TOKEN.as_bytes().to_vec(),
            keep_last: DEFAULT_KEEP_LAST,
            hash_key: None,
            max_scan_bytes: DEFAULT_MAX_SCAN_BYTES,
            over_cap: OverCapPolicy::Redact,
        }
    }

    pub fn with_detectors(mut self, detectors: DetectorSet) -> Self {
        self.detectors = detectors;
        self
    }

    /// Uses `style` for findings of `kind`.
    pub fn with_style(mut self, kind: DetectorKind, style: MaskStyle) -> Self {
        if let Some(slot) = self.styles.get_mut(kind.index()) {
            *slot = style;
        }
        self
    }

    pub fn with_redact_token(mut self, token: &str) -> Self {
        self.redact_token = token.as_bytes().to_vec();
        self
    }

    pub fn with_keep_last(mut self, keep_last: usize) -> Self {
        self.keep_last = keep_last;
        self
    }

    /// Sets the HMAC key for `hash`. HMAC accepts keys of any length.
    pub fn with_hash_key(mut self, key: &[u8]) -> Self {
        self.hash_key = Hmac::<Sha256>::new_from_slice(key).ok();
        self
    }

    pub fn with_max_scan_bytes(mut self, max: usize, over_cap: OverCapPolicy) -> Self {
        self.max_scan_bytes = max;
        self.over_cap = over_cap;
        self
    }

    pub fn detectors(&self) -> DetectorSet {
        self.detectors
    }

    /// The style used for findings of `kind`.
    pub fn style_for(&self, kind: DetectorKind) -> MaskStyle {
        self.styles
            .get(kind.index())
            .copied()
            .unwrap_or(MaskStyle::Redact)
    }

    pub fn has_hash_key(&self) -> bool {
        self.hash_key.is_some()
    }

    pub fn max_scan_bytes(&self) -> usize {
        self.max_scan_bytes
    }

    /// The text `redact` replaces a value with.
    pub fn redact_token(&self) -> &[u8] {
        &self.redact_token
    }

    pub(crate) fn keep_last(&self) -> usize {
        self.keep_last
    }

    pub(crate) fn hash_key(&self) -> Option<&Hmac<Sha256>> {
        self.hash_key.as_ref()
    }

    /// Runs the detectors over `input` and masks every finding with its
    /// detector's style. Returns the input borrowed (no allocation) when
    /// nothing is found. A finding whose style is `null` turns the whole value
    /// into [`Masked::Null`]. Values over `max_scan_bytes` are not scanned; the
    /// over-cap policy decides and `counts.over_cap` records it.
    pub fn mask_text<'a>(&self, input: &'a [u8]) -> TextMasked<'a> {
        let mut counts = DetectorCounts::default();
        if input.len() > self.max_scan_bytes {
            counts.over_cap = 1;
            let value = match self.over_cap {
                OverCapPolicy::Redact => Masked::Value(Cow::Owned(self.redact_token.clone())),
                OverCapPolicy::Null => Masked::Null,
                OverCapPolicy::Allow => Masked::Value(Cow::Borrowed(input)),
            };
            return TextMasked { value, counts };
        }
        let findings = self.detectors.scan(input);
        if findings.is_empty() {
            return TextMasked {
                value: Masked::Value(Cow::Borrowed(input)),
                counts,
            };
        }
        for f in &findings {
            counts.add(f.detector);
        }
        let value = self.replace_findings(input, &findings);
        TextMasked { value, counts }
    }

    /// [`Masker::mask_text`] for `&str`; the result is valid UTF-8 because
    /// findings start and end on ASCII bytes and replacements are ASCII.
    pub fn mask_str<'a>(&self, input: &'a str) -> (Option<Cow<'a, str>>, DetectorCounts) {
        let masked = self.mask_text(input.as_bytes());
        let text = match masked.value {
            Masked::Null => None,
            Masked::Value(Cow::Borrowed(_)) => Some(Cow::Borrowed(input)),
            Masked::Value(Cow::Owned(bytes)) => {
                Some(Cow::Owned(String::from_utf8(bytes).unwrap_or_else(|e| {
                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                })))
            }
        };
        (text, masked.counts)
    }

    /// Replaces each finding (non-overlapping, ascending) in `input`.
    pub(crate) fn replace_findings<'a>(&self, input: &[u8], findings: &[Finding]) -> Masked<'a> {
        if findings
            .iter()
            .any(|f| self.style_for(f.detector) == MaskStyle::Null)
        {
            return Masked::Null;
        }
        let mut out = Vec::with_capacity(input.len() + 16);
        let mut copied = 0;
        for f in findings {
            out.extend_from_slice(input.get(copied..f.range.start).unwrap_or_default());
            let value = input.get(f.range.clone()).unwrap_or_default();
            self.write_text_mask(
                self.style_for(f.detector),
                value,
                Some(f.detector),
                &mut out,
            );
            copied = f.range.end;
        }
        out.extend_from_slice(input.get(copied..).unwrap_or_default());
        Masked::Value(Cow::Owned(out))
    }

    /// Masks a whole value (a column under a rule) with `style`, keeping it
    /// valid for `value_type` (see [`ValueType`]). `hint` says what the value is
    /// when known (it shapes `partial` and `hash` normalisation).
    pub fn mask_value<'a>(
        &self,
        style: MaskStyle,
        value: &[u8],
        value_type: ValueType,
        hint: Option<DetectorKind>,
    ) -> Masked<'a> {
        let mut out = Vec::with_capacity(value.len().max(18));
        if self.write_value(style, value, value_type, hint, &mut out) {
            Masked::Value(Cow::Owned(out))
        } else {
            Masked::Null
        }
    }

    /// [`Masker::mask_value`] appended to `out`, for callers that build a
    /// message around the value; `false` (nothing written) means NULL.
    pub fn write_value(
        &self,
        style: MaskStyle,
        value: &[u8],
        value_type: ValueType,
        hint: Option<DetectorKind>,
        out: &mut Vec<u8>,
    ) -> bool {
        if style == MaskStyle::Null {
            return false;
        }
        let hashing = style == MaskStyle::Hash && self.hash_key.is_some();
        match value_type {
            ValueType::Text => self.write_text_mask(style, value, hint, out),
            ValueType::Json => {
                let mut text = Vec::with_capacity(value.len().max(18));
                self.write_text_mask(style, value, hint, &mut text);
                write_json_string(&text, out);
            }
            ValueType::SmallInt | ValueType::Integer | ValueType::BigInt | ValueType::Numeric => {
                if !hashing {
                    out.push(b'0');
                    return true;
                }
                let bound: u64 = match value_type {
                    ValueType::SmallInt => 1 << 15,
                    ValueType::Integer => 1 << 31,
                    ValueType::BigInt => 1 << 63,
                    _ => 1_000_000_000_000_000,
                };
                let n = u64::from_be_bytes(self.digest8(value, hint)) % bound;
                out.extend_from_slice(n.to_string().as_bytes());
            }
            ValueType::Uuid => {
                let bytes = if hashing {
                    self.digest16(value, hint)
                } else {
                    [0u8; 16]
                };
                out.extend_from_slice(format_uuid(&bytes).as_bytes());
            }
            ValueType::Bytea => {
                out.extend_from_slice(b"\\x");
                if hashing {
                    push_hex(&self.digest16(value, hint), out);
                }
            }
            ValueType::Opaque => return false,
        }
        true
    }

    /// Writes the text form of `style` applied to `value`. `Null` is handled by
    /// callers; here it writes the redact token.
    fn write_text_mask(
        &self,
        style: MaskStyle,
        value: &[u8],
        hint: Option<DetectorKind>,
        out: &mut Vec<u8>,
    ) {
        match style {
            MaskStyle::Redact | MaskStyle::Null => out.extend_from_slice(&self.redact_token),
            MaskStyle::RedactKeepLength => stars_per_char(value, out),
            MaskStyle::Partial => self.write_partial(value, hint, out),
            MaskStyle::Hash => match self.hash_key {
                Some(_) => {
                    out.extend_from_slice(b"h:");
                    push_hex(&self.digest8(value, hint), out);
                }
                None => out.extend_from_slice(&self.redact_token),
            },
        }
    }

    fn write_partial(&self, value: &[u8], hint: Option<DetectorKind>, out: &mut Vec<u8>) {
        match hint {
            Some(kind) if kind.is_secret() => stars_per_char(value, out),
            Some(DetectorKind::Email) => match memchr::memrchr(b'@', value) {
                Some(at) => {
                    out.extend_from_slice(value.get(..1).unwrap_or_default());
                    out.extend_from_slice(b"***");
                    out.extend_from_slice(value.get(at..).unwrap_or_default());
                }
                None => self.write_keep_last(value, false, out),
            },
            Some(
                DetectorKind::PaymentCard
                | DetectorKind::UsSsn
                | DetectorKind::Iban
                | DetectorKind::Phone,
            ) => self.write_keep_last(value, true, out),
            _ => self.write_keep_last(value, false, out),
        }
    }

    /// Keeps the last `keep_last` characters (at most half of them) and stars
    /// the rest. With `alnum_only`, only letters and digits count and are
    /// starred; separators stay.
    fn write_keep_last(&self, value: &[u8], alnum_only: bool, out: &mut Vec<u8>) {
        if value.is_ascii() {
            self.write_keep_last_ascii(value, alnum_only, out);
        } else {
            self.write_keep_last_chars(value, alnum_only, out);
        }
    }

    /// [`Masker::write_keep_last`] byte by byte: the common case (cards, phone
    /// numbers, ids) needs no UTF-8 decoding, and a Wasm VM pays a call for
    /// every small copy the character path makes.
    fn write_keep_last_ascii(&self, value: &[u8], alnum_only: bool, out: &mut Vec<u8>) {
        let counted = |b: u8| !alnum_only || b.is_ascii_alphanumeric();
        let total = value.iter().filter(|&&b| counted(b)).count();
        let hidden = total - self.keep_last.min(total / 2);
        // The kept tail starts after the `hidden`-th counted byte; the head is
        // written in one sized pass (no capacity check per byte).
        let tail_start = match hidden {
            0 => 0,
            n => value
                .iter()
                .enumerate()
                .filter(|&(_, &b)| counted(b))
                .nth(n - 1)
                .map_or(value.len(), |(i, _)| i + 1),
        };
        let (head, tail) = value.split_at_checked(tail_start).unwrap_or((value, &[]));
        out.extend(head.iter().map(|&b| if counted(b) { b'*' } else { b }));
        out.extend_from_slice(tail);
    }

    fn write_keep_last_chars(&self, value: &[u8], alnum_only: bool, out: &mut Vec<u8>) {
        let counted = |c: char| !alnum_only || c.is_alphanumeric();
        let text = String::from_utf8_lossy(value);
        let total = text.chars().filter(|&c| counted(c)).count();
        let hidden = total - self.keep_last.min(total / 2);
        let mut seen = 0;
        for c in text.chars() {
            if counted(c) {
                seen += 1;
                if seen <= hidden {
                    out.push(b'*');
                    continue;
                }
            }
            out.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes());
        }
    }

    /// HMAC-SHA256 of the normalised value, first 16 bytes.
    fn digest16(&self, value: &[u8], hint: Option<DetectorKind>) -> [u8; 16] {
        let mut first = [0u8; 16];
        if let Some(key) = &self.hash_key {
            let mut mac = key.clone();
            match hint {
                Some(
                    DetectorKind::PaymentCard
                    | DetectorKind::UsSsn
                    | DetectorKind::Iban
                    | DetectorKind::Phone,
                ) => {
                    let normal: Vec<u8> = value
                        .iter()
                        .filter(|b| b.is_ascii_alphanumeric())
                        .map(u8::to_ascii_uppercase)
                        .collect();
                    mac.update(&normal);
                }
                Some(DetectorKind::Email) => mac.update(&value.to_ascii_lowercase()),
                _ => mac.update(value),
            }
            let digest = mac.finalize().into_bytes();
            for (slot, b) in first.iter_mut().zip(digest.iter()) {
                *slot = *b;
            }
        }
        first
    }

    fn digest8(&self, value: &[u8], hint: Option<DetectorKind>) -> [u8; 8] {
        let d = self.digest16(value, hint);
        let mut first = [0u8; 8];
        for (slot, b) in first.iter_mut().zip(d.iter()) {
            *slot = *b;
        }
        first
    }
}

/// `*` for every UTF-8 character of `value` (invalid bytes count one each).
fn stars_per_char(value: &[u8], out: &mut Vec<u8>) {
    let chars = value.iter().filter(|&&b| (b & 0xC0) != 0x80).count();
    out.resize(out.len() + chars, b'*');
}

fn format_uuid(bytes: &[u8; 16]) -> String {
    let mut hex = Vec::with_capacity(32);
    push_hex(bytes, &mut hex);
    let hex = String::from_utf8_lossy(&hex).into_owned();
    let part = |r: std::ops::Range<usize>| hex.get(r).unwrap_or_default().to_string();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn text(m: &Masked<'_>) -> String {
        String::from_utf8(m.as_bytes().expect("not null").to_vec()).unwrap()
    }

    fn keyed() -> Masker {
        Masker::new().with_hash_key(b"test key 0123456789")
    }

    #[test]
    fn redact_uses_the_configured_token() {
        let m = Masker::new().with_redact_token("[hidden]");
        let out = m.mask_value(MaskStyle::Redact, b"secret value", ValueType::Text, None);
        assert_eq!(text(&out), "[hidden]");
    }

    #[test]
    fn redact_keep_length_keeps_the_character_count() {
        let out = Masker::new().mask_value(
            MaskStyle::RedactKeepLength,
            "Zoë 42".as_bytes(),
            ValueType::Text,
            None,
        );
        assert_eq!(text(&out), "******");
    }

    #[test]
    fn keep_last_takes_the_same_decisions_byte_by_byte_as_by_character() {
        let masker = Masker::new();
        for value in [
            "",
            "a",
            "ab",
            "4111 1111 1111 1111",
            "123-45-6789",
            "+1 (415) 555-0100",
            "DE89 3704 0044 0532 0130 00",
            "--",
            "x@y",
            "0123456789abcdefghij",
        ] {
            for alnum_only in [false, true] {
                let (mut bytes, mut chars) = (Vec::new(), Vec::new());
                masker.write_keep_last_ascii(value.as_bytes(), alnum_only, &mut bytes);
                masker.write_keep_last_chars(value.as_bytes(), alnum_only, &mut chars);
                assert_eq!(bytes, chars, "{value:?} alnum_only={alnum_only}");
            }
        }
    }

    #[test]
    fn partial_card_keeps_last_four_digits_and_layout() {
        let m = Masker::new();
        let card = |v: &str| {
            text(&m.mask_value(
                MaskStyle::Partial,
                v.as_bytes(),
                ValueType::Text,
                Some(DetectorKind::PaymentCard),
            ))
        };
        assert_eq!(card("4111111111111111"), "************1111");
        assert_eq!(card("4111 1111 1111 1111"), "**** **** **** 1111");
        assert_eq!(card("3782-822463-10005"), "****-******-*0005");
    }

    #[test]
    fn partial_ssn_and_email() {
        let m = Masker::new();
        let ssn = m.mask_value(
            MaskStyle::Partial,
            b"536-22-1234",
            ValueType::Text,
            Some(DetectorKind::UsSsn),
        );
        assert_eq!(text(&ssn), "***-**-1234");
        let email = m.mask_value(
            MaskStyle::Partial,
            b"alice.smith@example.com",
            ValueType::Text,
            Some(DetectorKind::Email),
        );
        assert_eq!(text(&email), "a***@example.com");
    }

    #[test]
    fn partial_never_reveals_more_than_half_or_any_secret() {
        let m = Masker::new();
        let short = m.mask_value(MaskStyle::Partial, b"Bob", ValueType::Text, None);
        assert_eq!(text(&short), "**b");
        let jwt = m.mask_value(
            MaskStyle::Partial,
            b"eyJhbGciOi.eyJzdWIi.sig",
            ValueType::Text,
            Some(DetectorKind::Jwt),
        );
        assert_eq!(text(&jwt), "*".repeat(23));
    }

    #[test]
    fn hash_is_stable_and_depends_on_the_key() {
        let a = keyed();
        let b = Masker::new().with_hash_key(b"another key");
        let h = |m: &Masker, v: &str| {
            text(&m.mask_value(MaskStyle::Hash, v.as_bytes(), ValueType::Text, None))
        };
        let first = h(&a, "alice@example.com");
        assert_eq!(first, h(&a, "alice@example.com"));
        assert_eq!(first.len(), 18);
        assert!(first.starts_with("h:"));
        assert_ne!(first, h(&a, "bob@example.com"));
        assert_ne!(first, h(&b, "alice@example.com"));
    }

    #[test]
    fn hash_normalises_card_layout_and_email_case() {
        let m = keyed();
        let h = |v: &str, k| {
            text(&m.mask_value(MaskStyle::Hash, v.as_bytes(), ValueType::Text, Some(k)))
        };
        assert_eq!(
            h("4111-1111-1111-1111", DetectorKind::PaymentCard),
            h("4111111111111111", DetectorKind::PaymentCard)
        );
        assert_eq!(
            h("Alice@Example.com", DetectorKind::Email),
            h("alice@example.com", DetectorKind::Email)
        );
    }

    #[test]
    fn hash_without_a_key_redacts_rather_than_leaking() {
        let out = Masker::new().mask_value(MaskStyle::Hash, b"alice", ValueType::Text, None);
        assert_eq!(text(&out), "****");
    }

    #[test]
    fn null_style_is_a_distinct_outcome() {
        assert_eq!(
            Masker::new().mask_value(MaskStyle::Null, b"x", ValueType::Text, None),
            Masked::Null
        );
    }

    #[test]
    fn typed_values_stay_valid_for_their_type() {
        let m = keyed();
        for style in [
            MaskStyle::Redact,
            MaskStyle::Partial,
            MaskStyle::RedactKeepLength,
        ] {
            assert_eq!(
                text(&m.mask_value(style, b"123456789", ValueType::Integer, None)),
                "0"
            );
            assert_eq!(
                text(&m.mask_value(style, b"12.50", ValueType::Numeric, None)),
                "0"
            );
            assert_eq!(
                text(&m.mask_value(style, b"9b2e-x", ValueType::Uuid, None)),
                "00000000-0000-0000-0000-000000000000"
            );
            assert_eq!(
                text(&m.mask_value(style, b"\\xdeadbeef", ValueType::Bytea, None)),
                "\\x"
            );
            assert_eq!(
                m.mask_value(style, b"2024-01-01", ValueType::Opaque, None),
                Masked::Null
            );
        }
        let small: i64 = text(&m.mask_value(MaskStyle::Hash, b"42", ValueType::SmallInt, None))
            .parse()
            .unwrap();
        assert!((0..=i64::from(i16::MAX)).contains(&small));
        let int: i64 = text(&m.mask_value(MaskStyle::Hash, b"42", ValueType::Integer, None))
            .parse()
            .unwrap();
        assert!((0..=i64::from(i32::MAX)).contains(&int));
        let big: i64 = text(&m.mask_value(MaskStyle::Hash, b"42", ValueType::BigInt, None))
            .parse()
            .unwrap();
        assert!(big >= 0);
        let uuid = text(&m.mask_value(MaskStyle::Hash, b"42", ValueType::Uuid, None));
        assert_eq!(uuid.len(), 36);
        assert_eq!(uuid.matches('-').count(), 4);
        let bytea = text(&m.mask_value(MaskStyle::Hash, b"\\x00", ValueType::Bytea, None));
        assert_eq!(bytea.len(), 34);
        let json = text(&m.mask_value(MaskStyle::Redact, br#"{"a":1}"#, ValueType::Json, None));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap(),
            serde_json::json!("****")
        );
    }

    #[test]
    fn unchanged_text_is_borrowed_not_copied() {
        let input = b"order 12345 shipped on 2024-03-01 to warehouse 7";
        let out = Masker::new().mask_text(input);
        assert!(out.value.is_unchanged());
        assert!(
            matches!(out.value, Masked::Value(Cow::Borrowed(b)) if std::ptr::eq(b, input.as_slice()))
        );
        assert!(out.counts.is_empty());
    }

    #[test]
    fn findings_are_masked_in_place_with_their_styles() {
        let m = Masker::new()
            .with_style(DetectorKind::PaymentCard, MaskStyle::Partial)
            .with_style(DetectorKind::Email, MaskStyle::Partial);
        let out =
            m.mask_text(b"paid with 4111 1111 1111 1111 by alice@example.com, ssn 536-22-1234.");
        assert_eq!(
            text(&out.value),
            "paid with **** **** **** 1111 by a***@example.com, ssn ****."
        );
        assert_eq!(out.counts.get(DetectorKind::PaymentCard), 1);
        assert_eq!(out.counts.get(DetectorKind::Email), 1);
        assert_eq!(out.counts.get(DetectorKind::UsSsn), 1);
    }

    #[test]
    fn a_null_styled_finding_nulls_the_whole_value() {
        let m = Masker::new().with_style(DetectorKind::UsSsn, MaskStyle::Null);
        let out = m.mask_text(b"ssn 536-22-1234");
        assert_eq!(out.value, Masked::Null);
        assert_eq!(out.counts.get(DetectorKind::UsSsn), 1);
    }

    #[test]
    fn values_over_the_cap_follow_the_over_cap_policy() {
        let long = vec![b'a'; 100];
        let redact = Masker::new()
            .with_max_scan_bytes(64, OverCapPolicy::Redact)
            .mask_text(&long);
        assert_eq!(text(&redact.value), "****");
        assert_eq!(redact.counts.over_cap, 1);
        let null = Masker::new()
            .with_max_scan_bytes(64, OverCapPolicy::Null)
            .mask_text(&long);
        assert_eq!(null.value, Masked::Null);
        let allow = Masker::new()
            .with_max_scan_bytes(64, OverCapPolicy::Allow)
            .mask_text(&long);
        assert!(allow.value.is_unchanged());
        assert_eq!(allow.counts.over_cap, 1);
    }

    #[test]
    fn mask_str_keeps_utf8() {
        let (out, counts) = Masker::new().mask_str("Grüße an zoe@example.de — café");
        assert_eq!(out.unwrap(), "Grüße an **** — café");
        assert_eq!(counts.get(DetectorKind::Email), 1);
    }
}
