//! The service's configuration: one JSON document, unknown fields refused,
//! errors naming their path.
//!
//! ```json
//! {
//!   "listen": "127.0.0.1:8480",
//!   "database_url": "host=127.0.0.1 port=5432 user=postgres dbname=gatehouse_approvals",
//!   "identity": {"issuers": [...]},
//!   "clusters": {"gatehouse_idp": "http://127.0.0.1:9000"},
//!   "filter_key": "...",
//!   "webhook": {"url": "http://chat.example/hook", "attempts": 5},
//!   "records_url": "http://127.0.0.1:9901/records",
//!   "scopes": {"customer-writes": {"approvers": ["dba"], "grant": "window", "valid": "1h"}}
//! }
//! ```
//!
//! - `identity` is the filters' own `identity` section: callers present the same
//!   OIDC tokens. Issuers with `remote_jwks` are fetched from `clusters[cluster]`
//!   + `path`, as Envoy would.
//! - `filter_key` is the shared secret the filters present (`Authorization:
//!   Bearer <key>`) to file requests, read grants and use them up.
//! - `scopes` are what a person may ask a time window on (`gatehouse request
//!   --scope NAME`): the same approval settings as the filters' rule of that name.
//! - `max_pending_per_requester` (default 20) bounds the requests one person
//!   has pending at once: every pending request is in the publication each
//!   filter polls, so one client filing in a loop must not grow it for all.

use gatehouse_core::approval::{ApprovalRequirement, GrantKind, Holding};
use gatehouse_core::config::ConfigError;
use gatehouse_core::identity::{IdentityConfig, Secret, Verifier};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigDoc {
    listen: String,
    database_url: Secret,
    identity: Value,
    #[serde(default)]
    clusters: BTreeMap<String, String>,
    filter_key: Secret,
    #[serde(default)]
    webhook: Option<WebhookConfig>,
    #[serde(default)]
    records_url: Option<String>,
    #[serde(default)]
    scopes: BTreeMap<String, Value>,
    #[serde(default = "default_sweep_ms")]
    sweep_ms: u64,
    #[serde(default = "default_max_pending")]
    max_pending_per_requester: u32,
}

fn default_sweep_ms() -> u64 {
    500
}

/// Pending requests one requester may have at once, unless configured: a
/// person rarely waits on more, and a client filing in a loop must not grow
/// the publication every filter polls without bound.
fn default_max_pending() -> u32 {
    20
}

/// Where notifications go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A Slack-compatible incoming webhook (plain `http://`; reach an `https://`
    /// one through an egress proxy such as an Envoy listener with a TLS cluster).
    pub url: String,
    /// Deliveries tried before giving up on one notification.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_attempts() -> u32 {
    5
}
fn default_timeout_ms() -> u64 {
    3000
}

/// The checked configuration.
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub identity: IdentityConfig,
    pub clusters: BTreeMap<String, String>,
    pub filter_key: String,
    pub webhook: Option<WebhookConfig>,
    pub records_url: Option<String>,
    pub scopes: BTreeMap<String, ApprovalRequirement>,
    pub sweep_ms: u64,
    /// Pending requests one requester may have at once; a filing beyond is
    /// refused (429).
    pub max_pending_per_requester: u32,
}

