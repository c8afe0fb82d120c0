//! Classification from tokens, for statements sqlparser cannot parse (DO blocks,
//! ALTER SYSTEM, GRANT of roles, CHECKPOINT, …).
//!
//! Only statements whose meaning for policy is fixed by their leading keywords are
//! classified here. Statements that read or write tables in ways that need a real
//! parse (SELECT, INSERT, UPDATE, DELETE, MERGE, EXPLAIN, PREPARE, …) and anything
//! with unknown leading keywords come back unparseable, so the policy's
//! `unparseable` setting decides. Whatever is classified has every function call
//! in any of its clauses listed (names as the server resolves them).

use super::lexer::{Token, TokenKind, ident_value, is_punct, is_word, text};
use super::{StatementInfo, StatementKind, is_role_setting};

/// The kind a statement's leading keywords name, or `None` if they name nothing
/// PostgreSQL knows.
fn kind_of_words(sql: &str, tokens: &[Token]) -> Option<StatementKind> {
    use StatementKind as K;
    let first = tokens.first()?;
    if is_punct(sql, first, "(") {
        return Some(K::Select);
    }
    if first.kind != TokenKind::Word {
        return None;
    }
    let second_is = |w: &str| tokens.get(1).is_some_and(|t| is_word(sql, t, w));
    let word = text(sql, first).to_ascii_lowercase();
    Some(match word.as_str() {
        "select" | "values" | "table" | "with" => K::Select,
        "insert" => K::Insert,
        "update" => K::Update,
        "delete" => K::Delete,
        "merge" => K::Merge,
        "truncate" => K::Truncate,
        "drop" => K::Drop,
        "alter" => K::Alter,
        "create" => K::Create,
        "grant" => K::Grant,
        "revoke" => K::Revoke,
        "copy" => K::Copy,
        "call" => K::Call,
        "do" => K::Do,
        "set" => K::Set,
        "reset" => K::Reset,
        "show" => K::Show,
        "prepare" if second_is("transaction") => K::Transaction,
        "commit" | "rollback" if second_is("prepared") => K::Transaction,
        "begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" => {
            K::Transaction
        }
        "prepare" => K::Prepare,
        "execute" => K::Execute,
        "deallocate" => K::Deallocate,
        "explain" => K::Explain,
        "listen" => K::Listen,
        "unlisten" => K::Unlisten,
        "notify" => K::Notify,
        "vacuum" => K::Vacuum,
        "analyze" | "analyse" => K::Analyze,
        "lock" => K::Lock,
        "discard" => K::Discard,
        "declare" | "fetch" | "move" | "close" => K::Cursor,
        "comment" => K::Comment,
        "checkpoint" | "reindex" | "cluster" | "refresh" | "security" | "load" | "import"
        | "reassign" => K::Other,
        _ => return None,
    })
}

/// The kind named by a statement's leading keywords (`Other` when unknown); used to
/// name statements whose sqlparser variant needs no finer treatment.
pub(super) fn leading_kind(sql: &str, tokens: &[Token]) -> StatementKind {
    kind_of_words(sql, tokens).unwrap_or(StatementKind::Other)
}

/// Kinds whose effect on tables cannot be read off their leading keywords.
fn needs_parse(kind: StatementKind) -> bool {
    use StatementKind as K;
    matches!(
        kind,
        K::Select
            | K::Insert
            | K::Update
            | K::Delete
            | K::Merge
            | K::Truncate
            | K::Explain
            | K::Prepare
            | K::Lock
            | K::Cursor
    )
}

/// Words that may precede `(` without being a function call.
const NOT_FUNCTIONS: &[&str] = &[
    "as",
    "in",
    "values",
    "exists",
    "any",
    "all",
    "some",
    "and",
    "or",
    "not",
    "on",
    "using",
    "into",
    "table",
    "from",
    "join",
    "where",
    "select",
    "returning",
    "with",
    "over",
    "filter",
    "within",
    "language",
    "array",
    "row",
    "cast",
    "options",
    "check",
    "default",
    "primary",
    "unique",
    "foreign",
    "key",
    "references",
    "partition",
    "by",
    "include",
    "procedure",
    "function",
    "index",
    "view",
    "type",
    "when",
    "then",
    "else",
    "set",
    "for",
    "to",
];

