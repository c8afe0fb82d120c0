//! exec and attach: what runs ([`ExecSpec`], the pretend shell of
//! [`crate::shell`]), its final status, and the WebSocket transport with the
//! Kubernetes channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`):
//! the first byte of each binary message is the channel (0 stdin, 1 stdout,
//! 2 stderr, 3 status, 4 resize; v5's 255 closes a channel). The SPDY/3.1
//! transport is in [`crate::spdy`].

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::HeaderMap;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::shell::{Shell, ShellOutput};
use crate::status::{self, Status};

/// Subprotocols served, in preference order.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
/// v5: the next byte names a channel the sender closed.
const CLOSE_SIGNAL: u8 = 255;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;
/// Largest output frame written, as a kubelet copies a stream (32 KiB reads).
pub const MAX_OUTPUT_FRAME: usize = 32 * 1024;
/// How long to wait for the client's closing handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Largest client frame read while waiting for the close.
const MAX_CLIENT_FRAME: u64 = 1 << 20;

/// The accepted handshake: what to put in the 101 answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Handshake {
    pub accept: String,
    pub protocol: &'static str,
}

/// Checks a WebSocket upgrade request (RFC 6455 section 4.2.1) and picks the subprotocol.
pub fn handshake(headers: &HeaderMap) -> Result<Handshake, Status> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let tokens = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    if !tokens("upgrade").iter().any(|t| t == "websocket")
        || !tokens("connection").iter().any(|t| t == "upgrade")
    {
        return Err(Status::bad_request("expected a WebSocket upgrade request"));
    }
    if header("sec-websocket-version") != "13" {
        return Err(Status::bad_request(
            "unsupported WebSocket version (want 13)",
        ));
    }
    let key = header("sec-websocket-key");
    if BASE64.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(Status::bad_request(
            "missing or malformed Sec-WebSocket-Key",
        ));
    }
    let offered = tokens("sec-websocket-protocol");
    let protocol = PROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .ok_or_else(|| {
            Status::bad_request(format!(
                "none of the offered WebSocket subprotocols {offered:?} is supported (want one of {PROTOCOLS:?})"
            ))
        })?;
    Ok(Handshake {
        accept: accept_key(key),
        protocol,
    })
}

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    BASE64.encode(sha.finalize())
}

/// What an exec or attach request asks to run, and how.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    /// The argv (empty for attach, which joins the container's shell).
    pub argv: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// The pod's name, the shell's hostname.
    pub hostname: String,
}

/// How the session runs: a shell reading stdin, or one command.
pub enum Program {
    Interactive(Shell),
    Once(ShellOutput),
}

impl ExecSpec {
    /// Attach, or a shell without `-c`, reads stdin; `sh -c SCRIPT` and
    /// any other argv run once.
    pub fn program(&self) -> Program {
        let mut shell = Shell::new(self.tty, &self.hostname);
        let program = self.argv.first().map(|p| p.rsplit('/').next().unwrap_or(p));
        let is_shell = matches!(program, None | Some("sh" | "bash" | "ash"));
        match self.argv.get(1).map(String::as_str) {
            Some("-c") if is_shell => {
                let script = self.argv.get(2).cloned().unwrap_or_default();
                let words: Vec<String> = script.split_whitespace().map(str::to_owned).collect();
                Program::Once(shell.run_once(&words))
            }
            _ if is_shell && self.stdin => Program::Interactive(shell),
            _ if is_shell => Program::Once(ShellOutput {
                exit: Some(0),
                ..ShellOutput::default()
            }),
            _ => Program::Once(shell.run_once(&self.argv)),
        }
    }

    /// Where stderr goes: its own channel without a terminal (when asked
    /// for), the terminal's output with one.
    pub fn stderr_channel(&self) -> Option<u8> {
        match (self.tty, self.stderr) {
            (true, _) => Some(STDOUT),
            (false, true) => Some(STDERR),
            (false, false) => None,
        }
    }
}

/// The channel protocol's final status for an exit code (it carries no
/// kind/apiVersion).
pub fn exit_status(code: i32) -> Vec<u8> {
    let status = if code == 0 {
        let mut success = status::success();
        if let Some(map) = success.as_object_mut() {
            map.remove("kind");
            map.remove("apiVersion");
        }
        success
    } else {
        serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
    };
    status.to_string().into_bytes()
}

/// One unmasked server frame with FIN set.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

fn channel_message(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(channel);
    payload.extend_from_slice(data);
    frame(OPCODE_BINARY, &payload)
}

/// Writes a shell's output as channel messages.
async fn write_output<S: AsyncWrite + Unpin>(
    io: &mut S,
    spec: &ExecSpec,
    output: &ShellOutput,
) -> anyhow::Result<()> {
    if spec.stdout {
        for piece in output.stdout.chunks(MAX_OUTPUT_FRAME) {
            io.write_all(&channel_message(STDOUT, piece)).await?;
        }
    }
    if let Some(channel) = spec.stderr_channel() {
        for piece in output.stderr.chunks(MAX_OUTPUT_FRAME) {
            io.write_all(&channel_message(channel, piece)).await?;
        }
    }
    io.flush().await?;
    Ok(())
}

