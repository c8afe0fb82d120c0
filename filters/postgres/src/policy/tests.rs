#![allow(clippy::indexing_slicing)]

use super::*;
use gatehouse_core::policy::Action;

const DEFAULT_POLICY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/postgres-policy.json"
));
const CORPUS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/policy/corpus.tsv"
));

fn ctx(identity: &str) -> SessionContext {
    let group = match identity {
        "developer" => Some("developers"),
        "ci" => Some("ci"),
        "agent" => Some("ai-agents"),
        "dba" => Some("dba"),
        "admin" => Some("platform-admins"),
        _ => None,
    };
    SessionContext {
        identity: Identity {
            subject: identity.to_string(),
            groups: group.into_iter().map(str::to_string).collect(),
            verified: true,
            ..Identity::default()
        },
        database: "app".into(),
        role: "app_user".into(),
        ..SessionContext::default()
    }
}

fn config_error(json: &str) -> String {
    match PgPolicy::from_json(json.as_bytes()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

fn action_name(action: Action) -> &'static str {
    action.as_str()
}

/// One corpus row: identity, expected action, expected rule (`-` = the default),
/// SQL (with `\n` standing for a newline).
struct Row<'a> {
    line: usize,
    identity: &'a str,
    action: &'a str,
    rule: &'a str,
    sql: String,
}

fn corpus() -> Vec<Row<'static>> {
    CORPUS
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            let cols: Vec<&str> = l.splitn(4, '\t').collect();
            assert_eq!(
                cols.len(),
                4,
                "corpus line {} needs 4 tab-separated columns",
                i + 1
            );
            Row {
                line: i + 1,
                identity: cols[0],
                action: cols[1],
                rule: cols[2],
                sql: cols[3].replace("\\n", "\n"),
            }
        })
        .collect()
}

#[test]
fn default_policy_loads() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    assert_eq!(policy.version(), "default-2026-11");
}

