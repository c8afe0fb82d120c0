//! The approval service in the native build: the grants every worker of a
//! configuration reads, and the calls its connections make.
//!
//! ```text
//! grant poller thread (one per configuration), every poll_ms:
//!   GET /v1/grants over HTTP/1.1 to approvals.address ──▶ GrantFeed (Mutex + version)
//! worker threads, on each event that may need a grant (one atomic load):
//!   a new publication ──▶ the worker's GrantBook (Rc, read by its sessions' gates)
//! connections and streams:
//!   file a request, use up a single-use grant ──▶ HTTP callouts to the
//!   filter's `approvals.cluster`, answered on the worker that made them
//! ```
//!
//! Why a thread polls: the network-filter ABI makes callouts from a
//! connection only, and polling from connections stops when no client is
//! connected, so the first statement after a quiet spell would be judged
//! against grants as old as that spell (and a retry after an approval
//! refused). A thread reads them every `poll_ms` whatever the traffic, like
//! the Wasm build's root context, and costs a worker one atomic load per
//! event. The calls that belong to one connection (filing, using a grant)
//! stay callouts to the Envoy cluster, as in the Wasm build, so their answers
//! reach the connection that waits for them.
//!
//! Failing closed: the poller only ever replaces the grants with what the
//! service published; when it cannot read them the last publication stays
//! (its grants end at their `until`, and a single-use grant still has to be
//! used up at the service, which an outage refuses). What a grant allows is
//! decided in `gatehouse_core::approval` and the engines' gates.

use crate::records::parse_response_head;
use gatehouse_core::approval::{
    ApprovalServiceConfig, FiledNotes, Filings, GrantBook, GrantsDocument,
};
use gatehouse_dynamic_modules_abi::network::{CalloutResponse, CalloutResult};
use gatehouse_dynamic_modules_abi::{LogLevel, log};
use gatehouse_kubernetes::gate::{
    ApprovalMemory, RecentRefusal, forget, remember, standing_refusal,
};
use serde::Deserialize;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Largest grants document read.
const MAX_GRANTS_BYTES: usize = 4 * 1024 * 1024;
/// Most ids kept in the list of single-use grants being used.
const MAX_SHARED_USED: usize = 256;

/// Where the native build reads the grants (the `approvals` part of the
/// native envelope): the approval service's `host:port`, polled over plain
/// HTTP/1.1 with the filter's key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    pub address: String,
}

/// Why the approvals of a configuration cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalsError {
    #[error(
        "approvals.address: the filter names an approval service, so the native envelope \
         must say where the grants are read (its host:port)"
    )]
    MissingAddress,
    #[error(
        "approvals: the envelope gives the approval service's address, but the filter \
         configuration has no `approvals` section"
    )]
    NoService,
    #[error("the grant poller could not start: {0}")]
    Poller(std::io::Error),
}

/// What the workers of one configuration and its poller share.
#[derive(Debug, Default)]
struct Shared {
    /// The service's last publication.
    grants: Mutex<Arc<GrantsDocument>>,
    /// Bumped when the publication changes.
    version: AtomicU64,
    /// Single-use grants some worker is using (newest last).
    used: Mutex<Vec<String>>,
    /// Bumped when `used` grows.
    used_version: AtomicU64,
    /// Refusals the Kubernetes filter repeats for a few seconds.
    refusals: Mutex<Vec<RecentRefusal>>,
    /// Requests filed that no publication names yet.
    filed: Mutex<FiledNotes>,
    /// The configuration went away: the poller stops.
    stopping: AtomicBool,
}

/// A poisoned lock still holds good data: nothing here is left half-changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One configuration's approvals: the service, and the grants its poller
/// thread reads. Dropping it stops the poller.
#[derive(Debug)]
pub struct GrantFeed {
    service: ApprovalServiceConfig,
    shared: Arc<Shared>,
}

impl GrantFeed {
    /// The feed of a configuration whose filter names `service` and whose
    /// envelope says where to poll (`envelope`); `None` without a service.
    pub fn start(
        service: Option<&ApprovalServiceConfig>,
        envelope: Option<ApprovalsConfig>,
    ) -> Result<Option<GrantFeed>, ApprovalsError> {
        let (service, address) = match (service, envelope) {
            (None, None) => return Ok(None),
            (None, Some(_)) => return Err(ApprovalsError::NoService),
            (Some(_), None) => return Err(ApprovalsError::MissingAddress),
            (Some(service), Some(envelope)) => (service.clone(), envelope.address),
        };
        if address.trim().is_empty() {
            return Err(ApprovalsError::MissingAddress);
        }
        let shared = Arc::new(Shared::default());
        let poller = Poller {
            client: GrantsClient::new(&service, address),
            period: Duration::from_millis(u64::from(service.poll_ms)),
            shared: Arc::clone(&shared),
        };
        std::thread::Builder::new()
            .name("gatehouse-grants".into())
            .spawn(move || poller.run())
            .map_err(ApprovalsError::Poller)?;
        Ok(Some(GrantFeed { service, shared }))
    }

