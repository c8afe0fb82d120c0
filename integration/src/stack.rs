//! The whole gateway on one machine: PostgreSQL, the stand-in Kubernetes API
//! server, and Envoy with both gatehouse filters in front of them, TLS on both
//! listeners with a freshly generated demo CA.

use crate::approvals::ApprovalService;
use crate::certs::DemoPki;
use crate::envoy::{self, Envoy};
use crate::idp::{self, IdentityProvider};
use crate::postgres::{PgOptions, Postgres};
use crate::process::{self, Managed};
use anyhow::{Context, Result};
use gatehouse_core::identity::testing::Minter;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub postgres: PgOptions,
    /// Postgres filter configuration (the plugin's JSON).
    pub postgres_filter: Value,
    /// Kubernetes filter configuration (the plugin's JSON).
    pub kubernetes_filter: Value,
    /// Run the stand-in API server as this binary (the demo, which may outlive
    /// us) instead of in-process (tests).
    pub kube_standin_binary: Option<PathBuf>,
    /// Envoy bootstrap template under `envoy/` (the Wasm build's; the native
    /// build uses its twin, see [`crate::tools::Build::template`]).
    pub envoy_template: &'static str,
    /// The build to run; `None`: `GATEHOUSE_BUILD`'s.
    pub build: Option<crate::tools::Build>,
    /// The audit service's configuration (`None`: the default from
    /// [`envoy::default_audit_config`]).
    pub audit_service: Option<Value>,
    /// YAML of extra listeners (each starting `  - name:`), added to the
    /// bootstrap's static listeners; tests use it for a record producer.
    pub extra_listeners: Option<String>,
    /// The identity provider's signing key (a fresh one when `None`).
    pub signing_key: Option<Minter>,
    /// Lifetime of the tokens in the kubeconfig.
    pub token_ttl_seconds: i64,
    /// Values for placeholders only `envoy_template` has (for example the shadow
    /// instances' configurations of `shadow.yaml`).
    pub template_vars: Vec<(&'static str, String)>,
    /// Run the approval service (its own database on the stack's PostgreSQL;
    /// its records go to Envoy's record listener).
    pub approvals: Option<ApprovalOptions>,
}

/// How to run the approval service in a stack.
#[derive(Debug, Clone, Default)]
pub struct ApprovalOptions {
    /// Replicas over the one database (at least one; Envoy calls the first).
    pub replicas: usize,
    /// Where notifications go (a chat incoming webhook).
    pub webhook: Option<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            postgres: PgOptions {
                seed_demo: true,
                log_statements: true,
            },
            postgres_filter: serde_json::json!({}),
            kubernetes_filter: default_kubernetes_filter_config(),
            kube_standin_binary: None,
            envoy_template: "gatehouse.yaml",
            build: None,
            audit_service: None,
            extra_listeners: None,
            signing_key: None,
            token_ttl_seconds: 3600,
            template_vars: Vec::new(),
            approvals: None,
        }
    }
}

/// The shipped default Kubernetes policy (`examples/kubernetes-policy.json`),
/// whose identity section trusts the demo identity provider through the
/// `gatehouse_idp` cluster.
pub fn default_kubernetes_filter_config() -> Value {
    example("kubernetes-policy.json")
}

/// The demo's Postgres filter configuration as shipped
/// (`examples/postgres-filter.json`): token login from the demo identity
/// provider (`examples/postgres-login.json`), the statement policy
/// (`examples/postgres-policy.json`), masking (`examples/postgres-masking.json`),
/// and the large-object functions through the fast path (what libpq's `lo_*`
/// and JDBC's LargeObjectManager call), each judged by the policy, in one
/// document.
pub fn demo_postgres_filter_config() -> Value {
    example("postgres-filter.json")
}

/// The demo's Postgres configuration put together from its parts; the shipped
/// combined file must equal it.
pub fn demo_postgres_filter_parts() -> Value {
    let mut config = example("postgres-login.json");
    if let Some(parts) = config.as_object_mut() {
        parts.insert("policy".into(), example("postgres-policy.json"));
        parts.insert("masking".into(), example("postgres-masking.json"));
        parts.insert(
            "engine".into(),
            serde_json::json!({ "fast_path_functions": LARGE_OBJECT_FUNCTIONS }),
        );
    }
    config
}