#[test]
fn corpus_decisions_match_expectations_cold_and_cached() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let mut cache = PolicyCache::default();
    let rows = corpus();
    assert!(
        rows.len() >= 150,
        "corpus has only {} statements",
        rows.len()
    );
    let mut failures = Vec::new();
    for row in &rows {
        let ctx = ctx(row.identity);
        let cold = policy.decide(&ctx, &row.sql);
        let got_rule = cold.decision.rule.as_deref().unwrap_or("-");
        if action_name(cold.decision.action) != row.action || got_rule != row.rule {
            failures.push(format!(
                "line {}: {} {:?}: expected {} by {}, got {} by {} ({:?})",
                row.line,
                row.identity,
                row.sql,
                row.action,
                row.rule,
                action_name(cold.decision.action),
                got_rule,
                sql::analyze(&row.sql, &Limits::default()).statements,
            ));
        }
        for _ in 0..2 {
            let cached = cache.decide(&policy, &ctx, &row.sql);
            if cached != cold {
                failures.push(format!(
                    "line {}: cached verdict differs from cold",
                    row.line
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn one_blocking_statement_blocks_the_text_and_is_named() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let v = policy.decide(&ctx("developer"), "select 1; truncate t; select 2");
    assert_eq!(v.decision.action, Action::Deny);
    assert_eq!(v.blocked_by, Some(1));
    assert_eq!(v.statements.len(), 3);
    assert_eq!(v.statements[0].decision.action, Action::Allow);
    assert_eq!(v.decision.rule.as_deref(), Some("no-truncate"));
    assert_eq!(
        v.decision.message.as_deref(),
        Some("gatehouse: TRUNCATE is not allowed; delete rows with a WHERE clause")
    );
}

#[test]
fn execute_names_the_prepared_statement_it_runs() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let v = policy.decide(&ctx("developer"), "EXECUTE fetch_user(1)");
    assert_eq!(v.decision.action, Action::Allow);
    assert_eq!(v.statements[0].kind, StatementKind::Execute);
    assert_eq!(v.statements[0].prepared_name.as_deref(), Some("fetch_user"));
}

#[test]
fn observed_statements_are_reported_as_observed() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let v = policy.decide(&ctx("admin"), "drop database prod");
    assert_eq!(v.decision.action, Action::Observe);
    assert_eq!(v.decision.rule.as_deref(), Some("admins-observed"));
    assert_eq!(v.blocked_by, None);
}

#[test]
fn empty_text_is_allowed_without_a_rule() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let v = policy.decide(&ctx("nobody"), " -- nothing\n");
    assert_eq!(v.decision, Decision::allow());
    assert!(v.statements.is_empty());
}

#[test]
fn rules_match_on_database_role_subject_and_claims() {
    let json = r#"{
        "default": {"action": "allow"},
        "rules": [
            {"name": "prod-reads-only", "action": "deny", "message": "read-only here",
             "match": {"databases": ["prod*"], "roles": ["app_*"], "kinds": ["insert"]}},
            {"name": "payments-team", "action": "require_approval",
             "approval": {"approvers": ["finance-leads"]},
             "match": {"claims": {"team": "payments"}, "writes": ["billing.*"]}},
            {"name": "bob-secrets", "action": "deny",
             "match": {"subjects": ["bob"], "reads": ["secrets.*", "*.api_keys"]}}
        ]
    }"#;
    let policy = PgPolicy::from_json(json.as_bytes()).unwrap();
    let mut c = ctx("bob");
    c.database = "prod-eu".into();
    let d = |c: &SessionContext, sql: &str| policy.decide(c, sql).decision;
    assert_eq!(
        d(&c, "insert into t values (1)").message.as_deref(),
        Some("read-only here")
    );
    c.database = "staging".into();
    assert_eq!(d(&c, "insert into t values (1)").action, Action::Allow);
    assert_eq!(
        d(&c, "select * from public.api_keys").rule.as_deref(),
        Some("bob-secrets")
    );
    assert_eq!(
        d(&c, "select * from secrets.tokens").rule.as_deref(),
        Some("bob-secrets")
    );
    // An unqualified table may resolve to any schema on the search_path.
    assert_eq!(
        d(&c, "select * from tokens").rule.as_deref(),
        Some("bob-secrets")
    );
    assert_eq!(
        d(&c, "insert into secrets.tokens values (1)").action,
        Action::Allow
    );
    c.identity
        .claims
        .insert("team".into(), serde_json::json!("payments"));
    let v = d(&c, "update billing.invoices set paid = true where id = 1");
    assert_eq!(v.action, Action::RequireApproval);
    assert_eq!(
        v.message.as_deref(),
        Some("statement requires approval by gatehouse policy")
    );
}

#[test]
fn cache_reuses_decisions_across_constants() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let mut cache = PolicyCache::default();
    let c = ctx("developer");
    for aid in 1..=50 {
        let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
        assert_eq!(
            cache.decide(&policy, &c, &sql).decision.action,
            Action::Allow
        );
    }
    assert_eq!(cache.stats(), (49, 1));
    assert_eq!(cache.len(), 1);
}

#[test]
fn cache_keeps_constants_where_the_decision_depends_on_them() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let mut cache = PolicyCache::default();
    let c = ctx("developer");
    let allowed = "select set_config('application_name', 'x', false)";
    let denied = "select set_config('role', 'x', false)";
    assert_eq!(
        cache.decide(&policy, &c, allowed).decision.action,
        Action::Allow
    );
    assert_eq!(
        cache.decide(&policy, &c, denied).decision.action,
        Action::Deny
    );
    assert_eq!(
        cache.decide(&policy, &c, allowed).decision.action,
        Action::Allow
    );
    assert_eq!(
        cache.decide(&policy, &c, denied).decision.action,
        Action::Deny
    );
    let plan_only = "explain (analyze 0) delete from t";
    let runs = "explain (analyze 1) delete from t";
    assert_eq!(
        cache.decide(&policy, &c, plan_only).decision.action,
        Action::Allow
    );
    assert_eq!(
        cache.decide(&policy, &c, runs).decision.action,
        Action::Deny
    );
}

