//! Records of a recorded `kubectl exec` or `attach` session, and the hash
//! chain that makes a missing or altered record visible.
//!
//! A session writes, in order: one `k8s.exec.session_start`, then
//! `k8s.exec.chunk` records (the session's events, at most about a second or
//! 16 KiB each) and `k8s.exec.command` records (one per typed line) as they
//! happen, and one `k8s.exec.session_end`. Every record carries the session's
//! audit ID (`session`, the `auditID` of the request's Events), its `user`,
//! a `sequence` from 1, and the chain: `prev_digest` names the previous
//! record's `digest`, and `digest` is `sha256:<hex>` of the record's own line
//! without its `digest` member, which is always the last one:
//!
//! ```text
//! {"type":"k8s.exec.chunk",...,"prev_digest":"sha256:ab…","digest":"sha256:cd…"}
//! └──────────────────── hashed: this text, then "}" ────────┘
//! ```
//!
//! [`Chain::seal`] writes records that way; [`ChainCheck`] reads them back.
//! Field reference: docs/records.md; JSON Schema:
//! schemas/exec-record.schema.json.

use crate::config::config_hash;
use crate::record::{SCHEMA_VERSION, Timestamp, to_json_line};
use serde::Serialize;
use serde_json::Value;

/// Fields every exec record starts with.
#[derive(Debug, Clone, Serialize)]
pub struct ExecHeader<'a> {
    pub schema: u32,
    /// The request's audit ID: the session's name.
    pub session: &'a str,
    pub sequence: u64,
    /// When the record's first event happened (the session start, the
    /// chunk's first event, the line's end, the session's end).
    pub time: Timestamp,
    pub gatehouse_version: &'static str,
    /// The verified caller.
    pub user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_digest: Option<String>,
}

/// One exec record.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum ExecRecord<'a> {
    #[serde(rename = "k8s.exec.session_start")]
    SessionStart(SessionStart<'a>),
    #[serde(rename = "k8s.exec.chunk")]
    Chunk(Chunk<'a>),
    #[serde(rename = "k8s.exec.command")]
    Command(Command<'a>),
    #[serde(rename = "k8s.exec.session_end")]
    SessionEnd(SessionEnd<'a>),
}

/// `k8s.exec.session_start`: what was opened, by whom, under which rule.
#[derive(Debug, Clone, Serialize)]
pub struct SessionStart<'a> {
    #[serde(flatten)]
    pub header: ExecHeader<'a>,
    pub groups: &'a [String],
    pub namespace: &'a str,
    pub pod: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<&'a str>,
    /// `exec` or `attach`.
    pub subresource: &'a str,
    /// The exec argv (empty for attach).
    pub command: &'a [String],
    pub tty: bool,
    pub stdin: bool,
    /// `websocket` or `spdy`.
    pub transport: &'a str,
    /// The negotiated stream protocol (`v5.channel.k8s.io`).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub protocol: &'a str,
    /// The rule that admitted the session and asked for the recording.
    pub rule: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<&'a str>,
}

/// `k8s.exec.chunk`: events in order, each `[offset_us, code, data]` with
/// `offset_us` from the session start; codes `i` stdin, `o` stdout, `e`
/// stderr, `r` resize (`"COLSxROWS"`), `x` the final status (its JSON text),
/// `m` a gatehouse marker (a refused line, the recording truncated). `data`
/// is a string, or `{"base64": …}` for bytes that are not UTF-8.
#[derive(Debug, Clone, Serialize)]
pub struct Chunk<'a> {
    #[serde(flatten)]
    pub header: ExecHeader<'a>,
    pub events: &'a [Event],
    /// Bytes the events carry, as recorded (after masking; at most 16 KiB).
    pub bytes: u64,
    #[serde(skip_serializing_if = "Masking::is_empty")]
    pub masking: Masking,
    /// Present (true) on the chunk where the byte cap was reached: nothing
    /// after it is recorded but commands and the end.
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub offset_us: u64,
    pub code: EventCode,
    pub data: Vec<u8>,
}

/// What an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventCode {
    Input,
    Output,
    ErrorOutput,
    Resize,
    Status,
    Marker,
}

