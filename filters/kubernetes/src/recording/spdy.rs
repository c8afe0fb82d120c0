//! SPDY/3.1 framing of the Kubernetes remote-command protocol, as kubectl
//! speaks it when WebSocket is off or refused (`Upgrade: SPDY/3.1`).
//!
//! The client opens one stream per channel with a SYN_STREAM whose
//! `streamtype` header says which (stdin, stdout, stderr, error, resize);
//! data frames then carry the stream id. Header blocks are compressed with
//! one zlib stream per direction, primed with SPDY/3's dictionary, so every
//! client header block must be inflated in order to read the next one. The
//! server's header blocks (SYN_REPLY) name nothing gatehouse needs and are
//! passed without inflating them.
//!
//! Data frames stream through; control frames are small and read whole (up to
//! [`MAX_CONTROL_FRAME`]).

use super::wire::{Channel, DecodeError, FrameInfo, Piece};
use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

/// SPDY/3's header-compression dictionary (the SPDY/3 specification, §2.6.10.1).
pub const DICTIONARY: &[u8; 1423] = include_bytes!("spdy3-dictionary.bin");
/// Largest control frame read (kubectl's SYN_STREAMs are under 100 bytes).
pub const MAX_CONTROL_FRAME: u32 = 64 * 1024;
/// Largest inflated header block.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Streams an exec session opens: five channels, with room to spare.
const MAX_STREAMS: usize = 16;
/// zlib's window, the inflater's ring buffer.
const WINDOW: usize = 32 * 1024;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;

/// Which end sent the bytes: only the client's header blocks are inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Client,
    Server,
}

/// The channels of the streams the client opened, shared by both directions.
#[derive(Debug, Default)]
pub struct StreamMap {
    streams: Vec<(u32, Channel)>,
}

impl StreamMap {
    /// The channel stream `id` carries.
    pub fn channel(&self, id: u32) -> Option<Channel> {
        self.streams
            .iter()
            .find(|(stream, _)| *stream == id)
            .map(|(_, channel)| *channel)
    }

    /// The stream carrying `channel`, once the client opened it.
    pub fn stream_of(&self, channel: Channel) -> Option<u32> {
        self.streams
            .iter()
            .find(|(_, c)| *c == channel)
            .map(|(id, _)| *id)
    }

    fn open(&mut self, id: u32, channel: Channel) -> Result<(), DecodeError> {
        if self.streams.len() >= MAX_STREAMS {
            return Err(DecodeError::SpdyTooManyStreams);
        }
        self.streams.push((id, channel));
        Ok(())
    }
}

/// One direction of a SPDY exec connection.
#[derive(Debug)]
pub struct SpdyDecoder {
    sender: Sender,
    header: [u8; 8],
    have: usize,
    /// A control frame being gathered: its header and body.
    control: Option<Vec<u8>>,
    control_len: usize,
    data: Option<DataFrame>,
    inflater: Option<Box<HeaderInflater>>,
}

#[derive(Debug, Clone, Copy)]
struct DataFrame {
    remaining: u32,
    channel: Channel,
    fin: bool,
}

impl SpdyDecoder {
    pub fn new(sender: Sender) -> Self {
        Self {
            sender,
            header: [0; 8],
            have: 0,
            control: None,
            control_len: 0,
            data: None,
            inflater: None,
        }
    }