#[test]
fn cache_separates_sessions_to_which_different_rules_apply() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let mut cache = PolicyCache::default();
    assert_eq!(
        cache
            .decide(&policy, &ctx("dba"), "truncate t")
            .decision
            .action,
        Action::Allow
    );
    assert_eq!(
        cache
            .decide(&policy, &ctx("ci"), "truncate t")
            .decision
            .action,
        Action::Deny
    );
    assert_eq!(
        cache
            .decide(&policy, &ctx("agent"), "truncate t")
            .decision
            .action,
        Action::Deny
    );
    assert_eq!(
        cache
            .decide(&policy, &ctx("developer"), "truncate t")
            .decision
            .action,
        Action::Deny
    );
    // developer and agent match the same rules, so they share the entry; ci
    // differs from them (customer writes need approval only for the other two).
    assert_eq!(cache.stats(), (1, 3));
}

#[test]
fn cache_is_bounded_and_dropped_when_the_policy_changes() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let mut cache = PolicyCache::new(8, 1024);
    let c = ctx("developer");
    for i in 0..100 {
        cache.decide(&policy, &c, &format!("select c{i} from t"));
        assert!(cache.len() <= 8);
    }
    // A hot entry survives a stream of one-off statements.
    for i in 0..100 {
        cache.decide(&policy, &c, "select hot from t");
        cache.decide(&policy, &c, &format!("select d{i} from t"));
    }
    let (hits_before, _) = cache.stats();
    cache.decide(&policy, &c, "select hot from t");
    assert_eq!(cache.stats().0, hits_before + 1);
    let other = PgPolicy::from_json(br#"{"default": {"action": "allow"}}"#).unwrap();
    assert_eq!(
        cache.decide(&other, &c, "truncate t").decision.action,
        Action::Allow
    );
    assert_eq!(cache.len(), 1);
    let long = format!("select {} from t", "x, ".repeat(400) + "y");
    cache.decide(&other, &c, &long);
    assert_eq!(cache.len(), 1, "keys over the size cap are not cached");
}

#[test]
fn config_errors_name_their_path() {
    let cases = [
        (
            r#"{"rules": [{"name": "a", "action": "deny", "match": {"kinds": ["select", "selct"]}}]}"#,
            r#"rules[0].match.kinds[1]: unknown statement kind "selct""#,
        ),
        (
            r#"{"rules": [{"name": "a", "action": "allow"}, {"name": "b", "action": "dney"}]}"#,
            r#"rules[1].action: unknown action "dney" (expected allow, deny, observe or require_approval)"#,
        ),
        (
            r#"{"rules": [{"name": "a", "action": "deny"}, {"name": "a", "action": "deny"}]}"#,
            r#"rules[1].name: duplicate rule name "a""#,
        ),
        (
            r#"{"rules": [{"name": "has space", "action": "deny"}]}"#,
            r#"rules[0].name: invalid rule name "has space" (use 1-128 letters, digits, '-', '_' or '.')"#,
        ),
        (
            r#"{"rules": [{"name": "a", "action": "deny", "match": {"properties": {"no_where": true}}}]}"#,
            "rules[0].match.properties.no_where: unknown property \"no_where\" (expected one of without_where, copy_program, copy_server_file, role_change, set_role, alter_system, drop_database, string_syntax_change)",
        ),
        (
            r#"{"rules": [{"name": "a", "action": "deny", "match": {"groups": ["dev", ""]}}]}"#,
            "rules[0].match.groups[1]: pattern must not be empty",
        ),
        (
            r#"{"rules": [{"name": "a", "action": "deny", "match": {"writes": ["public."]}}]}"#,
            "rules[0].match.writes[0]: pattern must not be empty",
        ),
        (
            r#"{"rules": [{"name": "a", "action": "deny", "match": {"claims": {"team": [""]}}}]}"#,
            "rules[0].match.claims.team[0]: pattern must not be empty",
        ),
        (
            r#"{"rules": [{"name": "a", "action": "require_approval"}]}"#,
            r#"rules[0].approval: a require_approval rule must say who approves: {"approvers": ["group"]}"#,
        ),
        (
            r#"{"rules": [{"name": "a", "action": "require_approval", "approval": {"approvers": ["dba"], "approvals": 0}}]}"#,
            "rules[0].approval.approvals: must be 1 to 10",
        ),
        (
            r#"{"rules": [{"name": "a", "action": "require_approval", "approval": {"approvers": ["dba"], "hold": "6m"}}]}"#,
            "rules[0].approval.hold: must be more than 0s and at most 300s",
        ),
        (
            r#"{"rules": [{"name": "a", "action": "deny", "approval": {"approvers": ["dba"]}}]}"#,
            "rules[0].approval: only a require_approval rule takes approval settings",
        ),
        (
            r#"{"default": {"action": "require_approval"}}"#,
            "default.action: require_approval belongs on a named rule with approval settings",
        ),
        (
            r#"{"default": {"action": "maybe"}}"#,
            r#"default.action: unknown action "maybe" (expected allow, deny, observe or require_approval)"#,
        ),
    ];
    for (json, expected) in cases {
        assert_eq!(config_error(json), expected, "for {json}");
    }
}

