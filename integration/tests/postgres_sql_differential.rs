//! The filter's reading of SQL against what a real PostgreSQL runs.
//!
//! A seeded generator builds Query texts from hostile pieces: every string form
//! (standard, `E''`, `U&''` with and without UESCAPE, dollar quotes with tags,
//! continuations across newlines and comments), quoted, `U&` and over-long names,
//! `--` comments ended by `\n` or `\r`, nested block comments, CR/LF, tabs and form
//! feeds, function names spelled every way, row conditions that do and do not tell
//! rows apart, and `SET standard_conforming_strings` changes. Each text goes to
//! PostgreSQL (started directly, no Envoy) over a raw connection, and what the
//! server did is compared with what the filter's lexer and analysis predict:
//! - how many statements ran, and the kind of each (CommandComplete tags);
//! - every string constant's value and every column name (the server's DataRow and
//!   RowDescription), as the filter decodes them;
//! - which function ran (`upper` or `lower`, told apart by its result) against
//!   the functions the analysis lists;
//! - whether an UPDATE touched every row against the analysis's `without_where`;
//! - a text the filter finds unlexable runs nothing.
//!
//! The server's `standard_conforming_strings` is tracked from its ParameterStatus
//! messages, as the session does, and some texts are pipelined behind the previous
//! one: the filter then judges them under the setting before that text with a
//! setting change in flight, and whatever it does not refuse must read as the
//! server runs it. Both settings are covered from the start of a connection.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::postgres::{PgOptions, Postgres};
use gatehouse_integration::{ScratchDir, scratch_dir};
use gatehouse_postgres::policy::{Lexing, PgPolicy, SessionContext};
use gatehouse_postgres::protocol::{BackendMessage, FrontendMessage, PROTOCOL_3_0, StartupPacket};
use gatehouse_postgres::sql::lexer::{self, Token, TokenKind};
use gatehouse_postgres::sql::{self, Limits, Settings, StatementKind};
use std::io::{Read, Write};
use std::net::TcpStream;

/// Texts per connection; two connections (one per starting setting).
const CASES_PER_RUN: usize = 5000;
const ROWS: u64 = 10;

thread_local! {
    /// UPDATEs that touched every row, and that touched fewer.
    static UPDATES: std::cell::RefCell<(usize, usize)> = const { std::cell::RefCell::new((0, 0)) };
}

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

// ---- a raw client -------------------------------------------------------------------

struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// What the server did with one Query.
#[derive(Debug, Default)]
struct ServerRun {
    /// Per completed statement: column names, first row's values, command tag.
    statements: Vec<(Vec<String>, Vec<Option<String>>, String)>,
    error: Option<String>,
    /// standard_conforming_strings as reported during this run, if it was.
    scs: Option<bool>,
}

impl Raw {
    fn connect(port: u16, options: &str) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let mut startup = Vec::new();
        let mut params = vec![("user", "postgres"), ("database", "postgres")];
        if !options.is_empty() {
            params.push(("options", options));
        }
        StartupPacket::Startup {
            version: PROTOCOL_3_0,
            params,
        }
        .encode(&mut startup);
        raw.stream.write_all(&startup).unwrap();
        let run = raw.until_ready();
        assert!(run.error.is_none(), "{run:?}");
        raw
    }

    fn send_query(&mut self, sql: &str) {
        let mut bytes = Vec::new();
        FrontendMessage::Query {
            sql: sql.as_bytes(),
        }
        .encode(&mut bytes);
        self.stream.write_all(&bytes).unwrap();
    }

    fn message(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    let body = self.buf[5..1 + len].to_vec();
                    self.buf.drain(..1 + len);
                    return (tag, body);
                }
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn until_ready(&mut self) -> ServerRun {
        let mut run = ServerRun::default();
        let mut columns = Vec::new();
        let mut first_row = Vec::new();
        loop {
            let (tag, body) = self.message();
            match BackendMessage::decode(tag, &body).unwrap() {
                BackendMessage::ReadyForQuery { .. } => return run,
                BackendMessage::RowDescription { body } => {
                    columns = row_description(body);
                    first_row.clear();
                }
                BackendMessage::DataRow { values } if first_row.is_empty() => {
                    first_row = values
                        .iter()
                        .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
                        .collect();
                }
                BackendMessage::CommandComplete { tag } => {
                    let tag = String::from_utf8_lossy(tag).into_owned();
                    run.statements.push((
                        std::mem::take(&mut columns),
                        std::mem::take(&mut first_row),
                        tag,
                    ));
                }
                BackendMessage::ErrorResponse { fields } => {
                    let message = fields
                        .iter()
                        .find(|(code, _)| *code == b'M')
                        .map(|(_, m)| String::from_utf8_lossy(m).into_owned());
                    run.error = Some(message.unwrap_or_default());
                }
                BackendMessage::ParameterStatus { name, value }
                    if name == b"standard_conforming_strings" =>
                {
                    run.scs = Some(value == b"on");
                }
                _ => {}
            }
        }
    }
}

