//! Host calls that return every status as a value.
//!
//! The proxy-wasm SDK's wrappers `panic!` on any status they do not expect, and a
//! panic aborts the Wasm VM that every connection of an Envoy worker shares. The
//! glue therefore makes its data-path host calls through this module, which
//! speaks the proxy-wasm ABI (0.2.1) directly and hands back `Result<_, Status>`.
//!
//! Off Wasm (native unit tests, clippy), the calls report `Status::InternalFailure`.
#![allow(unsafe_code)] // the ABI is a set of extern functions; every use is documented below.

pub mod approvals;
pub mod keys;
pub mod metrics;
pub mod records;

pub use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};

// Off Wasm only the tests call these.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn status(code: u32) -> Status {
    match code {
        0 => Status::Ok,
        1 => Status::NotFound,
        2 => Status::BadArgument,
        3 => Status::SerializationFailure,
        4 => Status::ParseFailure,
        7 => Status::Empty,
        8 => Status::CasMismatch,
        _ => Status::InternalFailure,
    }
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn ok(code: u32) -> Result<(), Status> {
    match status(code) {
        Status::Ok => Ok(()),
        other => Err(other),
    }
}

/// A property path as the host expects it: segments joined by NUL.
fn property_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

/// Header pairs serialised as the ABI's map format: count, sizes, then NUL-terminated data.
fn serialize_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(target_arch = "wasm32")]
mod abi {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        pub fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_buffer_bytes(
            buffer_type: u32,
            start: usize,
            size: usize,
            data: *const u8,
            data_size: usize,
        ) -> u32;
        pub fn proxy_get_property(
            path: *const u8,
            path_size: usize,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_property(
            path: *const u8,
            path_size: usize,
            data: *const u8,
            data_size: usize,
        ) -> u32;
        pub fn proxy_define_metric(
            metric_type: u32,
            name: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        pub fn proxy_increment_metric(id: u32, offset: i64) -> u32;
        pub fn proxy_record_metric(id: u32, value: u64) -> u32;
        pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        pub fn proxy_close_stream(stream_type: u32) -> u32;
        pub fn proxy_log(level: u32, message: *const u8, message_size: usize) -> u32;
        pub fn proxy_send_local_response(
            status_code: u32,
            details: *const u8,
            details_size: usize,
            body: *const u8,
            body_size: usize,
            headers: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_get_header_map_value(
            map_type: u32,
            key: *const u8,
            key_size: usize,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map_type: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(map_type: u32, key: *const u8, key_size: usize)
        -> u32;
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
        pub fn proxy_add_header_map_value(
            map_type: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_continue_stream(stream_type: u32) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub fn proxy_set_effective_context(context_id: u32) -> u32;
        pub fn proxy_get_shared_data(
            key: *const u8,
            key_size: usize,
            return_value: *mut *mut u8,
            return_value_size: *mut usize,
            return_cas: *mut u32,
        ) -> u32;
        pub fn proxy_set_shared_data(
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
    }

    /// Takes ownership of bytes the host allocated through the SDK's exported
    /// `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes).
    pub fn take_host_bytes(data: *mut u8, size: usize) -> Option<Vec<u8>> {
        if data.is_null() {
            return None;
        }
        // SAFETY: the host filled `size` bytes at `data`, which it obtained from
        // `proxy_on_memory_allocate(size)`: an allocation of exactly `size` bytes
        // with this module's allocator, now owned by us.
        Some(unsafe { Vec::from_raw_parts(data, size, size) })
    }
}

/// Reads `max_size` bytes from `start` of a host buffer (`None`: empty or absent).
pub fn get_buffer(
    buffer: BufferType,
    start: usize,
    max_size: usize,
) -> Result<Option<Vec<u8>>, Status> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: out-pointers are valid locals; see `take_host_bytes` for the result.
        let code = unsafe {
            abi::proxy_get_buffer_bytes(buffer as u32, start, max_size, &mut data, &mut size)
        };
        match status(code) {
            Status::Ok => Ok(abi::take_host_bytes(data, size)),
            Status::NotFound => Ok(None),
            other => Err(other),
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (buffer, start, max_size);
        Err(Status::InternalFailure)
    }
}

/// Replaces `size` bytes at `start` of a host buffer with `value`.
///
/// Envoy's network buffers accept only `start == 0` (replace a prefix) or an
/// append; the glue always replaces the whole buffer.
pub fn set_buffer(
    buffer: BufferType,
    start: usize,
    size: usize,
    value: &[u8],
) -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: `value` is a valid slice for the duration of the call.
        ok(unsafe {
            abi::proxy_set_buffer_bytes(buffer as u32, start, size, value.as_ptr(), value.len())
        })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (buffer, start, size, value);
        Err(Status::InternalFailure)
    }
}

/// Reads a host property (e.g. `["connection_id"]`, `["source", "address"]`).
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let path = property_path(path);
    #[cfg(target_arch = "wasm32")]
    {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: `path` outlives the call; out-pointers are valid locals.
        let code =
            unsafe { abi::proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
        match status(code) {
            Status::Ok => Ok(abi::take_host_bytes(data, size)),
            Status::NotFound | Status::SerializationFailure => Ok(None),
            other => Err(other),
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = path;
        Err(Status::InternalFailure)
    }
}

/// Sets a property; `set_property(&["x"], v)` becomes Envoy filter state `wasm.x`,
/// which access logs print with `%FILTER_STATE(wasm.x:PLAIN)%`.
pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), Status> {
    let path = property_path(path);
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: both slices outlive the call.
        ok(unsafe {
            abi::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len())
        })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (path, value);
        Err(Status::InternalFailure)
    }
}

