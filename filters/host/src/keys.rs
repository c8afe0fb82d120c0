//! Remote key sets shared by every worker of a filter.
//!
//! Each worker VM holds its own [`Verifier`]. A key set fetched by any worker is
//! published in shared data (`<prefix>|<issuer>`: 8 bytes of fetch time, then
//! the JWKS) and adopted by the others on their tick, so a rotation seen by one
//! worker reaches all. Scheduled refreshes are claimed across workers by
//! compare-and-swap on `<prefix>_claim|<issuer>`, so one worker fetches per
//! period. The decisions (what is due, what a rejection calls for) are the
//! verifier's; this module only moves bytes between it and the host.
//!
//! Every fetch that fails (not dispatched, no answer, a status other than 200,
//! or a key set the verifier cannot use) is counted in
//! `<prefix>_fetch_failures_total`, so an operator hears about it before tokens
//! start failing with `keys_unavailable`.

use crate::{BufferType, LogLevel, MapType, Status};
use gatehouse_core::identity::{KeyFetch, Verifier};
use std::collections::BTreeMap;

/// Largest key-set response read from the identity provider.
const MAX_JWKS_RESPONSE: usize = 256 * 1024;

/// One worker's side of the key distribution.
#[derive(Debug)]
pub struct KeyDistribution {
    prefix: &'static str,
    /// CAS of the shared key set last adopted, per issuer.
    adopted: BTreeMap<String, u32>,
    /// Fetches this worker started: call token → issuer.
    in_flight: BTreeMap<u32, String>,
    /// `<prefix>_fetch_failures_total`.
    failures: Option<u32>,
}

impl KeyDistribution {
    /// Key sets published under `prefix` (one per filter: shared data is per VM id,
    /// but a distinct prefix keeps logs and debugging unambiguous).
    pub fn new(prefix: &'static str) -> Self {
        KeyDistribution {
            prefix,
            adopted: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            failures: crate::metrics::define(
                crate::MetricType::Counter,
                &format!("{prefix}_fetch_failures_total"),
                prefix,
            ),
        }
    }

    /// Counts a failed fetch.
    fn failed(&self) {
        if let Some(id) = self.failures {
            let _ = crate::increment_metric(id, 1);
        }
    }

    /// On the root context's tick: adopts what other workers published and
    /// starts the scheduled refreshes this worker wins the claim for.
    pub fn on_tick(&mut self, verifier: &mut Verifier, now: i64) {
        self.adopt_shared(verifier);
        for fetch in verifier.refreshes_due(now) {
            if self.claim_refresh(
                &fetch.issuer,
                now,
                verifier.min_refetch_seconds(&fetch.issuer),
            ) {
                self.start(verifier, &fetch, now);
            }
        }
    }

    /// Starts `fetch` now; its answer comes to the context that called this,
    /// which hands it to [`KeyDistribution::on_response`]. A fetch that cannot be
    /// dispatched counts as failed. Returns the call token.
    pub fn start(&mut self, verifier: &mut Verifier, fetch: &KeyFetch, now: i64) -> Option<u32> {
        match dispatch(fetch) {
            Ok(token) => {
                self.in_flight.insert(token, fetch.issuer.clone());
                Some(token)
            }
            Err(status) => {
                self.failed();
                verifier.keys_failed(&fetch.issuer, now, &format!("dispatch failed: {status:?}"));
                None
            }
        }
    }

    /// An HTTP call answered. If it is one of this worker's key fetches, applies
    /// it (a good set is published to every worker) and returns its issuer.
    pub fn on_response(
        &mut self,
        verifier: &mut Verifier,
        token: u32,
        body_size: usize,
        now: i64,
    ) -> Option<String> {
        let issuer = self.in_flight.remove(&token)?;
        let status = crate::get_header(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .unwrap_or_default();
        if status != "200" {
            let reason = if status.is_empty() {
                "no response (timeout or connection failure)".to_owned()
            } else {
                format!("status {status}")
            };
            crate::log(
                LogLevel::Warn,
                &format!("gatehouse: fetching keys of {issuer} failed: {reason}"),
            );
            self.failed();
            verifier.keys_failed(&issuer, now, &reason);
            return Some(issuer);
        }
        let body = crate::get_buffer(
            BufferType::HttpCallResponseBody,
            0,
            body_size.min(MAX_JWKS_RESPONSE),
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        match verifier.keys_fetched(&issuer, &body, now) {
            Ok(()) => {
                let mut shared = now.to_be_bytes().to_vec();
                shared.extend_from_slice(&body);
                if let Err(status) = crate::set_shared_data(&self.shared_key(&issuer), &shared, 0) {
                    crate::log(
                        LogLevel::Warn,
                        &format!("gatehouse: sharing keys of {issuer} failed: {status:?}"),
                    );
                }
            }
            Err(error) => {
                self.failed();
                crate::log(
                    LogLevel::Warn,
                    &format!("gatehouse: key set of {issuer} unusable: {error}"),
                );
            }
        }
        Some(issuer)
    }

    /// Adopts key sets other workers published; whether any was new.
    pub fn adopt_shared(&mut self, verifier: &mut Verifier) -> bool {
        let mut adopted_any = false;
        for issuer in verifier.remote_issuers() {
            let Ok(Some((value, cas))) = crate::get_shared_data(&self.shared_key(&issuer)) else {
                continue;
            };
            if self.adopted.get(&issuer) == Some(&cas) {
                continue;
            }
            self.adopted.insert(issuer.clone(), cas);
            let Some((stamp, body)) = value.split_first_chunk::<8>() else {
                continue;
            };
            match verifier.keys_fetched(&issuer, body, i64::from_be_bytes(*stamp)) {
                Ok(()) => adopted_any = true,
                Err(error) => crate::log(
                    LogLevel::Warn,
                    &format!("gatehouse: shared key set of {issuer} unusable: {error}"),
                ),
            }
        }
        adopted_any
    }

    fn shared_key(&self, issuer: &str) -> String {
        format!("{}|{issuer}", self.prefix)
    }

    /// Claims a scheduled refresh of `issuer` across workers (compare-and-swap on
    /// the claim time), so one worker fetches per period.
    fn claim_refresh(&self, issuer: &str, now: i64, min_refetch_seconds: i64) -> bool {
        let key = format!("{}_claim|{issuer}", self.prefix);
        let (previous, cas) = match crate::get_shared_data(&key) {
            Ok(Some((value, cas))) => (
                value
                    .first_chunk::<8>()
                    .map(|stamp| i64::from_be_bytes(*stamp)),
                cas,
            ),
            Ok(None) => (None, 0),
            Err(_) => return false,
        };
        if previous.is_some_and(|at| (0..min_refetch_seconds).contains(&now.saturating_sub(at))) {
            return false;
        }
        crate::set_shared_data(&key, &now.to_be_bytes(), cas).is_ok()
    }
}

/// Starts a key fetch; the token names the call in `on_http_call_response`.
fn dispatch(fetch: &KeyFetch) -> Result<u32, Status> {
    crate::dispatch_http_call(
        &fetch.cluster,
        &[
            (":method", "GET"),
            (":path", &fetch.path),
            (":authority", &fetch.authority),
            ("accept", "application/json"),
        ],
        None,
        std::time::Duration::from_millis(u64::from(fetch.timeout_ms)),
    )
}
