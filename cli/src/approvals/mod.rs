//! Approvals from the command line, against the approval service:
//!
//! ```text
//! gatehouse approvals list [--json] [--state pending|approved|denied|expired|used|all]
//! gatehouse approvals show ID [--json]
//! gatehouse approve ID [--reason TEXT]
//! gatehouse deny ID --reason TEXT
//! gatehouse request --scope NAME --for 30m --reason TEXT
//! gatehouse reason TEXT [--for 1h]
//! ```
//!
//! Every command takes the caller's token from `--token` or `GATEHOUSE_TOKEN`
//! and the service from `--server` or `GATEHOUSE_APPROVALS_URL`. Exit codes: 0
//! done, 1 the service refused (the reason is printed), 2 usage error.

mod http;

use crate::args::Args;
use gatehouse_core::approval::{ApprovalRequest, format_duration, parse_duration};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage:
  gatehouse approvals list [--json] [--state pending|approved|denied|expired|used|all]
  gatehouse approvals show ID [--json]
  gatehouse approve ID [--reason TEXT]
  gatehouse deny ID --reason TEXT
  gatehouse request --scope NAME --for DURATION --reason TEXT
  gatehouse reason TEXT [--for DURATION]   (default 1h: requests filed for you
                                            meanwhile carry it, kubectl's too)

Each takes --token TOKEN (or GATEHOUSE_TOKEN) and --server http://HOST:PORT
(or GATEHOUSE_APPROVALS_URL). A requester cannot approve their own request;
members of a break-glass group can, with --reason, and the approval is flagged.";

/// Options every command accepts.
const COMMON: &[&str] = &["--token", "--server", "--timeout"];

/// `gatehouse approvals list|show …`.
pub fn run_approvals(args: &[String]) -> ExitCode {
    match args.split_first() {
        Some((cmd, rest)) if cmd == "list" => run(rest, &["--json"], &["--state"], list),
        Some((cmd, rest)) if cmd == "show" => run(rest, &["--json"], &[], show),
        Some((cmd, _)) if cmd == "--help" || cmd == "-h" => help(),
        _ => usage("expected list or show"),
    }
}

/// `gatehouse approve ID [--reason …]`.
pub fn run_approve(args: &[String]) -> ExitCode {
    run(args, &[], &["--reason"], |ctx| review(ctx, "approve"))
}

/// `gatehouse deny ID --reason …`.
pub fn run_deny(args: &[String]) -> ExitCode {
    run(args, &[], &["--reason"], |ctx| review(ctx, "deny"))
}

/// `gatehouse reason TEXT [--for 1h]`.
pub fn run_reason(args: &[String]) -> ExitCode {
    run(args, &[], &["--for"], reason)
}

/// `gatehouse request --scope NAME --for 30m --reason …`.
pub fn run_request(args: &[String]) -> ExitCode {
    run(args, &[], &["--scope", "--for", "--reason"], request)
}

/// What a command runs with.
struct Context {
    args: Args,
    server: String,
    token: String,
    timeout: Duration,
}

/// How a command ends.
enum Failure {
    /// Bad arguments: exit 2 with the usage.
    Usage(String),
    /// The service refused or could not be reached: exit 1.
    Refused(String),
}

fn run(
    args: &[String],
    flags: &[&str],
    options: &[&str],
    command: impl FnOnce(&Context) -> Result<(), Failure>,
) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return help();
    }
    let options: Vec<&str> = options.iter().chain(COMMON).copied().collect();
    let context = Args::parse(args, flags, &options)
        .map_err(Failure::Usage)
        .and_then(context);
    match context.and_then(|ctx| command(&ctx)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => usage(&message),
        Err(Failure::Refused(message)) => {
            eprintln!("gatehouse: {message}");
            ExitCode::from(1)
        }
    }
}

fn context(args: Args) -> Result<Context, Failure> {
    let from = |option: &str, variable: &str| {
        args.option(option)
            .map(str::to_owned)
            .or_else(|| std::env::var(variable).ok())
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| Failure::Usage(format!("give {option} or set {variable}")))
    };
    let server = from("--server", "GATEHOUSE_APPROVALS_URL")?;
    let token = from("--token", "GATEHOUSE_TOKEN")?;
    let timeout = match args.option("--timeout").map(str::parse::<u64>) {
        None => Duration::from_secs(10),
        Some(Ok(seconds)) if seconds > 0 => Duration::from_secs(seconds),
        Some(_) => return Err(Failure::Usage("--timeout needs whole seconds".into())),
    };
    Ok(Context {
        args,
        server,
        token,
        timeout,
    })
}

