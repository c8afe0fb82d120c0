//! The raw ABI: the types, and the callbacks Envoy exports, exactly as
//! `source/extensions/dynamic_modules/abi/abi.h` of Envoy v1.40.0 declares
//! them (only the subset gatehouse calls). Names keep the header's suffix
//! after `envoy_dynamic_module_callback_`, so each line can be read against it.
//!
//! [`CALLBACKS`] lists every declaration as written here; the test
//! `tests/abi_facts.rs` holds it to `abi-v1.40.0.facts` (the header's facts,
//! one declaration per line) and to the symbols the pinned Envoy exports.
//!
//! C enums are `int`-sized: they cross as `u32`/`i32` with named constants.

use std::ffi::c_void;

/// `ENVOY_DYNAMIC_MODULES_ABI_VERSION` of the header this crate declares:
/// what `envoy_dynamic_module_on_program_init` reports (NUL-terminated).
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module,
/// borrowed by Envoy for the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }
}

/// `envoy_dynamic_module_type_module_http_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleHttpHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyHttpHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

/// `envoy_dynamic_module_type_network_filter_config_envoy_ptr`.
pub type NetworkFilterConfigEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_network_filter_config_module_ptr`.
pub type NetworkFilterConfigModulePtr = *const c_void;
/// `envoy_dynamic_module_type_network_filter_envoy_ptr`.
pub type NetworkFilterEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_network_filter_module_ptr`.
pub type NetworkFilterModulePtr = *const c_void;
/// `envoy_dynamic_module_type_network_filter_scheduler_module_ptr`.
pub type NetworkFilterSchedulerPtr = *mut c_void;
/// `envoy_dynamic_module_type_network_filter_config_scheduler_module_ptr`.
pub type NetworkFilterConfigSchedulerPtr = *mut c_void;

/// `envoy_dynamic_module_type_http_filter_config_envoy_ptr`.
pub type HttpFilterConfigEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_config_module_ptr`.
pub type HttpFilterConfigModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_per_route_config_module_ptr`.
pub type HttpFilterPerRouteConfigModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_envoy_ptr`.
pub type HttpFilterEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_module_ptr`.
pub type HttpFilterModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_scheduler_module_ptr`.
pub type HttpFilterSchedulerPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_config_scheduler_module_ptr`.
pub type HttpFilterConfigSchedulerPtr = *mut c_void;

/// `envoy_dynamic_module_type_http_header_type`: which header map.
pub type HttpHeaderType = u32;
pub const HEADERS_REQUEST: HttpHeaderType = 0;
pub const TRAILERS_REQUEST: HttpHeaderType = 1;
pub const HEADERS_RESPONSE: HttpHeaderType = 2;
pub const TRAILERS_RESPONSE: HttpHeaderType = 3;

/// `envoy_dynamic_module_type_http_body_type`: which body buffer.
pub type HttpBodyType = u32;
pub const BODY_RECEIVED_REQUEST: HttpBodyType = 0;
pub const BODY_BUFFERED_REQUEST: HttpBodyType = 1;
pub const BODY_RECEIVED_RESPONSE: HttpBodyType = 2;
pub const BODY_BUFFERED_RESPONSE: HttpBodyType = 3;

/// `envoy_dynamic_module_type_on_http_filter_request_headers_status` and
/// `..._response_headers_status` (the same values: Envoy's `FilterHeadersStatus`).
pub type HeadersStatus = u32;
pub const HEADERS_CONTINUE: HeadersStatus = 0;
pub const HEADERS_STOP_ITERATION: HeadersStatus = 1;
pub const HEADERS_CONTINUE_AND_DONT_END_STREAM: HeadersStatus = 2;
pub const HEADERS_STOP_ALL_ITERATION_AND_BUFFER: HeadersStatus = 3;
pub const HEADERS_STOP_ALL_ITERATION_AND_WATERMARK: HeadersStatus = 4;

