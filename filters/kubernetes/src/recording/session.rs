//! One recorded exec or attach session: both directions decoded, events
//! recorded, typed lines judged, and the user told what was refused.
//!
//! The glue hands over each body callback's bytes with the time and applies
//! the [`Output`]: bytes to put in place of the callback's (only when
//! something must change), records to emit, and whether to end the session.
//!
//! **A refused line never reaches the pod.** With `deny_commands`
//! configured, stdin frames are held until they are whole and re-sent after
//! the line editor saw them:
//! - on a terminal (`tty`), characters pass as they are typed, so the pod
//!   echoes them and tab completion and the prompt keep working, but the line
//!   end (CR) is held: an allowed line gets it, a refused one gets ^C
//!   instead, which makes the shell drop the line without running it. A line
//!   whose editing gatehouse cannot follow (arrow keys, tab, history, yank)
//!   is refused too: what the shell holds may not be what the filter read.
//! - without a terminal, nothing echoes and the program reads whole lines,
//!   so each line is held until its end and a refused one is dropped.
//!
//! The user is told in the next output the pod sends (after ^C, a shell
//! prints its prompt at once): a notice is put on stdout (stderr without a
//! terminal) at a frame boundary. The filter cannot write to the client on
//! its own.

use super::config::RecordingConfig;
use super::recorder::{CommandEntry, Limit, Recorder, SessionInfo};
use super::spdy::{self, SpdyDecoder, StreamMap};
use super::typed::{LineEditor, LineVerdict, Typed};
use super::websocket::{self, WebSocketDecoder};
use super::wire::{Channel, DecodeError, FrameInfo, Piece};
use std::sync::Arc;

/// Largest frame held whole (a stdin frame under `deny_commands`, an
/// output frame under `mask_live`); a larger one ends the session.
pub const MAX_HELD_FRAME: usize = 1 << 20;
/// Typed bytes recorded at once when no line ends.
const MAX_TYPED_RECORD: usize = 4 * 1024;
/// Output bytes after the last newline kept to recognise a password prompt.
const PROMPT_TAIL: usize = 128;
/// Largest resize message read.
const MAX_RESIZE: usize = 1024;
/// ETX: what a terminal's ^C sends.
const INTERRUPT: u8 = 0x03;

/// How the exec stream is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    WebSocket,
    Spdy,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::Spdy => "spdy",
        }
    }
}

/// What the glue does after a callback.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Put these bytes in place of the callback's.
    pub rewrite: Option<Vec<u8>>,
    /// Records to emit, in order.
    pub records: Vec<String>,
    /// End the session (reset the stream): a frame gatehouse cannot read, or
    /// the byte cap under `on_limit: end`.
    pub end: bool,
}

enum Decoders {
    WebSocket {
        client: WebSocketDecoder,
        server: WebSocketDecoder,
    },
    Spdy {
        client: SpdyDecoder,
        server: SpdyDecoder,
        streams: StreamMap,
    },
}

impl std::fmt::Debug for Decoders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decoders::WebSocket { .. } => "WebSocket",
            Decoders::Spdy { .. } => "Spdy",
        })
    }
}