    /// The filter's approval service section.
    pub fn service(&self) -> &ApprovalServiceConfig {
        &self.service
    }

    /// A worker's book, kept current by [`WorkerGrants::adopt`].
    pub fn worker(&self) -> WorkerGrants {
        let filings = Rc::new(SharedFilings(Arc::clone(&self.shared)));
        WorkerGrants {
            book: Rc::new(RefCell::new(GrantBook::sharing_filings(filings))),
            adopted: 0,
            adopted_used: 0,
        }
    }

    /// Tells every worker that single-use grant `id` is being used, so none
    /// offers it again before the service's next publication says so.
    pub fn share_used(&self, id: &str) {
        let mut used = lock(&self.shared.used);
        if used.iter().any(|u| u == id) {
            return;
        }
        used.push(id.to_owned());
        let skip = used.len().saturating_sub(MAX_SHARED_USED);
        used.drain(..skip);
        self.shared.used_version.fetch_add(1, Ordering::Release);
    }

    /// The Kubernetes gate's memory shared by every worker (refusals just
    /// given, grants being used).
    pub fn memory(self: &Arc<Self>) -> Rc<dyn ApprovalMemory> {
        Rc::new(SharedMemory(Arc::clone(self)))
    }

    /// Publishes `document` if it differs from the last one (the poller).
    fn publish(shared: &Shared, document: GrantsDocument) {
        let mut grants = lock(&shared.grants);
        if **grants != document {
            *grants = Arc::new(document);
            shared.version.fetch_add(1, Ordering::Release);
        }
    }
}

impl Drop for GrantFeed {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
    }
}

/// The headers of a callout to `service` (`authorization`: its
/// [`ApprovalServiceConfig::authorization`]), as the Wasm build sends them.
pub fn call_headers<'a>(
    service: &'a ApprovalServiceConfig,
    method: &'a str,
    path: &'a str,
    authorization: &'a str,
) -> [(&'a str, &'a str); 6] {
    let authority = service.authority();
    [
        (":method", method),
        (":path", path),
        (":authority", authority),
        ("host", authority),
        ("authorization", authorization),
        ("content-type", "application/json"),
    ]
}

/// The HTTP status of a callout's answer; 0 when there is none (a reset, a
/// timeout) or it is unreadable, which the glue takes as a failed call.
pub fn answer_status(response: &CalloutResponse<'_>) -> u16 {
    if response.result != CalloutResult::Success {
        return 0;
    }
    response
        .header(":status")
        .and_then(|status| std::str::from_utf8(status).ok())
        .and_then(|status| status.parse().ok())
        .unwrap_or(0)
}

/// One worker's grants: the book its sessions read, and what it adopted.
#[derive(Debug)]
pub struct WorkerGrants {
    book: Rc<RefCell<GrantBook>>,
    adopted: u64,
    adopted_used: u64,
}

impl WorkerGrants {
    /// The worker's book, shared with its sessions' gates.
    pub fn book(&self) -> Rc<RefCell<GrantBook>> {
        Rc::clone(&self.book)
    }

    /// Brings the book up to the feed's last publication and the grants
    /// other workers are using; two atomic loads when nothing changed.
    pub fn adopt(&mut self, feed: &GrantFeed) {
        let shared = &feed.shared;
        let version = shared.version.load(Ordering::Acquire);
        let used_version = shared.used_version.load(Ordering::Acquire);
        if version == self.adopted && used_version == self.adopted_used {
            return;
        }
        // A session busy with the book adopts on the next event.
        let Ok(mut book) = self.book.try_borrow_mut() else {
            return;
        };
        if version != self.adopted {
            let document = Arc::clone(&lock(&shared.grants));
            book.update((*document).clone());
            self.adopted = version;
        }
        // Marked again after every update: a grant still published stays used.
        for id in lock(&shared.used).iter() {
            book.mark_used(id);
        }
        self.adopted_used = used_version;
    }
}

/// The notes of filings every worker of a configuration reads at once, so a
/// retry on any worker names the filing.
#[derive(Debug)]
struct SharedFilings(Arc<Shared>);

