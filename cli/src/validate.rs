//! `gatehouse validate`: check configuration files with the filters' own parsers.
//!
//! Each problem is one line, `file: path: message`, on stdout; a valid file gets
//! `file: ok (kind)`. Exit status: 0 when every file is valid, 1 when one is
//! invalid, 2 on a usage or read error.

use crate::collect;
use crate::document::{self, Compiled, Kind};
use gatehouse_core::config::ConfigError;
use serde_json::Value;
use std::process::ExitCode;

/// Check configuration files with the code the filters run.
///
/// Prints every problem as `file: path: message`, and `file: ok (kind)` for a
/// valid file.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 all valid, 1 a file is invalid, 2 usage or read error.")]
pub struct ValidateArgs {
    /// What every file holds; told from the content when absent.
    #[arg(long, value_parser = Kind::NAMES)]
    kind: Option<String>,
    /// Check each file as the KEY part of the Postgres filter configuration
    /// (e.g. `--part masking` for a file holding only the masking settings).
    #[arg(long, value_name = "KEY")]
    part: Option<String>,
    /// The files to check.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<String>,
}

/// What became of one file.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Valid,
    Invalid,
    /// It could not be read or its kind could not be told.
    Unusable,
}

/// Entry point for `gatehouse validate ...`.
pub fn run(args: ValidateArgs) -> ExitCode {
    let kind = args.kind.as_deref().and_then(Kind::from_name);
    let part = args.part.as_deref();
    if part.is_some() && kind.is_some_and(|kind| kind != Kind::PostgresFilter) {
        return usage_error("--part names a part of the postgres-filter configuration");
    }
    if part.is_some_and(str::is_empty) {
        return usage_error("--part needs a key name");
    }
    let outcomes: Vec<Outcome> = args
        .files
        .iter()
        .map(|file| validate_file(file, kind, part))
        .collect();
    if outcomes.contains(&Outcome::Unusable) {
        ExitCode::from(2)
    } else if outcomes.contains(&Outcome::Invalid) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("gatehouse validate: {message} (see `gatehouse validate --help`)");
    ExitCode::from(2)
}

fn validate_file(file: &str, kind: Option<Kind>, part: Option<&str>) -> Outcome {
    let json = match document::read(file) {
        Ok(json) => json,
        Err(error) => {
            eprintln!("gatehouse validate: {error}");
            return Outcome::Unusable;
        }
    };
    let doc: Result<Value, _> = serde_json::from_slice(&json);
    if let Some(part) = part {
        return match doc {
            Ok(doc) => validate_part(file, part, doc),
            Err(error) => report(file, &[ConfigError::new("", error.to_string())]),
        };
    }
    let doc = doc.ok();
    let kind = match (kind, &doc) {
        (Some(kind), _) => kind,
        (None, Some(doc)) => match document::detect(doc, &json, &Kind::ALL) {
            Ok(kind) => kind,
            Err(error) => {
                eprintln!("gatehouse validate: {file}: {error}");
                return Outcome::Unusable;
            }
        },
        // Not JSON: any parser names the syntax error and where it is.
        (None, None) => Kind::PostgresPolicy,
    };
    let first = match kind.check(&json) {
        Ok(compiled) => {
            println!("{file}: ok ({}{})", kind.name(), version_note(&compiled));
            return Outcome::Valid;
        }
        Err(error) => error,
    };
    let problems = match &doc {
        Some(doc) => collect::problems(&json, doc, |json| kind.check(json).map(|_| ())),
        None => Vec::new(),
    };
    // The first problem is always among them unless the document was not JSON.
    report(
        file,
        if problems.is_empty() {
            std::slice::from_ref(&first)
        } else {
            &problems
        },
    )
}

/// Checks `doc` as the `part` key of the Postgres filter's configuration, with
/// paths relative to the file.
fn validate_part(file: &str, part: &str, doc: Value) -> Outcome {
    let wrapped = Value::Object([(part.to_owned(), doc)].into_iter().collect());
    let Ok(json) = serde_json::to_vec(&wrapped) else {
        eprintln!("gatehouse validate: {file}: cannot re-encode the document");
        return Outcome::Unusable;
    };
    let check = |json: &[u8]| Kind::PostgresFilter.check(json).map(|_| ());
    if check(&json).is_ok() {
        println!("{file}: ok ({} part {part})", Kind::PostgresFilter.name());
        return Outcome::Valid;
    }
    let problems: Vec<ConfigError> = collect::problems(&json, &wrapped, check)
        .into_iter()
        .map(|problem| {
            // Positions are in the wrapped document, not the file.
            let message = collect::without_position(&problem.message).to_owned();
            let path = match problem.path.strip_prefix(part) {
                Some(rest) => rest.strip_prefix('.').unwrap_or(rest).to_owned(),
                None => problem.path,
            };
            ConfigError::new(path, message)
        })
        .collect();
    report(file, &problems)
}

/// Prints each problem; the file is invalid.
fn report(file: &str, problems: &[ConfigError]) -> Outcome {
    for problem in problems {
        println!("{}", problem_line(file, problem));
    }
    Outcome::Invalid
}

/// `file: path: message`, the document root written `(root)`.
fn problem_line(file: &str, problem: &ConfigError) -> String {
    let path = if problem.path.is_empty() {
        "(root)"
    } else {
        problem.path.as_str()
    };
    format!("{file}: {path}: {}", problem.message)
}

fn version_note(compiled: &Compiled) -> String {
    let version = match compiled {
        Compiled::PostgresFilter(config) => {
            config.policy.as_ref().map(|p| p.0.version().to_owned())
        }
        Compiled::PostgresPolicy(policy) => Some(policy.version().to_owned()),
        Compiled::Kubernetes(gate) => gate.policy().version().map(str::to_owned),
    };
    let mode = match compiled {
        Compiled::PostgresFilter(config) => config.mode,
        Compiled::Kubernetes(gate) => gate.mode(),
        Compiled::PostgresPolicy(_) => gatehouse_core::record::FilterMode::Enforce,
    };
    let mut note = version.map_or_else(String::new, |v| format!(", policy version {v}"));
    if mode.is_shadow() {
        note.push_str(", mode shadow");
    }
    note
}
