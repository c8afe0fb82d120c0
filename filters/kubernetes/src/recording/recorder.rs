//! Turning a session's events into chained, masked, bounded records.
//!
//! Output is masked a line at a time: a terminal echoes typed characters one
//! frame each, so a secret only shows whole once its line is. A partial line
//! waits for its end, for [`MAX_PENDING_LINE`] bytes, or, when nothing is
//! being typed, for a second (a prompt). Its pieces keep their arrival times
//! unless masking changed the line. Typed secrets (a line typed at a
//! password prompt) are masked wherever they show again. Events gather in a
//! chunk sealed once it holds [`CHUNK_BYTES`] or its first event is a second
//! old, and before every command record, so records stay in time order.

use super::config::{OnLimit, RecordingConfig};
use super::wire::Channel;
use gatehouse_core::exec_record::{
    Chain, Chunk, Command, Event, EventCode, ExecRecord, Masking, SessionEnd, SessionStart, header,
};
use gatehouse_core::mask::{Masked, Masker};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;

/// A chunk is sealed at this many payload bytes…
pub const CHUNK_BYTES: usize = 16 * 1024;
/// …or when its first event is this old.
pub const CHUNK_MICROS: u64 = 1_000_000;
/// A partial output line longer than this is recorded without waiting for its end.
pub const MAX_PENDING_LINE: usize = 4 * 1024;
/// Most of the final status kept.
const MAX_STATUS: usize = 64 * 1024;
/// Typed secrets remembered per session, and their shortest length.
const MAX_TYPED_SECRETS: usize = 16;
const MIN_TYPED_SECRET: usize = 4;
/// What a typed secret is replaced with.
pub const SECRET_MASK: &str = "****";

/// Who and what a session is, for its records.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    pub audit_id: String,
    pub user: String,
    pub groups: Vec<String>,
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
    /// `exec` or `attach`.
    pub subresource: String,
    pub command: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub rule: String,
    pub policy_hash: Option<String>,
}

/// A typed line, as the recorder writes it.
#[derive(Debug, Clone)]
pub struct CommandEntry<'a> {
    pub at_us: u64,
    pub text: &'a str,
    pub raw: &'a [u8],
    pub uncertain: bool,
    pub cancelled: bool,
    pub secret: bool,
    /// `None` when allowed; the reason when refused.
    pub refused: Option<&'a str>,
}

/// Output waiting for its line's end, with when each piece arrived.
#[derive(Debug, Default)]
struct PendingLine {
    bytes: Vec<u8>,
    /// `(offset in bytes, arrival time)` of each piece, in order.
    arrivals: Vec<(usize, u64)>,
}

impl PendingLine {
    fn push(&mut self, data: &[u8], now_us: u64) {
        if data.is_empty() {
            return;
        }
        self.arrivals.push((self.bytes.len(), now_us));
        self.bytes.extend_from_slice(data);
    }

    /// When the oldest waiting byte arrived.
    fn since_us(&self) -> Option<u64> {
        self.arrivals.first().map(|(_, at)| *at)
    }

    /// Takes the first `n` bytes with their arrivals.
    fn take(&mut self, n: usize) -> PendingLine {
        let n = n.min(self.bytes.len());
        let rest = self.bytes.split_off(n);
        let head = std::mem::replace(&mut self.bytes, rest);
        let split = self.arrivals.partition_point(|(offset, _)| *offset < n);
        let mut rest_arrivals: Vec<(usize, u64)> = self.arrivals.split_off(split);
        // A piece cut in two: its tail keeps its arrival time.
        if rest_arrivals.first().is_none_or(|(offset, _)| *offset > n)
            && !self.bytes.is_empty()
            && let Some((_, at)) = self.arrivals.last()
        {
            rest_arrivals.insert(0, (n, *at));
        }
        for (offset, _) in &mut rest_arrivals {
            *offset -= n;
        }
        let head_arrivals = std::mem::replace(&mut self.arrivals, rest_arrivals);
        PendingLine {
            bytes: head,
            arrivals: head_arrivals,
        }
    }
}

