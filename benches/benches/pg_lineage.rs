//! Masking lineage: what analysing one statement's SQL costs (lexing, the
//! canonical text, sqlparser parse, name resolution, sinks), per statement
//! text, on pgbench -S SQL, an ORM-shaped query and a query over masked
//! columns, next to the policy's cold decision on the same text (one more
//! parse of the same size). Lineage runs once per Query or Parse text when
//! column rules are configured.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use gatehouse_core::identity::Identity;
use gatehouse_postgres::policy::{PgPolicy, SessionContext};
use gatehouse_postgres::sql::lineage::{self, SourceColumn, Sources};

const POLICY: &str = include_str!("../../examples/postgres-policy.json");

const PGBENCH_SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 19872;";
const ORM_QUERY: &str = r#"SELECT "auth_user"."id", "auth_user"."password", "auth_user"."last_login", "auth_user"."is_superuser", "auth_user"."username", "auth_user"."email" FROM "auth_user" INNER JOIN "auth_user_groups" ON ("auth_user"."id" = "auth_user_groups"."user_id") WHERE ("auth_user_groups"."group_id" = 7 AND "auth_user"."is_active" AND "auth_user"."username" = 'alice') ORDER BY "auth_user"."id" ASC LIMIT 21"#;
const MASKED_QUERY: &str = "WITH recent AS (SELECT customer_id, max(created_at) AS at FROM orders GROUP BY 1) \
     SELECT c.id, upper(c.email), replace(c.ssn, '-', ''), row_to_json(c), r.at \
     FROM customers c JOIN recent r ON r.customer_id = c.id WHERE c.id < 100";

fn demo_sources() -> Sources {
    let column = |column: &str, rule| SourceColumn {
        table: "customers".into(),
        column: column.into(),
        rule,
    };
    Sources {
        columns: vec![
            column("email", 0),
            column("card_number", 1),
            column("ssn", 2),
        ],
        patterns: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let Ok(policy) = PgPolicy::from_json(POLICY.as_bytes()) else {
        return;
    };
    let ctx = SessionContext {
        identity: Identity {
            subject: "developer".into(),
            groups: vec!["developers".into()],
            verified: true,
            ..Identity::default()
        },
        database: "shop".into(),
        role: "app".into(),
        ..SessionContext::default()
    };
    let sources = demo_sources();
    for (name, sql) in [
        ("pgbench_select", PGBENCH_SELECT),
        ("orm_query", ORM_QUERY),
        ("masked_query", MASKED_QUERY),
    ] {
        c.bench_function(&format!("pg_lineage/{name}/lineage"), |b| {
            b.iter(|| lineage::analyze(black_box(sql), black_box(&sources)))
        });
        c.bench_function(&format!("pg_lineage/{name}/policy_cold"), |b| {
            b.iter(|| policy.decide(black_box(&ctx), black_box(sql)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
