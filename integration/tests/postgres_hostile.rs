//! Hostile clients through real Envoy and PostgreSQL: a corpus of attempts to get
//! something past the Postgres filter that its policy denies, each sent with
//! exact bytes by a raw client logged in as `developer` under the demo
//! configuration, each checked on the server side:
//!
//! - the server's statement log (`log_statement = all`) since the attempt began
//!   holds neither the attempt's marker (`gh_atk_<n>`, written into every denied
//!   statement) nor a fast-path call, so no denied statement even reached it;
//! - the canary table `gh_canary` still holds its 100 clean rows, and no
//!   relation or role named after a marker exists.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::rawpg::{self, RawPg, Reply};
use gatehouse_integration::stack::demo_postgres_filter_config;
use gatehouse_integration::{Stack, StackOptions, clients};
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

/// Attempts the server answers without an error when nothing reaches it: it
/// ignores CopyData outside COPY, as the protocol says.
const SERVER_IGNORES: &[&str] = &["CopyData carrying a Query outside COPY"];

const WAIT: Duration = Duration::from_secs(10);

/// What an attempt sends. In every text, `{M}` is the attempt's marker.
enum Act {
    /// One simple Query.
    Sql(String),
    /// The text through Parse, Bind, Execute and Sync.
    Extended(String),
    /// Queries in turn, each answered before the next (session state carries over).
    Steps(Vec<Vec<u8>>),
    /// Several Query messages in one write.
    Pipeline(Vec<String>),
    /// A Query written in pieces of this many bytes.
    Split(String, usize),
    /// Raw bytes after login, in the writes `build` makes with the marker (each
    /// in pieces of `piece` bytes when not 0), then the answers up to `readies`
    /// ReadyForQuery or the close.
    Bytes {
        build: Build,
        piece: usize,
        readies: usize,
    },
    /// A StartupMessage with these parameters after `user` and `database`;
    /// a session that starts anyway runs `select '{M}'`.
    Startup(Vec<(String, String)>),
    /// A StartupMessage written in pieces of this many bytes.
    StartupSplit(Vec<(String, String)>, usize),
    /// A FunctionCall by a function's name (its OIDs are read from the
    /// server), with text arguments, optionally after the session's first query.
    FastPath {
        function: &'static str,
        args: Vec<Option<Vec<u8>>>,
        binary: bool,
        first_request: bool,
        piece: usize,
        /// Sent in one write right after a Query.
        pipelined: bool,
    },
    /// A FunctionCall of an OID no function has.
    FastPathOid(u32),
    /// A FunctionCall inside an extended-protocol batch (after a Parse, before Sync).
    FastPathInBatch(&'static str),
    /// Writes requests without reading the answers, in front of a sleeping
    /// server: Queries of 64 statements, or extended rounds without Sync. The
    /// session must end with this SQLSTATE (the memory bound's 53200, or the
    /// bound on requests awaiting answers, 08P01).
    Flood {
        extended: bool,
        expect: &'static str,
    },
}

/// Builds an attempt's writes from its marker.
type Build = fn(&str) -> Vec<Vec<u8>>;

struct Attempt {
    name: String,
    class: &'static str,
    act: Act,
}

fn sql(text: &str) -> Act {
    Act::Sql(text.to_owned())
}

fn steps(texts: &[&str]) -> Act {
    Act::Steps(texts.iter().map(|t| t.as_bytes().to_vec()).collect())
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// A Query that an SJIS-like encoding reads differently: `lead` followed by a
/// backslash is one character there, so the quote after it ends the string and
/// the UPDATE runs; read byte by byte it is all one string.
fn hidden_by_encoding(lead: u8) -> Vec<u8> {
    let mut bytes = b"select E'".to_vec();
    bytes.push(lead);
    bytes.extend_from_slice(b"\\'; update gh_canary set v = $q${M}$q$; --'");
    bytes
}

fn add(out: &mut Vec<Attempt>, class: &'static str, name: &str, act: Act) {
    out.push(Attempt {
        name: name.to_owned(),
        class,
        act,
    });
}

/// SQL attempts that are one statement (or one text) and also go through the
/// extended protocol.
fn both(out: &mut Vec<Attempt>, class: &'static str, name: &str, text: &str) {
    out.push(Attempt {
        name: format!("{name} (simple)"),
        class,
        act: sql(text),
    });
    out.push(Attempt {
        name: format!("{name} (extended)"),
        class,
        act: Act::Extended(text.to_owned()),
    });
}

fn corpus() -> Vec<Attempt> {
    let mut out = Vec::new();

    // ---- startup parameters ----------------------------------------------------
    for (name, options) in [
        (
            "options sets standard_conforming_strings off",
            "-c standard_conforming_strings=off",
        ),
        ("options long form", "--standard_conforming_strings=off"),
        ("options switches role", "-c role=postgres"),
        (
            "options hides statements from the log",
            "-c log_statement=none",
        ),
        (
            "options sets a multibyte encoding",
            "-c client_encoding=SJIS",
        ),
        (
            "options with an escaped space",
            "-c application_name=a\\ b -c role=postgres",
        ),
        (
            "options session authorization",
            "-c session_authorization=postgres",
        ),
        ("options backslash_quote", "-c backslash_quote=on"),
        ("options empty", ""),
    ] {
        add(
            &mut out,
            "startup",
            name,
            Act::Startup(params(&[("options", options)])),
        );
    }
    for value in ["database", "true", "on", "1", "false"] {
        add(
            &mut out,
            "startup",
            &format!("replication={value}"),
            Act::Startup(params(&[("replication", value)])),
        );
    }
    for (name, pairs) in [
        ("user given twice", vec![("user", "postgres")]),
        ("database given twice", vec![("database", "postgres")]),
        (
            "client_encoding twice",
            vec![("client_encoding", "UTF8"), ("client_encoding", "UTF8")],
        ),
        (
            "DateStyle in two spellings",
            vec![("DateStyle", "ISO"), ("datestyle", "SQL")],
        ),
        (
            "CLIENT_ENCODING upper case",
            vec![("CLIENT_ENCODING", "SJIS")],
        ),
        (
            "standard_conforming_strings",
            vec![("standard_conforming_strings", "off")],
        ),
        ("backslash_quote", vec![("backslash_quote", "on")]),
        ("role", vec![("role", "postgres")]),
        (
            "session_authorization",
            vec![("session_authorization", "postgres")],
        ),
        ("log_statement", vec![("log_statement", "none")]),
        ("Options capitalised", vec![("Options", "-c role=postgres")]),
        (
            "default_transaction_read_only",
            vec![("default_transaction_read_only", "off")],
        ),
    ] {
        add(&mut out, "startup", name, Act::Startup(params(&pairs)));
    }
    for alias in [
        "SJIS",
        "sjis",
        "Shift_JIS",
        "shift-jis",
        "MS_Kanji",
        "WIN932",
        "Windows932",
        "SHIFT_JIS_2004",
        "BIG5",
        "Big5",
        "WIN950",
        "GBK",
        "WIN936",
        "GB18030",
        "UHC",
        "WIN949",
        "JOHAB",
        "s.j.i.s",
        "cp932",
    ] {
        add(
            &mut out,
            "startup encoding",
            &format!("client_encoding={alias}"),
            Act::Startup(params(&[("client_encoding", alias)])),
        );
    }
    add(
        &mut out,
        "startup",
        "options split into one-byte writes",
        Act::StartupSplit(params(&[("options", "-c role=postgres")]), 1),
    );
    add(
        &mut out,
        "startup",
        "SJIS split into three-byte writes",
        Act::StartupSplit(params(&[("client_encoding", "SJIS")]), 3),
    );
    let long = "x".repeat(12_000);
    add(
        &mut out,
        "startup",
        "StartupMessage over the server's length limit",
        Act::Startup(vec![("application_name".to_owned(), long)]),
    );

    // ---- fast path ---------------------------------------------------------------
    let text = |s: &str| Some(s.as_bytes().to_vec());
    for (function, args) in [
        (
            "query_to_xml",
            vec![
                text("update gh_canary set v = 'gh'"),
                text("t"),
                text("f"),
                text(""),
            ],
        ),
        ("pg_read_file", vec![text("postgresql.conf")]),
        ("pg_read_binary_file", vec![text("postgresql.conf")]),
        ("pg_ls_dir", vec![text(".")]),
        ("pg_stat_file", vec![text("postgresql.conf")]),
        (
            "set_config",
            vec![text("role"), text("postgres"), text("f")],
        ),
        (
            "set_config",
            vec![text("standard_conforming_strings"), text("off"), text("f")],
        ),
        ("pg_terminate_backend", vec![text("1")]),
        ("pg_cancel_backend", vec![text("1")]),
        ("pg_reload_conf", vec![]),
        ("lo_import", vec![text("/etc/hostname")]),
        ("lo_export", vec![text("1"), text("/tmp/gh_atk")]),
        ("pg_sleep", vec![text("0")]),
        ("current_setting", vec![text("data_directory")]),
        ("version", vec![]),
    ] {
        add(
            &mut out,
            "fast path",
            &format!("{function}({} args) by OID", args.len()),
            Act::FastPath {
                function,
                args: args.clone(),
                binary: false,
                first_request: false,
                piece: 0,
                pipelined: false,
            },
        );
    }
    add(
        &mut out,
        "fast path",
        "pg_read_file as the session's first request",
        Act::FastPath {
            function: "pg_read_file",
            args: vec![text("postgresql.conf")],
            binary: false,
            first_request: true,
            piece: 0,
            pipelined: false,
        },
    );
    add(
        &mut out,
        "fast path",
        "query_to_xml split into one-byte writes",
        Act::FastPath {
            function: "query_to_xml",
            args: vec![text("select 1"), text("t"), text("f"), text("")],
            binary: false,
            first_request: false,
            piece: 1,
            pipelined: false,
        },
    );
    add(
        &mut out,
        "fast path",
        "set_config with binary arguments",
        Act::FastPath {
            function: "set_config",
            args: vec![text("role"), text("postgres"), Some(vec![0])],
            binary: true,
            first_request: false,
            piece: 0,
            pipelined: false,
        },
    );
    add(
        &mut out,
        "fast path",
        "lo_open of a function OID that does not exist",
        Act::FastPathOid(4_000_000_000),
    );
    add(&mut out, "fast path", "OID 0", Act::FastPathOid(0));
    add(
        &mut out,
        "fast path",
        "query_to_xml in the same write as a Query",
        Act::FastPath {
            function: "query_to_xml",
            args: vec![text("select 1"), text("t"), text("f"), text("")],
            binary: false,
            first_request: false,
            piece: 0,
            pipelined: true,
        },
    );
    add(
        &mut out,
        "fast path",
        "pg_read_file with an argument over the buffer limit",
        Act::FastPath {
            function: "pg_read_file",
            args: vec![Some(vec![b'x'; 2 * 1024 * 1024])],
            binary: false,
            first_request: false,
            piece: 0,
            pipelined: false,
        },
    );
    add(
        &mut out,
        "fast path",
        "pg_read_file inside an open extended batch",
        Act::FastPathInBatch("pg_read_file"),
    );

    // ---- the wire: splits, pipelines, malformed frames, memory --------------------
    let update = "update gh_canary set v = '{M}'";
    for piece in [1, 2, 3, 7, 13] {
        add(
            &mut out,
            "wire",
            &format!("denied Query in {piece}-byte writes"),
            Act::Split(update.to_owned(), piece),
        );
    }
    add(
        &mut out,
        "wire",
        "allowed then denied Query in one write",
        Act::Pipeline(vec!["select 1".into(), update.into()]),
    );
    add(
        &mut out,
        "wire",
        "denied between fifty allowed Queries in one write",
        Act::Pipeline(
            (0..50)
                .map(|i| {
                    if i == 25 {
                        update.to_owned()
                    } else {
                        format!("select {i}")
                    }
                })
                .collect(),
        ),
    );
    add(
        &mut out,
        "wire",
        "allowed and denied statements in one Query",
        sql("select 1; update gh_canary set v = '{M}'; select 2"),
    );
    let bytes = |out: &mut Vec<Attempt>, name: &str, piece: usize, readies: usize, build: Build| {
        add(
            out,
            "wire",
            name,
            Act::Bytes {
                build,
                piece,
                readies,
            },
        );
    };
    bytes(
        &mut out,
        "denied Parse with the marker as a Bind parameter",
        0,
        1,
        |m| {
            let mut b = rawpg::parse("", b"update gh_canary set v = $1");
            b.extend(rawpg::bind("", "", &[Some(m.as_bytes())]));
            b.extend(rawpg::execute(""));
            b.extend(rawpg::sync());
            vec![b]
        },
    );
    bytes(
        &mut out,
        "named denied statement described and executed twice",
        0,
        1,
        |m| {
            let mut b = rawpg::parse(
                "hostile",
                format!("update gh_canary set v = '{m}'").as_bytes(),
            );
            b.extend(rawpg::describe(b'S', "hostile"));
            b.extend(rawpg::flush());
            b.extend(rawpg::bind("p", "hostile", &[]));
            b.extend(rawpg::execute("p"));
            b.extend(rawpg::execute("p"));
            b.extend(rawpg::sync());
            vec![b]
        },
    );
    fn unsynced_ddl(m: &str) -> Vec<Vec<u8>> {
        let mut b = rawpg::parse("", format!("create table {m} (x int)").as_bytes());
        b.extend(rawpg::bind("", "", &[]));
        b.extend(rawpg::execute(""));
        b.extend(rawpg::flush());
        vec![b, rawpg::sync()]
    }
    bytes(
        &mut out,
        "denied extended batch, Sync in a later write",
        0,
        1,
        unsynced_ddl,
    );
    bytes(
        &mut out,
        "denied extended batch in one-byte writes",
        1,
        1,
        unsynced_ddl,
    );
    bytes(
        &mut out,
        "Query after an unsynced allowed Parse",
        0,
        2,
        |m| {
            let mut b = rawpg::parse("ok", b"select 1");
            b.extend(rawpg::query(
                format!("update gh_canary set v = '{m}'").as_bytes(),
            ));
            b.extend(rawpg::sync());
            vec![b]
        },
    );
    bytes(
        &mut out,
        "Query with a second statement after its NUL",
        0,
        1,
        |m| {
            let body = format!("select 1\0update gh_canary set v = '{m}'\0").into_bytes();
            let mut b = vec![b'Q'];
            b.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
            b.extend(body);
            vec![b]
        },
    );
    bytes(
        &mut out,
        "Query whose length ends after its first statement",
        0,
        1,
        |m| {
            let mut b = b"Q".to_vec();
            b.extend_from_slice(&13u32.to_be_bytes());
            b.extend(format!("select 1\0update gh_canary set v = '{m}'\0").into_bytes());
            vec![b]
        },
    );
    bytes(
        &mut out,
        "PasswordMessage carrying SQL after login",
        0,
        1,
        |m| vec![rawpg::password(&format!("update gh_canary set v = '{m}'"))],
    );
    bytes(
        &mut out,
        "CopyData carrying a Query outside COPY",
        0,
        1,
        |m| {
            let inner = rawpg::query(format!("update gh_canary set v = '{m}'").as_bytes());
            let mut b = b"d".to_vec();
            b.extend_from_slice(&(inner.len() as u32 + 4).to_be_bytes());
            b.extend(inner);
            b.extend(rawpg::sync());
            vec![b]
        },
    );
    bytes(
        &mut out,
        "Bind of a denied statement by a name the server truncates",
        0,
        1,
        |m| {
            // The server knows statements by their first 63 bytes: both names are one.
            let prefix = "s".repeat(63);
            let mut b = rawpg::parse(&format!("{prefix}a"), b"update gh_canary set v = $1");
            b.extend(rawpg::bind(
                "",
                &format!("{prefix}b"),
                &[Some(m.as_bytes())],
            ));
            b.extend(rawpg::execute(""));
            b.extend(rawpg::sync());
            vec![b]
        },
    );
    add(
        &mut out,
        "wire",
        "pipelining Queries without reading until the memory bound",
        Act::Flood {
            extended: false,
            expect: "53200",
        },
    );
    add(
        &mut out,
        "wire",
        "pipelining extended rounds without reading until the request bound",
        Act::Flood {
            extended: true,
            expect: "08P01",
        },
    );

    // ---- the SQL engine: lexer ----------------------------------------------------
    for (name, text) in [
        (
            "-- comment ended by CR",
            "select 1 --\r; update gh_canary set v = '{M}'",
        ),
        (
            "-- comment with text ended by CR",
            "select 1 -- note\r;update gh_canary set v = '{M}';--",
        ),
        (
            "-- comment ended by CR before DDL",
            "/* a */ select 1 --\r; create table {M} (x int)",
        ),
        (
            "-- comment ended by two CRs",
            "select 1 --\r\r; select pg_read_file('postgresql.conf'), '{M}'",
        ),
        (
            "string holding -- then CR comment",
            "select '--' as a --\r; update gh_canary set v = '{M}'",
        ),
        (
            "nested block comment hides nothing",
            "select 1 /* /* */ */ ; update gh_canary set v = '{M}'",
        ),
        (
            "block comment then statement",
            "select 1 /* */ ; update gh_canary set v = '{M}' /* */",
        ),
        (
            "escape string with a backslash",
            "select E'\\\\'; update gh_canary set v = '{M}'",
        ),
        (
            "escape string with an escaped quote",
            "select E'\\''; update gh_canary set v = '{M}'; select ''''",
        ),
        (
            "unicode string with an escaped quote",
            "select U&'\\0027'; update gh_canary set v = '{M}'",
        ),
        (
            "dollar quote holding $$",
            "select $a$ $$ $a$; update gh_canary set v = '{M}'",
        ),
        (
            "dollar quote tags differ in case",
            "select $A$ x $a$ y $A$; update gh_canary set v = '{M}'",
        ),
        (
            "dollar quote holding a semicolon",
            "select $_$;$_$; create table {M} (x int)",
        ),
        (
            "doubled quote",
            "select 'it''s'; update gh_canary set v = '{M}'",
        ),
    ] {
        add(&mut out, "lexer", name, sql(text));
    }
    for (name, setter) in [
        (
            "standard_conforming_strings off by UPDATE pg_settings",
            "update pg_settings set setting = 'off' where name = 'standard_conforming_strings' and '{M}' <> ''",
        ),
        (
            "standard_conforming_strings off by a quoted upper-case name",
            "set \"STANDARD_CONFORMING_STRINGS\" = off; select '{M}'",
        ),
        (
            "standard_conforming_strings off by set_config",
            "select set_config('standard_conforming_strings', 'off', false), '{M}'",
        ),
        (
            "standard_conforming_strings off by SET",
            "set standard_conforming_strings = off; select '{M}'",
        ),
        (
            "standard_conforming_strings off by SET SESSION",
            "set session standard_conforming_strings to off; select '{M}'",
        ),
        (
            "standard_conforming_strings off by SET LOCAL",
            "begin; set local standard_conforming_strings = off; select '{M}'",
        ),
        (
            "standard_conforming_strings off by ALTER ROLE",
            "alter role app set standard_conforming_strings = off; select '{M}'",
        ),
    ] {
        add(
            &mut out,
            "lexer",
            name,
            steps(&[
                setter,
                // With standard_conforming_strings on, one harmless SELECT; with
                // it off, the UPDATE runs (seen by the canary, not the marker).
                "select 'a\\' , $$ ' ; update gh_canary set v = 'hidden' --$$",
            ]),
        );
    }

    // ---- the SQL engine: client encodings set after login ----------------------------
    for (encoding, lead) in [
        ("SJIS", 0x95),
        ("BIG5", 0xa4),
        ("GBK", 0x81),
        ("GB18030", 0x81),
        ("JOHAB", 0x84),
        ("SHIFT_JIS_2004", 0x95),
    ] {
        add(
            &mut out,
            "encoding",
            &format!("SET client_encoding {encoding} hides an UPDATE"),
            Act::Steps(vec![
                format!("set client_encoding = '{encoding}'").into_bytes(),
                hidden_by_encoding(lead),
            ]),
        );
    }
    for setter in [
        "set names 'SJIS'",
        "select set_config('client_encoding', 'SJIS', false)",
        "update pg_settings set setting = 'SJIS' where name = 'client_encoding'",
    ] {
        add(
            &mut out,
            "encoding",
            &format!("{setter} hides an UPDATE"),
            Act::Steps(vec![setter.as_bytes().to_vec(), hidden_by_encoding(0x95)]),
        );
    }

    // ---- the SQL engine: names as the server resolves them ---------------------------
    for (name, text) in [
        (
            "U& function name pg_read_file",
            "select U&\"pg\\005fread\\005ffile\"('postgresql.conf'), '{M}'",
        ),
        (
            "U& function name pg_terminate_backend",
            "select U&\"pg_termin\\0061te_backend\"(0), '{M}'",
        ),
        (
            "U& function name query_to_xml",
            "select U&\"query\\005fto\\005fxml\"('select 1', true, false, ''), '{M}'",
        ),
        (
            "U& function name with UESCAPE",
            "select U&\"pg!005fls!005fdir\" UESCAPE '!' ('.'), '{M}'",
        ),
        (
            "U& function name lo_import",
            "select U&\"lo\\005fimport\"('/etc/hostname'), '{M}'",
        ),
        (
            "quoted function name",
            "select \"pg_catalog\".\"pg_read_file\"('postgresql.conf'), '{M}'",
        ),
        (
            "upper-case function name",
            "select pg_catalog.PG_READ_FILE('postgresql.conf'), '{M}'",
        ),
        (
            "quoted pg_reload_conf",
            "select pg_catalog.\"pg_reload_conf\"(), '{M}'",
        ),
        (
            "set_config of role by U& literal",
            "select set_config(U&'r\\006fle', 'postgres', false), '{M}'",
        ),
        (
            "set_config of ROLE",
            "select set_config('ROLE', 'postgres', false), '{M}'",
        ),
        (
            "set_config of scs by U& literal",
            "select pg_catalog.set_config(U&'standard\\005fconforming\\005fstrings', 'off', false), '{M}'",
        ),
        (
            "set_config name in E'' escapes",
            "select set_config(E'r\\x6fle', 'postgres', false), '{M}'",
        ),
        (
            "set_config name from a concatenation",
            "select set_config('ro' || 'le', 'postgres', false), '{M}'",
        ),
    ] {
        both(&mut out, "names", name, text);
    }
    for (name, text) in [
        (
            "SET of a quoted upper-case ROLE",
            "set \"ROLE\" = 'postgres'; select '{M}'",
        ),
        (
            "SET of a U& role name",
            "set U&\"rol\\0065\" = 'postgres'; select '{M}'",
        ),
        (
            "SET SESSION AUTHORIZATION",
            "set session authorization postgres; select '{M}'",
        ),
        (
            "SET of a U& scs name",
            "set U&\"standard\\005fconforming\\005fstrings\" = off; select '{M}'",
        ),
        (
            "ALTER SYSTEM of a U& name",
            "alter system set U&\"log\\005fstatement\" = 'none'; select '{M}'",
        ),
    ] {
        out.push(Attempt {
            name: name.to_owned(),
            class: "names",
            act: sql(text),
        });
    }

    // ---- the SQL engine: the fallback for text sqlparser cannot parse -----------------
    for (name, text) in [
        (
            "COPY FROM STDIN WHERE query_to_xml",
            "copy gh_canary from stdin where query_to_xml('select 1', true, false, '') is not null and '{M}' <> ''",
        ),
        (
            "COPY FROM STDIN WHERE pg_read_file",
            "copy gh_canary (id, v) from stdin with (format csv) where pg_read_file('postgresql.conf') <> '{M}'",
        ),
        (
            "COPY FROM STDIN WHERE pg_terminate_backend",
            "copy gh_canary from stdin where pg_terminate_backend(0) or '{M}' = ''",
        ),
        (
            "COPY FROM STDIN WHERE set_config role",
            "copy gh_canary from stdin where set_config('role', 'postgres', false) = '{M}'",
        ),
        (
            "COPY FROM STDIN (FREEZE) WHERE lo_import",
            "copy gh_canary from stdin (freeze) where lo_import('/etc/hostname') > 0 and '{M}' <> ''",
        ),
    ] {
        out.push(Attempt {
            name: name.to_owned(),
            class: "fallback",
            act: sql(text),
        });
    }

    // ---- the SQL engine: kinds from the whole tree --------------------------------------
    for (name, text) in [
        (
            "SELECT INTO in a UNION",
            "select * into {M} from gh_canary union select * from gh_canary",
        ),
        ("SELECT INTO in parentheses", "(select 1 as x into {M})"),
        (
            "SELECT INTO in double parentheses",
            "((select * into {M} from gh_canary))",
        ),
        (
            "SELECT INTO TEMP in a UNION ALL",
            "select 1 as x into temp {M} union all select 2",
        ),
        ("SELECT INTO", "select 1 as x into {M}"),
        (
            "EXPLAIN (ANALYSE) of an UPDATE",
            "explain (analyse) update gh_canary set v = '{M}'",
        ),
        (
            "EXPLAIN ANALYSE of an UPDATE",
            "explain analyse update gh_canary set v = '{M}'",
        ),
        (
            "EXPLAIN (ANALYZE true) of an UPDATE",
            "explain (analyze true) update gh_canary set v = '{M}'",
        ),
        (
            "EXPLAIN (ANALYZE on) of an UPDATE",
            "explain (analyze on) update gh_canary set v = '{M}'",
        ),
        (
            "EXPLAIN (ANALYZE 1) of an UPDATE",
            "explain (analyze 1) update gh_canary set v = '{M}'",
        ),
        (
            "EXPLAIN (FORMAT JSON, ANALYSE) of CREATE TABLE AS",
            "explain (format json, analyse) create table {M} as select 1",
        ),
        (
            "CTE with an UPDATE",
            "with x as (update gh_canary set v = '{M}' returning 1) select count(*) from x",
        ),
        ("CREATE TABLE AS", "create table {M} as select 1 as x"),
    ] {
        both(&mut out, "kinds", name, text);
    }
    for (name, text) in [
        (
            "PREPARE of an UPDATE then EXECUTE",
            "prepare {M} as update gh_canary set v = 'x'; execute {M}",
        ),
        (
            "DO block",
            "do $$ begin update gh_canary set v = '{M}'; end $$",
        ),
    ] {
        out.push(Attempt {
            name: name.to_owned(),
            class: "kinds",
            act: sql(text),
        });
    }

    // ---- the SQL engine: writes that can touch every row ---------------------------------
    for (name, text) in [
        ("UPDATE without WHERE", "update gh_canary set v = '{M}'"),
        (
            "UPDATE WHERE true",
            "update gh_canary set v = '{M}' where true",
        ),
        (
            "UPDATE WHERE id = id",
            "update gh_canary set v = '{M}' where id = id",
        ),
        (
            "UPDATE WHERE 1 = 1",
            "update gh_canary set v = '{M}' where 1 = 1",
        ),
        (
            "UPDATE WHERE id IS NOT NULL",
            "update gh_canary set v = '{M}' where id is not null",
        ),
        (
            "UPDATE WHERE NOT false",
            "update gh_canary set v = '{M}' where not false",
        ),
        (
            "UPDATE WHERE 't'",
            "update gh_canary set v = '{M}' where 't'",
        ),
        (
            "DELETE WHERE id = id",
            "delete from gh_canary where id = id and '{M}' <> ''",
        ),
        (
            "MERGE",
            "merge into gh_canary t using (select 1) s on true when matched then update set v = '{M}'",
        ),
        (
            "INSERT … SELECT … ON CONFLICT DO UPDATE",
            "insert into gh_canary select * from gh_canary on conflict (id) do update set v = '{M}'",
        ),
        (
            "INSERT … SELECT … ON CONFLICT DO UPDATE from excluded",
            "insert into gh_canary select id, v from gh_canary on conflict (id) do update set v = excluded.v || '{M}'",
        ),
    ] {
        both(&mut out, "without where", name, text);
    }

    // ---- the SQL engine: the decision cache's key ---------------------------------------
    for (name, warm, attack) in [
        (
            "comment shape then CR comment",
            "select 1 --a",
            "select 1 --\r; update gh_canary set v = '{M}'",
        ),
        (
            "comment shape then CR before DDL",
            "select 2 --b\n",
            "select 3 --\r; create table {M} (x int)",
        ),
        (
            "set_config of a harmless setting then of role by U&",
            "select set_config('application_name', 'x', false)",
            "select set_config(U&'r\\006fle', 'postgres', false), '{M}'",
        ),
        (
            "EXPLAIN without ANALYZE then with ANALYZE 1",
            "explain (analyze false) update gh_canary set v = 'x'",
            "explain (analyze 1) update gh_canary set v = '{M}'",
        ),
        (
            "string then escape string",
            "select 'x' as y",
            "select E'\\'' as y; update gh_canary set v = '{M}'",
        ),
    ] {
        add(&mut out, "cache key", name, steps(&[warm, attack]));
    }
    out
}

/// The OIDs of a function name's overloads, from the server.
struct Catalog {
    client: tokio_postgres::Client,
    runtime: tokio::runtime::Runtime,
}

impl Catalog {
    fn connect(stack: &Stack) -> Catalog {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!(
            "host=127.0.0.1 port={} user=postgres dbname=shop",
            stack.postgres.port
        );
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("direct connection");
            tokio::spawn(connection);
            client
        });
        Catalog { client, runtime }
    }

