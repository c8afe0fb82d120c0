//! RequestInfo decoding of the paths kubectl sends most: the work the Kubernetes
//! filter does on every request before policy runs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use gatehouse_kubernetes::request_info::decode_request;

const TYPICAL_REQUESTS: &[(&str, &str, &str)] = &[
    ("get_pod", "GET", "/api/v1/namespaces/prod/pods/web-0"),
    ("list_pods", "GET", "/api/v1/namespaces/prod/pods?limit=500"),
    (
        "watch_secret_by_name",
        "GET",
        "/api/v1/namespaces/prod/secrets?fieldSelector=metadata.name%3Ddb-creds&watch=true",
    ),
    (
        "patch_scale",
        "PATCH",
        "/apis/apps/v1/namespaces/prod/deployments/web/scale",
    ),
    (
        "exec",
        "POST",
        "/api/v1/namespaces/prod/pods/web-0/exec?command=sh&command=-c&command=id&container=app&stdin=true&stdout=true&stderr=true&tty=true",
    ),
    ("discovery", "GET", "/apis"),
];

fn request_info(c: &mut Criterion) {
    let mut group = c.benchmark_group("k8s_request_info");
    for &(name, method, path) in TYPICAL_REQUESTS {
        group.bench_function(name, |b| {
            b.iter(|| decode_request(black_box(method), black_box(path)))
        });
    }
    group.finish();
}

criterion_group!(benches, request_info);
criterion_main!(benches);
