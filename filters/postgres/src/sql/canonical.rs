//! The text sqlparser is given: one statement's tokens, as the server read them,
//! written back in forms sqlparser reads the same way.
//!
//! sqlparser has its own lexer, which does not follow the server's (it knows no
//! `U&` escapes, no string continuation, no `--` ending at `\r`, …). So it never
//! sees the client's text: every token is written out canonically, from the
//! token and its decoded value:
//! - names: unquoted ASCII words as written; other words, and every quoted or `U&`
//!   identifier, as a `"quoted"` identifier holding the name the server resolves;
//! - string constants of every form as `'…'` holding the decoded value (bit and
//!   hex strings as `B'…'` / `X'…'`);
//! - numbers without `_` separators, `0x`/`0o`/`0b` integers in decimal;
//! - punctuation as written, always separated from other punctuation.
//!
//! Then a few PostgreSQL forms that sqlparser's grammar lacks are rewritten into
//! equivalents it has. Each rewrite keeps every name, function call and subquery
//! the policy judges: what a rewrite must drop from the statement (an array
//! subscript in an assignment target, an ON CONFLICT inference expression, a COPY
//! WHERE clause) is kept as an extra expression, analyzed as `SELECT <expr>` and
//! merged into the statement's analysis.

use super::lexer::{self, Form, Token, TokenKind, ident_value, is_punct, is_word, string_bytes};

/// A statement rewritten for sqlparser.
#[derive(Debug, Default)]
pub(super) struct Canonical {
    pub text: String,
    /// Expressions taken out of the statement, each analyzed on its own.
    pub extracted: Vec<String>,
    /// `WHERE CURRENT OF cursor` was taken out: the statement touches one row.
    pub current_of: bool,
}

/// Words after which a string constant is that keyword's argument rather than a
/// typed literal `type 'text'`.
const NOT_TYPE_NAMES: &[&str] = &[
    "interval",
    "not",
    "distinct",
    "all",
    "variadic",
    "default",
    "null",
    "array",
    "row",
    "exists",
    "any",
    "some",
    "case",
    "when",
    "then",
    "else",
    "and",
    "or",
    "is",
    "in",
    "like",
    "ilike",
    "similar",
    "escape",
    "between",
    "symmetric",
    "by",
    "as",
    "to",
    "from",
    "using",
    "on",
    "set",
    "values",
    "select",
    "where",
    "having",
    "returning",
    "uescape",
    "collate",
    "zone",
    "program",
    "delimiter",
    "encoding",
    "quote",
    "header",
    "format",
    "force",
    "true",
    "false",
    "unknown",
    "over",
    "filter",
    "within",
    "order",
    "partition",
    "limit",
    "offset",
    "fetch",
    "language",
    "with",
    "without",
    "analyze",
    "analyse",
    "verbose",
    "costs",
    "buffers",
    "settings",
    "wal",
    "timing",
    "summary",
];

/// Statements whose parenthesized `(name value, …)` option lists look like typed
/// literals.
const OPTION_LIST_STATEMENTS: &[&str] = &[
    "explain", "copy", "vacuum", "analyze", "analyse", "reindex", "cluster",
];

/// Words that can follow a complete expression, so a string constant after them is
/// never a typed literal's.
fn is_typed_literal_type(sql: &str, token: &Token) -> bool {
    token.kind == TokenKind::Word
        && !NOT_TYPE_NAMES
            .iter()
            .any(|w| lexer::text(sql, token).eq_ignore_ascii_case(w))
}

struct Writer<'a> {
    sql: &'a str,
    tokens: &'a [Token],
    out: Canonical,
    /// End of the last token written, for gaps.
    previous_end: Option<usize>,
    /// The last token written was an operator.
    previous_punct: bool,
}

