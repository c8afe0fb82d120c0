//! Shared helpers for benchmarks.

pub mod cpu;
pub mod http_load;
pub mod pg_messages;
pub mod pg_wire;
pub mod pgbench;

use gatehouse_core::record::Record;
use gatehouse_postgres::Session;
use std::hint::black_box;

/// Captured reads of a wire capture log: (from the client?, bytes); see
/// filters/postgres/testdata/capture.py for the format.
pub fn parse_log(mut log: &[u8]) -> Vec<(bool, &[u8])> {
    let mut reads = Vec::new();
    while let [marker, a, b, c, d, rest @ ..] = log {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        let Some((bytes, tail)) = rest.split_at_checked(len) else {
            break;
        };
        reads.push((*marker == b'F', bytes));
        log = tail;
    }
    reads
}

/// Replays captured reads through a session; returns how many statement records it produced.
pub fn feed(session: &mut Session, reads: &[(bool, &[u8])], now: u64) -> usize {
    let mut statements = 0;
    for (from_client, bytes) in reads {
        let verdict = if *from_client {
            session.on_frontend(bytes, now)
        } else {
            session.on_backend(bytes, now)
        };
        let _ = black_box(verdict);
        statements += session
            .take_records()
            .iter()
            .filter(|r| matches!(r, Record::Statement(_)))
            .count();
    }
    statements
}

/// The median of `values` (the upper one of an even count; 0 for none).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}
