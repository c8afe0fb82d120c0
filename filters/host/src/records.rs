//! Handing records to the audit service, and the host calls behind it.
//!
//! Filters emit each record as one finished JSON line:
//!
//! ```no_run
//! # let record_json = String::from("{}");
//! // anywhere in the glue, e.g. when the engine hands back a record:
//! gatehouse_host::records::emit(&record_json);
//! // from the root context's tick, and before the VM goes away (on_done):
//! gatehouse_host::records::flush();
//! ```
//!
//! [`emit`] puts the line on the shared queue [`RECORD_QUEUE`] owned by the
//! singleton audit service ([`AUDIT_VM_ID`]), which delivers it to Envoy's access
//! log. The queue belongs to the service's VM, so a filter's VM being reloaded
//! (ECDS update, `FAIL_RELOAD` after a crash) loses nothing already enqueued.
//!
//! **Coalescing.** Envoy wakes the service's thread for every enqueue, and at
//! pgbench rates those wake-ups cost more than the records themselves. So a VM
//! enqueues at most one message per [`Coalesce::linger_us`]: the first record
//! after a quiet spell goes at once, records arriving within the linger are
//! joined (by `\n`, in order) into one message that goes with the first emit
//! after the linger, when it reaches [`Coalesce::max_records`] or
//! [`Coalesce::max_bytes`], or at the next [`flush`]. Records waiting there live
//! in this VM's memory: the glue calls [`flush`] from its tick and before the VM
//! is torn down.
//!
//! When the queue cannot be reached (the service not started yet), messages
//! wait in a bounded backlog of this VM ([`MAX_BACKLOG`] records) and go out,
//! in order, with the next enqueue or [`flush`]. Counters (Envoy stats
//! `wasmcustom.…`): `gatehouse_records_produced` per emitted line (counted
//! when its message is formed) and
//! `gatehouse_records_dropped` when the backlog overflows or a line is not one
//! line (the service adds its own drops to the same counter).

use crate::{MetricType, Status};
use std::cell::RefCell;
use std::collections::VecDeque;

/// vm_id of the singleton audit service that owns the record queue.
pub const AUDIT_VM_ID: &str = "gatehouse_audit";
/// Name of the shared queue records travel on.
pub use gatehouse_core::delivery::RECORD_QUEUE;
/// Lines a producer VM keeps while the queue is unreachable.
pub const MAX_BACKLOG: usize = 1024;

#[cfg(target_arch = "wasm32")]
mod abi {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        pub fn proxy_register_shared_queue(
            name: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        pub fn proxy_resolve_shared_queue(
            vm_id: *const u8,
            vm_id_size: usize,
            name: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        pub fn proxy_enqueue_shared_queue(id: u32, data: *const u8, data_size: usize) -> u32;
        pub fn proxy_dequeue_shared_queue(
            id: u32,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    }
}

/// Registers (or finds) a queue owned by this VM; its `on_queue_ready` fires on enqueues.
pub fn register_shared_queue(name: &str) -> Result<u32, Status> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut id: u32 = 0;
        // SAFETY: `name` outlives the call; `id` is a valid out-pointer.
        crate::ok(unsafe { abi::proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) })
            .map(|()| id)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = name;
        Err(Status::InternalFailure)
    }
}

/// Finds the queue `name` registered by the VM `vm_id` (`NotFound` until it exists).
pub fn resolve_shared_queue(vm_id: &str, name: &str) -> Result<u32, Status> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut id: u32 = 0;
        // SAFETY: both slices outlive the call; `id` is a valid out-pointer.
        crate::ok(unsafe {
            abi::proxy_resolve_shared_queue(
                vm_id.as_ptr(),
                vm_id.len(),
                name.as_ptr(),
                name.len(),
                &mut id,
            )
        })
        .map(|()| id)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (vm_id, name);
        Err(Status::InternalFailure)
    }
}

/// Appends one message to a queue.
pub fn enqueue_shared_queue(id: u32, value: &[u8]) -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: `value` outlives the call.
        crate::ok(unsafe { abi::proxy_enqueue_shared_queue(id, value.as_ptr(), value.len()) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (id, value);
        Err(Status::InternalFailure)
    }
}

/// Takes the oldest message from a queue (`None` when it is empty).
pub fn dequeue_shared_queue(id: u32) -> Result<Option<Vec<u8>>, Status> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: out-pointers are valid locals; see `take_host_bytes` for the result.
        let code = unsafe { abi::proxy_dequeue_shared_queue(id, &mut data, &mut size) };
        match crate::status(code) {
            Status::Ok => Ok(crate::abi::take_host_bytes(data, size).or(Some(Vec::new()))),
            Status::Empty => Ok(None),
            other => Err(other),
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = id;
        Err(Status::InternalFailure)
    }
}

