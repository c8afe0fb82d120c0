//! Masking inside JSON documents (Kubernetes bodies, `json`/`jsonb` columns,
//! `row_to_json` output) without parsing them into a tree.
//!
//! A single forward pass over the tokens: every string value is decoded (only
//! when it has escapes), scanned by the detectors and, when something is found,
//! written back as a correctly escaped JSON string, or `null` when the style is
//! `null`. Numbers are scanned too (a card number stored as a JSON number) and a
//! masked number becomes a JSON string. A string value whose member name names a
//! secret (`"password": "…"`) is masked whole when it looks like a secret, as the
//! `secret_assignment` detector would in `password=…` form.
//!
//! Object member names are left alone (masking them could merge members).
//! Nothing is copied when nothing matches: the input is returned borrowed. The
//! pass checks string syntax only; it does not validate the document's
//! structure, which the caller's decoder owns.

use std::borrow::Cow;
use std::ops::Range;

use super::detector::DetectorCounts;
use super::detectors::{is_secret_key_name, is_secret_value};
use super::kind::DetectorKind;
use super::style::{MaskStyle, Masked, Masker, ValueType};
use super::write::write_json_string;

/// Why a document could not be scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {reason}")]
pub struct JsonMaskError {
    /// Byte offset of the problem.
    pub offset: usize,
    pub reason: &'static str,
}

/// A masked JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonMasked<'a> {
    /// The document; `Cow::Borrowed` when nothing was masked.
    pub json: Cow<'a, [u8]>,
    /// Findings per detector over every string and number.
    pub counts: DetectorCounts,
}

/// Output built lazily: nothing is allocated until the first replacement.
struct Rewriter<'a> {
    input: &'a [u8],
    out: Option<Vec<u8>>,
    copied: usize,
}

impl<'a> Rewriter<'a> {
    fn replace(&mut self, range: Range<usize>, write: impl FnOnce(&mut Vec<u8>)) {
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity(self.input.len() + 64));
        out.extend_from_slice(self.input.get(self.copied..range.start).unwrap_or_default());
        write(out);
        self.copied = range.end;
    }

    fn finish(self) -> Cow<'a, [u8]> {
        match self.out {
            None => Cow::Borrowed(self.input),
            Some(mut out) => {
                out.extend_from_slice(self.input.get(self.copied..).unwrap_or_default());
                Cow::Owned(out)
            }
        }
    }
}

impl Masker {
    /// Runs the detectors over every string value and number in `json` and
    /// masks what they find (see the module documentation). The output is
    /// valid JSON whenever the input is.
    pub fn mask_json_strings<'a>(&self, json: &'a [u8]) -> Result<JsonMasked<'a>, JsonMaskError> {
        let mut rewriter = Rewriter {
            input: json,
            out: None,
            copied: 0,
        };
        let mut counts = DetectorCounts::default();
        let mut scratch = Vec::new();
        // The raw (still escaped) name of the member whose value comes next.
        let mut member_name: Option<Range<usize>> = None;
        let mut i = 0;
        while let Some(&b) = json.get(i) {
            match b {
                b'"' => {
                    let (end, has_escapes) = string_end(json, i)?;
                    let content = i + 1..end - 1;
                    let is_name = json.get(end..).is_some_and(|rest| {
                        rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b':')
                    });
                    if is_name {
                        member_name = Some(content);
                    } else {
                        let raw = json.get(content.clone()).unwrap_or_default();
                        let decoded: Cow<'_, [u8]> = if has_escapes {
                            scratch.clear();
                            unescape(raw, content.start, &mut scratch)?;
                            Cow::Borrowed(scratch.as_slice())
                        } else {
                            Cow::Borrowed(raw)
                        };
                        let named_secret = member_name.take().is_some_and(|name| {
                            self.detectors().contains(DetectorKind::SecretAssignment)
                                && is_secret_key_name(json.get(name).unwrap_or_default())
                        });
                        let masked = if named_secret && is_secret_value(&decoded) {
                            let mut c = DetectorCounts::default();
                            c.add(DetectorKind::SecretAssignment);
                            let style = self.style_for(DetectorKind::SecretAssignment);
                            let value = match style {
                                MaskStyle::Null => Masked::Null,
                                _ => self.mask_value(
                                    style,
                                    &decoded,
                                    ValueType::Text,
                                    Some(DetectorKind::SecretAssignment),
                                ),
                            };
                            Some((value, c))
                        } else {
                            let m = self.mask_text(&decoded);
                            (!m.value.is_unchanged()).then_some((m.value, m.counts))
                        };
                        if let Some((value, c)) = masked {
                            counts.merge(&c);
                            rewriter.replace(i..end, |out| write_json_value(&value, out));
                        }
                    }
                    i = end;
                }
                b'-' | b'0'..=b'9' => {
                    let len = json.get(i..).map_or(0, |rest| {
                        rest.iter()
                            .take_while(|b| {
                                matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                            })
                            .count()
                    });
                    let number = json.get(i..i + len).unwrap_or_default();
                    let m = self.mask_text(number);
                    if !m.value.is_unchanged() {
                        counts.merge(&m.counts);
                        rewriter.replace(i..i + len, |out| write_json_value(&m.value, out));
                    }
                    member_name = None;
                    i += len;
                }
                b':' => i += 1,
                _ => {
                    if !b.is_ascii_whitespace() {
                        member_name = None;
                    }
                    i += 1;
                }
            }
        }
        Ok(JsonMasked {
            json: rewriter.finish(),
            counts,
        })
    }
}

