//! The configuration documents gatehouse's filters read, and how to tell them apart.
//!
//! Every check goes through the parser the filter itself runs, so a file the CLI
//! accepts is a file the filter accepts.

use gatehouse_core::config::ConfigError;
use gatehouse_kubernetes::gate::Gate;
use gatehouse_postgres::FilterConfig;
use gatehouse_postgres::policy::PgPolicy;
use serde_json::{Map, Value};

/// Largest configuration file the CLI reads; the filters' configurations are far smaller.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A kind of configuration document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The Postgres filter's whole plugin configuration ([`FilterConfig`]).
    PostgresFilter,
    /// A Postgres statement policy on its own ([`PgPolicy`]).
    PostgresPolicy,
    /// The Kubernetes filter's configuration ([`Gate`]).
    Kubernetes,
}

/// Keys a Postgres policy rule's `match` may hold and a Kubernetes one may not.
const POSTGRES_MATCH_KEYS: &[&str] = &[
    "databases",
    "roles",
    "kinds",
    "reads",
    "writes",
    "objects",
    "functions",
    "properties",
];

/// Keys a Kubernetes rule's `match` may hold and a Postgres one may not.
const KUBERNETES_MATCH_KEYS: &[&str] = &[
    "verbs",
    "api_groups",
    "resources",
    "namespaces",
    "names",
    "scope",
    "commands",
    "paths",
];

impl Kind {
    /// Every kind, in the order detection tries them.
    pub const ALL: [Kind; 3] = [Kind::PostgresFilter, Kind::PostgresPolicy, Kind::Kubernetes];

    /// Every kind's `--kind` name.
    pub const NAMES: [&'static str; 3] = ["postgres-filter", "postgres-policy", "kubernetes"];

    /// The name used by `--kind`.
    pub fn name(self) -> &'static str {
        let [postgres_filter, postgres_policy, kubernetes] = Kind::NAMES;
        match self {
            Kind::PostgresFilter => postgres_filter,
            Kind::PostgresPolicy => postgres_policy,
            Kind::Kubernetes => kubernetes,
        }
    }

    /// Reads a `--kind` value.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Compiles `json` with the filter's own parser.
    pub fn check(self, json: &[u8]) -> Result<Compiled, ConfigError> {
        match self {
            Kind::PostgresFilter => FilterConfig::from_json(json).map(Compiled::PostgresFilter),
            Kind::PostgresPolicy => PgPolicy::from_json(json).map(Compiled::PostgresPolicy),
            Kind::Kubernetes => {
                Gate::from_json(json).map(|gate| Compiled::Kubernetes(Box::new(gate)))
            }
        }
    }

    /// The kind a document's keys point to, when they point to exactly one.
    fn from_keys(doc: &Map<String, Value>) -> Option<Kind> {
        let has = |key: &str| doc.contains_key(key);
        if has("engine") || has("policy") || has("login") {
            return Some(Kind::PostgresFilter);
        }
        if has("unparseable") {
            return Some(Kind::PostgresPolicy);
        }
        if has("upstream") {
            return Some(Kind::Kubernetes);
        }
        let rules = doc.get("rules").and_then(Value::as_array)?;
        let mut postgres = false;
        let mut kubernetes = false;
        for rule in rules.iter().filter_map(Value::as_object) {
            kubernetes |= rule.contains_key("mask");
            if let Some(matcher) = rule.get("match").and_then(Value::as_object) {
                postgres |= POSTGRES_MATCH_KEYS.iter().any(|k| matcher.contains_key(*k));
                kubernetes |= KUBERNETES_MATCH_KEYS
                    .iter()
                    .any(|k| matcher.contains_key(*k));
            }
        }
        match (postgres, kubernetes) {
            (true, false) => Some(Kind::PostgresPolicy),
            (false, true) => Some(Kind::Kubernetes),
            _ => None,
        }
    }
}

/// A compiled document of one kind.
#[derive(Debug)]
pub enum Compiled {
    PostgresFilter(FilterConfig),
    PostgresPolicy(PgPolicy),
    Kubernetes(Box<Gate>),
}

/// Tells which of `candidates` a document is: by its keys first; when they do not
/// say, the one candidate whose parser accepts it (the first, if several do).
pub fn detect(doc: &Value, json: &[u8], candidates: &[Kind]) -> Result<Kind, String> {
    let names = || {
        candidates
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(object) = doc.as_object() else {
        return Err("the document is not a JSON object".to_owned());
    };
    if let Some(kind) = Kind::from_keys(object) {
        return if candidates.contains(&kind) {
            Ok(kind)
        } else {
            Err(format!(
                "this looks like a {} document, expected one of: {}",
                kind.name(),
                names()
            ))
        };
    }
    candidates
        .iter()
        .copied()
        .find(|kind| kind.check(json).is_ok())
        .ok_or_else(|| {
            format!(
                "cannot tell which kind of document this is; pass --kind ({})",
                names()
            )
        })
}

/// Reads a configuration file, refusing unreasonably large ones.
pub fn read(path: &str) -> Result<Vec<u8>, String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    if metadata.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{path} is larger than {MAX_FILE_BYTES} bytes; not a gatehouse configuration"
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(doc: Value) -> Option<Kind> {
        Kind::from_keys(doc.as_object().unwrap())
    }

    #[test]
    fn top_level_keys_name_the_kind() {
        assert_eq!(keys(json!({"engine": {}})), Some(Kind::PostgresFilter));
        assert_eq!(keys(json!({"unparseable": {}})), Some(Kind::PostgresPolicy));
        assert_eq!(keys(json!({"upstream": {}})), Some(Kind::Kubernetes));
    }

    #[test]
    fn rule_match_keys_name_the_kind_unless_they_disagree() {
        let pg = json!({"rules": [{"match": {"kinds": ["select"]}}]});
        let k8s = json!({"rules": [{"match": {"verbs": ["get"]}}]});
        let both =
            json!({"rules": [{"match": {"verbs": ["get"]}}, {"match": {"kinds": ["drop"]}}]});
        assert_eq!(keys(pg), Some(Kind::PostgresPolicy));
        assert_eq!(keys(k8s), Some(Kind::Kubernetes));
        assert_eq!(keys(both), None);
        assert_eq!(
            keys(json!({"rules": [{"match": {"groups": ["dev"]}}]})),
            None
        );
    }

    #[test]
    fn undecided_documents_go_to_the_first_parser_that_accepts_them() {
        // The Postgres filter's configuration has no `rules`; both policies accept it.
        let doc = json!({"rules": [{"name": "r", "action": "allow"}]});
        let json = doc.to_string();
        assert_eq!(
            detect(&doc, json.as_bytes(), &Kind::ALL),
            Ok(Kind::PostgresPolicy)
        );
        assert_eq!(
            detect(
                &doc,
                json.as_bytes(),
                &[Kind::PostgresFilter, Kind::Kubernetes]
            ),
            Ok(Kind::Kubernetes)
        );
        let nothing_accepts = json!({"rules": 3});
        let error = detect(&nothing_accepts, b"{\"rules\": 3}", &Kind::ALL).unwrap_err();
        assert!(error.contains("--kind"), "{error}");
    }
}