/// Runs a session on the upgraded connection: the program's output, its
/// status, then the closing handshake.
pub async fn run_session<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    spec: ExecSpec,
) -> anyhow::Result<()> {
    let exit = match spec.program() {
        Program::Once(output) => {
            write_output(&mut io, &spec, &output).await?;
            output.exit.unwrap_or(0)
        }
        Program::Interactive(mut shell) => {
            write_output(&mut io, &spec, &shell.start()).await?;
            loop {
                let Some((opcode, payload)) = read_frame(&mut io).await? else {
                    break shell.end_of_input().exit.unwrap_or(0);
                };
                let output = match (opcode, payload.split_first()) {
                    (OPCODE_CLOSE, _) => shell.end_of_input(),
                    (OPCODE_BINARY, Some((&STDIN, data))) => shell.input(data),
                    (OPCODE_BINARY, Some((&CLOSE_SIGNAL, [STDIN]))) => shell.end_of_input(),
                    _ => continue,
                };
                write_output(&mut io, &spec, &output).await?;
                if let Some(code) = output.exit {
                    break code;
                }
            }
        }
    };
    io.write_all(&channel_message(STATUS, &exit_status(exit)))
        .await?;
    io.write_all(&frame(OPCODE_CLOSE, &1000u16.to_be_bytes()))
        .await?;
    io.flush().await?;
    // Wait (bounded) for the client's close frame, discarding anything else.
    let _ = tokio::time::timeout(CLOSE_WAIT, wait_for_close(&mut io)).await;
    io.shutdown().await?;
    Ok(())
}

/// Reads one client frame, unmasked: `None` at the end of the stream.
async fn read_frame<S: AsyncRead + Unpin>(io: &mut S) -> anyhow::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 2];
    match io.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let [first, second] = head;
    let len = match second & 0x7f {
        126 => u64::from(io.read_u16().await?),
        127 => io.read_u64().await?,
        n => u64::from(n),
    };
    if len > MAX_CLIENT_FRAME {
        anyhow::bail!("client frame of {len} bytes is too large");
    }
    let mut mask = [0u8; 4];
    if second & 0x80 != 0 {
        io.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    io.read_exact(&mut payload).await?;
    for (byte, mask) in payload.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= mask;
    }
    Ok(Some((first & 0x0f, payload)))
}

/// Reads client frames until a close frame, EOF or an oversized frame.
async fn wait_for_close<S: AsyncRead + Unpin>(io: &mut S) -> anyhow::Result<()> {
    while let Some((opcode, _)) = read_frame(io).await? {
        if opcode == OPCODE_CLOSE {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn upgrade_headers(protocol: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("sec-websocket-version", "13".parse().unwrap());
        h.insert(
            "sec-websocket-key",
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        h.insert("sec-websocket-protocol", protocol.parse().unwrap());
        h
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn negotiates_v5_then_v4() {
        let h = handshake(&upgrade_headers("v4.channel.k8s.io, v5.channel.k8s.io")).unwrap();
        assert_eq!(h.protocol, "v5.channel.k8s.io");
        let h = handshake(&upgrade_headers("v4.channel.k8s.io")).unwrap();
        assert_eq!(h.protocol, "v4.channel.k8s.io");
        let err = handshake(&upgrade_headers("SPDY/3.1+portforward.k8s.io")).unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn frames_carry_length_and_channel() {
        let f = channel_message(STDOUT, b"hi\n");
        assert_eq!(f, vec![0x82, 4, 1, b'h', b'i', b'\n']);
        let big = frame(OPCODE_BINARY, &[0u8; 300]);
        assert_eq!(&big[..4], &[0x82, 126, 1, 44]);
    }

    fn spec(argv: &[&str], tty: bool, stdin: bool) -> ExecSpec {
        ExecSpec {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: true,
            hostname: "web-0".into(),
        }
    }

    #[tokio::test]
    async fn a_command_sends_stdout_status_and_close() {
        let (mut client, server) = tokio::io::duplex(4096);
        let task =
            tokio::spawn(
                async move { run_session(server, spec(&["echo", "hi"], false, false)).await },
            );
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.ends_with(&[0x88, 2, 0x03, 0xe8]) {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "server closed early: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(&got[..6], &[0x82, 4, 1, b'h', b'i', b'\n']);
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.contains("\u{3}{\"metadata\":{},\"status\":\"Success\"}"),
            "{text}"
        );
        // A masked close frame from the client ends the session.
        client
            .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
            .await
            .unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_interactive_shell_answers_typed_lines_and_exits_with_their_status() {
        let (mut client, server) = tokio::io::duplex(4096);
        let task =
            tokio::spawn(async move { run_session(server, spec(&["sh"], true, true)).await });
        let masked = |data: &[u8]| {
            let mut out = vec![0x82, 0x80 | (data.len() as u8 + 1), 0, 0, 0, 0, STDIN];
            out.extend_from_slice(data);
            out
        };
        client.write_all(&masked(b"id\r")).await.unwrap();
        client.write_all(&masked(b"exit 4\r")).await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        while !got.ends_with(&[0x88, 2, 0x03, 0xe8]) {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "server closed early: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.contains("$ ") && text.contains("uid=0(root)"),
            "{text}"
        );
        assert!(
            text.contains("\"reason\":\"NonZeroExitCode\"") && text.contains("\"message\":\"4\""),
            "{text}"
        );
        client.write_all(&[0x88, 0x80, 0, 0, 0, 0]).await.unwrap();
        task.await.unwrap().unwrap();
    }
}
