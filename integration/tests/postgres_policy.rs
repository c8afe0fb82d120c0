//! The Postgres statement policy through real Envoy and PostgreSQL: a denied
//! statement comes back as the server's own permission error, the session and its
//! transaction behave as for a real one, and the server never sees the denied SQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::{Stack, StackOptions, clients};
use serde_json::json;
use tokio_postgres::NoTls;

const DROP_MESSAGE: &str = "gatehouse: DROP is not allowed through the gateway";

fn stack(name: &str) -> Stack {
    let policy = json!({
        "version": "integration",
        "default": { "action": "allow" },
        "rules": [{
            "name": "no-drop",
            "action": "deny",
            "message": DROP_MESSAGE,
            "match": { "kinds": ["drop"] }
        }]
    });
    let opts = StackOptions {
        postgres_filter: json!({ "policy": policy }),
        ..StackOptions::default()
    };
    Stack::start("it", name, opts).expect("stack starts")
}

fn server_log(stack: &Stack) -> String {
    std::fs::read_to_string(stack.postgres.log_path()).unwrap_or_default()
}

#[test]
fn psql_denied_statement_is_a_clean_error_and_the_session_goes_on() {
    let stack = stack("pg-policy-psql");
    let out = stack
        .psql(
            "app",
            &[
                "-v",
                "ON_ERROR_STOP=0",
                "-c",
                "drop table customers",
                "-c",
                "select count(*) > 0 from customers",
            ],
        )
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!("ERROR:  {DROP_MESSAGE}\nDETAIL:  denied by gatehouse rule no-drop"),
        "the client is told which rule refused it: {stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    assert!(!server_log(&stack).contains("drop table customers"));
}

#[test]
fn psql_denied_statement_inside_begin_aborts_the_transaction() {
    let stack = stack("pg-policy-tx");
    let out = stack
        .psql(
            "app",
            &[
                "-v",
                "ON_ERROR_STOP=0",
                "-c",
                "begin; drop table customers; select 1; rollback; select 'after'",
            ],
        )
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("ERROR:  {DROP_MESSAGE}")),
        "{stderr}"
    );
    // One Query message: the denial refuses all of it, so nothing after runs.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("after"));

    let file = std::env::temp_dir().join(format!("gatehouse-pg-policy-{}.sql", std::process::id()));
    std::fs::write(
        &file,
        "begin;\nselect 1;\ndrop table customers;\nselect 2;\nrollback;\nselect 'after';\n",
    )
    .unwrap();
    let out = stack
        .psql(
            "app",
            &["-v", "ON_ERROR_STOP=0", "-f", file.to_str().unwrap()],
        )
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(DROP_MESSAGE), "{stderr}");
    assert!(
        stderr.contains("current transaction is aborted"),
        "{stderr}"
    );
    assert!(!stderr.contains("CONTEXT"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("after"));
    assert!(!server_log(&stack).contains("drop table customers"));
}

#[test]
fn prepared_statement_is_denied_with_sqlstate_42501_and_the_client_goes_on() {
    let stack = stack("pg-policy-extended");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} dbname=shop user=app sslmode=disable",
                stack.pg_port
            ),
            NoTls,
        )
        .await
        .expect("connects through Envoy");
        tokio::spawn(connection);
        let error = client
            .prepare("DROP TABLE customers")
            .await
            .expect_err("denied");
        let db = error.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "42501");
        assert_eq!(db.message(), DROP_MESSAGE);
        assert!(db.where_().is_none());
        let error = client
            .execute("DROP TABLE IF EXISTS customers", &[])
            .await
            .expect_err("denied");
        assert_eq!(error.code().map(|c| c.code()), Some("42501"));
        let row = client
            .query_one("select $1::int + 1", &[&41])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 42);
    });
    assert!(!server_log(&stack).to_lowercase().contains("drop table"));
}

const PSYCOPG_SCRIPT: &str = r#"
import sys, psycopg
port, message = sys.argv[1], sys.argv[2]

