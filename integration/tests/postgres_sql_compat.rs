//! The SQL compatibility corpus (`testdata/compat/corpus.sql`: every construct
//! class of PostgreSQL's documented grammar) through real Envoy and the demo
//! policy, against a direct run on the same server:
//! - as `dba` (allowed everything) psql's output, results and errors alike, is
//!   byte for byte the direct run's, and the direct run has no errors;
//! - as `developer` every refusal is a rule's or the policy default's, and none is
//!   "could not be analyzed" for SQL the server's grammar accepts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::stack::demo_postgres_filter_config;
use gatehouse_integration::{Stack, StackOptions, tools, workspace_root};
use serde_json::Value;
use std::process::Command;

/// psql's whole output (stdout then stderr) for the corpus, with the file's path
/// (which psql prefixes to errors) made neutral.
fn run_corpus(url: &str, password: Option<&str>) -> String {
    let corpus = workspace_root().join("integration/testdata/compat/corpus.sql");
    let mut psql = Command::new(tools::pg_client("psql").unwrap());
    psql.args(["-X", "-w", "-v", "ON_ERROR_STOP=0", "-d", url, "-f"])
        .arg(&corpus)
        .env_remove("PGPASSWORD")
        .env("PGTZ", "UTC");
    if let Some(password) = password {
        psql.env("PGPASSWORD", password);
    }
    let out = psql.output().unwrap();
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.replace(&corpus.display().to_string(), "corpus.sql")
}

fn statements(stack: &Stack, user: &str) -> Vec<Value> {
    stack
        .access_log_records()
        .unwrap()
        .into_iter()
        .filter(|r| r["type"] == "pg.statement" && r["identity"]["subject"] == user)
        .collect()
}

#[test]
fn the_compatibility_corpus_runs_through_the_gateway_as_it_runs_directly() {
    let stack = Stack::start(
        "it",
        "pg-sql-compat",
        StackOptions {
            postgres_filter: demo_postgres_filter_config(),
            ..StackOptions::default()
        },
    )
    .expect("stack starts");
    let database = gatehouse_integration::postgres::DEMO_DATABASE;

    let direct = run_corpus(&stack.postgres.direct_url(database), None);
    assert!(
        !direct.contains("ERROR:"),
        "the corpus must run cleanly on its own:\n{direct}"
    );

    // Each identity logs in as a database role it may use.
    let through = |identity: &str, role: &str| {
        let token = stack.token(identity).unwrap();
        let url = format!("{}?user={role}&sslmode=disable", stack.pg_url());
        run_corpus(&url, Some(&token))
    };
    let as_dba = through("dba", "postgres");
    if as_dba != direct {
        let diff: Vec<String> = direct
            .lines()
            .zip(as_dba.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(20)
            .map(|(i, (a, b))| format!("line {i}:\n  direct:  {a}\n  gateway: {b}"))
            .collect();
        panic!(
            "the dba's output differs from a direct run:\n{}",
            diff.join("\n")
        );
    }
    let dba_records = statements(&stack, "dba");
    assert!(dba_records.len() > 150, "{} records", dba_records.len());
    assert!(
        dba_records
            .iter()
            .all(|r| r["decision"]["action"] == "allow"),
        "a dba statement was not allowed"
    );

    let as_developer = through("developer", "app");
    let developer_records = statements(&stack, "developer");
    let refused: Vec<&Value> = developer_records
        .iter()
        .filter(|r| r["decision"]["action"] == "deny")
        .collect();
    assert!(refused.len() > 20, "{as_developer}");
    // A refusal as unanalyzable is a failure unless the server's grammar refuses the
    // text too (after a refused COPY … FROM STDIN, psql sends the data as SQL).
    let server_accepts = |sql: &str| {
        let out = Command::new(tools::pg_client("psql").unwrap())
            .args(["-X", "-d", &stack.postgres.direct_url(database)])
            .args(["-c", "BEGIN", "-c", sql, "-c", "ROLLBACK"])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&out.stderr).contains("syntax error")
    };
    let unanalyzed: Vec<String> = refused
        .iter()
        .filter(|r| r["decision"]["rule"] == "(unparseable)")
        .filter_map(|r| r["statement"].as_str())
        .filter(|sql| server_accepts(sql))
        .map(str::to_string)
        .collect();
    assert!(
        unanalyzed.is_empty(),
        "valid SQL refused as unanalyzable:\n{}",
        unanalyzed.join("\n")
    );
    assert_encoding_switch_ends_the_session(&stack);
    // The refusals the corpus must meet, each by its rule.
    for rule in [
        "no-ddl",
        "no-truncate",
        "no-privilege-changes",
        "no-role-switch",
        "no-do-blocks",
    ] {
        assert!(
            refused.iter().any(|r| r["decision"]["rule"] == rule),
            "no refusal by {rule}"
        );
    }
}

/// A client encoding the filter cannot read, set where the analysis cannot see it
/// (dynamic SQL in a function), ends the session when the server reports it: the
/// client gets a FATAL and nothing after it runs.
fn assert_encoding_switch_ends_the_session(stack: &Stack) {
    let database = gatehouse_integration::postgres::DEMO_DATABASE;
    stack
        .postgres
        .psql_in(
            database,
            "CREATE FUNCTION switch_to_sjis() RETURNS int LANGUAGE plpgsql AS $$ \
             BEGIN EXECUTE 'SET client_encoding = ' || quote_literal('SJIS'); RETURN 1; END $$; \
             GRANT EXECUTE ON FUNCTION switch_to_sjis() TO app",
        )
        .unwrap();
    let token = stack.token("developer").unwrap();
    let out = stack
        .psql_login(
            "app",
            Some(&token),
            &["-c", "select switch_to_sjis()", "-c", "select 'still here'"],
        )
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("client encoding SJIS is refused"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("still here"));
    let ended = stack
        .wait_for_record("the session ended by the encoding switch", |r| {
            r["type"] == "pg.session_end"
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("client_encoding to SJIS"))
        })
        .unwrap();
    assert_eq!(ended["identity"]["subject"], "developer");
}
