//! The native build's record path: a writer thread per filter configuration
//! that takes the connections' records and delivers them, in batches, to the
//! record listener — the same listener, sink and access log the Wasm build's
//! audit service delivers to (docs/records.md), so both builds' records land
//! in one file in one schema.
//!
//! ```text
//! worker threads ── records of one event, one lock ──▶ pending (Mutex<Vec>)
//!   writer thread, every tick (10 ms): pending ─▶ Outbox (gatehouse-core)
//!     ─▶ POST /record (NDJSON) over one HTTP/1.1 connection ─▶ record listener
//! ```
//!
//! The writer wakes on its own tick, never per record, so a busy gateway pays
//! one lock per connection event and about a hundred wake-ups a second. The
//! [`Outbox`] gives the Wasm service's guarantees: bounded, in order, one batch
//! in flight, a failed batch resent whole and first after a backoff, a refused
//! batch split so only a record refused on its own is dropped (and counted),
//! and a `gatehouse.records_dropped` notice when records had to go. While the
//! sink is out nothing is lost until `max_buffer` records wait. When the
//! configuration goes away (an update, Envoy draining) the writer keeps
//! delivering what it holds for up to [`DRAIN_DEADLINE`].

use gatehouse_core::delivery::{DeliveryConfig, Outbox, SendOutcome, classify};
use serde::Deserialize;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the writer takes pending records and looks for a batch to send.
const TICK: Duration = Duration::from_millis(10);
/// How long a writer whose configuration went away keeps delivering.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
/// Largest response head read from the sink.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Where records go (the `records` part of the native configuration); every
/// field but `address` has the record service's default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// The record listener, `host:port`.
    pub address: String,
    pub path: String,
    pub authority: String,
    /// Records held at most before the newest are dropped.
    pub max_buffer: usize,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    /// How long a record waits for its batch to fill.
    pub linger_ms: u64,
    /// Per-send timeout.
    pub timeout_ms: u64,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        let delivery = DeliveryConfig::default();
        RecordsConfig {
            address: String::new(),
            path: "/record".into(),
            authority: "gatehouse-records".into(),
            max_buffer: delivery.max_buffer,
            max_batch_records: delivery.max_batch_records,
            max_batch_bytes: delivery.max_batch_bytes,
            linger_ms: delivery.linger_us / 1_000,
            timeout_ms: 5_000,
        }
    }
}

impl RecordsConfig {
    fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig {
            max_buffer: self.max_buffer,
            max_batch_records: self.max_batch_records,
            max_batch_bytes: self.max_batch_bytes,
            linger_us: self.linger_ms.saturating_mul(1_000),
            ..DeliveryConfig::default()
        }
    }
}

/// Totals of a writer, for the configuration's stats.
#[derive(Debug, Default)]
pub struct WriterTotals {
    pub produced: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
    pub retried: AtomicU64,
    pub batches: AtomicU64,
}

/// What workers and the writer thread share.
#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Vec<String>>,
    stopping: AtomicBool,
    totals: WriterTotals,
}

/// A configuration's handle on its writer; dropping it lets the writer drain
/// and stop.
#[derive(Debug)]
pub struct RecordWriter {
    shared: Arc<Shared>,
}