/// The records of one session.
#[derive(Debug)]
pub struct Recorder {
    info: SessionInfo,
    config: Arc<RecordingConfig>,
    transport: &'static str,
    protocol: String,
    chain: Chain,
    start_us: u64,
    events: Vec<Event>,
    chunk_bytes: usize,
    chunk_first_us: Option<u64>,
    chunk_masking: Masking,
    chunk_truncated: bool,
    /// Partial stdout and stderr lines.
    pending: [PendingLine; 2],
    typed_secrets: Vec<Vec<u8>>,
    recorded_bytes: u64,
    truncated: bool,
    status: Vec<u8>,
    status_recorded: bool,
    stdin_bytes: u64,
    stdout_bytes: u64,
    stderr_bytes: u64,
    commands: u64,
    denied: u64,
    ended: bool,
}

/// What the recorder asks of the session after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Within,
    /// The cap was reached and policy ends the session.
    EndSession,
}

impl Recorder {
    pub fn new(
        info: SessionInfo,
        config: Arc<RecordingConfig>,
        transport: &'static str,
        protocol: &str,
        now_us: u64,
    ) -> Recorder {
        Recorder {
            info,
            config,
            transport,
            protocol: protocol.to_owned(),
            chain: Chain::default(),
            start_us: now_us,
            events: Vec::new(),
            chunk_bytes: 0,
            chunk_first_us: None,
            chunk_masking: Masking::default(),
            chunk_truncated: false,
            pending: Default::default(),
            typed_secrets: Vec::new(),
            recorded_bytes: 0,
            truncated: false,
            status: Vec::new(),
            status_recorded: false,
            stdin_bytes: 0,
            stdout_bytes: 0,
            stderr_bytes: 0,
            commands: 0,
            denied: 0,
            ended: false,
        }
    }

    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The `k8s.exec.session_start` record.
    pub fn start(&mut self) -> String {
        let info = &self.info;
        let record = ExecRecord::SessionStart(SessionStart {
            header: header(&self.chain, &info.audit_id, &info.user, self.start_us),
            groups: &info.groups,
            namespace: &info.namespace,
            pod: &info.pod,
            container: info.container.as_deref(),
            subresource: &info.subresource,
            command: &info.command,
            tty: info.tty,
            stdin: info.stdin,
            transport: self.transport,
            protocol: &self.protocol,
            rule: &info.rule,
            policy_hash: info.policy_hash.as_deref(),
        });
        self.chain.seal(&record)
    }

    /// Counts `bytes` against the cap; false once nothing more is recorded.
    fn admit(&mut self, bytes: usize, now_us: u64, out: &mut Vec<String>) -> (bool, Limit) {
        if self.truncated {
            return (false, Limit::Within);
        }
        self.recorded_bytes += bytes as u64;
        if self.recorded_bytes <= self.config.max_session_bytes {
            return (true, Limit::Within);
        }
        self.truncated = true;
        self.chunk_truncated = true;
        let (text, limit) = match self.config.on_limit {
            OnLimit::Truncate => ("recording truncated", Limit::Within),
            OnLimit::End => ("session ended", Limit::EndSession),
        };
        let marker = format!(
            "{text}: the session passed {} bytes",
            self.config.max_session_bytes
        );
        self.push(EventCode::Marker, marker.into_bytes(), now_us, out);
        self.seal_chunk(out);
        (false, limit)
    }

    /// Output on stdout or stderr.
    pub fn output(
        &mut self,
        channel: Channel,
        data: &[u8],
        now_us: u64,
        out: &mut Vec<String>,
    ) -> Limit {
        let index = match channel {
            Channel::Stdout => {
                self.stdout_bytes += data.len() as u64;
                0
            }
            Channel::Stderr => {
                self.stderr_bytes += data.len() as u64;
                1
            }
            _ => return Limit::Within,
        };
        self.maybe_seal(now_us, out);
        let (record, limit) = self.admit(data.len(), now_us, out);
        if !record {
            return limit;
        }
        let Some(pending) = self.pending.get_mut(index) else {
            return limit;
        };
        pending.push(data, now_us);
        if let Some(newline) = pending.bytes.iter().rposition(|b| *b == b'\n') {
            let lines = pending.take(newline + 1);
            self.push_output(index, lines, out);
        }
        self.flush_long_pending(out);
        self.maybe_seal(now_us, out);
        limit
    }

    /// Records partial lines over the size limit, up to a character boundary.
    fn flush_long_pending(&mut self, out: &mut Vec<String>) {
        for index in 0..2 {
            let Some(pending) = self.pending.get_mut(index) else {
                continue;
            };
            if pending.bytes.len() <= MAX_PENDING_LINE {
                continue;
            }
            let head = pending.take(utf8_boundary(&pending.bytes));
            self.push_output(index, head, out);
        }
    }

