//! `RequestInfo`: a Kubernetes API request in the API server's own terms.
//!
//! This is a port of the API server's `NewRequestInfo`
//! (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`), so that policy rules
//! read like RBAC and audit records match the API server's. Valid path shapes:
//!
//! ```text
//! Resource paths
//!   /apis/{api-group}/{version}/namespaces
//!   /api/{version}/namespaces
//!   /api/{version}/namespaces/{namespace}
//!   /api/{version}/namespaces/{namespace}/{resource}
//!   /api/{version}/namespaces/{namespace}/{resource}/{resourceName}
//!   /api/{version}/{resource}
//!   /api/{version}/{resource}/{resourceName}
//! Special verbs without subresources
//!   /api/{version}/proxy/{resource}/{resourceName}
//!   /api/{version}/proxy/namespaces/{namespace}/{resource}/{resourceName}
//! Special verbs with subresources
//!   /api/{version}/watch/{resource}
//!   /api/{version}/watch/namespaces/{namespace}/{resource}
//! Non-resource paths
//!   /apis/{api-group}/{version}, /apis/{api-group}, /apis, /api/{version}, /api,
//!   /healthz, /version, /openapi/..., /
//! ```
//!
//! Unlike the API server, which receives an already-parsed URL, gatehouse gets the
//! raw `:path`. It judges the request as the API server will read it and refuses
//! anything whose reading could differ between Envoy, gatehouse, the API server
//! or another upstream ([`DecodeError`]):
//!
//! - methods the API server serves no resource with, and the deprecated path
//!   prefixes with a method they are not served with (`/watch/` is a `GET`;
//!   `/proxy/` has been served with none since Kubernetes 1.10);
//! - paths with percent-encoded bytes, characters outside a name's alphabet,
//!   empty or dot segments, or a trailing slash;
//! - queries with `;` separators, escaped or differently-cased parameter names,
//!   repeated parameters, values the API server would read differently from a
//!   plain `true`/`false` or number, and, on resource requests, parameters the
//!   filter does not know (the API server may read them; gatehouse cannot say
//!   what they do). A proxied request's query belongs to the proxied backend
//!   and is not judged.

use crate::label_selector;
use std::borrow::Cow;
use std::ops::Range;

/// Longest accepted path (the part of `:path` before `?`), in bytes.
pub const MAX_PATH_BYTES: usize = 8 * 1024;
/// Longest accepted query string (after `?`), in bytes. Larger than the path
/// limit because `kubectl exec` carries its argv there.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;
/// Most query parameters accepted in one request.
pub const MAX_QUERY_PARAMS: usize = 512;
/// Longest accepted HTTP method, in bytes.
pub const MAX_METHOD_BYTES: usize = 32;

/// Path prefixes that lead to API resources (`APIPrefixes`).
const API_PREFIXES: [&str; 2] = ["api", "apis"];
/// Path segments kept on the stack while decoding; deeper paths spill to the heap.
const INLINE_SEGMENTS: usize = 12;
/// The prefix whose resources have no API group (`GrouplessAPIPrefixes`).
const GROUPLESS_API_PREFIX: &str = "api";

/// Why a request target was refused. Refusal is deliberate: each case is one where
/// a guess could let the API server act on something policy never saw.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("request path is {len} bytes, over the {max}-byte limit")]
    PathTooLong { len: usize, max: usize },
    /// The query string is longer than [`MAX_QUERY_BYTES`].
    #[error("query string is {len} bytes, over the {max}-byte limit")]
    QueryTooLong { len: usize, max: usize },
    /// The query string has more than [`MAX_QUERY_PARAMS`] parameters.
    #[error("query string has more than {max} parameters")]
    TooManyQueryParams { max: usize },
    /// The method is empty, too long or not an HTTP token.
    #[error("invalid HTTP method")]
    InvalidMethod,
    /// A method the API server serves no request with (verbs come from
    /// `GET`, `HEAD`, `POST`, `PUT`, `PATCH` and `DELETE` only).
    #[error("method {method} is not served by the Kubernetes API")]
    MethodNotAllowed { method: String },
    /// The deprecated `/watch/` prefix with a method other than `GET`: it
    /// would be judged a watch while the request asks for something else.
    #[error("the /watch/ path prefix is served with GET only, not {method}")]
    WatchPrefixMethod { method: String },
    /// The `/proxy/` path prefix, removed from the API server in Kubernetes
    /// 1.10 (the `proxy` subresource replaced it).
    #[error("the /proxy/ path prefix is not served; use the proxy subresource")]
    ProxyPrefix,
    /// The target is not an absolute path (origin form).
    #[error("request target must start with '/'")]
    NotAbsolutePath,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding at byte {offset} of the request target")]
    InvalidPercentEncoding { offset: usize },
    /// `%2F` or `%5C`: the API server would split the decoded path at it.
    #[error("encoded slash or backslash at byte {offset} of the request path")]
    EncodedSlash { offset: usize },
    /// Any other percent-encoded byte in the path: no Kubernetes name needs
    /// one, and readers differ on which escapes they decode.
    #[error("percent-encoded byte at byte {offset} of the request path")]
    EncodedCharacter { offset: usize },
    /// A byte no Kubernetes name or path holds (`;`, spaces, quotes, non-ASCII,
    /// ...), which proxies and servers treat differently.
    #[error("character not allowed at byte {offset} of the request path")]
    DisallowedCharacter { offset: usize },
    /// A trailing `/` (other than the root path), which routers read differently.
    #[error("trailing '/' in the request path")]
    TrailingSlash,
    /// A literal backslash, which some proxies read as a slash.
    #[error("backslash in the request path")]
    Backslash,
    /// `//` in the path.
    #[error("empty segment ('//') in the request path")]
    EmptySegment,
    /// A `.` or `..` segment, raw or encoded.
    #[error("dot segment ('.' or '..') in the request path")]
    DotSegment,
    /// A control byte in the raw target or in the decoded path.
    #[error("control character in the request target")]
    ControlCharacter,
    /// Percent-decoding produced bytes that are not UTF-8.
    #[error("percent-decoded request target is not valid UTF-8")]
    InvalidUtf8,
    /// A `#`, which never belongs in a request target.
    #[error("'#' in the request target")]
    Fragment,
    /// A `;` in the query; the API server drops such parameters silently.
    #[error("';' in the query string")]
    QuerySemicolon,
    /// A parameter name written with `%` escapes or `+`.
    #[error("escaped query parameter name")]
    EscapedQueryKey,
    /// A parameter gatehouse does not know, on a resource request.
    #[error("unknown query parameter {key:?}")]
    UnknownQueryParameter { key: String },
    /// A known parameter spelled in another case (`Watch`): the API server
    /// ignores it, other readers may not.
    #[error("query parameter {key:?} must be spelled {expected:?}")]
    QueryKeyCase { key: String, expected: &'static str },
    /// A parameter given twice where the API server reads one value.
    #[error("query parameter {key:?} is repeated")]
    RepeatedQueryParameter { key: String },
    /// A boolean or integer parameter whose value is neither: the API server
    /// reads `watch=no` as true.
    #[error("query parameter {key:?} has a value that is not a plain {expected}: {value:?}")]
    QueryValue {
        key: &'static str,
        expected: &'static str,
        value: String,
    },
    /// `watch` where the API server does not read it: on a named object, a
    /// write, or with the `/watch/` prefix.
    #[error("the watch parameter applies only to a GET of a collection")]
    MisplacedWatchParameter,
    /// `/api/{version}/watch` or `/proxy` with nothing after it; the API server
    /// fails these too ("unable to determine kind and namespace from url").
    #[error("unable to determine kind and namespace from the request path")]
    MissingResource,
}

impl DecodeError {
    /// The HTTP status a refusal is answered with: 405 for a method the
    /// request is not served with, else 400.
    pub fn http_status(&self) -> u16 {
        match self {
            DecodeError::MethodNotAllowed { .. } | DecodeError::WatchPrefixMethod { .. } => 405,
            _ => 400,
        }
    }

    /// The `metav1.Status` reason for [`DecodeError::http_status`].
    pub fn reason(&self) -> &'static str {
        match self.http_status() {
            405 => "MethodNotAllowed",
            _ => "BadRequest",
        }
    }
}

/// A request as the API server's `RequestInfo` describes it. Field names mirror
/// upstream so rules read like RBAC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether the request is for an API resource or subresource.
    pub is_resource_request: bool,
    /// The URL path (as sent: a path that would need decoding is refused).
    pub path: String,
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, `deletecollection`,
    /// ...); for non-resource requests, the lowercase HTTP method.
    pub verb: String,
    /// `api` or `apis` for resource requests.
    pub api_prefix: String,
    /// The API group; empty for the core group.
    pub api_group: String,
    pub api_version: String,
    /// The namespace; empty for cluster-scoped requests.
    pub namespace: String,
    /// The resource (plural, e.g. `pods`), not the kind.
    pub resource: String,
    /// The subresource, e.g. `exec`, `status`, `log`.
    pub subresource: String,
    /// The object name, from the path or a `metadata.name` field selector.
    pub name: String,
    /// Path parts starting at the resource: `resource/name/subresource/...`.
    pub parts: Vec<String>,
    /// The raw field selector, for `list`, `watch` and `deletecollection` only.
    pub field_selector: String,
    /// The raw label selector, for `list`, `watch` and `deletecollection` only.
    pub label_selector: String,
}

