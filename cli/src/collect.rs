//! Finding more than the first error in a document, without a second parser.
//!
//! The filters' parsers stop at the first problem. To report the others, the
//! offending part of the document is removed and the rest parsed again by the same
//! parser, until it passes. The parts removed are whole rules (`rules[i]`) and the
//! top-level keys of the document and of any nested policy (any object holding
//! `rules`), all of which are optional, so removing one leaves a document that is
//! only wrong where it was wrong before. Paths are reported in the original
//! document's numbering.

use gatehouse_core::config::ConfigError;
use serde_json::Value;
use std::collections::BTreeMap;

/// Most problems reported for one document.
pub const MAX_PROBLEMS: usize = 100;

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Splits `rules[2].match.kinds[0]` into its steps. A bracket that does not hold
/// a number stays part of the key.
fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    if path.is_empty() {
        return out;
    }
    for part in path.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        let mut indices = Vec::new();
        let mut well_formed = true;
        while !rest.is_empty() {
            match rest.split_once(']') {
                Some((number, tail)) if number.parse::<usize>().is_ok() => {
                    indices.extend(number.parse::<usize>().ok().map(Segment::Index));
                    rest = tail.strip_prefix('[').unwrap_or(tail);
                    if !tail.is_empty() && !tail.starts_with('[') {
                        well_formed = false;
                        break;
                    }
                }
                _ => {
                    well_formed = false;
                    break;
                }
            }
        }
        if !well_formed {
            out.push(Segment::Key(part.to_owned()));
            continue;
        }
        if !key.is_empty() {
            out.push(Segment::Key(key.to_owned()));
        }
        out.extend(indices);
    }
    out
}

fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The field a serde "unknown field `x`" message names.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(name, _)| name)
}

/// The longest prefix of `path` that is a removable part of `doc`: an element of a
/// `rules` array, or a key of the root or of an object that holds `rules`.
fn removable_part(doc: &Value, path: &[Segment]) -> Option<usize> {
    let mut node = doc;
    let mut in_rules_array = false;
    let mut best = None;
    for (depth, segment) in path.iter().enumerate() {
        match (segment, node) {
            (Segment::Key(key), Value::Object(map)) => {
                let Some(child) = map.get(key) else { break };
                if depth == 0 || map.contains_key("rules") {
                    best = Some(depth + 1);
                }
                in_rules_array = key == "rules";
                node = child;
            }
            (Segment::Index(i), Value::Array(items)) => {
                let Some(child) = items.get(*i) else { break };
                if in_rules_array {
                    best = Some(depth + 1);
                }
                in_rules_array = false;
                node = child;
            }
            _ => break,
        }
    }
    best
}

