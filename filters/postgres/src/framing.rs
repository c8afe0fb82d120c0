//! Framing: one direction's bytes, read as PostgreSQL frames.
//!
//! The host hands the engine arbitrary chunks and can only replace a chunk as a
//! whole. The session wraps each chunk in a [`Chunk`] and pulls [`Frame`]s out
//! of it with [`Framer::next`] until that returns `Ok(None)`: the chunk is used
//! up, and a frame that did not arrive whole waits in the framer for the next
//! chunk. What comes out:
//!
//! - [`Frame::Header`]: a message's header is whole. The session says how the
//!   rest is read ([`Framer::read_as`]): held until whole, or streamed;
//! - [`Frame::Message`]: a held message, whole (in the chunk, or assembled from
//!   several);
//! - [`Frame::Part`], then [`Frame::Streamed`]: the body of a streamed message as
//!   its bytes arrive (its header went out when it started), then its end.
//!
//! Bytes that are not PostgreSQL frames are a [`FramingError`], after which the
//! direction reads nothing more.
//!
//! [`Output`] builds the chunk's replacement lazily: as long as every byte of the
//! chunk is forwarded in order and nothing is added, the verdict stays
//! [`Forward::Unchanged`] and nothing is copied.

use crate::protocol as pg;
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

/// One chunk from the host on its way through: how far framing has read it,
/// and what is forwarded in its place.
pub(crate) struct Chunk<'c> {
    bytes: &'c [u8],
    read: usize,
    pub(crate) out: Output<'c>,
}

impl<'c> Chunk<'c> {
    pub(crate) fn new(bytes: &'c [u8]) -> Self {
        Self {
            bytes,
            read: 0,
            out: Output::new(bytes),
        }
    }

    fn unread(&self) -> usize {
        self.bytes.len() - self.read
    }

    /// The next `n` bytes (fewer at the chunk's end), left unread.
    fn peek(&self, n: usize) -> &'c [u8] {
        let end = self.read + n.min(self.unread());
        self.bytes.get(self.read..end).unwrap_or_default()
    }

    /// Reads the next `n` bytes (fewer at the chunk's end).
    fn take(&mut self, n: usize) -> Range<usize> {
        let start = self.read;
        self.read += n.min(self.unread());
        start..self.read
    }

    fn slice(&self, range: Range<usize>) -> &'c [u8] {
        self.bytes.get(range).unwrap_or_default()
    }

    /// The chunk's bytes not read yet; the chunk is then read to its end
    /// (they are neither framed nor forwarded).
    pub(crate) fn take_rest(&mut self) -> &'c [u8] {
        let rest = self.bytes.get(self.read..).unwrap_or_default();
        self.read = self.bytes.len();
        rest
    }

    /// Forwards a held message as it came.
    #[inline]
    pub(crate) fn forward(&mut self, message: &Message<'_>) {
        match &message.bytes {
            MessageBytes::InChunk(range, _) => self.out.pass(range.clone()),
            MessageBytes::Assembled(bytes) => self.out.emit(bytes),
        }
    }

    pub(crate) fn finish(self, close_connection: bool) -> Verdict {
        self.out.finish(close_connection)
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

/// Bytes that are not PostgreSQL frames. The direction reads nothing more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FramingError {
    #[error("invalid message length {0}")]
    InvalidLength(usize),
    #[error("unreadable message header")]
    UnreadableHeader,
    #[error("startup packet length {0} over {max}", max = pg::MAX_STARTUP_PACKET_LENGTH)]
    StartupPacketTooLong(usize),
    #[error("message type {} length {body_len} over the protocol maximum", pg::tag_name(*.tag))]
    OverProtocolMaximum { tag: u8, body_len: usize },
    /// The reader pulled a frame without saying how to read the message whose
    /// header came before it.
    #[error("message type {} read without a buffering decision", pg::tag_name(*.0))]
    Undecided(u8),
}

/// How a message is read once its header is whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buffering {
    /// Held until whole, then handed out as one [`Frame::Message`].
    Hold,
    /// Forwarded as its bytes arrive, keeping the first `capture_limit` body
    /// bytes for the record.
    Stream { capture_limit: usize },
}

