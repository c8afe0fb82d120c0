//! Keeping a [`Verifier`]'s remote key sets fresh: which fetches are due, what
//! a rejected token calls for, and what to do with the answers. The glue only
//! carries out the fetches this returns; every filter drives its keys the same
//! way (see the module docs of [`crate::identity`]). Times are unix seconds.

use super::{RemoteJwksConfig, TokenRejection, Verifier};

/// A key set to fetch from the identity provider's Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFetch {
    pub issuer: String,
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub timeout_ms: u32,
}

impl KeyFetch {
    fn new(issuer: &str, remote: &RemoteJwksConfig) -> KeyFetch {
        KeyFetch {
            issuer: issuer.to_owned(),
            cluster: remote.cluster.clone(),
            path: remote.path.clone(),
            authority: remote
                .authority
                .clone()
                .unwrap_or_else(|| remote.cluster.clone()),
            timeout_ms: remote.timeout_ms,
        }
    }
}

impl Verifier {
    /// Remote key sets due for a scheduled refresh at `now`; each is marked as
    /// being fetched.
    pub fn refreshes_due(&mut self, now: i64) -> Vec<KeyFetch> {
        let due: Vec<KeyFetch> = self
            .remote_jwks()
            .filter(|(issuer, _)| {
                self.jwks_cache(issuer)
                    .is_some_and(|cache| cache.needs_refresh(now))
            })
            .map(|(issuer, remote)| KeyFetch::new(issuer, remote))
            .collect();
        for fetch in &due {
            if let Some(cache) = self.jwks_cache_mut(&fetch.issuer) {
                cache.on_fetch_started(now);
            }
        }
        due
    }

    /// The fetch a rejected token calls for now, if any: the first fetch of an
    /// issuer's keys (every caller waits for it), or a refresh on an unknown
    /// `kid` (key rotation), paced by the cache. `None`: the rejection stands.
    pub fn fetch_for(&mut self, rejection: &TokenRejection, now: i64) -> Option<KeyFetch> {
        let (issuer, start) = match rejection {
            TokenRejection::KeysUnavailable { issuer } => {
                let cache = self.jwks_cache_mut(issuer)?;
                let first = cache.fetched_at().is_none() && cache.last_error().is_none();
                let start = first || cache.needs_refresh(now);
                if start {
                    cache.on_fetch_started(now);
                }
                (issuer, start)
            }
            TokenRejection::UnknownKid { issuer } => {
                let start = self.jwks_cache_mut(issuer)?.on_unknown_kid(now);
                (issuer, start)
            }
            _ => return None,
        };
        if !start {
            return None;
        }
        self.remote_jwks()
            .find(|(name, _)| name == issuer)
            .map(|(name, remote)| KeyFetch::new(name, remote))
    }

    /// The issuers with remote key sets.
    pub fn remote_issuers(&self) -> Vec<String> {
        self.remote_jwks()
            .map(|(issuer, _)| issuer.to_owned())
            .collect()
    }

    /// Minimum seconds between two fetches of `issuer`'s keys.
    pub fn min_refetch_seconds(&self, issuer: &str) -> i64 {
        self.jwks_cache(issuer)
            .map_or(30, |cache| cache.policy().min_refetch_seconds)
    }