impl<'a> Writer<'a> {
    fn token(&self, i: usize) -> Option<&'a Token> {
        self.tokens.get(i)
    }

    fn word(&self, i: usize, w: &str) -> bool {
        self.token(i).is_some_and(|t| is_word(self.sql, t, w))
    }

    fn punct(&self, i: usize, p: &str) -> bool {
        self.token(i).is_some_and(|t| is_punct(self.sql, t, p))
    }

    /// Writes raw canonical text; `gap` puts a space before it.
    fn raw(&mut self, text: &str, gap: bool) {
        if gap && !self.out.text.is_empty() {
            self.out.text.push(' ');
        }
        self.out.text.push_str(text);
    }

    /// Writes token `i` canonically, spaced as in the source; two operators stay
    /// apart (the server's `=-` is two tokens, which sqlparser could read as one).
    fn emit(&mut self, i: usize) {
        let Some(token) = self.token(i) else { return };
        let is_punct = token.kind == TokenKind::Punct
            && lexer::text(self.sql, token)
                .bytes()
                .all(|c| b"~!@#^&|`?+-*/%<>=".contains(&c));
        let gap = self.previous_end.is_none_or(|end| end != token.span.start)
            || (is_punct && self.previous_punct);
        let text = canonical_token(self.sql, token);
        self.raw(&text, gap);
        self.previous_end = Some(token.span.end);
        self.previous_punct = is_punct;
    }

    /// Writes `text` as a separate piece (never glued to its neighbours).
    fn insert(&mut self, text: &str) {
        self.raw(text, true);
        self.previous_end = None;
        self.previous_punct = false;
    }

    /// The index of the token closing the bracket opened at `open` (`(`/`)` or
    /// `[`/`]`), or the end of the tokens.
    fn closing(&self, open: usize) -> usize {
        let Some(first) = self.token(open) else {
            return self.tokens.len();
        };
        let (o, c) = if lexer::text(self.sql, first) == "[" {
            ("[", "]")
        } else {
            ("(", ")")
        };
        let mut depth = 0usize;
        for i in open..self.tokens.len() {
            if self.punct(i, o) {
                depth += 1;
            } else if self.punct(i, c) {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
        }
        self.tokens.len()
    }

    /// Source text of tokens `from..to`, canonically written, as one expression.
    fn piece(&self, from: usize, to: usize) -> String {
        let mut writer = Writer {
            sql: self.sql,
            tokens: self.tokens.get(from..to).unwrap_or_default(),
            out: Canonical::default(),
            previous_end: None,
            previous_punct: false,
        };
        for i in 0..writer.tokens.len() {
            writer.emit(i);
        }
        writer.out.text
    }

    /// Keeps the items of `from..to`, split on top-level `sep` (`,` or `:`), as
    /// extracted expressions.
    fn extract(&mut self, from: usize, to: usize, sep: &str) {
        let mut depth = 0usize;
        let mut start = from;
        for i in from..=to {
            let end = i == to;
            if !end {
                if self.punct(i, "(") || self.punct(i, "[") {
                    depth += 1;
                } else if self.punct(i, ")") || self.punct(i, "]") {
                    depth = depth.saturating_sub(1);
                }
            }
            if end || (depth == 0 && self.punct(i, sep)) {
                if i > start {
                    let piece = self.piece(start, i);
                    self.out.extracted.push(piece);
                }
                start = i + 1;
            }
        }
    }

    /// Drops `[…]` subscripts from the assignment target at `i` (a name, possibly
    /// qualified), keeping their expressions; returns where the target ends.
    fn assignment_target(&mut self, mut i: usize) -> usize {
        while self
            .token(i)
            .is_some_and(|t| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent))
        {
            self.emit(i);
            i += 1;
            if self.punct(i, ".") {
                self.emit(i);
                i += 1;
            } else {
                break;
            }
        }
        while self.punct(i, "[") {
            let close = self.closing(i);
            self.extract(i + 1, close, ":");
            i = close + 1;
        }
        i
    }
}

/// One token as sqlparser should read it.
fn canonical_token(sql: &str, token: &Token) -> String {
    let raw = lexer::text(sql, token);
    match token.kind {
        TokenKind::Word if raw.is_ascii() && raw.len() <= lexer::MAX_NAME_BYTES => raw.to_string(),
        TokenKind::Word | TokenKind::QuotedIdent => match ident_value(sql, token) {
            Some(name) => format!("\"{}\"", name.replace('"', "\"\"")),
            None => raw.to_string(),
        },
        TokenKind::String => {
            let Some(value) = string_bytes(sql.as_bytes(), token) else {
                return raw.to_string();
            };
            let value = String::from_utf8_lossy(&value);
            match token.form {
                Form::Bit => format!("B'{value}'"),
                Form::Hex => format!("X'{value}'"),
                _ => format!("'{}'", value.replace('\'', "''")),
            }
        }
        TokenKind::Number => canonical_number(raw),
        TokenKind::Param | TokenKind::Semicolon | TokenKind::Punct => raw.to_string(),
    }
}