impl EventCode {
    pub fn as_str(self) -> &'static str {
        match self {
            EventCode::Input => "i",
            EventCode::Output => "o",
            EventCode::ErrorOutput => "e",
            EventCode::Resize => "r",
            EventCode::Status => "x",
            EventCode::Marker => "m",
        }
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = s.serialize_tuple(3)?;
        tuple.serialize_element(&self.offset_us)?;
        tuple.serialize_element(self.code.as_str())?;
        match std::str::from_utf8(&self.data) {
            Ok(text) => tuple.serialize_element(text)?,
            Err(_) => {
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD.encode(&self.data);
                tuple.serialize_element(&Base64Data { base64: &encoded })?;
            }
        }
        tuple.end()
    }
}

#[derive(Serialize)]
struct Base64Data<'a> {
    base64: &'a str,
}

/// What masking replaced in a record: findings per detector, typed secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Masking {
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub detectors: std::collections::BTreeMap<&'static str, u64>,
    /// Occurrences of a secret typed earlier in the session (a password
    /// given at a prompt), masked wherever it showed again.
    #[serde(skip_serializing_if = "is_zero")]
    pub typed_secrets: u64,
}

impl Masking {
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty() && self.typed_secrets == 0
    }

    pub fn add(&mut self, other: &Masking) {
        for (name, n) in &other.detectors {
            *self.detectors.entry(name).or_default() += n;
        }
        self.typed_secrets += other.typed_secrets;
    }
}

/// `k8s.exec.command`: one typed line.
#[derive(Debug, Clone, Serialize)]
pub struct Command<'a> {
    #[serde(flatten)]
    pub header: ExecHeader<'a>,
    pub offset_us: u64,
    /// The line as rebuilt (masked).
    pub line: &'a str,
    /// The bytes typed for it, terminator included (masked like the line).
    pub raw: &'a str,
    /// Editing gatehouse could not follow: the shell may have run another line.
    #[serde(skip_serializing_if = "is_false")]
    pub uncertain: bool,
    /// Abandoned with ^C.
    #[serde(skip_serializing_if = "is_false")]
    pub cancelled: bool,
    /// Typed at a password prompt: `line` and `raw` are masked whole.
    #[serde(skip_serializing_if = "is_false")]
    pub secret: bool,
    /// `allow`, or `deny` when the line never reached the pod.
    pub action: &'a str,
    /// Why a line was refused: the pattern it matched, or that it was uncertain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Masking::is_empty")]
    pub masking: Masking,
}

/// `k8s.exec.session_end`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionEnd<'a> {
    #[serde(flatten)]
    pub header: ExecHeader<'a>,
    /// `completed` (the status arrived), `closed` (the connection ended
    /// first), `byte_limit` (ended by the cap), `protocol_error`.
    pub reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
    pub duration_us: u64,
    /// The command's final `metav1.Status`, as the server sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'a Value>,
    /// Its exit code: 0 on `Success`, the `ExitCode` cause otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    pub stdin_bytes: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub commands: u64,
    pub denied: u64,
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
    pub last_sequence: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The member every sealed record ends with.
const DIGEST_MEMBER: &str = ",\"digest\":\"";

/// Numbers and chains a session's records.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    sequence: u64,
    last_digest: Option<String>,
}

impl Chain {
    /// The sequence number the next record takes.
    pub fn next_sequence(&self) -> u64 {
        self.sequence + 1
    }

    /// The digest the next record must name.
    pub fn prev_digest(&self) -> Option<&str> {
        self.last_digest.as_deref()
    }

    /// The records sealed so far.
    pub fn last_sequence(&self) -> u64 {
        self.sequence
    }