impl Context {
    /// Calls the service; a non-2xx answer becomes its error message.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let answer = http::call(&self.server, &self.token, method, path, body, self.timeout)
            .map_err(|e| Failure::Refused(e.to_string()))?;
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        let reason = answer
            .body
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(
                || format!("the service answered {}", answer.status),
                str::to_owned,
            );
        Err(Failure::Refused(reason))
    }

    /// The single positional argument: a request id.
    fn id(&self) -> Result<&str, Failure> {
        match self.args.positional.as_slice() {
            [id] if gatehouse_core::approval::request::valid_id(id) => Ok(id),
            [id] => Err(Failure::Usage(format!(
                "{id:?} is not a request id (apr-…)"
            ))),
            _ => Err(Failure::Usage("expected one request id".into())),
        }
    }

    fn no_positional(&self) -> Result<(), Failure> {
        match self.args.positional.first() {
            Some(extra) => Err(Failure::Usage(format!("unexpected argument {extra:?}"))),
            None => Ok(()),
        }
    }
}

fn list(ctx: &Context) -> Result<(), Failure> {
    ctx.no_positional()?;
    let state = ctx.args.option("--state").unwrap_or("pending");
    let answer = ctx.call("GET", &format!("/v1/requests?state={state}"), None)?;
    if ctx.args.flag("--json") {
        println!("{}", answer.get("requests").unwrap_or(&Value::Null));
        return Ok(());
    }
    let requests: Vec<ApprovalRequest> =
        serde_json::from_value(answer.get("requests").cloned().unwrap_or_default())
            .map_err(|e| Failure::Refused(format!("unexpected answer: {e}")))?;
    print!("{}", table(&requests, now()));
    Ok(())
}

fn show(ctx: &Context) -> Result<(), Failure> {
    let id = ctx.id()?;
    let answer = ctx.call("GET", &format!("/v1/requests/{id}"), None)?;
    if ctx.args.flag("--json") {
        println!("{answer}");
        return Ok(());
    }
    let request: ApprovalRequest = serde_json::from_value(answer)
        .map_err(|e| Failure::Refused(format!("unexpected answer: {e}")))?;
    print!("{}", details(&request, now()));
    Ok(())
}

fn review(ctx: &Context, verdict: &str) -> Result<(), Failure> {
    let id = ctx.id()?;
    let reason = ctx.args.option("--reason");
    if verdict == "deny" && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(Failure::Usage("deny needs --reason".into()));
    }
    let body = json!({ "reason": reason });
    let answer = ctx.call("POST", &format!("/v1/requests/{id}/{verdict}"), Some(&body))?;
    let request: ApprovalRequest = serde_json::from_value(answer)
        .map_err(|e| Failure::Refused(format!("unexpected answer: {e}")))?;
    println!("{}", outcome(&request));
    Ok(())
}

fn request(ctx: &Context) -> Result<(), Failure> {
    ctx.no_positional()?;
    let scope = ctx
        .args
        .option("--scope")
        .ok_or_else(|| Failure::Usage("request needs --scope NAME".into()))?;
    let seconds = match ctx.args.option("--for") {
        Some(text) => parse_duration(text).map_err(|e| Failure::Usage(format!("--for: {e}")))?,
        None => {
            return Err(Failure::Usage(
                "request needs --for DURATION (e.g. 30m)".into(),
            ));
        }
    };
    let body = json!({
        "scope": scope,
        "grant_seconds": seconds,
        "reason": ctx.args.option("--reason"),
    });
    let answer = ctx.call("POST", "/v1/requests", Some(&body))?;
    let id = answer.get("id").and_then(Value::as_str).unwrap_or_default();
    println!(
        "{id}: asked for a {} window on {scope}; an approver runs: gatehouse approve {id}",
        format_duration(seconds)
    );
    Ok(())
}

fn reason(ctx: &Context) -> Result<(), Failure> {
    let text = match ctx.args.positional.as_slice() {
        [text] if !text.trim().is_empty() => text,
        _ => return Err(Failure::Usage("expected one reason (quote it)".into())),
    };
    let seconds = match ctx.args.option("--for") {
        Some(text) => parse_duration(text).map_err(|e| Failure::Usage(format!("--for: {e}")))?,
        None => 3600,
    };
    let body = json!({ "reason": text, "seconds": seconds });
    ctx.call("POST", "/v1/reasons", Some(&body))?;
    println!(
        "for the next {}, requests filed for you carry this reason",
        format_duration(seconds)
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
        other => format!("{}: {}", r.id, other.as_str()),
    }
}

fn help() -> ExitCode {
    println!("{USAGE}");
    ExitCode::SUCCESS
}

fn usage(error: &str) -> ExitCode {
    eprintln!("gatehouse: {error}\n\n{USAGE}");
    ExitCode::from(2)
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
