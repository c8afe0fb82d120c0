//! Handing records to the audit service, and the host calls behind it.
//!
//! Filters emit each record as one finished JSON line:
//!
//! ```no_run
//! # let record_json = String::from("{}");
//! // anywhere in the glue, e.g. when the engine hands back a record:
//! gatehouse_host::records::emit(&record_json);
//! ```
//!
//! [`emit`] enqueues the line on the shared queue [`RECORD_QUEUE`] owned by the
//! singleton audit service ([`AUDIT_VM_ID`]), which delivers it to Envoy's access
//! log. The queue belongs to the service's VM, so a filter's VM being reloaded
//! (ECDS update, `FAIL_RELOAD` after a crash) loses nothing already enqueued.
//! When the queue cannot be reached (the service not started yet), lines wait in
//! a small bounded backlog of this VM and go out, in order, with the next
//! successful emit or [`flush`]. Counters (Envoy stats `wasmcustom.…`):
//! `gatehouse_records_produced` per emitted line and `gatehouse_records_dropped`
//! when the backlog overflows (the service adds its own drops to the same counter).

use crate::{MetricType, Status};
use std::cell::RefCell;
use std::collections::VecDeque;

/// vm_id of the singleton audit service that owns the record queue.
pub const AUDIT_VM_ID: &str = "gatehouse_audit";
/// Name of the shared queue records travel on.
pub const RECORD_QUEUE: &str = "gatehouse_records";
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

/// A producer's handle on the record queue; see the module docs.
#[derive(Debug)]
pub struct RecordSink {
    vm_id: String,
    queue: String,
    queue_id: Option<u32>,
    backlog: VecDeque<String>,
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
    /// A sink for the queue `queue` owned by the service VM `vm_id`.
    pub fn new(vm_id: &str, queue: &str, max_backlog: usize) -> Self {
        Self {
            vm_id: vm_id.to_string(),
            queue: queue.to_string(),
            queue_id: None,
            backlog: VecDeque::new(),
            max_backlog,
            produced_metric: None,
            dropped_metric: None,
            metrics_defined: false,
            dropped: 0,
        }
    }

    /// Hands one record (a JSON line without newline) to the audit service.
    /// `Ok` when it is on the queue; `Err` when it waits in the backlog or, with
    /// the backlog full, was dropped (counted).
    pub fn emit(&mut self, line: &str) -> Result<(), Status> {
        self.define_metrics();
        bump(self.produced_metric, 1);
        if self.flush().is_ok()
            && let Ok(()) = self.enqueue(line.as_bytes())
        {
            return Ok(());
        }
        if self.backlog.len() >= self.max_backlog {
            self.dropped += 1;
            bump(self.dropped_metric, 1);
        } else {
            self.backlog.push_back(line.to_string());
        }
        Err(Status::NotFound)
    }

    /// Sends the backlog, oldest first; `Err` if some of it still waits.
    pub fn flush(&mut self) -> Result<(), Status> {
        if self.backlog.is_empty() {
            return Ok(());
        }
        let id = self.enqueue_id()?;
        while let Some(line) = self.backlog.front() {
            if let Err(e) = enqueue_shared_queue(id, line.as_bytes()) {
                self.queue_id = None;
                return Err(e);
            }
            self.backlog.pop_front();
        }
        Ok(())
    }

    /// Lines waiting for the queue.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// Lines this sink dropped because its backlog was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn enqueue(&mut self, bytes: &[u8]) -> Result<(), Status> {
        let result = self
            .enqueue_id()
            .and_then(|id| enqueue_shared_queue(id, bytes));
        if result.is_err() {
            // Resolve again next time: the service may have (re)registered it.
            self.queue_id = None;
        }
        result
    }

    fn enqueue_id(&mut self) -> Result<u32, Status> {
        match self.queue_id {
            Some(id) => Ok(id),
            None => {
                let id = resolve_shared_queue(&self.vm_id, &self.queue)?;
                self.queue_id = Some(id);
                Ok(id)
            }
        }
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

/// Emits one record through this VM's [`RecordSink`] for the default queue.
/// Never fails loudly: a line that cannot be queued waits in the backlog or is
/// counted as dropped.
pub fn emit(line: &str) {
    SINK.with(|sink| {
        if let Ok(mut sink) = sink.try_borrow_mut() {
            let _ = sink.emit(line);
        }
    });
}

/// Retries this VM's backlog (call from a tick when records may be waiting).
pub fn flush() {
    SINK.with(|sink| {
        if let Ok(mut sink) = sink.try_borrow_mut() {
            let _ = sink.flush();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_queue_keeps_a_bounded_backlog_and_counts_overflow() {
        // Off Wasm every host call fails, as an unreachable queue does.
        let mut sink = RecordSink::new(AUDIT_VM_ID, RECORD_QUEUE, 2);
        for line in ["a", "b", "c"] {
            assert!(sink.emit(line).is_err());
        }
        assert_eq!(sink.backlog(), 2);
        assert_eq!(sink.dropped(), 1);
        assert!(sink.flush().is_err());
        assert_eq!(sink.backlog(), 2, "nothing lost by a failed flush");
    }
}
