//! Verification tests with keys generated here, one per algorithm.
#![allow(clippy::indexing_slicing)]

use super::testing::Minter;
use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use std::sync::OnceLock;

const NOW: i64 = 1_800_000_000;
const ISS_A: &str = "https://idp-a.example";
const ISS_B: &str = "https://idp-b.example";
const AUD: &str = "gatehouse";

/// One RSA key per test binary: debug-mode key generation is slow.
fn rsa() -> &'static Minter {
    static KEY: OnceLock<Minter> = OnceLock::new();
    KEY.get_or_init(|| Minter::generate(JwsAlgorithm::Rs256, ISS_A, AUD, "rsa-RS256").unwrap())
}

fn es() -> &'static Minter {
    static KEY: OnceLock<Minter> = OnceLock::new();
    KEY.get_or_init(|| Minter::generate(JwsAlgorithm::Es256, ISS_A, AUD, "es-1").unwrap())
}

#[cfg(feature = "es384")]
fn es384() -> &'static Minter {
    static KEY: OnceLock<Minter> = OnceLock::new();
    KEY.get_or_init(|| Minter::generate(JwsAlgorithm::Es384, ISS_A, AUD, "es384-1").unwrap())
}

fn ed() -> &'static Minter {
    static KEY: OnceLock<Minter> = OnceLock::new();
    KEY.get_or_init(|| Minter::generate(JwsAlgorithm::EdDsa, ISS_A, AUD, "ed-1").unwrap())
}

/// The shared RSA key used with another RSA algorithm, under its own kid.
fn rsa_as(alg: JwsAlgorithm) -> Minter {
    rsa()
        .with_algorithm(alg)
        .unwrap()
        .with_kid(format!("rsa-{alg}"))
}

const RSA_ALGORITHMS: [JwsAlgorithm; 6] = [
    JwsAlgorithm::Rs256,
    JwsAlgorithm::Rs384,
    JwsAlgorithm::Rs512,
    JwsAlgorithm::Ps256,
    JwsAlgorithm::Ps384,
    JwsAlgorithm::Ps512,
];

fn all_minters() -> Vec<Minter> {
    let mut minters: Vec<Minter> = RSA_ALGORITHMS.iter().map(|alg| rsa_as(*alg)).collect();
    minters.push(es().clone());
    #[cfg(feature = "es384")]
    minters.push(es384().clone());
    minters.push(ed().clone());
    minters
}

fn jwks_of(minters: &[&Minter]) -> Value {
    json!({ "keys": minters.iter().map(|m| m.public_jwk().unwrap()).collect::<Vec<_>>() })
}

fn issuer_config(issuer: &str, keys: Value) -> Value {
    json!({ "issuer": issuer, "audiences": [AUD], "jwks": keys })
}

fn verifier_for(issuers: Vec<Value>) -> Verifier {
    Verifier::from_json(json!({ "issuers": issuers }).to_string().as_bytes()).unwrap()
}

/// Issuer A with every algorithm's key inline.
fn standard_verifier() -> Verifier {
    let minters = all_minters();
    let refs: Vec<&Minter> = minters.iter().collect();
    verifier_for(vec![issuer_config(ISS_A, jwks_of(&refs))])
}

fn alice() -> Value {
    json!({ "sub": "alice", "groups": ["developers", "oncall"], "jti": "token-1", "env": "ci" })
}

fn mint(minter: &Minter, claims: &Value) -> String {
    minter.mint(claims, 300, NOW).unwrap()
}

fn rejection(verifier: &Verifier, token: &str) -> &'static str {
    verifier.verify(token, NOW).unwrap_err().code()
}

