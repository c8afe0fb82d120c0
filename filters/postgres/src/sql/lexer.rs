//! The crate's one SQL lexer, written to the rules of PostgreSQL's own scanner
//! (`src/backend/parser/scan.l`, and the `UESCAPE` look-ahead of `parser.c`).
//!
//! Everything that reads SQL text goes through it: policy analysis, the decision
//! cache's fingerprint, statement splitting for records, literal redaction and COPY
//! detection. One lexing pass yields the tokens, the statement boundaries and, when
//! the server would refuse the text at lexing, the reason; values (folded names,
//! decoded strings) are decoded from a token on demand.
//!
//! What the server does, and so what this does:
//! - `--` comments end at `\n` or `\r`; `/* */` comments nest.
//! - `'…'` strings double their quotes; under `standard_conforming_strings = off`
//!   they also take backslash escapes, as `E'…'` always does. `U&'…'` strings and
//!   `U&"…"` identifiers decode `\XXXX` / `\+XXXXXX` escapes, with the escape
//!   character of a following `UESCAPE '…'`. `B'…'` and `X'…'` have no escapes.
//!   A string followed by whitespace that holds a newline and another `'` goes on
//!   (`'a'\n'b'` is `'ab'`).
//! - `$tag$…$tag$` quotes anything; `$1` is a parameter; `$` inside a word is part
//!   of the word.
//! - Operators stop before an embedded `/*` or `--`, and lose a trailing `+` or `-`
//!   unless they contain one of ``~!@#^&|`?%``.
//! - Unquoted names fold ASCII letters to lower case; names are cut to 63 bytes.
//! - Trailing junk after a number or parameter (`1abc`, `$1x`) is an error.
//!
//! Where servers differ by version (vertical tab as whitespace, `0x1F` and `1_000`
//! numbers: PostgreSQL 16), the newer rule is used: an older server rejects such a
//! text outright, so nothing it runs was read differently.
//!
//! `backslash_quote` only decides whether the server *rejects* a `\'` escape; it
//! never moves a boundary, so it needs no setting here.

use std::ops::Range;

/// The server settings that change how text is lexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Settings {
    /// `standard_conforming_strings`: when off, `'…'` strings take backslash escapes.
    pub standard_conforming_strings: bool,
}

impl Default for Settings {
    /// The server default: `standard_conforming_strings = on`.
    fn default() -> Self {
        Self {
            standard_conforming_strings: true,
        }
    }
}

/// What a token is; its text is at [`Token::span`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An unquoted identifier or keyword (case-insensitive).
    Word,
    /// A `"quoted"` or `U&"quoted"` identifier.
    QuotedIdent,
    /// A string constant of any [`Form`].
    String,
    /// A numeric constant.
    Number,
    /// A positional parameter such as `$1`.
    Param,
    /// A statement separator.
    Semicolon,
    /// Punctuation and operators: `(`, `,`, `::`, `<=`, `@>`, …
    Punct,
}

/// How a string constant or quoted identifier is written, which decides how its
/// value is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Form {
    /// Words, numbers, punctuation, `'…'` strings under standard_conforming_strings
    /// (and `N'…'`), `"…"` identifiers.
    Standard,
    /// Backslash escapes: `E'…'`, or `'…'` / `N'…'` when standard_conforming_strings
    /// is off.
    Escape,
    /// `U&'…'` or `U&"…"`, with [`Token::escape`] as the escape character.
    Unicode,
    /// `B'…'`.
    Bit,
    /// `X'…'`.
    Hex,
    /// `$tag$…$tag$`.
    Dollar,
}

/// One token of SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub form: Form,
    /// Byte range in the source text. For a `U&` token followed by `UESCAPE '…'`,
    /// the range ends after that clause.
    pub span: Range<usize>,
    /// The escape character of a [`Form::Unicode`] token (`\` unless `UESCAPE`).
    pub escape: u8,
}

/// Why the server would refuse a text before running any of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LexError {
    /// Byte offset where the server reports it.
    pub offset: usize,
    pub message: &'static str,
}

/// The tokens of a text, its statements, and whether the server would refuse it.
#[derive(Debug, Clone, Default)]
pub struct Lexed {
    pub tokens: Vec<Token>,
    /// Token index ranges of the statements, in order; the `;` that ends a statement
    /// is outside its range, empty statements are left out.
    pub statements: Vec<Range<usize>>,
    /// Set when the server would reject the whole text while lexing it (an
    /// unterminated string or comment, a bad escape, junk after a number, …): then
    /// it runs none of it.
    pub error: Option<LexError>,
}

