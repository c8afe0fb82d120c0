//! Real PostgreSQL clients through real Envoy with gatehouse's Postgres filter:
//! each behaves exactly as it does against the server directly, and the filter
//! accounts for what it saw.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::clients::{self, stdout};
use gatehouse_integration::{Stack, StackOptions, tools};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use tokio_postgres::NoTls;

fn stack(name: &str) -> Stack {
    Stack::start("it", name, StackOptions::default()).expect("stack starts")
}

/// The access-log line of the one Postgres connection made as `user`.
fn connection_record(stack: &Stack, user: &str) -> Value {
    stack
        .wait_for_record("the Postgres connection", |r| {
            r["type"] == "pg.connection" && r["pg_user"] == user
        })
        .unwrap()
}

fn stat(stack: &Stack, name: &str) -> u64 {
    stack.pg_stat(name).unwrap().unwrap_or(0)
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(stack: &Stack, user: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} dbname=shop user={user} sslmode=disable",
            stack.pg_port
        ),
        NoTls,
    )
    .await
    .expect("connects through Envoy");
    tokio::spawn(connection);
    client
}

#[test]
fn psql_simple_and_multi_statement_queries_and_errors_keep_the_session() {
    let stack = stack("pg-psql");
    let out = stack
        .psql(
            "app",
            &[
                "-v",
                "ON_ERROR_STOP=0",
                "-c",
                "select count(*) from customers",
                "-c",
                "select 1; select 2; select 'three'",
                "-c",
                "select 1/0",
                "-c",
                "select 'still usable'",
            ],
        )
        .unwrap();
    let text = stdout(&out);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["5000", "1", "2", "three", "still usable"]
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("division by zero"),
        "the server's error reaches psql"
    );

    let record = connection_record(&stack, "app");
    assert_eq!(record["pg_database"], "shop");
    assert_eq!(
        record["pg_statements"], "6",
        "one statement per simple-query statement"
    );
    assert_eq!(record["pg_errors"], "1");
    assert_eq!(record["pg_session_end"], "client_terminate");
    assert_eq!(stat(&stack, "gatehouse_pg_statements_total"), 6);
    assert_eq!(stat(&stack, "gatehouse_pg_errors_total"), 1);
    assert_eq!(stat(&stack, "gatehouse_pg_host_errors_total"), 0);
}

#[test]
fn psql_copy_both_ways_round_trips_rows() {
    let stack = stack("pg-copy");
    let csv = stack.dir.join("customers.csv");
    let out = stack
        .psql(
            "app",
            &[
                "-c",
                &format!(
                    "\\copy (select id, email from customers order by id) to '{}' csv",
                    csv.display()
                ),
                "-c",
                "create temp table copied (id int, email text)",
                "-c",
                &format!("\\copy copied from '{}' csv", csv.display()),
                "-c",
                "select count(*), count(distinct email) from copied",
            ],
        )
        .unwrap();
    let text = stdout(&out);
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 5000);
    assert!(text.lines().any(|l| l == "5000|5000"), "{text}");
    let record = connection_record(&stack, "app");
    assert_eq!(record["pg_errors"], "0");
    assert_eq!(record["pg_statements"], "4");
}

#[test]
fn psql_receives_a_notification_sent_from_another_connection() {
    let stack = stack("pg-notify");
    let psql = tools::pg_client("psql").unwrap();
    let notify = format!(
        "\\! {} -X -q -d {} -c \"NOTIFY gatehouse_channel, 'hello'\"",
        psql.display(),
        stack.postgres.direct_url("shop")
    );
    let out = stack
        .psql(
            "app",
            &[
                "-c",
                "LISTEN gatehouse_channel",
                "-c",
                &notify,
                "-c",
                "select 'after'",
            ],
        )
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("Asynchronous notification \"gatehouse_channel\" with payload \"hello\""),
        "{text}"
    );
}

