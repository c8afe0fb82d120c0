//! `gatehouse explain` run as a program against the demo policies and identities.

// Test helpers: a missing value fails the test. Indexing a `serde_json::Value`
// by key never panics.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::{example, file, gatehouse};
use serde_json::Value;

/// The demo identities: subject and group.
const DEVELOPER: (&str, &str) = ("developer", "developers");
const DBA: (&str, &str) = ("dba", "dba");
const CI: (&str, &str) = ("ci", "ci");
const AGENT: (&str, &str) = ("agent", "ai-agents");
const ADMIN: (&str, &str) = ("admin", "platform-admins");

/// The decision (`action`, `rule`) `explain --json` reports for a SQL text.
fn sql_decision(who: (&str, &str), sql: &str) -> (String, String) {
    let policy = example("postgres-policy.json");
    let (subject, group) = who;
    decision(&[
        "explain",
        &policy,
        "--subject",
        subject,
        "--group",
        group,
        "--sql",
        sql,
        "--json",
    ])
}

/// The decision (`action`, `rule`) `explain --json` reports for a Kubernetes request.
fn request_decision(who: (&str, &str), request: &[&str]) -> (String, String) {
    let policy = example("kubernetes-policy.json");
    let (subject, group) = who;
    let mut args = vec![
        "explain",
        &policy,
        "--subject",
        subject,
        "--group",
        group,
        "--json",
    ];
    args.extend_from_slice(request);
    decision(&args)
}

fn decision(args: &[&str]) -> (String, String) {
    let run = gatehouse(args);
    assert_eq!(run.code, 0, "{args:?}: {}{}", run.stdout, run.stderr);
    let json: Value = serde_json::from_str(&run.stdout).expect("JSON output");
    let text = |v: &Value| v.as_str().unwrap_or("(default)").to_owned();
    (
        text(&json["decision"]["action"]),
        text(&json["decision"]["rule"]),
    )
}

fn expect(action: &str, rule: &str) -> (String, String) {
    (action.to_owned(), rule.to_owned())
}

#[test]
fn postgres_demo_identities_get_the_demo_policy_decisions() {
    let cases = [
        (
            DEVELOPER,
            "SELECT * FROM orders WHERE id = 1",
            expect("allow", "everyday-sql"),
        ),
        (DEVELOPER, "DROP TABLE orders", expect("deny", "no-ddl")),
        (
            DEVELOPER,
            "DELETE FROM orders",
            expect("deny", "no-unfiltered-writes"),
        ),
        (CI, "TRUNCATE orders", expect("deny", "no-truncate")),
        (
            CI,
            "INSERT INTO orders VALUES (1)",
            expect("allow", "everyday-sql"),
        ),
        (
            AGENT,
            "SELECT pg_read_file('/etc/passwd')",
            expect("deny", "no-admin-functions"),
        ),
        (AGENT, "SET ROLE postgres", expect("deny", "no-role-switch")),
        (DBA, "DROP TABLE orders", expect("allow", "dba-all")),
        (
            DBA,
            "DROP DATABASE shop",
            expect("deny", "dba-no-drop-database"),
        ),
        (
            ADMIN,
            "DROP DATABASE shop",
            expect("observe", "admins-observed"),
        ),
        (
            ("stranger", "visitors"),
            "SELECT 1",
            expect("deny", "(default)"),
        ),
    ];
    for (who, sql, expected) in cases {
        assert_eq!(sql_decision(who, sql), expected, "{who:?}: {sql}");
    }
}

