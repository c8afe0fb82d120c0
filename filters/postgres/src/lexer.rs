//! A small PostgreSQL lexer: enough to split a Query into statements, name each
//! statement's kind and replace literals by placeholders. It understands quoted
//! identifiers, string literals (`'…'`, `E'…'`, `B'…'`, `X'…'`, `U&'…'`), dollar
//! quoting, nested block comments, line comments, and `BEGIN ATOMIC … END` bodies.
//! It assumes `standard_conforming_strings = on`, the server default.

use std::ops::Range;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Spaces, line and block comments.
    Trivia,
    /// A keyword or unquoted identifier.
    Word,
    /// `"identifier"`.
    QuotedIdent,
    /// A string, bit-string or dollar-quoted literal.
    String,
    /// A numeric literal.
    Number,
    /// A positional parameter `$n`.
    Param,
    Semicolon,
    OpenParen,
    CloseParen,
    /// Any other operator or punctuation byte.
    Other,
}

/// Iterator over `(kind, byte range)` tokens of SQL text. Never fails: an
/// unterminated literal or comment extends to the end of the text.
pub struct Lexer<'a> {
    sql: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(sql: &'a [u8]) -> Self {
        Self { sql, pos: 0 }
    }

    fn at(&self, i: usize) -> u8 {
        self.sql.get(i).copied().unwrap_or(0)
    }

    fn is_word_start(b: u8) -> bool {
        b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
    }

    fn is_word_char(b: u8) -> bool {
        Self::is_word_start(b) || b.is_ascii_digit() || b == b'$'
    }

    /// End of a quoted run starting at `start` (the opening quote), where a
    /// doubled quote escapes it and `backslash` enables `\x` escapes.
    fn quoted_end(&self, start: usize, quote: u8, backslash: bool) -> usize {
        let mut i = start + 1;
        while i < self.sql.len() {
            let b = self.at(i);
            if backslash && b == b'\\' {
                i += 2;
            } else if b == quote {
                if self.at(i + 1) == quote {
                    i += 2;
                } else {
                    return i + 1;
                }
            } else {
                i += 1;
            }
        }
        self.sql.len()
    }

    /// If a dollar-quote opening tag starts at `start`, the end of the whole literal.
    fn dollar_quoted_end(&self, start: usize) -> Option<usize> {
        let rest = self.sql.get(start + 1..)?;
        let tag_len = rest.iter().position(|&b| b == b'$')?;
        let tag = rest.get(..tag_len)?;
        let valid_tag = match tag.first() {
            None => true,
            Some(&first) => {
                Self::is_word_start(first)
                    && !first.is_ascii_digit()
                    && tag.iter().all(|&b| Self::is_word_char(b) && b != b'$')
            }
        };
        if !valid_tag {
            return None;
        }
        let delimiter = self.sql.get(start..start + tag_len + 2)?;
        let body_start = start + tag_len + 2;
        let body = self.sql.get(body_start..)?;
        Some(
            match body.windows(delimiter.len()).position(|w| w == delimiter) {
                Some(p) => body_start + p + delimiter.len(),
                None => self.sql.len(),
            },
        )
    }
}

