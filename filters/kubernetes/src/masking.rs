//! Masking sensitive values in API server responses: Secret `data` and
//! `stringData` (masked values stay valid base64, so `kubectl describe` and
//! `-o yaml` work), their copy in the last-applied-configuration annotation,
//! and container `env[].value` in pods and pod templates.
//!
//! Works on single objects, `…List`s, `Table`s carrying objects and watch
//! events (`{"type", "object"}`); a watch stream is masked line by line as it
//! arrives ([`WatchLines`]), never buffered whole.

use crate::policy::MaskingConfig;
use crate::request_info::RequestInfo;
use serde_json::Value;

/// The annotation `kubectl apply` stores a full copy of the object in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Resources whose responses can hold masked fields.
const MASKED_RESOURCES: &[&str] = &[
    "secrets",
    "pods",
    "podtemplates",
    "replicationcontrollers",
    "deployments",
    "statefulsets",
    "daemonsets",
    "replicasets",
    "jobs",
    "cronjobs",
];

/// Whether responses to this request must go through [`mask_body`]: reads of
/// resources that can carry masked fields (not their logs or other subresources).
pub fn needs_masking(info: &RequestInfo, settings: &MaskingConfig) -> bool {
    let reads = matches!(info.verb.as_str(), "get" | "list" | "watch");
    let relevant = match info.resource.as_str() {
        "secrets" => settings.secrets,
        other => settings.pod_env && MASKED_RESOURCES.contains(&other),
    };
    info.is_resource_request && reads && info.subresource.is_empty() && relevant
}

/// An `Accept` header without protobuf or CBOR, so the response is JSON the
/// filter can read; `application/json` when nothing else is left.
pub fn json_only_accept(accept: &str) -> String {
    let kept: Vec<&str> = accept
        .split(',')
        .map(str::trim)
        .filter(|media| {
            let lower = media.to_ascii_lowercase();
            !lower.is_empty() && !lower.contains("protobuf") && !lower.contains("cbor")
        })
        .collect();
    if kept.is_empty() {
        "application/json".to_owned()
    } else {
        kept.join(",")
    }
}

/// Why a body could not be masked (it is then refused, never passed on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("the response is not JSON: {0}")]
    NotJson(String),
    #[error("the response is larger than the {limit}-byte masking limit")]
    TooLarge { limit: usize },
}

/// A masked body and the JSON paths that were masked (for the record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedBody {
    pub body: Vec<u8>,
    pub fields: Vec<String>,
}

/// Masks one complete JSON response body (object, list, Table or watch event).
pub fn mask_body(body: &[u8], settings: &MaskingConfig) -> Result<MaskedBody, MaskError> {
    if body.len() > settings.max_body_bytes {
        return Err(MaskError::TooLarge {
            limit: settings.max_body_bytes,
        });
    }
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| MaskError::NotJson(e.to_string()))?;
    let mut fields = Vec::new();
    mask_value(&mut value, settings, "", &mut fields);
    if fields.is_empty() {
        return Ok(MaskedBody {
            body: body.to_vec(),
            fields,
        });
    }
    let body = serde_json::to_vec(&value).map_err(|e| MaskError::NotJson(e.to_string()))?;
    fields.sort();
    fields.dedup();
    Ok(MaskedBody { body, fields })
}

/// Masks whatever `value` is: a watch event, a list, a Table or an object.
fn mask_value(value: &mut Value, settings: &MaskingConfig, at: &str, fields: &mut Vec<String>) {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if kind.is_empty() && value.get("type").is_some() {
        if let Some(object) = value.get_mut("object") {
            mask_value(object, settings, &format!("{at}object."), fields);
        }
        return;
    }
    if kind == "Table" {
        if let Some(rows) = value.get_mut("rows").and_then(Value::as_array_mut) {
            for row in rows {
                if let Some(object) = row.get_mut("object") {
                    mask_value(object, settings, &format!("{at}rows[].object."), fields);
                }
            }
        }
        return;
    }
    if kind.ends_with("List") {
        if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                // List items often omit `kind`; the list's kind names them.
                let item_kind = kind.trim_end_matches("List");
                mask_object(item, item_kind, settings, &format!("{at}items[]."), fields);
            }
        }
        return;
    }
    mask_object(value, &kind, settings, at, fields);
}

