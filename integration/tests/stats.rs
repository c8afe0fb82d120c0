//! gatehouse's stats as Prometheus scrapes them from real Envoy: decisions by
//! action and rule, masked values by rule and detector, duration histograms with
//! their buckets, and configurations loaded and rejected, for the Postgres
//! filter (real PostgreSQL, psql) and the Kubernetes filter (kubectl against
//! the stand-in API server).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::envoy::{self, Envoy};
use gatehouse_integration::stack::example;
use gatehouse_integration::{
    Stack, StackOptions,
    configs::{self, EcdsGateway},
    scratch_dir,
};
use serde_json::json;
use std::time::{Duration, Instant};

/// One sample of `/stats/prometheus`: the value of the series named `name`
/// whose labels are exactly `labels` (in any order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, tags) = match series.split_once('{') {
            Some((metric, tags)) => (metric, tags.strip_suffix('}')?),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let mut found: Vec<(&str, &str)> = tags
            .split(',')
            .filter(|tag| !tag.is_empty())
            .filter_map(|tag| {
                let (key, value) = tag.split_once('=')?;
                Some((key, value.trim_matches('"')))
            })
            .collect();
        let mut wanted = labels.to_vec();
        found.sort_unstable();
        wanted.sort_unstable();
        (found == wanted).then(|| value.parse().ok()).flatten()
    })
}

/// `/stats/prometheus`. The native build's stats are not in a namespace
/// Envoy strips (as it strips `wasmcustom.`): Prometheus sees them as
/// `envoy_dynamicmodulescustom_gatehouse_*`, with the same labels and values;
/// they are read here under the Wasm build's names.
fn prometheus(envoy: &Envoy) -> String {
    let (code, body) = envoy::http_get(&envoy.admin, "/stats/prometheus").unwrap();
    assert_eq!(code, 200);
    body.replace("envoy_dynamicmodulescustom_gatehouse_", "gatehouse_")
}

