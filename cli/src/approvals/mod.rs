//! Approvals from the command line, against the approval service:
//!
//! ```text
//! gatehouse approvals list [--json] [--state pending|approved|denied|expired|used|all]
//! gatehouse approvals show ID [--json]
//! gatehouse approve ID [--reason TEXT]
//! gatehouse deny ID --reason TEXT
//! gatehouse withdraw ID
//! gatehouse request --scope NAME --for 30m --reason TEXT
//! gatehouse reason TEXT [--for 1h]
//! ```
//!
//! Every command takes the caller's token from `--token` or `GATEHOUSE_TOKEN`
//! and the service from `--server` or `GATEHOUSE_APPROVALS_URL`. Exit codes: 0
//! done, 1 the service refused (the reason is printed), 2 usage error. Each
//! command is a variant of the `gatehouse` command line ([`ApprovalsArgs`] …).

mod http;

use clap::Subcommand;
use gatehouse_core::approval::{ApprovalRequest, format_duration, parse_duration};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Duration;

/// Where the approval service is and who is asking (every approval command).
#[derive(Debug, clap::Args)]
pub struct Service {
    /// The approval service.
    #[arg(long, env = "GATEHOUSE_APPROVALS_URL", value_name = "http://HOST:PORT")]
    server: String,
    /// Your OIDC token (the one the filters accept).
    #[arg(long, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
    token: String,
    /// How long to wait for the service.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,
}

/// List or show approval requests.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS)]
pub struct ApprovalsArgs {
    #[command(subcommand)]
    command: ApprovalsCommand,
}

#[derive(Debug, Subcommand)]
enum ApprovalsCommand {
    /// The requests in one state, newest first (the approvers' inbox).
    List {
        /// Print the requests as a JSON array.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "pending",
              value_parser = ["pending", "approved", "denied", "expired", "used", "all"])]
        state: String,
        #[command(flatten)]
        service: Service,
    },
    /// Everything about one request.
    Show {
        #[arg(value_name = "ID", value_parser = request_id)]
        id: String,
        /// Print the request as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        service: Service,
    },
}

/// Approve a request (never your own, unless you may break glass: then with
/// a reason, flagged as forced).
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS)]
pub struct ApproveArgs {
    #[arg(value_name = "ID", value_parser = request_id)]
    id: String,
    /// Why (required to break glass).
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    service: Service,
}

/// Deny a request; one denial ends it.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS)]
pub struct DenyArgs {
    #[arg(value_name = "ID", value_parser = request_id)]
    id: String,
    /// Why (the requester is told).
    #[arg(long, value_parser = non_empty)]
    reason: String,
    #[command(flatten)]
    service: Service,
}

/// Withdraw a request of yours that is still pending (or, as an approver, end
/// one): it can no longer be approved, and it no longer counts towards the
/// requests you may have pending.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS)]
pub struct WithdrawArgs {
    #[arg(value_name = "ID", value_parser = request_id)]
    id: String,
    #[command(flatten)]
    service: Service,
}

/// Ask for a time window on a scope (a rule the service lists).
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS)]
pub struct RequestArgs {
    /// The scope (a rule's name).
    #[arg(long)]
    scope: String,
    /// How long, e.g. 30m or 1h30m.
    #[arg(long = "for", value_name = "DURATION", value_parser = seconds)]
    duration: u64,
    /// Why.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    service: Service,
}

/// Say why, for the requests filed for you next (kubectl's too).
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS)]
pub struct ReasonArgs {
    /// The reason (quote it).
    #[arg(value_parser = non_empty)]
    reason: String,
    /// How long it holds.
    #[arg(long = "for", value_name = "DURATION", value_parser = seconds, default_value = "1h")]
    duration: u64,
    #[command(flatten)]
    service: Service,
}

const EXIT_STATUS: &str =
    "Exit status: 0 done, 1 the service refused (the reason is printed), 2 usage error.";

fn request_id(text: &str) -> Result<String, String> {
    if gatehouse_core::approval::request::valid_id(text) {
        Ok(text.to_owned())
    } else {
        Err("a request id is apr- and lowercase letters and digits".to_owned())
    }
}

fn non_empty(text: &str) -> Result<String, String> {
    match text.trim() {
        "" => Err("must not be empty".to_owned()),
        _ => Ok(text.to_owned()),
    }
}

fn seconds(text: &str) -> Result<u64, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

/// `gatehouse approvals list|show …`.
pub fn run_approvals(args: ApprovalsArgs) -> ExitCode {
    finish(match args.command {
        ApprovalsCommand::List {
            json,
            state,
            service,
        } => list(&service, &state, json),
        ApprovalsCommand::Show { id, json, service } => show(&service, &id, json),
    })
}