impl Decoders {
    fn feed(
        &mut self,
        from_client: bool,
        input: &[u8],
        sink: &mut dyn FnMut(Piece<'_>),
    ) -> Result<(), DecodeError> {
        match self {
            Decoders::WebSocket { client, server } => {
                if from_client { client } else { server }.feed(input, sink)
            }
            Decoders::Spdy {
                client,
                server,
                streams,
            } => if from_client { client } else { server }.feed(input, streams, sink),
        }
    }

    fn at_boundary(&self, from_client: bool) -> bool {
        match self {
            Decoders::WebSocket { client, server } => {
                if from_client { client } else { server }.at_boundary()
            }
            Decoders::Spdy { client, server, .. } => {
                if from_client { client } else { server }.at_boundary()
            }
        }
    }

    /// A server-to-client message carrying `data` on `channel`; false when
    /// that channel has no stream.
    fn encode_notice(&self, channel: Channel, data: &[u8], out: &mut Vec<u8>) -> bool {
        match self {
            Decoders::WebSocket { .. } => {
                websocket::encode_channel_message(channel, data, None, out);
                true
            }
            Decoders::Spdy { streams, .. } => match streams.stream_of(channel) {
                Some(id) => {
                    spdy::encode_data_frame(id, false, data, out);
                    true
                }
                None => false,
            },
        }
    }
}

/// A data frame held whole to be sent again changed.
#[derive(Debug)]
struct Held {
    info: FrameInfo,
    data: Vec<u8>,
}

/// What the user typed, as it goes.
#[derive(Debug, Default)]
struct Input {
    editor: LineEditor,
    /// Bytes of the current line, for the recording.
    typed: Vec<u8>,
    line_start_us: u64,
    /// Without a terminal, under `deny_commands`: the current line's bytes,
    /// not yet sent.
    withheld: Vec<u8>,
    /// The output's last line, to recognise a password prompt.
    prompt_tail: Vec<u8>,
    /// Whether a password prompt was showing when the current line's first
    /// byte was typed.
    prompt_at_line_start: bool,
}

/// A recorded exec or attach session.
#[derive(Debug)]
pub struct ExecSession {
    decoders: Decoders,
    config: Arc<RecordingConfig>,
    recorder: Recorder,
    input: Input,
    tty: bool,
    /// Stdin frames are held and lines judged (`deny_commands` and stdin).
    enforce_lines: bool,
    /// Texts to show the user at the next server frame boundary.
    notices: Vec<Vec<u8>>,
    client_held: Option<Held>,
    server_held: Option<Held>,
    resize: Vec<u8>,
    ended: bool,
}

impl ExecSession {
    /// Starts a session once the upgrade was answered (101); the first
    /// record (`k8s.exec.session_start`) is in the returned output.
    pub fn start(
        info: SessionInfo,
        config: Arc<RecordingConfig>,
        transport: TransportKind,
        protocol: &str,
        now_us: u64,
    ) -> (ExecSession, Output) {
        let decoders = match transport {
            TransportKind::WebSocket => Decoders::WebSocket {
                client: WebSocketDecoder::new(websocket::Sender::Client),
                server: WebSocketDecoder::new(websocket::Sender::Server),
            },
            TransportKind::Spdy => Decoders::Spdy {
                client: SpdyDecoder::new(spdy::Sender::Client),
                server: SpdyDecoder::new(spdy::Sender::Server),
                streams: StreamMap::default(),
            },
        };
        let tty = info.tty;
        let enforce_lines = config.commands.is_active() && info.stdin;
        let mut recorder = Recorder::new(
            info,
            Arc::clone(&config),
            transport.as_str(),
            protocol,
            now_us,
        );
        let first = recorder.start();
        let session = ExecSession {
            decoders,
            config,
            recorder,
            input: Input::default(),
            tty,
            enforce_lines,
            notices: Vec::new(),
            client_held: None,
            server_held: None,
            resize: Vec::new(),
            ended: false,
        };
        (
            session,
            Output {
                records: vec![first],
                ..Output::default()
            },
        )
    }

    /// Whether the glue must hand over (and may have to replace) request
    /// bytes: false means it may pass them and still must call
    /// [`ExecSession::on_client`].
    pub fn rewrites_client(&self) -> bool {
        self.enforce_lines
    }

