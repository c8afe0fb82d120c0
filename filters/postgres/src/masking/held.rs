//! What a session's masking state holds, in bytes, for the session's memory
//! bound (see the engine's `accounted_bytes`).

use super::derived::TextLineage;
use super::{Expect, SessionMasker, Shape, Slot};
use std::mem::size_of;
use std::rc::Rc;

/// Bookkeeping per map entry, beyond what it points to.
const PER_ENTRY: usize = 64;

impl SessionMasker {
    /// An estimate of the bytes this masker holds: the queue of expected
    /// answers with their descriptions, plans, resolved columns, lineage and
    /// the spare row (the shapes of statements and portals are on the
    /// ledger's entries, counted with them).
    pub fn held_bytes(&self) -> usize {
        let expected: usize = self
            .expected
            .iter()
            .map(|e| {
                size_of::<Expect>()
                    + match e {
                        Expect::Describe(slot) | Expect::OwnDescribe(slot) => slot_share(slot),
                        Expect::Execute { portal, slot, .. } => {
                            portal.as_ref().map_or(0, Shape::held_bytes) + slot_share(slot)
                        }
                        Expect::Parse { lineage, .. } | Expect::Bind { lineage, .. } => {
                            lineage.as_ref().map_or(0, lineage_share)
                        }
                        Expect::Query {
                            copies, lineage, ..
                        } => {
                            copies.len() * size_of::<super::copy::CopyStatement>()
                                + lineage.as_ref().map_or(0, lineage_share)
                        }
                        _ => 0,
                    }
            })
            .sum();
        let plan = self
            .query_plan
            .as_ref()
            .map_or(0, |p| p.len() * size_of::<super::values::ColumnPlan>());
        size_of::<SessionMasker>()
            + expected
            + plan
            + self.resolved.len() * PER_ENTRY
            + self.lineage_held_bytes()
            + self.spare_row.capacity()
            + self.rule_counts.len() * size_of::<u64>()
    }
}

/// A description's bytes, shared out among the statements, portals and
/// expectations holding it.
fn slot_share(slot: &Slot) -> usize {
    let fields = slot.get().map_or(0, |fields| {
        fields
            .iter()
            .map(|f| size_of::<super::values::Field>() + f.name.len())
            .sum::<usize>()
    });
    (size_of::<Slot>() + fields).div_ceil(Rc::strong_count(slot))
}

pub(super) fn copy_share(copy: &Rc<super::copy::CopyStatement>) -> usize {
    let bytes =
        size_of::<super::copy::CopyStatement>() + copy.describe_sql.as_ref().map_or(0, String::len);
    bytes.div_ceil(Rc::strong_count(copy))
}

/// A text's lineage, shared out among the statements, portals and
/// expectations holding it.
pub(super) fn lineage_share(lineage: &Rc<TextLineage>) -> usize {
    lineage.held_bytes().div_ceil(Rc::strong_count(lineage))
}