/// The functions libpq (`lo_import`, `lo_export`, `lo_read`, …, client side) and
/// JDBC's LargeObjectManager call through the fast path.
pub const LARGE_OBJECT_FUNCTIONS: &[&str] = &[
    "lo_open",
    "lo_close",
    "lo_creat",
    "lo_create",
    "lo_unlink",
    "lo_lseek",
    "lo_lseek64",
    "lo_tell",
    "lo_tell64",
    "lo_truncate",
    "lo_truncate64",
    "loread",
    "lowrite",
];

/// An example file under `examples/`, parsed. Unreadable or invalid: an empty
/// object, which the filters refuse or treat as "deny everything", so a broken
/// example fails tests loudly.
pub fn example(name: &str) -> Value {
    let path = crate::workspace_root().join("examples").join(name);
    std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| serde_json::json!({}))
}

/// The upstream the Kubernetes listener routes to.
enum KubeUpstream {
    InProcess(kube_standin::StandIn),
    Process(Managed),
}

/// Everything running; dropping it stops every process (and, if the current
/// thread is panicking, prints the logs first so a failed test explains itself).
pub struct Stack {
    /// The build of the filters it runs (`GATEHOUSE_BUILD`).
    pub build: crate::tools::Build,
    pub dir: PathBuf,
    pub pki: DemoPki,
    pub postgres: Postgres,
    pub envoy: Envoy,
    kube: KubeUpstream,
    pub kube_upstream: SocketAddr,
    /// The demo identity provider (its JWKS reaches Envoy as cluster `gatehouse_idp`).
    pub idp: IdentityProvider,
    pub minter: Minter,
    /// Envoy's Postgres listener (plaintext; the filter answers SSLRequest `N`).
    pub pg_port: u16,
    /// Envoy's Postgres listener for direct TLS (libpq 17+ `sslnegotiation=direct`).
    pub pg_tls_port: u16,
    /// Envoy's Kubernetes listener (HTTPS).
    pub kube_port: u16,
    /// The access-log file Envoy writes records to.
    pub access_log: PathBuf,
    /// A kubeconfig for the Envoy endpoint.
    pub kubeconfig: PathBuf,
    /// The approval service, when the options asked for it.
    pub approvals: Option<ApprovalService>,
    /// The Envoy template and its values, for further Envoy processes.
    template: String,
    template_values: BTreeMap<&'static str, String>,
    /// Removes a scratch `dir` once everything above has stopped (fields
    /// drop in order, so this one goes last).
    scratch: Option<crate::ScratchDir>,
}

impl Stack {
    /// Starts the stack in a fresh `target/<area>/<name>-…` directory, which
    /// is removed when the stack is dropped unless a test failed.
    pub fn start(area: &str, name: &str, opts: StackOptions) -> Result<Stack> {
        let dir = crate::scratch_dir(area, name)?;
        let mut stack = Self::start_in(dir.clone(), opts)?;
        stack.scratch = Some(crate::ScratchDir::new(dir));
        Ok(stack)
    }

