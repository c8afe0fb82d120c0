//! Bounded, seeded fuzzing of the engine through its sans-IO API: real
//! captures (startup, SCRAM and MD5 logins, Query, Parse/Bind/Execute, COPY)
//! mutated and split at arbitrary points, and arbitrary byte streams.

use super::captures::CAPTURES;
use super::*;
use crate::protocol::StartupPacket;
use proptest::prelude::*;

/// One edit of a captured read.
#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite the byte at (position modulo length).
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// Repeat a range of the read (a message sent twice, lengths that lie).
    Duplicate(usize, usize),
    /// Cut the read short.
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = (usize, Mutation)> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), 1..16usize).prop_map(|(at, n)| Mutation::Remove(at, n)),
        (any::<usize>(), 1..64usize).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ];
    (any::<usize>(), edit)
}

fn apply(reads: &mut [Read], (which, mutation): &(usize, Mutation)) {
    let bytes = &mut reads[which % reads.len()].bytes;
    let len = bytes.len().max(1);
    match mutation {
        Mutation::Set(at, b) => {
            if let Some(byte) = bytes.get_mut(at % len) {
                *byte = *b;
            }
        }
        Mutation::Insert(at, new) => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Remove(at, n) => {
            let at = at % len;
            let end = (at + n).min(bytes.len());
            bytes.drain(at.min(end)..end);
        }
        Mutation::Duplicate(at, n) => {
            let at = at % len;
            let end = (at + n).min(bytes.len());
            let copy = bytes[at.min(end)..end].to_vec();
            bytes.splice(end..end, copy);
        }
        Mutation::Truncate(at) => bytes.truncate(at % len),
    }
}

/// Where a read is split: each entry is the length of the next chunk.
fn splits() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..200usize, 0..12)
}

fn chunks<'a>(bytes: &'a [u8], splits: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    for &n in splits {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Feeds the reads, each split as `splits[i]` says, stopping when the engine
/// ends the session (the glue then closes the connection); then closes.
fn feed(reads: &[Read], splits: &[Vec<usize>]) -> Run {
    let config = EngineConfig {
        max_buffered_bytes: 16 * 1024,
        ..EngineConfig::default()
    };
    let mut s = session(config);
    let mut run = Run::default();
    'reads: for (i, read) in reads.iter().enumerate() {
        let now = 1_000 + i as u64;
        let split = splits.get(i).map(Vec::as_slice).unwrap_or_default();
        for chunk in chunks(&read.bytes, split) {
            let (verdict, out) = match read.side {
                Side::Client => (s.on_frontend(chunk, now), &mut run.to_server),
                Side::Server => (s.on_backend(chunk, now), &mut run.to_client),
            };
            out.extend_from_slice(verdict.bytes(chunk));
            run.max_buffered = run.max_buffered.max(s.buffered_bytes());
            run.records.extend(s.take_records());
            if verdict.close_connection {
                run.closed = true;
                break 'reads;
            }
        }
    }
    s.on_close(CloseReason::Client, 1_000 + reads.len() as u64);
    run.records.extend(s.take_records());
    run
}

/// The bytes forwarded to the server parse as untagged startup packets
/// (SSLRequests, then a StartupMessage, or a lone CancelRequest), then tagged messages, each of which decodes. Only the
/// last message may be incomplete (a long message streamed while it arrives),
/// and then its tag is one the engine knows.
fn check_to_server(bytes: &[u8]) -> Result<(), String> {
    let mut rest = bytes;
    let mut started = false;
    while !rest.is_empty() {
        let header = if started { 5 } else { 4 };
        let tag = (started).then(|| rest[0]);
        let Some(len_bytes) = rest.get(header - 4..header) else {
            return Err(format!("a partial header {rest:?} at the end"));
        };
        let len = u32::from_be_bytes(len_bytes.try_into().unwrap_or_default()) as usize;
        if len < 4 {
            return Err(format!("length {len} below 4"));
        }
        let end = header - 4 + len;
        let Some(body) = rest.get(header..end) else {
            let tag = tag.ok_or("a partial startup packet")?;
            // Only the tags of messages the engine may stream.
            return match FrontendMessage::decode(tag, &[]) {
                Err(crate::protocol::DecodeError::UnknownTag { .. }) => {
                    Err(format!("a partial message with unknown tag {tag}"))
                }
                _ => Ok(()),
            };
        };
        match tag {
            None => match StartupPacket::decode(body) {
                Ok(StartupPacket::Startup { .. }) => started = true,
                // Forwarded for the server to answer; the engine rewrites its answer.
                Ok(StartupPacket::SslRequest) => {}
                Ok(StartupPacket::Cancel { .. }) if end == rest.len() => {}
                Ok(other) => return Err(format!("{other:?} forwarded")),
                Err(e) => return Err(format!("startup packet: {e}")),
            },
            Some(tag) => {
                FrontendMessage::decode(tag, body).map_err(|e| format!("tag {tag}: {e}"))?;
            }
        }
        rest = &rest[end..];
    }
    Ok(())
}

