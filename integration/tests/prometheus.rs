//! Operations the Prometheus way: a real Prometheus scrapes Envoy's
//! `/stats/prometheus` with gatehouse's filters loaded, PromQL finds
//! gatehouse's series with their labels, and a shipped alert fires when
//! logins are refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::prometheus::{Prometheus, alert_rules};
use gatehouse_integration::stack::demo_postgres_filter_config;
use gatehouse_integration::{Stack, StackOptions};
use std::time::Duration;

#[test]
fn prometheus_scrapes_gatehouse_series_and_a_shipped_alert_fires() {
    let stack = Stack::start(
        "it",
        "prometheus",
        StackOptions {
            postgres_filter: demo_postgres_filter_config(),
            ..StackOptions::default()
        },
    )
    .expect("stack starts");
    let prometheus = Prometheus::start(
        &stack.dir.join("prometheus"),
        &stack.envoy.admin.to_string(),
        &[&alert_rules()],
    )
    .expect("prometheus starts");

    // A counter's first sample is its baseline: scraped at zero before the
    // failures, so increase() sees them.
    prometheus
        .wait_for("the first scrape", Duration::from_secs(30), |p| {
            let found = p.query("gatehouse_pg_login_failures_total == 0")?;
            Ok((!found.is_empty()).then_some(()))
        })
        .unwrap();
    let developer = stack.token("developer").unwrap();
    let denied = stack
        .psql_login("app", Some(&developer), &["-c", "drop table orders"])
        .unwrap();
    assert!(!denied.status.success());
    // Five refused logins: a forged token each time.
    for _ in 0..5 {
        let refused = stack
            .psql_login("app", Some("not-a-token"), &["-c", "select 1"])
            .unwrap();
        assert!(!refused.status.success());
    }

    let decisions = prometheus
        .wait_for(
            "the denial in gatehouse_pg_decisions_total",
            Duration::from_secs(30),
            |p| {
                let found =
                    p.query(r#"gatehouse_pg_decisions_total{action="deny", rule="no-ddl"} > 0"#)?;
                Ok((!found.is_empty()).then_some(found))
            },
        )
        .unwrap();
    assert_eq!(decisions[0]["metric"]["job"], "envoy");
    let failures = prometheus
        .wait_for("five login failures", Duration::from_secs(30), |p| {
            let found = p.query("gatehouse_pg_login_failures_total >= 5")?;
            Ok((!found.is_empty()).then_some(found))
        })
        .unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    // The key-fetch failure counter exists (at zero) for the alert to watch.
    assert!(
        !prometheus
            .query("gatehouse_pg_jwks_fetch_failures_total == 0")
            .unwrap()
            .is_empty()
    );

    let alert = prometheus
        .wait_for(
            "GatehouseLoginsRefused to fire",
            Duration::from_secs(60),
            |p| {
                Ok(p.alerts()?.into_iter().find(|a| {
                    a["labels"]["alertname"] == "GatehouseLoginsRefused" && a["state"] == "firing"
                }))
            },
        )
        .unwrap();
    assert_eq!(alert["labels"]["severity"], "warning");
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("logins refused in 5 minutes"),
        "{alert}"
    );
    let others: Vec<_> = prometheus
        .alerts()
        .unwrap()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] != "GatehouseLoginsRefused")
        .collect();
    assert!(others.is_empty(), "nothing else is wrong: {others:?}");
    // Every rule evaluates against the real series (none fails, as a rule
    // mixing two filters' series once did).
    let log = std::fs::read_to_string(stack.dir.join("prometheus/prometheus.log")).unwrap();
    assert!(!log.contains("Evaluating rule failed"), "{log}");
}
