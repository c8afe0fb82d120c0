//! What every hook shares at the module boundary: the panic guard, borrowing
//! Envoy's bytes for the length of a hook, and HTTP callout answers (network
//! and HTTP filters receive them alike).

use crate::sys::{self, EnvoyBuffer, EnvoyHttpHeader};
use crate::{LogLevel, log};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// How an HTTP callout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalloutResult {
    Success,
    /// The stream was reset (no upstream, timeout, connection failure).
    Reset,
    ExceedResponseBufferLimit,
    Other(u32),
}

/// The answer to an HTTP callout, borrowed from Envoy for the hook.
#[derive(Debug)]
pub struct CalloutResponse<'a> {
    pub result: CalloutResult,
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    pub body: Vec<&'a [u8]>,
}

impl CalloutResponse<'_> {
    /// The first value of header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| *value)
    }

    /// The body, joined.
    pub fn body_bytes(&self) -> Vec<u8> {
        self.body.concat()
    }
}

/// The answer Envoy passes to a `*_http_callout_done` hook, borrowed for it.
pub(crate) fn callout_response<'a>(
    result: sys::CalloutResultCode,
    headers: *const EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) -> CalloutResponse<'a> {
    let headers: &[EnvoyHttpHeader] = if headers.is_null() {
        &[]
    } else {
        // SAFETY: Envoy passes `headers_size` headers, valid for this hook.
        unsafe { std::slice::from_raw_parts(headers, headers_size) }
    };
    let body: &[EnvoyBuffer] = if body_chunks.is_null() {
        &[]
    } else {
        // SAFETY: Envoy passes `body_chunks_size` chunks, valid for this hook.
        unsafe { std::slice::from_raw_parts(body_chunks, body_chunks_size) }
    };
    CalloutResponse {
        result: match result {
            sys::CALLOUT_SUCCESS => CalloutResult::Success,
            sys::CALLOUT_RESET => CalloutResult::Reset,
            sys::CALLOUT_EXCEED_RESPONSE_BUFFER_LIMIT => CalloutResult::ExceedResponseBufferLimit,
            other => CalloutResult::Other(other),
        },
        headers: headers.iter().map(envoy_header).collect(),
        body: body.iter().map(|chunk| envoy_bytes(*chunk)).collect(),
    }
}

/// A header Envoy lent for a hook, as two slices.
pub(crate) fn envoy_header<'a>(header: &EnvoyHttpHeader) -> (&'a [u8], &'a [u8]) {
    (
        envoy_bytes(EnvoyBuffer {
            ptr: header.key_ptr,
            length: header.key_length,
        }),
        envoy_bytes(EnvoyBuffer {
            ptr: header.value_ptr,
            length: header.value_length,
        }),
    )
}

/// Runs `body`, catching a panic: logged, then `None`.
pub(crate) fn try_hook<T>(hook: &str, body: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => Some(value),
        Err(payload) => {
            log(
                LogLevel::Critical,
                &format!(
                    "gatehouse: a panic in {hook} was caught at the module boundary: {}",
                    panic_message(payload.as_ref())
                ),
            );
            None
        }
    }
}

/// [`try_hook`], with `on_panic` giving the value to return after a panic.
pub(crate) fn guard<T>(hook: &str, body: impl FnOnce() -> T, on_panic: impl FnOnce() -> T) -> T {
    try_hook(hook, body).unwrap_or_else(on_panic)
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Bytes Envoy lent for a hook, as a slice.
pub(crate) fn envoy_bytes<'a>(buffer: EnvoyBuffer) -> &'a [u8] {
    if buffer.ptr.is_null() {
        return &[];
    }
    // SAFETY: Envoy keeps the bytes valid for the hook that received them;
    // callers use the slice only within that hook.
    unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.length) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_are_caught_and_their_message_kept() {
        let value = guard("test", || -> u32 { std::panic::panic_any("boom") }, || 7);
        assert_eq!(value, 7);
        assert_eq!(panic_message(&"boom"), "boom");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&3u8), "(no message)");
    }

    #[test]
    fn a_failed_callout_without_headers_or_body_reads_as_empty() {
        let response =
            callout_response(sys::CALLOUT_RESET, std::ptr::null(), 3, std::ptr::null(), 2);
        assert_eq!(response.result, CalloutResult::Reset);
        assert!(response.headers.is_empty() && response.body.is_empty());
        assert_eq!(
            callout_response(9, std::ptr::null(), 0, std::ptr::null(), 0).result,
            CalloutResult::Other(9)
        );
    }
}