    /// Bytes from the user (stdin, resize, protocol frames).
    pub fn on_client(&mut self, input: &[u8], now_us: u64) -> Output {
        let mut output = Output::default();
        if self.ended {
            output.end = true;
            return output;
        }
        let rewriting = self.enforce_lines;
        let mut out = Vec::new();
        let mut frame_start = 0;
        let mut failure: Option<DecodeError> = None;
        let mut end = false;
        let Self {
            decoders,
            recorder,
            input: typed,
            client_held,
            notices,
            resize,
            config,
            tty,
            ..
        } = self;
        let lines = LineJudge {
            config,
            tty: *tty,
            enforce: rewriting,
        };
        let result = decoders.feed(true, input, &mut |piece| match piece {
            Piece::FrameStart { raw, frame } => {
                frame_start = out.len();
                let stdin = matches!(
                    frame,
                    FrameInfo::Data {
                        channel: Some(Channel::Stdin),
                        ..
                    }
                );
                if rewriting && stdin {
                    *client_held = Some(Held {
                        info: frame,
                        data: Vec::new(),
                    });
                } else if rewriting {
                    out.extend_from_slice(raw);
                }
            }
            Piece::Payload { raw, channel, data } => {
                if let Some(held) = client_held.as_mut() {
                    if held.data.len() + data.len() > MAX_HELD_FRAME {
                        failure.get_or_insert(DecodeError::FrameTooLong(MAX_HELD_FRAME as u64));
                    }
                    held.data.extend_from_slice(data);
                    return;
                }
                if rewriting {
                    out.extend_from_slice(raw);
                }
                match channel {
                    Some(Channel::Stdin) => {
                        let (_, limit) = lines.typed(
                            typed,
                            recorder,
                            notices,
                            data,
                            now_us,
                            &mut output.records,
                        );
                        end |= limit == Limit::EndSession;
                    }
                    Some(Channel::Resize) => {
                        let room = MAX_RESIZE.saturating_sub(resize.len());
                        resize.extend_from_slice(
                            data.get(..room.min(data.len())).unwrap_or_default(),
                        );
                    }
                    _ => {}
                }
            }
            Piece::FrameEnd { .. } => {
                if !resize.is_empty() {
                    recorder.resize(resize, now_us, &mut output.records);
                    resize.clear();
                }
                let Some(held) = client_held.take() else {
                    return;
                };
                let (mut forwarded, limit) = lines.typed(
                    typed,
                    recorder,
                    notices,
                    &held.data,
                    now_us,
                    &mut output.records,
                );
                end |= limit == Limit::EndSession;
                if let FrameInfo::Data {
                    fin: true,
                    stream_id,
                    ..
                } = held.info
                    && stream_id != 0
                {
                    // SPDY: the frame closes stdin; a last unterminated line goes with it.
                    forwarded.extend(lines.end_of_input(
                        typed,
                        recorder,
                        notices,
                        now_us,
                        &mut output.records,
                    ));
                }
                encode_like(&held.info, &forwarded, &mut out);
            }
            Piece::ChannelClosed(Channel::Stdin) => {
                let last =
                    lines.end_of_input(typed, recorder, notices, now_us, &mut output.records);
                if rewriting && !last.is_empty() && client_held.is_none() {
                    // WebSocket v5: the close signal was copied; the line goes before it.
                    let mut frame = Vec::new();
                    websocket::encode_channel_message(
                        Channel::Stdin,
                        &last,
                        Some(client_mask(&out, frame_start)),
                        &mut frame,
                    );
                    let at = frame_start.min(out.len());
                    out.splice(at..at, frame);
                }
            }
            Piece::ChannelClosed(_) | Piece::ConnectionClosing => {}
        });
        if let Err(error) = result {
            failure.get_or_insert(error);
        }
        if let Some(error) = failure {
            return self.fail(&error, now_us, output);
        }
        if rewriting {
            output.rewrite = Some(out);
        }
        if end {
            return self.end_by_limit(now_us, output);
        }
        output
    }