impl Filings for SharedFilings {
    fn inspect(&self, read: &mut dyn FnMut(&FiledNotes)) {
        read(&lock(&self.0.filed));
    }

    fn change(&self, change: &mut dyn FnMut(&mut FiledNotes)) {
        change(&mut lock(&self.0.filed));
    }
}

/// [`ApprovalMemory`] over a configuration's feed, for every worker.
#[derive(Debug)]
struct SharedMemory(Arc<GrantFeed>);

impl ApprovalMemory for SharedMemory {
    fn repeated_refusal(&self, subject: &str, hash: &str, now_micros: i64) -> Option<String> {
        standing_refusal(&lock(&self.0.shared.refusals), subject, hash, now_micros)
    }

    fn remember_refusal(&self, subject: &str, hash: &str, until_micros: i64, reason: &str) {
        remember(
            &mut lock(&self.0.shared.refusals),
            RecentRefusal::new(subject, hash, until_micros, reason),
        );
    }

    fn forget_refusals(&self, subject: &str, hash: &str) {
        forget(&mut lock(&self.0.shared.refusals), subject, hash);
    }

    fn in_use(&self, id: &str) -> bool {
        lock(&self.0.shared.used).iter().any(|u| u == id)
    }

    fn mark_in_use(&self, id: &str) {
        self.0.share_used(id);
    }
}

/// The poller thread of one configuration.
struct Poller {
    client: GrantsClient,
    period: Duration,
    shared: Arc<Shared>,
}

impl Poller {
    fn run(mut self) {
        // Logged when reading the grants starts or stops failing, or fails
        // for another reason, not per poll.
        let mut failing: Option<String> = None;
        while !self.shared.stopping.load(Ordering::Relaxed) {
            match self.client.read() {
                Ok(document) => {
                    if failing.take().is_some() {
                        log(
                            LogLevel::Info,
                            "gatehouse: the approval service's grants are read again",
                        );
                    }
                    GrantFeed::publish(&self.shared, document);
                }
                Err(error) => {
                    let reason = error.to_string();
                    if failing.as_ref() != Some(&reason) {
                        log(
                            LogLevel::Warn,
                            &format!(
                                "gatehouse: reading the approval service's grants failed \
                                 (the last ones read stay): {reason}"
                            ),
                        );
                        failing = Some(reason);
                    }
                }
            }
            std::thread::sleep(self.period);
        }
    }
}

/// Why the grants could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the service answered {0}")]
    Status(u16),
    #[error("the answer is not HTTP")]
    NotHttp,
    #[error("the answer is larger than {MAX_GRANTS_BYTES} bytes")]
    TooLarge,
    #[error("the grants are unreadable: {0}")]
    Unreadable(serde_json::Error),
}

/// `GET /v1/grants`, one connection per read (`connection: close`, so the
/// answer ends where the connection does).
struct GrantsClient {
    address: String,
    request: Vec<u8>,
    timeout: Duration,
}

impl GrantsClient {
    fn new(service: &ApprovalServiceConfig, address: String) -> GrantsClient {
        GrantsClient {
            address,
            request: format!(
                "GET /v1/grants HTTP/1.1\r\nhost: {}\r\nauthorization: {}\r\n\
                 accept: application/json\r\nconnection: close\r\n\r\n",
                service.authority(),
                service.authorization()
            )
            .into_bytes(),
            timeout: Duration::from_millis(u64::from(service.timeout_ms)),
        }
    }

    fn read(&mut self) -> Result<GrantsDocument, ReadError> {
        let mut stream = crate::connect::connect(&self.address, self.timeout)?;
        stream.write_all(&self.request)?;
        let mut answer = Vec::with_capacity(4096);
        let read = (&mut stream)
            .take(MAX_GRANTS_BYTES as u64 + 16 * 1024)
            .read_to_end(&mut answer)?;
        if read > MAX_GRANTS_BYTES {
            return Err(ReadError::TooLarge);
        }
        let (status, body) = split_answer(&answer).ok_or(ReadError::NotHttp)?;
        if status != 200 {
            return Err(ReadError::Status(status));
        }
        serde_json::from_slice(body).map_err(ReadError::Unreadable)
    }
}

