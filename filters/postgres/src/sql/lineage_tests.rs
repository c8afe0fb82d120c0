use super::*;

const EMAIL: usize = 0;
const CARD: usize = 1;
const SSN: usize = 2;
const SECRET: usize = 3;

fn sources() -> Sources {
    let column = |column: &str, rule| SourceColumn {
        table: "customers".into(),
        column: column.into(),
        rule,
    };
    Sources {
        columns: vec![
            column("email", EMAIL),
            column("card_number", CARD),
            column("ssn", SSN),
        ],
        patterns: vec![(Wildcard::new("*secret*").unwrap(), SECRET)],
    }
}

fn one(sql: &str) -> StatementLineage {
    let mut all = analyze(sql, &sources());
    assert_eq!(all.len(), 1, "{sql}");
    all.remove(0)
}

/// The taints of a result of `n` columns.
fn columns(sql: &str, n: usize) -> Vec<Taint> {
    column_taints(&one(sql).outputs, n)
}

fn rules(t: &Taint) -> Vec<usize> {
    t.rules().collect()
}

#[test]
fn the_builtin_list_is_sorted_for_binary_search() {
    let mut sorted = PURE_BUILTINS.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, PURE_BUILTINS);
}

#[test]
fn expressions_over_masked_columns_carry_their_rules() {
    let cases = [
        ("select replace(ssn, '-', '') from customers", vec![SSN]),
        ("select reverse(card_number) from customers", vec![CARD]),
        ("select card_number::numeric from customers", vec![CARD]),
        ("select cast(ssn as text) from customers", vec![SSN]),
        ("select '2,' || ssn from customers", vec![SSN]),
        (
            "select upper(email) || ssn from customers",
            vec![EMAIL, SSN],
        ),
        (
            "select convert_to(email, 'UTF8') from customers",
            vec![EMAIL],
        ),
        ("select string_agg(ssn, ',') from customers", vec![SSN]),
        ("select array_agg(card_number) from customers", vec![CARD]),
        (
            "select case when true then ssn end from customers",
            vec![SSN],
        ),
        ("select coalesce(null, email) from customers", vec![EMAIL]),
        ("select x.ssn || '' from customers x", vec![SSN]),
        ("select to_tsvector(email) from customers", vec![EMAIL]),
        (
            "select xmlconcat(xmlparse(content ssn)) from customers",
            vec![SSN],
        ),
        (
            "select jsonb_build_object('a', ssn) from customers",
            vec![SSN],
        ),
        ("select array[ssn, email] from customers", vec![EMAIL, SSN]),
        ("select ssn = '123-45-6789' from customers", vec![SSN]),
    ];
    for (sql, expected) in cases {
        let got = columns(sql, 1);
        assert_eq!(rules(&got[0]), expected, "{sql}");
        assert!(!got[0].opaque, "{sql}");
        assert!(one(sql).derived, "{sql}");
    }
}

#[test]
fn whole_rows_and_records_carry_every_rule_of_their_table() {
    for sql in [
        "select c from customers c",
        "select customers from customers",
        "select row(c.*) from customers c",
        "select to_json(c) from customers c",
        "select c::text from customers c",
        "select (c).ssn from customers c",
        "select array(select c from customers c)",
        "select array_agg(c) from customers c",
        "select (select c from customers c limit 1)",
        "select row_to_json(t) from (select ssn, email, card_number from customers) t",
    ] {
        let got = columns(sql, 1);
        assert_eq!(rules(&got[0]), vec![EMAIL, CARD, SSN], "{sql}");
    }
}

#[test]
fn subqueries_ctes_and_derived_tables_are_followed_by_name() {
    let cases = [
        "with t as (select ssn as a from customers) select upper(a) from t",
        "select upper(a) from (select ssn as a from customers) t",
        "select upper(x) from (select ssn from customers) t(x)",
        "select (select max(ssn) from customers)",
        "select lower(upper) from (select upper(ssn) from customers) t",
        "with a as (select ssn s from customers), b as (select s || '' as z from a) select lower(z) from b",
        "select lower(s) from (select ssn s from customers union all select 'x') t",
    ];
    for sql in cases {
        let got = columns(sql, 1);
        assert_eq!(rules(&got[0]), vec![SSN], "{sql}");
    }
}

#[test]
fn wildcards_over_computed_columns_line_up_with_the_result() {
    // `*` over a derived table of known width: each column its own taint.
    let got = columns(
        "select * from (select id, upper(ssn) u from customers) t",
        2,
    );
    assert!(got[0].is_clean());
    assert_eq!(rules(&got[1]), vec![SSN]);
    // `*` over a table is of unknown width: items after it are matched from the end.
    let got = columns("select *, upper(email) from customers", 7);
    assert_eq!(rules(&got[6]), vec![EMAIL]);
    // Before and after.
    let got = columns("select lower(ssn), *, 1 from customers", 8);
    assert_eq!(rules(&got[0]), vec![SSN]);
    assert!(got[7].is_clean());
    // A union of branches, column by column.
    let got = columns("select 1, 'a' union select 2, ssn from customers", 2);
    assert!(got[0].is_clean());
    assert_eq!(rules(&got[1]), vec![SSN]);
}

