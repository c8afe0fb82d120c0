//! A small blocking HTTP/1.1 client for the approval service: JSON in, JSON
//! out, one request per connection, plain `http://` (the service sits on a
//! private network or behind the mesh, which terminates TLS).

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest answer read.
const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;

/// Why a call failed before the service answered.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}: the service URL must be http://HOST:PORT")]
    Url(String),
    #[error("cannot reach {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("talking to {0}: {1}")]
    Io(String, std::io::Error),
    #[error("the service's answer is not HTTP: {0}")]
    Malformed(String),
}

/// The service's answer: status and JSON body (`null` if it was not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// `method path` on `server` with `token`, with an optional JSON body.
pub fn call(
    server: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Answer, HttpError> {
    let authority = server
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| HttpError::Url(server.to_owned()))?;
    let address = authority
        .to_socket_addrs()
        .map_err(|e| HttpError::Connect(authority.to_owned(), e))?
        .next()
        .ok_or_else(|| HttpError::Url(server.to_owned()))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|e| HttpError::Connect(authority.to_owned(), e))?;
    let io = |e| HttpError::Io(authority.to_owned(), e);
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {authority}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{payload}",
        payload.len()
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut raw)
        .map_err(io)?;
    parse_answer(&raw)
}

/// Reads a `connection: close` HTTP/1.1 answer (content-length or chunked).
fn parse_answer(raw: &[u8]) -> Result<Answer, HttpError> {
    let malformed = |what: &str| HttpError::Malformed(what.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| malformed("no end of headers"))?;
    let head = String::from_utf8_lossy(raw.get(..split).unwrap_or_default());
    let rest = raw.get(split + 4..).unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| malformed("no status line"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding") && value.trim() == "chunked"
        })
    });
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Answer {
        status,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| HttpError::Malformed("bad chunk".into()))?;
        let size_text = String::from_utf8_lossy(rest.get(..end).unwrap_or_default()).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| HttpError::Malformed(format!("bad chunk size {size_text:?}")))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest
            .get(end + 2..end + 2 + size)
            .ok_or_else(|| HttpError::Malformed("short chunk".into()))?;
        out.extend_from_slice(chunk);
        rest = rest.get(end + 4 + size..).unwrap_or_default();
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_length_or_chunks_are_read() {
        let plain =
            parse_answer(b"HTTP/1.1 201 Created\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n").unwrap();
        assert_eq!(plain.status, 201);
        assert_eq!(plain.body["a"], 1);
        let chunked = parse_answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"b\r\n4\r\n\":2}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.body["b"], 2);
        assert!(parse_answer(b"garbage").is_err());
    }

    #[test]
    fn only_plain_http_urls_are_taken() {
        let t = Duration::from_millis(100);
        for bad in ["https://h:1", "h:1", "http://", "http://h:1/x"] {
            assert!(
                matches!(call(bad, "t", "GET", "/", None, t), Err(HttpError::Url(_))),
                "{bad}"
            );
        }
    }
}