impl RequestInfo {
    /// The resource as policy rules name it: `pods`, or `pods/exec` for a subresource.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The API group as policy rules name it: `core` for the legacy group.
    pub fn api_group_name(&self) -> &str {
        if self.api_group.is_empty() {
            "core"
        } else {
            &self.api_group
        }
    }

    /// Decodes `method` and the raw `:path` (query included) into a `RequestInfo`.
    pub fn new(method: &str, raw_path: &str) -> Result<Self, DecodeError> {
        decode_request(method, raw_path).map(|decoded| decoded.info)
    }
}

/// The decoded query string: every `key=value` pair in order, repeats kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Every decoded key and value, back to back (one allocation for all).
    decoded: String,
    /// Byte ranges of each pair's key and value in `decoded`.
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

impl Query {
    /// Parses a raw query string (without the `?`) as Go's `url.ParseQuery` does,
    /// except that what Go would silently drop (`;`, bad escapes) is refused.
    pub fn parse(raw: &str) -> Result<Self, DecodeError> {
        if raw.len() > MAX_QUERY_BYTES {
            return Err(DecodeError::QueryTooLong {
                len: raw.len(),
                max: MAX_QUERY_BYTES,
            });
        }
        let mut decoded = Vec::with_capacity(raw.len());
        let mut pairs = Vec::new();
        let mut offset = 0;
        for pair in raw.split('&') {
            let pair_offset = offset;
            offset += pair.len() + 1;
            if pair.is_empty() {
                continue;
            }
            if pairs.len() == MAX_QUERY_PARAMS {
                return Err(DecodeError::TooManyQueryParams {
                    max: MAX_QUERY_PARAMS,
                });
            }
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            // Go decodes escaped names; no client needs them, and they hide a
            // parameter from a reader that compares raw text.
            if raw_key.contains(['%', '+']) {
                return Err(DecodeError::EscapedQueryKey);
            }
            let key = decode_query_component(raw_key, pair_offset, &mut decoded)?;
            let value =
                decode_query_component(raw_value, pair_offset + raw_key.len() + 1, &mut decoded)?;
            pairs.push((key, value));
        }
        // Each component was checked to be UTF-8 on its own, so the whole is too.
        let decoded = String::from_utf8(decoded).map_err(|_| DecodeError::InvalidUtf8)?;
        Ok(Self { decoded, pairs })
    }

    /// The first value of `key`, as Go's `Values.Get` returns it.
    pub fn first(&self, key: &str) -> Option<&str> {
        self.pairs().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Every value of `key`, in order (e.g. each `command=` of an exec).
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs().filter(move |(k, _)| *k == key).map(|(_, v)| v)
    }

    /// A boolean parameter as apimachinery reads it
    /// (`Convert_Slice_string_To_bool`): absent is false; present is true unless
    /// the first value is `0` or a case-insensitive `false`. A bare `?watch` is true.
    pub fn flag(&self, key: &str) -> bool {
        self.first(key).is_some_and(is_true)
    }

    /// All `(key, value)` pairs in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let text = |range: &Range<usize>| self.decoded.get(range.clone()).unwrap_or_default();
        self.pairs
            .iter()
            .map(move |(key, value)| (text(key), text(value)))
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the query has no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// apimachinery's truth rule for one query value.
fn is_true(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

/// A decoded request: its `RequestInfo` and its query, parsed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedRequest {
    pub info: RequestInfo,
    pub query: Query,
}

/// Decodes `method` and the raw `:path` (query included), refusing ambiguous
/// targets (see [`DecodeError`]).
///
/// ```
/// use gatehouse_kubernetes::request_info::{DecodeError, decode_request};
///
/// // `kubectl get secret db-creds -w`: a watch of the collection, narrowed by name.
/// let decoded = decode_request(
///     "GET",
///     "/api/v1/namespaces/prod/secrets?fieldSelector=metadata.name%3Ddb-creds&watch=true",
/// )?;
/// let info = decoded.info;
/// assert_eq!((info.verb.as_str(), info.resource.as_str()), ("watch", "secrets"));
/// assert_eq!((info.namespace.as_str(), info.name.as_str()), ("prod", "db-creds"));
///
/// // The API server would split this name at the decoded slash and run an exec.
/// assert_eq!(
///     decode_request("GET", "/api/v1/namespaces/prod/pods/web-0%2Fexec").unwrap_err(),
///     DecodeError::EncodedSlash { offset: 34 },
/// );
/// # Ok::<(), DecodeError>(())
/// ```
pub fn decode_request(method: &str, raw_path: &str) -> Result<DecodedRequest, DecodeError> {
    if method.is_empty() || method.len() > MAX_METHOD_BYTES || !method.bytes().all(is_token_byte) {
        return Err(DecodeError::InvalidMethod);
    }
    if verb_for_method(method).is_empty() {
        return Err(DecodeError::MethodNotAllowed {
            method: method.to_owned(),
        });
    }
    let (raw_path_only, raw_query) = raw_path.split_once('?').unwrap_or((raw_path, ""));
    let path = check_path(raw_path_only)?;
    let segments = Segments::split(path)?;
    let query = Query::parse(raw_query)?;
    let (info, verb_via_path_prefix) = request_info(method, path, segments.as_slice(), &query)?;
    check_query(&info, &query, verb_via_path_prefix)?;
    Ok(DecodedRequest { info, query })
}

/// How the API server reads a query parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamValue {
    /// Any text.
    Text,
    /// A boolean (apimachinery: anything but `0`/`false` is true).
    Bool,
    /// A decimal integer.
    Integer,
}

/// A query parameter the API server reads on resource requests.
struct KnownParam {
    name: &'static str,
    value: ParamValue,
    /// Whether it may be given more than once (exec's argv).
    repeats: bool,
}

const fn param(name: &'static str, value: ParamValue) -> KnownParam {
    KnownParam {
        name,
        value,
        repeats: false,
    }
}

/// Every query parameter the API server reads on a resource request
/// (`ListOptions`, `GetOptions`, `CreateOptions`, `UpdateOptions`,
/// `PatchOptions`, `DeleteOptions`, `PodLogOptions`, `PodExecOptions`,
/// `PodAttachOptions`, `PodPortForwardOptions`, `*ProxyOptions`, `TableOptions`,
/// and the request-wide `timeout` and `pretty`).
#[rustfmt::skip]
const KNOWN_PARAMS: &[KnownParam] = &[
    param("watch", ParamValue::Bool),
    param("allowWatchBookmarks", ParamValue::Bool),
    param("resourceVersion", ParamValue::Text),
    param("resourceVersionMatch", ParamValue::Text),
    param("timeoutSeconds", ParamValue::Integer),
    param("limit", ParamValue::Integer),
    param("continue", ParamValue::Text),
    param("fieldSelector", ParamValue::Text),
    param("labelSelector", ParamValue::Text),
    param("sendInitialEvents", ParamValue::Bool),
    param("includeObject", ParamValue::Text),
    param("dryRun", ParamValue::Text),
    param("fieldManager", ParamValue::Text),
    param("fieldValidation", ParamValue::Text),
    param("force", ParamValue::Bool),
    param("gracePeriodSeconds", ParamValue::Integer),
    param("propagationPolicy", ParamValue::Text),
    param("orphanDependents", ParamValue::Bool),
    param("ignoreStoreReadErrorWithClusterBreakingPotential", ParamValue::Bool),
    param("pretty", ParamValue::Bool),
    param("timeout", ParamValue::Text),
    param("container", ParamValue::Text),
    param("follow", ParamValue::Bool),
    param("previous", ParamValue::Bool),
    param("sinceSeconds", ParamValue::Integer),
    param("sinceTime", ParamValue::Text),
    param("timestamps", ParamValue::Bool),
    param("tailLines", ParamValue::Integer),
    param("limitBytes", ParamValue::Integer),
    param("insecureSkipTLSVerifyBackend", ParamValue::Bool),
    param("stream", ParamValue::Text),
    KnownParam { name: "command", value: ParamValue::Text, repeats: true },
    param("stdin", ParamValue::Bool),
    param("stdout", ParamValue::Bool),
    param("stderr", ParamValue::Bool),
    param("tty", ParamValue::Bool),
    KnownParam { name: "ports", value: ParamValue::Text, repeats: true },
    param("path", ParamValue::Text),
];