/// Sets the root context's `on_tick` period (0 stops ticks).
pub fn set_tick_period_ms(period_ms: u32) -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain value only.
        crate::ok(unsafe { abi::proxy_set_tick_period_milliseconds(period_ms) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = period_ms;
        Err(Status::InternalFailure)
    }
}

/// Where a [`RecordSink`]'s messages go: the host's shared queues, or a test double.
pub trait RecordQueue {
    /// Finds the queue `name` of the VM `vm_id`.
    fn resolve(&mut self, vm_id: &str, name: &str) -> Result<u32, Status>;
    /// Appends one message.
    fn enqueue(&mut self, id: u32, message: &[u8]) -> Result<(), Status>;
}

/// The host's shared queues.
#[derive(Debug, Default)]
pub struct HostQueue;

impl RecordQueue for HostQueue {
    fn resolve(&mut self, vm_id: &str, name: &str) -> Result<u32, Status> {
        resolve_shared_queue(vm_id, name)
    }
    fn enqueue(&mut self, id: u32, message: &[u8]) -> Result<(), Status> {
        enqueue_shared_queue(id, message)
    }
}

/// When a producer VM joins records into one queue message; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalesce {
    /// At most one message per this interval (0: one message per record).
    pub linger_us: u64,
    /// Records per message, at most.
    pub max_records: usize,
    /// Bytes per message before it goes (a larger record goes alone).
    pub max_bytes: usize,
}

impl Default for Coalesce {
    fn default() -> Self {
        Self {
            linger_us: 10_000,
            max_records: 256,
            max_bytes: 64 << 10,
        }
    }
}

/// Records joined into one message, not yet enqueued.
#[derive(Debug, Default)]
struct Message {
    text: String,
    records: usize,
}

/// A producer's handle on the record queue; see the module docs.
#[derive(Debug)]
pub struct RecordSink<Q: RecordQueue = HostQueue> {
    queue_backend: Q,
    vm_id: String,
    queue: String,
    queue_id: Option<u32>,
    coalesce: Coalesce,
    /// Records waiting for the linger to pass.
    pending: Message,
    /// When the last message was enqueued (or tried).
    last_enqueue_us: Option<u64>,
    /// Messages waiting for the queue to be reachable, oldest first.
    backlog: VecDeque<Message>,
    backlog_records: usize,
    max_backlog: usize,
    produced_metric: Option<u32>,
    dropped_metric: Option<u32>,
    metrics_defined: bool,
    dropped: u64,
}

impl Default for RecordSink {
    fn default() -> Self {
        Self::new(AUDIT_VM_ID, RECORD_QUEUE, MAX_BACKLOG)
    }
}

impl RecordSink {
    /// A sink for the queue `queue` owned by the service VM `vm_id`, keeping at
    /// most `max_backlog` records while the queue is unreachable.
    pub fn new(vm_id: &str, queue: &str, max_backlog: usize) -> Self {
        Self::with_queue(HostQueue, vm_id, queue, max_backlog, Coalesce::default())
    }
}

impl<Q: RecordQueue> RecordSink<Q> {
    /// A sink enqueuing through `queue_backend`, coalescing as `coalesce` says.
    pub fn with_queue(
        queue_backend: Q,
        vm_id: &str,
        queue: &str,
        max_backlog: usize,
        coalesce: Coalesce,
    ) -> Self {
        Self {
            queue_backend,
            vm_id: vm_id.to_string(),
            queue: queue.to_string(),
            queue_id: None,
            coalesce,
            pending: Message::default(),
            last_enqueue_us: None,
            backlog: VecDeque::new(),
            backlog_records: 0,
            max_backlog,
            produced_metric: None,
            dropped_metric: None,
            metrics_defined: false,
            dropped: 0,
        }
    }

    /// Hands one record (a JSON line without newline) to the audit service at
    /// time `now_us`. `Ok` when it is on the queue or waits for the linger;
    /// `Err` when it waits in the backlog or was dropped (counted): the backlog
    /// was full, or the line was empty or held a newline.
    pub fn emit(&mut self, line: &str, now_us: u64) -> Result<(), Status> {
        self.define_metrics();
        if line.is_empty() || line.contains('\n') {
            bump(self.produced_metric, 1);
            self.count_dropped(1);
            return Err(Status::BadArgument);
        }
        let mut result = Ok(());
        let would_be = self.pending.text.len() + 1 + line.len();
        if self.pending.records > 0 && would_be > self.coalesce.max_bytes {
            // Whatever happens to the full message, this line still joins the next.
            result = self.seal(now_us);
        }
        if self.pending.records > 0 {
            self.pending.text.push('\n');
        }
        self.pending.text.push_str(line);
        self.pending.records += 1;
        let lingered = self
            .last_enqueue_us
            .is_none_or(|last| now_us >= last.saturating_add(self.coalesce.linger_us));
        if lingered
            || self.pending.records >= self.coalesce.max_records
            || self.pending.text.len() >= self.coalesce.max_bytes
        {
            result = self.seal(now_us);
        }
        result
    }