#[test]
fn one_blocking_statement_blocks_the_text_and_is_named() {
    let policy = example("postgres-policy.json");
    let run = gatehouse(&[
        "explain",
        &policy,
        "--subject",
        "developer",
        "--group",
        "developers",
        "--sql",
        "SELECT 1; DROP TABLE orders",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["blocked_by"], 1);
    assert_eq!(json["statements"][0]["kind"], "select");
    assert_eq!(json["statements"][1]["kind"], "drop");
    assert_eq!(json["analysis"][1]["objects"][0]["name"], "orders");
}

#[test]
fn human_output_names_decision_rule_message_and_statement_analysis() {
    let policy = example("postgres-policy.json");
    let run = gatehouse(&[
        "explain",
        &policy,
        "--subject",
        "developer",
        "--group",
        "developers",
        "--sql",
        "UPDATE shop.orders SET total = 0",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = run.stdout;
    assert!(out.starts_with("decision: deny\nrule: no-unfiltered-writes\nmessage: gatehouse: UPDATE and DELETE need a WHERE clause"), "{out}");
    assert!(
        out.contains("statement 0: update -> deny by rule no-unfiltered-writes"),
        "{out}"
    );
    assert!(out.contains("objects: shop.orders (write)"), "{out}");
    assert!(out.contains("properties: without_where"), "{out}");
}

#[test]
fn the_policy_inside_a_postgres_filter_configuration_is_used() {
    let policy = std::fs::read_to_string(example("postgres-policy.json")).unwrap();
    let config = file(
        "explain-filter-config",
        &format!(r#"{{"policy": {policy}}}"#),
    );
    let run = gatehouse(&[
        "explain",
        &config,
        "--subject",
        "dba",
        "--group",
        "dba",
        "--sql",
        "DROP DATABASE shop",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["decision"]["rule"], "dba-no-drop-database");
    let no_policy = file("explain-filter-no-policy", "{}");
    let run = gatehouse(&[
        "explain",
        &no_policy,
        "--kind",
        "postgres-filter",
        "--sql",
        "DROP DATABASE shop",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.starts_with("decision: allow\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn kubernetes_demo_identities_get_the_demo_policy_decisions() {
    let exec_in_prod = [
        "--verb",
        "create",
        "--resource",
        "pods/exec",
        "--namespace",
        "prod",
        "--name",
        "web-0",
    ];
    type Case<'a> = ((&'a str, &'a str), Vec<&'a str>, (String, String));
    let cases: Vec<Case> = vec![
        (
            DEVELOPER,
            vec!["--request", "GET /api/v1/namespaces/prod/secrets/db"],
            expect("allow", "team-dev-and-prod"),
        ),
        (
            DEVELOPER,
            exec_in_prod.to_vec(),
            expect("require_approval", "prod-exec-needs-admin"),
        ),
        (
            DBA,
            exec_in_prod.to_vec(),
            expect("deny", "no-exec-in-prod"),
        ),
        (
            CI,
            vec![
                "--verb",
                "delete",
                "--resource",
                "pods",
                "--namespace",
                "prod",
                "--name",
                "web-0",
            ],
            expect("deny", "no-writes-in-prod"),
        ),
        (
            CI,
            vec![
                "--verb",
                "delete",
                "--resource",
                "pods",
                "--namespace",
                "dev",
                "--name",
                "web-0",
            ],
            expect("allow", "team-dev-and-prod"),
        ),
        (
            AGENT,
            vec!["--verb", "list", "--resource", "nodes"],
            expect("allow", "team-read-cluster"),
        ),
        (
            AGENT,
            vec![
                "--verb",
                "create",
                "--resource",
                "clusterroles",
                "--api-group",
                "rbac.authorization.k8s.io",
            ],
            expect("deny", "no-rbac-changes"),
        ),
        (
            ADMIN,
            exec_in_prod.to_vec(),
            expect("observe", "admins-observed"),
        ),
        (
            ADMIN,
            vec![
                "--verb",
                "delete",
                "--resource",
                "namespaces",
                "--name",
                "prod",
            ],
            expect("observe", "admins-observed"),
        ),
        (
            DEVELOPER,
            vec![
                "--verb",
                "delete",
                "--resource",
                "namespaces",
                "--name",
                "dev",
            ],
            expect("deny", "no-namespace-deletion"),
        ),
        (
            ("stranger", "visitors"),
            vec![
                "--verb",
                "get",
                "--resource",
                "pods",
                "--namespace",
                "dev",
                "--name",
                "x",
            ],
            expect("deny", "(default)"),
        ),
        (
            ("stranger", "visitors"),
            vec!["--request", "GET /version"],
            expect("allow", "discovery"),
        ),
    ];
    for (who, request, expected) in cases {
        assert_eq!(
            request_decision(who, &request),
            expected,
            "{who:?}: {request:?}"
        );
    }
}

#[test]
fn a_websocket_exec_request_is_judged_as_create() {
    let policy = example("kubernetes-policy.json");
    let run = gatehouse(&[
        "explain",
        &policy,
        "--subject",
        "developer",
        "--group",
        "developers",
        "--request",
        "GET /api/v1/namespaces/prod/pods/web-0/exec?command=sh&stdin=true&tty=true",
        "--header",
        "Upgrade: websocket",
        "--header",
        "Sec-WebSocket-Protocol: v5.channel.k8s.io",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("decision: require_approval\nrule: prod-exec-needs-admin\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("request: create pods/exec (api group core), name web-0, namespace prod"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("command: sh"), "{}", run.stdout);
}

#[test]
fn requests_the_filter_refuses_before_policy_say_so() {
    let policy = example("kubernetes-policy.json");
    let encoded_slash = gatehouse(&[
        "explain",
        &policy,
        "--subject",
        "admin",
        "--group",
        "platform-admins",
        "--request",
        "GET /api/v1/namespaces/prod/pods/web-0%2Fexec",
    ]);
    assert_eq!(encoded_slash.code, 0, "{}", encoded_slash.stderr);
    assert!(
        encoded_slash.stdout.contains("400"),
        "{}",
        encoded_slash.stdout
    );
    let impersonation = gatehouse(&[
        "explain",
        &policy,
        "--subject",
        "admin",
        "--group",
        "platform-admins",
        "--request",
        "GET /api/v1/namespaces",
        "--header",
        "Impersonate-User: root",
    ]);
    assert!(
        impersonation.stdout.contains("403"),
        "{}",
        impersonation.stdout
    );
}

#[test]
fn claims_given_on_the_command_line_reach_the_rules() {
    let policy = file(
        "explain-claims",
        r#"{"rules": [{"name": "payments-team", "action": "allow",
             "match": {"claims": {"team": "pay*"}, "kinds": ["select"]}}]}"#,
    );
    let allowed = decision(&[
        "explain",
        &policy,
        "--claim",
        "team=search",
        "--claim",
        "team=payments",
        "--sql",
        "SELECT 1",
        "--json",
    ]);
    assert_eq!(allowed, expect("allow", "payments-team"));
    let denied = decision(&[
        "explain",
        &policy,
        "--claim",
        "team=search",
        "--sql",
        "SELECT 1",
        "--json",
    ]);
    assert_eq!(denied, expect("deny", "(default)"));
}

#[test]
fn bad_invocations_and_invalid_files_have_distinct_exit_codes() {
    let pg = example("postgres-policy.json");
    let k8s = example("kubernetes-policy.json");
    assert_eq!(
        gatehouse(&["explain", &pg]).code,
        2,
        "needs --sql or a request"
    );
    assert_eq!(gatehouse(&["explain", &k8s, "--sql", "SELECT 1"]).code, 2);
    assert_eq!(
        gatehouse(&["explain", &pg, "--sql", "SELECT 1", "--claim", "novalue"]).code,
        2
    );
    assert_eq!(
        gatehouse(&["explain", &k8s, "--verb", "get", "--resource", "pods"]).code,
        2,
        "get needs --name"
    );
    let invalid = file(
        "explain-invalid",
        r#"{"rules": [{"name": "r", "action": "allw", "match": {"kinds": ["select"]}}]}"#,
    );
    let run = gatehouse(&["explain", &invalid, "--sql", "SELECT 1"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("rules[0].action"), "{}", run.stderr);
}

#[test]
fn a_shadow_configuration_is_explained_as_observe_only() {
    let policy = std::fs::read_to_string(example("postgres-policy.json")).unwrap();
    let config = file(
        "explain-shadow-config",
        &format!(r#"{{"mode": "shadow", "policy": {policy}}}"#),
    );
    let args = [
        "explain",
        &config,
        "--subject",
        "dba",
        "--group",
        "dba",
        "--sql",
        "DROP DATABASE shop",
    ];
    let run = gatehouse(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("\nmode: shadow (observe only: recorded, never applied)\n"),
        "{}",
        run.stdout
    );
    let run = gatehouse(&[&args[..], &["--json"]].concat());
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["mode"], "shadow");
    assert_eq!(json["decision"]["rule"], "dba-no-drop-database");
}

#[test]
fn a_named_identity_or_a_token_stands_for_the_caller_and_masking_is_previewed() {
    let config = example("postgres-filter.json");
    let identities = example("demo/identities.json");
    let sql = "SELECT email, card_number FROM customers LIMIT 3";
    let run = gatehouse(&[
        "explain",
        &config,
        "--identity",
        "developer",
        "--identities",
        &identities,
        "--role",
        "app",
        "--sql",
        sql,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains("identity: subject \"developer\", groups developers"),
        "{out}"
    );
    assert!(
        out.contains("login: role \"app\" is open to this identity"),
        "{out}"
    );
    assert!(
        out.contains("masking: columns public.customers.email by rule customer-email (partial)"),
        "{out}"
    );
    let dba = gatehouse(&[
        "explain",
        &config,
        "--identity",
        "dba",
        "--identities",
        &identities,
        "--role",
        "app",
        "--sql",
        sql,
        "--json",
    ]);
    let json: Value = serde_json::from_str(&dba.stdout).unwrap();
    assert_eq!(json["login_allowed"], false, "dba logs in as postgres");
    assert_eq!(json["masking"]["exempt"], true);
    let unknown = gatehouse(&[
        "explain",
        &config,
        "--identity",
        "mallory",
        "--identities",
        &identities,
        "--sql",
        sql,
    ]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown
            .stderr
            .contains("known: admin, agent, ci, dba, developer"),
        "{}",
        unknown.stderr
    );

    // A token's claims, read the way the configuration's issuer maps them.
    use base64::Engine;
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let token = format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"EdDSA"}"#),
        b64(r#"{"iss":"https://idp.gatehouse.test","sub":"ci","groups":["ci"],"exp":1}"#)
    );
    let run = gatehouse(&[
        "explain",
        &config,
        "--token",
        &token,
        "--sql",
        "DROP TABLE orders",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("rule: no-ddl"), "{}", run.stdout);
    assert!(
        run.stdout.contains("identity: subject \"ci\", groups ci"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("signature"), "{}", run.stdout);
    assert!(
        run.stdout.contains("the filter would refuse it"),
        "expired: {}",
        run.stdout
    );
    assert_eq!(
        gatehouse(&[
            "explain",
            &config,
            "--token",
            &token,
            "--subject",
            "x",
            "--sql",
            "SELECT 1"
        ])
        .code,
        2,
        "a token and a claimed subject conflict"
    );
}
