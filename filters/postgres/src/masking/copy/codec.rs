//! Row codecs: COPY rows in text, CSV and binary format read into fields and
//! written again with some fields replaced.

use super::{CopyFormat, CopyOptions};
use gatehouse_core::mask::Masked;
use std::borrow::Cow;

/// The binary COPY signature that starts the first CopyData.
pub(super) const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Where the header line ends (just past its newline).
pub fn header_line_end(options: &CopyOptions, data: &[u8]) -> Result<usize, MalformedRows> {
    match options.format {
        CopyFormat::Csv => split_csv_row(options, data, 0).map(|(_, end)| end + 1),
        _ => data
            .iter()
            .position(|&b| b == b'\n')
            .map(|end| end + 1)
            .ok_or(MalformedRows),
    }
}
/// Puts a rewritten row (`data[start..end]`) into the message being rebuilt.
fn splice_row(
    out: &mut Option<Vec<u8>>,
    data: &[u8],
    start: usize,
    end: usize,
    row: Option<Vec<u8>>,
) {
    match (row, out.as_mut()) {
        (None, None) => {}
        (Some(row), None) => {
            let mut started = Vec::with_capacity(data.len() + 16);
            started.extend_from_slice(data.get(..start).unwrap_or_default());
            started.extend_from_slice(&row);
            started.push(b'\n');
            *out = Some(started);
        }
        (row, Some(out)) => {
            out.extend_from_slice(
                row.as_deref()
                    .unwrap_or(data.get(start..end).unwrap_or_default()),
            );
            out.push(b'\n');
        }
    }
}

/// A text-format field's value: backslash escapes decoded as the server does.
pub fn unescape_text(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&c) = raw.get(i) else {
            out.push(b'\\');
            break;
        };
        i += 1;
        match c {
            b'0'..=b'7' => {
                let mut value = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((value & 0xff) as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut value = 0u8;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            value = value.wrapping_mul(16).wrapping_add(d as u8);
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(value);
            }
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            other => out.push(other),
        }
    }
    Cow::Owned(out)
}

/// A value written as a text-format field.
pub fn escape_text(value: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0b => out.extend_from_slice(b"\\v"),
            b if b == delimiter => out.extend_from_slice(&[b'\\', b]),
            b => out.push(b),
        }
    }
}

/// One CSV field of a row: its raw bytes, its value and whether it was quoted.
pub(super) struct CsvField<'a> {
    pub(super) raw: &'a [u8],
    pub(super) value: Cow<'a, [u8]>,
    pub(super) quoted: bool,
}
/// Splits the CSV row starting at `start`; returns its fields and the index
/// of its ending newline.
pub(super) fn split_csv_row<'a>(
    options: &CopyOptions,
    data: &'a [u8],
    start: usize,
) -> Result<(Vec<CsvField<'a>>, usize), MalformedRows> {
    let mut fields = Vec::new();
    let mut field_start = start;
    let mut value: Vec<u8> = Vec::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut i = start;
    loop {
        let Some(&b) = data.get(i) else {
            // A row always ends with a newline.
            return Err(MalformedRows);
        };
        if in_quotes {
            if b == options.escape
                && data
                    .get(i + 1)
                    .is_some_and(|&n| n == options.quote || n == options.escape)
            {
                value.push(data.get(i + 1).copied().unwrap_or(b));
                i += 2;
                continue;
            }
            if b == options.quote {
                in_quotes = false;
            } else {
                value.push(b);
            }
            i += 1;
            continue;
        }
        if b == options.delimiter || b == b'\n' {
            let raw = data.get(field_start..i).ok_or(MalformedRows)?;
            let field_value = if quoted {
                Cow::Owned(std::mem::take(&mut value))
            } else {
                Cow::Borrowed(raw)
            };
            fields.push(CsvField {
                raw,
                value: field_value,
                quoted,
            });
            quoted = false;
            value = Vec::new();
            if b == b'\n' {
                return Ok((fields, i));
            }
            field_start = i + 1;
        } else if b == options.quote {
            if !quoted {
                // What came before the quote is part of the value.
                value.extend_from_slice(data.get(field_start..i).unwrap_or_default());
            }
            quoted = true;
            in_quotes = true;
        } else if quoted {
            value.push(b);
        }
        i += 1;
    }
}

