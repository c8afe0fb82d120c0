//! Network filters: the event hooks Envoy calls, and the safe handles a filter
//! gets to call Envoy back.
//!
//! A module registers one function that builds a [`NetworkFilterConfig`] from
//! the filter's name and configuration bytes ([`crate::declare_network_filters`]).
//! Envoy then drives it:
//!
//! - on the main thread, `config_new` builds the configuration (it may define
//!   metrics with its [`ConfigEnvoy`]), `config_destroy` drops it;
//! - on a worker thread, per connection, `new` asks the configuration for a
//!   [`NetworkFilter`], whose methods then receive every event of that
//!   connection with a [`Connection`] to act on it, until `destroy` drops it.
//!
//! Every hook runs its body under [`guard`]: a panic is caught at the boundary,
//! logged, and the connection it happened on is aborted (nothing it had not
//! seen is passed on); the filter is then inert. A panic must never unwind
//! into Envoy, which is C++ and would abort the process.

pub use crate::boundary::{CalloutResponse, CalloutResult};
use crate::boundary::{callout_response, envoy_bytes, guard, try_hook};
use crate::sys::{self, EnvoyBuffer, ModuleBuffer, envoy_call};
use crate::{LogLevel, log};
use std::cell::{Cell, UnsafeCell};
use std::sync::OnceLock;

/// Whether Envoy passes the data on to the next filter now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterStatus {
    Continue,
    /// Hold it (in Envoy's buffer) until [`Connection::continue_reading`].
    StopIteration,
}

impl FilterStatus {
    fn code(self) -> sys::DataStatus {
        match self {
            FilterStatus::Continue => sys::DATA_STATUS_CONTINUE,
            FilterStatus::StopIteration => sys::DATA_STATUS_STOP_ITERATION,
        }
    }
}

/// A connection event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// The peer (the client) closed.
    RemoteClose,
    /// Envoy closed the connection (a filter asked, the upstream went away, …).
    LocalClose,
    Connected,
    ConnectedZeroRtt,
    /// A code this binding does not know.
    Other(u32),
}

impl ConnectionEvent {
    fn from_code(code: sys::ConnectionEventCode) -> Self {
        match code {
            sys::EVENT_REMOTE_CLOSE => ConnectionEvent::RemoteClose,
            sys::EVENT_LOCAL_CLOSE => ConnectionEvent::LocalClose,
            sys::EVENT_CONNECTED => ConnectionEvent::Connected,
            sys::EVENT_CONNECTED_ZERO_RTT => ConnectionEvent::ConnectedZeroRtt,
            other => ConnectionEvent::Other(other),
        }
    }
}

/// How a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// After the bytes already written to the connection are flushed.
    FlushWrite,
    /// At once, dropping anything not yet written.
    Abort,
}

impl CloseKind {
    fn code(self) -> sys::CloseType {
        match self {
            CloseKind::FlushWrite => sys::CLOSE_FLUSH_WRITE,
            CloseKind::Abort => sys::CLOSE_ABORT,
        }
    }
}

/// A metric a configuration defined; used through [`Connection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricId(usize);

/// A network filter's configuration: built on the main thread, shared by
/// every worker, so it must be `Send + Sync` (per-worker state belongs in the
/// filters or in thread-locals).
pub trait NetworkFilterConfig: Send + Sync {
    /// A filter for a new connection (on its worker thread); `None` closes it.
    fn new_filter(&self, connection: &mut Connection) -> Option<Box<dyn NetworkFilter>>;

    /// An event committed through a [`ConfigScheduler`], on the main thread,
    /// where the configuration's metrics can be defined and counted.
    fn on_scheduled(&self, _envoy: &mut ConfigEnvoy, _event_id: u64) {}
}

/// One connection's filter. Client → server bytes are "read", server →
/// client bytes "write", as in Envoy.
pub trait NetworkFilter {
    fn on_new_connection(&mut self, _connection: &mut Connection) -> FilterStatus {
        FilterStatus::Continue
    }
    /// `length` bytes from the client are in the read buffer.
    fn on_read(
        &mut self,
        connection: &mut Connection,
        length: usize,
        end_stream: bool,
    ) -> FilterStatus;
    /// `length` bytes for the client are in the write buffer.
    fn on_write(
        &mut self,
        connection: &mut Connection,
        length: usize,
        end_stream: bool,
    ) -> FilterStatus;
    fn on_event(&mut self, _connection: &mut Connection, _event: ConnectionEvent) {}
    fn on_http_callout_done(
        &mut self,
        _connection: &mut Connection,
        _callout_id: u64,
        _response: CalloutResponse<'_>,
    ) {
    }
    /// An event committed through this connection's [`Scheduler`].
    fn on_scheduled(&mut self, _connection: &mut Connection, _event_id: u64) {}
}

/// Builds a configuration from the filter's name and its configuration bytes
/// (for a `StringValue`, the string); `Err` rejects the configuration.
pub type NewConfigFn = fn(
    name: &str,
    config: &[u8],
    envoy: &mut ConfigEnvoy,
) -> Result<Box<dyn NetworkFilterConfig>, String>;

static NEW_CONFIG: OnceLock<NewConfigFn> = OnceLock::new();