impl Iterator for Lexer<'_> {
    type Item = (TokenKind, Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.pos;
        let b = *self.sql.get(start)?;
        let next = self.at(start + 1);
        let (kind, end) = match b {
            b if b.is_ascii_whitespace() => {
                let n = self.sql.get(start..).map_or(0, |s| {
                    s.iter().take_while(|b| b.is_ascii_whitespace()).count()
                });
                (TokenKind::Trivia, start + n)
            }
            b'-' if next == b'-' => {
                let n = self
                    .sql
                    .get(start..)
                    .map_or(0, |s| s.iter().take_while(|&&b| b != b'\n').count());
                (TokenKind::Trivia, start + n)
            }
            b'/' if next == b'*' => {
                let mut depth = 0usize;
                let mut i = start;
                while i < self.sql.len() {
                    match (self.at(i), self.at(i + 1)) {
                        (b'/', b'*') => {
                            depth += 1;
                            i += 2;
                        }
                        (b'*', b'/') => {
                            depth = depth.saturating_sub(1);
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => i += 1,
                    }
                }
                (TokenKind::Trivia, i.min(self.sql.len()))
            }
            b'\'' => (TokenKind::String, self.quoted_end(start, b'\'', false)),
            b'"' => (TokenKind::QuotedIdent, self.quoted_end(start, b'"', false)),
            b'$' if next.is_ascii_digit() => {
                let n = self
                    .sql
                    .get(start + 1..)
                    .map_or(0, |s| s.iter().take_while(|b| b.is_ascii_digit()).count());
                (TokenKind::Param, start + 1 + n)
            }
            b'$' => match self.dollar_quoted_end(start) {
                Some(end) => (TokenKind::String, end),
                None => (TokenKind::Other, start + 1),
            },
            b'0'..=b'9' => (TokenKind::Number, self.number_end(start)),
            b'.' if next.is_ascii_digit() => (TokenKind::Number, self.number_end(start)),
            b if Self::is_word_start(b) => {
                // Prefixed strings: E'..', B'..', X'..', N'..', U&'..'.
                let upper = b.to_ascii_uppercase();
                if next == b'\'' && matches!(upper, b'E' | b'B' | b'X' | b'N') {
                    (
                        TokenKind::String,
                        self.quoted_end(start + 1, b'\'', upper == b'E'),
                    )
                } else if upper == b'U' && next == b'&' && self.at(start + 2) == b'\'' {
                    (TokenKind::String, self.quoted_end(start + 2, b'\'', false))
                } else if upper == b'U' && next == b'&' && self.at(start + 2) == b'"' {
                    (
                        TokenKind::QuotedIdent,
                        self.quoted_end(start + 2, b'"', false),
                    )
                } else {
                    let n = self.sql.get(start..).map_or(1, |s| {
                        s.iter().take_while(|&&b| Self::is_word_char(b)).count()
                    });
                    (TokenKind::Word, start + n)
                }
            }
            b';' => (TokenKind::Semicolon, start + 1),
            b'(' => (TokenKind::OpenParen, start + 1),
            b')' => (TokenKind::CloseParen, start + 1),
            _ => (TokenKind::Other, start + 1),
        };
        let end = end.clamp(start + 1, self.sql.len());
        self.pos = end;
        Some((kind, start..end))
    }
}

impl Lexer<'_> {
    fn number_end(&self, start: usize) -> usize {
        let mut i = start;
        while i < self.sql.len() {
            let b = self.at(i);
            let prev = if i > start { self.at(i - 1) } else { 0 };
            let exponent_sign = (b == b'+' || b == b'-')
                && matches!(prev, b'e' | b'E')
                && !self.is_hex_number(start);
            if b.is_ascii_alphanumeric()
                || b == b'_'
                || (b == b'.' && self.at(i + 1) != b'.')
                || exponent_sign
            {
                i += 1;
            } else {
                break;
            }
        }
        i
    }

    fn is_hex_number(&self, start: usize) -> bool {
        self.at(start) == b'0' && matches!(self.at(start + 1), b'x' | b'X')
    }
}

/// Byte ranges of the statements in `sql`, split on top-level semicolons and
/// trimmed of surrounding whitespace and comments; empty statements are skipped,
/// as the server does.
pub fn split_statements(sql: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut paren_depth = 0usize;
    let mut atomic_depth = 0usize;
    let mut previous_word_was_begin = false;
    let mut current: Option<Range<usize>> = None;
    for (kind, range) in Lexer::new(sql) {
        match kind {
            TokenKind::Trivia => continue,
            TokenKind::Semicolon if paren_depth == 0 && atomic_depth == 0 => {
                out.extend(current.take());
                previous_word_was_begin = false;
                continue;
            }
            TokenKind::OpenParen => paren_depth += 1,
            TokenKind::CloseParen => paren_depth = paren_depth.saturating_sub(1),
            TokenKind::Word => {
                let word = sql.get(range.clone()).unwrap_or_default();
                let opens_block = (word.eq_ignore_ascii_case(b"atomic") && previous_word_was_begin)
                    || (atomic_depth > 0 && word.eq_ignore_ascii_case(b"case"));
                if opens_block {
                    atomic_depth += 1;
                } else if atomic_depth > 0 && word.eq_ignore_ascii_case(b"end") {
                    atomic_depth -= 1;
                }
                previous_word_was_begin = word.eq_ignore_ascii_case(b"begin");
            }
            _ => {}
        }
        if kind != TokenKind::Word {
            previous_word_was_begin = false;
        }
        current = Some(match current {
            Some(c) => c.start..range.end,
            None => range,
        });
    }
    out.extend(current);
    out
}

