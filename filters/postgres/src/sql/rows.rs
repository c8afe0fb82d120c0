//! Whether a WHERE clause constrains which rows of its target a write touches.
//!
//! "Writes need a WHERE" is about statements that can touch every row, so a
//! condition counts only when it can tell the target's rows apart. Erring towards
//! "touches every row":
//! - constants (`true`, `1 = 1`, `$1 = $1`) and `IS NOT NULL` constrain nothing;
//! - a comparison constrains when exactly one side depends on the target's rows:
//!   `id = 5` and `t.id = s.id` do; `id = id`, `lower(a) = lower(a)`, `a = b` and
//!   `id IN (SELECT id FROM t)` (a subquery reading the target) do not;
//! - `AND` constrains when either side does, `OR` only when both do, `NOT` when its
//!   operand does;
//! - `EXISTS (…)` constrains only when correlated with the target, and not reading it;
//! - `LIKE '%'` constrains nothing;
//! - any other expression constrains when it depends on the target's columns.

use super::ast::{RowProbe, Target, probe, probe_query};
use sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value};

/// Whether `selection` (a WHERE clause, if any) constrains `target`'s rows. Sets
/// `literal_sensitive` when the answer depended on a constant's value (a LIKE
/// pattern).
pub(super) fn constrains(
    selection: Option<&Expr>,
    target: &Target,
    literal_sensitive: &mut bool,
) -> bool {
    selection.is_some_and(|e| condition(e, target, literal_sensitive))
}

fn depends_on_target(p: &RowProbe) -> bool {
    p.target_columns || p.reads_target
}

/// Exactly one side depends on the target's rows.
fn one_side(left: &RowProbe, right: &RowProbe) -> bool {
    depends_on_target(left) != depends_on_target(right)
}

fn sides(left: &[&Expr], right: &[&Expr], target: &Target) -> bool {
    one_side(&probe(left, target), &probe(right, target))
}

fn matches_everything(pattern: &Expr) -> bool {
    match pattern {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => !s.is_empty() && s.chars().all(|c| c == '%'),
            _ => false,
        },
        Expr::Nested(inner) => matches_everything(inner),
        _ => false,
    }
}

fn condition(expr: &Expr, t: &Target, ls: &mut bool) -> bool {
    match expr {
        Expr::Nested(inner) => condition(inner, t, ls),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => condition(left, t, ls) || condition(right, t, ls),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Or,
            right,
        } => condition(left, t, ls) && condition(right, t, ls),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => condition(expr, t, ls),
        Expr::BinaryOp { left, right, .. }
        | Expr::IsDistinctFrom(left, right)
        | Expr::IsNotDistinctFrom(left, right)
        | Expr::AnyOp { left, right, .. }
        | Expr::AllOp { left, right, .. } => sides(&[left], &[right], t),
        Expr::Like { expr, pattern, .. }
        | Expr::ILike { expr, pattern, .. }
        | Expr::SimilarTo { expr, pattern, .. } => {
            *ls |= matches!(pattern.as_ref(), Expr::Value(_));
            !matches_everything(pattern) && sides(&[expr], &[pattern], t)
        }
        Expr::InList { expr, list, .. } => {
            let list: Vec<&Expr> = list.iter().collect();
            sides(&[expr], &list, t)
        }
        Expr::InSubquery { expr, subquery, .. } => {
            one_side(&probe(&[expr], t), &probe_query(subquery, t))
        }
        Expr::Between {
            expr, low, high, ..
        } => sides(&[expr], &[low, high], t),
        Expr::IsNotNull(_) | Expr::IsNotUnknown(_) | Expr::Value(_) => false,
        Expr::Exists { subquery, .. } => {
            let p = probe_query(subquery, t);
            p.correlated && !p.reads_target
        }
        other => {
            let p = probe(&[other], t);
            p.target_columns || p.correlated
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use crate::sql::{Limits, analyze};

    fn touches_every_row(sql: &str) -> bool {
        let a = analyze(sql, &Limits::default());
        assert_eq!(a.statements.len(), 1, "{sql}");
        let s = &a.statements[0];
        assert!(!s.unparseable, "{sql}");
        s.properties.without_where
    }

    #[test]
    fn conditions_that_cannot_tell_rows_apart_count_as_none() {
        for sql in [
            "update t set a = 1",
            "update t set a = 1 where true",
            "update t set a = 1 where 1 = 1",
            "update t set a = 1 where id = id",
            "update t set a = 1 where t.id = t.id",
            "update t x set a = 1 where x.id = id",
            "update t set a = 1 where lower(n) = lower(n)",
            "update t set a = 1 where id = id or id = 5",
            "update t set a = 1 where id = 5 or true",
            "update t set a = 1 where not (id <> id)",
            "update t set a = 1 where id is not null",
            "update t set a = 1 where n like '%'",
            "update t set a = 1 where id in (select id from t)",
            "update t set a = 1 where id = any (select id from public.t)",
            "update t set a = 1 where exists (select 1)",
            "update t set a = 1 where $1 = $1",
            "update t set a = 1 where 'x' in ('x', 'y')",
            "delete from t where id between id and id",
            "delete from t",
            "delete from t where (true)",
            "merge into t using s on t.id = s.id when matched then update set a = 1",
            "merge into t using s on t.id = s.id when matched and s.x = 1 then delete",
            "insert into t select * from t on conflict (id) do update set a = excluded.a",
            "insert into t as x select * from public.t on conflict (id) do update set a = 1",
            "with d as (select 1) update t set a = 1 where 1 = 1",
        ] {
            assert!(touches_every_row(sql), "{sql}");
        }
    }

    #[test]
    fn conditions_that_select_rows_constrain() {
        for sql in [
            "update t set a = 1 where id = 5",
            "update t set a = 1 where id = $1",
            "update t set a = 1 where t.id = s.id",
            "update t set a = 1 from s where t.id = s.id",
            "update t set a = 1 where id in (1, 2)",
            "update t set a = 1 where id in (select id from s)",
            "update t set a = 1 where id = 5 and true",
            "update t set a = 1 where active",
            "update t set a = 1 where not archived",
            "update t set a = 1 where deleted_at is null",
            "update t set a = 1 where n like 'a%'",
            "update t set a = 1 where exists (select 1 from s where s.id = t.id)",
            "update t set a = 1 where id = (select max(id) from s)",
            "delete from t where id between 1 and 5",
            "delete from t using s where t.id = s.id",
            "update t set a = 1 where current of c",
            "merge into t using s on t.id = s.id when not matched then insert values (s.id)",
            "insert into t select * from s on conflict (id) do update set a = excluded.a",
            "insert into t values (1) on conflict (id) do update set a = excluded.a",
        ] {
            assert!(!touches_every_row(sql), "{sql}");
        }
    }
}