/// What `envoy_dynamic_module_on_program_init` does (see
/// [`crate::declare_network_filters`]): registers `new_config`, routes panic
/// messages to Envoy's log, and reports the ABI version.
pub fn program_init(new_config: NewConfigFn) -> *const std::ffi::c_char {
    let _ = NEW_CONFIG.set(new_config);
    std::panic::set_hook(Box::new(|info| {
        log(
            LogLevel::Critical,
            &format!("gatehouse native module panicked: {info}"),
        );
    }));
    sys::ABI_VERSION.as_ptr().cast()
}

/// Envoy's side of a configuration: handed to `config_new` and to
/// [`NetworkFilterConfig::on_scheduled`], both on the main thread.
pub struct ConfigEnvoy {
    ptr: sys::NetworkFilterConfigEnvoyPtr,
}

impl ConfigEnvoy {
    fn define(
        &mut self,
        name: &str,
        define: Option<
            unsafe extern "C" fn(
                sys::NetworkFilterConfigEnvoyPtr,
                ModuleBuffer,
                *mut usize,
            ) -> sys::MetricsResult,
        >,
    ) -> Option<MetricId> {
        let define = define?;
        let mut id = 0usize;
        // SAFETY: `ptr` is the configuration Envoy is building (valid during
        // config_new); `name` outlives the call; `id` is a valid out-pointer.
        let result = unsafe { define(self.ptr, ModuleBuffer::of(name.as_bytes()), &mut id) };
        (result == sys::METRICS_SUCCESS).then_some(MetricId(id))
    }

    pub fn define_counter(&mut self, name: &str) -> Option<MetricId> {
        let define =
            sys::callbacks().envoy_dynamic_module_callback_network_filter_config_define_counter;
        self.define(name, define)
    }

    pub fn define_gauge(&mut self, name: &str) -> Option<MetricId> {
        let define =
            sys::callbacks().envoy_dynamic_module_callback_network_filter_config_define_gauge;
        self.define(name, define)
    }

    pub fn define_histogram(&mut self, name: &str) -> Option<MetricId> {
        let define =
            sys::callbacks().envoy_dynamic_module_callback_network_filter_config_define_histogram;
        self.define(name, define)
    }

    /// Adds `by` to a counter this configuration defined.
    pub fn increment_counter(&mut self, id: MetricId, by: u64) -> bool {
        // SAFETY: `ptr` is this configuration, used on the main thread; `id`
        // came from it.
        envoy_call!(
            envoy_dynamic_module_callback_network_filter_config_increment_counter(
                self.ptr, id.0, by
            )
        ) == Some(sys::METRICS_SUCCESS)
    }

    /// A handle that wakes [`NetworkFilterConfig::on_scheduled`] on the main
    /// thread, from any thread.
    pub fn scheduler(&mut self) -> Option<ConfigScheduler> {
        // SAFETY: `ptr` is valid during config_new; Envoy allocates the
        // scheduler and the module owns it from here (deleted on drop).
        let ptr = envoy_call!(
            envoy_dynamic_module_callback_network_filter_config_scheduler_new(self.ptr)
        )?;
        (!ptr.is_null()).then_some(ConfigScheduler { ptr })
    }
}

/// Commits events to a configuration's main thread, from any thread.
pub struct ConfigScheduler {
    ptr: sys::NetworkFilterConfigSchedulerPtr,
}

// SAFETY: the header documents commit as callable from any thread; the
// pointer is only used for commit and delete.
unsafe impl Send for ConfigScheduler {}
// SAFETY: as above; commit takes the pointer by value and Envoy synchronises.
unsafe impl Sync for ConfigScheduler {}

impl ConfigScheduler {
    pub fn commit(&self, event_id: u64) {
        // SAFETY: `ptr` came from config_scheduler_new and is deleted only on drop.
        envoy_call!(
            envoy_dynamic_module_callback_network_filter_config_scheduler_commit(
                self.ptr, event_id
            )
        );
    }
}

impl Drop for ConfigScheduler {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from config_scheduler_new and is deleted once.
        envoy_call!(envoy_dynamic_module_callback_network_filter_config_scheduler_delete(self.ptr));
    }
}

/// Commits events to one connection's filter on its worker thread, from any
/// thread; a commit after the connection ended is dropped by Envoy.
pub struct Scheduler {
    ptr: sys::NetworkFilterSchedulerPtr,
}

// SAFETY: the header documents commit as safe from any thread, and a no-op
// once the filter is destroyed.
unsafe impl Send for Scheduler {}
// SAFETY: as above.
unsafe impl Sync for Scheduler {}

impl Scheduler {
    pub fn commit(&self, event_id: u64) {
        // SAFETY: `ptr` came from scheduler_new and is deleted only on drop.
        envoy_call!(
            envoy_dynamic_module_callback_network_filter_scheduler_commit(self.ptr, event_id)
        );
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from scheduler_new and is deleted once.
        envoy_call!(envoy_dynamic_module_callback_network_filter_scheduler_delete(self.ptr));
    }
}

/// Which of a connection's two buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    /// Client → server (Envoy's read buffer).
    Read,
    /// Server → client (Envoy's write buffer).
    Write,
}

/// Envoy's side of one connection, handed to each hook of its filter. Valid
/// for that hook only; not `Send` (Envoy's connection lives on its worker).
pub struct Connection {
    ptr: sys::NetworkFilterEnvoyPtr,
    /// The slot of the filter whose hook this is (null in `new`, before it exists).
    slot: *const FilterSlot,
}

