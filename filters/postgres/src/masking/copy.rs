//! Column rules on COPY TO STDOUT rows.
//!
//! CopyOutResponse carries only formats, not the columns, so the masker learns
//! them the way a client would: when a simple Query's first statement is a
//! `COPY … TO STDOUT`, the session sends, ahead of it, a Parse (unnamed) +
//! Describe + Sync of the equivalent query, `SELECT "col", … FROM table` (or
//! `SELECT * FROM table`) for a table, or the inner query of `COPY (query)`,
//! taken from the client's own text. Its answers are consumed here, never seen
//! by the client; the RowDescription gives table OIDs and attribute numbers,
//! hence the same [`RowPlan`] a DataRow of that query would get.
//!
//! In the extended protocol the same describe goes, with a statement of its
//! own that it closes again, ahead of the Parse of a COPY that starts a batch
//! outside a transaction block, and ahead of each Bind of a named COPY
//! statement that starts one (so a statement prepared long before is
//! described afresh when it runs); portals carry the description of their
//! statement to the Execute.
//!
//! Why that is invisible to the client:
//! - A simple Query destroys the unnamed statement anyway (the extended
//!   protocol's describe uses a named one), and Sync outside a transaction
//!   block only ends the implicit transaction Parse opened.
//! - It is sent only when the server is idle between requests (never inside
//!   an extended-protocol batch) and not in a failed transaction.
//! - Parse checks no privileges and runs nothing; the equivalent query fails
//!   to parse only when the COPY itself fails (same name resolution: column
//!   names are quoted after the server's case folding). Inside a transaction
//!   block such a failure aborts the transaction, as the COPY's own error would
//!   have: the client then gets the answer `25P02 current transaction is
//!   aborted`, which the masker replaces by the saved error of the equivalent
//!   query (without its position), the error the COPY would have returned.
//!
//! Rows are then parsed with the statement's options (FORMAT, DELIMITER,
//! QUOTE, ESCAPE, NULL, HEADER; the header line passes), every value masked as
//! in a DataRow ([`values::mask_value`], text format for text and CSV, binary
//! for binary) and the row re-encoded: text values re-escaped, CSV values
//! quoted, binary lengths recomputed.
//!
//! When the policy has column rules and the columns are not known (the COPY
//! is not its Query's first statement, is parsed inside an extended-protocol
//! batch, the description failed or does not match the COPY's column count,
//! the session is in shadow mode), the safe side is taken: every value of the
//! row becomes NULL, counted as over the cap. When even the options are
//! unknown (a portal the masker did not see bound, or options neither
//! sqlparser nor the old-syntax reader understands), text rows are starred
//! whole except tabs, newlines and backslash escapes. A row that cannot be
//! parsed is starred whole. Without column rules rows go through the
//! detectors as before. The describe is one more round trip per COPY.

use super::values::{self, ColumnPlan, Field, RowPlan, ValueCounts};
use super::{Expect, MaskAction, SessionMasker, stream};
use crate::protocol::{BackendMessage, CopyResponse, FrontendMessage};
use crate::sql::lexer::{self, Token, TokenKind};
use gatehouse_core::mask::{DetectorCounts, Masked};
use sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

/// COPY statements tracked per Query; later ones are treated as unknown.
const MAX_COPIES_PER_QUERY: usize = 64;
/// Prepared COPY statements tracked per session; later ones are unknown.
const MAX_PREPARED_COPIES: usize = 1_000;
/// The statement the extended-protocol describe prepares (and closes): named,
/// so the client's unnamed statement is left alone.
const DESCRIBE_STATEMENT: &[u8] = b"gatehouse_copy_describe";
/// Query texts longer than this are not examined for COPY statements.
const MAX_COPY_SQL_LEN: usize = 256 * 1024;
/// The binary COPY signature that starts the first CopyData.
const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// A COPY's row format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv,
    Binary,
}

/// The options that decide how a COPY row is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    pub format: CopyFormat,
    pub delimiter: u8,
    pub quote: u8,
    pub escape: u8,
    /// The NULL marker (text and CSV).
    pub null: Vec<u8>,
    /// A header line comes first (text and CSV).
    pub header: bool,
}

impl CopyOptions {
    /// The server's defaults for a format.
    pub fn defaults(format: CopyFormat) -> Self {
        let csv = format == CopyFormat::Csv;
        Self {
            format,
            delimiter: if csv { b',' } else { b'\t' },
            quote: b'"',
            escape: b'"',
            null: if csv { Vec::new() } else { b"\\N".to_vec() },
            header: false,
        }
    }
}

/// One `COPY … TO STDOUT` of a Query, in the order the server runs them.
#[derive(Debug, Clone, Default)]
pub struct CopyStatement {
    /// `None` when they could not be read.
    pub options: Option<CopyOptions>,
    /// The equivalent query whose description gives the columns (only for a
    /// Query's first statement: later ones may run after a statement that
    /// changes what the names resolve to).
    pub describe_sql: Option<String>,
    /// The description, once the server answered it (the latest, for a
    /// prepared statement described at each Bind).
    pub fields: DescribedFields,
}

