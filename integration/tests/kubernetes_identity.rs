//! The Kubernetes filter follows the identity provider's key rotation without a
//! restart: a token signed by a key published after Envoy started is accepted
//! on its first request (the filter fetches the new key set while the request
//! waits), and tokens signed by a key that was withdrawn stop working once the
//! set is refetched.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::stack::default_kubernetes_filter_config;
use gatehouse_integration::{Stack, StackOptions, clients, idp};
use serde_json::json;

#[test]
fn kubectl_tokens_from_a_rotated_key_work_on_their_first_request() {
    let mut config = default_kubernetes_filter_config();
    // Let an unknown key id trigger a refetch a second after the last fetch
    // (the shipped example waits 30 s), so the test need not wait.
    config["identity"]["issuers"][0]["remote_jwks"]["min_refetch_seconds"] = json!(1);
    let stack = Stack::start(
        "it",
        "k8s-key-rotation",
        StackOptions {
            kubernetes_filter: config,
            ..StackOptions::default()
        },
    )
    .expect("stack starts");
    let kubectl_with = |token: &str| {
        stack
            .kubectl(
                "1.33",
                &[
                    "--server",
                    &stack.kube_server(),
                    "--certificate-authority",
                    &stack.pki.ca_cert.display().to_string(),
                    "--token",
                    token,
                    "get",
                    "pods",
                    "-n",
                    "dev",
                    "-o",
                    "name",
                ],
            )
            .unwrap()
    };
    let before = stack.token("developer").unwrap();
    assert!(clients::stdout(&kubectl_with(&before)).contains("pod/web-0"));

    let rotated = idp::generate_minter().unwrap().with_kid("rotated-key");
    stack.idp.serve_keys(&[&rotated]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let fetches_before = stack.idp.fetches();
    let after = idp::mint(&rotated, "developer", 600).unwrap();
    let out = kubectl_with(&after);
    assert!(
        clients::stdout(&out).contains("pod/web-0"),
        "the first request with the new key succeeds"
    );
    assert!(
        stack.idp.fetches() > fetches_before,
        "the unknown key id made the filter fetch the key set"
    );

    // The old key is no longer published: a token it signs is refused once
    // every worker adopted the new set (on its next one-second tick). A fresh
    // token, since a token verified moments ago may be trusted from the
    // filter's short verification cache.
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let withdrawn = stack.token("developer").unwrap();
    let out = kubectl_with(&withdrawn);
    assert!(!out.status.success(), "a withdrawn key's token must fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token is signed by an unknown key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
