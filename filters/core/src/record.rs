//! Access records: what gatehouse says happened, one JSON object per event.
//!
//! Every record is a [`Record`], serialized as one JSON object whose `"type"` names
//! the kind of event and whose `"schema"` is [`SCHEMA_VERSION`]. Field names are
//! stable snake_case; optional fields are omitted when absent.
//!
//! # Field reference
//!
//! Common to every record (from [`RecordHeader`]):
//!
//! | field | JSON | meaning |
//! |---|---|---|
//! | `type` | string | `pg.session_start`, `pg.statement` or `pg.session_end` |
//! | `schema` | integer | record schema version, currently `1` |
//! | `sequence` | integer | per-connection sequence number, starting at 1 and shared by every record kind of the connection, so a gap means a lost record |
//! | `connection_id` | integer | the proxy's connection id |
//! | `time` | string | RFC 3339 UTC time with microseconds: statement start, session start or session end |
//! | `gatehouse_version` | string | build version of the filter that produced the record |
//! | `mode` | string | `shadow` when an observe-only instance produced the record: its `decision` and `masking` are what it would have done, the traffic passed unchanged; omitted for an enforcing instance |
//! | `client_address` | string | client address as the proxy saw it (`ip:port`) |
//! | `database` | string | database named in the StartupMessage (defaults to the user) |
//! | `user` | string | user named in the StartupMessage (claimed, not verified) |
//! | `application_name` | string | `application_name` startup parameter; omitted when not sent |
//!
//! `pg.session_start` ([`SessionStartRecord`]), once the StartupMessage is seen:
//! `protocol_version` (`"3.0"`, `"3.2"`); from a shadow instance with token login,
//! `login_refusal` when its login would have refused the session.
//!
//! `pg.statement` ([`StatementRecord`]), one per simple-query statement, per Execute
//! of an extended-query portal, or per FunctionCall:
//!
//! | field | JSON | meaning |
//! |---|---|---|
//! | `protocol` | string | `simple`, `extended` or `function_call` |
//! | `statement` | string | statement text, literals replaced by `$n` when `redact_literals` is on; omitted when unknown |
//! | `statement_truncated` | bool | present (true) when the text was cut to the configured limit |
//! | `statement_name` | string | extended query: prepared statement name (omitted for the unnamed one) |
//! | `portal` | string | extended query: portal name (omitted for the unnamed one) |
//! | `kind` | string | first keyword, uppercased (`SELECT`, `INSERT`, …) |
//! | `category` | string | richer classification from the SQL policy, when it ran |
//! | `parameters` | array | bind parameters when `record_parameters` is on: `null`, a string (text format), `{"base64": …}` (binary) or `{"omitted_bytes": n}` (over the size limit) |
//! | `function_oid` | integer | FunctionCall: the function's OID |
//! | `copy` | string | `in`, `out` or `both` when the statement ran a COPY sub-protocol |
//! | `command_tag` | string | the server's CommandComplete tag (`SELECT 3`, `INSERT 0 1`) |
//! | `rows` | integer | rows from the tag, or DataRows counted when the tag has none |
//! | `suspended` | bool | present (true) when an Execute row limit suspended the portal |
//! | `error` | object | `{"sqlstate", "message", "severity"}` when the statement failed |
//! | `duration_us` | integer | from the statement's request to its completion, microseconds |
//! | `bytes_from_client` | integer | client bytes since the previous statement record, up to and including this statement's request |
//! | `bytes_to_client` | integer | server bytes since the previous statement completed, up to and including this completion |
//! | `decision` | object | `{"action", "rule"?, "message"?}` the policy decision |
//! | `approval` | object | `{"id", "grant", "approvers", "forced"?, "reason"?}` the approval that let a `require_approval` statement run |
//! | `access_reason` | string | the reason the session gave for its access (`SET gatehouse.reason = '…'`), on every statement after it |
//! | `masking` | object | when masking is configured and something was (or, for an exempt identity, would have been) masked: [`MaskingCounts`] |
//!
//! `pg.session_end` ([`SessionEndRecord`]):
//!
//! | field | JSON | meaning |
//! |---|---|---|
//! | `reason` | string | see [`EndReason`] |
//! | `detail` | string | why, for errors (e.g. the protocol violation) |
//! | `statements` | integer | statement records produced |
//! | `errors` | integer | statements that failed |
//! | `bytes_from_client`, `bytes_to_client` | integer | session totals as seen by the filter (before rewriting) |
//! | `duration_us` | integer | session duration |
//! | `backend_pid` | integer | server process id from BackendKeyData, when seen |
//! | `last_sequence` | integer | equals this record's `sequence`: the number of records the session produced |

