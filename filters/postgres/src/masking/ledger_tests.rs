//! Masking and the session's ledger agree on what every prepared statement
//! and portal name runs: a client pipelines Parse, Bind, Describe, Execute,
//! Close and Query with errors mid-batch, re-used names and names longer than
//! the server keeps, and a model of the server answers exactly what the
//! server gets. Every row of a statement reading a masked column is masked,
//! every other row passes as it came (its lineage is known), and every record
//! names the text the server ran.

use super::tests::{TEXT, Wire, data_row, encode_backend, encode_frontend, query, row_description};
use super::*;
use crate::protocol::Bind;
use proptest::prelude::*;

/// A statement reading no masked column: its rows pass as they came.
const SAFE: &str = "SELECT upper('plain') AS note";
/// A statement computing its column from a masked one: its rows are masked.
const SECRET: &str = "SELECT md5(ssn) AS note FROM customers";
/// A text the server refuses (but whose lineage is known: a text the
/// masker cannot read makes it forget every lineage, failing closed).
const BAD: &str = "SELECT upper('plain') AS note FROM no_such_table";
/// A text the statement policy denies: the server gets the raising block
/// in its place, and the engine injects requests of its own for it. Neither
/// makes masking forget what it knows of other names: rows of safe texts
/// after it pass as they came.
const DENIED: &str = "SELECT note FROM secrets";
const TEXTS: [&str; 4] = [SAFE, SECRET, BAD, DENIED];
/// The raising block, as the server model knows it.
const RAISING_BLOCK: &str = "DO (raises the denial)";
const DENIAL_MESSAGE: &str = "gatehouse: no secrets";
const STATEMENT_POLICY: &str = r#"{
  "version": "ledger-tests",
  "default": { "action": "allow" },
  "rules": [
    { "name": "no-secrets", "action": "deny", "message": "gatehouse: no secrets",
      "match": { "reads": ["secrets"] } }
  ]
}"#;

const SAFE_VALUE: &[u8] = b"plain-value";
/// No detector knows it: only the lineage of its text masks it.
const SECRET_VALUE: &[u8] = b"opaque-digest-qx";

/// Names the server keys by their first 63 bytes: the two long ones are one.
const LONG_A: &[u8] = b"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnna";
const LONG_B: &[u8] = b"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnb";
const NAMES: [&[u8]; 4] = [b"", b"s", LONG_A, LONG_B];

/// The server's key for a name (NAMEDATALEN - 1 bytes).
fn key(name: &[u8]) -> Vec<u8> {
    name.get(..63).unwrap_or(name).to_vec()
}

fn description() -> Vec<u8> {
    row_description(&[("note", 0, 0, TEXT, 0)])
}

fn error(code: &str) -> Vec<u8> {
    encode_backend(&[BackendMessage::ErrorResponse {
        fields: vec![
            (b'S', b"ERROR"),
            (b'C', code.as_bytes()),
            (b'M', b"refused"),
        ],
    }])
}

/// The server raising a denial's block.
fn denial() -> Vec<u8> {
    encode_backend(&[BackendMessage::ErrorResponse {
        fields: vec![
            (b'S', b"ERROR"),
            (b'C', b"42501"),
            (b'M', DENIAL_MESSAGE.as_bytes()),
        ],
    }])
}