/// Defines (or finds) a metric; Envoy exposes it under `wasmcustom.<name>`.
pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut id: u32 = 0;
        // SAFETY: `name` outlives the call; `id` is a valid out-pointer.
        let code =
            unsafe { abi::proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) };
        ok(code).map(|()| id)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (kind, name);
        Err(Status::InternalFailure)
    }
}

pub fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain values only.
        ok(unsafe { abi::proxy_increment_metric(id, offset) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (id, offset);
        Err(Status::InternalFailure)
    }
}

pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain values only.
        ok(unsafe { abi::proxy_record_metric(id, value) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (id, value);
        Err(Status::InternalFailure)
    }
}

/// Host wall-clock time in unix microseconds.
pub fn now_micros() -> Result<u64, Status> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut nanos: u64 = 0;
        // SAFETY: `nanos` is a valid out-pointer.
        ok(unsafe { abi::proxy_get_current_time_nanoseconds(&mut nanos) }).map(|()| nanos / 1_000)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        Err(Status::InternalFailure)
    }
}

/// Closes the client side of a network connection (after flushing writes).
pub fn close_downstream() -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain value.
        ok(unsafe { abi::proxy_close_stream(proxy_wasm::types::StreamType::Downstream as u32) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        Err(Status::InternalFailure)
    }
}

/// Writes to Envoy's log under the `wasm` logger, at a glue crate's severity.
pub fn log_at(level: gatehouse_core::host::Level, message: &str) {
    use gatehouse_core::host::Level;
    let level = match level {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
        Level::Critical => LogLevel::Critical,
    };
    log(level, message);
}

/// Writes to Envoy's log under the `wasm` logger.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: `message` outlives the call. A failed log line is not worth more than dropping it.
        let _ = unsafe { abi::proxy_log(level as u32, message.as_ptr(), message.len()) };
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (level, message);
    }
}