type MetricCall =
    unsafe extern "C" fn(sys::NetworkFilterEnvoyPtr, usize, u64) -> sys::MetricsResult;

impl Connection {
    /// The bytes of a buffer, as Envoy's chunks (valid until the buffer changes).
    pub fn chunks(&self, buffer: Buffer) -> Vec<&[u8]> {
        let callbacks = sys::callbacks();
        let (size_fn, chunks_fn) = match buffer {
            Buffer::Read => (
                callbacks.envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks_size,
                callbacks.envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks,
            ),
            Buffer::Write => (
                callbacks.envoy_dynamic_module_callback_network_filter_get_write_buffer_chunks_size,
                callbacks.envoy_dynamic_module_callback_network_filter_get_write_buffer_chunks,
            ),
        };
        let (Some(size_fn), Some(chunks_fn)) = (size_fn, chunks_fn) else {
            return Vec::new();
        };
        // SAFETY: `ptr` is the filter Envoy called this hook for.
        let count = unsafe { size_fn(self.ptr) };
        if count == 0 {
            return Vec::new();
        }
        let mut raw = vec![EnvoyBuffer::EMPTY; count];
        // SAFETY: `raw` has room for `count` entries, the number Envoy just gave.
        if !unsafe { chunks_fn(self.ptr, raw.as_mut_ptr()) } {
            return Vec::new();
        }
        raw.iter()
            .filter(|chunk| !chunk.ptr.is_null() && chunk.length > 0)
            // SAFETY: Envoy owns each chunk and keeps it valid until the buffer
            // changes; the borrow of `self` (changes need `&mut self`) bounds it.
            .map(|chunk| unsafe { std::slice::from_raw_parts(chunk.ptr, chunk.length) })
            .collect()
    }

    /// A buffer's bytes, copied into one slice.
    pub fn buffer_bytes(&self, buffer: Buffer) -> Vec<u8> {
        self.chunks(buffer).concat()
    }

    /// Replaces the first `length` bytes of a buffer with `bytes`; `false` if
    /// Envoy refused.
    pub fn replace(&mut self, buffer: Buffer, length: usize, bytes: &[u8]) -> bool {
        let data = ModuleBuffer::of(bytes);
        // SAFETY (every call below): `ptr` is this hook's filter; `bytes`
        // outlives the calls.
        match buffer {
            Buffer::Read => {
                envoy_call!(
                    envoy_dynamic_module_callback_network_filter_drain_read_buffer(
                        self.ptr, length
                    )
                ) == Some(true)
                    && (bytes.is_empty()
                        || envoy_call!(
                            envoy_dynamic_module_callback_network_filter_append_read_buffer(
                                self.ptr, data
                            )
                        ) == Some(true))
            }
            Buffer::Write => {
                envoy_call!(
                    envoy_dynamic_module_callback_network_filter_drain_write_buffer(
                        self.ptr, length
                    )
                ) == Some(true)
                    && (bytes.is_empty()
                        || envoy_call!(
                            envoy_dynamic_module_callback_network_filter_append_write_buffer(
                                self.ptr, data
                            )
                        ) == Some(true))
            }
        }
    }

    /// Writes `bytes` to the client now, on the filter's own initiative (they
    /// pass the write filters after this one); `end_stream` half-closes.
    ///
    /// The filter is not shown these bytes again on its write path: Envoy
    /// runs the write filters on them inside this call, and the binding
    /// passes them on there without calling the filter (see [`FilterSlot`]).
    pub fn write_to_client(&mut self, bytes: &[u8], end_stream: bool) -> bool {
        // SAFETY: `slot` is null or the slot of the filter whose hook holds
        // this connection, alive for the whole hook; only its cells are used.
        let slot = unsafe { self.slot.as_ref() };
        if let Some(slot) = slot {
            slot.own_bytes
                .set(slot.own_bytes.get().saturating_add(bytes.len()));
        }
        // SAFETY: `ptr` is this hook's filter; `bytes` outlives the call.
        let written = envoy_call!(envoy_dynamic_module_callback_network_filter_write(
            self.ptr,
            ModuleBuffer::of(bytes),
            end_stream
        ))
        .is_some();
        if let (false, Some(slot)) = (written, slot) {
            slot.own_bytes
                .set(slot.own_bytes.get().saturating_sub(bytes.len()));
        }
        written
    }

    /// Hands `bytes` to the read filters after this one (to the server, past
    /// `tcp_proxy`) now, as if they had come from the client; this filter
    /// does not see them. What Envoy's read buffer holds stays there.
    pub fn inject_read_data(&mut self, bytes: &[u8]) -> bool {
        // SAFETY: `ptr` is this hook's filter; `bytes` outlives the call.
        envoy_call!(
            envoy_dynamic_module_callback_network_filter_inject_read_data(
                self.ptr,
                ModuleBuffer::of(bytes),
                false
            )
        )
        .is_some()
    }

    /// Resumes reading after a hook returned [`FilterStatus::StopIteration`].
    pub fn continue_reading(&mut self) {
        // SAFETY: `ptr` is this hook's filter.
        envoy_call!(envoy_dynamic_module_callback_network_filter_continue_reading(self.ptr));
    }

