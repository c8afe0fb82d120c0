//! Deny and retry through real Envoy, the real approval service and real
//! PostgreSQL, with psql, JDBC and the gatehouse CLI: the demo policy's
//! `customer-writes` rule (a DBA approves developers' UPDATE and DELETE of
//! customer rows, once).
//!
//! One stack (two service replicas, a webhook receiver) for every case of
//! deny and retry; another, whose rule has a `hold`, for holding (the native
//! build holds, the Wasm build refuses at once as without one).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_core::approval::grant::statement_hash;
use gatehouse_integration::approvals::{WebhookReceiver, filter_section};
use gatehouse_integration::rawpg::{self, RawPg};
use gatehouse_integration::stack::{ApprovalOptions, demo_postgres_filter_config};
use gatehouse_integration::tools::Build;
use gatehouse_integration::{Stack, StackOptions, clients, tools};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const REFUSAL: &str = "gatehouse: changing customer rows needs a DBA's approval";

fn start() -> (Stack, WebhookReceiver) {
    let webhook = WebhookReceiver::start(0).unwrap();
    let mut filter = demo_postgres_filter_config();
    filter["approvals"] = filter_section(200);
    let opts = StackOptions {
        postgres_filter: filter,
        approvals: Some(ApprovalOptions {
            replicas: 2,
            webhook: Some(webhook.url()),
        }),
        ..StackOptions::default()
    };
    (Stack::start("it", "pg-approvals", opts).unwrap(), webhook)
}

/// psql through the Envoy listener on `port` as `identity` (role app).
fn psql(stack: &Stack, port: u16, identity: &str, sql: &str) -> Output {
    Command::new(tools::pg_client("psql").unwrap())
        .args(["-X", "-w", "-At", "-d"])
        .arg(format!(
            "postgresql://127.0.0.1:{port}/shop?user=app&sslmode=disable"
        ))
        .args(["-c", sql])
        .env("PGPASSWORD", stack.token(identity).unwrap())
        .output()
        .unwrap()
}

/// The request id in a refusal's HINT.
fn request_id(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with("HINT:"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("apr-")))
        .unwrap_or_else(|| panic!("no request id in: {stderr}"))
        .to_owned()
}

