//! Bounded memory: huge messages stream through; random chunking and garbage
//! never panic and never grow the engine's buffers past their limits. The
//! random inputs are proptest strategies under a fixed seed and case count
//! ([`run_cases`]).

use super::captures::CAPTURES;
use super::*;
use crate::Forward;
use crate::protocol::{BackendMessage, FrontendMessage, StartupPacket};
use proptest::prelude::*;

fn login(s: &mut Session) {
    let mut startup = Vec::new();
    StartupPacket::Startup {
        version: 3 << 16,
        params: vec![("user", "u")],
    }
    .encode(&mut startup);
    assert_eq!(s.on_frontend(&startup, 1).forward, Forward::Unchanged);
    let mut ok = Vec::new();
    BackendMessage::Authentication { code: 0, data: b"" }.encode(&mut ok);
    BackendMessage::ReadyForQuery { status: b'I' }.encode(&mut ok);
    assert_eq!(s.on_backend(&ok, 2).forward, Forward::Unchanged);
}

fn statement(records: &[Record]) -> &gatehouse_core::record::StatementRecord {
    records
        .iter()
        .find_map(|r| match r {
            Record::Statement(s) => Some(&**s),
            _ => None,
        })
        .expect("a statement record")
}

#[test]
fn fifty_megabyte_data_row_streams_with_bounded_memory() {
    const VALUE: usize = 50 * 1024 * 1024;
    let mut s = session(EngineConfig::default());
    login(&mut s);
    let mut query = Vec::new();
    FrontendMessage::Query {
        sql: b"select big from t",
    }
    .encode(&mut query);
    assert_eq!(s.on_frontend(&query, 3).forward, Forward::Unchanged);

    // DataRow header: 1 column of VALUE bytes.
    let mut header = vec![b'D'];
    header.extend_from_slice(&((4 + 2 + 4 + VALUE) as u32).to_be_bytes());
    header.extend_from_slice(&1u16.to_be_bytes());
    header.extend_from_slice(&(VALUE as u32).to_be_bytes());
    // Split the header itself across chunks.
    let (a, b) = header.split_at(3);
    assert_eq!(s.on_backend(a, 4).forward, Forward::Replace(Vec::new()));
    assert_eq!(s.on_backend(b, 4).forward, Forward::Replace(header.clone()));
    let chunk = vec![0x61u8; 64 * 1024];
    let mut sent = 0;
    let mut max_buffered = 0;
    while sent < VALUE {
        let n = chunk.len().min(VALUE - sent);
        let v = s.on_backend(&chunk[..n], 5);
        assert_eq!(
            v.forward,
            Forward::Unchanged,
            "body bytes pass as they arrive"
        );
        max_buffered = max_buffered.max(s.buffered_bytes());
        sent += n;
    }
    assert!(
        max_buffered <= 16,
        "held {max_buffered} bytes while streaming"
    );
    let mut done = Vec::new();
    BackendMessage::CommandComplete { tag: b"SELECT 1" }.encode(&mut done);
    BackendMessage::ReadyForQuery { status: b'I' }.encode(&mut done);
    assert_eq!(s.on_backend(&done, 6).forward, Forward::Unchanged);
    let records = s.take_records();
    let r = statement(&records);
    assert_eq!(
        (r.command_tag.as_deref(), r.rows),
        (Some("SELECT 1"), Some(1))
    );
    assert!(r.bytes_to_client > VALUE as u64);
    assert_eq!(s.buffered_bytes(), 0);
}

#[test]
fn query_over_the_buffer_limit_streams_and_is_recorded_truncated() {
    let config = EngineConfig {
        max_buffered_bytes: 64 * 1024,
        max_statement_bytes: 1000,
        ..EngineConfig::default()
    };
    let mut s = session(config);
    login(&mut s);
    let sql = format!("insert into t values ('{}')", "x".repeat(200_000));
    let mut query = Vec::new();
    FrontendMessage::Query {
        sql: sql.as_bytes(),
    }
    .encode(&mut query);
    let mut forwarded = Vec::new();
    for piece in query.chunks(4096) {
        let v = s.on_frontend(piece, 3);
        forwarded.extend_from_slice(v.bytes(piece));
        assert!(
            s.buffered_bytes() <= 1000 + 1024 + 5,
            "held {}",
            s.buffered_bytes()
        );
    }
    assert_eq!(forwarded, query);
    let mut done = Vec::new();
    BackendMessage::CommandComplete { tag: b"INSERT 0 1" }.encode(&mut done);
    BackendMessage::ReadyForQuery { status: b'I' }.encode(&mut done);
    let _ = s.on_backend(&done, 4);
    let records = s.take_records();
    let r = statement(&records);
    assert!(r.statement_truncated);
    assert_eq!(r.statement.as_ref().unwrap().len(), 1000);
    assert_eq!(r.kind.as_deref(), Some("INSERT"));
    assert_eq!(r.rows, Some(1));
}

/// For each of `reads` reads, chunk lengths used in turn until the read is
/// consumed.
fn chunk_plan(reads: usize) -> impl Strategy<Value = Vec<Vec<usize>>> {
    prop::collection::vec(prop::collection::vec(1..=97usize, 1..16), reads)
}

