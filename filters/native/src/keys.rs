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
//!
//! A login whose token needs keys the worker lacks (a rotated-in `kid`, or
//! keys not fetched yet) is held, not refused: [`WorkerKeys::before_login`]
//! says whether to fetch first, or to wait for the fetch of that issuer
//! already in flight on this worker, and the login is judged when the fetch
//! ends. Refusing it instead would lose the fetch: it runs on the refused
//! client's connection, which the client closes on reading the refusal. A
//! fetch abandoned because its connection closed did not fail, so it does
//! not hold back the next one ([`WorkerKeys::abandoned`]).
//!
//! The verifier decides what is due and what a rejection calls for; this
//! module only moves key sets between workers and tracks the fetches and
//! logins of one worker.

use gatehouse_core::identity::{KeyFetch, TokenRejection, Verifier};
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

/// One worker's verifier and its share of the key upkeep; `W` wakes a held
/// login (a connection's scheduler).
pub struct WorkerKeys<W> {
    pub verifier: Rc<RefCell<Verifier>>,
    /// Fetches refused logins asked for; started on the next event.
    pub wanted: WantedFetches,
    /// The shared version last adopted.
    adopted: u64,
    /// When scheduled refreshes were last looked for (unix seconds).
    last_schedule_check: Option<i64>,
    /// Fetches in flight on this worker, by issuer.
    in_flight: BTreeMap<String, usize>,
    /// Logins held until the fetches of an issuer end: (issuer, waker).
    waiting: Vec<(String, W)>,
}

/// What to do with a login before its token is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeforeLogin {
    /// Judge it now: its keys are here, or no fetch can bring them.
    Judge,
    /// Start this fetch, hold the login, and judge it when the fetch ends.
    Fetch(Fetch),
    /// Hold the login until the fetch of `issuer` in flight on this worker
    /// ends (see [`WorkerKeys::wait`]), then ask again.
    Wait { issuer: String },
}

/// A fetch to start now, from the calling connection.
pub type Fetch = KeyFetch;

impl<W> WorkerKeys<W> {
    pub fn new(verifier: Verifier) -> Self {
        WorkerKeys {
            verifier: Rc::new(RefCell::new(verifier)),
            wanted: WantedFetches::default(),
            adopted: 0,
            last_schedule_check: None,
            in_flight: BTreeMap::new(),
            waiting: Vec::new(),
        }
    }

    /// Before a login's `token` is judged: whether its keys must come first.
    /// `may_fetch` is false once this login waited for a fetch it started
    /// itself, so a `kid` no fetch brings is judged (refused) after one.
    pub fn before_login(
        &mut self,
        shared: &SharedKeys,
        token: &str,
        now: i64,
        may_fetch: bool,
    ) -> BeforeLogin {
        self.adopt(shared);
        let Ok(mut verifier) = self.verifier.try_borrow_mut() else {
            return BeforeLogin::Judge;
        };
        let Some(lacking) = verifier.lacks_keys(token, now) else {
            return BeforeLogin::Judge;
        };
        let (TokenRejection::UnknownKid { issuer } | TokenRejection::KeysUnavailable { issuer }) =
            &lacking
        else {
            return BeforeLogin::Judge;
        };
        if self.in_flight.get(issuer).is_some_and(|n| *n > 0) {
            return BeforeLogin::Wait {
                issuer: issuer.clone(),
            };
        }
        if !may_fetch {
            return BeforeLogin::Judge;
        }
        match verifier.fetch_for(&lacking, now) {
            Some(fetch) => BeforeLogin::Fetch(fetch),
            None => BeforeLogin::Judge,
        }
    }

    /// A fetch of `issuer` was started from one of this worker's connections.
    pub fn started(&mut self, issuer: &str) {
        *self.in_flight.entry(issuer.to_owned()).or_default() += 1;
    }

    /// Holds a login until the fetches of `issuer` in flight end; `waker` is
    /// handed back then by [`WorkerKeys::ended`] or [`WorkerKeys::abandoned`].
    pub fn wait(&mut self, issuer: String, waker: W) {
        self.waiting.push((issuer, waker));
    }

    /// Forgets the held logins `is_gone` picks (their connection closed).
    pub fn stop_waiting(&mut self, mut is_gone: impl FnMut(&W) -> bool) {
        self.waiting.retain(|(_, waker)| !is_gone(waker));
    }

