//! The approval service as the filters' glue reaches it: calls through an
//! Envoy cluster, and the grants every worker shares.
//!
//! One worker per poll period (claimed by compare-and-swap on
//! `<prefix>_claim`) reads `GET /v1/grants` and publishes the answer in
//! shared data (`<prefix>`); every worker adopts a new publication into its
//! [`GrantBook`] on its tick. What the book says is decided in
//! `gatehouse_core::approval`; this module only moves bytes.

use crate::{BufferType, LogLevel, MapType, Status};
use gatehouse_core::approval::{
    ApprovalServiceConfig, FiledNotes, Filings, GrantBook, GrantsDocument,
};
use std::cell::RefCell;
use std::rc::Rc;

/// Largest grants document or call answer read.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Starts a call to the approval service; the answer comes to the calling
/// context's `on_http_call_response` with the returned token.
pub fn call(
    config: &ApprovalServiceConfig,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<u32, Status> {
    let timeout = std::time::Duration::from_millis(u64::from(config.timeout_ms));
    call_waiting(config, method, path, body, timeout)
}

/// [`call`] with its own timeout: for a call the service holds open while a
/// person decides.
pub fn call_waiting(
    config: &ApprovalServiceConfig,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: std::time::Duration,
) -> Result<u32, Status> {
    let authorization = config.authorization();
    let headers = [
        (":method", method),
        (":path", path),
        (":authority", config.authority()),
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
    ];
    crate::dispatch_http_call(&config.cluster, &headers, body, timeout)
}

/// The status of the answer being handled (0 when there is none: a timeout or
/// a failed connection).
pub fn response_status() -> u16 {
    crate::get_header(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The body of the answer being handled.
pub fn response_body(size: usize) -> Vec<u8> {
    crate::get_buffer(
        BufferType::HttpCallResponseBody,
        0,
        size.min(MAX_RESPONSE_BYTES),
    )
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// Most ids kept in the shared list of grants being used.
const MAX_SHARED_USED: usize = 256;

/// Tells every worker at once that this one is using grant `id`, so none of
/// them offers it again before the service's next publication says it is used
/// (another worker's attempt would be refused by the service). Shared data
/// under `<prefix>_used`.
pub fn share_used(prefix: &str, id: &str) {
    update_shared_lines(&format!("{prefix}_used"), |lines| {
        lines.push(id.to_owned());
        let skip = lines.len().saturating_sub(MAX_SHARED_USED);
        lines.drain(..skip);
    });
}

/// Whether some worker said it is using grant `id` (see [`share_used`]).
pub fn shared_in_use(prefix: &str, id: &str) -> bool {
    shared_lines(&format!("{prefix}_used"))
        .iter()
        .any(|line| line == id)
}

/// The lines of a shared-data value (none when absent or unreadable).
pub fn shared_lines(key: &str) -> Vec<String> {
    match crate::get_shared_data(key) {
        Ok(Some((value, _))) => String::from_utf8_lossy(&value)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Changes the lines of a shared-data value with `change`, retrying when
/// another worker wrote it meanwhile (compare-and-swap).
pub fn update_shared_lines(key: &str, mut change: impl FnMut(&mut Vec<String>)) {
    for _ in 0..8 {
        let (mut lines, cas) = match crate::get_shared_data(key) {
            Ok(Some((value, cas))) => (
                String::from_utf8_lossy(&value)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
                cas,
            ),
            Ok(None) => (Vec::new(), 0),
            Err(_) => return,
        };
        change(&mut lines);
        match crate::set_shared_data(key, lines.join("\n").as_bytes(), cas) {
            Err(Status::CasMismatch) => continue,
            _ => return,
        }
    }
}

/// The notes of requests filed that no publication names yet, in shared
/// data (`<prefix>_filed`), so a retry on any worker names the filing at once.
#[derive(Debug)]
struct SharedFilings {
    key: String,
}

impl SharedFilings {
    fn read(lines: &[String]) -> FiledNotes {
        FiledNotes::from_text(&lines.join("\n"))
    }
}

impl Filings for SharedFilings {
    fn inspect(&self, read: &mut dyn FnMut(&FiledNotes)) {
        read(&Self::read(&shared_lines(&self.key)));
    }

    fn change(&self, change: &mut dyn FnMut(&mut FiledNotes)) {
        update_shared_lines(&self.key, |lines| {
            let mut notes = Self::read(lines);
            change(&mut notes);
            *lines = notes.to_text().lines().map(str::to_owned).collect();
        });
    }
}

/// One worker's side of the grant distribution.
#[derive(Debug)]
pub struct GrantDistribution {
    prefix: &'static str,
    config: ApprovalServiceConfig,
    book: Rc<RefCell<GrantBook>>,
    /// CAS of the publication last adopted.
    adopted: Option<u32>,
    /// CAS of the shared list of grants being used, last adopted.
    adopted_used: Option<u32>,
    /// This worker's poll in flight.
    in_flight: Option<u32>,
}

impl GrantDistribution {
    pub fn new(prefix: &'static str, config: ApprovalServiceConfig) -> Self {
        GrantDistribution {
            prefix,
            config,
            book: Rc::new(RefCell::new(GrantBook::sharing_filings(Rc::new(
                SharedFilings {
                    key: format!("{prefix}_filed"),
                },
            )))),
            adopted: None,
            adopted_used: None,
            in_flight: None,
        }
    }

    /// The worker's book, shared with its sessions.
    pub fn book(&self) -> Rc<RefCell<GrantBook>> {
        Rc::clone(&self.book)
    }

    pub fn config(&self) -> &ApprovalServiceConfig {
        &self.config
    }

    /// On the root context's tick (`now_ms`: the host clock): adopts a new
    /// publication, and polls the service when this worker wins the period.
    pub fn on_tick(&mut self, now_ms: u64) {
        self.adopt_shared();
        if self.in_flight.is_none() && self.claim_poll(now_ms) {
            match call(&self.config, "GET", "/v1/grants", None) {
                Ok(token) => self.in_flight = Some(token),
                Err(status) => crate::log(
                    LogLevel::Warn,
                    &format!("gatehouse: polling the approval service failed: {status:?}"),
                ),
            }
        }
    }

    /// An HTTP call answered; `true` if it was this worker's poll.
    pub fn on_response(&mut self, token: u32, body_size: usize) -> bool {
        if self.in_flight != Some(token) {
            return false;
        }
        self.in_flight = None;
        let status = response_status();
        if status != 200 {
            crate::log(
                LogLevel::Warn,
                &format!("gatehouse: the approval service answered the grants poll with {status}"),
            );
            return true;
        }
        let body = response_body(body_size);
        match serde_json::from_slice::<GrantsDocument>(&body) {
            Ok(_) => {
                if let Err(status) = crate::set_shared_data(self.prefix, &body, 0) {
                    crate::log(
                        LogLevel::Warn,
                        &format!("gatehouse: sharing the grants failed: {status:?}"),
                    );
                }
                self.adopt_shared();
            }
            Err(error) => crate::log(
                LogLevel::Warn,
                &format!("gatehouse: the approval service's grants are unreadable: {error}"),
            ),
        }
        true
    }

    /// Adopts the newest publication and the grants other workers are using.
    pub fn adopt_shared(&mut self) {
        self.adopt_publication();
        self.adopt_used();
    }

    fn adopt_used(&mut self) {
        let Ok(Some((value, cas))) = crate::get_shared_data(&format!("{}_used", self.prefix))
        else {
            return;
        };
        if self.adopted_used == Some(cas) {
            return;
        }
        self.adopted_used = Some(cas);
        if let Ok(mut book) = self.book.try_borrow_mut() {
            for id in String::from_utf8_lossy(&value).lines() {
                book.mark_used(id);
            }
        }
    }

    fn adopt_publication(&mut self) {
        let Ok(Some((value, cas))) = crate::get_shared_data(self.prefix) else {
            return;
        };
        if self.adopted == Some(cas) {
            return;
        }
        self.adopted = Some(cas);
        match serde_json::from_slice::<GrantsDocument>(&value) {
            Ok(document) => {
                if let Ok(mut book) = self.book.try_borrow_mut() {
                    book.update(document);
                }
            }
            Err(error) => crate::log(
                LogLevel::Warn,
                &format!("gatehouse: shared grants unreadable: {error}"),
            ),
        }
    }

    /// Claims this poll period across workers (compare-and-swap on the claim time).
    fn claim_poll(&self, now_ms: u64) -> bool {
        let key = format!("{}_claim", self.prefix);
        let (previous, cas) = match crate::get_shared_data(&key) {
            Ok(Some((value, cas))) => (
                value
                    .first_chunk::<8>()
                    .map(|stamp| u64::from_be_bytes(*stamp)),
                cas,
            ),
            Ok(None) => (None, 0),
            Err(_) => return false,
        };
        let period = u64::from(self.config.poll_ms);
        if previous.is_some_and(|at| now_ms.saturating_sub(at) < period) {
            return false;
        }
        crate::set_shared_data(&key, &now_ms.to_be_bytes(), cas).is_ok()
    }
}
