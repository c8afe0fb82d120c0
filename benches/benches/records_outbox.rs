//! The audit service's outbox, per 1 000 records: offering them, sending them
//! and marking them delivered, one record per send (`max_batch_records: 1`)
//! and in the default batches.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

criterion_group!(benches, outbox_round_trip);
criterion_main!(benches);
