//! What a piece of SQL does, as far as policy cares: for every statement in a Query
//! (or Parse) text, its kind, the tables it reads and writes, the functions it calls
//! and a few dangerous properties.
//!
//! The text is first split into statements by [`lexer`], which follows the server's
//! own scanner under the session's settings, so a `;` hidden in an `E''` string, a
//! comment ended by `\r` or a nested comment cannot smuggle a second statement past
//! the analysis. Each statement's tokens are then written out for sqlparser in
//! forms it reads as the server does ([`canonical`]: names decoded, strings joined
//! and decoded, a few grammar gaps rewritten) and parsed with sqlparser's PostgreSQL
//! dialect (recursion limited). What sqlparser cannot parse is classified from its
//! tokens by [`fallback`], and what that cannot account for is marked
//! [`StatementInfo::unparseable`], never silently allowed.

mod ast;
mod canonical;
pub mod encoding;
mod fallback;
pub mod lexer;
pub mod lineage;
mod rows;

pub use lexer::Settings;

use serde::Serialize;
use std::fmt;

/// Limits that keep analysis bounded whatever the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Texts longer than this (bytes) are not analyzed; they come back unparseable.
    pub max_sql_len: usize,
    /// Parser recursion depth (nesting of expressions and subqueries).
    pub max_depth: usize,
    /// At most this many statements in one text; more makes the text unparseable.
    pub max_statements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sql_len: 256 * 1024,
            max_depth: 50,
            max_statements: 64,
        }
    }
}

/// What a statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Truncate,
    Drop,
    Alter,
    Create,
    Grant,
    Revoke,
    Copy,
    Call,
    Do,
    Set,
    Reset,
    Show,
    /// BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK, ABORT, SAVEPOINT, RELEASE,
    /// PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED.
    Transaction,
    Prepare,
    Execute,
    Deallocate,
    Explain,
    Listen,
    Unlisten,
    Notify,
    Vacuum,
    Analyze,
    Lock,
    Discard,
    /// DECLARE, FETCH, MOVE, CLOSE of cursors.
    Cursor,
    /// COMMENT ON.
    Comment,
    /// Anything else PostgreSQL accepts (CHECKPOINT, REINDEX, CLUSTER, LOAD, …).
    Other,
}

impl StatementKind {
    /// Every kind with its configuration name.
    pub const ALL: [(StatementKind, &'static str); 32] = [
        (Self::Select, "select"),
        (Self::Insert, "insert"),
        (Self::Update, "update"),
        (Self::Delete, "delete"),
        (Self::Merge, "merge"),
        (Self::Truncate, "truncate"),
        (Self::Drop, "drop"),
        (Self::Alter, "alter"),
        (Self::Create, "create"),
        (Self::Grant, "grant"),
        (Self::Revoke, "revoke"),
        (Self::Copy, "copy"),
        (Self::Call, "call"),
        (Self::Do, "do"),
        (Self::Set, "set"),
        (Self::Reset, "reset"),
        (Self::Show, "show"),
        (Self::Transaction, "transaction"),
        (Self::Prepare, "prepare"),
        (Self::Execute, "execute"),
        (Self::Deallocate, "deallocate"),
        (Self::Explain, "explain"),
        (Self::Listen, "listen"),
        (Self::Unlisten, "unlisten"),
        (Self::Notify, "notify"),
        (Self::Vacuum, "vacuum"),
        (Self::Analyze, "analyze"),
        (Self::Lock, "lock"),
        (Self::Discard, "discard"),
        (Self::Cursor, "cursor"),
        (Self::Comment, "comment"),
        (Self::Other, "other"),
    ];

    /// The configuration name of this kind.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("other", |(_, n)| n)
    }

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a statement touches a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
}

/// A table (or view, sequence, …) a statement touches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    /// The schema when the SQL names one; `None` means the session's search_path decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The object's name: unquoted names lowercased, quoted ones as written.
    pub name: String,
    pub access: Access,
}

