//! Admissions a worker remembers. kubectl and controllers send the same
//! request again and again (the same token, method, path and headers); the
//! gate's answer to a request it let through depends on nothing else, so a
//! repeat is answered from memory: the same header changes and masking, and
//! the audit Events already serialized ([`crate::audit::EventText`]), with
//! only the audit id and times new.
//!
//! What is remembered, and for how long:
//! - only forwards the policy allowed or observed, in enforce mode, and not
//!   recorded sessions: refusals, approvals (which use grants up), self
//!   reviews and readiness probes take the whole way every time;
//! - keyed by everything of the request the gate reads: the method, the
//!   path, every header in order but Envoy's own `x-request-id`, and the
//!   peer's address; two requests share an entry only when all of it is
//!   byte for byte the same;
//! - for at most [`REMEMBERED_SECONDS`], and only for a request whose token
//!   the verifier accepts now as the same identity
//!   ([`gatehouse_core::identity::token_cache`]: a kept verdict ends with a
//!   new key set, the token's expiry or its trust window): a remembered
//!   admission never outlives the verification it rests on. The policy reads
//!   the request and the identity, nothing else, so nothing else can change
//!   an admission;
//! - forgotten whole when the gate is given a grant book or an approval
//!   memory; a new configuration is a new gate.

use super::{Forward, RequestHead};
use gatehouse_core::identity::Identity;
use std::collections::HashMap;
use std::net::SocketAddr;

/// How long an admission is remembered (seconds), at most.
pub const REMEMBERED_SECONDS: i64 = 10;
/// Most admissions remembered per worker.
pub const MAX_REMEMBERED: usize = 256;
/// Requests whose key would be longer are not remembered.
const MAX_KEY_BYTES: usize = 16 * 1024;
/// The one header the key leaves out: Envoy sets a new one on every request,
/// and the gate never reads it.
const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Debug)]
struct Entry {
    forward: Forward,
    /// Who the caller was proven to be.
    identity: Identity,
    /// Unix seconds from which it is judged again.
    until: i64,
}

/// The admissions of one gate (one worker's configuration).
#[derive(Debug, Default)]
pub(super) struct Remembered {
    entries: HashMap<Vec<u8>, Entry>,
}

impl Remembered {
    /// The forward remembered under `key` for a request arriving at
    /// `head.now_micros` from a caller now proven to be `identity`, made this
    /// request's; `None` when there is none or it is no longer valid.
    pub(super) fn get(
        &self,
        key: &[u8],
        head: &RequestHead<'_>,
        identity: &Identity,
    ) -> Option<Forward> {
        let now = head.now_micros.div_euclid(1_000_000);
        let entry = self
            .entries
            .get(key)
            .filter(|entry| now < entry.until && entry.identity == *identity)?;
        Some(entry.forward.for_request(head.audit_id, head.now_micros))
    }

    /// Remembers `forward`, the gate's answer to the request of `key`, from
    /// `now_seconds`.
    pub(super) fn insert(
        &mut self,
        key: Vec<u8>,
        forward: &Forward,
        identity: Identity,
        now_seconds: i64,
    ) {
        if self.entries.len() >= MAX_REMEMBERED && !self.entries.contains_key(&key) {
            self.entries.retain(|_, entry| now_seconds < entry.until);
            if self.entries.len() >= MAX_REMEMBERED {
                // Full of live entries: start over rather than track ages.
                self.entries.clear();
            }
        }
        let mut forward = forward.clone();
        forward.prepare_text();
        self.entries.insert(
            key,
            Entry {
                forward,
                identity,
                until: now_seconds.saturating_add(REMEMBERED_SECONDS),
            },
        );
    }