    /// Bytes from the pod (stdout, stderr, the status, protocol frames).
    pub fn on_server(&mut self, input: &[u8], now_us: u64) -> Output {
        let mut output = Output::default();
        if self.ended {
            output.end = true;
            return output;
        }
        let rewriting = self.config.mask_live;
        let notice_channel = if self.tty || !self.recorder.info().stdin {
            Channel::Stdout
        } else {
            Channel::Stderr
        };
        let texts = std::mem::take(&mut self.notices);
        let mut notice = Vec::new();
        for text in &texts {
            if !self
                .decoders
                .encode_notice(notice_channel, text, &mut notice)
            {
                self.decoders
                    .encode_notice(Channel::Stdout, text, &mut notice);
            }
        }
        let mut injected = texts.is_empty();
        let mut inject_at = None;
        let mut out = Vec::new();
        if !injected && self.decoders.at_boundary(false) {
            for text in &texts {
                self.recorder.shown(text, now_us);
            }
            if rewriting {
                out.append(&mut notice);
            } else {
                inject_at = Some(0);
            }
            injected = true;
        }
        let mut failure: Option<DecodeError> = None;
        let mut end = false;
        let Self {
            decoders,
            recorder,
            input: typed,
            server_held,
            ..
        } = self;
        let result = decoders.feed(false, input, &mut |piece| match piece {
            Piece::FrameStart { raw, frame } => {
                let output_frame = matches!(
                    frame,
                    FrameInfo::Data {
                        channel: Some(Channel::Stdout | Channel::Stderr),
                        ..
                    }
                );
                if rewriting && output_frame {
                    *server_held = Some(Held {
                        info: frame,
                        data: Vec::new(),
                    });
                } else if rewriting {
                    out.extend_from_slice(raw);
                }
            }
            Piece::Payload { raw, channel, data } => {
                match channel {
                    Some(channel @ (Channel::Stdout | Channel::Stderr)) => {
                        end |= recorder.output(channel, data, now_us, &mut output.records)
                            == Limit::EndSession;
                        note_prompt(&mut typed.prompt_tail, data);
                    }
                    Some(Channel::Error) => recorder.status(data),
                    _ => {}
                }
                match server_held.as_mut() {
                    Some(held) => {
                        if held.data.len() + data.len() > MAX_HELD_FRAME {
                            failure.get_or_insert(DecodeError::FrameTooLong(MAX_HELD_FRAME as u64));
                        }
                        held.data.extend_from_slice(data);
                    }
                    None if rewriting => out.extend_from_slice(raw),
                    None => {}
                }
            }
            Piece::FrameEnd { at } => {
                if let Some(held) = server_held.take() {
                    let (masked, _) = recorder.mask(&held.data);
                    encode_like(&held.info, &masked, &mut out);
                }
                if !injected {
                    for text in &texts {
                        recorder.shown(text, now_us);
                    }
                    if rewriting {
                        out.append(&mut notice);
                    } else {
                        inject_at = Some(at);
                    }
                    injected = true;
                }
            }
            Piece::ChannelClosed(Channel::Error) => {
                recorder.status_complete(now_us, &mut output.records);
            }
            Piece::ChannelClosed(_) | Piece::ConnectionClosing => {}
        });
        if let Err(error) = result {
            failure.get_or_insert(error);
        }
        if let Some(error) = failure {
            return self.fail(&error, now_us, output);
        }
        if rewriting {
            output.rewrite = Some(out);
        } else if let Some(at) = inject_at {
            let mut with_notice = Vec::with_capacity(input.len() + notice.len());
            with_notice.extend_from_slice(input.get(..at).unwrap_or_default());
            with_notice.extend_from_slice(&notice);
            with_notice.extend_from_slice(input.get(at..).unwrap_or_default());
            output.rewrite = Some(with_notice);
        }
        if !injected {
            // No frame boundary in these bytes: tell the user at the next one.
            self.notices = texts;
        }
        if end {
            return self.end_by_limit(now_us, output);
        }
        output
    }

    /// The periodic check (about once a second): records prompts that waited
    /// and chunks that aged.
    pub fn on_tick(&mut self, now_us: u64) -> Vec<String> {
        let mut records = Vec::new();
        if !self.ended {
            let typing = !self.input.editor.is_empty();
            self.recorder.tick(typing, now_us, &mut records);
        }
        records
    }

    /// The stream ended: the last records. A line still withheld never
    /// reached the pod and is not sent now.
    pub fn finish(&mut self, now_us: u64) -> Vec<String> {
        let mut records = Vec::new();
        self.ended = true;
        self.recorder.finish("closed", None, now_us, &mut records);
        records
    }

    /// Ends the session before any byte passed: `reason` says why.
    pub fn abort(&mut self, reason: &str, now_us: u64) -> Vec<String> {
        let mut records = Vec::new();
        self.ended = true;
        self.recorder
            .finish("protocol_error", Some(reason), now_us, &mut records);
        records
    }

    pub fn is_finished(&self) -> bool {
        self.recorder.is_finished()
    }

