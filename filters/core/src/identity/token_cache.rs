//! Recently verified tokens, so each distinct token costs one signature check
//! per worker rather than one per use. kubectl sends the same token with every
//! request, and a connection pool or pgbench logs in with the same token on
//! every connection; checking the signature each time costs more than the rest
//! of what the filter does for a request or a login.
//!
//! A token is kept only after it verified, keyed by its exact text, with the
//! identity its verification produced. A later use gets that identity without
//! a new signature check only while a fresh verification would produce the
//! same result, which is checked against the time of every use:
//!
//! - `exp` (with the issuer's leeway) has not passed and `nbf` (likewise) has;
//! - the issuer's remote keys are still usable (not stale beyond
//!   `max_stale_seconds`);
//! - the verifier holds the key sets it held then: installing a different key
//!   set (a rotation, a removed key) drops every kept token at once;
//! - it was verified at most [`TRUSTED_SECONDS`] ago, and not in the future
//!   (a clock that went back).
//!
//! So a key removed at the identity provider stops its tokens when gatehouse
//! installs the key set without it, as it would without the cache; the cache
//! never stretches that. [`TRUSTED_SECONDS`] bounds how long any verdict is
//! reused at all, the way the Kubernetes API server caches token
//! authentication.
//!
//! Failures are never kept: a token that failed is verified again on every
//! use. Memory is bounded: tokens longer than [`MAX_TOKEN_BYTES`] are verified
//! every time, and at most [`MAX_TOKENS`] tokens of at most
//! [`MAX_CACHED_TOKEN_BYTES`] in all are kept (each with its identity, which
//! is decoded from the token's claims). When a token does not fit, the tokens
//! no longer trusted are dropped, and if that is not enough, all of them: the
//! cost of a full cache is a signature check per token again, never a wrong
//! verdict.

use super::Identity;
use std::collections::HashMap;

/// Longest a verified token is trusted without checking it again (seconds).
pub const TRUSTED_SECONDS: i64 = 10;
/// Most tokens kept.
pub const MAX_TOKENS: usize = 1024;
/// Longer tokens are verified every time (they are not worth the memory).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most bytes of token text kept in all.
pub const MAX_CACHED_TOKEN_BYTES: usize = 1024 * 1024;

/// The span of time in which verifying a token again gives the identity its
/// verification gave (unix seconds), as the verifier's checks define it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Validity {
    /// The first second the token is accepted (`nbf` less the leeway).
    pub(super) from: Option<i64>,
    /// The first second it is refused (`exp` plus the leeway, plus one; or
    /// when its issuer's keys stop being usable, if sooner).
    pub(super) before: i64,
}

#[derive(Debug, Clone)]
struct Trusted {
    identity: Identity,
    verified_at: i64,
    from: Option<i64>,
    /// The first second the token is verified again.
    until: i64,
}

impl Trusted {
    fn holds_at(&self, now: i64) -> bool {
        self.verified_at <= now && self.from.is_none_or(|from| from <= now) && now < self.until
    }
}

/// The tokens a [`super::Verifier`] verified in the last [`TRUSTED_SECONDS`]
/// with the key sets it holds.
#[derive(Debug, Clone, Default)]
pub(super) struct TokenCache {
    /// The verifier's key generation the kept tokens were verified with.
    key_generation: u64,
    tokens: HashMap<Box<str>, Trusted>,
    /// Bytes of token text kept.
    token_bytes: usize,
}

impl TokenCache {
    /// The identity `token` was verified as, while that verdict still holds
    /// at `now` with the keys of `key_generation`.
    pub(super) fn get(&self, token: &str, now: i64, key_generation: u64) -> Option<&Identity> {
        if key_generation != self.key_generation {
            return None;
        }
        self.tokens
            .get(token)
            .filter(|trusted| trusted.holds_at(now))
            .map(|trusted| &trusted.identity)
    }

    /// Drops every kept token unless they were verified with the keys of
    /// `key_generation`.
    pub(super) fn keep_only(&mut self, key_generation: u64) {
        if key_generation != self.key_generation {
            self.clear();
            self.key_generation = key_generation;
        }
    }

    /// Notes that `token` was just verified as `identity`, with the keys of
    /// `key_generation`, and how long that verdict holds.
    pub(super) fn insert(
        &mut self,
        token: &str,
        identity: &Identity,
        validity: Validity,
        now: i64,
        key_generation: u64,
    ) {
        self.keep_only(key_generation);
        if token.len() > MAX_TOKEN_BYTES {
            return;
        }
        let trusted = Trusted {
            identity: identity.clone(),
            verified_at: now,
            from: validity.from,
            until: validity.before.min(now.saturating_add(TRUSTED_SECONDS)),
        };
        if !trusted.holds_at(now) {
            return;
        }
        if let Some(previous) = self.tokens.get_mut(token) {
            *previous = trusted;
            return;
        }
        if !self.fits(token) {
            self.tokens.retain(|_, trusted| trusted.holds_at(now));
            self.token_bytes = self.tokens.keys().map(|token| token.len()).sum();
            if !self.fits(token) {
                self.clear();
            }
        }
        self.token_bytes += token.len();
        self.tokens.insert(token.into(), trusted);
    }