    /// Enqueues the records waiting for the linger and the backlog, oldest
    /// first; `Err` if some of it still waits for the queue.
    pub fn flush(&mut self, now_us: u64) -> Result<(), Status> {
        if self.pending.records > 0 {
            return self.seal(now_us);
        }
        self.send_backlog()
    }

    /// Records waiting for the queue (backlog) or for the linger.
    pub fn waiting(&self) -> usize {
        self.backlog_records + self.pending.records
    }

    /// Lines this sink dropped: backlog full, or not one line.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Moves the pending records into the backlog (bounded) and sends the backlog.
    fn seal(&mut self, now_us: u64) -> Result<(), Status> {
        let message = std::mem::take(&mut self.pending);
        self.last_enqueue_us = Some(now_us);
        // Counted per message rather than per line: one host call instead of many.
        bump(
            self.produced_metric,
            i64::try_from(message.records).unwrap_or(i64::MAX),
        );
        if self.backlog_records + message.records > self.max_backlog {
            self.count_dropped(message.records as u64);
        } else {
            self.backlog_records += message.records;
            self.backlog.push_back(message);
        }
        self.send_backlog()
    }

    fn send_backlog(&mut self) -> Result<(), Status> {
        if self.backlog.is_empty() {
            return Ok(());
        }
        let id = match self.queue_id {
            Some(id) => id,
            None => {
                let id = self.queue_backend.resolve(&self.vm_id, &self.queue)?;
                self.queue_id = Some(id);
                id
            }
        };
        while let Some(message) = self.backlog.front() {
            if let Err(e) = self.queue_backend.enqueue(id, message.text.as_bytes()) {
                // Resolve again next time: the service may have (re)registered it.
                self.queue_id = None;
                return Err(e);
            }
            self.backlog_records = self.backlog_records.saturating_sub(message.records);
            self.backlog.pop_front();
        }
        Ok(())
    }

    fn count_dropped(&mut self, records: u64) {
        self.dropped += records;
        bump(
            self.dropped_metric,
            i64::try_from(records).unwrap_or(i64::MAX),
        );
    }

    fn define_metrics(&mut self) {
        if !self.metrics_defined {
            self.metrics_defined = true;
            self.produced_metric =
                crate::define_metric(MetricType::Counter, "gatehouse_records_produced").ok();
            self.dropped_metric =
                crate::define_metric(MetricType::Counter, "gatehouse_records_dropped").ok();
        }
    }
}

fn bump(metric: Option<u32>, by: i64) {
    if let Some(id) = metric {
        let _ = crate::increment_metric(id, by);
    }
}

thread_local! {
    // A Wasm VM is single-threaded: one sink per VM.
    static SINK: RefCell<RecordSink> = RefCell::new(RecordSink::default());
}

fn now_us() -> u64 {
    crate::now_micros().unwrap_or_default()
}

/// Emits one record through this VM's [`RecordSink`] for the default queue.
/// Never fails loudly: a line that cannot be queued yet waits (linger or
/// backlog) or is counted as dropped.
pub fn emit(line: &str) {
    emit_at(line, now_us());
}

/// [`emit`] for a caller that has just read the clock (`now_us`, unix
/// microseconds): one host call fewer per record on the data path.
pub fn emit_at(line: &str, now_us: u64) {
    SINK.with(|sink| {
        if let Ok(mut sink) = sink.try_borrow_mut() {
            let _ = sink.emit(line, now_us);
        }
    });
}

