//! Field and label selectors (the equality subset kubectl uses).

use serde_json::Value;

use crate::status::Status;

/// Longest selector accepted (the apiserver has no such limit; this is a test server).
const MAX_SELECTOR_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    Equals(String),
    NotEquals(String),
    Exists,
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    test: Test,
}

/// A parsed `fieldSelector` plus `labelSelector`. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Field requirements; keys are dotted JSON paths such as `metadata.name`.
    fields: Vec<Requirement>,
    labels: Vec<Requirement>,
}

impl Selector {
    /// Parses the two query parameters (either may be absent).
    pub fn parse(field: Option<&str>, label: Option<&str>) -> Result<Selector, Status> {
        Ok(Selector {
            fields: parse_terms(field.unwrap_or(""), false)?,
            labels: parse_terms(label.unwrap_or(""), true)?,
        })
    }

    /// Adds a `metadata.name=<name>` requirement (a watch on one named object).
    pub fn and_name(mut self, name: &str) -> Selector {
        self.fields.push(Requirement {
            key: "metadata.name".into(),
            test: Test::Equals(name.into()),
        });
        self
    }

    /// The name a `metadata.name=X` field requirement pins, if any.
    pub fn name(&self) -> Option<&str> {
        self.fields.iter().find_map(|r| match &r.test {
            Test::Equals(v) if r.key == "metadata.name" => Some(v.as_str()),
            _ => None,
        })
    }

    pub fn matches(&self, object: &Value) -> bool {
        let fields_match = self.fields.iter().all(|r| {
            let value = r
                .key
                .split('.')
                .try_fold(object, |v, part| v.get(part))
                .map(scalar_text);
            r.test.accepts(value.as_deref())
        });
        let labels = object.get("metadata").and_then(|m| m.get("labels"));
        fields_match
            && self.labels.iter().all(|r| {
                let value = labels.and_then(|l| l.get(&r.key)).map(scalar_text);
                r.test.accepts(value.as_deref())
            })
    }
}

impl Test {
    fn accepts(&self, value: Option<&str>) -> bool {
        match self {
            Test::Equals(want) => value == Some(want.as_str()),
            // A field that is absent compares as the empty string, as in the apiserver.
            Test::NotEquals(want) => value != Some(want.as_str()),
            Test::Exists => value.is_some(),
            Test::Absent => value.is_none(),
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn parse_terms(text: &str, labels: bool) -> Result<Vec<Requirement>, Status> {
    let what = if labels { "label" } else { "field" };
    if text.len() > MAX_SELECTOR_LEN {
        return Err(Status::bad_request(format!("{what} selector is too long")));
    }
    if text.contains('(') {
        return Err(Status::bad_request(format!(
            "unable to parse requirement: set-based {what} selectors are not supported: {text:?}"
        )));
    }
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|term| {
            let (key, test) = if let Some((k, v)) = term.split_once("!=") {
                (k, Test::NotEquals(v.trim().to_string()))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, Test::Equals(v.trim().to_string()))
            } else if !labels {
                return Err(Status::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            } else if let Some(k) = term.strip_prefix('!') {
                (k, Test::Absent)
            } else {
                (term, Test::Exists)
            };
            let key = key.trim();
            let bad_value =
                matches!(&test, Test::Equals(v) | Test::NotEquals(v) if v.contains(['=', '!']));
            if key.is_empty() || bad_value {
                return Err(Status::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            }
            Ok(Requirement {
                key: key.to_string(),
                test,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, app: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": app}}, "status": {"phase": "Running"}})
    }

    #[test]
    fn field_selector_pins_a_name() {
        let s = Selector::parse(Some("metadata.name=web-0"), None).unwrap();
        assert_eq!(s.name(), Some("web-0"));
        assert!(s.matches(&pod("web-0", "web")));
        assert!(!s.matches(&pod("web-1", "web")));
    }

    #[test]
    fn label_selectors_support_equality_and_existence() {
        let s = Selector::parse(None, Some("app=web,!tier")).unwrap();
        assert!(s.matches(&pod("a", "web")));
        assert!(!s.matches(&pod("a", "db")));
        let s = Selector::parse(Some("status.phase!=Failed"), Some("app")).unwrap();
        assert!(s.matches(&pod("a", "db")));
    }

    #[test]
    fn unsupported_or_malformed_selectors_are_rejected() {
        assert_eq!(
            Selector::parse(None, Some("app in (a,b)"))
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            Selector::parse(Some("metadata.name"), None)
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            Selector::parse(Some("metadata.name=a=b"), None)
                .unwrap_err()
                .code,
            400
        );
    }
}
