//! Nothing masked leaves in clear, whatever the query, the type or the path:
//! hostile masking attempts through real Envoy, checked by value against a
//! direct connection to the same PostgreSQL.
//!
//! One stack, two raw protocol clients (hand-written frames, so that every
//! path can be driven exactly: no driver decides what is described):
//! - through the gateway as `app`, with the demo masking and no statement
//!   policy (masking alone is under test);
//! - straight to PostgreSQL as `postgres`, for the clear values.
//!
//! For every case, the values the same SQL returns on the direct connection
//! (and every email, card number and SSN of the rows it reads) must not appear
//! in any byte the gateway client received: not as they are, nor reversed,
//! upper- or lower-cased, as digits only, hex-encoded, or as the binary
//! integer or numeric of their digits. A refused statement passes the check
//! too (its error carries no value). The harness covers every protocol path ×
//! result format × statement-naming pattern × type, then generated
//! expressions over the masked columns; the corpus is a list of hand-written
//! attempts. At the end the access log must hold none of the values either.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::stack::example;
use gatehouse_integration::{Stack, StackOptions};
use serde_json::json;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

// ---- a raw protocol client ----------------------------------------------------

mod frames {
    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn cstr(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(s);
        out.push(0);
    }

    pub fn startup(user: &str) -> Vec<u8> {
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", "shop")] {
            cstr(&mut body, k.as_bytes());
            cstr(&mut body, v.as_bytes());
        }
        body.push(0);
        let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    pub fn query(sql: &str) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, sql.as_bytes());
        message(b'Q', &body)
    }

    pub fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, name.as_bytes());
        cstr(&mut body, sql.as_bytes());
        body.extend_from_slice(&0u16.to_be_bytes());
        message(b'P', &body)
    }

    pub fn bind(portal: &str, statement: &str, format: i16) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, portal.as_bytes());
        cstr(&mut body, statement.as_bytes());
        body.extend_from_slice(&0u16.to_be_bytes());
        body.extend_from_slice(&0u16.to_be_bytes());
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&format.to_be_bytes());
        message(b'B', &body)
    }

    pub fn describe(kind: u8, name: &str) -> Vec<u8> {
        let mut body = vec![kind];
        cstr(&mut body, name.as_bytes());
        message(b'D', &body)
    }

    pub fn execute(portal: &str, max_rows: u32) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, portal.as_bytes());
        body.extend_from_slice(&max_rows.to_be_bytes());
        message(b'E', &body)
    }

    pub fn close(kind: u8, name: &str) -> Vec<u8> {
        let mut body = vec![kind];
        cstr(&mut body, name.as_bytes());
        message(b'C', &body)
    }

    pub fn sync() -> Vec<u8> {
        message(b'S', &[])
    }

    pub fn flush() -> Vec<u8> {
        message(b'H', &[])
    }

    pub fn function_call(oid: u32, args: &[&[u8]], format: i16) -> Vec<u8> {
        let mut body = oid.to_be_bytes().to_vec();
        body.extend_from_slice(&0u16.to_be_bytes());
        body.extend_from_slice(&(args.len() as u16).to_be_bytes());
        for a in args {
            body.extend_from_slice(&(a.len() as i32).to_be_bytes());
            body.extend_from_slice(a);
        }
        body.extend_from_slice(&format.to_be_bytes());
        message(b'F', &body)
    }

    /// Splits a byte stream into (tag, body) messages.
    pub fn split(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while bytes.len() >= 5 {
            let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
            out.push((bytes[0], bytes[5..1 + len].to_vec()));
            bytes = &bytes[1 + len..];
        }
        out
    }

    /// The values of a DataRow body (None for NULL).
    pub fn row_values(body: &[u8]) -> Vec<Option<Vec<u8>>> {
        let n = u16::from_be_bytes([body[0], body[1]]) as usize;
        let mut at = 2;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
            at += 4;
            if len < 0 {
                out.push(None);
            } else {
                out.push(Some(body[at..at + len as usize].to_vec()));
                at += len as usize;
            }
        }
        out
    }
}

