//! HTTP filters: the event hooks Envoy calls, and the safe handles a filter
//! gets to call Envoy back.
//!
//! A module registers one function that builds an [`HttpFilterConfig`] from
//! the filter's name and configuration bytes ([`crate::declare_filters`]).
//! Envoy then drives it:
//!
//! - on the main thread, `config_new` builds the configuration (it may define
//!   metrics with its [`HttpConfigEnvoy`]), `config_destroy` drops it;
//! - on a worker thread, per HTTP stream, `new` asks the configuration for an
//!   [`HttpFilter`], whose methods then receive every event of that stream
//!   with a [`Stream`] to act on it, until `destroy` drops it.
//!
//! Every hook runs its body under the module's panic guard: a panic is caught
//! at the boundary and logged, the stream is answered with a 500 (Envoy resets
//! it if the response had already begun) and the filter is inert from then on,
//! holding whatever else comes. Nothing it had not seen is passed on.

pub use crate::boundary::{CalloutResponse, CalloutResult};
use crate::boundary::{callout_response, envoy_bytes, envoy_header, guard, try_hook};
use crate::sys::{self, EnvoyBuffer, EnvoyHttpHeader, ModuleBuffer, envoy_call};
use crate::{LogLevel, log};
use std::sync::OnceLock;

/// What a headers hook tells Envoy (its `FilterHeadersStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersStatus {
    Continue,
    /// Hold the headers until [`Stream::continue_decoding`] /
    /// [`Stream::continue_encoding`]; body data still reaches the filter.
    StopIteration,
    /// Hold headers and body, buffering the body, until continued.
    StopAllIterationAndBuffer,
}

impl HeadersStatus {
    fn code(self) -> sys::HeadersStatus {
        match self {
            HeadersStatus::Continue => sys::HEADERS_CONTINUE,
            HeadersStatus::StopIteration => sys::HEADERS_STOP_ITERATION,
            HeadersStatus::StopAllIterationAndBuffer => sys::HEADERS_STOP_ALL_ITERATION_AND_BUFFER,
        }
    }
}

/// What a body hook tells Envoy (its `FilterDataStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyStatus {
    Continue,
    /// Keep this chunk in the buffered body (up to Envoy's buffer limit, past
    /// which Envoy answers 413) and hold the stream.
    StopIterationAndBuffer,
    /// Hold the stream without keeping the chunk.
    StopIterationNoBuffer,
}

impl BodyStatus {
    fn code(self) -> sys::BodyStatus {
        match self {
            BodyStatus::Continue => sys::BODY_CONTINUE,
            BodyStatus::StopIterationAndBuffer => sys::BODY_STOP_ITERATION_AND_BUFFER,
            BodyStatus::StopIterationNoBuffer => sys::BODY_STOP_ITERATION_NO_BUFFER,
        }
    }
}

/// What a trailers hook tells Envoy (its `FilterTrailersStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailersStatus {
    Continue,
    StopIteration,
}

impl TrailersStatus {
    fn code(self) -> sys::TrailersStatus {
        match self {
            TrailersStatus::Continue => sys::TRAILERS_CONTINUE,
            TrailersStatus::StopIteration => sys::TRAILERS_STOP_ITERATION,
        }
    }
}

/// One of a stream's four header maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderMap {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
}

impl HeaderMap {
    fn code(self) -> sys::HttpHeaderType {
        match self {
            HeaderMap::RequestHeaders => sys::HEADERS_REQUEST,
            HeaderMap::RequestTrailers => sys::TRAILERS_REQUEST,
            HeaderMap::ResponseHeaders => sys::HEADERS_RESPONSE,
            HeaderMap::ResponseTrailers => sys::TRAILERS_RESPONSE,
        }
    }
}

/// One of a stream's body buffers. "Received" is the chunk of the current
/// body hook (only there); "buffered" is what Envoy kept so far because a
/// filter asked it to ([`BodyStatus::StopIterationAndBuffer`]); it does not
/// yet hold the received chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    ReceivedRequest,
    BufferedRequest,
    ReceivedResponse,
    BufferedResponse,
}

impl Body {
    fn code(self) -> sys::HttpBodyType {
        match self {
            Body::ReceivedRequest => sys::BODY_RECEIVED_REQUEST,
            Body::BufferedRequest => sys::BODY_BUFFERED_REQUEST,
            Body::ReceivedResponse => sys::BODY_RECEIVED_RESPONSE,
            Body::BufferedResponse => sys::BODY_BUFFERED_RESPONSE,
        }
    }
}

/// The request or the response, for what concerns its body as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    Request,
    Response,
}

impl Message {
    fn buffered(self) -> Body {
        match self {
            Message::Request => Body::BufferedRequest,
            Message::Response => Body::BufferedResponse,
        }
    }

    fn received(self) -> Body {
        match self {
            Message::Request => Body::ReceivedRequest,
            Message::Response => Body::ReceivedResponse,
        }
    }
}

/// A metric an HTTP configuration defined; used through [`Stream`] or
/// [`HttpConfigEnvoy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricId(usize);

/// A counter family an HTTP configuration defined with label names; each
/// increment names one value per label, in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelledCounterId {
    id: usize,
    labels: usize,
}

/// Label names or values as the ABI takes them, pointing into the caller's.
fn module_buffers(strings: &[&str]) -> Vec<ModuleBuffer> {
    strings
        .iter()
        .map(|s| ModuleBuffer::of(s.as_bytes()))
        .collect()
}

/// Why Envoy refused to start an HTTP callout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CalloutError {
    #[error("the request lacks :method, :path or host")]
    MissingRequiredHeaders,
    #[error("no such cluster")]
    ClusterNotFound,
    #[error("the callout id is taken")]
    DuplicateCalloutId,
    #[error("Envoy cannot create the request (no healthy upstream?)")]
    CannotCreateRequest,
    #[error("Envoy refused the callout (code {0})")]
    Other(u32),
    #[error("this process does not export the callout callback")]
    Unavailable,
}

impl CalloutError {
    fn from_code(code: sys::CalloutInitResult) -> CalloutError {
        match code {
            sys::CALLOUT_INIT_MISSING_REQUIRED_HEADERS => CalloutError::MissingRequiredHeaders,
            sys::CALLOUT_INIT_CLUSTER_NOT_FOUND => CalloutError::ClusterNotFound,
            sys::CALLOUT_INIT_DUPLICATE_CALLOUT_ID => CalloutError::DuplicateCalloutId,
            sys::CALLOUT_INIT_CANNOT_CREATE_REQUEST => CalloutError::CannotCreateRequest,
            other => CalloutError::Other(other),
        }
    }
}

