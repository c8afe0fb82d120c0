//! What a session's masking state holds, in bytes, for the session's memory
//! bound (see the engine's `accounted_bytes`).

use super::derived::TextLineage;
use super::{Expect, PortalShape, SessionMasker, Slot};
use std::mem::size_of;
use std::rc::Rc;

/// Bookkeeping per map entry or queued expectation, beyond what it points to.
const PER_ENTRY: usize = 64;

impl SessionMasker {
    /// An estimate of the bytes this masker holds: tracked names with their
    /// descriptions, the queue of expected answers, plans and the spare row.
    pub fn held_bytes(&self) -> usize {
        let statements: usize = self
            .statements
            .iter()
            .map(|(name, lineage)| PER_ENTRY + name.len() + lineage_share(lineage))
            .sum();
        let portals: usize = self.portals.iter().map(portal_bytes).sum();
        let copies: usize = self
            .copy_prepared
            .iter()
            .map(|(name, copy)| PER_ENTRY + name.len() + copy_share(copy))
            .sum();
        let expected: usize = self
            .expected
            .iter()
            .map(|e| {
                size_of::<Expect>()
                    + match e {
                        Expect::Describe(slot) | Expect::OwnDescribe(slot) => slot_share(slot),
                        Expect::Execute { portal, slot, .. } => portal.len() + slot_share(slot),
                        Expect::Parse { name, lineage } => {
                            name.len() + lineage.as_ref().map_or(0, lineage_share)
                        }
                        Expect::Bind {
                            portal, statement, ..
                        } => portal.len() + statement.len(),
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
            + statements
            + portals
            + copies
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

fn copy_share(copy: &Rc<super::copy::CopyStatement>) -> usize {
    let bytes =
        size_of::<super::copy::CopyStatement>() + copy.describe_sql.as_ref().map_or(0, String::len);
    bytes.div_ceil(Rc::strong_count(copy))
}

/// A text's lineage, shared out among the statements, portals and
/// expectations holding it.
fn lineage_share(lineage: &Rc<TextLineage>) -> usize {
    lineage.held_bytes().div_ceil(Rc::strong_count(lineage))
}

fn portal_bytes((name, shape): (&Vec<u8>, &PortalShape)) -> usize {
    PER_ENTRY
        + name.len()
        + shape.lineage.as_ref().map_or(0, lineage_share)
        + shape.copy.as_ref().map_or(0, copy_share)
}
