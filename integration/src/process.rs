//! Child processes that are always cleaned up and whose logs are kept for
//! failure reports.

use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running child process; dropping it stops the process (SIGTERM, then SIGKILL).
pub struct Managed {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    stop_signal: &'static str,
}

impl Managed {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Managed> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        // Own process group: a Ctrl-C in the terminal reaches only the command
        // that manages this process, which then stops it in order.
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Managed {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            stop_signal: "TERM",
        })
    }

    /// The signal that asks this program to stop (PostgreSQL wants INT for a fast shutdown).
    pub fn set_stop_signal(&mut self, signal: &'static str) {
        self.stop_signal = signal;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Fails if the process has already exited, with its log tail.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!(
                "{} exited early ({status}); last log lines:\n{}",
                self.name,
                tail(&self.log, 40)
            );
        }
        Ok(())
    }

    /// Leaves the process running after this guard is dropped (for `--detach`).
    pub fn detach(&mut self) -> u32 {
        self.child.take().map(|c| c.id()).unwrap_or(0)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), self.stop_signal);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a signal (by name, e.g. "TERM") to a process id (used for detached processes too).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Whether a process id is alive.
pub fn alive(pid: u32) -> bool {
    Command::new("kill")
        .arg("-0")
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The last `lines` lines of a log file (for error messages).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let first = all.len().saturating_sub(lines);
    all.get(first..).unwrap_or_default().join("\n")
}

/// Polls `probe` until it returns Ok(true), failing after `timeout` or as soon
/// as `alive` reports the process died.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
    mut probe: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if probe() {
            return Ok(());
        }
        alive()?;
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command to completion, failing with its output when it does not succeed.
pub fn run(what: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {what} ({:?})", cmd.get_program()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// A free loopback TCP port (bound then released; fine for services that bind
/// immediately after).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