/// An HTTP filter's configuration: built on the main thread, shared by every
/// worker, so it must be `Send + Sync`.
pub trait HttpFilterConfig: Send + Sync {
    /// A filter for a new stream (on its worker thread); `None` refuses the
    /// stream (Envoy answers it with an error).
    fn new_filter(&self, stream: &mut Stream) -> Option<Box<dyn HttpFilter>>;

    /// An event committed through an [`HttpConfigScheduler`], on the main thread.
    fn on_scheduled(&self, _envoy: &mut HttpConfigEnvoy, _event_id: u64) {}
}

/// One HTTP stream's filter. Request hooks are Envoy's "decoding", response
/// hooks its "encoding".
pub trait HttpFilter {
    fn on_request_headers(&mut self, _stream: &mut Stream, _end_stream: bool) -> HeadersStatus {
        HeadersStatus::Continue
    }
    /// A chunk of the request body is in [`Body::ReceivedRequest`].
    fn on_request_body(&mut self, _stream: &mut Stream, _end_stream: bool) -> BodyStatus {
        BodyStatus::Continue
    }
    fn on_request_trailers(&mut self, _stream: &mut Stream) -> TrailersStatus {
        TrailersStatus::Continue
    }
    fn on_response_headers(&mut self, _stream: &mut Stream, _end_stream: bool) -> HeadersStatus {
        HeadersStatus::Continue
    }
    /// A chunk of the response body is in [`Body::ReceivedResponse`].
    fn on_response_body(&mut self, _stream: &mut Stream, _end_stream: bool) -> BodyStatus {
        BodyStatus::Continue
    }
    fn on_response_trailers(&mut self, _stream: &mut Stream) -> TrailersStatus {
        TrailersStatus::Continue
    }
    /// The stream is over, before Envoy writes its access log: the place for
    /// records and filter state the log prints.
    fn on_stream_complete(&mut self, _stream: &mut Stream) {}
    fn on_http_callout_done(
        &mut self,
        _stream: &mut Stream,
        _callout_id: u64,
        _response: CalloutResponse<'_>,
    ) {
    }
    /// An event committed through this stream's [`HttpScheduler`].
    fn on_scheduled(&mut self, _stream: &mut Stream, _event_id: u64) {}
    /// Envoy is answering this stream itself (`status`, with `details`), by a
    /// filter's local reply or its own error.
    fn on_local_reply(&mut self, _stream: &mut Stream, _status: u32, _details: &[u8]) {}
}

/// Builds a configuration from the filter's name and its configuration bytes
/// (for a `StringValue`, the string); `Err` rejects the configuration.
pub type NewConfigFn = fn(
    name: &str,
    config: &[u8],
    envoy: &mut HttpConfigEnvoy,
) -> Result<Box<dyn HttpFilterConfig>, String>;

static NEW_CONFIG: OnceLock<NewConfigFn> = OnceLock::new();

/// Registers the module's HTTP filters (see [`crate::declare_filters`]).
pub fn register(new_config: NewConfigFn) {
    let _ = NEW_CONFIG.set(new_config);
}

type ConfigDefine = unsafe extern "C" fn(
    sys::HttpFilterConfigEnvoyPtr,
    ModuleBuffer,
    *mut ModuleBuffer,
    usize,
    *mut usize,
) -> sys::MetricsResult;

/// Envoy's side of an HTTP configuration: handed to `config_new` and to
/// [`HttpFilterConfig::on_scheduled`], both on the main thread.
pub struct HttpConfigEnvoy {
    ptr: sys::HttpFilterConfigEnvoyPtr,
}

impl HttpConfigEnvoy {
    fn define(&mut self, name: &str, define: Option<ConfigDefine>) -> Option<MetricId> {
        let define = define?;
        let mut id = 0usize;
        // SAFETY: `ptr` is the configuration Envoy is building; `name`
        // outlives the call; no labels (null, 0); `id` is a valid out-pointer.
        let result = unsafe {
            define(
                self.ptr,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        };
        (result == sys::METRICS_SUCCESS).then_some(MetricId(id))
    }

    pub fn define_counter(&mut self, name: &str) -> Option<MetricId> {
        let define =
            sys::callbacks().envoy_dynamic_module_callback_http_filter_config_define_counter;
        self.define(name, define)
    }

    pub fn define_gauge(&mut self, name: &str) -> Option<MetricId> {
        let define = sys::callbacks().envoy_dynamic_module_callback_http_filter_config_define_gauge;
        self.define(name, define)
    }

    pub fn define_histogram(&mut self, name: &str) -> Option<MetricId> {
        let define =
            sys::callbacks().envoy_dynamic_module_callback_http_filter_config_define_histogram;
        self.define(name, define)
    }

    /// A counter family whose stats Envoy makes per label values as they are
    /// counted (Prometheus: `name{label="value",…}`).
    pub fn define_labelled_counter(
        &mut self,
        name: &str,
        labels: &[&str],
    ) -> Option<LabelledCounterId> {
        let define =
            sys::callbacks().envoy_dynamic_module_callback_http_filter_config_define_counter?;
        let mut names = module_buffers(labels);
        let mut id = 0usize;
        // SAFETY: `ptr` is the configuration Envoy is building; `name` and
        // every label name `names` points into outlive the call; `id` is a
        // valid out-pointer.
        let result = unsafe {
            define(
                self.ptr,
                ModuleBuffer::of(name.as_bytes()),
                names.as_mut_ptr(),
                names.len(),
                &mut id,
            )
        };
        (result == sys::METRICS_SUCCESS).then_some(LabelledCounterId {
            id,
            labels: labels.len(),
        })
    }

    /// Adds `by` to a counter this configuration defined.
    pub fn increment_counter(&mut self, id: MetricId, by: u64) -> bool {
        // SAFETY: `ptr` is this configuration, on the main thread; `id` came
        // from it; no labels.
        envoy_call!(
            envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.ptr,
                id.0,
                std::ptr::null_mut(),
                0,
                by
            )
        ) == Some(sys::METRICS_SUCCESS)
    }

    /// A handle that wakes [`HttpFilterConfig::on_scheduled`] on the main
    /// thread, from any thread.
    pub fn scheduler(&mut self) -> Option<HttpConfigScheduler> {
        // SAFETY: `ptr` is this configuration; the module owns the result
        // (deleted on drop).
        let ptr =
            envoy_call!(envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.ptr))?;
        (!ptr.is_null()).then_some(HttpConfigScheduler { ptr })
    }
}

/// Commits events to an HTTP configuration's main thread, from any thread.
pub struct HttpConfigScheduler {
    ptr: sys::HttpFilterConfigSchedulerPtr,
}