    /// Stops (`true`) or resumes (`false`) reading from the client's socket;
    /// the calls nest (as many resumes as stops). `false` if Envoy refused.
    pub fn read_disable(&mut self, disable: bool) -> bool {
        // SAFETY: `ptr` is this hook's filter.
        envoy_call!(envoy_dynamic_module_callback_network_filter_read_disable(
            self.ptr, disable
        ))
        .is_some()
    }

    pub fn close(&mut self, kind: CloseKind) -> bool {
        // SAFETY: `ptr` is this hook's filter.
        envoy_call!(envoy_dynamic_module_callback_network_filter_close(
            self.ptr,
            kind.code()
        ))
        .is_some()
    }

    pub fn connection_id(&self) -> Option<u64> {
        // SAFETY: `ptr` is this hook's filter.
        envoy_call!(envoy_dynamic_module_callback_network_filter_get_connection_id(self.ptr))
    }

    /// The client's address (`ip:port`), when it is an IP address.
    pub fn remote_address(&self) -> Option<String> {
        let mut address = EnvoyBuffer::EMPTY;
        let mut port = 0u32;
        // SAFETY: `ptr` is this hook's filter; both out-pointers are valid locals.
        let found = envoy_call!(
            envoy_dynamic_module_callback_network_filter_get_remote_address(
                self.ptr,
                &mut address,
                &mut port
            )
        )?;
        if !found || address.ptr.is_null() {
            return None;
        }
        let host = String::from_utf8_lossy(envoy_bytes(address));
        Some(if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        })
    }

    /// Whether the client side already speaks TLS.
    pub fn is_tls(&self) -> bool {
        // SAFETY: `ptr` is this hook's filter.
        envoy_call!(envoy_dynamic_module_callback_network_filter_is_ssl(
            self.ptr
        )) == Some(true)
    }

    /// Switches the client side to TLS (a `starttls` transport socket);
    /// `false` when the listener's transport socket cannot.
    pub fn start_tls(&mut self) -> bool {
        // SAFETY: `ptr` is this hook's filter.
        envoy_call!(
            envoy_dynamic_module_callback_network_filter_start_downstream_secure_transport(
                self.ptr
            )
        ) == Some(true)
    }

    pub fn worker_index(&self) -> Option<u32> {
        // SAFETY: `ptr` is this hook's filter.
        envoy_call!(envoy_dynamic_module_callback_network_filter_get_worker_index(self.ptr))
    }

    /// Sets connection filter state `key` (access logs print it with
    /// `%FILTER_STATE(key:PLAIN)%`).
    pub fn set_filter_state(&mut self, key: &str, value: &[u8]) -> bool {
        // SAFETY: `ptr` is this hook's filter; both slices outlive the call.
        envoy_call!(
            envoy_dynamic_module_callback_network_set_filter_state_bytes(
                self.ptr,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value)
            )
        ) == Some(true)
    }

    fn metric(&mut self, id: MetricId, value: u64, call: Option<MetricCall>) -> bool {
        let Some(call) = call else {
            return false;
        };
        // SAFETY: `ptr` is this hook's filter; `id` came from its configuration.
        unsafe { call(self.ptr, id.0, value) == sys::METRICS_SUCCESS }
    }

    pub fn increment_counter(&mut self, id: MetricId, by: u64) -> bool {
        let call = sys::callbacks().envoy_dynamic_module_callback_network_filter_increment_counter;
        self.metric(id, by, call)
    }

    pub fn set_gauge(&mut self, id: MetricId, value: u64) -> bool {
        let call = sys::callbacks().envoy_dynamic_module_callback_network_filter_set_gauge;
        self.metric(id, value, call)
    }

    pub fn increment_gauge(&mut self, id: MetricId, by: u64) -> bool {
        let call = sys::callbacks().envoy_dynamic_module_callback_network_filter_increment_gauge;
        self.metric(id, by, call)
    }

    pub fn decrement_gauge(&mut self, id: MetricId, by: u64) -> bool {
        let call = sys::callbacks().envoy_dynamic_module_callback_network_filter_decrement_gauge;
        self.metric(id, by, call)
    }

    pub fn record_histogram(&mut self, id: MetricId, value: u64) -> bool {
        let call =
            sys::callbacks().envoy_dynamic_module_callback_network_filter_record_histogram_value;
        self.metric(id, value, call)
    }

    /// Starts an HTTP request to `cluster`; its answer comes to
    /// [`NetworkFilter::on_http_callout_done`] of this connection with the
    /// returned id. `headers` must hold `:method`, `:path` and `host`. `Err`
    /// holds Envoy's reason code (`u32::MAX`: no such callback).
    pub fn http_callout(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, u32> {
        let mut raw: Vec<sys::ModuleHttpHeader> = headers
            .iter()
            .map(|(key, value)| sys::ModuleHttpHeader {
                key_ptr: key.as_ptr(),
                key_length: key.len(),
                value_ptr: value.as_ptr(),
                value_length: value.len(),
            })
            .collect();
        let mut id = 0u64;
        // SAFETY: `ptr` is this hook's filter; every slice `raw` points into
        // outlives the call, as do `cluster` and `body`; `id` is a valid out-pointer.
        let result = envoy_call!(envoy_dynamic_module_callback_network_filter_http_callout(
            self.ptr,
            &mut id,
            ModuleBuffer::of(cluster.as_bytes()),
            raw.as_mut_ptr(),
            raw.len(),
            ModuleBuffer::of(body),
            timeout_ms
        ))
        .unwrap_or(u32::MAX);
        if result == sys::CALLOUT_INIT_SUCCESS {
            Ok(id)
        } else {
            Err(result)
        }
    }

    /// A handle to wake this connection's filter from any thread.
    pub fn scheduler(&mut self) -> Option<Scheduler> {
        // SAFETY: `ptr` is this hook's filter; the module owns the result.
        let ptr = envoy_call!(envoy_dynamic_module_callback_network_filter_scheduler_new(
            self.ptr
        ))?;
        (!ptr.is_null()).then_some(Scheduler { ptr })
    }
}