/// End (exclusive, after the closing quote) of the string starting at the
/// quote at `start`, and whether it contains escapes.
fn string_end(json: &[u8], start: usize) -> Result<(usize, bool), JsonMaskError> {
    let mut i = start + 1;
    let mut has_escapes = false;
    loop {
        let rest = json.get(i..).unwrap_or_default();
        match memchr::memchr2(b'"', b'\\', rest) {
            Some(at) if rest.get(at) == Some(&b'"') => return Ok((i + at + 1, has_escapes)),
            Some(at) => {
                has_escapes = true;
                i += at + 2;
            }
            None => {
                return Err(JsonMaskError {
                    offset: start,
                    reason: "unterminated string",
                });
            }
        }
    }
}

/// Decodes the escapes of a JSON string's content into `out`. Lone surrogates
/// become U+FFFD.
fn unescape(raw: &[u8], offset: usize, out: &mut Vec<u8>) -> Result<(), JsonMaskError> {
    let err = |at: usize, reason| JsonMaskError {
        offset: offset + at,
        reason,
    };
    let mut i = 0;
    while let Some(at) = raw.get(i..).and_then(|rest| memchr::memchr(b'\\', rest)) {
        out.extend_from_slice(raw.get(i..i + at).unwrap_or_default());
        let esc = i + at;
        let simple = match raw.get(esc + 1) {
            Some(b'"') => Some(b'"'),
            Some(b'\\') => Some(b'\\'),
            Some(b'/') => Some(b'/'),
            Some(b'b') => Some(0x08),
            Some(b'f') => Some(0x0c),
            Some(b'n') => Some(b'\n'),
            Some(b'r') => Some(b'\r'),
            Some(b't') => Some(b'\t'),
            Some(b'u') => None,
            _ => return Err(err(esc, "invalid escape")),
        };
        if let Some(byte) = simple {
            out.push(byte);
            i = esc + 2;
            continue;
        }
        let unit = hex4(raw, esc + 2).ok_or_else(|| err(esc, "invalid \\u escape"))?;
        i = esc + 6;
        let c = if (0xD800..0xDC00).contains(&unit) {
            let low = (raw.get(i..i + 2) == Some(b"\\u"))
                .then(|| hex4(raw, i + 2))
                .flatten();
            match low {
                Some(low) if (0xDC00..0xE000).contains(&low) => {
                    i += 6;
                    char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                }
                _ => None,
            }
        } else {
            char::from_u32(unit)
        };
        out.extend_from_slice(
            c.unwrap_or('\u{FFFD}')
                .encode_utf8(&mut [0u8; 4])
                .as_bytes(),
        );
    }
    out.extend_from_slice(raw.get(i..).unwrap_or_default());
    Ok(())
}

fn hex4(raw: &[u8], at: usize) -> Option<u32> {
    let digits = raw.get(at..at + 4)?;
    digits
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc * 16 + char::from(b).to_digit(16)?))
}

