//! Configuration errors that name the offending path, e.g.
//! `rules[2].match.verb: unknown verb "lst"`.

use std::fmt;

/// A configuration problem at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Joins two JSON path fragments: `join_path("rules[2]", "match")` is `rules[2].match`.
pub fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (_, true) => prefix.to_string(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_its_path() {
        let e = ConfigError::new("match.verb", "unknown verb \"lst\"").under("rules[2]");
        assert_eq!(e.to_string(), "rules[2].match.verb: unknown verb \"lst\"");
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