/// A configuration as Envoy holds it.
struct ConfigSlot {
    config: Box<dyn NetworkFilterConfig>,
    /// Envoy's side, for hooks on the main thread.
    envoy: sys::NetworkFilterConfigEnvoyPtr,
}

/// A filter as Envoy holds it; after a panic it only refuses.
///
/// Envoy calls back into a filter while one of its hooks runs: a close the
/// filter asks for raises `event` (`LocalClose`), and bytes it writes to the
/// client pass the write filters, this one's `write` hook included, before
/// the call returns. So the slot is only ever shared (`&FilterSlot`), and the
/// filter is lent out mutably by one hook at a time (`in_hook`):
///
/// - an event that arrives during a hook is queued, and delivered in order
///   as soon as that hook is done (Envoy still holds the filter: it is
///   destroyed later, from the event loop);
/// - bytes the filter wrote itself ([`Connection::write_to_client`] counts
///   them in `own_bytes`) pass its write hook without calling it, nested or
///   later: they are the filter's, not the server's;
/// - any other hook during a hook (read, write of bytes the filter did not
///   write, callout, scheduled) is not delivered, and the connection is
///   closed rather than let bytes pass unseen. In Envoy 1.40 none of the
///   callbacks this binding offers raises one: reads come from the socket
///   and callouts and scheduled events from the event loop, never from
///   inside a call, and a filter's `write` carries only the bytes written.
struct FilterSlot {
    filter: UnsafeCell<Box<dyn NetworkFilter>>,
    failed: Cell<bool>,
    in_hook: Cell<bool>,
    /// Events that arrived during a hook, oldest first.
    deferred_events: Cell<Vec<sys::ConnectionEventCode>>,
    /// Bytes the filter wrote to the client that its write hook has not passed yet.
    own_bytes: Cell<usize>,
}

impl FilterSlot {
    fn new(filter: Box<dyn NetworkFilter>) -> FilterSlot {
        FilterSlot {
            filter: UnsafeCell::new(filter),
            failed: Cell::new(false),
            in_hook: Cell::new(false),
            deferred_events: Cell::new(Vec::new()),
            own_bytes: Cell::new(0),
        }
    }

    /// Whose `length` bytes on the write path are; the filter's own are
    /// counted off as they pass.
    fn write_origin(&self, length: usize) -> WriteOrigin {
        let own = self.own_bytes.get();
        if length == 0 && self.in_hook.get() {
            // The filter's own end of stream, with no bytes.
            WriteOrigin::Filter
        } else if own == 0 {
            WriteOrigin::Server
        } else if length <= own {
            self.own_bytes.set(own - length);
            WriteOrigin::Filter
        } else {
            WriteOrigin::Mixed
        }
    }
}

/// Whose bytes a `write` hook carries (see [`FilterSlot::write_origin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteOrigin {
    /// The server's: the filter sees them.
    Server,
    /// The filter's own: passed on without it.
    Filter,
    /// Both in one buffer, which Envoy does not do (it runs the write
    /// filters on each write alone): the filter could not tell them apart.
    Mixed,
}

/// A hook Envoy may raise during another hook of the same filter, deferred.
const EVENT_HOOK: &str = "network_filter_event";

/// Runs a hook of one connection's filter under [`guard`]. A panic marks the
/// filter failed and aborts the connection; a failed filter's hooks do nothing
/// but hold the data (`StopIteration`). A hook that arrives while another of
/// the same filter runs never reaches the filter (see [`FilterSlot`]).
fn with_filter(
    hook: &str,
    filter_envoy: sys::NetworkFilterEnvoyPtr,
    filter: sys::NetworkFilterModulePtr,
    body: impl FnOnce(&mut dyn NetworkFilter, &mut Connection) -> FilterStatus,
) -> FilterStatus {
    if filter.is_null() {
        return FilterStatus::StopIteration;
    }
    // SAFETY: `filter` is the pointer `new` returned from `Box::into_raw` of a
    // FilterSlot, alive until `destroy`; Envoy passes it back on this
    // connection's worker thread only. Only a shared reference is made here.
    let slot = unsafe { &*(filter as *const FilterSlot) };
    let mut connection = Connection {
        ptr: filter_envoy,
        slot,
    };
    if slot.failed.get() {
        return FilterStatus::StopIteration;
    }
    if slot.in_hook.replace(true) {
        log(
            LogLevel::Error,
            &format!(
                "gatehouse: {hook} arrived during another hook of its filter; connection closed"
            ),
        );
        connection.close(CloseKind::Abort);
        return FilterStatus::StopIteration;
    }
    // SAFETY: `in_hook` was false and is now true on this (the only) thread,
    // so no other reference to the filter exists until it is cleared below.
    let outcome = try_hook(hook, || {
        body(unsafe { (*slot.filter.get()).as_mut() }, &mut connection)
    });
    slot.in_hook.set(false);
    match outcome {
        Some(status) => status,
        None => {
            slot.failed.set(true);
            connection.close(CloseKind::Abort);
            FilterStatus::StopIteration
        }
    }
}