/// A COPY's description, shared by a prepared statement and its portals.
pub type DescribedFields = Rc<RefCell<Option<Rc<Vec<Field>>>>>;

/// The `COPY … TO STDOUT` statements of a Query text as the server lexes it
/// under `settings`, in order (at most [`MAX_COPIES_PER_QUERY`]).
pub fn copy_statements(sql: &[u8], settings: lexer::Settings) -> VecDeque<CopyStatement> {
    let mut out = VecDeque::new();
    let Ok(sql) = std::str::from_utf8(sql) else {
        return out;
    };
    if sql.len() > MAX_COPY_SQL_LEN || !contains_word_copy(sql) {
        return out;
    }
    let lexed = lexer::tokenize_with(sql, settings);
    for (index, tokens) in lexed.statement_tokens().enumerate() {
        if out.len() >= MAX_COPIES_PER_QUERY {
            break;
        }
        if !tokens
            .first()
            .is_some_and(|t| lexer::is_word(sql, t, "copy"))
        {
            continue;
        }
        match parse_copy(sql, tokens) {
            Some(Parsed::ToStdout {
                options,
                describe_sql,
            }) => out.push_back(CopyStatement {
                options,
                describe_sql: describe_sql.filter(|_| index == 0 && lexed.error.is_none()),
                fields: DescribedFields::default(),
            }),
            Some(Parsed::Other) => {}
            // Unreadable: if it may write to the client, it is one of them.
            None if tokens.iter().any(|t| lexer::is_word(sql, t, "stdout")) => {
                out.push_back(CopyStatement::default())
            }
            None => {}
        }
    }
    out
}

/// A cheap test before tokenizing: most Queries are not COPY.
fn contains_word_copy(sql: &str) -> bool {
    sql.as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"copy"))
}

enum Parsed {
    ToStdout {
        options: Option<CopyOptions>,
        describe_sql: Option<String>,
    },
    /// COPY FROM, or TO a file or program: no rows for the client.
    Other,
}

/// Reads one COPY statement's tokens (the first is `COPY`).
fn parse_copy(sql: &str, tokens: &[Token]) -> Option<Parsed> {
    let word = |i: usize, w: &str| tokens.get(i).is_some_and(|t| lexer::is_word(sql, t, w));
    let punct = |i: usize, c: &str| {
        tokens
            .get(i)
            .is_some_and(|t| t.kind == TokenKind::Punct && lexer::text(sql, t) == c)
    };
    let (describe_sql, after_source) = if punct(1, "(") {
        let close = matching_paren(sql, tokens, 1)?;
        let first = tokens.get(2)?;
        let last = tokens.get(close.checked_sub(1)?)?;
        let inner = sql.get(first.span.start..last.span.end)?;
        (inner.to_string(), close + 1)
    } else {
        // `name ( . name )*`; anything else (the old `COPY BINARY t` form,
        // for one) is left undescribed.
        let mut i = 1;
        let mut table = String::new();
        let mut expect_name = true;
        while let Some(t) = tokens.get(i) {
            match t.kind {
                TokenKind::Word if word(i, "to") || word(i, "from") => break,
                TokenKind::Word if expect_name => table.push_str(&quote_ident(sql, t)?),
                TokenKind::QuotedIdent if expect_name => table.push_str(lexer::text(sql, t)),
                TokenKind::Punct if !expect_name && lexer::text(sql, t) == "." => table.push('.'),
                TokenKind::Punct if !expect_name && lexer::text(sql, t) == "(" => break,
                _ => return None,
            }
            expect_name = !expect_name;
            i += 1;
        }
        if table.is_empty() || expect_name {
            return None;
        }
        let mut columns = Vec::new();
        if punct(i, "(") {
            let close = matching_paren(sql, tokens, i)?;
            for (k, t) in tokens.get(i + 1..close)?.iter().enumerate() {
                match (k % 2, t.kind) {
                    (0, TokenKind::Word) => columns.push(quote_ident(sql, t)?),
                    (0, TokenKind::QuotedIdent) => columns.push(lexer::text(sql, t).to_string()),
                    (1, TokenKind::Punct) if lexer::text(sql, t) == "," => {}
                    _ => return None,
                }
            }
            i = close + 1;
        }
        let columns = if columns.is_empty() {
            "*".to_string()
        } else {
            columns.join(", ")
        };
        (format!("SELECT {columns} FROM {table}"), i)
    };
    if !word(after_source, "to") {
        return Some(Parsed::Other);
    }
    if !word(after_source + 1, "stdout") {
        return Some(Parsed::Other);
    }
    // The options alone, through sqlparser (which need not understand the
    // source query): `COPY x TO STDOUT <the client's options>`.
    let rest = match (tokens.get(after_source + 2), tokens.last()) {
        (Some(first), Some(last)) => sql.get(first.span.start..last.span.end)?,
        _ => "",
    };
    let options = parse_options(&format!("COPY x TO STDOUT {rest}"))
        .or_else(|| parse_legacy_options(sql, tokens.get(after_source + 2..)?));
    Some(Parsed::ToStdout {
        options,
        describe_sql: Some(describe_sql),
    })
}