// `check_query` notes the parameters seen in one `u64`.
const _: () = assert!(KNOWN_PARAMS.len() <= 64);

/// Refuses a query whose meaning gatehouse and the API server (or another
/// upstream) could read differently; see [`DecodeError`].
fn check_query(
    info: &RequestInfo,
    query: &Query,
    verb_via_path_prefix: bool,
) -> Result<(), DecodeError> {
    // A proxied request's query is the proxied backend's, not the API server's.
    if info.subresource == "proxy" {
        return Ok(());
    }
    let mut seen: u64 = 0;
    for (key, value) in query.pairs() {
        let Some((index, known)) = KNOWN_PARAMS.iter().enumerate().find(|(_, p)| p.name == key)
        else {
            if let Some(known) = KNOWN_PARAMS
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(key))
            {
                return Err(DecodeError::QueryKeyCase {
                    key: key.to_owned(),
                    expected: known.name,
                });
            }
            if info.is_resource_request {
                return Err(DecodeError::UnknownQueryParameter {
                    key: shortened(key),
                });
            }
            continue;
        };
        let bit = 1u64 << index;
        if seen & bit != 0 && !known.repeats {
            return Err(DecodeError::RepeatedQueryParameter {
                key: known.name.to_owned(),
            });
        }
        seen |= bit;
        let expected = match known.value {
            ParamValue::Bool if !is_plain_bool(value) => "boolean",
            ParamValue::Integer if value.parse::<i64>().is_err() => "integer",
            _ => continue,
        };
        return Err(DecodeError::QueryValue {
            key: known.name,
            expected,
            value: shortened(value),
        });
    }
    let collection_read = matches!(info.verb.as_str(), "list" | "watch") && !verb_via_path_prefix;
    if query.first("watch").is_some() && info.is_resource_request && !collection_read {
        return Err(DecodeError::MisplacedWatchParameter);
    }
    Ok(())
}

/// A boolean spelled the way every reader agrees on.
fn is_plain_bool(value: &str) -> bool {
    value.is_empty()
        || value == "1"
        || value == "0"
        || value.eq_ignore_ascii_case("true")
        || value.eq_ignore_ascii_case("false")
}

/// Client text quoted in an error, cut to a readable length.
fn shortened(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", text.get(..at).unwrap_or_default()),
        None => text.to_owned(),
    }
}

/// A decoded path's segments, between one leading and one trailing slash.
/// Kept on the stack unless the path is unusually deep (proxy subpaths).
struct Segments<'a> {
    inline: [&'a str; INLINE_SEGMENTS],
    count: usize,
    spilled: Vec<&'a str>,
}

impl<'a> Segments<'a> {
    /// Splits a validated, decoded path, refusing `.` and `..` segments.
    fn split(path: &'a str) -> Result<Self, DecodeError> {
        let mut segments = Segments {
            inline: [""; INLINE_SEGMENTS],
            count: 0,
            spilled: Vec::new(),
        };
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Ok(segments);
        }
        for segment in trimmed.split('/') {
            if segment == "." || segment == ".." {
                return Err(DecodeError::DotSegment);
            }
            segments.push(segment);
        }
        Ok(segments)
    }

    fn push(&mut self, segment: &'a str) {
        match self.inline.get_mut(self.count) {
            Some(slot) if self.spilled.is_empty() => *slot = segment,
            _ => {
                if self.spilled.is_empty() {
                    self.spilled.extend_from_slice(&self.inline);
                }
                self.spilled.push(segment);
            }
        }
        self.count += 1;
    }

    fn as_slice(&self) -> &[&'a str] {
        if self.spilled.is_empty() {
            self.inline.get(..self.count).unwrap_or_default()
        } else {
            &self.spilled
        }
    }
}

/// The `NewRequestInfo` algorithm over an already validated, decoded path and
/// its segments.
/// Also says whether the verb came from a deprecated path prefix.
fn request_info(
    method: &str,
    path: &str,
    segments: &[&str],
    query: &Query,
) -> Result<(RequestInfo, bool), DecodeError> {
    let mut info = RequestInfo {
        path: path.to_owned(),
        ..RequestInfo::default()
    };
    // Until proven a resource request, the verb is the lowercase method.
    let non_resource = |mut info: RequestInfo| {
        info.verb = method.to_ascii_lowercase();
        Ok((info, false))
    };

    let [prefix, rest @ ..] = segments else {
        return non_resource(info);
    };
    if segments.len() < 3 || !API_PREFIXES.contains(prefix) {
        return non_resource(info);
    }
    info.api_prefix = (*prefix).to_owned();
    let mut current = rest;

    let mut api_group = "";
    if *prefix != GROUPLESS_API_PREFIX {
        // Under `apis` the group takes a segment: four parts are needed.
        let [group, tail @ ..] = current else {
            return non_resource(info);
        };
        if tail.len() < 2 {
            return non_resource(info);
        }
        api_group = group;
        current = tail;
    }
    let [api_version, tail @ ..] = current else {
        return non_resource(info);
    };
    info.is_resource_request = true;
    info.api_group = api_group.to_owned();
    info.api_version = (*api_version).to_owned();
    current = tail;

    // `/{specialVerb}/...`: the deprecated `watch` and `proxy` path prefixes.
    let mut verb_via_path_prefix = false;
    match current {
        [special @ ("watch" | "proxy"), tail @ ..] => {
            // The API server serves `/watch/` with GET alone, and `/proxy/`
            // not at all: any other reading is one policy never judged.
            if *special == "proxy" {
                return Err(DecodeError::ProxyPrefix);
            }
            if method != "GET" {
                return Err(DecodeError::WatchPrefixMethod {
                    method: method.to_owned(),
                });
            }
            if tail.is_empty() {
                return Err(DecodeError::MissingResource);
            }
            info.verb = (*special).to_owned();
            current = tail;
            verb_via_path_prefix = true;
        }
        _ => info.verb = verb_for_method(method).to_owned(),
    }

    // `/namespaces/{namespace}/{resource}/...`: re-base the parts at the resource
    // unless what follows the namespace is one of its own subresources.
    if let ["namespaces", namespace, tail @ ..] = current {
        info.namespace = (*namespace).to_owned();
        if let Some(next) = tail.first()
            && !matches!(*next, "status" | "finalize")
        {
            current = tail;
        }
    }

    // Parts read `resource/name/subresource/...`; anything further is not
    // interpreted (a proxy subpath, for instance).
    if let Some(resource) = current.first() {
        info.resource = (*resource).to_owned();
    }
    if let Some(name) = current.get(1) {
        info.name = (*name).to_owned();
    }
    if info.verb != "proxy"
        && let Some(subresource) = current.get(2)
    {
        info.subresource = (*subresource).to_owned();
    }
    info.parts = current.iter().map(|part| (*part).to_owned()).collect();

    // No name on a get: a list or a watch of the collection, possibly narrowed to
    // one object by a `metadata.name` field selector.
    if info.name.is_empty() && info.verb == "get" {
        let options = ListOptions::decode(query);
        info.verb = if options.watch { "watch" } else { "list" }.to_owned();
        if let Some(name) = options
            .field_selector_name
            .filter(|n| is_path_segment_name(n))
        {
            info.name = name;
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".to_owned();
    }

    // Selectors are recorded only where the API server honours them, and never
    // for the deprecated verb-via-path form.
    if !verb_via_path_prefix && matches!(info.verb.as_str(), "list" | "watch" | "deletecollection")
    {
        info.field_selector = query.first("fieldSelector").unwrap_or_default().to_owned();
        info.label_selector = query.first("labelSelector").unwrap_or_default().to_owned();
    }
    Ok((info, verb_via_path_prefix))
}

/// The verb for a method when the path does not name one.
fn verb_for_method(method: &str) -> &'static str {
    match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
}

/// The parts of `metainternalversion.ListOptions` that `NewRequestInfo` reads.
struct ListOptions {
    watch: bool,
    field_selector_name: Option<String>,
}

impl ListOptions {
    /// Mirrors `ParameterCodec.DecodeParameters`: if any list option fails to
    /// decode, everything but `watch` is dropped, so the field selector sets no name.
    /// The options that can fail are `fieldSelector`, `labelSelector`, `limit` and
    /// `timeoutSeconds`.
    fn decode(query: &Query) -> Self {
        let watch = query.flag("watch");
        let integers_ok = ["limit", "timeoutSeconds"]
            .iter()
            .all(|key| query.first(key).is_none_or(|v| v.parse::<i64>().is_ok()));
        let labels_ok = query
            .first("labelSelector")
            .is_none_or(label_selector::is_valid);
        let field_selector_name = if integers_ok && labels_ok {
            query.first("fieldSelector").and_then(|selector| {
                field_selector_exact_match(selector, "metadata.name")
                    .ok()
                    .flatten()
            })
        } else {
            None
        };
        Self {
            watch,
            field_selector_name,
        }
    }
}

