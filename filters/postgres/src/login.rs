//! Token login: the client gives an access token (JWT) as its password; the
//! gateway verifies it and checks that the identity may use the database role it
//! asked for. The database itself trusts the gateway, so no database password
//! ever reaches a client.
//!
//! The wire round trip (the host cannot write to the client on its own) lives in
//! the session; this module holds the configuration and the decision:
//!
//! ```json
//! "login": {
//!   "deadline_seconds": 10,
//!   "roles": [
//!     { "role": "app", "match": { "groups": ["developers", "ci", "ai-agents"] } },
//!     { "role": "postgres", "match": { "groups": ["dba", "platform-admins"] } }
//!   ]
//! }
//! ```
//!
//! A role no grant names cannot be used by anyone; `role` may hold `*` wildcards.
//! Tokens are verified by the filter's `identity` issuers. A session lives on
//! past its token's expiry, but every statement sent after it is refused
//! (rule `gatehouse:token-expired`), so a long session cannot outlive the
//! credential that opened it. One clock-skew rule holds for both: a token is
//! accepted up to its `exp` plus the issuer's `leeway_seconds` (60 by default),
//! at login and for every statement after ([`Identity::token_expired`]).

use gatehouse_core::config::ConfigError;
use gatehouse_core::identity::{Identity, KeyFetch, TokenRejection, Verifier};
use gatehouse_core::policy::{IdentityMatch, IdentityMatchDoc, Wildcard};
use serde::Deserialize;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// Longest a client may take from its StartupMessage to a verified login.
const DEFAULT_DEADLINE_SECONDS: u32 = 10;
const MAX_DEADLINE_SECONDS: u32 = 300;

/// Which identities may log in as which database roles, and how long a login may take.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginConfig {
    grants: Vec<RoleGrant>,
    /// Seconds from the StartupMessage until the login must be complete; a
    /// client that does not answer the password request in time is disconnected
    /// (it would otherwise hold a logged-in server backend).
    pub deadline_seconds: u32,
}