#[test]
fn a_require_approval_rule_carries_its_approval_settings() {
    let policy = PgPolicy::from_json(
        br#"{"rules": [
            {"name": "plain", "action": "deny"},
            {"name": "writes", "action": "require_approval",
             "approval": {"approvers": ["dba"], "approvals": 2, "valid": "30m", "grant": "window"}}
        ]}"#,
    )
    .unwrap();
    let requirement = policy.approval_requirement("writes").unwrap();
    assert_eq!(requirement.approvers, ["dba"]);
    assert_eq!(requirement.approvals, 2);
    assert_eq!(requirement.valid_seconds, 1800);
    assert_eq!(
        requirement.grant,
        gatehouse_core::approval::GrantKind::Window
    );
    assert!(policy.approval_requirement("plain").is_none());
    assert!(policy.approval_requirement("missing").is_none());
}

#[test]
fn unknown_fields_are_rejected_with_their_location() {
    let e = config_error(
        r#"{"rules": [{"name": "a", "action": "deny", "match": {"kind": ["drop"]}}]}"#,
    );
    assert!(e.starts_with("rules[0].match: unknown field `kind`"), "{e}");
    let e = config_error(r#"{"rules": [{"name": "a", "action": "deny", "mesage": "x"}]}"#);
    assert!(e.starts_with("rules[0]: unknown field `mesage`"), "{e}");
    let e = config_error(r#"{"rulez": []}"#);
    assert!(e.starts_with("unknown field `rulez`"), "{e}");
    assert!(PgPolicy::from_json(b"{\"rules\": [").is_err());
}

#[test]
fn missing_default_and_unparseable_settings_deny() {
    let policy = PgPolicy::from_json(b"{}").unwrap();
    let c = ctx("developer");
    let v = policy.decide(&c, "select 1");
    assert_eq!(v.decision.action, Action::Deny);
    assert_eq!(v.decision.rule, None);
    let v = policy.decide(&c, "frobnicate everything");
    assert_eq!(v.decision.action, Action::Deny);
    assert_eq!(v.decision.rule.as_deref(), Some(UNPARSEABLE_RULE));
}

#[test]
fn policies_with_more_than_64_rules_match_every_rule() {
    let rules: Vec<String> = (0..130)
        .map(|i| {
            format!(r#"{{"name": "r{i}", "action": "deny", "match": {{"subjects": ["user{i}"]}}}}"#)
        })
        .collect();
    let json = format!(
        r#"{{"default": {{"action": "allow"}}, "rules": [{}]}}"#,
        rules.join(",")
    );
    let policy = PgPolicy::from_json(json.as_bytes()).unwrap();
    let mut cache = PolicyCache::default();
    for i in [0, 63, 64, 127, 129] {
        let v = cache.decide(&policy, &ctx(&format!("user{i}")), "select 1");
        assert_eq!(v.decision.rule, Some(format!("r{i}")));
    }
}

#[test]
fn nested_dangerous_statements_are_judged_wherever_they_hide() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let c = ctx("developer");
    for sql in [
        "insert into t with d as (delete from s returning *) select * from d",
        "with d as (delete from s returning *) delete from t where id = 1",
        "with a as (select 1), b as (update t set x = 1 returning *) select * from b",
        "values (1), ((select count(*) from (select pg_read_file('x')) q))",
        "prepare p as with d as (delete from t returning *) select * from d",
    ] {
        let v = policy.decide(&c, sql);
        assert!(v.decision.action.blocks(), "{sql}: {v:?}");
    }
}

/// One row per attack: the spelling changes, the decision does not.
#[test]
fn hostile_spellings_are_judged_as_the_server_reads_them() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let c = ctx("developer");
    let cases = [
        // Names after quoting, case folding, U& escapes and schema qualification.
        (
            "select U&\"\\0070g_terminate_backend\"(1)",
            "no-admin-functions",
        ),
        ("select \"pg_read_file\"('x')", "no-admin-functions"),
        (
            "select PG_CATALOG.\"pg_read_file\"('x')",
            "no-admin-functions",
        ),
        (
            "select U&\"pg!005fread!005ffile\" UESCAPE '!'('x')",
            "no-admin-functions",
        ),
        (
            "select * from U&\"\\0070g_ls_dir\"('.')",
            "no-admin-functions",
        ),
        ("set U&\"r\\006fle\" = postgres", "no-role-switch"),
        ("SET \"role\" TO postgres", "no-role-switch"),
        (
            "select set_config(U&'r\\006fle', 'x', false)",
            "no-role-switch",
        ),
        (
            "select set_config(E'\\x72ole', 'x', false)",
            "no-role-switch",
        ),
        (
            "select set_config('ro'\n'le', 'x', false)",
            "no-role-switch",
        ),
        (
            "set U&\"standard\\005fconforming\\005fstrings\" = off",
            "no-string-syntax-change",
        ),
        // A label the parser library could take for the end of the statement.
        (
            "select 1 as end, pg_read_file('x') from customers",
            "no-admin-functions",
        ),
        // Comment and string boundaries.
        (
            "select 1 --\r; update customers set notes = notes",
            "no-unfiltered-writes",
        ),
        ("select 1 /* /* */ ; */ ; drop table customers", "no-ddl"),
        // Kind and properties from the whole tree.
        ("(select * into t2 from customers)", "no-ddl"),
        (
            "select 1 union all (select * into t2 from customers)",
            "no-ddl",
        ),
        ("with x as (select 1) select * into t3 from x", "no-ddl"),
        (
            "explain analyse delete from customers",
            "no-unfiltered-writes",
        ),
        (
            "explain (analyse) delete from customers",
            "no-unfiltered-writes",
        ),
        (
            "explain (analyze true) delete from customers",
            "no-unfiltered-writes",
        ),
        (
            "explain (analyze 'on') delete from customers",
            "no-unfiltered-writes",
        ),
        (
            "explain (analyze on, verbose) delete from customers",
            "no-unfiltered-writes",
        ),
        (
            "explain (analyze 1) delete from customers",
            "no-unfiltered-writes",
        ),
        (
            "explain (\"analyze\") delete from customers",
            "no-unfiltered-writes",
        ),
        // Writes that can touch every row.
        (
            "update customers set notes = notes where id = id",
            "no-unfiltered-writes",
        ),
        (
            "update customers set notes = notes where 1 = 1 or id = 7",
            "no-unfiltered-writes",
        ),
        (
            "delete from customers where id in (select id from customers)",
            "no-unfiltered-writes",
        ),
        (
            "merge into customers c using customers s on c.id = s.id when matched then update set notes = s.notes",
            "no-unfiltered-writes",
        ),
        (
            "insert into customers select * from customers on conflict (id) do update set notes = excluded.notes",
            "no-unfiltered-writes",
        ),
        // A function in any clause of a statement sqlparser cannot parse.
        (
            "copy customers from stdin where pg_read_file('x') is not null",
            "no-admin-functions",
        ),
        (
            "update customers set notes[pg_read_file('x')::int] = 'x' where id = 1",
            "no-admin-functions",
        ),
        (
            "insert into customers values (1) on conflict ((pg_read_file('x'))) do nothing",
            "no-admin-functions",
        ),
        // Encodings the filter cannot read, whoever asks.
        ("set client_encoding = 'SJIS'", UNSAFE_ENCODING_RULE),
        ("set names big5", UNSAFE_ENCODING_RULE),
        // pg_settings is set_config by another name: any setting, this one too.
        (
            "update pg_settings set setting = 'off' where name = 'standard_conforming_strings'",
            UNSAFE_ENCODING_RULE,
        ),
    ];
    let mut failures = Vec::new();
    for (sql, rule) in cases {
        let v = policy.decide(&c, sql);
        if !v.decision.action.blocks() || v.decision.rule.as_deref() != Some(rule) {
            failures.push(format!("{sql:?}: expected {rule}, got {:?}", v.decision));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // sqlparser stops at a bare END label and would drop the call after it; the
    // statement must not pass (it is refused as unanalyzable).
    let bare_label = policy.decide(&c, "select 1 end, pg_read_file('x')");
    assert!(bare_label.decision.action.blocks(), "{bare_label:?}");
    let dba = policy.decide(
        &ctx("dba"),
        "select set_config('client_encoding', 'gbk', false)",
    );
    assert_eq!(dba.decision.rule.as_deref(), Some(UNSAFE_ENCODING_RULE));
}

/// Valid PostgreSQL that sqlparser's grammar lacks is judged by its content.
#[test]
fn valid_sql_the_parser_lacks_is_judged_not_refused() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let c = ctx("developer");
    for sql in [
        "update t set a[1] = 2 where id = 1",
        "update t set a[1:2] = '{1,2}' where id = 1",
        "insert into t (a[1], b) values (1, 2)",
        "update t set x = 1 where current of c",
        "select 'a'\n'b'",
        "select U&'\\0041'",
        "select U&\"a\" from t",
        "select cast(name 'x' as text)",
        "select trim(both from '  x  '), trim(leading from x)",
        "select 1 where x isnull or y notnull",
        "select * from f() as t(a int, b text)",
        "select f(variadic array[1, 2])",
        "merge into t using s on t.id = s.id when not matched then insert default values",
        "insert into t values (1) on conflict ((lower(e))) do nothing",
        "insert into t values (1) on conflict (lower(e)) where e is not null do update set x = 1",
        "select;",
        "select from t",
        "table t",
        "select * from t where x between symmetric 1 and 2",
        "explain analyse select 1",
        "copy t from stdin where x > 1",
        "select 0x1F, 1_000",
    ] {
        let v = policy.decide(&c, sql);
        assert_eq!(v.decision.action, Action::Allow, "{sql}: {v:?}");
    }
}

/// Everything a decision depends on is in the cache key: the statements a text
/// holds under the session's settings, and token kinds.
#[test]
fn cache_never_lends_a_decision_to_a_text_that_reads_differently() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let mut cache = PolicyCache::default();
    let on = ctx("developer");
    let mut off = ctx("developer");
    off.lexing.standard_conforming_strings = false;
    let smuggler = r"select 'a\'; drop table users; --'";
    assert_eq!(
        cache.decide(&policy, &off, smuggler).decision.action,
        Action::Allow
    );
    assert_eq!(
        cache.decide(&policy, &on, smuggler).decision.action,
        Action::Deny
    );
    assert_eq!(
        cache.decide(&policy, &on, "select 1").decision.action,
        Action::Allow
    );
    let hidden = "select 1 --\r; drop table users";
    assert_eq!(
        cache.decide(&policy, &on, hidden).decision.action,
        Action::Deny
    );
    // A constant that decides is kept in the key: the LIKE pattern of a write.
    let all = "delete from users where name like '%'";
    let some = "delete from users where name like 'a%'";
    assert_eq!(
        cache.decide(&policy, &on, some).decision.action,
        Action::Allow
    );
    assert_eq!(
        cache.decide(&policy, &on, all).decision.action,
        Action::Deny
    );
    assert_eq!(
        cache
            .decide(&policy, &on, "set client_encoding = 'utf8'")
            .decision
            .action,
        Action::Allow
    );
    assert_eq!(
        cache
            .decide(&policy, &on, "set client_encoding = 'sjis'")
            .decision
            .action,
        Action::Deny
    );
}

#[test]
fn unparseable_statements_are_decided_by_rules_about_who_asks_only() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    // A SELECT sqlparser cannot parse cannot drop a database: dba-all decides.
    let select = "SELECT a FROM t WHERE a OPERATOR(~) 'x'";
    assert_eq!(
        policy.decide(&ctx("dba"), select).decision.rule.as_deref(),
        Some("dba-all")
    );
    // Words the filter does not know could be anything, DROP DATABASE included.
    let garbage = "frobnicate the database";
    assert_eq!(
        policy.decide(&ctx("dba"), garbage).decision.rule.as_deref(),
        Some(UNPARSEABLE_RULE)
    );
    assert_eq!(
        policy
            .decide(&ctx("developer"), garbage)
            .decision
            .rule
            .as_deref(),
        Some(UNPARSEABLE_RULE)
    );
    // What the server would refuse to lex is refused for everyone.
    assert_eq!(
        policy.decide(&ctx("dba"), "select 'x").decision.action,
        Action::Deny
    );
    // A rule that might match (it asks for a property a DROP could have) stops the walk.
    let json = r#"{"default": {"action": "allow"}, "rules": [
        {"name": "no-db-drop", "action": "deny", "match": {"properties": {"drop_database": true}}},
        {"name": "everyone", "action": "allow"}]}"#;
    let p = PgPolicy::from_json(json.as_bytes()).unwrap();
    assert_eq!(
        p.decide(&ctx("x"), "select * from t where x operator(~) y")
            .decision
            .rule
            .as_deref(),
        Some("everyone")
    );
    assert_eq!(
        p.decide(&ctx("x"), garbage).decision.rule.as_deref(),
        Some(UNPARSEABLE_RULE)
    );
}

