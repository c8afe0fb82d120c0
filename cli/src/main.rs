//! `gatehouse`: the command line for operators and auditors.
//!
//! Each subcommand lives in its own module with a `run(args) -> ExitCode`.

use std::process::ExitCode;

mod args;
mod audit;
mod collect;
mod document;
mod explain;
mod ready;
mod recording;
mod replay;
mod validate;

const USAGE: &str = "usage: gatehouse <command> ...

commands:
  audit     read an audit log (follow, replay, verify); `gatehouse audit --help`
  validate  check filter configurations and policies; `gatehouse validate --help`
  explain   show the decision a policy reaches for an identity and a statement
            or request; `gatehouse explain --help`
  ready     probe a listener: does the gatehouse filter answer there;
            `gatehouse ready --help`
  replay    play a recorded exec session or a Postgres session back from the
            log, as asciicast or a transcript; `gatehouse replay --help`";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((cmd, rest)) if cmd == "audit" => audit::run(rest),
        Some((cmd, rest)) if cmd == "validate" => validate::run(rest),
        Some((cmd, rest)) if cmd == "explain" => explain::run(rest),
        Some((cmd, rest)) if cmd == "ready" => ready::run(rest),
        Some((cmd, rest)) if cmd == "replay" => replay::run(rest),
        Some((cmd, _)) if cmd == "--help" || cmd == "-h" || cmd == "help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