#[derive(Debug, Clone, PartialEq)]
struct RoleGrant {
    role: Wildcard,
    who: IdentityMatch,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginDoc {
    #[serde(default)]
    deadline_seconds: Option<u32>,
    roles: Vec<GrantDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantDoc {
    role: String,
    #[serde(rename = "match")]
    who: IdentityMatchDoc,
}

impl LoginConfig {
    /// Parses the `login` section; errors name their path (`roles[1].match.groups[0]`).
    pub fn from_json(json: &[u8]) -> Result<LoginConfig, ConfigError> {
        let doc: LoginDoc = ConfigError::parse_json(json)?;
        let deadline_seconds = doc.deadline_seconds.unwrap_or(DEFAULT_DEADLINE_SECONDS);
        if !(1..=MAX_DEADLINE_SECONDS).contains(&deadline_seconds) {
            return Err(ConfigError::new(
                "deadline_seconds",
                format!("must be between 1 and {MAX_DEADLINE_SECONDS}"),
            ));
        }
        let grants = doc
            .roles
            .iter()
            .enumerate()
            .map(|(i, grant)| {
                let path = format!("roles[{i}]");
                let role = Wildcard::new(&grant.role).map_err(|e| e.under(&format!("{path}.role")))?;
                let who = grant
                    .who
                    .compile()
                    .map_err(|e| e.under(&format!("{path}.match")))?;
                if who.is_any() {
                    return Err(ConfigError::new(
                        format!("{path}.match"),
                        "names no subjects, groups or claims: it would let every token use the role",
                    ));
                }
                Ok(RoleGrant { role, who })
            })
            .collect::<Result<_, _>>()?;
        Ok(LoginConfig {
            grants,
            deadline_seconds,
        })
    }

    /// Whether `identity` may log in as `role`.
    pub fn may_use_role(&self, identity: &Identity, role: &str) -> bool {
        self.grants
            .iter()
            .any(|grant| grant.role.matches(role) && grant.who.matches(identity))
    }
}

/// Why a login is refused, as the client is told (never the token itself).
#[derive(Debug, Clone, PartialEq)]
pub struct LoginRefusal {
    /// `28P01` (bad token) or `28000` (the identity may not use the role).
    pub sqlstate: &'static str,
    /// The message for the client.
    pub message: String,
    /// A short machine-readable reason for the record (`expired`, `role_not_allowed`, …).
    pub code: &'static str,
    /// The identity, when the token was good but the role is not allowed.
    pub identity: Option<Box<Identity>>,
}

/// Decides a login from the password message: the session's only question.
pub trait Authenticator {
    /// `password` is the PasswordMessage body (the token, NUL-terminated);
    /// `role` the user named at startup; `now_us` unix microseconds.
    fn authenticate(
        &mut self,
        password: &[u8],
        role: &str,
        now_us: u64,
    ) -> Result<Identity, LoginRefusal>;
}

/// The token a PasswordMessage body carries, as it is verified: `None` when
/// it is not text.
pub fn token_in(password: &[u8]) -> Option<&str> {
    let token = password.strip_suffix(&[0]).unwrap_or(password);
    std::str::from_utf8(token).ok().map(str::trim)
}

/// Key fetches that refused logins asked for (a first fetch, or a rotation);
/// the glue starts them and hands the answers to the verifier.
pub type WantedFetches = Rc<RefCell<Vec<KeyFetch>>>;

/// The worker's verifier and login rules, shared by its sessions (which run
/// one at a time, so `Rc<RefCell<…>>` suffices).
#[derive(Clone)]
pub struct TokenLogin {
    verifier: Rc<RefCell<Verifier>>,
    config: Arc<LoginConfig>,
    wanted: WantedFetches,
}

impl TokenLogin {
    pub fn new(
        verifier: Rc<RefCell<Verifier>>,
        config: Arc<LoginConfig>,
        wanted: WantedFetches,
    ) -> Self {
        TokenLogin {
            verifier,
            config,
            wanted,
        }
    }
}

impl Authenticator for TokenLogin {
    fn authenticate(
        &mut self,
        password: &[u8],
        role: &str,
        now_us: u64,
    ) -> Result<Identity, LoginRefusal> {
        let now = i64::try_from(now_us / 1_000_000).unwrap_or(i64::MAX);
        let token = token_in(password).ok_or_else(|| LoginRefusal {
            sqlstate: "28P01",
            message: "gatehouse: the password must be an access token (JWT) from a trusted issuer"
                .to_owned(),
            code: "malformed",
            identity: None,
        })?;
        // A token this worker verified moments ago is not checked again
        // while that verdict holds (see `Verifier::verify_cached`):
        // pools and `pgbench -C` log in with the same token every time.
        let verified = match self.verifier.try_borrow_mut() {
            Ok(mut verifier) => verifier.verify_cached(token, now),
            Err(_) => Err(TokenRejection::KeysUnavailable {
                issuer: String::new(),
            }),
        };
        let identity = verified.map_err(|rejection| {
            if let Ok(mut verifier) = self.verifier.try_borrow_mut()
                && let Some(fetch) = verifier.fetch_for(&rejection, now)
            {
                self.wanted.borrow_mut().push(fetch);
            }
            let retry = matches!(
                rejection,
                TokenRejection::UnknownKid { .. } | TokenRejection::KeysUnavailable { .. }
            );
            LoginRefusal {
                sqlstate: "28P01",
                message: format!(
                    "gatehouse: token rejected: {rejection}{}",
                    if retry {
                        "; the issuer's keys are being refreshed, try again in a moment"
                    } else {
                        ""
                    }
                ),
                code: rejection.code(),
                identity: None,
            }
        })?;
        if !self.config.may_use_role(&identity, role) {
            return Err(LoginRefusal {
                sqlstate: "28000",
                message: format!(
                    "gatehouse: {} may not log in as database role \"{role}\"",
                    identity.subject
                ),
                code: "role_not_allowed",
                identity: Some(Box::new(identity)),
            });
        }
        Ok(identity)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use gatehouse_core::identity::JwsAlgorithm;
    use gatehouse_core::identity::testing::Minter;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;
    const NOW_US: u64 = 1_800_000_000_000_000;

    fn minter() -> Minter {
        Minter::generate(JwsAlgorithm::Es256, "https://idp.test", "gatehouse", "k1").unwrap()
    }

    fn demo_login() -> LoginConfig {
        LoginConfig::from_json(
            br#"{"roles": [
                {"role": "app", "match": {"groups": ["developers", "ci"]}},
                {"role": "postgres", "match": {"groups": ["dba"]}}
            ]}"#,
        )
        .unwrap()
    }

    fn login_with(minter: &Minter, inline_keys: bool) -> (TokenLogin, WantedFetches) {
        let keys = if inline_keys {
            format!(r#""jwks": {}"#, minter.jwks_json())
        } else {
            r#""remote_jwks": {"cluster": "idp", "path": "/jwks.json"}"#.to_owned()
        };
        let config = format!(
            r#"{{"issuers": [{{"issuer": "{}", "audiences": ["gatehouse"], {keys}}}]}}"#,
            minter.issuer()
        );
        let verifier = Verifier::from_json(config.as_bytes()).unwrap();
        let wanted = WantedFetches::default();
        let login = TokenLogin::new(
            Rc::new(RefCell::new(verifier)),
            Arc::new(demo_login()),
            Rc::clone(&wanted),
        );
        (login, wanted)
    }

    fn password(token: &str) -> Vec<u8> {
        let mut bytes = token.as_bytes().to_vec();
        bytes.push(0);
        bytes
    }

    #[test]
    fn a_good_token_for_an_allowed_role_logs_in() {
        let minter = minter();
        let (mut login, _) = login_with(&minter, true);
        let token = minter
            .mint(
                &json!({"sub": "dev1", "groups": ["developers"], "jti": "t-1"}),
                300,
                NOW,
            )
            .unwrap();
        let identity = login
            .authenticate(&password(&token), "app", NOW_US)
            .unwrap();
        assert_eq!(identity.subject, "dev1");
        assert!(identity.verified);
        assert_eq!(identity.token_id.as_deref(), Some("t-1"));
    }

    #[test]
    fn a_good_token_for_a_role_the_identity_may_not_use_is_refused_with_28000() {
        let minter = minter();
        let (mut login, _) = login_with(&minter, true);
        let token = minter
            .mint(&json!({"sub": "dev1", "groups": ["developers"]}), 300, NOW)
            .unwrap();
        let refusal = login
            .authenticate(&password(&token), "postgres", NOW_US)
            .unwrap_err();
        assert_eq!(refusal.sqlstate, "28000");
        assert_eq!(refusal.code, "role_not_allowed");
        assert!(
            refusal
                .message
                .contains("dev1 may not log in as database role \"postgres\"")
        );
        assert_eq!(refusal.identity.unwrap().subject, "dev1");
    }

    #[test]
    fn bad_tokens_are_refused_with_28p01_and_their_reason() {
        let minter = minter();
        let (mut login, _) = login_with(&minter, true);
        let claims = json!({"sub": "dev1", "groups": ["developers"]});
        let expired = minter.mint_expired(&claims, NOW).unwrap();
        let forged = minter.impostor().unwrap().mint(&claims, 300, NOW).unwrap();
        for (token, code) in [
            (expired.as_str(), "expired"),
            (forged.as_str(), "bad_signature"),
            ("hunter2", "malformed"),
        ] {
            let refusal = login
                .authenticate(&password(token), "app", NOW_US)
                .unwrap_err();
            assert_eq!(refusal.sqlstate, "28P01", "{token}");
            assert_eq!(refusal.code, code, "{}", refusal.message);
            assert!(
                !refusal.message.contains(token),
                "the token is never echoed"
            );
        }
        let refusal = login
            .authenticate(&[0xff, 0xfe, 0], "app", NOW_US)
            .unwrap_err();
        assert_eq!(refusal.code, "malformed");
    }

    #[test]
    fn a_token_is_verified_once_and_every_login_with_it_is_judged_alike() {
        let minter = minter();
        let (mut login, _) = login_with(&minter, true);
        let claims = json!({"sub": "dev1", "groups": ["developers"], "team": "payments"});
        let token = minter.mint(&claims, 300, NOW).unwrap();
        let first = login
            .authenticate(&password(&token), "app", NOW_US)
            .unwrap();
        assert_eq!(login.verifier.borrow().trusted_tokens(), 1);
        let again = login
            .authenticate(&password(&token), "app", NOW_US + 1_000_000)
            .unwrap();
        assert_eq!(again, first, "the same identity, claims and expiry");
        assert_eq!(again.claims["team"], "payments");
        let refusal = login
            .authenticate(&password(&token), "postgres", NOW_US + 1_000_000)
            .unwrap_err();
        assert_eq!(
            refusal.code, "role_not_allowed",
            "the role is judged on every login"
        );
        let signature_at = token.rfind('.').unwrap() + 2;
        let mut tampered = token.clone().into_bytes();
        tampered[signature_at] = if tampered[signature_at] == b'A' {
            b'B'
        } else {
            b'A'
        };
        let refusal = login
            .authenticate(
                &password(std::str::from_utf8(&tampered).unwrap()),
                "app",
                NOW_US,
            )
            .unwrap_err();
        assert_eq!(refusal.code, "bad_signature");
        assert_eq!(
            login.verifier.borrow().trusted_tokens(),
            1,
            "refusals are not kept"
        );
    }

    #[test]
    fn a_kept_token_is_refused_from_the_second_it_expires() {
        let minter = minter();
        let config = format!(
            r#"{{"issuers": [{{"issuer": "{}", "audiences": ["gatehouse"], "leeway_seconds": 0,
                "jwks": {}}}]}}"#,
            minter.issuer(),
            minter.jwks_json()
        );
        let verifier = Verifier::from_json(config.as_bytes()).unwrap();
        let mut login = TokenLogin::new(
            Rc::new(RefCell::new(verifier)),
            Arc::new(demo_login()),
            WantedFetches::default(),
        );
        let token = minter
            .mint(&json!({"sub": "dev1", "groups": ["developers"]}), 2, NOW)
            .unwrap();
        let at = |login: &mut TokenLogin, seconds: u64| {
            login
                .authenticate(&password(&token), "app", NOW_US + seconds * 1_000_000)
                .map(|_| ())
                .map_err(|refusal| refusal.code)
        };
        assert_eq!(at(&mut login, 0), Ok(()));
        assert_eq!(at(&mut login, 2), Ok(()));
        assert_eq!(at(&mut login, 3), Err("expired"));
    }

    #[test]
    fn missing_remote_keys_ask_the_glue_for_a_fetch() {
        let minter = minter();
        let (mut login, wanted) = login_with(&minter, false);
        let token = minter
            .mint(&json!({"sub": "dev1", "groups": ["developers"]}), 300, NOW)
            .unwrap();
        let refusal = login
            .authenticate(&password(&token), "app", NOW_US)
            .unwrap_err();
        assert!(refusal.message.contains("try again"), "{}", refusal.message);
        let fetches = wanted.borrow();
        assert_eq!(fetches.len(), 1);
        assert_eq!(fetches[0].path, "/jwks.json");
    }

    #[test]
    fn configuration_errors_name_their_path() {
        let error =
            LoginConfig::from_json(br#"{"roles": [{"role": "app", "match": {}}]}"#).unwrap_err();
        assert_eq!(error.path, "roles[0].match");
        let error =
            LoginConfig::from_json(br#"{"roles": [{"role": "", "match": {"groups": ["x"]}}]}"#)
                .unwrap_err();
        assert_eq!(error.path, "roles[0].role");
        let error = LoginConfig::from_json(br#"{"roles": [], "deadline_seconds": 0}"#).unwrap_err();
        assert_eq!(error.path, "deadline_seconds");
        let error = LoginConfig::from_json(br#"{"roles": [], "extra": 1}"#).unwrap_err();
        assert!(error.to_string().contains("extra"), "{error}");
    }

    #[test]
    fn role_patterns_and_claims_select_who_may_use_a_role() {
        let config = LoginConfig::from_json(
            br#"{"roles": [{"role": "report_*", "match": {"claims": {"env": "ci"}}}]}"#,
        )
        .unwrap();
        let mut ci = Identity::claimed("job-7");
        ci.claims.insert("env".into(), json!("ci"));
        assert!(config.may_use_role(&ci, "report_reader"));
        assert!(!config.may_use_role(&ci, "app"));
        assert!(!config.may_use_role(&Identity::claimed("job-8"), "report_reader"));
    }
}
