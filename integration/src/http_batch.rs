//! Many raw HTTP requests from one curl process: each sent exactly as
//! written (method, request target, headers, body; HTTP/1.1 or HTTP/2), which
//! is what hostile-client tests need, and run in parallel over reused
//! connections, which keeps a batch of hundreds to a few seconds.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One request, sent as written.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: String,
    /// The request target exactly as sent (path and query; nothing is encoded
    /// or normalized).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// HTTP/2 (ALPN) instead of HTTP/1.1.
    pub http2: bool,
}

impl RawRequest {
    pub fn new(method: &str, target: &str) -> RawRequest {
        RawRequest {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: Vec::new(),
            body: None,
            http2: false,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> RawRequest {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, content_type: &str, body: &[u8]) -> RawRequest {
        self.body = Some(body.to_vec());
        self.header("content-type", content_type)
    }

    pub fn http2(mut self) -> RawRequest {
        self.http2 = true;
        self
    }
}

/// What came back (status 0: no response, curl could not complete it).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// How often an unanswered HTTP/2 request is sent again (see [`send`]): the
/// race it loses is the server answering before curl's upload ends, which a
/// loaded machine makes likelier.
const RESENDS: usize = 3;

/// Sends `requests` to `base` (`https://127.0.0.1:PORT` or `http://…`),
/// trusting `ca` for TLS, in parallel; the responses in request order. Files
/// go under `dir/<name>/`.
///
/// An HTTP/2 request that got no response is sent again, on its own, up to
/// [`RESENDS`] times: curl 7.88 reports a stream the server answered before the upload ended
/// and then reset with NO_ERROR (as RFC 9113 §8.1 allows, and Envoy does for
/// an early refusal) as a failure, dropping the answer it received.
pub fn send(
    dir: &Path,
    name: &str,
    base: &str,
    ca: Option<&Path>,
    requests: &[RawRequest],
) -> Result<Vec<RawResponse>> {
    let work = dir.join(name);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut responses = vec![
        RawResponse {
            status: 0,
            content_type: String::new(),
            body: Vec::new(),
        };
        requests.len()
    ];
    let batch = Batch {
        work: &work,
        base,
        ca,
        requests,
    };
    let all: Vec<usize> = (0..requests.len()).collect();
    batch.run("curl.config", &all, true, &mut responses)?;
    for attempt in 1..=RESENDS {
        let dropped: Vec<usize> = (0..requests.len())
            .filter(|&i| {
                let unanswered = responses.get(i).is_some_and(|r| r.status == 0);
                unanswered && requests.get(i).is_some_and(|r| r.http2)
            })
            .collect();
        if dropped.is_empty() {
            break;
        }
        batch.run(
            &format!("curl-again-{attempt}.config"),
            &dropped,
            false,
            &mut responses,
        )?;
    }
    Ok(responses)
}

/// Requests for one server, with the folder their files go to.
struct Batch<'a> {
    work: &'a Path,
    base: &'a str,
    ca: Option<&'a Path>,
    requests: &'a [RawRequest],
}

impl Batch<'_> {
    /// Runs one curl process for `requests[indices]` (in parallel or one after
    /// another), filling their entries of `responses`.
    fn run(
        &self,
        config_name: &str,
        indices: &[usize],
        parallel: bool,
        responses: &mut [RawResponse],
    ) -> Result<()> {
        let Batch {
            work,
            base,
            ca,
            requests,
        } = *self;
        let mut config = String::new();
        for (n, &i) in indices.iter().enumerate() {
            let Some(request) = requests.get(i) else {
                bail!("no request {i} of {}", requests.len());
            };
            if n > 0 {
                config.push_str("next\n");
            }
            let option = |config: &mut String, name: &str, value: &str| {
                config.push_str(&format!("{name} = \"{}\"\n", quote(value)));
            };
            option(&mut config, "url", base);
            option(&mut config, "request-target", &request.target);
            if request.method == "HEAD" {
                config.push_str("head\n");
            } else {
                option(&mut config, "request", &request.method);
            }
            for (name, value) in &request.headers {
                option(&mut config, "header", &format!("{name}: {value}"));
            }
            if let Some(body) = &request.body {
                let file = work.join(format!("{i}.request"));
                std::fs::write(&file, body)?;
                option(&mut config, "data-binary", &format!("@{}", file.display()));
            }
            if let Some(ca) = ca {
                option(&mut config, "cacert", &ca.display().to_string());
            }
            config.push_str(if request.http2 {
                "http2\n"
            } else {
                "http1.1\n"
            });
            option(
                &mut config,
                "output",
                &body_file(work, i).display().to_string(),
            );
            option(
                &mut config,
                "write-out",
                &format!("{i} %{{http_code}} %{{content_type}}\\n"),
            );
            config.push_str("path-as-is\nsilent\nmax-time = 30\n");
        }
        let config_file = work.join(config_name);
        std::fs::write(&config_file, &config)?;
        let mut curl = Command::new("curl");
        if parallel {
            curl.args(["--parallel", "--parallel-max", "16"]);
        }
        let out = curl
            .arg("--config")
            .arg(&config_file)
            .output()
            .context("running curl")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut fields = line.splitn(3, ' ');
            let (Some(index), Some(status)) = (fields.next(), fields.next()) else {
                continue;
            };
            let (Ok(index), Ok(status)) = (index.parse::<usize>(), status.parse::<u16>()) else {
                bail!("unexpected curl output line {line:?}");
            };
            let Some(response) = responses.get_mut(index) else {
                bail!("curl reported request {index} of {}", requests.len());
            };
            response.status = status;
            response.content_type = fields.next().unwrap_or_default().to_owned();
            response.body = std::fs::read(body_file(work, index)).unwrap_or_default();
        }
        Ok(())
    }
}

fn body_file(work: &Path, index: usize) -> PathBuf {
    work.join(format!("{index}.body"))
}

/// A value for a curl config file's double quotes.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}
