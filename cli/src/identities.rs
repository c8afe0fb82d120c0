//! Identities for dry runs: by name from an identities file, or read from a
//! token's claims.
//!
//! An identities file maps names to what a verified token would say:
//!
//! ```json
//! {"developer": {"groups": ["developers"], "claims": {"email": "developer@example.com"}}}
//! ```
//!
//! The subject is the name unless `subject` is given. The demo ships its
//! identities in `examples/demo/identities.json`.

use base64::Engine;
use gatehouse_core::identity::{Identity, IdentityConfig};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Why an identity could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("--identity needs an identities file: --identities FILE or GATEHOUSE_IDENTITIES")]
    NoFile,
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an identities file: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("no identity \"{name}\" in {path} (known: {known})")]
    Unknown {
        name: String,
        path: String,
        known: String,
    },
    #[error("the token is not a JWT (three base64url parts)")]
    NotAJwt,
    #[error("the token's claims are not a JSON object")]
    BadClaims,
    #[error("the token has no subject claim \"{0}\"")]
    NoSubject(String),
}

/// One entry of an identities file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedIdentity {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    claims: BTreeMap<String, Value>,
}

/// The identity called `name` in the identities file at `path`.
pub fn named(path: Option<&Path>, name: &str) -> Result<Identity, IdentityError> {
    let path = path.ok_or(IdentityError::NoFile)?;
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut all: BTreeMap<String, NamedIdentity> =
        serde_json::from_str(&text).map_err(|source| IdentityError::Parse {
            path: shown.clone(),
            source,
        })?;
    let known = all.keys().cloned().collect::<Vec<_>>().join(", ");
    let entry = all.remove(name).ok_or_else(|| IdentityError::Unknown {
        name: name.to_owned(),
        path: shown,
        known,
    })?;
    Ok(Identity {
        subject: entry.subject.unwrap_or_else(|| name.to_owned()),
        groups: entry.groups,
        claims: entry.claims,
        ..Identity::default()
    })
}

/// What a token says, read the way the filter maps claims (the issuer's
/// `subject_claim` and `groups_claim` when `config` trusts its `iss`), without
/// checking the signature.
pub struct TokenIdentity {
    pub identity: Identity,
    /// Whether `config` trusts the token's issuer.
    pub trusted_issuer: bool,
    /// Seconds past the token's `exp` plus the issuer's leeway; positive when a
    /// filter would refuse it as expired.
    pub expired_for: Option<i64>,
}

pub fn from_token(
    token: &str,
    config: Option<&IdentityConfig>,
    now: i64,
) -> Result<TokenIdentity, IdentityError> {
    let mut parts = token.trim().split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdentityError::NotAJwt);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| IdentityError::NotAJwt)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| IdentityError::BadClaims)?;
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .and_then(|iss| config.and_then(|c| c.issuers.iter().find(|issuer| issuer.issuer == iss)));
    let subject_claim = issuer.map_or("sub", |i| i.subject_claim.as_str());
    let groups_claim = issuer.map_or("groups", |i| i.groups_claim.as_str());
    let leeway = issuer.map_or(60, |i| i64::from(i.leeway_seconds));
    let subject = match lookup(&claims, subject_claim) {
        Some(Value::String(subject)) if !subject.is_empty() => subject.clone(),
        _ => return Err(IdentityError::NoSubject(subject_claim.to_owned())),
    };
    let groups = match lookup(&claims, groups_claim) {
        Some(Value::String(group)) if !group.is_empty() => vec![group.clone()],
        Some(Value::Array(groups)) => groups
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let expires_at = claims.get("exp").and_then(Value::as_i64);
    let identity = Identity {
        subject,
        groups,
        issuer: claims.get("iss").and_then(Value::as_str).map(str::to_owned),
        token_id: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
        expires_at,
        claims: claims.into_iter().collect(),
        ..Identity::default()
    };
    Ok(TokenIdentity {
        identity,
        trusted_issuer: issuer.is_some(),
        expired_for: expires_at.map(|exp| now.saturating_sub(exp.saturating_add(leeway))),
    })
}

/// A claim by name, or by dotted path into nested objects.
fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut segments = name.split('.');
    let first = claims.get(segments.next()?)?;
    segments.try_fold(first, |value, segment| value.get(segment))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let encode = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.sig",
            encode(&serde_json::json!({"alg": "EdDSA"})),
            encode(&claims)
        )
    }

    #[test]
    fn a_token_is_read_with_the_trusted_issuers_claim_mapping() {
        let config: IdentityConfig = serde_json::from_value(serde_json::json!({"issuers": [{
            "issuer": "https://idp", "audiences": ["gatehouse"],
            "groups_claim": "realm.roles", "leeway_seconds": 30}]}))
        .unwrap();
        let token = jwt(serde_json::json!({
            "iss": "https://idp", "sub": "alice", "exp": 1000,
            "realm": {"roles": ["dba", "oncall"]}, "groups": ["ignored"]}));
        let read = from_token(&token, Some(&config), 1010).unwrap();
        assert_eq!(read.identity.subject, "alice");
        assert_eq!(read.identity.groups, ["dba", "oncall"]);
        assert!(read.trusted_issuer);
        assert_eq!(read.expired_for, Some(-20), "still within the leeway");
        let untrusted = from_token(&token, None, 1010).unwrap();
        assert_eq!(untrusted.identity.groups, ["ignored"]);
        assert!(!untrusted.trusted_issuer);
        assert!(matches!(
            from_token("not-a-token", None, 0),
            Err(IdentityError::NotAJwt)
        ));
        assert!(matches!(
            from_token(&jwt(serde_json::json!({"iss": "x"})), None, 0),
            Err(IdentityError::NoSubject(_))
        ));
    }

    #[test]
    fn named_identities_come_from_the_file() {
        let dir = std::env::temp_dir().join(format!("gatehouse-identities-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("identities.json");
        std::fs::write(
            &path,
            r#"{"developer": {"groups": ["developers"]}, "robot": {"subject": "ci-bot"}}"#,
        )
        .unwrap();
        let developer = named(Some(&path), "developer").unwrap();
        assert_eq!(
            (developer.subject.as_str(), developer.groups.as_slice()),
            ("developer", ["developers".to_owned()].as_slice())
        );
        assert_eq!(named(Some(&path), "robot").unwrap().subject, "ci-bot");
        let unknown = named(Some(&path), "mallory").unwrap_err().to_string();
        assert!(unknown.contains("known: developer, robot"), "{unknown}");
        assert!(matches!(named(None, "x"), Err(IdentityError::NoFile)));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
