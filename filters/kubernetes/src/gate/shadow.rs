//! Shadow (observe-only) mode of the gate: the request is decoded, its token
//! verified and the policy applied as when enforcing, but the outcome is always
//! "forward unchanged": no refusal, no header rewritten, nothing masked. The
//! audit Events carry what the gate would have done:
//!
//! | annotation | value |
//! |---|---|
//! | `gatehouse.dev/mode` | `shadow` |
//! | `gatehouse.dev/would-be-status` | the status the gate would have answered with (`400`, `401`, `403`); absent when it would have forwarded |
//! | `gatehouse.dev/would-mask` | `true` when the policy would have masked the response |
//!
//! The decision annotations (`authorization.k8s.io/decision`, `gatehouse.dev/action`,
//! `gatehouse.dev/rule`) are the would-be decision; `responseStatus` is what the
//! client really got. A shadow instance goes first in the HTTP filter chain, so
//! it sees the caller's own token before the enforcing instance replaces it.

use super::{Admission, Forward, Gate, RequestHead};
use crate::audit::RequestAudit;
use crate::request_info::{RequestInfo, decode_request};
use crate::status::{self, Status};
use gatehouse_core::identity::Identity;
use gatehouse_core::policy::Decision;
use gatehouse_core::record::FilterMode;

/// `shadow` on every Event of a shadow instance.
pub const MODE_ANNOTATION: &str = "gatehouse.dev/mode";
/// The HTTP status a shadow instance would have answered with.
pub const WOULD_BE_STATUS_ANNOTATION: &str = "gatehouse.dev/would-be-status";
/// `true` when a shadow instance would have masked the response.
pub const WOULD_MASK_ANNOTATION: &str = "gatehouse.dev/would-mask";

/// The filter-state key (read by the access log as `wasm.<key>`) the glue writes
/// a request's audit Events to: distinct per mode, so an enforcing and a shadow
/// instance in one chain do not overwrite each other's.
pub fn audit_filter_state_key(mode: FilterMode) -> &'static str {
    match mode {
        FilterMode::Enforce => "gatehouse_k8s_audit",
        FilterMode::Shadow => "gatehouse_k8s_audit_shadow",
    }
}

impl Gate {
    /// Enforce (the default) or shadow, from the configuration's `mode`.
    pub fn mode(&self) -> FilterMode {
        self.policy.mode()
    }

    /// The outcome when the issuer's keys could not be had after the allowed
    /// fetches: a 401 when enforcing, an unchanged forward when shadowing.
    pub fn keys_unavailable(&self, head: &RequestHead<'_>, issuer: &str) -> Admission {
        let info = decode_request(head.method, head.path)
            .map(|decoded| decoded.info)
            .unwrap_or_default();
        let refusal = status::unauthorized(&format!(
            "gatehouse could not obtain the signing keys of {issuer}"
        ));
        self.respond(
            head,
            &info,
            &Identity::claimed(super::ANONYMOUS),
            None,
            refusal,
        )
    }

    /// A refusal the shadow gate would have sent: the request goes on unchanged,
    /// its Events record the would-be status and decision.
    pub(super) fn observe_refusal(
        &self,
        head: &RequestHead<'_>,
        info: &RequestInfo,
        identity: &Identity,
        decision: Option<&Decision>,
        refusal: &Status,
    ) -> Admission {
        let mut audit = self.audit_for(head, info, identity);
        if let Some(decision) = decision {
            audit = audit.with_decision(decision);
        }
        audit.annotate(
            WOULD_BE_STATUS_ANNOTATION,
            refusal.http_status().to_string(),
        );
        let would_be = decision.cloned().unwrap_or_else(Decision::allow);
        Admission::Forward(Box::new(observed(audit, false, would_be)))
    }

    /// An admitted request in shadow mode: forwarded as it came.
    pub(super) fn observe_forward(
        &self,
        audit: RequestAudit,
        decision: Decision,
        mask: bool,
    ) -> Admission {
        Admission::Forward(Box::new(observed(audit, mask, decision)))
    }
}

