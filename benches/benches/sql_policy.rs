//! The Postgres policy decision path with the default policy: cold (tokenize, parse,
//! judge) and warm (fingerprint hit in the decision cache), on pgbench -S SQL and an
//! ORM-shaped query. Each warm iteration varies the constants, as real traffic does.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use gatehouse_core::identity::Identity;
use gatehouse_postgres::policy::{PgPolicy, PolicyCache, SessionContext};

const POLICY: &str = include_str!("../../examples/postgres-policy.json");

const PGBENCH_SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 19872;";
const ORM_QUERY: &str = r#"SELECT "auth_user"."id", "auth_user"."password", "auth_user"."last_login", "auth_user"."is_superuser", "auth_user"."username", "auth_user"."email" FROM "auth_user" INNER JOIN "auth_user_groups" ON ("auth_user"."id" = "auth_user_groups"."user_id") WHERE ("auth_user_groups"."group_id" = 7 AND "auth_user"."is_active" AND "auth_user"."username" = 'alice') ORDER BY "auth_user"."id" ASC LIMIT 21"#;

fn developer() -> SessionContext {
    SessionContext {
        identity: Identity {
            subject: "developer".into(),
            groups: vec!["developers".into()],
            verified: true,
            ..Identity::default()
        },
        database: "app".into(),
        role: "app_user".into(),
        ..SessionContext::default()
    }
}

fn bench(c: &mut Criterion) {
    // A policy that does not parse, or a path that refuses these reads, would
    // time something other than the decision this bench is about.
    let policy = PgPolicy::from_json(POLICY.as_bytes())
        .unwrap_or_else(|e| panic!("examples/postgres-policy.json does not parse: {e}"));
    let ctx = developer();
    for (name, sql) in [("pgbench_select", PGBENCH_SELECT), ("orm_query", ORM_QUERY)] {
        let verdict = policy.decide(&ctx, sql);
        assert!(
            !verdict.decision.action.blocks() && verdict.statements.len() == 1,
            "{name} must be one allowed statement: {verdict:?}"
        );
        c.bench_function(&format!("sql_policy/{name}/cold"), |b| {
            b.iter(|| policy.decide(black_box(&ctx), black_box(sql)))
        });
        let mut cache = PolicyCache::default();
        let variants: Vec<String> = (0..64)
            .map(|i| {
                sql.replace("19872", &i.to_string())
                    .replace("= 7", &format!("= {i}"))
            })
            .collect();
        let mut i = 0;
        c.bench_function(&format!("sql_policy/{name}/warm"), |b| {
            b.iter(|| {
                i = (i + 1) % variants.len();
                let sql = variants.get(i).map_or(sql, String::as_str);
                cache.decide(&policy, black_box(&ctx), black_box(sql))
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