/// What PostgreSQL does with the messages it gets, for the texts above.
#[derive(Default)]
struct Server {
    statements: HashMap<Vec<u8>, &'static str>,
    /// Portals with their text, whether they have run, and whether they
    /// were bound while `unsure` (the session forgot their shapes).
    portals: HashMap<Vec<u8>, (&'static str, bool, bool)>,
    /// After an error, every message up to Sync is skipped.
    skipping: bool,
    /// The statements that returned a row, in order, and whether the
    /// session may have masked it whole (see `unsure`).
    ran: Vec<(&'static str, bool)>,
    /// An error was answered, and its batch has not ended yet.
    failed_batch: bool,
    /// A batch failed, and messages the client pipelined after it are being
    /// answered: the session has re-applied them on the names as the server
    /// has them (their records name what the server runs), but fails closed
    /// on what masking took from names for them, so their safe rows may be
    /// masked whole (and so may those of a portal they bound, run later).
    unsure: bool,
}

impl Server {
    fn text(sql: &[u8]) -> &'static str {
        if sql.starts_with(b"DO $gh") {
            return RAISING_BLOCK;
        }
        TEXTS
            .into_iter()
            .find(|t| t.as_bytes() == sql)
            .unwrap_or(BAD)
    }

    fn refuse(&mut self, code: &str) -> Vec<u8> {
        self.skipping = true;
        self.failed_batch = true;
        error(code)
    }

    /// `forgotten`: run through a portal the session forgot the shape of.
    fn rows(&mut self, text: &'static str, forgotten: bool) -> Vec<u8> {
        self.ran.push((text, self.unsure || forgotten));
        let value = if text == SECRET {
            SECRET_VALUE
        } else {
            SAFE_VALUE
        };
        let mut out = data_row(&[Some(value)]);
        out.extend(encode_backend(&[BackendMessage::CommandComplete {
            tag: b"SELECT 1",
        }]));
        out
    }

    /// The server's answers to the client's bytes as the server gets them.
    fn answer_all(&mut self, mut bytes: &[u8]) -> Vec<u8> {
        self.unsure = false;
        self.failed_batch = false;
        let mut out = Vec::new();
        while let Some((&tag, tail)) = bytes.split_first() {
            let len = u32::from_be_bytes(tail[..4].try_into().unwrap()) as usize;
            let msg = FrontendMessage::decode(tag, &tail[4..len]).unwrap();
            out.extend(self.answer(&msg));
            bytes = &tail[len..];
        }
        out
    }

    fn answer(&mut self, msg: &FrontendMessage<'_>) -> Vec<u8> {
        if self.skipping && !matches!(msg, FrontendMessage::Sync) {
            return Vec::new();
        }
        match msg {
            FrontendMessage::Parse { name, sql, .. } => {
                if name.is_empty() {
                    // Dropped before the new text is parsed.
                    self.statements.remove(&key(name));
                } else if self.statements.contains_key(&key(name)) {
                    return self.refuse("42P05");
                }
                let text = Self::text(sql);
                if text == BAD {
                    return self.refuse("42P01");
                }
                self.statements.insert(key(name), text);
                encode_backend(&[BackendMessage::ParseComplete])
            }
            FrontendMessage::Bind(bind) => {
                let Some(&text) = self.statements.get(&key(bind.statement)) else {
                    return self.refuse("26000");
                };
                if !bind.portal.is_empty() && self.portals.contains_key(&key(bind.portal)) {
                    return self.refuse("42P03");
                }
                self.portals
                    .insert(key(bind.portal), (text, false, self.unsure));
                encode_backend(&[BackendMessage::BindComplete])
            }
            FrontendMessage::Describe { kind, name } => {
                let known = if *kind == b'P' {
                    self.portals.contains_key(&key(name))
                } else {
                    self.statements.contains_key(&key(name))
                };
                if !known {
                    return self.refuse(if *kind == b'P' { "34000" } else { "26000" });
                }
                let mut out = Vec::new();
                if *kind == b'S' {
                    BackendMessage::ParameterDescription { types: vec![] }.encode(&mut out);
                }
                let description = description();
                BackendMessage::RowDescription { body: &description }.encode(&mut out);
                out
            }
            FrontendMessage::Execute { portal, .. } => match self.portals.get_mut(&key(portal)) {
                None => self.refuse("34000"),
                // A portal runs once; executed again it has no more rows.
                Some((_, true, _)) => {
                    encode_backend(&[BackendMessage::CommandComplete { tag: b"SELECT 0" }])
                }
                Some((text, ..)) if *text == RAISING_BLOCK => {
                    self.skipping = true;
                    self.failed_batch = true;
                    denial()
                }
                Some((text, ran, forgotten)) => {
                    *ran = true;
                    let (text, forgotten) = (*text, *forgotten);
                    self.rows(text, forgotten)
                }
            },
            FrontendMessage::Close { kind, name } => {
                if *kind == b'S' {
                    self.statements.remove(&key(name));
                } else {
                    self.portals.remove(&key(name));
                }
                encode_backend(&[BackendMessage::CloseComplete])
            }
            FrontendMessage::Sync => {
                self.skipping = false;
                self.unsure |= std::mem::take(&mut self.failed_batch);
                // The implicit transaction ends, and its portals with it.
                self.portals.clear();
                encode_backend(&[BackendMessage::ReadyForQuery { status: b'I' }])
            }
            FrontendMessage::Query { sql } => {
                self.statements.remove(&key(b""));
                self.portals.clear();
                let text = Self::text(sql);
                let mut out = if text == BAD {
                    // Not a batch: the ledger has nothing to unwind.
                    error("42P01")
                } else if text == RAISING_BLOCK {
                    denial()
                } else {
                    let description = description();
                    let mut out =
                        encode_backend(&[BackendMessage::RowDescription { body: &description }]);
                    out.extend(self.rows(text, false));
                    out
                };
                out.extend(encode_backend(&[BackendMessage::ReadyForQuery {
                    status: b'I',
                }]));
                out
            }
            _ => Vec::new(),
        }
    }
}

/// A session past its catalog lookup, beside the server model, with a
/// statement policy that denies [`DENIED`].
fn ready() -> (Wire, Server) {
    let mut wire = Wire::new(None);
    let policy = crate::policy::PgPolicy::from_json(STATEMENT_POLICY.as_bytes()).unwrap();
    wire.session
        .set_statement_policy(Box::new(std::sync::Arc::new(policy)));
    let mut server = Server::default();
    wire.first_request(&query(SAFE));
    let answer = server.answer(&FrontendMessage::Query {
        sql: SAFE.as_bytes(),
    });
    wire.server(&answer);
    server.ran.clear();
    (wire, server)
}

/// Sends the client's messages at once, has the server answer what it gets
/// (the masker's own describes included), and checks what the client gets
/// and the records: see the module docs.
fn exchange(wire: &mut Wire, server: &mut Server, messages: &[FrontendMessage<'_>]) {
    let records_before = wire.statements().len();
    let to_server = wire.client(&encode_frontend(messages));
    let answers = server.answer_all(&to_server);
    let to_client = wire.server(&answers);
    let rows: Vec<Vec<u8>> = frames(&to_client)
        .into_iter()
        .filter(|frame| frame[0] == crate::protocol::DATA_ROW_TAG)
        .collect();
    let ran = std::mem::take(&mut server.ran);
    assert_eq!(rows.len(), ran.len(), "rows lost or added");
    let masked = data_row(&[Some(b"****")]);
    let clear = data_row(&[Some(SAFE_VALUE)]);
    for (row, (text, unsure)) in rows.iter().zip(&ran) {
        if *text == SECRET {
            assert_eq!(*row, masked, "a masked value reached the client");
        } else if *unsure {
            assert!(*row == clear || *row == masked, "{row:?}");
        } else {
            assert_eq!(*row, clear, "a row masked where nothing must be");
        }
    }
    let recorded: Vec<bool> = wire.statements()[records_before..]
        .iter()
        .filter(|r| r.rows == Some(1))
        .map(|r| r.statement.as_deref().is_some_and(|t| t.contains("md5")))
        .collect();
    assert_eq!(recorded.len(), ran.len());
    for (recorded, (text, _)) in recorded.iter().zip(&ran) {
        assert_eq!(*recorded, *text == SECRET, "a record names a text not run");
    }
}

/// The frames of `bytes`, whole.
fn frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((_, tail)) = bytes.split_first() {
        let len = u32::from_be_bytes(tail[..4].try_into().unwrap()) as usize;
        out.push(bytes[..=len].to_vec());
        bytes = &tail[len..];
    }
    out
}

fn parse(name: &'static [u8], sql: &'static str) -> FrontendMessage<'static> {
    FrontendMessage::Parse {
        name,
        sql: sql.as_bytes(),
        param_types: vec![],
    }
}