/// The index of the `)` closing the `(` at `open`.
fn matching_paren(sql: &str, tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        if t.kind != TokenKind::Punct {
            continue;
        }
        match lexer::text(sql, t) {
            "(" => depth += 1,
            ")" => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// An unquoted identifier as the server folds it, quoted so that it cannot
/// mean anything else in a target list (`user`, `current_date`).
fn quote_ident(sql: &str, token: &Token) -> Option<String> {
    let text = lexer::text(sql, token);
    if text.contains('"') {
        return None;
    }
    Some(format!("\"{}\"", text.to_ascii_lowercase()))
}

/// The options of `COPY x TO STDOUT …`; `None` when any is not understood.
fn parse_options(statement: &str) -> Option<CopyOptions> {
    let statements = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(16)
        .try_with_sql(statement)
        .ok()?
        .parse_statements()
        .ok()?;
    let [
        Statement::Copy {
            source: CopySource::Table { .. },
            to: true,
            target: CopyTarget::Stdout,
            options,
            legacy_options,
            ..
        },
    ] = statements.as_slice()
    else {
        return None;
    };
    let mut format = CopyFormat::Text;
    for option in options {
        if let CopyOption::Format(name) = option {
            format = match name.value.to_ascii_lowercase().as_str() {
                "text" => CopyFormat::Text,
                "csv" => CopyFormat::Csv,
                "binary" => CopyFormat::Binary,
                _ => return None,
            };
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Binary => format = CopyFormat::Binary,
            CopyLegacyOption::Csv(_) => format = CopyFormat::Csv,
            _ => {}
        }
    }
    let mut out = CopyOptions::defaults(format);
    let mut escape = None;
    let byte = |c: &char| u8::try_from(u32::from(*c)).ok().filter(u8::is_ascii);
    for option in options {
        match option {
            CopyOption::Format(_)
            | CopyOption::Freeze(_)
            | CopyOption::ForceQuote(_)
            | CopyOption::ForceNotNull(_)
            | CopyOption::ForceNull(_)
            | CopyOption::Encoding(_) => {}
            CopyOption::Delimiter(c) => out.delimiter = byte(c)?,
            CopyOption::Null(s) => out.null = s.as_bytes().to_vec(),
            CopyOption::Header(h) => out.header = *h,
            CopyOption::Quote(c) => out.quote = byte(c)?,
            CopyOption::Escape(c) => escape = Some(byte(c)?),
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Binary => {}
            CopyLegacyOption::Delimiter(c) => out.delimiter = byte(c)?,
            CopyLegacyOption::Null(s) => out.null = s.as_bytes().to_vec(),
            CopyLegacyOption::Csv(csv) => {
                for option in csv {
                    match option {
                        CopyLegacyCsvOption::Header => out.header = true,
                        CopyLegacyCsvOption::Quote(c) => out.quote = byte(c)?,
                        CopyLegacyCsvOption::Escape(c) => escape = Some(byte(c)?),
                        CopyLegacyCsvOption::ForceQuote(_)
                        | CopyLegacyCsvOption::ForceNotNull(_) => {}
                    }
                }
            }
            _ => return None,
        }
    }
    // ESCAPE defaults to QUOTE.
    out.escape = escape.unwrap_or(out.quote);
    Some(out)
}

/// The options of the old unparenthesized syntax, which the server takes in
/// any order (`CSV HEADER DELIMITER ';'`) and sqlparser only in one.
fn parse_legacy_options(sql: &str, tokens: &[Token]) -> Option<CopyOptions> {
    let word = |i: usize, w: &str| tokens.get(i).is_some_and(|t| lexer::is_word(sql, t, w));
    let mut format = CopyFormat::Text;
    let (mut delimiter, mut null, mut quote, mut escape, mut header) =
        (None, None, None, None, false);
    let mut i = usize::from(word(0, "with"));
    // A string constant after the option name (and an optional AS).
    let string_at = |i: &mut usize| -> Option<Vec<u8>> {
        *i += 1 + usize::from(word(*i + 1, "as"));
        let value = string_value(lexer::text(sql, tokens.get(*i)?))?;
        *i += 1;
        Some(value)
    };
    let one_byte = |value: Vec<u8>| match value.as_slice() {
        [b] if b.is_ascii() => Some(*b),
        _ => None,
    };
    while i < tokens.len() {
        if word(i, "binary") {
            format = CopyFormat::Binary;
            i += 1;
        } else if word(i, "csv") {
            format = CopyFormat::Csv;
            i += 1;
        } else if word(i, "header") {
            header = true;
            i += 1;
        } else if word(i, "freeze") {
            i += 1;
        } else if word(i, "delimiter") {
            delimiter = Some(one_byte(string_at(&mut i)?)?);
        } else if word(i, "null") {
            null = Some(string_at(&mut i)?);
        } else if word(i, "quote") {
            quote = Some(one_byte(string_at(&mut i)?)?);
        } else if word(i, "escape") {
            escape = Some(one_byte(string_at(&mut i)?)?);
        } else if word(i, "encoding") {
            string_at(&mut i)?;
        } else if word(i, "force") {
            // FORCE QUOTE / FORCE NOT NULL / FORCE NULL, then `*` or columns.
            i += 1;
            while word(i, "quote") || word(i, "not") || word(i, "null") {
                i += 1;
            }
            while let Some(t) = tokens.get(i) {
                let next_is_comma = tokens
                    .get(i + 1)
                    .is_some_and(|n| lexer::text(sql, n) == ",");
                let column = matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent)
                    || lexer::text(sql, t) == "*";
                if !column {
                    return None;
                }
                i += if next_is_comma { 2 } else { 1 };
                if !next_is_comma {
                    break;
                }
            }
        } else {
            return None;
        }
    }
    let mut out = CopyOptions::defaults(format);
    out.delimiter = delimiter.unwrap_or(out.delimiter);
    out.null = null.unwrap_or(out.null);
    out.quote = quote.unwrap_or(out.quote);
    out.escape = escape.unwrap_or(out.quote);
    out.header = header;
    Some(out)
}

/// The value of a string constant: `'…'` (quotes doubled) or `E'…'`
/// (backslash escapes); `None` for any other form.
fn string_value(text: &str) -> Option<Vec<u8>> {
    let (escaped, quoted) = match text.strip_prefix(['E', 'e']) {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let inner = quoted
        .strip_prefix('\'')?
        .strip_suffix('\'')?
        .replace("''", "'");
    if !escaped {
        return Some(inner.into_bytes());
    }
    // The escapes an option value plausibly uses; the rest mean themselves.
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next()? {
            b't' => b'\t',
            b'n' => b'\n',
            b'r' => b'\r',
            b'b' => 0x08,
            b'f' => 0x0c,
            other => other,
        });
    }
    Some(out)
}

