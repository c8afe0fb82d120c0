//! `gatehouse replay`: a recorded session played back from the access log.
//!
//! ```text
//! gatehouse replay <access-log> --session <id> [--format asciicast|text] [--output FILE]
//! ```
//!
//! `<id>` is an exec session's audit ID (`k8s.exec.*` records), `last` for
//! the exec session that started last, or a Postgres connection id (`pg.*`
//! records). `asciicast` writes asciicast v2, which
//! `asciinema play` and `asciinema cat` read; `text` prints a transcript: the
//! terminal's output as plain text and the typed commands with their
//! outcome for an exec session, the statements with their outcomes for a
//! Postgres session. A session whose hash chain does not hold is still
//! replayed, with a warning naming the break.

use crate::args::Args;
use crate::recording::{Event, SessionRecords, sessions};
use serde_json::{Value, json};
use std::process::ExitCode;

const USAGE: &str = "usage: gatehouse replay <access-log file> --session <id> [--format asciicast|text] [--output FILE]

  <id>  an exec session's audit ID, `last` for the latest exec session, or a
        Postgres connection id";

/// The terminal size when the session never said.
const DEFAULT_SIZE: (u64, u64) = (80, 24);

/// Entry point for `gatehouse replay ...`.
pub fn run(args: &[String]) -> ExitCode {
    let parsed = match Args::parse(args, &[], &["--session", "--format", "--output"]) {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("gatehouse replay: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (Some(path), Some(session)) = (parsed.positional.first(), parsed.option("--session"))
    else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let format = match parsed.option("--format").unwrap_or("text") {
        "asciicast" => Format::Asciicast,
        "text" => Format::Text,
        other => {
            eprintln!("gatehouse replay: unknown format {other:?} (asciicast or text)");
            return ExitCode::from(2);
        }
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("gatehouse replay: cannot read {path}: {error}");
            return ExitCode::from(2);
        }
    };
    let rendered = match replay(&text, session, format) {
        Ok(Replay { text, warning }) => {
            if let Some(warning) = warning {
                eprintln!("gatehouse replay: warning: {warning}");
            }
            text
        }
        Err(error) => {
            eprintln!("gatehouse replay: {error}");
            return ExitCode::from(1);
        }
    };
    match parsed.option("--output") {
        Some(output) => {
            if let Err(error) = std::fs::write(output, rendered) {
                eprintln!("gatehouse replay: cannot write {output}: {error}");
                return ExitCode::from(2);
            }
        }
        None => print!("{rendered}"),
    }
    ExitCode::SUCCESS
}

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Asciicast,
    Text,
}

/// A rendered session and whether its records hold together.
#[derive(Debug)]
pub struct Replay {
    pub text: String,
    pub warning: Option<String>,
}

/// Renders session `id` of the log `text`.
pub fn replay(text: &str, id: &str, format: Format) -> Result<Replay, String> {
    let mut sessions = sessions(text);
    let id = match id {
        "last" => sessions
            .iter()
            .filter_map(|(id, session)| {
                let start = session.first("k8s.exec.session_start")?;
                Some((start.get("time")?.as_str()?.to_owned(), id.clone()))
            })
            .max()
            .map(|(_, id)| id)
            .ok_or("no exec session in the log")?,
        id => id.to_owned(),
    };
    let id = id.as_str();
    if let Some(session) = sessions.remove(id) {
        let warning = session
            .verify()
            .map(|problem| format!("session {id}: {problem}"));
        let text = match format {
            Format::Asciicast => exec_asciicast(&session),
            Format::Text => exec_transcript(&session),
        };
        return Ok(Replay { text, warning });
    }
    let statements = postgres_session(text, id);
    if statements.is_empty() {
        return Err(format!(
            "no exec session or Postgres connection {id} in the log"
        ));
    }
    let refs: Vec<&Value> = statements.iter().collect();
    let lines = postgres_transcript(&refs);
    let text = match format {
        Format::Text => lines.iter().map(|line| format!("{line}\n")).collect(),
        Format::Asciicast => postgres_asciicast(&refs, &lines),
    };
    Ok(Replay {
        text,
        warning: None,
    })
}