/// Delivers `event`, or queues it when it arrives during another hook of the
/// filter (it is then delivered when that hook returns).
fn deliver_event(
    filter_envoy: sys::NetworkFilterEnvoyPtr,
    filter: sys::NetworkFilterModulePtr,
    event: sys::ConnectionEventCode,
) {
    if filter.is_null() {
        return;
    }
    // SAFETY: as in `with_filter`: alive until `destroy`, this thread only,
    // shared reference only.
    let slot = unsafe { &*(filter as *const FilterSlot) };
    let mut queue = slot.deferred_events.take();
    queue.push(event);
    slot.deferred_events.set(queue);
    deliver_deferred_events(filter_envoy, filter);
}

/// Runs a hook, then the events that arrived while it ran.
fn run_hook(
    hook: &str,
    filter_envoy: sys::NetworkFilterEnvoyPtr,
    filter: sys::NetworkFilterModulePtr,
    body: impl FnOnce(&mut dyn NetworkFilter, &mut Connection) -> FilterStatus,
) -> FilterStatus {
    let status = with_filter(hook, filter_envoy, filter, body);
    deliver_deferred_events(filter_envoy, filter);
    status
}

/// Delivers the events queued during the hook that just returned.
fn deliver_deferred_events(
    filter_envoy: sys::NetworkFilterEnvoyPtr,
    filter: sys::NetworkFilterModulePtr,
) {
    if filter.is_null() {
        return;
    }
    // SAFETY: as in `with_filter`.
    let slot = unsafe { &*(filter as *const FilterSlot) };
    if slot.in_hook.get() {
        return;
    }
    // Events queued by the hooks below join the end of the queue.
    let mut queue = slot.deferred_events.take();
    let mut next = 0;
    while let Some(&event) = queue.get(next) {
        next += 1;
        with_filter(EVENT_HOOK, filter_envoy, filter, |f, c| {
            f.on_event(c, ConnectionEvent::from_code(event));
            FilterStatus::Continue
        });
        queue.extend(slot.deferred_events.take());
    }
}

use sys::{
    CalloutResultCode, ConnectionEventCode, DataStatus, EnvoyHttpHeader,
    NetworkFilterConfigEnvoyPtr, NetworkFilterConfigModulePtr, NetworkFilterEnvoyPtr,
    NetworkFilterModulePtr,
};