    /// Serializes `record` (built with [`Chain::next_sequence`] and
    /// [`Chain::prev_digest`]) and appends its digest.
    pub fn seal(&mut self, record: &ExecRecord<'_>) -> String {
        let mut line = to_json_line(record).unwrap_or_default();
        let digest = config_hash(line.as_bytes());
        line.pop();
        line.push_str(DIGEST_MEMBER);
        line.push_str(&digest);
        line.push_str("\"}");
        self.sequence += 1;
        self.last_digest = Some(digest);
        line
    }
}

/// A sealed line's claimed and actual digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineDigest {
    pub claimed: String,
    pub actual: String,
}

/// Reads a sealed line's digest member and recomputes it; `None` when the
/// line does not end with one.
pub fn line_digest(line: &str) -> Option<LineDigest> {
    let line = line.trim_end();
    let at = line.rfind(DIGEST_MEMBER)?;
    let claimed = line.get(at + DIGEST_MEMBER.len()..)?.strip_suffix("\"}")?;
    if !claimed.starts_with("sha256:") || claimed.len() != 71 {
        return None;
    }
    let mut content = String::with_capacity(at + 1);
    content.push_str(line.get(..at)?);
    content.push('}');
    Some(LineDigest {
        claimed: claimed.to_owned(),
        actual: config_hash(content.as_bytes()),
    })
}

/// Checks one session's records, given in log order: sequence without gaps
/// or repeats, each digest matching its line, each `prev_digest` naming the
/// record before. Reports the first break.
#[derive(Debug, Default)]
pub struct ChainCheck {
    expected: u64,
    last_digest: Option<String>,
    /// The first problem, once found.
    pub broken: Option<String>,
    pub records: u64,
    pub ended: bool,
}

impl ChainCheck {
    /// Checks the next line of the session (`record` is its parsed form).
    pub fn push(&mut self, line: &str, record: &Value) {
        if self.broken.is_some() {
            return;
        }
        self.records += 1;
        let sequence = record.get("sequence").and_then(Value::as_u64).unwrap_or(0);
        let expected = self.expected + 1;
        if sequence != expected {
            self.broken = Some(if sequence > expected {
                format!("sequence {expected} missing (next is {sequence})")
            } else {
                format!(
                    "sequence {sequence} out of order or repeated after {}",
                    self.expected
                )
            });
            return;
        }
        let Some(digest) = line_digest(line) else {
            self.broken = Some(format!("sequence {sequence}: no digest"));
            return;
        };
        if digest.claimed != digest.actual {
            self.broken = Some(format!(
                "sequence {sequence}: altered (its digest does not match its content)"
            ));
            return;
        }
        let prev = record.get("prev_digest").and_then(Value::as_str);
        if prev != self.last_digest.as_deref() {
            self.broken = Some(format!(
                "sequence {sequence}: does not follow sequence {} (prev_digest differs)",
                self.expected
            ));
            return;
        }
        self.expected = sequence;
        self.last_digest = Some(digest.claimed);
        if record.get("type").and_then(Value::as_str) == Some("k8s.exec.session_end") {
            self.ended = true;
            if record.get("last_sequence").and_then(Value::as_u64) != Some(sequence) {
                self.broken = Some(format!("sequence {sequence}: last_sequence disagrees"));
            }
        }
    }
}

