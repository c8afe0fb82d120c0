//! Client encodings the filter can lex, and the statements that would switch to
//! one it cannot.
//!
//! gatehouse reads the bytes the client sends; the server first converts them from
//! the client encoding to its own, then lexes. In most encodings every byte of a
//! multibyte character is at least 0x80, so no quote, backslash or semicolon can
//! hide inside one and the filter sees the server's token boundaries. In SJIS,
//! BIG5, GBK, GB18030, UHC, JOHAB and SHIFT_JIS_2004 (the server's "client-only"
//! encodings) a trailing byte can be `\`, `;` or a letter: `E'\x81\'; drop …'` is
//! one string to a filter reading UTF-8 and a string, a `;` and a DROP to the
//! server. So those encodings are refused, whatever the policy says.

use super::lexer::{self, Token, TokenKind, ident_value, is_punct, is_word};

/// Whether the filter can lex text in the client encoding `name` (as a client or a
/// ParameterStatus spells it): the server's names and aliases, as the startup
/// parameter check reads them ([`crate::startup::encoding`]). Unknown names are not
/// safe.
pub fn is_safe_client_encoding(name: &str) -> bool {
    crate::startup::encoding(name).is_some_and(|(_, safe)| safe)
}

/// Whether the text could change meaning if the client encoding were one of the
/// unsafe ones: some byte of 0x80 or above is followed by an ASCII byte that an
/// unsafe encoding could take as the character's second byte and that matters to
/// the lexer outside a word (`\`, `;`, `[`, …). Letters, digits and `_` would only
/// lengthen a word.
pub fn ambiguous_under_unsafe_encodings(sql: &[u8]) -> bool {
    sql.windows(2).any(|pair| {
        let [lead, next] = pair else { return false };
        *lead >= 0x80
            && (0x30..=0x7e).contains(next)
            && !(next.is_ascii_alphanumeric() || *next == b'_')
    })
}

/// Whether a statement may set the client encoding to one the filter cannot lex:
/// `client_encoding = | TO <value>` (SET, ALTER ROLE/DATABASE/SYSTEM … SET, a
/// function's SET clause), `SET NAMES <value>`, `set_config('client_encoding', …)`
/// or `set_config` of a setting name that is not a constant. A value passes only
/// when it is a constant naming a safe encoding, or DEFAULT.
pub(super) fn sets_unsafe_client_encoding(sql: &str, tokens: &[Token]) -> EncodingCheck {
    let mut check = EncodingCheck::default();
    check.unsafe_encoding = scan(sql, tokens, &mut check.literal_sensitive);
    check
}

/// The outcome of [`sets_unsafe_client_encoding`].
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct EncodingCheck {
    pub unsafe_encoding: bool,
    /// The outcome depended on a string constant's value.
    pub literal_sensitive: bool,
}