    /// Forgets every admission.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The key of `head`: what the gate reads of it, each part length-prefixed
/// so no two requests run together into one key; `None` when too long.
pub(super) fn key(head: &RequestHead<'_>) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(512);
    let mut part = |bytes: &[u8]| {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        key.extend_from_slice(&len.to_le_bytes());
        key.extend_from_slice(bytes);
    };
    part(head.method.as_bytes());
    part(head.path.as_bytes());
    // `sourceIPs` takes the peer's address, not its port.
    let peer = head.peer.map(|peer| match peer.parse::<SocketAddr>() {
        Ok(address) => address.ip().to_string(),
        Err(_) => peer.to_owned(),
    });
    part(peer.as_deref().unwrap_or("\u{0}none").as_bytes());
    for (name, value) in head.headers {
        if name.eq_ignore_ascii_case(REQUEST_ID_HEADER) {
            continue;
        }
        part(name.as_bytes());
        part(value.as_bytes());
    }
    (key.len() <= MAX_KEY_BYTES).then_some(key)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::super::tests::{ISSUER, NOW, forward, minter, token, warm_gate};
    use super::super::{Admission, RequestHead};
    use gatehouse_core::identity::JwsAlgorithm;
    use gatehouse_core::identity::testing::Minter;
    use gatehouse_core::identity::token_cache::TRUSTED_SECONDS;
    use proptest::prelude::*;
    use serde_json::json;

    const SECRET: &str = "/api/v1/namespaces/prod/secrets/db-credentials";

    struct Request<'a> {
        method: &'a str,
        path: &'a str,
        headers: Vec<(String, String)>,
        peer: Option<&'a str>,
        audit_id: String,
        now_micros: i64,
    }