impl Lexed {
    /// The tokens of each statement.
    pub fn statement_tokens(&self) -> impl Iterator<Item = &[Token]> {
        self.statements
            .iter()
            .filter_map(|r| self.tokens.get(r.clone()))
    }
}

/// Splits `sql` into tokens and statements under the default settings.
pub fn tokenize(sql: &str) -> Lexed {
    tokenize_bytes(sql.as_bytes(), Settings::default())
}

/// Splits `sql` into tokens and statements under `settings`.
pub fn tokenize_with(sql: &str, settings: Settings) -> Lexed {
    tokenize_bytes(sql.as_bytes(), settings)
}

/// [`tokenize_with`] for text that may not be UTF-8 (spans are byte ranges; every
/// boundary falls between characters of valid UTF-8).
pub fn tokenize_bytes(sql: &[u8], settings: Settings) -> Lexed {
    let mut scanner = Scanner {
        b: sql,
        pos: 0,
        settings,
        out: Lexed::default(),
    };
    scanner.run();
    let mut lexed = scanner.out;
    lexed.statements = split(sql, &lexed.tokens, &mut lexed.error);
    lexed
}

/// Longest name the server keeps (NAMEDATALEN - 1); longer ones are cut.
pub const MAX_NAME_BYTES: usize = 63;

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

fn is_dolq_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

/// Whitespace outside tokens (vertical tab since PostgreSQL 16; see the module docs).
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b')
}

fn is_newline(c: u8) -> bool {
    c == b'\n' || c == b'\r'
}

/// Characters that may form multi-character operators.
fn is_op_char(c: u8) -> bool {
    matches!(
        c,
        b'~' | b'!'
            | b'@'
            | b'#'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'<'
            | b'>'
            | b'='
    )
}

/// How a quoted body is scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// `''` stands for `'`; nothing else is special.
    Standard,
    /// Backslash escapes too.
    Escape,
    /// The first `'` ends it (bit and hex strings).
    NoDoubling,
    /// A `"quoted identifier"`: `""` stands for `"`; no continuation.
    Ident,
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    settings: Settings,
    out: Lexed,
}

