//! WebSocket framing (RFC 6455) of the Kubernetes channel protocols
//! (`v4.channel.k8s.io`, `v5.channel.k8s.io` and the older `channel.k8s.io`
//! versions): each binary message starts with its channel byte (0 stdin,
//! 1 stdout, 2 stderr, 3 error, 4 resize); v5 adds 255, a close signal whose
//! next byte is the channel being closed.
//!
//! The decoder streams: payload is reported as it arrives, never held, so a
//! large frame costs no memory. Only a frame header (at most 14 bytes, plus
//! the channel byte of a message's first frame) is gathered across inputs.
//! Text messages (the `base64.channel.k8s.io` protocols) and extensions
//! (reserved bits) are refused: gatehouse would not know what they carry.

use super::wire::{Channel, DecodeError, FrameInfo, Piece};

const OPCODE_CONTINUATION: u8 = 0x0;
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xa;
/// v5's close signal in place of a channel byte.
const CLOSE_SIGNAL: u8 = 255;
/// Largest header: 2 bytes, 8 of extended length, 4 of mask, and the
/// channel byte of a message's first frame.
const MAX_HEADER: usize = 15;

/// Which end sent the bytes: clients mask every frame, servers never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Client,
    Server,
}

/// One direction of a WebSocket exec stream.
#[derive(Debug)]
pub struct WebSocketDecoder {
    sender: Sender,
    header: [u8; MAX_HEADER],
    have: usize,
    frame: Option<Frame>,
    /// The data message in progress across fragments.
    message: Option<Message>,
    scratch: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    remaining: u64,
    mask: Option<[u8; 4]>,
    /// Payload bytes already read (the channel byte included): the mask's phase.
    offset: u64,
    /// What the payload carries; `None` for control frames.
    data: Option<MessageChannel>,
    fin: bool,
    closes_connection: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageChannel {
    Known(Channel),
    /// A v5 close signal: the payload names the channel being closed.
    CloseSignal,
    /// An empty message: no channel byte, nothing carried.
    Empty,
}

#[derive(Debug, Clone, Copy)]
struct Message {
    channel: MessageChannel,
}

impl WebSocketDecoder {
    pub fn new(sender: Sender) -> Self {
        Self {
            sender,
            header: [0; MAX_HEADER],
            have: 0,
            frame: None,
            message: None,
            scratch: Vec::new(),
        }
    }

    /// Whether the stream is between frames (nothing of the next one read).
    pub fn at_boundary(&self) -> bool {
        self.frame.is_none() && self.have == 0
    }

    /// Decodes `input`, reporting its pieces to `sink` in order.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        sink: &mut dyn FnMut(Piece<'_>),
    ) -> Result<(), DecodeError> {
        let total = input.len();
        while !input.is_empty() {
            let Some(frame) = self.frame.as_mut() else {
                input = self.read_header(input, total, sink)?;
                continue;
            };
            let take = usize::try_from(frame.remaining)
                .unwrap_or(usize::MAX)
                .min(input.len());
            let (raw, rest) = input.split_at(take);
            input = rest;
            // Server frames are not masked: their payload is read in place.
            let data: &[u8] = match frame.mask {
                Some(mask) => {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(raw);
                    unmask(&mut self.scratch, mask, frame.offset);
                    &self.scratch
                }
                None => raw,
            };
            frame.offset += take as u64;
            frame.remaining -= take as u64;
            let channel = match frame.data {
                Some(MessageChannel::Known(channel)) => Some(channel),
                _ => None,
            };
            let closing = match frame.data {
                Some(MessageChannel::CloseSignal) => {
                    data.first().copied().and_then(Channel::from_websocket)
                }
                _ => None,
            };
            sink(Piece::Payload { raw, channel, data });
            if let Some(channel) = closing {
                sink(Piece::ChannelClosed(channel));
            }
            self.end_frame_if_done(total - input.len(), sink);
        }
        Ok(())
    }