/// A forward that changes nothing, with the shadow annotations on its Events
/// and the would-be decision.
fn observed(mut audit: RequestAudit, would_mask: bool, decision: Decision) -> Forward {
    audit.annotate(MODE_ANNOTATION, FilterMode::Shadow.as_str().to_owned());
    if would_mask {
        audit.annotate(WOULD_MASK_ANNOTATION, "true".to_owned());
    }
    // An observe-only instance changes nothing, so it records no session.
    Forward::new(
        audit,
        decision,
        (Vec::new(), Vec::new(), Vec::new()),
        None,
        false,
    )
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::gate::tests::{NOW, admit as admit_request, forward};
    use gatehouse_core::identity::JwsAlgorithm;
    use gatehouse_core::identity::testing::Minter;
    use gatehouse_core::policy::Action;
    use serde_json::{Value, json};

    const ISSUER: &str = "https://idp.gatehouse.test";
    const EXEC_IN_PROD: &str = "/api/v1/namespaces/prod/pods/web-0/exec?command=ls&stdout=true";

    /// The demo policy in shadow mode, its issuer's keys loaded.
    fn shadow_gate(minter: &Minter) -> Gate {
        let mut config: Value =
            serde_json::from_str(include_str!("../../../../examples/kubernetes-policy.json"))
                .unwrap();
        config["mode"] = json!("shadow");
        let mut gate = Gate::from_json(config.to_string().as_bytes()).unwrap();
        gate.verifier_mut()
            .unwrap()
            .keys_fetched(ISSUER, minter.jwks_json().as_bytes(), NOW)
            .unwrap();
        gate
    }

    /// A shadow gate forwards everything.
    fn admit(gate: &mut Gate, method: &str, path: &str, headers: &[(&str, &str)]) -> Forward {
        forward(admit_request(gate, method, path, headers))
    }

    fn unchanged(forward: &Forward) {
        assert!(forward.remove_headers.is_empty());
        assert!(forward.set_headers.is_empty());
        assert!(forward.add_headers.is_empty());
        assert!(!forward.mask && forward.body_masker.is_none());
    }

    fn event(forward: &Forward, status: u16) -> Value {
        let records = forward.records(status, NOW * 1_000_000, NOW * 1_000_000);
        serde_json::from_str(records.lines().last().unwrap()).unwrap()
    }

    fn bearer(minter: &Minter) -> String {
        let token = minter
            .mint(
                &json!({"sub": "developer", "groups": ["developers"]}),
                600,
                NOW,
            )
            .unwrap();
        format!("Bearer {token}")
    }

    #[test]
    fn a_denied_request_is_forwarded_unchanged_and_its_event_has_the_would_be_denial() {
        let minter = Minter::generate(JwsAlgorithm::Es256, ISSUER, "gatehouse", "k1").unwrap();
        let mut gate = shadow_gate(&minter);
        let bearer = bearer(&minter);
        let forward = admit(
            &mut gate,
            "POST",
            EXEC_IN_PROD,
            &[("authorization", &bearer)],
        );
        unchanged(&forward);
        // The demo policy asks an admin's approval for a developer's exec in
        // prod; a shadow instance never holds or files, it records.
        assert_eq!(forward.decision().action, Action::RequireApproval);
        let event = event(&forward, 101);
        let annotations = &event["annotations"];
        assert_eq!(annotations[MODE_ANNOTATION], "shadow");
        assert_eq!(annotations[WOULD_BE_STATUS_ANNOTATION], "403");
        assert_eq!(annotations["authorization.k8s.io/decision"], "forbid");
        assert_eq!(annotations["gatehouse.dev/rule"], "prod-exec-needs-admin");
        assert_eq!(event["user"]["username"], "developer");
        assert_eq!(event["responseStatus"]["code"], 101);
    }

    #[test]
    fn an_allowed_request_is_forwarded_without_the_gateways_rewrites() {
        let minter = Minter::generate(JwsAlgorithm::Es256, ISSUER, "gatehouse", "k1").unwrap();
        let mut gate = shadow_gate(&minter);
        let bearer = bearer(&minter);
        let forward = admit(
            &mut gate,
            "GET",
            "/api/v1/namespaces/dev/pods",
            &[("authorization", &bearer)],
        );
        unchanged(&forward);
        let event = event(&forward, 200);
        assert_eq!(event["annotations"][MODE_ANNOTATION], "shadow");
        assert!(
            event["annotations"]
                .get(WOULD_BE_STATUS_ANNOTATION)
                .is_none()
        );
        assert_eq!(
            event["annotations"]["authorization.k8s.io/decision"],
            "allow"
        );
    }

    #[test]
    fn a_missing_or_bad_token_is_a_would_be_401_and_the_request_still_passes() {
        let minter = Minter::generate(JwsAlgorithm::Es256, ISSUER, "gatehouse", "k1").unwrap();
        let mut gate = shadow_gate(&minter);
        for headers in [&[][..], &[("authorization", "Bearer not-a-jwt")][..]] {
            let forward = admit(&mut gate, "GET", "/api/v1/namespaces/dev/pods", headers);
            unchanged(&forward);
            let event = event(&forward, 200);
            assert_eq!(event["annotations"][WOULD_BE_STATUS_ANNOTATION], "401");
            assert_eq!(event["user"]["username"], crate::gate::ANONYMOUS);
        }
        let head_headers = Vec::new();
        let head = RequestHead {
            method: "GET",
            path: "/api",
            headers: &head_headers,
            peer: None,
            audit_id: "id",
            now_micros: NOW * 1_000_000,
        };
        assert!(matches!(
            gate.keys_unavailable(&head, ISSUER),
            Admission::Forward(_)
        ));
    }

    #[test]
    fn enforcing_and_shadow_instances_write_distinct_filter_state() {
        assert_ne!(
            audit_filter_state_key(FilterMode::Enforce),
            audit_filter_state_key(FilterMode::Shadow)
        );
        let error = Gate::from_json(br#"{"mode": "dry-run"}"#).unwrap_err();
        assert_eq!(error.path, "mode");
    }
}