    /// Records partial output lines that waited long enough (a prompt), unless
    /// the user is typing a line: its echo must be masked whole.
    pub fn flush_idle_output(&mut self, typing: bool, now_us: u64, out: &mut Vec<String>) {
        for index in 0..2 {
            let Some(pending) = self.pending.get_mut(index) else {
                continue;
            };
            let idle = pending
                .since_us()
                .is_some_and(|since| now_us.saturating_sub(since) >= CHUNK_MICROS);
            if typing || !idle {
                continue;
            }
            let head = pending.take(utf8_boundary(&pending.bytes));
            self.push_output(index, head, out);
        }
    }

    /// Records output lines: a piece per arrival, as the user saw them
    /// come; when masking changed them, one event when the last piece came
    /// (the pieces would spell what was masked).
    fn push_output(&mut self, index: usize, lines: PendingLine, out: &mut Vec<String>) {
        let Some((_, last_us)) = lines.arrivals.last().copied() else {
            return;
        };
        let (masked, masking) = self.mask(&lines.bytes);
        self.chunk_masking.add(&masking);
        let code = if index == 0 {
            EventCode::Output
        } else {
            EventCode::ErrorOutput
        };
        if let Cow::Owned(masked) = masked {
            self.push(code, masked, last_us, out);
            return;
        }
        if let [(_, at)] = *lines.arrivals.as_slice() {
            // One piece, the common case for bulk output: its bytes move.
            self.push(code, lines.bytes, at, out);
            return;
        }
        // Pieces are cut where they arrived, moved on to a character's start.
        let bytes = &lines.bytes;
        let char_start = |mut at: usize| {
            while bytes.get(at).is_some_and(|b| b & 0xc0 == 0x80) {
                at += 1;
            }
            at
        };
        let mut start = 0;
        let mut arrivals = lines.arrivals.iter().peekable();
        while let Some((_, at)) = arrivals.next() {
            let end = arrivals
                .peek()
                .map_or(bytes.len(), |(next, _)| char_start(*next));
            if end > start {
                let piece = bytes.get(start..end).unwrap_or_default().to_vec();
                self.push(code, piece, *at, out);
                start = end;
            }
        }
    }