/// A capture, edited and split at arbitrary points.
fn mutated_capture() -> impl Strategy<Value = (Vec<Read>, Vec<Vec<usize>>)> {
    (
        0..CAPTURES.len(),
        prop::collection::vec(mutation(), 0..6),
        prop::collection::vec(splits(), 0..64),
    )
        .prop_map(|(which, mutations, splits)| {
            let mut reads = parse_log(CAPTURES[which].1);
            mutations.iter().for_each(|m| apply(&mut reads, m));
            (reads, splits)
        })
}

/// Arbitrary reads from either side, after a well-formed login half the time.
fn arbitrary_reads() -> impl Strategy<Value = (Vec<Read>, Vec<Vec<usize>>)> {
    let read =
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(client, bytes)| {
            Read {
                side: if client { Side::Client } else { Side::Server },
                bytes,
            }
        });
    (
        any::<bool>(),
        prop::collection::vec(read, 0..16),
        prop::collection::vec(splits(), 0..16),
    )
        .prop_map(|(logged_in, arbitrary, splits)| {
            let mut reads = if logged_in {
                parse_log(CAPTURES[0].1).into_iter().take(4).collect()
            } else {
                Vec::new()
            };
            reads.extend(arbitrary);
            (reads, splits)
        })
}

fn check(reads: &[Read], splits: &[Vec<usize>]) -> Result<(), TestCaseError> {
    let run = feed(reads, splits);
    let bound = 2 * (16 * 1024 + EngineConfig::default().max_statement_bytes + 8 * 1024);
    prop_assert!(run.max_buffered <= bound, "held {}", run.max_buffered);
    if let Err(e) = check_to_server(&run.to_server) {
        return Err(TestCaseError::fail(format!(
            "forwarded to the server: {e}: {:?}",
            run.to_server
        )));
    }
    prop_assert!(
        matches!(run.records.last(), Some(Record::SessionEnd(_))),
        "no session end"
    );
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(1024))]

    /// Mutated captures split anywhere: no panic, bounded buffers, a session
    /// end record, and the server receives only well-formed frames.
    #[test]
    fn fuzz_mutated_captures_forward_only_well_formed_frames(
        (reads, splits) in mutated_capture()
    ) {
        check(&reads, &splits)?;
    }

    /// Arbitrary bytes from either side, before or after a login: the same.
    #[test]
    fn fuzz_arbitrary_streams_forward_only_well_formed_frames(
        (reads, splits) in arbitrary_reads()
    ) {
        check(&reads, &splits)?;
    }
}

/// The frame check refuses what it must: without it the properties above hold nothing.
#[test]
fn the_frame_check_refuses_partial_and_unknown_frames() {
    let captured = side_bytes(&parse_log(CAPTURES[0].1), Side::Client);
    assert_eq!(check_to_server(&captured), Ok(()));
    let query = frontend(&[FrontendMessage::Query { sql: b"select 1" }]);
    let partial = [captured.as_slice(), &query[..query.len() - 1]].concat();
    assert_eq!(check_to_server(&partial), Ok(()));
    assert!(check_to_server(&captured[..captured.len() - 1]).is_err());
    assert!(check_to_server(&[captured.clone(), b"Z\0\0\0\x04".to_vec()].concat()).is_err());
    assert!(check_to_server(&[captured.clone(), b"Q\0\0\0\x06ab".to_vec()].concat()).is_err());
    assert!(check_to_server(&captured[1..]).is_err());
}