use crate::policy::Decision;
use serde::{Serialize, Serializer};
use std::ops::Deref;
use std::sync::Arc;

/// Version of the record schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// One access record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum Record {
    /// A Postgres session was opened (StartupMessage seen).
    #[serde(rename = "pg.session_start")]
    SessionStart(SessionStartRecord),
    /// A Postgres statement completed (or failed).
    #[serde(rename = "pg.statement")]
    Statement(Box<StatementRecord>),
    /// A Postgres session ended.
    #[serde(rename = "pg.session_end")]
    SessionEnd(SessionEndRecord),
}

impl Record {
    /// The header every record carries.
    pub fn header(&self) -> &RecordHeader {
        match self {
            Record::SessionStart(r) => &r.header,
            Record::Statement(r) => &r.header,
            Record::SessionEnd(r) => &r.header,
        }
    }

    /// The record as one line of JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        to_json_line(self).unwrap_or_default()
    }
}

/// `value` as one line of JSON, as `serde_json::to_string` writes it but
/// cheaper inside a Wasm VM (see [`JsonLine`]); every record and audit Event
/// is serialized with it.
pub fn to_json_line<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut line = JsonLine(Vec::with_capacity(512));
    serde_json::to_writer(&mut line, value)?;
    // serde_json writes valid UTF-8.
    Ok(String::from_utf8(line.0).unwrap_or_default())
}

/// The buffer a record is serialized into. serde_json writes a record in
/// dozens of pieces of a few bytes; copying those byte by byte instead of
/// with `memcpy` matters in a Wasm VM, where every `memcpy` is a call out of
/// the module (serializing a statement record costs about 40% less in V8).
struct JsonLine(Vec<u8>);

impl std::io::Write for JsonLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        const SHORT: usize = 16;
        if bytes.len() <= SHORT {
            self.0.reserve(bytes.len());
            for &byte in bytes {
                self.0.push(byte);
            }
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A point in time as unix microseconds, serialized as RFC 3339 UTC with microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp(pub u64);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339_micros(self.0))
    }
}

/// Formats unix microseconds as `2026-11-22T00:48:08.123456Z`.
pub fn rfc3339_micros(unix_us: u64) -> String {
    rfc3339_micros_signed(i64::try_from(unix_us).unwrap_or(i64::MAX))
}

/// [`rfc3339_micros`] for a time that may precede 1970. Times beyond the
/// calendar's range (about 262,000 years either side) print as its limit.
pub fn rfc3339_micros_signed(unix_us: i64) -> String {
    use chrono::{DateTime, Datelike as _, Timelike as _, Utc};
    let limit = if unix_us < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    };
    let time = DateTime::<Utc>::from_timestamp_micros(unix_us).unwrap_or(limit);
    let year = u64::try_from(time.year()).unwrap_or_default();
    // Digit by digit rather than through `format!`: every record carries a
    // timestamp, and the formatting machinery costs more than the rest of it.
    let mut out = String::with_capacity(27);
    push_digits(&mut out, year, 4);
    out.push('-');
    push_digits(&mut out, time.month().into(), 2);
    out.push('-');
    push_digits(&mut out, time.day().into(), 2);
    out.push('T');
    push_digits(&mut out, time.hour().into(), 2);
    out.push(':');
    push_digits(&mut out, time.minute().into(), 2);
    out.push(':');
    push_digits(&mut out, time.second().into(), 2);
    out.push('.');
    push_digits(&mut out, time.timestamp_subsec_micros().into(), 6);
    out.push('Z');
    out
}