#[test]
fn random_chunking_of_captures_gives_the_reference_records() {
    for (name, log) in CAPTURES {
        let reads = parse_log(log);
        let reference = replay(EngineConfig::default(), &reads, &whole);
        run_cases(20, chunk_plan(reads.len()), |plan| {
            let chunker = |i: usize, bytes: &[u8]| {
                let lengths = plan.get(i).map_or(&[][..], Vec::as_slice);
                let mut out = Vec::new();
                let mut rest = bytes;
                for &n in lengths.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    // Spread over what is left, as short reads are split too.
                    let (chunk, tail) = rest.split_at(1 + (n - 1) % rest.len());
                    out.push(chunk.to_vec());
                    rest = tail;
                }
                if !rest.is_empty() {
                    out.push(rest.to_vec());
                }
                out
            };
            let run = replay(EngineConfig::default(), &reads, &chunker);
            prop_assert_eq!(&run.to_server, &reference.to_server, "{}", name);
            prop_assert_eq!(&run.to_client, &reference.to_client, "{}", name);
            prop_assert_eq!(&run.records, &reference.records, "{}", name);
            Ok(())
        });
    }
}

#[test]
fn garbage_and_corrupted_captures_never_panic_or_grow_unbounded() {
    let config = EngineConfig {
        max_buffered_bytes: 16 * 1024,
        ..EngineConfig::default()
    };
    // Worst case per direction: the cap plus a captured prefix.
    let bound = 2 * (config.max_buffered_bytes + config.max_statement_bytes + 8 * 1024);
    // Up to four bytes overwritten: which read, where in it, with what.
    let edits = prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            any::<u8>(),
        ),
        1..5,
    );
    for (name, log) in CAPTURES {
        let reads = parse_log(log);
        run_cases(60, edits.clone(), |edits| {
            let mut corrupted = reads.clone();
            for (read, at, byte) in edits {
                let bytes = &mut read.get_mut(&mut corrupted).bytes;
                if !bytes.is_empty() {
                    *at.get_mut(bytes) = byte;
                }
            }
            let run = replay(config.clone(), &corrupted, &byte_by_byte);
            prop_assert!(run.max_buffered <= bound, "{}: {}", name, run.max_buffered);
            prop_assert!(
                matches!(run.records.last(), Some(Record::SessionEnd(_))),
                "{}",
                name
            );
            Ok(())
        });
    }
    // Forty reads of garbage from either side, before or after a login;
    // every seventh is up to 40,000 bytes, the others up to 64.
    let step = |long: bool| {
        let most = if long { 40_000 } else { 64 };
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..most))
    };
    let steps: Vec<_> = (0..40).map(|i| step(i % 7 == 0)).collect();
    run_cases(300, (any::<bool>(), steps), |(logged_in, steps)| {
        let mut s = session(config.clone());
        if logged_in {
            login(&mut s);
        }
        for (now, (client, garbage)) in (0..).zip(&steps) {
            let _ = if *client {
                s.on_frontend(garbage, now)
            } else {
                s.on_backend(garbage, now)
            };
            prop_assert!(s.buffered_bytes() <= bound, "held {}", s.buffered_bytes());
            let _ = s.take_records();
        }
        s.on_close(CloseReason::Unknown, 100);
        Ok(())
    });
}

#[test]
fn pipelining_without_reading_is_bounded() {
    let mut s = session(EngineConfig::default());
    login(&mut s);
    let mut sync = Vec::new();
    FrontendMessage::Sync.encode(&mut sync);
    let many = sync.repeat(crate::session::MAX_PENDING_REQUESTS + 1);
    let v = s.on_frontend(&many, 3);
    // Everything up to the limit passes; the rest is replaced by the engine's own request.
    assert_eq!(
        &v.bytes(&many)[..sync.len() * crate::session::MAX_PENDING_REQUESTS],
        &many[..sync.len() * crate::session::MAX_PENDING_REQUESTS]
    );
    s.on_close(CloseReason::Client, 4);
    let records = s.take_records();
    let Some(Record::SessionEnd(end)) = records.last() else {
        panic!("{records:?}")
    };
    assert!(end.detail.as_deref().unwrap().contains("requests awaiting"));
}

#[test]
fn a_query_with_thousands_of_statements_keeps_a_bounded_record_count() {
    let mut s = session(EngineConfig::default());
    login(&mut s);
    let sql = "select 1;".repeat(crate::session::MAX_STATEMENTS_PER_QUERY + 500);
    let mut query = Vec::new();
    FrontendMessage::Query {
        sql: sql.as_bytes(),
    }
    .encode(&mut query);
    let _ = s.on_frontend(&query, 3);
    let mut answers = Vec::new();
    for _ in 0..crate::session::MAX_STATEMENTS_PER_QUERY + 500 {
        BackendMessage::CommandComplete { tag: b"SELECT 1" }.encode(&mut answers);
    }
    BackendMessage::ReadyForQuery { status: b'I' }.encode(&mut answers);
    assert_eq!(s.on_backend(&answers, 4).forward, Forward::Unchanged);
    let records = s.take_records();
    let statements: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Statement(st) => Some(st),
            _ => None,
        })
        .collect();
    assert_eq!(statements.len(), crate::session::MAX_STATEMENTS_PER_QUERY);
    assert_eq!(
        statements
            .last()
            .unwrap()
            .statement
            .as_deref()
            .map(|t| t.len()),
        Some("select 1;".len() * 501 - 1)
    );
    // The shared record completes with the first of its statements; the others are unmatched.
    assert_eq!(s.summary().unmatched_backend_messages, 500);
}