    pub fn start_in(dir: PathBuf, opts: StackOptions) -> Result<Stack> {
        let build = match opts.build {
            Some(build) => build,
            None => crate::tools::Build::from_env()?,
        };
        let modules = crate::tools::filter_modules()?;
        let pki = DemoPki::generate(&dir.join("pki"))?;
        let postgres = Postgres::start(&dir.join("postgres"), &opts.postgres)?;
        let (kube, kube_upstream) = start_kube_upstream(&dir, opts.kube_standin_binary.as_deref())?;
        let minter = match opts.signing_key {
            Some(m) => m,
            None => idp::generate_minter()?,
        };
        let idp = IdentityProvider::start(&[&minter])?;

        let access_log = dir.join("access.log");
        let mut vars = BTreeMap::new();
        let approvals = match &opts.approvals {
            Some(options) => {
                let records_port = process::free_port()?;
                vars.insert("RECORDS_PORT", records_port.to_string());
                let config = crate::approvals::service_config(
                    postgres.port,
                    idp.port(),
                    Some(records_port),
                    options.webhook.as_deref(),
                );
                let service = ApprovalService::start(
                    &dir.join("approvals"),
                    &postgres,
                    &config,
                    options.replicas.max(1),
                )?;
                vars.insert("APPROVALS_PORT", service.port(0).to_string());
                Some(service)
            }
            None => None,
        };
        vars.insert("PG_PORT", "0".to_string());
        vars.insert("PG_TLS_PORT", "0".to_string());
        vars.insert("KUBE_PORT", "0".to_string());
        vars.insert("PG_UPSTREAM_PORT", postgres.port.to_string());
        vars.insert("KUBE_UPSTREAM_PORT", kube_upstream.port().to_string());
        vars.insert("IDP_PORT", idp.port().to_string());
        vars.insert("PG_WASM", path_str(&modules.postgres)?);
        vars.insert("KUBE_WASM", path_str(&modules.kubernetes)?);
        vars.insert(
            "PG_CONFIG",
            envoy::yaml_quote(&opts.postgres_filter.to_string()),
        );
        vars.insert(
            "KUBE_CONFIG",
            envoy::yaml_quote(&opts.kubernetes_filter.to_string()),
        );
        vars.insert("TLS_CERT", path_str(&pki.server_cert)?);
        vars.insert("TLS_KEY", path_str(&pki.server_key)?);
        vars.insert("ACCESS_LOG", path_str(&access_log)?);
        if let Some(audit) = &opts.audit_service {
            vars.insert("AUDIT_CONFIG", envoy::yaml_quote(&audit.to_string()));
        }
        for (name, value) in &opts.template_vars {
            vars.insert(name, value.clone());
        }
        let template_name = build.template(opts.envoy_template);
        if template_name != opts.envoy_template {
            crate::tools::native_module("gatehouse")?;
            // The approval service's records go to the listener already named.
            let records_port = match vars.get("RECORDS_PORT") {
                Some(port) => port.parse()?,
                None => {
                    let port = process::free_port()?;
                    vars.insert("RECORDS_PORT", port.to_string());
                    port
                }
            };
            let approvals_port = approvals.as_ref().map(|service| service.port(0));
            let mut kube = native_kubernetes_config(&opts.kubernetes_filter, records_port);
            with_native_approvals(&mut kube, approvals_port);
            vars.insert("KUBE_NATIVE_CONFIG", envoy::yaml_quote(&kube.to_string()));
            let mut pg = native_postgres_config(&opts.postgres_filter, Some(records_port));
            with_native_approvals(&mut pg, approvals_port);
            vars.insert("PG_NATIVE_CONFIG", envoy::yaml_quote(&pg.to_string()));
        }
        let template_path = crate::workspace_root().join("envoy").join(template_name);
        let template = std::fs::read_to_string(&template_path)
            .with_context(|| format!("reading {}", template_path.display()))?;
        let envoy_dir = dir.join("envoy");
        std::fs::create_dir_all(&envoy_dir)?;
        let vars = envoy::with_record_path_defaults(&template, &vars)?;
        let mut yaml = envoy::render(&template, &vars)?;
        if let Some(extra) = &opts.extra_listeners {
            let at = yaml
                .find("\n  listeners:\n")
                .context("the Envoy template has no static listeners")?
                + "\n  listeners:\n".len();
            yaml.insert_str(at, extra);
        }
        let envoy = Envoy::start(&envoy_dir, &yaml)?;
        let pg_port = envoy.listener_port("postgres")?;
        // The Wasm build fetches keys at start; the native one when the first
        // client logs in, holding that login until they arrive.
        if build == crate::tools::Build::Wasm && opts.postgres_filter.get("identity").is_some() {
            wait_for_key_fetch(&idp)?;
        }
        let pg_tls_port = envoy.listener_port("postgres_tls")?;
        let kube_port = envoy.listener_port("kubernetes")?;

        let kubeconfig = dir.join("kubeconfig");
        let tokens = idp::DEMO_IDENTITIES
            .iter()
            .map(|(name, _)| Ok((*name, idp::mint(&minter, name, opts.token_ttl_seconds)?)))
            .collect::<Result<Vec<_>>>()?;
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(kube_port, &pki.ca_cert, &tokens)?,
        )?;
        Ok(Stack {
            build,
            dir,
            pki,
            postgres,
            envoy,
            kube,
            kube_upstream,
            idp,
            minter,
            pg_port,
            pg_tls_port,
            kube_port,
            access_log,
            kubeconfig,
            approvals,
            template,
            template_values: vars,
            scratch: None,
        })
    }

    /// Another Envoy process with the same filters and configuration, its own
    /// listener ports and record listener, and its approval calls going to
    /// service replica `approvals_replica`: a second gateway replica. Returns
    /// it with its Postgres listener port.
    pub fn another_envoy(&self, name: &str, approvals_replica: usize) -> Result<(Envoy, u16)> {
        let mut vars = self.template_values.clone();
        vars.insert("RECORDS_PORT", process::free_port()?.to_string());
        if let Some(service) = &self.approvals {
            vars.insert(
                "APPROVALS_PORT",
                service.port(approvals_replica).to_string(),
            );
        }
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let envoy = Envoy::start(&dir, &envoy::render(&self.template, &vars)?)?;
        let port = envoy.listener_port("postgres")?;
        Ok((envoy, port))
    }

    /// A Postgres filter stat (`gatehouse_pg_…`, named without the prefix Envoy
    /// gives the build's stats); `None` when Envoy has no such stat yet.
    pub fn pg_stat(&self, name: &str) -> Result<Option<u64>> {
        self.envoy
            .stat(&format!("{}{name}", self.build.stat_prefix()))
    }

    /// A Kubernetes filter stat (`gatehouse_k8s_…`), as [`Stack::pg_stat`].
    pub fn k8s_stat(&self, name: &str) -> Result<Option<u64>> {
        self.envoy
            .stat(&format!("{}{name}", self.build.stat_prefix()))
    }

    /// A libpq URL through Envoy (no user or password: they come from the caller).
    pub fn pg_url(&self) -> String {
        format!(
            "postgresql://127.0.0.1:{}/{}",
            self.pg_port,
            crate::postgres::DEMO_DATABASE
        )
    }

    /// Postgres through Envoy's direct-TLS listener, for libpq 17+ clients
    /// (`sslnegotiation=direct`; verify against the demo CA).
    pub fn pg_tls_url(&self) -> String {
        format!(
            "postgresql://127.0.0.1:{}/{}?sslmode=verify-full&sslnegotiation=direct&sslrootcert={}",
            self.pg_tls_port,
            crate::postgres::DEMO_DATABASE,
            self.pki.ca_cert.display()
        )
    }

    /// The Kubernetes API through Envoy.
    pub fn kube_server(&self) -> String {
        format!("https://127.0.0.1:{}", self.kube_port)
    }

    /// Runs psql through Envoy as `user` (`-X -At`, stop on error).
    pub fn psql(&self, user: &str, args: &[&str]) -> Result<Output> {
        self.psql_login(user, None, args)
    }

    /// Runs psql through Envoy as `user` with `password` (a token under token
    /// login); never prompts.
    pub fn psql_login(&self, user: &str, password: Option<&str>, args: &[&str]) -> Result<Output> {
        Ok(self.psql_login_command(user, password, args)?.output()?)
    }

    /// The command [`Stack::psql_login`] runs, to start it in the background.
    pub fn psql_login_command(
        &self,
        user: &str,
        password: Option<&str>,
        args: &[&str],
    ) -> Result<Command> {
        let mut psql = Command::new(crate::tools::pg_client("psql")?);
        psql.args(["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!("{}?user={user}&sslmode=disable", self.pg_url()))
            .args(args)
            .env_remove("PGPASSWORD");
        if let Some(password) = password {
            psql.env("PGPASSWORD", password);
        }
        Ok(psql)
    }

    /// A fresh token for a demo identity (`developer`, `dba`, `ci`, `agent`, `admin`).
    pub fn token(&self, identity: &str) -> Result<String> {
        idp::mint(&self.minter, identity, 600)
    }

    /// Runs a kubectl version (`"1.33"`) through Envoy with the stack's kubeconfig
    /// (context = demo identity, `developer` unless `--context` is given) and a
    /// private cache directory.
    pub fn kubectl(&self, version: &str, args: &[&str]) -> Result<Output> {
        let cache = self.dir.join(format!("kube-cache-{version}"));
        Ok(Command::new(crate::tools::kubectl(Some(version))?)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .env_remove("KUBECONFIG")
            .output()?)
    }

    /// Records in the access log so far, parsed (waits briefly for Envoy's flush).
    pub fn access_log_records(&self) -> Result<Vec<Value>> {
        std::thread::sleep(Duration::from_millis(300));
        let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).with_context(|| format!("access-log line is not JSON: {l}"))
            })
            .collect()
    }

    /// Waits until the access log holds a record matching `pred`.
    pub fn wait_for_record(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.access_log_records()?.into_iter().find(|r| pred(r)) {
                return Ok(r);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "no access-log record for {what}; log has:\n{}",
                    std::fs::read_to_string(&self.access_log).unwrap_or_default()
                );
            }
        }
    }

    /// Requests the stand-in API server received (in-process stand-in only).
    /// The in-process stand-in API server (`None` when it runs as a binary),
    /// to read or change its objects.
    pub fn kube_standin(&self) -> Option<&kube_standin::StandIn> {
        match &self.kube {
            KubeUpstream::InProcess(s) => Some(s),
            KubeUpstream::Process(_) => None,
        }
    }

    pub fn upstream_requests(&self) -> Vec<kube_standin::SeenRequest> {
        match &self.kube {
            KubeUpstream::InProcess(s) => s.requests(),
            KubeUpstream::Process(_) => Vec::new(),
        }
    }

    /// Leaves every process running (for `cargo xtask demo --detach`); returns their pids.
    pub fn detach(mut self) -> Vec<u32> {
        if let Some(scratch) = &mut self.scratch {
            scratch.keep();
        }
        let mut pids = vec![self.envoy.detach(), self.postgres.detach()];
        if let KubeUpstream::Process(p) = &mut self.kube {
            pids.push(p.detach());
        }
        if let Some(service) = &mut self.approvals {
            pids.extend(service.detach());
        }
        pids
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- Envoy log ({}) ----\n{}",
                self.envoy.log_path().display(),
                self.envoy.log_tail(60)
            );
            eprintln!(
                "---- PostgreSQL log ({}) ----\n{}",
                self.postgres.log_path().display(),
                process::tail(self.postgres.log_path(), 30)
            );
            eprintln!(
                "---- access log ----\n{}",
                process::tail(&self.access_log, 30)
            );
        }
    }
}

