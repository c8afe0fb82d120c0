//! The shipped Envoy configurations under `envoy/`: one variable map that fills
//! every template's placeholders, and helpers to render, validate and roll out
//! the ECDS resources the `ecds.yaml` bootstrap watches.

use crate::certs::DemoPki;
use crate::envoy;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The ECDS resource templates (under `envoy/ecds/`) and the file name each is
/// rendered to inside the watched directory.
pub const ECDS_RESOURCES: &[&str] = &["postgres.json", "kubernetes.json"];

/// The `envoy/` directory of the workspace.
pub fn envoy_dir() -> PathBuf {
    crate::workspace_root().join("envoy")
}

/// Every bootstrap template shipped in `envoy/` (`*.yaml`), sorted by name.
pub fn bootstrap_templates() -> Result<Vec<PathBuf>> {
    files_with_extension(&envoy_dir(), "yaml")
}

/// Every ECDS resource template shipped in `envoy/ecds/` (`*.json`), sorted by name.
pub fn ecds_templates() -> Result<Vec<PathBuf>> {
    files_with_extension(&envoy_dir().join("ecds"), "json")
}

fn files_with_extension(dir: &Path, extension: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == extension) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Values for every placeholder used under `envoy/`, pointing at the built
/// filter modules, a demo certificate generated in `dir/pki`, an access log and
/// an ECDS directory (`dir/ecds`, created) inside `dir`. Upstream ports are
/// fixed example values: enough for `envoy --mode validate`; a running stack
/// overrides them.
pub fn vars(dir: &Path) -> Result<BTreeMap<&'static str, String>> {
    let modules = crate::tools::filter_modules()?;
    let pki = DemoPki::generate(&dir.join("pki"))?;
    let ecds_dir = dir.join("ecds");
    std::fs::create_dir_all(&ecds_dir)?;
    let path = |p: &Path| p.display().to_string();
    Ok([
        ("PG_PORT", "0".to_string()),
        ("PG_TLS_PORT", "0".to_string()),
        ("KUBE_PORT", "0".to_string()),
        ("PG_UPSTREAM_PORT", "5432".to_string()),
        ("KUBE_UPSTREAM_PORT", "6443".to_string()),
        ("IDP_PORT", "8080".to_string()),
        ("PG_WASM", path(&modules.postgres)),
        ("KUBE_WASM", path(&modules.kubernetes)),
        ("PG_CONFIG", envoy::yaml_quote("{}")),
        (
            "PG_NATIVE_CONFIG",
            envoy::yaml_quote(
                &crate::stack::native_postgres_config(&serde_json::json!({}), Some(7070))
                    .to_string(),
            ),
        ),
        ("KUBE_CONFIG", envoy::yaml_quote("{}")),
        (
            "KUBE_NATIVE_CONFIG",
            envoy::yaml_quote(
                &crate::stack::native_kubernetes_config(&serde_json::json!({}), 7070).to_string(),
            ),
        ),
        (
            "PG_SHADOW_CONFIG",
            envoy::yaml_quote(r#"{"mode": "shadow"}"#),
        ),
        (
            "KUBE_SHADOW_CONFIG",
            envoy::yaml_quote(r#"{"mode": "shadow"}"#),
        ),
        ("TLS_CERT", path(&pki.server_cert)),
        ("TLS_KEY", path(&pki.server_key)),
        ("ACCESS_LOG", path(&dir.join("access.log"))),
        // The audit module is built next to the filters.
        (
            "AUDIT_WASM",
            path(&modules.postgres.with_file_name("gatehouse_audit_wasm.wasm")),
        ),
        ("AUDIT_CONFIG", envoy::yaml_quote("{}")),
        ("RECORDS_PORT", "7070".to_string()),
        ("APPROVALS_PORT", "8480".to_string()),
        ("ECDS_DIR", path(&ecds_dir)),
        ("ECDS_VERSION", "v1".to_string()),
    ]
    .into_iter()
    .collect())
}

/// Renders a template file under `envoy/` (for example `"postgres.yaml"` or
/// `"ecds/postgres.json"`).
pub fn render_file(template: &Path, vars: &BTreeMap<&str, String>) -> Result<String> {
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("reading {}", template.display()))?;
    envoy::render(&text, vars).with_context(|| format!("rendering {}", template.display()))
}