/// Answers an HTTP request locally (the request goes no further upstream).
pub fn send_http_response(code: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), Status> {
    let headers = serialize_map(headers);
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: all slices outlive the call; -1 means "not a gRPC status".
        ok(unsafe {
            abi::proxy_send_local_response(
                code,
                std::ptr::null(),
                0,
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (code, headers, body);
        Err(Status::InternalFailure)
    }
}

/// One header's value (`None` when absent).
pub fn get_header(map: MapType, name: &str) -> Result<Option<String>, Status> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: `name` outlives the call; out-pointers are valid locals.
        let code = unsafe {
            abi::proxy_get_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                &mut data,
                &mut size,
            )
        };
        match status(code) {
            Status::Ok => {
                Ok(abi::take_host_bytes(data, size)
                    .map(|b| String::from_utf8_lossy(&b).into_owned()))
            }
            Status::NotFound => Ok(None),
            other => Err(other),
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (map, name);
        Err(Status::InternalFailure)
    }
}

/// Sets a header, replacing any existing value.
pub fn replace_header(map: MapType, name: &str, value: &str) -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: both slices outlive the call.
        ok(unsafe {
            abi::proxy_replace_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (map, name, value);
        Err(Status::InternalFailure)
    }
}

pub fn remove_header(map: MapType, name: &str) -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: `name` outlives the call.
        ok(unsafe { abi::proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (map, name);
        Err(Status::InternalFailure)
    }
}

/// Parses the ABI's map format (see [`serialize_map`]); `None` if malformed.
fn deserialize_map(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let u32_at = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(raw)).ok()
    };
    let count = u32_at(0)?;
    // Each entry needs 8 bytes of sizes and two NULs: bounds `count` by the input.
    if count > bytes.len() / 10 {
        return None;
    }
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let key_len = u32_at(4 + i * 8)?;
        let value_len = u32_at(8 + i * 8)?;
        let key_end = data.checked_add(key_len)?;
        let key = bytes
            .get(data..key_end)
            .filter(|_| bytes.get(key_end) == Some(&0))?;
        data = key_end.checked_add(1)?;
        let value_end = data.checked_add(value_len)?;
        let value = bytes
            .get(data..value_end)
            .filter(|_| bytes.get(value_end) == Some(&0))?;
        data = value_end.checked_add(1)?;
        pairs.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(pairs)
}

/// Every header of a map, in order (repeated names appear repeatedly).
pub fn get_headers(map: MapType) -> Result<Vec<(String, String)>, Status> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: out-pointers are valid locals; see `take_host_bytes` for the result.
        let code = unsafe { abi::proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
        match status(code) {
            Status::Ok => match abi::take_host_bytes(data, size) {
                None => Ok(Vec::new()),
                Some(bytes) => deserialize_map(&bytes).ok_or(Status::ParseFailure),
            },
            Status::NotFound => Ok(Vec::new()),
            other => Err(other),
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (map, deserialize_map);
        Err(Status::InternalFailure)
    }
}

/// Adds a header value, keeping existing values of the same name.
pub fn add_header(map: MapType, name: &str, value: &str) -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: both slices outlive the call.
        ok(unsafe {
            abi::proxy_add_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (map, name, value);
        Err(Status::InternalFailure)
    }
}

/// Resets the HTTP stream (both directions): for a response that can no
/// longer be answered cleanly because its headers already went out.
pub fn reset_http_stream() -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain value; 1 is StreamType::HttpResponse.
        ok(unsafe { abi::proxy_close_stream(1) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        Err(Status::InternalFailure)
    }
}

/// Resumes an HTTP request the current context paused.
pub fn resume_http_request() -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain value; 0 is StreamType::HttpRequest.
        ok(unsafe { abi::proxy_continue_stream(0) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        Err(Status::InternalFailure)
    }
}

/// Resumes the client → server data of a network connection the current
/// context paused: the held bytes go on to the next filter unchanged.
pub fn resume_downstream() -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain value; 2 is StreamType::Downstream.
        ok(unsafe { abi::proxy_continue_stream(2) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        Err(Status::InternalFailure)
    }
}