fn pgbench(stack: &Stack, args: &[&str]) -> String {
    let out = Command::new(tools::pg_client("pgbench").unwrap())
        .args(["-n", "-h", "127.0.0.1", "-p"])
        .arg(stack.pg_port.to_string())
        .args(["-U", "postgres"])
        .args(args)
        .arg("shop")
        .output()
        .unwrap();
    stdout(&out)
}

#[test]
fn pgbench_runs_without_failures_in_every_protocol_mode() {
    let stack = stack("pg-pgbench");
    let init = Command::new(tools::pg_client("pgbench").unwrap())
        .args(["-i", "-q", "-s", "1", "-d"])
        .arg(stack.postgres.direct_url("shop"))
        .output()
        .unwrap();
    stdout(&init);
    for mode in ["simple", "extended", "prepared"] {
        let text = pgbench(
            &stack,
            &["-S", "-M", mode, "-c", "2", "-j", "2", "-t", "200"],
        );
        assert!(
            text.contains("number of transactions actually processed: 400/400"),
            "{mode}: {text}"
        );
        assert!(
            text.contains("number of failed transactions: 0"),
            "{mode}: {text}"
        );
    }
    // The TPC-B-like script: updates, inserts and explicit transactions.
    let text = pgbench(&stack, &["-M", "prepared", "-c", "2", "-t", "50"]);
    assert!(text.contains("number of failed transactions: 0"), "{text}");
    assert_eq!(stat(&stack, "gatehouse_pg_errors_total"), 0);
    assert!(stat(&stack, "gatehouse_pg_statements_total") >= 1200 + 700);
    assert_eq!(stat(&stack, "gatehouse_pg_protocol_errors_total"), 0);
}

#[test]
fn tokio_postgres_parameters_prepared_statements_binary_results_and_copy() {
    use futures_util::{SinkExt, StreamExt};
    let stack = stack("pg-tokio");
    tokio_runtime().block_on(async {
        let client = connect(&stack, "app").await;
        let row = client
            .query_one(
                "select $1::int8 + 1, $2::text, 1.5::float8, now()",
                &[&41i64, &"x"],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 42);
        assert_eq!(row.get::<_, &str>(1), "x");
        assert_eq!(row.get::<_, f64>(2), 1.5);
        let statement = client
            .prepare("select count(*) from customers where id <= $1")
            .await
            .unwrap();
        for n in [1i64, 10, 100] {
            let row = client.query_one(&statement, &[&n]).await.unwrap();
            assert_eq!(row.get::<_, i64>(0), n);
        }
        let error = client.query_one("select 1/0", &[]).await.unwrap_err();
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
        );

        client
            .batch_execute("create temp table copied (id int, email text)")
            .await
            .unwrap();
        let sink = client
            .copy_in("copy copied from stdin (format csv)")
            .await
            .unwrap();
        let mut sink = std::pin::pin!(sink);
        for i in 0..1000 {
            sink.send(bytes_line(i)).await.unwrap();
        }
        assert_eq!(sink.as_mut().finish().await.unwrap(), 1000);
        let stream = client
            .copy_out("copy (select * from copied order by id) to stdout")
            .await
            .unwrap();
        let chunks: Vec<_> = stream.collect().await;
        let copied: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        assert_eq!(String::from_utf8(copied).unwrap().lines().count(), 1000);
    });
    assert_eq!(stat(&stack, "gatehouse_pg_errors_total"), 1);
}

fn bytes_line(i: u32) -> std::collections::VecDeque<u8> {
    format!("{i},user{i}@example.com\n").into_bytes().into()
}

