//! Result columns, their types, and masking one value so that it stays valid
//! for its column's type and format.

use super::config::MaskingPolicy;
use crate::sql::lineage::Taint;
use gatehouse_core::mask::{DetectorCounts, MaskStyle, Masked, Masker, ValueType};
use std::borrow::Cow;
use std::collections::HashMap;

/// Most columns one RowDescription may describe (Postgres allows 1664).
pub const MAX_COLUMNS: usize = 1664;

/// One field of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub table_oid: u32,
    pub attnum: i16,
    pub type_oid: u32,
    pub format: i16,
}

/// Parses a RowDescription body.
pub fn parse_row_description(body: &[u8]) -> Result<Vec<Field>, String> {
    let bad = |what: &str| format!("malformed RowDescription: {what}");
    let (count, mut rest) = body
        .split_at_checked(2)
        .ok_or_else(|| bad("no field count"))?;
    let count = i16::from_be_bytes([
        count.first().copied().unwrap_or(0),
        count.get(1).copied().unwrap_or(0),
    ]);
    let count = usize::try_from(count).map_err(|_| bad("negative field count"))?;
    if count > MAX_COLUMNS {
        return Err(bad("too many fields"));
    }
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| bad("unterminated name"))?;
        let (name, after) = rest.split_at(end);
        let after = after.get(1..).unwrap_or_default();
        let (fixed, tail) = after
            .split_at_checked(18)
            .ok_or_else(|| bad("truncated field"))?;
        let u32_at = |i: usize| {
            fixed
                .get(i..i + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map_or(0, u32::from_be_bytes)
        };
        let i16_at = |i: usize| {
            fixed
                .get(i..i + 2)
                .and_then(|b| <[u8; 2]>::try_from(b).ok())
                .map_or(0, i16::from_be_bytes)
        };
        fields.push(Field {
            name: name.to_vec(),
            table_oid: u32_at(0),
            attnum: i16_at(4),
            type_oid: u32_at(6),
            format: i16_at(16),
        });
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(fields)
}

/// What the masker needs to know about a column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeClass {
    /// text, varchar, char(n), name, unknown, and columns of unknown type.
    Text,
    Json,
    Jsonb,
    /// Arrays whose elements are text-like or JSON.
    TextArray,
    Bytea,
    Int2,
    Int4,
    Int8,
    /// numeric, float4, float8.
    Numeric,
    Uuid,
    /// Every other type (written whole as NULL under a rule).
    Other,
}

impl TypeClass {
    /// Classifies a type OID (built-in types; others are `Other`).
    pub fn of(type_oid: u32) -> Self {
        match type_oid {
            25 | 1043 | 1042 | 19 | 18 | 705 => TypeClass::Text,
            114 => TypeClass::Json,
            3802 => TypeClass::Jsonb,
            1009 | 1015 | 1014 | 1003 | 199 | 3807 => TypeClass::TextArray,
            17 => TypeClass::Bytea,
            21 => TypeClass::Int2,
            23 | 26 => TypeClass::Int4,
            20 => TypeClass::Int8,
            1700 | 700 | 701 => TypeClass::Numeric,
            2950 => TypeClass::Uuid,
            _ => TypeClass::Other,
        }
    }
}

/// How one column of a result is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnPlan {
    /// The column rule that masks it whole, by index.
    pub rule: Option<usize>,
    pub class: TypeClass,
    pub binary: bool,
    /// The value is computed from the rule's column rather than being it: a
    /// style that shows part of it is replaced by `redact`.
    pub derived: bool,
    /// The value is computed by something lineage cannot follow, or its
    /// column is unknown: masked whole (`redact`).
    pub opaque: bool,
    /// The column's type.
    pub type_oid: u32,
}

impl ColumnPlan {
    /// A column of `type_oid` that nothing masks whole.
    pub fn scanned(type_oid: u32, binary: bool) -> Self {
        Self {
            rule: None,
            class: TypeClass::of(type_oid),
            binary,
            derived: false,
            opaque: false,
            type_oid,
        }
    }

    /// Whether every value is replaced whole (by a rule, or as opaque).
    pub fn masks_whole(&self) -> bool {
        self.rule.is_some() || self.opaque
    }

    /// The style its whole values are masked with, and the rule's kind.
    pub(super) fn whole_style(
        &self,
        policy: &MaskingPolicy,
    ) -> (MaskStyle, Option<gatehouse_core::mask::DetectorKind>) {
        match self.rule.and_then(|i| policy.rules.get(i)) {
            Some(rule) if self.derived && rule.style == MaskStyle::Partial => {
                (MaskStyle::Redact, None)
            }
            Some(rule) if self.derived => (rule.style, None),
            Some(rule) => (rule.style, rule.kind),
            None => (MaskStyle::Redact, None),
        }
    }
}

/// The plan for every column of one result.
pub type RowPlan = Vec<ColumnPlan>;