/// Removes the value at `path`; returns whether there was one.
fn remove(doc: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = doc;
    for segment in parents {
        let next = match (segment, node) {
            (Segment::Key(key), Value::Object(map)) => map.get_mut(key),
            (Segment::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else { return false };
        node = next;
    }
    match (last, node) {
        (Segment::Key(key), Value::Object(map)) => map.remove(key).is_some(),
        (Segment::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

/// Maps positions in arrays that lost elements back to the original positions.
#[derive(Default)]
struct Renumbering {
    /// Array path (as rendered) -> original index of each remaining element.
    arrays: BTreeMap<String, Vec<usize>>,
}

impl Renumbering {
    /// Notes that element `index` (current numbering) of the array at `array`, which
    /// had `len` elements, was removed.
    fn removed(&mut self, array: &[Segment], index: usize, len: usize) {
        let positions = self
            .arrays
            .entry(render(array))
            .or_insert_with(|| (0..len).collect());
        if index < positions.len() {
            positions.remove(index);
        }
    }

    /// `path` in the original document's numbering.
    fn original(&self, path: &[Segment]) -> Vec<Segment> {
        let mut out: Vec<Segment> = Vec::with_capacity(path.len());
        for (depth, segment) in path.iter().enumerate() {
            let mapped = match segment {
                Segment::Index(i) => path
                    .get(..depth)
                    .and_then(|prefix| self.arrays.get(&render(prefix)))
                    .and_then(|positions| positions.get(*i))
                    .map_or(segment.clone(), |original| Segment::Index(*original)),
                Segment::Key(_) => segment.clone(),
            };
            out.push(mapped);
        }
        out
    }
}

fn array_len(doc: &Value, path: &[Segment]) -> usize {
    let mut node = doc;
    for segment in path {
        let next = match (segment, node) {
            (Segment::Key(key), Value::Object(map)) => map.get(key),
            (Segment::Index(i), Value::Array(items)) => items.get(*i),
            _ => None,
        };
        let Some(next) = next else { return 0 };
        node = next;
    }
    node.as_array().map_or(0, Vec::len)
}

/// Drops serde's " at line L column C": after a removal the position is in the
/// rewritten document, not the file.
pub fn without_position(message: &str) -> &str {
    match message.rsplit_once(" at line ") {
        Some((head, tail))
            if tail.split_once(" column ").is_some_and(|(line, column)| {
                line.parse::<u64>().is_ok() && column.parse::<u64>().is_ok()
            }) =>
        {
            head
        }
        _ => message,
    }
}

/// Every problem `parse` finds in the document `original` (whose value is `doc`),
/// first the one it reports on the whole file. Stops when a problem cannot be
/// isolated, or when one may have been caused by an earlier removal (it names a
/// removed key, or sits above a removed part).
pub fn problems(
    original: &[u8],
    doc: &Value,
    parse: impl Fn(&[u8]) -> Result<(), ConfigError>,
) -> Vec<ConfigError> {
    let mut doc = doc.clone();
    let mut bytes = original.to_vec();
    let mut found: Vec<ConfigError> = Vec::new();
    let mut removed: Vec<Vec<Segment>> = Vec::new();
    let mut renumbering = Renumbering::default();
    while found.len() < MAX_PROBLEMS {
        let Err(error) = parse(&bytes) else { break };
        let mut path = segments(&error.path);
        let message = if removed.is_empty() {
            error.message.clone()
        } else {
            without_position(&error.message).to_owned()
        };
        let reported = ConfigError::new(render(&renumbering.original(&path)), message);
        // An unknown field is reported at its object; the field itself is the part.
        if let Some(field) = unknown_field(&error.message) {
            path.push(Segment::Key(field.to_owned()));
        }
        // serde lists the expected field names after ", expected"; they are no sign
        // of a dependency on a removed part.
        let own_words = error
            .message
            .split_once(", expected ")
            .map_or(error.message.as_str(), |(head, _)| head);
        let original_path = renumbering.original(&path);
        let caused_by_removal = removed.iter().any(|part| {
            part.starts_with(&original_path)
                || part.last().is_some_and(|last| match last {
                    Segment::Key(key) => own_words.contains(key.as_str()),
                    Segment::Index(_) => false,
                })
        });
        if caused_by_removal || found.contains(&reported) {
            break;
        }
        found.push(reported);
        let Some(depth) = removable_part(&doc, &path) else {
            break;
        };
        let part: Vec<Segment> = path.into_iter().take(depth).collect();
        let original_part = renumbering.original(&part);
        let len = part
            .split_last()
            .map_or(0, |(_, array)| array_len(&doc, array));
        if !remove(&mut doc, &part) {
            break;
        }
        if let Some((Segment::Index(index), array)) = part.split_last() {
            renumbering.removed(array, *index, len);
        }
        removed.push(original_part);
        let Ok(rewritten) = serde_json::to_vec(&doc) else {
            break;
        };
        bytes = rewritten;
    }
    found
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_split_into_keys_and_indices_and_render_back() {
        for path in [
            "rules[2].match.kinds[0]",
            "engine",
            "a[1][2].b",
            "claims.x[y]",
            "",
        ] {
            assert_eq!(render(&segments(path)), path);
        }
        assert_eq!(
            segments("rules[2].action"),
            vec![
                Segment::Key("rules".into()),
                Segment::Index(2),
                Segment::Key("action".into())
            ]
        );
    }

    #[test]
    fn whole_rules_and_top_level_keys_are_the_removable_parts() {
        let doc = json!({"policy": {"default": {}, "rules": [{"match": {}}]}, "engine": {"x": 1}});
        let part = |path: &str| {
            removable_part(&doc, &segments(path)).map(|d| render(&segments(path)[..d]))
        };
        assert_eq!(
            part("policy.rules[0].match.kinds"),
            Some("policy.rules[0]".into())
        );
        assert_eq!(part("policy.default.action"), Some("policy.default".into()));
        assert_eq!(part("engine.x"), Some("engine".into()));
        assert_eq!(part(""), None);
    }

    #[test]
    fn every_bad_rule_is_reported_with_its_original_index() {
        let json = br#"{"rules": [
            {"name": "a", "action": "allow"},
            {"name": "b", "action": "allw"},
            {"name": "c", "action": "allow"},
            {"name": "d", "action": "deny", "match": {"kinds": ["selct"]}},
            {"name": "c", "action": "deny"}
        ]}"#;
        let doc: Value = serde_json::from_slice(json).unwrap();
        let parse = |json: &[u8]| gatehouse_postgres::policy::PgPolicy::from_json(json).map(|_| ());
        let paths: Vec<String> = problems(json, &doc, parse)
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                "rules[1].action",
                "rules[3].match.kinds[0]",
                "rules[4].name"
            ]
        );
    }

    #[test]
    fn a_problem_that_may_come_from_a_removal_ends_the_collection() {
        // The second key is only wrong because the first was removed.
        let doc = json!({"identity": 1, "login": {}});
        let parse = |json: &[u8]| {
            let doc: Value = serde_json::from_slice(json).unwrap();
            match (doc.get("identity"), doc.get("login")) {
                (Some(_), _) => Err(ConfigError::new("identity", "must be an object")),
                (None, Some(_)) => Err(ConfigError::new("login", "needs identity")),
                (None, None) => Ok(()),
            }
        };
        let found = problems(doc.to_string().as_bytes(), &doc, parse);
        assert_eq!(found, [ConfigError::new("identity", "must be an object")]);
    }

    #[test]
    fn positions_in_rewritten_documents_are_dropped() {
        assert_eq!(
            without_position("unknown field `x`, expected `a` at line 1 column 8"),
            "unknown field `x`, expected `a`"
        );
        assert_eq!(
            without_position("at line 3 of the policy"),
            "at line 3 of the policy"
        );
    }
}