// SAFETY: the header documents commit as callable from any thread; the
// pointer is only used for commit and delete.
unsafe impl Send for HttpConfigScheduler {}
// SAFETY: as above.
unsafe impl Sync for HttpConfigScheduler {}

impl HttpConfigScheduler {
    pub fn commit(&self, event_id: u64) {
        // SAFETY: `ptr` came from config_scheduler_new and is deleted only on drop.
        envoy_call!(
            envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.ptr, event_id)
        );
    }
}

impl Drop for HttpConfigScheduler {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from config_scheduler_new and is deleted once.
        envoy_call!(envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.ptr));
    }
}

/// Commits events to one stream's filter on its worker thread, from any
/// thread; a commit after the stream ended is dropped by Envoy.
pub struct HttpScheduler {
    ptr: sys::HttpFilterSchedulerPtr,
}

// SAFETY: the header documents commit as safe from any thread, and a no-op
// once the filter is destroyed.
unsafe impl Send for HttpScheduler {}
// SAFETY: as above.
unsafe impl Sync for HttpScheduler {}

impl HttpScheduler {
    pub fn commit(&self, event_id: u64) {
        // SAFETY: `ptr` came from scheduler_new and is deleted only on drop.
        envoy_call!(envoy_dynamic_module_callback_http_filter_scheduler_commit(
            self.ptr, event_id
        ));
    }
}

impl Drop for HttpScheduler {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from scheduler_new and is deleted once.
        envoy_call!(envoy_dynamic_module_callback_http_filter_scheduler_delete(
            self.ptr
        ));
    }
}

/// Envoy's side of one HTTP stream, handed to each hook of its filter. Valid
/// for that hook only; not `Send` (the stream lives on its worker). Bytes it
/// lends borrow it, so they cannot outlive a change to the stream.
pub struct Stream {
    ptr: sys::HttpFilterEnvoyPtr,
}

type StreamMetric = unsafe extern "C" fn(
    sys::HttpFilterEnvoyPtr,
    usize,
    *mut ModuleBuffer,
    usize,
    u64,
) -> sys::MetricsResult;

impl Stream {
    /// Every value of header `name` (lowercase, as Envoy keeps names) in `map`.
    pub fn header_values(&self, map: HeaderMap, name: &str) -> Vec<&[u8]> {
        let mut values = Vec::new();
        let mut count = 1usize;
        let mut index = 0usize;
        while index < count {
            let mut value = EnvoyBuffer::EMPTY;
            // SAFETY: `ptr` is this hook's stream; `name` outlives the call;
            // `value` and `count` are valid out-pointers.
            let found = envoy_call!(envoy_dynamic_module_callback_http_get_header(
                self.ptr,
                map.code(),
                ModuleBuffer::of(name.as_bytes()),
                &mut value,
                index,
                &mut count
            ));
            if found != Some(true) || value.ptr.is_null() {
                break;
            }
            values.push(envoy_bytes(value));
            index += 1;
        }
        values
    }