hooks! {
    fn envoy_dynamic_module_on_network_filter_config_new(config_envoy: NetworkFilterConfigEnvoyPtr, name: EnvoyBuffer, config: EnvoyBuffer) -> NetworkFilterConfigModulePtr {
        guard("network_filter_config_new", || {
            let Some(new_config) = NEW_CONFIG.get() else {
                log(LogLevel::Error, "gatehouse: the module registered no network filter");
                return std::ptr::null();
            };
            let name = String::from_utf8_lossy(envoy_bytes(name)).into_owned();
            let mut envoy = ConfigEnvoy { ptr: config_envoy };
            match new_config(&name, envoy_bytes(config), &mut envoy) {
                Ok(config) => Box::into_raw(Box::new(ConfigSlot { config, envoy: config_envoy })) as NetworkFilterConfigModulePtr,
                Err(error) => {
                    log(LogLevel::Error, &format!("gatehouse {name}: configuration rejected: {error}"));
                    std::ptr::null()
                }
            }
        }, std::ptr::null)
    }

    fn envoy_dynamic_module_on_network_filter_config_destroy(config: NetworkFilterConfigModulePtr) {
        if config.is_null() {
            return;
        }
        // SAFETY: `config` came from `Box::into_raw` in config_new; Envoy
        // destroys it once, after its last filter.
        let slot = unsafe { Box::from_raw(config as *mut ConfigSlot) };
        guard("network_filter_config_destroy", || drop(slot), || ());
    }

    fn envoy_dynamic_module_on_network_filter_new(config: NetworkFilterConfigModulePtr, filter_envoy: NetworkFilterEnvoyPtr) -> NetworkFilterModulePtr {
        if config.is_null() {
            return std::ptr::null();
        }
        // SAFETY: `config` came from config_new and outlives its filters; it is
        // only read here (the configuration is Sync).
        let slot = unsafe { &*(config as *const ConfigSlot) };
        guard("network_filter_new", || {
            let mut connection = Connection { ptr: filter_envoy, slot: std::ptr::null() };
            match slot.config.new_filter(&mut connection) {
                Some(filter) => Box::into_raw(Box::new(FilterSlot::new(filter))) as NetworkFilterModulePtr,
                None => std::ptr::null(),
            }
        }, std::ptr::null)
    }

    fn envoy_dynamic_module_on_network_filter_new_connection(filter_envoy: NetworkFilterEnvoyPtr, filter: NetworkFilterModulePtr) -> DataStatus {
        run_hook("network_filter_new_connection", filter_envoy, filter, |f, c| f.on_new_connection(c)).code()
    }

    fn envoy_dynamic_module_on_network_filter_read(filter_envoy: NetworkFilterEnvoyPtr, filter: NetworkFilterModulePtr, data_length: usize, end_stream: bool) -> DataStatus {
        run_hook("network_filter_read", filter_envoy, filter, |f, c| f.on_read(c, data_length, end_stream)).code()
    }

    fn envoy_dynamic_module_on_network_filter_write(filter_envoy: NetworkFilterEnvoyPtr, filter: NetworkFilterModulePtr, data_length: usize, end_stream: bool) -> DataStatus {
        if !filter.is_null() {
            // SAFETY: as in `with_filter`.
            let slot = unsafe { &*(filter as *const FilterSlot) };
            if !slot.failed.get() {
                match slot.write_origin(data_length) {
                    WriteOrigin::Server => {}
                    WriteOrigin::Filter => return FilterStatus::Continue.code(),
                    WriteOrigin::Mixed => {
                        log(LogLevel::Error, "gatehouse: the filter's own bytes and the server's in one write; connection closed");
                        let mut connection = Connection { ptr: filter_envoy, slot };
                        connection.close(CloseKind::Abort);
                        return FilterStatus::StopIteration.code();
                    }
                }
            }
        }
        run_hook("network_filter_write", filter_envoy, filter, |f, c| f.on_write(c, data_length, end_stream)).code()
    }

    fn envoy_dynamic_module_on_network_filter_event(filter_envoy: NetworkFilterEnvoyPtr, filter: NetworkFilterModulePtr, event: ConnectionEventCode) {
        deliver_event(filter_envoy, filter, event);
    }

    fn envoy_dynamic_module_on_network_filter_destroy(filter: NetworkFilterModulePtr) {
        if filter.is_null() {
            return;
        }
        // SAFETY: `filter` came from `Box::into_raw` in `new`; Envoy destroys
        // it once, after its last hook.
        let slot = unsafe { Box::from_raw(filter as *mut FilterSlot) };
        guard("network_filter_destroy", || drop(slot), || ());
    }

    fn envoy_dynamic_module_on_network_filter_http_callout_done(filter_envoy: NetworkFilterEnvoyPtr, filter: NetworkFilterModulePtr, callout_id: u64, result: CalloutResultCode, headers: *const EnvoyHttpHeader, headers_size: usize, body_chunks: *const EnvoyBuffer, body_chunks_size: usize) {
        run_hook("network_filter_http_callout_done", filter_envoy, filter, |f, c| {
            let response = callout_response(result, headers, headers_size, body_chunks, body_chunks_size);
            f.on_http_callout_done(c, callout_id, response);
            FilterStatus::Continue
        });
    }

    fn envoy_dynamic_module_on_network_filter_scheduled(filter_envoy: NetworkFilterEnvoyPtr, filter: NetworkFilterModulePtr, event_id: u64) {
        run_hook("network_filter_scheduled", filter_envoy, filter, |f, c| {
            f.on_scheduled(c, event_id);
            FilterStatus::Continue
        });
    }

    fn envoy_dynamic_module_on_network_filter_config_scheduled(config: NetworkFilterConfigModulePtr, event_id: u64) {
        if config.is_null() {
            return;
        }
        // SAFETY: `config` came from config_new and is alive until config_destroy,
        // which Envoy runs on this (main) thread, never during this hook.
        let slot = unsafe { &*(config as *const ConfigSlot) };
        let mut envoy = ConfigEnvoy { ptr: slot.envoy };
        guard("network_filter_config_scheduled", || slot.config.on_scheduled(&mut envoy, event_id), || ());
    }

    fn envoy_dynamic_module_on_network_filter_above_write_buffer_high_watermark(filter_envoy: NetworkFilterEnvoyPtr, filter: NetworkFilterModulePtr) {
        let _ = (filter_envoy, filter);
    }

    fn envoy_dynamic_module_on_network_filter_below_write_buffer_low_watermark(filter_envoy: NetworkFilterEnvoyPtr, filter: NetworkFilterModulePtr) {
        let _ = (filter_envoy, filter);
    }
}

