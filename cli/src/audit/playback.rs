//! Playing a session back: a recorded exec or attach session as asciicast
//! v2 (which `asciinema play` and `asciinema cat` read) or as a transcript
//! (the terminal's output as plain text, then the typed commands with their
//! outcome), and any transcript's lines as asciicast, each shown when its
//! record was written.

use super::recording::{Event, SessionRecords};
use serde_json::{Value, json};

/// The terminal size when the session never said.
const DEFAULT_SIZE: (u64, u64) = (80, 24);

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
pub fn exec_asciicast(session: &SessionRecords<'_>) -> String {
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
pub fn exec_transcript(session: &SessionRecords<'_>) -> String {
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

/// Lines of a transcript as asciicast, each shown at the time (RFC 3339)
/// of the record it came from, counted from the first.
pub fn lines_asciicast(title: &str, lines: &[(Option<String>, String)]) -> String {
    let times: Vec<Option<i64>> = lines
        .iter()
        .map(|(time, _)| time.as_deref().and_then(unix_micros))
        .collect();
    let start = times.iter().flatten().copied().min().unwrap_or(0);
    let header = json!({
        "version": 2,
        "width": 120,
        "height": 30,
        "timestamp": start / 1_000_000,
        "title": title,
    });
    let mut out = format!("{header}\n");
    let mut at = 0.0;
    for ((_, line), time) in lines.iter().zip(&times) {
        if let Some(time) = time {
            at = (time - start) as f64 / 1_000_000.0;
        }
        out.push_str(&json!([at, "o", format!("{line}\r\n")]).to_string());
        out.push('\n');
    }
    out
}

fn unix_micros(time: &str) -> Option<i64> {
    let seconds = unix_seconds(time)?;
    let micros: i64 = time.get(20..26).and_then(|m| m.parse().ok()).unwrap_or(0);
    Some(seconds * 1_000_000 + micros)
}