fn mask_object(
    object: &mut Value,
    kind: &str,
    settings: &MaskingConfig,
    at: &str,
    fields: &mut Vec<String>,
) {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or(kind)
        .to_owned();
    match kind.as_str() {
        "Secret" if settings.secrets => {
            mask_secret_values(object, settings, at, fields);
            mask_last_applied(object, settings, at, fields);
        }
        "Pod" if settings.pod_env => {
            if let Some(spec) = object.get_mut("spec") {
                mask_pod_spec(spec, settings, &format!("{at}spec."), fields);
            }
            mask_last_applied(object, settings, at, fields);
        }
        "PodTemplate" if settings.pod_env => {
            if let Some(spec) = object.pointer_mut("/template/spec") {
                mask_pod_spec(spec, settings, &format!("{at}template.spec."), fields);
            }
            mask_last_applied(object, settings, at, fields);
        }
        "CronJob" if settings.pod_env => {
            if let Some(spec) = object.pointer_mut("/spec/jobTemplate/spec/template/spec") {
                let path = format!("{at}spec.jobTemplate.spec.template.spec.");
                mask_pod_spec(spec, settings, &path, fields);
            }
            mask_last_applied(object, settings, at, fields);
        }
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController"
            if settings.pod_env =>
        {
            if let Some(spec) = object.pointer_mut("/spec/template/spec") {
                mask_pod_spec(spec, settings, &format!("{at}spec.template.spec."), fields);
            }
            mask_last_applied(object, settings, at, fields);
        }
        _ => {}
    }
}

fn mask_secret_values(
    object: &mut Value,
    settings: &MaskingConfig,
    at: &str,
    fields: &mut Vec<String>,
) {
    let masked_base64 = base64(settings.mask_text.as_bytes());
    for (field, replacement) in [
        ("data", masked_base64.as_str()),
        ("stringData", settings.mask_text.as_str()),
    ] {
        if let Some(values) = object.get_mut(field).and_then(Value::as_object_mut) {
            for value in values.values_mut() {
                *value = Value::String(replacement.to_owned());
            }
            if !values.is_empty() {
                fields.push(format!("{at}{field}"));
            }
        }
    }
}

fn mask_pod_spec(spec: &mut Value, settings: &MaskingConfig, at: &str, fields: &mut Vec<String>) {
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers {
            let Some(env) = container.get_mut("env").and_then(Value::as_array_mut) else {
                continue;
            };
            for var in env {
                if let Some(value) = var.get_mut("value")
                    && value.is_string()
                {
                    *value = Value::String(settings.mask_text.clone());
                    fields.push(format!("{at}{list}[].env[].value"));
                }
            }
        }
    }
}

/// The annotation holds the applied object as JSON text: mask it the same way.
fn mask_last_applied(
    object: &mut Value,
    settings: &MaskingConfig,
    at: &str,
    fields: &mut Vec<String>,
) {
    let Some(annotation) = object.pointer_mut("/metadata/annotations").and_then(|a| {
        a.as_object_mut()
            .and_then(|annotations| annotations.get_mut(LAST_APPLIED))
    }) else {
        return;
    };
    let Some(text) = annotation.as_str() else {
        return;
    };
    let mut inner_fields = Vec::new();
    let replacement = match serde_json::from_str::<Value>(text) {
        Ok(mut applied) => {
            mask_value(&mut applied, settings, "", &mut inner_fields);
            if inner_fields.is_empty() {
                return;
            }
            serde_json::to_string(&applied).unwrap_or_else(|_| settings.mask_text.clone())
        }
        // Unreadable: it may hold anything, so it is replaced whole.
        Err(_) => settings.mask_text.clone(),
    };
    *annotation = Value::String(replacement);
    fields.push(format!("{at}metadata.annotations.{LAST_APPLIED}"));
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let symbol = |index: u32| {
        char::from(
            ALPHABET
                .get(usize::try_from(index & 63).unwrap_or_default())
                .copied()
                .unwrap_or(b'A'),
        )
    };
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or_default());
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(symbol(n >> 18));
        out.push(symbol(n >> 12));
        out.push(if chunk.len() > 1 { symbol(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { symbol(n) } else { '=' });
    }
    out
}

