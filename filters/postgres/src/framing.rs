//! Per-direction framing state and the output builder for one chunk.
//!
//! The host hands the engine arbitrary chunks and can only replace a chunk as a
//! whole. [`Output`] builds that replacement lazily: as long as every byte of the
//! chunk is forwarded in order and nothing is added, the verdict stays
//! [`Forward::Unchanged`] and nothing is copied.

use std::ops::Range;

/// What to forward in place of the chunk the host passed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// Forward the chunk as it is.
    Unchanged,
    /// Forward these bytes instead (empty: forward nothing now).
    Replace(Vec<u8>),
}

/// The engine's answer for one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Verdict {
    /// Bytes to forward now.
    pub forward: Forward,
    /// Close the client connection once `forward` is written (the glue calls
    /// `close_downstream()`, which flushes pending writes first).
    pub close_connection: bool,
}

impl Verdict {
    /// The forwarded bytes given the original chunk (for tests and tools).
    pub fn bytes<'a>(&'a self, chunk: &'a [u8]) -> &'a [u8] {
        match &self.forward {
            Forward::Unchanged => chunk,
            Forward::Replace(b) => b,
        }
    }
}

/// Builds the bytes forwarded for one chunk.
pub(crate) struct Output<'a> {
    input: &'a [u8],
    /// `Some` once the output differs from a prefix of the input.
    replaced: Option<Vec<u8>>,
    /// While `replaced` is `None`: the output is `input[..passed_prefix]`.
    passed_prefix: usize,
}

impl<'a> Output<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            replaced: None,
            passed_prefix: 0,
        }
    }

    fn materialize(&mut self) -> &mut Vec<u8> {
        let input = self.input;
        let prefix = self.passed_prefix;
        self.replaced.get_or_insert_with(|| {
            let mut v = Vec::with_capacity(input.len() + 64);
            v.extend_from_slice(input.get(..prefix).unwrap_or_default());
            v
        })
    }

    /// Forwards `input[range]` unchanged.
    pub(crate) fn pass(&mut self, range: Range<usize>) {
        if self.replaced.is_none() && range.start == self.passed_prefix {
            self.passed_prefix = range.end;
            return;
        }
        let bytes = self.input.get(range).unwrap_or_default();
        self.materialize().extend_from_slice(bytes);
    }

    /// Forwards bytes that are not (all) in this chunk's input.
    pub(crate) fn emit(&mut self, bytes: &[u8]) {
        self.materialize().extend_from_slice(bytes);
    }

    pub(crate) fn finish(self, close_connection: bool) -> Verdict {
        let forward = match self.replaced {
            None if self.passed_prefix == self.input.len() => Forward::Unchanged,
            None => Forward::Replace(
                self.input
                    .get(..self.passed_prefix)
                    .unwrap_or_default()
                    .to_vec(),
            ),
            Some(v) => Forward::Replace(v),
        };
        Verdict {
            forward,
            close_connection,
        }
    }
}

/// How the next message of a direction is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameMode {
    /// Startup-phase packets: a 4-byte length (counting itself), no tag.
    Untagged,
    /// A 1-byte tag, then a 4-byte length counting itself.
    Tagged,
    /// A single byte: the server's answer to SSLRequest or GSSENCRequest.
    AnswerByte,
}

impl FrameMode {
    pub(crate) fn header_len(self) -> usize {
        match self {
            FrameMode::Untagged => 4,
            FrameMode::Tagged => 5,
            FrameMode::AnswerByte => 1,
        }
    }
}

/// A message being forwarded as its bytes arrive.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) tag: u8,
    pub(crate) body_len: usize,
    pub(crate) remaining: usize,
    /// The first bytes of the body, up to `capture_limit`, for records.
    pub(crate) captured: Vec<u8>,
    pub(crate) capture_limit: usize,
}

/// Framing state of one direction.
#[derive(Debug)]
pub(crate) struct Framer {
    pub(crate) mode: FrameMode,
    /// A partial frame: its header, and for held messages its body so far.
    pub(crate) pending: Vec<u8>,
    pub(crate) stream: Option<Stream>,
    /// After a fatal problem this direction's further bytes are discarded.
    pub(crate) discarding: bool,
}

impl Framer {
    pub(crate) fn new(mode: FrameMode) -> Self {
        Self {
            mode,
            pending: Vec::new(),
            stream: None,
            discarding: false,
        }
    }

    /// Whether this direction's next bytes start a tagged message: nothing of
    /// one is held, and they are not being discarded.
    pub(crate) fn at_tagged_message_start(&self) -> bool {
        self.mode == FrameMode::Tagged
            && self.pending.is_empty()
            && self.stream.is_none()
            && !self.discarding
    }

    /// Bytes held in memory for this direction.
    pub(crate) fn held_bytes(&self) -> usize {
        self.pending.len() + self.stream.as_ref().map_or(0, |s| s.captured.len())
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    /// The tag; 0 for untagged packets.
    pub(crate) tag: u8,
    pub(crate) body_len: usize,
}

impl Header {
    /// Parses a header from exactly `mode.header_len()` bytes; `None` when the
    /// length field is below its minimum.
    pub(crate) fn parse(mode: FrameMode, bytes: &[u8]) -> Option<Result<Header, usize>> {
        let (tag, len_bytes) = match mode {
            FrameMode::Untagged => (0, bytes.get(0..4)?),
            FrameMode::Tagged => (*bytes.first()?, bytes.get(1..5)?),
            FrameMode::AnswerByte => {
                return Some(Ok(Header {
                    tag: *bytes.first()?,
                    body_len: 0,
                }));
            }
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(len_bytes);
        let len = u32::from_be_bytes(len) as usize;
        Some(if len < 4 {
            Err(len)
        } else {
            Ok(Header {
                tag,
                body_len: len - 4,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_everything_in_order_is_unchanged() {
        let mut o = Output::new(b"abcdef");
        o.pass(0..2);
        o.pass(2..6);
        assert_eq!(o.finish(false).forward, Forward::Unchanged);
    }

    #[test]
    fn holding_a_tail_forwards_the_prefix() {
        let mut o = Output::new(b"abcdef");
        o.pass(0..4);
        assert_eq!(o.finish(false).forward, Forward::Replace(b"abcd".to_vec()));
    }

    #[test]
    fn emitting_then_passing_keeps_order() {
        let mut o = Output::new(b"abcdef");
        o.pass(0..1);
        o.emit(b"XY");
        o.pass(3..6);
        assert_eq!(
            o.finish(true),
            Verdict {
                forward: Forward::Replace(b"aXYdef".to_vec()),
                close_connection: true
            }
        );
    }
}
