//! Postgres masking through real Envoy and PostgreSQL with the demo masking
//! (`examples/postgres-masking.json`): what psql, psycopg (text and binary),
//! JDBC and node-postgres receive is masked on every path (columns, aliases, a
//! view, `row_to_json`, COPY, a unique violation's detail, NOTIFY payloads;
//! DO blocks and `pg_notify` of masked values refused), every client decodes
//! it, an exempt identity sees clear values, and the records count what was
//! masked without the values. The hostile cases are in
//! `postgres_masking_hostile.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::stack::example;
use gatehouse_integration::{Stack, StackOptions, tools};
use serde_json::{Value, json};
use std::process::{Command, Output};

/// The demo masking, exempting the `postgres` user: without token login the
/// identity is the startup user.
fn stack(name: &str) -> Stack {
    let mut masking = example("postgres-masking.json");
    masking["exempt"] = json!({ "subjects": ["postgres"] });
    let opts = StackOptions {
        postgres_filter: json!({ "masking": masking }),
        ..StackOptions::default()
    };
    Stack::start("it", name, opts).expect("stack starts")
}

fn psql(stack: &Stack, user: &str, args: &[&str]) -> (String, String) {
    let out: Output = stack.psql(user, args).expect("psql runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Customer 1 as the exempt `postgres` user sees it.
struct Clear {
    email: String,
    card: String,
    ssn: String,
}

fn clear_customer(stack: &Stack) -> Clear {
    let (out, err) = psql(
        stack,
        "postgres",
        &[
            "-F",
            "|",
            "-c",
            "select email, card_number, ssn from customers where id = 1",
        ],
    );
    let parts: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(parts.len(), 3, "{out}{err}");
    assert!(
        parts[0].contains('@') && !parts[0].contains('*'),
        "exempt sees clear: {out}"
    );
    Clear {
        email: parts[0].to_string(),
        card: parts[1].to_string(),
        ssn: parts[2].to_string(),
    }
}

fn assert_masked(text: &str, clear: &Clear) {
    for value in [&clear.email, &clear.card, &clear.ssn] {
        assert!(!text.contains(value.as_str()), "{value} in clear: {text}");
    }
}

#[test]
fn psql_gets_masked_values_on_every_path_and_records_count_them() {
    let stack = stack("pg-masking-psql");
    let clear = clear_customer(&stack);
    let (_, err) = psql(
        &stack,
        "postgres",
        &[
            "-c",
            "create view customer_contacts as select id, ssn as tax_id, email from customers",
            "-c",
            "grant select on customer_contacts to app",
        ],
    );
    assert!(err.is_empty(), "{err}");

    // Columns by rule, and an alias of a masked column.
    let (out, err) = psql(
        &stack,
        "app",
        &[
            "-F",
            "|",
            "-c",
            "select email, card_number, ssn, ssn as x from customers where id = 1",
        ],
    );
    let parts: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(parts.len(), 4, "{out}{err}");
    let domain = clear.email.split('@').nth(1).unwrap();
    assert_eq!(parts[0], format!("{}***@{domain}", &clear.email[..1]));
    assert!(
        parts[1].ends_with(&clear.card[clear.card.len() - 4..]) && parts[1].starts_with("****")
    );
    assert_eq!(parts[2], "****");
    assert_eq!(parts[3], "****", "the alias is masked by the column's rule");

    // A view renaming the masked column, row_to_json, COPY.
    let (out, err) = psql(
        &stack,
        "app",
        &[
            "-c",
            "select tax_id, email from customer_contacts where id = 1",
            "-c",
            "select row_to_json(c) from customers c where id = 1",
            "-c",
            "copy (select email, card_number, ssn from customers where id <= 3) to stdout",
        ],
    );
    assert!(err.is_empty(), "{err}");
    assert_masked(&out, &clear);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("****|"),
        "view column masked by the rule: {out}"
    );
    // A whole row holds masked columns: the JSON computed from it is masked
    // whole, and stays JSON.
    let row: Value = serde_json::from_str(lines[1]).expect("row_to_json stays JSON");
    assert_eq!(row, "****");
    assert_eq!(lines.len(), 5, "three COPY rows: {out}");

    // A unique violation's detail, a refused DO block and pg_notify, and a
    // notification payload the client wrote itself.
    let notify = format!("notify orders, 'ssn {}'", clear.ssn);
    let (out, err) = psql(
        &stack,
        "app",
        &[
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "update customers set email = (select email from customers where id = 2) where id = 1",
            "-c",
            "do $$ begin raise notice 'card %', (select card_number from customers where id = 1); end $$",
            "-c",
            "listen orders",
            "-c",
            "select pg_notify('orders', 'ssn ' || ssn) from customers where id = 1",
            "-c",
            &notify,
        ],
    );
    let all = format!("{out}{err}");
    assert_masked(&all, &clear);
    assert!(
        err.contains("23505") || err.contains("duplicate key"),
        "{err}"
    );
    assert!(
        err.contains("Key (email)=(") && err.contains("***@"),
        "{err}"
    );
    assert!(
        err.contains("refused by masking: a DO block")
            && err.contains("refused by masking: masked values would be passed to pg_notify()"),
        "{err}"
    );
    assert!(all.contains("with payload \"ssn ****\""), "{all}");

    // Records: counts per rule and detector, never the values.
    let record = stack
        .wait_for_record("a masked statement", |r| {
            r["type"] == "pg.statement"
                && r["user"] == "app"
                && r["masking"]["rules"]["customer-ssn"].is_number()
        })
        .unwrap();
    assert!(record["masking"].get("exempt").is_none());
    let exempt = stack
        .wait_for_record("the exempt statement", |r| {
            r["type"] == "pg.statement" && r["masking"]["exempt"] == true
        })
        .unwrap();
    assert_eq!(exempt["user"], "postgres");
    let log = std::fs::read_to_string(&stack.access_log).unwrap();
    assert!(
        !log.contains(&clear.ssn) && !log.contains(&clear.card),
        "clear values in records"
    );
}

const PSYCOPG_SCRIPT: &str = r#"
import sys, psycopg
port = sys.argv[1]
with psycopg.connect(f"host=127.0.0.1 port={port} dbname=shop user=app sslmode=disable") as conn:
    query = "select id, email, card_number, ssn, ssn as x, notes from customers where id <= %s order by id"
    text_rows = conn.execute(query, (200,)).fetchall()
    with conn.cursor(binary=True) as cur:
        cur.execute(query, (200,))
        binary_rows = cur.fetchall()
        cur.execute("select to_jsonb(c), array[c.email, c.ssn] from customers c where id = %s", (1,))
        doc, arr = cur.fetchone()
    for rows in (text_rows, binary_rows):
        assert len(rows) == 200, len(rows)
        for (id_, email, card, ssn, x, notes) in rows:
            assert isinstance(id_, int)
            assert "***@" in email, email
            assert card.startswith("*") and card[-4:].isdigit(), card
            assert ssn == "****" and x == "****", (ssn, x)
    # Computed from masked columns: masked whole (jsonb a JSON string, an
    # array of another type NULL), and decoded all the same.
    assert doc == "****", doc
    assert arr is None, arr
print("ok")
"#;

const JDBC_PROGRAM: &str = r#"
import java.sql.*;
public class MaskingCheck {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], "app", "")) {
            try (PreparedStatement ps = c.prepareStatement(
                    "select id, email, ssn, card_number from customers where id <= ? order by id")) {
                for (int i = 1; i <= 8; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        int n = 0;
                        while (rs.next()) {
                            n++;
                            if (rs.getLong(1) != n) throw new AssertionError("id " + rs.getLong(1));
                            if (!rs.getString(2).contains("***@")) throw new AssertionError(rs.getString(2));
                            if (!"****".equals(rs.getString(3))) throw new AssertionError(rs.getString(3));
                            if (!rs.getString(4).startsWith("*")) throw new AssertionError(rs.getString(4));
                        }
                        if (n != i) throw new AssertionError("rows " + n);
                    }
                }
            }
        }
        System.out.println("ok");
    }
}
"#;