    fn fail(&mut self, error: &DecodeError, now_us: u64, mut output: Output) -> Output {
        self.ended = true;
        let detail = error.to_string();
        self.recorder
            .finish("protocol_error", Some(&detail), now_us, &mut output.records);
        output.rewrite = None;
        output.end = true;
        output
    }

    fn end_by_limit(&mut self, now_us: u64, mut output: Output) -> Output {
        self.ended = true;
        self.recorder
            .finish("byte_limit", None, now_us, &mut output.records);
        output.end = true;
        output
    }
}

/// Line-level decisions, shared by both ways stdin arrives.
struct LineJudge<'a> {
    config: &'a RecordingConfig,
    tty: bool,
    enforce: bool,
}

impl LineJudge<'_> {
    /// Feeds typed bytes: records lines and commands; under `deny_commands`,
    /// returns what may go on to the pod.
    fn typed(
        &self,
        input: &mut Input,
        recorder: &mut Recorder,
        notices: &mut Vec<Vec<u8>>,
        data: &[u8],
        now_us: u64,
        records: &mut Vec<String>,
    ) -> (Vec<u8>, Limit) {
        let mut forwarded = Vec::with_capacity(data.len());
        let mut limit = Limit::Within;
        for &byte in data {
            if input.typed.is_empty() {
                input.line_start_us = now_us;
                input.prompt_at_line_start = is_password_prompt(&input.prompt_tail);
            }
            input.typed.push(byte);
            match input.editor.push(byte) {
                Typed::Editing | Typed::Continued => {
                    if input.typed.len() >= MAX_TYPED_RECORD {
                        let typed = std::mem::take(&mut input.typed);
                        let secret = input.typing_a_secret();
                        if recorder.input(&typed, secret, input.line_start_us, now_us, records)
                            == Limit::EndSession
                        {
                            limit = Limit::EndSession;
                        }
                    }
                    if self.tty {
                        forwarded.push(byte);
                    } else {
                        input.withheld.push(byte);
                    }
                }
                Typed::Line(line) => {
                    let verdict = if line.cancelled {
                        LineVerdict::Allow
                    } else {
                        self.config.commands.judge(&line)
                    };
                    let secret = input.typing_a_secret();
                    let typed = std::mem::take(&mut input.typed);
                    if recorder.input(&typed, secret, input.line_start_us, now_us, records)
                        == Limit::EndSession
                    {
                        limit = Limit::EndSession;
                    }
                    let reason = match &verdict {
                        LineVerdict::Allow => None,
                        LineVerdict::Deny { pattern } => Some(format!("matches deny pattern \"{pattern}\"")),
                        LineVerdict::Uncertain => Some(
                            "edited in a way gatehouse cannot follow (arrow keys, tab, history); retype it"
                                .to_owned(),
                        ),
                    };
                    recorder.command(
                        &CommandEntry {
                            at_us: recorder.offset(now_us),
                            text: &line.text,
                            raw: &line.raw,
                            uncertain: line.uncertain,
                            cancelled: line.cancelled,
                            secret,
                            refused: reason.as_deref(),
                        },
                        records,
                    );
                    match reason {
                        None => {
                            forwarded.append(&mut input.withheld);
                            forwarded.push(byte);
                        }
                        Some(reason) if self.enforce => {
                            input.withheld.clear();
                            if self.tty {
                                forwarded.push(INTERRUPT);
                            }
                            let shown = notice_text(self.tty, &line.text, secret, &reason);
                            recorder.marker(&format!("refused: {reason}"), now_us, records);
                            notices.push(shown);
                        }
                        Some(_) => {
                            forwarded.append(&mut input.withheld);
                            forwarded.push(byte);
                        }
                    }
                }
            }
        }
        (forwarded, limit)
    }

    /// Stdin closed: a last unterminated line is judged; what may be sent.
    fn end_of_input(
        &self,
        input: &mut Input,
        recorder: &mut Recorder,
        notices: &mut Vec<Vec<u8>>,
        now_us: u64,
        records: &mut Vec<String>,
    ) -> Vec<u8> {
        if input.editor.is_empty() {
            return std::mem::take(&mut input.withheld);
        }
        // The line ends here: judge it as if its terminator had been typed,
        // without sending one.
        let (mut forwarded, _) = self.typed(input, recorder, notices, b"\n", now_us, records);
        forwarded.pop_if(|b| *b == b'\n');
        if self.tty {
            forwarded.clear();
        }
        forwarded
    }
}

