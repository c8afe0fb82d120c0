//! Server-side printing: the `meta.k8s.io/v1` Table kubectl asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::resources::Resource;

/// Whether the client asked for a v1 Table.
pub fn wanted(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let params: Vec<&str> = range.split(';').map(str::trim).collect();
        params.contains(&"as=Table")
            && params.contains(&"g=meta.k8s.io")
            && params.contains(&"v=v1")
    })
}

/// A Table of `items`; `more` is `(next offset, remaining)` when paged.
/// Rows carry `PartialObjectMetadata`, or the whole object with `include_object`.
pub fn build(
    resource: &Resource,
    items: &[Value],
    rv: u64,
    more: Option<(usize, usize)>,
    include_object: bool,
) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let columns: Vec<Value> = columns(resource)
        .iter()
        .map(|(name, kind, priority)| {
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": kind, "format": format, "description": "", "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let object = if include_object {
                item.clone()
            } else {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                       "metadata": item.get("metadata").cloned().unwrap_or_else(|| json!({}))})
            };
            json!({"cells": cells(resource, item, now), "object": object})
        })
        .collect();
    let metadata = crate::api::list_metadata(rv, more);
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
           "columnDefinitions": columns, "rows": rows})
}

/// `(name, type, priority)`; priority 1 columns show with `-o wide`.
fn columns(resource: &Resource) -> &'static [(&'static str, &'static str, u8)] {
    match resource.kind {
        "Pod" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ],
        "Namespace" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        "Secret" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "ConfigMap" => &[
            ("Name", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "Deployment" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
        ],
        // A custom resource's printer columns may print any field, a
        // credential included.
        "DatabaseCredential" => &[
            ("Name", "string", 0),
            ("Host", "string", 0),
            ("User", "string", 0),
            ("Password", "string", 1),
            ("Age", "string", 0),
        ],
        _ => &[("Name", "string", 0), ("Age", "string", 0)],
    }
}

fn cells(resource: &Resource, item: &Value, now: u64) -> Vec<Value> {
    let text = |p: &str| {
        item.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let number = |p: &str| item.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let count = |p: &str| {
        item.pointer(p)
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
    };
    let name = Value::from(text("/metadata/name"));
    let created = parse_rfc3339(&text("/metadata/creationTimestamp"));
    let age = Value::from(created.map_or_else(
        || "<unknown>".to_string(),
        |t| human_age(now.saturating_sub(t)),
    ));
    match resource.kind {
        "Pod" => {
            let statuses = item
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let total = item
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
            let restarts: u64 = statuses.map_or(0, |s| {
                s.iter().filter_map(|c| c["restartCount"].as_u64()).sum()
            });
            vec![
                name,
                format!("{ready}/{total}").into(),
                text("/status/phase").into(),
                restarts.to_string().into(),
                age,
                text("/status/podIP").into(),
                text("/spec/nodeName").into(),
            ]
        }
        "Namespace" => vec![name, text("/status/phase").into(), age],
        "Secret" => vec![name, text("/type").into(), count("/data").into(), age],
        "ConfigMap" => vec![name, (count("/data") + count("/binaryData")).into(), age],
        "Deployment" => vec![
            name,
            format!(
                "{}/{}",
                number("/status/readyReplicas"),
                number("/spec/replicas")
            )
            .into(),
            number("/status/updatedReplicas").into(),
            number("/status/availableReplicas").into(),
            age,
        ],
        "DatabaseCredential" => vec![
            name,
            text("/spec/host").into(),
            text("/spec/user").into(),
            text("/spec/password").into(),
            age,
        ],
        _ => vec![name, age],
    }
}

/// kubectl's short duration: `45s`, `12m`, `5h`, `3d`.
fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Parses an RFC 3339 time such as `2006-01-02T15:04:05Z` to unix seconds
/// (`None` before 1970 or when unreadable).
fn parse_rfc3339(text: &str) -> Option<u64> {
    let time = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    u64::try_from(time.timestamp()).ok()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // a missing key is a failed test
mod tests {
    use super::*;
    use crate::resources::PODS;
    use crate::selector::Selector;
    use crate::store::Store;

    #[test]
    fn kubectl_get_accept_header_wants_a_table() {
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
    }

    #[test]
    fn pod_rows_show_readiness_and_phase_with_metadata_only() {
        let store = Store::demo();
        let pods = store.list(&PODS, Some("dev"), &Selector::default());
        let table = build(&PODS, &pods, 7, None, false);
        let row = &table["rows"][0];
        assert_eq!(row["cells"][0], "web-0");
        assert_eq!(row["cells"][1], "1/1");
        assert_eq!(row["cells"][2], "Running");
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert!(row["object"].get("spec").is_none());
        let full = build(&PODS, &pods, 7, None, true);
        assert_eq!(
            full["rows"][0]["object"]["spec"]["containers"][0]["name"],
            "app"
        );
    }

    #[test]
    fn parses_timestamps_and_formats_ages() {
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01Z"), Some(86_401));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(human_age(90), "90s");
        assert_eq!(human_age(3 * 86_400), "3d");
    }
}
