//! Token login through real Envoy in front of PostgreSQL (which trusts the
//! gateway): real clients give a JWT from the demo identity provider as their
//! password; bad tokens, roles the identity may not use and slow clients are
//! refused with clear errors, and nothing reaches a usable server session.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::stack::demo_postgres_filter_config;
use gatehouse_integration::tools::Build;
use gatehouse_integration::{Stack, StackOptions, clients, idp};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

fn login_stack(name: &str) -> Stack {
    let mut config = demo_postgres_filter_config();
    // A short deadline keeps the slow-client test quick.
    config["login"]["deadline_seconds"] = json!(3);
    let options = StackOptions {
        postgres_filter: config,
        ..StackOptions::default()
    };
    Stack::start("it", name, options).expect("stack starts")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The access-log records of type `kind`.
fn records(stack: &Stack, kind: &str) -> Vec<Value> {
    stack
        .access_log_records()
        .unwrap()
        .into_iter()
        .filter(|r| r["type"] == kind)
        .collect()
}

#[test]
fn psql_logs_in_with_a_token_and_every_record_names_the_verified_caller() {
    let stack = login_stack("pg-login-psql");
    let token = stack.token("developer").unwrap();
    let out = stack
        .psql_login(
            "app",
            Some(&token),
            &["-c", "select current_user, count(*) from customers"],
        )
        .unwrap();
    assert_eq!(clients::stdout(&out).trim(), "app|5000");

    let start = stack
        .wait_for_record("the session start", |r| r["type"] == "pg.session_start")
        .unwrap();
    assert_eq!(start["identity"]["subject"], "developer");
    assert_eq!(start["identity"]["groups"], json!(["developers"]));
    assert_eq!(start["identity"]["issuer"], idp::ISSUER);
    assert_eq!(start["identity"]["verified"], true);
    let statement = stack
        .wait_for_record("the statement", |r| r["type"] == "pg.statement")
        .unwrap();
    assert_eq!(statement["identity"]["subject"], "developer");
    assert!(
        !std::fs::read_to_string(&stack.access_log)
            .unwrap()
            .contains(&token),
        "the token never appears in the records"
    );
}

#[test]
fn masking_follows_the_verified_identity_dba_sees_clear_values_developers_do_not() {
    let stack = login_stack("pg-login-masking");
    let clear = stack
        .postgres
        .psql_in("shop", "select email, ssn from customers where id = 7")
        .unwrap();
    let sql = "select email, ssn from customers where id = 7";
    let developer = stack.token("developer").unwrap();
    let masked = clients::stdout(
        &stack
            .psql_login("app", Some(&developer), &["-c", sql])
            .unwrap(),
    );
    assert_ne!(masked.trim(), clear.trim(), "developers see masked values");
    assert!(masked.contains("****"), "{masked}");
    let dba = stack.token("dba").unwrap();
    let unmasked = clients::stdout(
        &stack
            .psql_login("postgres", Some(&dba), &["-c", sql])
            .unwrap(),
    );
    assert_eq!(unmasked.trim(), clear.trim(), "group dba is exempt");
}

#[test]
fn bad_tokens_and_forbidden_roles_get_a_fatal_error_with_the_reason() {
    let stack = login_stack("pg-login-refusals");
    let developer = stack.token("developer").unwrap();
    let expired = stack
        .minter
        .mint_expired(&idp::claims_for("developer").unwrap(), idp::now_unix())
        .unwrap();
    let forged = idp::mint(&stack.minter.impostor().unwrap(), "dba", 600).unwrap();
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("app", Some(&expired), "token rejected: token has expired"),
        (
            "postgres",
            Some(&forged),
            "token rejected: token signature is invalid",
        ),
        (
            "app",
            Some("not-a-token"),
            "token rejected: token is malformed",
        ),
        (
            "postgres",
            Some(&developer),
            "developer may not log in as database role \"postgres\"",
        ),
        ("app", None, "no password supplied"),
    ];
    for (role, password, expected) in cases {
        let out = stack
            .psql_login(role, *password, &["-c", "select 'reached the server'"])
            .unwrap();
        assert!(!out.status.success(), "{expected}: login must fail");
        let message = stderr(&out);
        assert!(
            message.contains(expected),
            "want {expected:?} in: {message}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("reached the server"),
            "no statement runs without a good token"
        );
    }
    let ends = records(&stack, "pg.session_end");
    let refused: Vec<&Value> = ends
        .iter()
        .filter(|r| r["reason"] == "authentication_failed")
        .collect();
    assert_eq!(
        refused.len(),
        4,
        "every refused login is recorded: {ends:?}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r["detail"] == "token refused: role_not_allowed"
                && r["identity"]["subject"] == "developer"),
        "a good token for the wrong role names who tried: {refused:?}"
    );
    let server_log = std::fs::read_to_string(stack.postgres.log_path()).unwrap();
    assert!(!server_log.contains("reached the server"));
    let failures = stack.pg_stat("gatehouse_pg_login_failures_total").unwrap();
    assert_eq!(failures, Some(4), "each refusal is counted");
}