/// A session's terminal size: its first resize, else 80x24.
fn terminal_size(events: &[Event]) -> (u64, u64) {
    events
        .iter()
        .filter(|event| event.code == "r")
        .find_map(|event| {
            let (width, height) = event.data.split_once('x')?;
            let size = (width.parse().ok()?, height.parse().ok()?);
            (size.0 > 0 && size.1 > 0).then_some(size)
        })
        .unwrap_or(DEFAULT_SIZE)
}

fn seconds(offset_us: u64) -> f64 {
    offset_us as f64 / 1_000_000.0
}

/// A session's title: `kubectl exec dev/web-0 -- sh (developer)`.
fn title(start: &Value) -> String {
    let s = |key: &str| start.get(key).and_then(Value::as_str).unwrap_or_default();
    let command: Vec<&str> = start
        .get("command")
        .and_then(Value::as_array)
        .map(|argv| argv.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut title = format!(
        "kubectl {} {}/{}",
        s("subresource"),
        s("namespace"),
        s("pod")
    );
    if let Some(container) = start.get("container").and_then(Value::as_str) {
        title.push_str(&format!(" -c {container}"));
    }
    if !command.is_empty() {
        title.push_str(&format!(" -- {}", command.join(" ")));
    }
    title.push_str(&format!(" ({})", s("user")));
    title
}

/// asciicast v2: a header line, then `[seconds, code, data]` lines.
fn exec_asciicast(session: &SessionRecords) -> String {
    let events = session.events();
    let (width, height) = terminal_size(&events);
    let start = session
        .first("k8s.exec.session_start")
        .cloned()
        .unwrap_or_default();
    let end = session.first("k8s.exec.session_end");
    let mut header = json!({
        "version": 2,
        "width": width,
        "height": height,
        "title": title(&start),
        "env": {"TERM": "xterm-256color", "SHELL": "/bin/sh"},
    });
    if let Some(timestamp) = start
        .get("time")
        .and_then(Value::as_str)
        .and_then(unix_seconds)
    {
        set(&mut header, "timestamp", json!(timestamp));
    }
    if let Some(duration) = end
        .and_then(|end| end.get("duration_us"))
        .and_then(Value::as_u64)
    {
        set(&mut header, "duration", json!(seconds(duration)));
    }
    let mut out = format!("{header}\n");
    for event in &events {
        let (code, data) = match event.code.as_str() {
            "o" | "e" => ("o", event.data.clone()),
            "i" => ("i", event.data.clone()),
            "r" => match event.data.split_once('x') {
                Some((width, height)) if width != "0" && height != "0" => ("r", event.data.clone()),
                _ => continue,
            },
            "m" => ("m", event.data.clone()),
            _ => continue,
        };
        out.push_str(&json!([seconds(event.offset_us), code, data]).to_string());
        out.push('\n');
    }
    out
}

fn set(object: &mut Value, key: &str, value: Value) {
    if let Some(object) = object.as_object_mut() {
        object.insert(key.to_owned(), value);
    }
}

/// The exec transcript: a header, the terminal's output as text, the
/// commands with their outcomes, and the end.
fn exec_transcript(session: &SessionRecords) -> String {
    let start = session
        .first("k8s.exec.session_start")
        .cloned()
        .unwrap_or_default();
    let s = |record: &Value, key: &str| {
        record
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut out = format!(
        "-- {} {}: {} (rule {}, {})\n",
        s(&start, "time"),
        s(&start, "session"),
        title(&start),
        s(&start, "rule"),
        s(&start, "transport"),
    );
    let mut screen = String::new();
    for event in session.events() {
        match event.code.as_str() {
            "o" | "e" => screen.push_str(&event.data),
            "m" => {
                if !screen.ends_with('\n') && !screen.is_empty() {
                    screen.push('\n');
                }
                screen.push_str(&format!("[gatehouse: {}]\n", event.data));
            }
            _ => {}
        }
    }
    out.push_str(&plain_text(&screen));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("-- commands:\n");
    for command in session.all("k8s.exec.command") {
        let mut notes = Vec::new();
        for flag in ["secret", "uncertain", "cancelled"] {
            if command.get(flag) == Some(&Value::Bool(true)) {
                notes.push(flag.to_owned());
            }
        }
        let action = s(command, "action");
        let reason = command
            .get("reason")
            .and_then(Value::as_str)
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "   [{:>8.3}s] {} {}{}{}\n",
            seconds(
                command
                    .get("offset_us")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            ),
            action,
            s(command, "line"),
            if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join(", "))
            },
            reason,
        ));
    }
    if let Some(end) = session.first("k8s.exec.session_end") {
        let exit = end
            .get("exit_code")
            .map(|code| format!(", exit code {code}"))
            .unwrap_or_default();
        let truncated = if end.get("truncated") == Some(&Value::Bool(true)) {
            ", recording truncated"
        } else {
            ""
        };
        out.push_str(&format!(
            "-- {} end ({}{exit}{truncated}): {} commands, {} refused, {} bytes in, {} out\n",
            s(end, "time"),
            s(end, "reason"),
            end.get("commands").and_then(Value::as_u64).unwrap_or(0),
            end.get("denied").and_then(Value::as_u64).unwrap_or(0),
            end.get("stdin_bytes").and_then(Value::as_u64).unwrap_or(0),
            end.get("stdout_bytes").and_then(Value::as_u64).unwrap_or(0)
                + end.get("stderr_bytes").and_then(Value::as_u64).unwrap_or(0),
        ));
    }
    out
}

