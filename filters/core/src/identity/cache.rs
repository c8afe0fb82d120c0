//! When to fetch a remote key set, and whether the keys held may still be used.
//!
//! Pure state: the glue performs the fetches (an HTTP callout), shares the bytes
//! between workers and calls in with the time; this decides.
//!
//! - A scheduled refresh is due `refresh_seconds` after the last good fetch.
//! - A token with an unknown `kid` may trigger a fetch at once (key rotation), but
//!   at most once per `min_refetch_seconds`, which also spaces retries after a
//!   failure; forged `kid`s therefore cannot flood the identity provider.
//! - When fetches fail, the last good keys are served for `max_stale_seconds`
//!   past their refresh time; after that verification fails with
//!   `keys_unavailable` rather than trusting keys that may have been revoked.
//! - Every fetch that installs a key set other than the one held moves the
//!   cache's [`JwksCache::generation`], which ends the trust in the tokens
//!   verified with the previous keys (see [`super::token_cache`]).

use super::jwks::{Jwks, JwksError};
use sha2::{Digest as _, Sha256};

/// The timing rules of one cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksCachePolicy {
    /// Period between scheduled refreshes.
    pub refresh_seconds: i64,
    /// Least time between two fetch attempts.
    pub min_refetch_seconds: i64,
    /// How long past the refresh time the last good keys are still used.
    pub max_stale_seconds: i64,
}

/// The remote key set of one issuer, with its fetch history.
#[derive(Debug, Clone)]
pub struct JwksCache {
    policy: JwksCachePolicy,
    keys: Option<Jwks>,
    fetched_at: Option<i64>,
    last_attempt: Option<i64>,
    /// `last_attempt` before the latest fetch started, restored if that fetch
    /// is abandoned.
    attempt_before: Option<i64>,
    last_error: Option<String>,
    /// SHA-256 of the key set document held, to tell a new set from the same
    /// one fetched again.
    digest: Option<[u8; 32]>,
    /// Moves each time a different key set is installed.
    generation: u64,
}

impl JwksCache {
    /// An empty cache: no keys until the first good fetch.
    pub fn new(policy: JwksCachePolicy) -> Self {
        Self {
            policy,
            keys: None,
            fetched_at: None,
            last_attempt: None,
            attempt_before: None,
            last_error: None,
            digest: None,
            generation: 0,
        }
    }

    /// The timing rules.
    pub fn policy(&self) -> JwksCachePolicy {
        self.policy
    }

    /// Whether a scheduled fetch is due: no keys yet or the refresh period has
    /// passed, and no attempt within `min_refetch_seconds`. Call
    /// [`JwksCache::on_fetch_started`] when starting it.
    pub fn needs_refresh(&self, now: i64) -> bool {
        if self.attempted_recently(now) {
            return false;
        }
        self.fetched_at
            .is_none_or(|at| now.saturating_sub(at) >= self.policy.refresh_seconds)
    }

    /// Records that a fetch was started.
    pub fn on_fetch_started(&mut self, now: i64) {
        self.attempt_before = self.last_attempt;
        self.last_attempt = Some(now);
    }

    /// The latest fetch was abandoned before its answer (the caller that held
    /// it went away): it did not fail and learned nothing, so it no longer
    /// paces the next one, and the next token that needs the keys may fetch
    /// at once. A fetch that answers, even with an error, still counts. This
    /// lets a client give up without holding back everyone else's login; the
    /// identity provider still sees at most one request per abandoned fetch.
    pub fn on_fetch_abandoned(&mut self) {
        self.last_attempt = self.attempt_before.take();
    }

    /// A token named a `kid` the set lacks: returns whether to fetch now (and
    /// then records the attempt as started).
    pub fn on_unknown_kid(&mut self, now: i64) -> bool {
        if self.attempted_recently(now) {
            return false;
        }
        self.on_fetch_started(now);
        true
    }

    /// A fetch returned `body`, fetched at `now` (for a set another worker fetched,
    /// pass that fetch's time). A body that is no usable key set counts as a failed
    /// fetch: the previous keys stay.
    pub fn on_fetch_ok(&mut self, body: &[u8], now: i64) -> Result<&Jwks, JwksError> {
        match Jwks::parse(body) {
            Ok(jwks) => {
                self.fetched_at = Some(now);
                self.last_error = None;
                let digest: [u8; 32] = Sha256::digest(body).into();
                if self.digest != Some(digest) {
                    self.digest = Some(digest);
                    self.generation = self.generation.wrapping_add(1);
                }
                Ok(self.keys.insert(jwks))
            }
            Err(error) => {
                self.last_error = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// A fetch failed (connection error, timeout, non-200 status).
    pub fn on_fetch_failed(&mut self, now: i64, reason: impl Into<String>) {
        self.last_attempt = Some(self.last_attempt.map_or(now, |at| at.max(now)));
        self.last_error = Some(reason.into());
    }

    /// The keys to verify with at `now`: `None` before the first good fetch and
    /// once the set is stale beyond `max_stale_seconds`.
    pub fn keys(&self, now: i64) -> Option<&Jwks> {
        if now > self.usable_until()? {
            None
        } else {
            self.keys.as_ref()
        }
    }

    /// The last second (unix) the keys held may be used: `max_stale_seconds`
    /// past their refresh time. `None` before the first good fetch.
    pub fn usable_until(&self) -> Option<i64> {
        let fetched_at = self.fetched_at?;
        Some(
            fetched_at
                .saturating_add(self.policy.refresh_seconds)
                .saturating_add(self.policy.max_stale_seconds),
        )
    }

    /// Moves each time a key set other than the one held is installed (the
    /// same document fetched again leaves it).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the keys are past their refresh time (still usable while stale).
    pub fn is_stale(&self, now: i64) -> bool {
        self.fetched_at
            .is_none_or(|at| now.saturating_sub(at) >= self.policy.refresh_seconds)
    }

    /// Time of the last good fetch.
    pub fn fetched_at(&self) -> Option<i64> {
        self.fetched_at
    }

    /// Why the last fetch failed, until a fetch succeeds.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// An attempt in the last `min_refetch_seconds`. A clock that went backwards
    /// does not count as recent, so it cannot block fetching for long.
    fn attempted_recently(&self, now: i64) -> bool {
        self.last_attempt.is_some_and(|at| {
            (0..self.policy.min_refetch_seconds).contains(&now.saturating_sub(at))
        })
    }
}