/// A watch stream (`application/json;stream=watch`), masked one complete line
/// at a time; a partial line waits for the rest, up to the body limit.
#[derive(Debug, Default)]
pub struct WatchLines {
    pending: Vec<u8>,
    /// Fields masked so far.
    pub fields: Vec<String>,
}

impl WatchLines {
    /// Masks the complete lines of `chunk` (after what is pending) and returns
    /// them; keeps the trailing partial line. At the end of the stream pass
    /// `end = true` to flush it.
    pub fn push(
        &mut self,
        chunk: &[u8],
        end: bool,
        settings: &MaskingConfig,
    ) -> Result<Vec<u8>, MaskError> {
        self.pending.extend_from_slice(chunk);
        let complete = if end {
            self.pending.len()
        } else {
            self.pending
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |at| at + 1)
        };
        if self.pending.len().saturating_sub(complete) > settings.max_body_bytes {
            return Err(MaskError::TooLarge {
                limit: settings.max_body_bytes,
            });
        }
        let rest = self.pending.split_off(complete);
        let lines = std::mem::replace(&mut self.pending, rest);
        let mut out = Vec::with_capacity(lines.len());
        for line in lines.split_inclusive(|&b| b == b'\n') {
            let (content, newline) = match line.split_last() {
                Some((b'\n', content)) => (content, true),
                _ => (line, false),
            };
            if content.iter().all(u8::is_ascii_whitespace) {
                out.extend_from_slice(line);
                continue;
            }
            let masked = mask_body(content, settings)?;
            self.fields.extend(masked.fields);
            out.extend_from_slice(&masked.body);
            if newline {
                out.push(b'\n');
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::json;

    const CLEAR: &str = "pr0d-S3cret!";
    const CLEAR_BASE64: &str = "cHIwZC1TM2NyZXQh";

    fn settings() -> MaskingConfig {
        MaskingConfig::default()
    }

    fn secret() -> Value {
        let applied = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db-credentials", "namespace": "prod"},
            "stringData": {"password": CLEAR}});
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db-credentials", "namespace": "prod",
                "annotations": {LAST_APPLIED: applied.to_string()}},
            "type": "Opaque",
            "data": {"password": CLEAR_BASE64, "username": "YXBw"}})
    }

    fn masked(value: &Value) -> (Value, Vec<String>) {
        let out = mask_body(value.to_string().as_bytes(), &settings()).unwrap();
        let text = String::from_utf8(out.body.clone()).unwrap();
        assert!(
            !text.contains(CLEAR) && !text.contains(CLEAR_BASE64),
            "{text}"
        );
        (serde_json::from_slice(&out.body).unwrap(), out.fields)
    }

    #[test]
    fn base64_matches_the_standard_encoding() {
        assert_eq!(base64(CLEAR.as_bytes()), CLEAR_BASE64);
        assert_eq!(base64(b"********"), "KioqKioqKio=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn secret_values_stay_base64_and_the_applied_copy_is_masked() {
        let (out, fields) = masked(&secret());
        assert_eq!(out["data"]["password"], "KioqKioqKio=");
        assert_eq!(out["data"]["username"], "KioqKioqKio=");
        let applied: Value = serde_json::from_str(
            out["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(applied["stringData"]["password"], "********");
        assert_eq!(
            fields,
            vec![
                "data".to_owned(),
                format!("metadata.annotations.{LAST_APPLIED}")
            ]
        );
    }

    #[test]
    fn lists_tables_and_watch_events_are_masked() {
        let mut item = secret();
        item.as_object_mut().unwrap().remove("kind");
        let list = json!({"kind": "SecretList", "apiVersion": "v1", "items": [item]});
        let (out, _) = masked(&list);
        assert_eq!(out["items"][0]["data"]["password"], "KioqKioqKio=");

        let table = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "rows": [{"cells": ["db-credentials"], "object": secret()}]});
        let (out, fields) = masked(&table);
        assert_eq!(out["rows"][0]["object"]["data"]["password"], "KioqKioqKio=");
        assert!(fields.contains(&"rows[].object.data".to_owned()));

        let event = json!({"type": "ADDED", "object": secret()});
        let (out, _) = masked(&event);
        assert_eq!(out["object"]["data"]["password"], "KioqKioqKio=");
    }

    #[test]
    fn pod_and_template_env_values_are_masked() {
        let pod = json!({"kind": "Pod", "spec": {
            "containers": [{"name": "app", "env": [{"name": "DB_PASSWORD", "value": CLEAR},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}],
            "initContainers": [{"name": "init", "env": [{"name": "X", "value": CLEAR}]}]}});
        let (out, _) = masked(&pod);
        assert_eq!(out["spec"]["containers"][0]["env"][0]["value"], "********");
        assert!(out["spec"]["containers"][0]["env"][1]["valueFrom"].is_object());
        let deployment = json!({"kind": "Deployment", "spec": {"template": {"spec": {
            "containers": [{"name": "app", "env": [{"name": "P", "value": CLEAR}]}]}}}});
        masked(&deployment);
    }

    #[test]
    fn bodies_without_masked_fields_pass_unchanged() {
        let body = br#"{"kind":"ConfigMap","data":{"a":"b"}}"#;
        let out = mask_body(body, &settings()).unwrap();
        assert_eq!(out.body, body.to_vec());
        assert!(out.fields.is_empty());
    }

    #[test]
    fn oversize_and_non_json_bodies_are_errors() {
        let small = MaskingConfig {
            max_body_bytes: 10,
            ..MaskingConfig::default()
        };
        assert_eq!(
            mask_body(secret().to_string().as_bytes(), &small),
            Err(MaskError::TooLarge { limit: 10 })
        );
        assert!(matches!(
            mask_body(b"\x0a\x02k8s", &settings()),
            Err(MaskError::NotJson(_))
        ));
    }

    #[test]
    fn watch_streams_are_masked_line_by_line_across_chunk_boundaries() {
        let line = |t: &str| format!("{}\n", json!({"type": t, "object": secret()}));
        let stream = format!("{}{}", line("ADDED"), line("MODIFIED"));
        let bytes = stream.as_bytes();
        let mut watch = WatchLines::default();
        let mut out = Vec::new();
        for chunk in bytes.chunks(7) {
            out.extend(watch.push(chunk, false, &settings()).unwrap());
        }
        out.extend(watch.push(b"", true, &settings()).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains(CLEAR_BASE64) && !text.contains(CLEAR));
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["type"], "MODIFIED");
    }

    #[test]
    fn accept_headers_lose_protobuf_and_cbor() {
        assert_eq!(
            json_only_accept("application/vnd.kubernetes.protobuf,application/json"),
            "application/json"
        );
        assert_eq!(
            json_only_accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        );
        assert_eq!(json_only_accept("application/cbor"), "application/json");
    }

    #[test]
    fn only_reads_of_masked_resources_are_masked() {
        let info = |method: &str, path: &str| {
            crate::request_info::decode_request(method, path)
                .unwrap()
                .info
        };
        let s = settings();
        assert!(needs_masking(
            &info("GET", "/api/v1/namespaces/prod/secrets/x"),
            &s
        ));
        assert!(needs_masking(&info("GET", "/api/v1/pods"), &s));
        assert!(!needs_masking(
            &info("GET", "/api/v1/namespaces/prod/pods/x/log"),
            &s
        ));
        assert!(!needs_masking(
            &info("GET", "/api/v1/namespaces/prod/configmaps"),
            &s
        ));
        assert!(!needs_masking(&info("GET", "/api"), &s));
    }
}