#[test]
fn query_cancel_reaches_the_server_from_the_client_and_from_pg_cancel_backend() {
    let stack = stack("pg-cancel");
    let runtime = tokio_runtime();
    // Client-side cancel: psql sends a CancelRequest on a new connection through
    // Envoy when interrupted.
    let psql = Command::new(tools::pg_client("psql").unwrap())
        .args(["-X", "-At", "-d"])
        .arg(format!("{}?user=app&sslmode=disable", stack.pg_url()))
        .args(["-c", "select pg_sleep(60)"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    runtime.block_on(wait_for_sleeper(&stack));
    gatehouse_integration::process::signal(psql.id(), "INT");
    let out = psql.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("canceling statement due to user request"),
        "psql's cancel reached the server: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Client-side cancel from a driver: tokio-postgres sends its CancelRequest
    // and half-closes the connection at once, without waiting for the server.
    runtime.block_on(async {
        let client = connect(&stack, "app").await;
        let cancel = client.cancel_token();
        let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(60)").await });
        wait_for_sleeper(&stack).await;
        cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(20), sleeper)
            .await
            .expect("tokio-postgres's cancel reached the server");
        assert_eq!(
            outcome.unwrap().unwrap_err().code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
        );
    });

    // Server-side cancel from another session.
    runtime.block_on(async {
        let client = connect(&stack, "app").await;
        let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(60)").await });
        wait_for_sleeper(&stack).await;
        let out = stack
            .postgres
            .psql("select pg_cancel_backend(pid) from pg_stat_activity where query = 'select pg_sleep(60)'")
            .unwrap();
        assert_eq!(out.trim(), "t");
        assert_eq!(
            sleeper.await.unwrap().unwrap_err().code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
        );
    });
}

async fn wait_for_sleeper(stack: &Stack) {
    for _ in 0..200 {
        let active = stack
            .postgres
            .psql("select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'")
            .unwrap();
        if active.trim() == "1" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the sleeping query never reached the server");
}

#[test]
fn a_server_restart_gives_the_client_a_clean_error_and_new_sessions_work() {
    let mut stack = stack("pg-restart");
    let runtime = tokio_runtime();
    let client = runtime.block_on(connect(&stack, "app"));
    runtime.block_on(client.simple_query("select 1")).unwrap();
    stack.postgres.restart().unwrap();
    let result = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), client.simple_query("select 2")).await
    });
    let error = result.expect("the client is not left hanging").unwrap_err();
    assert!(
        error.is_closed() || error.code() == Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN),
        "a connection error, not garbage: {error:?}"
    );
    let out = stack.psql("app", &["-c", "select 'back'"]).unwrap();
    assert_eq!(stdout(&out).trim(), "back");
    assert_eq!(stat(&stack, "gatehouse_pg_protocol_errors_total"), 0);
}

/// Reads one backend message (tag, body).
fn read_message(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).unwrap();
    let [tag, a, b, c, d] = header;
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).unwrap();
    (tag, body)
}

fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", database)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