/// Appends `value` in decimal, zero-padded to at least `width` digits.
fn push_digits(out: &mut String, value: u64, width: u32) {
    let width = width.max(value.checked_ilog10().map_or(1, |log| log + 1));
    for position in (0..width).rev() {
        let digit = (value / 10u64.pow(position)) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// A value shared by many records of a session (its client, a prepared
/// statement's text), serialized as the value itself.
#[derive(Debug, PartialEq, Eq)]
pub struct Shared<T: ?Sized>(pub Arc<T>);

impl<T: ?Sized> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T: ?Sized> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized + Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (*self.0).serialize(s)
    }
}

impl<T> From<T> for Shared<T> {
    fn from(value: T) -> Self {
        Self(Arc::new(value))
    }
}

impl From<&str> for Shared<str> {
    fn from(value: &str) -> Self {
        Self(Arc::from(value))
    }
}

/// Fields every record starts with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordHeader {
    /// Always [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Per-connection sequence number, from 1, shared by all record kinds.
    pub sequence: u64,
    /// The proxy's connection id.
    pub connection_id: u64,
    /// When the event happened.
    pub time: Timestamp,
    /// Build version of the producing filter.
    pub gatehouse_version: &'static str,
    /// `sha256:<hex>` of the filter configuration in force (policy, masking,
    /// login rules); see [`crate::config::config_hash`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<Shared<str>>,
    /// `shadow` when an observe-only filter instance produced the record (its
    /// decisions and masking are what it would have done); omitted when enforcing.
    #[serde(skip_serializing_if = "FilterMode::is_enforce")]
    pub mode: FilterMode,
}

/// Whether a filter instance acts on traffic or only records what it would do.
/// Configured as the top-level `"mode"` of a filter's configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterMode {
    /// Decisions are applied: denials, masking, token login.
    #[default]
    Enforce,
    /// Observe only: traffic passes unchanged; records say what would have happened.
    Shadow,
}

impl FilterMode {
    /// Whether decisions are applied.
    pub fn is_enforce(&self) -> bool {
        *self == FilterMode::Enforce
    }

    /// Whether the instance only observes.
    pub fn is_shadow(&self) -> bool {
        *self == FilterMode::Shadow
    }

    /// `enforce` or `shadow`, as configured and recorded.
    pub fn as_str(&self) -> &'static str {
        match self {
            FilterMode::Enforce => "enforce",
            FilterMode::Shadow => "shadow",
        }
    }
}

/// Who is connected, as far as the Postgres startup told us.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PgClient {
    /// Client address as the proxy saw it.
    pub client_address: String,
    /// Database named at startup (the user's name when not given).
    pub database: String,
    /// User named at startup (claimed, not verified).
    pub user: String,
    /// `application_name` startup parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// The caller proven by token login (subject, groups, issuer, token id);
    /// absent when the filter does not require a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<crate::identity::Identity>,
}

/// `pg.session_start`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionStartRecord {
    #[serde(flatten)]
    pub header: RecordHeader,
    #[serde(flatten)]
    pub client: Shared<PgClient>,
    /// Protocol version the client asked for, e.g. `3.0`.
    pub protocol_version: String,
    /// Shadow mode only: why token login would have refused the session
    /// (`token refused: expired`, `no token`); the session went on unverified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_refusal: Option<String>,
}

/// How a statement reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PgProtocol {
    /// A Query message.
    Simple,
    /// Parse/Bind/Execute.
    Extended,
    /// A FunctionCall message.
    FunctionCall,
}

/// Direction of a COPY sub-protocol run by a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyDirection {
    /// COPY FROM STDIN.
    In,
    /// COPY TO STDOUT.
    Out,
    /// COPY BOTH (replication).
    Both,
}

/// One bind parameter as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParameterValue {
    /// SQL NULL, serialized as `null`.
    Null,
    /// A text-format value.
    Text(String),
    /// A binary-format value.
    Binary {
        /// The bytes in standard base64.
        base64: String,
    },
    /// A value over the recording size limit: only its length.
    Omitted {
        /// Its length in bytes.
        omitted_bytes: u64,
    },
}