/// `envoy_dynamic_module_type_on_http_filter_request_body_status` and
/// `..._response_body_status` (Envoy's `FilterDataStatus`).
pub type BodyStatus = u32;
pub const BODY_CONTINUE: BodyStatus = 0;
pub const BODY_STOP_ITERATION_AND_BUFFER: BodyStatus = 1;
pub const BODY_STOP_ITERATION_AND_WATERMARK: BodyStatus = 2;
pub const BODY_STOP_ITERATION_NO_BUFFER: BodyStatus = 3;

/// `envoy_dynamic_module_type_on_http_filter_request_trailers_status` and
/// `..._response_trailers_status` (Envoy's `FilterTrailersStatus`).
pub type TrailersStatus = u32;
pub const TRAILERS_CONTINUE: TrailersStatus = 0;
pub const TRAILERS_STOP_ITERATION: TrailersStatus = 1;

/// `envoy_dynamic_module_type_on_http_filter_local_reply_status`.
pub type LocalReplyStatus = u32;
pub const LOCAL_REPLY_CONTINUE: LocalReplyStatus = 0;
pub const LOCAL_REPLY_CONTINUE_AND_RESET_STREAM: LocalReplyStatus = 1;

/// `envoy_dynamic_module_type_http_filter_stream_reset_reason`: how a filter
/// resets its own stream.
pub type FilterStreamResetReason = u32;
pub const FILTER_RESET_LOCAL_RESET: FilterStreamResetReason = 0;
pub const FILTER_RESET_LOCAL_REFUSED_STREAM_RESET: FilterStreamResetReason = 1;

/// `envoy_dynamic_module_type_http_stream_reset_reason` (streamed callouts).
pub type StreamResetReason = u32;
pub const STREAM_RESET_CONNECTION_FAILURE: StreamResetReason = 0;
pub const STREAM_RESET_CONNECTION_TERMINATION: StreamResetReason = 1;
pub const STREAM_RESET_LOCAL_RESET: StreamResetReason = 2;
pub const STREAM_RESET_LOCAL_REFUSED_STREAM_RESET: StreamResetReason = 3;
pub const STREAM_RESET_OVERFLOW: StreamResetReason = 4;
pub const STREAM_RESET_REMOTE_RESET: StreamResetReason = 5;
pub const STREAM_RESET_REMOTE_REFUSED_STREAM_RESET: StreamResetReason = 6;
pub const STREAM_RESET_PROTOCOL_ERROR: StreamResetReason = 7;

/// `envoy_dynamic_module_type_attribute_id` (the few gatehouse reads).
pub type AttributeId = u32;
pub const ATTRIBUTE_SOURCE_ADDRESS: AttributeId = 24;
pub const ATTRIBUTE_SOURCE_PORT: AttributeId = 25;
pub const ATTRIBUTE_CONNECTION_ID: AttributeId = 28;

/// `envoy_dynamic_module_type_on_network_filter_data_status`.
pub type DataStatus = u32;
pub const DATA_STATUS_CONTINUE: DataStatus = 0;
pub const DATA_STATUS_STOP_ITERATION: DataStatus = 1;

/// `envoy_dynamic_module_type_network_connection_close_type`.
pub type CloseType = u32;
pub const CLOSE_FLUSH_WRITE: CloseType = 0;
pub const CLOSE_NO_FLUSH: CloseType = 1;
pub const CLOSE_FLUSH_WRITE_AND_DELAY: CloseType = 2;
pub const CLOSE_ABORT: CloseType = 3;
pub const CLOSE_ABORT_RESET: CloseType = 4;

/// `envoy_dynamic_module_type_network_connection_event`.
pub type ConnectionEventCode = u32;
pub const EVENT_REMOTE_CLOSE: ConnectionEventCode = 0;
pub const EVENT_LOCAL_CLOSE: ConnectionEventCode = 1;
pub const EVENT_CONNECTED: ConnectionEventCode = 2;
pub const EVENT_CONNECTED_ZERO_RTT: ConnectionEventCode = 3;

