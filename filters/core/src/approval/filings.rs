//! Requests filed that no publication of the approval service names yet.
//!
//! A filing reaches the filters through the service's next publication, a
//! poll period or more later. Until then a retry of the same statement or
//! request must name that filing instead of filing a second one, on whichever
//! worker of the Envoy the retry lands. So the notes live where every worker
//! reads them at once ([`Filings`]: shared data in the Wasm build, a mutex in
//! the native one), and a worker files only after claiming, in one atomic
//! change, that no live note names the same request
//! ([`FiledNotes::claim`]).
//!
//! A note lives until the publication a worker adopted knows its request, or
//! [`FILED_NOTE_SECONDS`] pass: one that never reached the service (it was
//! down, or refused it, and the connection that filed it is gone, so the glue
//! never heard) must not be named for long.

use super::grant::PendingRef;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::fmt;

/// How long a note no publication knows of is trusted. A filing that landed
/// is in every publication fetched after it, one poll period (a second by
/// default) later.
const FILED_NOTE_SECONDS: u64 = 10;

/// Notes kept at most (each is a request a user made within
/// [`FILED_NOTE_SECONDS`]); the oldest goes first.
const FILED_NOTES: usize = 1_024;

/// Where the notes of one Envoy's workers are kept. An implementation runs
/// each closure over the notes as they are at that moment, and a change as
/// one atomic step (it may run the closure again on a conflict).
pub trait Filings: fmt::Debug {
    /// Reads the notes.
    fn inspect(&self, read: &mut dyn FnMut(&FiledNotes));
    /// Changes the notes.
    fn change(&self, change: &mut dyn FnMut(&mut FiledNotes));
}

/// One worker's own notes: tests, and glue that shares nothing.
#[derive(Debug, Default)]
pub struct LocalFilings(RefCell<FiledNotes>);

impl Filings for LocalFilings {
    fn inspect(&self, read: &mut dyn FnMut(&FiledNotes)) {
        if let Ok(notes) = self.0.try_borrow() {
            read(&notes);
        }
    }

    fn change(&self, change: &mut dyn FnMut(&mut FiledNotes)) {
        if let Ok(mut notes) = self.0.try_borrow_mut() {
            change(&mut notes);
        }
    }
}

/// [`LocalFilings`] where another worker files `rival` (at its time) just
/// before the next change: for tests of what a gate does when it loses the
/// race between its lookup and its claim.
#[derive(Debug, Default)]
pub struct RivalFiling {
    notes: LocalFilings,
    rival: RefCell<Option<(PendingRef, u64)>>,
}

impl RivalFiling {
    pub fn new(rival: PendingRef, at: u64) -> RivalFiling {
        RivalFiling {
            notes: LocalFilings::default(),
            rival: RefCell::new(Some((rival, at))),
        }
    }
}

impl Filings for RivalFiling {
    fn inspect(&self, read: &mut dyn FnMut(&FiledNotes)) {
        self.notes.inspect(read);
    }

    fn change(&self, change: &mut dyn FnMut(&mut FiledNotes)) {
        if let Some((rival, at)) = self.rival.take() {
            self.notes.change(&mut |notes| {
                let _ = notes.claim(rival.clone(), at, &|_| false);
            });
        }
        self.notes.change(change);
    }
}

/// A request filed at `at` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Filed {
    at: u64,
    #[serde(flatten)]
    pending: PendingRef,
}

/// The notes of filings, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FiledNotes {
    notes: Vec<Filed>,
}

impl FiledNotes {
    /// The newest live note of a request by `subject` under `rule` for
    /// `hash`; `settled` says which requests a publication already speaks for.
    pub fn pending(
        &self,
        subject: &str,
        rule: &str,
        hash: &str,
        now: u64,
        settled: &dyn Fn(&str) -> bool,
    ) -> Option<&PendingRef> {
        self.live(now).rev().map(|f| &f.pending).find(|p| {
            p.subject == subject
                && p.rule == rule
                && p.hash.as_deref() == Some(hash)
                && !settled(&p.id)
        })
    }

    /// How many live notes name requests by `subject` that no publication
    /// speaks for yet.
    pub fn live_for(&self, subject: &str, now: u64, settled: &dyn Fn(&str) -> bool) -> usize {
        self.live(now)
            .filter(|f| f.pending.subject == subject && !settled(&f.pending.id))
            .count()
    }

    /// The notes not yet expired at `now`, oldest first.
    fn live(&self, now: u64) -> impl DoubleEndedIterator<Item = &Filed> {
        self.notes
            .iter()
            .filter(move |f| now.saturating_sub(f.at) < FILED_NOTE_SECONDS)
    }