fn row_description(body: &[u8]) -> Vec<String> {
    let count = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut names = Vec::with_capacity(count);
    let mut i = 2;
    for _ in 0..count {
        let end = i + body[i..].iter().position(|&b| b == 0).unwrap();
        names.push(String::from_utf8_lossy(&body[i..end]).into_owned());
        i = end + 1 + 18;
    }
    names
}

// ---- the generator ------------------------------------------------------------------

const VALUE_CHARS: &[&str] = &[
    "a", "b", "Z", ";", "'", "\\", "\"", "$", "-", "*", "/", "\n", "\r", "\t", " ", "é", "0", "x",
    "!", "&", "\x0b", "\x0c",
];

/// Whitespace and comments that may separate any two tokens.
const GAPS: &[&str] = &[
    " ",
    "  ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\x0c",
    " -- c;' \"/* \n",
    " --\r",
    "-- x;y\r\n",
    " /* a /* ; */ ' \" -- */ ",
    "/**/",
    " /* */\n",
];

struct Generator {
    rng: Rng,
    /// The setting the server will lex the text being built under.
    scs: bool,
}

impl Generator {
    fn gap(&mut self) -> &'static str {
        self.rng.pick(GAPS)
    }

    fn value(&mut self) -> String {
        let len = self.rng.below(7);
        (0..len).map(|_| self.rng.pick(VALUE_CHARS)).collect()
    }

    fn standard(&mut self, v: &str) -> String {
        let body = v.replace('\'', "''");
        let body = if self.scs {
            body
        } else {
            body.replace('\\', "\\\\")
        };
        format!("'{body}'")
    }

    fn escape(&mut self, v: &str) -> String {
        let mut out = String::from(if self.rng.chance(50) { "E'" } else { "e'" });
        for c in v.chars() {
            match c {
                '\'' if self.rng.chance(50) => out.push_str("\\'"),
                '\'' => out.push_str("''"),
                '\\' => out.push_str("\\\\"),
                '\n' if self.rng.chance(50) => out.push_str("\\n"),
                '\r' if self.rng.chance(50) => out.push_str("\\r"),
                c if c.is_ascii_alphanumeric() && self.rng.chance(50) => {
                    let code = c as u32;
                    out.push_str(&match self.rng.below(4) {
                        0 => format!("\\x{code:x}"),
                        1 => format!("\\{code:03o}"),
                        2 => format!("\\u{code:04x}"),
                        _ => format!("\\U{code:08x}"),
                    });
                }
                'é' if self.rng.chance(50) => out.push_str("\\u00e9"),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    }

    /// `U&'…'` or `U&"…"` body with `\XXXX` escapes, maybe under UESCAPE '!'.
    fn unicode_body(&mut self, v: &str, quote: char) -> (String, String) {
        let escape = if self.rng.chance(30) { '!' } else { '\\' };
        let mut body = String::new();
        for c in v.chars() {
            if c == escape {
                body.push(escape);
                body.push(escape);
            } else if c == quote {
                body.push(quote);
                body.push(quote);
            } else if self.rng.chance(40) {
                let code = c as u32;
                if self.rng.chance(50) {
                    body.push_str(&format!("{escape}{code:04X}"));
                } else {
                    body.push_str(&format!("{escape}+{code:06x}"));
                }
            } else {
                body.push(c);
            }
        }
        let clause = if escape == '!' {
            format!("{}UESCAPE{}'!'", self.gap(), self.gap())
        } else {
            String::new()
        };
        (body, clause)
    }

    fn dollar(&mut self, v: &str) -> String {
        for tag in ["", "a", "_x1", "tag", "ä"] {
            let delimiter = format!("${tag}$");
            let body = format!("{v}{delimiter}");
            if body.find(&delimiter) == Some(v.len()) && !v.ends_with('$') {
                return format!("{delimiter}{v}{delimiter}");
            }
        }
        self.standard(v)
    }

    /// A string constant of a random form holding `v`.
    fn literal(&mut self, v: &str) -> String {
        match self.rng.below(6) {
            0 => self.standard(v),
            1 => self.escape(v),
            2 if self.scs => {
                let (body, clause) = self.unicode_body(v, '\'');
                format!("U&'{body}'{clause}")
            }
            3 => self.dollar(v),
            4 => {
                let cut = v
                    .char_indices()
                    .map(|(i, _)| i)
                    .nth(self.rng.below(v.len() + 1))
                    .unwrap_or(v.len());
                let (a, b) = v.split_at(cut);
                let joint =
                    self.rng
                        .pick(&["\n", " \r", "\t-- c ; ' \n  ", "\r\n", "\n-- x\n", "\n\x0c"]);
                format!("{}{joint}{}", self.standard(a), self.standard(b))
            }
            _ => self.standard(v),
        }
    }

    /// A column name written some way: (its SQL).
    fn name(&mut self) -> String {
        let letters = |rng: &mut Rng, n: usize| -> String {
            (0..n)
                .map(|_| rng.pick(&['a', 'B', 'c', 'x', 'Y', '_', '1']))
                .collect()
        };
        match self.rng.below(5) {
            0 => format!("c_{}", letters(&mut self.rng, 4)),
            1 => format!("C{}", letters(&mut self.rng, 70)),
            2 => {
                let v: String = format!("n{}", self.value()).replace(['\0'], "");
                format!("\"{}\"", v.replace('"', "\"\""))
            }
            3 => {
                let v = format!("u{}", self.value());
                let (body, clause) = self.unicode_body(&v, '"');
                format!("U&\"{body}\"{clause}")
            }
            _ => format!("Col{}", letters(&mut self.rng, 3)),
        }
    }

    fn function(&mut self) -> &'static str {
        self.rng.pick(&[
            "upper",
            "LOWER",
            "\"upper\"",
            "pg_catalog.lower",
            "\"pg_catalog\" . \"upper\"",
            "U&\"\\0075pper\"",
            "U&\"l!006Fwer\" UESCAPE '!'",
            "PG_CATALOG.Upper",
        ])
    }

    fn condition(&mut self) -> &'static str {
        self.rng.pick(&[
            "true",
            "1 = 1",
            "id = id",
            "t.id = t.id",
            "id is not null",
            "id = id or id = 3",
            "not (id <> id)",
            "s like '%'",
            "id in (select id from t)",
            "exists (select 1)",
            "'a' = 'a'",
            "id = 3",
            "id = 3 and true",
            "id in (3, 4)",
            "id between 3 and 4",
            "t.id = 3",
            "exists (select 1 from t u where u.id = t.id and u.id = 3)",
            "id = (select min(id) from t)",
        ])
    }

    /// One statement; may change `scs` for the next text (not this one).
    fn statement(&mut self, next_scs: &mut bool) -> String {
        let g = |s: &mut Self| s.gap().to_string();
        match self.rng.below(10) {
            0..=2 => {
                let columns = 1 + self.rng.below(3);
                let mut out = format!("SELECT{}", g(self));
                for i in 0..columns {
                    if i > 0 {
                        out.push_str(&format!("{},{}", g(self), g(self)));
                    }
                    let v = self.value();
                    let literal = self.literal(&v);
                    let name = self.name();
                    out.push_str(&format!("{literal}{}AS{}{name}", g(self), g(self)));
                }
                out
            }
            3 => {
                let v = self.value();
                let literal = self.literal(&v);
                let function = self.function();
                format!(
                    "select{}{function}({literal}){}as{}r",
                    g(self),
                    g(self),
                    g(self)
                )
            }
            4 => format!(
                "UPDATE{}t{}SET s = s{}WHERE{}{}",
                g(self),
                g(self),
                g(self),
                g(self),
                self.condition()
            ),
            5 => {
                let v = self.value();
                let literal = self.literal(&v);
                format!(
                    "insert into t (id, s) values (3,{}{literal}) on conflict (id) do nothing",
                    g(self)
                )
            }
            6 => {
                let on = self.rng.chance(50);
                *next_scs = on;
                let value = if on {
                    self.rng.pick(&["on", "'on'", "true", "1", "ON"])
                } else {
                    self.rng.pick(&["off", "'off'", "false", "0", "OFF"])
                };
                format!(
                    "SET{}standard_conforming_strings{}={}{value}",
                    g(self),
                    g(self),
                    g(self)
                )
            }
            7 => {
                let v = self.value();
                let literal = self.literal(&v);
                format!("VALUES{}({literal})", g(self))
            }
            8 => format!("delete from t where{}id < 0", g(self)),
            _ => format!("DO{}$$BEGIN NULL; END$$", g(self)),
        }
    }

    /// A Query text; `scs` is the setting after it.
    fn text(&mut self) -> (String, bool) {
        let mut next_scs = self.scs;
        let count = 1 + self.rng.below(4);
        let mut out = String::new();
        if self.rng.chance(20) {
            out.push_str(self.gap());
        }
        for i in 0..count {
            if i > 0 {
                out.push_str(
                    self.rng
                        .pick(&[";", " ;", ";\r", "; ;", "\n;\n", "/* ; */;", ";--\r"]),
                );
            }
            out.push_str(&self.statement(&mut next_scs));
        }
        if self.rng.chance(30) {
            out.push(';');
        }
        (out, next_scs)
    }
}

