//! Masking a large value under a column rule without holding it whole.
//!
//! A protocol writes a value's length before its bytes, so a streamed mask
//! must know its output length when the value starts. Every streamed style
//! does:
//!
//! | style                | output                                         | length |
//! |----------------------|------------------------------------------------|--------|
//! | `redact`             | the token, written at once                     | token length |
//! | `hash`               | `h:` + 16 hex digits, written at the end (HMAC is incremental; no key: the token) | 18 |
//! | `redact_keep_length` | `*` per **byte**                               | input length |
//! | `partial`            | `*` per byte except the last `N` bytes (at most half) | input length |
//! | `null`               | nothing: the value is NULL                     | — |
//!
//! Byte-based rather than character-based (unlike [`Masker::mask_value`]):
//! the character count is not known up front. Output is still valid UTF-8:
//! kept bytes that continue a starred character are starred too.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::style::{MaskStyle, Masker};
use super::write::push_hex;

/// A value being masked chunk by chunk; see the module documentation.
pub struct ValueStream {
    kind: StreamKind,
    total_len: usize,
    seen: usize,
}

enum StreamKind {
    Null,
    Fixed(Vec<u8>),
    Hash(Box<Hmac<Sha256>>),
    Stars,
    /// Keeps the last `keep` bytes; holds at most that many.
    KeepLast {
        keep: usize,
        tail: Vec<u8>,
    },
}

impl Masker {
    /// Starts masking a value of `total_len` bytes with `style`.
    pub fn begin_value_stream(&self, style: MaskStyle, total_len: usize) -> ValueStream {
        let kind = match style {
            MaskStyle::Null => StreamKind::Null,
            MaskStyle::Redact => StreamKind::Fixed(self.redact_token().to_vec()),
            MaskStyle::Hash => match self.hash_key() {
                Some(mac) => StreamKind::Hash(Box::new(mac.clone())),
                None => StreamKind::Fixed(self.redact_token().to_vec()),
            },
            MaskStyle::RedactKeepLength => StreamKind::Stars,
            MaskStyle::Partial => StreamKind::KeepLast {
                keep: self.keep_last().min(total_len / 2),
                tail: Vec::new(),
            },
        };
        ValueStream {
            kind,
            total_len,
            seen: 0,
        }
    }
}

impl ValueStream {
    /// Length of the masked value, known before any byte is seen; `None`
    /// means the value becomes NULL.
    pub fn output_len(&self) -> Option<usize> {
        match &self.kind {
            StreamKind::Null => None,
            StreamKind::Fixed(token) => Some(token.len()),
            StreamKind::Hash(_) => Some(18),
            StreamKind::Stars | StreamKind::KeepLast { .. } => Some(self.total_len),
        }
    }

    /// Feeds the next chunk of the value, appending whatever output is ready.
    /// Bytes past the announced total length are ignored.
    pub fn update(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let room = self.total_len - self.seen;
        let chunk = chunk.get(..room.min(chunk.len())).unwrap_or_default();
        let first = self.seen == 0;
        self.seen += chunk.len();
        match &mut self.kind {
            StreamKind::Null => {}
            StreamKind::Fixed(token) => {
                if first && !chunk.is_empty() {
                    out.append(token);
                }
            }
            StreamKind::Hash(mac) => mac.update(chunk),
            StreamKind::Stars => out.resize(out.len() + chunk.len(), b'*'),
            StreamKind::KeepLast { keep, tail } => {
                // Bytes before the last `keep` of the whole value are starred
                // as soon as they arrive; the rest waits in `tail`.
                let star_until = self.total_len - *keep;
                let before = self.seen - chunk.len();
                let starred = star_until.saturating_sub(before).min(chunk.len());
                out.resize(out.len() + starred, b'*');
                tail.extend_from_slice(chunk.get(starred..).unwrap_or_default());
            }
        }
    }

    /// Ends the value, appending the remaining output. A value shorter than
    /// announced is padded with `*` so the announced length still holds.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        let missing = self.total_len - self.seen;
        match self.kind {
            StreamKind::Null => {}
            StreamKind::Fixed(mut token) => {
                // Nothing was fed (an empty value): the token is still due.
                out.append(&mut token);
            }
            StreamKind::Hash(mac) => {
                out.extend_from_slice(b"h:");
                let digest = mac.finalize().into_bytes();
                push_hex(digest.get(..8).unwrap_or_default(), out);
            }
            StreamKind::Stars => out.resize(out.len() + missing, b'*'),
            StreamKind::KeepLast { ref mut tail, .. } => {
                // A kept tail must not start inside a starred character.
                let continuation = tail.iter().take_while(|&&b| b & 0xC0 == 0x80).count();
                out.resize(out.len() + continuation, b'*');
                out.extend_from_slice(tail.get(continuation..).unwrap_or_default());
                out.resize(out.len() + missing, b'*');
                self.seen = self.total_len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{Masked, ValueType};

    fn stream(
        m: &Masker,
        style: MaskStyle,
        value: &[u8],
        chunk: usize,
    ) -> (Option<usize>, Vec<u8>) {
        let mut s = m.begin_value_stream(style, value.len());
        let announced = s.output_len();
        let mut out = Vec::new();
        for part in value.chunks(chunk.max(1)) {
            s.update(part, &mut out);
        }
        s.finish(&mut out);
        (announced, out)
    }

    #[test]
    fn every_style_writes_exactly_the_announced_length_for_any_chunking() {
        let m = Masker::new().with_hash_key(b"stream key");
        let value = "Zoë's card 4111 1111 1111 1111 — ünïcødé".repeat(50);
        for style in MaskStyle::ALL {
            for chunk in [1, 3, 7, 64, 10_000] {
                let (announced, out) = stream(&m, style, value.as_bytes(), chunk);
                match announced {
                    None => assert!(out.is_empty()),
                    Some(len) => assert_eq!(out.len(), len, "{style:?} chunk {chunk}"),
                }
                assert!(std::str::from_utf8(&out).is_ok(), "{style:?} chunk {chunk}");
            }
        }
    }

    #[test]
    fn streamed_hash_equals_the_whole_value_hash() {
        let m = Masker::new().with_hash_key(b"stream key");
        let value = b"a long value that arrives in many pieces";
        let (_, streamed) = stream(&m, MaskStyle::Hash, value, 5);
        let whole = m.mask_value(MaskStyle::Hash, value, ValueType::Text, None);
        assert_eq!(whole, Masked::Value(streamed.into()));
    }

    #[test]
    fn streamed_partial_keeps_only_the_tail() {
        let (_, out) = stream(&Masker::new(), MaskStyle::Partial, b"secret-value-1234", 4);
        assert_eq!(out, b"*************1234");
        // The kept tail never starts in the middle of a character.
        let (_, out) = stream(
            &Masker::new().with_keep_last(2),
            MaskStyle::Partial,
            "abcdéf".as_bytes(),
            1,
        );
        assert_eq!(out, b"******f");
    }

    #[test]
    fn short_or_long_input_keeps_the_announced_length() {
        let m = Masker::new();
        let mut s = m.begin_value_stream(MaskStyle::RedactKeepLength, 10);
        let mut out = Vec::new();
        s.update(b"0123456789abcdef", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"**********");
        let mut s = m.begin_value_stream(MaskStyle::Partial, 10);
        let mut out = Vec::new();
        s.update(b"0123", &mut out);
        s.finish(&mut out);
        assert_eq!(out.len(), 10);
        let (announced, out) = stream(&m, MaskStyle::Redact, b"", 1);
        assert_eq!((announced, out), (Some(4), b"****".to_vec()));
    }
}
