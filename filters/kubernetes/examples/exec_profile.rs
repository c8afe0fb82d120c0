//! Where a recorded exec session's time goes, phase by phase, in whatever
//! runtime runs it: built for `wasm32-wasip1` and run under Node's WASI it
//! measures V8, the engine Envoy runs the filter in. Each phase runs
//! several times over `seq 1000000` (6.9 MB) and reports its fastest run
//! in CPU time (the least disturbed on a shared machine), in ms per MB of output.
//!
//! ```text
//! cargo build --release --target wasm32-wasip1 -p gatehouse-kubernetes --example exec_profile
//! node filters/kubernetes/examples/wasi-run.mjs \
//!     target/wasm32-wasip1/release/examples/exec_profile.wasm
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// The process's CPU clock is a WASI import std does not expose.
#![allow(unsafe_code)]

use gatehouse_core::exec_record::{Chain, Chunk, Event, EventCode, ExecRecord, Masking, header};
use gatehouse_core::record::to_json_line;
use gatehouse_kubernetes::recording::websocket::encode_channel_message;
use gatehouse_kubernetes::recording::wire::Channel;
use gatehouse_kubernetes::recording::{ExecSession, RecordingConfig, SessionInfo, TransportKind};
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;

/// CPU seconds this process has used (WASI's process CPU clock under
/// Node; wall-clock time natively): steadier than wall-clock time on a
/// shared machine.
fn cpu_seconds() -> f64 {
    #[cfg(target_os = "wasi")]
    {
        #[link(wasm_import_module = "wasi_snapshot_preview1")]
        unsafe extern "C" {
            fn clock_time_get(id: u32, precision: u64, time: *mut u64) -> u16;
        }
        const PROCESS_CPUTIME: u32 = 2;
        let mut ns = 0u64;
        // SAFETY: `ns` is a valid out-pointer for the call.
        unsafe { clock_time_get(PROCESS_CPUTIME, 1, &mut ns) };
        ns as f64 / 1e9
    }
    #[cfg(not(target_os = "wasi"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
    }
}

const LINES: u64 = 1_000_000;
const RUNS: usize = 7;

fn main() {
    let text: String = (1..=LINES).map(|n| format!("{n}\n")).collect();
    let mb = text.len() as f64 / 1e6;
    let frames: Vec<Vec<u8>> = text
        .as_bytes()
        .chunks(32 * 1024)
        .map(|piece| {
            let mut frame = Vec::new();
            encode_channel_message(Channel::Stdout, piece, None, &mut frame);
            frame
        })
        .collect();
    let phase = |label: &str, work: &mut dyn FnMut()| {
        let fastest = (0..RUNS)
            .map(|_| {
                let started = cpu_seconds();
                work();
                cpu_seconds() - started
            })
            .fold(f64::INFINITY, f64::min);
        println!("{label:<32} {:>6.2} ms/MB", fastest * 1e3 / mb);
    };
    let frames = &frames;
    let session = |record: serde_json::Value| {
        let config = Arc::new(RecordingConfig::from_value(record).unwrap());
        move || -> Vec<String> {
            let (mut session, _) = ExecSession::start(
                SessionInfo::default(),
                Arc::clone(&config),
                TransportKind::WebSocket,
                "v5.channel.k8s.io",
                0,
            );
            let mut lines = Vec::new();
            for (i, frame) in frames.iter().enumerate() {
                lines.extend(
                    session
                        .on_server(black_box(frame), i as u64 * 1_000)
                        .records,
                );
            }
            lines.extend(session.finish(1_000_000_000));
            lines
        }
    };
    let lines = session(json!({}))();
    let record_bytes: usize = lines.iter().map(String::len).sum();
    println!(
        "record bytes per byte of output  {:>6.2}",
        record_bytes as f64 / text.len() as f64
    );
    let masked = session(json!({}));
    phase("session, masked", &mut || {
        black_box(masked());
    });
    let unmasked = session(json!({"mask": false}));
    phase("session, unmasked", &mut || {
        black_box(unmasked());
    });
    phase("sha256 of its records", &mut || {
        for line in &lines {
            black_box(gatehouse_core::config::config_hash(line.as_bytes()));
        }
    });
    let masker = RecordingConfig::from_value(json!({}))
        .unwrap()
        .masker
        .unwrap();
    phase("mask_text, 32 KiB blocks", &mut || {
        for piece in text.as_bytes().chunks(32 * 1024) {
            black_box(masker.mask_text(piece).counts);
        }
    });
    let events: Vec<Vec<Event>> = text
        .as_bytes()
        .chunks(16 * 1024)
        .map(|piece| {
            vec![Event {
                offset_us: 1,
                code: EventCode::Output,
                data: piece.to_vec(),
            }]
        })
        .collect();
    let chunk = |chain: &Chain, events: &'static [Event]| {
        ExecRecord::Chunk(Chunk {
            header: header(chain, "a", "b", 0),
            events,
            bytes: 0,
            masking: Masking::default(),
            truncated: false,
        })
    };
    let events: &'static [Vec<Event>] = Box::leak(events.into_boxed_slice());
    phase("chunk JSON by serde", &mut || {
        let chain = Chain::default();
        for events in events {
            black_box(to_json_line(&chunk(&chain, events)).unwrap());
        }
    });
    phase("chunk sealed (JSON, sha256)", &mut || {
        let mut chain = Chain::default();
        for events in events {
            black_box(chain.seal(&chunk(&chain, events)));
        }
    });
}