// ---- the filter's prediction ------------------------------------------------------------

/// What the filter predicts one statement does.
#[derive(Debug)]
struct Predicted {
    tag: &'static str,
    /// For SELECT/VALUES of constants: each column's (name, value).
    columns: Option<Vec<(Option<String>, String)>>,
    /// For a function call: the value it returns.
    function_result: Option<String>,
    without_where: bool,
}

fn tag_of(kind: StatementKind) -> &'static str {
    match kind {
        StatementKind::Select => "SELECT",
        StatementKind::Insert => "INSERT",
        StatementKind::Update => "UPDATE",
        StatementKind::Delete => "DELETE",
        StatementKind::Set => "SET",
        StatementKind::Do => "DO",
        _ => "?",
    }
}

/// The prediction for each statement, or why the filter could not analyze it.
fn predict(sql: &str, lexed: &lexer::Lexed) -> Vec<Result<Predicted, String>> {
    let analysis = sql::analyze_lexed(sql, lexed, &Limits::default());
    let statements: Vec<&[Token]> = lexed.statement_tokens().collect();
    if analysis.statements.len() != statements.len() {
        return vec![Err(format!(
            "{sql:?}: statements and analyses differ in number"
        ))];
    }
    analysis
        .statements
        .iter()
        .zip(statements)
        .map(|(info, tokens)| {
            if info.unparseable {
                return Err(format!(
                    "{sql:?}: a statement could not be analyzed: {info:?}"
                ));
            }
            let strings: Vec<String> = tokens
                .iter()
                .filter(|t| t.kind == TokenKind::String)
                .map(|t| lexer::string_value(sql, t).unwrap())
                .collect();
            let functions = &info.functions;
            // The server runs in the C locale: only ASCII letters change case.
            let function_result = if functions.iter().any(|f| f == "upper") {
                Some(strings[0].to_ascii_uppercase())
            } else if functions.iter().any(|f| f == "lower") {
                Some(strings[0].to_ascii_lowercase())
            } else {
                None
            };
            let is_constant_select = function_result.is_none()
                && info.kind == StatementKind::Select
                && info.objects.is_empty();
            let columns = is_constant_select.then(|| {
                let aliases: Vec<Option<String>> = tokens
                    .windows(2)
                    .filter(|w| lexer::is_word(sql, &w[0], "as"))
                    .map(|w| lexer::ident_value(sql, &w[1]))
                    .collect();
                strings
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (aliases.get(i).cloned().flatten(), v.clone()))
                    .collect()
            });
            Ok(Predicted {
                tag: tag_of(info.kind),
                columns,
                function_result,
                without_where: info.properties.without_where,
            })
        })
        .collect()
}