fn bind(portal: &'static [u8], statement: &'static [u8]) -> FrontendMessage<'static> {
    FrontendMessage::Bind(Bind {
        portal,
        statement,
        param_formats: vec![],
        params: vec![],
        result_formats: vec![],
    })
}

fn execute(portal: &'static [u8]) -> FrontendMessage<'static> {
    FrontendMessage::Execute {
        portal,
        max_rows: 0,
    }
}

fn close(kind: u8, name: &'static [u8]) -> FrontendMessage<'static> {
    FrontendMessage::Close { kind, name }
}

const SYNC: FrontendMessage<'static> = FrontendMessage::Sync;

#[test]
fn names_that_agree_in_the_bytes_the_server_keeps_are_one_statement() {
    let (mut wire, mut server) = ready();
    exchange(&mut wire, &mut server, &[parse(LONG_A, SAFE), SYNC]);
    // The server closes LONG_A's statement, and LONG_B is it anew.
    exchange(
        &mut wire,
        &mut server,
        &[close(b'S', LONG_B), parse(LONG_B, SECRET), SYNC],
    );
    exchange(
        &mut wire,
        &mut server,
        &[bind(b"", LONG_A), execute(b""), SYNC],
    );
    assert_eq!(server.statements.len(), 1);
}

#[test]
fn a_parse_the_server_refuses_leaves_its_name_as_it_was() {
    let (mut wire, mut server) = ready();
    exchange(&mut wire, &mut server, &[parse(b"s", SECRET), SYNC]);
    // `s` is in use: 42P05, and `s` stays the SECRET text.
    exchange(&mut wire, &mut server, &[parse(b"s", SAFE), SYNC]);
    exchange(
        &mut wire,
        &mut server,
        &[bind(b"", b"s"), execute(b""), SYNC],
    );
}

#[test]
fn what_the_server_skips_after_an_error_is_undone() {
    let (mut wire, mut server) = ready();
    exchange(&mut wire, &mut server, &[parse(b"s", SECRET), SYNC]);
    // The bad Parse fails; the Close, re-Parse, Bind and Execute are skipped.
    exchange(
        &mut wire,
        &mut server,
        &[
            parse(b"t", BAD),
            close(b'S', b"s"),
            parse(b"s", SAFE),
            bind(b"p", b"s"),
            execute(b"p"),
            SYNC,
        ],
    );
    exchange(
        &mut wire,
        &mut server,
        &[bind(b"p", b"s"), execute(b"p"), SYNC],
    );
}

#[test]
fn a_batch_pipelined_after_a_failed_one_runs_on_the_names_the_server_has() {
    let (mut wire, mut server) = ready();
    exchange(
        &mut wire,
        &mut server,
        &[
            parse(b"s", SECRET),
            SYNC,
            // Refused: the Close and the re-Parse of `s` are skipped…
            parse(b"", BAD),
            close(b'S', b"s"),
            parse(b"s", SAFE),
            SYNC,
            // …so this runs the SECRET text, not the SAFE one.
            bind(b"", b"s"),
            execute(b""),
            SYNC,
        ],
    );
    // Its record names the text the server ran.
    let ran = wire.statements().last().cloned().cloned().unwrap();
    assert!(ran.statement.as_deref().unwrap().contains("md5"), "{ran:?}");
    // And the names are the server's from then on: records included.
    exchange(
        &mut wire,
        &mut server,
        &[bind(b"p", b"s"), execute(b"p"), SYNC],
    );
    let last = wire.statements().last().cloned().cloned().unwrap();
    assert!(last.statement.unwrap().contains("md5"));
}

#[test]
fn an_unnamed_parse_that_fails_leaves_no_unnamed_statement() {
    let (mut wire, mut server) = ready();
    exchange(&mut wire, &mut server, &[parse(b"", SECRET), SYNC]);
    exchange(&mut wire, &mut server, &[parse(b"", BAD), SYNC]);
    // The server has no unnamed statement: the Bind fails.
    exchange(
        &mut wire,
        &mut server,
        &[bind(b"", b""), execute(b""), SYNC],
    );
    assert!(server.statements.is_empty());
    let last = wire.statements().last().cloned().cloned().unwrap();
    assert!(last.error.is_some());
    assert_eq!(last.statement, None, "{last:?}");
}

#[test]
fn a_closed_and_reused_name_runs_its_new_text_within_one_batch() {
    let (mut wire, mut server) = ready();
    exchange(
        &mut wire,
        &mut server,
        &[
            parse(b"s", SAFE),
            bind(b"p", b"s"),
            execute(b"p"),
            close(b'S', b"s"),
            close(b'P', b"p"),
            parse(b"s", SECRET),
            bind(b"p", b"s"),
            execute(b"p"),
            close(b'S', b"s"),
            parse(b"s", SAFE),
            bind(b"", b"s"),
            execute(b""),
            SYNC,
        ],
    );
}

#[test]
fn a_simple_query_drops_the_unnamed_statement() {
    let (mut wire, mut server) = ready();
    exchange(&mut wire, &mut server, &[parse(b"", SAFE), SYNC]);
    exchange(
        &mut wire,
        &mut server,
        &[FrontendMessage::Query {
            sql: SECRET.as_bytes(),
        }],
    );
    exchange(
        &mut wire,
        &mut server,
        &[bind(b"", b""), execute(b""), SYNC],
    );
    let last = wire.statements().last().cloned().cloned().unwrap();
    assert!(last.error.is_some());
    assert_eq!(last.statement, None, "{last:?}");
}

#[test]
fn a_query_the_server_ignores_after_an_error_is_no_request() {
    let (mut wire, mut server) = ready();
    exchange(&mut wire, &mut server, &[parse(b"s", SECRET), SYNC]);
    // The server skips everything up to Sync, the Query included: it gets
    // no answer at all.
    exchange(
        &mut wire,
        &mut server,
        &[
            parse(b"t", BAD),
            FrontendMessage::Query {
                sql: SECRET.as_bytes(),
            },
            SYNC,
        ],
    );
    exchange(
        &mut wire,
        &mut server,
        &[FrontendMessage::Query {
            sql: SAFE.as_bytes(),
        }],
    );
    exchange(
        &mut wire,
        &mut server,
        &[bind(b"", b"s"), execute(b""), SYNC],
    );
}

#[test]
fn pipelined_batches_keep_their_portals_past_an_earlier_sync() {
    let (mut wire, mut server) = ready();
    exchange(
        &mut wire,
        &mut server,
        &[
            parse(b"a", SECRET),
            parse(b"b", SAFE),
            bind(b"p", b"a"),
            SYNC,
            bind(b"p", b"b"),
            execute(b"p"),
            SYNC,
            bind(b"p", b"a"),
            FrontendMessage::Describe {
                kind: b'P',
                name: b"p",
            },
            execute(b"p"),
            SYNC,
        ],
    );
}

#[test]
fn requests_behind_a_refused_injected_request_are_skipped_as_the_server_skips_them() {
    let (mut wire, mut server) = ready();
    exchange(&mut wire, &mut server, &[parse(b"s", SECRET), SYNC]);
    // The client takes the portal name the engine binds to raise a denial at
    // Describe: the engine's own Bind is refused (42P03), and the server
    // skips the rest of the batch, the Close and re-Parse of `s` included.
    exchange(
        &mut wire,
        &mut server,
        &[
            bind(crate::deny::PRIVATE_PORTAL, b"s"),
            parse(b"d", DENIED),
            FrontendMessage::Describe {
                kind: b'S',
                name: b"d",
            },
            close(b'S', b"s"),
            parse(b"s", SAFE),
            SYNC,
        ],
    );
    assert!(server.statements.contains_key(b"d".as_slice()));
    // `s` is still the SECRET text on the server: its rows are masked.
    exchange(
        &mut wire,
        &mut server,
        &[bind(b"", b"s"), execute(b""), SYNC],
    );
    let last = wire.statements().last().cloned().cloned().unwrap();
    assert!(last.statement.unwrap().contains("md5"));
}

/// The raising block the server gets for a denied statement is the
/// engine's own text: it redefines no name, so what masking knows of the
/// other statements and portals stands, and their safe rows pass as they
/// came (`exchange` checks it).
#[test]
fn a_denied_statement_leaves_what_masking_knows_of_other_names() {
    let (mut wire, mut server) = ready();
    exchange(&mut wire, &mut server, &[parse(b"s", SAFE), SYNC]);
    exchange(
        &mut wire,
        &mut server,
        &[
            bind(b"", b"s"),
            parse(b"d", DENIED),
            bind(b"p", b"d"),
            execute(b""),
            SYNC,
        ],
    );
    exchange(
        &mut wire,
        &mut server,
        &[
            FrontendMessage::Query {
                sql: DENIED.as_bytes(),
            },
            bind(b"", b"s"),
            execute(b""),
            SYNC,
        ],
    );
    // Not vacuous: both runs of `s` returned their row (and `ready`'s Query).
    let clear_rows = wire
        .statements()
        .iter()
        .filter(|r| r.rows == Some(1) && !r.statement.as_deref().is_some_and(|t| t.contains("md5")))
        .count();
    assert_eq!(clear_rows, 3);
}

#[test]
fn a_long_pipeline_of_failing_and_running_batches_is_followed_to_its_end() {
    const ROUNDS: usize = 1500;
    let (mut wire, mut server) = ready();
    exchange(&mut wire, &mut server, &[parse(b"s", SECRET), SYNC]);
    // Thousands of batches written at once (7 500 requests awaiting
    // answers): every other one fails (some redefining a name, some only
    // running), and the portal `p` is bound again in each transaction, so a
    // failure is answered after transactions ended behind pending Binds of
    // `p`. Every row is masked and every record names its text.
    let mut messages = Vec::new();
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            messages.extend([parse(b"", BAD), SYNC]);
        } else {
            messages.extend([execute(b"no_such_portal"), SYNC]);
        }
        messages.extend([bind(b"p", b"s"), execute(b"p"), SYNC]);
    }
    let before = wire.statements().len();
    exchange(&mut wire, &mut server, &messages);
    let ran = wire.statements()[before..]
        .iter()
        .filter(|r| r.rows == Some(1))
        .count();
    assert_eq!(ran, ROUNDS);
    // Every answer matched its request, and the names are the server's.
    assert_eq!(wire.session.summary().unmatched_backend_messages, 0);
    exchange(
        &mut wire,
        &mut server,
        &[bind(b"", b"s"), execute(b""), SYNC],
    );
}