/// Enqueues this VM's waiting records now: call it from the root context's
/// tick and from `on_done`, so nothing waits in a VM that goes away.
pub fn flush() {
    SINK.with(|sink| {
        if let Ok(mut sink) = sink.try_borrow_mut() {
            let _ = sink.flush(now_us());
        }
    });
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A queue that records messages, reachable unless `down`.
    #[derive(Default)]
    struct FakeQueue {
        messages: Vec<String>,
        down: bool,
    }

    impl RecordQueue for FakeQueue {
        fn resolve(&mut self, _vm_id: &str, _name: &str) -> Result<u32, Status> {
            if self.down {
                Err(Status::NotFound)
            } else {
                Ok(7)
            }
        }
        fn enqueue(&mut self, _id: u32, message: &[u8]) -> Result<(), Status> {
            if self.down {
                return Err(Status::NotFound);
            }
            self.messages
                .push(String::from_utf8_lossy(message).into_owned());
            Ok(())
        }
    }

    fn sink(max_backlog: usize, coalesce: Coalesce) -> RecordSink<FakeQueue> {
        RecordSink::with_queue(
            FakeQueue::default(),
            AUDIT_VM_ID,
            RECORD_QUEUE,
            max_backlog,
            coalesce,
        )
    }

    #[test]
    fn records_within_the_linger_go_as_one_message_in_order() {
        let mut s = sink(
            100,
            Coalesce {
                linger_us: 100,
                ..Coalesce::default()
            },
        );
        s.emit("a", 1_000).unwrap();
        assert_eq!(s.queue_backend.messages, ["a"], "the first goes at once");
        s.emit("b", 1_010).unwrap();
        s.emit("c", 1_050).unwrap();
        assert_eq!(s.waiting(), 2);
        s.emit("d", 1_100).unwrap();
        assert_eq!(s.queue_backend.messages, ["a", "b\nc\nd"]);
        s.emit("e", 1_120).unwrap();
        s.flush(1_130).unwrap();
        assert_eq!(s.queue_backend.messages, ["a", "b\nc\nd", "e"]);
        assert_eq!(s.waiting(), 0);
    }

    #[test]
    fn a_message_goes_when_it_reaches_the_record_or_byte_limit() {
        let mut s = sink(
            100,
            Coalesce {
                linger_us: 1_000_000,
                max_records: 3,
                max_bytes: 8,
            },
        );
        s.emit("a", 0).unwrap();
        for line in ["b", "c", "d"] {
            s.emit(line, 1).unwrap();
        }
        assert_eq!(s.queue_backend.messages, ["a", "b\nc\nd"]);
        s.emit("12345", 2).unwrap();
        s.emit("6789", 2).unwrap();
        assert_eq!(
            s.queue_backend.messages,
            ["a", "b\nc\nd", "12345"],
            "12345 and 6789 together would pass 8 bytes"
        );
        s.emit("a record over the limit", 3).unwrap();
        assert_eq!(s.queue_backend.messages.len(), 5);
        assert_eq!(
            s.queue_backend.messages[3..],
            ["6789", "a record over the limit"]
        );
    }

    #[test]
    fn unreachable_queue_keeps_a_bounded_backlog_and_counts_overflow() {
        let mut s = sink(
            2,
            Coalesce {
                linger_us: 0,
                ..Coalesce::default()
            },
        );
        s.queue_backend.down = true;
        for line in ["a", "b", "c"] {
            assert!(s.emit(line, 0).is_err());
        }
        assert_eq!(s.waiting(), 2);
        assert_eq!(s.dropped(), 1);
        assert!(s.flush(1).is_err());
        assert_eq!(s.waiting(), 2, "nothing lost by a failed flush");
        s.queue_backend.down = false;
        s.flush(2).unwrap();
        assert_eq!(
            s.queue_backend.messages,
            ["a", "b"],
            "in order once reachable"
        );
    }

    #[test]
    fn while_the_queue_is_down_every_line_waits_in_order() {
        let mut s = sink(
            10,
            Coalesce {
                linger_us: 1_000,
                max_records: 10,
                max_bytes: 3,
            },
        );
        s.queue_backend.down = true;
        for line in ["a", "b", "c"] {
            // "c" fills the message holding "b"; it is sealed and fails, "c" waits.
            let _ = s.emit(line, 0);
        }
        assert_eq!(s.waiting(), 3);
        s.queue_backend.down = false;
        s.flush(1).unwrap();
        assert_eq!(s.queue_backend.messages.join("\n"), "a\nb\nc");
    }

    #[test]
    fn a_line_that_is_empty_or_spans_lines_is_dropped_and_counted() {
        let mut s = sink(10, Coalesce::default());
        assert!(s.emit("", 0).is_err());
        assert!(s.emit("{\n}", 0).is_err());
        assert_eq!(s.dropped(), 2);
        assert_eq!(s.waiting(), 0);
        assert!(s.queue_backend.messages.is_empty());
    }

    #[test]
    fn the_host_sink_off_wasm_keeps_lines_in_the_backlog() {
        // Off Wasm every host call fails, as an unreachable queue does.
        let mut sink = RecordSink::new(AUDIT_VM_ID, RECORD_QUEUE, 2);
        assert!(sink.emit("a", 0).is_err());
        assert_eq!(sink.waiting(), 1);
    }
}