/// The Parse + Describe + Sync that asks for a COPY's columns, with the
/// unnamed statement (ahead of a simple Query, which destroys it anyway).
pub fn describe_messages(sql: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len() + 32);
    for msg in [
        FrontendMessage::Parse {
            name: b"",
            sql: sql.as_bytes(),
            param_types: Vec::new(),
        },
        FrontendMessage::Describe {
            kind: b'S',
            name: b"",
        },
        FrontendMessage::Sync,
    ] {
        msg.encode(&mut out);
    }
    out
}

/// The same with a statement of its own, closed again (Parse + Describe +
/// Close + Sync), ahead of an extended-protocol Parse or Bind.
pub fn named_describe_messages(sql: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len() + 96);
    for msg in [
        FrontendMessage::Parse {
            name: DESCRIBE_STATEMENT,
            sql: sql.as_bytes(),
            param_types: Vec::new(),
        },
        FrontendMessage::Describe {
            kind: b'S',
            name: DESCRIBE_STATEMENT,
        },
        FrontendMessage::Close {
            kind: b'S',
            name: DESCRIBE_STATEMENT,
        },
        FrontendMessage::Sync,
    ] {
        msg.encode(&mut out);
    }
    out
}

/// How the rows of the COPY in progress are masked.
#[derive(Debug, Clone)]
pub struct CopyRows {
    binary: bool,
    mode: RowMode,
    /// The text or CSV header line, or the binary header, is still to come.
    header_pending: bool,
}

#[derive(Debug, Clone)]
enum RowMode {
    /// No column rules: the detectors run over each whole message.
    Detectors,
    /// Rows parsed with these options; values masked by the plan, or NULL
    /// without one.
    Parsed {
        options: CopyOptions,
        plan: Option<Rc<RowPlan>>,
    },
    /// Column rules, but text rows that cannot be parsed: starred whole.
    Starred,
}

/// What masking one COPY message did, for the records.
#[derive(Debug, Default)]
pub(crate) struct CopyCounts {
    pub rules: Vec<u64>,
    pub detectors: DetectorCounts,
}

impl CopyCounts {
    fn add(&mut self, counts: &ValueCounts) {
        if let Some(rule) = counts.rule {
            if self.rules.len() <= rule {
                self.rules.resize(rule + 1, 0);
            }
            if let Some(n) = self.rules.get_mut(rule) {
                *n = n.saturating_add(1);
            }
        }
        self.detectors.merge(&counts.detectors);
    }

    fn unknown_value(&mut self) {
        self.detectors.over_cap = self.detectors.over_cap.saturating_add(1);
    }
}

impl CopyRows {
    /// Whether column rules apply to these rows (streamed rows are then
    /// starred whatever the over-cap policy).
    pub fn under_rules(&self) -> bool {
        !matches!(self.mode, RowMode::Detectors)
    }

    /// A streamed message went by: whatever header it held is past.
    pub fn streamed(&mut self) {
        self.header_pending = false;
    }