    /// Whether the stream is between frames.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.control.is_none() && self.data.is_none()
    }

    /// Decodes `input`, reporting its pieces to `sink` in order; `streams`
    /// learns the client's streams and names the channel of data frames.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        streams: &mut StreamMap,
        sink: &mut dyn FnMut(Piece<'_>),
    ) -> Result<(), DecodeError> {
        let total = input.len();
        while !input.is_empty() {
            if let Some(frame) = self.data.as_mut() {
                let take = (frame.remaining as usize).min(input.len());
                let (raw, rest) = input.split_at(take);
                input = rest;
                frame.remaining -= take as u32;
                let frame = *frame;
                sink(Piece::Payload {
                    raw,
                    channel: Some(frame.channel),
                    data: raw,
                });
                if frame.remaining == 0 {
                    self.end_data_frame(frame, total - input.len(), sink);
                }
                continue;
            }
            if let Some(control) = self.control.as_mut() {
                let take = (self.control_len - control.len()).min(input.len());
                let (part, rest) = input.split_at(take);
                control.extend_from_slice(part);
                input = rest;
                if control.len() == self.control_len {
                    let frame = std::mem::take(control);
                    self.control = None;
                    self.read_control(&frame, total - input.len(), streams, sink)?;
                }
                continue;
            }
            let take = (8 - self.have).min(input.len());
            let (part, rest) = input.split_at(take);
            if let Some(slots) = self.header.get_mut(self.have..self.have + take) {
                slots.copy_from_slice(part);
            }
            self.have += take;
            input = rest;
            if self.have == 8 {
                self.have = 0;
                self.start_frame(total - input.len(), streams, sink)?;
            }
        }
        Ok(())
    }

    fn start_frame(
        &mut self,
        at: usize,
        streams: &StreamMap,
        sink: &mut dyn FnMut(Piece<'_>),
    ) -> Result<(), DecodeError> {
        let [b0, b1, b2, b3, flags, l0, l1, l2] = self.header;
        let len = u32::from_be_bytes([0, l0, l1, l2]);
        if b0 & 0x80 != 0 {
            let version = u16::from_be_bytes([b0 & 0x7f, b1]);
            if version != 3 {
                return Err(DecodeError::SpdyVersion(version));
            }
            if len > MAX_CONTROL_FRAME {
                return Err(DecodeError::SpdyControlTooLong(len));
            }
            let mut frame = Vec::with_capacity(8 + len as usize);
            frame.extend_from_slice(&self.header);
            self.control_len = 8 + len as usize;
            if len == 0 {
                return self.read_control_now(frame, at, sink);
            }
            self.control = Some(frame);
            return Ok(());
        }
        let stream_id = u32::from_be_bytes([b0, b1, b2, b3]);
        let channel = streams
            .channel(stream_id)
            .ok_or(DecodeError::SpdyUnknownStream(stream_id))?;
        let frame = DataFrame {
            remaining: len,
            channel,
            fin: flags & FLAG_FIN != 0,
        };
        sink(Piece::FrameStart {
            raw: &self.header,
            frame: FrameInfo::Data {
                channel: Some(channel),
                len: u64::from(len),
                stream_id,
                fin: frame.fin,
                opcode: 0,
                mask: None,
                starts_message: true,
            },
        });
        if len == 0 {
            self.end_data_frame(frame, at, sink);
        } else {
            self.data = Some(frame);
        }
        Ok(())
    }

    /// A control frame without a body (only malformed ones are).
    fn read_control_now(
        &mut self,
        frame: Vec<u8>,
        at: usize,
        sink: &mut dyn FnMut(Piece<'_>),
    ) -> Result<(), DecodeError> {
        sink(Piece::FrameStart {
            raw: &frame,
            frame: FrameInfo::Control,
        });
        sink(Piece::FrameEnd { at });
        Ok(())
    }

    fn end_data_frame(&mut self, frame: DataFrame, at: usize, sink: &mut dyn FnMut(Piece<'_>)) {
        self.data = None;
        sink(Piece::FrameEnd { at });
        if frame.fin {
            sink(Piece::ChannelClosed(frame.channel));
        }
    }

    fn read_control(
        &mut self,
        frame: &[u8],
        at: usize,
        streams: &mut StreamMap,
        sink: &mut dyn FnMut(Piece<'_>),
    ) -> Result<(), DecodeError> {
        let kind = u16::from_be_bytes([
            frame.get(2).copied().unwrap_or_default(),
            frame.get(3).copied().unwrap_or_default(),
        ]);
        let flags = frame.get(4).copied().unwrap_or_default();
        let body = frame.get(8..).unwrap_or_default();
        let stream_id = |name| {
            body.first_chunk::<4>()
                .map(|id| u32::from_be_bytes(*id) & 0x7fff_ffff)
                .ok_or(DecodeError::SpdyMalformed(name))
        };
        let mut events = Vec::new();
        match (kind, self.sender) {
            (SYN_STREAM, Sender::Client) => {
                let id = stream_id("SYN_STREAM")?;
                let block = body
                    .get(10..)
                    .ok_or(DecodeError::SpdyMalformed("SYN_STREAM"))?;
                let headers = self.inflater().inflate(block)?;
                let stream_type = header_value(&headers, b"streamtype")?
                    .ok_or(DecodeError::SpdyMalformed("SYN_STREAM without streamtype"))?;
                let channel = Channel::from_stream_type(stream_type).ok_or_else(|| {
                    DecodeError::SpdyStreamType(String::from_utf8_lossy(stream_type).into_owned())
                })?;
                streams.open(id, channel)?;
                if flags & FLAG_FIN != 0 {
                    events.push(channel);
                }
            }
            (HEADERS, Sender::Client) => {
                stream_id("HEADERS")?;
                let block = body.get(4..).unwrap_or_default();
                // Inflated only to keep the compression context in step.
                self.inflater().inflate(block)?;
            }
            (SYN_STREAM, Sender::Server) => {
                return Err(DecodeError::SpdyMalformed("server-initiated SYN_STREAM"));
            }
            (RST_STREAM, _) => {
                if let Some(channel) = streams.channel(stream_id("RST_STREAM")?) {
                    events.push(channel);
                }
            }
            (SYN_REPLY | HEADERS, Sender::Server) => {
                let id = stream_id("SYN_REPLY")?;
                if streams.channel(id).is_none() {
                    return Err(DecodeError::SpdyUnknownStream(id));
                }
            }
            _ => {}
        }
        sink(Piece::FrameStart {
            raw: frame,
            frame: FrameInfo::Control,
        });
        sink(Piece::FrameEnd { at });
        for channel in events {
            sink(Piece::ChannelClosed(channel));
        }
        if kind == 7 {
            sink(Piece::ConnectionClosing);
        }
        Ok(())
    }

    fn inflater(&mut self) -> &mut HeaderInflater {
        self.inflater
            .get_or_insert_with(|| Box::new(HeaderInflater::new()))
    }
}

/// The value of header `name` in an inflated SPDY/3 header block
/// (`u32` count, then `u32`-length-prefixed names and values).
pub fn header_value<'a>(block: &'a [u8], name: &[u8]) -> Result<Option<&'a [u8]>, DecodeError> {
    let malformed = DecodeError::SpdyHeaders("header block framing");
    let mut rest = block;
    let take = |rest: &mut &'a [u8]| -> Result<&'a [u8], DecodeError> {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or(malformed.clone())?;
        let len = u32::from_be_bytes(*len) as usize;
        let (value, tail) = tail.split_at_checked(len).ok_or(malformed.clone())?;
        *rest = tail;
        Ok(value)
    };
    let (count, tail) = rest.split_first_chunk::<4>().ok_or(malformed.clone())?;
    rest = tail;
    let mut found = None;
    for _ in 0..u32::from_be_bytes(*count) {
        let key = take(&mut rest)?;
        let value = take(&mut rest)?;
        if key == name && found.is_none() {
            found = Some(value);
        }
    }
    if !rest.is_empty() {
        return Err(malformed);
    }
    Ok(found)
}

/// The client's header-compression context: one zlib stream primed with
/// [`DICTIONARY`], continued by every header block.
struct HeaderInflater {
    state: DecompressorOxide,
    /// The last 32 KiB of inflated output (the dictionary first): what
    /// back-references reach.
    window: Vec<u8>,
    position: usize,
    /// zlib header bytes still to skip (2, plus 4 when it names a dictionary).
    header: Vec<u8>,
    header_done: bool,
}

impl std::fmt::Debug for HeaderInflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderInflater")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl HeaderInflater {
    fn new() -> Self {
        let mut window = vec![0u8; WINDOW];
        if let Some(start) = window.get_mut(..DICTIONARY.len()) {
            start.copy_from_slice(DICTIONARY);
        }
        Self {
            state: DecompressorOxide::new(),
            window,
            position: DICTIONARY.len(),
            header: Vec::with_capacity(6),
            header_done: false,
        }
    }

    /// Inflates one header block (a sync-flushed continuation of the stream).
    fn inflate(&mut self, mut block: &[u8]) -> Result<Vec<u8>, DecodeError> {
        while !self.header_done {
            let Some((&byte, rest)) = block.split_first() else {
                return Ok(Vec::new());
            };
            self.header.push(byte);
            block = rest;
            if let [cmf, flg] = *self.header {
                if cmf & 0x0f != 8 || (u16::from(cmf) * 256 + u16::from(flg)) % 31 != 0 {
                    return Err(DecodeError::SpdyHeaders("not a zlib stream"));
                }
                self.header_done = flg & 0x20 == 0;
            } else if let [_, _, a, b, c, d] = *self.header {
                if u32::from_be_bytes([a, b, c, d]) != adler32(DICTIONARY) {
                    return Err(DecodeError::SpdyHeaders(
                        "zlib stream names another dictionary",
                    ));
                }
                self.header_done = true;
            }
        }
        let mut out = Vec::new();
        let flags = inflate_flags::TINFL_FLAG_HAS_MORE_INPUT;
        loop {
            let (status, read, written) = decompress(
                &mut self.state,
                block,
                &mut self.window,
                self.position,
                flags,
            );
            let end = self.position + written;
            out.extend_from_slice(self.window.get(self.position..end).unwrap_or_default());
            self.position = end % WINDOW;
            block = block.get(read..).unwrap_or_default();
            if out.len() > MAX_HEADER_BLOCK {
                return Err(DecodeError::SpdyHeaders("header block too large"));
            }
            match status {
                TINFLStatus::HasMoreOutput => continue,
                TINFLStatus::NeedsMoreInput if block.is_empty() => return Ok(out),
                TINFLStatus::NeedsMoreInput => continue,
                TINFLStatus::Done => return Err(DecodeError::SpdyHeaders("stream ended")),
                _ => return Err(DecodeError::SpdyHeaders("corrupt deflate data")),
            }
        }
    }
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

/// A data frame on `stream_id` (used to put a notice in front of the user).
pub fn encode_data_frame(stream_id: u32, fin: bool, data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
    let len = (data.len() as u32).min(0x00ff_ffff);
    let [_, l0, l1, l2] = len.to_be_bytes();
    out.extend_from_slice(&[if fin { FLAG_FIN } else { 0 }, l0, l1, l2]);
    out.extend_from_slice(data.get(..len as usize).unwrap_or(data));
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// Compresses header blocks the way spdystream does: one zlib stream
    /// with the dictionary, sync-flushed after each block.
    struct Deflater(Compress);

    impl Deflater {
        fn new() -> Self {
            let mut compress = Compress::new(Compression::best(), true);
            compress.set_dictionary(DICTIONARY).unwrap();
            Self(compress)
        }

        fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
            let mut plain = (headers.len() as u32).to_be_bytes().to_vec();
            for (name, value) in headers {
                for part in [name, value] {
                    plain.extend_from_slice(&(part.len() as u32).to_be_bytes());
                    plain.extend_from_slice(part.as_bytes());
                }
            }
            let mut out = Vec::with_capacity(plain.len() + 64);
            self.0
                .compress_vec(&plain, &mut out, FlushCompress::Sync)
                .unwrap();
            out
        }
    }

    fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80, 3];
        frame.extend_from_slice(&kind.to_be_bytes());
        let [_, l0, l1, l2] = (body.len() as u32).to_be_bytes();
        frame.extend_from_slice(&[flags, l0, l1, l2]);
        frame.extend_from_slice(body);
        frame
    }

    fn syn_stream(deflater: &mut Deflater, id: u32, stream_type: &str) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(&deflater.block(&[("streamtype", stream_type), ("port", "")]));
        control(SYN_STREAM, 0, &body)
    }

    /// A client's side of an exec: five streams, resize, typed input, stdin closed.
    fn client_stream() -> Vec<u8> {
        let mut deflater = Deflater::new();
        let mut wire = Vec::new();
        for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")] {
            wire.extend(syn_stream(&mut deflater, id, kind));
        }
        encode_data_frame(7, false, br#"{"Width":80,"Height":24}"#, &mut wire);
        encode_data_frame(3, false, b"ls\r", &mut wire);
        wire.extend(control(6, 0, &1u32.to_be_bytes()));
        encode_data_frame(3, true, b"", &mut wire);
        wire
    }

    #[derive(Debug, Default, PartialEq, Eq)]
    struct Seen {
        data: Vec<(Channel, Vec<u8>)>,
        closed: Vec<Channel>,
        frames: usize,
        raw: Vec<u8>,
    }

    fn decode_in_parts(
        decoder: &mut SpdyDecoder,
        streams: &mut StreamMap,
        wire: &[u8],
        cuts: &[usize],
    ) -> Result<Seen, DecodeError> {
        let mut seen = Seen::default();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
            decoder.feed(&wire[start..cut], streams, &mut |piece| match piece {
                Piece::FrameStart { raw, .. } => seen.raw.extend_from_slice(raw),
                Piece::Payload { raw, channel, data } => {
                    seen.raw.extend_from_slice(raw);
                    let channel = channel.unwrap();
                    match seen.data.last_mut() {
                        Some((last, bytes)) if *last == channel => bytes.extend_from_slice(data),
                        _ => seen.data.push((channel, data.to_vec())),
                    }
                }
                Piece::FrameEnd { .. } => seen.frames += 1,
                Piece::ChannelClosed(channel) => seen.closed.push(channel),
                Piece::ConnectionClosing => {}
            })?;
            start = cut;
        }
        Ok(seen)
    }

    fn decode_client(wire: &[u8], cuts: &[usize]) -> Result<(Seen, StreamMap), DecodeError> {
        let mut streams = StreamMap::default();
        let mut decoder = SpdyDecoder::new(Sender::Client);
        let seen = decode_in_parts(&mut decoder, &mut streams, wire, cuts)?;
        Ok((seen, streams))
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        assert_eq!(adler32(DICTIONARY), 0xe3c6_a7c2);
        assert!(DICTIONARY.ends_with(b"charset=iso-8859-1,utf-,*,enq=0."));
    }

    #[test]
    fn client_streams_and_data_decode_at_every_split_point() {
        let wire = client_stream();
        let (whole, streams) = decode_client(&wire, &[]).unwrap();
        assert_eq!(streams.channel(3), Some(Channel::Stdin));
        assert_eq!(streams.stream_of(Channel::Stdout), Some(5));
        assert_eq!(
            whole.data,
            vec![
                (Channel::Resize, br#"{"Width":80,"Height":24}"#.to_vec()),
                (Channel::Stdin, b"ls\r".to_vec()),
            ]
        );
        assert_eq!(whole.closed, vec![Channel::Stdin]);
        assert_eq!(whole.raw, wire);
        for a in 0..=wire.len() {
            for b in (a..=wire.len()).step_by(3) {
                assert_eq!(
                    decode_client(&wire, &[a, b]).unwrap().0,
                    whole,
                    "cuts {a} {b}"
                );
            }
        }
    }

    #[test]
    fn server_data_is_attributed_by_the_clients_streams() {
        let (_, mut streams) = decode_client(&client_stream(), &[]).unwrap();
        let mut wire = Vec::new();
        for id in [1, 3, 5, 7] {
            let mut body = (id as u32).to_be_bytes().to_vec();
            body.extend_from_slice(&[0x78, 0xbb, 0xe3, 0xc6, 0xa7, 0xc2]);
            wire.extend(control(SYN_REPLY, 0, &body));
        }
        encode_data_frame(5, false, b"$ ", &mut wire);
        encode_data_frame(1, true, br#"{"status":"Success"}"#, &mut wire);
        wire.extend(control(7, 0, &[0; 8]));
        let mut decoder = SpdyDecoder::new(Sender::Server);
        let seen = decode_in_parts(&mut decoder, &mut streams, &wire, &[]).unwrap();
        assert_eq!(seen.data[0], (Channel::Stdout, b"$ ".to_vec()));
        assert_eq!(seen.closed, vec![Channel::Error]);
        for cut in 0..=wire.len() {
            let mut decoder = SpdyDecoder::new(Sender::Server);
            assert_eq!(
                decode_in_parts(&mut decoder, &mut streams, &wire, &[cut]).unwrap(),
                seen
            );
        }
    }

    #[test]
    fn captured_kubectl_1_29_exec_decodes() {
        // kubectl 1.29 `exec -i -t web-0 -- sh` through the stand-in, client
        // bytes after the upgrade (see testdata/README.md).
        let wire = include_bytes!("../../testdata/kubectl-1.29-spdy-exec-client.bin");
        let (seen, streams) = decode_client(wire, &[]).unwrap();
        for channel in [
            Channel::Stdin,
            Channel::Stdout,
            Channel::Error,
            Channel::Resize,
        ] {
            assert!(streams.stream_of(channel).is_some(), "{channel:?} opened");
        }
        let typed: Vec<u8> = seen
            .data
            .iter()
            .filter(|(c, _)| *c == Channel::Stdin)
            .flat_map(|(_, d)| d.clone())
            .collect();
        assert!(
            typed.starts_with(b"echo hi\r"),
            "{:?}",
            String::from_utf8_lossy(&typed)
        );
        assert!(
            seen.data
                .iter()
                .any(|(c, d)| *c == Channel::Resize && d.starts_with(b"{\"Width\":"))
        );
        for cut in 0..=wire.len() {
            assert_eq!(decode_client(wire, &[cut]).unwrap().0, seen, "cut {cut}");
        }
    }

    #[test]
    fn hostile_frames_are_refused() {
        let mut deflater = Deflater::new();
        let unknown = [0, 0, 0, 9, 0, 0, 0, 1, b'x'];
        let syn_garbage = control(
            SYN_STREAM,
            0,
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x78, 0xbb, 1, 2, 3, 4, 9, 9],
        );
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (unknown.to_vec(), DecodeError::SpdyUnknownStream(9)),
            (
                {
                    let mut frame = control(SYN_STREAM, 0, &[0; 10]);
                    frame[1] = 2;
                    frame
                },
                DecodeError::SpdyVersion(2),
            ),
            (
                vec![0x80, 3, 0, 1, 0, 0x01, 0, 1],
                DecodeError::SpdyControlTooLong(65_537),
            ),
            (
                syn_garbage,
                DecodeError::SpdyHeaders("zlib stream names another dictionary"),
            ),
            (
                syn_stream(&mut deflater, 1, "data"),
                DecodeError::SpdyStreamType("data".into()),
            ),
            (
                control(SYN_STREAM, 0, &[0, 0]),
                DecodeError::SpdyMalformed("SYN_STREAM"),
            ),
        ];
        for (wire, error) in cases {
            assert_eq!(decode_client(&wire, &[]).err(), Some(error), "{wire:?}");
        }
        let mut deflater = Deflater::new();
        let mut many = Vec::new();
        for id in 0..=MAX_STREAMS as u32 {
            many.extend(syn_stream(&mut deflater, id * 2 + 1, "stdout"));
        }
        assert_eq!(
            decode_client(&many, &[]).err(),
            Some(DecodeError::SpdyTooManyStreams)
        );
    }

    #[test]
    fn a_header_block_that_inflates_past_the_limit_is_refused() {
        let mut deflater = Deflater::new();
        let huge = "a".repeat(MAX_HEADER_BLOCK + 10);
        let mut body = 1u32.to_be_bytes().to_vec();
        body.extend_from_slice(&[0; 6]);
        body.extend_from_slice(&deflater.block(&[("streamtype", "stdin"), ("x", &huge)]));
        let wire = control(SYN_STREAM, 0, &body);
        assert_eq!(
            decode_client(&wire, &[]).err(),
            Some(DecodeError::SpdyHeaders("header block too large"))
        );
    }
}