/// `fields.ParseSelector(selector).RequiresExactMatch(field)`: `Err` for an invalid
/// selector, `Ok(None)` when no `field=value` / `field==value` term exists.
/// Terms are sorted before matching, as upstream does, so the first term in byte
/// order wins when a field repeats.
fn field_selector_exact_match(selector: &str, field: &str) -> Result<Option<String>, ()> {
    let mut terms = split_selector_terms(selector);
    terms.sort_unstable();
    let mut found = None;
    for term in terms.into_iter().filter(|t| !t.is_empty()) {
        let (lhs, operator, rhs) = split_selector_term(term).ok_or(())?;
        let value = unescape_selector_value(rhs)?;
        if found.is_none() && operator != "!=" && lhs == field {
            found = Some(value.into_owned());
        }
    }
    Ok(found)
}

/// Splits on commas not escaped by a backslash (`splitTerms`).
fn split_selector_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    if selector.is_empty() {
        return terms;
    }
    let mut start = 0;
    let mut in_escape = false;
    for (i, c) in selector.char_indices() {
        if in_escape {
            in_escape = false;
        } else if c == '\\' {
            in_escape = true;
        } else if c == ',' {
            terms.push(selector.get(start..i).unwrap_or_default());
            start = i + 1;
        }
    }
    terms.push(selector.get(start..).unwrap_or_default());
    terms
}

/// Splits a term at the first operator (`!=`, `==`, `=`; `splitTerm`).
fn split_selector_term(term: &str) -> Option<(&str, &str, &str)> {
    term.char_indices().find_map(|(i, _)| {
        let (lhs, remaining) = term.split_at_checked(i)?;
        ["!=", "==", "="]
            .into_iter()
            .find_map(|op| remaining.strip_prefix(op).map(|rhs| (lhs, op, rhs)))
    })
}

/// Resolves `\\`, `\,` and `\=` in a selector value; a bare `,` or `=` or any
/// other escape is invalid (`fields.UnescapeValue`).
fn unescape_selector_value(value: &str) -> Result<Cow<'_, str>, ()> {
    if !value.contains(['\\', ',', '=']) {
        return Ok(Cow::Borrowed(value));
    }
    let mut out = String::with_capacity(value.len());
    let mut in_escape = false;
    for c in value.chars() {
        match (in_escape, c) {
            (true, '\\' | ',' | '=') => {
                out.push(c);
                in_escape = false;
            }
            (true, _) | (false, ',' | '=') => return Err(()),
            (false, '\\') => in_escape = true,
            (false, _) => out.push(c),
        }
    }
    if in_escape {
        Err(())
    } else {
        Ok(Cow::Owned(out))
    }
}

/// Whether a name can be a path segment (`content.IsPathSegmentName`).
fn is_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains(['/', '%'])
}

/// Validates the raw path in one pass. Nothing in it is decoded: a path that
/// would need decoding is refused, so every reader sees the same text.
fn check_path(raw: &str) -> Result<&str, DecodeError> {
    if !raw.is_empty() && !raw.starts_with('/') {
        return Err(DecodeError::NotAbsolutePath);
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(DecodeError::PathTooLong {
            len: raw.len(),
            max: MAX_PATH_BYTES,
        });
    }
    let bytes = raw.as_bytes();
    let mut previous = 0;
    for (offset, &byte) in bytes.iter().enumerate() {
        match byte {
            b'#' => return Err(DecodeError::Fragment),
            b'\\' => return Err(DecodeError::Backslash),
            b'/' if previous == b'/' => return Err(DecodeError::EmptySegment),
            b'%' => {
                let escaped = hex_pair(
                    bytes.get(offset + 1).copied(),
                    bytes.get(offset + 2).copied(),
                )
                .ok_or(DecodeError::InvalidPercentEncoding { offset })?;
                return Err(match escaped {
                    // The API server would split the decoded path here.
                    b'/' | b'\\' => DecodeError::EncodedSlash { offset },
                    _ => DecodeError::EncodedCharacter { offset },
                });
            }
            byte if is_control(byte) => return Err(DecodeError::ControlCharacter),
            byte if !is_path_byte(byte) => return Err(DecodeError::DisallowedCharacter { offset }),
            _ => {}
        }
        previous = byte;
    }
    if raw.len() > 1 && previous == b'/' {
        return Err(DecodeError::TrailingSlash);
    }
    Ok(raw)
}

/// Bytes a path may hold as they are: RFC 3986 `pchar` without `;` (a
/// parameter separator to some servers) and `/`.
fn is_path_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"/-._~:@!$&'()*+,=".contains(&byte)
}

/// Percent-decodes one query key or value (`+` meaning a space) onto `out` and
/// returns where it landed. `offset` locates `raw` in the query for error reports.
fn decode_query_component(
    raw: &str,
    offset: usize,
    out: &mut Vec<u8>,
) -> Result<Range<usize>, DecodeError> {
    let start = out.len();
    let mut escaped_non_ascii = false;
    let mut bytes = raw.bytes().enumerate();
    while let Some((i, byte)) = bytes.next() {
        match byte {
            b'%' => {
                let escaped = hex_pair(bytes.next().map(|(_, b)| b), bytes.next().map(|(_, b)| b))
                    .ok_or(DecodeError::InvalidPercentEncoding { offset: offset + i })?;
                escaped_non_ascii |= !escaped.is_ascii();
                out.push(escaped);
            }
            b'+' => out.push(b' '),
            b';' => return Err(DecodeError::QuerySemicolon),
            b'#' => return Err(DecodeError::Fragment),
            byte if is_control(byte) => return Err(DecodeError::ControlCharacter),
            byte => out.push(byte),
        }
    }
    // Copied bytes come from a `str`; only escapes can break UTF-8.
    if escaped_non_ascii {
        std::str::from_utf8(out.get(start..).unwrap_or_default())
            .map_err(|_| DecodeError::InvalidUtf8)?;
    }
    Ok(start..out.len())
}

/// The byte two hex digits (of `%XY`) stand for.
fn hex_pair(high: Option<u8>, low: Option<u8>) -> Option<u8> {
    let digit = |byte: Option<u8>| byte.and_then(|b| char::from(b).to_digit(16));
    let value = digit(high)? * 16 + digit(low)?;
    u8::try_from(value).ok()
}

/// ASCII control bytes, refused anywhere in a raw target (as Go's URL parser does).
fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7f
}