def refused(conn, sql, **options):
    try:
        conn.execute(sql, **options)
    except psycopg.errors.InsufficientPrivilege as e:
        assert e.sqlstate == "42501", e.sqlstate
        assert e.diag.message_primary == message, e.diag.message_primary
        return
    raise AssertionError(f"not refused: {sql}")

with psycopg.connect(f"host=127.0.0.1 port={port} dbname=shop user=app sslmode=disable",
                     autocommit=True) as conn:
    refused(conn, "drop table customers")
    refused(conn, "drop table customers", prepare=True)
    assert conn.execute("select count(*) > 0 from customers").fetchone()[0] is True

    conn.execute("begin")
    assert conn.execute("select 1").fetchone()[0] == 1
    refused(conn, "drop table customers")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    try:
        conn.execute("select 1")
        raise AssertionError("the aborted transaction ran a statement")
    except psycopg.errors.InFailedSqlTransaction as e:
        assert e.sqlstate == "25P02", e.sqlstate
    conn.execute("rollback")
    assert conn.execute("select 'after'").fetchone()[0] == "after"
print("ok")
"#;

#[test]
fn psycopg_gets_42501_with_the_rules_message_and_an_aborted_transaction_until_rollback() {
    let stack = stack("pg-policy-psycopg");
    let port = stack.pg_port.to_string();
    clients::psycopg(
        &stack,
        "policy_check",
        PSYCOPG_SCRIPT,
        &[&port, DROP_MESSAGE],
    );
    assert!(!server_log(&stack).to_lowercase().contains("drop table"));
}

const JDBC_PROGRAM: &str = r#"
import java.sql.*;
public class PolicyCheck {
    static String message;

    static void refused(Statement s, String sql) throws SQLException {
        try {
            s.execute(sql);
        } catch (SQLException e) {
            if (!"42501".equals(e.getSQLState())) throw e;
            // The driver prints the server's severity, message and the
            // detail naming the rule, nothing more.
            String expected = "ERROR: " + message + "\n  Detail: denied by gatehouse rule no-drop";
            if (!expected.equals(e.getMessage())) {
                throw new AssertionError("message: " + e.getMessage());
            }
            return;
        }
        throw new AssertionError("not refused: " + sql);
    }

    static String one(Statement s, String sql) throws SQLException {
        try (ResultSet r = s.executeQuery(sql)) {
            r.next();
            return r.getString(1);
        }
    }

    public static void main(String[] args) throws Exception {
        message = args[1];
        try (Connection c = DriverManager.getConnection(args[0], "app", "")) {
            try (Statement s = c.createStatement()) {
                refused(s, "drop table customers");
                if (!"t".equals(one(s, "select count(*) > 0 from customers"))) throw new AssertionError("rows");
            }
            try (PreparedStatement p = c.prepareStatement("drop table customers")) {
                try {
                    p.execute();
                    throw new AssertionError("prepared drop not refused");
                } catch (SQLException e) {
                    if (!"42501".equals(e.getSQLState())) throw e;
                }
            }
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                if (!"1".equals(one(s, "select 1"))) throw new AssertionError("select 1");
                refused(s, "drop table customers");
                try {
                    one(s, "select 2");
                    throw new AssertionError("the aborted transaction ran a statement");
                } catch (SQLException e) {
                    if (!"25P02".equals(e.getSQLState())) throw e;
                }
                c.rollback();
                if (!"after".equals(one(s, "select 'after'"))) throw new AssertionError("after");
                c.commit();
            }
        }
        System.out.println("ok");
    }
}
"#;

#[test]
fn jdbc_gets_42501_with_the_rules_message_and_an_aborted_transaction_until_rollback() {
    let stack = stack("pg-policy-jdbc");
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/shop?sslmode=disable",
        stack.pg_port
    );
    clients::jdbc(&stack, "PolicyCheck", JDBC_PROGRAM, &[&url, DROP_MESSAGE]);
    assert!(!server_log(&stack).to_lowercase().contains("drop table"));
}
