//! gatehouse's bindings for Envoy's dynamic-modules ABI, and the safe layer
//! the native filters are written against.
//!
//! Envoy 1.40 loads native extensions ("dynamic modules") with `dlopen` and
//! drives them through a C ABI declared in one header,
//! `source/extensions/dynamic_modules/abi/abi.h`: event hooks the module
//! exports (`envoy_dynamic_module_on_*`) and callbacks Envoy exports
//! (`envoy_dynamic_module_callback_*`). This crate declares the part gatehouse
//! uses ([`sys`]), exports the network- and HTTP-filter hooks and turns them
//! into traits with safe handles: [`network::NetworkFilterConfig`] /
//! [`network::NetworkFilter`] over a [`network::Connection`] ([`network`]),
//! [`http::HttpFilterConfig`] / [`http::HttpFilter`] over an [`http::Stream`]
//! ([`http`]). A module names its filters with [`declare_filters`].
//!
//! It is the only crate of the native build allowed `unsafe`; every block says
//! why it is sound. Builds are for **Envoy 1.40** (ABI [`sys::ABI_VERSION`]):
//! `tests/abi_facts.rs` holds every declaration to the header's facts and to
//! the symbols the pinned Envoy exports.
//!
//! No panic crosses the ABI: each hook catches unwinds (the native module must
//! be built with `panic = "unwind"`, the `release-native` profile), and the
//! workspace lints still deny the panicking constructs themselves.
#![allow(unsafe_code)] // FFI bindings: every use carries a SAFETY comment.

/// Declares the event hooks Envoy resolves (each `#[no_mangle] extern "C"`)
/// and lists each definition in a `HOOKS` constant for the facts test.
macro_rules! hooks {

    ($( fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? $body:block )*) => {
        $(
            #[unsafe(no_mangle)]
            #[allow(clippy::not_unsafe_ptr_arg_deref)] // Envoy is the only caller.
            pub extern "C" fn $name($($arg: $ty),*) $(-> $ret)? $body
        )*

        /// Every hook defined here: `(name, "(arguments) -> return")`.
        pub const HOOKS: &[(&str, &str)] = &[
            $( (stringify!($name), stringify!(($($arg: $ty),*) $(-> $ret)?)) ),*
        ];
    };
}

mod boundary;
pub mod http;
pub mod network;
pub mod sys;

use sys::envoy_call;

/// Severity of a line in Envoy's log (the `dynamic_modules` logger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    fn code(self) -> sys::LogLevelCode {
        match self {
            LogLevel::Trace => sys::LOG_TRACE,
            LogLevel::Debug => sys::LOG_DEBUG,
            LogLevel::Info => sys::LOG_INFO,
            LogLevel::Warn => sys::LOG_WARN,
            LogLevel::Error => sys::LOG_ERROR,
            LogLevel::Critical => sys::LOG_CRITICAL,
        }
    }
}

/// Writes `message` to Envoy's log under `dynamic_modules`, if that level is on.
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: plain value.
    match envoy_call!(envoy_dynamic_module_callback_log_enabled(level.code())) {
        Some(true) => {
            // SAFETY: `message` outlives the call.
            envoy_call!(envoy_dynamic_module_callback_log(
                level.code(),
                sys::ModuleBuffer::of(message.as_bytes())
            ));
        }
        Some(false) => {}
        // Outside Envoy (unit tests of the glue): standard error.
        None => eprintln!("[{level:?}] {message}"),
    }
}

/// Defines the module's `envoy_dynamic_module_on_program_init`, which
/// registers the functions that build its network filters
/// ([`network::NewConfigFn`]) and its HTTP filters ([`http::NewConfigFn`]),
/// and reports the ABI version. Use it once, in the `cdylib` crate Envoy loads.
#[macro_export]
macro_rules! declare_filters {
    (network: $network:expr, http: $http:expr $(,)?) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const ::std::ffi::c_char {
            $crate::http::register($http);
            $crate::network::program_init($network)
        }
    };
}