#[test]
fn shapes_that_cannot_line_up_taint_every_column() {
    // Two statements split differently, or a count mismatch: the union of all.
    let got = columns("select id, upper(ssn) from customers", 3);
    assert!(got.iter().all(|t| rules(t) == vec![SSN]));
}

#[test]
fn plain_columns_and_counts_are_not_derived() {
    let lineage = one("select id, name, count(ssn), count(*) from customers");
    assert!(!lineage.derived);
    let got = column_taints(&lineage.outputs, 4);
    assert!(got[2].is_clean() && got[3].is_clean());
    // A plain reference's rule comes from RowDescription; by name it is tainted.
    assert_eq!(
        rules(&columns("select ssn from customers", 1)[0]),
        vec![SSN]
    );
}

#[test]
fn a_table_named_in_syntax_the_parser_reads_otherwise_is_still_in_play() {
    for sql in [
        "select upper(ssn) from only customers",
        "select upper(ssn) from customers tablesample system (50)",
    ] {
        assert_eq!(rules(&columns(sql, 1)[0]), vec![SSN], "{sql}");
        assert!(one(sql).reads_masked, "{sql}");
    }
    assert!(!one("select upper(name) from orders").reads_masked);
}

#[test]
fn columns_of_other_tables_are_not_tainted_by_name_alone() {
    let got = columns("select upper(ssn) from orders", 1);
    assert!(got[0].is_clean());
    let got = columns("select upper(note_secret) from orders", 1);
    assert_eq!(rules(&got[0]), vec![SECRET]);
}

#[test]
fn unknown_functions_are_opaque_and_masked_arguments_to_them_are_refused() {
    let got = columns("select my_lookup(1)", 1);
    assert!(got[0].opaque);
    assert!(one("select query_to_xml('select ssn from customers', true, false, '')").opaque);
    assert!(columns("select public.upper('x')", 1)[0].opaque);
    for sql in [
        "select pg_notify('c', ssn) from customers",
        "select pg_notify('c', row(c.*)::text) from customers c",
        "select set_config('my.x', card_number, false) from customers",
        "select my_func(ssn) from customers",
        "select setval('s', card_number::bigint) from customers",
        "select 1 from customers where pg_notify('c', email) is null",
        "call my_proc((select ssn from customers limit 1))",
    ] {
        assert!(
            matches!(one(sql).refusal, Some(Refusal::Call(_))),
            "{sql}: {:?}",
            one(sql).refusal
        );
    }
    assert_eq!(one("select pg_notify('c', 'hello')").refusal, None);
}

#[test]
fn writes_of_masked_values_elsewhere_are_refused() {
    for sql in [
        "insert into orders (note) select ssn from customers",
        "insert into orders select * from customers",
        "insert into orders (note) select upper(email) from customers",
        "insert into orders (note) values ((select ssn from customers limit 1))",
        "update customers set notes = ssn",
        "update orders o set note = c.card_number from customers c where c.id = o.customer_id",
        "update customers set (notes, name) = (ssn, email)",
        "create table t as select ssn from customers",
        "create view v as select upper(ssn) from customers",
        "select ssn into t from customers",
        "with x as (insert into orders (note) select ssn from customers returning 1) select * from x",
        "copy (select ssn from customers) to '/tmp/x'",
        "copy customers to '/tmp/x'",
        "merge into orders o using customers c on o.id = c.id when matched then update set note = c.ssn",
        "explain analyze insert into orders (note) select ssn from customers",
        "prepare p as insert into orders (note) select ssn from customers",
        "insert into customers (email) select ssn from customers",
    ] {
        assert!(
            matches!(one(sql).refusal, Some(Refusal::Write(_))),
            "{sql}: {:?}",
            one(sql).refusal
        );
    }
}

#[test]
fn writes_that_keep_values_under_their_rule_are_allowed() {
    for sql in [
        "update customers set ssn = upper(ssn) where id = 1",
        "update customers set email = lower(email) where id = 1",
        "insert into customers (ssn) select ssn from customers where id = 1",
        "insert into orders (customer_id) select id from customers",
        "update orders set note = 'x' where id = 1",
        "delete from customers where ssn = '123-45-6789'",
        "copy customers to stdout",
    ] {
        assert_eq!(one(sql).refusal, None, "{sql}");
    }
}

#[test]
fn code_the_filter_cannot_read_is_refused() {
    assert!(matches!(
        one("do $$ begin raise notice '%', (select ssn from customers limit 1); end $$").refusal,
        Some(Refusal::Code(_))
    ));
    assert!(matches!(
        one("create function f() returns text language sql as $$ select ssn from customers $$")
            .refusal,
        Some(Refusal::Code(_))
    ));
}

