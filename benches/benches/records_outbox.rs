//! The audit service's outbox, per 1 000 records: offering them, sending them
//! and marking them delivered, one record per send (`max_batch_records: 1`)
//! and in the default batches; and the record sink accepting a batch of
//! 1 000 statement records, beside copying the same bytes (its floor: the
//! access log copies every record anyway).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatehouse_core::delivery::config::SinkConfig;
use gatehouse_core::delivery::sink;
use gatehouse_core::delivery::{DeliveryConfig, Outbox};
use std::hint::black_box;

fn outbox_round_trip(c: &mut Criterion) {
    let line = format!(
        r#"{{"type":"pg.statement","schema":1,"sequence":2,"connection_id":7,"statement":"{}"}}"#,
        "select * from customers where id = $1 ".repeat(4)
    );
    let mut group = c.benchmark_group("records_outbox");
    group.throughput(Throughput::Elements(1_000));
    let configs = [
        (
            "one_per_send",
            DeliveryConfig {
                max_batch_records: 1,
                ..DeliveryConfig::default()
            },
        ),
        ("batched", DeliveryConfig::default()),
    ];
    for (name, config) in configs {
        group.bench_function(format!("offer_send_deliver_1000_{name}"), |b| {
            let mut outbox = Outbox::new(config.clone());
            b.iter(|| {
                for i in 0..1_000u64 {
                    let _ = outbox.offer(line.clone(), i);
                }
                while let Some(batch) = outbox.next_send(1_000) {
                    black_box(batch.body.len());
                    outbox.delivered(batch.ticket, 1_000);
                }
            });
        });
    }
    group.finish();
}

fn sink_accept(c: &mut Criterion) {
    // A demo statement record: mostly strings, as every record is.
    let record = concat!(
        r#"{"type":"pg.statement","schema":1,"sequence":2,"connection_id":7,"#,
        r#""time":"2026-12-07T13:29:25.688123Z","gatehouse_version":"0.1.0","#,
        r#""policy_hash":"sha256:5bc91a571f38d19757b175843ca6e2d68a1ac8f75bc91a571f38d19757b17584","#,
        r#""client_address":"127.0.0.1:50412","database":"app","user":"app","#,
        r#""identity":{"subject":"dev@example.com","groups":["developers"],"#,
        r#""issuer":"https://idp.example.com","verified":true,"expires_at":1796650000},"#,
        r#""protocol":"simple","statement":"SELECT abalance FROM pgbench_accounts WHERE aid = 46373;","#,
        r#""kind":"select","category":"read","command_tag":"SELECT 1","rows":1,"#,
        r#""duration_us":311,"bytes_from_client":62,"bytes_to_client":110,"#,
        r#""decision":{"action":"allow","rule":"everyday-sql"}}"#
    );
    let batch = vec![record; 1_000].join("\n");
    let config = SinkConfig {
        max_record_bytes: 64 * 1024,
        max_batch_bytes: 4 * 1024 * 1024,
    };
    assert_eq!(
        sink::accept(batch.as_bytes(), &config).unwrap().count,
        1_000
    );
    let mut group = c.benchmark_group("records_sink");
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("accept_1000", |b| {
        b.iter(|| sink::accept(black_box(batch.as_bytes()), &config).map(|batch| batch.count))
    });
    group.bench_function("copy_1000", |b| {
        b.iter(|| black_box(batch.as_bytes()).to_vec())
    });
    group.finish();
}

criterion_group!(benches, outbox_round_trip, sink_accept);
criterion_main!(benches);