    impl Request<'_> {
        fn head(&self) -> RequestHead<'_> {
            RequestHead {
                method: self.method,
                path: self.path,
                headers: &self.headers,
                peer: self.peer,
                audit_id: &self.audit_id,
                now_micros: self.now_micros,
            }
        }
    }

    fn request<'a>(path: &'a str, headers: &[(&str, &str)], seq: i64) -> Request<'a> {
        Request {
            method: "GET",
            path,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            peer: Some("10.0.0.7:5555"),
            audit_id: format!("audit-{seq}"),
            now_micros: NOW * 1_000_000 + seq,
        }
    }

    /// The same admission, field for field, and the same records.
    fn assert_same(remembered: &Admission, in_full: &Admission) {
        match (remembered, in_full) {
            (Admission::Forward(a), Admission::Forward(b)) => {
                let (mut a, mut b) = (a.clone(), b.clone());
                assert_eq!(a.remove_headers, b.remove_headers);
                assert_eq!(a.set_headers, b.set_headers);
                assert_eq!(a.add_headers, b.add_headers);
                assert_eq!(a.mask, b.mask);
                assert_eq!(a.body_masker.is_some(), b.body_masker.is_some());
                assert_eq!(a.recording.is_some(), b.recording.is_some());
                assert_eq!(a.decision(), b.decision());
                assert_eq!(a.is_long_running(), b.is_long_running());
                let fields = ["data".to_owned(), "metadata.annotations".to_owned()];
                for (status, masked) in [(200, false), (200, true), (500, true)] {
                    if masked {
                        a.set_masked_fields(&fields);
                        b.set_masked_fields(&fields);
                    }
                    let (started, now) = (NOW * 1_000_000 + 17, NOW * 1_000_000 + 900);
                    let expected = b.records(status, started, now);
                    assert_eq!(a.records(status, started, now), expected);
                    assert_eq!(a.current_records(status, started, now), expected);
                    assert_eq!(b.current_records(status, started, now), expected);
                }
            }
            (Admission::Respond(a), Admission::Respond(b)) => assert_eq!(a, b),
            (a, b) => assert_eq!(
                std::mem::discriminant(a),
                std::mem::discriminant(b),
                "{a:?} / {b:?}"
            ),
        }
    }

    #[test]
    fn a_repeat_is_answered_from_memory_with_its_own_audit_id_and_time() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let bearer = format!("Bearer {}", token(&minter, "developer", "developers"));
        let first = request(SECRET, &[("authorization", &bearer)], 1);
        let first = forward(gate.admit(&first.head()));
        assert_eq!(gate.remembered_admissions(), 1);
        let again = request(
            SECRET,
            &[("authorization", &bearer), ("x-request-id", "other")],
            2,
        );
        let mut repeat = forward(gate.admit(&again.head()));
        assert_eq!(
            gate.remembered_admissions(),
            1,
            "x-request-id is no part of the key"
        );
        assert!(
            repeat
                .set_headers
                .contains(&("Audit-ID".to_owned(), "audit-2".to_owned()))
        );
        assert_ne!(first.set_headers, repeat.set_headers);
        let event: serde_json::Value = serde_json::from_str(repeat.current_records(
            200,
            again.now_micros,
            again.now_micros + 5,
        ))
        .unwrap();
        assert_eq!(event["auditID"], "audit-2");
        assert_eq!(
            event["requestReceivedTimestamp"],
            crate::audit::MicroTime(again.now_micros).to_string()
        );
        // Anything else the gate reads is another request.
        for (name, value) in [
            ("user-agent", "kubectl/v1.33.1"),
            ("accept", "application/yaml"),
            ("kubectl-session", "18e26df9"),
            ("x-forwarded-for", "192.0.2.1"),
        ] {
            let other = request(SECRET, &[("authorization", &bearer), (name, value)], 3);
            let remembered = gate.admit(&other.head());
            assert_same(&remembered, &gate.admit_in_full(&other.head()));
        }
        assert_eq!(gate.remembered_admissions(), 5);
        let mut elsewhere = request(SECRET, &[("authorization", &bearer)], 4);
        elsewhere.peer = Some("10.0.0.8:5555");
        let Admission::Forward(mut elsewhere) = gate.admit(&elsewhere.head()) else {
            panic!("admitted")
        };
        assert!(
            elsewhere
                .current_records(200, 0, 0)
                .contains("\"sourceIPs\":[\"10.0.0.8\"]")
        );
    }

    #[test]
    fn refusals_approvals_and_other_modes_are_judged_every_time() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let dba = format!("Bearer {}", token(&minter, "dba", "dba"));
        let exec = "/api/v1/namespaces/prod/pods/web-0/exec?command=ls&stdout=true";
        for seq in 0..3 {
            let refused = request(exec, &[("authorization", &dba)], seq);
            assert!(matches!(gate.admit(&refused.head()), Admission::Respond(_)));
            let impersonating = request(
                SECRET,
                &[("authorization", &dba), ("impersonate-user", "x")],
                seq,
            );
            assert!(matches!(
                gate.admit(&impersonating.head()),
                Admission::Respond(_)
            ));
            let anonymous = request(SECRET, &[], seq);
            assert!(matches!(
                gate.admit(&anonymous.head()),
                Admission::Respond(_)
            ));
        }
        assert_eq!(gate.remembered_admissions(), 0);
        let mut shadow = super::super::tests::gate(json!({"mode": "shadow"}));
        shadow
            .verifier_mut()
            .unwrap()
            .keys_fetched(ISSUER, minter.jwks_json().as_bytes(), NOW)
            .unwrap();
        let dev = format!("Bearer {}", token(&minter, "developer", "developers"));
        forward(shadow.admit(&request(SECRET, &[("authorization", &dev)], 1).head()));
        assert_eq!(
            shadow.remembered_admissions(),
            0,
            "only enforce mode remembers"
        );
    }

    #[test]
    fn a_remembered_admission_ends_with_the_trust_in_its_token() {
        let minter = minter();
        let mut gate = warm_gate(&minter);
        let bearer = format!("Bearer {}", token(&minter, "developer", "developers"));
        let at = |seconds: i64| {
            let mut request = request(SECRET, &[("authorization", bearer.as_str())], 0);
            request.now_micros = (NOW + seconds) * 1_000_000;
            request
        };
        forward(gate.admit(&at(0).head()));
        forward(gate.admit(&at(TRUSTED_SECONDS - 1).head()));
        // The issuer rotates its key out: the token is judged again at once.
        let rotated = Minter::generate(JwsAlgorithm::Es256, ISSUER, "gatehouse", "k2").unwrap();
        gate.verifier_mut()
            .unwrap()
            .keys_fetched(ISSUER, rotated.jwks_json().as_bytes(), NOW + 1)
            .unwrap();
        let refused = gate.admit(&at(TRUSTED_SECONDS - 1).head());
        assert!(
            matches!(&refused, Admission::Respond(r) if r.status == 401)
                || matches!(refused, Admission::FetchKeys(_)),
            "judged again once the token is no longer trusted: {refused:?}"
        );
        // A token that expires (without leeway) is refused from its expiry on.
        let short = minter
            .mint(
                &json!({"sub": "developer", "groups": ["developers"]}),
                3,
                NOW,
            )
            .unwrap();
        let mut gate = super::super::tests::gate(json!({"identity": {"issuers": [{
            "issuer": ISSUER,
            "audiences": ["gatehouse"],
            "remote_jwks": {"cluster": "gatehouse_idp", "path": "/jwks.json"},
            "leeway_seconds": 0
        }]}}));
        gate.verifier_mut()
            .unwrap()
            .keys_fetched(ISSUER, minter.jwks_json().as_bytes(), NOW)
            .unwrap();
        let short = format!("Bearer {short}");
        let at = |seconds: i64| {
            let mut request = request(SECRET, &[("authorization", short.as_str())], 0);
            request.now_micros = (NOW + seconds) * 1_000_000;
            request
        };
        forward(gate.admit(&at(0).head()));
        forward(gate.admit(&at(2).head()));
        assert!(matches!(gate.admit(&at(4).head()), Admission::Respond(r) if r.status == 401));
    }

    proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 48,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]
        /// Over sequences of requests that repeat, mixing callers, targets,
        /// headers and the passing of time, a gate that remembers answers
        /// each one as a gate judging it the whole way does.
        #[test]
        fn remembering_answers_as_judging_in_full(
            steps in proptest::collection::vec(
                (0usize..4, 0usize..9, 0usize..4, 0usize..3, 0usize..3, any::<u16>(), 0i64..4_000_000),
                1..40,
            ),
        ) {
            let minter = minter();
            let bearers: Vec<String> = vec![
                format!("Bearer {}", token(&minter, "developer", "developers")),
                format!("Bearer {}", token(&minter, "dba", "dba")),
                format!("Bearer {}", token(&minter, "root", "platform-admins")),
                format!(
                    "Bearer {}",
                    minter.mint(&json!({"sub": "brief", "groups": ["developers"]}), 20, NOW).unwrap()
                ),
            ];
            let targets = [
                ("GET", SECRET),
                ("GET", "/api/v1/namespaces/dev/pods?limit=500"),
                ("GET", "/api/v1/namespaces/dev/pods/web-0"),
                ("DELETE", "/api/v1/namespaces/dev"),
                ("GET", "/api"),
                ("GET", "/api/v1/namespaces/prod/pods/web-0/exec?command=ls&stdout=true"),
                ("POST", "/api/v1/namespaces/dev/pods/web-0/exec?command=ls&stdout=true"),
                ("GET", "/api/v1/watch/namespaces/dev/pods"),
                ("GET", "/gatehouse/ready"),
            ];
            let extras: [&[(&str, &str)]; 4] = [
                &[],
                &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"), ("accept-encoding", "gzip")],
                &[("user-agent", "kubectl/v1.33.1"), ("kubectl-session", "18e26df9")],
                &[("x-http-method-override", "DELETE")],
            ];
            let peers = [Some("10.0.0.7:5555"), Some("10.0.0.7:6666"), None];
            let (mut remembering, mut in_full) = (warm_gate(&minter), warm_gate(&minter));
            let mut now = NOW * 1_000_000;
            for (seq, (who, target, extra, peer, upgrade, request_id, later)) in steps.into_iter().enumerate() {
                now += later;
                let (method, path) = targets[target];
                let mut headers = vec![("authorization".to_owned(), bearers[who].clone())];
                headers.extend(extras[extra].iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
                headers.push(("x-request-id".to_owned(), request_id.to_string()));
                if upgrade == 1 {
                    headers.push(("upgrade".to_owned(), "websocket".to_owned()));
                }
                let audit_id = format!("audit-{seq}");
                let head = RequestHead {
                    method,
                    path,
                    headers: &headers,
                    peer: peers[peer],
                    audit_id: &audit_id,
                    now_micros: now,
                };
                assert_same(&remembering.admit(&head), &in_full.admit_in_full(&head));
            }
        }
    }
}