/// The server's error for a failed statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementError {
    /// SQLSTATE code (`42P01`).
    pub sqlstate: String,
    /// Primary message.
    pub message: String,
    /// Severity (`ERROR`, `FATAL`).
    pub severity: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `pg.statement`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatementRecord {
    #[serde(flatten)]
    pub header: RecordHeader,
    #[serde(flatten)]
    pub client: Shared<PgClient>,
    pub protocol: PgProtocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<Shared<str>>,
    #[serde(skip_serializing_if = "is_false")]
    pub statement_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<ParameterValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_oid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyDirection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "is_false")]
    pub suspended: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<StatementError>,
    pub duration_us: u64,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    pub decision: Decision,
    /// The approval that let a `require_approval` statement run: its id, kind
    /// and approvers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::approval::ApprovalRef>,
    /// The reason the session gave for its access (`SET gatehouse.reason = '…'`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_reason: Option<Shared<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masking: Option<MaskingCounts>,
}

/// What masking did to what one statement sent back (result cells, COPY rows,
/// error, notice and notification fields): counts per column rule and per
/// detector, never the values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MaskingCounts {
    /// Values masked per column rule, by rule name.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rules: std::collections::BTreeMap<String, u64>,
    /// Findings masked per detector, by detector name.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub detectors: std::collections::BTreeMap<String, u64>,
    /// Values too long to scan, handled whole by the over-cap policy.
    #[serde(skip_serializing_if = "is_zero")]
    pub over_cap: u64,
    /// Values masked whole because what computed them cannot be followed (a
    /// function whose body the filter cannot see, a statement it could not
    /// analyze, a result it could not describe).
    #[serde(skip_serializing_if = "is_zero")]
    pub opaque: u64,
    /// Rows (and their bytes) withheld by a result-size limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited: Option<LimitedResult>,
    /// Present (true) when the identity is exempt: the values reached the client
    /// clear and the counts say what would have been masked.
    #[serde(skip_serializing_if = "is_false")]
    pub exempt: bool,
}

/// A result cut short by a result-size limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LimitedResult {
    /// The limit that applied: `max_rows` or `max_bytes`.
    pub limit: String,
    /// Its value.
    pub value: u64,
    /// `error` (the statement ended with an error) or `truncate` (the rest
    /// was withheld with a notice).
    pub action: String,
    /// Rows withheld from the client.
    pub rows_withheld: u64,
}

impl MaskingCounts {
    /// Values masked (or, when exempt, that would have been): rule cells,
    /// detector findings, over-cap and opaque values.
    pub fn total(&self) -> u64 {
        self.rules
            .values()
            .chain(self.detectors.values())
            .fold(self.over_cap.saturating_add(self.opaque), |sum, n| {
                sum.saturating_add(*n)
            })
    }

    /// Whether nothing was, or would have been, masked or limited.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.detectors.is_empty()
            && self.over_cap == 0
            && self.opaque == 0
            && self.limited.is_none()
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The client sent Terminate.
    ClientTerminate,
    /// The client closed the connection without Terminate.
    ClientClosed,
    /// The server closed the connection.
    ServerClosed,
    /// The connection closed and the proxy could not tell which side closed it.
    Closed,
    /// The server refused the login.
    AuthenticationFailed,
    /// The connection only carried a CancelRequest.
    CancelRequest,
    /// Malformed or out-of-protocol bytes; `detail` says what.
    ProtocolError,
    /// TLS would have made the session opaque and policy refused it.
    TlsRefused,
    /// A startup parameter was not allowed (`detail` says which); the server
    /// never saw the StartupMessage.
    StartupRefused,
    /// The session held more than its memory bound (`detail` says how much),
    /// typically a client sending requests without reading the answers.
    MemoryLimit,
}