    /// The first value of header `name` in `map`.
    pub fn header(&self, map: HeaderMap, name: &str) -> Option<&[u8]> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: as in `header_values`; the count is not asked for (null).
        let found = envoy_call!(envoy_dynamic_module_callback_http_get_header(
            self.ptr,
            map.code(),
            ModuleBuffer::of(name.as_bytes()),
            &mut value,
            0,
            std::ptr::null_mut()
        ));
        (found == Some(true) && !value.ptr.is_null()).then(|| envoy_bytes(value))
    }

    /// Every header of `map`, in Envoy's order (pseudo-headers first).
    pub fn headers(&self, map: HeaderMap) -> Vec<(&[u8], &[u8])> {
        // SAFETY: `ptr` is this hook's stream.
        let count = envoy_call!(envoy_dynamic_module_callback_http_get_headers_size(
            self.ptr,
            map.code()
        ))
        .unwrap_or(0);
        if count == 0 {
            return Vec::new();
        }
        let mut raw = vec![
            EnvoyHttpHeader {
                key_ptr: std::ptr::null(),
                key_length: 0,
                value_ptr: std::ptr::null(),
                value_length: 0,
            };
            count
        ];
        // SAFETY: `raw` has room for the `count` headers Envoy just reported.
        let filled = envoy_call!(envoy_dynamic_module_callback_http_get_headers(
            self.ptr,
            map.code(),
            raw.as_mut_ptr()
        ));
        if filled != Some(true) {
            return Vec::new();
        }
        raw.iter().map(envoy_header).collect()
    }

    /// Replaces every value of header `name` in `map` with `value`.
    pub fn set_header(&mut self, map: HeaderMap, name: &str, value: &[u8]) -> bool {
        // SAFETY: `ptr` is this hook's stream; both slices outlive the call.
        envoy_call!(envoy_dynamic_module_callback_http_set_header(
            self.ptr,
            map.code(),
            ModuleBuffer::of(name.as_bytes()),
            ModuleBuffer::of(value)
        )) == Some(true)
    }

    /// Adds a value of header `name` to `map`, keeping the others.
    pub fn add_header(&mut self, map: HeaderMap, name: &str, value: &[u8]) -> bool {
        // SAFETY: as in `set_header`.
        envoy_call!(envoy_dynamic_module_callback_http_add_header(
            self.ptr,
            map.code(),
            ModuleBuffer::of(name.as_bytes()),
            ModuleBuffer::of(value)
        )) == Some(true)
    }

    /// Removes every value of header `name` from `map` (the header's "set to
    /// a null value").
    pub fn remove_header(&mut self, map: HeaderMap, name: &str) -> bool {
        let none = ModuleBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        // SAFETY: `ptr` is this hook's stream; `name` outlives the call; a
        // null value is the header's way to remove.
        envoy_call!(envoy_dynamic_module_callback_http_set_header(
            self.ptr,
            map.code(),
            ModuleBuffer::of(name.as_bytes()),
            none
        )) == Some(true)
    }

    /// A body buffer's bytes, as Envoy's chunks (none when Envoy could not
    /// hand them over).
    pub fn body_chunks(&self, body: Body) -> Vec<&[u8]> {
        self.try_body_chunks(body).unwrap_or_default()
    }

    /// A body buffer's bytes, as Envoy's chunks; `None` when Envoy could not
    /// hand them over.
    pub fn try_body_chunks(&self, body: Body) -> Option<Vec<&[u8]>> {
        // SAFETY: `ptr` is this hook's stream.
        let count = envoy_call!(envoy_dynamic_module_callback_http_get_body_chunks_size(
            self.ptr,
            body.code()
        ))?;
        if count == 0 {
            return Some(Vec::new());
        }
        let mut raw = vec![EnvoyBuffer::EMPTY; count];
        // SAFETY: `raw` has room for the `count` chunks Envoy just reported.
        let filled = envoy_call!(envoy_dynamic_module_callback_http_get_body_chunks(
            self.ptr,
            body.code(),
            raw.as_mut_ptr()
        ));
        if filled != Some(true) {
            return None;
        }
        Some(
            raw.iter()
                .filter(|chunk| !chunk.ptr.is_null() && chunk.length > 0)
                .map(|chunk| envoy_bytes(*chunk))
                .collect(),
        )
    }

    /// A body buffer's bytes, copied into one slice.
    pub fn body_bytes(&self, body: Body) -> Vec<u8> {
        self.body_chunks(body).concat()
    }

    /// Whether the chunk now received is Envoy's buffered body itself (an
    /// earlier filter buffered it and passed it on whole).
    fn received_is_buffered(&self, of: Message) -> bool {
        match of {
            Message::Request => self.received_buffered_request_body(),
            Message::Response => self.received_buffered_response_body(),
        }
    }

    /// The body so far as the next filter would get it if this hook
    /// continued: what Envoy buffered for this filter, then the chunk of the
    /// current body hook (none outside one).
    pub fn whole_body(&self, of: Message) -> Vec<u8> {
        if self.received_is_buffered(of) {
            return self.body_bytes(of.received());
        }
        let mut body = self.body_bytes(of.buffered());
        body.extend(self.body_chunks(of.received()).concat());
        body
    }

    /// [`Stream::whole_body`], or `None` when Envoy could not hand over a
    /// buffer.
    pub fn try_whole_body(&self, of: Message) -> Option<Vec<u8>> {
        if self.received_is_buffered(of) {
            return Some(self.try_body_chunks(of.received())?.concat());
        }
        let mut body = self.try_body_chunks(of.buffered())?.concat();
        body.extend(self.try_body_chunks(of.received())?.concat());
        Some(body)
    }

    /// The size of [`Stream::whole_body`].
    pub fn whole_body_size(&self, of: Message) -> usize {
        if self.received_is_buffered(of) {
            return self.body_size(of.received());
        }
        self.body_size(of.buffered()) + self.body_size(of.received())
    }

    /// Makes `bytes` the body so far ([`Stream::whole_body`]): both buffers
    /// are emptied and `bytes` becomes the current chunk (in a body hook) or
    /// the buffered body (outside one, where there is no current chunk).
    pub fn replace_whole_body(&mut self, of: Message, bytes: &[u8]) -> bool {
        let received = self.body_size(of.received());
        let buffered = if self.received_is_buffered(of) {
            0
        } else {
            self.body_size(of.buffered())
        };
        let drained = (buffered == 0 || self.drain_body(of.buffered(), buffered))
            && (received == 0 || self.drain_body(of.received(), received));
        if !drained {
            return false;
        }
        // Envoy refuses the received buffer outside a body hook.
        bytes.is_empty()
            || self.append_body(of.received(), bytes)
            || self.append_body(of.buffered(), bytes)
    }

    pub fn body_size(&self, body: Body) -> usize {
        // SAFETY: `ptr` is this hook's stream.
        envoy_call!(envoy_dynamic_module_callback_http_get_body_size(
            self.ptr,
            body.code()
        ))
        .unwrap_or(0)
    }

    /// Drops the first `length` bytes of a body buffer (all of it if shorter).
    pub fn drain_body(&mut self, body: Body, length: usize) -> bool {
        // SAFETY: `ptr` is this hook's stream.
        envoy_call!(envoy_dynamic_module_callback_http_drain_body(
            self.ptr,
            body.code(),
            length
        )) == Some(true)
    }

    pub fn append_body(&mut self, body: Body, bytes: &[u8]) -> bool {
        // SAFETY: `ptr` is this hook's stream; `bytes` outlives the call.
        envoy_call!(envoy_dynamic_module_callback_http_append_body(
            self.ptr,
            body.code(),
            ModuleBuffer::of(bytes)
        )) == Some(true)
    }

    /// Whether the request chunk now received is a filter's earlier buffer,
    /// passed on whole (so it must not be counted twice).
    pub fn received_buffered_request_body(&self) -> bool {
        // SAFETY: `ptr` is this hook's stream.
        envoy_call!(envoy_dynamic_module_callback_http_received_buffered_request_body(self.ptr))
            == Some(true)
    }

    /// As [`Stream::received_buffered_request_body`], for the response.
    pub fn received_buffered_response_body(&self) -> bool {
        // SAFETY: `ptr` is this hook's stream.
        envoy_call!(envoy_dynamic_module_callback_http_received_buffered_response_body(self.ptr))
            == Some(true)
    }

    /// Resumes the request after a hook stopped it.
    pub fn continue_decoding(&mut self) {
        // SAFETY: `ptr` is this hook's stream.
        envoy_call!(envoy_dynamic_module_callback_http_filter_continue_decoding(
            self.ptr
        ));
    }

    /// Resumes the response after a hook stopped it.
    pub fn continue_encoding(&mut self) {
        // SAFETY: `ptr` is this hook's stream.
        envoy_call!(envoy_dynamic_module_callback_http_filter_continue_encoding(
            self.ptr
        ));
    }

    /// Ends the stream both ways at once (the client sees a reset, or a
    /// closed connection on HTTP/1.1); `details` names why in Envoy's log.
    pub fn reset_stream(&mut self, details: &str) -> bool {
        // SAFETY: `ptr` is this hook's stream; `details` outlives the call.
        envoy_call!(envoy_dynamic_module_callback_http_filter_reset_stream(
            self.ptr,
            sys::FILTER_RESET_LOCAL_RESET,
            ModuleBuffer::of(details.as_bytes())
        ))
        .is_some()
    }

    /// Answers the stream from the filter: `status`, `headers`, `body`, and
    /// `details` for Envoy's `%RESPONSE_CODE_DETAILS%`. The request goes no
    /// further; after it a hook returns a stop status.
    pub fn send_response(
        &mut self,
        status: u32,
        headers: &[(&str, &[u8])],
        body: &[u8],
        details: &str,
    ) -> bool {
        let mut raw = module_headers(headers.iter().map(|(k, v)| (k.as_bytes(), *v)));
        // SAFETY: `ptr` is this hook's stream; every slice `raw` points into,
        // `body` and `details` outlive the call.
        envoy_call!(envoy_dynamic_module_callback_http_send_response(
            self.ptr,
            status,
            raw.as_mut_ptr(),
            raw.len(),
            ModuleBuffer::of(body),
            ModuleBuffer::of(details.as_bytes())
        ))
        .is_some()
    }

    /// Starts an HTTP request to `cluster`; its answer comes to
    /// [`HttpFilter::on_http_callout_done`] of this stream with the returned
    /// id. `headers` must hold `:method`, `:path` and `host`.
    pub fn http_callout(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, CalloutError> {
        let mut raw = module_headers(headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        let mut id = 0u64;
        // SAFETY: `ptr` is this hook's stream; every slice `raw` points into
        // outlives the call, as do `cluster` and `body`; `id` is a valid out-pointer.
        let result = envoy_call!(envoy_dynamic_module_callback_http_filter_http_callout(
            self.ptr,
            &mut id,
            ModuleBuffer::of(cluster.as_bytes()),
            raw.as_mut_ptr(),
            raw.len(),
            ModuleBuffer::of(body),
            timeout_ms
        ))
        .ok_or(CalloutError::Unavailable)?;
        if result == sys::CALLOUT_INIT_SUCCESS {
            Ok(id)
        } else {
            Err(CalloutError::from_code(result))
        }
    }

    /// Sets stream filter state `key` (access logs print it with
    /// `%FILTER_STATE(key:PLAIN)%`).
    pub fn set_filter_state(&mut self, key: &str, value: &[u8]) -> bool {
        // SAFETY: `ptr` is this hook's stream; both slices outlive the call.
        envoy_call!(envoy_dynamic_module_callback_http_set_filter_state_bytes(
            self.ptr,
            ModuleBuffer::of(key.as_bytes()),
            ModuleBuffer::of(value)
        )) == Some(true)
    }

    /// Stream filter state `key`, when it holds bytes.
    pub fn filter_state(&self, key: &str) -> Option<&[u8]> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: `ptr` is this hook's stream; `key` outlives the call;
        // `value` is a valid out-pointer.
        let found = envoy_call!(envoy_dynamic_module_callback_http_get_filter_state_bytes(
            self.ptr,
            ModuleBuffer::of(key.as_bytes()),
            &mut value
        ));
        (found == Some(true)).then(|| envoy_bytes(value))
    }

    /// Sets dynamic metadata `namespace.key` to a string.
    pub fn set_metadata_string(&mut self, namespace: &str, key: &str, value: &str) -> bool {
        // SAFETY: `ptr` is this hook's stream; the slices outlive the call.
        envoy_call!(
            envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
                self.ptr,
                ModuleBuffer::of(namespace.as_bytes()),
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes())
            )
        )
        .is_some()
    }

    /// Sets dynamic metadata `namespace.key` to a number.
    pub fn set_metadata_number(&mut self, namespace: &str, key: &str, value: f64) -> bool {
        // SAFETY: as in `set_metadata_string`.
        envoy_call!(
            envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
                self.ptr,
                ModuleBuffer::of(namespace.as_bytes()),
                ModuleBuffer::of(key.as_bytes()),
                value
            )
        )
        .is_some()
    }

    /// The client's address (`ip:port`), as Envoy's `source.address`.
    pub fn source_address(&self) -> Option<String> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: `ptr` is this hook's stream; `value` is a valid out-pointer.
        let found = envoy_call!(
            envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.ptr,
                sys::ATTRIBUTE_SOURCE_ADDRESS,
                &mut value
            )
        );
        (found == Some(true)).then(|| String::from_utf8_lossy(envoy_bytes(value)).into_owned())
    }

    /// The downstream connection's id, as Envoy's `connection.id`.
    pub fn connection_id(&self) -> Option<u64> {
        let mut value = 0u64;
        // SAFETY: `ptr` is this hook's stream; `value` is a valid out-pointer.
        let found = envoy_call!(envoy_dynamic_module_callback_http_filter_get_attribute_int(
            self.ptr,
            sys::ATTRIBUTE_CONNECTION_ID,
            &mut value
        ));
        (found == Some(true)).then_some(value)
    }

    pub fn worker_index(&self) -> Option<u32> {
        // SAFETY: `ptr` is this hook's stream.
        envoy_call!(envoy_dynamic_module_callback_http_filter_get_worker_index(
            self.ptr
        ))
    }

    /// A handle to wake this stream's filter from any thread.
    pub fn scheduler(&mut self) -> Option<HttpScheduler> {
        // SAFETY: `ptr` is this hook's stream; the module owns the result.
        let ptr = envoy_call!(envoy_dynamic_module_callback_http_filter_scheduler_new(
            self.ptr
        ))?;
        (!ptr.is_null()).then_some(HttpScheduler { ptr })
    }

    fn metric(&mut self, id: MetricId, value: u64, call: Option<StreamMetric>) -> bool {
        let Some(call) = call else {
            return false;
        };
        // SAFETY: `ptr` is this hook's stream; `id` came from its
        // configuration, defined without labels (null, 0).
        unsafe { call(self.ptr, id.0, std::ptr::null_mut(), 0, value) == sys::METRICS_SUCCESS }
    }

    pub fn increment_counter(&mut self, id: MetricId, by: u64) -> bool {
        let call = sys::callbacks().envoy_dynamic_module_callback_http_filter_increment_counter;
        self.metric(id, by, call)
    }

    /// Adds `by` to the stat of a labelled family for `values` (one per
    /// label, in order; `false`, counting nothing, for another number:
    /// Envoy requires the match and does not check it).
    pub fn increment_labelled(&mut self, id: LabelledCounterId, values: &[&str], by: u64) -> bool {
        if values.len() != id.labels {
            return false;
        }
        let mut values = module_buffers(values);
        // SAFETY: `ptr` is this hook's stream; `id` came from its
        // configuration with as many labels as `values` holds; every value
        // outlives the call.
        envoy_call!(envoy_dynamic_module_callback_http_filter_increment_counter(
            self.ptr,
            id.id,
            values.as_mut_ptr(),
            values.len(),
            by
        )) == Some(sys::METRICS_SUCCESS)
    }

    pub fn set_gauge(&mut self, id: MetricId, value: u64) -> bool {
        let call = sys::callbacks().envoy_dynamic_module_callback_http_filter_set_gauge;
        self.metric(id, value, call)
    }

    pub fn increment_gauge(&mut self, id: MetricId, by: u64) -> bool {
        let call = sys::callbacks().envoy_dynamic_module_callback_http_filter_increment_gauge;
        self.metric(id, by, call)
    }

    pub fn decrement_gauge(&mut self, id: MetricId, by: u64) -> bool {
        let call = sys::callbacks().envoy_dynamic_module_callback_http_filter_decrement_gauge;
        self.metric(id, by, call)
    }

    pub fn record_histogram(&mut self, id: MetricId, value: u64) -> bool {
        let call =
            sys::callbacks().envoy_dynamic_module_callback_http_filter_record_histogram_value;
        self.metric(id, value, call)
    }
}