/// Compares one text's prediction with the server's run; the disagreements.
fn compare(sql: &str, lexed: &lexer::Lexed, run: &ServerRun, truncated: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if lexed.error.is_some() {
        if !run.statements.is_empty() {
            problems.push(format!(
                "filter refuses {sql:?} ({:?}) but the server ran {:?}",
                lexed.error, run.statements
            ));
        }
        return problems;
    }
    if run.error.is_some() && run.statements.is_empty() {
        if !truncated {
            problems.push(format!("server refused {sql:?}: {:?}", run.error));
        }
        return problems;
    }
    let predicted = predict(sql, lexed);
    // A runtime error stops the text at its statement: what ran before it must
    // match (a text cut short may end with such a statement).
    let ran_all = run.error.is_none() && predicted.len() == run.statements.len();
    let stopped_early = run.error.is_some() && truncated && run.statements.len() < predicted.len();
    if !(ran_all || stopped_early) {
        problems.push(format!(
            "{sql:?}: filter sees {} statements {:?}, server ran {:?} (error {:?})",
            predicted.len(),
            predicted
                .iter()
                .map(|p| p.as_ref().map_or("?", |p| p.tag))
                .collect::<Vec<_>>(),
            run.statements,
            run.error
        ));
        return problems;
    }
    for (p, (columns, row, tag)) in predicted.iter().zip(&run.statements) {
        let p = match p {
            Ok(p) => p,
            Err(problem) => {
                problems.push(format!("{problem}; the server ran it: {tag}"));
                continue;
            }
        };
        if !tag.starts_with(p.tag) {
            problems.push(format!("{sql:?}: kind {} but the server ran {tag}", p.tag));
        }
        if let Some(expected) = &p.columns {
            let got: Vec<(String, Option<String>)> =
                columns.iter().cloned().zip(row.iter().cloned()).collect();
            let matches = expected.len() == got.len()
                && expected
                    .iter()
                    .zip(&got)
                    .all(|((name, value), (gname, gvalue))| {
                        gvalue.as_deref() == Some(value.as_str())
                            && name.as_ref().is_none_or(|n| n == gname)
                    });
            if !matches {
                problems.push(format!(
                    "{sql:?}: filter reads {expected:?}, server returned {got:?}"
                ));
            }
        }
        if let Some(result) = &p.function_result
            && row.first().cloned().flatten().as_deref() != Some(result.as_str())
        {
            problems.push(format!(
                "{sql:?}: filter expects {result:?} from the call, server returned {row:?}"
            ));
        }
        if p.tag == "UPDATE" || p.tag == "DELETE" {
            // Touching every row must be seen; seeing it where the data happened
            // to spare some rows is the conservative side.
            let touched: u64 = tag.rsplit(' ').next().unwrap().parse().unwrap();
            UPDATES.with(|u| {
                let mut u = u.borrow_mut();
                if touched == ROWS { u.0 += 1 } else { u.1 += 1 }
            });
            if touched == ROWS && !p.without_where {
                problems.push(format!(
                    "{sql:?}: without_where {} but the server updated {touched} of {ROWS} rows",
                    p.without_where
                ));
            }
        }
    }
    problems
}