struct Conn {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Conn {
    fn connect(port: u16, user: &str) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut conn = Conn {
            stream,
            buffered: Vec::new(),
        };
        conn.send(&frames::startup(user));
        let login = conn.until_ready(1);
        assert!(
            frames::split(&login).iter().all(|(tag, _)| *tag != b'E'),
            "login failed: {}",
            String::from_utf8_lossy(&login)
        );
        conn
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("sends");
    }

    /// Every byte received up to and including the `n`th ReadyForQuery.
    fn until_ready(&mut self, n: usize) -> Vec<u8> {
        self.until(b'Z', n)
    }

    /// Every byte received up to and including the `n`th message tagged `last`.
    fn until(&mut self, last: u8, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut seen = 0;
        loop {
            while self.buffered.len() >= 5 {
                let len = u32::from_be_bytes(self.buffered[1..5].try_into().unwrap()) as usize;
                if self.buffered.len() < 1 + len {
                    break;
                }
                let tag = self.buffered[0];
                out.extend(self.buffered.drain(..1 + len));
                if tag == last {
                    seen += 1;
                    if seen == n {
                        return out;
                    }
                }
            }
            let mut chunk = [0u8; 65536];
            let read = self.stream.read(&mut chunk).expect("reads");
            assert!(
                read > 0,
                "connection closed: {}",
                String::from_utf8_lossy(&out)
            );
            self.buffered.extend_from_slice(&chunk[..read]);
        }
    }

    /// Sends `bytes` holding `syncs` ReadyForQuery-producing messages.
    fn round_trip(&mut self, bytes: &[u8], syncs: usize) -> Vec<u8> {
        self.send(bytes);
        self.until_ready(syncs)
    }

    fn simple(&mut self, sql: &str) -> Vec<u8> {
        self.round_trip(&frames::query(sql), 1)
    }
}

// ---- what counts as a clear value ---------------------------------------------------

/// Public parts the demo masking shows by design (an email's domain).
const SHOWN_BY_DESIGN: &str = "@example.com @mail.test @corp.example";
/// Shorter values are not checked: they occur by chance in any answer.
const MIN_CHECKED_LEN: usize = 6;