/// A header for the next record of `chain`.
pub fn header<'a>(chain: &Chain, session: &'a str, user: &'a str, time_us: u64) -> ExecHeader<'a> {
    ExecHeader {
        schema: SCHEMA_VERSION,
        session,
        sequence: chain.next_sequence(),
        time: Timestamp(time_us),
        gatehouse_version: crate::build::VERSION,
        user,
        prev_digest: chain.last_digest.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn session() -> Vec<String> {
        let mut chain = Chain::default();
        let mut lines = Vec::new();
        let groups = vec!["developers".to_owned()];
        let command = vec!["sh".to_owned()];
        let start = ExecRecord::SessionStart(SessionStart {
            header: header(&chain, "a-1", "alice", 1_000),
            groups: &groups,
            namespace: "dev",
            pod: "web-0",
            container: None,
            subresource: "exec",
            command: &command,
            tty: true,
            stdin: true,
            transport: "websocket",
            protocol: "v5.channel.k8s.io",
            rule: "exec-recorded",
            policy_hash: None,
        });
        lines.push(chain.seal(&start));
        let events = vec![
            Event {
                offset_us: 5,
                code: EventCode::Output,
                data: b"$ ".to_vec(),
            },
            Event {
                offset_us: 9,
                code: EventCode::Output,
                data: vec![0xff, 0x00],
            },
        ];
        let chunk = ExecRecord::Chunk(Chunk {
            header: header(&chain, "a-1", "alice", 1_005),
            events: &events,
            bytes: 4,
            masking: Masking::default(),
            truncated: false,
        });
        lines.push(chain.seal(&chunk));
        let end = ExecRecord::SessionEnd(SessionEnd {
            header: header(&chain, "a-1", "alice", 2_000),
            reason: "completed",
            detail: None,
            duration_us: 1_000,
            status: None,
            exit_code: Some(0),
            stdin_bytes: 0,
            stdout_bytes: 4,
            stderr_bytes: 0,
            commands: 0,
            denied: 0,
            truncated: false,
            last_sequence: chain.next_sequence(),
        });
        lines.push(chain.seal(&end));
        lines
    }

    fn check(lines: &[String]) -> ChainCheck {
        let mut check = ChainCheck::default();
        for line in lines {
            check.push(line, &serde_json::from_str(line).unwrap());
        }
        check
    }

    #[test]
    fn sealed_records_chain_and_end_with_their_digest() {
        let lines = session();
        let chunk: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(chunk["type"], "k8s.exec.chunk");
        assert_eq!(chunk["sequence"], 2);
        assert_eq!(chunk["events"][0], serde_json::json!([5, "o", "$ "]));
        assert_eq!(
            chunk["events"][1],
            serde_json::json!([9, "o", {"base64": "/wA="}])
        );
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(chunk["prev_digest"], first["digest"]);
        assert!(first.get("prev_digest").is_none());
        assert!(lines[1].ends_with(&format!("\"digest\":{}}}", chunk["digest"])));
        let check = check(&lines);
        assert_eq!(check.broken, None);
        assert!(check.ended);
        assert_eq!(check.records, 3);
    }

    #[test]
    fn an_altered_a_missing_and_a_replaced_record_are_named() {
        let lines = session();
        let mut altered = lines.clone();
        altered[1] = altered[1].replace("$ ", "# ");
        assert_eq!(
            check(&altered).broken.as_deref(),
            Some("sequence 2: altered (its digest does not match its content)")
        );
        let missing = vec![lines[0].clone(), lines[2].clone()];
        assert_eq!(
            check(&missing).broken.as_deref(),
            Some("sequence 2 missing (next is 3)")
        );
        // Another session's record 2, resealed: its own digest holds, the chain does not.
        let mut other = session();
        other[1] = {
            let mut chain = Chain::default();
            chain.seal(&ExecRecord::Chunk(Chunk {
                header: header(&chain, "a-1", "alice", 0),
                events: &[],
                bytes: 0,
                masking: Masking::default(),
                truncated: false,
            }));
            let record = ExecRecord::Chunk(Chunk {
                header: header(&chain, "a-1", "alice", 0),
                events: &[],
                bytes: 0,
                masking: Masking::default(),
                truncated: false,
            });
            chain.seal(&record)
        };
        assert_eq!(
            check(&other).broken.as_deref(),
            Some("sequence 2: does not follow sequence 1 (prev_digest differs)")
        );
        let repeated = vec![lines[0].clone(), lines[1].clone(), lines[1].clone()];
        assert!(check(&repeated).broken.unwrap().contains("repeated"));
    }
}
