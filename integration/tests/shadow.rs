//! Shadow mode through real Envoy (`envoy/shadow.yaml`): a shadow instance with a
//! strict candidate policy runs first in each chain, beside the enforcing
//! instance with a permissive one. Clients get what the enforcing instance
//! decides; the access log holds both instances' records, the shadow ones
//! marked and carrying the would-be decisions for the same verified caller.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::stack::{default_kubernetes_filter_config, example};
use gatehouse_integration::{Stack, StackOptions, clients, envoy};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Token login from the demo identity provider, plus `extra` top-level keys.
fn postgres_config(extra: Value) -> Value {
    let mut config = example("postgres-login.json");
    for (key, value) in extra.as_object().cloned().unwrap_or_default() {
        config[key] = value;
    }
    config
}

/// The candidate policy: customers' table is off limits.
fn strict_postgres_policy() -> Value {
    json!({
        "version": "candidate-2026-12",
        "default": {"action": "allow"},
        "rules": [{
            "name": "no-customers",
            "action": "deny",
            "message": "gatehouse: customers are off limits",
            "match": {"objects": ["customers"]}
        }]
    })
}

/// The default Kubernetes policy with a first rule refusing developers' pod reads.
fn strict_kubernetes_config() -> Value {
    let mut config = default_kubernetes_filter_config();
    config["mode"] = json!("shadow");
    if let Some(rules) = config["rules"].as_array_mut() {
        rules.insert(
            0,
            json!({
                "name": "candidate-no-pods",
                "action": "deny",
                "message": "pods are read through the dashboard",
                "match": {"groups": ["developers"], "resources": ["pods"]}
            }),
        );
    }
    config
}

fn shadow_stack(name: &str) -> Stack {
    let pg_shadow = postgres_config(json!({
        "mode": "shadow",
        "policy": strict_postgres_policy(),
    }));
    let options = StackOptions {
        envoy_template: "shadow.yaml",
        postgres_filter: postgres_config(json!({})),
        template_vars: vec![
            (
                "PG_SHADOW_CONFIG",
                envoy::yaml_quote(&pg_shadow.to_string()),
            ),
            (
                "KUBE_SHADOW_CONFIG",
                envoy::yaml_quote(&strict_kubernetes_config().to_string()),
            ),
        ],
        ..StackOptions::default()
    };
    let stack = Stack::start("it", name, options).expect("stack starts");
    // Each instance has its own VM, so each fetches the issuer's keys.
    let deadline = Instant::now() + Duration::from_secs(20);
    while stack.idp.fetches() < 2 {
        assert!(Instant::now() < deadline, "both instances fetch the keys");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    stack
}

/// Waits until Envoy's Prometheus page has a `gatehouse_` series line that
/// starts with `series` and holds `label`; then checks `enforcing_series` has no
/// line with it (the shadow instance's decisions never add to the enforcing one's).
fn shadow_stats_apart(stack: &Stack, series: &str, enforcing_series: &str, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, text) = envoy::http_get(&stack.envoy.admin, "/stats/prometheus").unwrap();
        assert_eq!(code, 200);
        let has = |name: &str| {
            text.lines()
                .any(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
        };
        if has(series) {
            assert!(!has(enforcing_series), "{text}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {series} with {label}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the access log holds records of `kind` from both instances.
fn both_records(stack: &Stack, kind: &str) -> (Value, Value) {
    let shadow = stack
        .wait_for_record("the shadow record", |r| {
            r["type"] == kind && r["mode"] == "shadow"
        })
        .unwrap();
    let enforcing = stack
        .wait_for_record("the enforcing record", |r| {
            r["type"] == kind && r.get("mode").is_none()
        })
        .unwrap();
    (enforcing, shadow)
}

#[test]
fn postgres_a_statement_the_shadow_policy_denies_succeeds_and_both_records_name_the_caller() {
    let stack = shadow_stack("shadow-pg");
    let token = stack.token("developer").unwrap();
    let out = stack
        .psql_login(
            "app",
            Some(&token),
            &["-c", "select count(*) from customers"],
        )
        .unwrap();
    assert_eq!(clients::stdout(&out).trim(), "5000", "{out:?}");

    let (enforcing, shadow) = both_records(&stack, "pg.statement");
    assert_eq!(enforcing["decision"]["action"], "allow");
    assert_eq!(shadow["decision"]["action"], "deny");
    assert_eq!(shadow["decision"]["rule"], "no-customers");
    // The shadow instance saw the client's own statement and the server's answer.
    assert_eq!(shadow["statement"], "select count(*) from customers");
    assert_eq!(shadow["command_tag"], enforcing["command_tag"]);
    // Both verified the same token: the shadow instance read it as it passed.
    assert_eq!(enforcing["identity"]["subject"], "developer");
    assert_eq!(shadow["identity"], enforcing["identity"]);
    assert_ne!(shadow["policy_hash"], enforcing["policy_hash"]);

    let (_, start) = both_records(&stack, "pg.session_start");
    assert_eq!(start["identity"]["subject"], "developer");
    assert!(start.get("login_refusal").is_none(), "{start}");
    shadow_stats_apart(
        &stack,
        "gatehouse_pg_shadow_decisions_total",
        "gatehouse_pg_decisions_total",
        "rule=\"no-customers\"",
    );
}

#[test]
fn kubernetes_a_request_the_shadow_policy_denies_succeeds_and_its_event_has_the_would_be_denial() {
    let stack = shadow_stack("shadow-k8s");
    let out = stack
        .kubectl(
            "1.33",
            &["--context", "developer", "get", "pods", "-n", "dev"],
        )
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("web-0"),
        "{out:?}"
    );
    let is_pod_list = |r: &Value| r["kind"] == "Event" && r["objectRef"]["resource"] == "pods";
    let shadow = stack
        .wait_for_record("the shadow Event", |r| {
            is_pod_list(r) && r["annotations"]["gatehouse.dev/mode"] == "shadow"
        })
        .unwrap();
    let enforcing = stack
        .wait_for_record("the enforcing Event", |r| {
            is_pod_list(r) && r["annotations"].get("gatehouse.dev/mode").is_none()
        })
        .unwrap();
    assert_eq!(
        enforcing["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
    let annotations = &shadow["annotations"];
    assert_eq!(annotations["authorization.k8s.io/decision"], "forbid");
    assert_eq!(annotations["gatehouse.dev/rule"], "candidate-no-pods");
    assert_eq!(annotations["gatehouse.dev/would-be-status"], "403");
    // What the client really got, for the same verified caller.
    assert_eq!(shadow["responseStatus"]["code"], 200);
    assert_eq!(shadow["user"]["username"], "developer");
    assert_eq!(enforcing["user"]["username"], "developer");
    shadow_stats_apart(
        &stack,
        "gatehouse_k8s_shadow_decisions_total",
        "gatehouse_k8s_decisions_total",
        "rule=\"candidate-no-pods\"",
    );
    // The API server saw only the enforcing instance's request.
    for request in stack.upstream_requests() {
        assert_eq!(request.header("impersonate-user"), Some("developer"));
    }
}