/// `gatehouse …` as `identity` against service replica `replica`.
fn cli(stack: &Stack, replica: usize, identity: &str, args: &[&str]) -> (i32, String, String) {
    let service = stack.approvals.as_ref().unwrap();
    static CLI: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let binary = CLI.get_or_init(|| tools::gatehouse_cli().unwrap());
    let out = Command::new(binary)
        .args(args)
        .env("GATEHOUSE_APPROVALS_URL", service.url(replica))
        .env("GATEHOUSE_TOKEN", stack.token(identity).unwrap())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The request as the service has it, once filed (filing is asynchronous).
fn filed(stack: &Stack, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, stdout, _) = cli(stack, 0, "dba", &["approvals", "show", id, "--json"]);
        if code == 0 {
            return serde_json::from_str(&stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "request {id} never reached the service"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Approves as dba and waits until the filters have read the grant.
fn approve(stack: &Stack, id: &str) {
    filed(stack, id);
    let (code, stdout, stderr) = cli(stack, 1, "dba", &["approve", id, "--reason", "checked"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Grants are read every 200 ms.
    std::thread::sleep(Duration::from_millis(800));
}

/// Statements of the demo database's sessions in the server's log that
/// contain `needle` (the approval service's own queries, which carry the
/// statement text as a parameter, are in another database).
fn server_log_count(stack: &Stack, needle: &str) -> usize {
    std::fs::read_to_string(stack.postgres.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("@shop ") && line.contains(needle))
        .count()
}

#[test]
fn deny_and_retry_through_envoy_and_the_approval_service() {
    let (mut stack, webhook) = start();
    let port = stack.pg_port;

    // psql: refused at once with the rule's message and the request named.
    let sql = "UPDATE customers SET email = 'approved@example.com' WHERE id = 1";
    let out = psql(&stack, port, "developer", sql);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains(&format!("ERROR:  {REFUSAL}")),
        "{stderr}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let id = request_id(&stderr);
    assert!(
        stderr.contains(&format!("gatehouse approve {id}")),
        "{stderr}"
    );
    assert_eq!(server_log_count(&stack, "approved@example.com"), 0);
    let request = filed(&stack, &id);
    assert_eq!(request["requester"]["subject"], "developer");
    assert_eq!(request["target"]["database"], "shop");
    assert_eq!(request["target"]["role"], "app");
    assert!(
        request["target"]["statement_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    webhook.wait_for(&format!("{id}: developer asks")).unwrap();

    // Retrying before approval names the same request. The retry may land
    // on another Envoy worker, which knows of the request from the
    // service's next publication (read every 200 ms).
    std::thread::sleep(Duration::from_millis(800));
    let again = psql(&stack, port, "developer", sql);
    assert_eq!(request_id(&String::from_utf8_lossy(&again.stderr)), id);

    // The requester cannot approve their own request.
    let (code, _, stderr) = cli(
        &stack,
        0,
        "developer",
        &["approve", &id, "--reason", "mine"],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("own request"), "{stderr}");

    // A dba approves (on the other replica); a service restart loses nothing.
    approve(&stack, &id);
    stack.approvals.as_mut().unwrap().restart(0).unwrap();
    let out = psql(&stack, port, "developer", sql);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "UPDATE 1",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server_log_count(&stack, "approved@example.com"), 1);
    // A third run needs a new approval.
    let third = psql(&stack, port, "developer", sql);
    let third_id = request_id(&String::from_utf8_lossy(&third.stderr));
    assert_ne!(third_id, id);
    assert_eq!(server_log_count(&stack, "approved@example.com"), 1);

    // The statement's record names the approval and its approver.
    let record = stack
        .wait_for_record("the approved statement", |r| {
            r["type"] == "pg.statement" && r["approval"]["id"] == id.as_str()
        })
        .unwrap();
    assert_eq!(record["approval"]["approvers"][0], "dba");
    assert_eq!(record["command_tag"], "UPDATE 1");
    // The service's records reach the same access log.
    for kind in ["approval.requested", "approval.approved", "approval.used"] {
        stack
            .wait_for_record(kind, |r| {
                r["type"] == kind && r["request_id"] == id.as_str()
            })
            .unwrap();
    }

    // A denial: the next run files a new request.
    let (code, _, stderr) = cli(
        &stack,
        0,
        "dba",
        &["deny", &third_id, "--reason", "no ticket"],
    );
    assert_eq!(code, 0, "{stderr}");
    std::thread::sleep(Duration::from_millis(800));
    let after_denial = psql(&stack, port, "developer", sql);
    assert_ne!(
        request_id(&String::from_utf8_lossy(&after_denial.stderr)),
        third_id
    );

    // JDBC, with parameters: refused, approved, passes once, refused again.
    let url = format!("jdbc:postgresql://127.0.0.1:{port}/shop?sslmode=disable");
    let token = stack.token("developer").unwrap();
    let jdbc = |stack: &Stack| {
        let out = clients::jdbc(stack, "ApprovalCheck", JDBC_PROGRAM, &[&url, &token]);
        out.lines().next().unwrap_or_default().trim().to_owned()
    };
    let first = jdbc(&stack);
    let jdbc_id = first
        .strip_prefix("refused 42501 ")
        .unwrap_or_else(|| panic!("{first}"));
    let jdbc_id = request_id(&format!("HINT: {jdbc_id}"));
    approve(&stack, &jdbc_id);
    assert_eq!(jdbc(&stack), "ok 1");
    assert!(jdbc(&stack).starts_with("refused 42501"), "single use");

    // Two Envoy processes, each calling its own service replica, race to use
    // one single-use grant: the statement runs once.
    let race = "UPDATE customers SET email = 'raced@example.com' WHERE id = 2";
    let (_second_envoy, second_port) = stack.another_envoy("envoy-b", 1).unwrap();
    let refused = psql(&stack, port, "developer", race);
    let race_id = request_id(&String::from_utf8_lossy(&refused.stderr));
    approve(&stack, &race_id);
    let outcomes: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = [port, second_port]
            .into_iter()
            .map(|p| {
                let stack = &stack;
                s.spawn(move || {
                    String::from_utf8_lossy(&psql(stack, p, "developer", race).stdout).into_owned()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(
        outcomes.iter().filter(|o| o.trim() == "UPDATE 1").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(server_log_count(&stack, "raced@example.com"), 1);

    retries_on_every_worker_name_one_request(&stack, port);
    a_statement_the_server_keeps_still_needs_approval(&stack, port);
    a_prepare_of_a_statement_needing_approval_is_refused(&stack, port);
    an_execute_cannot_run_a_parsed_statement_needing_approval(&stack, port);
    requests_behind_a_refused_denial_bind_are_skipped(&stack, port);
    a_denial_leaves_masking_in_force(&stack, port);
    // Last: it leaves the developer at the limit of pending requests.
    a_requester_at_the_limit_files_nothing_more(&stack, port);
}

/// A requester at the service's limit of pending requests (20 by default)
/// is refused at once, told what to do, and nothing more is filed: a client
/// filing in a loop cannot grow the publication every filter polls.
/// Withdrawing a request makes room.
fn a_requester_at_the_limit_files_nothing_more(stack: &Stack, port: u16) {
    let pending = || -> Vec<String> {
        let (code, stdout, stderr) = cli(
            stack,
            0,
            "dba",
            &["approvals", "list", "--json", "--state", "pending"],
        );
        assert_eq!(code, 0, "{stderr}");
        let listed: Value = serde_json::from_str(&stdout).unwrap();
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["requester"]["subject"] == "developer")
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let already = pending().len();
    assert!(already < 20, "{already} pending before the case");
    for n in already..20 {
        let sql = format!("DELETE FROM customers WHERE id = {}", 1000 + n);
        let out = psql(stack, port, "developer", &sql);
        request_id(&String::from_utf8_lossy(&out.stderr));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending().len() < 20 {
        assert!(
            Instant::now() < deadline,
            "the filings never reached the service"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The filters read the grants every 200 ms.
    std::thread::sleep(Duration::from_millis(800));
    let beyond = "DELETE FROM customers WHERE id = 2000";
    let out = psql(stack, port, "developer", beyond);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("ERROR:  {REFUSAL}"))
            && stderr.contains("HINT:  you have 20 approval requests pending")
            && stderr.contains("gatehouse withdraw ID"),
        "{stderr}"
    );
    assert_eq!(pending().len(), 20, "filed beyond the limit");
    let oldest = pending().pop().unwrap();
    let (code, stdout, stderr) = cli(stack, 0, "developer", &["withdraw", &oldest]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), format!("{oldest}: withdrawn"));
    std::thread::sleep(Duration::from_millis(800));
    let out = psql(stack, port, "developer", beyond);
    request_id(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(server_log_count(stack, "id = 2000"), 0);
}

/// Runs of one statement needing approval, at the same moment on both of
/// Envoy's workers, before any publication of the service: one request is
/// filed, and every refusal names it. Each worker's notes of what it filed
/// are shared with the other at once, and a filing is claimed atomically.
fn retries_on_every_worker_name_one_request(stack: &Stack, port: u16) {
    let sql = "DELETE FROM customers WHERE id = 3";
    let before = stack.envoy.connections_per_worker("postgres").unwrap();
    let mut ids = Vec::new();
    // Until both workers have taken part (the kernel spreads connections
    // over the workers' sockets; a round can land on one alone).
    for _round in 0..5 {
        let stderrs: Vec<String> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..6)
                .map(|_| {
                    s.spawn(move || {
                        String::from_utf8_lossy(&psql(stack, port, "developer", sql).stderr)
                            .into_owned()
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        ids.extend(stderrs.iter().map(|stderr| request_id(stderr)));
        let after = stack.envoy.connections_per_worker("postgres").unwrap();
        let busy = after
            .iter()
            .filter(|(worker, n)| before.get(*worker).is_none_or(|b| b < *n))
            .count();
        if busy >= 2 {
            break;
        }
    }
    let after = stack.envoy.connections_per_worker("postgres").unwrap();
    assert!(
        after
            .iter()
            .filter(|(worker, n)| before.get(*worker).is_none_or(|b| b < *n))
            .count()
            >= 2,
        "the runs never reached both workers: {before:?} → {after:?}"
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "more than one request filed: {ids:?}");
    let request = filed(stack, &ids[0]);
    assert_eq!(request["requester"]["subject"], "developer");
    assert_eq!(server_log_count(stack, "id = 3"), 0);
}

/// A raw-wire session as the developer (role app, database shop).
struct DeveloperWire(RawPg);

impl DeveloperWire {
    fn login(stack: &Stack, port: u16) -> DeveloperWire {
        let token = stack.token("developer").unwrap();
        let (raw, login) =
            RawPg::login(port, &[("user", "app"), ("database", "shop")], &token).unwrap();
        assert!(!login.closed, "{login:?}");
        DeveloperWire(raw)
    }

    /// Sends `bytes` and reads the answers through the next ReadyForQuery.
    fn exchange(&mut self, bytes: Vec<u8>) -> rawpg::Reply {
        self.exchange_until(bytes, 1)
    }

    /// Sends `bytes` and reads the answers through `readies` ReadyForQuerys.
    fn exchange_until(&mut self, bytes: Vec<u8>, readies: usize) -> rawpg::Reply {
        self.0.send(&bytes).unwrap();
        self.0
            .read_until_ready(readies, Duration::from_secs(10))
            .unwrap()
    }
}

/// An approval covers one run, so a PREPARE of a statement needing approval
/// is refused by the rule (nothing filed): no EXECUTE can run it later. The
/// session carries on.
fn a_prepare_of_a_statement_needing_approval_is_refused(stack: &Stack, port: u16) {
    let out = Command::new(tools::pg_client("psql").unwrap())
        .args(["-X", "-w", "-At", "-d"])
        .arg(format!(
            "postgresql://127.0.0.1:{port}/shop?user=app&sslmode=disable"
        ))
        .args([
            "-c",
            "PREPARE purge AS UPDATE customers SET email = 'prepared@example.com' WHERE id = 5",
            "-c",
            "EXECUTE purge",
            "-c",
            "SELECT 'still usable'",
        ])
        .env("PGPASSWORD", stack.token("developer").unwrap())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stderr.contains("ERROR:  gatehouse: statements that need approval cannot be prepared"),
        "{stderr}"
    );
    assert!(!stderr.contains("HINT"), "nothing filed: {stderr}");
    assert!(
        stderr.contains(r#"prepared statement "purge" does not exist"#),
        "{stderr}"
    );
    assert_eq!(stdout.trim(), "still usable", "{stderr}");
    assert_eq!(server_log_count(stack, "prepared@example.com"), 0);
    stack
        .wait_for_record("the refused PREPARE", |r| {
            r["type"] == "pg.statement"
                && r["decision"]["action"] == "deny"
                && r["decision"]["rule"] == "customer-writes"
                && r["statement"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("PREPARE purge"))
        })
        .unwrap();
}

/// SQL EXECUTE reaches statements prepared with Parse (the server runs an
/// allowed one; masking hides its unknown column), but not one needing
/// approval, whose Binds alone are checked; nor can a Parse hold an EXECUTE.
fn an_execute_cannot_run_a_parsed_statement_needing_approval(stack: &Stack, port: u16) {
    let mut wire = DeveloperWire::login(stack, port);
    let prepared = wire.exchange(
        [
            rawpg::parse("plain", b"SELECT 'shared namespace'::text"),
            rawpg::parse("gated", b"UPDATE customers SET email = $1 WHERE id = 6"),
            rawpg::sync(),
        ]
        .concat(),
    );
    assert!(prepared.errors().is_empty(), "{prepared:?}");
    let shared = wire.exchange(rawpg::query(b"EXECUTE plain"));
    assert!(
        shared
            .messages
            .iter()
            .any(|m| m.tag == b'C' && m.body.starts_with(b"SELECT 1")),
        "{shared:?}"
    );
    let refused = wire.exchange(rawpg::query(b"EXECUTE gated('executed@example.com')"));
    assert_eq!(refused.errors(), ["42501"], "{refused:?}");
    assert!(
        refused
            .error_message()
            .is_some_and(|m| m.contains("cannot be run with EXECUTE")),
        "{refused:?}"
    );
    let in_parse = wire.exchange(
        [
            rawpg::parse("e", b"EXECUTE gated('executed@example.com')"),
            rawpg::bind("", "e", &[]),
            rawpg::execute(""),
            rawpg::sync(),
        ]
        .concat(),
    );
    assert_eq!(in_parse.errors(), ["42501"], "{in_parse:?}");
    assert_eq!(server_log_count(stack, "executed@example.com"), 0);
}

/// The full demo configuration (policy and masking) with raw bytes: the
/// client takes the portal name the gateway binds to raise a denial at
/// Describe, so the gateway's own Bind is refused (42P03) and the server
/// skips the rest of the batch, a redefinition of `s` included. `s` still
/// reads the SSN, and its rows are masked.
fn requests_behind_a_refused_denial_bind_are_skipped(stack: &Stack, port: u16) {
    let mut wire = DeveloperWire::login(stack, port);
    let secret = b"SELECT replace(ssn, '-', 'x') AS v FROM customers WHERE id = 1";
    let prepared = wire.exchange([rawpg::parse("s", secret), rawpg::sync()].concat());
    assert!(prepared.errors().is_empty(), "{prepared:?}");
    let skipped = wire.exchange(
        [
            rawpg::bind("\u{1}gatehouse_denied", "s", &[]),
            rawpg::parse("d", b"DROP TABLE customers"),
            rawpg::describe(b'S', "d"),
            rawpg::close(b'S', "s"),
            rawpg::parse("s", b"SELECT 'plain'::text AS v"),
            rawpg::sync(),
        ]
        .concat(),
    );
    assert_eq!(skipped.errors(), ["42P03"], "{skipped:?}");
    let ran =
        wire.exchange([rawpg::bind("", "s", &[]), rawpg::execute(""), rawpg::sync()].concat());
    let row = ran
        .messages
        .iter()
        .find(|m| m.tag == b'D')
        .unwrap_or_else(|| panic!("{ran:?}"));
    assert!(
        !row.body.iter().any(u8::is_ascii_digit),
        "an SSN reached the client: {:?}",
        String::from_utf8_lossy(&row.body)
    );
}

/// The full demo configuration with raw bytes: denials, by Query and by
/// Parse (the server gets the gateway's raising block), leave what masking
/// knows of the session's other statements as it was. A statement computing
/// from the SSN still has its rows masked, and a harmless computed column
/// still passes as it came.
fn a_denial_leaves_masking_in_force(stack: &Stack, port: u16) {
    let mut wire = DeveloperWire::login(stack, port);
    let prepared = wire.exchange(
        [
            rawpg::parse(
                "secret",
                b"SELECT replace(ssn, '-', 'x') AS v FROM customers WHERE id = 1",
            ),
            rawpg::parse("plain", b"SELECT upper('plain-value') AS v"),
            rawpg::sync(),
        ]
        .concat(),
    );
    assert!(prepared.errors().is_empty(), "{prepared:?}");
    let denied = wire.exchange(rawpg::query(b"DROP TABLE customers"));
    assert_eq!(denied.errors(), ["42501"], "{denied:?}");
    // Each run behind a Parse the policy denies, which the server gets as
    // the gateway's raising block.
    let rows: Vec<String> = ["secret", "plain"]
        .into_iter()
        .map(|statement| {
            let ran = wire.exchange(
                [
                    rawpg::parse("d", b"DROP TABLE customers"),
                    rawpg::bind("", statement, &[]),
                    rawpg::execute(""),
                    rawpg::close(b'S', "d"),
                    rawpg::sync(),
                ]
                .concat(),
            );
            let row = ran
                .messages
                .iter()
                .find(|m| m.tag == b'D')
                .unwrap_or_else(|| panic!("{ran:?}"));
            String::from_utf8_lossy(&row.body).into_owned()
        })
        .collect();
    let [secret, plain] = &rows[..] else {
        panic!("{rows:?}");
    };
    assert!(
        !secret.chars().any(|c| c.is_ascii_digit()),
        "an SSN reached the client: {secret:?}"
    );
    assert!(plain.contains("PLAIN-VALUE"), "{plain:?}");
}

/// A redefinition of a prepared statement needing approval that the server
/// refuses (42P05: the name is in use) leaves that statement under the name:
/// its Binds are checked as before, whether written after the refusal or
/// pipelined behind the redefinition.
fn a_statement_the_server_keeps_still_needs_approval(stack: &Stack, port: u16) {
    let mut wire = DeveloperWire::login(stack, port);
    let update = b"UPDATE customers SET email = $1 WHERE id = 4";
    let prepared = wire.exchange_until([rawpg::parse("s1", update), rawpg::sync()].concat(), 1);
    assert!(prepared.errors().is_empty(), "{prepared:?}");
    let redefine = [rawpg::parse("s1", b"SELECT 1"), rawpg::sync()].concat();
    let run = |email: &'static [u8]| {
        [
            rawpg::bind("", "s1", &[Some(email)]),
            rawpg::execute(""),
            rawpg::sync(),
        ]
        .concat()
    };
    let updated = |reply: &rawpg::Reply| {
        reply
            .messages
            .iter()
            .any(|m| m.tag == b'C' && m.body.starts_with(b"UPDATE"))
    };
    assert_eq!(wire.exchange_until(redefine.clone(), 1).errors(), ["42P05"]);
    let after = wire.exchange_until(run(b"kept-after@example.com"), 1);
    assert!(!updated(&after), "ran without approval: {after:?}");
    assert_eq!(after.errors(), ["42501"], "{after:?}");
    let pipelined = wire.exchange_until([redefine, run(b"kept-pipelined@example.com")].concat(), 2);
    assert!(!updated(&pipelined), "ran without approval: {pipelined:?}");
    assert_eq!(pipelined.errors(), ["42P05", "42501"], "{pipelined:?}");
    assert_eq!(server_log_count(stack, "kept-"), 0);
}

/// How long the holding stack holds an UPDATE of customers: long enough for
/// a person (the CLI, on a busy machine) to decide within it; a decision
/// ends the hold at once.
const HOLD: Duration = Duration::from_secs(30);
/// How long it holds a DELETE of customers: the cases that wait it out.
const SHORT_HOLD: Duration = Duration::from_secs(2);

/// A stack whose `customer-writes` rule holds UPDATEs for [`HOLD`], and a
/// rule just before it DELETEs for [`SHORT_HOLD`].
fn start_holding() -> Stack {
    let mut filter = demo_postgres_filter_config();
    filter["approvals"] = filter_section(200);
    let rules = filter["policy"]["rules"].as_array_mut().unwrap();
    let at = rules
        .iter()
        .position(|r| r["name"] == "customer-writes")
        .unwrap();
    rules[at]["approval"]["hold"] = format!("{}s", HOLD.as_secs()).into();
    let mut deletes = rules[at].clone();
    deletes["name"] = "customer-deletes".into();
    deletes["match"]["kinds"] = serde_json::json!(["delete"]);
    deletes["approval"]["hold"] = format!("{}s", SHORT_HOLD.as_secs()).into();
    rules.insert(at, deletes);
    let opts = StackOptions {
        postgres_filter: filter,
        approvals: Some(ApprovalOptions {
            replicas: 1,
            webhook: None,
        }),
        ..StackOptions::default()
    };
    Stack::start("it", "pg-approvals-hold", opts).unwrap()
}

/// The id of the pending request for exactly `sql`, once the service has it
/// (the filter files it as the statement arrives; records, and so the
/// request, show its literals as parameters: it is found by its hash).
fn pending_request(stack: &Stack, sql: &str) -> String {
    let hash = statement_hash(sql.as_bytes(), &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stdout, _) = cli(
            stack,
            0,
            "dba",
            &["approvals", "list", "--json", "--state", "pending"],
        );
        let found = serde_json::from_str::<Value>(&stdout)
            .ok()
            .and_then(|requests| {
                requests.as_array()?.iter().find_map(|r| {
                    (r["target"]["statement_hash"] == hash.as_str())
                        .then(|| r["id"].as_str().map(str::to_owned))?
                })
            });
        if let Some(id) = found {
            return id;
        }
        assert!(Instant::now() < deadline, "no pending request for {sql}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The HINT of the at-once refusal (and of a hold that ends undecided).
fn pending_hint(id: &str) -> String {
    format!(
        "HINT:  approval request {id} is pending; once approved, run the same statement \
         again. An approver runs: gatehouse approve {id}"
    )
}

/// psql as developer running `sqls`, each its own Query, on one session.
fn psql_session(stack: &Stack, sqls: &[&str]) -> (String, String) {
    let mut command = Command::new(tools::pg_client("psql").unwrap());
    command.args(["-X", "-w", "-At", "-d"]).arg(format!(
        "postgresql://127.0.0.1:{}/shop?user=app&sslmode=disable",
        stack.pg_port
    ));
    for sql in sqls {
        command.args(["-c", sql]);
    }
    let out = command
        .env("PGPASSWORD", stack.token("developer").unwrap())
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_statement_needing_approval_is_held_until_decided_on_the_native_build() {
    let stack = start_holding();
    if stack.build == Build::Wasm {
        // proxy-wasm cannot answer a held statement later: the `hold` changes
        // nothing, the refusal comes at once.
        let (_, stderr) = psql_session(
            &stack,
            &["UPDATE customers SET email = 'wasm@example.com' WHERE id = 4"],
        );
        let id = request_id(&stderr);
        assert!(stderr.contains(&pending_hint(&id)), "{stderr}");
        assert_eq!(filed(&stack, &id)["state"], "pending");
        assert_eq!(server_log_count(&stack, "wasm@example.com"), 0);
        return;
    }
    let update = |marker: &str| format!("UPDATE customers SET email = '{marker}' WHERE id = 4");
    let delete = |marker: &str| format!("DELETE FROM customers WHERE email = '{marker}'");

    // Approved during the hold: the statement's result arrives, on its
    // approval, the grant used up for it.
    let sql = update("held-approved@example.com");
    let (stdout, stderr) = std::thread::scope(|s| {
        let run = s.spawn(|| psql_session(&stack, &[&sql]));
        let id = pending_request(&stack, &sql);
        let (code, out, err) = cli(&stack, 0, "dba", &["approve", &id, "--reason", "ok"]);
        assert_eq!(code, 0, "{out}{err}");
        run.join().unwrap()
    });
    assert_eq!(stdout.trim(), "UPDATE 1", "{stderr}");
    assert_eq!(server_log_count(&stack, "held-approved@example.com"), 1);
    let record = stack
        .wait_for_record("the held statement that ran", |r| {
            r["type"] == "pg.statement"
                && r["command_tag"] == "UPDATE 1"
                && r["approval"]["approvers"][0] == "dba"
        })
        .unwrap();
    let id = record["approval"]["id"].as_str().unwrap().to_owned();
    assert_eq!(filed(&stack, &id)["state"], "used");

    // Denied during the hold: the rule's 42501 naming the request, and the
    // session goes on.
    let sql = update("held-denied@example.com");
    let (stdout, stderr) = std::thread::scope(|s| {
        let run = s.spawn(|| psql_session(&stack, &[&sql, "SELECT 'after the denial'"]));
        let id = pending_request(&stack, &sql);
        let (code, out, err) = cli(&stack, 0, "dba", &["deny", &id, "--reason", "no ticket"]);
        assert_eq!(code, 0, "{out}{err}");
        run.join().unwrap()
    });
    let id = request_id(&stderr);
    assert!(stderr.contains(&format!("ERROR:  {REFUSAL}")), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "HINT:  approval request {id} was denied by dba: no ticket"
        )),
        "{stderr}"
    );
    assert_eq!(stdout.trim(), "after the denial", "{stderr}");
    assert_eq!(server_log_count(&stack, "held-denied@example.com"), 0);

    // Undecided when the hold ends: exactly the at-once refusal; the
    // request stays pending, and the session goes on.
    let (stdout, stderr) = psql_session(
        &stack,
        &[
            &delete("held-timeout@example.com"),
            "SELECT 'after the hold'",
        ],
    );
    let id = request_id(&stderr);
    assert!(stderr.contains(&format!("ERROR:  {REFUSAL}")), "{stderr}");
    assert!(stderr.contains(&pending_hint(&id)), "{stderr}");
    assert_eq!(stdout.trim(), "after the hold");
    assert_eq!(filed(&stack, &id)["state"], "pending");
    assert_eq!(server_log_count(&stack, "held-timeout@example.com"), 0);

    // Pipelined: a statement sent right behind the held one, in the same
    // write, is answered after it, in order.
    let token = stack.token("developer").unwrap();
    let params = [("user", "app"), ("database", "shop")];
    let (mut raw, _) = RawPg::login(stack.pg_port, &params, &token).unwrap();
    let sql = update("held-pipelined@example.com");
    raw.send(
        &[
            rawpg::query(sql.as_bytes()),
            rawpg::query(b"SELECT 'behind the held one'"),
        ]
        .concat(),
    )
    .unwrap();
    let id = pending_request(&stack, &sql);
    let (code, out, err) = cli(&stack, 0, "dba", &["approve", &id]);
    assert_eq!(code, 0, "{out}{err}");
    let reply = raw.read_until_ready(2, Duration::from_secs(10)).unwrap();
    let tags: Vec<char> = reply.messages.iter().map(|m| char::from(m.tag)).collect();
    assert_eq!(tags, ['C', 'Z', 'T', 'D', 'C', 'Z'], "{reply:?}");
    assert!(reply.messages[0].body.starts_with(b"UPDATE 1"));
    assert!(reply.messages[3].body.ends_with(b"behind the held one"));
    drop(raw);

    // The client leaving during the hold: nothing runs (not even once the
    // hold would have ended), the request stays filed, and the session's
    // gauge comes back down.
    let (mut raw, _) = RawPg::login(stack.pg_port, &params, &token).unwrap();
    let sql = delete("held-left@example.com");
    raw.send(&rawpg::query(sql.as_bytes())).unwrap();
    let id = pending_request(&stack, &sql);
    drop(raw);
    std::thread::sleep(SHORT_HOLD + Duration::from_secs(1));
    assert_eq!(server_log_count(&stack, "held-left@example.com"), 0);
    assert_eq!(filed(&stack, &id)["state"], "pending");
    let deadline = Instant::now() + Duration::from_secs(5);
    while stack.pg_stat("gatehouse_pg_sessions_active").unwrap() != Some(0) {
        assert!(Instant::now() < deadline, "a session is still counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (stdout, stderr) = psql_session(&stack, &["SELECT 'still serving'"]);
    assert_eq!(stdout.trim(), "still serving", "{stderr}");
}

const JDBC_PROGRAM: &str = r#"
import java.sql.*;
public class ApprovalCheck {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], "app", args[1]);
             PreparedStatement st = c.prepareStatement("UPDATE customers SET email = ? WHERE id = ?")) {
            st.setString(1, "jdbc@example.com");
            st.setInt(2, 3);
            try {
                System.out.println("ok " + st.executeUpdate());
            } catch (SQLException e) {
                // The driver's message carries the server's HINT.
                System.out.println("refused " + e.getSQLState() + " " + e.getMessage().replace('\n', ' '));
            }
        }
        System.out.println("ok");
    }
}
"#;