/// Headers as the ABI takes them, pointing into the caller's slices.
fn module_headers<'a>(
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<sys::ModuleHttpHeader> {
    headers
        .map(|(key, value)| sys::ModuleHttpHeader {
            key_ptr: key.as_ptr(),
            key_length: key.len(),
            value_ptr: value.as_ptr(),
            value_length: value.len(),
        })
        .collect()
}

/// A configuration as Envoy holds it.
struct ConfigSlot {
    config: Box<dyn HttpFilterConfig>,
}

/// A filter as Envoy holds it; after a panic it only holds.
///
/// Envoy calls back into a filter while one of its hooks runs: a local reply
/// or a reset the filter sends raises `local_reply` and, when that ends the
/// stream, `stream_complete` on the same filter, before the call returns. So
/// the slot is only ever shared (`&FilterSlot`), and the filter is lent out
/// mutably by one hook at a time (`busy`). A `stream_complete` that arrives
/// during another hook is delivered as soon as that hook is done (Envoy's
/// stream is still there: it is deleted later, on the event loop); any other
/// hook that arrives then is not delivered.
struct FilterSlot {
    filter: std::cell::UnsafeCell<Box<dyn HttpFilter>>,
    busy: std::cell::Cell<bool>,
    failed: std::cell::Cell<bool>,
    complete_deferred: std::cell::Cell<bool>,
}

