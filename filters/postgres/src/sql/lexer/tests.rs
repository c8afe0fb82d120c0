#![allow(clippy::indexing_slicing)]

use super::*;
use proptest::prelude::*;

const OFF: Settings = Settings {
    standard_conforming_strings: false,
};

/// Each statement's tokens as `kind:text`, joined by spaces.
fn statements_with(sql: &str, settings: Settings) -> Vec<String> {
    let lexed = tokenize_with(sql, settings);
    assert!(lexed.error.is_none(), "{sql:?}: {:?}", lexed.error);
    lexed
        .statement_tokens()
        .map(|tokens| {
            tokens
                .iter()
                .map(|t| text(sql, t))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn statements(sql: &str) -> Vec<String> {
    statements_with(sql, Settings::default())
}

fn error(sql: &str) -> Option<&'static str> {
    tokenize(sql).error.map(|e| e.message)
}

fn kinds(sql: &str) -> Vec<TokenKind> {
    tokenize(sql).tokens.iter().map(|t| t.kind).collect()
}

#[test]
fn line_comments_end_at_carriage_return_as_well_as_newline() {
    assert_eq!(
        statements("select 1 --\r; update customers set notes = notes"),
        ["select 1", "update customers set notes = notes"]
    );
    assert_eq!(
        statements("select 1 -- ;\n; select 2"),
        ["select 1", "select 2"]
    );
    assert_eq!(statements("select 1 -- ; select 2"), ["select 1"]);
}

#[test]
fn block_comments_nest_and_must_close() {
    assert_eq!(
        statements("/* a /* b */ drop table t; */ select 1; /**/ select/*x*/2"),
        ["select 1", "select 2"]
    );
    assert_eq!(
        statements("select 1 /*/ ; */ ; select 2"),
        ["select 1", "select 2"]
    );
    assert_eq!(error("select 1 /* /* */"), Some("unterminated /* comment"));
    assert_eq!(error("select 1 /*/"), Some("unterminated /* comment"));
}

#[test]
fn standard_strings_double_quotes_and_keep_backslashes() {
    assert_eq!(
        statements(r"select 'a\'; drop table t; --'"),
        [r"select 'a\'", "drop table t"]
    );
    assert_eq!(
        statements("select 'it''s;'; select 2"),
        ["select 'it''s;'", "select 2"]
    );
}

#[test]
fn without_standard_conforming_strings_plain_strings_take_backslash_escapes() {
    assert_eq!(
        statements_with(r"select 'a\'; drop table t; --'", OFF),
        [r"select 'a\'; drop table t; --'"]
    );
    let sql = r"select N'a\'b'";
    let lexed = tokenize_with(sql, OFF);
    assert_eq!(string_value(sql, &lexed.tokens[1]).as_deref(), Some("a'b"));
    // U&'' strings are refused when standard_conforming_strings is off.
    assert!(tokenize_with("select U&'x'", OFF).error.is_some());
}

#[test]
fn escape_strings_decode_every_escape() {
    let sql = r"select E'\'\\\n\t\x41\101\u0042\U00000043\q\b', e'x'";
    let lexed = tokenize(sql);
    assert_eq!(
        string_bytes(sql.as_bytes(), &lexed.tokens[1]).unwrap(),
        b"'\\\n\tAABCq\x08"
    );
    assert_eq!(
        statements(r"select E'\'; drop'; select 2"),
        [r"select E'\'; drop'", "select 2"]
    );
    assert_eq!(error(r"select E'\u12'"), Some("invalid Unicode escape"));
    // Escapes spelling bytes that are not UTF-8 are refused, as the server does.
    assert!(error(r"select E'\600'").is_some());
    assert!(error(r"select E'\xff'").is_some());
    assert!(error(r"select E'\xc3\xa9'").is_none());
    assert_eq!(
        error(r"select E'\uD800'"),
        Some("invalid Unicode surrogate pair")
    );
    let sql = r"select E'\uD83D\uDE00'";
    assert_eq!(
        string_value(sql, &tokenize(sql).tokens[1]).as_deref(),
        Some("😀")
    );
}

#[test]
fn strings_continue_across_whitespace_holding_a_newline() {
    let sql = "select 'a'\n'b' -- c\r\n  'c', 'd' 'e'";
    let lexed = tokenize(sql);
    assert_eq!(string_value(sql, &lexed.tokens[1]).as_deref(), Some("abc"));
    // Without a newline the two constants stay apart (a syntax error for the server).
    assert_eq!(
        kinds("select 'd' 'e'"),
        [TokenKind::Word, TokenKind::String, TokenKind::String]
    );
    // A block comment does not continue a string.
    assert_eq!(kinds("select 'a' /**/\n'b'").len(), 3);
    // Escape strings continue too, and the continuation reads as the same form.
    let sql = "select E'a\\n'\n'\\t'";
    assert_eq!(
        string_value(sql, &tokenize(sql).tokens[1]).as_deref(),
        Some("a\n\t")
    );
    // Bit strings continue, and end at the first quote.
    let sql = "select B'10'\n'01', X'1''";
    let lexed = tokenize(sql);
    assert_eq!(string_value(sql, &lexed.tokens[1]).as_deref(), Some("1001"));
    assert_eq!(text(sql, &lexed.tokens[3]), "X'1'");
}

#[test]
fn unicode_strings_and_identifiers_decode_with_their_escape_character() {
    let sql =
        r#"select U&"pg\005fread_file", U&'d\0061t\+000061', U&"d!0061ta" UESCAPE '!', u&'\\'"#;
    let lexed = tokenize(sql);
    assert!(lexed.error.is_none());
    assert_eq!(
        ident_value(sql, &lexed.tokens[1]).as_deref(),
        Some("pg_read_file")
    );
    assert_eq!(string_value(sql, &lexed.tokens[3]).as_deref(), Some("data"));
    assert_eq!(ident_value(sql, &lexed.tokens[5]).as_deref(), Some("data"));
    assert_eq!(text(sql, &lexed.tokens[5]), r#"U&"d!0061ta" UESCAPE '!'"#);
    assert_eq!(string_value(sql, &lexed.tokens[7]).as_deref(), Some("\\"));
    assert_eq!(lexed.tokens.len(), 8);
    for bad in [
        r#"select U&"x" UESCAPE 'ab'"#,
        r#"select U&"x" UESCAPE '+'"#,
        r#"select U&"x" UESCAPE 'a'"#,
        r#"select U&"x" UESCAPE 1"#,
    ] {
        assert!(error(bad).is_some(), "{bad}");
    }
    // An undecodable escape is refused by the server; the name is not guessed.
    let sql = r#"select U&"\00zz""#;
    assert_eq!(ident_value(sql, &tokenize(sql).tokens[1]), None);
    // `U&` not followed by a quote is the word `u` and an operator.
    assert_eq!(
        kinds("select u&x"),
        [
            TokenKind::Word,
            TokenKind::Word,
            TokenKind::Punct,
            TokenKind::Word
        ]
    );
}

#[test]
fn quoted_identifiers_keep_case_and_names_fold_and_truncate() {
    let sql = r#"select "Ab""c", AbC, "", x"#;
    let lexed = tokenize(sql);
    assert_eq!(ident_value(sql, &lexed.tokens[1]).as_deref(), Some("Ab\"c"));
    assert_eq!(ident_value(sql, &lexed.tokens[3]).as_deref(), Some("abc"));
    assert_eq!(
        lexed.error.map(|e| e.message),
        Some("zero-length delimited identifier")
    );
    let long = format!("select {}", "a".repeat(70));
    let lexed = tokenize(&long);
    assert_eq!(
        ident_value(&long, &lexed.tokens[1]).unwrap().len(),
        MAX_NAME_BYTES
    );
    let sql = "select ÄÖ";
    assert_eq!(
        ident_value(sql, &tokenize(sql).tokens[1]).as_deref(),
        Some("ÄÖ")
    );
}

#[test]
fn dollar_quotes_span_anything_but_their_own_tag() {
    assert_eq!(
        statements("do $x$ begin; $$ ; end $x$; select $1; select $_$;$_$"),
        ["do $x$ begin; $$ ; end $x$", "select $1", "select $_$;$_$"]
    );
    assert_eq!(
        statements("select a$b$c, $a$x$a$"),
        ["select a$b$c , $a$x$a$"]
    );
    assert_eq!(
        error("select $q$ abc"),
        Some("unterminated dollar-quoted string")
    );
    // `$1` followed by a word is junk; `$` not opening a quote is one character.
    assert!(error("select $1abc").is_some());
    assert_eq!(
        kinds("select $a + 1"),
        [
            TokenKind::Word,
            TokenKind::Punct,
            TokenKind::Word,
            TokenKind::Punct,
            TokenKind::Number
        ]
    );
}

#[test]
fn operators_stop_at_comment_starts_and_drop_trailing_signs() {
    let texts = |sql: &str| -> Vec<String> {
        let lexed = tokenize(sql);
        lexed
            .tokens
            .iter()
            .map(|t| text(sql, t).to_string())
            .collect()
    };
    assert_eq!(texts("a+-b"), ["a", "+", "-", "b"]);
    assert_eq!(texts("a=-1"), ["a", "=", "-", "1"]);
    assert_eq!(texts("a@-1"), ["a", "@-", "1"]);
    assert_eq!(texts("a*/*c*/b"), ["a", "*", "b"]);
    assert_eq!(texts("a<--c\nb"), ["a", "<", "b"]);
    assert_eq!(
        texts("a::int, b := 1, 1..2"),
        ["a", "::", "int", ",", "b", ":=", "1", ",", "1", "..", "2"]
    );
    assert!(error(&format!("select 1 {} 2", "<".repeat(64))).is_some());
}

#[test]
fn numbers_follow_the_server_and_junk_is_refused() {
    let texts = |sql: &str| -> Vec<String> {
        let lexed = tokenize(sql);
        assert!(lexed.error.is_none(), "{sql}");
        lexed
            .tokens
            .iter()
            .map(|t| text(sql, t).to_string())
            .collect()
    };
    assert_eq!(
        texts("1.5e-3 .5 1. 0x1F 0o17 0b101 1_000 1e5"),
        [
            "1.5e-3", ".5", "1.", "0x1F", "0o17", "0b101", "1_000", "1e5"
        ]
    );
    for junk in [
        "select 1abc",
        "select 1e",
        "select 1e+",
        "select 0x",
        "select 1.5x",
        "select 1__0",
    ] {
        assert!(error(junk).is_some(), "{junk}");
    }
}

#[test]
fn bodies_of_atomic_routines_keep_their_semicolons() {
    assert_eq!(
        statements(
            "create function f() returns int begin atomic select 1; select case when true then 2 end; end; select 9"
        ),
        [
            "create function f ( ) returns int begin atomic select 1 ; select case when true then 2 end ; end",
            "select 9"
        ]
    );
    // END and CASE as column labels do not move the body's end.
    assert_eq!(
        statements(
            "create or replace procedure p() begin atomic select 1 as case; select 1 end; end; drop table t"
        )
        .len(),
        2
    );
    // `begin atomic` outside CREATE FUNCTION is just two words.
    assert_eq!(statements("select begin atomic; drop table t").len(), 2);
    // Rule actions in parentheses.
    assert_eq!(
        statements("create rule r as on insert to t do also (insert into a values (1); delete from b); select 3")
            .len(),
        2
    );
    assert!(error(&"create function f() begin atomic ".repeat(80)).is_some());
}

#[test]
fn empty_statements_are_skipped() {
    assert!(statements(" ; -- x\n ;; /* y */").is_empty());
    assert_eq!(statements(";select 1;;"), ["select 1"]);
}

#[test]
fn unterminated_constructs_are_refused_and_swallow_the_rest() {
    for sql in [
        "select 'abc",
        "select \"abc",
        "select E'\\",
        "select B'1",
        "select $$",
        "select /*",
    ] {
        let lexed = tokenize(sql);
        assert!(lexed.error.is_some(), "{sql}");
        assert_eq!(lexed.tokens.last().unwrap().span.end, sql.len(), "{sql}");
    }
}

#[test]
fn fingerprints_tell_token_kinds_and_resolved_names_apart() {
    let key = |sql: &str, keep: bool| {
        let lexed = tokenize(sql);
        let mut out = String::new();
        fingerprint_into(sql, &lexed.tokens, keep, &mut out);
        out
    };
    // Same text, different tokens.
    assert_ne!(key("select \"x\"", false), key("select 'x'", false));
    assert_ne!(key("select x", false), key("select \"x\"", false));
    assert_ne!(key("select 1", false), key("select '1'", false));
    assert_ne!(key("select B'1'", false), key("select '1'", false));
    assert_ne!(
        key(r#"select U&"x!0070" UESCAPE '!'"#, false),
        key(r#"select U&"x!0070" UESCAPE '#'"#, false)
    );
    // Spellings of one name share a key; constants fold unless kept.
    assert_eq!(
        key("SELECT  Pg_Read_File /*c*/", false),
        key("select pg_read_file", false)
    );
    assert_eq!(
        key(r#"select U&"\0070g_read_file""#, false),
        key(r#"select "pg_read_file""#, false)
    );
    assert_eq!(key("select 'a'", false), key("select 'b'", false));
    assert_ne!(key("select 'a'", true), key("select 'b'", true));
    assert_eq!(key("select 'a'", true), key("select E'\\x61'", true));
}

#[test]
fn literals_are_redacted_with_layout_kept() {
    let sql = "select * from t where a = 'x''y' and b = 1.5e-3 -- c\n and c = $$z$$ and d = $2";
    let lexed = tokenize(sql);
    assert_eq!(
        redact_literals(sql, &lexed),
        "select * from t where a = $3 and b = $4 -- c\n and c = $5 and d = $2"
    );
}

#[test]
fn statement_spans_cover_first_to_last_token() {
    let sql = b" select 1 ; /* c */ select 2 -- x";
    let spans = statement_spans(sql, Settings::default());
    assert_eq!(spans, [1..9, 20..28]);
}

/// Every byte string lexes without panicking, spans tile the text in order, and
/// decoding any token never panics (a bounded, seeded proptest run).
#[test]
fn arbitrary_bytes_lex_without_panics() {
    let pieces: &[&[u8]] = &[
        b"'",
        b"\"",
        b"$",
        b"$$",
        b"$a$",
        b"--",
        b"/*",
        b"*/",
        b"\\",
        b"E'",
        b"U&'",
        b"U&\"",
        b"UESCAPE",
        b" ",
        b"\n",
        b"\r",
        b"\x0b",
        b";",
        b"(",
        b")",
        b"b'",
        b"x'",
        b"n'",
        b"0x",
        b"1",
        b".",
        b"e",
        b"+",
        b"-",
        b"select",
        b"begin atomic",
        b"create function",
        b"end",
        b"\xc3\xa9",
        b"\x81",
        b"\\u",
        b"\\x4",
        b"::",
        b"=",
        b"\x00",
    ];
    let texts = prop::collection::vec(prop::sample::select(pieces.to_vec()), 0..24)
        .prop_map(|pieces| pieces.concat());
    crate::tests::run_cases(20_000, texts, |sql| {
        for settings in [Settings::default(), OFF] {
            let lexed = tokenize_bytes(&sql, settings);
            let mut end = 0;
            for token in &lexed.tokens {
                assert!(
                    token.span.start >= end && token.span.end <= sql.len(),
                    "{sql:?}"
                );
                assert!(token.span.start < token.span.end, "{sql:?}");
                end = token.span.end;
                let _ = string_bytes(&sql, token);
            }
            let text = String::from_utf8_lossy(&sql);
            let lexed = tokenize_with(&text, settings);
            for token in &lexed.tokens {
                let _ = ident_value(&text, token);
                let _ = string_value(&text, token);
            }
            let _ = redact_literals(&text, &lexed);
        }
        Ok(())
    });
}
