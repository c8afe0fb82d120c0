//! The approval service for tests and the demo: its database on the stack's
//! PostgreSQL, one or more replicas of the real binary, and a webhook
//! receiver standing in for a chat incoming webhook.

use crate::postgres::Postgres;
use crate::process::{self, Managed};
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The service's own database on the stack's server.
pub const DATABASE: &str = "gatehouse_approvals";
/// The secret the filters present to the service (demo and tests only).
pub const FILTER_KEY: &str = "gatehouse-demo-filter-key-change-me";
/// The Envoy cluster the filters reach the service through.
pub const CLUSTER: &str = "gatehouse_approvals";

/// The filters' `approvals` section for a stack: the service through the
/// `gatehouse_approvals` cluster, grants read every `poll_ms`.
pub fn filter_section(poll_ms: u32) -> Value {
    json!({"cluster": CLUSTER, "key": FILTER_KEY, "poll_ms": poll_ms})
}

/// The service configuration for a stack: tokens from the demo identity
/// provider, records to Envoy's record listener when `records_port` is given,
/// notifications to `webhook` when given, and the demo's window scopes.
pub fn service_config(
    postgres_port: u16,
    idp_port: u16,
    records_port: Option<u16>,
    webhook: Option<&str>,
) -> Value {
    let mut config = json!({
        "listen": "127.0.0.1:0",
        "database_url": format!("host=127.0.0.1 port={postgres_port} user=postgres dbname={DATABASE}"),
        "identity": crate::stack::example("postgres-login.json").get("identity").cloned(),
        "clusters": {"gatehouse_idp": format!("http://127.0.0.1:{idp_port}")},
        "filter_key": FILTER_KEY,
        "sweep_ms": 200,
        "scopes": {
            "customer-writes": {"approvers": ["dba"], "grant": "window", "valid": "1h",
                                "reason_required": true}
        }
    });
    if let Some(settings) = config.as_object_mut() {
        if let Some(port) = records_port {
            settings.insert(
                "records_url".into(),
                json!(format!("http://127.0.0.1:{port}/records")),
            );
        }
        if let Some(url) = webhook {
            settings.insert(
                "webhook".into(),
                json!({"url": url, "attempts": 5, "timeout_ms": 1000}),
            );
        }
    }
    config
}

/// Replicas of the approval service over one database.
pub struct ApprovalService {
    dir: PathBuf,
    config: PathBuf,
    replicas: Vec<Option<(Managed, String)>>,
}

impl ApprovalService {
    /// Creates the database (if needed) and starts `replicas` processes.
    pub fn start(dir: &Path, postgres: &Postgres, config: &Value, replicas: usize) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let exists = postgres.psql(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        ))?;
        if exists.trim().is_empty() {
            postgres.psql(&format!("CREATE DATABASE {DATABASE}"))?;
        }
        let path = dir.join("approvals.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config)?)?;
        let mut service = ApprovalService {
            dir: dir.to_path_buf(),
            config: path,
            replicas: Vec::new(),
        };
        for i in 0..replicas {
            service.replicas.push(None);
            service.restart(i)?;
        }
        Ok(service)
    }

    /// The base URL of replica `i` (`http://127.0.0.1:PORT`).
    pub fn url(&self, i: usize) -> String {
        self.replicas
            .get(i)
            .and_then(|r| r.as_ref())
            .map(|(_, url)| url.clone())
            .unwrap_or_default()
    }

    /// Replica `i`'s port.
    pub fn port(&self, i: usize) -> u16 {
        self.url(i)
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_default()
    }

    /// Stops replica `i` (SIGTERM, then SIGKILL).
    pub fn stop(&mut self, i: usize) {
        if let Some(slot) = self.replicas.get_mut(i)
            && let Some((mut process, _)) = slot.take()
        {
            process.stop();
        }
    }

    /// (Re)starts replica `i` on its previous port, or a fresh one.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        let port = self.port(i);
        self.stop(i);
        let binary = crate::tools::workspace_binary("gatehouse-approvals", "gatehouse-approvals")?;
        let port_file = self.dir.join(format!("replica-{i}.addr"));
        let _ = std::fs::remove_file(&port_file);
        let mut cmd = Command::new(binary);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--port-file")
            .arg(&port_file);
        let mut process = Managed::spawn(
            &format!("approval service {i}"),
            cmd,
            &self.dir.join(format!("replica-{i}.log")),
        )?;
        let mut address = String::new();
        process::wait_until(
            "the approval service",
            Duration::from_secs(20),
            || process.check_running(),
            || {
                address = std::fs::read_to_string(&port_file).unwrap_or_default();
                !address.trim().is_empty()
            },
        )?;
        let url = format!("http://{}", address.trim());
        if let Some(slot) = self.replicas.get_mut(i) {
            *slot = Some((process, url));
        }
        Ok(())
    }

    /// Detaches every replica (the demo's processes outlive this value).
    pub fn detach(&mut self) -> Vec<u32> {
        self.replicas
            .iter_mut()
            .filter_map(|r| r.as_mut().map(|(p, _)| p.detach()))
            .collect()
    }

    /// The log of replica `i`.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        process::tail(&self.dir.join(format!("replica-{i}.log")), lines)
    }
}

/// A stand-in for a chat incoming webhook: records every POSTed body, and
/// answers 500 to the first `fail_first` deliveries (to prove retries).
pub struct WebhookReceiver {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
    attempts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookReceiver {
    pub fn start(fail_first: usize) -> Result<WebhookReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (bodies, attempts, stop) = (bodies.clone(), attempts.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let n = attempts.fetch_add(1, Ordering::Relaxed);
                    let _ = serve_one(stream, n < fail_first, &bodies);
                }
            })
        };
        Ok(WebhookReceiver {
            port,
            bodies,
            attempts,
            stop,
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Bodies accepted so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Deliveries tried so far, refused ones included.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Waits until an accepted body's text contains `needle`. Generous: a
    /// delivery the receiver refused waits out the service's backoff (0.4 s,
    /// doubling), and on a loaded machine a slow delivery times out and
    /// backs off again.
    pub fn wait_for(&self, needle: &str) -> Result<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(body) = self
                .bodies()
                .into_iter()
                .find(|b| b["text"].as_str().is_some_and(|t| t.contains(needle)))
            {
                return Ok(body);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("no webhook mentioning {needle:?}; got {:?}", self.bodies());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_one(stream: std::net::TcpStream, fail: bool, bodies: &Mutex<Vec<Value>>) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().context("content-length")?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let status = if fail {
        "500 Internal Server Error"
    } else {
        if let Ok(mut bodies) = bodies.lock() {
            bodies.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        }
        "200 OK"
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    )?;
    Ok(())
}