impl RecordWriter {
    /// Starts the writer thread for `config`.
    pub fn start(config: RecordsConfig) -> std::io::Result<RecordWriter> {
        if config.address.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "records.address: the record listener's host:port is required",
            ));
        }
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("gatehouse-records".into())
            .spawn(move || run(&thread_shared, &config))?;
        Ok(RecordWriter { shared })
    }

    /// Hands over one event's records (JSON lines), in order.
    pub fn emit(&self, lines: &mut Vec<String>) {
        if lines.is_empty() {
            return;
        }
        self.shared
            .totals
            .produced
            .fetch_add(lines.len() as u64, Ordering::Relaxed);
        // A poisoned lock still holds the records: a panic elsewhere must not lose them.
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.append(lines);
    }

    pub fn totals(&self) -> &WriterTotals {
        &self.shared.totals
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// The writer thread: until stopped and drained (or past the drain deadline).
fn run(shared: &Shared, config: &RecordsConfig) {
    let mut outbox = Outbox::new(config.delivery());
    let mut sink = HttpSink::new(config);
    let mut stopped_at: Option<std::time::Instant> = None;
    loop {
        std::thread::sleep(TICK);
        let lines = std::mem::take(
            &mut *shared
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let now = now_us();
        for line in lines {
            // A refusal is counted by the outbox and noticed in the log.
            let _ = outbox.offer(line, now);
        }
        while let Some(batch) = outbox.next_send(now_us()) {
            match sink.send(batch.body.as_bytes()) {
                SendOutcome::Delivered => outbox.delivered(batch.ticket, now_us()),
                SendOutcome::Rejected => outbox.rejected(batch.ticket, now_us()),
                SendOutcome::Retry => outbox.failed(batch.ticket, now_us()),
            }
        }
        let totals = outbox.totals();
        let published = &shared.totals;
        published
            .delivered
            .store(totals.delivered, Ordering::Relaxed);
        published.dropped.store(totals.dropped, Ordering::Relaxed);
        published.retried.store(totals.retried, Ordering::Relaxed);
        published.batches.store(totals.batches, Ordering::Relaxed);
        if shared.stopping.load(Ordering::Relaxed) {
            let since = *stopped_at.get_or_insert_with(std::time::Instant::now);
            let empty =
                outbox.held() == 0 && shared.pending.lock().map(|p| p.is_empty()).unwrap_or(true);
            if empty || since.elapsed() > DRAIN_DEADLINE {
                return;
            }
        }
    }
}

/// One HTTP/1.1 connection to the record listener, opened when needed.
struct HttpSink {
    address: String,
    head: String,
    timeout: Duration,
    connection: Option<TcpStream>,
}

impl HttpSink {
    fn new(config: &RecordsConfig) -> HttpSink {
        HttpSink {
            address: config.address.clone(),
            head: format!(
                "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-ndjson\r\n",
                config.path, config.authority
            ),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            connection: None,
        }
    }

    /// Sends one batch; what its answer means for the records.
    fn send(&mut self, body: &[u8]) -> SendOutcome {
        let outcome = self.try_send(body);
        match outcome {
            Ok((status, keep_open)) => {
                if !keep_open {
                    self.connection = None;
                }
                classify(Some(&status.to_string()))
            }
            Err(_) => {
                self.connection = None;
                classify(None)
            }
        }
    }

    fn try_send(&mut self, body: &[u8]) -> std::io::Result<(u16, bool)> {
        let stream = match self.connection.take() {
            Some(stream) => stream,
            None => {
                let stream = crate::connect::connect(&self.address, self.timeout)?;
                stream.set_nodelay(true)?;
                stream
            }
        };
        let mut stream = stream;
        let mut request = Vec::with_capacity(self.head.len() + 40 + body.len());
        request.extend_from_slice(self.head.as_bytes());
        request.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        request.extend_from_slice(body);
        stream.write_all(&request)?;
        let mut received = Vec::with_capacity(512);
        let mut chunk = [0u8; 4096];
        let head = loop {
            if let Some(head) = parse_response_head(&received) {
                break head;
            }
            if received.len() > MAX_RESPONSE_HEAD {
                return Err(std::io::Error::other("response head too large"));
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            received.extend_from_slice(chunk.get(..n).unwrap_or_default());
        };
        // Read (and discard) the body, so the connection can carry the next batch.
        let mut body_left = head
            .content_length
            .saturating_sub(received.len().saturating_sub(head.length));
        while body_left > 0 {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            body_left = body_left.saturating_sub(n);
        }
        if head.keep_alive {
            self.connection = Some(stream);
        }
        Ok((head.status, head.keep_alive))
    }
}

/// What the writer (and the grant poller) needs from a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    /// Bytes of the head, up to and including its blank line.
    pub(crate) length: usize,
    pub(crate) content_length: usize,
    keep_alive: bool,
}

/// Parses an HTTP/1.1 response head once `received` holds all of it.
pub(crate) fn parse_response_head(received: &[u8]) -> Option<ResponseHead> {
    let end = received.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(received.get(..end)?);
    let mut lines = text.split("\r\n");
    let status = lines
        .next()?
        .strip_prefix("HTTP/1.")?
        .get(2..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let mut content_length = 0;
    let mut keep_alive = true;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep_alive = false;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The sink answers with a length; anything else ends the connection.
            keep_alive = false;
        }
    }
    Some(ResponseHead {
        status,
        length: end + 4,
        content_length,
        keep_alive,
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // test code: a bad index is a failed test
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn response_heads_are_read_once_complete() {
        assert_eq!(parse_response_head(b"HTTP/1.1 204 No Content\r\n"), None);
        let head = parse_response_head(b"HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n").unwrap();
        assert_eq!(head.status, 204);
        assert!(head.keep_alive);
        let head = parse_response_head(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\nconnection: close\r\n\r\nabc",
        )
        .unwrap();
        assert_eq!((head.status, head.content_length), (503, 5));
        assert!(!head.keep_alive);
        assert_eq!(parse_response_head(b"garbage\r\n\r\n"), None);
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"),
            None
        );
    }

    /// A sink that answers each request with the next status of `statuses`
    /// (then 204) and keeps every body it accepted (2xx).
    fn sink(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&accepted);
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            'connections: for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                loop {
                    let mut received = Vec::new();
                    let mut chunk = [0u8; 65536];
                    let (head_len, length) = loop {
                        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&received[..end]).to_lowercase();
                            let length: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .unwrap()
                                .trim()
                                .parse()
                                .unwrap();
                            break (end + 4, length);
                        }
                        let n = stream.read(&mut chunk).unwrap();
                        if n == 0 {
                            continue 'connections;
                        }
                        received.extend_from_slice(&chunk[..n]);
                    };
                    while received.len() < head_len + length {
                        let n = stream.read(&mut chunk).unwrap();
                        received.extend_from_slice(&chunk[..n]);
                    }
                    let body = String::from_utf8(received[head_len..].to_vec()).unwrap();
                    let status = statuses.next().unwrap_or(204);
                    if (200..300).contains(&status) {
                        kept.lock().unwrap().push(body);
                    }
                    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                    stream.write_all(answer.as_bytes()).unwrap();
                }
            }
        });
        (address, accepted)
    }

    fn config(address: String) -> RecordsConfig {
        RecordsConfig {
            address,
            max_buffer: 100,
            linger_ms: 0,
            timeout_ms: 2_000,
            ..RecordsConfig::default()
        }
    }

    #[test]
    fn a_failing_sink_loses_nothing_and_order_is_kept() {
        // The first two sends fail (sink out), then everything is accepted.
        let (address, accepted) = sink(vec![503, 503]);
        let writer = RecordWriter::start(config(address)).unwrap();
        for n in 0..5 {
            writer.emit(&mut vec![format!("{{\"n\":{n}}}")]);
            std::thread::sleep(Duration::from_millis(15));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while writer.totals().delivered.load(Ordering::Relaxed) < 5 {
            assert!(std::time::Instant::now() < deadline, "records delivered");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(writer.totals().dropped.load(Ordering::Relaxed), 0);
        assert!(writer.totals().retried.load(Ordering::Relaxed) > 0);
        drop(writer);
        let delivered: Vec<String> = accepted
            .lock()
            .unwrap()
            .iter()
            .flat_map(|body| body.lines().map(str::to_string).collect::<Vec<_>>())
            .collect();
        let expected: Vec<String> = (0..5).map(|n| format!("{{\"n\":{n}}}")).collect();
        assert_eq!(delivered, expected);
    }

    #[test]
    fn an_unreachable_record_listener_is_a_send_to_retry() {
        // The writer gives up on the connect within its timeout and keeps the
        // batch for the next attempt.
        let (_guard, address) = crate::connect::unreachable();
        let mut sink = HttpSink::new(&RecordsConfig {
            address,
            timeout_ms: 200,
            ..RecordsConfig::default()
        });
        assert_eq!(sink.send(b"{}\n"), SendOutcome::Retry);
        assert!(sink.connection.is_none());
    }
}
