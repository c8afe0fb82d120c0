//! Postgres engine under a client that pipelines thousands of requests in one
//! write: failing batches (a Bind of a missing statement, a Parse the server
//! refuses, each with its Sync) and plain Queries, through a session with the
//! demo masking. What each message costs at a deep pipeline against a
//! shallow one: 1.0 when the engine's work grows with the messages, the
//! depth ratio (16) when every answer walked the whole queue.
//!
//! Rounds interleave the kinds and depths; medians are printed. Every round
//! checks that the client got an answer for each request (one error per
//! failing batch, one row per Query) and that the session is still serving.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use gatehouse_benches::median;
use gatehouse_benches::pg_messages::{catalog_answer, encode, query, row_description, session};
use gatehouse_postgres::protocol::{BackendMessage, Bind, FrontendMessage};
use gatehouse_postgres::{Phase, Session};
use std::time::Instant;

const MASKING: &[u8] = include_bytes!("../../examples/postgres-masking.json");
const SHALLOW: usize = 500;
const DEEP: usize = 8_000;
const ROUNDS: usize = 5;

#[derive(Clone, Copy, Debug)]
enum Flood {
    FailingBinds,
    FailingParses,
    Queries,
}

impl Flood {
    /// The client's `messages` messages, and the server's answers to them.
    fn exchange(self, messages: usize) -> (Vec<u8>, Vec<u8>) {
        let mut client = Vec::new();
        let mut server = Vec::new();
        let ready = BackendMessage::ReadyForQuery { status: b'I' };
        match self {
            Flood::FailingBinds | Flood::FailingParses => {
                let (request, code) = match self {
                    Flood::FailingBinds => (
                        FrontendMessage::Bind(Bind {
                            portal: b"",
                            statement: b"missing",
                            param_formats: vec![],
                            params: vec![],
                            result_formats: vec![],
                        }),
                        "26000",
                    ),
                    _ => (
                        FrontendMessage::Parse {
                            name: b"s",
                            sql: b"SELECT note FROM no_such_table",
                            param_types: vec![],
                        },
                        "42P01",
                    ),
                };
                let error = BackendMessage::ErrorResponse {
                    fields: vec![
                        (b'S', b"ERROR"),
                        (b'C', code.as_bytes()),
                        (b'M', b"refused"),
                    ],
                };
                for _ in 0..messages / 2 {
                    request.encode(&mut client);
                    FrontendMessage::Sync.encode(&mut client);
                    server.extend(encode(&[error.clone(), ready.clone()]));
                }
            }
            Flood::Queries => {
                let description = row_description(&[("?column?", 0, 0, 23)]);
                for _ in 0..messages {
                    client.extend(query(b"SELECT 1"));
                    server.extend(encode(&[
                        BackendMessage::RowDescription { body: &description },
                        BackendMessage::DataRow {
                            values: vec![Some(b"1")],
                        },
                        BackendMessage::CommandComplete { tag: b"SELECT 1" },
                        ready.clone(),
                    ]));
                }
            }
        }
        (client, server)
    }

    /// What the client must get for `messages` messages: (tag, count).
    fn answers(self, messages: usize) -> (u8, usize) {
        match self {
            Flood::FailingBinds | Flood::FailingParses => (b'E', messages / 2),
            Flood::Queries => (b'D', messages),
        }
    }
}

fn logged_in() -> Session {
    let catalog = catalog_answer(16_400, "customers", &[("5", "2", "ssn")]);
    let description = row_description(&[("?column?", 0, 0, 23)]);
    let answer = encode(&[
        BackendMessage::RowDescription { body: &description },
        BackendMessage::DataRow {
            values: vec![Some(b"1")],
        },
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    session(Some(MASKING), &catalog, &query(b"SELECT 1"), &answer).expect("a logged-in session")
}

/// Frames of `tag` in `bytes`.
fn count_frames(mut bytes: &[u8], tag: u8) -> usize {
    let mut count = 0;
    while let [t, a, b, c, d, ..] = bytes {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        count += usize::from(*t == tag);
        bytes = bytes.get(1 + len..).unwrap_or_default();
    }
    count
}

/// µs per client message for one pipelined exchange of `messages`.
fn run(flood: Flood, messages: usize) -> f64 {
    let (client, server) = flood.exchange(messages);
    let mut session = logged_in();
    let start = Instant::now();
    let to_server = session.on_frontend(&client, 1);
    assert_eq!(
        to_server.bytes(&client).len(),
        client.len(),
        "{flood:?}: requests lost"
    );
    let to_client = session.on_backend(&server, 2);
    let elapsed = start.elapsed();
    let (tag, expected) = flood.answers(messages);
    assert_eq!(
        count_frames(to_client.bytes(&server), tag),
        expected,
        "{flood:?}: answers lost"
    );
    assert_eq!(
        session.phase(),
        Phase::Ready,
        "{flood:?}: the session ended"
    );
    elapsed.as_secs_f64() * 1e6 / messages as f64
}

fn main() {
    let floods = [Flood::FailingBinds, Flood::FailingParses, Flood::Queries];
    let mut samples = vec![[Vec::new(), Vec::new()]; floods.len()];
    for _ in 0..ROUNDS {
        for (flood, times) in floods.iter().zip(&mut samples) {
            for (depth, samples) in [SHALLOW, DEEP].into_iter().zip(times.iter_mut()) {
                samples.push(run(*flood, depth));
            }
        }
    }
    println!("pg_pipeline_floods: µs per client message, median of {ROUNDS} interleaved rounds");
    println!(
        "{:<16} {:>12} {:>12} {:>12}",
        "flood", SHALLOW, DEEP, "deep/shallow"
    );
    for (flood, [shallow, deep]) in floods.iter().zip(samples) {
        let (shallow, deep) = (median(shallow), median(deep));
        println!(
            "{:<16} {shallow:>12.2} {deep:>12.2} {:>12.2}",
            format!("{flood:?}"),
            deep / shallow
        );
    }
}
