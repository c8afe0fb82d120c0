//! The audit service's outbox: offering a record, sending it and marking it
//! delivered, per record, with the default window.

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
    group.bench_function("offer_send_deliver_1000", |b| {
        let mut outbox = Outbox::new(DeliveryConfig::default());
        b.iter(|| {
            for i in 0..1_000u64 {
                let _ = outbox.offer(line.clone(), i);
                while let Some((ticket, sent)) = outbox.next_send(i) {
                    black_box(sent.len());
                    outbox.delivered(ticket, i);
                }
            }
        });
    });
    group.finish();
}

criterion_group!(benches, outbox_round_trip);
criterion_main!(benches);