    /// Gathers header bytes; reports the frame once its header is whole.
    fn read_header<'i>(
        &mut self,
        input: &'i [u8],
        total: usize,
        sink: &mut dyn FnMut(Piece<'_>),
    ) -> Result<&'i [u8], DecodeError> {
        let mut input = input;
        loop {
            let need = self.header_len();
            if self.have >= need {
                break;
            }
            let Some((&byte, rest)) = input.split_first() else {
                return Ok(input);
            };
            if let Some(slot) = self.header.get_mut(self.have) {
                *slot = byte;
            }
            self.have += 1;
            input = rest;
        }
        let frame = self.parse_header()?;
        let header = self.header.get(..self.have).unwrap_or_default();
        self.have = 0;
        let info = match frame.data {
            Some(channel) => FrameInfo::Data {
                channel: match channel {
                    MessageChannel::Known(channel) => Some(channel),
                    MessageChannel::CloseSignal | MessageChannel::Empty => None,
                },
                len: frame.offset + frame.remaining,
                stream_id: 0,
                fin: frame.fin,
                opcode: header.first().map_or(0, |b| b & 0x0f),
                mask: frame.mask,
                starts_message: header.first().is_some_and(|b| b & 0x0f != 0),
            },
            None => FrameInfo::Control,
        };
        sink(Piece::FrameStart {
            raw: header,
            frame: info,
        });
        if frame.closes_connection {
            sink(Piece::ConnectionClosing);
        }
        self.frame = Some(frame);
        self.end_frame_if_done(total - input.len(), sink);
        Ok(input)
    }

    /// Header bytes needed given what has been read so far.
    fn header_len(&self) -> usize {
        let [first, second, ..] = self.header;
        if self.have < 2 {
            return 2;
        }
        let extended = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if second & 0x80 != 0 { 4 } else { 0 };
        let base = 2 + extended + mask;
        // A message's first frame: its channel byte belongs to the header,
        // so the frame is reported knowing its channel.
        let opcode = first & 0x0f;
        let starts_message = opcode == OPCODE_BINARY || opcode == OPCODE_TEXT;
        if starts_message && self.have >= base && payload_len(&self.header, second) > 0 {
            base + 1
        } else {
            base
        }
    }

    fn parse_header(&mut self) -> Result<Frame, DecodeError> {
        let [first, second, ..] = self.header;
        if first & 0x70 != 0 {
            return Err(DecodeError::ReservedBits);
        }
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0f;
        let masked = second & 0x80 != 0;
        match (self.sender, masked) {
            (Sender::Client, false) => return Err(DecodeError::UnmaskedClientFrame),
            (Sender::Server, true) => return Err(DecodeError::MaskedServerFrame),
            _ => {}
        }
        let len = payload_len(&self.header, second);
        if len >> 63 != 0 {
            return Err(DecodeError::FrameTooLong(1 << 63));
        }
        let extended = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = masked.then(|| {
            let at = 2 + extended;
            let mut key = [0u8; 4];
            for (i, slot) in key.iter_mut().enumerate() {
                *slot = self.header.get(at + i).copied().unwrap_or_default();
            }
            key
        });
        let mut frame = Frame {
            remaining: len,
            mask,
            offset: 0,
            data: None,
            fin,
            closes_connection: false,
        };
        match opcode {
            OPCODE_CLOSE | OPCODE_PING | OPCODE_PONG => {
                if !fin || len > 125 {
                    return Err(DecodeError::BadControlFrame(len));
                }
                frame.closes_connection = opcode == OPCODE_CLOSE;
            }
            OPCODE_TEXT => return Err(DecodeError::TextMessage),
            OPCODE_BINARY => {
                if self.message.is_some() {
                    return Err(DecodeError::BadFragmentation);
                }
                let channel = if len == 0 {
                    if !fin {
                        // The channel byte would come in a later fragment.
                        return Err(DecodeError::BadFragmentation);
                    }
                    MessageChannel::Empty
                } else {
                    let at = 2 + extended + if masked { 4 } else { 0 };
                    let mut byte = self.header.get(at).copied().unwrap_or_default();
                    if let Some([key, ..]) = mask {
                        byte ^= key;
                    }
                    frame.offset = 1;
                    frame.remaining = len - 1;
                    match byte {
                        CLOSE_SIGNAL => MessageChannel::CloseSignal,
                        other => MessageChannel::Known(
                            Channel::from_websocket(other)
                                .ok_or(DecodeError::UnknownChannel(other))?,
                        ),
                    }
                };
                frame.data = Some(channel);
                if !fin {
                    self.message = Some(Message { channel });
                }
            }
            OPCODE_CONTINUATION => {
                let Some(message) = self.message else {
                    return Err(DecodeError::BadFragmentation);
                };
                frame.data = Some(message.channel);
                if fin {
                    self.message = None;
                }
            }
            other => return Err(DecodeError::UnknownOpcode(other)),
        }
        Ok(frame)
    }

    fn end_frame_if_done(&mut self, at: usize, sink: &mut dyn FnMut(Piece<'_>)) {
        if self.frame.is_some_and(|frame| frame.remaining == 0) {
            self.frame = None;
            sink(Piece::FrameEnd { at });
        }
    }
}