pub(super) fn quote_csv(value: &[u8], options: &CopyOptions, out: &mut Vec<u8>) {
    out.push(options.quote);
    for &b in value {
        if b == options.quote || b == options.escape {
            out.push(options.escape);
        }
        out.push(b);
    }
    out.push(options.quote);
}
/// Puts a rewritten tuple (`data[start..end]`) into the message being rebuilt.
fn splice_tuple(
    out: &mut Option<Vec<u8>>,
    data: &[u8],
    start: usize,
    end: usize,
    tuple: Option<Vec<u8>>,
) {
    match (tuple, out.as_mut()) {
        (None, None) => {}
        (Some(tuple), None) => {
            let mut started = Vec::with_capacity(data.len() + 16);
            started.extend_from_slice(data.get(..start).unwrap_or_default());
            started.extend_from_slice(&tuple);
            *out = Some(started);
        }
        (tuple, Some(out)) => out.extend_from_slice(
            tuple
                .as_deref()
                .unwrap_or(data.get(start..end).unwrap_or_default()),
        ),
    }
}

/// Rows that do not follow their format (a row without its newline, a
/// binary tuple cut short): the caller stars the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("COPY rows that do not follow their format")]
pub struct MalformedRows;

/// What becomes of one non-NULL field's value.
#[derive(Debug, PartialEq, Eq)]
pub enum FieldEdit {
    /// The field as it was sent.
    Keep,
    /// The field becomes NULL.
    Null,
    /// The field holds this value instead.
    Value(Vec<u8>),
}

impl From<Masked<'_>> for FieldEdit {
    fn from(masked: Masked<'_>) -> Self {
        match masked {
            Masked::Value(Cow::Borrowed(_)) => FieldEdit::Keep,
            Masked::Value(Cow::Owned(value)) => FieldEdit::Value(value),
            Masked::Null => FieldEdit::Null,
        }
    }
}