    /// How many tokens are kept.
    pub(super) fn len(&self) -> usize {
        self.tokens.len()
    }

    fn fits(&self, token: &str) -> bool {
        self.tokens.len() < MAX_TOKENS && self.token_bytes + token.len() <= MAX_CACHED_TOKEN_BYTES
    }

    fn clear(&mut self) {
        self.tokens.clear();
        self.token_bytes = 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const KEYS: u64 = 1;

    fn identity() -> Identity {
        Identity {
            subject: "developer".into(),
            verified: true,
            ..Identity::default()
        }
    }

    fn until(before: i64) -> Validity {
        Validity { from: None, before }
    }

    #[test]
    fn a_verified_token_is_trusted_for_a_short_while() {
        let mut cache = TokenCache::default();
        cache.insert("t", &identity(), until(NOW + 3600), NOW, KEYS);
        assert_eq!(cache.get("t", NOW, KEYS).unwrap().subject, "developer");
        assert!(cache.get("t", NOW + TRUSTED_SECONDS - 1, KEYS).is_some());
        assert!(cache.get("t", NOW + TRUSTED_SECONDS, KEYS).is_none());
        assert!(cache.get("other", NOW, KEYS).is_none());
        assert!(
            cache.get("t", NOW - 1, KEYS).is_none(),
            "a clock that went back verifies again"
        );
    }

    #[test]
    fn never_outside_the_tokens_validity() {
        let mut cache = TokenCache::default();
        cache.insert("t", &identity(), until(NOW + 2), NOW, KEYS);
        assert!(cache.get("t", NOW + 1, KEYS).is_some());
        assert!(cache.get("t", NOW + 2, KEYS).is_none());
        cache.insert("expired", &identity(), until(NOW), NOW, KEYS);
        assert!(cache.get("expired", NOW, KEYS).is_none());
        let later = Validity {
            from: Some(NOW + 1),
            before: NOW + 3600,
        };
        cache.insert("not yet", &identity(), later, NOW, KEYS);
        assert!(cache.get("not yet", NOW, KEYS).is_none());
        assert_eq!(cache.len(), 1, "what does not hold now is not kept");
    }

    #[test]
    fn other_keys_end_the_trust_in_every_token() {
        let mut cache = TokenCache::default();
        cache.insert("t", &identity(), until(NOW + 3600), NOW, KEYS);
        assert!(cache.get("t", NOW, KEYS + 1).is_none());
        cache.insert("u", &identity(), until(NOW + 3600), NOW, KEYS + 1);
        assert_eq!(cache.len(), 1, "the tokens of the old keys are dropped");
        assert!(cache.get("t", NOW, KEYS).is_none());
        assert!(cache.get("u", NOW, KEYS + 1).is_some());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut cache = TokenCache::default();
        for i in 0..MAX_TOKENS {
            cache.insert(&format!("t{i}"), &identity(), until(NOW + 60), NOW, KEYS);
        }
        assert_eq!(cache.len(), MAX_TOKENS);
        cache.insert("one-more", &identity(), until(NOW + 60), NOW, KEYS);
        assert!(cache.len() <= MAX_TOKENS);
        assert!(cache.get("one-more", NOW, KEYS).is_some());
        let oversized = "x".repeat(MAX_TOKEN_BYTES + 1);
        cache.insert(&oversized, &identity(), until(NOW + 60), NOW, KEYS);
        assert!(cache.get(&oversized, NOW, KEYS).is_none());

        let mut cache = TokenCache::default();
        let long = |i: usize| format!("{i:0>width$}", width = MAX_TOKEN_BYTES);
        let fit = MAX_CACHED_TOKEN_BYTES / MAX_TOKEN_BYTES;
        for i in 0..fit {
            cache.insert(&long(i), &identity(), until(NOW + 60), NOW, KEYS);
        }
        assert_eq!(cache.len(), fit);
        cache.insert(&long(fit), &identity(), until(NOW + 60), NOW, KEYS);
        assert!(cache.token_bytes <= MAX_CACHED_TOKEN_BYTES);
        assert!(cache.get(&long(fit), NOW, KEYS).is_some());
    }

    #[test]
    fn a_full_cache_first_drops_the_tokens_no_longer_trusted() {
        let mut cache = TokenCache::default();
        cache.insert("old", &identity(), until(NOW + 1), NOW, KEYS);
        for i in 1..MAX_TOKENS {
            cache.insert(&format!("t{i}"), &identity(), until(NOW + 60), NOW, KEYS);
        }
        cache.insert("new", &identity(), until(NOW + 60), NOW + 1, KEYS);
        assert_eq!(cache.len(), MAX_TOKENS, "only the expired one made room");
        assert!(cache.get("t1", NOW + 1, KEYS).is_some());
        assert!(cache.get("new", NOW + 1, KEYS).is_some());
    }
}
