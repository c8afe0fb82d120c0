//! Token verification with a warm key set (parsed once, as a worker holds it):
//! the cost paid per new Postgres session and per Kubernetes request. Also the
//! cost of parsing a key set, paid once per fetch and worker.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use gatehouse_core::identity::testing::Minter;
use gatehouse_core::identity::{Jwks, JwsAlgorithm, Verifier};
use serde_json::json;

const NOW: i64 = 1_800_000_000;
const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "gatehouse";

fn minters() -> Vec<Minter> {
    [
        (JwsAlgorithm::Rs256, "rsa-1"),
        (JwsAlgorithm::Es256, "es-1"),
        (JwsAlgorithm::EdDsa, "ed-1"),
    ]
    .into_iter()
    .map(|(alg, kid)| Minter::generate(alg, ISSUER, AUDIENCE, kid).expect("key generation"))
    .collect()
}

fn key_set(minters: &[Minter]) -> String {
    let keys: Vec<_> = minters
        .iter()
        .map(|m| m.public_jwk().expect("public key"))
        .collect();
    json!({ "keys": keys }).to_string()
}

fn jwt_verify(c: &mut Criterion) {
    let minters = minters();
    let jwks = key_set(&minters);
    let config = json!({ "issuers": [{
        "issuer": ISSUER, "audiences": [AUDIENCE], "jwks": jwks, "groups_claim": "groups"
    }]});
    let verifier = Verifier::from_json(config.to_string().as_bytes()).expect("config");
    let claims = json!({ "sub": "alice", "groups": ["developers"], "jti": "t-1", "env": "ci" });

    let mut group = c.benchmark_group("jwt_verify");
    for minter in &minters {
        let token = minter.mint(&claims, 900, NOW).expect("mint");
        verifier
            .verify(&token, NOW)
            .expect("the benchmarked token verifies");
        group.bench_function(minter.algorithm().name(), |b| {
            b.iter(|| verifier.verify(black_box(&token), black_box(NOW)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("jwks_parse");
    group.bench_function("rsa_es256_eddsa", |b| {
        b.iter(|| Jwks::parse(black_box(jwks.as_bytes())))
    });
    group.finish();
}

criterion_group!(benches, jwt_verify);
criterion_main!(benches);
