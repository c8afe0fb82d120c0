//! Engine tests: real captures, every split point, malformed input, streaming,
//! pseudo-random chunking and garbage.

#![allow(clippy::indexing_slicing)]

mod approvals;
mod captures;
mod deny;
mod fastpath;
mod fuzz;
mod login;
mod malformed;
mod memory;
mod readiness;
mod server_settings;
mod shadow;
mod startup;
mod streaming;

use crate::protocol::{BackendMessage, FrontendMessage};
use crate::{CloseReason, ConnectionInfo, EngineConfig, Session, Verdict};
use gatehouse_core::record::Record;
use std::sync::Arc;

/// Which side sent a captured read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// One read as captured by testdata/capture.py.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub side: Side,
    pub bytes: Vec<u8>,
}

/// Parses a `.log` capture: `F`/`B`, a 4-byte length, the bytes; repeated.
pub(crate) fn parse_log(log: &[u8]) -> Vec<Read> {
    let mut out = Vec::new();
    let mut rest = log;
    while !rest.is_empty() {
        let side = match rest[0] {
            b'F' => Side::Client,
            b'B' => Side::Server,
            other => panic!("bad marker {other}"),
        };
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        out.push(Read {
            side,
            bytes: rest[5..5 + len].to_vec(),
        });
        rest = &rest[5 + len..];
    }
    out
}

/// Splits read number `i` into the chunks delivered to the engine.
pub(crate) type Chunker<'a> = &'a dyn Fn(usize, &[u8]) -> Vec<Vec<u8>>;

/// What a session did with a sequence of reads.
#[derive(Debug, Default)]
pub(crate) struct Run {
    pub to_server: Vec<u8>,
    pub to_client: Vec<u8>,
    pub records: Vec<Record>,
    pub closed: bool,
    pub max_buffered: usize,
}

/// The wire bytes of server messages.
pub(crate) fn backend(messages: &[BackendMessage<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    messages.iter().for_each(|m| m.encode(&mut out));
    out
}

/// The wire bytes of client messages.
pub(crate) fn frontend(messages: &[FrontendMessage<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    messages.iter().for_each(|m| m.encode(&mut out));
    out
}

pub(crate) fn session(config: EngineConfig) -> Session {
    Session::new(
        Arc::new(config),
        ConnectionInfo {
            id: 7,
            client_address: "127.0.0.1:40000".into(),
        },
        1_000,
    )
}

/// Feeds `reads` in order (each read's time is its index, so records do not
/// depend on chunking), splitting each read into chunks by `chunker`, then closes.
pub(crate) fn replay(config: EngineConfig, reads: &[Read], chunker: Chunker<'_>) -> Run {
    let mut s = session(config);
    let mut run = Run::default();
    for (i, read) in reads.iter().enumerate() {
        let now = 1_000 + i as u64 * 10;
        for chunk in chunker(i, &read.bytes) {
            let (verdict, out): (Verdict, &mut Vec<u8>) = match read.side {
                Side::Client => (s.on_frontend(&chunk, now), &mut run.to_server),
                Side::Server => (s.on_backend(&chunk, now), &mut run.to_client),
            };
            out.extend_from_slice(verdict.bytes(&chunk));
            run.closed |= verdict.close_connection;
            run.max_buffered = run.max_buffered.max(s.buffered_bytes());
            run.records.extend(s.take_records());
        }
    }
    s.on_close(CloseReason::Client, 1_000 + reads.len() as u64 * 10);
    run.records.extend(s.take_records());
    run
}

pub(crate) fn whole(_: usize, bytes: &[u8]) -> Vec<Vec<u8>> {
    vec![bytes.to_vec()]
}

pub(crate) fn byte_by_byte(_: usize, bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes.iter().map(|b| vec![*b]).collect()
}

/// All client bytes, then all server bytes, concatenated per side.
pub(crate) fn side_bytes(reads: &[Read], side: Side) -> Vec<u8> {
    reads
        .iter()
        .filter(|r| r.side == side)
        .flat_map(|r| r.bytes.iter().copied())
        .collect()
}

/// A fixed seed and case count for the property tests: the same inputs on
/// every run, a few seconds in a debug build; no regression files written.
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6761_7465_686f_7573),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// Runs `test` on `cases` values of `strategy` under [`proptest_config`]; a
/// failure (a failed assertion or a panic) shrinks to a minimal input, which
/// the panic names.
pub(crate) fn run_cases<S: proptest::strategy::Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) {
    let mut runner = proptest::test_runner::TestRunner::new(proptest_config(cases));
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}");
    }
}
