//! What the two exec transports have in common: the channels of a remote
//! command, the pieces a decoder cuts the byte stream into, and its errors.
//!
//! A decoder reads one direction of an upgraded exec/attach connection and
//! reports [`Piece`]s in order. Every byte it is fed belongs to exactly one
//! piece's `raw` (a frame header, possibly gathered over several inputs, or a
//! stretch of payload), so a glue that must change the stream can rebuild it
//! from the pieces, and one that does not can leave the bytes alone.

/// A stream of the Kubernetes remote-command protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Stdin,
    Stdout,
    Stderr,
    /// The command's final `metav1.Status` (v4+), or an error text.
    Error,
    /// Terminal size changes: `{"Width":…,"Height":…}`.
    Resize,
}

impl Channel {
    /// The channel of a WebSocket message's first byte (`channel.k8s.io`
    /// numbering).
    pub fn from_websocket(byte: u8) -> Option<Channel> {
        match byte {
            0 => Some(Channel::Stdin),
            1 => Some(Channel::Stdout),
            2 => Some(Channel::Stderr),
            3 => Some(Channel::Error),
            4 => Some(Channel::Resize),
            _ => None,
        }
    }

    /// The WebSocket channel byte.
    pub fn websocket_byte(self) -> u8 {
        match self {
            Channel::Stdin => 0,
            Channel::Stdout => 1,
            Channel::Stderr => 2,
            Channel::Error => 3,
            Channel::Resize => 4,
        }
    }

    /// The channel a SPDY stream carries, by its `streamtype` header.
    pub fn from_stream_type(stream_type: &[u8]) -> Option<Channel> {
        match stream_type {
            b"stdin" => Some(Channel::Stdin),
            b"stdout" => Some(Channel::Stdout),
            b"stderr" => Some(Channel::Stderr),
            b"error" => Some(Channel::Error),
            b"resize" => Some(Channel::Resize),
            _ => None,
        }
    }
}

/// One piece of a decoded direction. `raw` is the wire bytes the piece covers.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A frame's header is complete (WebSocket header, SPDY frame header, or a
    /// whole SPDY control frame, which is small and read whole).
    FrameStart { raw: &'a [u8], frame: FrameInfo },
    /// Payload of the current data frame: `data` is what it carries for
    /// `channel` (unmasked; the WebSocket channel byte removed), `raw` the
    /// bytes as sent.
    Payload {
        raw: &'a [u8],
        channel: Option<Channel>,
        data: &'a [u8],
    },
    /// The current frame ended; the stream is at a frame boundary, `at`
    /// bytes into the input being fed.
    FrameEnd { at: usize },
    /// The sender closed `channel` (v5 close message, SPDY FIN or reset).
    ChannelClosed(Channel),
    /// The sender is closing the connection (WebSocket close frame, GOAWAY).
    ConnectionClosing,
}

/// What a frame header says, as far as rewriting needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameInfo {
    /// A frame that carries a channel's data (possibly of unknown channel
    /// when a WebSocket message continues or is not a data message).
    Data {
        channel: Option<Channel>,
        /// Payload bytes that follow (the WebSocket channel byte included).
        len: u64,
        /// SPDY: the stream id; WebSocket: 0.
        stream_id: u32,
        /// WebSocket FIN bit or SPDY FLAG_FIN.
        fin: bool,
        /// WebSocket: the frame's opcode; SPDY: 0.
        opcode: u8,
        /// WebSocket: the client's masking key.
        mask: Option<[u8; 4]>,
        /// WebSocket: this frame starts a message, so its payload begins
        /// with the channel byte.
        starts_message: bool,
    },
    /// Anything else: control frames of either protocol, passed as they are.
    Control,
}

/// Bytes a decoder could not make sense of: the session cannot be recorded
/// faithfully from here on, and the filter ends it rather than pass them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("WebSocket frame with reserved bits set (an extension gatehouse does not know)")]
    ReservedBits,
    #[error("WebSocket frame with unknown opcode {0}")]
    UnknownOpcode(u8),
    #[error("client WebSocket frame without a mask")]
    UnmaskedClientFrame,
    #[error("server WebSocket frame with a mask")]
    MaskedServerFrame,
    #[error("WebSocket control frame of {0} bytes or fragmented")]
    BadControlFrame(u64),
    #[error("WebSocket continuation frame outside a message, or a new message inside one")]
    BadFragmentation,
    #[error("WebSocket text message on an exec stream")]
    TextMessage,
    #[error("unknown exec channel {0}")]
    UnknownChannel(u8),
    #[error("WebSocket frame length does not fit the session (over {0} bytes)")]
    FrameTooLong(u64),
    #[error("SPDY frame of version {0}, not 3")]
    SpdyVersion(u16),
    #[error("SPDY control frame of {0} bytes is larger than gatehouse reads")]
    SpdyControlTooLong(u32),
    #[error("malformed SPDY {0} frame")]
    SpdyMalformed(&'static str),
    #[error("SPDY header block does not inflate: {0}")]
    SpdyHeaders(&'static str),
    #[error("SPDY stream type {0:?} is not an exec stream")]
    SpdyStreamType(String),
    #[error("SPDY data on stream {0}, which was never opened")]
    SpdyUnknownStream(u32),
    #[error("more SPDY streams than an exec session opens")]
    SpdyTooManyStreams,
}