impl Config {
    pub fn from_json(json: &[u8]) -> Result<Config, ConfigError> {
        let doc: ConfigDoc = ConfigError::parse_json(json)?;
        let listen = doc
            .listen
            .parse()
            .map_err(|e| ConfigError::new("listen", format!("{e}")))?;
        let identity: IdentityConfig = serde_json::from_value(doc.identity)
            .map_err(|e| ConfigError::new("identity", e.to_string()))?;
        Verifier::from_config(&identity).map_err(|e| e.under("identity"))?;
        for issuer in &identity.issuers {
            if let Some(remote) = &issuer.remote_jwks
                && !doc.clusters.contains_key(&remote.cluster)
            {
                return Err(ConfigError::new(
                    "clusters",
                    format!(
                        "issuer {} fetches its keys from cluster {}, which is not listed",
                        issuer.issuer, remote.cluster
                    ),
                ));
            }
        }
        for (name, url) in &doc.clusters {
            check_http_url(url).map_err(|e| e.under(&format!("clusters.{name}")))?;
        }
        if doc.filter_key.0.len() < 16 {
            return Err(ConfigError::new(
                "filter_key",
                "must be at least 16 characters",
            ));
        }
        if let Some(webhook) = &doc.webhook {
            check_http_url(&webhook.url).map_err(|e| e.under("webhook.url"))?;
            if !(1..=20).contains(&webhook.attempts) {
                return Err(ConfigError::new("webhook.attempts", "must be 1 to 20"));
            }
        }
        if let Some(url) = &doc.records_url {
            check_http_url(url).map_err(|e| e.under("records_url"))?;
        }
        if !(1..=10_000).contains(&doc.max_pending_per_requester) {
            return Err(ConfigError::new(
                "max_pending_per_requester",
                "must be 1 to 10000",
            ));
        }
        let mut scopes = BTreeMap::new();
        for (name, value) in doc.scopes {
            let requirement = ApprovalRequirement::from_value(value, Holding::NotPossible)
                .map_err(|e| e.under(&format!("scopes.{name}")))?;
            if requirement.grant != GrantKind::Window {
                return Err(ConfigError::new(
                    format!("scopes.{name}.grant"),
                    "a scope grants a time window: set \"grant\": \"window\"",
                ));
            }
            scopes.insert(name, requirement);
        }
        Ok(Config {
            listen,
            database_url: doc.database_url.0,
            identity,
            clusters: doc.clusters,
            filter_key: doc.filter_key.0,
            webhook: doc.webhook,
            records_url: doc.records_url,
            scopes,
            sweep_ms: doc.sweep_ms.clamp(50, 60_000),
            max_pending_per_requester: doc.max_pending_per_requester,
        })
    }
}

fn check_http_url(url: &str) -> Result<(), ConfigError> {
    crate::client::HttpTarget::parse(url)
        .map(|_| ())
        .map_err(|e| ConfigError::new("", e.to_string()))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "listen": "127.0.0.1:0",
            "database_url": "host=/tmp dbname=x",
            "identity": {"issuers": [{"issuer": "https://idp", "audiences": ["gatehouse"],
                "remote_jwks": {"cluster": "idp", "path": "/jwks"}}]},
            "clusters": {"idp": "http://127.0.0.1:1"},
            "filter_key": "0123456789abcdef0123",
        })
    }

    fn error(change: impl FnOnce(&mut Value)) -> String {
        let mut doc = base();
        change(&mut doc);
        match Config::from_json(doc.to_string().as_bytes()) {
            Ok(_) => panic!("accepted {doc}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_complete_configuration_is_accepted() {
        let mut doc = base();
        doc["webhook"] = json!({"url": "http://127.0.0.1:2/hook"});
        doc["scopes"] = json!({"w": {"approvers": ["dba"], "grant": "window"}});
        let config = Config::from_json(doc.to_string().as_bytes()).unwrap();
        assert_eq!(config.webhook.unwrap().attempts, 5);
        assert_eq!(config.scopes["w"].approvers, ["dba"]);
        assert_eq!(config.max_pending_per_requester, 20);
    }

    #[test]
    fn errors_name_their_path() {
        assert!(error(|d| d["clusters"] = json!({})).starts_with("clusters: issuer https://idp"));
        assert!(error(|d| d["filter_key"] = json!("short")).starts_with("filter_key: "));
        assert!(
            error(|d| d["webhook"] = json!({"url": "https://hooks.slack.com/x"}))
                .starts_with("webhook.url: "),
        );
        assert_eq!(
            error(|d| d["scopes"] = json!({"w": {"approvers": ["dba"]}})),
            "scopes.w.grant: a scope grants a time window: set \"grant\": \"window\""
        );
        assert!(
            error(|d| d["scopes"] = json!({"w": {"approvers": []}}))
                .starts_with("scopes.w.approvers")
        );
        assert!(error(|d| d["listen"] = json!("nowhere")).starts_with("listen: "));
        assert_eq!(
            error(|d| d["max_pending_per_requester"] = json!(0)),
            "max_pending_per_requester: must be 1 to 10000"
        );
        let negative = error(|d| d["max_pending_per_requester"] = json!(-1));
        assert!(
            negative.contains("invalid value: integer `-1`"),
            "{negative}"
        );
        assert!(error(|d| d["extra"] = json!(1)).contains("unknown field `extra`"));
    }
}