/// What [`Framer::next`] reads out of a chunk.
#[derive(Debug)]
#[must_use]
pub(crate) enum Frame<'c> {
    /// A message's header is whole: say how to read the message with
    /// [`Framer::read_as`] before pulling the next frame.
    Header(Header),
    /// A held message, whole.
    Message(Message<'c>),
    /// The next bytes of a streamed message's body, at `range` in the chunk.
    Part {
        range: Range<usize>,
        bytes: &'c [u8],
    },
    /// A streamed message ended.
    Streamed(Stream),
}

/// A whole message: its header and body.
#[derive(Debug)]
pub(crate) struct Message<'c> {
    /// How it was framed.
    pub(crate) mode: FrameMode,
    /// The tag; 0 for untagged packets, the byte itself for a TLS answer.
    pub(crate) tag: u8,
    bytes: MessageBytes<'c>,
}

#[derive(Debug)]
enum MessageBytes<'c> {
    /// Whole in the chunk, at this range.
    InChunk(Range<usize>, &'c [u8]),
    /// Assembled from more than one chunk.
    Assembled(Vec<u8>),
}

impl Message<'_> {
    /// The whole message, header included, as it came.
    pub(crate) fn wire(&self) -> &[u8] {
        match &self.bytes {
            MessageBytes::InChunk(_, bytes) => bytes,
            MessageBytes::Assembled(bytes) => bytes.as_slice(),
        }
    }

    /// The message's bytes after its header.
    pub(crate) fn body(&self) -> &[u8] {
        let frame = match &self.bytes {
            MessageBytes::InChunk(_, bytes) => bytes,
            MessageBytes::Assembled(bytes) => bytes.as_slice(),
        };
        frame.get(self.mode.header_len()..).unwrap_or_default()
    }
}

/// A message being forwarded as its bytes arrive.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) tag: u8,
    pub(crate) body_len: usize,
    remaining: usize,
    /// The first bytes of the body, up to `capture_limit`, for records.
    pub(crate) captured: Vec<u8>,
    capture_limit: usize,
}

/// Where a direction is in its current frame.
#[derive(Debug)]
enum Reading {
    /// At a frame boundary, or inside a header (its bytes so far in `pending`).
    Header,
    /// The header is whole; the reader has yet to say how to read the message.
    Undecided(Header),
    /// Holding the message until it is whole.
    Held(Header),
    /// Forwarding the message's body as it arrives.
    Streamed(Stream),
}

/// Framing state of one direction.
///
/// While a header or held message is being read, its bytes so far are in
/// `pending`; when `pending` is empty they are still unread in the chunk.
#[derive(Debug)]
pub(crate) struct Framer {
    pub(crate) mode: FrameMode,
    /// A frame that did not arrive whole: its header, and for a held message
    /// its body so far.
    pending: Vec<u8>,
    reading: Reading,
    /// After a fatal problem this direction's further bytes are discarded.
    pub(crate) discarding: bool,
}

/// A buffer handed back after an assembled message keeps its allocation up
/// to this size.
const KEPT_CAPACITY: usize = 64 * 1024;

impl Framer {
    pub(crate) fn new(mode: FrameMode) -> Self {
        Self {
            mode,
            pending: Vec::new(),
            reading: Reading::Header,
            discarding: false,
        }
    }

    /// Whether this direction's next bytes start a tagged message: nothing of
    /// one is held, and they are not being discarded.
    pub(crate) fn at_tagged_message_start(&self) -> bool {
        self.mode == FrameMode::Tagged
            && self.pending.is_empty()
            && matches!(self.reading, Reading::Header)
            && !self.discarding
    }

    /// Bytes held in memory for this direction.
    pub(crate) fn held_bytes(&self) -> usize {
        let captured = match &self.reading {
            Reading::Streamed(stream) => stream.captured.len(),
            _ => 0,
        };
        self.pending.len() + captured
    }

    /// Discards this direction's further bytes, and what it holds of a frame.
    pub(crate) fn discard(&mut self) {
        self.discarding = true;
        self.pending = Vec::new();
        self.reading = Reading::Header;
    }