/// Dangerous properties of a statement that rules can match on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Properties {
    /// UPDATE or DELETE without a WHERE clause, or with one that references no
    /// column or subquery (`WHERE true`, `WHERE 1 = 1`): it affects every row.
    pub without_where: bool,
    /// COPY … TO/FROM PROGRAM: runs a shell command on the database server.
    pub copy_program: bool,
    /// COPY … TO/FROM a file on the database server (not STDIN/STDOUT).
    pub copy_server_file: bool,
    /// CREATE/ALTER/DROP ROLE or USER, or GRANT/REVOKE of role membership.
    pub role_change: bool,
    /// Switches the acting role: SET ROLE, SET SESSION AUTHORIZATION, RESET ROLE,
    /// RESET SESSION AUTHORIZATION, or `set_config` of `role` /
    /// `session_authorization` (or of a setting name that is not a constant).
    pub set_role: bool,
    /// ALTER SYSTEM: rewrites the server configuration.
    pub alter_system: bool,
    /// DROP DATABASE.
    pub drop_database: bool,
    /// Changes `standard_conforming_strings`, which changes how the server splits
    /// strings (and so statements) from then on.
    pub string_syntax_change: bool,
}

impl Properties {
    /// Every property with its configuration name.
    pub const NAMES: [&'static str; 8] = [
        "without_where",
        "copy_program",
        "copy_server_file",
        "role_change",
        "set_role",
        "alter_system",
        "drop_database",
        "string_syntax_change",
    ];

    /// The value of the property called `name` (one of [`Self::NAMES`]).
    pub fn get(&self, name: &str) -> Option<bool> {
        Some(match name {
            "without_where" => self.without_where,
            "copy_program" => self.copy_program,
            "copy_server_file" => self.copy_server_file,
            "role_change" => self.role_change,
            "set_role" => self.set_role,
            "alter_system" => self.alter_system,
            "drop_database" => self.drop_database,
            "string_syntax_change" => self.string_syntax_change,
            _ => return None,
        })
    }
}

/// What one statement does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementInfo {
    pub kind: StatementKind,
    /// Tables read and written (deduplicated; CTE names are not tables).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectRef>,
    /// Functions called anywhere in the statement, lowercased, schema dropped
    /// (`pg_catalog.pg_read_file` is `pg_read_file`), deduplicated.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    pub properties: Properties,
    /// PREPARE: the name it defines; EXECUTE: the prepared statement it runs
    /// (resolve it with the session's own map if needed); DEALLOCATE: the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared_name: Option<String>,
    /// Statements this one runs (or, for PREPARE, will run): the body of EXPLAIN
    /// ANALYZE, of PREPARE, and data-modifying statements inside WITH. Each is judged
    /// on its own. Plain EXPLAIN runs nothing; its body's functions are still listed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<StatementInfo>,
    /// Whether sqlparser parsed it (false: classified from tokens).
    pub parsed: bool,
    /// Could not be classified: the policy's `unparseable` setting decides.
    pub unparseable: bool,
    /// May switch the client encoding to one the filter cannot lex (see
    /// [`encoding`]): refused whatever the policy says.
    pub unsafe_client_encoding: bool,
    /// The analysis depended on a string constant (e.g. the setting name given to
    /// `set_config`), so decisions about it must not be shared with statements that
    /// only differ in constants.
    #[serde(skip)]
    pub literal_sensitive: bool,
}

impl StatementInfo {
    /// A statement of `kind` with nothing else known yet.
    pub fn new(kind: StatementKind) -> Self {
        Self {
            kind,
            objects: Vec::new(),
            functions: Vec::new(),
            properties: Properties::default(),
            prepared_name: None,
            runs: Vec::new(),
            parsed: false,
            unparseable: false,
            unsafe_client_encoding: false,
            literal_sensitive: false,
        }
    }

    /// A statement that could not be analyzed, of `kind` as far as its leading
    /// keywords tell.
    fn unparseable(kind: StatementKind) -> Self {
        Self {
            unparseable: true,
            ..Self::new(kind)
        }
    }

    /// This statement and everything it runs, depth first.
    pub fn walk(&self) -> Vec<&StatementInfo> {
        let mut out = vec![self];
        for child in &self.runs {
            out.extend(child.walk());
        }
        out
    }

    fn any(&self, f: &dyn Fn(&StatementInfo) -> bool) -> bool {
        f(self) || self.runs.iter().any(|c| c.any(f))
    }
}

/// The analysis of a whole text, one entry per statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Analysis {
    pub statements: Vec<StatementInfo>,
}

impl Analysis {
    /// Whether any statement's analysis depended on a string constant.
    pub fn literal_sensitive(&self) -> bool {
        self.statements
            .iter()
            .any(|s| s.any(&|s| s.literal_sensitive))
    }
}