/// `gatehouse approve ID [--reason …]`.
pub fn run_approve(args: ApproveArgs) -> ExitCode {
    finish(review(
        &args.service,
        &args.id,
        "approve",
        args.reason.as_deref(),
    ))
}

/// `gatehouse deny ID --reason …`.
pub fn run_deny(args: DenyArgs) -> ExitCode {
    finish(review(&args.service, &args.id, "deny", Some(&args.reason)))
}

/// `gatehouse withdraw ID`.
pub fn run_withdraw(args: WithdrawArgs) -> ExitCode {
    finish(review(&args.service, &args.id, "expire", None))
}

/// `gatehouse request --scope NAME --for 30m --reason …`.
pub fn run_request(args: RequestArgs) -> ExitCode {
    finish(request(&args))
}

/// `gatehouse reason TEXT [--for 1h]`.
pub fn run_reason(args: ReasonArgs) -> ExitCode {
    finish(reason(&args))
}

/// Prints why the service refused, if it did.
fn finish(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("gatehouse: {message}");
            ExitCode::from(1)
        }
    }
}

impl Service {
    /// Calls the service; a non-2xx answer becomes its error message.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let timeout = Duration::from_secs(self.timeout.max(1));
        let answer = http::call(&self.server, &self.token, method, path, body, timeout)
            .map_err(|e| e.to_string())?;
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        Err(answer
            .body
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(
                || format!("the service answered {}", answer.status),
                str::to_owned,
            ))
    }
}

fn list(service: &Service, state: &str, json: bool) -> Result<(), String> {
    let answer = service.call("GET", &format!("/v1/requests?state={state}"), None)?;
    let requests = answer.get("requests").cloned().unwrap_or_default();
    if json {
        println!("{requests}");
        return Ok(());
    }
    let requests: Vec<ApprovalRequest> =
        serde_json::from_value(requests).map_err(|e| format!("unexpected answer: {e}"))?;
    print!("{}", table(&requests, now()));
    Ok(())
}

fn show(service: &Service, id: &str, json: bool) -> Result<(), String> {
    let answer = service.call("GET", &format!("/v1/requests/{id}"), None)?;
    if json {
        println!("{answer}");
        return Ok(());
    }
    let request: ApprovalRequest =
        serde_json::from_value(answer).map_err(|e| format!("unexpected answer: {e}"))?;
    print!("{}", details(&request, now()));
    Ok(())
}

fn review(service: &Service, id: &str, verdict: &str, reason: Option<&str>) -> Result<(), String> {
    let body = json!({ "reason": reason });
    let answer = service.call("POST", &format!("/v1/requests/{id}/{verdict}"), Some(&body))?;
    let request: ApprovalRequest =
        serde_json::from_value(answer).map_err(|e| format!("unexpected answer: {e}"))?;
    println!("{}", outcome(&request));
    Ok(())
}

fn request(args: &RequestArgs) -> Result<(), String> {
    let body = json!({
        "scope": args.scope,
        "grant_seconds": args.duration,
        "reason": args.reason,
    });
    let answer = args.service.call("POST", "/v1/requests", Some(&body))?;
    let id = answer.get("id").and_then(Value::as_str).unwrap_or_default();
    println!(
        "{id}: asked for a {} window on {}; an approver runs: gatehouse approve {id}",
        format_duration(args.duration),
        args.scope
    );
    Ok(())
}

fn reason(args: &ReasonArgs) -> Result<(), String> {
    let body = json!({ "reason": args.reason, "seconds": args.duration });
    args.service.call("POST", "/v1/reasons", Some(&body))?;
    println!(
        "for the next {}, requests filed for you carry this reason",
        format_duration(args.duration)
    );
    Ok(())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One line per request: id, state, requester, rule, time left, what.
fn table(requests: &[ApprovalRequest], now: u64) -> String {
    if requests.is_empty() {
        return "no requests\n".to_owned();
    }
    let rows: Vec<[String; 6]> = requests
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                state_text(r),
                r.requester.subject.clone(),
                r.rule.clone(),
                time_left(r, now),
                r.target.describe(),
            ]
        })
        .collect();
    let header = ["ID", "STATE", "REQUESTER", "RULE", "LEFT", "WHAT"].map(str::to_owned);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        for (cell, width) in row.iter().zip(widths) {
            out.push_str(&format!("{cell:<width$}  "));
        }
        out.push_str(row.get(5).map_or("", String::as_str));
        out.push('\n');
    }
    out
}

fn state_text(r: &ApprovalRequest) -> String {
    let mut text = r.state.as_str().to_owned();
    if r.state == gatehouse_core::approval::State::Pending && r.requirement.approvals > 1 {
        text.push_str(&format!(" {}/{}", r.approvals(), r.requirement.approvals));
    }
    if r.forced {
        text.push_str(" (forced)");
    }
    text
}