fn encode_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A token assembled by hand, for headers no honest signer produces.
fn craft(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        encode_json(header),
        encode_json(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn valid_claims() -> Value {
    json!({ "iss": ISS_A, "aud": AUD, "sub": "alice", "exp": NOW + 300 })
}

#[test]
fn every_algorithm_verifies_to_an_identity() {
    let verifier = standard_verifier();
    for minter in all_minters() {
        let identity = verifier
            .verify(&mint(&minter, &alice()), NOW)
            .unwrap_or_else(|e| panic!("{} rejected: {e}", minter.algorithm()));
        assert_eq!(identity.subject, "alice");
        assert_eq!(identity.groups, ["developers", "oncall"]);
        assert_eq!(identity.issuer.as_deref(), Some(ISS_A));
        assert_eq!(identity.token_id.as_deref(), Some("token-1"));
        assert!(identity.verified);
        assert_eq!(identity.expires_at, Some(NOW + 300));
    }
}

#[test]
fn arbitrary_claims_are_exposed_to_policy() {
    let identity = standard_verifier()
        .verify(&mint(ed(), &alice()), NOW)
        .unwrap();
    assert_eq!(identity.claims.get("env"), Some(&json!("ci")));
    assert_eq!(identity.claims.get("exp"), Some(&json!(NOW + 300)));
    assert_eq!(identity.claims.get("iss"), Some(&json!(ISS_A)));
}

#[test]
fn hs256_verifies_only_with_a_configured_secret() {
    let secret = [7_u8; 32];
    let minter = Minter::hs256(&secret, ISS_A, AUD, "");
    let token = mint(&minter, &alice());

    let with_secret = verifier_for(vec![json!({
        "issuer": ISS_A, "audiences": [AUD], "hs256_secret": STANDARD.encode(secret)
    })]);
    assert_eq!(with_secret.verify(&token, NOW).unwrap().subject, "alice");

    let other_secret = verifier_for(vec![json!({
        "issuer": ISS_A, "audiences": [AUD], "hs256_secret": STANDARD.encode([8_u8; 32])
    })]);
    assert_eq!(rejection(&other_secret, &token), "bad_signature");

    assert_eq!(rejection(&standard_verifier(), &token), "alg_not_allowed");
}

#[test]
fn hs256_token_keyed_with_the_rsa_public_key_is_rejected() {
    // Algorithm confusion: an attacker signs with HMAC, using the public key as secret.
    let public_jwk = rsa().public_jwk().unwrap();
    let modulus = URL_SAFE_NO_PAD
        .decode(public_jwk["n"].as_str().unwrap())
        .unwrap();
    let jwks_bytes = jwks_of(&[rsa()]).to_string().into_bytes();
    let verifier = standard_verifier();
    for secret in [modulus, jwks_bytes] {
        let forged = Minter::hs256(&secret, ISS_A, AUD, "rsa-RS256");
        assert_eq!(
            rejection(&verifier, &mint(&forged, &alice())),
            "alg_not_allowed"
        );
    }
    // Even when the issuer also has a (different) HS256 secret, the RSA key is
    // never used as an HMAC key.
    let mut issuer = issuer_config(ISS_A, jwks_of(&[rsa()]));
    issuer["hs256_secret"] = json!(STANDARD.encode([9_u8; 32]));
    let with_secret = verifier_for(vec![issuer]);
    let forged = Minter::hs256(public_jwk.to_string().as_bytes(), ISS_A, AUD, "rsa-RS256");
    assert_eq!(
        rejection(&with_secret, &mint(&forged, &alice())),
        "bad_signature"
    );
}

#[test]
fn alg_none_is_rejected_in_any_spelling() {
    let verifier = standard_verifier();
    for alg in ["none", "None", "NONE"] {
        let token = craft(&json!({ "alg": alg, "kid": "ed-1" }), &valid_claims(), b"");
        assert_eq!(rejection(&verifier, &token), "alg_none");
    }
}

#[test]
fn unsupported_or_disallowed_algorithms_are_rejected() {
    let token = craft(
        &json!({ "alg": "ES512", "kid": "es-1" }),
        &valid_claims(),
        &[1; 96],
    );
    assert_eq!(rejection(&standard_verifier(), &token), "alg_not_allowed");

    let mut issuer = issuer_config(ISS_A, jwks_of(&[rsa(), ed()]));
    issuer["allowed_algorithms"] = json!(["EdDSA"]);
    let ed_only = verifier_for(vec![issuer]);
    assert_eq!(
        rejection(&ed_only, &mint(rsa(), &alice())),
        "alg_not_allowed"
    );
    assert!(ed_only.verify(&mint(ed(), &alice()), NOW).is_ok());
}

#[test]
fn key_of_another_type_or_pinned_alg_is_a_mismatch() {
    let verifier = standard_verifier();
    // ES256 token naming the RSA key.
    let es_as_rsa = es().with_kid("rsa-RS256");
    assert_eq!(
        rejection(&verifier, &mint(&es_as_rsa, &alice())),
        "alg_key_mismatch"
    );
    // PS256 token naming the key pinned to RS256 (same RSA key, other alg).
    let ps_with_rs_kid = rsa().with_algorithm(JwsAlgorithm::Ps256).unwrap();
    assert_eq!(
        rejection(&verifier, &mint(&ps_with_rs_kid, &alice())),
        "alg_key_mismatch"
    );
}

#[test]
fn signature_by_another_key_or_tampering_is_bad_signature() {
    let verifier = standard_verifier();
    for minter in [rsa(), es(), ed()] {
        let impostor = minter.impostor().unwrap();
        assert_eq!(
            rejection(&verifier, &mint(&impostor, &alice())),
            "bad_signature"
        );
    }
    let token = mint(ed(), &alice());
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut claims = alice();
    claims["sub"] = json!("mallory");
    claims["iss"] = json!(ISS_A);
    claims["aud"] = json!(AUD);
    claims["exp"] = json!(NOW + 300);
    let forged_claims = encode_json(&claims);
    parts[1] = &forged_claims;
    assert_eq!(rejection(&verifier, &parts.join(".")), "bad_signature");
}

#[test]
fn unknown_kid_names_the_issuer_to_refetch() {
    let verifier = standard_verifier();
    let token = mint(&ed().with_kid("rotated-away"), &alice());
    assert_eq!(
        verifier.verify(&token, NOW),
        Err(TokenRejection::UnknownKid {
            issuer: ISS_A.to_owned()
        })
    );
}

#[test]
fn token_without_kid_needs_exactly_one_fitting_key() {
    let verifier = standard_verifier();
    // One Ed25519 key in the set: accepted without kid.
    assert!(
        verifier
            .verify(&mint(&ed().with_kid(""), &alice()), NOW)
            .is_ok()
    );
    // Two RSA keys fit RS256 when unpinned: ambiguous, so refused.
    let rsa_unpinned = |kid: &str| {
        let mut jwk = rsa().with_kid(kid).public_jwk().unwrap();
        jwk.as_object_mut().unwrap().remove("alg");
        jwk
    };
    let two_rsa = verifier_for(vec![issuer_config(
        ISS_A,
        json!({ "keys": [rsa_unpinned("r1"), rsa_unpinned("r2")] }),
    )]);
    let no_kid = mint(&rsa().with_kid(""), &alice());
    assert_eq!(rejection(&two_rsa, &no_kid), "unknown_kid");
    let one_rsa = verifier_for(vec![issuer_config(
        ISS_A,
        json!({ "keys": [rsa_unpinned("r1")] }),
    )]);
    assert!(one_rsa.verify(&no_kid, NOW).is_ok());
}

#[test]
fn several_issuers_each_verify_with_their_own_keys() {
    let b_key = es().with_issuer(ISS_B).with_kid("b-1");
    let verifier = verifier_for(vec![
        issuer_config(ISS_A, jwks_of(&[ed()])),
        issuer_config(ISS_B, jwks_of(&[&b_key])),
    ]);
    assert_eq!(
        verifier
            .verify(&mint(ed(), &alice()), NOW)
            .unwrap()
            .issuer
            .as_deref(),
        Some(ISS_A)
    );
    assert_eq!(
        verifier
            .verify(&mint(&b_key, &alice()), NOW)
            .unwrap()
            .issuer
            .as_deref(),
        Some(ISS_B)
    );
    // B's key claiming to issue for A.
    let b_posing_as_a = b_key.with_issuer(ISS_A);
    assert_eq!(
        rejection(&verifier, &mint(&b_posing_as_a, &alice())),
        "wrong_issuer"
    );
}

#[test]
fn untrusted_or_missing_issuer_is_unknown_issuer() {
    let verifier = standard_verifier();
    let stranger = ed().with_issuer("https://evil.example");
    assert_eq!(
        rejection(&verifier, &mint(&stranger, &alice())),
        "unknown_issuer"
    );
    let no_iss = ed()
        .mint(&json!({ "sub": "alice", "iss": null }), 300, NOW)
        .unwrap();
    assert_eq!(rejection(&verifier, &no_iss), "unknown_issuer");
}

#[test]
fn expiry_and_not_before_honour_the_leeway_exactly() {
    let verifier = standard_verifier(); // default leeway 60 s
    let at = |extra: Value| {
        let mut claims = alice();
        for (name, value) in extra.as_object().unwrap() {
            claims[name] = value.clone();
        }
        verifier
            .verify(&mint(ed(), &claims), NOW)
            .map(|_| ())
            .map_err(|e| e.code())
    };
    assert_eq!(at(json!({ "exp": NOW - 60 })), Ok(()));
    assert_eq!(at(json!({ "exp": NOW - 61 })), Err("expired"));
    assert_eq!(at(json!({ "nbf": NOW + 60 })), Ok(()));
    assert_eq!(at(json!({ "nbf": NOW + 61 })), Err("not_yet_valid"));
    assert_eq!(at(json!({ "exp": null })), Err("missing_expiry"));
    assert_eq!(at(json!({ "nbf": null })), Ok(()));
    assert_eq!(at(json!({ "exp": "tomorrow" })), Err("malformed"));
    // Extreme but representable times decide without overflowing.
    let earliest = chrono::DateTime::<chrono::Utc>::MIN_UTC.timestamp();
    let latest = chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp();
    assert_eq!(at(json!({ "nbf": earliest })), Ok(()));
    assert_eq!(at(json!({ "exp": latest })), Ok(()));
    assert_eq!(at(json!({ "exp": earliest })), Err("expired"));
    assert_eq!(at(json!({ "nbf": latest })), Err("not_yet_valid"));
    assert_eq!(at(json!({ "exp": i64::MAX })), Err("malformed"));

    let mut strict = issuer_config(ISS_A, jwks_of(&[ed()]));
    strict["leeway_seconds"] = json!(0);
    let strict = verifier_for(vec![strict]);
    let mut claims = alice();
    claims["exp"] = json!(NOW - 1);
    assert_eq!(rejection(&strict, &mint(ed(), &claims)), "expired");
    assert_eq!(
        rejection(&verifier, &ed().mint_expired(&alice(), NOW).unwrap()),
        "expired"
    );
}

#[test]
fn a_verified_identity_expires_mid_session_exactly_when_a_login_would_be_refused() {
    for leeway in [0, 60] {
        let mut config = issuer_config(ISS_A, jwks_of(&[ed()]));
        config["leeway_seconds"] = json!(leeway);
        let verifier = verifier_for(vec![config]);
        let token = mint(ed(), &alice());
        let identity = verifier.verify(&token, NOW).unwrap();
        let exp = identity.expires_at.unwrap();
        for now in exp - 2..exp + leeway + 3 {
            let login_refused = verifier.verify(&token, now).is_err();
            assert_eq!(
                identity.token_expired(now),
                login_refused,
                "leeway {leeway}, {} s past exp",
                now - exp
            );
        }
        assert!(!identity.token_expired(exp + leeway));
        assert!(identity.token_expired(exp + leeway + 1));
    }
}

#[test]
fn audience_must_name_an_accepted_one() {
    let mut issuer = issuer_config(ISS_A, jwks_of(&[ed()]));
    issuer["audiences"] = json!([AUD, "kubectl"]);
    let verifier = verifier_for(vec![issuer]);
    let with_aud = |aud: Value| {
        let mut claims = alice();
        claims["aud"] = aud;
        verifier
            .verify(&mint(ed(), &claims), NOW)
            .map(|_| ())
            .map_err(|e| e.code())
    };
    assert_eq!(with_aud(json!("kubectl")), Ok(()));
    assert_eq!(with_aud(json!(["other", "kubectl"])), Ok(()));
    assert_eq!(with_aud(json!("other")), Err("wrong_audience"));
    assert_eq!(with_aud(json!(["other"])), Err("wrong_audience"));
    assert_eq!(with_aud(json!(null)), Err("missing_audience"));
    assert_eq!(with_aud(json!([])), Err("missing_audience"));
    assert_eq!(with_aud(json!(7)), Err("malformed"));
}

#[test]
fn subject_claim_is_required_and_configurable() {
    let verifier = standard_verifier();
    let no_sub = mint(ed(), &json!({ "sub": null }));
    assert_eq!(rejection(&verifier, &no_sub), "missing_subject");
    assert_eq!(
        rejection(&verifier, &mint(ed(), &json!({ "sub": "" }))),
        "missing_subject"
    );
    assert_eq!(
        rejection(&verifier, &mint(ed(), &json!({ "sub": 42 }))),
        "missing_subject"
    );

    let mut by_email = issuer_config(ISS_A, jwks_of(&[ed()]));
    by_email["subject_claim"] = json!("email");
    let by_email = verifier_for(vec![by_email]);
    let token = mint(
        ed(),
        &json!({ "sub": "u-123", "email": "alice@example.com" }),
    );
    assert_eq!(
        by_email.verify(&token, NOW).unwrap().subject,
        "alice@example.com"
    );
}

#[test]
fn groups_come_from_a_string_an_array_or_a_nested_path() {
    let groups_with = |groups_claim: &str, claims: Value| {
        let mut issuer = issuer_config(ISS_A, jwks_of(&[ed()]));
        issuer["groups_claim"] = json!(groups_claim);
        verifier_for(vec![issuer])
            .verify(&mint(ed(), &claims), NOW)
            .map(|identity| identity.groups)
            .map_err(|e| e.code())
    };
    let sub = |extra: Value| {
        let mut claims = json!({ "sub": "alice" });
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    };
    assert_eq!(
        groups_with("groups", sub(json!({ "groups": "dba" }))),
        Ok(vec!["dba".into()])
    );
    assert_eq!(
        groups_with("groups", sub(json!({ "groups": ["dba", "ci"] }))),
        Ok(vec!["dba".to_string(), "ci".into()])
    );
    assert_eq!(groups_with("groups", sub(json!({}))), Ok(vec![]));
    assert_eq!(
        groups_with(
            "realm_access.roles",
            sub(json!({ "realm_access": { "roles": ["admin"] } }))
        ),
        Ok(vec!["admin".into()])
    );
    assert_eq!(
        groups_with(
            "https://example.com/groups",
            sub(json!({ "https://example.com/groups": "ci" }))
        ),
        Ok(vec!["ci".into()])
    );
    assert_eq!(
        groups_with("groups", sub(json!({ "groups": 3 }))),
        Err("malformed")
    );
    assert_eq!(
        groups_with("groups", sub(json!({ "groups": ["a", 3] }))),
        Err("malformed")
    );
}

#[test]
fn malformed_tokens_are_malformed() {
    let verifier = standard_verifier();
    for token in [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "e30.e30.",
        "!!!.e30.AA",
    ] {
        assert_eq!(rejection(&verifier, token), "malformed", "{token:?}");
    }
    let not_json_claims = format!(
        "{}.{}.",
        encode_json(&json!({ "alg": "EdDSA" })),
        URL_SAFE_NO_PAD.encode("{")
    );
    assert_eq!(rejection(&verifier, &not_json_claims), "malformed");
    let critical = craft(
        &json!({ "alg": "EdDSA", "crit": ["exp"] }),
        &valid_claims(),
        &[0; 64],
    );
    assert_eq!(rejection(&verifier, &critical), "malformed");
}

#[test]
fn oversized_tokens_are_refused_before_parsing() {
    let verifier = standard_verifier();
    let big = mint(
        ed(),
        &json!({ "sub": "alice", "padding": "x".repeat(9000) }),
    );
    assert_eq!(rejection(&verifier, &big), "oversized");
    assert_eq!(rejection(&verifier, &"a".repeat(1 << 20)), "oversized");

    // A smaller per-issuer limit applies once the issuer is known.
    let mut small = issuer_config(ISS_B, jwks_of(&[&ed().with_issuer(ISS_B)]));
    small["max_token_bytes"] = json!(512);
    let verifier = verifier_for(vec![issuer_config(ISS_A, jwks_of(&[ed()])), small]);
    let claims = json!({ "sub": "alice", "padding": "x".repeat(600) });
    assert!(verifier.verify(&mint(ed(), &claims), NOW).is_ok());
    assert_eq!(
        rejection(&verifier, &mint(&ed().with_issuer(ISS_B), &claims)),
        "oversized"
    );
}

#[test]
fn rejection_codes_are_distinct_and_messages_leak_nothing() {
    let issuer = || ISS_A.to_owned();
    let all = [
        TokenRejection::Oversized,
        TokenRejection::Malformed,
        TokenRejection::AlgNone,
        TokenRejection::AlgNotAllowed,
        TokenRejection::AlgKeyMismatch,
        TokenRejection::UnknownIssuer,
        TokenRejection::WrongIssuer,
        TokenRejection::UnknownKid { issuer: issuer() },
        TokenRejection::KeysUnavailable { issuer: issuer() },
        TokenRejection::BadSignature,
        TokenRejection::MissingExpiry,
        TokenRejection::Expired,
        TokenRejection::NotYetValid,
        TokenRejection::MissingAudience,
        TokenRejection::WrongAudience,
        TokenRejection::MissingSubject,
    ];
    let codes: std::collections::BTreeSet<&str> = all.iter().map(TokenRejection::code).collect();
    assert_eq!(codes.len(), all.len());
    for rejection in &all {
        let message = rejection.to_string();
        assert!(!message.contains(ISS_A), "{message}");
        assert!(
            message.starts_with("token") || message.contains("token"),
            "{message}"
        );
    }
}

fn remote_issuer(issuer: &str) -> Value {
    json!({
        "issuer": issuer, "audiences": [AUD],
        "remote_jwks": {
            "cluster": "idp", "path": "/jwks.json",
            "refresh_seconds": 300, "min_refetch_seconds": 30, "max_stale_seconds": 600
        }
    })
}

#[test]
fn remote_keys_rotate_after_a_refetch_on_unknown_kid() {
    let mut verifier = verifier_for(vec![remote_issuer(ISS_A)]);
    let old_key = ed();
    let new_key = es().with_kid("es-2");
    let old_token = mint(old_key, &alice());
    let new_token = mint(&new_key, &alice());

    assert_eq!(rejection(&verifier, &old_token), "keys_unavailable");
    assert_eq!(
        verifier
            .remote_jwks()
            .map(|(issuer, remote)| (issuer, remote.cluster.as_str()))
            .collect::<Vec<_>>(),
        [(ISS_A, "idp")]
    );
    let cache = verifier.jwks_cache_mut(ISS_A).unwrap();
    assert!(cache.needs_refresh(NOW));
    cache.on_fetch_started(NOW);
    cache
        .on_fetch_ok(jwks_of(&[old_key]).to_string().as_bytes(), NOW)
        .unwrap();
    assert!(verifier.verify(&old_token, NOW).is_ok());

    let later = NOW + 40;
    let Err(TokenRejection::UnknownKid { issuer }) = verifier.verify(&new_token, later) else {
        panic!("expected unknown_kid");
    };
    let cache = verifier.jwks_cache_mut(&issuer).unwrap();
    assert!(cache.on_unknown_kid(later));
    assert!(
        !cache.on_unknown_kid(later + 1),
        "refetches are rate-limited"
    );
    cache
        .on_fetch_ok(jwks_of(&[&new_key]).to_string().as_bytes(), later + 1)
        .unwrap();
    assert!(verifier.verify(&new_token, later + 1).is_ok());
    assert_eq!(
        rejection(&verifier, &old_token),
        "unknown_kid",
        "the old key was rotated out"
    );
}

#[test]
fn stale_keys_are_served_until_the_bound_then_keys_unavailable() {
    let mut verifier = verifier_for(vec![remote_issuer(ISS_A)]);
    let cache = verifier.jwks_cache_mut(ISS_A).unwrap();
    cache
        .on_fetch_ok(jwks_of(&[ed()]).to_string().as_bytes(), NOW)
        .unwrap();
    let refresh_due = NOW + 300;
    assert!(cache.needs_refresh(refresh_due));
    cache.on_fetch_started(refresh_due);
    cache.on_fetch_failed(refresh_due + 5, "connection refused");
    assert_eq!(cache.last_error(), Some("connection refused"));
    assert!(cache.is_stale(refresh_due + 5));

    let last_usable = NOW + 300 + 600;
    let token = ed().mint(&alice(), 3600, NOW).unwrap();
    assert!(verifier.verify(&token, last_usable).is_ok());
    assert_eq!(
        verifier.verify(&token, last_usable + 1).unwrap_err().code(),
        "keys_unavailable"
    );
}

#[test]
fn cache_refresh_is_periodic_and_spaced_after_failures() {
    let policy = JwksCachePolicy {
        refresh_seconds: 300,
        min_refetch_seconds: 30,
        max_stale_seconds: 600,
    };
    let mut cache = JwksCache::new(policy);
    assert!(cache.needs_refresh(NOW), "no keys yet");
    cache.on_fetch_started(NOW);
    assert!(!cache.needs_refresh(NOW + 29), "a fetch is in flight");
    cache.on_fetch_failed(NOW + 2, "timeout");
    assert!(
        !cache.needs_refresh(NOW + 31),
        "retry waits min_refetch after the failure"
    );
    assert!(cache.needs_refresh(NOW + 32));
    assert!(cache.keys(NOW + 32).is_none());

    cache.on_fetch_started(NOW + 32);
    cache
        .on_fetch_ok(jwks_of(&[ed()]).to_string().as_bytes(), NOW + 33)
        .unwrap();
    assert!(!cache.needs_refresh(NOW + 33 + 299));
    assert!(cache.needs_refresh(NOW + 33 + 300));
    assert_eq!(cache.fetched_at(), Some(NOW + 33));

    // A body that is no key set keeps the previous keys.
    assert!(cache.on_fetch_ok(b"<html>", NOW + 400).is_err());
    assert!(cache.last_error().is_some());
    assert_eq!(cache.keys(NOW + 400).map(Jwks::len), Some(1));
    assert_eq!(cache.fetched_at(), Some(NOW + 33));
}

#[test]
fn clock_going_backwards_does_not_block_refetching() {
    let policy = JwksCachePolicy {
        refresh_seconds: 300,
        min_refetch_seconds: 30,
        max_stale_seconds: 600,
    };
    let mut cache = JwksCache::new(policy);
    assert!(cache.on_unknown_kid(NOW));
    assert!(!cache.on_unknown_kid(NOW + 10));
    assert!(cache.on_unknown_kid(NOW - 3600));
}

#[test]
fn jwks_skips_unusable_keys_with_reasons() {
    let small_modulus = URL_SAFE_NO_PAD.encode([0xC3_u8; 128]);
    let mut private_ed = ed().public_jwk().unwrap();
    private_ed["kid"] = json!("with-secret");
    private_ed["d"] = json!("AAAA");
    let mut enc = ed().public_jwk().unwrap();
    enc["kid"] = json!("enc-1");
    enc["use"] = json!("enc");
    let document = json!({ "keys": [
        ed().public_jwk().unwrap(),
        enc,
        { "kid": "p521", "kty": "EC", "crv": "P-521", "x": "AA", "y": "AA" },
        { "kid": "x25519", "kty": "OKP", "crv": "X25519", "x": "AA" },
        { "kid": "oct", "kty": "oct", "k": "AAAA" },
        { "kid": "weird", "kty": "PQC" },
        { "kid": "hs", "kty": "RSA", "alg": "HS256", "n": "AA", "e": "AQAB" },
        { "kid": "small", "kty": "RSA", "n": small_modulus, "e": "AQAB" },
        private_ed,
        ed().public_jwk().unwrap(),
        { "kid": "bad-b64", "kty": "OKP", "crv": "Ed25519", "x": "***" },
        { "kid": "ec-as-rs", "kty": "EC", "crv": "P-256", "alg": "RS256", "x": "AA", "y": "AA" },
        "not a key",
    ]});
    let jwks = Jwks::parse(document.to_string().as_bytes()).unwrap();
    assert_eq!(jwks.key_ids().collect::<Vec<_>>(), [Some("ed-1")]);
    let reasons: Vec<String> = jwks.skipped().iter().map(ToString::to_string).collect();
    let expected = [
        "keys[1] (kid \"enc-1\"): use is \"enc\", not \"sig\"",
        "keys[2] (kid \"p521\"): unsupported EC curve \"P-521\"",
        "keys[3] (kid \"x25519\"): unsupported OKP curve \"X25519\"",
        "keys[4] (kid \"oct\"): holds private or secret key material",
        "keys[5] (kid \"weird\"): unsupported kty \"PQC\"",
        "keys[6] (kid \"hs\"): unsupported alg \"HS256\"",
        "keys[7] (kid \"small\"): RSA modulus of 1024 bits; 2048 to 4096 are accepted",
        "keys[8] (kid \"with-secret\"): holds private or secret key material",
        "keys[9] (kid \"ed-1\"): duplicate kid; the first key with it is used",
        "keys[10] (kid \"bad-b64\"): x is not base64url",
        "keys[11] (kid \"ec-as-rs\"): alg RS256 does not fit kty \"EC\"",
        "keys[12]: not a JSON object",
    ];
    assert_eq!(reasons, expected);
}

#[test]
fn jwks_documents_that_are_no_key_set_are_errors() {
    assert!(matches!(Jwks::parse(b"nope"), Err(JwksError::NotJson(_))));
    assert_eq!(Jwks::parse(b"{}").unwrap_err(), JwksError::NoKeysArray);
    assert_eq!(
        Jwks::parse(br#"{"keys": {}}"#).unwrap_err(),
        JwksError::NoKeysArray
    );
    let none_usable = Jwks::parse(br#"{"keys": [{"kty": "oct", "k": "AA"}]}"#).unwrap_err();
    assert_eq!(
        none_usable.to_string(),
        "key set has no usable key: keys[0]: holds private or secret key material"
    );
    let many: Vec<Value> = (0..=MAX_KEYS).map(|_| ed().public_jwk().unwrap()).collect();
    assert_eq!(
        Jwks::parse(json!({ "keys": many }).to_string().as_bytes()).unwrap_err(),
        JwksError::TooManyKeys {
            count: MAX_KEYS + 1,
            max: MAX_KEYS
        }
    );
    let huge = vec![b' '; MAX_JWKS_BYTES + 1];
    assert!(matches!(
        Jwks::parse(&huge),
        Err(JwksError::TooLarge { .. })
    ));
}

fn config_error(config: Value) -> String {
    Verifier::from_json(config.to_string().as_bytes())
        .unwrap_err()
        .to_string()
}

#[test]
fn configuration_errors_name_their_path() {
    let keys = jwks_of(&[ed()]);
    let with = |field: &str, value: Value| {
        let mut issuer = issuer_config(ISS_A, keys.clone());
        issuer[field] = value;
        json!({ "issuers": [issuer_config(ISS_B, keys.clone()), issuer] })
    };
    assert_eq!(
        config_error(with("allowed_algorithms", json!(["EdDSA", "ES512"]))),
        "issuers[1].allowed_algorithms[1]: unsupported algorithm \"ES512\""
    );
    assert_eq!(
        config_error(with("allowed_algorithms", json!(["HS256"]))),
        "issuers[1].allowed_algorithms[0]: HS256 needs hs256_secret"
    );
    assert_eq!(
        config_error(with("audiences", json!([]))),
        "issuers[1].audiences: at least one audience is required"
    );
    assert_eq!(
        config_error(with("groups_claim", json!("realm_access..roles"))),
        "issuers[1].groups_claim: \"realm_access..roles\" is not a claim name or dotted path"
    );
    assert_eq!(
        config_error(with("issuer", json!(ISS_B))),
        format!("issuers[1].issuer: issuer \"{ISS_B}\" is configured twice")
    );
    assert_eq!(
        config_error(with(
            "remote_jwks",
            json!({ "cluster": "idp", "path": "/k" })
        )),
        "issuers[1].remote_jwks: set either jwks or remote_jwks, not both"
    );
    assert!(
        config_error(with("jwks", json!({ "keys": [] })))
            .starts_with("issuers[1].jwks: key set has no usable key")
    );
    assert!(config_error(with("surprise", json!(1))).contains("unknown field `surprise`"));
    assert_eq!(
        config_error(json!({ "issuers": [] })),
        "issuers: at least one issuer is required"
    );
    assert_eq!(
        config_error(json!({ "issuers": [{ "issuer": ISS_A, "audiences": [AUD] }] })),
        "issuers[0].jwks: a key source is required: jwks, remote_jwks or hs256_secret"
    );
    let mut remote = remote_issuer(ISS_A);
    remote["remote_jwks"]["path"] = json!("jwks.json");
    assert_eq!(
        config_error(json!({ "issuers": [remote] })),
        "issuers[0].remote_jwks.path: must start with '/'"
    );
}

#[test]
fn weak_hs256_secret_is_refused_without_echoing_it() {
    let secret = STANDARD.encode(b"short-secret");
    let error = config_error(json!({ "issuers": [{
        "issuer": ISS_A, "audiences": [AUD], "hs256_secret": secret
    }]}));
    assert_eq!(
        error,
        "issuers[0].hs256_secret: must decode to at least 32 bytes"
    );
    assert!(!error.contains(&secret));
    let parsed: IdentityConfig = serde_json::from_value(json!({ "issuers": [{
        "issuer": ISS_A, "audiences": [AUD], "hs256_secret": secret
    }]}))
    .unwrap();
    assert!(!format!("{parsed:?}").contains(&secret));
}

#[test]
fn inline_jwks_may_be_a_json_string() {
    let verifier = verifier_for(vec![issuer_config(ISS_A, json!(ed().jwks_json()))]);
    assert!(verifier.verify(&mint(ed(), &alice()), NOW).is_ok());
}

#[test]
fn saved_minters_keep_signing_with_the_same_key() {
    for minter in [rsa(), es(), ed()] {
        let restored = Minter::from_json(&minter.to_json().unwrap()).unwrap();
        assert_eq!(restored.jwks_json(), minter.jwks_json());
        let verifier = verifier_for(vec![issuer_config(ISS_A, jwks_of(&[minter]))]);
        assert!(verifier.verify(&mint(&restored, &alice()), NOW).is_ok());
    }
    assert!(Minter::from_json("{}").is_err());
}

#[cfg(not(feature = "es384"))]
#[test]
fn es384_without_its_feature_is_refused_clearly() {
    let p384 = json!({ "kid": "p384", "kty": "EC", "crv": "P-384", "x": "AA", "y": "AA" });
    let jwks = Jwks::parse(
        json!({ "keys": [ed().public_jwk().unwrap(), p384] })
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        jwks.skipped()[0].reason,
        "P-384 keys need a build with the es384 feature"
    );
    let token = craft(
        &json!({ "alg": "ES384", "kid": "p384" }),
        &valid_claims(),
        &[1; 96],
    );
    assert_eq!(rejection(&standard_verifier(), &token), "alg_not_allowed");
    let mut issuer = issuer_config(ISS_A, jwks_of(&[ed()]));
    issuer["allowed_algorithms"] = json!(["ES384"]);
    assert_eq!(
        config_error(json!({ "issuers": [issuer] })),
        "issuers[0].allowed_algorithms[0]: ES384 needs a build with the es384 feature"
    );
    assert!(Minter::generate(JwsAlgorithm::Es384, ISS_A, AUD, "k").is_err());
}

#[cfg(feature = "es384")]
#[test]
fn es384_keys_verify_and_reject_tampering() {
    let verifier = verifier_for(vec![issuer_config(ISS_A, jwks_of(&[es384()]))]);
    assert_eq!(
        verifier
            .verify(&mint(es384(), &alice()), NOW)
            .unwrap()
            .subject,
        "alice"
    );
    let impostor = es384().impostor().unwrap();
    assert_eq!(
        rejection(&verifier, &mint(&impostor, &alice())),
        "bad_signature"
    );
    let as_es256 = es().with_kid("es384-1");
    assert_eq!(
        rejection(&verifier, &mint(&as_es256, &alice())),
        "alg_key_mismatch"
    );
}

#[test]
fn corrupted_tokens_never_verify_as_someone_else() {
    let verifier = standard_verifier();
    let token = mint(ed(), &alice());
    for position in 0..token.len() {
        for replacement in ['A', '.', '-', '~'] {
            let mut corrupted = token.clone().into_bytes();
            corrupted[position] = replacement as u8;
            let corrupted = String::from_utf8(corrupted).unwrap();
            if let Ok(identity) = verifier.verify(&corrupted, NOW) {
                // Only a change the encoding ignores (trailing base64 bits) may pass.
                assert_eq!(identity, verifier.verify(&token, NOW).unwrap());
            }
        }
    }
}

/// Seeded, bounded fuzzing of token verification: tokens built from valid
/// ones by byte edits, and arbitrary text, never panic the verifier, and a
/// token is accepted only if it is exactly what an issuer signed.
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    fn config(cases: u32) -> Config {
        Config {
            cases,
            rng_seed: RngSeed::Fixed(0x6a77_7473),
            failure_persistence: None,
            ..Config::default()
        }
    }

    /// One edit of a token's bytes.
    #[derive(Debug, Clone)]
    enum Edit {
        Replace(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Truncate(usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        // Bytes a token is made of, and a few it never holds.
        let byte = prop_oneof![
            4 => prop::sample::select(
                b"ABCXYZabcxyz0189-_.=+/ \"{}".to_vec()
            ),
            1 => any::<u8>(),
        ];
        prop_oneof![
            4 => (any::<usize>(), byte.clone()).prop_map(|(at, b)| Edit::Replace(at, b)),
            2 => (any::<usize>(), byte).prop_map(|(at, b)| Edit::Insert(at, b)),
            2 => any::<usize>().prop_map(Edit::Remove),
            1 => any::<usize>().prop_map(Edit::Truncate),
        ]
    }

    fn apply(token: &str, edits: &[Edit]) -> Vec<u8> {
        let mut bytes = token.as_bytes().to_vec();
        for edit in edits {
            let len = bytes.len().max(1);
            match *edit {
                Edit::Replace(at, b) if !bytes.is_empty() => bytes[at % len] = b,
                Edit::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
                Edit::Remove(at) if !bytes.is_empty() => {
                    bytes.remove(at % len);
                }
                Edit::Truncate(at) => bytes.truncate(at % len),
                _ => {}
            }
        }
        bytes
    }

    /// The verifier and a valid token per key type, built once: key setup
    /// dominates a case's cost in debug builds.
    fn fixture() -> &'static (Verifier, Vec<String>) {
        static FIXTURE: OnceLock<(Verifier, Vec<String>)> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let tokens = [es(), ed(), &rsa_as(JwsAlgorithm::Rs256)]
                .into_iter()
                .map(|minter| mint(minter, &alice()))
                .collect();
            (standard_verifier(), tokens)
        })
    }

    proptest! {
        #![proptest_config(config(768))]

        /// Edited tokens never panic the verifier and are accepted only when
        /// the edits left the token as it was signed.
        #[test]
        fn fuzz_edited_tokens_are_refused_unless_unchanged(
            which in 0usize..3,
            edits in prop::collection::vec(edit(), 1..4),
        ) {
            let (verifier, tokens) = fixture();
            let original = &tokens[which];
            let edited = apply(original, &edits);
            let Ok(text) = std::str::from_utf8(&edited) else {
                return Ok(());
            };
            if let Ok(identity) = verifier.verify(text, NOW) {
                prop_assert_eq!(text, original.as_str(), "an edited token was accepted");
                prop_assert_eq!(identity.subject, "alice");
            }
        }

        /// Arbitrary text, and three dot-separated parts of arbitrary
        /// base64url, are refused without a panic.
        #[test]
        fn fuzz_arbitrary_tokens_are_refused(
            text in any::<String>(),
            parts in prop::collection::vec("[A-Za-z0-9_-]{0,64}", 3),
        ) {
            let (verifier, _) = fixture();
            prop_assert!(verifier.verify(&text, NOW).is_err());
            prop_assert!(verifier.verify(&parts.join("."), NOW).is_err());
        }
    }
}

/// [`Verifier::verify_cached`]: a kept verdict is what a fresh verification
/// gives, and nothing a fresh verification would refuse gets through.
mod trusted_tokens {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    const LEEWAY: i64 = 5;

    fn issuer_with_leeway(mut issuer: Value) -> Value {
        issuer["leeway_seconds"] = json!(LEEWAY);
        issuer
    }

    /// Issuer A with remote keys, fetched at `NOW` (usable until NOW + 900).
    fn remote_verifier(keys: &[&Minter]) -> Verifier {
        let mut verifier = verifier_for(vec![issuer_with_leeway(remote_issuer(ISS_A))]);
        verifier
            .keys_fetched(ISS_A, jwks_of(keys).to_string().as_bytes(), NOW)
            .unwrap();
        verifier
    }

    /// Both results, cached first: they must be the same.
    fn both(verifier: &mut Verifier, token: &str, now: i64) -> Result<Identity, TokenRejection> {
        let cached = verifier.verify_cached(token, now);
        assert_eq!(cached, verifier.verify(token, now), "at {}", now - NOW);
        cached
    }

    /// `token` with the byte at `at` replaced by another base64url character.
    fn one_byte_off(token: &str, at: usize) -> String {
        let mut bytes = token.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_token_is_verified_once_and_then_trusted_with_the_same_identity() {
        let mut verifier = remote_verifier(&[ed()]);
        let token = mint(ed(), &alice());
        let fresh = verifier.verify(&token, NOW).unwrap();
        assert_eq!(verifier.trusted_tokens(), 0, "verify keeps nothing");
        assert_eq!(verifier.verify_cached(&token, NOW).unwrap(), fresh);
        assert_eq!(verifier.trusted_tokens(), 1);
        let again = verifier.verify_cached(&token, NOW + 1).unwrap();
        assert_eq!(again, fresh, "subject, groups, claims, expiry: all of it");
        assert_eq!(again.claims["env"], "ci", "claims policy rules read");
        assert_eq!(verifier.trusted_tokens(), 1);
    }

    #[test]
    fn a_token_one_byte_off_a_trusted_one_is_verified_and_refused() {
        let mut verifier = remote_verifier(&[ed()]);
        let token = mint(ed(), &alice());
        verifier.verify_cached(&token, NOW).unwrap();
        let signature_starts = token.rfind('.').unwrap() + 1;
        for at in (signature_starts..token.len()).chain([0, signature_starts - 2]) {
            let tampered = one_byte_off(&token, at);
            assert!(
                both(&mut verifier, &tampered, NOW + 1).is_err(),
                "byte {at} changed"
            );
        }
        let mut longer = token.clone();
        longer.push('A');
        assert!(both(&mut verifier, &longer, NOW + 1).is_err());
        assert!(both(&mut verifier, &token[..token.len() - 1], NOW + 1).is_err());
        assert_eq!(verifier.trusted_tokens(), 1, "refusals are never kept");
        assert!(verifier.verify_cached(&token, NOW + 1).is_ok());
    }

    #[test]
    fn a_trusted_token_is_refused_from_the_second_a_fresh_check_refuses_it() {
        // exp at NOW + 3: accepted up to NOW + 3 + LEEWAY, within TRUSTED_SECONDS.
        let mut verifier = remote_verifier(&[ed()]);
        let token = ed().mint(&alice(), 3, NOW).unwrap();
        assert!(both(&mut verifier, &token, NOW).is_ok());
        for now in NOW + 1..=NOW + 3 + LEEWAY {
            assert!(both(&mut verifier, &token, now).is_ok());
        }
        assert_eq!(
            both(&mut verifier, &token, NOW + 4 + LEEWAY).unwrap_err(),
            TokenRejection::Expired
        );
        // nbf at NOW: a clock that goes back past it refuses it again.
        let token = ed().mint(&alice(), 300, NOW).unwrap();
        assert!(both(&mut verifier, &token, NOW).is_ok());
        assert_eq!(
            both(&mut verifier, &token, NOW - LEEWAY - 1).unwrap_err(),
            TokenRejection::NotYetValid
        );
    }

    #[test]
    fn another_key_set_ends_the_trust_at_once_and_the_same_one_does_not() {
        let rotated = es().with_kid("es-rotated");
        let mut verifier = remote_verifier(&[ed()]);
        let token = mint(ed(), &alice());
        assert!(verifier.verify_cached(&token, NOW).is_ok());
        verifier
            .keys_fetched(ISS_A, jwks_of(&[ed()]).to_string().as_bytes(), NOW + 1)
            .unwrap();
        assert_eq!(verifier.trusted_tokens(), 1, "the same set fetched again");
        verifier
            .keys_fetched(ISS_A, jwks_of(&[&rotated]).to_string().as_bytes(), NOW + 2)
            .unwrap();
        assert!(matches!(
            both(&mut verifier, &token, NOW + 2),
            Err(TokenRejection::UnknownKid { .. })
        ));
        assert_eq!(verifier.trusted_tokens(), 0);
    }

    #[test]
    fn a_trusted_token_is_refused_once_its_issuers_keys_are_too_stale() {
        let mut verifier = remote_verifier(&[ed()]);
        let token = ed().mint(&alice(), 3600, NOW).unwrap();
        let last_usable = NOW + 300 + 600;
        assert!(both(&mut verifier, &token, last_usable - 1).is_ok());
        assert!(both(&mut verifier, &token, last_usable).is_ok());
        assert!(matches!(
            both(&mut verifier, &token, last_usable + 1),
            Err(TokenRejection::KeysUnavailable { .. })
        ));
    }

    #[test]
    fn an_oversized_token_is_verified_every_time() {
        let mut issuer = issuer_with_leeway(issuer_config(ISS_A, jwks_of(&[ed()])));
        issuer["max_token_bytes"] = json!(64 * 1024);
        let mut verifier = verifier_for(vec![issuer]);
        let mut claims = alice();
        claims["padding"] = json!("p".repeat(token_cache::MAX_TOKEN_BYTES));
        let token = mint(ed(), &claims);
        assert!(token.len() > token_cache::MAX_TOKEN_BYTES);
        assert!(both(&mut verifier, &token, NOW).is_ok());
        assert_eq!(verifier.trusted_tokens(), 0);
        let signature_starts = token.rfind('.').unwrap() + 1;
        let tampered = one_byte_off(&token, signature_starts + 3);
        assert_eq!(
            both(&mut verifier, &tampered, NOW + 1).unwrap_err(),
            TokenRejection::BadSignature
        );
    }

    #[test]
    fn a_trusted_token_needs_no_key_fetch() {
        let mut verifier = remote_verifier(&[ed()]);
        let token = mint(ed(), &alice());
        assert_eq!(verifier.lacks_keys(&token, NOW), None);
        verifier.verify_cached(&token, NOW).unwrap();
        assert_eq!(verifier.lacks_keys(&token, NOW + 1), None);
        assert!(matches!(
            verifier.lacks_keys(&token, NOW + 901),
            Some(TokenRejection::KeysUnavailable { .. })
        ));
    }

    /// One step of a verifier's life.
    #[derive(Debug, Clone)]
    enum Step {
        /// Verify token `.0` after moving the clock by `.1` seconds.
        Verify(usize, i64),
        /// Install key set `.0` (0: the first key, 1: the rotated one, 2: both).
        Keys(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (0usize..6, -3i64..8).prop_map(|(token, dt)| Step::Verify(token, dt)),
            1 => (0usize..3).prop_map(Step::Keys),
        ]
    }

    /// Tokens that pass and fail in every way a clock and a rotation can
    /// change: long-lived, about to expire, not valid for a while yet, signed
    /// by the key rotated in, tampered, and an HS256 one.
    fn fixture() -> &'static (Vec<String>, [String; 3]) {
        static FIXTURE: OnceLock<(Vec<String>, [String; 3])> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let rotated = es().with_kid("es-rotated");
            let good = mint(ed(), &alice());
            let tokens = vec![
                good.clone(),
                ed().mint(&alice(), 12, NOW).unwrap(),
                ed().mint(&alice(), 300, NOW + 20).unwrap(),
                mint(&rotated, &alice()),
                one_byte_off(&good, good.len() - 5),
                mint(&hmac(), &json!({"sub": "hs"})),
            ];
            let sets = [
                jwks_of(&[ed()]).to_string(),
                jwks_of(&[&rotated]).to_string(),
                jwks_of(&[ed(), &rotated]).to_string(),
            ];
            (tokens, sets)
        })
    }

    fn hmac() -> Minter {
        Minter::hs256(&[7; 32], ISS_B, AUD, "")
    }

    proptest! {
        #![proptest_config(Config {
            cases: 256,
            rng_seed: RngSeed::Fixed(0x7472_7573),
            failure_persistence: None,
            ..Config::default()
        })]

        /// Whatever the clock and the key sets do, the cached verdict is
        /// the fresh one.
        #[test]
        fn a_cached_verdict_is_always_the_fresh_one(
            steps in prop::collection::vec(step(), 1..40),
        ) {
            let (tokens, sets) = fixture();
            let mut hs = issuer_with_leeway(json!({"issuer": ISS_B, "audiences": [AUD]}));
            hs["hs256_secret"] = json!(STANDARD.encode([7u8; 32]));
            let mut verifier = verifier_for(vec![
                issuer_with_leeway(remote_issuer(ISS_A)),
                hs,
            ]);
            verifier.keys_fetched(ISS_A, sets[0].as_bytes(), NOW).unwrap();
            let mut now = NOW;
            for step in steps {
                match step {
                    Step::Verify(token, dt) => {
                        now += dt;
                        let token = &tokens[token];
                        let cached = verifier.verify_cached(token, now);
                        prop_assert_eq!(cached, verifier.verify(token, now));
                    }
                    Step::Keys(set) => {
                        verifier.keys_fetched(ISS_A, sets[set].as_bytes(), now).unwrap();
                    }
                }
            }
        }
    }
}