/// Analyzes every statement in `sql` as a server with default settings reads it.
///
/// ```
/// use gatehouse_postgres::sql::{analyze, Limits, StatementKind};
/// let a = analyze("select 1; /* ; */ DELETE FROM t", &Limits::default());
/// assert_eq!(a.statements.len(), 2);
/// assert_eq!(a.statements[1].kind, StatementKind::Delete);
/// assert!(a.statements[1].properties.without_where);
/// ```
pub fn analyze(sql: &str, limits: &Limits) -> Analysis {
    analyze_with(sql, Settings::default(), limits)
}

/// Analyzes every statement in `sql` as a server with `settings` reads it.
pub fn analyze_with(sql: &str, settings: Settings, limits: &Limits) -> Analysis {
    if sql.len() > limits.max_sql_len {
        return Analysis {
            statements: vec![StatementInfo::unparseable(StatementKind::Other)],
        };
    }
    let lexed = lexer::tokenize_with(sql, settings);
    analyze_lexed(sql, &lexed, limits)
}

/// [`analyze`] for a text already tokenized (the decision cache tokenizes first to
/// fingerprint, and must not do it twice).
pub fn analyze_lexed(sql: &str, lexed: &lexer::Lexed, limits: &Limits) -> Analysis {
    if sql.len() > limits.max_sql_len || lexed.error.is_some() {
        // The server would refuse the whole text; it is not guessed at either.
        return Analysis {
            statements: vec![StatementInfo::unparseable(StatementKind::Other)],
        };
    }
    let mut statements = Vec::new();
    for tokens in lexed.statement_tokens() {
        if statements.len() >= limits.max_statements {
            return Analysis {
                statements: vec![StatementInfo::unparseable(StatementKind::Other)],
            };
        }
        statements.extend(analyze_statement(sql, tokens, limits));
    }
    Analysis { statements }
}

/// One statement's tokens → its analysis (sqlparser first, then the token fallback).
fn analyze_statement(sql: &str, tokens: &[lexer::Token], limits: &Limits) -> Vec<StatementInfo> {
    if tokens.is_empty() {
        return Vec::new();
    }
    let leading_kind = fallback::leading_kind(sql, tokens);
    let canonical = canonical::canonical(sql, tokens);
    let mut infos = match ast::analyze_text(&canonical.text, leading_kind, limits) {
        Some(mut infos) => {
            merge_extracted(&mut infos, &canonical, limits);
            infos
        }
        None => vec![fallback::classify(sql, tokens)],
    };
    let encoding = encoding::sets_unsafe_client_encoding(sql, tokens);
    for info in &mut infos {
        info.unsafe_client_encoding |= encoding.unsafe_encoding;
        info.literal_sensitive |= encoding.literal_sensitive;
        // Writing pg_settings is set_config under another name.
        let writes_settings = info.walk().iter().any(|s| {
            s.objects
                .iter()
                .any(|o| o.name == "pg_settings" && o.access == Access::Write)
        });
        if writes_settings {
            info.properties.set_role = true;
            info.properties.string_syntax_change = true;
            info.unsafe_client_encoding = true;
        }
    }
    infos
}

/// Folds what [`canonical`] took out of a statement back into its analysis: the
/// functions and tables of each extracted expression, and `WHERE CURRENT OF`.
fn merge_extracted(infos: &mut [StatementInfo], canonical: &canonical::Canonical, limits: &Limits) {
    let Some(first) = infos.first_mut() else {
        return;
    };
    if canonical.current_of {
        first.properties.without_where = false;
    }
    for expression in &canonical.extracted {
        let probe = format!("SELECT {expression}");
        let parsed = ast::analyze_text(&probe, StatementKind::Select, limits);
        match parsed.as_deref() {
            Some([info]) => {
                for function in &info.functions {
                    if !first.functions.contains(function) {
                        first.functions.push(function.clone());
                    }
                }
                for object in &info.objects {
                    if !first.objects.contains(object) {
                        first.objects.push(object.clone());
                    }
                }
                first.runs.extend(info.runs.iter().cloned());
                first.literal_sensitive |= info.literal_sensitive;
                first.properties.set_role |= info.properties.set_role;
                first.properties.string_syntax_change |= info.properties.string_syntax_change;
            }
            _ => first.unparseable = true,
        }
    }
}

/// Normalizes a function or setting name: the last part, unquoted ones lowercased.
fn normalize_name(value: &str, quoted: bool) -> String {
    if quoted {
        value.to_string()
    } else {
        value.to_ascii_lowercase()
    }
}

