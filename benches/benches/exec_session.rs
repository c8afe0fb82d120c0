//! A recorded exec session's work per byte of output, as the glue runs it:
//! `seq` output in 32 KiB WebSocket frames through [`ExecSession::on_server`],
//! recorded with the default masking, without masking, and the decoding
//! alone (an unrecorded session's filter does none of it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatehouse_kubernetes::recording::websocket::{
    Sender, WebSocketDecoder, encode_channel_message,
};
use gatehouse_kubernetes::recording::wire::Channel;
use gatehouse_kubernetes::recording::{ExecSession, RecordingConfig, SessionInfo, TransportKind};
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;

/// `seq 100000` as a kubelet would send it.
fn frames() -> Vec<Vec<u8>> {
    let text: String = (1..=100_000).map(|n| format!("{n}\n")).collect();
    text.as_bytes()
        .chunks(32 * 1024)
        .map(|piece| {
            let mut frame = Vec::new();
            encode_channel_message(Channel::Stdout, piece, None, &mut frame);
            frame
        })
        .collect()
}

fn record(c: &mut Criterion) {
    let frames = frames();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("exec_session");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(20);
    for (name, record) in [
        ("recorded_masked", json!({})),
        ("recorded_unmasked", json!({"mask": false})),
    ] {
        let config = Arc::new(RecordingConfig::from_value(record).expect("config"));
        group.bench_function(name, |b| {
            b.iter(|| {
                let (mut session, _) = ExecSession::start(
                    SessionInfo::default(),
                    Arc::clone(&config),
                    TransportKind::WebSocket,
                    "v5.channel.k8s.io",
                    0,
                );
                let mut records = 0;
                for (i, frame) in frames.iter().enumerate() {
                    records += session
                        .on_server(black_box(frame), i as u64 * 1_000)
                        .records
                        .len();
                }
                records + session.finish(1_000_000_000).len()
            })
        });
    }
    group.bench_function("decode_only", |b| {
        b.iter(|| {
            let mut decoder = WebSocketDecoder::new(Sender::Server);
            let mut seen = 0;
            for frame in &frames {
                decoder
                    .feed(black_box(frame), &mut |_| seen += 1)
                    .expect("frames decode");
            }
            seen
        })
    });
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
