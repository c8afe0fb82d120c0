//! Column rules on COPY TO STDOUT through real Envoy and PostgreSQL: the demo
//! masking plus a `redact` rule on `customers.name`, a column no detector
//! recognizes. psql's COPY and `\copy` (whole table, a column list, a query
//! with aliases in CSV with a header, inside a transaction) and psycopg's
//! binary and text COPY all get rule columns masked and other columns intact;
//! the exempt `postgres` user gets clear values.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::stack::example;
use gatehouse_integration::{Stack, StackOptions, clients};
use serde_json::json;

fn stack(name: &str) -> Stack {
    let mut masking = example("postgres-masking.json");
    masking["rules"].as_array_mut().unwrap().push(json!({
        "name": "customer-name", "table": "customers", "column": "name", "style": "redact"
    }));
    masking["exempt"] = json!({ "subjects": ["postgres"] });
    let opts = StackOptions {
        postgres_filter: json!({ "masking": masking }),
        ..StackOptions::default()
    };
    Stack::start("it", name, opts).expect("stack starts")
}

fn psql(stack: &Stack, user: &str, args: &[&str]) -> (String, String) {
    let out = stack.psql(user, args).expect("psql runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Customer 1's clear values, as COPY prints them to the exempt user:
/// id, name, email, card_number, ssn, notes.
fn clear_customer(stack: &Stack) -> Vec<String> {
    let (out, err) = psql(
        stack,
        "postgres",
        &[
            "-c",
            "copy (select * from customers where id = 1) to stdout",
        ],
    );
    let fields: Vec<String> = out.trim_end().split('\t').map(String::from).collect();
    assert_eq!(fields.len(), 6, "{out}{err}");
    assert!(
        fields[1].contains(' ') && fields[2].contains('@') && !out.contains("****"),
        "the exempt user sees clear values: {out}"
    );
    fields
}

/// Customer 1's line of a text COPY.
fn first_row(out: &str) -> Vec<&str> {
    out.lines()
        .find(|l| l.starts_with("1\t"))
        .unwrap_or_else(|| panic!("no row for customer 1: {out}"))
        .split('\t')
        .collect()
}

#[test]
fn copy_to_stdout_masks_rule_columns_in_every_format() {
    let stack = stack("pg-copy-masking");
    let clear = clear_customer(&stack);
    let (id, name, email, card, ssn) = (&clear[0], &clear[1], &clear[2], &clear[3], &clear[4]);
    let domain = email.split('@').nth(1).unwrap();
    let masked_email = format!("{}***@{domain}", &email[..1]);

    // The whole table, text format.
    let (out, err) = psql(&stack, "app", &["-c", "copy customers to stdout"]);
    assert!(err.is_empty(), "{err}");
    assert_eq!(out.lines().count(), 5000);
    let row = first_row(&out);
    assert_eq!(row[0], id.as_str(), "other columns intact");
    assert_eq!(row[1], "****", "a column only its rule protects");
    assert_eq!(row[2], masked_email);
    assert!(row[3].starts_with('*') && row[3].ends_with(&card[card.len() - 4..]));
    assert_eq!(row[4], "****");
    for value in [name, email, card, ssn] {
        assert!(!out.contains(value.as_str()), "{value} in clear");
    }

    // A column list through \copy, inside a transaction: the COPY of a
    // missing table then fails with its own error, not an aborted transaction.
    let (out, err) = psql(
        &stack,
        "app",
        &[
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "begin",
            "-c",
            "\\copy customers (id, name, ssn) to stdout",
            "-c",
            "copy nosuch to stdout",
            "-c",
            "rollback",
        ],
    );
    let row = first_row(&out);
    assert_eq!(row, [id.as_str(), "****", "****"], "{out}");
    assert!(
        err.contains("relation \"nosuch\" does not exist"),
        "the COPY's own error: {err}"
    );
    assert!(!err.contains("current transaction is aborted"), "{err}");

    // A query with aliases, CSV with a header.
    let (out, err) = psql(
        &stack,
        "app",
        &[
            "-c",
            "copy (select id, name as who, ssn as x, email, notes from customers \
             where id <= 3 order by id) to stdout with (format csv, header)",
        ],
    );
    assert!(err.is_empty(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "id,who,x,email,notes", "the header passes");
    assert!(
        lines[1].starts_with(&format!("1,\"****\",\"****\",\"{masked_email}\",")),
        "{out}"
    );
    assert_eq!(lines.len(), 4, "{out}");

    // The old option syntax, in an order of its own.
    let (out, err) = psql(
        &stack,
        "app",
        &[
            "-c",
            "\\copy customers (id, name, ssn, notes) to stdout csv header delimiter ';' null 'none'",
        ],
    );
    assert!(err.is_empty(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "id;name;ssn;notes");
    let row = lines.iter().find(|l| l.starts_with("1;")).expect("row 1");
    assert!(row.starts_with("1;\"****\";\"****\";"), "{row}");
    assert!(
        lines.iter().any(|l| l.ends_with(";none")),
        "NULL notes keep the NULL string: {out}"
    );

    // The exempt user's COPY is clear.
    let (out, _) = psql(
        &stack,
        "postgres",
        &["-c", "copy customers (id, name, ssn) to stdout"],
    );
    assert_eq!(first_row(&out), [id.as_str(), name.as_str(), ssn.as_str()]);

    // psycopg: binary COPY parsed into typed values, and text COPY.
    let port = stack.pg_port.to_string();
    clients::psycopg(&stack, "copy_masking", PSYCOPG_COPY, &[&port, name, ssn]);

    let record = stack
        .wait_for_record("a masked COPY", |r| {
            r["type"] == "pg.statement"
                && r["user"] == "app"
                && r["masking"]["rules"]["customer-name"].as_u64() >= Some(5000)
        })
        .unwrap();
    assert!(record["masking"]["rules"]["customer-ssn"].as_u64() >= Some(5000));
    let log = std::fs::read_to_string(&stack.access_log).unwrap();
    assert!(!log.contains(ssn.as_str()), "clear values in records");
    let errors = stack
        .pg_stat("gatehouse_pg_protocol_errors_total")
        .unwrap()
        .unwrap_or(0);
    assert_eq!(errors, 0);
}

const PSYCOPG_COPY: &str = r#"
import sys, psycopg
port, clear_name, clear_ssn = sys.argv[1], sys.argv[2], sys.argv[3]
with psycopg.connect(f"host=127.0.0.1 port={port} dbname=shop user=app sslmode=disable") as conn:
    with conn.cursor() as cur:
        rows = []
        with cur.copy("COPY customers (id, name, ssn, email, notes) TO STDOUT (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "text", "text", "text"])
            rows = list(copy.rows())
        assert len(rows) == 5000, len(rows)
        for (id_, name, ssn, email, notes) in rows:
            assert isinstance(id_, int)
            assert name == "****" and ssn == "****", (name, ssn)
            assert "***@" in email, email
        with cur.copy("COPY (SELECT id, name, ssn FROM customers WHERE id <= 10) TO STDOUT") as copy:
            text_rows = list(copy.rows())
        assert len(text_rows) == 10, text_rows
        for (id_, name, ssn) in text_rows:
            assert id_.isdigit() and name == "****" and ssn == "****", (id_, name, ssn)
        with cur.copy("COPY customers TO STDOUT (FORMAT BINARY)") as copy:
            data = b"".join(bytes(block) for block in copy)
        assert clear_name.encode() not in data and clear_ssn.encode() not in data
print("ok")
"#;

#[test]
fn a_prepared_copy_through_the_extended_protocol_is_masked_each_time_it_runs() {
    use futures_util::StreamExt;
    let stack = stack("pg-copy-masking-extended");
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
            tokio_postgres::NoTls,
        )
        .await
        .expect("connects through Envoy");
        tokio::spawn(connection);
        // tokio-postgres prepares the COPY (Parse), then binds and runs it.
        let statement = client
            .prepare("COPY customers (id, name, ssn) TO STDOUT")
            .await
            .unwrap();
        for _ in 0..2 {
            let chunks: Vec<_> = client.copy_out(&statement).await.unwrap().collect().await;
            let bytes: Vec<u8> = chunks
                .into_iter()
                .flat_map(|c| c.unwrap().to_vec())
                .collect();
            let text = String::from_utf8(bytes).unwrap();
            assert_eq!(text.lines().count(), 5000);
            assert!(
                text.lines().all(|line| {
                    let fields: Vec<&str> = line.split('\t').collect();
                    fields.len() == 3
                        && fields[0].parse::<i64>().is_ok()
                        && fields[1] == "****"
                        && fields[2] == "****"
                }),
                "{}",
                &text[..200]
            );
        }
    });
}