#[test]
fn an_unknown_database_is_refused_without_saying_whether_it_exists() {
    let stack = login_stack("pg-login-probe");
    let token = stack.token("developer").unwrap();
    let out = std::process::Command::new(gatehouse_integration::tools::pg_client("psql").unwrap())
        .args(["-X", "-w", "-At", "-c", "select 1", "-d"])
        .arg(format!(
            "postgresql://127.0.0.1:{}/no_such_db?user=app&sslmode=disable",
            stack.pg_port
        ))
        .env("PGPASSWORD", &token)
        .output()
        .unwrap();
    let message = stderr(&out);
    assert!(message.contains("gatehouse: login failed"), "{message}");
    assert!(!message.contains("does not exist"), "{message}");
}

#[test]
fn keys_rotated_at_the_identity_provider_are_picked_up_without_a_restart() {
    let stack = login_stack("pg-login-rotation");
    let before = stack.token("dba").unwrap();
    stack
        .psql_login("postgres", Some(&before), &["-c", "select 1"])
        .map(|out| clients::stdout(&out))
        .unwrap();

    let rotated = idp::generate_minter().unwrap().with_kid("rotated-key");
    stack.idp.serve_keys(&[&rotated]).unwrap();
    let after = idp::mint(&rotated, "dba", 600).unwrap();
    // The first token with the new key id is refused while the filter fetches
    // the new key set; a retry moments later logs in.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut refusals = Vec::new();
    loop {
        let out = stack
            .psql_login("postgres", Some(&after), &["-c", "select 'rotated'"])
            .unwrap();
        if out.status.success() {
            assert_eq!(clients::stdout(&out).trim(), "rotated");
            break;
        }
        refusals.push(stderr(&out));
        assert!(
            Instant::now() < deadline,
            "the rotated key was never adopted: {refusals:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        refusals
            .iter()
            .all(|m| m.contains("token is signed by an unknown key") && m.contains("try again")),
        "{refusals:?}"
    );
    // The first token verified moments ago, and its key is gone from the set
    // the gateway now holds: it is refused at once, not trusted for a while.
    let out = stack
        .psql_login("postgres", Some(&before), &["-c", "select 'stale'"])
        .unwrap();
    assert!(!out.status.success(), "a token of a removed key logged in");
    assert!(
        stderr(&out).contains("token is signed by an unknown key"),
        "{}",
        stderr(&out)
    );
}

/// Native build only: a login whose token names a key the identity provider
/// just rotated in is held while the key set is fetched, and judged with it,
/// whichever worker it lands on and whoever fetches; a client that leaves while
/// the fetch its login started is in flight holds back no other login. (The
/// Wasm build fetches from its root context and refuses such a login with "try
/// again" meanwhile: the test above covers both builds.)
#[test]
fn logins_with_a_rotated_in_key_wait_for_it_even_when_the_client_that_fetched_it_leaves() {
    let mut config = demo_postgres_filter_config();
    config["login"]["deadline_seconds"] = json!(20);
    config["identity"]["issuers"][0]["remote_jwks"]["min_refetch_seconds"] = json!(2);
    let options = StackOptions {
        postgres_filter: config,
        ..StackOptions::default()
    };
    let stack = Stack::start("it", "pg-login-rotation-held", options).expect("stack starts");
    if stack.build != Build::Native {
        return;
    }
    let before = stack.token("dba").unwrap();
    let out = stack
        .psql_login("postgres", Some(&before), &["-c", "select 1"])
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Past min_refetch_seconds of that fetch: an unknown kid may fetch now.
    std::thread::sleep(Duration::from_millis(2500));

    let rotated = idp::generate_minter().unwrap().with_kid("rotated-key");
    stack.idp.serve_keys(&[&rotated]).unwrap();
    let after = idp::mint(&rotated, "dba", 600).unwrap();
    let login = |sql: &str| {
        stack
            .psql_login_command("postgres", Some(&after), &["-c", sql])
            .unwrap()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    stack.idp.hold_answers(true);
    let requests = stack.idp.requests();
    let mut leaving = login("select 'left'");
    let deadline = Instant::now() + Duration::from_secs(15);
    while stack.idp.requests() == requests {
        assert!(
            Instant::now() < deadline,
            "the login never asked for the new keys"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The leaving client's login waits for its fetch; others arrive meanwhile
    // (on its worker they wait for that fetch, on another they fetch).
    let staying: Vec<Child> = (0..3).map(|_| login("select 'rotated'")).collect();
    std::thread::sleep(Duration::from_millis(300));
    leaving.kill().unwrap();
    leaving.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stack.idp.hold_answers(false);
    for child in staying {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(clients::stdout(&out).trim(), "rotated");
    }
    let out = stack
        .psql_login("postgres", Some(&after), &["-c", "select 'later'"])
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn psycopg_and_jdbc_log_in_with_tokens_and_see_28p01_for_a_bad_one() {
    let stack = login_stack("pg-login-drivers");
    let good = stack.token("ci").unwrap();
    let expired = stack
        .minter
        .mint_expired(&idp::claims_for("ci").unwrap(), idp::now_unix())
        .unwrap();
    let port = stack.pg_port.to_string();
    clients::psycopg(
        &stack,
        "login_check",
        r#"
import sys, psycopg
port, good, expired = sys.argv[1], sys.argv[2], sys.argv[3]
dsn = f"host=127.0.0.1 port={port} dbname=shop user=app sslmode=disable"
with psycopg.connect(dsn, password=good) as conn:
    assert conn.execute("select count(*) from orders where id <= %s", (10,)).fetchone()[0] == 10
try:
    psycopg.connect(dsn, password=expired)
    raise SystemExit("expired token accepted")
except psycopg.OperationalError as e:
    assert "token has expired" in str(e), str(e)
print("ok")
"#,
        &[&port, &good, &expired],
    );
    clients::jdbc(
        &stack,
        "LoginCheck",
        r#"
import java.sql.*;
public class LoginCheck {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], "app", args[1]);
             ResultSet rs = c.createStatement().executeQuery("select current_user")) {
            rs.next();
            if (!"app".equals(rs.getString(1))) throw new AssertionError(rs.getString(1));
        }
        try {
            DriverManager.getConnection(args[0], "app", args[2]).close();
            throw new AssertionError("expired token accepted");
        } catch (SQLException e) {
            if (!"28P01".equals(e.getSQLState())) throw e;
            if (!e.getMessage().contains("token has expired")) throw e;
        }
        System.out.println("ok");
    }
}
"#,
        &[
            &format!("jdbc:postgresql://127.0.0.1:{port}/shop?sslmode=disable"),
            &good,
            &expired,
        ],
    );
}

/// Reads one backend message (tag and body); `None` once the connection closed.
fn read_message(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).ok()?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    stream.read_exact(&mut body).ok()?;
    Some((header[0], body))
}