/// The native module's configuration for a Postgres filter configuration:
/// the same JSON, with where records go (`records_port`: the record listener)
/// and TLS for SSLRequest clients (see `envoy/gatehouse-native.yaml`).
pub fn native_postgres_config(filter: &Value, records_port: Option<u16>) -> Value {
    let mut config = serde_json::json!({"filter": filter, "starttls": true});
    if let (Some(port), Some(parts)) = (records_port, config.as_object_mut()) {
        parts.insert(
            "records".into(),
            serde_json::json!({"address": format!("127.0.0.1:{port}")}),
        );
    }
    config
}

/// The native module's configuration for a Kubernetes filter configuration:
/// the same JSON, with where a recorded session's records go (the record
/// listener, `records_port`).
pub fn native_kubernetes_config(filter: &Value, records_port: u16) -> Value {
    serde_json::json!({
        "filter": filter,
        "records": {"address": format!("127.0.0.1:{records_port}")},
    })
}

/// Tells a native configuration whose filter names the approval service
/// where its grants are read: the service on `port` (its first replica).
fn with_native_approvals(config: &mut Value, port: Option<u16>) {
    let names_service = config["filter"].get("approvals").is_some();
    if let (true, Some(port), Some(parts)) = (names_service, port, config.as_object_mut()) {
        parts.insert(
            "approvals".into(),
            serde_json::json!({"address": format!("127.0.0.1:{port}")}),
        );
    }
}