/// Scrapes until `ready` holds (histograms reach the admin page with Envoy's
/// periodic stats flush) and returns that scrape.
fn scrape_until(envoy: &Envoy, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = prometheus(envoy);
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what} never showed:\n{text}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn gatehouse_lines(text: &str) -> String {
    text.lines()
        .filter(|line| line.starts_with("gatehouse_"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn decisions_masking_and_durations_show_in_prometheus_with_their_labels() {
    let policy = json!({
        "version": "stats",
        "default": { "action": "allow" },
        "rules": [{
            "name": "no-drop",
            "action": "deny",
            "message": "gatehouse: DROP is not allowed",
            "match": { "kinds": ["drop"] }
        }]
    });
    let opts = StackOptions {
        postgres_filter: json!({ "policy": policy, "masking": example("postgres-masking.json") }),
        ..StackOptions::default()
    };
    let stack = Stack::start("it", "stats", opts).expect("stack starts");

    let out = stack
        .psql(
            "app",
            &[
                "-v",
                "ON_ERROR_STOP=0",
                "-c",
                "drop table customers",
                "-c",
                "select email from customers where id = 1",
                "-c",
                "select 'someone@example.com' as contact",
            ],
        )
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DROP is not allowed"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("someone@example.com"), "{stdout}");

    let allowed = stack
        .kubectl(
            "1.33",
            &["--context", "developer", "get", "pods", "-n", "dev"],
        )
        .unwrap();
    assert!(allowed.status.success(), "{allowed:?}");
    let denied = stack
        .kubectl(
            "1.33",
            &["--context", "developer", "delete", "namespace", "prod"],
        )
        .unwrap();
    assert!(!denied.status.success(), "{denied:?}");

    let text = scrape_until(&stack.envoy, "the statement-duration histogram", |text| {
        sample(text, "gatehouse_pg_statement_duration_us_count", &[]).unwrap_or(0.0) >= 3.0
            && sample(text, "gatehouse_k8s_request_duration_us_count", &[]).unwrap_or(0.0) >= 2.0
    });
    println!("{}", gatehouse_lines(&text));
    let at_least = |name: &str, labels: &[(&str, &str)], min: f64| {
        let value = sample(&text, name, labels);
        assert!(
            value.is_some_and(|value| value >= min),
            "{name}{labels:?} = {value:?}, expected at least {min}:\n{}",
            gatehouse_lines(&text)
        );
    };

    // Statements by action and rule, the policy's default included.
    at_least(
        "gatehouse_pg_decisions_total",
        &[("action", "deny"), ("rule", "no-drop")],
        1.0,
    );
    at_least(
        "gatehouse_pg_decisions_total",
        &[("action", "allow"), ("rule", "default")],
        2.0,
    );
    // Masked values by column rule and by detector.
    at_least(
        "gatehouse_pg_masked_by_rule_total",
        &[("rule", "customer-email")],
        1.0,
    );
    at_least(
        "gatehouse_pg_masked_by_detector_total",
        &[("detector", "email")],
        1.0,
    );
    // Histograms carry their buckets.
    assert!(
        text.lines()
            .any(|line| line.starts_with("gatehouse_pg_statement_duration_us_bucket{le=")),
        "{}",
        gatehouse_lines(&text)
    );
    at_least(
        "gatehouse_pg_statement_duration_us_bucket",
        &[("le", "+Inf")],
        3.0,
    );
    at_least("gatehouse_pg_filter_time_us_count", &[], 1.0);
    // Kubernetes requests by action and rule.
    at_least(
        "gatehouse_k8s_decisions_total",
        &[("action", "deny"), ("rule", "no-namespace-deletion")],
        1.0,
    );
    assert!(
        text.lines().any(|line| {
            line.starts_with("gatehouse_k8s_decisions_total{") && line.contains("action=\"allow\"")
        }),
        "{}",
        gatehouse_lines(&text)
    );
    at_least("gatehouse_k8s_filter_time_us_count", &[], 2.0);
    // Both configurations loaded; no session is open any more.
    at_least("gatehouse_pg_config_loaded_total", &[], 1.0);
    at_least("gatehouse_k8s_config_loaded_total", &[], 1.0);
    assert_eq!(
        sample(&text, "gatehouse_pg_config_rejected_total", &[]),
        Some(0.0)
    );
    let open = scrape_until(&stack.envoy, "the closed session", |text| {
        sample(text, "gatehouse_pg_sessions_active", &[]) == Some(0.0)
    });
    at_least("gatehouse_pg_connections_total", &[], 1.0);
    drop(open);
}

#[test]
fn a_rejected_configuration_is_counted_while_the_previous_one_serves() {
    let dir = scratch_dir("it", "stats-rejected").unwrap();
    let EcdsGateway {
        envoy,
        // Serves until the end of the test.
        postgres: _postgres,
        mut vars,
    } = EcdsGateway::start(&dir).unwrap();
    scrape_until(&envoy, "the loaded configuration", |text| {
        sample(text, "gatehouse_pg_config_loaded_total", &[]).unwrap_or(0.0) >= 1.0
    });

    // A policy the filter refuses (an unknown key), as a new version.
    vars.insert("ECDS_VERSION", "v2".to_string());
    vars.insert(
        "PG_CONFIG",
        envoy::yaml_quote(r#"{"no_such_setting": true}"#),
    );
    configs::push_postgres_resource(&vars).unwrap();
    let text = scrape_until(&envoy, "the rejected configuration", |text| {
        sample(text, "gatehouse_pg_config_rejected_total", &[]).unwrap_or(0.0) >= 1.0
    });
    println!("{}", gatehouse_lines(&text));
    assert_eq!(
        envoy
            .stat("extension_config_discovery.network_filter.gatehouse_postgres.update_rejected")
            .unwrap(),
        Some(1),
        "Envoy did not reject the update"
    );
    assert!(sample(&text, "gatehouse_pg_config_loaded_total", &[]).unwrap_or(0.0) >= 1.0);
}

#[test]
fn every_bootstrap_with_a_gatehouse_filter_turns_the_label_pairs_into_tags() {
    for template in configs::bootstrap_templates().unwrap() {
        let text = std::fs::read_to_string(&template).unwrap();
        if !text.contains("gatehouse_postgres") && !text.contains("gatehouse_kubernetes") {
            continue;
        }
        for label in ["action", "rule", "detector"] {
            assert!(
                text.contains(&format!(
                    r#"{{tag_name: {label}, regex: "({label}=\\.=(.*?);\\.;)"}}"#
                )),
                "{} has no stats_tags rule for {label} (see docs/stats.md)",
                template.display()
            );
        }
        assert!(
            text.contains(r#"match: {prefix: "wasmcustom.gatehouse_"}"#),
            "{} has no histogram buckets for gatehouse (see docs/stats.md)",
            template.display()
        );
    }
}