    fn execute(&self, sql: &str) {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn count(&self, sql: &str) -> i64 {
        self.runtime
            .block_on(self.client.query_one(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    fn oids(&self, function: &str) -> Vec<(u32, usize)> {
        self.runtime
            .block_on(self.client.query(
                "select oid, pronargs::int from pg_proc where proname = $1 order by oid",
                &[&function],
            ))
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, u32>(0), r.get::<_, i32>(1) as usize))
            .collect()
    }

    /// What an attempt changed that it must not have; empty when nothing.
    fn damage(&self) -> Vec<String> {
        let mut found = Vec::new();
        let rows = self.count("select count(*) from gh_canary");
        let dirty = self.count("select count(*) from gh_canary where v <> 'clean'");
        if rows != 100 || dirty != 0 {
            found.push(format!("gh_canary has {rows} rows, {dirty} changed"));
        }
        let relations = self.count("select count(*) from pg_class where relname like 'gh_atk%'");
        if relations != 0 {
            found.push(format!("{relations} relations named gh_atk…"));
        }
        let settings = self.count("select count(*) from pg_db_role_setting");
        if settings != 0 {
            found.push(format!("{settings} role settings"));
        }
        found
    }

    /// Undoes what a failed attempt changed, so the next one starts clean.
    fn restore(&self) {
        self.execute(
            "delete from gh_canary; \
             insert into gh_canary select i, 'clean' from generate_series(1, 100) i; \
             delete from pg_db_role_setting; \
             do $$ declare r record; begin \
               for r in select relname from pg_class where relname like 'gh_atk%' and relkind = 'r' loop \
                 execute format('drop table if exists %I', r.relname); end loop; end $$",
        );
    }
}

/// Everything the server logged since `offset`, and the new offset.
fn log_since(stack: &Stack, offset: u64) -> (String, u64) {
    let mut file = std::fs::File::open(stack.postgres.log_path()).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    (
        String::from_utf8_lossy(&bytes).into_owned(),
        offset + bytes.len() as u64,
    )
}

fn log_len(stack: &Stack) -> u64 {
    std::fs::metadata(stack.postgres.log_path())
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Reads until `readies` ReadyForQuery or the close; a COPY FROM STDIN gets CopyDone.
fn read_answer(raw: &mut RawPg, readies: usize) -> Result<Reply, String> {
    raw.read_until_ready(readies, WAIT)
        .map_err(|e| format!("no answer: {e}"))
}

struct Session {
    port: u16,
    token: String,
}

impl Session {
    fn login(&self) -> Result<RawPg, String> {
        let (raw, reply) = RawPg::login(
            self.port,
            &[("user", "app"), ("database", "shop")],
            &self.token,
        )
        .map_err(|e| e.to_string())?;
        if reply.messages.last().map(|m| m.tag) != Some(b'Z') {
            return Err(format!("login failed: {:?}", reply.error_message()));
        }
        Ok(raw)
    }
}

/// Runs one attempt; `Err` when it could not run as intended (a hang, a failed login).
fn run(
    attempt: &Attempt,
    marker: &str,
    session: &Session,
    catalog: &Catalog,
) -> Result<Reply, String> {
    let mark = |text: &str| text.replace("{M}", marker);
    let mark_bytes = |bytes: &[u8]| {
        let needle = b"{M}";
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i..].starts_with(needle) {
                out.extend_from_slice(marker.as_bytes());
                i += needle.len();
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        out
    };
    let startup_params = |extra: &[(String, String)]| {
        let mut all = vec![
            ("user".to_owned(), "app".to_owned()),
            ("database".to_owned(), "shop".to_owned()),
        ];
        all.extend(extra.iter().cloned());
        all
    };
    match &attempt.act {
        Act::Startup(extra) | Act::StartupSplit(extra, _) => {
            let all = startup_params(extra);
            let pairs: Vec<(&str, &str)> =
                all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let mut raw = RawPg::connect(session.port).map_err(|e| e.to_string())?;
            let packet = rawpg::startup(&pairs);
            match &attempt.act {
                Act::StartupSplit(_, piece) => raw.send_split(&packet, *piece),
                _ => raw.send(&packet),
            }
            .map_err(|e| e.to_string())?;
            let mut reply = Reply::default();
            loop {
                let Some(message) = raw.read_message(WAIT).map_err(|e| e.to_string())? else {
                    reply.closed = true;
                    return Ok(reply);
                };
                let tag = message.tag;
                if tag == b'R' && message.body.get(..4) == Some(&[0, 0, 0, 3]) {
                    raw.send(&rawpg::password(&session.token))
                        .map_err(|e| e.to_string())?;
                }
                reply.messages.push(message);
                if tag == b'E' {
                    reply.closed = raw.wait_closed(WAIT);
                    return Ok(reply);
                }
                if tag == b'Z' {
                    // It started: show it on the server.
                    raw.send(&rawpg::query(mark("select '{M}'").as_bytes()))
                        .map_err(|e| e.to_string())?;
                    let probe = read_answer(&mut raw, 1)?;
                    reply.messages.extend(probe.messages);
                    return Ok(reply);
                }
            }
        }
        Act::Flood { extended, expect } => {
            let mut raw = session.login()?;
            // The server sleeps, so what follows piles up in front of it.
            raw.send(&rawpg::query(b"select pg_sleep(3)"))
                .map_err(|e| e.to_string())?;
            let round = if *extended {
                let mut b = rawpg::parse("", b"select 1");
                b.extend(rawpg::bind("", "", &[]));
                b.extend(rawpg::execute(""));
                b
            } else {
                // As many statements as the policy analyzes in one text.
                rawpg::query("select 1;".repeat(64).as_bytes())
            };
            let flood_started = Instant::now();
            let written = raw
                .flood(&round, 200_000, Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
            // Now read: the session must end with 53200 rather than answer everything.
            let mut reply = Reply::default();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                match raw.read_message(WAIT).map_err(|e| e.to_string())? {
                    Some(m) if m.tag == b'E' => {
                        reply.messages.push(m);
                        break;
                    }
                    Some(_) => {}
                    None => {
                        reply.closed = true;
                        break;
                    }
                }
            }
            eprintln!(
                "  flood: {written} rounds written unread in {:.2} s, then {:?}",
                flood_started.elapsed().as_secs_f64(),
                reply.error_message()
            );
            if reply.errors().first().map(String::as_str) != Some(*expect) {
                return Err(format!(
                    "after {written} unread requests the session did not end with {expect}: {:?}",
                    reply.errors()
                ));
            }
            Ok(reply)
        }
        _ => {
            let first_request = matches!(
                attempt.act,
                Act::FastPath {
                    first_request: true,
                    ..
                }
            );
            let mut raw = session.login()?;
            if !first_request {
                raw.send(&rawpg::query(b"select 1"))
                    .map_err(|e| e.to_string())?;
                read_answer(&mut raw, 1)?;
            }
            let (bytes, readies, piece) = match &attempt.act {
                Act::Sql(text) => (rawpg::query(mark(text).as_bytes()), 1, 0),
                Act::Extended(text) => {
                    let mut b = rawpg::parse("", mark(text).as_bytes());
                    b.extend(rawpg::bind("", "", &[]));
                    b.extend(rawpg::execute(""));
                    b.extend(rawpg::sync());
                    (b, 1, 0)
                }
                Act::Steps(texts) => {
                    let mut last = Reply::default();
                    for text in texts {
                        raw.send(&rawpg::query(&mark_bytes(text)))
                            .map_err(|e| e.to_string())?;
                        last = read_answer(&mut raw, 1)?;
                        if last.closed {
                            break;
                        }
                    }
                    return Ok(last);
                }
                Act::Pipeline(texts) => (
                    texts
                        .iter()
                        .flat_map(|t| rawpg::query(mark(t).as_bytes()))
                        .collect(),
                    texts.len(),
                    0,
                ),
                Act::Split(text, piece) => (rawpg::query(mark(text).as_bytes()), 1, *piece),
                Act::Bytes {
                    build,
                    piece,
                    readies,
                } => {
                    for bytes in build(marker) {
                        if *piece > 0 {
                            raw.send_split(&bytes, *piece)
                        } else {
                            raw.send(&bytes)
                        }
                        .map_err(|e| e.to_string())?;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    return read_answer(&mut raw, *readies);
                }
                Act::FastPath {
                    function,
                    args,
                    binary,
                    piece,
                    pipelined,
                    ..
                } => {
                    // The overload with as many arguments, else the first one
                    // (its arguments padded with NULLs or cut).
                    let overloads = catalog.oids(function);
                    let (oid, nargs) = overloads
                        .iter()
                        .find(|(_, n)| *n == args.len())
                        .or(overloads.first())
                        .copied()
                        .ok_or_else(|| format!("no function {function}"))?;
                    let mut args: Vec<Option<&[u8]>> = args.iter().map(|a| a.as_deref()).collect();
                    args.resize(nargs, None);
                    let call = rawpg::function_call(oid, *binary, &args);
                    if *pipelined {
                        ([rawpg::query(b"select 2"), call].concat(), 2, *piece)
                    } else {
                        (call, 1, *piece)
                    }
                }
                Act::FastPathOid(oid) => (rawpg::function_call(*oid, false, &[]), 1, 0),
                Act::FastPathInBatch(function) => {
                    let (oid, _) = catalog
                        .oids(function)
                        .first()
                        .copied()
                        .ok_or("no function")?;
                    let mut b = rawpg::parse("", b"select 1");
                    b.extend(rawpg::function_call(
                        oid,
                        false,
                        &[Some(b"postgresql.conf")],
                    ));
                    b.extend(rawpg::sync());
                    (b, 2, 0)
                }
                Act::Startup(_) | Act::StartupSplit(..) | Act::Flood { .. } => unreachable!(),
            };
            if piece > 0 {
                raw.send_split(&bytes, piece)
            } else {
                raw.send(&bytes)
            }
            .map_err(|e| e.to_string())?;
            let reply = read_answer(&mut raw, readies)?;
            let _ = raw.send(&rawpg::terminate());
            Ok(reply)
        }
    }
}

/// What the server log since the attempt began shows of it.
fn reached_server(log: &str, marker: &str) -> Vec<String> {
    log.lines()
        .filter(|line| {
            line.contains(marker)
                || line.contains("fastpath function call")
                || line.contains("does not exist") && line.contains("OID")
        })
        .map(|line| line.chars().take(240).collect())
        .collect()
}

#[test]
fn no_hostile_attempt_gets_a_denied_statement_to_the_server() {
    let stack = Stack::start(
        "it",
        "pg-hostile",
        StackOptions {
            postgres_filter: demo_postgres_filter_config(),
            ..StackOptions::default()
        },
    )
    .expect("stack starts");
    let catalog = Catalog::connect(&stack);
    catalog.execute(
        "create table gh_canary (id int primary key, v text not null); \
         grant select, insert, update, delete on gh_canary to app;",
    );
    catalog.restore();
    let session = Session {
        port: stack.pg_port,
        token: stack.token("developer").unwrap(),
    };
    let attempts = corpus();
    assert!(attempts.len() >= 200, "{} attempts", attempts.len());
    let started = Instant::now();
    let mut offset = log_len(&stack);
    let mut failures: Vec<(String, &'static str, Vec<String>)> = Vec::new();
    let mut per_class: std::collections::BTreeMap<&str, usize> = Default::default();
    for (i, attempt) in attempts.iter().enumerate() {
        let marker = format!("gh_atk_{i:03}");
        let attempt_started = Instant::now();
        let outcome = run(attempt, &marker, &session, &catalog);
        if attempt_started.elapsed() > Duration::from_secs(1) {
            eprintln!(
                "  {} took {:.1} s",
                attempt.name,
                attempt_started.elapsed().as_secs_f64()
            );
        }
        // The server logs a statement before it answers; a refused startup or a
        // closed session has nothing more to log.
        let (log, next) = log_since(&stack, offset);
        offset = next;
        let mut problems = reached_server(&log, &marker)
            .into_iter()
            .map(|line| format!("reached the server: {line}"))
            .collect::<Vec<_>>();
        problems.extend(catalog.damage());
        match outcome {
            // The client is told: an error, or the session's end.
            Ok(reply)
                if reply.errors().is_empty()
                    && !reply.closed
                    && !matches!(attempt.act, Act::Steps(_))
                    && !SERVER_IGNORES.contains(&attempt.name.as_str()) =>
            {
                problems.push("the client got no error".to_owned());
            }
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
        *per_class.entry(attempt.class).or_insert(0) += 1;
        if !problems.is_empty() {
            catalog.restore();
            failures.push((attempt.name.clone(), attempt.class, problems));
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{} attempts in {:.1} s: {} got through",
        attempts.len(),
        elapsed.as_secs_f64(),
        failures.len(),
    );
    eprintln!("  attempts per class: {per_class:?}");
    let report: Vec<String> = failures
        .iter()
        .map(|(name, class, problems)| format!("[{class}] {name}: {}", problems.join("; ")))
        .collect();
    assert!(
        report.is_empty(),
        "attempts that got through:\n{}",
        report.join("\n")
    );
    // The flood ended its session on the bound, and the record says so.
    stack
        .wait_for_record("the memory-bound session end", |r| {
            r["type"] == "pg.session_end" && r["reason"] == "memory_limit"
        })
        .unwrap();
}

const JDBC_LARGE_OBJECTS: &str = r#"
import java.sql.*;
import java.util.Arrays;
import org.postgresql.PGConnection;
import org.postgresql.largeobject.LargeObject;
import org.postgresql.largeobject.LargeObjectManager;

public class LargeObjects {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], "app", args[1])) {
            c.setAutoCommit(false);
            LargeObjectManager lom = c.unwrap(PGConnection.class).getLargeObjectAPI();
            byte[] data = new byte[100000];
            for (int i = 0; i < data.length; i++) data[i] = (byte) (i * 31);
            long oid = lom.createLO(LargeObjectManager.READWRITE);
            try (LargeObject lo = lom.open(oid, LargeObjectManager.WRITE)) {
                lo.write(data);
            }
            c.commit();
            byte[] back = new byte[data.length];
            try (LargeObject lo = lom.open(oid, LargeObjectManager.READ)) {
                lo.seek(10);
                if (lo.tell() != 10) throw new AssertionError("tell");
                lo.seek(0);
                // In 8 KiB reads, as libpq does: masking inspects every value
                // the fast path returns, and one longer than its max_scan_bytes
                // (64 KiB in the demo) comes back masked whole.
                for (int at = 0; at < back.length; at += 8192) {
                    byte[] chunk = lo.read(Math.min(8192, back.length - at));
                    System.arraycopy(chunk, 0, back, at, chunk.length);
                }
                lo.seek(0);
                byte[] whole = lo.read(data.length);
                if (whole != null && Arrays.equals(data, whole)) {
                    throw new AssertionError("a read past max_scan_bytes came back unmasked");
                }
            }
            if (!Arrays.equals(data, back)) throw new AssertionError("read back differs");
            lom.delete(oid);
            c.commit();
        }
        System.out.println("ok");
    }
}
"#;

#[test]
fn large_objects_work_through_the_fast_path_for_jdbc_and_psql() {
    let stack = Stack::start(
        "it",
        "pg-large-objects",
        StackOptions {
            postgres_filter: demo_postgres_filter_config(),
            ..StackOptions::default()
        },
    )
    .expect("stack starts");
    let token = stack.token("developer").unwrap();
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/shop?sslmode=disable",
        stack.pg_port
    );
    clients::jdbc(&stack, "LargeObjects", JDBC_LARGE_OBJECTS, &[&url, &token]);

    // psql's \lo_import and \lo_export (libpq's lo_* calls, client side).
    let source = stack.dir.join("lo-source.bin");
    let copy = stack.dir.join("lo-copy.bin");
    let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&source, &data).unwrap();
    let out = stack
        .psql_login(
            "app",
            Some(&token),
            &["-c", &format!("\\lo_import {}", source.display())],
        )
        .unwrap();
    let imported = clients::stdout(&out);
    let oid: u32 = imported
        .trim()
        .strip_prefix("lo_import ")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("psql said {imported:?}"));
    let out = stack
        .psql_login(
            "app",
            Some(&token),
            &["-c", &format!("\\lo_export {oid} {}", copy.display())],
        )
        .unwrap();
    clients::stdout(&out);
    assert_eq!(std::fs::read(&copy).unwrap(), data, "exported bytes differ");
    let out = stack
        .psql_login("app", Some(&token), &["-c", &format!("\\lo_unlink {oid}")])
        .unwrap();
    clients::stdout(&out);