/// Token login on the Wasm build is ready once a worker fetched the issuer's
/// keys; the others adopt them on their next tick (20 ms).
fn wait_for_key_fetch(idp: &IdentityProvider) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while idp.fetches() == 0 {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("Envoy never fetched the identity provider's keys");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

fn start_kube_upstream(dir: &Path, binary: Option<&Path>) -> Result<(KubeUpstream, SocketAddr)> {
    match binary {
        None => {
            let standin = kube_standin::StandIn::start_demo()?;
            let addr = standin.addr();
            Ok((KubeUpstream::InProcess(standin), addr))
        }
        Some(bin) => {
            let port_file = dir.join("kube-standin.addr");
            let mut cmd = Command::new(bin);
            cmd.args(["--listen", "127.0.0.1:0", "--port-file"])
                .arg(&port_file);
            let mut p = Managed::spawn("kube-standin", cmd, &dir.join("kube-standin.log"))?;
            let mut addr = None;
            process::wait_until(
                "the stand-in Kubernetes API server",
                Duration::from_secs(15),
                || p.check_running(),
                || {
                    addr = std::fs::read_to_string(&port_file)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    addr.is_some()
                },
            )?;
            let addr = addr.context("stand-in address")?;
            Ok((KubeUpstream::Process(p), addr))
        }
    }
}

fn path_str(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_string)
        .with_context(|| format!("non-UTF-8 path {}", p.display()))
}