fn assert_protocol_violation(stream: &mut TcpStream, what: &str) {
    let (tag, body) = read_message(stream);
    assert_eq!(tag, b'E', "{what}: an ErrorResponse");
    assert!(
        String::from_utf8_lossy(&body).contains("C08P01"),
        "{what}: SQLSTATE 08P01 in {:?}",
        String::from_utf8_lossy(&body)
    );
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

#[test]
fn malformed_bytes_end_only_their_own_session_with_08p01() {
    let stack = stack("pg-malformed");
    let connect_raw = || {
        let stream = TcpStream::connect(("127.0.0.1", stack.pg_port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    };
    // A bystander session stays logged in throughout.
    let runtime = tokio_runtime();
    let bystander = runtime.block_on(connect(&stack, "app"));

    // Garbage instead of a startup packet.
    let mut stream = connect_raw();
    stream
        .write_all(b"\x00\x00\x00\x08\x12\x34\x56\x78")
        .unwrap();
    assert_protocol_violation(&mut stream, "bad startup code");

    // An unknown message type after login.
    let mut stream = connect_raw();
    stream.write_all(&startup_message("app", "shop")).unwrap();
    loop {
        let (tag, _) = read_message(&mut stream);
        if tag == b'Z' {
            break;
        }
    }
    stream.write_all(b"\xfe\x00\x00\x00\x04").unwrap();
    assert_protocol_violation(&mut stream, "unknown message type");

    let row = runtime
        .block_on(bystander.query_one("select count(*) from customers", &[]))
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 5000);
    assert_eq!(stat(&stack, "gatehouse_pg_protocol_errors_total"), 2);
    let record = stack
        .wait_for_record("the logged-in malformed session", |r| {
            r["type"] == "pg.connection"
                && r["pg_session_end"] == "protocol_error"
                && r["pg_user"] == "app"
        })
        .unwrap();
    assert_eq!(record["pg_database"], "shop");
    let ended_by_violation = stack
        .access_log_records()
        .unwrap()
        .into_iter()
        .filter(|r| r["pg_session_end"] == "protocol_error")
        .count();
    assert_eq!(
        ended_by_violation, 2,
        "the bystander's session ended normally"
    );
}

const PSYCOPG_SCRIPT: &str = r#"
import sys, psycopg
port, tls_port, ca = sys.argv[1], sys.argv[2], sys.argv[3]
with psycopg.connect(f"host=127.0.0.1 port={port} dbname=shop user=app sslmode=disable") as conn:
    row = conn.execute("select %s::int + 1, %s::text", (41, "x")).fetchone()
    assert row == (42, "x"), row
    with conn.cursor(binary=True) as cur:
        cur.execute("select g, g * 1.5::float8, 'v' || g from generate_series(1, %s) g", (300,))
        rows = cur.fetchall()
        assert len(rows) == 300 and rows[-1] == (300, 450.0, "v300"), rows[-1]
    with conn.pipeline():
        cursors = [conn.execute("select %s::int * 2", (i,)) for i in range(50)]
    assert [c.fetchone()[0] for c in cursors] == [i * 2 for i in range(50)]
    try:
        conn.execute("select 1/0")
        raise SystemExit("no error")
    except psycopg.errors.DivisionByZero:
        pass
with psycopg.connect(f"host=127.0.0.1 port={tls_port} dbname=shop user=app sslmode=require "
                     f"sslnegotiation=direct sslrootcert={ca}") as conn:
    assert conn.pgconn.ssl_in_use
    assert conn.execute("select count(*) from customers").fetchone()[0] == 5000
print("ok")
"#;

#[test]
fn psycopg_text_binary_pipeline_and_direct_tls() {
    let stack = stack("pg-psycopg");
    let port = stack.pg_port.to_string();
    let tls_port = stack.pg_tls_port.to_string();
    let ca = stack.pki.ca_cert.display().to_string();
    clients::psycopg(
        &stack,
        "psycopg_check",
        PSYCOPG_SCRIPT,
        &[&port, &tls_port, &ca],
    );
    let tls = stack
        .wait_for_record("the direct-TLS connection", |r| {
            r["type"] == "pg.connection" && r["filter_chain"] == "postgres_direct_tls"
        })
        .unwrap();
    assert_eq!(
        tls["pg_user"], "app",
        "the filter sees plaintext behind TLS"
    );
    // psycopg wraps the query in a transaction: BEGIN, the SELECT, COMMIT.
    assert_eq!(tls["pg_statements"], "3");
    assert_eq!(stat(&stack, "gatehouse_pg_protocol_errors_total"), 0);
}

const JDBC_PROGRAM: &str = r#"
import java.sql.*;
public class JdbcCheck {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], "app", "")) {
            try (PreparedStatement ps = c.prepareStatement("select count(*) from customers where id <= ?")) {
                for (int i = 1; i <= 10; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        if (rs.getInt(1) != i) throw new AssertionError("count " + rs.getInt(1));
                    }
                }
            }
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.execute("create temp table jdbc_batch (n int)");
            }
            try (PreparedStatement ps = c.prepareStatement("insert into jdbc_batch values (?)")) {
                for (int i = 0; i < 20; i++) { ps.setInt(1, i); ps.addBatch(); }
                ps.executeBatch();
            }
            c.commit();
            try (Statement s = c.createStatement()) {
                s.executeQuery("select 1/0");
                throw new AssertionError("no error");
            } catch (SQLException e) {
                if (!"22012".equals(e.getSQLState())) throw e;
                c.rollback();
            }
        }
        System.out.println("ok");
    }
}
"#;

