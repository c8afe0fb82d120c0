//! Shared test helpers: locating real kubectl binaries and running them
//! against a stand-in with nothing from the machine's own configuration.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Where the Debian package `kubectl` (Google Cloud SDK) installs versioned clients.
const SDK_BIN: &str = "/usr/lib/google-cloud-sdk/bin";

/// The kubectl binary for `version` ("1.33"): `$KUBECTL_1_33`, else the SDK's
/// `kubectl.1.33`. Fails loudly when absent: these tests need real kubectl.
pub fn kubectl_binary(version: &str) -> PathBuf {
    let var = format!("KUBECTL_{}", version.replace('.', "_"));
    if let Some(path) = std::env::var_os(&var) {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(SDK_BIN).join(format!("kubectl.{version}"));
    assert!(
        path.is_file(),
        "kubectl {version} not found at {}: install the Debian package `kubectl` \
         (it provides kubectl.1.27 … kubectl.1.33 under {SDK_BIN}) or set {var}",
        path.display()
    );
    path
}

/// The version-picking `kubectl` dispatcher: `$KUBECTL_DISPATCHER`, else the SDK's.
pub fn kubectl_dispatcher() -> PathBuf {
    let path = std::env::var_os("KUBECTL_DISPATCHER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SDK_BIN).join("kubectl"));
    assert!(
        path.is_file(),
        "kubectl dispatcher not found at {}: install the Debian package `kubectl` or set KUBECTL_DISPATCHER",
        path.display()
    );
    path
}

/// One kubectl version pointed at one server, with its own empty cache.
pub struct Kubectl {
    binary: PathBuf,
    server: String,
    cache: tempfile::TempDir,
}

impl Kubectl {
    pub fn new(version: &str, addr: SocketAddr) -> Kubectl {
        Kubectl::with_binary(kubectl_binary(version), addr)
    }

    pub fn with_binary(binary: PathBuf, addr: SocketAddr) -> Kubectl {
        Kubectl {
            binary,
            server: format!("http://{addr}"),
            cache: tempfile::tempdir().expect("temp cache dir"),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--kubeconfig=/dev/null")
            .arg(format!("--cache-dir={}", self.cache.path().display()))
            .arg(format!("--server={}", self.server))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.cache.path())
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running kubectl")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Starts a long-running command; its stdout lines arrive on the channel.
    pub fn spawn_lines(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning kubectl");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }
}

/// Waits (generously; a guard against hangs, not a timing assertion) for a line containing `needle`.
pub fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line containing {needle:?}: {e}"),
        }
    }
}

/// A raw HTTP/1.1 exchange (`Connection: close`), chunked bodies decoded.
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

pub fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    stream.write_all(body).expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v == "chunked")
    {
        rest = dechunk(&rest);
    }
    RawResponse {
        status,
        headers,
        body: rest,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16)
            .expect("chunk size");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
    out
}