    /// Masks typed secrets, then detector findings.
    pub fn mask<'a>(&self, bytes: &'a [u8]) -> (Cow<'a, [u8]>, Masking) {
        let mut masking = Masking::default();
        let mut text: Cow<'a, [u8]> = Cow::Borrowed(bytes);
        for secret in &self.typed_secrets {
            let (replaced, n) = replace_all(&text, secret, SECRET_MASK.as_bytes());
            if n > 0 {
                masking.typed_secrets += n;
                text = Cow::Owned(replaced);
            }
        }
        if let Some(masker) = &self.config.masker {
            let masked = masker.mask_text(&text);
            for (kind, n) in masked.counts.iter() {
                *masking.detectors.entry(kind.as_str()).or_default() += u64::from(n);
            }
            match masked.value {
                Masked::Value(Cow::Owned(bytes)) => text = Cow::Owned(bytes),
                Masked::Value(Cow::Borrowed(_)) => {}
                Masked::Null => text = Cow::Owned(SECRET_MASK.as_bytes().to_vec()),
            }
        }
        (text, masking)
    }

    /// Typed input, a line at a time (or a long stretch without a line end).
    pub fn input(
        &mut self,
        data: &[u8],
        secret: bool,
        at_us: u64,
        now_us: u64,
        out: &mut Vec<String>,
    ) -> Limit {
        self.stdin_bytes += data.len() as u64;
        self.maybe_seal(now_us, out);
        let (record, limit) = self.admit(data.len(), now_us, out);
        if !record {
            return limit;
        }
        let data = if secret {
            masked_secret(data)
        } else {
            let (masked, masking) = self.mask(data);
            self.chunk_masking.add(&masking);
            masked.into_owned()
        };
        self.push(EventCode::Input, data, at_us, out);
        self.maybe_seal(now_us, out);
        limit
    }

    /// A terminal size change (`{"Width":…,"Height":…}`).
    pub fn resize(&mut self, data: &[u8], now_us: u64, out: &mut Vec<String>) {
        let size: Option<(u64, u64)> = serde_json::from_slice::<Value>(data)
            .ok()
            .and_then(|v| Some((v.get("Width")?.as_u64()?, v.get("Height")?.as_u64()?)));
        if let Some((width, height)) = size
            && !self.truncated
        {
            self.push(
                EventCode::Resize,
                format!("{width}x{height}").into_bytes(),
                now_us,
                out,
            );
        }
    }

    /// Part of the final status (the error channel).
    pub fn status(&mut self, data: &[u8]) {
        let room = MAX_STATUS.saturating_sub(self.status.len());
        self.status
            .extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
    }

    /// The error channel closed: the status is complete.
    pub fn status_complete(&mut self, now_us: u64, out: &mut Vec<String>) {
        if self.status_recorded || self.status.is_empty() {
            return;
        }
        self.status_recorded = true;
        let status = self.status.clone();
        self.push(EventCode::Status, status, now_us, out);
    }

    /// A gatehouse marker (`m`): a refused line, say.
    pub fn marker(&mut self, marker: &str, now_us: u64, out: &mut Vec<String>) {
        self.push(EventCode::Marker, marker.as_bytes().to_vec(), now_us, out);
    }

    /// Text gatehouse put in front of the user, recorded where it showed:
    /// in the output line it interrupted.
    pub fn shown(&mut self, text: &[u8], now_us: u64) {
        if self.truncated {
            return;
        }
        if let Some(pending) = self.pending.first_mut() {
            pending.push(text, now_us);
        }
    }

    /// A typed line: the open chunk is sealed first, so records stay in time order.
    pub fn command(&mut self, line: &CommandEntry<'_>, out: &mut Vec<String>) {
        self.commands += 1;
        if line.refused.is_some() {
            self.denied += 1;
        }
        if line.secret && self.config.mask_typed_secrets {
            let value = line.text.as_bytes();
            if value.len() >= MIN_TYPED_SECRET && !self.typed_secrets.iter().any(|s| s == value) {
                if self.typed_secrets.len() == MAX_TYPED_SECRETS {
                    self.typed_secrets.remove(0);
                }
                self.typed_secrets.push(value.to_vec());
            }
        }
        self.seal_chunk(out);
        let secret = line.secret && self.config.mask_typed_secrets;
        let (text, raw, masking) = if secret {
            (
                SECRET_MASK.to_owned(),
                SECRET_MASK.to_owned(),
                Masking::default(),
            )
        } else {
            let (text, masking) = self.mask(line.text.as_bytes());
            let text = String::from_utf8_lossy(&text).into_owned();
            let raw = if masking.is_empty() {
                String::from_utf8_lossy(line.raw).into_owned()
            } else {
                // The raw bytes spell what was masked: they go as the masked text.
                text.clone()
            };
            (text, raw, masking)
        };
        let info = &self.info;
        let record = ExecRecord::Command(Command {
            header: header(
                &self.chain,
                &info.audit_id,
                &info.user,
                self.start_us + line.at_us,
            ),
            offset_us: line.at_us,
            line: &text,
            raw: &raw,
            uncertain: line.uncertain,
            cancelled: line.cancelled,
            secret,
            action: if line.refused.is_some() {
                "deny"
            } else {
                "allow"
            },
            reason: line.refused,
            masking,
        });
        out.push(self.chain.seal(&record));
    }

    /// Adds an event to the open chunk, splitting it over as many chunks as
    /// it takes for none to carry more than [`CHUNK_BYTES`] (a terminal may
    /// write a megabyte without a line end).
    fn push(&mut self, code: EventCode, mut data: Vec<u8>, at_us: u64, out: &mut Vec<String>) {
        let offset_us = at_us.saturating_sub(self.start_us);
        loop {
            let room = CHUNK_BYTES.saturating_sub(self.chunk_bytes);
            if room == 0 {
                self.seal_chunk(out);
                continue;
            }
            let rest = if data.len() > room {
                let mut cut = utf8_boundary(data.get(..room).unwrap_or_default());
                if cut == 0 {
                    if !self.events.is_empty() {
                        // A character straddles the room left: start afresh.
                        self.seal_chunk(out);
                        continue;
                    }
                    cut = room;
                }
                Some(data.split_off(cut))
            } else {
                None
            };
            if self.chunk_first_us.is_none() {
                self.chunk_first_us = Some(at_us);
            }
            self.chunk_bytes += data.len();
            self.events.push(Event {
                offset_us,
                code,
                data,
            });
            if self.chunk_bytes >= CHUNK_BYTES {
                self.seal_chunk(out);
            }
            match rest {
                Some(rest) => data = rest,
                None => return,
            }
        }
    }

    fn maybe_seal(&mut self, now_us: u64, out: &mut Vec<String>) {
        let old = self
            .chunk_first_us
            .is_some_and(|first| now_us.saturating_sub(first) >= CHUNK_MICROS);
        if old || self.chunk_bytes >= CHUNK_BYTES {
            self.seal_chunk(out);
        }
    }

    /// The periodic check: prompts that waited, chunks that aged.
    pub fn tick(&mut self, typing: bool, now_us: u64, out: &mut Vec<String>) {
        self.flush_idle_output(typing, now_us, out);
        self.maybe_seal(now_us, out);
    }

    fn seal_chunk(&mut self, out: &mut Vec<String>) {
        if self.events.is_empty() && !self.chunk_truncated {
            return;
        }
        let first = self.chunk_first_us.unwrap_or(self.start_us);
        let info = &self.info;
        let record = ExecRecord::Chunk(Chunk {
            header: header(&self.chain, &info.audit_id, &info.user, first),
            events: &self.events,
            bytes: self.chunk_bytes as u64,
            masking: std::mem::take(&mut self.chunk_masking),
            truncated: self.chunk_truncated,
        });
        out.push(self.chain.seal(&record));
        self.events.clear();
        self.chunk_bytes = 0;
        self.chunk_first_us = None;
        self.chunk_truncated = false;
    }

    /// Seals everything and writes `k8s.exec.session_end` (once).
    pub fn finish(
        &mut self,
        reason: &str,
        detail: Option<&str>,
        now_us: u64,
        out: &mut Vec<String>,
    ) {
        if self.ended {
            return;
        }
        self.ended = true;
        for index in 0..2 {
            if let Some(pending) = self.pending.get_mut(index) {
                let all = pending.take(usize::MAX);
                self.push_output(index, all, out);
            }
        }
        self.status_complete(now_us, out);
        self.seal_chunk(out);
        let status: Option<Value> = serde_json::from_slice(&self.status).ok();
        let exit_code = status.as_ref().and_then(exit_code);
        let reason = if reason == "closed" && status.is_some() {
            "completed"
        } else {
            reason
        };
        let info = &self.info;
        let record = ExecRecord::SessionEnd(SessionEnd {
            header: header(&self.chain, &info.audit_id, &info.user, now_us),
            reason,
            detail,
            duration_us: now_us.saturating_sub(self.start_us),
            status: status.as_ref(),
            exit_code,
            stdin_bytes: self.stdin_bytes,
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
            commands: self.commands,
            denied: self.denied,
            truncated: self.truncated,
            last_sequence: self.chain.next_sequence(),
        });
        out.push(self.chain.seal(&record));
    }

    pub fn is_finished(&self) -> bool {
        self.ended
    }

    /// Microseconds since the session started.
    pub fn offset(&self, now_us: u64) -> u64 {
        now_us.saturating_sub(self.start_us)
    }

    /// The masker for live masking.
    pub fn masker(&self) -> Option<&Masker> {
        self.config.masker.as_ref()
    }
}