impl FilterSlot {
    fn new(filter: Box<dyn HttpFilter>) -> FilterSlot {
        FilterSlot {
            filter: std::cell::UnsafeCell::new(filter),
            busy: std::cell::Cell::new(false),
            failed: std::cell::Cell::new(false),
            complete_deferred: std::cell::Cell::new(false),
        }
    }
}

/// The hook a filter may receive during another of its hooks, deferred.
const STREAM_COMPLETE: &str = "http_filter_stream_complete";

/// Runs a hook of one stream's filter under the panic guard. A panic marks
/// the filter failed and answers the stream with a 500 (a reset, if the
/// response had begun); a failed filter's hooks only return `held`, as does
/// a hook that arrives while another of the same filter runs.
fn with_filter<T: Copy>(
    hook: &str,
    filter_envoy: sys::HttpFilterEnvoyPtr,
    filter: sys::HttpFilterModulePtr,
    held: T,
    body: impl FnOnce(&mut dyn HttpFilter, &mut Stream) -> T,
) -> T {
    if filter.is_null() {
        return held;
    }
    // SAFETY: `filter` is the pointer `new` returned from `Box::into_raw` of a
    // FilterSlot, alive until `destroy`; Envoy passes it back on this
    // stream's worker thread only. Only a shared reference is made here.
    let slot = unsafe { &*(filter as *const FilterSlot) };
    if slot.failed.get() {
        return held;
    }
    if slot.busy.replace(true) {
        if hook == STREAM_COMPLETE {
            slot.complete_deferred.set(true);
        } else if hook != "http_filter_local_reply" {
            log(
                LogLevel::Warn,
                &format!(
                    "gatehouse: {hook} arrived during another hook of its filter; not delivered"
                ),
            );
        }
        return held;
    }
    let mut stream = Stream { ptr: filter_envoy };
    // SAFETY: `busy` was false and is now true on this (the only) thread, so
    // no other reference to the filter exists until it is cleared below.
    let outcome = try_hook(hook, || {
        body(unsafe { (*slot.filter.get()).as_mut() }, &mut stream)
    });
    slot.busy.set(false);
    if slot.complete_deferred.replace(false) {
        envoy_dynamic_module_on_http_filter_stream_complete(filter_envoy, filter);
    }
    match outcome {
        Some(value) => value,
        None => {
            slot.failed.set(true);
            stream.send_response(
                500,
                &[],
                b"gatehouse: internal error\n",
                "gatehouse_module_panic",
            );
            held
        }
    }
}

use sys::{
    BodyStatus as BodyCode, CalloutResultCode, HeadersStatus as HeadersCode,
    HttpFilterConfigEnvoyPtr, HttpFilterConfigModulePtr, HttpFilterEnvoyPtr, HttpFilterModulePtr,
    HttpFilterPerRouteConfigModulePtr, LocalReplyStatus, StreamResetReason,
    TrailersStatus as TrailersCode,
};