/// Classifies a statement from its tokens; `unparseable` when that is not enough.
pub(super) fn classify(sql: &str, tokens: &[Token]) -> StatementInfo {
    let Some(kind) = kind_of_words(sql, tokens) else {
        return StatementInfo::unparseable(StatementKind::Other);
    };
    // DECLARE … CURSOR FOR <query> runs a query; FETCH/MOVE/CLOSE do not.
    let declares = tokens.first().is_some_and(|t| is_word(sql, t, "declare"));
    if needs_parse(kind) && (kind != StatementKind::Cursor || declares) {
        return StatementInfo::unparseable(kind);
    }
    let mut info = if kind == StatementKind::Copy {
        classify_copy(sql, tokens)
    } else {
        StatementInfo::new(kind)
    };
    let word_at = |i: usize, w: &str| tokens.get(i).is_some_and(|t| is_word(sql, t, w));
    let props = &mut info.properties;
    match kind {
        StatementKind::Alter if word_at(1, "system") => props.alter_system = true,
        StatementKind::Create | StatementKind::Alter | StatementKind::Drop
            if word_at(1, "role") || word_at(1, "user") || word_at(1, "group") =>
        {
            props.role_change = true;
        }
        StatementKind::Drop if word_at(1, "database") => props.drop_database = true,
        // `CREATE TABLE … AS EXECUTE name`: runs a prepared statement.
        StatementKind::Create => {
            let executes = tokens.iter().enumerate().filter_map(|(i, t)| {
                (is_word(sql, t, "as") && word_at(i + 1, "execute"))
                    .then(|| tokens.get(i + 2).and_then(|name| ident_value(sql, name)))
                    .flatten()
            });
            for name in executes.collect::<Vec<_>>() {
                info.runs.push(StatementInfo {
                    prepared_name: Some(name),
                    ..StatementInfo::new(StatementKind::Execute)
                });
            }
        }
        StatementKind::Grant | StatementKind::Revoke => {
            // GRANT <privileges> ON <object> TO …; without ON it grants role membership.
            props.role_change = !tokens.iter().any(|t| is_word(sql, t, "on"));
        }
        StatementKind::Other if word_at(0, "reassign") => props.role_change = true,
        StatementKind::Set | StatementKind::Reset => {
            let mut rest = tokens
                .iter()
                .skip(1)
                .skip_while(|t| is_word(sql, t, "session") || is_word(sql, t, "local"));
            let setting = rest
                .next()
                .and_then(|t| ident_value(sql, t))
                .map(|name| name.to_ascii_lowercase());
            let setting = setting.as_deref().unwrap_or_default();
            // `SET SESSION AUTHORIZATION` lost its SESSION to the skip above.
            if is_role_setting(setting) || setting == "authorization" {
                props.set_role = true;
            }
            if setting == "standard_conforming_strings" {
                props.string_syntax_change = true;
            }
        }
        _ => {}
    }
    // COPY's table and column list are not calls; its WHERE clause may hold some.
    let calls_from = if kind == StatementKind::Copy {
        tokens
            .iter()
            .position(|t| is_word(sql, t, "from") || is_word(sql, t, "to"))
            .unwrap_or(0)
    } else {
        0
    };
    for function in called_functions(sql, tokens.get(calls_from..).unwrap_or_default()) {
        if function == "set_config" {
            // The setting name is not examined here: assume the worst.
            info.properties.set_role = true;
            info.properties.string_syntax_change = true;
            info.literal_sensitive = true;
        }
        if !info.functions.contains(&function) {
            info.functions.push(function);
        }
    }
    info
}

/// `COPY [schema.]table [(columns)] FROM|TO STDIN|STDOUT|PROGRAM '…'|'file' …`: the
/// form whose options sqlparser may not know (`WITH (FREEZE on)`). `COPY (query)`,
/// a subquery anywhere, and anything else unexpected is unparseable; functions in
/// a WHERE clause are listed with the others'.
fn classify_copy(sql: &str, tokens: &[Token]) -> StatementInfo {
    let unparseable = StatementInfo::unparseable(StatementKind::Copy);
    let is_name = |t: &Token| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent);
    let name_of = |t: &Token| ident_value(sql, t).unwrap_or_default();
    // A query inside the statement reads tables this reading cannot see.
    if tokens.iter().skip(1).any(|t| {
        ["select", "values", "table"]
            .iter()
            .any(|w| is_word(sql, t, w))
    }) {
        return unparseable;
    }
    let mut rest = tokens.iter().skip(1).peekable();
    let Some(first) = rest.next().filter(|t| is_name(t)) else {
        return unparseable;
    };
    let mut schema = None;
    let mut table = name_of(first);
    if rest.peek().is_some_and(|t| is_punct(sql, t, ".")) {
        rest.next();
        let Some(second) = rest.next().filter(|t| is_name(t)) else {
            return unparseable;
        };
        schema = Some(table);
        table = name_of(second);
    }
    if rest.peek().is_some_and(|t| text(sql, t) == "(") {
        // Column list: names and commas only.
        rest.next();
        loop {
            match rest.next() {
                Some(t) if text(sql, t) == ")" => break,
                Some(t) if is_name(t) || text(sql, t) == "," => {}
                _ => return unparseable,
            }
        }
    }
    let access = match rest.next() {
        Some(t) if is_word(sql, t, "from") => super::Access::Write,
        Some(t) if is_word(sql, t, "to") => super::Access::Read,
        _ => return unparseable,
    };
    let mut info = StatementInfo::new(StatementKind::Copy);
    match rest.next() {
        Some(t) if is_word(sql, t, "stdin") || is_word(sql, t, "stdout") => {}
        Some(t) if is_word(sql, t, "program") => info.properties.copy_program = true,
        Some(t) if t.kind == TokenKind::String => info.properties.copy_server_file = true,
        _ => return unparseable,
    }
    info.objects.push(super::ObjectRef {
        schema,
        name: table,
        access,
    });
    info
}