fn scan(sql: &str, tokens: &[Token], literal_sensitive: &mut bool) -> bool {
    let name_is = |t: &Token, n: &str| {
        matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent)
            && ident_value(sql, t).is_some_and(|v| v.eq_ignore_ascii_case(n))
    };
    let safe_value = |k: usize| {
        tokens.get(k).is_some_and(|t| match t.kind {
            TokenKind::Word if is_word(sql, t, "default") => true,
            TokenKind::Word | TokenKind::QuotedIdent => {
                ident_value(sql, t).is_some_and(|v| is_safe_client_encoding(&v))
            }
            TokenKind::String => {
                lexer::string_value(sql, t).is_some_and(|v| is_safe_client_encoding(&v))
            }
            _ => false,
        })
    };
    for (i, token) in tokens.iter().enumerate() {
        let next = |k: usize| tokens.get(i + k);
        if name_is(token, "client_encoding")
            || name_is(token, "names")
            || name_is(token, "set_config")
        {
            *literal_sensitive = true;
        }
        if name_is(token, "client_encoding") {
            let assigns = next(1).is_some_and(|t| is_punct(sql, t, "=") || is_word(sql, t, "to"));
            if assigns && !safe_value(i + 2) {
                return true;
            }
        }
        if is_word(sql, token, "names")
            && i.checked_sub(1)
                .and_then(|p| tokens.get(p))
                .is_some_and(|p| {
                    is_word(sql, p, "set") || is_word(sql, p, "session") || is_word(sql, p, "local")
                })
            && !safe_value(i + 1)
        {
            return true;
        }
        if name_is(token, "set_config") && next(1).is_some_and(|t| is_punct(sql, t, "(")) {
            let setting = next(2)
                .filter(|t| t.kind == TokenKind::String)
                .and_then(|t| lexer::string_value(sql, t));
            let comma = next(3).is_some_and(|t| is_punct(sql, t, ","));
            match setting {
                Some(name) if comma => {
                    if name.trim().eq_ignore_ascii_case("client_encoding") && !safe_value(i + 4) {
                        return true;
                    }
                }
                _ => return true,
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::lexer::tokenize;

    fn unsafe_(sql: &str) -> bool {
        sets_unsafe_client_encoding(sql, &tokenize(sql).tokens).unsafe_encoding
    }

    #[test]
    fn client_only_encodings_and_their_aliases_are_unsafe() {
        for name in [
            "SJIS",
            "shift_jis",
            "Shift-JIS",
            "mskanji",
            "WIN932",
            "BIG5",
            "GBK",
            "cp936",
            "GB18030",
            "UHC",
            "windows949",
            "JOHAB",
            "SHIFT_JIS_2004",
            "nonsense",
            "",
        ] {
            assert!(!is_safe_client_encoding(name), "{name}");
        }
        for name in [
            "UTF8",
            "utf-8",
            "Unicode",
            "LATIN1",
            "iso-8859-1",
            "EUC_JP",
            "SQL_ASCII",
            "WIN1252",
        ] {
            assert!(is_safe_client_encoding(name), "{name}");
        }
    }

    #[test]
    fn every_way_of_setting_an_unsafe_encoding_is_found() {
        for sql in [
            "set client_encoding = 'sjis'",
            "SET CLIENT_ENCODING TO sjis",
            "set session client_encoding to 'BIG5'",
            "set local \"client_encoding\" = 'gbk'",
            "set U&\"client\\005fencoding\" = 'gbk'",
            "set names 'sjis'",
            "set names gb18030",
            "select set_config('client_encoding', 'sjis', false)",
            "select pg_catalog.set_config(E'client\\x5fencoding', 'uhc', false)",
            "select set_config(name, 'x', false) from t",
            "select set_config('client_encoding', current_setting('x'), false)",
            "alter role r set client_encoding = 'johab'",
            "alter database d set client_encoding to 'sjis'",
            "create function f() returns int language sql set client_encoding = 'sjis' as 'select 1'",
            "set client_encoding = $1",
        ] {
            assert!(unsafe_(sql), "{sql}");
        }
        for sql in [
            "set client_encoding = 'UTF8'",
            "set client_encoding to default",
            "set names 'latin1'",
            "reset client_encoding",
            "show client_encoding",
            "select set_config('client_encoding', 'utf8', false)",
            "select set_config('work_mem', '1MB', false)",
            "select current_setting('client_encoding')",
        ] {
            assert!(!unsafe_(sql), "{sql}");
        }
    }

    #[test]
    fn high_bytes_before_lexically_significant_ascii_are_ambiguous() {
        assert!(ambiguous_under_unsafe_encodings(
            b"select E'\x81\\'; drop table t; --'"
        ));
        assert!(ambiguous_under_unsafe_encodings("select 'é;'".as_bytes()));
        assert!(!ambiguous_under_unsafe_encodings(
            "select 'héllo', naïve from t".as_bytes()
        ));
        assert!(!ambiguous_under_unsafe_encodings(b"select 1; select 2"));
    }
}