    /// One CopyData's rows masked; `None` when unchanged.
    pub(crate) fn mask(
        &mut self,
        policy: &super::MaskingPolicy,
        data: &[u8],
        counts: &mut CopyCounts,
    ) -> Option<Vec<u8>> {
        let header_pending = std::mem::replace(&mut self.header_pending, false);
        match &self.mode {
            RowMode::Detectors => detectors_only(policy, self.binary, data, counts),
            RowMode::Starred => {
                counts.unknown_value();
                Some(star_keeping_shape(data))
            }
            RowMode::Parsed { options, plan } => {
                let plan = plan.as_deref().map(Vec::as_slice);
                let result = match options.format {
                    CopyFormat::Binary => mask_binary(policy, plan, data, header_pending, counts),
                    // The header line is column names: it passes.
                    _ if header_pending && options.header => header_line_end(options, data)
                        .and_then(|end| {
                            let (header, rows) = data.split_at_checked(end).ok_or(())?;
                            Ok(mask_rows(policy, options, plan, rows, counts)?
                                .map(|masked| [header, masked.as_slice()].concat()))
                        }),
                    _ => mask_rows(policy, options, plan, data, counts),
                };
                match result {
                    Ok(masked) => masked,
                    Err(()) => {
                        counts.unknown_value();
                        Some(vec![b'*'; data.len()])
                    }
                }
            }
        }
    }
}

/// The rows of a COPY: `statement` is the COPY's entry in its Query (if any),
/// `plan` the plan built from its description.
pub(crate) fn start_rows(
    has_rules: bool,
    response: &CopyResponse,
    statement: Option<&CopyStatement>,
    plan: Option<RowPlan>,
) -> CopyRows {
    let binary = response.format == 1;
    let options = statement.and_then(|s| s.options.clone());
    let mode = match options {
        _ if !has_rules => RowMode::Detectors,
        Some(options) if (options.format == CopyFormat::Binary) == binary => {
            // The description must cover exactly the COPY's columns (a table
            // with generated columns, for one, copies fewer than `*` selects).
            let plan = plan.filter(|p| p.len() == response.column_formats.len());
            RowMode::Parsed {
                options,
                plan: plan.map(Rc::new),
            }
        }
        // Binary rows describe themselves.
        _ if binary => RowMode::Parsed {
            options: CopyOptions::defaults(CopyFormat::Binary),
            plan: None,
        },
        _ => RowMode::Starred,
    };
    CopyRows {
        binary,
        mode,
        header_pending: true,
    }
}

fn detectors_only(
    policy: &super::MaskingPolicy,
    binary: bool,
    data: &[u8],
    counts: &mut CopyCounts,
) -> Option<Vec<u8>> {
    if binary {
        let (masked, found) = stream::star_findings(policy, data);
        counts.detectors.merge(&found);
        return masked;
    }
    let masked = policy.masker.mask_text(data);
    counts.detectors.merge(&masked.counts);
    match masked.value {
        Masked::Value(Cow::Borrowed(_)) => None,
        Masked::Value(Cow::Owned(v)) => Some(v),
        // A `null` style finding: the row keeps its shape with the finding
        // starred instead.
        Masked::Null => stream::star_findings(policy, data).0,
    }
}

/// Every byte starred except tabs, newlines and what follows a backslash.
pub fn star_keeping_shape(data: &[u8]) -> Vec<u8> {
    let mut after_backslash = false;
    data.iter()
        .map(|&b| {
            let keep = after_backslash || matches!(b, b'\t' | b'\n' | b'\\');
            after_backslash = b == b'\\' && !after_backslash;
            if keep { b } else { b'*' }
        })
        .collect()
}

/// One value of a row: its plan masks it, or without a plan it becomes NULL.
fn mask_one<'a>(
    policy: &super::MaskingPolicy,
    plan: Option<&[ColumnPlan]>,
    column: usize,
    binary: bool,
    value: &'a [u8],
    counts: &mut CopyCounts,
) -> Masked<'a> {
    match plan.and_then(|p| p.get(column)) {
        Some(column_plan) => {
            let column_plan = ColumnPlan {
                binary,
                ..*column_plan
            };
            let mut value_counts = ValueCounts::default();
            let masked = values::mask_value(policy, column_plan, value, &mut value_counts);
            counts.add(&value_counts);
            masked
        }
        None => {
            counts.unknown_value();
            Masked::Null
        }
    }
}

/// Text or CSV rows.
fn mask_rows(
    policy: &super::MaskingPolicy,
    options: &CopyOptions,
    plan: Option<&[ColumnPlan]>,
    data: &[u8],
    counts: &mut CopyCounts,
) -> Result<Option<Vec<u8>>, ()> {
    match options.format {
        CopyFormat::Csv => mask_csv_rows(policy, options, plan, data, counts),
        _ => mask_text_rows(policy, options, plan, data, counts),
    }
}

/// Where the header line ends (just past its newline).
fn header_line_end(options: &CopyOptions, data: &[u8]) -> Result<usize, ()> {
    match options.format {
        CopyFormat::Csv => split_csv_row(options, data, 0).map(|(_, end)| end + 1),
        _ => data
            .iter()
            .position(|&b| b == b'\n')
            .map(|end| end + 1)
            .ok_or(()),
    }
}