/// RFC 9110 `tchar`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// One expected decoding: method, URL, verb, prefix, group, version, namespace,
    /// resource, subresource, name, parts.
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
    );

    /// Upstream `TestGetAPIRequestInfo` success cases, row for row. Upstream lists
    /// `api` as the prefix of the `/apis/extensions` rows without asserting it; the
    /// real prefix `apis` is asserted here.
    #[rustfmt::skip]
    const UPSTREAM_ROWS: &[Row] = &[
        // resource paths
        ("GET", "/api/v1/namespaces", "list", "api", "", "v1", "", "namespaces", "", "", &["namespaces"]),
        ("GET", "/api/v1/namespaces/other", "get", "api", "", "v1", "other", "namespaces", "", "other", &["namespaces", "other"]),
        ("GET", "/api/v1/namespaces/other/pods", "list", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", &["pods", "foo"]),
        ("HEAD", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", &["pods", "foo"]),
        ("GET", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", &["pods"]),
        ("HEAD", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", &["pods", "foo"]),
        ("GET", "/api/v1/namespaces/other/pods", "list", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        // special verbs (the `/proxy/` prefix rows are refused: see
        // `deprecated_prefixes_are_served_only_as_the_api_server_serves_them`)
        ("GET", "/api/v1/watch/pods", "watch", "api", "", "v1", "", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/pods?watch=true", "watch", "api", "", "v1", "", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/pods?watch=false", "list", "api", "", "v1", "", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/watch/namespaces/other/pods", "watch", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/namespaces/other/pods?watch=1", "watch", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/namespaces/other/pods?watch=0", "list", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        // subresource identification
        ("GET", "/api/v1/namespaces/other/pods/foo/status", "get", "api", "", "v1", "other", "pods", "status", "foo", &["pods", "foo", "status"]),
        ("GET", "/api/v1/namespaces/other/pods/foo/proxy/subpath", "get", "api", "", "v1", "other", "pods", "proxy", "foo", &["pods", "foo", "proxy", "subpath"]),
        ("PUT", "/api/v1/namespaces/other/finalize", "update", "api", "", "v1", "other", "namespaces", "finalize", "other", &["namespaces", "other", "finalize"]),
        ("PUT", "/api/v1/namespaces/other/status", "update", "api", "", "v1", "other", "namespaces", "status", "other", &["namespaces", "other", "status"]),
        // verb identification
        ("PATCH", "/api/v1/namespaces/other/pods/foo", "patch", "api", "", "v1", "other", "pods", "", "foo", &["pods", "foo"]),
        ("DELETE", "/api/v1/namespaces/other/pods/foo", "delete", "api", "", "v1", "other", "pods", "", "foo", &["pods", "foo"]),
        ("POST", "/api/v1/namespaces/other/pods", "create", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        // deletecollection verb identification
        ("DELETE", "/api/v1/nodes", "deletecollection", "api", "", "v1", "", "nodes", "", "", &["nodes"]),
        ("DELETE", "/api/v1/namespaces", "deletecollection", "api", "", "v1", "", "namespaces", "", "", &["namespaces"]),
        ("DELETE", "/api/v1/namespaces/other/pods", "deletecollection", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        ("DELETE", "/apis/extensions/v1/namespaces/other/pods", "deletecollection", "apis", "extensions", "v1", "other", "pods", "", "", &["pods"]),
        // api group identification
        ("POST", "/apis/extensions/v1/namespaces/other/pods", "create", "apis", "extensions", "v1", "other", "pods", "", "", &["pods"]),
        // api version identification
        ("POST", "/apis/extensions/v1beta3/namespaces/other/pods", "create", "apis", "extensions", "v1beta3", "other", "pods", "", "", &["pods"]),
        // upstream TestSelectorParsing name cases
        ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1", "list", "apis", "group", "version", "", "resource", "", "name1", &["resource"]),
        ("GET", "/apis/group/version/resource?watch=true&fieldSelector=metadata.name=name1", "watch", "apis", "group", "version", "", "resource", "", "name1", &["resource"]),
        ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo", "list", "apis", "group", "version", "", "resource", "", "", &["resource"]),
        ("GET", "/apis/group/version/watch/resource/name?fieldSelector=metadata.name=foo", "watch", "apis", "group", "version", "", "resource", "", "name", &["resource", "name"]),
    ];

    /// Extra vectors from the kubectl traffic gatehouse sees.
    #[rustfmt::skip]
    const EXTRA_ROWS: &[Row] = &[
        ("POST", "/api/v1/namespaces/prod/pods/web-0/exec?command=sh&command=-c&command=id&container=app&stdin=true&stdout=true&stderr=true&tty=true", "create", "api", "", "v1", "prod", "pods", "exec", "web-0", &["pods", "web-0", "exec"]),
        ("GET", "/api/v1/namespaces/prod/pods/web-0/exec?command=sh&command=-c&command=id&container=app&stdin=true&stdout=true&stderr=true&tty=true", "get", "api", "", "v1", "prod", "pods", "exec", "web-0", &["pods", "web-0", "exec"]),
        ("POST", "/api/v1/namespaces/prod/pods/web-0/attach?container=app&stdin=true", "create", "api", "", "v1", "prod", "pods", "attach", "web-0", &["pods", "web-0", "attach"]),
        ("GET", "/api/v1/namespaces/prod/pods/web-0/portforward", "get", "api", "", "v1", "prod", "pods", "portforward", "web-0", &["pods", "web-0", "portforward"]),
        ("POST", "/api/v1/namespaces/prod/pods/web-0/portforward", "create", "api", "", "v1", "prod", "pods", "portforward", "web-0", &["pods", "web-0", "portforward"]),
        ("GET", "/api/v1/namespaces/prod/pods/web-0/log?container=app&follow=true", "get", "api", "", "v1", "prod", "pods", "log", "web-0", &["pods", "web-0", "log"]),
        ("GET", "/api/v1/nodes/node-1/proxy/metrics", "get", "api", "", "v1", "", "nodes", "proxy", "node-1", &["nodes", "node-1", "proxy", "metrics"]),
        ("GET", "/api/v1/namespaces/prod/services/http:web:8080/proxy/metrics", "get", "api", "", "v1", "prod", "services", "proxy", "http:web:8080", &["services", "http:web:8080", "proxy", "metrics"]),
        ("DELETE", "/api/v1/namespaces/prod", "delete", "api", "", "v1", "prod", "namespaces", "", "prod", &["namespaces", "prod"]),
        ("GET", "/api/v1/namespaces/prod/secrets/db-creds", "get", "api", "", "v1", "prod", "secrets", "", "db-creds", &["secrets", "db-creds"]),
        ("GET", "/api/v1/namespaces/prod/secrets?fieldSelector=metadata.name%3Ddb-creds&watch=true", "watch", "api", "", "v1", "prod", "secrets", "", "db-creds", &["secrets"]),
        ("GET", "/api/v1/secrets", "list", "api", "", "v1", "", "secrets", "", "", &["secrets"]),
        ("PATCH", "/apis/apps/v1/namespaces/prod/deployments/web/scale", "patch", "apis", "apps", "v1", "prod", "deployments", "scale", "web", &["deployments", "web", "scale"]),
        ("DELETE", "/apis/apps/v1/namespaces/prod/deployments?labelSelector=app%3Dweb", "deletecollection", "apis", "apps", "v1", "prod", "deployments", "", "", &["deployments"]),
        ("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", "create", "apis", "rbac.authorization.k8s.io", "v1", "", "clusterrolebindings", "", "", &["clusterrolebindings"]),
        ("GET", "/apis/stable.example.com/v1/namespaces/prod/crontabs?watch", "watch", "apis", "stable.example.com", "v1", "prod", "crontabs", "", "", &["crontabs"]),
        ("POST", "/api/v1/namespaces/prod/serviceaccounts/builder/token", "create", "api", "", "v1", "prod", "serviceaccounts", "token", "builder", &["serviceaccounts", "builder", "token"]),
        ("POST", "/api/v1/namespaces/prod/pods/web-0/eviction", "create", "api", "", "v1", "prod", "pods", "eviction", "web-0", &["pods", "web-0", "eviction"]),
        // `kubectl get pods -n X`
        ("GET", "/api/v1/namespaces/prod/pods?limit=500", "list", "api", "", "v1", "prod", "pods", "", "", &["pods"]),
        // names with the characters RBAC names use
        ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:controller:job-controller", "get", "apis", "rbac.authorization.k8s.io", "v1", "", "clusterroles", "", "system:controller:job-controller", &["clusterroles", "system:controller:job-controller"]),
        // a name from the field selector only for list/watch, `==` as well as `=`
        ("GET", "/api/v1/namespaces/prod/secrets?fieldSelector=metadata.name%3D%3Ddb-creds", "list", "api", "", "v1", "prod", "secrets", "", "db-creds", &["secrets"]),
        ("DELETE", "/api/v1/namespaces/prod/secrets?fieldSelector=metadata.name%3Ddb-creds", "deletecollection", "api", "", "v1", "prod", "secrets", "", "", &["secrets"]),
        // deep proxy subpaths are kept whole in parts
        ("GET", "/api/v1/namespaces/prod/services/web/proxy/a/b/c/d/e/f/g/h/i", "get", "api", "", "v1", "prod", "services", "proxy", "web", &["services", "web", "proxy", "a", "b", "c", "d", "e", "f", "g", "h", "i"]),
        // a watch of one object through the deprecated prefix keeps the path name
        ("GET", "/api/v1/watch/namespaces/prod/secrets/db-creds", "watch", "api", "", "v1", "prod", "secrets", "", "db-creds", &["secrets", "db-creds"]),
    ];

    fn assert_row(row: &Row) {
        let (
            method,
            url,
            verb,
            prefix,
            group,
            version,
            namespace,
            resource,
            subresource,
            name,
            parts,
        ) = *row;
        let info = RequestInfo::new(method, url).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        assert!(info.is_resource_request, "{method} {url}: resource request");
        let got = (
            info.verb.as_str(),
            info.api_prefix.as_str(),
            info.api_group.as_str(),
            info.api_version.as_str(),
            info.namespace.as_str(),
            info.resource.as_str(),
            info.subresource.as_str(),
            info.name.as_str(),
        );
        assert_eq!(
            got,
            (
                verb,
                prefix,
                group,
                version,
                namespace,
                resource,
                subresource,
                name
            ),
            "{method} {url}"
        );
        assert_eq!(info.parts, parts, "{method} {url}: parts");
    }

    #[test]
    fn upstream_request_info_table() {
        UPSTREAM_ROWS.iter().for_each(assert_row);
    }

    #[test]
    fn kubectl_request_info_table() {
        EXTRA_ROWS.iter().for_each(assert_row);
    }

    #[test]
    fn non_resource_paths_keep_lowercase_method_as_verb() {
        for path in [
            "/",
            "",
            "/api",
            "/api/version",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/apis/extensions/v1beta1",
            "/badprefix/version/resource",
            "/not-api/version/resource",
            "/apis/version/resource",
            "/version",
            "/healthz",
            "/openapi/v2",
            "/openapi/v3/apis/apps/v1",
        ] {
            let info = RequestInfo::new("GET", path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(!info.is_resource_request, "{path} is non-resource");
            assert_eq!(info.verb, "get", "{path}");
            assert_eq!(info.path, path);
            assert!(info.parts.is_empty() && info.resource.is_empty(), "{path}");
        }
        let info = RequestInfo::new("POST", "/apis/apps/v1?x=1").unwrap();
        assert_eq!(
            (info.verb.as_str(), info.api_prefix.as_str()),
            ("post", "apis")
        );
    }

    #[test]
    fn upstream_resource_path_shapes_are_resource_requests() {
        for path in [
            "/api/version/resource",
            "/apis/group/version/resource/name/subresource",
            "/api/version/resource/name/subresource",
            "/apis/batch/v1/job",
            "/apis/batch/v1/job/foo",
            "/apis/batch/v1/job/foo/scale",
        ] {
            assert!(
                RequestInfo::new("GET", path).unwrap().is_resource_request,
                "{path}"
            );
        }
    }

    /// (method, url, name, verb, fieldSelector, labelSelector), from upstream
    /// `TestSelectorParsing` plus the list-option decoding rules behind it.
    #[rustfmt::skip]
    const SELECTOR_ROWS: &[(&str, &str, &str, &str, &str, &str)] = &[
        ("GET", "/apis/group/version/resource", "", "list", "", ""),
        ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1", "name1", "list", "metadata.name=name1", ""),
        ("GET", "/apis/group/version/resource?watch=true&fieldSelector=metadata.name=name1", "name1", "watch", "metadata.name=name1", ""),
        ("GET", "/apis/group/version/resource?fieldSelector=foo=bar&labelSelector=baz=qux", "", "list", "foo=bar", "baz=qux"),
        ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo", "", "list", "metadata.name=name1,foo", ""),
        ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=true", "", "watch", "metadata.name=name1,foo", ""),
        ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=false", "", "list", "metadata.name=name1,foo", ""),
        ("DELETE", "/apis/group/version/resource?fieldSelector=foo=bar&labelSelector=baz=qux", "", "deletecollection", "foo=bar", "baz=qux"),
        ("GET", "/apis/group/version/resource/name?fieldSelector=foo=bar&labelSelector=foo=bar", "name", "get", "", ""),
        ("GET", "/apis/group/version/watch/resource?fieldSelector=metadata.name=foo&labelSelector=foo=bar", "", "watch", "", ""),
        ("GET", "/apis/group/version/watch/resource/name?fieldSelector=metadata.name=foo&labelSelector=foo=bar", "name", "watch", "", ""),
        // one requirement among several still names the object (andTerm)
        ("GET", "/api/v1/pods?fieldSelector=status.phase%3DRunning,metadata.name%3Dweb-0", "web-0", "list", "status.phase=Running,metadata.name=web-0", ""),
        // `!=` names nothing
        ("GET", "/api/v1/pods?fieldSelector=metadata.name!%3Dweb-0", "", "list", "metadata.name!=web-0", ""),
        // escaped values are unescaped; names that cannot be path segments are dropped
        ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Da%5C%3Db", "a=b", "list", "metadata.name=a\\=b", ""),
        ("GET", "/api/v1/pods?fieldSelector=metadata.name%3D..", "", "list", "metadata.name=..", ""),
        ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Da%25b", "", "list", "metadata.name=a%b", ""),
        ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Da%5Cb", "", "list", "metadata.name=a\\b", ""),
        // repeated field: sorted terms, first wins
        ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dzed,metadata.name%3Dabc", "abc", "list", "metadata.name=zed,metadata.name=abc", ""),
        // integer list options that decode keep the name
        ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dweb-0&limit=500&timeoutSeconds=-1", "web-0", "list", "metadata.name=web-0", ""),
        // an invalid label selector is a failed list option too
        ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dweb-0&labelSelector=app%3D%3D%3Dweb", "", "list", "metadata.name=web-0", "app===web"),
        ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dweb-0&labelSelector=app+in+(web,api),!canary", "web-0", "list", "metadata.name=web-0", "app in (web,api),!canary"),
        // watch truthiness: bare, empty, and the plain spellings
        ("GET", "/api/v1/pods?watch", "", "watch", "", ""),
        ("GET", "/api/v1/pods?watch=", "", "watch", "", ""),
        ("GET", "/api/v1/pods?watch=FALSE", "", "list", "", ""),
        ("GET", "/api/v1/pods?watch=True", "", "watch", "", ""),
        // `+` is a space in a query value
        ("GET", "/api/v1/pods?labelSelector=app+in+(web)", "", "list", "", "app in (web)"),
    ];

    #[test]
    fn selector_table() {
        for &(method, url, name, verb, field_selector, label_selector) in SELECTOR_ROWS {
            let info = RequestInfo::new(method, url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                (
                    info.name.as_str(),
                    info.verb.as_str(),
                    info.field_selector.as_str(),
                    info.label_selector.as_str()
                ),
                (name, verb, field_selector, label_selector),
                "{method} {url}"
            );
        }
    }

    #[test]
    fn ambiguous_targets_are_refused() {
        #[rustfmt::skip]
        let cases: &[(&str, DecodeError)] = &[
            ("/api/v1/namespaces/prod/pods/web-0%2Fexec", DecodeError::EncodedSlash { offset: 34 }),
            ("/api/v1/namespaces/prod/pods/web-0%2fexec", DecodeError::EncodedSlash { offset: 34 }),
            ("/api/v1/namespaces/prod/pods/web-0%5Cexec", DecodeError::EncodedSlash { offset: 34 }),
            ("/api/v1/namespaces/prod/pods/web-0\\exec", DecodeError::Backslash),
            ("/api/v1/namespaces/prod//pods", DecodeError::EmptySegment),
            ("//api/v1/pods", DecodeError::EmptySegment),
            ("/api/v1/pods//", DecodeError::EmptySegment),
            ("/api/v1/namespaces/prod/pods/../secrets", DecodeError::DotSegment),
            ("/api/v1/namespaces/prod/./pods", DecodeError::DotSegment),
            ("/api/v1/namespaces/prod/pods/..", DecodeError::DotSegment),
            // every escape is refused, not only the ones that spell a separator
            ("/api/v1/namespaces/prod/pods/%2E%2E/secrets", DecodeError::EncodedCharacter { offset: 29 }),
            ("/api/v1/namespaces/prod/pods/%2e", DecodeError::EncodedCharacter { offset: 29 }),
            ("/api/v1/namespaces/prod/pods/web%2D0", DecodeError::EncodedCharacter { offset: 32 }),
            ("/api/v1/namespaces/prod/p%6Fds/web-0", DecodeError::EncodedCharacter { offset: 25 }),
            ("/api/v1/w%61tch/pods", DecodeError::EncodedCharacter { offset: 9 }),
            ("/api/v1/pods/web%00", DecodeError::EncodedCharacter { offset: 16 }),
            ("/api/v1/pods/%FF", DecodeError::EncodedCharacter { offset: 13 }),
            ("/api/v1/pods/web\u{0}", DecodeError::ControlCharacter),
            ("/api/v1/pods/web\u{7f}", DecodeError::ControlCharacter),
            ("/api/v1/pods?watch=true\n", DecodeError::ControlCharacter),
            ("/api/v1/pods/web%zz", DecodeError::InvalidPercentEncoding { offset: 16 }),
            ("/api/v1/pods/web%4", DecodeError::InvalidPercentEncoding { offset: 16 }),
            ("/api/v1/pods/web%", DecodeError::InvalidPercentEncoding { offset: 16 }),
            ("/api/v1/pods?fieldSelector=a%G1", DecodeError::InvalidPercentEncoding { offset: 15 }),
            ("/api/v1/pods?fieldSelector=%C3", DecodeError::InvalidUtf8),
            // characters no name holds, which some servers read as separators
            ("/api/v1/namespaces/prod/pods/web-0;exec", DecodeError::DisallowedCharacter { offset: 34 }),
            ("/api/v1/namespaces/prod/pods/web 0", DecodeError::DisallowedCharacter { offset: 32 }),
            ("/api/v1/namespaces/prod/pods/wéb", DecodeError::DisallowedCharacter { offset: 30 }),
            ("/api/v1/namespaces/prod/pods/\"web\"", DecodeError::DisallowedCharacter { offset: 29 }),
            ("/api/v1/pods#frag", DecodeError::Fragment),
            ("/api/v1/namespaces/prod/pods/", DecodeError::TrailingSlash),
            ("/api/", DecodeError::TrailingSlash),
            ("/api/v1/pods?watch=true;x=1", DecodeError::QuerySemicolon),
            ("api/v1/pods", DecodeError::NotAbsolutePath),
            ("*", DecodeError::NotAbsolutePath),
            ("/api/v1/watch", DecodeError::MissingResource),
        ];
        for (target, expected) in cases {
            assert_eq!(
                RequestInfo::new("GET", target).as_ref(),
                Err(expected),
                "{target:?}"
            );
        }
    }

    #[test]
    fn methods_without_a_verb_are_refused() {
        for method in [
            "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "get", "Get", "pAtch",
        ] {
            let refused =
                RequestInfo::new(method, "/api/v1/namespaces/prod/pods/web-0").unwrap_err();
            assert_eq!(
                refused,
                DecodeError::MethodNotAllowed {
                    method: method.to_owned()
                }
            );
            assert_eq!(
                (refused.http_status(), refused.reason()),
                (405, "MethodNotAllowed")
            );
            assert!(
                RequestInfo::new(method, "/version").is_err(),
                "{method} /version"
            );
        }
    }

    #[test]
    fn deprecated_prefixes_are_served_only_as_the_api_server_serves_them() {
        // `/watch/` is registered for GET alone: any other method would be
        // judged a watch and run as a write elsewhere.
        for method in ["HEAD", "POST", "PUT", "PATCH", "DELETE"] {
            for path in [
                "/api/v1/watch/namespaces/prod/secrets/db-credentials",
                "/api/v1/watch/namespaces/prod/pods",
                "/apis/apps/v1/watch/namespaces/prod/deployments/web",
            ] {
                assert_eq!(
                    RequestInfo::new(method, path),
                    Err(DecodeError::WatchPrefixMethod {
                        method: method.to_owned()
                    }),
                    "{method} {path}"
                );
            }
        }
        // `/proxy/` was removed in Kubernetes 1.10, for every method.
        for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
            for path in [
                "/api/v1/proxy/namespaces/other/pods/foo",
                "/api/v1/proxy/namespaces/other/pods/foo/subpath/not/a/subresource",
                "/api/v1/proxy/nodes/node-1",
                "/apis/apps/v1/proxy",
            ] {
                assert_eq!(
                    RequestInfo::new(method, path),
                    Err(DecodeError::ProxyPrefix),
                    "{method} {path}"
                );
            }
        }
        let watch = RequestInfo::new("GET", "/api/v1/watch/namespaces/prod/pods").unwrap();
        assert_eq!(watch.verb, "watch");
    }

    #[test]
    fn query_spellings_readers_could_disagree_on_are_refused() {
        let key = |k: &str| k.to_owned();
        #[rustfmt::skip]
        let cases: &[(&str, &str, DecodeError)] = &[
            // differently-cased and escaped names
            ("GET", "/api/v1/namespaces/prod/secrets?Watch=true", DecodeError::QueryKeyCase { key: key("Watch"), expected: "watch" }),
            ("GET", "/api/v1/namespaces/prod/secrets?WATCH=1", DecodeError::QueryKeyCase { key: key("WATCH"), expected: "watch" }),
            ("GET", "/api/v1/namespaces/prod/secrets?fieldselector=metadata.name%3Dx", DecodeError::QueryKeyCase { key: key("fieldselector"), expected: "fieldSelector" }),
            ("GET", "/version?Watch=1", DecodeError::QueryKeyCase { key: key("Watch"), expected: "watch" }),
            ("GET", "/api/v1/namespaces/prod/secrets?w%61tch=true", DecodeError::EscapedQueryKey),
            ("GET", "/api/v1/namespaces/prod/secrets?watch+=true", DecodeError::EscapedQueryKey),
            // repeats, where the API server reads the first and others the last
            ("GET", "/api/v1/namespaces/prod/secrets?watch=false&watch=true", DecodeError::RepeatedQueryParameter { key: key("watch") }),
            ("GET", "/api/v1/namespaces/prod/secrets?fieldSelector=metadata.name%3Da&fieldSelector=metadata.name%3Db", DecodeError::RepeatedQueryParameter { key: key("fieldSelector") }),
            ("POST", "/api/v1/namespaces/dev/pods/web-0/exec?command=id&container=a&container=b", DecodeError::RepeatedQueryParameter { key: key("container") }),
            ("DELETE", "/api/v1/namespaces/dev/pods?labelSelector=a%3Db&labelSelector=", DecodeError::RepeatedQueryParameter { key: key("labelSelector") }),
            // values the API server reads differently from their spelling
            ("GET", "/api/v1/namespaces/prod/secrets?watch=no", DecodeError::QueryValue { key: "watch", expected: "boolean", value: key("no") }),
            ("GET", "/api/v1/namespaces/prod/secrets?watch=yes", DecodeError::QueryValue { key: "watch", expected: "boolean", value: key("yes") }),
            ("POST", "/api/v1/namespaces/dev/pods/web-0/exec?command=sh&tty=off", DecodeError::QueryValue { key: "tty", expected: "boolean", value: key("off") }),
            ("GET", "/api/v1/pods?limit=abc", DecodeError::QueryValue { key: "limit", expected: "integer", value: key("abc") }),
            ("GET", "/api/v1/pods?timeoutSeconds=", DecodeError::QueryValue { key: "timeoutSeconds", expected: "integer", value: key("") }),
            // parameters gatehouse does not know, which the API server may read
            ("GET", "/api/v1/namespaces/prod/secrets?export=true", DecodeError::UnknownQueryParameter { key: key("export") }),
            ("GET", "/api/v1/namespaces/prod/secrets?=x", DecodeError::UnknownQueryParameter { key: key("") }),
            ("PATCH", "/api/v1/namespaces/prod/pods/web-0?_method=GET", DecodeError::UnknownQueryParameter { key: key("_method") }),
            // `watch` where the API server does not read it
            ("GET", "/api/v1/namespaces/prod/secrets/db-credentials?watch=true", DecodeError::MisplacedWatchParameter),
            ("DELETE", "/api/v1/namespaces/prod/pods?watch=true", DecodeError::MisplacedWatchParameter),
            ("GET", "/api/v1/watch/namespaces/prod/pods?watch=false", DecodeError::MisplacedWatchParameter),
        ];
        for (method, target, expected) in cases {
            let refused = RequestInfo::new(method, target).unwrap_err();
            assert_eq!(&refused, expected, "{method} {target}");
            assert_eq!(refused.http_status(), 400);
        }
        // A proxied request's query is the backend's: it is not judged.
        let proxied = RequestInfo::new(
            "GET",
            "/api/v1/namespaces/prod/services/web/proxy/search?q=a&q=b&Watch=x&w%61tch",
        );
        assert!(proxied.is_err(), "escaped names are refused everywhere");
        let proxied = RequestInfo::new(
            "GET",
            "/api/v1/namespaces/prod/services/web/proxy/search?q=a&q=b&Watch=x",
        )
        .unwrap();
        assert_eq!(proxied.subresource, "proxy");
        // Unknown parameters on non-resource paths reach no object.
        assert!(RequestInfo::new("GET", "/openapi/v3/apis/apps/v1?hash=ABC").is_ok());
        // The full kubectl vocabulary decodes.
        for (method, target) in [
            ("GET", "/api/v1/namespaces/dev/pods?limit=500"),
            (
                "GET",
                "/api/v1/namespaces/dev/pods?fieldSelector=metadata.name%3Dweb-0&resourceVersion=0&watch=true&allowWatchBookmarks=true&timeoutSeconds=300",
            ),
            (
                "POST",
                "/api/v1/namespaces/dev/configmaps?fieldManager=kubectl-create&fieldValidation=Strict&dryRun=All",
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/dev/deployments/web?fieldManager=kubectl&force=true",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/dev/pods/web-0?gracePeriodSeconds=0&propagationPolicy=Background",
            ),
            (
                "GET",
                "/api/v1/namespaces/dev/pods/web-0/log?container=app&follow=true&tailLines=10&timestamps=true&sinceSeconds=60&limitBytes=100&previous=false",
            ),
            (
                "POST",
                "/api/v1/namespaces/dev/pods/web-0/exec?command=sh&command=-c&command=id&container=app&stdin=true&stdout=true&stderr=true&tty=true",
            ),
            (
                "GET",
                "/api/v1/namespaces/dev/pods?includeObject=Object&pretty=true&timeout=32s",
            ),
        ] {
            assert!(
                RequestInfo::new(method, target).is_ok(),
                "{method} {target}"
            );
        }
    }

    #[test]
    fn oversized_or_malformed_input_is_refused() {
        let long_path = format!(
            "/api/v1/namespaces/prod/pods/{}",
            "a".repeat(MAX_PATH_BYTES)
        );
        assert!(matches!(
            RequestInfo::new("GET", &long_path),
            Err(DecodeError::PathTooLong { .. })
        ));
        let long_query = format!("/api/v1/pods?labelSelector={}", "a".repeat(MAX_QUERY_BYTES));
        assert!(matches!(
            RequestInfo::new("GET", &long_query),
            Err(DecodeError::QueryTooLong { .. })
        ));
        let many_params = format!("/api/v1/pods?{}", "a=1&".repeat(MAX_QUERY_PARAMS + 1));
        assert_eq!(
            RequestInfo::new("GET", &many_params),
            Err(DecodeError::TooManyQueryParams {
                max: MAX_QUERY_PARAMS
            })
        );
        for method in ["", "G ET", "GET\r\n", &"X".repeat(MAX_METHOD_BYTES + 1)] {
            assert_eq!(
                RequestInfo::new(method, "/api/v1/pods"),
                Err(DecodeError::InvalidMethod),
                "{method:?}"
            );
        }
    }

    #[test]
    fn query_keeps_repeats_in_order_and_decodes() {
        let query =
            Query::parse("command=sh&command=-c&command=echo+hi%21&container=app&stdin&=x&&tty=0")
                .unwrap();
        assert_eq!(
            query.all("command").collect::<Vec<_>>(),
            ["sh", "-c", "echo hi!"]
        );
        assert_eq!(query.first("container"), Some("app"));
        assert_eq!(query.first(""), Some("x"));
        assert!(query.flag("stdin"));
        assert!(!query.flag("tty"));
        assert!(!query.flag("stdout"));
        assert_eq!(query.len(), 7);
        assert_eq!(query.pairs().nth(5), Some(("", "x")));
        // decoded control characters are data in a query value (a multi-line script)
        assert_eq!(
            Query::parse("command=a%0Ab").unwrap().first("command"),
            Some("a\nb")
        );
    }

    /// Random targets built from the characters that matter to the decoder never
    /// panic, and every accepted one keeps the RequestInfo invariants.
    #[test]
    fn arbitrary_targets_never_panic() {
        const PIECES: &[&str] = &[
            "/",
            "api",
            "apis",
            "v1",
            "namespaces",
            "prod",
            "pods",
            "watch",
            "proxy",
            "exec",
            "status",
            "finalize",
            "%2F",
            "%2e",
            "%",
            "%4",
            "%zz",
            "%C3%A9",
            "%FF",
            ".",
            "..",
            "?",
            "&",
            "=",
            ";",
            "+",
            "#",
            "\\",
            "\0",
            "é",
            "fieldSelector=",
            "metadata.name",
            "%3D",
            ",",
            "watch=",
            "limit=x",
            "Watch=1",
            "w%61tch",
            "dryRun=All",
            "command=id",
            "container=a",
            "unknown=1",
            "/",
            "-0",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(state >> 33).unwrap_or(0)
        };
        // Half the targets are pieces anywhere; half a known path and a query
        // of pieces, which reach the query rules.
        const PATHS: &[&str] = &[
            "/api/v1/namespaces/prod/secrets",
            "/api/v1/namespaces/prod/secrets/db",
            "/api/v1/watch/namespaces/prod/pods",
            "/api/v1/namespaces/prod/pods/web-0/exec",
            "/api/v1/namespaces/prod/services/web/proxy/x",
            "/version",
        ];
        const QUERY: &[&str] = &[
            "watch",
            "watch=1",
            "watch=0",
            "watch=no",
            "Watch=1",
            "w%61tch=1",
            "limit=5",
            "limit=x",
            "dryRun=All",
            "command=id",
            "container=a",
            "tty=true",
            "tty=yes",
            "fieldSelector=metadata.name%3Dx",
            "labelSelector=a%3Db",
            "unknown=1",
            "=1",
            "",
        ];
        let mut queried_resources = 0;
        for round in 0..20_000 {
            let target: String = if round % 2 == 0 {
                let length = next() % 12;
                (0..length).map(|_| PIECES[next() % PIECES.len()]).collect()
            } else {
                let query: Vec<&str> = (0..next() % 4)
                    .map(|_| QUERY[next() % QUERY.len()])
                    .collect();
                format!("{}?{}", PATHS[next() % PATHS.len()], query.join("&"))
            };
            let method = ["GET", "POST", "DELETE", "PATCH"][next() % 4];
            if let Ok(decoded) = decode_request(method, &target) {
                let info = decoded.info;
                assert!(
                    !info.path.contains("//") && !info.path.contains('\\'),
                    "{target:?}"
                );
                // Nothing accepted needs decoding or could be read two ways.
                assert!(
                    !info.path.contains('%') && (info.path.len() <= 1 || !info.path.ends_with('/')),
                    "{target:?}"
                );
                if info.is_resource_request && info.subresource != "proxy" {
                    let mut keys: Vec<&str> = decoded.query.pairs().map(|(k, _)| k).collect();
                    assert!(
                        keys.iter()
                            .all(|k| KNOWN_PARAMS.iter().any(|p| p.name == *k)),
                        "{target:?}"
                    );
                    keys.retain(|k| *k != "command");
                    let count = keys.len();
                    keys.sort_unstable();
                    keys.dedup();
                    assert_eq!(keys.len(), count, "{target:?}: a repeated parameter");
                    queried_resources += usize::from(!decoded.query.is_empty());
                }
                if info.is_resource_request {
                    assert_eq!(info.parts.first(), Some(&info.resource), "{target:?}");
                    assert!(!info.api_version.is_empty(), "{target:?}");
                } else {
                    assert!(info.parts.is_empty(), "{target:?}");
                }
            }
        }
        assert!(
            queried_resources > 20,
            "only {queried_resources} accepted resource requests had a query"
        );
    }

    #[test]
    fn path_is_recorded_as_sent() {
        let info = RequestInfo::new("GET", "/api/v1/namespaces/prod/pods/web-0?limit=%31").unwrap();
        assert_eq!(info.path, "/api/v1/namespaces/prod/pods/web-0");
    }

    /// Bounded, seeded fuzzing of request decoding (fixed seed and case count).
    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed};

        fn config(cases: u32) -> Config {
            Config {
                cases,
                rng_seed: RngSeed::Fixed(0x7265_7175),
                failure_persistence: None,
                ..Config::default()
            }
        }

        /// Paths and queries built from the pieces that steer the decoder, and
        /// arbitrary text.
        fn target() -> impl Strategy<Value = String> {
            let segment = prop::sample::select(vec![
                "api",
                "apis",
                "v1",
                "apps",
                "namespaces",
                "prod",
                "pods",
                "secrets",
                "watch",
                "proxy",
                "exec",
                "status",
                "log",
                "db",
                "",
                ".",
                "..",
                "%2F",
                "%2e",
                "a b",
                "x%",
                "é",
            ]);
            let param = prop::sample::select(vec![
                "watch=true",
                "watch=1",
                "watch=false",
                "fieldSelector=metadata.name%3Ddb",
                "fieldSelector=metadata.name=db,a=b",
                "labelSelector=app%3Dx",
                "command=ls",
                "a=%zz",
                "%61=b",
                "",
                ";",
                "x+y=1",
            ]);
            let prefix = prop::sample::select(vec![
                "",
                "/api/v1",
                "/apis/apps/v1",
                "/api/v1/watch",
                "/apis/apps/v1/watch",
                "/api/v1/namespaces/prod",
                "/api/v1/watch/namespaces/prod",
                "/apis/apps/v1/namespaces/prod",
            ]);
            let built = (
                prefix,
                prop::collection::vec(segment, 0..5),
                any::<bool>(),
                prop::collection::vec(param, 0..4),
            )
                .prop_map(|(prefix, segments, trailing_slash, params)| {
                    let mut path = format!("{prefix}/{}", segments.join("/"));
                    if trailing_slash {
                        path.push('/');
                    }
                    if !params.is_empty() {
                        path = format!("{path}?{}", params.join("&"));
                    }
                    path
                });
            prop_oneof![3 => built, 1 => any::<String>()]
        }

        fn method() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get"
                ])
                .prop_map(str::to_owned),
                any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(config(2048))]

            /// Any method and target: no panic, and a decoded request agrees
            /// with itself: its verb is one its method can carry, its path is
            /// the target's path, its resource parts start with its resource,
            /// and decoding it again gives the same.
            #[test]
            fn fuzz_decoded_requests_agree_with_their_method_and_path(
                method in method(),
                target in target(),
            ) {
                let Ok(decoded) = decode_request(&method, &target) else {
                    return Ok(());
                };
                let info = &decoded.info;
                let verbs: &[&str] = match method.as_str() {
                    "GET" | "HEAD" => &["get", "list", "watch", "proxy"],
                    "POST" => &["create", "proxy"],
                    "PUT" => &["update", "proxy"],
                    "PATCH" => &["patch", "proxy"],
                    "DELETE" => &["delete", "deletecollection", "proxy"],
                    _ => &[],
                };
                if info.is_resource_request {
                    prop_assert!(verbs.contains(&info.verb.as_str()), "{method} {target}: {info:?}");
                    prop_assert!(["api", "apis"].contains(&info.api_prefix.as_str()), "{info:?}");
                    prop_assert_eq!(info.parts.first(), Some(&info.resource), "{:?}", info);
                    prop_assert!(!info.resource.is_empty(), "{:?}", info);
                } else {
                    prop_assert_eq!(&info.verb, &method.to_lowercase());
                }
                prop_assert_eq!(info.path.as_str(), target.split('?').next().unwrap_or_default());
                let again = RequestInfo::new(&method, &target);
                prop_assert_eq!(again.as_ref(), Ok(info));
            }
        }
    }
}