fn run_connection(pg: &Postgres, seed: u64, start_scs: bool) -> (usize, usize, Vec<String>) {
    let options = if start_scs {
        ""
    } else {
        "-c standard_conforming_strings=off"
    };
    let mut conn = Raw::connect(pg.port, options);
    conn.send_query("create temp table t (id int primary key, s text); insert into t select g, 'v' || g from generate_series(1, 10) g");
    assert!(conn.until_ready().error.is_none());
    conn.send_query("select count(*) from t");
    assert_eq!(conn.until_ready().statements[0].1, [Some(ROWS.to_string())]);
    let policy = PgPolicy::from_json(b"{}").unwrap();
    let mut generator = Generator {
        rng: Rng(seed),
        scs: start_scs,
    };
    // What the server reported last, as the session tracks it.
    let mut server_scs = start_scs;
    let (mut statements, mut refused_in_flight) = (0, 0);
    let mut problems = Vec::new();
    let mut case = 0;
    while case < CASES_PER_RUN {
        let (first, after_first) = generator.text();
        let (mut text, truncated) = (first, generator.rng.chance(8));
        if truncated {
            let cuts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            text.truncate(cuts[generator.rng.below(cuts.len())]);
        }
        let scs_before = server_scs;
        let lexed = lexer::tokenize_with(
            &text,
            Settings {
                standard_conforming_strings: scs_before,
            },
        );
        // Sometimes the next text goes in the same write, behind this one.
        let pipelined = generator.rng.chance(25);
        generator.scs = after_first;
        let second = pipelined.then(|| generator.text());
        conn.send_query(&text);
        if let Some((second_text, _)) = &second {
            conn.send_query(second_text);
        }
        let mut run = conn.until_ready();
        problems.extend(compare(&text, &lexed, &run, truncated));
        statements += run.statements.len();
        if let Some(scs) = run.scs {
            server_scs = scs;
        }
        if let Some((second_text, after_second)) = second {
            // Judged before the first text's answer: under the old setting, with a
            // change possibly in flight.
            let ctx = SessionContext {
                lexing: Lexing {
                    standard_conforming_strings: scs_before,
                    settings_in_flight: true,
                    ..Lexing::default()
                },
                ..SessionContext::default()
            };
            let judged = policy.lex(&ctx, &second_text);
            let run2 = conn.until_ready();
            if let Some(scs) = run2.scs {
                server_scs = scs;
            }
            statements += run2.statements.len();
            match judged {
                Ok(lexed2) => problems.extend(compare(&second_text, &lexed2, &run2, false)),
                Err(_) => refused_in_flight += 1,
            }
            generator.scs = after_second;
            case += 1;
        }
        // A text cut short can delete rows (`delete from t`): put them back, so
        // that "touched every row" keeps meaning all ten.
        let deleted = |run: &ServerRun| {
            run.statements
                .iter()
                .any(|(_, _, tag)| tag.starts_with("DELETE") && tag != "DELETE 0")
        };
        if deleted(&run) || run.error.is_some() {
            conn.send_query(
                "insert into t select g, 'v' || g from generate_series(1, 10) g on conflict do nothing",
            );
            run = conn.until_ready();
            assert!(run.error.is_none(), "{run:?}");
        }
        // The generator writes for the setting the server really has now.
        generator.scs = server_scs;
        case += 1;
    }
    (statements, refused_in_flight, problems)
}

