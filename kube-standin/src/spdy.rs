//! exec and attach over SPDY/3.1, as kubectl speaks it before 1.30 or with
//! `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`: the client opens a stream per
//! channel (SYN_STREAM with a `streamtype` header), the server answers each
//! with a SYN_REPLY, and data frames carry the stream id. Header blocks are
//! zlib streams primed with SPDY/3's dictionary, one per direction; this
//! side inflates and deflates them with flate2 (zlib-rs), independently of
//! the filter's own decoder.
//!
//! `KUBE_STANDIN_CAPTURE_DIR`, when set, receives each session's client bytes
//! (`spdy-<n>-client.bin`), for test fixtures.

use crate::exec::{ExecSpec, MAX_OUTPUT_FRAME, Program, exit_status};
use crate::shell::ShellOutput;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol versions served, in preference order (v5 is WebSocket only).
pub const PROTOCOLS: [&str; 1] = ["v4.channel.k8s.io"];
/// SPDY/3's header dictionary (the SPDY/3 specification, §2.6.10.1).
const DICTIONARY: &[u8] = include_bytes!("spdy3-dictionary.bin");
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 1;
/// Largest frame read.
const MAX_FRAME: usize = 1 << 20;
/// How long to wait for the client to hang up after the status.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

static CAPTURES: AtomicU32 = AtomicU32::new(0);

/// Picks the protocol from the client's `X-Stream-Protocol-Version` values.
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    let offered: Vec<String> = offered
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_ascii_lowercase())
        .collect();
    PROTOCOLS
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p))
}