const NODE_SCRIPT: &str = r#"
const { Client } = require('pg');
(async () => {
  const client = new Client({ host: '127.0.0.1', port: Number(process.argv[2]), database: 'shop', user: 'app' });
  await client.connect();
  for (let i = 0; i < 3; i++) {
    const r = await client.query({ name: 'contacts', text: 'select id, email, ssn, row_to_json(c) as doc from customers c where id <= $1 order by id', values: [5] });
    if (r.rows.length !== 5) throw new Error('rows ' + r.rows.length);
    for (const row of r.rows) {
      if (row.ssn !== '****' || !row.email.includes('***@') || row.doc !== '****') throw new Error(JSON.stringify(row));
    }
  }
  await client.end();
  console.log('ok');
})().catch((e) => { console.error(e); process.exit(1); });
"#;

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} could not start: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("ok"),
        "{what}: {text}"
    );
}

#[test]
fn psycopg_jdbc_and_node_postgres_decode_masked_results() {
    let stack = stack("pg-masking-drivers");
    let script = stack.dir.join("masking_psycopg.py");
    std::fs::write(&script, PSYCOPG_SCRIPT).unwrap();
    run(
        "psycopg",
        Command::new("python3")
            .arg(&script)
            .arg(stack.pg_port.to_string())
            .env("PYTHONPATH", tools::psycopg_dir().unwrap()),
    );

    let source = stack.dir.join("MaskingCheck.java");
    std::fs::write(&source, JDBC_PROGRAM).unwrap();
    let classes = stack.dir.join("classes");
    run(
        "javac",
        Command::new("sh").arg("-c").arg(format!(
            "javac -d {} {} && echo ok",
            classes.display(),
            source.display()
        )),
    );
    let classpath = format!(
        "{}:{}",
        classes.display(),
        tools::jdbc_jar().unwrap().display()
    );
    run(
        "JDBC",
        Command::new("java")
            .args(["-cp", &classpath, "MaskingCheck"])
            .arg(format!(
                "jdbc:postgresql://127.0.0.1:{}/shop?sslmode=disable",
                stack.pg_port
            )),
    );

    let script = stack.dir.join("masking_node.js");
    std::fs::write(&script, NODE_SCRIPT).unwrap();
    run(
        "node-postgres",
        Command::new("node")
            .arg(&script)
            .arg(stack.pg_port.to_string())
            .env(
                "NODE_PATH",
                tools::node_pg_dir().unwrap().join("node_modules"),
            ),
    );
    let errors = stack
        .pg_stat("gatehouse_pg_protocol_errors_total")
        .unwrap()
        .unwrap_or(0);
    assert_eq!(errors, 0);
}