fn canonical_number(raw: &str) -> String {
    let plain = raw.replace('_', "");
    let radix = match plain.get(..2).map(str::to_ascii_lowercase).as_deref() {
        Some("0x") => 16,
        Some("0o") => 8,
        Some("0b") => 2,
        _ => return plain,
    };
    plain
        .get(2..)
        .and_then(|digits| u128::from_str_radix(digits, radix).ok())
        .map_or(plain, |v| v.to_string())
}

/// The canonical text of one statement's tokens, with sqlparser's grammar gaps
/// rewritten (see the module docs).
pub(super) fn canonical(sql: &str, tokens: &[Token]) -> Canonical {
    let mut w = Writer {
        sql,
        tokens,
        out: Canonical::default(),
        previous_end: None,
        previous_punct: false,
    };
    let is_copy = w.word(0, "copy");
    let option_lists = OPTION_LIST_STATEMENTS.iter().any(|s| w.word(0, s));
    // Paren depth of an UPDATE … SET list in progress, if any.
    let mut set_list: Option<usize> = None;
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(token) = w.token(i) {
        let prev = i.checked_sub(1);
        let prev_is = |p: &str| prev.is_some_and(|k| w.punct(k, p));
        let prev_word = |p: &str| prev.is_some_and(|k| w.word(k, p));
        // Track the SET list of UPDATE, ON CONFLICT DO UPDATE and MERGE's UPDATE.
        if token.kind == TokenKind::Punct && lexer::text(sql, token) == "(" {
            depth += 1;
        } else if token.kind == TokenKind::Punct && lexer::text(sql, token) == ")" {
            depth = depth.saturating_sub(1);
            if set_list.is_some_and(|d| depth < d) {
                set_list = None;
            }
        }
        if token.kind == TokenKind::Word {
            let text = lexer::text(sql, token).to_ascii_lowercase();
            match text.as_str() {
                // British spelling: the server reads both as one keyword.
                "analyse" => {
                    w.emit_as(i, "analyze");
                    i += 1;
                    continue;
                }
                "isnull" | "notnull" if !w.punct(i + 1, "(") => {
                    w.insert(if text == "isnull" {
                        "IS NULL"
                    } else {
                        "IS NOT NULL"
                    });
                    i += 1;
                    continue;
                }
                // `TABLE t` is `SELECT * FROM t`.
                "table"
                    if (prev.is_none()
                        || prev_is("(")
                        || prev_word("union")
                        || prev_word("intersect")
                        || prev_word("except")
                        || prev_word("all"))
                        && w.token(i + 1).is_some() =>
                {
                    w.insert("SELECT * FROM");
                    i += 1;
                    continue;
                }
                "symmetric" | "asymmetric" if prev_word("between") => {
                    i += 1;
                    continue;
                }
                // Identity overrides and lock strengths judge nothing.
                "overriding"
                    if (w.word(i + 1, "system") || w.word(i + 1, "user"))
                        && w.word(i + 2, "value") =>
                {
                    i += 3;
                    continue;
                }
                "no" if prev_word("for") && w.word(i + 1, "key") => {
                    i += 2;
                    continue;
                }
                "key" if prev_word("for") && w.word(i + 1, "share") => {
                    i += 1;
                    continue;
                }
                // `ROWS FROM (f(), g())`: the same calls as a subquery's targets.
                "rows" if w.word(i + 1, "from") && w.punct(i + 2, "(") => {
                    w.insert("(SELECT");
                    i += 3;
                    continue;
                }
                // SQL/XML labels: `xmlelement(name x, xmlattributes(e AS a))`.
                "xmlelement" | "xmlattributes" | "xmlforest" if w.punct(i + 1, "(") => {
                    i = w.xml_call(i);
                    continue;
                }
                "variadic" if prev_is("(") || prev_is(",") => {
                    i += 1;
                    continue;
                }
                "select"
                    if w.token(i + 1).is_none()
                        || w.punct(i + 1, ")")
                        || w.token(i + 1)
                            .is_some_and(|t| t.kind == TokenKind::Semicolon)
                        || w.word(i + 1, "union")
                        || w.word(i + 1, "intersect")
                        || w.word(i + 1, "except") =>
                {
                    w.emit(i);
                    w.insert("NULL");
                    i += 1;
                    continue;
                }
                "where" if w.word(i + 1, "current") && w.word(i + 2, "of") => {
                    w.out.current_of = true;
                    i += 4;
                    continue;
                }
                "where" if is_copy && depth == 0 => {
                    // COPY … WHERE <expr>: the last clause.
                    w.extract(i + 1, tokens.len(), "\u{0}");
                    break;
                }
                "trim" if w.punct(i + 1, "(") => {
                    w.emit(i);
                    w.emit(i + 1);
                    let mut k = i + 2;
                    if w.word(k, "both") || w.word(k, "leading") || w.word(k, "trailing") {
                        w.emit(k);
                        k += 1;
                    }
                    if w.word(k, "from") {
                        w.insert("' '");
                    }
                    i = k;
                    continue;
                }
                "default"
                    if w.word(i + 1, "values") && prev_word("insert") && w.word(0, "merge") =>
                {
                    w.insert("VALUES (DEFAULT)");
                    i += 2;
                    continue;
                }
                "set" => {
                    w.emit(i);
                    i += 1;
                    if !w.punct(i, "(") {
                        set_list = Some(depth);
                        i = w.assignment_target(i);
                    }
                    continue;
                }
                "conflict" if prev_word("on") && w.punct(i + 1, "(") => {
                    w.emit(i);
                    let close = w.closing(i + 1);
                    let plain_columns = (i + 2..close).all(|k| {
                        w.punct(k, ",")
                            || w.token(k).is_some_and(|t| {
                                matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent)
                                    && !w.punct(k + 1, "(")
                                    && !w.token(k + 1).is_some_and(|n| {
                                        matches!(n.kind, TokenKind::Word | TokenKind::QuotedIdent)
                                    })
                            })
                    });
                    if plain_columns {
                        i += 1;
                        continue;
                    }
                    // Inference expressions: kept as extracted expressions.
                    w.extract(i + 2, close, ",");
                    i = close + 1;
                    if w.word(i, "where") {
                        let mut end = i + 1;
                        while end < tokens.len() && !w.word(end, "do") {
                            end += 1;
                        }
                        w.extract(i + 1, end, "\u{0}");
                        i = end;
                    }
                    continue;
                }
                _ => {}
            }
            // `INSERT INTO t (a[1], …)`: subscripts in the column list.
            if text == "into" && prev_word("insert") {
                w.emit(i);
                let mut k = i + 1;
                while w
                    .token(k)
                    .is_some_and(|t| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent))
                    || w.punct(k, ".")
                {
                    w.emit(k);
                    k += 1;
                }
                if w.word(k, "as") {
                    w.emit(k);
                    w.emit(k + 1);
                    k += 2;
                }
                if w.punct(k, "(") {
                    let close = w.closing(k);
                    w.emit(k);
                    let mut item = k + 1;
                    while item < close {
                        item = w.assignment_target(item);
                        while item < close && !w.punct(item, ",") {
                            w.emit(item);
                            item += 1;
                        }
                        if item < close {
                            w.emit(item);
                            item += 1;
                        }
                    }
                    i = close;
                    continue;
                }
                i = k;
                continue;
            }
            // A typed literal `type 'text'` where an expression starts.
            if !option_lists
                && w.token(i + 1).is_some_and(|t| t.kind == TokenKind::String)
                && is_typed_literal_type(sql, token)
                && prev.is_some_and(|k| {
                    w.token(k).is_some_and(|t| {
                        t.kind == TokenKind::Punct
                            && !matches!(lexer::text(sql, t), ")" | "]" | ".")
                    })
                })
            {
                let literal = w.piece(i + 1, i + 2);
                let type_name = canonical_token(sql, token);
                w.insert(&format!("({literal})::{type_name}"));
                i += 2;
                continue;
            }
        }
        if token.kind == TokenKind::Punct
            && lexer::text(sql, token) == ","
            && set_list.is_some_and(|d| d == depth)
        {
            w.emit(i);
            i = w.assignment_target(i + 1);
            continue;
        }
        if token.kind == TokenKind::Word
            && (is_word(sql, token, "where")
                || is_word(sql, token, "from")
                || is_word(sql, token, "returning")
                || is_word(sql, token, "when"))
            && set_list.is_some_and(|d| d == depth)
        {
            set_list = None;
        }
        w.emit(i);
        i += 1;
    }
    w.out
}