/// The statement's first keyword, uppercased (`SELECT`, `WITH`, `INSERT`…).
pub fn statement_kind(sql: &[u8]) -> Option<String> {
    Lexer::new(sql)
        .find(|(k, _)| !matches!(k, TokenKind::Trivia | TokenKind::OpenParen))
        .filter(|(k, _)| *k == TokenKind::Word)
        .and_then(|(_, r)| sql.get(r))
        .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase())
}

/// `sql` with every string and numeric literal replaced by a `$n` placeholder,
/// numbered after the highest parameter the text already uses.
pub fn redact_literals(sql: &[u8]) -> String {
    let highest_param = Lexer::new(sql)
        .filter(|(k, _)| *k == TokenKind::Param)
        .filter_map(|(_, r)| sql.get(r.start + 1..r.end))
        .filter_map(|digits| std::str::from_utf8(digits).ok()?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    let mut next = highest_param;
    let mut out = String::with_capacity(sql.len());
    for (kind, range) in Lexer::new(sql) {
        match kind {
            TokenKind::String | TokenKind::Number => {
                next = next.saturating_add(1);
                out.push('$');
                out.push_str(&next.to_string());
            }
            _ => out.push_str(&String::from_utf8_lossy(sql.get(range).unwrap_or_default())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(sql: &str) -> Vec<&str> {
        split_statements(sql.as_bytes())
            .into_iter()
            .map(|r| sql.get(r).unwrap())
            .collect()
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        assert_eq!(split("select 1; select 2"), ["select 1", "select 2"]);
        assert_eq!(
            split("select ';'; select \";\""),
            ["select ';'", "select \";\""]
        );
        assert_eq!(
            split("select $$a;b$$; select $x$ $$;$$ $x$"),
            ["select $$a;b$$", "select $x$ $$;$$ $x$"]
        );
        assert_eq!(
            split("select E'\\';'; select 2"),
            ["select E'\\';'", "select 2"]
        );
        assert_eq!(
            split("select 1 -- ; no\n; select /* ; /* ; */ */ 2"),
            ["select 1", "select /* ; /* ; */ */ 2"]
        );
        assert_eq!(
            split(
                "create rule r as on insert to t do also (insert into a values (1); insert into b values (2)); select 3"
            ),
            [
                "create rule r as on insert to t do also (insert into a values (1); insert into b values (2))",
                "select 3"
            ]
        );
        assert_eq!(
            split(
                "create function f() returns int begin atomic select 1; select case when true then 2 end; end; select 9"
            ),
            [
                "create function f() returns int begin atomic select 1; select case when true then 2 end; end",
                "select 9"
            ]
        );
    }

    #[test]
    fn empty_statements_are_skipped() {
        assert_eq!(split(";; -- only a comment\n ;"), Vec::<&str>::new());
        assert_eq!(split(" select 1 ;; "), ["select 1"]);
    }

    #[test]
    fn kind_is_first_keyword_uppercased() {
        assert_eq!(
            statement_kind(b"  /* c */ select 1").as_deref(),
            Some("SELECT")
        );
        assert_eq!(statement_kind(b"(select 1)").as_deref(), Some("SELECT"));
        assert_eq!(
            statement_kind(b"with x as (select 1) delete from t").as_deref(),
            Some("WITH")
        );
        assert_eq!(statement_kind(b"-- nothing"), None);
    }

    #[test]
    fn literals_become_numbered_placeholders() {
        assert_eq!(
            redact_literals(
                b"select * from t where a = 'x''y' and b = 1.5e-3 and c = $$z$$ and d = E'\\n'"
            ),
            "select * from t where a = $1 and b = $2 and c = $3 and d = $4"
        );
        assert_eq!(
            redact_literals(b"select $2, 'a', t1.c2 from t1"),
            "select $2, $3, t1.c2 from t1"
        );
        assert_eq!(redact_literals(b"select x'1f', -7"), "select $1, -$2");
    }

    #[test]
    fn lexer_terminates_on_unterminated_input() {
        for sql in ["'abc", "$$abc", "/* abc", "\"abc", "E'\\", "$a", "1e", "U&"] {
            let tokens: Vec<_> = Lexer::new(sql.as_bytes()).collect();
            assert_eq!(tokens.last().unwrap().1.end, sql.len(), "{sql}");
        }
    }
}