    /// A fetch of `issuer` ended (its answer was applied with
    /// [`WorkerKeys::fetched`] or [`WorkerKeys::failed`]): the logins to wake,
    /// once no fetch of that issuer is in flight here.
    #[must_use]
    pub fn ended(&mut self, issuer: &str) -> Vec<W> {
        let still = match self.in_flight.get_mut(issuer) {
            Some(count) => {
                *count = count.saturating_sub(1);
                *count
            }
            None => 0,
        };
        if still > 0 {
            return Vec::new();
        }
        self.in_flight.remove(issuer);
        let (wake, keep) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(waiting_for, _)| waiting_for == issuer);
        self.waiting = keep;
        wake.into_iter().map(|(_, waker)| waker).collect()
    }

    /// A fetch of `issuer` was abandoned: its connection closed before the
    /// answer. It did not fail, so the next login that needs the keys may
    /// fetch at once (a woken login does); returns the logins to wake.
    #[must_use]
    pub fn abandoned(&mut self, issuer: &str) -> Vec<W> {
        if let Ok(mut verifier) = self.verifier.try_borrow_mut() {
            verifier.keys_fetch_abandoned(issuer);
        }
        self.ended(issuer)
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

    /// A fetch failed (`reason`), or could not be started.
    pub fn failed(&mut self, issuer: &str, now: i64, reason: &str) {
        if let Ok(mut verifier) = self.verifier.try_borrow_mut() {
            verifier.keys_failed(issuer, now, reason);
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use gatehouse_core::identity::JwsAlgorithm;
    use gatehouse_core::identity::testing::Minter;
    use serde_json::{Value, json};

    const NOW: i64 = 1_800_000_000;
    const ISSUER: &str = "https://idp.test";

    fn minter(kid: &str) -> Minter {
        Minter::generate(JwsAlgorithm::Es256, ISSUER, "gatehouse", kid).unwrap()
    }

    fn worker() -> WorkerKeys<u32> {
        let config = format!(
            r#"{{"issuers": [{{"issuer": "{ISSUER}", "audiences": ["gatehouse"],
                "remote_jwks": {{"cluster": "idp", "path": "/jwks.json", "refresh_seconds": 300,
                                 "min_refetch_seconds": 10}}}}]}}"#
        );
        WorkerKeys::new(Verifier::from_json(config.as_bytes()).unwrap())
    }

    /// The key set the identity provider serves: every minter's key.
    fn jwks(minters: &[&Minter]) -> Vec<u8> {
        let keys: Vec<Value> = minters
            .iter()
            .flat_map(|m| {
                let set: Value = serde_json::from_str(&m.jwks_json()).unwrap();
                set["keys"].as_array().unwrap().clone()
            })
            .collect();
        json!({ "keys": keys }).to_string().into_bytes()
    }

    fn token(minter: &Minter) -> String {
        minter.mint(&json!({"sub": "dba1"}), 300, NOW).unwrap()
    }

    /// A worker that fetched the keys of `minter`.
    fn worker_with(shared: &SharedKeys, minter: &Minter) -> WorkerKeys<u32> {
        let mut keys = worker();
        keys.fetched(shared, ISSUER, &jwks(&[minter]), NOW).unwrap();
        keys
    }

    /// Asks before a login that may fetch, expects a fetch and starts it.
    fn fetch_for_login(
        keys: &mut WorkerKeys<u32>,
        shared: &SharedKeys,
        token: &str,
        now: i64,
    ) -> KeyFetch {
        let decision = keys.before_login(shared, token, now, true);
        let BeforeLogin::Fetch(fetch) = decision else {
            panic!("expected a fetch, got {decision:?}");
        };
        keys.started(&fetch.issuer);
        fetch
    }

    fn wait() -> BeforeLogin {
        BeforeLogin::Wait {
            issuer: ISSUER.to_owned(),
        }
    }

    #[test]
    fn a_login_with_a_rotated_in_key_is_held_for_its_fetch_and_judged_with_the_new_keys() {
        let shared = SharedKeys::default();
        let old = minter("old");
        let rotated = minter("rotated");
        let mut keys = worker_with(&shared, &old);
        assert_eq!(
            keys.before_login(&shared, &token(&old), NOW + 20, true),
            BeforeLogin::Judge,
            "a known key is judged at once"
        );
        let first = token(&rotated);
        let fetch = fetch_for_login(&mut keys, &shared, &first, NOW + 20);
        assert_eq!(fetch.path, "/jwks.json");
        // Another login with the new key, on another connection of the worker,
        // while the fetch is in flight: it waits for that fetch, starts none.
        assert_eq!(keys.before_login(&shared, &first, NOW + 20, true), wait());
        keys.wait(ISSUER.to_owned(), 7);
        keys.fetched(&shared, ISSUER, &jwks(&[&old, &rotated]), NOW + 20)
            .unwrap();
        assert_eq!(keys.ended(ISSUER), vec![7], "the waiting login is woken");
        assert_eq!(
            keys.before_login(&shared, &first, NOW + 20, false),
            BeforeLogin::Judge
        );
        let identity = keys.verifier.borrow().verify(&first, NOW + 20).unwrap();
        assert_eq!(identity.subject, "dba1");
        // Another worker adopts the published set before judging its login.
        let mut other = worker_with(&SharedKeys::default(), &old);
        assert_eq!(
            other.before_login(&shared, &first, NOW + 21, true),
            BeforeLogin::Judge
        );
        assert!(other.verifier.borrow().verify(&first, NOW + 21).is_ok());
    }

    #[test]
    fn a_fetch_abandoned_by_its_closing_connection_holds_back_no_login() {
        let shared = SharedKeys::default();
        let old = minter("old");
        let rotated = minter("rotated");
        let mut keys = worker_with(&shared, &old);
        let login = token(&rotated);
        fetch_for_login(&mut keys, &shared, &login, NOW + 20);
        assert_eq!(keys.before_login(&shared, &login, NOW + 20, true), wait());
        keys.wait(ISSUER.to_owned(), 1);
        keys.wait(ISSUER.to_owned(), 2);
        keys.stop_waiting(|waker| *waker == 2);
        // The fetching client gave up: the waiting login is woken and fetches
        // itself, at once.
        assert_eq!(keys.abandoned(ISSUER), vec![1]);
        fetch_for_login(&mut keys, &shared, &login, NOW + 21);
        assert_eq!(keys.abandoned(ISSUER), Vec::<u32>::new());
        // A login after every fetching client left fetches at once too.
        fetch_for_login(&mut keys, &shared, &login, NOW + 22);
        keys.fetched(&shared, ISSUER, &jwks(&[&rotated]), NOW + 22)
            .unwrap();
        assert!(keys.ended(ISSUER).is_empty());
        assert!(keys.verifier.borrow().verify(&login, NOW + 22).is_ok());
    }

    #[test]
    fn a_key_no_fetch_brings_is_judged_after_one_fetch_and_refetches_stay_paced() {
        let shared = SharedKeys::default();
        let old = minter("old");
        let forged = token(&minter("forged"));
        let mut keys = worker_with(&shared, &old);
        fetch_for_login(&mut keys, &shared, &forged, NOW + 20);
        keys.fetched(&shared, ISSUER, &jwks(&[&old]), NOW + 20)
            .unwrap();
        assert!(keys.ended(ISSUER).is_empty());
        assert_eq!(
            keys.before_login(&shared, &forged, NOW + 20, false),
            BeforeLogin::Judge,
            "the login that fetched is judged (and refused) with what came"
        );
        assert_eq!(
            keys.before_login(&shared, &forged, NOW + 21, true),
            BeforeLogin::Judge,
            "another login within min_refetch_seconds starts no fetch"
        );
        // A failed fetch paces the next one, unlike an abandoned one.
        fetch_for_login(&mut keys, &shared, &forged, NOW + 31);
        keys.failed(ISSUER, NOW + 31, "status 503");
        assert!(keys.ended(ISSUER).is_empty());
        assert_eq!(
            keys.before_login(&shared, &forged, NOW + 32, true),
            BeforeLogin::Judge
        );
    }

    #[test]
    fn logins_wait_for_the_first_fetch_another_connection_started() {
        let shared = SharedKeys::default();
        let idp = minter("k1");
        let mut keys = worker();
        let first = keys.upkeep(&shared, NOW);
        assert_eq!(first.len(), 1);
        keys.started(&first[0].issuer);
        let login = token(&idp);
        assert_eq!(keys.before_login(&shared, &login, NOW, true), wait());
        keys.wait(ISSUER.to_owned(), 3);
        keys.fetched(&shared, ISSUER, &jwks(&[&idp]), NOW).unwrap();
        assert_eq!(keys.ended(ISSUER), vec![3]);
        assert_eq!(
            keys.before_login(&shared, &login, NOW, true),
            BeforeLogin::Judge
        );
        assert!(
            keys.before_login(&shared, "not a token", NOW, true) == BeforeLogin::Judge,
            "a malformed token is judged (refused) at once"
        );
    }
}