impl Writer<'_> {
    /// An SQL/XML call at `i`: `name x` becomes the string `'x'`, `AS label`
    /// goes, the expressions stay (nested calls alike). Returns where it ends.
    fn xml_call(&mut self, i: usize) -> usize {
        self.emit(i);
        self.emit(i + 1);
        let close = self.closing(i + 1);
        let mut k = i + 2;
        let mut level = 0usize;
        while k < close {
            if self.punct(k, "(") {
                level += 1;
            } else if self.punct(k, ")") {
                level = level.saturating_sub(1);
            }
            let nested = ["xmlelement", "xmlattributes", "xmlforest"]
                .iter()
                .any(|f| self.word(k, f))
                && self.punct(k + 1, "(");
            if nested {
                k = self.xml_call(k);
            } else if k == i + 2 && self.word(k, "name") {
                if let Some(label) = self.token(k + 1) {
                    let name = ident_value(self.sql, label).unwrap_or_default();
                    self.insert(&format!("'{}'", name.replace('\'', "''")));
                }
                k += 2;
            } else if level == 0 && self.word(k, "as") {
                k += 2;
            } else {
                self.emit(k);
                k += 1;
            }
        }
        self.emit(close);
        close + 1
    }

    fn emit_as(&mut self, i: usize, text: &str) {
        let Some(token) = self.token(i) else { return };
        let gap = self.previous_end.is_none_or(|end| end != token.span.start);
        self.raw(text, gap);
        self.previous_end = Some(token.span.end);
        self.previous_punct = false;
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::sql::lexer::tokenize;

    fn canon(sql: &str) -> Canonical {
        let lexed = tokenize(sql);
        assert!(lexed.error.is_none(), "{sql}: {:?}", lexed.error);
        canonical(sql, &lexed.tokens)
    }

    #[test]
    fn tokens_are_written_as_the_server_read_them() {
        assert_eq!(
            canon("select U&\"d\\0061t\\+000061\", U&'\\0041' , 'a'\n'b', E'\\x41\\'', $q$x'$q$")
                .text,
            "select \"data\", 'A' , 'ab', 'A''', 'x'''"
        );
        assert_eq!(
            canon("select \"Ab\"\"c\", ÄB, 0x1F, 1_000, b'1' -- c\r, x'f'").text,
            "select \"Ab\"\"c\", \"Äb\", 31, 1000, B'1' , X'f'"
        );
        assert_eq!(canon("select 1<=-2, a::int").text, "select 1<= -2, a::int");
    }

    #[test]
    fn grammar_gaps_are_rewritten_keeping_what_policy_judges() {
        let c = canon("update t set a[f(1):g(2)] = 1, b[h()] = 2 where current of c");
        assert_eq!(c.text, "update t set a = 1, b = 2");
        assert_eq!(c.extracted, ["f(1)", "g(2)", "h()"]);
        assert!(c.current_of);
        let c = canon("insert into t (a[k()], b) values (1, 2)");
        assert_eq!(c.text, "insert into t (a , b) values (1, 2)");
        assert_eq!(c.extracted, ["k()"]);
        let c = canon(
            "insert into t values (1) on conflict ((lower(e)), f(x) text_ops) where g(y) do nothing",
        );
        assert_eq!(c.text, "insert into t values (1) on conflict do nothing");
        assert_eq!(c.extracted, ["(lower(e))", "f(x) text_ops", "g(y)"]);
        let c = canon("copy t from stdin where f(x) > 1");
        assert_eq!(c.text, "copy t from stdin");
        assert_eq!(c.extracted, ["f(x) > 1"]);
        assert_eq!(
            canon("select cast(name 'x' as text)").text,
            "select cast( ('x')::name as text)"
        );
        assert_eq!(
            canon("select trim(both from x)").text,
            "select trim(both ' ' from x)"
        );
        assert_eq!(
            canon("select 1 where x isnull").text,
            "select 1 where x IS NULL"
        );
        assert_eq!(
            canon("select f(variadic array[1])").text,
            "select f( array[1])"
        );
        assert_eq!(canon("select;").text, "select NULL ;");
        assert_eq!(canon("table t").text, "SELECT * FROM t");
        assert_eq!(
            canon("explain analyse select 1").text,
            "explain analyze select 1"
        );
        assert_eq!(
            canon("insert into t (id) overriding system value values (1)").text,
            "insert into t (id) values (1)"
        );
        assert_eq!(
            canon("select * from t for no key update").text,
            "select * from t for update"
        );
        assert_eq!(
            canon("select * from rows from (f(1), g()) as r(a, b)").text,
            "select * from (SELECT f(1), g()) as r(a, b)"
        );
        assert_eq!(
            canon("select xmlelement(name item, xmlattributes(f(1) as id), 'x')").text,
            "select xmlelement( 'item' , xmlattributes(f(1) ), 'x')"
        );
        assert_eq!(
            canon("merge into t using s on true when not matched then insert default values").text,
            "merge into t using s on true when not matched then insert VALUES (DEFAULT)"
        );
    }
}