impl Scanner<'_> {
    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(0)
    }

    fn fail(&mut self, offset: usize, message: &'static str) {
        if self.out.error.is_none() {
            self.out.error = Some(LexError { offset, message });
        }
    }

    /// An unterminated construct from `start`: the rest of the text is one opaque
    /// token, as it is one error to the server.
    fn unterminated(&mut self, start: usize, message: &'static str) {
        self.fail(start, message);
        self.pos = self.b.len();
        self.push(TokenKind::Punct, Form::Standard, start..self.pos);
    }

    fn push(&mut self, kind: TokenKind, form: Form, span: Range<usize>) {
        self.out.tokens.push(Token {
            kind,
            form,
            span,
            escape: b'\\',
        });
    }

    fn run(&mut self) {
        while self.pos < self.b.len() {
            if self.out.error.is_some() {
                // The server stops at the first error; so do we, and the rest is
                // one opaque token so that nothing after it is mistaken for SQL.
                let start = self.pos;
                self.pos = self.b.len();
                self.push(TokenKind::Punct, Form::Standard, start..self.pos);
                return;
            }
            self.step();
        }
    }

    fn step(&mut self) {
        let start = self.pos;
        let c = self.at(start);
        let next = self.at(start + 1);
        match c {
            c if is_space(c) => self.pos += 1,
            b'-' if next == b'-' => self.pos = self.line_comment_end(start),
            b'/' if next == b'*' => match block_comment_end(self.b, start) {
                Some(end) => self.pos = end,
                None => self.unterminated(start, "unterminated /* comment"),
            },
            b'\'' => {
                let body = if self.settings.standard_conforming_strings {
                    Body::Standard
                } else {
                    Body::Escape
                };
                let form = if body == Body::Escape {
                    Form::Escape
                } else {
                    Form::Standard
                };
                self.quoted(start, start, body, TokenKind::String, form);
            }
            b'"' => self.quoted(
                start,
                start,
                Body::Ident,
                TokenKind::QuotedIdent,
                Form::Standard,
            ),
            b'$' if next.is_ascii_digit() => self.parameter(start),
            b'$' => self.dollar(start),
            b'0'..=b'9' => self.number(start),
            b'.' if next.is_ascii_digit() => self.number(start),
            b'.' if next == b'.' => self.fixed(start, 2),
            b':' if next == b':' || next == b'=' => self.fixed(start, 2),
            b';' => {
                self.pos += 1;
                self.push(TokenKind::Semicolon, Form::Standard, start..self.pos);
            }
            c if is_ident_start(c) => self.word(start),
            c if is_op_char(c) => self.operator(start),
            // `self` characters and anything else: one byte each.
            _ => self.fixed(start, 1),
        }
    }

    fn fixed(&mut self, start: usize, len: usize) {
        self.pos = start + len;
        self.push(TokenKind::Punct, Form::Standard, start..self.pos);
    }

    fn line_comment_end(&self, start: usize) -> usize {
        self.b
            .get(start..)
            .and_then(|rest| rest.iter().position(|&c| is_newline(c)))
            .map_or(self.b.len(), |p| start + p)
    }

    /// A quoted token whose opening quote is at `quote` (`start` is where its
    /// prefix begins).
    fn quoted(&mut self, start: usize, quote: usize, body: Body, kind: TokenKind, form: Form) {
        // Escapes can spell bytes that are not UTF-8, which the server (UTF-8 is
        // assumed) refuses while lexing: decode escape strings to check.
        let mut decoded = (body == Body::Escape).then(Vec::new);
        match scan_quoted(self.b, quote, body, decoded.as_mut()) {
            Ok(_)
                if decoded
                    .as_deref()
                    .is_some_and(|v| std::str::from_utf8(v).is_err()) =>
            {
                self.unterminated(start, "invalid byte sequence for encoding UTF8");
            }
            Ok(end) => {
                self.pos = end;
                if body == Body::Ident && end == quote + 2 {
                    self.fail(start, "zero-length delimited identifier");
                }
                self.push(kind, form, start..end);
            }
            Err(e) => self.unterminated(start, e),
        }
    }

    fn word(&mut self, start: usize) {
        let c = self.at(start).to_ascii_lowercase();
        let next = self.at(start + 1);
        match (c, next) {
            (b'e', b'\'') => {
                return self.quoted(
                    start,
                    start + 1,
                    Body::Escape,
                    TokenKind::String,
                    Form::Escape,
                );
            }
            (b'n', b'\'') => {
                let (body, form) = if self.settings.standard_conforming_strings {
                    (Body::Standard, Form::Standard)
                } else {
                    (Body::Escape, Form::Escape)
                };
                return self.quoted(start, start + 1, body, TokenKind::String, form);
            }
            (b'b', b'\'') => {
                return self.quoted(
                    start,
                    start + 1,
                    Body::NoDoubling,
                    TokenKind::String,
                    Form::Bit,
                );
            }
            (b'x', b'\'') => {
                return self.quoted(
                    start,
                    start + 1,
                    Body::NoDoubling,
                    TokenKind::String,
                    Form::Hex,
                );
            }
            (b'u', b'&') => match self.at(start + 2) {
                b'\'' => {
                    if !self.settings.standard_conforming_strings {
                        self.fail(start, "unsafe use of string constant with Unicode escapes");
                    }
                    self.quoted(
                        start,
                        start + 2,
                        Body::Standard,
                        TokenKind::String,
                        Form::Unicode,
                    );
                    return self.uescape();
                }
                b'"' => {
                    self.quoted(
                        start,
                        start + 2,
                        Body::Ident,
                        TokenKind::QuotedIdent,
                        Form::Unicode,
                    );
                    return self.uescape();
                }
                // `U&` not followed by a quote: the word `u`, then `&`.
                _ => {
                    self.pos = start + 1;
                    self.push(TokenKind::Word, Form::Standard, start..self.pos);
                    return;
                }
            },
            _ => {}
        }
        let mut i = start + 1;
        while i < self.b.len() && is_ident_cont(self.at(i)) {
            i += 1;
        }
        self.pos = i;
        self.push(TokenKind::Word, Form::Standard, start..i);
    }

    /// After a `U&` token: an optional `UESCAPE '<char>'` joins it.
    fn uescape(&mut self) {
        if self.out.error.is_some() {
            return;
        }
        let Some(last) = self.out.tokens.len().checked_sub(1) else {
            return;
        };
        let mut look = Scanner {
            b: self.b,
            pos: self.pos,
            settings: self.settings,
            out: Lexed::default(),
        };
        // The next two significant tokens.
        while look.out.tokens.len() < 2 && look.pos < look.b.len() && look.out.error.is_none() {
            look.step();
            if look.out.tokens.len() == 1
                && !look
                    .out
                    .tokens
                    .first()
                    .is_some_and(|t| t.kind == TokenKind::Word && self.word_is(t, "uescape"))
            {
                return;
            }
        }
        let (Some(_), Some(escape)) = (look.out.tokens.first(), look.out.tokens.get(1)) else {
            if look.out.tokens.len() == 1 {
                self.fail(
                    self.pos,
                    "UESCAPE must be followed by a simple string literal",
                );
            }
            return;
        };
        let value = (escape.kind == TokenKind::String
            && matches!(escape.form, Form::Standard | Form::Escape | Form::Dollar))
        .then(|| string_bytes(self.b, escape))
        .flatten();
        match value.as_deref() {
            Some(&[c])
                if !(c.is_ascii_hexdigit()
                    || matches!(c, b'+' | b'\'' | b'"')
                    || is_space(c)
                    || c >= 0x80) =>
            {
                self.pos = escape.span.end;
                if let Some(token) = self.out.tokens.get_mut(last) {
                    token.span.end = escape.span.end;
                    token.escape = c;
                }
            }
            Some([_]) => self.fail(escape.span.start, "invalid Unicode escape character"),
            _ => self.fail(
                escape.span.start,
                "UESCAPE must be followed by a simple string literal",
            ),
        }
    }

    fn word_is(&self, token: &Token, word: &str) -> bool {
        self.b
            .get(token.span.clone())
            .is_some_and(|t| t.eq_ignore_ascii_case(word.as_bytes()))
    }

    fn parameter(&mut self, start: usize) {
        let mut i = start + 1;
        while self.at(i).is_ascii_digit() {
            i += 1;
        }
        if is_ident_start(self.at(i)) {
            self.fail(start, "trailing junk after parameter");
        }
        self.pos = i;
        self.push(TokenKind::Param, Form::Standard, start..i);
    }

    fn dollar(&mut self, start: usize) {
        let mut i = start + 1;
        if is_ident_start(self.at(i)) {
            while i < self.b.len() && is_dolq_cont(self.at(i)) {
                i += 1;
            }
        }
        if self.at(i) != b'$' {
            // `$` not opening a quote: a one-character token; the rest is rescanned.
            return self.fixed(start, 1);
        }
        let delimiter = self.b.get(start..=i).unwrap_or_default();
        let body = i + 1;
        match find(self.b, body, delimiter) {
            Some(p) => {
                self.pos = p + delimiter.len();
                self.push(TokenKind::String, Form::Dollar, start..self.pos);
            }
            None => self.unterminated(start, "unterminated dollar-quoted string"),
        }
    }

    fn number(&mut self, start: usize) {
        let b = self.b;
        let at = |i: usize| b.get(i).copied().unwrap_or(0);
        let digits = |mut i: usize, ok: fn(u8) -> bool| -> usize {
            // digit (_? digit)*
            if !ok(at(i)) {
                return i;
            }
            i += 1;
            loop {
                if ok(at(i)) {
                    i += 1;
                } else if at(i) == b'_' && ok(at(i + 1)) {
                    i += 2;
                } else {
                    return i;
                }
            }
        };
        let mut i = start;
        let radix: Option<fn(u8) -> bool> = match (at(start), at(start + 1).to_ascii_lowercase()) {
            (b'0', b'x') => Some(|c: u8| c.is_ascii_hexdigit()),
            (b'0', b'o') => Some(|c: u8| matches!(c, b'0'..=b'7')),
            (b'0', b'b') => Some(|c: u8| matches!(c, b'0' | b'1')),
            _ => None,
        };
        if let Some(ok) = radix {
            let first = start + 2 + usize::from(at(start + 2) == b'_');
            let end = digits(first, ok);
            if end > first {
                i = end;
            } else {
                self.fail(start, "invalid non-decimal integer");
                i = first;
            }
        } else {
            i = digits(i, |c| c.is_ascii_digit());
            let dot_dot = at(i) == b'.' && at(i + 1) == b'.';
            if at(i) == b'.' && !dot_dot {
                i = digits(i + 1, |c| c.is_ascii_digit());
            }
            if !dot_dot && matches!(at(i), b'e' | b'E') {
                let sign = usize::from(matches!(at(i + 1), b'+' | b'-'));
                let exponent = i + 1 + sign;
                if at(exponent).is_ascii_digit() {
                    i = digits(exponent, |c| c.is_ascii_digit());
                } else if sign == 1 {
                    self.fail(start, "trailing junk after numeric literal");
                }
            }
        }
        if is_ident_cont(at(i)) && at(i) != b'$' {
            self.fail(start, "trailing junk after numeric literal");
        }
        self.pos = i;
        self.push(TokenKind::Number, Form::Standard, start..i);
    }

    fn operator(&mut self, start: usize) {
        let mut end = start;
        while end < self.b.len() && is_op_char(self.at(end)) {
            end += 1;
        }
        let text = self.b.get(start..end).unwrap_or_default();
        // A comment start inside ends the operator there.
        let comment = text
            .windows(2)
            .position(|w| w == b"/*" || w == b"--")
            .unwrap_or(text.len());
        let mut len = comment;
        // A trailing + or - belongs to the next token unless the operator holds a
        // character that no SQL operator has.
        let special = |t: &[u8]| {
            t.iter().any(|c| {
                matches!(
                    c,
                    b'~' | b'!' | b'@' | b'#' | b'^' | b'&' | b'|' | b'`' | b'?' | b'%'
                )
            })
        };
        while len > 1
            && matches!(text.get(len - 1), Some(b'+' | b'-'))
            && !special(text.get(..len - 1).unwrap_or_default())
        {
            len -= 1;
        }
        if len > MAX_NAME_BYTES {
            self.fail(start, "operator too long");
        }
        self.fixed(start, len.max(1));
    }
}