#[test]
fn filter_reads_hostile_sql_as_the_server_runs_it() {
    let dir = scratch_dir("it", "pg-sql-differential").unwrap();
    let _cleanup = ScratchDir::new(dir.clone());
    let pg = Postgres::start(&dir, &PgOptions::default()).unwrap();
    let seed = std::env::var("GATEHOUSE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0016_u64);
    let mut problems = Vec::new();
    let mut total = 0;
    for (i, start_scs) in [true, false].into_iter().enumerate() {
        let (statements, refused, found) = run_connection(&pg, seed + i as u64, start_scs);
        eprintln!(
            "standard_conforming_strings={start_scs} at start: {CASES_PER_RUN} texts, \
             {statements} statements run, {refused} pipelined texts refused while a \
             setting change was in flight, {} disagreements",
            found.len()
        );
        total += statements;
        problems.extend(found);
    }
    assert!(total > CASES_PER_RUN, "too few statements ran: {total}");
    let (every_row, some_rows) = UPDATES.with(|u| *u.borrow());
    eprintln!("UPDATEs checked: {every_row} touched every row, {some_rows} fewer");
    assert!(
        every_row > 100 && some_rows > 100,
        "the row checks were not exercised"
    );
    assert!(
        problems.is_empty(),
        "{} disagreements (seed {seed}):\n{}",
        problems.len(),
        problems
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
