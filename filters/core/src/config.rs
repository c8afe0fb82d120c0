//! Configuration errors that name the offending path, e.g.
//! `rules[2].match.verb: unknown verb "lst"`.

/// A configuration problem at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{message}", .path, if .path.is_empty() { "" } else { ": " })]
pub struct ConfigError {
    /// Dotted JSON path to the offending value (`""` for the document root).
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Re-roots an error found inside a nested value under `prefix`.
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = join_path(prefix, &self.path);
        self
    }

    /// Parses `json` into `T`, turning serde's error into a path-carrying one.
    pub fn parse_json<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, ConfigError> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let value = T::deserialize(&mut de).map_err(|e| ConfigError::new("", e.to_string()))?;
        de.end().map_err(|e| ConfigError::new("", e.to_string()))?;
        Ok(value)
    }
}

/// `sha256:<hex>` of a configuration document as the filter received it: records
/// carry it so an auditor can tell which policy, masking and login rules applied.
pub fn config_hash(document: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let digest = sha2::Sha256::digest(document);
    let mut hash = String::with_capacity(7 + 64);
    hash.push_str("sha256:");
    for byte in digest {
        let _ = write!(hash, "{byte:02x}");
    }
    hash
}

/// Joins two JSON path fragments: `join_path("rules[2]", "match")` is `rules[2].match`.
pub fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (_, true) => prefix.to_string(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_its_path() {
        let e = ConfigError::new("match.verb", "unknown verb \"lst\"").under("rules[2]");
        assert_eq!(e.to_string(), "rules[2].match.verb: unknown verb \"lst\"");
    }

    #[test]
    fn config_hash_is_the_sha256_of_the_document() {
        // The SHA-256 of the empty document, as `sha256sum` prints it.
        assert_eq!(
            config_hash(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(config_hash(b"{}"), config_hash(b"{ }"));
    }

    #[test]
    fn joins_index_without_dot() {
        assert_eq!(join_path("rules", "[0].action"), "rules[0].action");
        assert_eq!(join_path("", "x"), "x");
        assert_eq!(join_path("x", ""), "x");
    }

    #[test]
    fn trailing_garbage_is_an_error() {
        let r: Result<serde_json::Value, _> = ConfigError::parse_json(b"{} {}");
        assert!(r.is_err());
    }
}
