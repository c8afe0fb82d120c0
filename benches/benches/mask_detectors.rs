//! Detector and masking throughput on realistic result rows: mostly clean text
//! (names, addresses, order ids, timestamps, prices, UUIDs) with PII in about
//! one row in fifty. Reports MB/s per detector, for all detectors together,
//! for the full mask path, and for JSON documents.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatehouse_core::mask::{DetectorKind, DetectorSet, MaskStyle, Masker};

const ROWS: usize = 10_000;

/// Deterministic rows, one text value each (about 1 MB in total).
fn rows() -> Vec<String> {
    let names = [
        "Alice Smith",
        "Bob Jones",
        "Carol Díaz",
        "Dmitri Ivanov",
        "Eve Müller",
        "Frank O'Neil",
    ];
    let cities = ["Springfield", "Zürich", "Portland", "São Paulo", "Osaka"];
    let pii = [
        "contact alice.smith@example.com for the refund",
        "paid with 4111 1111 1111 1111, auth ok",
        "call +1 415 555 0132 after 5pm",
        "ssn 536-22-1234 on file",
        "IBAN DE89 3704 0044 0532 0130 00 verified",
        "api_key=sk_live_51HqLyjWDarjtT1zdp7dc in note",
        "key AKIAIOSFODNN7EXAMPLE rotated",
    ];
    (0..ROWS)
        .map(|i| {
            let mut row = format!(
                "{id}|{name}|Order {order} shipped to {n} Main St, {city} on 2024-03-{day:02} 10:{min:02}:31+00; \
                 total ${dollars}.{cents:02}; status=delivered; item 9780306406157 qty {qty}; \
                 ref 550e8400-e29b-41d4-a716-{tail:012x}; v2.14.{patch}",
                id = 100_000 + i,
                name = names.iter().cycle().nth(i).unwrap_or(&""),
                order = 1_000_000_007u64.wrapping_mul(i as u64 + 1) % 10_000_000_000,
                n = i % 997,
                city = cities.iter().cycle().nth(i).unwrap_or(&""),
                day = i % 28 + 1,
                min = i % 60,
                dollars = i % 500,
                cents = i % 100,
                qty = i % 7 + 1,
                tail = i * 7919,
                patch = i % 31,
            );
            if i % 50 == 0 {
                row.push_str("; note: ");
                row.push_str(pii.iter().cycle().nth(i / 50).unwrap_or(&""));
            }
            row
        })
        .collect()
}

fn json_documents(rows: &[String]) -> Vec<String> {
    rows.chunks(20)
        .map(|chunk| {
            let items: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| serde_json::json!({"metadata": {"name": format!("item-{i}"), "uid": "550e8400-e29b-41d4-a716-446655440000"}, "note": r, "replicas": i}))
                .collect();
            serde_json::json!({"kind": "List", "items": items}).to_string()
        })
        .collect()
}

fn detectors(c: &mut Criterion) {
    let rows = rows();
    let bytes: usize = rows.iter().map(String::len).sum();
    let mut group = c.benchmark_group("mask_detectors");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(20);
    for kind in DetectorKind::ALL {
        let set = DetectorSet::only(kind);
        group.bench_function(kind.as_str(), |b| {
            b.iter(|| {
                rows.iter()
                    .map(|r| set.scan(black_box(r.as_bytes())).len())
                    .sum::<usize>()
            })
        });
    }
    let all = DetectorSet::all();
    group.bench_function("all_detectors_scan", |b| {
        b.iter(|| {
            rows.iter()
                .map(|r| all.scan(black_box(r.as_bytes())).len())
                .sum::<usize>()
        })
    });
    let masker = Masker::new()
        .with_style(DetectorKind::PaymentCard, MaskStyle::Partial)
        .with_style(DetectorKind::Email, MaskStyle::Hash)
        .with_hash_key(b"bench key 0123456789abcdef");
    group.bench_function("all_detectors_mask_text", |b| {
        b.iter(|| {
            rows.iter()
                .filter(|r| {
                    !masker
                        .mask_text(black_box(r.as_bytes()))
                        .value
                        .is_unchanged()
                })
                .count()
        })
    });
    group.finish();

    let docs = json_documents(&rows);
    let json_bytes: usize = docs.iter().map(String::len).sum();
    let mut group = c.benchmark_group("mask_json");
    group.throughput(Throughput::Bytes(json_bytes as u64));
    group.sample_size(20);
    group.bench_function("all_detectors_mask_json_strings", |b| {
        b.iter(|| {
            docs.iter()
                .filter_map(|d| masker.mask_json_strings(black_box(d.as_bytes())).ok())
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, detectors);
criterion_main!(benches);