/// One client message over a few names, any of which may collide.
#[derive(Debug, Clone)]
enum Op {
    Parse(usize, usize),
    Bind(usize, usize),
    /// A Bind of the portal the engine binds to raise a denial at Describe:
    /// the engine's own Bind of it is then refused.
    BindPrivate(usize),
    DescribePortal(usize),
    DescribeStatement(usize),
    Execute(usize),
    CloseStatement(usize),
    ClosePortal(usize),
    Sync,
    Query(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let name = || 0..NAMES.len();
    prop_oneof![
        3 => (name(), 0..TEXTS.len()).prop_map(|(n, t)| Op::Parse(n, t)),
        3 => (name(), name()).prop_map(|(p, s)| Op::Bind(p, s)),
        1 => name().prop_map(Op::BindPrivate),
        1 => name().prop_map(Op::DescribePortal),
        1 => name().prop_map(Op::DescribeStatement),
        3 => name().prop_map(Op::Execute),
        1 => name().prop_map(Op::CloseStatement),
        1 => name().prop_map(Op::ClosePortal),
        2 => Just(Op::Sync),
        1 => (0..TEXTS.len()).prop_map(Op::Query),
    ]
}

/// The client's messages for `ops`, and a Sync at the end when `sync`: the
/// next chunk is sent once the server answered this one, so a chunk that
/// ends without one after an error has its successor's requests skipped.
fn messages(ops: &[Op], sync: bool) -> Vec<FrontendMessage<'static>> {
    let mut out = Vec::new();
    for op in ops {
        let msg = match *op {
            Op::Parse(n, t) => parse(NAMES[n], TEXTS[t]),
            Op::Bind(p, s) => bind(NAMES[p], NAMES[s]),
            Op::BindPrivate(s) => bind(crate::deny::PRIVATE_PORTAL, NAMES[s]),
            Op::DescribePortal(p) => FrontendMessage::Describe {
                kind: b'P',
                name: NAMES[p],
            },
            Op::DescribeStatement(s) => FrontendMessage::Describe {
                kind: b'S',
                name: NAMES[s],
            },
            Op::Execute(p) => execute(NAMES[p]),
            Op::CloseStatement(s) => close(b'S', NAMES[s]),
            Op::ClosePortal(p) => close(b'P', NAMES[p]),
            Op::Sync => SYNC,
            // Inside a batch too: after an error the server ignores it.
            Op::Query(t) => FrontendMessage::Query {
                sql: TEXTS[t].as_bytes(),
            },
        };
        out.push(msg);
    }
    if sync && !matches!(out.last(), Some(FrontendMessage::Sync)) {
        out.push(SYNC);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random extended-protocol traffic, pipelined in random chunks, with
    /// denied statements the engine injects requests for: masking and
    /// records follow the names exactly as the server does.
    #[test]
    fn masking_and_records_follow_names_as_the_server_does(
        chunks in prop::collection::vec((prop::collection::vec(op(), 1..12), any::<bool>()), 1..5),
    ) {
        let (mut wire, mut server) = ready();
        for (ops, sync) in &chunks {
            exchange(&mut wire, &mut server, &messages(ops, *sync));
        }
    }
}

/// Sends a batch whose Parse the server refuses, without its Sync: the
/// session handles the error before the client writes again.
fn fail_batch_unsynced(wire: &mut Wire, server: &mut Server) {
    exchange(wire, server, &[parse(b"t", BAD)]);
    assert!(server.skipping);
}

#[test]
fn requests_written_after_a_seen_error_and_before_sync_are_skipped() {
    let (mut wire, mut server) = ready();
    exchange(&mut wire, &mut server, &[parse(b"", SECRET), SYNC]);
    fail_batch_unsynced(&mut wire, &mut server);
    // Written once the error was seen: the server skips all of it, so the
    // unnamed statement stays the SECRET text.
    exchange(
        &mut wire,
        &mut server,
        &[
            parse(b"", SAFE),
            bind(b"", b""),
            FrontendMessage::Describe {
                kind: b'P',
                name: b"",
            },
            execute(b""),
        ],
    );
    exchange(&mut wire, &mut server, &[SYNC]);
    exchange(
        &mut wire,
        &mut server,
        &[bind(b"", b""), execute(b""), SYNC],
    );
    let last = wire.statements().last().cloned().cloned().unwrap();
    assert!(last.statement.unwrap().contains("md5"));
}

#[test]
fn a_query_written_after_a_seen_error_and_before_sync_is_skipped() {
    let (mut wire, mut server) = ready();
    fail_batch_unsynced(&mut wire, &mut server);
    // The server ignores the Query up to Sync: it gets no answer at all.
    exchange(
        &mut wire,
        &mut server,
        &[FrontendMessage::Query {
            sql: SAFE.as_bytes(),
        }],
    );
    exchange(&mut wire, &mut server, &[SYNC]);
    exchange(
        &mut wire,
        &mut server,
        &[FrontendMessage::Query {
            sql: SECRET.as_bytes(),
        }],
    );
    exchange(
        &mut wire,
        &mut server,
        &[FrontendMessage::Query {
            sql: SAFE.as_bytes(),
        }],
    );
    let last = wire.statements().last().cloned().cloned().unwrap();
    assert!(!last.statement.unwrap().contains("md5"));
}
