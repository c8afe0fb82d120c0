//! Hold and release through real Envoy, the real approval service and real
//! kubectl: the demo policy's `prod-exec-needs-admin` rule (a platform admin
//! approves a developer's exec in prod), with its hold shortened.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::approvals::filter_section;
use gatehouse_integration::stack::{ApprovalOptions, default_kubernetes_filter_config};
use gatehouse_integration::{Stack, StackOptions, tools};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long the test policy holds a request.
const HOLD: &str = "8s";

fn start() -> Stack {
    // Built before anything is held: a build while a request waits would eat the hold.
    cli_binary();
    let mut config = default_kubernetes_filter_config();
    config["approvals"] = filter_section(200);
    for rule in config["rules"].as_array_mut().unwrap() {
        if rule["name"] == "prod-exec-needs-admin" {
            rule["approval"]["hold"] = HOLD.into();
        }
    }
    let opts = StackOptions {
        kubernetes_filter: config,
        approvals: Some(ApprovalOptions {
            replicas: 1,
            webhook: None,
        }),
        ..StackOptions::default()
    };
    Stack::start("it", "k8s-approvals", opts).unwrap()
}

fn exec_in_prod(stack: &Stack) -> Output {
    stack
        .kubectl(
            "1.33",
            &[
                "--context",
                "developer",
                "exec",
                "web-0",
                "-n",
                "prod",
                "--",
                "echo",
                "released",
            ],
        )
        .unwrap()
}

fn cli_binary() -> &'static std::path::Path {
    static CLI: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    CLI.get_or_init(|| tools::gatehouse_cli().unwrap())
}

fn cli(stack: &Stack, identity: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(cli_binary())
        .args(args)
        .env(
            "GATEHOUSE_APPROVALS_URL",
            stack.approvals.as_ref().unwrap().url(0),
        )
        .env("GATEHOUSE_TOKEN", stack.token(identity).unwrap())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The id of the pending request for the developer's exec, once filed.
fn pending_exec(stack: &Stack, not: &[String]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stdout, _) = cli(stack, "admin", &["approvals", "list", "--json"]);
        let requests: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        let found = requests.as_array().into_iter().flatten().find(|r| {
            r["rule"] == "prod-exec-needs-admin" && !not.iter().any(|id| r["id"] == id.as_str())
        });
        if let Some(request) = found {
            return request["id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no pending exec request: {stdout}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_held_kubectl_exec_is_released_by_an_approval_and_refused_otherwise() {
    let stack = start();

    // Approved during the hold: the same kubectl command completes.
    let (out, id) = std::thread::scope(|s| {
        let run = s.spawn(|| exec_in_prod(&stack));
        let id = pending_exec(&stack, &[]);
        // Other requests go on meanwhile.
        let pods = stack
            .kubectl(
                "1.33",
                &["--context", "developer", "get", "pods", "-n", "dev"],
            )
            .unwrap();
        assert!(pods.status.success(), "{}", stderr(&pods));
        let (code, _, err) = cli(&stack, "admin", &["approve", &id, "--reason", "looked"]);
        assert_eq!(code, 0, "{err}");
        (run.join().unwrap(), id)
    });
    assert!(out.status.success(), "held exec failed: {}", stderr(&out));
    // The stand-in ran the command: its output came back through Envoy.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "released\n");
    let released = stack
        .wait_for_record("the released exec", |r| {
            r["kind"] == "Event" && r["annotations"]["gatehouse.dev/approval"] == id.as_str()
        })
        .unwrap();
    assert_eq!(released["annotations"]["gatehouse.dev/approvers"], "admin");
    assert_eq!(
        released["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );

    // Single use: the next exec is held again, and refused when the hold ends.
    let started = Instant::now();
    let refused = exec_in_prod(&stack);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    let second = pending_exec(&stack, std::slice::from_ref(&id));
    assert!(
        message.contains("Forbidden")
            && message.contains(&second)
            && message.contains("still waiting for approval"),
        "{message}"
    );
    assert!(started.elapsed() >= Duration::from_secs(7), "not held");
    // A retry after approval passes at once.
    let (code, _, err) = cli(&stack, "admin", &["approve", &second]);
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(Duration::from_millis(800));
    let retry = exec_in_prod(&stack);
    assert!(
        retry.status.success(),
        "retry after approval failed: {}",
        stderr(&retry)
    );

    // Denied during the hold: a 403 naming the request and the denial. The
    // reason comes from `gatehouse reason`, which works with plain kubectl.
    let (code, _, err) = cli(
        &stack,
        "developer",
        &["reason", "INC-9: a stuck worker", "--for", "10m"],
    );
    assert_eq!(code, 0, "{err}");
    let (out, third) = std::thread::scope(|s| {
        let run = s.spawn(|| exec_in_prod(&stack));
        let id = pending_exec(&stack, &[id.clone(), second.clone()]);
        let (_, shown, _) = cli(&stack, "admin", &["approvals", "show", &id, "--json"]);
        let shown: Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(shown["reason"], "INC-9: a stuck worker");
        let (code, _, err) = cli(
            &stack,
            "admin",
            &["deny", &id, "--reason", "not during the freeze"],
        );
        assert_eq!(code, 0, "{err}");
        (run.join().unwrap(), id)
    });
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains(&format!(
            "approval request {third} was denied by admin: not during the freeze"
        )),
        "{message}"
    );
    let seen = stack.upstream_requests();
    let prod_execs = seen
        .iter()
        .filter(|r| r.uri.contains("/namespaces/prod/pods/web-0/exec"))
        .count();
    assert_eq!(
        prod_execs, 2,
        "only the two approved execs reached the API server"
    );
}