#[test]
fn jdbc_switches_to_named_server_statements_through_the_filter() {
    let stack = stack("pg-jdbc");
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/shop?sslmode=disable",
        stack.pg_port
    );
    clients::jdbc(&stack, "JdbcCheck", JDBC_PROGRAM, &[&url]);
    let server_log = std::fs::read_to_string(stack.postgres.log_path()).unwrap();
    assert!(
        server_log.contains("execute S_"),
        "after five runs the driver uses a named server-side statement"
    );
    assert_eq!(stat(&stack, "gatehouse_pg_errors_total"), 1);
    assert_eq!(stat(&stack, "gatehouse_pg_protocol_errors_total"), 0);
}

const NODE_SCRIPT: &str = r#"
const { Client } = require('pg');
(async () => {
  const client = new Client({ host: '127.0.0.1', port: Number(process.argv[2]), database: 'shop', user: 'app' });
  await client.connect();
  const sum = await client.query('select $1::int + 1 as n', [41]);
  if (sum.rows[0].n !== 42) throw new Error('sum ' + JSON.stringify(sum.rows));
  for (let i = 1; i <= 3; i++) {
    const r = await client.query({ name: 'count_upto', text: 'select count(*)::int as n from customers where id <= $1', values: [i] });
    if (r.rows[0].n !== i) throw new Error('count ' + JSON.stringify(r.rows));
  }
  try { await client.query('select 1/0'); throw new Error('no error'); }
  catch (e) { if (e.code !== '22012') throw e; }
  const after = await client.query('select 1 as one');
  if (after.rows[0].one !== 1) throw new Error('after error');
  await client.end();
  console.log('ok');
})().catch((e) => { console.error(e); process.exit(1); });
"#;

#[test]
fn node_postgres_queries_named_statements_and_errors() {
    let stack = stack("pg-node");
    let node_dir = tools::node_pg_dir().unwrap();
    let script = stack.dir.join("node_check.js");
    std::fs::write(&script, NODE_SCRIPT).unwrap();
    clients::run_checked(
        "node-postgres",
        Command::new("node")
            .arg(&script)
            .arg(stack.pg_port.to_string())
            .env("NODE_PATH", node_dir.join("node_modules")),
    );
    let record = connection_record(&stack, "app");
    assert_eq!(record["pg_statements"], "6");
    assert_eq!(record["pg_errors"], "1");
}

#[test]
fn every_statement_on_one_connection_is_its_own_access_log_line_in_order() {
    let stack = stack("records-1000");
    let script: String = (1..=1000).map(|i| format!("select {i} as n;\n")).collect();
    let file = stack.dir.join("thousand.sql");
    std::fs::write(&file, script).unwrap();
    stdout(
        &stack
            .psql("app", &["-q", "-f", file.to_str().unwrap()])
            .unwrap(),
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let statements = loop {
        let statements: Vec<Value> = stack
            .access_log_records()
            .unwrap()
            .into_iter()
            .filter(|r| r["type"] == "pg.statement" && r["user"] == "app")
            .collect();
        if statements.len() >= 1000 || std::time::Instant::now() > deadline {
            break statements;
        }
    };
    assert_eq!(statements.len(), 1000, "one line per statement");
    let connection = &statements[0]["connection_id"];
    let first_sequence = statements[0]["sequence"].as_u64().unwrap();
    for (i, record) in statements.iter().enumerate() {
        assert_eq!(
            &record["connection_id"], connection,
            "all from one connection"
        );
        assert_eq!(
            record["sequence"].as_u64(),
            Some(first_sequence + i as u64),
            "in order, no gaps"
        );
        assert_eq!(record["statement"], format!("select {} as n", i + 1));
        assert_eq!(record["rows"], 1);
    }
    let end = stack
        .wait_for_record("the session end", |r| {
            r["type"] == "pg.session_end" && &r["connection_id"] == connection
        })
        .unwrap();
    assert_eq!(end["statements"], 1000);
}