/// 0 on `Success`, the `ExitCode` cause of a `NonZeroExitCode` failure.
fn exit_code(status: &Value) -> Option<i64> {
    match status.get("status").and_then(Value::as_str)? {
        "Success" => Some(0),
        _ => status
            .pointer("/details/causes")?
            .as_array()?
            .iter()
            .find(|cause| cause.get("reason").and_then(Value::as_str) == Some("ExitCode"))?
            .get("message")?
            .as_str()?
            .parse()
            .ok(),
    }
}

/// The longest prefix that does not end inside a UTF-8 sequence (all of it
/// when the bytes are not UTF-8 anyway).
fn utf8_boundary(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(error) if error.error_len().is_none() => error.valid_up_to(),
        Err(_) => bytes.len(),
    }
}

/// A secret's bytes: printable ones become `*`, line ends stay.
fn masked_secret(data: &[u8]) -> Vec<u8> {
    data.iter()
        .map(|b| if *b == b'\r' || *b == b'\n' { *b } else { b'*' })
        .collect()
}

/// Replaces every occurrence of `needle`; how many there were.
fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    let mut count = 0;
    let mut rest = haystack;
    while let Some(at) = memchr::memmem::find(rest, needle) {
        out.extend_from_slice(rest.get(..at).unwrap_or_default());
        out.extend_from_slice(with);
        rest = rest.get(at + needle.len()..).unwrap_or_default();
        count += 1;
    }
    if count == 0 {
        return (Vec::new(), 0);
    }
    out.extend_from_slice(rest);
    (out, count)
}
