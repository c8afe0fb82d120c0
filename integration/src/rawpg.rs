//! A PostgreSQL client that sends exactly the bytes a test writes: split
//! messages, pipelines, odd startup parameters, fast-path calls. Its message
//! builders are written here from the protocol documentation, independently of
//! the filter's own encoder, so a shared mistake cannot hide a bug.

use anyhow::{Context, Result, bail};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One server message: its tag and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    /// An ErrorResponse's (or NoticeResponse's) field, e.g. `b'C'` for the SQLSTATE.
    pub fn field(&self, code: u8) -> Option<String> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut rest = self.body.as_slice();
        while let Some((&c, tail)) = rest.split_first() {
            if c == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            let (value, after) = tail.split_at(end);
            if c == code {
                return Some(String::from_utf8_lossy(value).into_owned());
            }
            rest = after.get(1..).unwrap_or_default();
        }
        None
    }

    /// The SQLSTATE of an ErrorResponse.
    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }
}

/// What the server (through the gateway) answered to one exchange.
#[derive(Debug, Default, Clone)]
pub struct Reply {
    pub messages: Vec<Message>,
    /// The connection closed (after the messages).
    pub closed: bool,
}

impl Reply {
    /// The ErrorResponses' SQLSTATEs, in order.
    pub fn errors(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter(|m| m.tag == b'E')
            .filter_map(Message::sqlstate)
            .collect()
    }

    /// The first ErrorResponse's message text.
    pub fn error_message(&self) -> Option<String> {
        self.messages
            .iter()
            .find(|m| m.tag == b'E')
            .and_then(|m| m.field(b'M'))
    }
}

/// A raw connection through which a test writes bytes and reads messages.
pub struct RawPg {
    stream: TcpStream,
    buffer: Vec<u8>,
    closed: bool,
}

impl RawPg {
    pub fn connect(port: u16) -> Result<RawPg> {
        let stream = TcpStream::connect(("127.0.0.1", port)).context("connecting")?;
        stream.set_nodelay(true)?;
        Ok(RawPg {
            stream,
            buffer: Vec::new(),
            closed: false,
        })
    }

    /// Logs in with token login: StartupMessage with `params`, then the token
    /// as the password when the gateway asks for it. Returns what the server
    /// answered up to ReadyForQuery, an error or the close.
    pub fn login(port: u16, params: &[(&str, &str)], token: &str) -> Result<(RawPg, Reply)> {
        let mut raw = RawPg::connect(port)?;
        raw.send(&startup(params))?;
        let mut reply = Reply::default();
        loop {
            let Some(message) = raw.read_message(Duration::from_secs(10))? else {
                reply.closed = true;
                return Ok((raw, reply));
            };
            let done = matches!(message.tag, b'Z' | b'E');
            let password_request =
                message.tag == b'R' && message.body.get(..4) == Some(&[0, 0, 0, 3]);
            reply.messages.push(message);
            if password_request {
                raw.send(&password(token))?;
            }
            if done {
                if reply.messages.last().is_some_and(|m| m.tag == b'E') {
                    reply.closed = raw.wait_closed(Duration::from_secs(5));
                }
                return Ok((raw, reply));
            }
        }
    }