    /// Drops what this direction holds of a frame, and frames its next bytes
    /// in `mode`.
    pub(crate) fn restart(&mut self, mode: FrameMode) {
        self.pending.clear();
        self.reading = Reading::Header;
        self.mode = mode;
    }

    /// The next frame of `chunk`; `Ok(None)` when the chunk is used up (what
    /// it held of an unfinished frame is kept for the next chunk) or the
    /// direction is discarded. After an error the direction is discarded.
    #[inline]
    pub(crate) fn next<'c>(
        &mut self,
        chunk: &mut Chunk<'c>,
    ) -> Result<Option<Frame<'c>>, FramingError> {
        if self.discarding {
            return Ok(None);
        }
        // What may complete without another byte: an empty streamed body, and
        // a held message whose header was the chunk's last bytes.
        match &self.reading {
            Reading::Streamed(stream) if stream.remaining == 0 => {
                let done = std::mem::replace(&mut self.reading, Reading::Header);
                return Ok(match done {
                    Reading::Streamed(stream) => Some(Frame::Streamed(stream)),
                    _ => None,
                });
            }
            Reading::Held(header) if self.mode != FrameMode::AnswerByte => {
                let header = *header;
                return Ok(self.held(header, chunk).map(Frame::Message));
            }
            Reading::Undecided(header) => {
                let tag = header.tag;
                self.discard();
                return Err(FramingError::Undecided(tag));
            }
            _ => {}
        }
        if chunk.unread() == 0 {
            return Ok(None);
        }
        Ok(match &mut self.reading {
            Reading::Streamed(stream) => {
                let range = chunk.take(stream.remaining);
                let bytes = chunk.slice(range.clone());
                let room = stream.capture_limit.saturating_sub(stream.captured.len());
                stream
                    .captured
                    .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
                stream.remaining -= range.len();
                Some(Frame::Part { range, bytes })
            }
            _ if self.mode == FrameMode::AnswerByte => Some(self.answer_byte(chunk)),
            _ => self.header(chunk)?.map(Frame::Header),
        })
    }

    /// Says how to read the message whose header [`Framer::next`] returned
    /// last. A streamed message's header is forwarded now.
    #[inline]
    pub(crate) fn read_as(&mut self, buffering: Buffering, chunk: &mut Chunk<'_>) {
        let Reading::Undecided(header) = self.reading else {
            return;
        };
        self.reading = match buffering {
            Buffering::Hold => Reading::Held(header),
            Buffering::Stream { capture_limit } => {
                if self.pending.is_empty() {
                    let range = chunk.take(self.mode.header_len());
                    chunk.out.pass(range);
                } else {
                    chunk.out.emit(&self.pending);
                    self.pending.clear();
                }
                Reading::Streamed(Stream {
                    tag: header.tag,
                    body_len: header.body_len,
                    remaining: header.body_len,
                    captured: Vec::new(),
                    capture_limit,
                })
            }
        };
    }

    /// Takes back the buffer of a message [`Framer::next`] assembled, so the
    /// next message split across chunks reuses its allocation.
    #[inline]
    pub(crate) fn recycle(&mut self, message: Message<'_>) {
        if let MessageBytes::Assembled(mut buffer) = message.bytes
            && buffer.capacity() <= KEPT_CAPACITY
            && self.pending.is_empty()
        {
            buffer.clear();
            self.pending = buffer;
        }
    }

    /// The one-byte answer to a TLS request. Bytes held from before the
    /// request was sent are read as that answer.
    fn answer_byte<'c>(&mut self, chunk: &mut Chunk<'c>) -> Frame<'c> {
        self.reading = Reading::Header;
        let (tag, bytes) = match self.pending.first() {
            None => {
                let range = chunk.take(1);
                let bytes = chunk.slice(range.clone());
                (
                    bytes.first().copied().unwrap_or_default(),
                    MessageBytes::InChunk(range, bytes),
                )
            }
            Some(&held) => {
                self.pending.clear();
                (held, MessageBytes::Assembled(vec![held]))
            }
        };
        Frame::Message(Message {
            mode: FrameMode::AnswerByte,
            tag,
            bytes,
        })
    }

    /// Completes and checks a header; `None` while it is partial.
    #[inline]
    fn header(&mut self, chunk: &mut Chunk<'_>) -> Result<Option<Header>, FramingError> {
        let header_len = self.mode.header_len();
        let bytes = if self.pending.is_empty() && chunk.unread() >= header_len {
            chunk.peek(header_len)
        } else {
            let range = chunk.take(header_len.saturating_sub(self.pending.len()));
            self.pending.extend_from_slice(chunk.slice(range));
            if self.pending.len() < header_len {
                return Ok(None);
            }
            self.pending.get(..header_len).unwrap_or_default()
        };
        match self.check(Header::parse(self.mode, bytes)) {
            Ok(header) => {
                self.reading = Reading::Undecided(header);
                Ok(Some(header))
            }
            Err(error) => {
                self.discard();
                Err(error)
            }
        }
    }

    /// The protocol's own limits on a frame.
    fn check(&self, parsed: Option<Result<Header, usize>>) -> Result<Header, FramingError> {
        let header = parsed
            .ok_or(FramingError::UnreadableHeader)?
            .map_err(FramingError::InvalidLength)?;
        match self.mode {
            FrameMode::Untagged if header.body_len + 4 > pg::MAX_STARTUP_PACKET_LENGTH => {
                Err(FramingError::StartupPacketTooLong(header.body_len + 4))
            }
            FrameMode::Tagged if header.body_len > pg::MAX_MESSAGE_LENGTH => {
                Err(FramingError::OverProtocolMaximum {
                    tag: header.tag,
                    body_len: header.body_len,
                })
            }
            _ => Ok(header),
        }
    }

    /// Reads a held message; `None` until it is whole.
    #[inline]
    fn held<'c>(&mut self, header: Header, chunk: &mut Chunk<'c>) -> Option<Message<'c>> {
        let total = self.mode.header_len() + header.body_len;
        let bytes = if self.pending.is_empty() && chunk.unread() >= total {
            let range = chunk.take(total);
            let bytes = chunk.slice(range.clone());
            MessageBytes::InChunk(range, bytes)
        } else {
            let range = chunk.take(total.saturating_sub(self.pending.len()));
            self.pending.extend_from_slice(chunk.slice(range));
            if self.pending.len() < total {
                return None;
            }
            MessageBytes::Assembled(std::mem::take(&mut self.pending))
        };
        self.reading = Reading::Header;
        Some(Message {
            mode: self.mode,
            tag: header.tag,
            bytes,
        })
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
    use proptest::prelude::*;

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

    /// What a reader saw of one message, whatever the chunking.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        Held {
            mode: FrameMode,
            tag: u8,
            body: Vec<u8>,
        },
        Streamed {
            tag: u8,
            body: Vec<u8>,
            captured: Vec<u8>,
        },
    }

    /// Messages over this many body bytes, and every `d`, are streamed.
    const HOLD_LIMIT: usize = 40;
    const CAPTURE: usize = 8;

    fn buffering(mode: FrameMode, header: Header) -> Buffering {
        if mode == FrameMode::Tagged && (header.body_len > HOLD_LIMIT || header.tag == b'd') {
            Buffering::Stream {
                capture_limit: CAPTURE,
            }
        } else {
            Buffering::Hold
        }
    }

    /// What reading a direction gave: the messages, the bytes forwarded, the
    /// most held at once, the error that ended it.
    #[derive(Debug, Default)]
    struct Read {
        seen: Vec<Seen>,
        forwarded: Vec<u8>,
        max_held: usize,
        error: Option<FramingError>,
    }

    /// Reads `chunks` as the session does, forwarding every message as it
    /// came; after the first message the direction is tagged, as after a
    /// StartupMessage.
    fn read(first_mode: FrameMode, chunks: &[&[u8]]) -> Read {
        let mut framer = Framer::new(first_mode);
        let mut read = Read::default();
        let mut streaming: Option<Vec<u8>> = None;
        for bytes in chunks {
            let mut chunk = Chunk::new(bytes);
            loop {
                let frame = match framer.next(&mut chunk) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(error) => {
                        read.error = Some(error);
                        break;
                    }
                };
                match frame {
                    Frame::Header(header) => {
                        framer.read_as(buffering(framer.mode, header), &mut chunk);
                    }
                    Frame::Message(message) => {
                        read.seen.push(Seen::Held {
                            mode: message.mode,
                            tag: message.tag,
                            body: message.body().to_vec(),
                        });
                        chunk.forward(&message);
                        framer.recycle(message);
                        framer.mode = FrameMode::Tagged;
                    }
                    Frame::Part { range, bytes } => {
                        streaming.get_or_insert_default().extend_from_slice(bytes);
                        chunk.out.pass(range);
                    }
                    Frame::Streamed(stream) => {
                        read.seen.push(Seen::Streamed {
                            tag: stream.tag,
                            body: streaming.take().unwrap_or_default(),
                            captured: stream.captured,
                        });
                        framer.mode = FrameMode::Tagged;
                    }
                }
            }
            read.max_held = read.max_held.max(framer.held_bytes());
            read.forwarded
                .extend_from_slice(chunk.finish(false).bytes(bytes));
        }
        read
    }

    fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len() + 4).unwrap();
        [&[tag][..], &len.to_be_bytes(), body].concat()
    }

    fn untagged(body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len() + 4).unwrap();
        [&len.to_be_bytes()[..], body].concat()
    }

    /// What any chunking of `messages` must read as.
    fn expected(startup: Option<&[u8]>, messages: &[(u8, Vec<u8>)]) -> Vec<Seen> {
        let startup = startup.map(|body| Seen::Held {
            mode: FrameMode::Untagged,
            tag: 0,
            body: body.to_vec(),
        });
        let tagged = messages.iter().map(|(tag, body)| {
            match buffering(
                FrameMode::Tagged,
                Header {
                    tag: *tag,
                    body_len: body.len(),
                },
            ) {
                Buffering::Hold => Seen::Held {
                    mode: FrameMode::Tagged,
                    tag: *tag,
                    body: body.clone(),
                },
                Buffering::Stream { capture_limit } => Seen::Streamed {
                    tag: *tag,
                    body: body.clone(),
                    captured: body.get(..capture_limit.min(body.len())).unwrap().to_vec(),
                },
            }
        });
        startup.into_iter().chain(tagged).collect()
    }

    fn split<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut rest = bytes;
        for &n in sizes.iter().cycle().take(bytes.len()) {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(n.min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        if !rest.is_empty() {
            chunks.push(rest);
        }
        chunks
    }

    fn message() -> impl Strategy<Value = (u8, Vec<u8>)> {
        let tag = prop::sample::select(b"QPBDdTZE".to_vec());
        let body = prop_oneof![
            3 => prop::collection::vec(any::<u8>(), 0..=HOLD_LIMIT),
            1 => prop::collection::vec(any::<u8>(), 0..300),
        ];
        (tag, body)
    }

    proptest! {
        #![proptest_config(crate::tests::proptest_config(512))]

        /// Any stream of frames, in any chunking, reads as the same messages,
        /// forwards every byte in order, and holds at most one held message
        /// or one header and capture.
        #[test]
        fn any_chunking_reads_the_same_frames(
            startup in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            messages in prop::collection::vec(message(), 0..12),
            sizes in prop::collection::vec(1..64usize, 1..8),
        ) {
            let mut stream = startup.as_deref().map(untagged).unwrap_or_default();
            for (tag, body) in &messages {
                stream.extend(tagged(*tag, body));
            }
            let first_mode = if startup.is_some() { FrameMode::Untagged } else { FrameMode::Tagged };
            let whole = read(first_mode, &[&stream]);
            let chunked = read(first_mode, &split(&stream, &sizes));
            let expected = expected(startup.as_deref(), &messages);
            prop_assert_eq!(&whole.seen, &expected);
            prop_assert_eq!(&chunked.seen, &expected);
            prop_assert_eq!(&chunked.forwarded, &stream);
            prop_assert_eq!(chunked.error, None);
            prop_assert!(chunked.max_held <= 64 + 5 + HOLD_LIMIT, "held {}", chunked.max_held);
        }
    }

    #[test]
    fn a_stream_split_at_every_byte_reads_as_whole() {
        let stream = [
            untagged(b"\0\x03\0\0user\0me\0\0"),
            tagged(b'Q', b"select 1\0"),
            tagged(b'S', b""),
            tagged(b'd', b""),
            tagged(b'D', &[7; 100]),
            tagged(b'Z', b"I"),
        ]
        .concat();
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let byte_by_byte = read(FrameMode::Untagged, &bytes);
        let whole = read(FrameMode::Untagged, &[&stream]);
        assert_eq!(byte_by_byte.seen, whole.seen);
        assert_eq!(byte_by_byte.forwarded, stream);
        assert_eq!(
            whole
                .seen
                .iter()
                .map(|seen| matches!(seen, Seen::Streamed { .. }))
                .collect::<Vec<_>>(),
            [false, false, false, true, true, false]
        );
    }

    /// A length that lies is an error however its header is split, and the
    /// direction then reads nothing more.
    #[test]
    fn hostile_lengths_are_errors_in_any_split() {
        let cases: [(FrameMode, Vec<u8>, FramingError); 4] = [
            (
                FrameMode::Tagged,
                b"Q\0\0\0\x03".to_vec(),
                FramingError::InvalidLength(3),
            ),
            (
                FrameMode::Untagged,
                b"\0\0\0\0".to_vec(),
                FramingError::InvalidLength(0),
            ),
            (
                FrameMode::Tagged,
                b"D\x7f\xff\xff\xff".to_vec(),
                FramingError::OverProtocolMaximum {
                    tag: b'D',
                    body_len: 0x7fff_fffb,
                },
            ),
            (
                FrameMode::Untagged,
                10_001u32.to_be_bytes().to_vec(),
                FramingError::StartupPacketTooLong(10_001),
            ),
        ];
        for (mode, header, error) in cases {
            for at in 0..header.len() {
                let (first, rest) = header.split_at(at);
                let trailing = [rest, b"more bytes"].concat();
                let result = read(mode, &[first, &trailing, b"and more"]);
                assert_eq!(result.error.as_ref(), Some(&error), "split at {at}");
                assert!(result.seen.is_empty());
                assert!(result.forwarded.is_empty());
            }
        }
        assert_eq!(
            FramingError::OverProtocolMaximum {
                tag: b'D',
                body_len: 5
            }
            .to_string(),
            "message type 'D' length 5 over the protocol maximum"
        );
        assert_eq!(
            FramingError::StartupPacketTooLong(10_001).to_string(),
            "startup packet length 10001 over 10000"
        );
    }

    #[test]
    fn a_frame_pulled_before_the_header_is_decided_is_refused() {
        let mut framer = Framer::new(FrameMode::Tagged);
        let bytes = tagged(b'Q', b"select 1\0");
        let mut chunk = Chunk::new(&bytes);
        assert!(matches!(
            framer.next(&mut chunk),
            Ok(Some(Frame::Header(_)))
        ));
        assert_eq!(
            framer.next(&mut chunk).unwrap_err(),
            FramingError::Undecided(b'Q')
        );
        assert!(framer.next(&mut chunk).unwrap().is_none());
    }

    /// The server's answer to a TLS request is one byte; bytes it sent before
    /// the request was framed are read as that answer.
    #[test]
    fn a_tls_answer_is_one_byte_even_after_held_bytes() {
        let mut framer = Framer::new(FrameMode::Tagged);
        let mut early = Chunk::new(b"Eab");
        assert!(framer.next(&mut early).unwrap().is_none());
        assert_eq!(framer.held_bytes(), 3);
        framer.mode = FrameMode::AnswerByte;
        let mut chunk = Chunk::new(b"N");
        let Ok(Some(Frame::Message(answer))) = framer.next(&mut chunk) else {
            panic!("no answer");
        };
        assert_eq!((answer.tag, answer.body()), (b'E', &[][..]));
        assert_eq!(framer.held_bytes(), 0);
        framer.mode = FrameMode::Tagged;
        chunk.forward(&answer);
        assert!(framer.next(&mut chunk).unwrap().is_none());
        assert_eq!(chunk.finish(false).forward, Forward::Replace(b"E".to_vec()));
    }
}