/// End of the `/* */` comment opening at `start` (nested ones included), if closed.
fn block_comment_end(b: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < b.len() {
        match (b.get(i), b.get(i + 1)) {
            (Some(b'/'), Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (Some(b'*'), Some(b'/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// After a string's closing quote at `i - 1`: if whitespace holding a newline and
/// another quote follow, the index just past that quote (the string goes on).
fn continuation(b: &[u8], mut i: usize) -> Option<usize> {
    let mut newline = false;
    loop {
        match b.get(i).copied()? {
            c if is_newline(c) => {
                newline = true;
                i += 1;
            }
            c if is_space(c) => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i += b.get(i..)?.iter().position(|&c| is_newline(c))?;
            }
            b'\'' if newline => return Some(i + 1),
            _ => return None,
        }
    }
}

/// Scans a quoted body whose opening quote is at `open`; returns the index past the
/// closing quote (after any continuation). With `value`, the body's bytes are
/// collected as the server's literal buffer holds them (escapes of
/// [`Body::Escape`] decoded).
fn scan_quoted(
    b: &[u8],
    open: usize,
    body: Body,
    mut value: Option<&mut Vec<u8>>,
) -> Result<usize, &'static str> {
    let quote = if body == Body::Ident { b'"' } else { b'\'' };
    let unterminated = match body {
        Body::Ident => "unterminated quoted identifier",
        Body::NoDoubling => "unterminated bit string literal",
        _ => "unterminated quoted string",
    };
    let mut add = |bytes: &[u8]| {
        if let Some(v) = value.as_deref_mut() {
            v.extend_from_slice(bytes);
        }
    };
    let mut i = open + 1;
    loop {
        let Some(&c) = b.get(i) else {
            return Err(unterminated);
        };
        if c == quote {
            if body != Body::NoDoubling && b.get(i + 1) == Some(&quote) {
                add(&[quote]);
                i += 2;
                continue;
            }
            if body != Body::Ident
                && let Some(resume) = continuation(b, i + 1)
            {
                i = resume;
                continue;
            }
            return Ok(i + 1);
        }
        if c == b'\\' && body == Body::Escape {
            let (len, decoded) = escape_sequence(b, i)?;
            add(decoded.bytes.get(..decoded.len).unwrap_or_default());
            i += len;
            continue;
        }
        add(&[c]);
        i += 1;
    }
}

/// Up to four bytes of decoded escape (a UTF-8 character at most).
struct Decoded {
    bytes: [u8; 4],
    len: usize,
}

impl Decoded {
    fn byte(c: u8) -> Self {
        Self {
            bytes: [c, 0, 0, 0],
            len: 1,
        }
    }

    fn char(c: char) -> Self {
        let mut bytes = [0; 4];
        let len = c.encode_utf8(&mut bytes).len();
        Self { bytes, len }
    }
}

/// A backslash escape of an escape string at `i`: its length and value.
fn escape_sequence(b: &[u8], i: usize) -> Result<(usize, Decoded), &'static str> {
    let at = |k: usize| b.get(k).copied();
    let Some(c) = at(i + 1) else {
        return Err("unterminated quoted string");
    };
    let hex_run = |from: usize, max: usize| {
        (0..max)
            .take_while(|k| at(from + k).is_some_and(|c| c.is_ascii_hexdigit()))
            .count()
    };
    let hex_value = |from: usize, len: usize| {
        b.get(from..from + len)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    };
    match c {
        b'0'..=b'7' => {
            let len = (0..3)
                .take_while(|k| at(i + 1 + k).is_some_and(|c| matches!(c, b'0'..=b'7')))
                .count();
            let value = b
                .get(i + 1..i + 1 + len)
                .unwrap_or_default()
                .iter()
                .fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
            Ok((1 + len, Decoded::byte((value & 0xff) as u8)))
        }
        b'x' if hex_run(i + 2, 2) > 0 => {
            let len = hex_run(i + 2, 2);
            Ok((2 + len, Decoded::byte(hex_value(i + 2, len) as u8)))
        }
        b'u' | b'U' => {
            let want = if c == b'u' { 4 } else { 8 };
            if hex_run(i + 2, want) < want {
                return Err("invalid Unicode escape");
            }
            let first = hex_value(i + 2, want);
            let len = 2 + want;
            if (0xD800..0xDC00).contains(&first) {
                // A high surrogate must be followed by an escaped low one.
                let next = i + len;
                let low_want = match (at(next), at(next + 1)) {
                    (Some(b'\\'), Some(b'u')) => 4,
                    (Some(b'\\'), Some(b'U')) => 8,
                    _ => return Err("invalid Unicode surrogate pair"),
                };
                if hex_run(next + 2, low_want) < low_want {
                    return Err("invalid Unicode surrogate pair");
                }
                let low = hex_value(next + 2, low_want);
                if !(0xDC00..0xE000).contains(&low) {
                    return Err("invalid Unicode surrogate pair");
                }
                let code = 0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00);
                let c = char::from_u32(code).ok_or("invalid Unicode escape value")?;
                return Ok((len + 2 + low_want, Decoded::char(c)));
            }
            match char::from_u32(first) {
                Some(c) if first != 0 => Ok((len, Decoded::char(c))),
                _ => Err("invalid Unicode escape value"),
            }
        }
        b'b' => Ok((2, Decoded::byte(0x08))),
        b'f' => Ok((2, Decoded::byte(0x0c))),
        b'n' => Ok((2, Decoded::byte(b'\n'))),
        b'r' => Ok((2, Decoded::byte(b'\r'))),
        b't' => Ok((2, Decoded::byte(b'\t'))),
        other => Ok((2, Decoded::byte(other))),
    }
}

/// The opening quote of a quoted token.
fn opening_quote(b: &[u8], token: &Token) -> Option<usize> {
    let text = b.get(token.span.clone())?;
    let quote = if token.kind == TokenKind::QuotedIdent {
        b'"'
    } else {
        b'\''
    };
    text.iter()
        .position(|&c| c == quote)
        .map(|p| p + token.span.start)
}

/// Decodes `U&` escapes in `body` with `escape`.
fn unicode_unescape(body: &[u8], escape: u8) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    let hex = |from: usize, len: usize| {
        let digits = body.get(from..from + len)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let mut pending_high: Option<u32> = None;
    while let Some(&c) = body.get(i) {
        if c != escape {
            if pending_high.is_some() {
                return None;
            }
            out.push(c);
            i += 1;
            continue;
        }
        let (code, len) = if body.get(i + 1) == Some(&escape) {
            if pending_high.is_some() {
                return None;
            }
            out.push(escape);
            i += 2;
            continue;
        } else if body.get(i + 1) == Some(&b'+') {
            (hex(i + 2, 6)?, 8)
        } else {
            (hex(i + 1, 4)?, 5)
        };
        i += len;
        let code = match pending_high.take() {
            Some(high) if (0xDC00..0xE000).contains(&code) => {
                0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)
            }
            Some(_) => return None,
            None if (0xD800..0xDC00).contains(&code) => {
                pending_high = Some(code);
                continue;
            }
            None if (0xDC00..0xE000).contains(&code) => return None,
            None => code,
        };
        let ch = char::from_u32(code).filter(|_| code != 0)?;
        let mut buf = [0; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
    pending_high.is_none().then_some(out)
}

/// The value of a string constant as the server reads it (escapes decoded,
/// continuations joined); `None` for other tokens and for values the server refuses.
pub fn string_bytes(sql: &[u8], token: &Token) -> Option<Vec<u8>> {
    if token.kind != TokenKind::String {
        return None;
    }
    if token.form == Form::Dollar {
        let text = sql.get(token.span.clone())?;
        let tag_len = text.iter().skip(1).position(|&c| c == b'$')? + 2;
        return text
            .get(tag_len..text.len().checked_sub(tag_len)?)
            .map(<[u8]>::to_vec);
    }
    let open = opening_quote(sql, token)?;
    let body = match token.form {
        Form::Escape => Body::Escape,
        Form::Bit | Form::Hex => Body::NoDoubling,
        _ => Body::Standard,
    };
    let mut value = Vec::new();
    scan_quoted(sql, open, body, Some(&mut value)).ok()?;
    if token.form == Form::Unicode {
        return unicode_unescape(&value, token.escape);
    }
    Some(value)
}

/// [`string_bytes`] as text (lossy).
pub fn string_value(sql: &str, token: &Token) -> Option<String> {
    string_bytes(sql.as_bytes(), token).map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Cuts a name to [`MAX_NAME_BYTES`] on a character boundary, as the server does.
fn truncate_name(mut name: String) -> String {
    if name.len() > MAX_NAME_BYTES {
        let mut cut = MAX_NAME_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

/// The name a word or quoted identifier stands for, as the server resolves it:
/// unquoted names folded to lower case, quoted ones unquoted and `U&` escapes
/// decoded, cut to 63 bytes. `None` for other tokens.
pub fn ident_value(sql: &str, token: &Token) -> Option<String> {
    match token.kind {
        TokenKind::Word => Some(truncate_name(text(sql, token).to_ascii_lowercase())),
        TokenKind::QuotedIdent => {
            let open = opening_quote(sql.as_bytes(), token)?;
            let mut value = Vec::new();
            scan_quoted(sql.as_bytes(), open, Body::Ident, Some(&mut value)).ok()?;
            if token.form == Form::Unicode {
                value = unicode_unescape(&value, token.escape)?;
            }
            Some(truncate_name(String::from_utf8_lossy(&value).into_owned()))
        }
        _ => None,
    }
}

/// The token's text in `sql`.
pub fn text<'a>(sql: &'a str, token: &Token) -> &'a str {
    sql.get(token.span.clone()).unwrap_or_default()
}

/// Whether `token` is the (case-insensitive) keyword `word`.
pub fn is_word(sql: &str, token: &Token, word: &str) -> bool {
    token.kind == TokenKind::Word && text(sql, token).eq_ignore_ascii_case(word)
}

/// Whether `token` is the punctuation `p`.
pub fn is_punct(sql: &str, token: &Token, p: &str) -> bool {
    token.kind == TokenKind::Punct && text(sql, token) == p
}

/// Routine bodies nested deeper than this make the text unanalyzable (the server's
/// parser stack gives out too, far later).
const MAX_BODY_DEPTH: usize = 64;

/// Statement boundaries as the server's grammar draws them: a `;` ends a statement
/// unless it is inside parentheses (rule actions) or inside the `BEGIN ATOMIC … END`
/// body of `CREATE [OR REPLACE] FUNCTION|PROCEDURE`. In such a body each statement
/// ends with `;`, and an `END` where a statement would start closes the body (an
/// `END` elsewhere is a `CASE`'s or a column label).
fn split(sql: &[u8], tokens: &[Token], error: &mut Option<LexError>) -> Vec<Range<usize>> {
    let splitter = Splitter { sql, tokens };
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(token) = tokens.get(i) {
        if token.kind == TokenKind::Semicolon {
            i += 1;
            continue;
        }
        let end = match splitter.statement_end(i, 0) {
            Ok(end) => end,
            Err(offset) => {
                if error.is_none() {
                    *error = Some(LexError {
                        offset,
                        message: "routine bodies nested too deeply",
                    });
                }
                tokens.len()
            }
        };
        out.push(i..end);
        i = end + 1;
    }
    out
}

struct Splitter<'a> {
    sql: &'a [u8],
    tokens: &'a [Token],
}

impl Splitter<'_> {
    fn word(&self, i: usize, w: &str) -> bool {
        self.tokens.get(i).is_some_and(|t| {
            t.kind == TokenKind::Word
                && self
                    .sql
                    .get(t.span.clone())
                    .is_some_and(|s| s.eq_ignore_ascii_case(w.as_bytes()))
        })
    }

    fn punct(&self, i: usize, p: &[u8]) -> bool {
        self.tokens
            .get(i)
            .is_some_and(|t| t.kind == TokenKind::Punct && self.sql.get(t.span.clone()) == Some(p))
    }

    /// `CREATE [OR REPLACE] FUNCTION|PROCEDURE` starts at `i`.
    fn creates_routine(&self, i: usize) -> bool {
        let routine = |k: usize| self.word(k, "function") || self.word(k, "procedure");
        self.word(i, "create")
            && (routine(i + 1)
                || (self.word(i + 1, "or") && self.word(i + 2, "replace") && routine(i + 3)))
    }

    /// Index of the `;` ending the statement that starts at `start`, or the end of
    /// the tokens; `Err(offset)` past [`MAX_BODY_DEPTH`].
    fn statement_end(&self, start: usize, depth: usize) -> Result<usize, usize> {
        let routine = self.creates_routine(start);
        let mut parens = 0usize;
        let mut i = start;
        while let Some(token) = self.tokens.get(i) {
            match token.kind {
                TokenKind::Semicolon if parens == 0 => return Ok(i),
                TokenKind::Punct if self.punct(i, b"(") => parens += 1,
                TokenKind::Punct if self.punct(i, b")") => parens = parens.saturating_sub(1),
                TokenKind::Word
                    if routine
                        && parens == 0
                        && self.word(i, "begin")
                        && self.word(i + 1, "atomic") =>
                {
                    if depth >= MAX_BODY_DEPTH {
                        return Err(token.span.start);
                    }
                    i = self.body_end(i + 2, depth + 1)?;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        Ok(self.tokens.len())
    }

    /// Index just past the `END` that closes the body whose first statement starts
    /// at `i`.
    fn body_end(&self, mut i: usize, depth: usize) -> Result<usize, usize> {
        loop {
            if i >= self.tokens.len() {
                return Ok(i);
            }
            if self.word(i, "end") {
                return Ok(i + 1);
            }
            i = self.statement_end(i, depth)? + 1;
        }
    }
}

/// The statement's kind keyword: its first word, uppercased (`SELECT`, `WITH`, …),
/// after any opening parentheses.
pub fn leading_keyword(sql: &str, tokens: &[Token]) -> Option<String> {
    tokens
        .iter()
        .find(|t| !is_punct(sql, t, "("))
        .filter(|t| t.kind == TokenKind::Word)
        .map(|t| text(sql, t).to_ascii_uppercase())
}

/// Byte ranges of the statements of `sql` as the server splits them (from each
/// statement's first token to its last: no surrounding layout or comments).
pub fn statement_spans(sql: &[u8], settings: Settings) -> Vec<Range<usize>> {
    let lexed = tokenize_bytes(sql, settings);
    lexed
        .statement_tokens()
        .filter_map(|tokens| Some(tokens.first()?.span.start..tokens.last()?.span.end))
        .collect()
}

/// `sql` with every string and numeric constant replaced by a `$n` placeholder,
/// numbered after the highest parameter the text already uses; everything else
/// (comments and layout included) as written. Text past a lexing error is kept
/// as one piece, so a constant there is kept too: the server refused such a text.
pub fn redact_literals(sql: &str, lexed: &Lexed) -> String {
    let highest_param = lexed
        .tokens
        .iter()
        .filter(|t| t.kind == TokenKind::Param)
        .filter_map(|t| text(sql, t).get(1..)?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    let mut next = highest_param;
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for token in &lexed.tokens {
        if matches!(token.kind, TokenKind::String | TokenKind::Number) {
            out.push_str(sql.get(copied..token.span.start).unwrap_or_default());
            next = next.saturating_add(1);
            out.push('$');
            out.push_str(&next.to_string());
            copied = token.span.end;
        }
    }
    out.push_str(sql.get(copied..).unwrap_or_default());
    out
}

/// Appends a key for `tokens` to `out` that distinguishes everything a decision
/// can depend on: each token's kind and form, names as the server resolves them,
/// punctuation as written, and (with `keep_literals`) constants as decoded; without,
/// every constant of a form becomes one placeholder. Layout and comments do not
/// count: tokens are fixed once lexed.
pub fn fingerprint_into(sql: &str, tokens: &[Token], keep_literals: bool, out: &mut String) {
    for token in tokens {
        // A NUL never occurs in a Query or Parse text: an unambiguous separator.
        out.push('\0');
        out.push(match token.kind {
            TokenKind::Word => 'w',
            TokenKind::QuotedIdent => 'q',
            TokenKind::String => match token.form {
                Form::Bit => 'b',
                Form::Hex => 'x',
                _ => 's',
            },
            TokenKind::Number => 'n',
            TokenKind::Param => 'p',
            TokenKind::Semicolon => ';',
            TokenKind::Punct => 'o',
        });
        let raw = text(sql, token);
        match token.kind {
            // The common spellings without an allocation: a short word, and a
            // quoted name with no doubled quote.
            TokenKind::Word if raw.len() <= MAX_NAME_BYTES => {
                out.extend(raw.chars().map(|c| c.to_ascii_lowercase()));
            }
            TokenKind::QuotedIdent
                if token.form == Form::Standard
                    && raw.len() <= MAX_NAME_BYTES + 2
                    && raw
                        .get(1..raw.len().saturating_sub(1))
                        .is_some_and(|inner| !inner.contains('"')) =>
            {
                out.push_str(raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default());
            }
            TokenKind::Word | TokenKind::QuotedIdent => match ident_value(sql, token) {
                Some(name) => out.push_str(&name),
                // Undecodable (the server refuses it): the raw text.
                None => {
                    out.push('!');
                    out.push_str(text(sql, token));
                }
            },
            TokenKind::String if keep_literals => match string_value(sql, token) {
                Some(value) => out.push_str(&value),
                None => {
                    out.push('!');
                    out.push_str(text(sql, token));
                }
            },
            TokenKind::String | TokenKind::Number if !keep_literals => {}
            _ => out.push_str(text(sql, token)),
        }
    }
}

#[cfg(test)]
mod tests;
