//! A small HTTP/1.1 keep-alive load loop for end-to-end benches: a few
//! connections, each sending the same request again as soon as the previous
//! response has been read, for a fixed time.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest response body read (a bench response is far smaller).
const MAX_BODY: usize = 64 << 20;

/// What one run achieved.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    /// Responses with a 2xx status.
    pub ok: u64,
    /// Responses with any other status.
    pub failed: u64,
    pub elapsed: Duration,
}

impl Load {
    /// Successful responses per second.
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Adds another run's counts and time.
    pub fn add(&mut self, other: Load) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
    }
}

/// An HTTP/1.1 request's bytes (`Host` and `Content-Length` added).
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: bench\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One keep-alive connection.
pub struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub fn open(addr: SocketAddr) -> Result<Connection> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Connection {
            reader: BufReader::new(stream),
        })
    }

    /// Sends `request` and reads its whole response: (status, body).
    pub fn exchange(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>)> {
        self.reader.get_mut().write_all(request)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("malformed status line {line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the connection closed inside the headers");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                bail!("malformed header {header:?}");
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
        let body = match (chunked, length) {
            (true, _) => self.read_chunked()?,
            (false, Some(n)) if n <= MAX_BODY => {
                let mut body = vec![0; n];
                self.reader.read_exact(&mut body)?;
                body
            }
            (false, Some(n)) => bail!("a {n}-byte body is more than a bench reads"),
            (false, None) => bail!("a response without a length cannot be kept alive"),
        };
        Ok((status, body))
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let size_text = line.trim_end().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_text, 16)
                .with_context(|| format!("malformed chunk size {line:?}"))?;
            if body.len() + size > MAX_BODY {
                bail!("a chunked body larger than a bench reads");
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.reader
                .read_exact(body.get_mut(start..).unwrap_or_default())?;
            let mut crlf = [0; 2];
            self.reader.read_exact(&mut crlf)?;
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

/// Sends `request` over `connections` keep-alive connections to `addr` for
/// `duration`, each connection one request at a time.
pub fn run(
    addr: SocketAddr,
    request: &[u8],
    connections: usize,
    duration: Duration,
) -> Result<Load> {
    let started = Instant::now();
    let workers: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let request = request.to_vec();
            std::thread::spawn(move || -> Result<Load> {
                let mut connection = Connection::open(addr)?;
                let mut load = Load::default();
                while started.elapsed() < duration {
                    let (status, _) = connection.exchange(&request)?;
                    if (200..300).contains(&status) {
                        load.ok += 1;
                    } else {
                        load.failed += 1;
                    }
                }
                Ok(load)
            })
        })
        .collect();
    let mut total = Load::default();
    for worker in workers {
        let load = worker
            .join()
            .map_err(|_| anyhow::anyhow!("a load connection panicked"))??;
        total.ok += load.ok;
        total.failed += load.failed;
    }
    total.elapsed = started.elapsed();
    Ok(total)
}
