//! A PostgreSQL-faithful tokenizer: the part of the server's lexer that decides where
//! strings, comments and statements begin and end.
//!
//! It exists so that gatehouse and the server agree on statement boundaries no matter
//! how the text is dressed up: nested `/* */` comments, `--` comments, `'…'` strings
//! with `''` doubling, `E'…'` strings with backslash escapes, `$tag$…$tag$` dollar
//! quoting and `"…"` identifiers. Plain strings follow `standard_conforming_strings =
//! on` (the server default); the policy can flag sessions that change it.
//!
//! It never fails: an unterminated string or comment swallows the rest of the input
//! (as the server would report an error for it) and is marked so callers can refuse it.

use std::ops::Range;

/// What a token is; the text is in the source at [`Token::span`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An unquoted identifier or keyword (case-insensitive).
    Word,
    /// A `"quoted"` or `U&"quoted"` identifier.
    QuotedIdent,
    /// Any string constant: `'…'`, `E'…'`, `B'…'`, `X'…'`, `N'…'`, `U&'…'`, `$$…$$`.
    String,
    /// A numeric constant.
    Number,
    /// A positional parameter such as `$1`.
    Param,
    /// A statement separator.
    Semicolon,
    /// Any other single character (operators, parentheses, commas, dots).
    Punct,
}

/// One token of SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    /// Byte range in the source text.
    pub span: Range<usize>,
}

