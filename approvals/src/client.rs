//! The few outgoing HTTP calls the service makes (webhooks, records, key sets):
//! one request per connection, plain HTTP, with a deadline.

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use std::time::Duration;
use tokio::net::TcpStream;

/// Why an outgoing call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Url(String),
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered {0}")]
    Status(u16),
}

/// An `http://host:port/path` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub authority: String,
    pub path: String,
}

impl HttpTarget {
    pub fn parse(url: &str) -> Result<HttpTarget, CallError> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            CallError::Url(format!(
                "\"{url}\": only http:// URLs (reach https through an egress proxy)"
            ))
        })?;
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(CallError::Url(format!("\"{url}\": no host")));
        }
        Ok(HttpTarget {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// One outgoing request.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub content_type: &'a str,
    /// `Authorization: Bearer …`.
    pub bearer: Option<&'a str>,
    pub body: Vec<u8>,
    pub timeout: Duration,
    /// HTTP/2 with prior knowledge (Envoy's record listener speaks only that).
    pub http2: bool,
}

impl<'a> Outgoing<'a> {
    /// A request with defaults: no body, no token, HTTP/1.1, 5 s.
    pub fn new(method: &'a str, url: &'a str) -> Outgoing<'a> {
        Outgoing {
            method,
            url,
            content_type: "application/json",
            bearer: None,
            body: Vec::new(),
            timeout: Duration::from_secs(5),
            http2: false,
        }
    }
}

/// Sends one request and returns the status and body of the answer; a
/// non-2xx answer is [`CallError::Status`].
pub async fn call(outgoing: Outgoing<'_>) -> Result<Vec<u8>, CallError> {
    let (status, body) = exchange(outgoing).await?;
    if !(200..300).contains(&status) {
        return Err(CallError::Status(status));
    }
    Ok(body)
}

/// Sends one request; any answer is returned with its status.
pub async fn exchange(outgoing: Outgoing<'_>) -> Result<(u16, Vec<u8>), CallError> {
    let target = HttpTarget::parse(outgoing.url)?;
    let timeout = outgoing.timeout;
    let run = async {
        let stream = TcpStream::connect(&target.authority)
            .await
            .map_err(|e| CallError::Connect(target.authority.clone(), e))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let mut request = Request::builder()
            .method(outgoing.method)
            .header("content-type", outgoing.content_type);
        if let Some(token) = outgoing.bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = if outgoing.http2 {
            let uri = format!("http://{}{}", target.authority, target.path);
            let request = request
                .uri(uri)
                .body(Full::new(Bytes::from(outgoing.body)))?;
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            sender.send_request(request).await?
        } else {
            let request = request
                .uri(&target.path)
                .header("host", &target.authority)
                .body(Full::new(Bytes::from(outgoing.body)))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            sender.send_request(request).await?
        };
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, bytes.to_vec()))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| CallError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_only_http_is_taken() {
        let t = HttpTarget::parse("http://127.0.0.1:80/hook?x=1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:80");
        assert_eq!(t.path, "/hook?x=1");
        assert_eq!(HttpTarget::parse("http://h:1").unwrap().path, "/");
        assert!(HttpTarget::parse("https://h/x").is_err());
        assert!(HttpTarget::parse("http:///x").is_err());
        assert!(HttpTarget::parse("http://u:p@h/x").is_err());
    }
}