/// Defines the module's `envoy_dynamic_module_on_program_init`, which
/// registers `$new_config` ([`NewConfigFn`]) and reports the ABI version.
/// Use it once, in the `cdylib` crate Envoy loads.
#[macro_export]
macro_rules! declare_network_filters {
    ($new_config:expr) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const ::std::ffi::c_char {
            $crate::network::program_init($new_config)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_filter_holds_the_data() {
        let status = with_filter("test", std::ptr::null_mut(), std::ptr::null(), |_, _| {
            FilterStatus::Continue
        });
        assert_eq!(status, FilterStatus::StopIteration);
    }

    /// What a filter under test was shown, in order.
    type Seen = std::rc::Rc<std::cell::RefCell<Vec<String>>>;

    /// A filter that, as Envoy makes it happen, is called back inside its
    /// own hooks: a close raises an event, its own write raises `write`, and
    /// (which Envoy does not do) a read raises another read.
    struct Reenters {
        slot: std::rc::Rc<Cell<*const FilterSlot>>,
        seen: Seen,
    }

    impl Reenters {
        fn slot(&self) -> NetworkFilterModulePtr {
            self.slot.get() as NetworkFilterModulePtr
        }
    }

    impl NetworkFilter for Reenters {
        fn on_read(&mut self, c: &mut Connection, length: usize, _: bool) -> FilterStatus {
            self.seen.borrow_mut().push(format!("read {length}"));
            match length {
                // Closes: Envoy raises LocalClose inside the close.
                1 => {
                    envoy_dynamic_module_on_network_filter_event(
                        c.ptr,
                        self.slot(),
                        sys::EVENT_LOCAL_CLOSE,
                    );
                    self.seen.borrow_mut().push("read returns".into());
                }
                // Answers the client itself: Envoy runs its write hook on
                // the answer inside the write.
                2 => {
                    // SAFETY (test): the slot outlives the hook.
                    let slot = unsafe { &*self.slot.get() };
                    slot.own_bytes.set(slot.own_bytes.get() + 1);
                    let status =
                        envoy_dynamic_module_on_network_filter_write(c.ptr, self.slot(), 1, false);
                    assert_eq!(status, sys::DATA_STATUS_CONTINUE);
                    // Its end of stream alone.
                    let status =
                        envoy_dynamic_module_on_network_filter_write(c.ptr, self.slot(), 0, true);
                    assert_eq!(status, sys::DATA_STATUS_CONTINUE);
                }
                // A read inside a read.
                3 => {
                    let status =
                        envoy_dynamic_module_on_network_filter_read(c.ptr, self.slot(), 7, false);
                    assert_eq!(status, sys::DATA_STATUS_STOP_ITERATION);
                }
                // A write of bytes the filter did not write, inside a read.
                4 => {
                    let status =
                        envoy_dynamic_module_on_network_filter_write(c.ptr, self.slot(), 4, false);
                    assert_eq!(status, sys::DATA_STATUS_STOP_ITERATION);
                }
                _ => {}
            }
            FilterStatus::Continue
        }
        fn on_write(&mut self, _: &mut Connection, length: usize, _: bool) -> FilterStatus {
            self.seen.borrow_mut().push(format!("write {length}"));
            FilterStatus::Continue
        }
        fn on_event(&mut self, c: &mut Connection, event: ConnectionEvent) {
            self.seen.borrow_mut().push(format!("{event:?}"));
            if event == ConnectionEvent::LocalClose {
                // An event raised in an event hook follows it too.
                envoy_dynamic_module_on_network_filter_event(
                    c.ptr,
                    self.slot(),
                    sys::EVENT_REMOTE_CLOSE,
                );
                self.seen.borrow_mut().push("event returns".into());
            }
        }
    }

    /// A slot holding a [`Reenters`], and what it sees.
    fn reentrant_slot() -> (NetworkFilterModulePtr, Seen) {
        let seen = Seen::default();
        let slot_ptr = std::rc::Rc::new(Cell::new(std::ptr::null()));
        let filter = Reenters {
            slot: slot_ptr.clone(),
            seen: seen.clone(),
        };
        let slot = Box::into_raw(Box::new(FilterSlot::new(Box::new(filter))));
        slot_ptr.set(slot);
        (slot as NetworkFilterModulePtr, seen)
    }

    fn read(slot: NetworkFilterModulePtr, length: usize) -> DataStatus {
        envoy_dynamic_module_on_network_filter_read(std::ptr::null_mut(), slot, length, false)
    }

    #[test]
    fn an_event_during_a_hook_follows_it_in_order() {
        let (slot, seen) = reentrant_slot();
        assert_eq!(read(slot, 1), sys::DATA_STATUS_CONTINUE);
        assert_eq!(
            *seen.borrow(),
            [
                "read 1",
                "read returns",
                "LocalClose",
                "event returns",
                "RemoteClose"
            ]
        );
        envoy_dynamic_module_on_network_filter_destroy(slot);
    }

    #[test]
    fn the_filters_own_write_passes_without_it_and_the_servers_reaches_it() {
        let (slot, seen) = reentrant_slot();
        assert_eq!(read(slot, 2), sys::DATA_STATUS_CONTINUE);
        // The server's bytes, after the filter's own passed.
        let status =
            envoy_dynamic_module_on_network_filter_write(std::ptr::null_mut(), slot, 5, false);
        assert_eq!(status, sys::DATA_STATUS_CONTINUE);
        assert_eq!(*seen.borrow(), ["read 2", "write 5"]);
        envoy_dynamic_module_on_network_filter_destroy(slot);
    }

    #[test]
    fn own_bytes_written_later_pass_without_the_filter_mixed_ones_are_refused() {
        let (slot, seen) = reentrant_slot();
        // SAFETY (test): no hook runs.
        let own = &unsafe { &*(slot as *const FilterSlot) }.own_bytes;
        own.set(3);
        let status =
            envoy_dynamic_module_on_network_filter_write(std::ptr::null_mut(), slot, 2, false);
        assert_eq!(status, sys::DATA_STATUS_CONTINUE);
        assert_eq!(own.get(), 1);
        let status =
            envoy_dynamic_module_on_network_filter_write(std::ptr::null_mut(), slot, 6, false);
        assert_eq!(status, sys::DATA_STATUS_STOP_ITERATION);
        assert!(seen.borrow().is_empty());
        envoy_dynamic_module_on_network_filter_destroy(slot);
    }

    #[test]
    fn a_data_hook_during_a_hook_never_reaches_the_filter() {
        let (slot, seen) = reentrant_slot();
        assert_eq!(read(slot, 3), sys::DATA_STATUS_CONTINUE);
        assert_eq!(read(slot, 4), sys::DATA_STATUS_CONTINUE);
        assert_eq!(*seen.borrow(), ["read 3", "read 4"]);
        envoy_dynamic_module_on_network_filter_destroy(slot);
    }
}