/// `envoy_dynamic_module_type_network_read_disable_status`.
pub type ReadDisableStatus = u32;
pub const READ_NO_TRANSITION: ReadDisableStatus = 0;
pub const READ_STILL_DISABLED: ReadDisableStatus = 1;
pub const READ_TRANSITIONED_TO_ENABLED: ReadDisableStatus = 2;
pub const READ_TRANSITIONED_TO_DISABLED: ReadDisableStatus = 3;

/// `envoy_dynamic_module_type_log_level`.
pub type LogLevelCode = u32;
pub const LOG_TRACE: LogLevelCode = 0;
pub const LOG_DEBUG: LogLevelCode = 1;
pub const LOG_INFO: LogLevelCode = 2;
pub const LOG_WARN: LogLevelCode = 3;
pub const LOG_ERROR: LogLevelCode = 4;
pub const LOG_CRITICAL: LogLevelCode = 5;

/// `envoy_dynamic_module_type_metrics_result`.
pub type MetricsResult = u32;
pub const METRICS_SUCCESS: MetricsResult = 0;

/// `envoy_dynamic_module_type_http_callout_init_result`.
pub type CalloutInitResult = u32;
pub const CALLOUT_INIT_SUCCESS: CalloutInitResult = 0;
pub const CALLOUT_INIT_MISSING_REQUIRED_HEADERS: CalloutInitResult = 1;
pub const CALLOUT_INIT_CLUSTER_NOT_FOUND: CalloutInitResult = 2;
pub const CALLOUT_INIT_DUPLICATE_CALLOUT_ID: CalloutInitResult = 3;
pub const CALLOUT_INIT_CANNOT_CREATE_REQUEST: CalloutInitResult = 4;

/// `envoy_dynamic_module_type_http_callout_result`.
pub type CalloutResultCode = u32;
pub const CALLOUT_SUCCESS: CalloutResultCode = 0;
pub const CALLOUT_RESET: CalloutResultCode = 1;
pub const CALLOUT_EXCEED_RESPONSE_BUFFER_LIMIT: CalloutResultCode = 2;

/// Declares Envoy's callbacks as function-pointer types, resolved once by
/// name from the process Envoy runs in ([`callbacks`]), and lists each
/// declaration, as written, in [`CALLBACKS`] for the facts test.
///
/// Resolving at run time (`dlsym` in the whole process) instead of linking
/// keeps test binaries of the glue linkable without Envoy: there every
/// callback is absent and each safe wrapper reports failure.
macro_rules! callbacks {
    ($( fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? ; )*) => {
        /// Envoy's callbacks; `None` for one the process does not export.
        #[allow(non_snake_case)]
        pub struct Callbacks {
            $( pub $name: Option<unsafe extern "C" fn($($ty),*) $(-> $ret)?>, )*
        }

        impl Callbacks {
            fn resolve() -> Callbacks {
                Callbacks {
                    $( $name: lookup(concat!(stringify!($name), "\0")).map(|address| {
                        // SAFETY: the symbol is Envoy's definition of this
                        // callback, whose C signature this declaration matches
                        // (held to the header by tests/abi_facts.rs); a data
                        // pointer and a function pointer have the same size here.
                        unsafe {
                            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) $(-> $ret)?>(address)
                        }
                    }), )*
                }
            }
        }

        /// Every callback declared here: `(name, "(arguments) -> return")`.
        pub const CALLBACKS: &[(&str, &str)] = &[
            $( (stringify!($name), stringify!(($($arg: $ty),*) $(-> $ret)?)) ),*
        ];
    };
}

unsafe extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const std::ffi::c_char) -> *mut c_void;
}

/// glibc's `RTLD_DEFAULT`: search the global scope (Envoy's exported symbols).
const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();