/// `pg.session_end`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionEndRecord {
    #[serde(flatten)]
    pub header: RecordHeader,
    #[serde(flatten)]
    pub client: Shared<PgClient>,
    pub reason: EndReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub statements: u64,
    pub errors: u64,
    /// Statements the policy refused.
    pub denied: u64,
    /// Values masked for the client: column-rule cells plus detector findings
    /// (not counting what an exempt identity saw in clear).
    pub masked: u64,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    pub duration_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_pid: Option<i32>,
    pub last_sequence: u64,
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_micros() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        // 2026-11-22T00:48:08.123456Z
        assert_eq!(
            rfc3339_micros(1_795_308_488_123_456),
            "2026-11-22T00:48:08.123456Z"
        );
        // leap day
        assert_eq!(
            rfc3339_micros(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
        // Past year 9999 the year keeps every digit rather than wrapping.
        assert_eq!(
            rfc3339_micros(253_402_300_800_000_000),
            "10000-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339_micros_signed(-1),
            "1969-12-31T23:59:59.999999Z",
            "before the epoch"
        );
        assert_eq!(
            rfc3339_micros(u64::MAX),
            "262142-12-31T23:59:59.999999Z",
            "past the calendar's range: its limit"
        );
    }

    #[test]
    fn json_lines_match_serde_json_for_short_long_and_escaped_strings() {
        let value = serde_json::json!({
            "short": "a",
            "sixteen": "0123456789abcdef",
            "long": "x".repeat(1_000),
            "escaped": "quote \" backslash \\ newline \n tab \t nul \u{0} é ✓",
            "numbers": [0, 17, u64::MAX, -3, 1.5],
        });
        let mut line = JsonLine(Vec::new());
        serde_json::to_writer(&mut line, &value).unwrap();
        assert_eq!(
            String::from_utf8(line.0).unwrap(),
            serde_json::to_string(&value).unwrap()
        );
    }

    #[test]
    fn statement_record_json_is_flat_and_tagged() {
        let header = RecordHeader {
            schema: SCHEMA_VERSION,
            sequence: 2,
            connection_id: 7,
            time: Timestamp(0),
            gatehouse_version: "0.1.0",
            policy_hash: Some(Shared(Arc::from("sha256:00ff"))),
            mode: FilterMode::Enforce,
        };
        let r = Record::Statement(Box::new(StatementRecord {
            header,
            client: PgClient {
                client_address: "10.0.0.1:5000".into(),
                database: "app".into(),
                user: "alice".into(),
                application_name: None,
                identity: None,
            }
            .into(),
            protocol: PgProtocol::Extended,
            statement: Some(Shared::from("select $1")),
            statement_truncated: false,
            statement_name: None,
            portal: None,
            kind: Some("SELECT".into()),
            category: None,
            parameters: Some(vec![
                ParameterValue::Null,
                ParameterValue::Text("x".into()),
                ParameterValue::Binary {
                    base64: "AAE=".into(),
                },
                ParameterValue::Omitted { omitted_bytes: 9 },
            ]),
            function_oid: None,
            copy: None,
            command_tag: Some("SELECT 1".into()),
            rows: Some(1),
            suspended: false,
            error: None,
            duration_us: 5,
            bytes_from_client: 10,
            bytes_to_client: 20,
            decision: Decision::allow(),
            approval: None,
            access_reason: None,
            masking: None,
        }));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["type"], "pg.statement");
        assert_eq!(v["schema"], 1);
        assert_eq!(v["sequence"], 2);
        assert_eq!(v["user"], "alice");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["protocol"], "extended");
        assert_eq!(v["decision"]["action"], "allow");
        assert_eq!(v["policy_hash"], "sha256:00ff");
        assert_eq!(
            v["parameters"],
            serde_json::json!([null, "x", {"base64": "AAE="}, {"omitted_bytes": 9}])
        );
        assert!(v.get("application_name").is_none());
        assert!(v.get("suspended").is_none());
        assert!(v.get("mode").is_none(), "enforcing records carry no mode");
    }

    #[test]
    fn shadow_records_say_so_in_their_header() {
        let header = RecordHeader {
            schema: SCHEMA_VERSION,
            sequence: 1,
            connection_id: 7,
            time: Timestamp(0),
            gatehouse_version: "0.1.0",
            policy_hash: None,
            mode: FilterMode::Shadow,
        };
        let json = serde_json::to_value(&header).unwrap();
        assert_eq!(json["mode"], "shadow");
        let mode: FilterMode = serde_json::from_str("\"enforce\"").unwrap();
        assert!(mode.is_enforce());
        assert!(serde_json::from_str::<FilterMode>("\"observe\"").is_err());
    }
}