/// The status and body of a whole HTTP/1.1 answer: as long as its content
/// length says, or up to the end of the connection without one (a chunked
/// body is taken as it is, and refused as unreadable).
fn split_answer(answer: &[u8]) -> Option<(u16, &[u8])> {
    let head = parse_response_head(answer)?;
    let rest = answer.get(head.length..)?;
    let body = match head.content_length {
        0 => rest,
        length => rest.get(..length)?,
    };
    Some((head.status, body))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // test code: a bad index is a failed test
mod tests {
    use super::*;
    use gatehouse_core::approval::{Grant, GrantKind, Lookup, PendingRef, Principal};
    use std::net::TcpListener;
    use std::time::Instant;

    fn service(poll_ms: u32) -> ApprovalServiceConfig {
        ApprovalServiceConfig::from_json(
            format!(
                r#"{{"cluster": "svc", "key": "k-1", "poll_ms": {poll_ms}, "timeout_ms": 500}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn grant(id: &str) -> Grant {
        Grant {
            id: id.into(),
            rule: "writes".into(),
            subject: "developer".into(),
            kind: GrantKind::SingleUse,
            hash: Some("sha256:aa".into()),
            until: u64::MAX / 2,
            approvers: vec![Principal {
                subject: "dba".into(),
                groups: vec!["dba".into()],
            }],
            forced: false,
            reason: None,
        }
    }

    /// A service whose answers `answer` gives, per request (by count), with
    /// the requests it saw.
    fn fake_service(
        answer: impl Fn(usize) -> Option<String> + Send + 'static,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let mut stream = stream.unwrap();
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let got = stream.read(&mut chunk).unwrap();
                    if got == 0 {
                        break;
                    }
                    request.extend_from_slice(&chunk[..got]);
                }
                kept.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&request).into_owned());
                // `None`: the service is out (the connection closes unanswered).
                if let Some(answer) = answer(n) {
                    let _ = stream.write_all(answer.as_bytes());
                }
            }
        });
        (address, seen)
    }

    fn ok(document: &GrantsDocument) -> String {
        let body = serde_json::to_string(document).unwrap();
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn lookup(grants: &WorkerGrants) -> String {
        let requirement = gatehouse_core::approval::ApprovalRequirement {
            approvers: vec!["dba".into()],
            approvals: 1,
            reason_required: false,
            pending_seconds: 3600,
            valid_seconds: u64::MAX,
            grant: GrantKind::SingleUse,
            break_glass: vec![],
            hold_seconds: 0,
        };
        match grants
            .book
            .borrow()
            .lookup("developer", "writes", &requirement, "sha256:aa", 1)
        {
            Lookup::SingleUse(grant) => format!("single use {}", grant.id),
            Lookup::Window(grant) => format!("window {}", grant.id),
            Lookup::Pending(id) => format!("pending {id}"),
            Lookup::TooManyPending(most) => format!("{most} pending already"),
            Lookup::Nothing => "nothing".into(),
        }
    }

    #[test]
    fn every_worker_reads_the_grants_the_poller_publishes_and_an_outage_publishes_nothing() {
        let with_grant = GrantsDocument {
            grants: vec![grant("apr-1")],
            pending: vec![],
            ..GrantsDocument::default()
        };
        let pending = GrantsDocument {
            grants: vec![],
            pending: vec![PendingRef {
                id: "apr-2".into(),
                rule: "writes".into(),
                subject: "developer".into(),
                hash: Some("sha256:aa".into()),
            }],
            ..GrantsDocument::default()
        };
        // Pending first, then the grant; from the fourth request on, out.
        let answers = [ok(&pending), ok(&with_grant), ok(&with_grant)];
        let (address, seen) = fake_service(move |n| answers.get(n).cloned());
        let feed = GrantFeed::start(Some(&service(100)), Some(ApprovalsConfig { address }))
            .unwrap()
            .unwrap();
        let (mut first, mut second) = (feed.worker(), feed.worker());
        assert_eq!(lookup(&first), "nothing", "nothing is seen before a poll");
        wait_until("the grant is published", || {
            first.adopt(&feed);
            lookup(&first) == "single use apr-1"
        });
        second.adopt(&feed);
        assert_eq!(lookup(&second), "single use apr-1");
        // The service goes out: the last grants stay, nothing else is made up.
        wait_until("the service is out", || seen.lock().unwrap().len() > 4);
        second.adopt(&feed);
        assert_eq!(lookup(&second), "single use apr-1");
        // What the poller sent: the filter's key, to the grants path.
        let request = seen.lock().unwrap()[0].to_lowercase();
        assert!(
            request.starts_with("get /v1/grants http/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("authorization: bearer k-1\r\n"),
            "{request}"
        );
        assert!(request.contains("host: svc\r\n"), "{request}");
    }

    #[test]
    fn a_grant_one_worker_uses_is_offered_by_no_other() {
        let document = GrantsDocument {
            grants: vec![grant("apr-1")],
            pending: vec![],
            ..GrantsDocument::default()
        };
        let answer = ok(&document);
        let (address, _) = fake_service(move |_| Some(answer.clone()));
        let feed = Arc::new(
            GrantFeed::start(Some(&service(100)), Some(ApprovalsConfig { address }))
                .unwrap()
                .unwrap(),
        );
        let (mut first, mut second) = (feed.worker(), feed.worker());
        wait_until("the grant is published", || {
            first.adopt(&feed);
            second.adopt(&feed);
            lookup(&first) == "single use apr-1" && lookup(&second) == "single use apr-1"
        });
        // The first worker's gate marks its own book and shares the use.
        first.book.borrow_mut().mark_used("apr-1");
        feed.share_used("apr-1");
        second.adopt(&feed);
        assert_eq!(lookup(&second), "nothing");
        // Still used after the next publication of the same grant.
        std::thread::sleep(Duration::from_millis(250));
        second.adopt(&feed);
        assert_eq!(lookup(&second), "nothing");
        // The Kubernetes gate's memory sees the same list.
        let memory = feed.memory();
        assert!(memory.in_use("apr-1"));
        assert!(!memory.in_use("apr-9"));
        memory.remember_refusal("developer", "h", 10, "denied");
        assert_eq!(
            feed.memory()
                .repeated_refusal("developer", "h", 5)
                .as_deref(),
            Some("denied")
        );
        assert_eq!(feed.memory().repeated_refusal("developer", "h", 11), None);
    }

    #[test]
    fn a_filing_on_one_worker_is_named_by_every_other_at_once() {
        // The service publishes nothing: only the shared notes can tell.
        let (address, _) = fake_service(|_| None);
        let feed = GrantFeed::start(Some(&service(60_000)), Some(ApprovalsConfig { address }))
            .unwrap()
            .unwrap();
        let (first, second) = (feed.worker(), feed.worker());
        let filing = PendingRef {
            id: "apr-3".into(),
            rule: "writes".into(),
            subject: "developer".into(),
            hash: Some("sha256:aa".into()),
        };
        first.book.borrow().claim_filing(filing.clone(), 1).unwrap();
        assert_eq!(lookup(&second), "pending apr-3");
        let mut again = filing;
        again.id = "apr-4".into();
        assert_eq!(
            second.book.borrow().claim_filing(again, 1),
            Err("apr-3".to_owned())
        );
        first.book.borrow().forget_filing("apr-3");
        assert_eq!(lookup(&second), "nothing");
    }

    #[test]
    fn a_refused_or_garbled_answer_publishes_nothing() {
        let answers = [
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_owned(),
            "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n{\"grants".to_owned(),
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".to_owned(),
            "not http at all".to_owned(),
        ];
        let (address, seen) = fake_service(move |n| answers.get(n).cloned());
        let feed = GrantFeed::start(Some(&service(100)), Some(ApprovalsConfig { address }))
            .unwrap()
            .unwrap();
        wait_until("every answer was read", || seen.lock().unwrap().len() >= 5);
        assert_eq!(feed.shared.version.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_service_and_its_address_come_together() {
        let address = || {
            Some(ApprovalsConfig {
                address: "127.0.0.1:9".into(),
            })
        };
        assert!(GrantFeed::start(None, None).unwrap().is_none());
        let error =
            |result: Result<Option<GrantFeed>, ApprovalsError>| result.unwrap_err().to_string();
        assert!(
            error(GrantFeed::start(Some(&service(1000)), None)).starts_with("approvals.address:")
        );
        assert!(error(GrantFeed::start(None, address())).contains("no `approvals` section"));
        let blank = Some(ApprovalsConfig {
            address: " ".into(),
        });
        assert!(
            error(GrantFeed::start(Some(&service(1000)), blank)).starts_with("approvals.address:")
        );
    }

    #[test]
    fn answers_are_split_at_the_head() {
        assert_eq!(
            split_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"),
            Some((200, &b"{}"[..]))
        );
        // Without a length, the body ends with the connection.
        assert_eq!(
            split_answer(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{\"a\": 1}"),
            Some((200, &b"{\"a\": 1}"[..]))
        );
        // A body shorter than its length was cut off.
        assert_eq!(
            split_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n{}"),
            None
        );
        assert_eq!(split_answer(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(split_answer(b"SMTP 200\r\n\r\n"), None);
    }

    #[test]
    fn an_unreachable_service_is_a_failed_read_within_the_timeout() {
        // The poller's thread must get on with its next round (and the last
        // grants' expiry) rather than wait out the system's connect timeout.
        let (_guard, address) = crate::connect::unreachable();
        let mut client = GrantsClient::new(&service(100), address);
        assert!(matches!(client.read(), Err(ReadError::Io(_))));
    }
}
