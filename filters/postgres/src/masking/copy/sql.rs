//! COPY SQL: the `COPY … TO STDOUT` statements of a Query text, their row
//! options, and the equivalent query whose description gives their columns.

use super::super::values::Field;
use crate::sql::lexer::{self, Token, TokenKind};
use sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

/// COPY statements tracked per Query; later ones are treated as unknown.
const MAX_COPIES_PER_QUERY: usize = 64;
/// Query texts longer than this are not examined for COPY statements.
const MAX_COPY_SQL_LEN: usize = 256 * 1024;

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