/// A kubeconfig for the Envoy endpoint that trusts the demo CA, with one user
/// and one context per demo identity (context names are identity names).
pub fn kubeconfig_yaml(port: u16, ca: &Path, tokens: &[(&str, String)]) -> Result<String> {
    let users: Vec<(&str, String)> = tokens
        .iter()
        .map(|(name, token)| (*name, format!("{{token: {token}}}")))
        .collect();
    kubeconfig_with_users(port, ca, &users)
}

/// A kubeconfig like [`kubeconfig_yaml`] whose users get their tokens from a
/// credential plugin (kubectl's exec protocol, `client.authentication.k8s.io/v1`,
/// as OIDC users do with kubelogin): `command token <identity> --exec-credential`
/// mints a fresh one whenever kubectl's has expired, so it never goes stale.
pub fn exec_kubeconfig_yaml(port: u16, ca: &Path, command: &Path) -> Result<String> {
    let command = path_str(command)?;
    let users: Vec<(&str, String)> = idp::DEMO_IDENTITIES
        .iter()
        .map(|(name, _)| {
            (
                *name,
                format!(
                    "{{exec: {{apiVersion: client.authentication.k8s.io/v1, command: \"{command}\", \
                     args: [token, {name}, --exec-credential], interactiveMode: Never}}}}"
                ),
            )
        })
        .collect();
    kubeconfig_with_users(port, ca, &users)
}

/// The kubeconfig with one user (given as a YAML flow mapping) and one context
/// per identity.
fn kubeconfig_with_users(port: u16, ca: &Path, users: &[(&str, String)]) -> Result<String> {
    let mut yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: gatehouse
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
current-context: developer
users:
",
        ca = path_str(ca)?
    );
    for (name, user) in users {
        yaml.push_str(&format!("- name: {name}\n  user: {user}\n"));
    }
    yaml.push_str("contexts:\n");
    for (name, _) in users {
        yaml.push_str(&format!(
            "- name: {name}\n  context: {{cluster: gatehouse, user: {name}}}\n"
        ));
    }
    Ok(yaml)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // a missing key is a failed test
mod tests {
    use super::*;

    #[test]
    fn the_shipped_combined_postgres_configuration_is_its_parts() {
        assert_eq!(
            demo_postgres_filter_config(),
            demo_postgres_filter_parts(),
            "examples/postgres-filter.json must hold postgres-login.json with \
             postgres-policy.json as `policy` and postgres-masking.json as `masking`"
        );
    }

    #[test]
    fn the_demo_identities_file_names_the_identity_providers_identities() {
        let file = crate::workspace_root().join("examples/demo/identities.json");
        let shipped: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let names: Vec<&str> = shipped
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected: Vec<&str> = idp::DEMO_IDENTITIES.iter().map(|(n, _)| *n).collect();
        expected.sort_unstable();
        assert_eq!(names, expected);
        for (name, group) in idp::DEMO_IDENTITIES {
            assert_eq!(
                shipped[name]["groups"],
                serde_json::json!([group]),
                "{name}"
            );
        }
    }
}
