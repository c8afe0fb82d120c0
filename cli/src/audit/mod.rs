//! `gatehouse audit`: who ran what, from an access-log file of records.
//!
//! The file holds one JSON object per line: gatehouse's Postgres records
//! (`pg.*`, `gatehouse.records_dropped`), Kubernetes audit Events, the
//! records of recorded exec and attach sessions (`k8s.exec.*`) and Envoy's
//! own per-connection lines. Lines that are not JSON objects are counted and
//! skipped. Each subcommand is a module; records are selected the same way
//! everywhere ([`Selection`]) and shown as a table or as the raw JSON lines.

// Reading a `serde_json::Value` by key never panics: an absent key reads as null.
#![allow(clippy::indexing_slicing)]

mod follow;
mod log;
mod playback;
mod recording;
mod replay;
mod sessions;
mod table;
mod verify;

pub use log::{Log, Selection};
use std::path::PathBuf;
use std::process::ExitCode;

/// Read an audit log: who ran what, sessions, replays, and a completeness check.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// Print the records that match, as a table or as the raw JSON lines.
    Records(RecordsArgs),
    /// Print matching records as they are written (like `tail -f`), until interrupted.
    Follow(FollowArgs),
    /// List Postgres sessions: who, when, from where, statements, denied, masked.
    Sessions(RecordsArgs),
    /// Play one session back: a Postgres session like a psql transcript,
    /// naming the person; a recorded exec or attach session as a transcript
    /// or as asciicast v2.
    Replay(ReplayArgs),
    /// Check Postgres sequence numbers and summaries, and each recorded exec
    /// session's hash chain; exit 1 when a record is missing or altered.
    Verify(FileArg),
}

#[derive(Debug, clap::Args)]
struct FileArg {
    /// The access-log file.
    file: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RecordsArgs {
    /// The access-log file.
    file: PathBuf,
    #[command(flatten)]
    select: Selection,
    /// `table` for people, `json` for the records' own lines.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, clap::Args)]
struct FollowArgs {
    #[command(flatten)]
    records: RecordsArgs,
    /// Start at the end of the file: only records written from now on.
    #[arg(long)]
    new: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["session", "last"])))]
pub struct ReplayArgs {
    /// The access-log file.
    file: PathBuf,
    /// Which session: `--session ID` (a Postgres connection id, as `audit
    /// sessions` lists them, or a recorded exec session's audit ID), or
    /// `--last` with any selection.
    #[command(flatten)]
    select: Selection,
    /// The last session the selection matches, Postgres or recorded exec.
    #[arg(long)]
    last: bool,
    /// `text` for a transcript; `asciicast` for asciicast v2, which
    /// `asciinema play` and `asciinema cat` read (redirect it to a file).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// How a session is played back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Asciicast,
}

/// How records are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Why an audit command could not answer.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "no Postgres session or recorded exec session {session} in {path} (`gatehouse audit sessions {path}` lists the Postgres ones)"
    )]
    UnknownSession { session: String, path: String },
    #[error("no Postgres session or recorded exec session in {path} matches")]
    NoSession { path: String },
}

impl AuditError {
    fn exit_code(&self) -> u8 {
        match self {
            AuditError::Read { .. } => 2,
            AuditError::UnknownSession { .. } | AuditError::NoSession { .. } => 1,
        }
    }
}

/// Entry point for `gatehouse audit ...`.
pub fn run(args: AuditArgs) -> ExitCode {
    finish("gatehouse audit", dispatch(args.command))
}

/// Entry point for `gatehouse replay ...` (`gatehouse audit replay`).
pub fn replay(args: ReplayArgs) -> ExitCode {
    finish("gatehouse replay", replay_session(&args))
}

fn finish(command: &str, result: Result<ExitCode, AuditError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{command}: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn dispatch(command: AuditCommand) -> Result<ExitCode, AuditError> {
    match command {
        AuditCommand::Records(args) => {
            let log = read(&args.file)?;
            let records = log.select(&args.select);
            match args.output {
                Output::Json => records.iter().for_each(|r| println!("{}", r.line)),
                Output::Table => print!("{}", table::records(&records)),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Follow(args) => follow::run(
            &args.records.file,
            &args.records.select,
            args.records.output,
            args.new,
        ),
        AuditCommand::Sessions(args) => {
            let log = read(&args.file)?;
            sessions::print(&log, &args.select, args.output);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Replay(args) => replay_session(&args),
        AuditCommand::Verify(args) => Ok(verify::run(&read(&args.file)?)),
    }
}

/// Plays back the session `args` picks: a recorded exec session by its
/// audit ID, else a Postgres session by its connection id.
fn replay_session(args: &ReplayArgs) -> Result<ExitCode, AuditError> {
    let log = read(&args.file)?;
    let path = || args.file.display().to_string();
    let id = match (&args.select.session, args.last) {
        (Some(session), false) => session.clone(),
        _ => log
            .select(&args.select)
            .iter()
            .rev()
            .find_map(|r| log::any_session_id(&r.value))
            .ok_or_else(|| AuditError::NoSession { path: path() })?,
    };
    if let Some(session) = recording::sessions(&log).remove(&id) {
        // A broken chain is said, and the session still played.
        if let Some(problem) = session.verify() {
            eprintln!("gatehouse replay: warning: exec session {id}: {problem}");
        }
        match args.format {
            Format::Text => print!("{}", playback::exec_transcript(&session)),
            Format::Asciicast => print!("{}", playback::exec_asciicast(&session)),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let lines = replay::timed_transcript(&log, &id).ok_or_else(|| AuditError::UnknownSession {
        session: id.clone(),
        path: path(),
    })?;
    match args.format {
        Format::Text => lines.iter().for_each(|(_, line)| println!("{line}")),
        Format::Asciicast => print!(
            "{}",
            playback::lines_asciicast(&format!("Postgres session {id}"), &lines)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The log at `path`, parsed; skipped lines are reported on stderr.
fn read(path: &std::path::Path) -> Result<Log, AuditError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuditError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let log = Log::parse(&text);
    if log.skipped > 0 {
        eprintln!("gatehouse audit: skipped {} non-JSON lines", log.skipped);
    }
    Ok(log)
}
