//! Resolving table + column rules to what RowDescription carries: the table's
//! OID and the column's attribute number.
//!
//! OIDs differ per database and change when a table is recreated, so a
//! configured map would go stale silently. Instead each session asks the server
//! once, with one catalog Query the engine sends ahead of the client's first
//! request and whose answers the client never sees. The lookup also follows
//! views (and materialized views, recursively): a view column that is a plain
//! reference to a masked column gets the same rule. Which view column refers to
//! which table column is read from the view's stored query tree (`resorigtbl`
//! and `resorigcol` of its target entries, the same source RowDescription uses),
//! limited to views that `pg_depend` says depend on the masked column. A view
//! column computed from anything (its target entry has no origin) in such a
//! view gets the rule too: the filter cannot tell which expression reads the
//! masked column, so every computed column of the view is masked.
//!
//! Each answer row also names the relation and column, so that lineage (see
//! [`crate::sql::lineage`]) follows view columns by name through expressions.

use super::config::MaskingPolicy;

/// The catalog Query for the policy's table rules; `None` when there are none.
/// Each answer row is `(table oid, attribute number, rule index, relation
/// name, column name)` in text.
pub fn lookup_sql(policy: &MaskingPolicy) -> Option<String> {
    let values: Vec<String> = policy
        .column_rules()
        .map(|(i, schema, table, column)| {
            format!(
                "({},{},{},{i})",
                literal(schema),
                literal(table),
                literal(column)
            )
        })
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(format!(
        "WITH RECURSIVE masked(relid, attnum, rule) AS (\
         SELECT a.attrelid, a.attnum, r.rule \
         FROM (VALUES {}) AS r(nsp, rel, col, rule) \
         JOIN pg_catalog.pg_namespace n ON n.nspname = r.nsp \
         JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = r.rel \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = r.col \
         AND a.attnum > 0 AND NOT a.attisdropped \
         UNION \
         SELECT w.ev_class, t.m[1]::int2, masked.rule FROM masked \
         JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::regclass \
         AND d.refobjid = masked.relid AND d.refobjsubid = masked.attnum \
         AND d.classid = 'pg_catalog.pg_rewrite'::regclass \
         JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid \
         CROSS JOIN LATERAL pg_catalog.regexp_matches(w.ev_action::text, \
         ':resno (\\d+) :resname (?:[^ ]|\\\\ )* :ressortgroupref \\d+ :resorigtbl (\\d+) :resorigcol (\\d+)', 'g') AS t(m) \
         WHERE (t.m[2]::oid = masked.relid AND t.m[3]::int2 = masked.attnum) OR t.m[2] = '0'\
         ) SELECT m.relid::int8, m.attnum, min(m.rule), c.relname, a.attname FROM masked m \
         JOIN pg_catalog.pg_class c ON c.oid = m.relid \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = m.relid AND a.attnum = m.attnum \
         GROUP BY 1, 2, 4, 5",
        values.join(",")
    ))
}

/// A SQL string literal. Names were checked at configuration time to hold no
/// backslash or control character, so doubling quotes is enough whatever
/// `standard_conforming_strings` says.
fn literal(name: &str) -> String {
    format!("'{}'", name.replace('\'', "''"))
}

/// One answer row of the lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub oid: u32,
    pub attnum: i16,
    pub rule: usize,
    pub relation: String,
    pub column: String,
}

/// One answer row; `None` when the row is not one the lookup produces.
pub fn parse_row(values: &[Option<&[u8]>]) -> Option<Resolved> {
    let text = |i: usize| -> Option<&str> { std::str::from_utf8((*values.get(i)?)?).ok() };
    if values.len() != 5 {
        return None;
    }
    let oid = text(0)?
        .parse::<i64>()
        .ok()
        .and_then(|v| u32::try_from(v).ok())?;
    let attnum = text(1)?.parse::<i16>().ok()?;
    let rule = text(2)?.parse::<usize>().ok()?;
    Some(Resolved {
        oid,
        attnum,
        rule,
        relation: text(3)?.to_string(),
        column: text(4)?.to_string(),
    })
}

/// The catalog Query as a wire message.
pub fn query_message(sql: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len() + 6);
    crate::protocol::FrontendMessage::Query {
        sql: sql.as_bytes(),
    }
    .encode(&mut out);
    out
}