/// The address of `name` (NUL-terminated) in the process, if it is defined.
fn lookup(name: &str) -> Option<*mut c_void> {
    // SAFETY: `name` is NUL-terminated (the macro appends it); dlsym only reads it.
    let address = unsafe { dlsym(RTLD_DEFAULT, name.as_ptr().cast()) };
    (!address.is_null()).then_some(address)
}

/// Envoy's callbacks, resolved on first use.
pub fn callbacks() -> &'static Callbacks {
    static RESOLVED: std::sync::OnceLock<Callbacks> = std::sync::OnceLock::new();
    RESOLVED.get_or_init(Callbacks::resolve)
}

/// Calls a callback through [`callbacks`]: `Some(result)`, or `None` when
/// Envoy does not export it. The caller states why the call is sound.
macro_rules! envoy_call {
    ($name:ident ( $($arg:expr),* $(,)? )) => {
        match $crate::sys::callbacks().$name {
            Some(callback) => Some(unsafe { callback($($arg),*) }),
            None => None,
        }
    };
}
pub(crate) use envoy_call;

callbacks! {
    fn envoy_dynamic_module_callback_log(level: LogLevelCode, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_log_enabled(level: LogLevelCode) -> bool;

    fn envoy_dynamic_module_callback_network_filter_get_read_buffer_size(filter: NetworkFilterEnvoyPtr) -> usize;
    fn envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks_size(filter: NetworkFilterEnvoyPtr) -> usize;
    fn envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks(filter: NetworkFilterEnvoyPtr, result: *mut EnvoyBuffer) -> bool;
    fn envoy_dynamic_module_callback_network_filter_get_write_buffer_size(filter: NetworkFilterEnvoyPtr) -> usize;
    fn envoy_dynamic_module_callback_network_filter_get_write_buffer_chunks_size(filter: NetworkFilterEnvoyPtr) -> usize;
    fn envoy_dynamic_module_callback_network_filter_get_write_buffer_chunks(filter: NetworkFilterEnvoyPtr, result: *mut EnvoyBuffer) -> bool;
    fn envoy_dynamic_module_callback_network_filter_drain_read_buffer(filter: NetworkFilterEnvoyPtr, length: usize) -> bool;
    fn envoy_dynamic_module_callback_network_filter_drain_write_buffer(filter: NetworkFilterEnvoyPtr, length: usize) -> bool;
    fn envoy_dynamic_module_callback_network_filter_append_read_buffer(filter: NetworkFilterEnvoyPtr, data: ModuleBuffer) -> bool;
    fn envoy_dynamic_module_callback_network_filter_append_write_buffer(filter: NetworkFilterEnvoyPtr, data: ModuleBuffer) -> bool;
    fn envoy_dynamic_module_callback_network_filter_write(filter: NetworkFilterEnvoyPtr, data: ModuleBuffer, end_stream: bool);
    fn envoy_dynamic_module_callback_network_filter_inject_read_data(filter: NetworkFilterEnvoyPtr, data: ModuleBuffer, end_stream: bool);
    fn envoy_dynamic_module_callback_network_filter_continue_reading(filter: NetworkFilterEnvoyPtr);
    fn envoy_dynamic_module_callback_network_filter_read_disable(filter: NetworkFilterEnvoyPtr, disable: bool) -> ReadDisableStatus;
    fn envoy_dynamic_module_callback_network_filter_close(filter: NetworkFilterEnvoyPtr, close_type: CloseType);
    fn envoy_dynamic_module_callback_network_filter_get_connection_id(filter: NetworkFilterEnvoyPtr) -> u64;
    fn envoy_dynamic_module_callback_network_filter_get_remote_address(filter: NetworkFilterEnvoyPtr, address: *mut EnvoyBuffer, port: *mut u32) -> bool;
    fn envoy_dynamic_module_callback_network_filter_is_ssl(filter: NetworkFilterEnvoyPtr) -> bool;
    fn envoy_dynamic_module_callback_network_filter_start_downstream_secure_transport(filter: NetworkFilterEnvoyPtr) -> bool;
    fn envoy_dynamic_module_callback_network_filter_get_worker_index(filter: NetworkFilterEnvoyPtr) -> u32;
    fn envoy_dynamic_module_callback_network_set_filter_state_bytes(filter: NetworkFilterEnvoyPtr, key: ModuleBuffer, value: ModuleBuffer) -> bool;

    fn envoy_dynamic_module_callback_network_filter_config_define_counter(config: NetworkFilterConfigEnvoyPtr, name: ModuleBuffer, id: *mut usize) -> MetricsResult;
    fn envoy_dynamic_module_callback_network_filter_config_define_gauge(config: NetworkFilterConfigEnvoyPtr, name: ModuleBuffer, id: *mut usize) -> MetricsResult;
    fn envoy_dynamic_module_callback_network_filter_config_define_histogram(config: NetworkFilterConfigEnvoyPtr, name: ModuleBuffer, id: *mut usize) -> MetricsResult;
    fn envoy_dynamic_module_callback_network_filter_increment_counter(filter: NetworkFilterEnvoyPtr, id: usize, value: u64) -> MetricsResult;
    fn envoy_dynamic_module_callback_network_filter_set_gauge(filter: NetworkFilterEnvoyPtr, id: usize, value: u64) -> MetricsResult;
    fn envoy_dynamic_module_callback_network_filter_increment_gauge(filter: NetworkFilterEnvoyPtr, id: usize, value: u64) -> MetricsResult;
    fn envoy_dynamic_module_callback_network_filter_decrement_gauge(filter: NetworkFilterEnvoyPtr, id: usize, value: u64) -> MetricsResult;
    fn envoy_dynamic_module_callback_network_filter_record_histogram_value(filter: NetworkFilterEnvoyPtr, id: usize, value: u64) -> MetricsResult;
    fn envoy_dynamic_module_callback_network_filter_config_increment_counter(config: NetworkFilterConfigEnvoyPtr, id: usize, value: u64) -> MetricsResult;

    fn envoy_dynamic_module_callback_network_filter_http_callout(filter: NetworkFilterEnvoyPtr, callout_id: *mut u64, cluster_name: ModuleBuffer, headers: *mut ModuleHttpHeader, headers_size: usize, body: ModuleBuffer, timeout_milliseconds: u64) -> CalloutInitResult;

    fn envoy_dynamic_module_callback_network_filter_scheduler_new(filter: NetworkFilterEnvoyPtr) -> NetworkFilterSchedulerPtr;
    fn envoy_dynamic_module_callback_network_filter_scheduler_commit(scheduler: NetworkFilterSchedulerPtr, event_id: u64);
    fn envoy_dynamic_module_callback_network_filter_scheduler_delete(scheduler: NetworkFilterSchedulerPtr);
    fn envoy_dynamic_module_callback_network_filter_config_scheduler_new(config: NetworkFilterConfigEnvoyPtr) -> NetworkFilterConfigSchedulerPtr;
    fn envoy_dynamic_module_callback_network_filter_config_scheduler_commit(scheduler: NetworkFilterConfigSchedulerPtr, event_id: u64);
    fn envoy_dynamic_module_callback_network_filter_config_scheduler_delete(scheduler: NetworkFilterConfigSchedulerPtr);

    fn envoy_dynamic_module_callback_http_get_header(filter: HttpFilterEnvoyPtr, header_type: HttpHeaderType, key: ModuleBuffer, result: *mut EnvoyBuffer, index: usize, optional_size: *mut usize) -> bool;
    fn envoy_dynamic_module_callback_http_get_headers_size(filter: HttpFilterEnvoyPtr, header_type: HttpHeaderType) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(filter: HttpFilterEnvoyPtr, header_type: HttpHeaderType, result: *mut EnvoyHttpHeader) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(filter: HttpFilterEnvoyPtr, header_type: HttpHeaderType, key: ModuleBuffer, value: ModuleBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(filter: HttpFilterEnvoyPtr, header_type: HttpHeaderType, key: ModuleBuffer, value: ModuleBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_send_response(filter: HttpFilterEnvoyPtr, status_code: u32, headers: *mut ModuleHttpHeader, headers_size: usize, body: ModuleBuffer, details: ModuleBuffer);
    fn envoy_dynamic_module_callback_http_get_body_size(filter: HttpFilterEnvoyPtr, body_type: HttpBodyType) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(filter: HttpFilterEnvoyPtr, body_type: HttpBodyType) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(filter: HttpFilterEnvoyPtr, body_type: HttpBodyType, result: *mut EnvoyBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_append_body(filter: HttpFilterEnvoyPtr, body_type: HttpBodyType, data: ModuleBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_drain_body(filter: HttpFilterEnvoyPtr, body_type: HttpBodyType, length: usize) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_request_body(filter: HttpFilterEnvoyPtr) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_response_body(filter: HttpFilterEnvoyPtr) -> bool;
    fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(filter: HttpFilterEnvoyPtr, namespace: ModuleBuffer, key: ModuleBuffer, value: ModuleBuffer);
    fn envoy_dynamic_module_callback_http_set_dynamic_metadata_number(filter: HttpFilterEnvoyPtr, namespace: ModuleBuffer, key: ModuleBuffer, value: f64);
    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(filter: HttpFilterEnvoyPtr, key: ModuleBuffer, value: ModuleBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_get_filter_state_bytes(filter: HttpFilterEnvoyPtr, key: ModuleBuffer, result: *mut EnvoyBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(filter: HttpFilterEnvoyPtr, attribute: AttributeId, result: *mut EnvoyBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_int(filter: HttpFilterEnvoyPtr, attribute: AttributeId, result: *mut u64) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_worker_index(filter: HttpFilterEnvoyPtr) -> u32;
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: HttpFilterEnvoyPtr);
    fn envoy_dynamic_module_callback_http_filter_continue_encoding(filter: HttpFilterEnvoyPtr);
    fn envoy_dynamic_module_callback_http_filter_reset_stream(filter: HttpFilterEnvoyPtr, reason: FilterStreamResetReason, details: ModuleBuffer);
    fn envoy_dynamic_module_callback_http_filter_http_callout(filter: HttpFilterEnvoyPtr, callout_id: *mut u64, cluster_name: ModuleBuffer, headers: *mut ModuleHttpHeader, headers_size: usize, body: ModuleBuffer, timeout_milliseconds: u64) -> CalloutInitResult;

    fn envoy_dynamic_module_callback_http_filter_config_define_counter(config: HttpFilterConfigEnvoyPtr, name: ModuleBuffer, label_names: *mut ModuleBuffer, label_names_size: usize, id: *mut usize) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(config: HttpFilterConfigEnvoyPtr, name: ModuleBuffer, label_names: *mut ModuleBuffer, label_names_size: usize, id: *mut usize) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_config_define_histogram(config: HttpFilterConfigEnvoyPtr, name: ModuleBuffer, label_names: *mut ModuleBuffer, label_names_size: usize, id: *mut usize) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(filter: HttpFilterEnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_size: usize, value: u64) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_set_gauge(filter: HttpFilterEnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_size: usize, value: u64) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_increment_gauge(filter: HttpFilterEnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_size: usize, value: u64) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_decrement_gauge(filter: HttpFilterEnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_size: usize, value: u64) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_record_histogram_value(filter: HttpFilterEnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_size: usize, value: u64) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(config: HttpFilterConfigEnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_size: usize, value: u64) -> MetricsResult;

    fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter: HttpFilterEnvoyPtr) -> HttpFilterSchedulerPtr;
    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(scheduler: HttpFilterSchedulerPtr, event_id: u64);
    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: HttpFilterSchedulerPtr);
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(config: HttpFilterConfigEnvoyPtr) -> HttpFilterConfigSchedulerPtr;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler: HttpFilterConfigSchedulerPtr, event_id: u64);
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: HttpFilterConfigSchedulerPtr);
}