/// Text-format rows: fields split at unescaped delimiters, the NULL marker
/// compared raw, values unescaped, edited by `edit(column, value)` and
/// escaped again. `None` when every field is kept.
pub fn rewrite_text_rows(
    options: &CopyOptions,
    data: &[u8],
    mut edit: impl FnMut(usize, &[u8]) -> FieldEdit,
) -> Result<Option<Vec<u8>>, MalformedRows> {
    let mut out: Option<Vec<u8>> = None;
    let mut at = 0;
    while at < data.len() {
        let end = data
            .get(at..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
            .map(|i| at + i)
            .ok_or(MalformedRows)?;
        let row = data.get(at..end).ok_or(MalformedRows)?;
        let mut fields = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < row.len() {
            match row.get(i) {
                Some(b'\\') => i += 2,
                Some(b) if *b == options.delimiter => {
                    fields.push(row.get(start..i).ok_or(MalformedRows)?);
                    i += 1;
                    start = i;
                }
                _ => i += 1,
            }
        }
        fields.push(row.get(start..).unwrap_or_default());
        let mut rebuilt: Option<Vec<u8>> = None;
        for (column, raw) in fields.iter().enumerate() {
            let edited = if *raw == options.null.as_slice() {
                FieldEdit::Keep
            } else {
                edit(column, &unescape_text(raw))
            };
            if edited != FieldEdit::Keep && rebuilt.is_none() {
                let mut started = Vec::with_capacity(row.len() + 16);
                for (k, earlier) in fields.iter().take(column).enumerate() {
                    if k > 0 {
                        started.push(options.delimiter);
                    }
                    started.extend_from_slice(earlier);
                }
                rebuilt = Some(started);
            }
            if let Some(rebuilt) = rebuilt.as_mut() {
                if column > 0 {
                    rebuilt.push(options.delimiter);
                }
                match edited {
                    FieldEdit::Keep => rebuilt.extend_from_slice(raw),
                    FieldEdit::Null => rebuilt.extend_from_slice(&options.null),
                    FieldEdit::Value(value) => escape_text(&value, options.delimiter, rebuilt),
                }
            }
        }
        splice_row(&mut out, data, at, end, rebuilt);
        at = end + 1;
    }
    Ok(out)
}

/// CSV rows: quoted fields may hold delimiters and newlines; an unquoted
/// field equal to the NULL string is NULL. Edited values are written quoted.
pub fn rewrite_csv_rows(
    options: &CopyOptions,
    data: &[u8],
    mut edit: impl FnMut(usize, &[u8]) -> FieldEdit,
) -> Result<Option<Vec<u8>>, MalformedRows> {
    let mut out: Option<Vec<u8>> = None;
    let mut at = 0;
    while at < data.len() {
        let (fields, end) = split_csv_row(options, data, at)?;
        let mut rebuilt: Option<Vec<u8>> = None;
        for (column, field) in fields.iter().enumerate() {
            let edited = if !field.quoted && field.raw == options.null.as_slice() {
                FieldEdit::Keep
            } else {
                edit(column, &field.value)
            };
            if edited != FieldEdit::Keep && rebuilt.is_none() {
                let mut started = Vec::with_capacity(end - at + 16);
                for (k, earlier) in fields.iter().take(column).enumerate() {
                    if k > 0 {
                        started.push(options.delimiter);
                    }
                    started.extend_from_slice(earlier.raw);
                }
                rebuilt = Some(started);
            }
            if let Some(rebuilt) = rebuilt.as_mut() {
                if column > 0 {
                    rebuilt.push(options.delimiter);
                }
                match edited {
                    FieldEdit::Keep => rebuilt.extend_from_slice(field.raw),
                    FieldEdit::Null => rebuilt.extend_from_slice(&options.null),
                    FieldEdit::Value(value) => quote_csv(&value, options, rebuilt),
                }
            }
        }
        splice_row(&mut out, data, at, end, rebuilt);
        at = end + 1;
    }
    Ok(out)
}

/// Binary rows: the header (when `header_pending`, the first message), then
/// tuples of a field count and length-prefixed values, then the trailer (-1).
pub fn rewrite_binary(
    data: &[u8],
    header_pending: bool,
    mut edit: impl FnMut(usize, &[u8]) -> FieldEdit,
) -> Result<Option<Vec<u8>>, MalformedRows> {
    let read_i32 = |at: usize| -> Result<i32, MalformedRows> {
        data.get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(i32::from_be_bytes)
            .ok_or(MalformedRows)
    };
    let mut at = 0;
    if header_pending {
        if data.get(..BINARY_SIGNATURE.len()) != Some(BINARY_SIGNATURE.as_slice()) {
            return Err(MalformedRows);
        }
        let extension =
            usize::try_from(read_i32(BINARY_SIGNATURE.len() + 4)?).map_err(|_| MalformedRows)?;
        at = (BINARY_SIGNATURE.len() + 8)
            .checked_add(extension)
            .filter(|end| *end <= data.len())
            .ok_or(MalformedRows)?;
    }
    let mut out: Option<Vec<u8>> = None;
    while at < data.len() {
        let count = data
            .get(at..at + 2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(i16::from_be_bytes)
            .ok_or(MalformedRows)?;
        if count == -1 {
            // The trailer ends the data.
            if at + 2 != data.len() {
                return Err(MalformedRows);
            }
            if let Some(out) = out.as_mut() {
                out.extend_from_slice(&count.to_be_bytes());
            }
            break;
        }
        let count = usize::try_from(count).map_err(|_| MalformedRows)?;
        let tuple_start = at;
        at += 2;
        let mut rebuilt: Option<Vec<u8>> = None;
        for column in 0..count {
            let len = read_i32(at)?;
            at += 4;
            let Ok(len) = usize::try_from(len) else {
                if let Some(rebuilt) = rebuilt.as_mut() {
                    rebuilt.extend_from_slice(&(-1i32).to_be_bytes());
                }
                continue;
            };
            let value_start = at;
            let value = data
                .get(at..at.checked_add(len).ok_or(MalformedRows)?)
                .ok_or(MalformedRows)?;
            at += len;
            let edited = edit(column, value);
            if edited != FieldEdit::Keep && rebuilt.is_none() {
                let mut started = Vec::with_capacity(at - tuple_start + 16);
                started
                    .extend_from_slice(data.get(tuple_start..value_start - 4).unwrap_or_default());
                rebuilt = Some(started);
            }
            if let Some(rebuilt) = rebuilt.as_mut() {
                let bytes = match &edited {
                    FieldEdit::Keep => Some(value),
                    FieldEdit::Null => None,
                    FieldEdit::Value(bytes) => Some(bytes.as_slice()),
                };
                match bytes {
                    None => rebuilt.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(bytes) => {
                        let len = i32::try_from(bytes.len()).map_err(|_| MalformedRows)?;
                        rebuilt.extend_from_slice(&len.to_be_bytes());
                        rebuilt.extend_from_slice(bytes);
                    }
                }
            }
        }
        splice_tuple(&mut out, data, tuple_start, at, rebuilt);
    }
    Ok(out)
}