/// Every form of a clear value the gateway must not send.
fn forms(value: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(value).into_owned();
    if text.trim().len() < MIN_CHECKED_LEN || SHOWN_BY_DESIGN.contains(text.trim()) {
        return Vec::new();
    }
    let mut out: Vec<Vec<u8>> = vec![
        value.to_vec(),
        text.to_lowercase().into_bytes(),
        text.to_uppercase().into_bytes(),
        text.chars().rev().collect::<String>().into_bytes(),
    ];
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    out.push(hex.clone().into_bytes());
    out.push(hex.to_uppercase().into_bytes());
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    if digits.len() >= 8 {
        out.push(digits.clone().into_bytes());
        out.push(digits.chars().rev().collect::<String>().into_bytes());
        if let Ok(n) = digits.parse::<i64>() {
            out.push(n.to_be_bytes().to_vec());
            if let Ok(small) = i32::try_from(n) {
                out.push(small.to_be_bytes().to_vec());
            }
        }
        // numeric's binary digits: base-10000 groups from the decimal point.
        let padded = format!("{}{digits}", "0".repeat((4 - digits.len() % 4) % 4));
        let groups: Vec<u8> = padded
            .as_bytes()
            .chunks(4)
            .flat_map(|g| {
                std::str::from_utf8(g)
                    .unwrap()
                    .parse::<u16>()
                    .unwrap()
                    .to_be_bytes()
            })
            .collect();
        out.push(groups);
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The checker: clear values of the rows in play, and a tally.
struct Check {
    /// Every email, card number and SSN of the customers queried.
    row_values: Vec<Vec<u8>>,
    cases: usize,
    with_rows: usize,
    refused: usize,
    failures: Vec<String>,
}

impl Check {
    fn new(direct: &mut Conn) -> Check {
        let answer = direct.simple("select email, card_number, ssn from customers where id <= 5");
        let mut row_values = Vec::new();
        for (tag, body) in frames::split(&answer) {
            if tag == b'D' {
                row_values.extend(frames::row_values(&body).into_iter().flatten());
            }
        }
        assert_eq!(row_values.len(), 15, "clear values read directly");
        Check {
            row_values,
            cases: 0,
            with_rows: 0,
            refused: 0,
            failures: Vec::new(),
        }
    }

    /// Checks what the gateway sent for a case against the clear values:
    /// those of the rows, and `direct`'s answer to the same SQL.
    fn case(&mut self, name: &str, through_gateway: &[u8], direct: &[u8]) {
        self.cases += 1;
        let messages = frames::split(through_gateway);
        if messages
            .iter()
            .any(|(tag, _)| *tag == b'D' || *tag == b'd' || *tag == b'V')
        {
            self.with_rows += 1;
        }
        if messages
            .iter()
            .any(|(tag, body)| *tag == b'E' && contains(body, b"42501"))
        {
            self.refused += 1;
        }
        let mut clear: BTreeSet<Vec<u8>> = self.row_values.iter().cloned().collect();
        for (tag, body) in frames::split(direct) {
            match tag {
                b'D' => clear.extend(frames::row_values(&body).into_iter().flatten()),
                b'd' => clear.extend(
                    body.split(|b| *b == b'\t' || *b == b'\n')
                        .map(<[u8]>::to_vec),
                ),
                _ => {}
            }
        }
        for value in &clear {
            for form in forms(value) {
                if contains(through_gateway, &form) {
                    self.failures.push(format!(
                        "{name}: {:?} (from {:?}) reached the client",
                        String::from_utf8_lossy(&form),
                        String::from_utf8_lossy(value)
                    ));
                    return;
                }
            }
        }
    }

    fn assert_clean(&self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "{what}: {} of {} cases leaked:\n{}",
            self.failures.len(),
            self.cases,
            self.failures.join("\n")
        );
    }
}

// ---- the stack ----------------------------------------------------------------------

fn stack() -> Stack {
    let opts = StackOptions {
        postgres_filter: json!({ "masking": example("postgres-masking.json") }),
        ..StackOptions::default()
    };
    Stack::start("it", "pg-masking-hostile", opts).expect("stack starts")
}

/// Objects the cases use, made directly as the superuser.
fn prepare_database(direct: &mut Conn) {
    let answer = direct.simple(
        "create function get_ssn(bigint) returns text language sql stable \
           as 'select ssn from customers where id = $1'; \
         grant execute on function get_ssn(bigint) to app; \
         create view customer_ids as select id, upper(ssn) as tax_id, email || '' as contact from customers; \
         grant select on customer_ids to app; \
         create table notes_copy (id bigint, note text); \
         grant select, insert, update on notes_copy to app",
    );
    assert!(
        frames::split(&answer).iter().all(|(tag, _)| *tag != b'E'),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// How a statement reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Simple,
    /// Parse, Describe S, Bind, Execute (unnamed): the statement described, not the portal.
    DescribeStatement,
    /// Parse, Bind, Describe P, Execute (unnamed).
    DescribePortal,
    /// Parse, Bind, Execute, no Describe at all (unnamed).
    NoDescribe,
    /// A named statement and a named portal, no Describe.
    Named,
    /// Describe of one unnamed statement, then another parsed in its place.
    Reparse,
    /// Two statements, two portals, two Executes, one Sync.
    Pipelined,
    /// SQL PREPARE, then a protocol Bind of that name.
    SqlPrepare,
    /// DECLARE … CURSOR, FETCH.
    Cursor,
    /// Execute with a row limit, then again (PortalSuspended).
    Suspended,
    /// A harmless statement under a name, then the statement under another
    /// that agrees with it in the 63 bytes the server keeps (after a Close
    /// of that name), then a Bind of the first name: the server runs the
    /// second.
    LongNames,
    /// The statement under a name, then a batch whose first Parse fails, so
    /// that the server skips its Close of the name and a harmless re-Parse
    /// of it; then a Bind of the name: the server runs the statement.
    SkippedRedefine,
    /// As `SkippedRedefine`, but the Close and the re-Parse are written
    /// once the gateway passed the error on, before the batch's Sync.
    SkippedAfterSeenError,
}

const PATHS: [Path; 13] = [
    Path::Simple,
    Path::DescribeStatement,
    Path::DescribePortal,
    Path::NoDescribe,
    Path::Named,
    Path::Reparse,
    Path::Pipelined,
    Path::SqlPrepare,
    Path::Cursor,
    Path::Suspended,
    Path::LongNames,
    Path::SkippedRedefine,
    Path::SkippedAfterSeenError,
];

static PREPARED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `sql` (one statement, no trailing semicolon) on `path` in `format`.
fn run(conn: &mut Conn, path: Path, format: i16, sql: &str) -> Vec<u8> {
    use frames::*;
    let n = PREPARED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let cat = |parts: &[Vec<u8>]| parts.concat();
    match path {
        Path::Simple => conn.simple(sql),
        Path::DescribeStatement => conn.round_trip(
            &cat(&[
                parse("", sql),
                describe(b'S', ""),
                bind("", "", format),
                execute("", 0),
                sync(),
            ]),
            1,
        ),
        Path::DescribePortal => conn.round_trip(
            &cat(&[
                parse("", sql),
                bind("", "", format),
                describe(b'P', ""),
                execute("", 0),
                sync(),
            ]),
            1,
        ),
        Path::NoDescribe => conn.round_trip(
            &cat(&[parse("", sql), bind("", "", format), execute("", 0), sync()]),
            1,
        ),
        Path::Named => {
            let (s, p) = (format!("s{n}"), format!("p{n}"));
            conn.round_trip(
                &cat(&[
                    parse(&s, sql),
                    sync(),
                    bind(&p, &s, format),
                    execute(&p, 0),
                    close(b'P', &p),
                    close(b'S', &s),
                    sync(),
                ]),
                2,
            )
        }
        Path::Reparse => conn.round_trip(
            &cat(&[
                parse("", "select 1 as harmless"),
                describe(b'S', ""),
                parse("", sql),
                bind("", "", format),
                execute("", 0),
                sync(),
            ]),
            1,
        ),
        Path::Pipelined => {
            let (a, b) = (format!("a{n}"), format!("b{n}"));
            conn.round_trip(
                &cat(&[
                    parse(&a, "select 1 as harmless"),
                    parse(&b, sql),
                    bind(&a, &a, format),
                    bind(&b, &b, format),
                    execute(&a, 0),
                    execute(&b, 0),
                    close(b'S', &a),
                    close(b'S', &b),
                    sync(),
                ]),
                1,
            )
        }
        Path::SqlPrepare => {
            let s = format!("q{n}");
            let mut out = conn.simple(&format!("prepare {s} as {sql}"));
            out.extend(conn.round_trip(&cat(&[bind("", &s, format), execute("", 0), sync()]), 1));
            out.extend(conn.simple(&format!("deallocate {s}")));
            out
        }
        Path::Cursor => {
            let binary = if format == 1 { "binary " } else { "" };
            conn.simple(&format!(
                "begin; declare c{n} {binary}cursor for {sql}; fetch 5 from c{n}; commit"
            ))
        }
        Path::Suspended => conn.round_trip(
            &cat(&[
                parse("", sql),
                bind("", "", format),
                execute("", 1),
                execute("", 0),
                sync(),
            ]),
            1,
        ),
        Path::LongNames => {
            let stem = format!("{n:l<63}");
            let (a, b) = (format!("{stem}a"), format!("{stem}b"));
            conn.round_trip(
                &cat(&[
                    parse(&a, "select 1 as harmless"),
                    sync(),
                    close(b'S', &b),
                    parse(&b, sql),
                    sync(),
                    bind("", &a, format),
                    execute("", 0),
                    close(b'S', &a),
                    sync(),
                ]),
                3,
            )
        }
        Path::SkippedRedefine => {
            let s = format!("r{n}");
            conn.round_trip(
                &cat(&[
                    parse(&s, sql),
                    sync(),
                    parse("", "select 1 from no_such_table"),
                    close(b'S', &s),
                    parse(&s, "select 1 as harmless"),
                    sync(),
                    bind("", &s, format),
                    execute("", 0),
                    close(b'S', &s),
                    sync(),
                ]),
                3,
            )
        }
        Path::SkippedAfterSeenError => {
            let s = format!("w{n}");
            let mut out = conn.round_trip(&cat(&[parse(&s, sql), sync()]), 1);
            conn.send(&cat(&[parse("", "select 1 from no_such_table"), flush()]));
            out.extend(conn.until(b'E', 1));
            conn.send(&cat(&[close(b'S', &s), parse(&s, "select 1 as harmless")]));
            out.extend(conn.round_trip(
                &cat(&[
                    sync(),
                    bind("", &s, format),
                    execute("", 0),
                    close(b'S', &s),
                    sync(),
                ]),
                2,
            ));
            out
        }
    }
}

/// Result expressions of every type the masker inspects, over masked columns.
const TYPED: &[(&str, &str)] = &[
    (
        "text",
        "select ssn, email, card_number from customers where id <= 3",
    ),
    (
        "alias",
        "select ssn as a, email as b from customers where id <= 3",
    ),
    ("whole row", "select c from customers c where id <= 3"),
    (
        "record",
        "select row(c.id, c.ssn, c.email) from customers c where id <= 3",
    ),
    (
        "row of all",
        "select row(c.*) from customers c where id <= 3",
    ),
    (
        "array",
        "select array[ssn, email, card_number] from customers where id <= 3",
    ),
    (
        "array of rows",
        "select array_agg(c) from customers c where id <= 3",
    ),
    (
        "numeric",
        "select card_number::numeric from customers where id <= 3",
    ),
    (
        "int8",
        "select card_number::int8, replace(ssn, '-', '')::int8 from customers where id <= 3",
    ),
    (
        "float8",
        "select card_number::float8 from customers where id <= 3",
    ),
    (
        "bytea",
        "select convert_to(email, 'UTF8'), ssn::bytea from customers where id <= 3",
    ),
    (
        "xml",
        "select xmlparse(content email) from customers where id <= 3",
    ),
    ("json", "select to_json(c) from customers c where id <= 3"),
    (
        "jsonb",
        "select jsonb_build_object('s', ssn, 'e', email) from customers where id <= 3",
    ),
    (
        "tsvector",
        "select to_tsvector('simple', email || ' ' || card_number) from customers where id <= 3",
    ),
    (
        "range",
        "select int8range(card_number::int8, card_number::int8 + 1) from customers where id <= 3",
    ),
    (
        "view",
        "select tax_id, contact from customer_ids where id <= 3",
    ),
    (
        "function",
        "select get_ssn(id) from customers where id <= 3",
    ),
    (
        "composite text",
        "select c::text from customers c where id <= 3",
    ),
    (
        "separated",
        "select '2,' || ssn, '2,' || card_number from customers where id <= 3",
    ),
];

#[test]
fn nothing_masked_reaches_the_client_on_any_path_type_or_expression() {
    let stack = stack();
    let mut direct = Conn::connect(stack.postgres.port, "postgres");
    prepare_database(&mut direct);
    let mut gateway = Conn::connect(stack.pg_port, "app");
    let mut check = Check::new(&mut direct);

    // Every path × format × type.
    for (kind, sql) in TYPED {
        let expected = direct.simple(sql);
        for path in PATHS {
            for format in [0i16, 1] {
                if path == Path::Simple && format == 1 {
                    continue;
                }
                let got = run(&mut gateway, path, format, sql);
                check.case(&format!("{kind} / {path:?} / {format}"), &got, &expected);
                end_transaction(&mut gateway, &got);
            }
        }
    }
    let matrix = check.cases;
    check.assert_clean("matrix");

    // COPY, text, CSV and binary, simple and extended.
    for sql in [
        "copy customers to stdout",
        "copy (select upper(ssn), c from customers c where id <= 3) to stdout",
        "copy (select card_number::numeric, email from customers where id <= 3) to stdout (format csv)",
        "copy (select ssn, row(c.*) from customers c where id <= 3) to stdout (format binary)",
        "copy customer_ids to stdout",
    ] {
        // The rows' masked values are checked (other columns are clear by design).
        let got = gateway.simple(sql);
        check.case(&format!("copy / simple / {sql}"), &got, &[]);
        let got = run(&mut gateway, Path::NoDescribe, 0, sql);
        check.case(&format!("copy / extended / {sql}"), &got, &[]);
    }

    // The fast path: a function defined in the database, and a built-in.
    let oid = |direct: &mut Conn, name: &str| -> u32 {
        let answer = direct.simple(&format!("select '{name}'::regprocedure::oid"));
        let (_, body) = frames::split(&answer)
            .into_iter()
            .find(|(tag, _)| *tag == b'D')
            .unwrap();
        let value = frames::row_values(&body).remove(0).unwrap();
        String::from_utf8(value).unwrap().parse().unwrap()
    };
    let get_ssn = oid(&mut direct, "get_ssn(bigint)");
    let upper = oid(&mut direct, "upper(text)");
    let ssn = check.row_values[2].clone();
    for format in [0i16, 1] {
        let got = gateway.round_trip(&frames::function_call(get_ssn, &[b"1"], format), 1);
        let expected = direct.simple("select get_ssn(1)");
        check.case(&format!("fast path get_ssn / {format}"), &got, &expected);
        // A built-in handing back a value: the detectors still see it.
        let got = gateway.round_trip(&frames::function_call(upper, &[&ssn], format), 1);
        check.case(&format!("fast path upper / {format}"), &got, &[]);
    }
    check.assert_clean("copy and fast path");

    // Generated expressions over the masked columns, spread over the paths.
    let expressions = generated_expressions(160);
    for (i, expression) in expressions.iter().enumerate() {
        let sql = format!("select {expression} from customers where id <= 3");
        let expected = direct.simple(&sql);
        let path = PATHS[i % PATHS.len()];
        let format = if path == Path::Simple {
            0
        } else {
            (i % 2) as i16
        };
        let got = run(&mut gateway, path, format, &sql);
        check.case(
            &format!("generated {sql} / {path:?} / {format}"),
            &got,
            &expected,
        );
    }
    check.assert_clean("generated expressions");
    // Not vacuous: most cases so far returned rows (masked, not refused).
    assert!(matrix >= 300, "{matrix} matrix cases");
    assert!(
        check.with_rows * 10 >= check.cases * 7,
        "only {} of {} cases returned rows",
        check.with_rows,
        check.cases
    );

    // Behind thousands of pipelined batches that each fail (the gateway
    // undoes each one's changes to names, and applies the pipeline behind it
    // again where those names reach), every request is answered and what
    // the statements behind return is masked.
    const FAILING_BATCHES: usize = 2_000;
    for sql in [
        "select upper(ssn), email from customers where id <= 3",
        "select card_number from customers where id <= 3",
    ] {
        let mut pipeline = Vec::new();
        for _ in 0..FAILING_BATCHES {
            // The Bind is refused, the harmless Parse behind it skipped.
            pipeline.extend(frames::bind("", "missing", 0));
            pipeline.extend(frames::parse("", "select 1"));
            pipeline.extend(frames::sync());
        }
        pipeline.extend(frames::parse("", sql));
        pipeline.extend(frames::bind("", "", 0));
        pipeline.extend(frames::execute("", 0));
        pipeline.extend(frames::sync());
        let got = gateway.round_trip(&pipeline, FAILING_BATCHES + 1);
        let refused = frames::split(&got)
            .iter()
            .filter(|(tag, body)| *tag == b'E' && contains(body, b"26000"))
            .count();
        assert_eq!(
            refused, FAILING_BATCHES,
            "{sql}: a failing batch went unanswered"
        );
        assert!(
            frames::split(&got).iter().any(|(tag, _)| *tag == b'D'),
            "{sql}: the statement behind the failures returned no rows"
        );
        check.case(
            &format!("behind failing batches: {sql}"),
            &got,
            &direct.simple(sql),
        );
    }
    check.assert_clean("behind failing batches");

    // The hand-written corpus (integration/tests/data/hostile_masking.sql).
    let corpus = include_str!("data/hostile_masking.sql");
    let mut attempts = 0;
    for line in corpus
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        attempts += 1;
        let got = if let Some(sql) = line.strip_prefix("@binary ") {
            run(&mut gateway, Path::NoDescribe, 1, sql)
        } else if let Some(sql) = line.strip_prefix("@describe ") {
            run(&mut gateway, Path::DescribeStatement, 1, sql)
        } else {
            gateway.simple(line)
        };
        check.case(&format!("corpus: {line}"), &got, &[]);
        end_transaction(&mut gateway, &got);
    }
    assert!(attempts >= 150, "{attempts} attempts in the corpus");
    check.assert_clean("corpus");

    // Records hold none of the values either.
    drop(gateway);
    let records = stack.access_log_records().expect("records");
    let log = serde_json::to_string(&records).unwrap();
    let mut in_log = Vec::new();
    for value in &check.row_values {
        if forms(value)
            .iter()
            .take(1)
            .any(|f| contains(log.as_bytes(), f))
        {
            in_log.push(String::from_utf8_lossy(value).into_owned());
        }
    }
    assert!(in_log.is_empty(), "records hold clear values: {in_log:?}");
    eprintln!(
        "hostile masking: {} cases, {} with rows, {} refused, 0 clear values",
        check.cases, check.with_rows, check.refused
    );
}

/// Rolls back a transaction an attempt left open (or aborted), so that the
/// next attempt does not fail for that reason alone.
fn end_transaction(conn: &mut Conn, answer: &[u8]) {
    let status = frames::split(answer)
        .into_iter()
        .rev()
        .find(|(tag, _)| *tag == b'Z')
        .and_then(|(_, body)| body.first().copied());
    if status != Some(b'I') {
        conn.simple("rollback");
    }
}

/// Expressions over masked columns: nested transformations, generated
/// deterministically (the same list every run).
fn generated_expressions(n: usize) -> Vec<String> {
    const COLUMNS: [&str; 3] = ["ssn", "card_number", "email"];
    const WRAPS: [&str; 24] = [
        "upper({})",
        "lower({})",
        "reverse({})",
        "replace({}, '-', '')",
        "({} || '')",
        "('2,' || {})",
        "substr({}, 2)",
        "concat('<', {}, '>')",
        "coalesce({}, '')",
        "trim({})",
        "lpad({}, 40, '.')",
        "format('[%s]', {})",
        "{}::varchar",
        "translate({}, '0123456789', 'abcdefghij')",
        "initcap({})",
        "repeat({}, 2)",
        "regexp_replace({}, '(.)', '\\1 ', 'g')",
        "left({}, 9)",
        "right({}, 9)",
        "encode(convert_to({}, 'UTF8'), 'hex')",
        "encode(convert_to({}, 'UTF8'), 'base64')",
        "to_json({})::text",
        "array_to_string(array[{}, {}], ',')",
        "(select string_agg({}, ',') from customers where id <= 2)",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |m: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) as usize) % m
    };
    (0..n)
        .map(|_| {
            let mut expr = COLUMNS[next(COLUMNS.len())].to_string();
            for _ in 0..=next(3) {
                expr = WRAPS[next(WRAPS.len())].replace("{}", &expr);
            }
            expr
        })
        .collect()
}
