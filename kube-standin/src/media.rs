//! The media an object answer is written in, from the client's `Accept`:
//! JSON, YAML, or protobuf for the kinds [`crate::protobuf`] can encode.
//!
//! The apiserver answers in the first acceptable type the client lists. The
//! stand-in does the same for JSON and YAML; protobuf it serves only to a
//! client that accepts nothing else, since its schemas cover a subset of each
//! kind's fields and kubectl, which lists JSON after protobuf, must see every
//! field.

use serde_json::Value;

use crate::protobuf;
use crate::status::Status;

/// `application/yaml`.
pub const YAML: &str = "application/yaml";

/// How one answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    Yaml,
    Protobuf,
}

impl Media {
    /// The media for `accept` (`None`: not acceptable, a 406).
    pub fn negotiate(accept: &str) -> Option<Media> {
        let entries: Vec<String> = accept
            .split(',')
            .map(|entry| {
                entry
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|media| !media.is_empty())
            .collect();
        if entries.is_empty() {
            return Some(Media::Json);
        }
        let only_protobuf = entries.iter().all(|m| m == protobuf::MEDIA_TYPE);
        if only_protobuf {
            return Some(Media::Protobuf);
        }
        entries.iter().find_map(|media| match media.as_str() {
            "application/json" | "*/*" | "application/*" => Some(Media::Json),
            YAML => Some(Media::Yaml),
            _ => None,
        })
    }

    /// `object` written in this media, with its content type; protobuf falls
    /// back to a 406 for kinds it cannot encode.
    pub fn write(self, object: &Value) -> Result<(&'static str, Vec<u8>), Status> {
        match self {
            Media::Json => Ok(("application/json", object.to_string().into_bytes())),
            Media::Yaml => Ok((YAML, to_yaml(object).into_bytes())),
            Media::Protobuf => protobuf::encode(object)
                .map(|bytes| (protobuf::MEDIA_TYPE, bytes))
                .ok_or_else(Status::not_acceptable),
        }
    }
}

/// YAML in block style, every string double-quoted with JSON's escapes
/// (which YAML's double-quoted scalars share).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                out.push_str(&pad);
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_child(item, indent, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                write_child(item, indent, out);
            }
        }
        Value::Object(_) => out.push_str("{}\n"),
        Value::Array(_) => out.push_str("[]\n"),
        scalar => {
            out.push_str(&scalar.to_string());
            out.push('\n');
        }
    }
}

/// A member's or element's value: nested collections on the next lines.
fn write_child(item: &Value, indent: usize, out: &mut String) {
    match item {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_yaml(item, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_yaml(item, indent + 2, out);
        }
        _ => {
            out.push(' ');
            write_yaml(item, 0, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn media_follow_the_first_acceptable_type() {
        for (accept, media) in [
            ("", Some(Media::Json)),
            ("application/json", Some(Media::Json)),
            ("application/yaml", Some(Media::Yaml)),
            ("application/yaml, application/json", Some(Media::Yaml)),
            ("text/html, */*", Some(Media::Json)),
            ("application/vnd.kubernetes.protobuf", Some(Media::Protobuf)),
            (
                "application/vnd.kubernetes.protobuf, application/json",
                Some(Media::Json),
            ),
            ("text/html", None),
        ] {
            assert_eq!(Media::negotiate(accept), media, "{accept}");
        }
    }

    #[test]
    fn yaml_is_block_style_with_quoted_strings() {
        let value =
            json!({"kind": "Secret", "data": {"p": "a\"b"}, "list": [1, {"x": []}], "e": {}});
        assert_eq!(
            to_yaml(&value),
            "\"data\":\n  \"p\": \"a\\\"b\"\n\"e\": {}\n\"kind\": \"Secret\"\n\"list\":\n  - 1\n  -\n    \"x\": []\n"
        );
    }
}