hooks! {
    fn envoy_dynamic_module_on_http_filter_config_new(config_envoy: HttpFilterConfigEnvoyPtr, name: EnvoyBuffer, config: EnvoyBuffer) -> HttpFilterConfigModulePtr {
        guard("http_filter_config_new", || {
            let Some(new_config) = NEW_CONFIG.get() else {
                log(LogLevel::Error, "gatehouse: the module registered no HTTP filter");
                return std::ptr::null();
            };
            let name = String::from_utf8_lossy(envoy_bytes(name)).into_owned();
            let mut envoy = HttpConfigEnvoy { ptr: config_envoy };
            match new_config(&name, envoy_bytes(config), &mut envoy) {
                Ok(config) => Box::into_raw(Box::new(ConfigSlot { config })) as HttpFilterConfigModulePtr,
                Err(error) => {
                    log(LogLevel::Error, &format!("gatehouse {name}: configuration rejected: {error}"));
                    std::ptr::null()
                }
            }
        }, std::ptr::null)
    }

    fn envoy_dynamic_module_on_http_filter_config_destroy(config: HttpFilterConfigModulePtr) {
        if config.is_null() {
            return;
        }
        // SAFETY: `config` came from `Box::into_raw` in config_new; Envoy
        // destroys it once, after its last filter.
        let slot = unsafe { Box::from_raw(config as *mut ConfigSlot) };
        guard("http_filter_config_destroy", || drop(slot), || ());
    }

    fn envoy_dynamic_module_on_http_filter_per_route_config_new(name: EnvoyBuffer, config: EnvoyBuffer) -> HttpFilterPerRouteConfigModulePtr {
        let _ = config;
        guard("http_filter_per_route_config_new", || {
            let name = String::from_utf8_lossy(envoy_bytes(name));
            log(LogLevel::Error, &format!("gatehouse {name}: per-route configuration is not supported; configure the filter on the listener"));
        }, || ());
        std::ptr::null()
    }

    fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(config: HttpFilterPerRouteConfigModulePtr) {
        // per_route_config_new never returns a configuration.
        let _ = config;
    }

    fn envoy_dynamic_module_on_http_filter_new(config: HttpFilterConfigModulePtr, filter_envoy: HttpFilterEnvoyPtr) -> HttpFilterModulePtr {
        if config.is_null() {
            return std::ptr::null();
        }
        // SAFETY: `config` came from config_new and outlives its filters; it is
        // only read here (the configuration is Sync).
        let slot = unsafe { &*(config as *const ConfigSlot) };
        guard("http_filter_new", || {
            let mut stream = Stream { ptr: filter_envoy };
            match slot.config.new_filter(&mut stream) {
                Some(filter) => Box::into_raw(Box::new(FilterSlot::new(filter))) as HttpFilterModulePtr,
                None => std::ptr::null(),
            }
        }, std::ptr::null)
    }

    fn envoy_dynamic_module_on_http_filter_request_headers(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr, end_of_stream: bool) -> HeadersCode {
        with_filter("http_filter_request_headers", filter_envoy, filter, HeadersStatus::StopIteration, |f, s| f.on_request_headers(s, end_of_stream)).code()
    }

    fn envoy_dynamic_module_on_http_filter_request_body(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr, end_of_stream: bool) -> BodyCode {
        with_filter("http_filter_request_body", filter_envoy, filter, BodyStatus::StopIterationNoBuffer, |f, s| f.on_request_body(s, end_of_stream)).code()
    }

    fn envoy_dynamic_module_on_http_filter_request_trailers(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr) -> TrailersCode {
        with_filter("http_filter_request_trailers", filter_envoy, filter, TrailersStatus::StopIteration, |f, s| f.on_request_trailers(s)).code()
    }

    fn envoy_dynamic_module_on_http_filter_response_headers(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr, end_of_stream: bool) -> HeadersCode {
        with_filter("http_filter_response_headers", filter_envoy, filter, HeadersStatus::StopIteration, |f, s| f.on_response_headers(s, end_of_stream)).code()
    }

    fn envoy_dynamic_module_on_http_filter_response_body(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr, end_of_stream: bool) -> BodyCode {
        with_filter("http_filter_response_body", filter_envoy, filter, BodyStatus::StopIterationNoBuffer, |f, s| f.on_response_body(s, end_of_stream)).code()
    }

    fn envoy_dynamic_module_on_http_filter_response_trailers(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr) -> TrailersCode {
        with_filter("http_filter_response_trailers", filter_envoy, filter, TrailersStatus::StopIteration, |f, s| f.on_response_trailers(s)).code()
    }

    fn envoy_dynamic_module_on_http_filter_stream_complete(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr) {
        with_filter(STREAM_COMPLETE, filter_envoy, filter, (), |f, s| f.on_stream_complete(s));
    }

    fn envoy_dynamic_module_on_http_filter_destroy(filter: HttpFilterModulePtr) {
        if filter.is_null() {
            return;
        }
        // SAFETY: `filter` came from `Box::into_raw` in `new`; Envoy destroys
        // it once, after its last hook.
        let slot = unsafe { Box::from_raw(filter as *mut FilterSlot) };
        guard("http_filter_destroy", || drop(slot), || ());
    }

    fn envoy_dynamic_module_on_http_filter_http_callout_done(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr, callout_id: u64, result: CalloutResultCode, headers: *const EnvoyHttpHeader, headers_size: usize, body_chunks: *const EnvoyBuffer, body_chunks_size: usize) {
        with_filter("http_filter_http_callout_done", filter_envoy, filter, (), |f, s| {
            let response = callout_response(result, headers, headers_size, body_chunks, body_chunks_size);
            f.on_http_callout_done(s, callout_id, response);
        });
    }

    fn envoy_dynamic_module_on_http_filter_http_stream_headers(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr, stream_id: u64, headers: *const EnvoyHttpHeader, headers_size: usize, end_stream: bool) {
        // gatehouse starts no streamed callouts.
        let _ = (filter_envoy, filter, stream_id, headers, headers_size, end_stream);
    }

    fn envoy_dynamic_module_on_http_filter_http_stream_data(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr, stream_id: u64, data: *const EnvoyBuffer, data_count: usize, end_stream: bool) {
        let _ = (filter_envoy, filter, stream_id, data, data_count, end_stream);
    }

    fn envoy_dynamic_module_on_http_filter_http_stream_trailers(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr, stream_id: u64, trailers: *const EnvoyHttpHeader, trailers_size: usize) {
        let _ = (filter_envoy, filter, stream_id, trailers, trailers_size);
    }

    fn envoy_dynamic_module_on_http_filter_http_stream_complete(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr, stream_id: u64) {
        let _ = (filter_envoy, filter, stream_id);
    }

    fn envoy_dynamic_module_on_http_filter_http_stream_reset(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr, stream_id: u64, reason: StreamResetReason) {
        let _ = (filter_envoy, filter, stream_id, reason);
    }

    fn envoy_dynamic_module_on_http_filter_scheduled(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr, event_id: u64) {
        with_filter("http_filter_scheduled", filter_envoy, filter, (), |f, s| f.on_scheduled(s, event_id));
    }

    fn envoy_dynamic_module_on_http_filter_config_scheduled(config_envoy: HttpFilterConfigEnvoyPtr, config: HttpFilterConfigModulePtr, event_id: u64) {
        if config.is_null() {
            return;
        }
        // SAFETY: `config` came from config_new and is alive until
        // config_destroy, which Envoy runs on this (main) thread, never during
        // this hook.
        let slot = unsafe { &*(config as *const ConfigSlot) };
        let mut envoy = HttpConfigEnvoy { ptr: config_envoy };
        guard("http_filter_config_scheduled", || slot.config.on_scheduled(&mut envoy, event_id), || ());
    }

    fn envoy_dynamic_module_on_http_filter_config_http_callout_done(config_envoy: HttpFilterConfigEnvoyPtr, config: HttpFilterConfigModulePtr, callout_id: u64, result: CalloutResultCode, headers: *const EnvoyHttpHeader, headers_size: usize, body_chunks: *const EnvoyBuffer, body_chunks_size: usize) {
        // gatehouse starts no callouts from a configuration.
        let _ = (config_envoy, config, callout_id, result, headers, headers_size, body_chunks, body_chunks_size);
    }

    fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(config_envoy: HttpFilterConfigEnvoyPtr, config: HttpFilterConfigModulePtr, stream_id: u64, headers: *const EnvoyHttpHeader, headers_size: usize, end_stream: bool) {
        let _ = (config_envoy, config, stream_id, headers, headers_size, end_stream);
    }

    fn envoy_dynamic_module_on_http_filter_config_http_stream_data(config_envoy: HttpFilterConfigEnvoyPtr, config: HttpFilterConfigModulePtr, stream_id: u64, data: *const EnvoyBuffer, data_count: usize, end_stream: bool) {
        let _ = (config_envoy, config, stream_id, data, data_count, end_stream);
    }

    fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(config_envoy: HttpFilterConfigEnvoyPtr, config: HttpFilterConfigModulePtr, stream_id: u64, trailers: *const EnvoyHttpHeader, trailers_size: usize) {
        let _ = (config_envoy, config, stream_id, trailers, trailers_size);
    }

    fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(config_envoy: HttpFilterConfigEnvoyPtr, config: HttpFilterConfigModulePtr, stream_id: u64) {
        let _ = (config_envoy, config, stream_id);
    }

    fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(config_envoy: HttpFilterConfigEnvoyPtr, config: HttpFilterConfigModulePtr, stream_id: u64, reason: StreamResetReason) {
        let _ = (config_envoy, config, stream_id, reason);
    }

    fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr) {
        let _ = (filter_envoy, filter);
    }

    fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr) {
        let _ = (filter_envoy, filter);
    }

    fn envoy_dynamic_module_on_http_filter_local_reply(filter_envoy: HttpFilterEnvoyPtr, filter: HttpFilterModulePtr, response_code: u32, details: EnvoyBuffer, reset_imminent: bool) -> LocalReplyStatus {
        let _ = reset_imminent;
        with_filter("http_filter_local_reply", filter_envoy, filter, (), |f, s| f.on_local_reply(s, response_code, envoy_bytes(details)));
        sys::LOCAL_REPLY_CONTINUE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_filter_holds_every_phase() {
        let held = with_filter(
            "test",
            std::ptr::null_mut(),
            std::ptr::null(),
            HeadersStatus::StopIteration,
            |_, _| HeadersStatus::Continue,
        );
        assert_eq!(held, HeadersStatus::StopIteration);
    }

    /// A filter that panics in every hook it is given.
    struct Panics;
    impl HttpFilter for Panics {
        fn on_request_headers(&mut self, _: &mut Stream, _: bool) -> HeadersStatus {
            std::panic::panic_any("request headers")
        }
    }

    #[test]
    fn a_panicking_filter_is_held_from_then_on() {
        let slot = Box::into_raw(Box::new(FilterSlot::new(Box::new(Panics))));
        let status = envoy_dynamic_module_on_http_filter_request_headers(
            std::ptr::null_mut(),
            slot as HttpFilterModulePtr,
            false,
        );
        assert_eq!(status, sys::HEADERS_STOP_ITERATION);
        // The next hook of the failed filter holds without running it.
        let body = envoy_dynamic_module_on_http_filter_request_body(
            std::ptr::null_mut(),
            slot as HttpFilterModulePtr,
            true,
        );
        assert_eq!(body, sys::BODY_STOP_ITERATION_NO_BUFFER);
        envoy_dynamic_module_on_http_filter_destroy(slot as HttpFilterModulePtr);
    }

    /// A filter whose request-headers hook is re-entered (as Envoy does when
    /// a filter's own local reply raises `local_reply` on it).
    struct Reenters {
        slot: *const FilterSlot,
        replies_seen: u32,
        completed: u32,
    }
    impl HttpFilter for Reenters {
        fn on_request_headers(&mut self, _: &mut Stream, _: bool) -> HeadersStatus {
            let status = envoy_dynamic_module_on_http_filter_local_reply(
                std::ptr::null_mut(),
                self.slot as HttpFilterModulePtr,
                403,
                EnvoyBuffer::EMPTY,
                false,
            );
            assert_eq!(status, sys::LOCAL_REPLY_CONTINUE);
            HeadersStatus::Continue
        }
        fn on_local_reply(&mut self, _: &mut Stream, _: u32, _: &[u8]) {
            self.replies_seen += 1;
        }
        fn on_request_body(&mut self, _: &mut Stream, _: bool) -> BodyStatus {
            // As a reset the filter sends ends the stream inside the call.
            envoy_dynamic_module_on_http_filter_stream_complete(
                std::ptr::null_mut(),
                self.slot as HttpFilterModulePtr,
            );
            assert_eq!(self.completed, 0, "not while this hook runs");
            BodyStatus::StopIterationNoBuffer
        }
        fn on_stream_complete(&mut self, _: &mut Stream) {
            self.completed += 1;
        }
    }

    #[test]
    fn a_hook_during_another_of_the_same_filter_waits_or_is_dropped() {
        let slot = Box::into_raw(Box::new(FilterSlot::new(Box::new(Reenters {
            slot: std::ptr::null(),
            replies_seen: 0,
            completed: 0,
        }))));
        // SAFETY (test): the slot was just made and nothing else uses it yet.
        let filter = unsafe { &mut *(*slot).filter.get() };
        let reenters: *mut Reenters = (filter.as_mut() as *mut dyn HttpFilter).cast();
        // SAFETY (test): the filter in the slot is the Reenters made above.
        unsafe { (*reenters).slot = slot };
        let status = envoy_dynamic_module_on_http_filter_request_headers(
            std::ptr::null_mut(),
            slot as HttpFilterModulePtr,
            true,
        );
        assert_eq!(status, sys::HEADERS_CONTINUE);
        // SAFETY (test): no hook runs now.
        assert_eq!(unsafe { (*reenters).replies_seen }, 0);
        // Outside another hook, the same hook is delivered.
        envoy_dynamic_module_on_http_filter_local_reply(
            std::ptr::null_mut(),
            slot as HttpFilterModulePtr,
            403,
            EnvoyBuffer::EMPTY,
            false,
        );
        // SAFETY (test): as above.
        assert_eq!(unsafe { (*reenters).replies_seen }, 1);
        // The end of the stream, raised inside a hook, follows that hook.
        let status = envoy_dynamic_module_on_http_filter_request_body(
            std::ptr::null_mut(),
            slot as HttpFilterModulePtr,
            true,
        );
        assert_eq!(status, sys::BODY_STOP_ITERATION_NO_BUFFER);
        // SAFETY (test): as above.
        assert_eq!(unsafe { (*reenters).completed }, 1);
        envoy_dynamic_module_on_http_filter_destroy(slot as HttpFilterModulePtr);
    }

    #[test]
    fn outside_envoy_every_stream_call_reports_failure() {
        let mut stream = Stream {
            ptr: std::ptr::null_mut(),
        };
        assert!(stream.header(HeaderMap::RequestHeaders, ":path").is_none());
        assert!(stream.headers(HeaderMap::RequestHeaders).is_empty());
        assert!(!stream.set_header(HeaderMap::RequestHeaders, "x", b"y"));
        assert!(stream.body_chunks(Body::BufferedRequest).is_empty());
        assert_eq!(stream.try_whole_body(Message::Request), None);
        assert_eq!(
            stream.http_callout("c", &[], b"", 1),
            Err(CalloutError::Unavailable)
        );
    }
}