/// What the user is shown about a refused line.
fn notice_text(tty: bool, line: &str, secret: bool, reason: &str) -> Vec<u8> {
    let eol = if tty { "\r\n" } else { "\n" };
    let shown = if secret { "****" } else { line };
    let mut text = String::new();
    if tty {
        text.push_str(eol);
    }
    text.push_str(&format!(
        "gatehouse: refused \"{shown}\": {reason}; it was not run{eol}"
    ));
    text.into_bytes()
}

impl Input {
    /// Whether the line being typed answers a password prompt: the prompt
    /// was showing when its first byte was typed, or it shows now and is not
    /// merely the echo of what is being typed (a command line such as
    /// `read -s -p Password: p`, echoed while it is typed, ends in
    /// "Password:" for a moment).
    fn typing_a_secret(&self) -> bool {
        self.prompt_at_line_start
            || (is_password_prompt(&self.prompt_tail)
                && !echoes_typed(&self.prompt_tail, &self.typed))
    }
}

/// Whether the output's last line ends with a prefix of the typed bytes,
/// that is, with their echo, at least as long as a prompt word.
fn echoes_typed(tail: &[u8], typed: &[u8]) -> bool {
    const SHORTEST_PROMPT: usize = "token:".len();
    let tail = tail.trim_ascii_end();
    (SHORTEST_PROMPT..=typed.len().min(tail.len()))
        .any(|len| typed.get(..len).is_some_and(|echo| tail.ends_with(echo)))
}

/// Whether the output's last line asks for a password.
fn is_password_prompt(tail: &[u8]) -> bool {
    let text = String::from_utf8_lossy(tail).to_ascii_lowercase();
    let text = text.trim_end();
    text.ends_with(':')
        && ["password", "passphrase", "passcode", "secret", "token"]
            .iter()
            .any(|word| text.contains(word))
}

/// Keeps the output's last line (bounded).
fn note_prompt(tail: &mut Vec<u8>, data: &[u8]) {
    match data.iter().rposition(|b| *b == b'\n') {
        Some(newline) => {
            tail.clear();
            tail.extend_from_slice(data.get(newline + 1..).unwrap_or_default());
        }
        None => tail.extend_from_slice(data),
    }
    if tail.len() > PROMPT_TAIL {
        tail.drain(..tail.len() - PROMPT_TAIL);
    }
}

/// The client's masking key of the frame written at `frame_start` (a
/// WebSocket client frame must be masked; any key will do, reusing one keeps
/// the connection's look).
fn client_mask(out: &[u8], frame_start: usize) -> [u8; 4] {
    let Some([_, second, rest @ ..]) = out.get(frame_start..) else {
        return [0; 4];
    };
    let skip = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    rest.get(skip..skip + 4)
        .and_then(|key| key.try_into().ok())
        .unwrap_or([0; 4])
}

/// Encodes `data` as a frame like `info` (same channel, stream, flags, mask).
/// A frame left with nothing to carry is dropped when dropping it changes
/// nothing else (it neither continues nor ends a message or a stream).
fn encode_like(info: &FrameInfo, data: &[u8], out: &mut Vec<u8>) {
    let FrameInfo::Data {
        channel,
        stream_id,
        fin,
        opcode,
        mask,
        starts_message,
        ..
    } = *info
    else {
        return;
    };
    if stream_id != 0 {
        if data.is_empty() && !fin {
            return;
        }
        spdy::encode_data_frame(stream_id, fin, data, out);
        return;
    }
    let Some(channel) = channel else {
        return;
    };
    if starts_message {
        if data.is_empty() && fin {
            return;
        }
        let mut payload = Vec::with_capacity(data.len() + 1);
        payload.push(channel.websocket_byte());
        payload.extend_from_slice(data);
        websocket::encode_frame(fin, opcode, mask, &payload, out);
    } else {
        websocket::encode_frame(fin, opcode, mask, data, out);
    }
}
