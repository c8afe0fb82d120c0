//! `gatehouse`: the command line for operators and auditors.
//!
//! Each command lives in its own module with its clap arguments and a
//! `run(args) -> ExitCode`; [`Command`] lists them, so a new command is one
//! module and one variant here. Every command and subcommand answers `--help`
//! (exit 0); a usage error exits 2.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod approvals;
mod audit;
mod collect;
mod document;
mod explain;
mod identities;
mod ready;
mod validate;

/// gatehouse: read audit logs and replay sessions, check and explain
/// configurations, probe listeners, and approve what policy holds back.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Audit(audit::AuditArgs),
    Validate(validate::ValidateArgs),
    Explain(Box<explain::ExplainArgs>),
    Ready(ready::ReadyArgs),
    Approvals(approvals::ApprovalsArgs),
    Approve(approvals::ApproveArgs),
    Deny(approvals::DenyArgs),
    Withdraw(approvals::WithdrawArgs),
    Request(approvals::RequestArgs),
    Reason(approvals::ReasonArgs),
    /// Play one session back from an audit log: a recorded exec or attach
    /// session as asciicast v2 or a transcript, or a Postgres session (the
    /// same as `gatehouse audit replay`).
    Replay(audit::ReplayArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Audit(args) => audit::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Explain(args) => explain::run(*args),
        Command::Ready(args) => ready::run(args),
        Command::Approvals(args) => approvals::run_approvals(args),
        Command::Approve(args) => approvals::run_approve(args),
        Command::Deny(args) => approvals::run_deny(args),
        Command::Withdraw(args) => approvals::run_withdraw(args),
        Command::Request(args) => approvals::run_request(args),
        Command::Reason(args) => approvals::run_reason(args),
        Command::Replay(args) => audit::replay(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command path, from `gatehouse` down to each leaf subcommand.
    fn command_paths(command: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(path.clone());
        for sub in command.get_subcommands() {
            let mut deeper = path.clone();
            deeper.push(sub.get_name().to_owned());
            command_paths(sub, deeper, out);
        }
    }

    #[test]
    fn help_works_the_same_on_every_command_and_subcommand() {
        let mut paths = Vec::new();
        command_paths(&Cli::command(), Vec::new(), &mut paths);
        assert!(paths.len() > 8, "{paths:?}");
        for path in paths {
            for help in ["--help", "-h"] {
                let args = std::iter::once("gatehouse".to_owned())
                    .chain(path.iter().cloned())
                    .chain([help.to_owned()]);
                match Cli::try_parse_from(args) {
                    Err(e) => assert_eq!(
                        e.kind(),
                        clap::error::ErrorKind::DisplayHelp,
                        "{path:?} {help}"
                    ),
                    Ok(parsed) => panic!("{path:?} {help} ran {parsed:?} instead of printing help"),
                }
            }
        }
    }
}