fn write_json_value(value: &Masked<'_>, out: &mut Vec<u8>) {
    match value {
        Masked::Null => out.extend_from_slice(b"null"),
        Masked::Value(v) => write_json_string(v, out),
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn mask(m: &Masker, doc: &str) -> (Value, DetectorCounts, bool) {
        let out = m.mask_json_strings(doc.as_bytes()).unwrap();
        let borrowed = matches!(out.json, Cow::Borrowed(_));
        let value = serde_json::from_slice(&out.json).unwrap_or_else(|e| {
            panic!(
                "invalid JSON out: {e}: {}",
                String::from_utf8_lossy(&out.json)
            )
        });
        (value, out.counts, borrowed)
    }

    #[test]
    fn clean_documents_come_back_borrowed() {
        let doc = r#"{"kind":"Pod","metadata":{"name":"web-7d9f","labels":{"app":"web"}},"spec":{"replicas":3,"ts":"2024-03-01T10:00:00Z"}}"#;
        let out = Masker::new().mask_json_strings(doc.as_bytes()).unwrap();
        assert!(matches!(out.json, Cow::Borrowed(b) if std::ptr::eq(b, doc.as_bytes())));
        assert!(out.counts.is_empty());
    }

    #[test]
    fn string_values_are_masked_and_the_document_stays_valid() {
        let m = Masker::new().with_style(DetectorKind::Email, MaskStyle::Partial);
        let doc = r#"{"user":{"email":"alice@example.com","note":"card 4111 1111 1111 1111, call +1 415 555 0132"},"n":1}"#;
        let (v, counts, borrowed) = mask(&m, doc);
        assert!(!borrowed);
        assert_eq!(v["user"]["email"], json!("a***@example.com"));
        assert_eq!(v["user"]["note"], json!("card ****, call ****"));
        assert_eq!(v["n"], json!(1));
        assert_eq!(counts.total(), 3);
    }

    #[test]
    fn escapes_and_unicode_survive_masking() {
        let m = Masker::new();
        let doc = r#"{"msg":"Zo\u00eb \"Q\" \\ <bob@example.org>\n\ud83d\ude00 caf\u00e9 ✓","other":"tab\there"}"#;
        let (v, counts, _) = mask(&m, doc);
        assert_eq!(v["msg"], json!("Zoë \"Q\" \\ <****>\n😀 café ✓"));
        assert_eq!(v["other"], json!("tab\there"));
        assert_eq!(counts.get(DetectorKind::Email), 1);
    }

    #[test]
    fn member_names_are_not_masked() {
        let (v, _, _) = mask(
            &Masker::new(),
            r#"{"alice@example.com":"alice@example.com"}"#,
        );
        assert_eq!(v, json!({"alice@example.com": "****"}));
    }

    #[test]
    fn secret_named_members_are_masked_whole() {
        let doc = r#"{"env":[{"name":"X","value":"y"}],"password":"Tr0ub4dor&3","db_password": "${DB_PASSWORD}","token":null,"tokenizer":"Tr0ub4dor&3"}"#;
        let (v, counts, _) = mask(&Masker::new(), doc);
        assert_eq!(v["password"], json!("****"));
        assert_eq!(v["db_password"], json!("${DB_PASSWORD}"));
        assert_eq!(v["token"], Value::Null);
        assert_eq!(v["tokenizer"], json!("Tr0ub4dor&3"));
        assert_eq!(counts.get(DetectorKind::SecretAssignment), 1);
    }

    #[test]
    fn null_style_gives_json_null_and_numbers_are_scanned() {
        let m = Masker::new().with_style(DetectorKind::UsSsn, MaskStyle::Null);
        let (v, counts, _) = mask(
            &m,
            r#"[{"ssn":"536-22-1234","card":4111111111111111,"price":-12.5e3}]"#,
        );
        assert_eq!(v, json!([{"ssn": null, "card": "****", "price": -12.5e3}]));
        assert_eq!(counts.total(), 2);
    }

    #[test]
    fn masked_values_with_quotes_are_escaped() {
        let m = Masker::new().with_redact_token("\"x\\");
        let (v, _, _) = mask(&m, r#"{"a":"mail bob@example.org"}"#);
        assert_eq!(v["a"], json!("mail \"x\\"));
    }

    #[test]
    fn broken_strings_are_errors_not_panics() {
        let m = Masker::new();
        for bad in [
            r#"{"a":"unterminated"#,
            r#"{"a":"bad \q escape bob@example.org"}"#,
            r#"{"a":"\u12"}"#,
            "\"\\",
        ] {
            assert!(m.mask_json_strings(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
