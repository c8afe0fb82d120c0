//! exec and attach over WebSocket with the Kubernetes channel protocol
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`): the first byte of each binary
//! message is the channel (1 stdout, 3 status). The "command" is a fixed echo
//! of its argv, so tests can see what ran.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::HeaderMap;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::status::{self, Status};

/// Subprotocols served, in preference order.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const STDOUT: u8 = 1;
const STATUS: u8 = 3;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;
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

/// What the fixed "command" prints: the argv joined by spaces, then a newline
/// (nothing for attach, which has no argv).
pub fn echo_output(argv: &[String]) -> Vec<u8> {
    if argv.is_empty() {
        return Vec::new();
    }
    let mut out = argv.join(" ").into_bytes();
    out.push(b'\n');
    out
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

/// Runs a session on the upgraded connection: stdout, a Success status,
/// then the closing handshake.
pub async fn run_session<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    stdout: &[u8],
) -> anyhow::Result<()> {
    if !stdout.is_empty() {
        io.write_all(&channel_message(STDOUT, stdout)).await?;
    }
    let mut success = status::success();
    if let Some(map) = success.as_object_mut() {
        // The channel protocol's status carries no kind/apiVersion.
        map.remove("kind");
        map.remove("apiVersion");
    }
    io.write_all(&channel_message(STATUS, success.to_string().as_bytes()))
        .await?;
    io.write_all(&frame(OPCODE_CLOSE, &1000u16.to_be_bytes()))
        .await?;
    io.flush().await?;
    // Wait (bounded) for the client's close frame, discarding anything else.
    let _ = tokio::time::timeout(CLOSE_WAIT, wait_for_close(&mut io)).await;
    io.shutdown().await?;
    Ok(())
}

/// Reads client frames until a close frame, EOF or an oversized frame.
async fn wait_for_close<S: AsyncRead + Unpin>(io: &mut S) -> anyhow::Result<()> {
    loop {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await?;
        let [first, second] = head;
        let len = match second & 0x7f {
            126 => u64::from(io.read_u16().await?),
            127 => io.read_u64().await?,
            n => u64::from(n),
        };
        let mask_len = if second & 0x80 != 0 { 4 } else { 0 };
        if len > MAX_CLIENT_FRAME {
            anyhow::bail!("client frame of {len} bytes is too large");
        }
        let mut skip = vec![0u8; (len + mask_len) as usize];
        io.read_exact(&mut skip).await?;
        if first & 0x0f == OPCODE_CLOSE {
            return Ok(());
        }
    }
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

    #[tokio::test]
    async fn session_sends_stdout_status_and_close() {
        let (mut client, server) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move { run_session(server, b"echo hi\n").await });
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.ends_with(&[0x88, 2, 0x03, 0xe8]) {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "server closed early: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            &got[..10],
            &[0x82, 9, 1, b'e', b'c', b'h', b'o', b' ', b'h', b'i']
        );
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
}