/// Starts an HTTP call to `cluster`; its answer comes to the calling context's
/// `on_http_call_response` with the returned token.
///
/// Made through the SDK because only its wrapper registers the call with the
/// SDK's dispatcher, which routes the answer to the calling context (an
/// unregistered answer aborts the VM). Its wrapper panics only on statuses other
/// than Ok, BadArgument and InternalFailure, which Envoy's `http_call` does not
/// return for well-formed headers like these.
pub fn dispatch_http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: std::time::Duration,
) -> Result<u32, Status> {
    #[cfg(target_arch = "wasm32")]
    {
        proxy_wasm::hostcalls::dispatch_http_call(cluster, headers.to_vec(), body, vec![], timeout)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (cluster, headers, body, timeout);
        Err(Status::InternalFailure)
    }
}

/// Resumes an HTTP response the current context paused.
pub fn resume_http_response() -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain value; 1 is StreamType::HttpResponse.
        ok(unsafe { abi::proxy_continue_stream(1) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        Err(Status::InternalFailure)
    }
}

/// Makes `context_id` the context later host calls act on (e.g. to close a
/// connection from the root context's tick). `Err(BadArgument)`: it is gone.
pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain value.
        ok(unsafe { abi::proxy_set_effective_context(context_id) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = context_id;
        Err(Status::InternalFailure)
    }
}

/// Sets the root context's tick period (0 stops ticking).
pub fn set_tick_period_ms(period_ms: u32) -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain value.
        ok(unsafe { abi::proxy_set_tick_period_milliseconds(period_ms) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = period_ms;
        Err(Status::InternalFailure)
    }
}

/// Reads a value shared by every VM with this vm_id, with its CAS token
/// (`Ok(None)` when absent).
pub fn get_shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        let mut cas: u32 = 0;
        // SAFETY: `key` outlives the call; out-pointers are valid locals.
        let code = unsafe {
            abi::proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        };
        match status(code) {
            Status::Ok => Ok(Some((
                abi::take_host_bytes(data, size).unwrap_or_default(),
                cas,
            ))),
            Status::NotFound => Ok(None),
            other => Err(other),
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = key;
        Err(Status::InternalFailure)
    }
}

/// Writes a shared value. With `cas` (from [`get_shared_data`]) the write only
/// succeeds if nobody wrote since (`Err(CasMismatch)` otherwise); 0 writes always.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: both slices outlive the call.
        ok(unsafe {
            abi::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
        })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (key, value, cas);
        Err(Status::InternalFailure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_round_trip_and_malformed_maps_are_refused() {
        let pairs = [(":status", "200"), ("set-cookie", "a"), ("set-cookie", "")];
        let bytes = serialize_map(&pairs);
        let parsed = deserialize_map(&bytes).unwrap();
        assert_eq!(
            parsed,
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
        assert_eq!(deserialize_map(&serialize_map(&[])), Some(Vec::new()));
        for cut in 0..bytes.len() {
            assert!(
                deserialize_map(bytes.get(..cut).unwrap()).is_none(),
                "cut at {cut}"
            );
        }
        assert!(deserialize_map(&u32::MAX.to_le_bytes()).is_none());
    }

    #[test]
    fn property_path_joins_with_nul() {
        assert_eq!(
            property_path(&["source", "address"]),
            b"source\0address".to_vec()
        );
        assert_eq!(property_path(&["x"]), b"x".to_vec());
    }

    #[test]
    fn header_map_serialisation_matches_abi() {
        let bytes = serialize_map(&[("a", "bc")]);
        assert_eq!(
            bytes,
            [
                &1u32.to_le_bytes()[..],
                &1u32.to_le_bytes(),
                &2u32.to_le_bytes(),
                b"a\0bc\0"
            ]
            .concat()
        );
    }

    #[test]
    fn unknown_status_codes_are_internal_failures() {
        assert_eq!(status(0), Status::Ok);
        assert_eq!(status(12), Status::InternalFailure);
        assert_eq!(ok(2), Err(Status::BadArgument));
    }
}