/// A SPDY frame as read.
enum Frame {
    Control {
        kind: u16,
        body: Vec<u8>,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
}

/// The server's half of a SPDY exec session.
struct Connection<S> {
    io: S,
    inflate: Decompress,
    deflate: Compress,
    primed: bool,
    streams: BTreeMap<u32, String>,
    capture: Option<std::fs::File>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    async fn read_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            anyhow::bail!("SPDY frame of {len} bytes is too large");
        }
        let mut body = vec![0u8; len];
        self.io.read_exact(&mut body).await?;
        if let Some(file) = self.capture.as_mut() {
            use std::io::Write as _;
            let _ = file.write_all(&head);
            let _ = file.write_all(&body);
        }
        Ok(Some(if head[0] & 0x80 != 0 {
            Frame::Control {
                kind: u16::from_be_bytes([head[2], head[3]]),
                body,
            }
        } else {
            Frame::Data {
                stream: u32::from_be_bytes([head[0] & 0x7f, head[1], head[2], head[3]]),
                fin: head[4] & FLAG_FIN != 0,
                data: body,
            }
        }))
    }

    /// Inflates one client header block; its `streamtype`.
    fn stream_type(&mut self, block: &[u8]) -> anyhow::Result<String> {
        let mut plain = Vec::with_capacity(4096);
        let mut input = block;
        loop {
            let before = (self.inflate.total_in(), self.inflate.total_out());
            let status = match self
                .inflate
                .decompress_vec(input, &mut plain, FlushDecompress::Sync)
            {
                Err(e) if e.needs_dictionary().is_some() && !self.primed => {
                    self.inflate.set_dictionary(DICTIONARY)?;
                    self.primed = true;
                    Status::Ok
                }
                other => other?,
            };
            let read = (self.inflate.total_in() - before.0) as usize;
            input = input.get(read..).unwrap_or_default();
            if plain.len() == plain.capacity() {
                plain.reserve(4096);
                continue;
            }
            if input.is_empty() || (status == Status::BufError && read == 0) {
                break;
            }
        }
        let mut fields = plain.get(4..).unwrap_or_default();
        let mut take = || -> Option<Vec<u8>> {
            let len = u32::from_be_bytes(fields.get(..4)?.try_into().ok()?) as usize;
            let value = fields.get(4..4 + len)?.to_vec();
            fields = fields.get(4 + len..)?;
            Some(value)
        };
        while let (Some(name), Some(value)) = (take(), take()) {
            if name == b"streamtype" {
                return Ok(String::from_utf8_lossy(&value).into_owned());
            }
        }
        anyhow::bail!("SYN_STREAM without a streamtype header")
    }

    /// A header block with no headers, deflated in this direction's stream.
    fn empty_header_block(&mut self) -> anyhow::Result<Vec<u8>> {
        if self.deflate.total_in() == 0 {
            self.deflate.set_dictionary(DICTIONARY)?;
        }
        let mut out = Vec::with_capacity(64);
        self.deflate
            .compress_vec(&0u32.to_be_bytes(), &mut out, FlushCompress::Sync)?;
        Ok(out)
    }

    async fn control(&mut self, kind: u16, flags: u8, body: &[u8]) -> anyhow::Result<()> {
        let mut frame = vec![0x80, 3];
        frame.extend_from_slice(&kind.to_be_bytes());
        let len = (body.len() as u32).to_be_bytes();
        frame.extend_from_slice(&[flags, len[1], len[2], len[3]]);
        frame.extend_from_slice(body);
        self.io.write_all(&frame).await?;
        Ok(())
    }

    async fn data(&mut self, stream: u32, fin: bool, data: &[u8]) -> anyhow::Result<()> {
        let mut frame = stream.to_be_bytes().to_vec();
        let len = (data.len() as u32).to_be_bytes();
        frame.extend_from_slice(&[if fin { FLAG_FIN } else { 0 }, len[1], len[2], len[3]]);
        frame.extend_from_slice(data);
        self.io.write_all(&frame).await?;
        Ok(())
    }

    fn stream_of(&self, kind: &str) -> Option<u32> {
        self.streams
            .iter()
            .find(|(_, k)| k.as_str() == kind)
            .map(|(id, _)| *id)
    }

    async fn write_output(&mut self, spec: &ExecSpec, output: &ShellOutput) -> anyhow::Result<()> {
        let stdout = self.stream_of("stdout");
        if let Some(id) = stdout {
            for piece in output.stdout.chunks(MAX_OUTPUT_FRAME) {
                self.data(id, false, piece).await?;
            }
        }
        let stderr = if spec.tty {
            stdout
        } else {
            self.stream_of("stderr")
        };
        if let Some(id) = stderr {
            for piece in output.stderr.chunks(MAX_OUTPUT_FRAME) {
                self.data(id, false, piece).await?;
            }
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Whether every stream the client will open for `spec` is open.
    fn ready(&self, spec: &ExecSpec) -> bool {
        let has = |kind| self.stream_of(kind).is_some();
        has("error")
            && (has("stdin") || !spec.stdin)
            && (has("stdout") || !spec.stdout)
            && (has("stderr") || !spec.stderr || spec.tty)
    }
}

/// Runs a session on the upgraded connection.
pub async fn run_session<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    spec: ExecSpec,
) -> anyhow::Result<()> {
    let capture = std::env::var_os("KUBE_STANDIN_CAPTURE_DIR").and_then(|dir| {
        let n = CAPTURES.fetch_add(1, Ordering::Relaxed);
        std::fs::File::create(std::path::Path::new(&dir).join(format!("spdy-{n}-client.bin"))).ok()
    });
    let mut conn = Connection {
        io,
        inflate: Decompress::new(true),
        deflate: Compress::new(Compression::default(), true),
        primed: false,
        streams: BTreeMap::new(),
        capture,
    };
    let mut program: Option<Program> = None;
    let exit = loop {
        let Some(frame) = conn.read_frame().await? else {
            return Ok(());
        };
        let output = match frame {
            Frame::Control {
                kind: SYN_STREAM,
                body,
            } => {
                let id =
                    u32::from_be_bytes(body.get(..4).unwrap_or(&[0; 4]).try_into()?) & 0x7fff_ffff;
                let kind = conn.stream_type(body.get(10..).unwrap_or_default())?;
                conn.streams.insert(id, kind);
                let mut reply = id.to_be_bytes().to_vec();
                reply.extend(conn.empty_header_block()?);
                conn.control(SYN_REPLY, 0, &reply).await?;
                if program.is_none() && conn.ready(&spec) {
                    let started = spec.program();
                    let first = match &started {
                        Program::Once(output) => Some(output.clone()),
                        Program::Interactive(shell) => Some(shell.start()),
                    };
                    program = Some(started);
                    first
                } else {
                    None
                }
            }
            Frame::Control { kind: PING, body } => {
                conn.control(PING, 0, &body).await?;
                None
            }
            Frame::Control { kind: GOAWAY, .. } => return Ok(()),
            Frame::Control { .. } => None,
            Frame::Data { stream, fin, data } => {
                let is_stdin = conn.streams.get(&stream).is_some_and(|k| k == "stdin");
                match program.as_mut() {
                    Some(Program::Interactive(shell)) if is_stdin => {
                        let mut output = shell.input(&data);
                        if fin && output.exit.is_none() {
                            let end = shell.end_of_input();
                            output.stdout.extend(end.stdout);
                            output.stderr.extend(end.stderr);
                            output.exit = end.exit;
                        }
                        Some(output)
                    }
                    _ => None,
                }
            }
        };
        if let Some(output) = output {
            conn.write_output(&spec, &output).await?;
            if let Some(code) = output.exit {
                break code;
            }
        }
    };
    if let Some(id) = conn.stream_of("error") {
        conn.data(id, true, &exit_status(exit)).await?;
    }
    for kind in ["stdout", "stderr"] {
        if let Some(id) = conn.stream_of(kind) {
            conn.data(id, true, b"").await?;
        }
    }
    conn.io.flush().await?;
    // The client hangs up once it has the status; read until then (bounded).
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Ok(Some(_)) = conn.read_frame().await {}
    })
    .await;
    conn.io.shutdown().await?;
    Ok(())
}