    // They used the fast path, and each call is recorded as the SQL call it is.
    let log = std::fs::read_to_string(stack.postgres.log_path()).unwrap();
    for function in ["lo_open", "lowrite", "loread", "lo_close"] {
        assert!(
            log.contains(&format!("fastpath function call: \"{function}\"")),
            "{function} not called through the fast path"
        );
    }
    let write = stack
        .wait_for_record("a lowrite call", |r| {
            r["type"] == "pg.statement"
                && r["protocol"] == "function_call"
                && r["statement"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("SELECT \"pg_catalog\".\"lowrite\"("))
        })
        .unwrap();
    assert_eq!(write["decision"]["action"], "allow");
    assert_eq!(write["identity"]["subject"], "developer");

    // A function not named for the fast path is refused by OID, and its record
    // names it from the catalog.
    let (mut raw, login) = RawPg::login(
        stack.pg_port,
        &[("user", "app"), ("database", "shop")],
        &token,
    )
    .unwrap();
    assert_eq!(login.messages.last().map(|m| m.tag), Some(b'Z'));
    let oid: u32 = stack
        .postgres
        .psql_in("shop", "select 'pg_catalog.query_to_xml'::regproc::oid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    raw.send(&rawpg::query(b"select 1")).unwrap();
    raw.read_until_ready(1, WAIT).unwrap();
    let args: [Option<&[u8]>; 4] = [Some(b"select 1"), Some(b"t"), Some(b"f"), Some(b"")];
    raw.send(&rawpg::function_call(oid, false, &args)).unwrap();
    let reply = raw.read_until_ready(1, WAIT).unwrap();
    assert_eq!(reply.errors(), ["42501"], "{:?}", reply.error_message());
    let refused = stack
        .wait_for_record("the refused fast-path call", |r| {
            r["type"] == "pg.statement" && r["function_oid"] == oid
        })
        .unwrap();
    assert_eq!(
        refused["statement"],
        r#"SELECT "pg_catalog"."query_to_xml"($1, $2, $3, $4)"#
    );
    assert_eq!(refused["decision"]["rule"], "gatehouse:fast-path");
    assert_eq!(refused["error"]["sqlstate"], "42501");

    // lo_import of a server file is the SQL function the policy denies.
    let refused = stack
        .psql_login(
            "app",
            Some(&token),
            &["-c", "select lo_import('/etc/hostname')"],
        )
        .unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not allowed"));
}

/// The encoding names the filter knows mean to the server what the filter thinks,
/// and every encoding the server has is among them (a name the filter does not know
/// is refused, so a missing alias could only refuse too much).
#[test]
fn encoding_names_mean_to_the_server_what_the_filter_thinks() {
    use gatehouse_postgres::startup::{ENCODING_ALIASES, UNSAFE_CLIENT_ENCODINGS, encoding};
    let dir = gatehouse_integration::scratch_dir("it", "pg-encodings").unwrap();
    let _scratch = gatehouse_integration::ScratchDir::new(dir.clone());
    let postgres = gatehouse_integration::postgres::Postgres::start(
        &dir,
        &gatehouse_integration::postgres::PgOptions::default(),
    )
    .expect("PostgreSQL starts");
    let values: Vec<String> = ENCODING_ALIASES
        .iter()
        .map(|(alias, _)| format!("('{alias}')"))
        .collect();
    let out = postgres
        .psql(&format!(
            "select a, pg_encoding_to_char(pg_char_to_encoding(a)) from (values {}) v(a)",
            values.join(",")
        ))
        .unwrap();
    for line in out.lines() {
        let (alias, server) = line.split_once('|').unwrap();
        let (_, ours) = ENCODING_ALIASES.iter().find(|(a, _)| *a == alias).unwrap();
        assert_eq!(server, *ours, "{alias}");
    }
    // Spelled as clients spell them, the server and the filter agree too.
    let spellings = [
        "Shift-JIS",
        "S.J.I.S",
        "WINDOWS-932",
        "utf-8",
        "Latin_1",
        "EUC-JP",
    ];
    for spelling in spellings {
        let server = postgres
            .psql(&format!(
                "select pg_encoding_to_char(pg_char_to_encoding('{spelling}'))"
            ))
            .unwrap();
        assert_eq!(
            Some(server.trim()),
            encoding(spelling).map(|(n, _)| n),
            "{spelling}"
        );
    }
    let server_encodings = postgres
        .psql("select pg_encoding_to_char(i) from generate_series(0, 64) i where pg_encoding_to_char(i) <> ''")
        .unwrap();
    for name in server_encodings.lines() {
        assert!(
            ENCODING_ALIASES.iter().any(|(_, n)| *n == name),
            "the server's encoding {name} has no alias in the filter"
        );
    }
    // Every encoding in which the server reads a lead byte and a backslash or a
    // quote as one character is one the filter refuses.
    postgres
        .psql(
            "create function hides(enc text, b text) returns boolean language plpgsql as $$ \
             declare lead int; begin \
               for lead in 128..255 loop begin \
                 if length(convert_from(decode(to_hex(lead) || b, 'hex'), enc)) = 1 then \
                   return true; end if; \
               exception when others then null; end; end loop; \
               return false; end $$",
        )
        .unwrap();
    let hiding = postgres
        .psql(
            "select pg_encoding_to_char(i) from generate_series(0, 64) i \
             where pg_encoding_to_char(i) <> '' \
             and (hides(pg_encoding_to_char(i), '5c') or hides(pg_encoding_to_char(i), '27'))",
        )
        .unwrap();
    let hiding: Vec<&str> = hiding.lines().collect();
    assert!(hiding.contains(&"SJIS"), "the check finds SJIS: {hiding:?}");
    for name in &hiding {
        assert!(
            UNSAFE_CLIENT_ENCODINGS.contains(name),
            "{name} hides a backslash or quote"
        );
        assert_eq!(encoding(name).map(|(_, safe)| safe), Some(false), "{name}");
    }
}