/// Terminal output as plain text: CR LF and lone CRs become line ends,
/// backspace erases, escape sequences go.
fn plain_text(screen: &str) -> String {
    let mut out = String::with_capacity(screen.len());
    let mut chars = screen.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() != Some(&'\n') && !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            '\u{8}' => {
                out.pop();
            }
            '\u{1b}' => {
                // CSI: ESC [ … final byte; otherwise ESC and one character.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// `2026-11-22T00:48:08.123456Z` as unix seconds.
fn unix_seconds(time: &str) -> Option<i64> {
    let date = time.get(..10)?;
    let clock = time.get(11..19)?;
    let mut parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (parts.next()??, parts.next()??, parts.next()??);
    let mut parts = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (parts.next()??, parts.next()??, parts.next()??);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// The Postgres records of connection `id`.
fn postgres_session(text: &str, id: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| line.contains("\"pg."))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|record| {
            let is_pg = record
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.starts_with("pg.") && t != "pg.connection");
            let connection = match record.get("connection_id") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            is_pg && connection == id
        })
        .collect()
}

/// A psql-like transcript of a Postgres session's records: each statement
/// with its outcome (tag and rows, or the error), what masking replaced,
/// and the decision.
pub fn postgres_transcript(records: &[&Value]) -> Vec<String> {
    let mut out = Vec::new();
    for r in records {
        let s = |k: &str| {
            r.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match r.get("type").and_then(Value::as_str).unwrap_or_default() {
            "pg.session_start" => out.push(format!(
                "-- {} session {} start: user {} database {} from {}",
                s("time"),
                r.get("connection_id").map(Value::to_string).unwrap_or_default(),
                s("user"),
                s("database"),
                s("client_address")
            )),
            "pg.statement" => {
                let decision = r.get("decision").cloned().unwrap_or_default();
                let mut verdict = decision
                    .get("action")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned();
                if let Some(rule) = decision.get("rule").and_then(Value::as_str) {
                    verdict.push_str(&format!(" by rule {rule}"));
                }
                out.push(format!(
                    "{}=> {};",
                    s("database"),
                    r.get("statement")
                        .and_then(Value::as_str)
                        .unwrap_or("<unknown statement>")
                ));
                let mut result = match (r.get("error"), r.get("command_tag").and_then(Value::as_str)) {
                    (Some(Value::Object(e)), _) => format!(
                        "{}: {} ({})",
                        e.get("severity").and_then(Value::as_str).unwrap_or("ERROR"),
                        e.get("message").and_then(Value::as_str).unwrap_or(""),
                        e.get("sqlstate").and_then(Value::as_str).unwrap_or("")
                    ),
                    (_, Some(tag)) => tag.to_owned(),
                    _ => String::new(),
                };
                if let Some(rows) = r.get("rows").and_then(Value::as_u64) {
                    result.push_str(&format!(" [{rows} rows]"));
                }
                if let Some(masking) = r.get("masking") {
                    result.push_str(&format!(" [{}]", masking_summary(masking)));
                }
                out.push(format!(
                    "   {}  -- #{} {verdict}, {} us",
                    result.trim_start(),
                    r.get("sequence").map(Value::to_string).unwrap_or_default(),
                    r.get("duration_us").map(Value::to_string).unwrap_or_default()
                ));
            }
            "pg.session_end" => out.push(format!(
                "-- {} session end ({}): {} statements, {} errors, {} denied, {} masked, last sequence {}",
                s("time"),
                s("reason"),
                r.get("statements").map(Value::to_string).unwrap_or_default(),
                r.get("errors").map(Value::to_string).unwrap_or_default(),
                r.get("denied").map(Value::to_string).unwrap_or_else(|| "0".into()),
                r.get("masked").map(Value::to_string).unwrap_or_else(|| "0".into()),
                r.get("last_sequence").map(Value::to_string).unwrap_or_default()
            )),
            _ => {}
        }
    }
    out
}

/// `3 masked: customer-ssn 2, email 1` (or `would be masked` when exempt).
fn masking_summary(masking: &Value) -> String {
    let mut parts = Vec::new();
    let mut total = 0;
    for group in ["rules", "detectors"] {
        if let Some(counts) = masking.get(group).and_then(Value::as_object) {
            for (name, n) in counts {
                let n = n.as_u64().unwrap_or(0);
                total += n;
                parts.push(format!("{name} {n}"));
            }
        }
    }
    if let Some(over) = masking.get("over_cap").and_then(Value::as_u64) {
        total += over;
        parts.push(format!("over cap {over}"));
    }
    let verb = if masking.get("exempt") == Some(&Value::Bool(true)) {
        "would be masked (exempt)"
    } else {
        "masked"
    };
    format!("{total} {verb}: {}", parts.join(", "))
}

/// A Postgres transcript as asciicast: each line shown when its record happened.
fn postgres_asciicast(records: &[&Value], lines: &[String]) -> String {
    let times: Vec<Option<i64>> = records
        .iter()
        .map(|r| r.get("time").and_then(Value::as_str).and_then(unix_micros))
        .collect();
    let start = times.iter().flatten().copied().min().unwrap_or(0);
    let header = json!({"version": 2, "width": 120, "height": 30, "timestamp": start / 1_000_000, "title": "Postgres session"});
    let mut out = format!("{header}\n");
    let mut line_index = 0;
    for (record, time) in records.iter().zip(&times) {
        let count = match record.get("type").and_then(Value::as_str) {
            Some("pg.statement") => 2,
            Some("pg.session_start" | "pg.session_end") => 1,
            _ => 0,
        };
        let at = time.map_or(0.0, |t| (t - start) as f64 / 1_000_000.0);
        for line in lines
            .get(line_index..line_index + count)
            .unwrap_or_default()
        {
            out.push_str(&json!([at, "o", format!("{line}\r\n")]).to_string());
            out.push('\n');
        }
        line_index += count;
    }
    out
}

fn unix_micros(time: &str) -> Option<i64> {
    let seconds = unix_seconds(time)?;
    let micros: i64 = time.get(20..26).and_then(|m| m.parse().ok()).unwrap_or(0);
    Some(seconds * 1_000_000 + micros)
}
