//! Recently verified bearer tokens. kubectl and other clients send the same
//! token with every request; checking its signature each time would cost more
//! than everything else the filter does for a request. A token verified once is
//! trusted again, without a new signature check, for at most
//! [`TRUSTED_SECONDS`] and never past its own expiry, the way the API server
//! caches token authentication. Only successes are kept; the cache is bounded.
//!
//! A key removed from the issuer's key set stops accepting its tokens within
//! [`TRUSTED_SECONDS`], not at once.

use gatehouse_core::identity::Identity;
use std::collections::HashMap;

/// How long a verified token is trusted without checking it again (seconds).
pub const TRUSTED_SECONDS: i64 = 10;
/// Most tokens kept.
pub const MAX_TOKENS: usize = 1024;
/// Longer tokens are verified every time (they are not worth the memory).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone)]
struct Verified {
    identity: Identity,
    /// Unix seconds after which the token is checked again.
    until: i64,
}

/// The tokens verified in the last [`TRUSTED_SECONDS`].
#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: HashMap<String, Verified>,
}

impl TokenCache {
    /// The identity `token` was verified as, if that is recent and the token
    /// has not expired since.
    pub fn get(&self, token: &str, now_seconds: i64) -> Option<&Identity> {
        self.tokens
            .get(token)
            .filter(|verified| now_seconds < verified.until)
            .map(|verified| &verified.identity)
    }

    /// Notes that `token` was just verified as `identity`.
    pub fn insert(&mut self, token: &str, identity: &Identity, now_seconds: i64) {
        if token.len() > MAX_TOKEN_BYTES {
            return;
        }
        let until = identity
            .expires_at
            .map_or(now_seconds + TRUSTED_SECONDS, |expiry| {
                expiry.min(now_seconds + TRUSTED_SECONDS)
            });
        if until <= now_seconds {
            return;
        }
        if self.tokens.len() >= MAX_TOKENS && !self.tokens.contains_key(token) {
            self.tokens
                .retain(|_, verified| now_seconds < verified.until);
            if self.tokens.len() >= MAX_TOKENS {
                // Full of live tokens: start over rather than track ages.
                self.tokens.clear();
            }
        }
        self.tokens.insert(
            token.to_owned(),
            Verified {
                identity: identity.clone(),
                until,
            },
        );
    }

    /// How many tokens are kept.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is kept.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn identity(expires_at: Option<i64>) -> Identity {
        Identity {
            subject: "developer".into(),
            verified: true,
            expires_at,
            ..Identity::default()
        }
    }

    #[test]
    fn a_verified_token_is_trusted_for_a_short_while() {
        let mut cache = TokenCache::default();
        cache.insert("t", &identity(Some(NOW + 3600)), NOW);
        assert_eq!(cache.get("t", NOW).unwrap().subject, "developer");
        assert!(cache.get("t", NOW + TRUSTED_SECONDS - 1).is_some());
        assert!(cache.get("t", NOW + TRUSTED_SECONDS).is_none());
        assert!(cache.get("other", NOW).is_none());
    }

    #[test]
    fn never_past_the_tokens_expiry() {
        let mut cache = TokenCache::default();
        cache.insert("t", &identity(Some(NOW + 2)), NOW);
        assert!(cache.get("t", NOW + 1).is_some());
        assert!(cache.get("t", NOW + 2).is_none());
        cache.insert("expired", &identity(Some(NOW)), NOW);
        assert!(cache.get("expired", NOW).is_none());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut cache = TokenCache::default();
        for i in 0..MAX_TOKENS {
            cache.insert(&format!("t{i}"), &identity(None), NOW);
        }
        assert_eq!(cache.len(), MAX_TOKENS);
        cache.insert("one-more", &identity(None), NOW);
        assert!(cache.len() <= MAX_TOKENS);
        assert!(cache.get("one-more", NOW).is_some());
        cache.insert(&"x".repeat(MAX_TOKEN_BYTES + 1), &identity(None), NOW);
        assert!(cache.len() <= MAX_TOKENS);
    }
}
