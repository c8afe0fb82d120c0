//! The queue of requests awaiting answers, indexed by the names they change:
//! each pending Parse or Close of a statement is found by its name, and each
//! Bind or Close of the unnamed portal and each Sync, without walking the
//! queue (the index's entries are counted in the bytes a pending request is
//! charged for, `session/memory.rs`'s `PER_REQUEST`). A client
//! that pipelines thousands of requests would otherwise make each Bind of a
//! guarded statement, and each simple Query's answer, cost the whole queue.
//!
//! Entries are numbered in the order the server answers them (the number of
//! entries taken off the front so far, plus the position); the indexes hold
//! numbers, and are kept as entries are pushed, taken or inserted.

use super::{Pending, Undo};
use std::collections::{HashMap, VecDeque, vec_deque};

#[derive(Debug, Default)]
pub(in crate::session) struct Requests {
    queue: VecDeque<Pending>,
    /// Entries taken off the front so far: the number of the front entry.
    taken: u64,
    /// The numbers of the pending Parses and Closes of each named statement
    /// (as the server keys it), oldest first.
    statement_changes: HashMap<Vec<u8>, VecDeque<u64>>,
    /// Those of the unnamed statement, apart: the extended protocol's every
    /// statement parses it, and a map entry made and dropped for each would
    /// cost an allocation on the data path.
    unnamed_statement_changes: VecDeque<u64>,
    /// The numbers of the pending Binds and Closes of the unnamed portal.
    unnamed_portal_changes: VecDeque<u64>,
    /// The numbers of the pending Syncs.
    syncs: VecDeque<u64>,
}

/// The end of the queue an entry is taken from.
#[derive(Clone, Copy)]
enum End {
    Front,
    Back,
}

/// What an entry is in the indexes.
enum Indexed<'a> {
    Statement(&'a [u8]),
    UnnamedStatement,
    UnnamedPortal,
    Sync,
    No,
}

#[inline]
fn indexed(entry: &Pending) -> Indexed<'_> {
    match entry {
        Pending::Parse(Undo::Statement { name, .. })
        | Pending::Close(Undo::Statement { name, .. }) => {
            if name.is_empty() {
                Indexed::UnnamedStatement
            } else {
                Indexed::Statement(name)
            }
        }
        Pending::Bind(Undo::Portal { name, .. }) | Pending::Close(Undo::Portal { name, .. })
            if name.is_empty() =>
        {
            Indexed::UnnamedPortal
        }
        Pending::Sync => Indexed::Sync,
        _ => Indexed::No,
    }
}

impl Requests {
    #[inline]
    pub(in crate::session) fn push_back(&mut self, entry: Pending) {
        self.index(self.taken + self.queue.len() as u64, &entry);
        self.queue.push_back(entry);
    }

    /// Inserts `entry` at position `at`: the entries behind it move one
    /// number on (few: the engine inserts its own requests just ahead of
    /// the client message's).
    pub(in crate::session) fn insert(&mut self, at: usize, entry: Pending) {
        let at = at.min(self.queue.len());
        let number = self.taken + at as u64;
        let mut moved_names: Vec<Vec<u8>> = Vec::new();
        let (mut unnamed_statement_moved, mut unnamed_portal_moved, mut sync_moved) =
            (false, false, false);
        for moved in self.queue.range(at..) {
            match indexed(moved) {
                Indexed::Statement(name) if !moved_names.iter().any(|n| n == name) => {
                    moved_names.push(name.to_vec());
                }
                Indexed::UnnamedStatement => unnamed_statement_moved = true,
                Indexed::UnnamedPortal => unnamed_portal_moved = true,
                Indexed::Sync => sync_moved = true,
                _ => {}
            }
        }
        for name in &moved_names {
            if let Some(numbers) = self.statement_changes.get_mut(name) {
                move_on(numbers, number);
            }
        }
        if unnamed_statement_moved {
            move_on(&mut self.unnamed_statement_changes, number);
        }
        if unnamed_portal_moved {
            move_on(&mut self.unnamed_portal_changes, number);
        }
        if sync_moved {
            move_on(&mut self.syncs, number);
        }
        self.index(number, &entry);
        self.queue.insert(at, entry);
    }

    #[inline]
    pub(in crate::session) fn pop_front(&mut self) -> Option<Pending> {
        let entry = self.queue.pop_front()?;
        self.unindex(&entry, End::Front);
        self.taken += 1;
        Some(entry)
    }

    pub(in crate::session) fn pop_back(&mut self) -> Option<Pending> {
        let entry = self.queue.pop_back()?;
        self.unindex(&entry, End::Back);
        Some(entry)
    }

