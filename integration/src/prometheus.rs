//! A real Prometheus server (Debian package `prometheus`) scraping Envoy's
//! `/stats/prometheus`, with gatehouse's alerting rules loaded, for the tests
//! that check what operators see.

use crate::process::{self, Managed};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The shipped alerting rules.
pub fn alert_rules() -> std::path::PathBuf {
    crate::workspace_root().join("ops/prometheus/gatehouse-alerts.yaml")
}

/// A Prometheus server on a free loopback port; stopped when dropped.
pub struct Prometheus {
    _process: Managed,
    address: String,
}

impl Prometheus {
    /// Starts Prometheus in `dir`, scraping `/stats/prometheus` of the Envoy
    /// admin endpoint `envoy_admin` every second and evaluating `rule_files`
    /// every second; waits until it is ready.
    pub fn start(dir: &Path, envoy_admin: &str, rule_files: &[&Path]) -> Result<Prometheus> {
        std::fs::create_dir_all(dir)?;
        let rules: Vec<String> = rule_files
            .iter()
            .map(|f| format!("  - {}", f.display()))
            .collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n{}\n\
                 scrape_configs:\n  - job_name: envoy\n    metrics_path: /stats/prometheus\n    \
                 static_configs:\n      - targets: ['{envoy_admin}']\n",
                rules.join("\n")
            ),
        )?;
        let address = format!("127.0.0.1:{}", process::free_port()?);
        let mut cmd = Command::new(crate::tools::prometheus()?);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"));
        let mut managed = Managed::spawn("prometheus", cmd, &dir.join("prometheus.log"))?;
        process::wait_until(
            "Prometheus",
            Duration::from_secs(30),
            || managed.check_running(),
            || crate::envoy::http_get(&address, "/-/ready").is_ok_and(|(code, _)| code == 200),
        )?;
        Ok(Prometheus {
            _process: managed,
            address,
        })
    }

    /// The `data` of an API answer (`/api/v1/...`).
    fn api(&self, path: &str) -> Result<Value> {
        let (code, body) = crate::envoy::http_get(&self.address, path)?;
        let answer: Value = serde_json::from_str(&body)
            .with_context(|| format!("Prometheus answered {code}: {body}"))?;
        if answer.get("status").and_then(Value::as_str) != Some("success") {
            bail!("Prometheus refused {path}: {body}");
        }
        Ok(answer.get("data").cloned().unwrap_or_default())
    }

    /// The result of an instant PromQL query (a vector's samples).
    pub fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?;
        Ok(data
            .get("result")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// The alerts Prometheus holds now (pending and firing).
    pub fn alerts(&self) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/alerts")?;
        Ok(data
            .get("alerts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Waits up to `timeout` for `check` to return something.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Prometheus) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = check(self)? {
                return Ok(found);
            }
            if Instant::now() > deadline {
                bail!("Prometheus: {what} did not happen within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Percent-encodes a query parameter value.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