#[test]
fn a_prepare_of_a_statement_needing_approval_is_denied_by_its_rule() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let c = ctx("developer");
    for sql in [
        "PREPARE purge AS DELETE FROM customers WHERE id = 7",
        "prepare p (int) as update customers set name = 'x' where id = $1",
        "PREPARE p AS WITH d AS (DELETE FROM customers WHERE id = 1 RETURNING *) SELECT * FROM d",
        "SELECT 1; PREPARE purge AS DELETE FROM customers WHERE id = 7",
    ] {
        let v = policy.decide(&c, sql);
        assert_eq!(v.decision.action, Action::Deny, "{sql}: {v:?}");
        assert_eq!(v.decision.rule.as_deref(), Some("customer-writes"), "{sql}");
        assert_eq!(v.decision.message.as_deref(), Some(PREPARE_NEEDS_APPROVAL));
    }
    // The statement itself still asks for approval.
    let v = policy.decide(&c, "DELETE FROM customers WHERE id = 7");
    assert_eq!(v.decision.action, Action::RequireApproval);
}

#[test]
fn a_denial_outranks_an_approval_in_the_same_text() {
    let policy = PgPolicy::from_json(DEFAULT_POLICY.as_bytes()).unwrap();
    let c = ctx("developer");
    for (sql, denied) in [
        ("DELETE FROM customers WHERE id = 1; TRUNCATE users", 1),
        ("TRUNCATE users; DELETE FROM customers WHERE id = 1", 0),
    ] {
        let v = policy.decide(&c, sql);
        assert_eq!(v.decision.action, Action::Deny, "{sql}: {v:?}");
        assert_eq!(v.decision.rule.as_deref(), Some("no-truncate"), "{sql}");
        assert_eq!(v.blocked_by, Some(denied), "{sql}");
    }
    let v = policy.decide(
        &c,
        "WITH d AS (DELETE FROM customers WHERE id = 1 RETURNING *) DELETE FROM users",
    );
    assert_eq!(v.decision.action, Action::Deny, "{v:?}");
}