/// Text-format rows: fields split at unescaped delimiters, the NULL marker
/// compared raw, values unescaped, masked and escaped again.
fn mask_text_rows(
    policy: &super::MaskingPolicy,
    options: &CopyOptions,
    plan: Option<&[ColumnPlan]>,
    data: &[u8],
    counts: &mut CopyCounts,
) -> Result<Option<Vec<u8>>, ()> {
    let mut out: Option<Vec<u8>> = None;
    let mut at = 0;
    while at < data.len() {
        let end = data
            .get(at..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
            .map(|i| at + i)
            .ok_or(())?;
        let row = data.get(at..end).ok_or(())?;
        let mut fields = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < row.len() {
            match row.get(i) {
                Some(b'\\') => i += 2,
                Some(b) if *b == options.delimiter => {
                    fields.push(row.get(start..i).ok_or(())?);
                    i += 1;
                    start = i;
                }
                _ => i += 1,
            }
        }
        fields.push(row.get(start..).unwrap_or_default());
        let mut rebuilt: Option<Vec<u8>> = None;
        for (column, raw) in fields.iter().enumerate() {
            let masked = if *raw == options.null.as_slice() {
                None
            } else {
                let value = unescape_text(raw);
                match mask_one(policy, plan, column, false, &value, counts) {
                    Masked::Value(Cow::Borrowed(_)) => None,
                    Masked::Value(Cow::Owned(v)) => Some(Some(v)),
                    Masked::Null => Some(None),
                }
            };
            if masked.is_some() && rebuilt.is_none() {
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
                match masked {
                    None => rebuilt.extend_from_slice(raw),
                    Some(None) => rebuilt.extend_from_slice(&options.null),
                    Some(Some(value)) => escape_text(&value, options.delimiter, rebuilt),
                }
            }
        }
        splice_row(&mut out, data, at, end, rebuilt);
        at = end + 1;
    }
    Ok(out)
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
struct CsvField<'a> {
    raw: &'a [u8],
    value: Cow<'a, [u8]>,
    quoted: bool,
}

/// CSV rows: quoted fields may hold delimiters and newlines; an unquoted
/// field equal to the NULL string is NULL. Masked values are written quoted.
fn mask_csv_rows(
    policy: &super::MaskingPolicy,
    options: &CopyOptions,
    plan: Option<&[ColumnPlan]>,
    data: &[u8],
    counts: &mut CopyCounts,
) -> Result<Option<Vec<u8>>, ()> {
    let mut out: Option<Vec<u8>> = None;
    let mut at = 0;
    while at < data.len() {
        let (fields, end) = split_csv_row(options, data, at)?;
        let mut rebuilt: Option<Vec<u8>> = None;
        for (column, field) in fields.iter().enumerate() {
            let masked = if !field.quoted && field.raw == options.null.as_slice() {
                None
            } else {
                match mask_one(policy, plan, column, false, &field.value, counts) {
                    Masked::Value(Cow::Borrowed(_)) => None,
                    Masked::Value(Cow::Owned(v)) => Some(Some(v)),
                    Masked::Null => Some(None),
                }
            };
            if masked.is_some() && rebuilt.is_none() {
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
                match masked {
                    None => rebuilt.extend_from_slice(field.raw),
                    Some(None) => rebuilt.extend_from_slice(&options.null),
                    Some(Some(value)) => quote_csv(&value, options, rebuilt),
                }
            }
        }
        splice_row(&mut out, data, at, end, rebuilt);
        at = end + 1;
    }
    Ok(out)
}

/// Splits the CSV row starting at `start`; returns its fields and the index
/// of its ending newline.
fn split_csv_row<'a>(
    options: &CopyOptions,
    data: &'a [u8],
    start: usize,
) -> Result<(Vec<CsvField<'a>>, usize), ()> {
    let mut fields = Vec::new();
    let mut field_start = start;
    let mut value: Vec<u8> = Vec::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut i = start;
    loop {
        let Some(&b) = data.get(i) else {
            // A row always ends with a newline.
            return Err(());
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
            let raw = data.get(field_start..i).ok_or(())?;
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

fn quote_csv(value: &[u8], options: &CopyOptions, out: &mut Vec<u8>) {
    out.push(options.quote);
    for &b in value {
        if b == options.quote || b == options.escape {
            out.push(options.escape);
        }
        out.push(b);
    }
    out.push(options.quote);
}

/// Binary rows: the header (first message), then tuples of a field count and
/// length-prefixed values, then the trailer (-1).
fn mask_binary(
    policy: &super::MaskingPolicy,
    plan: Option<&[ColumnPlan]>,
    data: &[u8],
    header_pending: bool,
    counts: &mut CopyCounts,
) -> Result<Option<Vec<u8>>, ()> {
    let read_i32 = |at: usize| -> Result<i32, ()> {
        data.get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(i32::from_be_bytes)
            .ok_or(())
    };
    let mut at = 0;
    if header_pending {
        if data.get(..BINARY_SIGNATURE.len()) != Some(BINARY_SIGNATURE.as_slice()) {
            return Err(());
        }
        let extension = usize::try_from(read_i32(BINARY_SIGNATURE.len() + 4)?).map_err(|_| ())?;
        at = (BINARY_SIGNATURE.len() + 8)
            .checked_add(extension)
            .filter(|end| *end <= data.len())
            .ok_or(())?;
    }
    let mut out: Option<Vec<u8>> = None;
    while at < data.len() {
        let count = data
            .get(at..at + 2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(i16::from_be_bytes)
            .ok_or(())?;
        if count == -1 {
            // The trailer ends the data.
            if at + 2 != data.len() {
                return Err(());
            }
            if let Some(out) = out.as_mut() {
                out.extend_from_slice(&count.to_be_bytes());
            }
            break;
        }
        let count = usize::try_from(count).map_err(|_| ())?;
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
            let value = data.get(at..at.checked_add(len).ok_or(())?).ok_or(())?;
            at += len;
            let masked = mask_one(policy, plan, column, true, value, counts);
            if !masked.is_unchanged() && rebuilt.is_none() {
                let mut started = Vec::with_capacity(at - tuple_start + 16);
                started
                    .extend_from_slice(data.get(tuple_start..value_start - 4).unwrap_or_default());
                rebuilt = Some(started);
            }
            if let Some(rebuilt) = rebuilt.as_mut() {
                match masked.as_bytes() {
                    None => rebuilt.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(bytes) => {
                        let len = i32::try_from(bytes.len()).map_err(|_| ())?;
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

impl SessionMasker {
    /// Follows extended-protocol batches: a describe is never sent inside one
    /// (its Sync would end the client's implicit transaction early, and its
    /// failure abort the client's batch).
    /// Also follows prepared statements that are a `COPY … TO STDOUT`.
    pub(super) fn note_batch(&mut self, msg: &FrontendMessage<'_>) {
        self.at_boundary = !self.batch_open;
        self.copy_describe_next = None;
        match msg {
            FrontendMessage::Parse { name, sql, .. } => {
                self.batch_open = true;
                self.note_prepared(name, sql);
            }
            FrontendMessage::Bind(bind) => {
                self.batch_open = true;
                // The client's unnamed statement is described at its Parse only.
                if !bind.statement.is_empty() {
                    self.copy_describe_next = self.copy_prepared.get(bind.statement).cloned();
                }
            }
            FrontendMessage::Close { kind, name } => {
                self.batch_open = true;
                if *kind == b'S' {
                    self.copy_prepared.remove(*name);
                }
            }
            FrontendMessage::Describe { .. }
            | FrontendMessage::Execute { .. }
            | FrontendMessage::Flush => self.batch_open = true,
            FrontendMessage::Sync => self.batch_open = false,
            _ => {}
        }
    }

    /// A Parse: whether the statement is a `COPY … TO STDOUT`.
    fn note_prepared(&mut self, name: &[u8], sql: &[u8]) {
        self.copy_prepared.remove(name);
        if self.policy.rules.is_empty() || self.copy_prepared.len() >= MAX_PREPARED_COPIES {
            return;
        }
        let mut copies = copy_statements(sql, self.lexing.settings());
        if copies.len() != 1 {
            return;
        }
        let Some(statement) = copies.pop_front() else {
            return;
        };
        let statement = Rc::new(statement);
        // A statement may be prepared and never run: its describe must not be
        // able to abort the client's transaction block, so it is sent here
        // only outside one (inside, at each Bind, where the COPY runs next).
        if self.tx_status == b'I' {
            self.copy_describe_next = Some(Rc::clone(&statement));
        }
        self.copy_prepared.insert(name.to_vec(), statement);
    }

    /// The COPY statements of a simple Query, tracked with it.
    pub(super) fn copies_of(&self, sql: &[u8]) -> VecDeque<CopyStatement> {
        if self.policy.rules.is_empty() {
            return VecDeque::new();
        }
        copy_statements(sql, self.lexing.settings())
    }

    /// The messages that describe the columns of the COPY the client message
    /// just seen by [`SessionMasker::on_frontend`] starts (a Query's first
    /// statement) or prepares or binds (a Parse or Bind), to send ahead of it;
    /// `None` when there is none or it must not be sent. Call only when the
    /// server has answered everything before this message.
    pub fn take_copy_describe(&mut self) -> Option<Vec<u8>> {
        if self.tx_status == b'E' || !self.at_boundary {
            return None;
        }
        let (statement, bytes, at) = match self.copy_describe_next.take() {
            Some(statement) => {
                let sql = statement.describe_sql.as_deref()?;
                // Ahead of the Parse or Bind just expected.
                let at = self.expected.len()
                    - usize::from(matches!(
                        self.expected.back(),
                        Some(Expect::Parse { .. } | Expect::Bind { .. })
                    ));
                (Rc::clone(&statement), named_describe_messages(sql), at)
            }
            // A Query leaves no batch open; a Parse or Bind does.
            None if !self.batch_open => {
                let Some(Expect::Query { copies, .. }) = self.expected.back() else {
                    return None;
                };
                let first = copies.front()?;
                let sql = first.describe_sql.as_deref()?;
                let bytes = describe_messages(sql);
                (Rc::new(first.clone()), bytes, self.expected.len() - 1)
            }
            None => return None,
        };
        // Nothing but the catalog lookup may be awaiting answers before it.
        if self
            .expected
            .iter()
            .take(at)
            .any(|e| !matches!(e, Expect::Catalog))
        {
            return None;
        }
        // A stale description must not outlive a describe that fails.
        statement.fields.replace(None);
        self.expected
            .insert(at, Expect::CopyDescribe(Rc::clone(&statement.fields)));
        self.copy_describe_error = None;
        self.copy_describe_in_block = self.tx_status == b'T';
        Some(bytes)
    }

    /// The answers to the injected describe, consumed; the description goes
    /// to the COPY of the Query that follows.
    pub(super) fn on_copy_describe_answer(&mut self, msg: &BackendMessage<'_>) -> MaskAction {
        match msg {
            BackendMessage::RowDescription { body } => {
                if let Ok(fields) = values::parse_row_description(body)
                    && let Some(Expect::CopyDescribe(described)) = self.expected.front()
                {
                    described.replace(Some(Rc::new(fields)));
                }
            }
            BackendMessage::ErrorResponse { fields } if self.copy_describe_in_block => {
                // Kept for the COPY's `25P02` answer (see the module docs).
                let kept: Vec<(u8, &[u8])> = fields
                    .iter()
                    .copied()
                    .filter(|(code, _)| *code != b'P')
                    .collect();
                let mut bytes = Vec::new();
                BackendMessage::ErrorResponse { fields: kept }.encode(&mut bytes);
                self.copy_describe_error = Some(bytes);
            }
            BackendMessage::ReadyForQuery { status } => {
                self.tx_status = *status;
                self.expected.pop_front();
            }
            // Asynchronous messages belong to the client.
            BackendMessage::ParameterStatus { .. }
            | BackendMessage::NotificationResponse { .. } => {
                let describe = self.expected.pop_front();
                let action = self.on_backend(msg);
                if let Some(describe) = describe {
                    self.expected.push_front(describe);
                }
                return action;
            }
            _ => {}
        }
        MaskAction::Consume
    }

    /// An ErrorResponse after a COPY's describe failed in a transaction block:
    /// when it is the client request's `25P02`, the describe's error (masked
    /// like any error) takes its place.
    pub(super) fn copy_error(
        &mut self,
        msg: &BackendMessage<'_>,
        fields: &[(u8, &[u8])],
    ) -> Option<MaskAction> {
        let in_failed_block = fields
            .iter()
            .any(|(code, value)| *code == b'C' && *value == b"25P02");
        if !in_failed_block {
            return None;
        }
        let saved = self.copy_describe_error.take()?;
        let quoted = self.statement_reads_masked();
        self.on_error();
        let Ok(BackendMessage::ErrorResponse { fields }) = BackendMessage::decode(
            crate::protocol::ERROR_RESPONSE_TAG,
            saved.get(5..).unwrap_or_default(),
        ) else {
            return None;
        };
        Some(match self.mask_fields(msg, &fields, quoted) {
            MaskAction::Unchanged => MaskAction::Replace(saved),
            masked => masked,
        })
    }

    /// A CopyOutResponse: how its rows are masked.
    pub(super) fn start_copy(&mut self, response: &CopyResponse) {
        let statement = match self.expected.front_mut() {
            Some(Expect::Query { copies, .. }) => copies.pop_front(),
            Some(Expect::Execute { portal, .. }) => self
                .portals
                .get(portal)
                .and_then(|shape| shape.copy.as_deref().cloned()),
            _ => None,
        };
        let binary = response.format == 1;
        let described = statement.as_ref().and_then(|s| s.fields.borrow().clone());
        let plan = described.map(|fields| {
            let describe_sql = statement.as_ref().and_then(|s| s.describe_sql.clone());
            let taints = self.copy_taints(describe_sql.as_deref(), fields.len());
            self.plan(&fields, Some(&[i16::from(binary)]), &taints)
        });
        self.copy = Some(start_rows(
            !self.policy.rules.is_empty(),
            response,
            statement.as_ref(),
            plan,
        ));
    }

    pub(super) fn on_copy_data(&mut self, data: &[u8]) -> MaskAction {
        let Some(mut rows) = self.copy.take() else {
            // CopyData outside a COPY the masker saw begin: detectors only.
            let response = CopyResponse {
                format: 0,
                column_formats: Vec::new(),
            };
            self.copy = Some(start_rows(
                !self.policy.rules.is_empty(),
                &response,
                None,
                None,
            ));
            return self.on_copy_data(data);
        };
        let mut counts = CopyCounts::default();
        let masked = rows.mask(&self.policy, data, &mut counts);
        self.copy = Some(rows);
        self.add_counts(&counts.rules, &counts.detectors);
        match masked {
            Some(data) => self.replace(BackendMessage::CopyData { data: &data }),
            None => MaskAction::Unchanged,
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
#[path = "copy_tests.rs"]
mod tests;
