//! A real PostgreSQL server in a temporary data directory on a free loopback port.

use crate::process::{self, Managed};
use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The demo database that `examples/demo/schema.sql` is loaded into.
pub const DEMO_DATABASE: &str = "shop";

/// How to start PostgreSQL.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// Load `examples/demo/schema.sql` (customers with PII, role `app`).
    pub seed_demo: bool,
    /// `log_statement = all`, so tests can check what reached the server.
    pub log_statements: bool,
}

/// A running PostgreSQL; stopped (fast shutdown) on drop.
pub struct Postgres {
    pub port: u16,
    pub data_dir: PathBuf,
    server: Managed,
    opts: PgOptions,
}

/// Starts the server program on an initialised data directory.
fn spawn_server(data_dir: &Path, port: u16, opts: &PgOptions, log: &Path) -> Result<Managed> {
    let mut cmd = Command::new(crate::tools::pg_bin_dir()?.join("postgres"));
    cmd.arg("-D").arg(data_dir).arg("-p").arg(port.to_string());
    for setting in server_settings(opts) {
        cmd.arg("-c").arg(setting);
    }
    as_server_account(&mut cmd, server_account()?);
    let mut server = Managed::spawn("postgres", cmd, log)?;
    server.set_stop_signal("INT"); // fast shutdown: do not wait for clients
    Ok(server)
}

/// The OS account PostgreSQL runs as when we are root (it refuses to run as root).
fn server_account() -> Result<Option<(u32, u32)>> {
    let me = process::run("id -u", Command::new("id").arg("-u"))?;
    if me.trim() != "0" {
        return Ok(None);
    }
    let uid = process::run("id -u postgres", Command::new("id").args(["-u", "postgres"]))
        .context("running as root needs the `postgres` OS account (created by the Debian package `postgresql`)")?;
    let gid = process::run(
        "id -g postgres",
        Command::new("id").args(["-g", "postgres"]),
    )?;
    Ok(Some((uid.trim().parse()?, gid.trim().parse()?)))
}

fn as_server_account(cmd: &mut Command, account: Option<(u32, u32)>) {
    if let Some((uid, gid)) = account {
        cmd.uid(uid).gid(gid);
    }
}

impl Postgres {
    /// Initialises a cluster under `dir` and starts it.
    pub fn start(dir: &Path, opts: &PgOptions) -> Result<Postgres> {
        let bin = crate::tools::pg_bin_dir()?;
        let account = server_account()?;
        let data_dir = dir.join("pgdata");
        std::fs::create_dir_all(&data_dir)?;
        if let Some((uid, gid)) = account {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&data_dir, Some(uid), Some(gid))?;
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(&data_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ]);
        as_server_account(&mut initdb, account);
        process::run("initdb", &mut initdb)?;

        let log = dir.join("postgres.log");
        // A free port can be taken between our probe and the server's bind; retry.
        let mut last_err = None;
        for _ in 0..5 {
            let port = process::free_port()?;
            let mut server = spawn_server(&data_dir, port, opts, &log)?;
            match wait_ready(port, &mut server) {
                Ok(()) => {
                    let pg = Postgres {
                        port,
                        data_dir,
                        server,
                        opts: opts.clone(),
                    };
                    if opts.seed_demo {
                        pg.psql(&format!("CREATE DATABASE {DEMO_DATABASE}"))?;
                        pg.psql_file(
                            DEMO_DATABASE,
                            &crate::workspace_root().join("examples/demo/schema.sql"),
                        )?;
                    }
                    return Ok(pg);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
    }

    /// A libpq URL straight to the server as superuser.
    pub fn direct_url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        self.server.log_path()
    }

    /// Runs SQL as superuser straight against the server; returns psql's unaligned output.
    pub fn psql(&self, sql: &str) -> Result<String> {
        self.psql_in("postgres", sql)
    }

    /// Runs SQL as superuser in `database`, straight against the server.
    pub fn psql_in(&self, database: &str, sql: &str) -> Result<String> {
        process::run(
            "psql",
            Command::new(crate::tools::pg_client("psql")?)
                .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-d"])
                .arg(self.direct_url(database))
                .arg("-c")
                .arg(sql),
        )
    }

    pub fn psql_file(&self, database: &str, file: &Path) -> Result<String> {
        process::run(
            "psql -f",
            Command::new(crate::tools::pg_client("psql")?)
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(self.direct_url(database))
                .arg("-f")
                .arg(file),
        )
    }

    /// Stops the server (fast shutdown: clients are disconnected) and starts it
    /// again on the same port and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.server.stop();
        let log = self.server.log_path().to_path_buf();
        self.server = spawn_server(&self.data_dir, self.port, &self.opts, &log)?;
        wait_ready(self.port, &mut self.server)
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    pub fn detach(&mut self) -> u32 {
        self.server.detach()
    }
}

fn server_settings(opts: &PgOptions) -> Vec<String> {
    let mut s: Vec<String> = [
        "listen_addresses=127.0.0.1",
        "unix_socket_directories=",
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
        "shared_buffers=64MB",
        "max_connections=200",
        "logging_collector=off",
        "log_line_prefix=%m [%p] %q%u@%d ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if opts.log_statements {
        s.push("log_statement=all".into());
    }
    s
}

fn wait_ready(port: u16, server: &mut Managed) -> Result<()> {
    let psql = crate::tools::pg_client("psql")?;
    let url = format!("postgresql://postgres@127.0.0.1:{port}/postgres?connect_timeout=2");
    process::wait_until(
        "PostgreSQL to accept connections",
        Duration::from_secs(30),
        || server.check_running(),
        || {
            Command::new(&psql)
                .args(["-X", "-Atc", "select 1", "-d", &url])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        },
    )
    .map_err(|e| {
        let log = process::tail(server.log_path(), 20);
        if log.contains("could not bind") || log.contains("Address already in use") {
            anyhow::anyhow!("port {port} in use: {e}\n{log}")
        } else {
            e
        }
    })
}