fn startup(user: &str) -> Vec<u8> {
    let mut body = 196608u32.to_be_bytes().to_vec();
    for part in ["user", user, "database", "shop", ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

#[test]
fn clients_that_skip_or_stall_the_password_exchange_never_get_a_session() {
    let stack = login_stack("pg-login-raw");

    // Asked for a password, a client that sends a query instead is refused.
    let mut eager = TcpStream::connect(("127.0.0.1", stack.pg_port)).unwrap();
    eager
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    eager.write_all(&startup("app")).unwrap();
    let (tag, body) = read_message(&mut eager).expect("password request");
    assert_eq!(
        (tag, body.as_slice()),
        (b'R', &[0, 0, 0, 3][..]),
        "cleartext password request"
    );
    let mut query = vec![b'Q'];
    let sql = b"select 'smuggled'\0";
    query.extend_from_slice(&((sql.len() + 4) as u32).to_be_bytes());
    query.extend_from_slice(sql);
    eager.write_all(&query).unwrap();
    let (tag, body) = read_message(&mut eager).expect("an error");
    assert_eq!(tag, b'E');
    assert!(String::from_utf8_lossy(&body).contains("08P01"));

    // A client that never answers is disconnected at the login deadline (3 s),
    // well before this read gives up.
    let mut silent = TcpStream::connect(("127.0.0.1", stack.pg_port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    silent.write_all(&startup("app")).unwrap();
    assert_eq!(read_message(&mut silent).map(|(tag, _)| tag), Some(b'R'));
    let mut rest = [0u8; 64];
    // A signal to this test process (a child exiting) may interrupt the wait.
    let read = loop {
        match silent.read(&mut rest) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    assert!(
        matches!(read, Ok(0)),
        "the gateway closes a stalled login instead of waiting: {read:?}"
    );

    let server_log = std::fs::read_to_string(stack.postgres.log_path()).unwrap();
    assert!(
        !server_log.contains("smuggled"),
        "the query never reached the server"
    );
}

#[test]
fn the_readiness_probe_is_answered_by_the_filter_and_never_logs_in() {
    let stack = login_stack("readiness");
    let cli = gatehouse_integration::tools::gatehouse_cli().unwrap();
    let probe = |port: u16| {
        std::process::Command::new(&cli)
            .args(["ready", "postgres", &format!("127.0.0.1:{port}")])
            .output()
            .unwrap()
    };
    let ready = probe(stack.pg_port);
    assert!(ready.status.success(), "{}", stderr(&ready));
    let message = String::from_utf8_lossy(&ready.stdout);
    assert!(
        message.starts_with("gatehouse ready: gatehouse postgres filter ")
            && message.contains("policy sha256:"),
        "the answer names the build and the policy: {message}"
    );
    stack
        .wait_for_record("the probe's connection", |r| r["type"] == "pg.connection")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let server_log = std::fs::read_to_string(stack.postgres.log_path()).unwrap();
    assert!(
        !server_log.contains("gatehouse-readiness"),
        "the server never sees the probe's startup"
    );
    assert!(
        records(&stack, "pg.session_start").is_empty()
            && records(&stack, "pg.session_end").is_empty(),
        "a probe is not a session"
    );

    // PostgreSQL's own answer to that startup is not the filter's.
    let direct = probe(stack.postgres.port);
    assert_eq!(direct.status.code(), Some(1), "{}", stderr(&direct));
    assert!(
        stderr(&direct).contains("answered by something else"),
        "{}",
        stderr(&direct)
    );
}
