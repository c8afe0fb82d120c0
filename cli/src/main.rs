//! `gatehouse`: the command line for operators and auditors.
//!
//! Each subcommand lives in its own module with a `run(args) -> ExitCode`.

use std::process::ExitCode;

mod approvals;
mod args;
mod audit;
mod collect;
mod document;
mod explain;
mod ready;
mod validate;

const USAGE: &str = "usage: gatehouse <command> ...

commands:
  audit     read an audit log (follow, replay, verify); `gatehouse audit --help`
  validate  check filter configurations and policies; `gatehouse validate --help`
  explain   show the decision a policy reaches for an identity and a statement
            or request; `gatehouse explain --help`
  ready     probe a listener: does the gatehouse filter answer there;
            `gatehouse ready --help`
  approvals list or show approval requests; `gatehouse approvals --help`
  approve   approve a request: `gatehouse approve ID [--reason …]`
  deny      deny a request: `gatehouse deny ID --reason …`
  request   ask for a time window: `gatehouse request --scope NAME --for 30m --reason …`
  reason    say why, for the requests filed for you next: `gatehouse reason TEXT [--for 1h]`";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((cmd, rest)) if cmd == "audit" => audit::run(rest),
        Some((cmd, rest)) if cmd == "validate" => validate::run(rest),
        Some((cmd, rest)) if cmd == "explain" => explain::run(rest),
        Some((cmd, rest)) if cmd == "ready" => ready::run(rest),
        Some((cmd, rest)) if cmd == "approvals" => approvals::run_approvals(rest),
        Some((cmd, rest)) if cmd == "approve" => approvals::run_approve(rest),
        Some((cmd, rest)) if cmd == "deny" => approvals::run_deny(rest),
        Some((cmd, rest)) if cmd == "request" => approvals::run_request(rest),
        Some((cmd, rest)) if cmd == "reason" => approvals::run_reason(rest),
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