/// Builds a result's plan from its fields and the result formats (empty: all
/// text; one: applies to all; otherwise one per column, as in Bind). A field
/// that is a table or view column (a table OID) is masked by its column's
/// rule; a computed one by its taint from lineage (`taints`, one per field).
pub fn plan_for(
    policy: &MaskingPolicy,
    resolved: &HashMap<(u32, i16), usize>,
    by_column_name: bool,
    fields: &[Field],
    formats: Option<&[i16]>,
    taints: &[Taint],
) -> RowPlan {
    fields
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let format = match formats {
                None => field.format,
                Some([]) => 0,
                Some([one]) => *one,
                Some(many) => many.get(i).copied().unwrap_or(0),
            };
            let rule = resolved
                .get(&(field.table_oid, field.attnum))
                .copied()
                .or_else(|| policy.rule_for_field_name(&field.name))
                .or_else(|| {
                    // Without the catalog's answer, table rules fall back to the
                    // column name: masking too much beats leaking.
                    by_column_name
                        .then(|| {
                            policy
                                .column_rules()
                                .find(|(_, _, _, column)| {
                                    column.as_bytes() == field.name.as_slice()
                                })
                                .map(|(i, ..)| i)
                        })
                        .flatten()
                });
            let computed = field.table_oid == 0;
            let taint = taints.get(i).copied().unwrap_or_default();
            let derived_rule = (computed && rule.is_none())
                .then(|| taint.rules().next())
                .flatten();
            ColumnPlan {
                rule: rule.or(derived_rule),
                derived: derived_rule.is_some(),
                opaque: computed && rule.is_none() && derived_rule.is_none() && taint.opaque,
                ..ColumnPlan::scanned(field.type_oid, format == 1)
            }
        })
        .collect()
}

/// The plan for a column whose description is unknown: with column rules
/// (`under_rules`) masked whole, since any value may be a rule's; otherwise
/// scanned as of unknown type (its bytes as text, in either format).
pub fn unknown_column(under_rules: bool) -> ColumnPlan {
    ColumnPlan {
        opaque: under_rules,
        ..ColumnPlan::scanned(UNKNOWN_TYPE, false)
    }
}

/// The type OID the masker uses for values of unknown type (no built-in
/// type has it).
pub const UNKNOWN_TYPE: u32 = 0;

/// What masking one value did.
#[derive(Debug, Default, Clone, Copy)]
pub struct ValueCounts {
    pub rule: Option<usize>,
    pub detectors: DetectorCounts,
}

/// Masks one non-NULL value of a column.
pub fn mask_value<'a>(
    policy: &MaskingPolicy,
    plan: ColumnPlan,
    value: &'a [u8],
    counts: &mut ValueCounts,
) -> Masked<'a> {
    let masker = &policy.masker;
    if plan.masks_whole() {
        counts.rule = plan.rule;
        let (style, kind) = plan.whole_style(policy);
        return whole_value(masker, style, kind, plan, value);
    }
    super::inspect::inspect(policy, plan.type_oid, plan.binary, value, counts)
}

/// A whole value under a column rule, valid for its type: text-like types get
/// the masked text, other types a type-valid value in text format and NULL in
/// binary format (except bytea, whose binary form is any bytes).
fn whole_value<'a>(
    masker: &Masker,
    style: gatehouse_core::mask::MaskStyle,
    kind: Option<gatehouse_core::mask::DetectorKind>,
    plan: ColumnPlan,
    value: &[u8],
) -> Masked<'a> {
    let mut out = Vec::with_capacity(value.len().max(18));
    if write_whole_value(masker, style, kind, plan, value, &mut out) {
        Masked::Value(Cow::Owned(out))
    } else {
        Masked::Null
    }
}

/// [`whole_value`] appended to `out`; `false` (nothing written) means NULL.
fn write_whole_value(
    masker: &Masker,
    style: gatehouse_core::mask::MaskStyle,
    kind: Option<gatehouse_core::mask::DetectorKind>,
    plan: ColumnPlan,
    value: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let value_type = match (plan.class, plan.binary) {
        (TypeClass::Text, _) | (TypeClass::Bytea, true) => ValueType::Text,
        (TypeClass::Json, _) | (TypeClass::Jsonb, false) => ValueType::Json,
        (TypeClass::Jsonb, true) => {
            // Binary jsonb: the version byte, then the JSON text.
            let start = out.len();
            out.push(1);
            let document = value.get(1..).unwrap_or_default();
            if masker.write_value(style, document, ValueType::Json, kind, out) {
                return true;
            }
            out.truncate(start);
            return false;
        }
        (_, true) => return false,
        (TypeClass::Int2, false) => ValueType::SmallInt,
        (TypeClass::Int4, false) => ValueType::Integer,
        (TypeClass::Int8, false) => ValueType::BigInt,
        (TypeClass::Numeric, false) => ValueType::Numeric,
        (TypeClass::Uuid, false) => ValueType::Uuid,
        (TypeClass::Bytea, false) => ValueType::Bytea,
        (TypeClass::TextArray | TypeClass::Other, false) => return false,
    };
    masker.write_value(style, value, value_type, kind, out)
}

/// A non-NULL value of a column masked whole, appended to a DataRow being
/// written (its length, then its bytes; -1 when the rule makes it NULL)
/// without an allocation of its own.
pub fn push_rule_value(
    policy: &MaskingPolicy,
    plan: ColumnPlan,
    value: &[u8],
    counts: &mut ValueCounts,
    out: &mut Vec<u8>,
) {
    let length_at = out.len();
    out.extend_from_slice(&[0; 4]);
    counts.rule = plan.rule;
    let (style, kind) = plan.whole_style(policy);
    let written = write_whole_value(&policy.masker, style, kind, plan, value, out);
    let length = if written {
        i32::try_from(out.len() - length_at - 4).unwrap_or(i32::MAX)
    } else {
        out.truncate(length_at + 4);
        -1
    };
    if let Some(field) = out.get_mut(length_at..length_at + 4) {
        field.copy_from_slice(&length.to_be_bytes());
    }
}