/// Settings whose change switches the acting role.
fn is_role_setting(name: &str) -> bool {
    matches!(name, "role" | "session_authorization")
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    #[test]
    fn every_kind_has_a_unique_name() {
        let mut names: Vec<_> = StatementKind::ALL.iter().map(|(_, n)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 32);
        for (kind, name) in StatementKind::ALL {
            assert_eq!(StatementKind::from_name(name), Some(kind));
        }
    }

    #[test]
    fn over_long_text_is_unparseable() {
        let limits = Limits {
            max_sql_len: 10,
            ..Limits::default()
        };
        let a = analyze("select 1 from a_long_table", &limits);
        assert!(a.statements[0].unparseable);
    }

    #[test]
    fn too_many_statements_is_unparseable() {
        let limits = Limits {
            max_statements: 2,
            ..Limits::default()
        };
        let a = analyze("select 1; select 2; select 3", &limits);
        assert_eq!(a.statements.len(), 1);
        assert!(a.statements[0].unparseable);
    }

    #[test]
    fn unterminated_string_is_unparseable() {
        assert!(analyze("select 'abc", &Limits::default()).statements[0].unparseable);
    }

    fn one(sql: &str) -> StatementInfo {
        let mut a = analyze(sql, &Limits::default());
        assert_eq!(a.statements.len(), 1, "{sql}");
        a.statements.remove(0)
    }

    fn objects(info: &StatementInfo) -> Vec<String> {
        info.objects
            .iter()
            .map(|o| {
                let access = if o.access == Access::Read { "r" } else { "w" };
                match &o.schema {
                    Some(s) => format!("{access}:{s}.{}", o.name),
                    None => format!("{access}:{}", o.name),
                }
            })
            .collect()
    }

    #[test]
    fn insert_select_writes_its_target_and_reads_its_sources() {
        let info =
            one("INSERT INTO audit.log (a) SELECT u.a FROM users u JOIN Orders o ON o.u = u.id");
        assert_eq!(info.kind, StatementKind::Insert);
        assert_eq!(objects(&info), ["r:orders", "r:users", "w:audit.log"]);
    }

    #[test]
    fn cte_names_are_not_tables_and_quoted_names_keep_their_case() {
        let info =
            one(r#"with recent as (select * from "Events") select * from recent, public.users"#);
        assert_eq!(objects(&info), [r"r:Events", "r:public.users"]);
    }

    #[test]
    fn update_reading_another_table_in_a_subquery() {
        let info = one("update t set a = (select max(b) from s) where id = 1 returning a");
        assert_eq!(objects(&info), ["r:s", "w:t"]);
        assert!(!info.properties.without_where);
    }

    #[test]
    fn functions_are_lowercased_and_lose_their_schema() {
        let info =
            one("select PG_CATALOG.Pg_Read_File('x'), upper(a) from t, generate_series(1, 2)");
        assert_eq!(info.functions, ["pg_read_file", "upper", "generate_series"]);
        assert_eq!(objects(&info), ["r:t"]);
    }

    #[test]
    fn data_modifying_cte_is_a_statement_the_select_runs() {
        let info = one("with d as (delete from t where x = 1 returning *) select * from d");
        assert_eq!(info.kind, StatementKind::Select);
        assert_eq!(info.runs.len(), 1);
        assert_eq!(info.runs[0].kind, StatementKind::Delete);
        assert_eq!(objects(&info.runs[0]), ["w:t"]);
    }

    #[test]
    fn explain_analyze_runs_its_body_and_plain_explain_does_not() {
        let runs = one("explain analyze delete from t");
        assert_eq!(runs.kind, StatementKind::Explain);
        assert_eq!(runs.runs[0].kind, StatementKind::Delete);
        assert!(runs.runs[0].properties.without_where);
        let plans = one("explain delete from t where f(x)");
        assert!(plans.runs.is_empty());
        assert_eq!(plans.functions, ["f"]);
    }

    #[test]
    fn prepare_and_execute_name_their_statement() {
        let prepare = one("PREPARE Wipe AS DELETE FROM t");
        assert_eq!(prepare.prepared_name.as_deref(), Some("wipe"));
        assert_eq!(prepare.runs[0].kind, StatementKind::Delete);
        let execute = one("EXECUTE wipe");
        assert_eq!(execute.kind, StatementKind::Execute);
        assert_eq!(execute.prepared_name.as_deref(), Some("wipe"));
    }

    #[test]
    fn copy_directions_and_targets() {
        let out = one("copy t to stdout");
        assert_eq!(objects(&out), ["r:t"]);
        assert!(!out.properties.copy_server_file);
        let into = one("copy s.t from '/tmp/x'");
        assert_eq!(objects(&into), ["w:s.t"]);
        assert!(into.properties.copy_server_file);
        assert!(one("copy t to program 'gzip'").properties.copy_program);
    }

    #[test]
    fn select_into_creates_a_table() {
        let info = one("select * into backup from users");
        assert_eq!(info.kind, StatementKind::Create);
        assert_eq!(objects(&info), ["w:backup", "r:users"]);
    }

    #[test]
    fn deeply_nested_input_is_unparseable_not_a_crash() {
        let sql = format!("select {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(one(&sql).unparseable);
    }

    #[test]
    fn function_calls_are_found_however_the_server_would_lex_the_text() {
        let cases = [
            "select a$$b, pg_read_file('x') from t where c$$d = 1",
            r"select 'a\', pg_read_file('x'), 'b'",
            r"select E'a\'', pg_read_file('x')",
            "select U&'a', pg_read_file('x')",
            "select $x$ a $$ b $x$, pg_read_file('x')",
            "select x'41', pg_read_file('x')",
            "select 1 -- x\n, pg_read_file('x')",
            "select 1 /* a /* b */ c */, pg_read_file('x')",
        ];
        for sql in cases {
            let info = one(sql);
            assert!(
                info.unparseable || info.functions.iter().any(|f| f == "pg_read_file"),
                "{sql}: {info:?}"
            );
        }
    }

    /// A bounded, seeded proptest run over texts built from SQL pieces: analysis never
    /// panics, and a call of pg_read_file the lexer sees outside strings and
    /// comments is always listed, or its statement is refused as unanalyzable.
    #[test]
    fn no_function_call_escapes_the_analysis() {
        let pieces = [
            "select ",
            "from ",
            "t ",
            "where ",
            "x ",
            "= ",
            "1 ",
            "'a' ",
            "E'\\'' ",
            "$$;$$ ",
            "U&\"\\0070g_read_file\"(",
            "pg_read_file(",
            "PG_CATALOG.pg_read_file(",
            "\"pg_read_file\"(",
            ") ",
            "( ",
            ", ",
            "; ",
            "--c\r",
            "/* /* */ */ ",
            "\n",
            "update ",
            "set ",
            "y ",
            "delete ",
            "insert ",
            "into ",
            "values ",
            "copy ",
            "stdin ",
            "with ",
            "as ",
            "union ",
            "explain ",
            "analyze ",
            "merge ",
            "using ",
            "on ",
            "when ",
            "matched ",
            "then ",
            "do ",
            "nothing ",
            "conflict ",
            "[",
            "] ",
            ":",
            "current ",
            "of ",
            "returning ",
            "* ",
            "exists ",
            "case ",
            "end ",
            "'x'\n'y' ",
            "::text ",
            "isnull ",
            "table ",
            "lateral ",
            "join ",
            "order ",
            "by ",
        ];
        let limits = Limits::default();
        let texts = proptest::collection::vec(proptest::sample::select(pieces.to_vec()), 1..17)
            .prop_map(|pieces| pieces.concat());
        crate::tests::run_cases(20_000, texts, |sql| {
            let lexed = lexer::tokenize(&sql);
            let analysis = analyze_lexed(&sql, &lexed, &limits);
            if lexed.error.is_some() {
                assert!(analysis.statements.iter().all(|s| s.unparseable), "{sql:?}");
                return Ok(());
            }
            for (tokens, info) in lexed.statement_tokens().zip(&analysis.statements) {
                let calls = tokens.windows(2).any(|w| {
                    lexer::ident_value(&sql, &w[0]).as_deref() == Some("pg_read_file")
                        && lexer::is_punct(&sql, &w[1], "(")
                });
                let listed = info
                    .walk()
                    .iter()
                    .any(|s| s.unparseable || s.functions.iter().any(|f| f == "pg_read_file"));
                assert!(!calls || listed, "{sql:?}: {info:?}");
            }
            Ok(())
        });
    }

    #[test]
    fn empty_text_has_no_statements() {
        assert!(
            analyze(" ; -- nothing\n;", &Limits::default())
                .statements
                .is_empty()
        );
    }
}