    /// Writes bytes as one write.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).context("writing")?;
        Ok(())
    }

    /// Writes bytes in pieces of `piece` bytes with a pause between them, so
    /// the gateway receives them in separate reads.
    pub fn send_split(&mut self, bytes: &[u8], piece: usize) -> Result<()> {
        for chunk in bytes.chunks(piece.max(1)) {
            self.stream.write_all(chunk).context("writing")?;
            self.stream.flush()?;
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Reads one message; `None` when the connection closed.
    pub fn read_message(&mut self, timeout: Duration) -> Result<Option<Message>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(&[tag, a, b, c, d]) = self.buffer.first_chunk::<5>() {
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len < 4 {
                    bail!("invalid message length {len}");
                }
                if let Some(body) = self.buffer.get(5..1 + len) {
                    let body = body.to_vec();
                    self.buffer.drain(..1 + len);
                    return Ok(Some(Message { tag, body }));
                }
            }
            if self.closed {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "no complete message within {timeout:?} (have {} bytes)",
                    self.buffer.len()
                );
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self
                    .buffer
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => self.closed = true,
                Err(e) => return Err(e).context("reading"),
            }
        }
    }

    /// Reads until `ready_count` ReadyForQuery messages arrived or the connection
    /// closed. A COPY FROM STDIN is answered with CopyDone at once.
    pub fn read_until_ready(&mut self, ready_count: usize, timeout: Duration) -> Result<Reply> {
        let mut reply = Reply::default();
        let mut seen = 0;
        while seen < ready_count {
            match self.read_message(timeout)? {
                Some(message) => {
                    if message.tag == b'G' {
                        self.send(&copy_done())?;
                    }
                    seen += usize::from(message.tag == b'Z');
                    reply.messages.push(message);
                }
                None => {
                    reply.closed = true;
                    break;
                }
            }
        }
        Ok(reply)
    }

    /// Whether the server closes the connection within `timeout` (messages
    /// arriving meanwhile are dropped).
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.read_message(deadline.saturating_duration_since(Instant::now())) {
                Ok(None) => return true,
                Ok(Some(_)) => {}
                Err(_) => return self.closed,
            }
        }
        self.closed
    }

    /// Writes without reading for as long as the gateway takes the bytes,
    /// `rounds` times `bytes`; stops early when a write blocks for `stall`.
    /// Returns how many rounds were written whole.
    pub fn flood(&mut self, bytes: &[u8], rounds: usize, stall: Duration) -> Result<usize> {
        self.stream.set_write_timeout(Some(stall))?;
        let mut written = 0;
        for _ in 0..rounds {
            match self.stream.write_all(bytes) {
                Ok(()) => written += 1,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e)
                    if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) =>
                {
                    break;
                }
                Err(e) => return Err(e).context("writing"),
            }
        }
        self.stream.set_write_timeout(None)?;
        Ok(written)
    }
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

/// A StartupMessage (protocol 3.0) with these parameters, in order.
pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = (3u32 << 16).to_be_bytes().to_vec();
    for (name, value) in params {
        cstr(&mut body, name.as_bytes());
        cstr(&mut body, value.as_bytes());
    }
    body.push(0);
    let mut out = (body.len() as u32 + 4).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

pub fn password(token: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, token.as_bytes());
    message(b'p', &body)
}

/// A simple Query of arbitrary bytes.
pub fn query(sql: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, sql);
    message(b'Q', &body)
}

pub fn parse(name: &str, sql: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name.as_bytes());
    cstr(&mut body, sql);
    body.extend_from_slice(&0u16.to_be_bytes());
    message(b'P', &body)
}

/// A count, then each value with its length (-1 for NULL).
fn values(body: &mut Vec<u8>, values: &[Option<&[u8]>]) {
    body.extend_from_slice(&(values.len() as u16).to_be_bytes());
    for value in values {
        match value {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v);
            }
        }
    }
}

/// Bind with text parameters (`None` is NULL) and text results.
pub fn bind(portal: &str, statement: &str, params: &[Option<&[u8]>]) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, portal.as_bytes());
    cstr(&mut body, statement.as_bytes());
    body.extend_from_slice(&0u16.to_be_bytes());
    values(&mut body, params);
    body.extend_from_slice(&0u16.to_be_bytes());
    message(b'B', &body)
}

pub fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut body = vec![kind];
    cstr(&mut body, name.as_bytes());
    message(b'D', &body)
}

pub fn execute(portal: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, portal.as_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
    message(b'E', &body)
}

pub fn close(kind: u8, name: &str) -> Vec<u8> {
    let mut body = vec![kind];
    cstr(&mut body, name.as_bytes());
    message(b'C', &body)
}

pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}

pub fn flush() -> Vec<u8> {
    message(b'H', &[])
}

pub fn copy_done() -> Vec<u8> {
    message(b'c', &[])
}

pub fn terminate() -> Vec<u8> {
    message(b'X', &[])
}

/// A FunctionCall of `oid` with one format code for all arguments.
pub fn function_call(oid: u32, binary: bool, args: &[Option<&[u8]>]) -> Vec<u8> {
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&u16::from(binary).to_be_bytes());
    values(&mut body, args);
    body.extend_from_slice(&1u16.to_be_bytes());
    message(b'F', &body)
}
