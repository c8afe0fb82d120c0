//! Real Envoy with the gatehouse filters, from a rendered `envoy/*.yaml` template.

use crate::process::{self, Managed};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The audit service's configuration when the caller gives none.
pub fn default_audit_config() -> serde_json::Value {
    serde_json::json!({"role": "service", "cluster": "gatehouse_records"})
}

/// YAML of a listener (for [`crate::StackOptions::extra_listeners`]) running
/// the test-only record producer module: `GET /produce?session=S&count=N&pad=P`
/// on listener `test_record_producer` emits N numbered records through
/// `gatehouse_host::records::emit`, as the filters do.
pub fn record_producer_listener() -> Result<String> {
    let module = crate::tools::filter_modules()?.record_producer();
    Ok(format!(
        r#"  - name: test_record_producer
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: test_record_producer
          route_config:
            virtual_hosts:
            - name: produce
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, direct_response: {{status: 404}}}}]
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: test_record_producer
                root_id: test_record_producer
                failure_policy: FAIL_RELOAD
                vm_config:
                  vm_id: test_record_producer
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: "{}"}}}}
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#,
        module.display()
    ))
}

/// Values for the record path's placeholders (`AUDIT_WASM`, `AUDIT_CONFIG`,
/// `RECORDS_PORT`) and `APPROVALS_PORT` that `vars` leaves out: the built audit
/// module, the default service configuration and free loopback ports.
pub fn with_record_path_defaults<'a>(
    template: &str,
    vars: &BTreeMap<&'a str, String>,
) -> Result<BTreeMap<&'a str, String>> {
    let mut vars = vars.clone();
    if template.contains("${AUDIT_WASM}") && !vars.contains_key("AUDIT_WASM") {
        let module = crate::tools::filter_modules()?.audit;
        vars.insert("AUDIT_WASM", module.display().to_string());
    }
    if !vars.contains_key("AUDIT_CONFIG") {
        vars.insert(
            "AUDIT_CONFIG",
            yaml_quote(&default_audit_config().to_string()),
        );
    }
    for placeholder in ["RECORDS_PORT", "APPROVALS_PORT"] {
        // Without an approval service, its cluster points at a port nobody serves.
        if template.contains(&format!("${{{placeholder}}}")) && !vars.contains_key(placeholder) {
            vars.insert(placeholder, crate::process::free_port()?.to_string());
        }
    }
    Ok(vars)
}