    /// Notes `pending`, filed at `now`, unless a live note names the same
    /// request: then `Err` with that note's id, which the caller names
    /// instead of filing.
    pub fn claim(
        &mut self,
        pending: PendingRef,
        now: u64,
        settled: &dyn Fn(&str) -> bool,
    ) -> Result<(), String> {
        let hash = pending.hash.as_deref().unwrap_or_default();
        if let Some(earlier) = self.pending(&pending.subject, &pending.rule, hash, now, settled) {
            return Err(earlier.id.clone());
        }
        self.notes
            .retain(|f| now.saturating_sub(f.at) < FILED_NOTE_SECONDS);
        if self.notes.len() >= FILED_NOTES {
            self.notes.remove(0);
        }
        self.notes.push(Filed { at: now, pending });
        Ok(())
    }

    /// Forgets the note of `id`: its filing failed, so there is no such
    /// request to name.
    pub fn forget(&mut self, id: &str) {
        self.notes.retain(|f| f.pending.id != id);
    }

    /// The ids the notes name.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.notes.iter().map(|f| f.pending.id.as_str())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.notes.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.notes.is_empty()
    }

    /// The notes as text for a shared store: one JSON object per line.
    pub fn to_text(&self) -> String {
        self.notes
            .iter()
            .filter_map(|f| serde_json::to_string(f).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Reads [`FiledNotes::to_text`]. An unreadable line is skipped: a note
    /// lost costs at most a second filing of the same request.
    pub fn from_text(text: &str) -> FiledNotes {
        FiledNotes {
            notes: text
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn pending(id: &str, subject: &str) -> PendingRef {
        PendingRef {
            id: id.into(),
            rule: "writes".into(),
            subject: subject.into(),
            hash: Some("sha256:h".into()),
        }
    }

    const NONE_SETTLED: &dyn Fn(&str) -> bool = &|_| false;

    #[test]
    fn a_claim_names_the_live_filing_of_the_same_request() {
        let mut notes = FiledNotes::default();
        assert_eq!(
            notes.claim(pending("apr-1", "dev"), 100, NONE_SETTLED),
            Ok(())
        );
        assert_eq!(
            notes.claim(pending("apr-2", "dev"), 105, NONE_SETTLED),
            Err("apr-1".to_owned())
        );
        // Another user, rule or statement files its own.
        assert_eq!(
            notes.claim(pending("apr-3", "eve"), 105, NONE_SETTLED),
            Ok(())
        );
        let mut other_rule = pending("apr-4", "dev");
        other_rule.rule = "reads".into();
        assert_eq!(notes.claim(other_rule, 105, NONE_SETTLED), Ok(()));
        let mut other_hash = pending("apr-5", "dev");
        other_hash.hash = Some("sha256:other".into());
        assert_eq!(notes.claim(other_hash, 105, NONE_SETTLED), Ok(()));
        assert_eq!(notes.len(), 4);
        // Settled by a publication: a new filing.
        assert_eq!(
            notes.claim(pending("apr-6", "dev"), 106, &|id| id == "apr-1"),
            Ok(())
        );
        // Expired: a new filing, and the expired notes go.
        assert_eq!(
            notes.claim(pending("apr-7", "dev"), 200, NONE_SETTLED),
            Ok(())
        );
        assert_eq!(notes.len(), 1);
        notes.forget("apr-7");
        assert!(notes.is_empty());
    }

    #[test]
    fn the_notes_are_bounded() {
        let mut notes = FiledNotes::default();
        for n in 0..2 * FILED_NOTES {
            notes
                .claim(
                    pending(&format!("apr-{n}"), &format!("u{n}")),
                    100,
                    NONE_SETTLED,
                )
                .unwrap();
        }
        assert_eq!(notes.len(), FILED_NOTES);
        assert!(
            notes
                .pending("u0", "writes", "sha256:h", 100, NONE_SETTLED)
                .is_none()
        );
        let last = format!("u{}", 2 * FILED_NOTES - 1);
        assert!(
            notes
                .pending(&last, "writes", "sha256:h", 100, NONE_SETTLED)
                .is_some()
        );
    }

    #[test]
    fn the_text_form_reads_back_and_skips_what_it_cannot_read() {
        let mut notes = FiledNotes::default();
        let mut odd = pending("apr-1", "dev\twith\nbreaks");
        odd.hash = None;
        notes.claim(odd, 100, NONE_SETTLED).unwrap();
        notes
            .claim(pending("apr-2", "dev"), 101, NONE_SETTLED)
            .unwrap();
        let text = notes.to_text();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(FiledNotes::from_text(&text), notes);
        let damaged = format!("{{not json\n\n{text}\n{{\"at\":1}}");
        assert_eq!(FiledNotes::from_text(&damaged), notes);
        assert!(FiledNotes::from_text("").is_empty());
    }
}
