//! The Kubernetes filter's per-request work, as the glue runs it: decode,
//! verify the bearer token with warm keys and decide under the default policy
//! (`admit`: a repeated request, and `_in_full` one judged the whole way) and
//! writing the audit Event of an admitted request; and masking a
//! list of about 100 pods, the Table `kubectl get pods` reads, one pod and a
//! Secret.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatehouse_core::identity::JwsAlgorithm;
use gatehouse_core::identity::testing::Minter;
use gatehouse_kubernetes::gate::{Admission, Gate, RequestHead};
use gatehouse_kubernetes::masking::mask_body;
use gatehouse_kubernetes::policy::MaskingConfig;
use serde_json::json;
use std::hint::black_box;

const NOW: i64 = 1_790_000_000;
const POLICY: &str = include_str!("../../examples/kubernetes-policy.json");

fn warm_gate(minter: &Minter) -> Gate {
    let mut gate = Gate::from_json(POLICY.as_bytes()).expect("default policy");
    gate.verifier_mut()
        .unwrap()
        .keys_fetched(minter.issuer(), minter.jwks_json().as_bytes(), NOW)
        .expect("keys");
    gate
}

fn admit(c: &mut Criterion) {
    let minter = Minter::generate(
        JwsAlgorithm::Es256,
        "https://idp.gatehouse.test",
        "gatehouse",
        "k1",
    )
    .expect("key");
    let token = minter
        .mint(
            &json!({"sub": "developer", "groups": ["developers"]}),
            600,
            NOW,
        )
        .expect("token");
    let mut gate = warm_gate(&minter);
    let headers: Vec<(String, String)> = vec![
        (":method".into(), "GET".into()),
        ("authorization".into(), format!("Bearer {token}")),
        (
            "accept".into(),
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json".into(),
        ),
        ("user-agent".into(), "kubectl/v1.33.1 (linux/amd64)".into()),
        (
            "kubectl-session".into(),
            "18e26df9-bd61-4b75-ab86-e3689ee679f1".into(),
        ),
    ];
    let mut group = c.benchmark_group("k8s_admit");
    for (name, method, path) in [
        ("list_pods", "GET", "/api/v1/namespaces/dev/pods?limit=500"),
        (
            "get_secret",
            "GET",
            "/api/v1/namespaces/prod/secrets/db-credentials",
        ),
        (
            "exec_denied",
            "POST",
            "/api/v1/namespaces/prod/pods/web-0/exec?command=ls&stdout=true",
        ),
    ] {
        let head = RequestHead {
            method,
            path,
            headers: &headers,
            peer: Some("127.0.0.1:40000"),
            audit_id: "0f5cbb4c-8f6e-4b0e-9c7e-000000000001",
            now_micros: NOW * 1_000_000,
        };
        assert!(!matches!(gate.admit(&head), Admission::FetchKeys(_)));
        // A repeated request (answered from the worker's memory when it was
        // let through), then one judged the whole way.
        group.bench_function(name, |b| b.iter(|| black_box(gate.admit(black_box(&head)))));
        group.bench_function(format!("{name}_in_full"), |b| {
            b.iter(|| {
                gate.forget_admissions();
                black_box(gate.admit(black_box(&head)))
            })
        });
        // The audit Events of an admitted request: serialized, and written
        // again at the end of the response (only the time moved).
        if let Admission::Forward(mut forward) = gate.admit(&head) {
            let (started, ended) = (NOW * 1_000_000, NOW * 1_000_000 + 900);
            group.bench_function(format!("{name}_record"), |b| {
                b.iter(|| black_box(forward.records(200, started, ended)))
            });
            forward.current_records(200, started, started);
            group.bench_function(format!("{name}_record_again"), |b| {
                b.iter(|| black_box(forward.current_records(200, started, ended).len()))
            });
        }
    }
    group.finish();
}

fn pod(i: usize) -> serde_json::Value {
    json!({
        "metadata": {"name": format!("web-{i}"), "namespace": "dev", "uid": format!("uid-{i}"),
            "labels": {"app": "web"}, "resourceVersion": "12345"},
        "spec": {"containers": [{"name": "app", "image": "registry.example/web:1.2.3",
            "env": [{"name": "DB_HOST", "value": "db.prod.svc"},
                    {"name": "DB_PASSWORD", "value": "pr0d-S3cret!"},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            "ports": [{"containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": "10.0.0.1"}
    })
}

fn masking(c: &mut Criterion) {
    let settings = MaskingConfig::default();
    let list = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {},
        "items": (0..100).map(pod).collect::<Vec<_>>()})
    .to_string();
    let secret = json!({"kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": "db-credentials", "namespace": "prod", "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration":
                json!({"kind": "Secret", "stringData": {"password": "pr0d-S3cret!"}}).to_string()}},
        "data": {"password": "cHIwZC1TM2NyZXQh", "username": "YXBw"}})
    .to_string();
    // What `kubectl get pods` fetches: a Table whose rows carry metadata only
    // (no last-applied annotation here, so nothing is masked).
    let columns: Vec<_> = ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"]
        .iter()
        .map(|name| json!({"name": name, "type": "string", "format": "", "description": "", "priority": 0}))
        .collect();
    let rows: Vec<_> = (0..100)
        .map(|i| {
            json!({"cells": [format!("web-{i}"), "1/1", "Running", 0, "5d", "10.0.0.1", "node-1"],
                   "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                              "metadata": pod(i).get("metadata")}})
        })
        .collect();
    let table = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "12345"}, "columnDefinitions": columns, "rows": rows})
    .to_string();
    let single_pod = {
        let mut pod = pod(0);
        if let Some(fields) = pod.as_object_mut() {
            fields.insert("kind".into(), json!("Pod"));
        }
        pod.to_string()
    };
    // Bodies every resource request's answer now goes through: a ConfigMap
    // (its `data` is a name the reading pass notes, but not a Secret's), and
    // a ControllerRevision whose template's `env` sits under its own `data`.
    let config_map = json!({"kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": "app-config", "namespace": "dev"},
        "data": (0..20).map(|i| (format!("KEY_{i}"), json!(format!("value-{i}")))).collect::<serde_json::Map<_, _>>()})
    .to_string();
    let revision = json!({"kind": "ControllerRevision", "apiVersion": "apps/v1",
        "metadata": {"name": "web-1", "namespace": "dev"}, "revision": 1,
        "data": {"spec": {"template": {"spec": pod(0).get("spec")}}}})
    .to_string();
    let mut group = c.benchmark_group("k8s_mask");
    for (name, resource, body) in [
        ("pod_list_100", "pods", &list),
        ("pod_table_100", "pods", &table),
        ("pod", "pods", &single_pod),
        ("secret", "secrets", &secret),
        ("configmap", "configmaps", &config_map),
        ("controllerrevision", "controllerrevisions", &revision),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(mask_body(black_box(body.as_bytes()), &settings, resource)))
        });
    }
    group.finish();
}

criterion_group!(benches, admit, masking);
criterion_main!(benches);