/// Fills `${NAME}` placeholders; every placeholder must have a value (the record
/// path's have defaults, see [`with_record_path_defaults`]).
pub fn render(template: &str, vars: &BTreeMap<&str, String>) -> Result<String> {
    let vars = &with_record_path_defaults(template, vars)?;
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .context("unterminated ${ in Envoy template")?;
        let name = &after[..end];
        let value = vars
            .get(name)
            .with_context(|| format!("Envoy template placeholder ${{{name}}} has no value"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Quotes a JSON document as a YAML double-quoted scalar (for StringValue configs).
pub fn yaml_quote(json: &str) -> String {
    serde_json::to_string(json).unwrap_or_else(|_| "\"\"".to_string())
}

/// A running Envoy; stopped on drop.
pub struct Envoy {
    pub admin: String,
    pub config: PathBuf,
    process: Managed,
}

impl Envoy {
    /// Writes `yaml` to `dir/envoy.yaml`, starts Envoy and waits for `/ready`.
    pub fn start(dir: &Path, yaml: &str) -> Result<Envoy> {
        let bin = crate::tools::envoy()?;
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, yaml)?;
        let admin_file = dir.join("admin.address");
        let log = dir.join("envoy.log");
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_file)
            // Several Envoys (parallel tests, a demo) share this machine.
            .arg("--use-dynamic-base-id")
            // Native modules (`dynamic_module_config: {name: X}`) load from here.
            .env(
                "ENVOY_DYNAMIC_MODULES_SEARCH_PATH",
                crate::tools::native_dir(),
            )
            .args([
                "--concurrency",
                "2",
                "--log-level",
                // `GATEHOUSE_ENVOY_LOG_LEVEL=debug` to see why a test failed.
                &std::env::var("GATEHOUSE_ENVOY_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
                // The native modules' own lines (and the ABI version check),
                // and the startup milestones (config loaded, main loop started).
                "--component-log-level",
                "dynamic_modules:info,main:info",
                "--file-flush-interval-msec",
                "100",
            ]);
        let mut process = Managed::spawn("envoy", cmd, &log)?;
        let mut admin = String::new();
        process::wait_until(
            "Envoy's admin /ready",
            // V8 compiles every module on the main thread and each worker; on a
            // loaded 2-core machine with several Envoys starting, that takes a while.
            Duration::from_secs(120),
            || process.check_running(),
            || {
                if admin.is_empty() {
                    admin = std::fs::read_to_string(&admin_file)
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                }
                !admin.is_empty()
                    && http_get(&admin, "/ready")
                        .map(|(code, _)| code == 200)
                        .unwrap_or(false)
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}\nEnvoy log tail:\n{}", process::tail(&log, 40)))?;
        Ok(Envoy {
            admin,
            config,
            process,
        })
    }

    /// The port a named listener is bound to.
    pub fn listener_port(&self, name: &str) -> Result<u16> {
        let (_, body) = http_get(&self.admin, "/listeners?format=json")?;
        let doc: serde_json::Value = serde_json::from_str(&body)?;
        let statuses = doc
            .get("listener_statuses")
            .and_then(serde_json::Value::as_array)
            .context("no listener_statuses")?;
        for l in statuses {
            if l.get("name").and_then(serde_json::Value::as_str) == Some(name) {
                let port = l
                    .pointer("/local_address/socket_address/port_value")
                    .and_then(serde_json::Value::as_u64)
                    .context("listener without port")?;
                return Ok(u16::try_from(port)?);
            }
        }
        bail!("Envoy has no listener named {name}")
    }

    /// One stat's value from the admin `/stats` page.
    pub fn stat(&self, name: &str) -> Result<Option<u64>> {
        let (_, body) = http_get(&self.admin, &format!("/stats?filter=^{name}$"))?;
        Ok(body
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
            .and_then(|v| v.trim().parse().ok()))
    }

    /// Connections each worker accepted on the listener whose `stat_prefix`
    /// is `listener` (Envoy's per-worker listener stats), by worker.
    pub fn connections_per_worker(&self, listener: &str) -> Result<BTreeMap<String, u64>> {
        let (_, body) = http_get(&self.admin, "/stats?filter=downstream_cx_total")?;
        let prefix = format!("listener.{listener}.worker_");
        Ok(body
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                let worker = name.strip_prefix(&prefix)?.split('.').next()?;
                Some((format!("worker_{worker}"), value.trim().parse().ok()?))
            })
            .collect())
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        process::tail(self.process.log_path(), lines)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn detach(&mut self) -> u32 {
        self.process.detach()
    }
}

/// Checks a configuration with `envoy --mode validate`.
pub fn validate(config: &Path) -> Result<()> {
    let bin = crate::tools::envoy()?;
    process::run(
        "envoy --mode validate",
        Command::new(bin)
            .arg("--mode")
            .arg("validate")
            .arg("-c")
            .arg(config)
            .arg("--use-dynamic-base-id")
            .env(
                "ENVOY_DYNAMIC_MODULES_SEARCH_PATH",
                crate::tools::native_dir(),
            ),
    )
    .map(|_| ())
}

/// A minimal HTTP/1.1 POST without a body (admin commands such as
/// `/runtime_modify?…`); the status code.
pub fn http_post(authority: &str, path: &str) -> Result<u16> {
    let mut stream = TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP response")
}

/// A minimal HTTP/1.1 GET (admin pages only; no dependencies needed).
pub fn http_get(authority: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, dechunk(&response, body)))
}

/// Undoes chunked transfer encoding when the response used it.
fn dechunk(response: &str, body: String) -> String {
    let head = response
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if !head.contains("transfer-encoding: chunked") {
        return body;
    }
    let mut out = String::new();
    let mut rest = body.as_str();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_placeholders_and_refuses_missing_ones() {
        let mut vars = BTreeMap::new();
        vars.insert("A", "1".to_string());
        assert_eq!(render("x ${A} y", &vars).unwrap(), "x 1 y");
        assert!(
            render("${B}", &vars)
                .unwrap_err()
                .to_string()
                .contains("${B}")
        );
    }

    #[test]
    fn yaml_quote_escapes_json() {
        assert_eq!(yaml_quote(r#"{"a":"b"}"#), r#""{\"a\":\"b\"}""#);
    }
}