/// The tokens of a text, plus whether something (string, comment, quoted identifier)
/// ran to the end of the input unterminated.
#[derive(Debug, Clone, Default)]
pub struct Lexed {
    pub tokens: Vec<Token>,
    pub unterminated: bool,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_continue(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// Splits `sql` into tokens, dropping whitespace and comments.
pub fn tokenize(sql: &str) -> Lexed {
    let bytes = sql.as_bytes();
    let mut out = Lexed::default();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        let start = i;
        let at = |k: usize| bytes.get(k).copied();
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'-' if at(i + 1) == Some(b'-') => {
                i = memchr_from(bytes, i, b'\n').map_or(bytes.len(), |n| n + 1);
                continue;
            }
            b'/' if at(i + 1) == Some(b'*') => {
                match skip_block_comment(bytes, i) {
                    Some(end) => i = end,
                    None => {
                        out.unterminated = true;
                        i = bytes.len();
                    }
                }
                continue;
            }
            b'\'' => {
                i = finish_quoted(bytes, i + 1, b'\'', false, &mut out.unterminated);
                TokenKind::String
            }
            b'"' => {
                i = finish_quoted(bytes, i + 1, b'"', false, &mut out.unterminated);
                TokenKind::QuotedIdent
            }
            b'$' => match at(i + 1) {
                Some(d) if d.is_ascii_digit() => {
                    i += 1;
                    while at(i).is_some_and(|d| d.is_ascii_digit()) {
                        i += 1;
                    }
                    TokenKind::Param
                }
                _ => match dollar_tag_len(bytes, i) {
                    Some(tag_len) => {
                        let tag = bytes.get(i..i + tag_len).unwrap_or_default();
                        match find_subslice(bytes, i + tag_len, tag) {
                            Some(end) => i = end + tag_len,
                            None => {
                                out.unterminated = true;
                                i = bytes.len();
                            }
                        }
                        TokenKind::String
                    }
                    None => {
                        i += 1;
                        TokenKind::Punct
                    }
                },
            },
            b';' => {
                i += 1;
                TokenKind::Semicolon
            }
            b'0'..=b'9' => {
                i = finish_number(bytes, i);
                TokenKind::Number
            }
            b'.' if at(i + 1).is_some_and(|d| d.is_ascii_digit()) => {
                i = finish_number(bytes, i);
                TokenKind::Number
            }
            c if is_ident_start(c) => {
                // String-constant prefixes glued to a quote: E'..', B'..', X'..', N'..',
                // U&'..' and U&"..".
                let next = at(i + 1);
                match (c.to_ascii_lowercase(), next) {
                    (b'e', Some(b'\'')) => {
                        i = finish_quoted(bytes, i + 2, b'\'', true, &mut out.unterminated);
                        TokenKind::String
                    }
                    (b'b' | b'x' | b'n', Some(b'\'')) => {
                        i = finish_quoted(bytes, i + 2, b'\'', false, &mut out.unterminated);
                        TokenKind::String
                    }
                    (b'u', Some(b'&')) if matches!(at(i + 2), Some(b'\'' | b'"')) => {
                        let quote = at(i + 2).unwrap_or(b'\'');
                        i = finish_quoted(bytes, i + 3, quote, false, &mut out.unterminated);
                        if quote == b'"' {
                            TokenKind::QuotedIdent
                        } else {
                            TokenKind::String
                        }
                    }
                    _ => {
                        i += 1;
                        while at(i).is_some_and(is_ident_continue) {
                            i += 1;
                        }
                        TokenKind::Word
                    }
                }
            }
            _ => {
                // Keep multi-byte characters whole so spans stay on char boundaries.
                i += utf8_len(c);
                TokenKind::Punct
            }
        };
        out.tokens.push(Token {
            kind,
            span: start..i.min(bytes.len()),
        });
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

fn memchr_from(bytes: &[u8], from: usize, needle: u8) -> Option<usize> {
    bytes
        .get(from..)?
        .iter()
        .position(|&b| b == needle)
        .map(|p| p + from)
}

fn find_subslice(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// End of a (possibly nested) block comment starting at `start`, or `None` if it is
/// never closed. PostgreSQL nests block comments, unlike the SQL standard.
fn skip_block_comment(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b'/'), Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (Some(b'*'), Some(b'/')) => {
                depth = depth.saturating_sub(1);
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

/// Index just past the closing quote of a quoted token whose body starts at `i`.
/// A doubled quote stands for itself; with `backslash_escapes` (E'' strings) a
/// backslash escapes the next byte.
fn finish_quoted(
    bytes: &[u8],
    mut i: usize,
    quote: u8,
    backslash_escapes: bool,
    unterminated: &mut bool,
) -> usize {
    loop {
        match bytes.get(i) {
            None => {
                *unterminated = true;
                return bytes.len();
            }
            Some(b'\\') if backslash_escapes => i += 2,
            Some(&c) if c == quote => {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            Some(_) => i += 1,
        }
    }
}

/// Length of a `$tag$` opener at `i` (`$$` included), if there is one.
fn dollar_tag_len(bytes: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    match bytes.get(j) {
        Some(b'$') => return Some(2),
        Some(&c) if is_ident_start(c) => j += 1,
        _ => return None,
    }
    while let Some(&c) = bytes.get(j) {
        match c {
            b'$' => return Some(j + 1 - i),
            c if is_ident_start(c) || c.is_ascii_digit() => j += 1,
            _ => return None,
        }
    }
    None
}

fn finish_number(bytes: &[u8], mut i: usize) -> usize {
    while let Some(&c) = bytes.get(i) {
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
            let exponent_sign = (c == b'e' || c == b'E')
                && matches!(bytes.get(i + 1), Some(b'+' | b'-'))
                && bytes.get(i + 2).is_some_and(|d| d.is_ascii_digit());
            i += if exponent_sign { 2 } else { 1 };
        } else {
            break;
        }
    }
    i
}

/// The tokens of one statement: everything between top-level semicolons.
pub fn split_statements(lexed: &Lexed) -> impl Iterator<Item = &[Token]> {
    lexed
        .tokens
        .split(|t| t.kind == TokenKind::Semicolon)
        .filter(|s| !s.is_empty())
}

/// The token's text in `sql`.
pub fn text<'a>(sql: &'a str, token: &Token) -> &'a str {
    sql.get(token.span.clone()).unwrap_or_default()
}

/// Whether `token` is the (case-insensitive) keyword `word`.
pub fn is_word(sql: &str, token: &Token, word: &str) -> bool {
    token.kind == TokenKind::Word && text(sql, token).eq_ignore_ascii_case(word)
}

/// Appends the normalized form of `tokens` to `out`: keywords lowercased, comments and
/// layout gone, and (unless `keep_literals`) every string or number constant replaced
/// by `$?`. Statements are separated by `;`.
///
/// Tokens that touch in the source stay touching (`<=` is not `< =`); any gap
/// (whitespace or comments) becomes one space. The placeholder `$?` cannot come from
/// real tokens: a lone `$` is always followed by a gap or a non-operator character.
pub fn normalize_into(sql: &str, tokens: &[Token], keep_literals: bool, out: &mut String) {
    let mut previous_end = None;
    for token in tokens {
        if previous_end.is_some_and(|end| end != token.span.start) {
            out.push(' ');
        }
        previous_end = Some(token.span.end);
        let t = text(sql, token);
        match token.kind {
            TokenKind::Word => out.extend(t.chars().map(|c| c.to_ascii_lowercase())),
            TokenKind::String | TokenKind::Number if !keep_literals => out.push_str("$?"),
            _ => out.push_str(t),
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn statements(sql: &str) -> Vec<String> {
        let lexed = tokenize(sql);
        split_statements(&lexed)
            .map(|s| {
                let mut out = String::new();
                normalize_into(sql, s, true, &mut out);
                out
            })
            .collect()
    }

    #[test]
    fn semicolons_inside_strings_and_comments_do_not_split() {
        assert_eq!(
            statements("select 'a;b' /* ; */ -- ;\n; select 2"),
            ["select 'a;b'", "select 2"]
        );
    }

    #[test]
    fn escape_string_backslash_quote_does_not_end_the_string() {
        let s = statements(r"select E'it\'s; drop table t'; select 1");
        assert_eq!(s, [r"select E'it\'s; drop table t'", "select 1"]);
    }

    #[test]
    fn plain_string_backslash_is_literal_under_standard_conforming_strings() {
        let s = statements(r"select 'a\'; drop table t; --'");
        assert_eq!(s, [r"select 'a\'", "drop table t"]);
    }

    #[test]
    fn nested_block_comments_hide_their_whole_body() {
        assert_eq!(
            statements("/* a /* b */ drop table t; */ select 1"),
            ["select 1"]
        );
    }

    #[test]
    fn dollar_quotes_with_tags_span_inner_dollars_and_semicolons() {
        let s = statements("do language plpgsql $x$ begin; $$ ; end $x$; select $1");
        assert_eq!(
            s,
            ["do language plpgsql $x$ begin; $$ ; end $x$", "select $1"]
        );
    }

    #[test]
    fn literals_are_removed_from_the_fingerprint() {
        let sql = "SELECT  *\nFROM t WHERE a = 'x' AND b = 42 -- note";
        let lexed = tokenize(sql);
        let mut out = String::new();
        normalize_into(sql, &lexed.tokens, false, &mut out);
        assert_eq!(out, "select * from t where a = $? and b = $?");
    }

    #[test]
    fn unterminated_constructs_are_flagged() {
        assert!(tokenize("select 'abc").unterminated);
        assert!(tokenize("select /* /* */").unterminated);
        assert!(tokenize("select $q$ abc").unterminated);
        assert!(!tokenize("select 'abc'").unterminated);
    }

    #[test]
    fn identifiers_may_contain_dollars_without_starting_a_quote() {
        let s = statements("select a$b, $1 from t$x");
        assert_eq!(s, ["select a$b, $1 from t$x"]);
    }
}