#[test]
fn statements_that_cannot_be_followed_are_opaque() {
    for sql in ["execute p", "fetch 10 from c", "call p()"] {
        assert_eq!(one(sql).outputs, Outputs::Opaque, "{sql}");
    }
    for sql in [
        "explain select ssn from customers",
        "show search_path",
        "begin",
    ] {
        assert_eq!(one(sql).outputs, Outputs::Clean, "{sql}");
    }
    // Unparseable: refused when it names masked data, opaque otherwise.
    let odd = one("select ssn from customers where x operator(pg_catalog.~~) 'a' frobnicate");
    assert_eq!(odd.outputs, Outputs::Opaque);
    assert_eq!(odd.refusal, Some(Refusal::Unreadable));
    assert_eq!(one("frobnicate the widgets").refusal, None);
}

#[test]
fn names_redefined_behind_the_protocol_are_flagged() {
    for sql in [
        "prepare p as select 1",
        "deallocate all",
        "discard all",
        "declare c cursor for select 1",
        "close c",
    ] {
        assert!(one(sql).redefines_names, "{sql}");
    }
    assert!(!one("select 1").redefines_names);
}

#[test]
fn each_statement_of_a_text_gets_its_own_lineage() {
    let all = analyze(
        "select upper(ssn) from customers; select 1; select email || '' from customers",
        &sources(),
    );
    assert_eq!(all.len(), 3);
    assert_eq!(rules(&column_taints(&all[0].outputs, 1)[0]), vec![SSN]);
    assert!(column_taints(&all[1].outputs, 1)[0].is_clean());
    assert_eq!(rules(&column_taints(&all[2].outputs, 1)[0]), vec![EMAIL]);
}

#[test]
fn returning_lists_are_outputs() {
    let got = columns(
        "update customers set name = 'x' where id = 1 returning upper(ssn)",
        1,
    );
    assert_eq!(rules(&got[0]), vec![SSN]);
}

#[test]
fn everyday_reads_of_masked_columns_are_masked_not_refused() {
    for sql in [
        "select count(*) from customers",
        "select current_user, count(*) from customers",
        "select count(distinct ssn), max(id) from customers",
        "select row(c.*) from customers c",
        "select (c).ssn from customers c",
        "select array[ssn] from customers",
        "select array(select ssn from customers)",
        "select exists(select 1 from customers where ssn = 'x')",
        "select coalesce(ssn, ''), nullif(email, '') from customers",
        "select now(), ssn from customers",
        "select ssn::text, cast(email as varchar(20)) from customers",
        "select extract(year from now()), ssn from customers",
        "select substring(ssn from 1 for 3), position('-' in ssn) from customers",
        "select trim(both ' ' from ssn), overlay(card_number placing 'x' from 1 for 1) from customers",
        "select ssn is null, ssn like '1%', ssn in ('a', 'b'), ssn between 'a' and 'b' from customers",
        "select array_agg(c), json_agg(c), to_json(c), row_to_json(c) from customers c",
        "select string_agg(email, ',' order by id) from customers",
        "select greatest(ssn, 'a'), least(email, 'b') from customers",
        "select case when ssn > '5' then email else card_number end from customers",
        "select lag(ssn) over (order by id), row_number() over () from customers",
        "select * from customers c join orders o on o.customer_id = c.id",
        "select jsonb_build_object('s', ssn)->>'s' from customers",
        "select (array[ssn, email])[1] from customers",
        "select ssn collate \"C\" from customers",
        "select date_trunc('day', now()), upper(email) from customers",
        "select email from customers where id = any(array[1, 2])",
        "select interval '1 day', ssn from customers",
        "select 1 from customers having count(*) > 1",
        "select distinct on (id) ssn from customers",
    ] {
        let lineage = one(sql);
        assert_eq!(lineage.refusal, None, "{sql}");
    }
}

#[test]
fn statements_are_read_as_the_server_lexes_them() {
    // Names the server decodes are the names lineage follows.
    for sql in [
        r#"select upper(U&"\0073sn") from customers"#,
        r#"select upper("ssn") from U&"cust!006fmers" uescape '!'"#,
        "select upper(ssn) --\rfrom customers",
        "select upper(ssn) /* /* */ from */ from customers",
    ] {
        let lineage = one(sql);
        assert_eq!(lineage.refusal, None, "{sql}");
        assert_eq!(
            rules(&column_taints(&lineage.outputs, 1)[0]),
            vec![SSN],
            "{sql}"
        );
    }
    // A label `end` does not end the statement for lineage either.
    let end = one("select 1 end, upper(ssn) from customers");
    assert_eq!(end.refusal, Some(Refusal::Unreadable));
    // A text the server refuses at lexing is unreadable.
    assert_eq!(
        one("select upper(ssn) from customers where x = 'a").refusal,
        Some(Refusal::Unreadable)
    );
}

#[test]
fn expressions_left_out_of_the_canonical_text_are_followed() {
    // An assignment subscript computed from a masked column decides where a
    // write lands.
    let subscript = one("update orders set tags[(select length(ssn) from customers)] = 'x'");
    assert_eq!(subscript.refusal, Some(Refusal::Unreadable));
    let leaky_call =
        one("update orders set tags[length(pg_notify('c', (select ssn from customers)))] = 'x'");
    assert_eq!(leaky_call.refusal, Some(Refusal::Call("pg_notify".into())));
    // Plain ones are fine.
    assert_eq!(
        one("update customers set tags[1] = 'x' where id = 1").refusal,
        None
    );
}