/// Names followed by `(` outside strings and comments, as the server resolves
/// them (folded, unquoted, `U&` escapes decoded), schema dropped.
fn called_functions<'a>(sql: &'a str, tokens: &'a [Token]) -> impl Iterator<Item = String> + 'a {
    tokens.windows(2).filter_map(move |pair| {
        let [name, paren] = pair else { return None };
        if !is_punct(sql, paren, "(") {
            return None;
        }
        match name.kind {
            TokenKind::Word
                if !NOT_FUNCTIONS.contains(&text(sql, name).to_ascii_lowercase().as_str()) =>
            {
                ident_value(sql, name)
            }
            TokenKind::QuotedIdent => ident_value(sql, name),
            _ => None,
        }
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::super::lexer::tokenize;
    use super::*;

    fn classify_text(sql: &str) -> StatementInfo {
        classify(sql, &tokenize(sql).tokens)
    }

    #[test]
    fn do_blocks_are_classified_and_their_body_is_opaque() {
        let info = classify_text("DO $$ BEGIN PERFORM pg_read_file('x'); END $$");
        assert_eq!(info.kind, StatementKind::Do);
        assert!(!info.unparseable);
        assert!(info.functions.is_empty());
    }

    #[test]
    fn alter_system_is_flagged() {
        let info = classify_text("alter /**/ SYSTEM set work_mem = '1GB'");
        assert_eq!(info.kind, StatementKind::Alter);
        assert!(info.properties.alter_system);
    }

    #[test]
    fn grant_without_on_changes_roles() {
        assert!(classify_text("GRANT admin TO bob").properties.role_change);
        assert!(
            !classify_text("GRANT weird ON t TO bob")
                .properties
                .role_change
        );
    }

    #[test]
    fn create_table_as_execute_runs_the_prepared_statement() {
        for (sql, name) in [
            ("CREATE TABLE t AS EXECUTE s1(7)", "s1"),
            ("create temp table t as execute \"S1\"", "S1"),
        ] {
            let info = classify_text(sql);
            assert_eq!(info.kind, StatementKind::Create, "{sql}");
            let [run] = info.runs.as_slice() else {
                panic!("{sql}: {info:?}");
            };
            assert_eq!(run.kind, StatementKind::Execute);
            assert_eq!(run.prepared_name.as_deref(), Some(name));
        }
    }

    #[test]
    fn data_statements_are_not_guessed() {
        assert!(classify_text("SELECT a FROM t WHERE a OPERATOR(~) 'x'").unparseable);
        assert!(classify_text("frobnicate the database").unparseable);
    }

    #[test]
    fn copy_with_options_sqlparser_lacks_is_classified() {
        let info = classify_text(r#"copy public."Users" (id) from stdin with (freeze on)"#);
        assert!(!info.unparseable);
        assert_eq!(info.objects[0].schema.as_deref(), Some("public"));
        assert_eq!(info.objects[0].name, "Users");
        assert!(
            classify_text("copy t to program 'x' (freeze)")
                .properties
                .copy_program
        );
        assert!(
            classify_text("copy t from '/etc/passwd' (freeze)")
                .properties
                .copy_server_file
        );
        assert!(classify_text("copy (select 1) to stdout (freeze)").unparseable);
        assert!(classify_text("copy t from somewhere").unparseable);
    }

    #[test]
    fn functions_are_spotted_outside_strings() {
        let info = classify_text("CHECKPOINT pg_catalog.lo_import('/etc/passwd'), 'x(1)'");
        assert_eq!(info.functions, ["lo_import"]);
    }
}