fn time_left(r: &ApprovalRequest, now: u64) -> String {
    let until = match r.state {
        gatehouse_core::approval::State::Pending => r.pending_until,
        gatehouse_core::approval::State::Approved => r.grant_until.unwrap_or(now),
        _ => return "-".to_owned(),
    };
    format_duration(until.saturating_sub(now))
}

/// Everything about one request, for `show`.
fn details(r: &ApprovalRequest, now: u64) -> String {
    let mut out = format!(
        "{id}  {state}\n  requester  {who} ({groups})\n  rule       {rule}\n  asks for   {what}\n",
        id = r.id,
        state = state_text(r),
        who = r.requester.subject,
        groups = r.requester.groups.join(", "),
        rule = r.rule,
        what = r.target.describe(),
    );
    if let Some(reason) = &r.reason {
        out.push_str(&format!("  reason     {reason}\n"));
    }
    let grant = match r.requirement.grant {
        gatehouse_core::approval::GrantKind::SingleUse => "once",
        gatehouse_core::approval::GrantKind::Window => "window",
    };
    out.push_str(&format!(
        "  needs      {n} approval(s) from {groups}; grants {grant} for {valid}\n",
        n = r.requirement.approvals,
        groups = r.requirement.approvers.join(", "),
        valid = format_duration(r.grant_seconds),
    ));
    if let Some(hash) = r.target.hash() {
        out.push_str(&format!("  hash       {hash}\n"));
    }
    out.push_str(&format!("  time left  {}\n", time_left(r, now)));
    for review in &r.reviews {
        out.push_str(&format!(
            "  {verdict:<9}  by {by}{forced}{reason}\n",
            verdict = match review.verdict {
                gatehouse_core::approval::Verdict::Approve => "approved",
                gatehouse_core::approval::Verdict::Deny => "denied",
            },
            by = review.by.subject,
            forced = if review.forced { " (break-glass)" } else { "" },
            reason = review
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
        ));
    }
    out
}

/// What `approve` / `deny` print.
fn outcome(r: &ApprovalRequest) -> String {
    use gatehouse_core::approval::State;
    match r.state {
        State::Approved if r.forced => format!(
            "{}: approved by break-glass (flagged as forced; the approvers are notified)",
            r.id
        ),
        State::Approved => format!(
            "{}: approved; {} may now run it ({})",
            r.id,
            r.requester.subject,
            format_duration(r.grant_seconds)
        ),
        State::Pending => format!(
            "{}: approval recorded, {} of {} so far",
            r.id,
            r.approvals(),
            r.requirement.approvals
        ),
        State::Denied => format!("{}: denied", r.id),
        State::Expired => format!("{}: withdrawn", r.id),
        other => format!("{}: {}", r.id, other.as_str()),
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use gatehouse_core::approval::{
        ApprovalRequirement, Holding, NewRequest, Principal, Target, Verdict,
    };

    fn sample() -> ApprovalRequest {
        ApprovalRequest::new(
            "apr-cli1".into(),
            NewRequest {
                id: None,
                rule: "customer-writes".into(),
                requirement: ApprovalRequirement::from_value(
                    json!({"approvers": ["dba"], "approvals": 2, "pending": "1h"}),
                    Holding::NotPossible,
                )
                .unwrap(),
                reason: Some("ticket 42".into()),
                target: Target::Scope {
                    name: "customer-writes".into(),
                },
                grant_seconds: None,
            },
            Principal {
                subject: "developer".into(),
                groups: vec!["developers".into()],
            },
            1000,
        )
        .unwrap()
    }

    #[test]
    fn the_table_lines_up_and_counts_approvals() {
        let mut r = sample();
        r.review(
            &Principal {
                subject: "dba".into(),
                groups: vec!["dba".into()],
            },
            Verdict::Approve,
            None,
            1000,
        )
        .unwrap();
        let text = table(&[r], 1600);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID        STATE"), "{text}");
        assert!(lines[1].contains("pending 1/2"), "{text}");
        assert!(lines[1].contains("50m"), "{text}");
        assert_eq!(table(&[], 0), "no requests\n");
    }

    #[test]
    fn show_names_reason_requirement_and_reviews() {
        let mut r = sample();
        r.review(
            &Principal {
                subject: "dana".into(),
                groups: vec!["dba".into()],
            },
            Verdict::Deny,
            Some("no ticket".into()),
            1001,
        )
        .unwrap();
        let text = details(&r, 1002);
        assert!(text.contains("reason     ticket 42"), "{text}");
        assert!(text.contains("needs      2 approval(s) from dba"), "{text}");
        assert!(text.contains("denied     by dana: no ticket"), "{text}");
        assert_eq!(outcome(&r), "apr-cli1: denied");
    }
}