/// Replaces `dir/name` atomically (write a temporary file, then rename), so a
/// watching Envoy never reads half a file.
pub fn replace_atomically(dir: &Path, name: &str, contents: &str) -> Result<()> {
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temp, contents).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, dir.join(name))
        .with_context(|| format!("renaming {} into place", temp.display()))
}

/// Renders every ECDS resource template into the watched directory
/// `vars["ECDS_DIR"]`, each replaced atomically.
pub fn write_ecds_resources(vars: &BTreeMap<&str, String>) -> Result<()> {
    let dir = PathBuf::from(
        vars.get("ECDS_DIR")
            .context("no ECDS_DIR in the variables")?,
    );
    for name in ECDS_RESOURCES {
        let rendered = render_file(&envoy_dir().join("ecds").join(name), vars)?;
        // A JSON error here names the template; Envoy would only log it later.
        serde_json::from_str::<serde_json::Value>(&rendered)
            .with_context(|| format!("envoy/ecds/{name} does not render to JSON"))?;
        replace_atomically(&dir, name, &rendered)?;
    }
    Ok(())
}

/// Renders `template` into `dir/<file name>` and runs `envoy --mode validate`
/// on it. The ECDS resources are rendered into the watched directory first, so
/// the ECDS bootstrap is checked with the files it points to in place.
pub fn validate_template(template: &Path, vars: &BTreeMap<&str, String>, dir: &Path) -> Result<()> {
    write_ecds_resources(vars)?;
    let name = template
        .file_name()
        .context("template without a file name")?;
    let config = dir.join(name);
    std::fs::write(&config, render_file(template, vars)?)?;
    envoy::validate(&config).with_context(|| format!("validating {}", template.display()))
}

/// Envoy started from `envoy/ecds.yaml` (its filters come from ECDS resource
/// files) in front of its own PostgreSQL. `vars` are what it was rendered
/// from: a test changes them, then [`push_postgres_resource`] rolls the
/// Postgres filter's new version out as an operator would.
pub struct EcdsGateway {
    pub envoy: crate::envoy::Envoy,
    pub postgres: crate::postgres::Postgres,
    pub vars: BTreeMap<&'static str, String>,
}

impl EcdsGateway {
    pub fn start(dir: &Path) -> Result<EcdsGateway> {
        let mut vars = vars(dir)?;
        let postgres = crate::postgres::Postgres::start(
            &dir.join("postgres"),
            &crate::postgres::PgOptions::default(),
        )?;
        vars.insert("PG_UPSTREAM_PORT", postgres.port.to_string());
        vars.insert(
            "KUBE_CONFIG",
            envoy::yaml_quote(&crate::stack::default_kubernetes_filter_config().to_string()),
        );
        write_ecds_resources(&vars)?;
        let run_dir = dir.join("envoy");
        std::fs::create_dir_all(&run_dir)?;
        let bootstrap = render_file(&envoy_dir().join("ecds.yaml"), &vars)?;
        let envoy = crate::envoy::Envoy::start(&run_dir, &bootstrap)?;
        Ok(EcdsGateway {
            envoy,
            postgres,
            vars,
        })
    }
}

/// Writes the Postgres filter's ECDS resource rendered from `vars` into their
/// `ECDS_DIR`, replacing the one Envoy watches in a single rename.
pub fn push_postgres_resource(vars: &BTreeMap<&str, String>) -> Result<()> {
    let resource = render_file(&envoy_dir().join("ecds/postgres.json"), vars)?;
    let dir = vars
        .get("ECDS_DIR")
        .context("no ECDS_DIR in the variables")?;
    replace_atomically(Path::new(dir), "postgres.json", &resource)
}