/// The payload length a complete base header announces.
fn payload_len(header: &[u8; MAX_HEADER], second: u8) -> u64 {
    match second & 0x7f {
        126 => {
            let [_, _, high, low, ..] = *header;
            u64::from(u16::from_be_bytes([high, low]))
        }
        127 => {
            let [_, _, a, b, c, d, e, f, g, h, ..] = *header;
            u64::from_be_bytes([a, b, c, d, e, f, g, h])
        }
        n => u64::from(n),
    }
}

/// XORs `data` with the masking key, starting at payload offset `offset`.
fn unmask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let phase = (offset % 4) as usize;
    for (byte, key) in data.iter_mut().zip(mask.iter().cycle().skip(phase)) {
        *byte ^= key;
    }
}

/// Encodes one frame: `payload` is the whole payload (channel byte included
/// when the frame starts a message); masked with `mask` when given.
pub fn encode_frame(
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            let start = out.len();
            out.extend_from_slice(payload);
            if let Some(tail) = out.get_mut(start..) {
                unmask(tail, key, 0);
            }
        }
        None => out.extend_from_slice(payload),
    }
}

/// A whole binary message on `channel` (server to client: unmasked).
pub fn encode_channel_message(
    channel: Channel,
    data: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut Vec<u8>,
) {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(channel.websocket_byte());
    payload.extend_from_slice(data);
    encode_frame(true, OPCODE_BINARY, mask, &payload, out);
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    /// What a decoder reports, owned, with payload joined per channel.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Seen {
        data: Vec<(Option<Channel>, Vec<u8>)>,
        closed: Vec<Channel>,
        frames: usize,
        closing: bool,
        raw: Vec<u8>,
    }

    fn decode_in_parts(sender: Sender, wire: &[u8], cuts: &[usize]) -> Result<Seen, DecodeError> {
        let mut decoder = WebSocketDecoder::new(sender);
        let mut seen = Seen::default();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
            decoder.feed(&wire[start..cut], &mut |piece| match piece {
                Piece::FrameStart { raw, .. } => seen.raw.extend_from_slice(raw),
                Piece::Payload { raw, channel, data } => {
                    seen.raw.extend_from_slice(raw);
                    if data.is_empty() {
                        return;
                    }
                    match seen.data.last_mut() {
                        Some((last, bytes)) if *last == channel => bytes.extend_from_slice(data),
                        _ => seen.data.push((channel, data.to_vec())),
                    }
                }
                Piece::FrameEnd { .. } => seen.frames += 1,
                Piece::ChannelClosed(channel) => seen.closed.push(channel),
                Piece::ConnectionClosing => seen.closing = true,
            })?;
            start = cut;
        }
        Ok(seen)
    }

    /// A server session as the stand-in writes it and a client's masked input.
    fn server_stream() -> Vec<u8> {
        let mut wire = Vec::new();
        encode_channel_message(Channel::Stdout, b"$ ", None, &mut wire);
        encode_channel_message(Channel::Stdout, &vec![b'x'; 300], None, &mut wire);
        encode_channel_message(Channel::Stderr, b"oops\n", None, &mut wire);
        encode_channel_message(
            Channel::Error,
            br#"{"metadata":{},"status":"Success"}"#,
            None,
            &mut wire,
        );
        encode_frame(true, OPCODE_CLOSE, None, &1000u16.to_be_bytes(), &mut wire);
        wire
    }

    fn client_stream() -> Vec<u8> {
        let mut wire = Vec::new();
        let key = Some([0x37, 0xfa, 0x21, 0x3d]);
        encode_channel_message(
            Channel::Resize,
            br#"{"Width":80,"Height":24}"#,
            key,
            &mut wire,
        );
        encode_channel_message(Channel::Stdin, b"l", key, &mut wire);
        // "s\r" fragmented into two frames: the channel byte only in the first.
        encode_frame(false, OPCODE_BINARY, key, &[0, b's'], &mut wire);
        encode_frame(true, OPCODE_PING, key, b"p", &mut wire);
        encode_frame(true, OPCODE_CONTINUATION, key, b"\r", &mut wire);
        // v5: close stdin.
        encode_frame(true, OPCODE_BINARY, key, &[CLOSE_SIGNAL, 0], &mut wire);
        wire
    }

    #[test]
    fn server_messages_decode_to_their_channels_at_every_split_point() {
        let wire = server_stream();
        let whole = decode_in_parts(Sender::Server, &wire, &[]).unwrap();
        assert_eq!(
            whole.data,
            vec![
                (
                    Some(Channel::Stdout),
                    [b"$ ".to_vec(), vec![b'x'; 300]].concat()
                ),
                (Some(Channel::Stderr), b"oops\n".to_vec()),
                (
                    Some(Channel::Error),
                    br#"{"metadata":{},"status":"Success"}"#.to_vec()
                ),
                (None, 1000u16.to_be_bytes().to_vec()),
            ]
        );
        assert_eq!(whole.frames, 5);
        assert!(whole.closing);
        assert_eq!(whole.raw, wire, "pieces cover every byte once");
        for cut in 0..=wire.len() {
            assert_eq!(
                decode_in_parts(Sender::Server, &wire, &[cut]).unwrap(),
                whole,
                "cut at {cut}"
            );
        }
        let every_byte: Vec<usize> = (1..wire.len()).collect();
        assert_eq!(
            decode_in_parts(Sender::Server, &wire, &every_byte).unwrap(),
            whole
        );
    }

    #[test]
    fn masked_client_fragments_and_close_signals_decode_at_every_split_point() {
        let wire = client_stream();
        let whole = decode_in_parts(Sender::Client, &wire, &[]).unwrap();
        assert_eq!(
            whole.data,
            vec![
                (
                    Some(Channel::Resize),
                    br#"{"Width":80,"Height":24}"#.to_vec()
                ),
                (Some(Channel::Stdin), b"ls".to_vec()),
                (None, b"p".to_vec()),
                (Some(Channel::Stdin), b"\r".to_vec()),
                (None, vec![0]),
            ]
        );
        assert_eq!(whole.closed, vec![Channel::Stdin]);
        assert_eq!(whole.raw, wire);
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                assert_eq!(
                    decode_in_parts(Sender::Client, &wire, &[a, b]).unwrap(),
                    whole,
                    "cuts at {a} and {b}"
                );
            }
        }
    }

    #[test]
    fn long_lengths_use_both_extended_forms() {
        for len in [125usize, 126, 65_535, 65_536, 70_000] {
            let mut wire = Vec::new();
            encode_channel_message(Channel::Stdout, &vec![7u8; len], None, &mut wire);
            let seen = decode_in_parts(Sender::Server, &wire, &[1, 3, 9]).unwrap();
            assert_eq!(
                seen.data,
                vec![(Some(Channel::Stdout), vec![7u8; len])],
                "{len}"
            );
        }
    }

    #[test]
    fn hostile_frames_are_refused() {
        let key = Some([1, 2, 3, 4]);
        let cases: Vec<(Sender, Vec<u8>, DecodeError)> = vec![
            (
                Sender::Client,
                vec![0x82, 0x01, 0x00],
                DecodeError::UnmaskedClientFrame,
            ),
            (
                Sender::Server,
                vec![0x82, 0x81, 0, 0, 0, 0, 1],
                DecodeError::MaskedServerFrame,
            ),
            (
                Sender::Server,
                vec![0xc2, 0x01, 0x01],
                DecodeError::ReservedBits,
            ),
            (
                Sender::Server,
                vec![0x81, 0x01, 0x01],
                DecodeError::TextMessage,
            ),
            (
                Sender::Server,
                vec![0x83, 0x00],
                DecodeError::UnknownOpcode(3),
            ),
            (
                Sender::Server,
                vec![0x80, 0x01, 0x01],
                DecodeError::BadFragmentation,
            ),
            (
                Sender::Server,
                vec![0x82, 0x01, 0x09],
                DecodeError::UnknownChannel(9),
            ),
            (
                Sender::Server,
                vec![0x09, 0x00],
                DecodeError::BadControlFrame(0),
            ),
            (
                Sender::Server,
                [vec![0x82, 127, 0x80], vec![0; 7], vec![1]].concat(),
                DecodeError::FrameTooLong(1 << 63),
            ),
            (
                Sender::Server,
                vec![0x02, 0x00],
                DecodeError::BadFragmentation,
            ),
        ];
        for (sender, wire, error) in cases {
            assert_eq!(
                decode_in_parts(sender, &wire, &[]),
                Err(error.clone()),
                "{wire:?}"
            );
        }
        // A new message while one is open.
        let mut wire = Vec::new();
        encode_frame(false, OPCODE_BINARY, key, &[0, b'a'], &mut wire);
        encode_frame(true, OPCODE_BINARY, key, &[0, b'b'], &mut wire);
        assert_eq!(
            decode_in_parts(Sender::Client, &wire, &[]),
            Err(DecodeError::BadFragmentation)
        );
    }

    #[test]
    fn boundaries_are_known_between_frames_only() {
        let wire = server_stream();
        let mut decoder = WebSocketDecoder::new(Sender::Server);
        assert!(decoder.at_boundary());
        decoder.feed(&wire[..1], &mut |_| {}).unwrap();
        assert!(!decoder.at_boundary());
        decoder.feed(&wire[1..5], &mut |_| {}).unwrap();
        assert!(decoder.at_boundary(), "\"$ \" is one 5-byte frame");
    }
}
