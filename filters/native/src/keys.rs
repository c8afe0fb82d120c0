//! Identity keys for token login in the native build.
//!
//! Every worker thread holds its own [`Verifier`] (sessions borrow it without
//! locks). A key set any worker fetched is published in the configuration's
//! [`SharedKeys`] and adopted by the others on their next event, so a rotation
//! seen by one worker reaches all; a scheduled refresh is claimed so one worker
//! fetches per period. The fetches are HTTP callouts to the JWKS cluster
//! through the ABI, made from a connection of the worker that needs them (the
//! network-filter ABI has callouts per connection only), started on a client's
//! bytes (a bare TCP probe fetches nothing, and so cancels nothing by closing).
//! The first login after start waits for the keys (see `postgres.rs`) where
//! the Wasm build would refuse it with "keys unavailable, retry".
//! The verifier decides what is due and what a rejection calls for; this
//! module only moves key sets between workers.

use gatehouse_core::identity::{KeyFetch, Verifier};
use gatehouse_postgres::login::WantedFetches;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Key sets shared by every worker of one configuration.
#[derive(Debug, Default)]
pub struct SharedKeys {
    /// Issuer → (fetch time, unix seconds; the JWKS document).
    sets: Mutex<BTreeMap<String, (i64, Vec<u8>)>>,
    /// Bumped on every publish, so workers adopt only when something changed.
    version: AtomicU64,
    /// Issuer → when a worker last claimed its scheduled refresh.
    claims: Mutex<BTreeMap<String, i64>>,
}

impl SharedKeys {
    fn publish(&self, issuer: &str, fetched_at: i64, body: &[u8]) {
        if let Ok(mut sets) = self.sets.lock() {
            sets.insert(issuer.to_owned(), (fetched_at, body.to_vec()));
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// Claims the scheduled refresh of `issuer` unless another worker did
    /// within `min_refetch_seconds`.
    fn claim_refresh(&self, issuer: &str, now: i64, min_refetch_seconds: i64) -> bool {
        let Ok(mut claims) = self.claims.lock() else {
            return false;
        };
        let recent = claims
            .get(issuer)
            .is_some_and(|at| (0..min_refetch_seconds).contains(&now.saturating_sub(*at)));
        if recent {
            return false;
        }
        claims.insert(issuer.to_owned(), now);
        true
    }
}

/// One worker's verifier and its share of the key upkeep.
pub struct WorkerKeys {
    pub verifier: Rc<RefCell<Verifier>>,
    /// Fetches refused logins asked for; started on the next event.
    pub wanted: WantedFetches,
    /// The shared version last adopted.
    adopted: u64,
    /// When scheduled refreshes were last looked for (unix seconds).
    last_schedule_check: Option<i64>,
}

/// A fetch to start now, from the calling connection.
pub type Fetch = KeyFetch;

impl WorkerKeys {
    pub fn new(verifier: Verifier) -> Self {
        WorkerKeys {
            verifier: Rc::new(RefCell::new(verifier)),
            wanted: WantedFetches::default(),
            adopted: 0,
            last_schedule_check: None,
        }
    }

    /// Adopts what other workers published, and returns the fetches to start
    /// now: those refused logins asked for, and (once a second) the scheduled
    /// refreshes this worker wins the claim for.
    pub fn upkeep(&mut self, shared: &SharedKeys, now: i64) -> Vec<Fetch> {
        self.adopt(shared);
        let mut fetches = std::mem::take(&mut *self.wanted.borrow_mut());
        if self.last_schedule_check != Some(now) {
            self.last_schedule_check = Some(now);
            if let Ok(mut verifier) = self.verifier.try_borrow_mut() {
                for fetch in verifier.refreshes_due(now) {
                    let min = verifier.min_refetch_seconds(&fetch.issuer);
                    if shared.claim_refresh(&fetch.issuer, now, min) {
                        fetches.push(fetch);
                    }
                }
            }
        }
        fetches
    }

    fn adopt(&mut self, shared: &SharedKeys) {
        let version = shared.version.load(Ordering::Acquire);
        if version == self.adopted {
            return;
        }
        let (Ok(sets), Ok(mut verifier)) = (shared.sets.lock(), self.verifier.try_borrow_mut())
        else {
            return;
        };
        self.adopted = version;
        for (issuer, (fetched_at, body)) in sets.iter() {
            // A set this worker cannot use was logged when it was fetched.
            let _ = verifier.keys_fetched(issuer, body, *fetched_at);
        }
    }

    /// A fetch answered with `body` (status 200): applies it here and
    /// publishes it to the other workers; `Err` says why it is unusable.
    pub fn fetched(
        &mut self,
        shared: &SharedKeys,
        issuer: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), String> {
        let Ok(mut verifier) = self.verifier.try_borrow_mut() else {
            return Err("verifier busy".into());
        };
        match verifier.keys_fetched(issuer, body, now) {
            Ok(()) => {
                shared.publish(issuer, now, body);
                // Our own publish needs no adopting.
                self.adopted = shared.version.load(Ordering::Acquire);
                Ok(())
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// Whether this worker holds keys of `issuer` (fetched, or adopted).
    pub fn has_keys(&self, issuer: &str) -> bool {
        self.verifier
            .try_borrow()
            .ok()
            .and_then(|verifier| verifier.jwks_cache(issuer).and_then(|c| c.fetched_at()))
            .is_some()
    }

    /// A fetch failed (`reason`), or its connection closed before the answer.
    pub fn failed(&mut self, issuer: &str, now: i64, reason: &str) {
        if let Ok(mut verifier) = self.verifier.try_borrow_mut() {
            verifier.keys_failed(issuer, now, reason);
        }
    }
}