    /// Adds `entry`, numbered `number`, to its index, in order.
    #[inline]
    fn index(&mut self, number: u64, entry: &Pending) {
        let numbers = match indexed(entry) {
            Indexed::Statement(name) => match self.statement_changes.get_mut(name) {
                Some(numbers) => numbers,
                None => self.statement_changes.entry(name.to_vec()).or_default(),
            },
            Indexed::UnnamedStatement => &mut self.unnamed_statement_changes,
            Indexed::UnnamedPortal => &mut self.unnamed_portal_changes,
            Indexed::Sync => &mut self.syncs,
            Indexed::No => return,
        };
        // Pushed at the back but for an insert.
        if numbers.back().is_none_or(|last| *last < number) {
            numbers.push_back(number);
        } else {
            let at = numbers.partition_point(|n| *n < number);
            numbers.insert(at, number);
        }
    }

    /// Drops `entry`'s number from its index, at `end` (the entry was taken
    /// from that end of the queue, so its number is at that end).
    #[inline]
    fn unindex(&mut self, entry: &Pending, end: End) {
        let take = |numbers: &mut VecDeque<u64>| match end {
            End::Front => numbers.pop_front(),
            End::Back => numbers.pop_back(),
        };
        match indexed(entry) {
            Indexed::Statement(name) => {
                if let Some(numbers) = self.statement_changes.get_mut(name) {
                    take(numbers);
                    if numbers.is_empty() {
                        self.statement_changes.remove(name);
                    }
                }
            }
            Indexed::UnnamedStatement => {
                take(&mut self.unnamed_statement_changes);
            }
            Indexed::UnnamedPortal => {
                take(&mut self.unnamed_portal_changes);
            }
            Indexed::Sync => {
                take(&mut self.syncs);
            }
            Indexed::No => {}
        }
    }

    /// The entry numbered `number`, when pending.
    pub(in crate::session) fn numbered(&self, number: u64) -> Option<&Pending> {
        let at = number.checked_sub(self.taken)?;
        self.queue.get(usize::try_from(at).ok()?)
    }

    pub(in crate::session) fn numbered_mut(&mut self, number: u64) -> Option<&mut Pending> {
        let at = number.checked_sub(self.taken)?;
        self.queue.get_mut(usize::try_from(at).ok()?)
    }

    /// The numbers of the pending Parses and Closes of the statement `name`
    /// (as the server keys it), oldest first.
    pub(in crate::session) fn statement_changes(
        &self,
        name: &[u8],
    ) -> impl DoubleEndedIterator<Item = u64> {
        let numbers = if name.is_empty() {
            Some(&self.unnamed_statement_changes)
        } else {
            self.statement_changes.get(name)
        };
        numbers
            .into_iter()
            .flat_map(|numbers| numbers.iter().copied())
    }

    /// The number of the newest pending Sync: what is numbered below it
    /// belongs to an earlier batch than a request written now.
    pub(in crate::session) fn last_sync(&self) -> Option<u64> {
        self.syncs.back().copied()
    }

    /// The number of the oldest pending Bind or Close of the unnamed portal.
    pub(in crate::session) fn first_unnamed_portal_change(&self) -> Option<u64> {
        self.unnamed_portal_changes.front().copied()
    }

    pub(in crate::session) fn front(&self) -> Option<&Pending> {
        self.queue.front()
    }

    pub(in crate::session) fn front_mut(&mut self) -> Option<&mut Pending> {
        self.queue.front_mut()
    }

    pub(in crate::session) fn back_mut(&mut self) -> Option<&mut Pending> {
        self.queue.back_mut()
    }

    pub(in crate::session) fn get(&self, at: usize) -> Option<&Pending> {
        self.queue.get(at)
    }

    pub(in crate::session) fn get_mut(&mut self, at: usize) -> Option<&mut Pending> {
        self.queue.get_mut(at)
    }

    pub(in crate::session) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(in crate::session) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(in crate::session) fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    pub(in crate::session) fn iter(&self) -> vec_deque::Iter<'_, Pending> {
        self.queue.iter()
    }

    /// Entries to change in place: never what names they change (the
    /// indexes go by those).
    pub(in crate::session) fn iter_mut(&mut self) -> vec_deque::IterMut<'_, Pending> {
        self.queue.iter_mut()
    }
}

/// Numbers from `first` on move one on (they are the last ones, in order).
fn move_on(numbers: &mut VecDeque<u64>, first: u64) {
    for number in numbers.iter_mut().rev().take_while(|n| **n >= first) {
        *number += 1;
    }
}

impl Extend<Pending> for Requests {
    fn extend<T: IntoIterator<Item = Pending>>(&mut self, entries: T) {
        entries.into_iter().for_each(|entry| self.push_back(entry));
    }
}

impl<'a> IntoIterator for &'a mut Requests {
    type Item = &'a mut Pending;
    type IntoIter = vec_deque::IterMut<'a, Pending>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}