    /// A key set arrived for `issuer`, fetched (here or by another worker) at
    /// `fetched_at`.
    pub fn keys_fetched(
        &mut self,
        issuer: &str,
        body: &[u8],
        fetched_at: i64,
    ) -> Result<(), String> {
        match self.jwks_cache_mut(issuer) {
            None => Err(format!("no remote key set for issuer {issuer}")),
            Some(cache) => cache
                .on_fetch_ok(body, fetched_at)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    /// A fetch of `issuer`'s keys was abandoned before its answer (see
    /// [`super::JwksCache::on_fetch_abandoned`]): not a failure.
    pub fn keys_fetch_abandoned(&mut self, issuer: &str) {
        if let Some(cache) = self.jwks_cache_mut(issuer) {
            cache.on_fetch_abandoned();
        }
    }

    /// A fetch of `issuer`'s keys failed (status, timeout, connection error).
    pub fn keys_failed(&mut self, issuer: &str, now: i64, reason: &str) {
        if let Some(cache) = self.jwks_cache_mut(issuer) {
            cache.on_fetch_failed(now, reason);
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::identity::JwsAlgorithm;
    use crate::identity::testing::Minter;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn minter(kid: &str) -> Minter {
        Minter::generate(JwsAlgorithm::Es256, "https://idp.test", "gatehouse", kid).unwrap()
    }

    fn remote_verifier(minter: &Minter) -> Verifier {
        let config = format!(
            r#"{{"issuers": [{{"issuer": "{}", "audiences": ["gatehouse"],
                "remote_jwks": {{"cluster": "idp", "path": "/jwks.json", "refresh_seconds": 60,
                                 "min_refetch_seconds": 10}}}}]}}"#,
            minter.issuer()
        );
        Verifier::from_json(config.as_bytes()).unwrap()
    }

    #[test]
    fn first_fetch_is_due_at_once_and_not_again_while_in_flight() {
        let minter = minter("k1");
        let mut verifier = remote_verifier(&minter);
        let due = verifier.refreshes_due(NOW);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].cluster, "idp");
        assert_eq!(due[0].authority, "idp", "authority defaults to the cluster");
        assert!(verifier.refreshes_due(NOW + 1).is_empty());
        verifier
            .keys_fetched(minter.issuer(), minter.jwks_json().as_bytes(), NOW + 1)
            .unwrap();
        assert!(verifier.refreshes_due(NOW + 30).is_empty());
        assert_eq!(verifier.refreshes_due(NOW + 61).len(), 1);
    }

    #[test]
    fn unknown_kid_asks_for_a_paced_refetch() {
        let minter = minter("k1");
        let mut verifier = remote_verifier(&minter);
        verifier
            .keys_fetched(minter.issuer(), minter.jwks_json().as_bytes(), NOW)
            .unwrap();
        let rotated = self::minter("k2");
        let token = rotated.mint(&json!({"sub": "alice"}), 300, NOW).unwrap();
        let rejection = verifier.verify(&token, NOW + 20).unwrap_err();
        assert!(matches!(rejection, TokenRejection::UnknownKid { .. }));
        assert!(verifier.fetch_for(&rejection, NOW + 20).is_some());
        assert!(
            verifier.fetch_for(&rejection, NOW + 21).is_none(),
            "a second unknown kid within min_refetch_seconds must not refetch"
        );
        verifier
            .keys_fetched(minter.issuer(), rotated.jwks_json().as_bytes(), NOW + 22)
            .unwrap();
        assert_eq!(verifier.verify(&token, NOW + 22).unwrap().subject, "alice");
    }

    #[test]
    fn an_abandoned_fetch_does_not_pace_the_next_one_but_a_failed_one_does() {
        let minter = minter("k1");
        let mut verifier = remote_verifier(&minter);
        verifier
            .keys_fetched(minter.issuer(), minter.jwks_json().as_bytes(), NOW)
            .unwrap();
        let rotated = self::minter("k2");
        let token = rotated.mint(&json!({"sub": "alice"}), 300, NOW).unwrap();
        let rejection = verifier.verify(&token, NOW + 20).unwrap_err();
        assert!(verifier.fetch_for(&rejection, NOW + 20).is_some());
        verifier.keys_fetch_abandoned(minter.issuer());
        assert!(
            verifier.fetch_for(&rejection, NOW + 21).is_some(),
            "the caller of the first fetch went away: the next token may fetch at once"
        );
        verifier.keys_failed(minter.issuer(), NOW + 21, "status 503");
        assert!(
            verifier.fetch_for(&rejection, NOW + 22).is_none(),
            "a fetch that answered with a failure paces the next one"
        );
        verifier
            .keys_fetched(minter.issuer(), rotated.jwks_json().as_bytes(), NOW + 31)
            .unwrap();
        assert!(verifier.refreshes_due(NOW + 91).len() == 1);
        verifier.keys_fetch_abandoned(minter.issuer());
        assert!(
            verifier.refreshes_due(NOW + 91).len() == 1,
            "an abandoned scheduled refresh is due again at once"
        );
        assert!(
            verifier.refreshes_due(NOW + 92).is_empty(),
            "and paced again once started"
        );
    }

    #[test]
    fn lacks_keys_foresees_exactly_the_rejections_a_fetch_may_cure() {
        let minter = minter("k1");
        let mut verifier = remote_verifier(&minter);
        let claims = json!({"sub": "alice", "aud": "gatehouse"});
        let good = minter.mint(&claims, 300, NOW).unwrap();
        let rotated = self::minter("k2").mint(&claims, 300, NOW).unwrap();
        let forged = minter.impostor().unwrap().mint(&claims, 300, NOW).unwrap();
        let expired = minter.mint_expired(&claims, NOW).unwrap();
        let unknown_kid = TokenRejection::UnknownKid {
            issuer: minter.issuer().to_owned(),
        };
        let unavailable = TokenRejection::KeysUnavailable {
            issuer: minter.issuer().to_owned(),
        };
        for token in [&good, &rotated, &forged, &expired] {
            assert_eq!(verifier.lacks_keys(token, NOW), Some(unavailable.clone()));
        }
        verifier
            .keys_fetched(minter.issuer(), minter.jwks_json().as_bytes(), NOW)
            .unwrap();
        for (token, lacking) in [
            (good.as_str(), None),
            (rotated.as_str(), Some(unknown_kid)),
            (forged.as_str(), None),
            (expired.as_str(), None),
            ("not a token", None),
        ] {
            assert_eq!(verifier.lacks_keys(token, NOW), lacking, "{token}");
            if let Some(lacking) = lacking {
                assert_eq!(verifier.verify(token, NOW).unwrap_err(), lacking);
            } else {
                assert!(!matches!(
                    verifier.verify(token, NOW),
                    Err(TokenRejection::UnknownKid { .. } | TokenRejection::KeysUnavailable { .. })
                ));
            }
        }
    }

    #[test]
    fn other_rejections_call_for_no_fetch() {
        let minter = minter("k1");
        let mut verifier = remote_verifier(&minter);
        let rejection = TokenRejection::Expired;
        assert_eq!(verifier.fetch_for(&rejection, NOW), None);
        verifier.keys_failed(minter.issuer(), NOW, "status 503");
        assert_eq!(verifier.min_refetch_seconds(minter.issuer()), 10);
        assert_eq!(verifier.remote_issuers(), vec![minter.issuer().to_owned()]);
        assert!(
            verifier.keys_fetched("https://other", b"{}", NOW).is_err(),
            "keys for an issuer that is not configured are refused"
        );
    }
}
