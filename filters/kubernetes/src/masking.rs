//! Masking sensitive values in API server responses: Secret `data` and
//! `stringData` (masked values stay valid base64, so `kubectl describe` and
//! `-o yaml` work), their copy in the last-applied-configuration annotation,
//! and container `env[].value` in pods and pod templates; and the shared
//! detectors over configured JSON paths of any resource ([`FieldMasking`]).
//!
//! Works on single objects, `…List`s, `Table`s carrying objects and watch
//! events (`{"type", "object"}`); a watch stream is masked line by line as it
//! arrives ([`WatchLines`]), never buffered whole.
//!
//! The built-in rules run in one pass over the body's bytes (`stream`), which
//! copies what they leave alone verbatim; configured `fields` rules, and
//! bodies that pass cannot follow (escaped member names), are parsed into a
//! tree and serialized again. Both refuse what is not JSON.

use crate::policy::MaskingConfig;
use crate::request_info::RequestInfo;
use serde_json::Value;

mod fields;
mod scan;
mod stream;
use fields::SelectedFields;
pub use fields::{
    FieldMasking, FieldPath, MAX_FIELD_RULES, MAX_PATH_BYTES, MAX_PATH_SEGMENTS, MAX_PATHS_PER_RULE,
};

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
    } || settings.fields.covers(&info.resource);
    info.is_resource_request && reads && info.subresource.is_empty() && relevant
}

/// How the response to one request is masked: the settings and the resource
/// the request read (which selects the `fields` rules).
#[derive(Debug, Clone)]
pub struct BodyMasker {
    settings: MaskingConfig,
    resource: String,
}

impl BodyMasker {
    /// The masker for a request whose response must be masked, or `None` when
    /// [`needs_masking`] says it need not be.
    pub fn for_request(info: &RequestInfo, settings: &MaskingConfig) -> Option<BodyMasker> {
        needs_masking(info, settings).then(|| BodyMasker::new(settings, &info.resource))
    }

    /// Masks responses about `resource` (e.g. `configmaps`) with `settings`.
    pub fn new(settings: &MaskingConfig, resource: &str) -> BodyMasker {
        BodyMasker {
            settings: settings.clone(),
            resource: resource.to_owned(),
        }
    }

    /// Largest body (or watch line) that is masked; larger ones are errors.
    pub fn max_body_bytes(&self) -> usize {
        self.settings.max_body_bytes
    }

    /// Masks one complete body; see [`mask_body`].
    pub fn mask(&self, body: &[u8]) -> Result<MaskedBody, MaskError> {
        mask_body(body, &self.settings, &self.resource)
    }
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

/// A masked body and the JSON paths that were masked (for the record). With
/// no fields masked, `body` is the input byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedBody {
    pub body: Vec<u8>,
    pub fields: Vec<String>,
}

/// What one response is masked with.
struct Masking<'a> {
    settings: &'a MaskingConfig,
    /// The `fields` rules for the requested resource, if any.
    fields: Option<SelectedFields<'a>>,
    /// The kind the requested resource holds, for objects that do not say
    /// theirs (Table rows of `PartialObjectMetadata`).
    resource_kind: Option<&'static str>,
}

/// Whether a member name is one a built-in rule masks under (Secret `data`
/// and `stringData`, container `env`, the last-applied annotation).
fn is_rule_key(name: &[u8], settings: &MaskingConfig) -> bool {
    match name {
        b"data" | b"stringData" => settings.secrets,
        b"env" => settings.pod_env,
        _ => name == LAST_APPLIED.as_bytes(),
    }
}

/// The kind of object a resource holds, for the kinds masked by built-in
/// rules: a Table row of metadata only still carries the object's
/// last-applied annotation, which must be masked as the object would be.
fn kind_of_resource(resource: &str) -> Option<&'static str> {
    Some(match resource {
        "secrets" => "Secret",
        "pods" => "Pod",
        "podtemplates" => "PodTemplate",
        "cronjobs" => "CronJob",
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "daemonsets" => "DaemonSet",
        "replicasets" => "ReplicaSet",
        "jobs" => "Job",
        "replicationcontrollers" => "ReplicationController",
        _ => return None,
    })
}

/// Masks one complete JSON response body (object, list, Table or watch event)
/// of a read of `resource` (which selects the `fields` rules).
pub fn mask_body(
    body: &[u8],
    settings: &MaskingConfig,
    resource: &str,
) -> Result<MaskedBody, MaskError> {
    if body.len() > settings.max_body_bytes {
        return Err(MaskError::TooLarge {
            limit: settings.max_body_bytes,
        });
    }
    let masking = Masking {
        settings,
        fields: settings.fields.for_resource(resource),
        resource_kind: kind_of_resource(resource),
    };
    if masking.fields.is_some() {
        return mask_tree(body, &masking);
    }
    // Building a tree costs about ten times more than reading the body once,
    // and most bodies (Tables of metadata, lists of pods without `env`) hold
    // no member a rule masks under: one read tells, and refuses what is not
    // JSON (what cannot be read cannot be vouched for).
    let may_apply = scan::scan(body, |name| is_rule_key(name, settings))
        .map_err(|e| MaskError::NotJson(e.to_string()))?;
    if !may_apply {
        return Ok(MaskedBody {
            body: body.to_vec(),
            fields: Vec::new(),
        });
    }
    match mask_streamed(body, &masking) {
        Some(masked) => Ok(masked),
        None => mask_tree(body, &masking),
    }
}

/// Masks `body` (known to be JSON) with the built-in rules in one pass over
/// its bytes ([`stream`]); `None` when the pass cannot follow it (member names
/// or kinds written with escapes, text that is not UTF-8), for the tree path
/// to take.
fn mask_streamed(body: &[u8], masking: &Masking<'_>) -> Option<MaskedBody> {
    std::str::from_utf8(body).ok()?;
    let streamed = stream::StreamMasker::run(body, masking).ok()?;
    let mut fields = streamed.fields;
    fields.sort();
    fields.dedup();
    let body = match streamed.body {
        Some(masked) if !fields.is_empty() => masked,
        _ => body.to_vec(),
    };
    Some(MaskedBody { body, fields })
}

/// Masks `body` by parsing it into a tree and serializing it again.
fn mask_tree(body: &[u8], masking: &Masking<'_>) -> Result<MaskedBody, MaskError> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| MaskError::NotJson(e.to_string()))?;
    let mut fields = Vec::new();
    mask_value(&mut value, masking, "", &mut fields);
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
fn mask_value(value: &mut Value, masking: &Masking<'_>, at: &str, fields: &mut Vec<String>) {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if kind.is_empty() && value.get("type").is_some() {
        if let Some(object) = value.get_mut("object") {
            mask_value(object, masking, &format!("{at}object."), fields);
        }
        return;
    }
    if kind == "Table" {
        if let Some(rows) = value.get_mut("rows").and_then(Value::as_array_mut) {
            for row in rows {
                if let Some(object) = row.get_mut("object") {
                    mask_value(object, masking, &format!("{at}rows[].object."), fields);
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
                mask_object(item, item_kind, masking, &format!("{at}items[]."), fields);
            }
        }
        return;
    }
    mask_object(value, &kind, masking, at, fields);
}

/// Masks one object: the built-in fields of its kind, then the `fields` paths.
fn mask_object(
    object: &mut Value,
    kind: &str,
    masking: &Masking<'_>,
    at: &str,
    fields: &mut Vec<String>,
) {
    let settings = masking.settings;
    let kind = match object.get("kind").and_then(Value::as_str) {
        Some("PartialObjectMetadata") => masking.resource_kind.unwrap_or_default(),
        Some(kind) => kind,
        None => kind,
    }
    .to_owned();
    let pod_spec = stream::pod_spec_path(&kind);
    let builtin = if kind == "Secret" {
        if settings.secrets {
            mask_secret_values(object, settings, at, fields);
        }
        settings.secrets
    } else if let Some(spec_path) = pod_spec.filter(|_| settings.pod_env) {
        let pointer = format!("/{}", spec_path.replace('.', "/"));
        if let Some(spec) = object.pointer_mut(&pointer) {
            mask_pod_spec(spec, settings, &format!("{at}{spec_path}."), fields);
        }
        true
    } else {
        false
    };
    // The applied copy is masked as the object is, before the `fields` paths
    // (which may cover annotations) see its text.
    if builtin || masking.fields.is_some() {
        mask_last_applied(object, masking, at, fields);
    }
    if let Some(selected) = &masking.fields {
        for path in selected.mask(object) {
            fields.push(format!("{at}{path}"));
        }
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
    masking: &Masking<'_>,
    at: &str,
    fields: &mut Vec<String>,
) {
    let Some(annotation) = object.pointer_mut("/metadata/annotations").and_then(|a| {
        a.as_object_mut()
            .and_then(|annotations| annotations.get_mut(LAST_APPLIED))
    }) else {
        return;
    };
    let Some(replacement) = annotation
        .as_str()
        .and_then(|text| masked_last_applied(text, masking))
    else {
        return;
    };
    *annotation = Value::String(replacement);
    fields.push(format!("{at}metadata.annotations.{LAST_APPLIED}"));
}

/// The masked text of a last-applied annotation, or `None` when nothing in
/// it is masked.
fn masked_last_applied(text: &str, masking: &Masking<'_>) -> Option<String> {
    let mut inner_fields = Vec::new();
    match serde_json::from_str::<Value>(text) {
        Ok(mut applied) => {
            mask_value(&mut applied, masking, "", &mut inner_fields);
            if inner_fields.is_empty() {
                return None;
            }
            Some(
                serde_json::to_string(&applied)
                    .unwrap_or_else(|_| masking.settings.mask_text.clone()),
            )
        }
        // Unreadable: it may hold anything, so it is replaced whole.
        Err(_) => Some(masking.settings.mask_text.clone()),
    }
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
    /// Fields masked so far, each once, in the order first seen.
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
        masker: &BodyMasker,
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
        let limit = masker.max_body_bytes();
        if self.pending.len().saturating_sub(complete) > limit {
            return Err(MaskError::TooLarge { limit });
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
            let masked = masker.mask(content)?;
            // Each field once, however long the stream runs.
            for field in masked.fields {
                if !self.fields.contains(&field) {
                    self.fields.push(field);
                }
            }
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
        let resource = match value["kind"].as_str() {
            Some("Pod" | "PodList") => "pods",
            Some("Deployment") => "deployments",
            _ => "secrets",
        };
        let out = mask_body(value.to_string().as_bytes(), &settings(), resource).unwrap();
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
        let out = mask_body(body, &settings(), "configmaps").unwrap();
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
            mask_body(secret().to_string().as_bytes(), &small, "secrets"),
            Err(MaskError::TooLarge { limit: 10 })
        );
        assert!(matches!(
            mask_body(b"\x0a\x02k8s", &settings(), "secrets"),
            Err(MaskError::NotJson(_))
        ));
    }

    #[test]
    fn watch_streams_are_masked_line_by_line_across_chunk_boundaries() {
        let line = |t: &str| format!("{}\n", json!({"type": t, "object": secret()}));
        let stream = format!("{}{}", line("ADDED"), line("MODIFIED"));
        let bytes = stream.as_bytes();
        let masker = BodyMasker::new(&settings(), "secrets");
        let mut watch = WatchLines::default();
        let mut out = Vec::new();
        for chunk in bytes.chunks(7) {
            out.extend(watch.push(chunk, false, &masker).unwrap());
        }
        out.extend(watch.push(b"", true, &masker).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains(CLEAR_BASE64) && !text.contains(CLEAR));
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["type"], "MODIFIED");
        assert_eq!(
            watch.fields,
            [
                "object.data".to_owned(),
                format!("object.metadata.annotations.{LAST_APPLIED}")
            ],
            "each masked field is noted once however many events carry it"
        );
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

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    const AWS_KEY: &str = "AKIAQ3EGRUN7ZK4EXMPL";

    /// ConfigMap data and every object's annotations under the detectors.
    fn field_settings() -> MaskingConfig {
        MaskingConfig::from_json(
            br#"{"fields": [
                {"resources": ["configmaps"], "paths": ["data.*"]},
                {"resources": ["*"], "paths": ["metadata.annotations.*"]},
                {"resources": ["pods"], "paths": ["spec.containers[].args[]"]}
            ]}"#,
        )
        .unwrap()
    }

    fn config_map() -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app", "namespace": "prod",
                "annotations": {"ci.example.com/deploy-key": format!("key {AWS_KEY}")}},
            "data": {"note": format!("Bearer {JWT}"), "contact": "alice@example.com",
                "DB_PASSWORD": "Tr0ub4dor&3", "log_level": "debug"}})
    }

    fn mask_with(settings: &MaskingConfig, resource: &str, value: &Value) -> (Value, Vec<String>) {
        let out = mask_body(value.to_string().as_bytes(), settings, resource).unwrap();
        (serde_json::from_slice(&out.body).unwrap(), out.fields)
    }

    #[test]
    fn detectors_mask_what_they_find_at_configured_paths() {
        let (out, fields) = mask_with(&field_settings(), "configmaps", &config_map());
        assert_eq!(out["data"]["note"], "Bearer ****");
        assert_eq!(out["data"]["contact"], "****");
        assert_eq!(out["data"]["DB_PASSWORD"], "****", "a secret-named key");
        assert_eq!(out["data"]["log_level"], "debug");
        assert_eq!(
            out["metadata"]["annotations"]["ci.example.com/deploy-key"],
            "key ****"
        );
        assert_eq!(out["metadata"]["name"], "app");
        assert_eq!(fields, ["data.*", "metadata.annotations.*"]);
    }

    #[test]
    fn field_rules_apply_only_to_reads_of_their_resources() {
        let with_fields = field_settings();
        let (out, fields) = mask_with(&with_fields, "services", &config_map());
        assert_eq!(out["data"]["contact"], "alice@example.com");
        assert_eq!(fields, ["metadata.annotations.*"]);
        let info = |path: &str| {
            crate::request_info::decode_request("GET", path)
                .unwrap()
                .info
        };
        assert!(needs_masking(
            &info("/api/v1/namespaces/prod/configmaps"),
            &with_fields
        ));
        assert!(
            needs_masking(&info("/apis/apps/v1/deployments"), &with_fields),
            "`*` covers every resource"
        );
        assert!(!needs_masking(
            &info("/api/v1/namespaces/prod/pods/web-0/log"),
            &with_fields
        ));
        assert!(
            !needs_masking(&info("/api/v1/namespaces/prod/configmaps"), &settings())
                && BodyMasker::for_request(
                    &info("/api/v1/namespaces/prod/configmaps"),
                    &settings()
                )
                .is_none(),
            "without field rules ConfigMaps pass unbuffered"
        );
    }

    #[test]
    fn array_paths_reach_every_element_next_to_the_built_in_env_masking() {
        let pod = json!({"kind": "Pod", "metadata": {"name": "web-0"}, "spec": {"containers": [
            {"name": "app", "args": ["--token", JWT, "--verbose"],
             "env": [{"name": "A", "value": CLEAR}]},
            {"name": "sidecar", "args": ["--mail=bob@example.org"]}]}});
        let (out, fields) = mask_with(&field_settings(), "pods", &pod);
        let app = &out["spec"]["containers"][0];
        assert_eq!(app["args"], json!(["--token", "****", "--verbose"]));
        assert_eq!(app["env"][0]["value"], "********");
        assert_eq!(out["spec"]["containers"][1]["args"][0], "--mail=****");
        assert_eq!(
            fields,
            ["spec.containers[].args[]", "spec.containers[].env[].value"]
        );
    }

    #[test]
    fn the_applied_copy_is_masked_by_the_field_rules_and_stays_json() {
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app"}, "data": {"contact": "alice@example.com"}});
        let object = json!({"kind": "ConfigMap", "metadata": {"name": "app",
            "annotations": {LAST_APPLIED: applied.to_string()}},
            "data": {"contact": "alice@example.com"}});
        let (out, fields) = mask_with(&field_settings(), "configmaps", &object);
        let copy: Value = serde_json::from_str(
            out["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(copy["data"]["contact"], "****");
        assert!(fields.contains(&format!("metadata.annotations.{LAST_APPLIED}")));
    }

    #[test]
    fn detector_styles_come_from_the_shared_configuration() {
        let settings = MaskingConfig::from_json(
            br#"{"fields": [{"resources": ["configmaps"], "paths": ["data"]}],
                 "detectors": {"detectors": ["email", "payment_card"],
                               "styles": {"email": "partial", "payment_card": "null"}}}"#,
        )
        .unwrap();
        let object = json!({"kind": "ConfigMap", "data": {"contact": "alice@example.com",
            "card": 4111111111111111_u64, "token": JWT}});
        let (out, _) = mask_with(&settings, "configmaps", &object);
        assert_eq!(out["data"]["contact"], "a***@example.com");
        assert_eq!(out["data"]["card"], Value::Null, "numbers are scanned too");
        assert_eq!(out["data"]["token"], JWT, "only the listed detectors run");
    }

    #[test]
    fn paths_are_parsed_or_refused_with_a_reason() {
        for good in [
            "data",
            "data.*",
            "spec.containers[].env[].value",
            "*.*",
            "items[][]",
        ] {
            assert!(FieldPath::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "data..x",
            ".data",
            "data.",
            "data[0]",
            "[]",
            "a]b",
            &"a.".repeat(40),
        ] {
            assert!(FieldPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Masks `input` (one form of response) and compares the result with the
    /// golden file `testdata/masking/<name>.json`: the masked body (a watch
    /// stream as its list of lines) and the masked fields.
    fn golden(name: &str, resource: &str, input: &str) {
        let settings = field_settings();
        let (body, fields) = if input.contains('\n') {
            let mut watch = WatchLines::default();
            let masker = BodyMasker::new(&settings, resource);
            let mut out = Vec::new();
            for chunk in input.as_bytes().chunks(64) {
                out.extend(watch.push(chunk, false, &masker).unwrap());
            }
            out.extend(watch.push(b"", true, &masker).unwrap());
            let lines: Vec<Value> = String::from_utf8(out)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            let mut fields = watch.fields;
            fields.sort();
            fields.dedup();
            (Value::Array(lines), fields)
        } else {
            let out = mask_body(input.as_bytes(), &settings, resource).unwrap();
            (serde_json::from_slice(&out.body).unwrap(), out.fields)
        };
        let actual =
            serde_json::to_string_pretty(&json!({"fields": fields, "body": body})).unwrap();
        let path = format!(
            "{}/testdata/masking/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        if std::env::var_os("GATEHOUSE_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, format!("{actual}\n")).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            actual,
            expected.trim_end(),
            "{path} (set GATEHOUSE_UPDATE_GOLDEN=1 to rewrite)"
        );
        for clear in [CLEAR, CLEAR_BASE64, JWT, AWS_KEY, "alice@example.com"] {
            assert!(!actual.contains(clear), "{name} shows {clear}");
        }
    }

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "prod",
                "annotations": {"example.com/owner": "alice@example.com"}},
            "spec": {"containers": [{"name": "app", "image": "web:1.4",
                "args": ["--api-token", JWT],
                "env": [{"name": "DB_PASSWORD", "value": CLEAR},
                        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]},
            "status": {"phase": "Running"}})
    }

    #[test]
    fn golden_single_objects() {
        golden("object_secret", "secrets", &secret().to_string());
        golden("object_configmap", "configmaps", &config_map().to_string());
    }

    #[test]
    fn golden_list() {
        let mut item = pod();
        item.as_object_mut().unwrap().remove("kind");
        let list = json!({"apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "42"}, "items": [item]});
        golden("list_pods", "pods", &list.to_string());
    }

    #[test]
    fn golden_table() {
        let metadata_only = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"name": "app", "annotations": {"ci.example.com/deploy-key": AWS_KEY}}});
        let table = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "columnDefinitions": [{"name": "Name", "type": "string"}, {"name": "Data", "type": "string"}],
            "rows": [{"cells": ["db-credentials", 2], "object": secret()},
                     {"cells": ["app", 4], "object": metadata_only}]});
        golden("table_secrets", "secrets", &table.to_string());
    }

    #[test]
    fn metadata_only_table_rows_mask_the_applied_copy_of_their_resource() {
        // `kubectl get secrets` asks for a Table whose rows carry only metadata,
        // but that metadata holds the Secret as last applied, data and all.
        let applied = |kind: &str, body: Value| {
            let mut object = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}});
            object
                .as_object_mut()
                .unwrap()
                .extend(body.as_object().unwrap().clone());
            object.to_string()
        };
        let row = |applied: String| {
            json!({"cells": ["x"], "object": {"kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "x",
                    "annotations": {LAST_APPLIED: applied}}}})
        };
        let table = |row: Value| {
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "columnDefinitions": [], "rows": [row]})
            .to_string()
        };
        let settings = MaskingConfig::default();
        let secret = applied("Secret", json!({"data": {"password": "cHIwZC1TM2NyZXQh"}}));
        let masked = mask_body(table(row(secret)).as_bytes(), &settings, "secrets").unwrap();
        let text = String::from_utf8(masked.body).unwrap();
        assert!(!text.contains("cHIwZC1TM2NyZXQh"), "{text}");
        assert_eq!(
            masked.fields,
            [format!("rows[].object.metadata.annotations.{LAST_APPLIED}")]
        );

        let pod = applied(
            "Pod",
            json!({"spec": {"containers": [{"name": "app",
                "env": [{"name": "DB_PASSWORD", "value": "pr0d-S3cret!"}]}]}}),
        );
        let masked = mask_body(table(row(pod)).as_bytes(), &settings, "pods").unwrap();
        assert!(
            !String::from_utf8(masked.body)
                .unwrap()
                .contains("pr0d-S3cret!")
        );

        // A resource without built-in rules passes its rows as they are.
        let config_map = applied("ConfigMap", json!({"data": {"color": "blue"}}));
        let body = table(row(config_map));
        let masked = mask_body(body.as_bytes(), &settings, "configmaps").unwrap();
        assert!(masked.fields.is_empty());
        assert_eq!(masked.body, body.as_bytes());
    }

    #[test]
    fn each_maskable_key_alone_is_enough_to_be_masked() {
        let applied = json!({"kind": "Secret", "stringData": {"password": CLEAR}}).to_string();
        for (resource, body) in [
            (
                "secrets",
                json!({"kind": "Secret", "data": {"password": CLEAR_BASE64}}),
            ),
            (
                "secrets",
                json!({"kind": "Secret", "stringData": {"password": CLEAR}}),
            ),
            (
                "secrets",
                json!({"kind": "Secret", "metadata": {"annotations": {LAST_APPLIED: applied}}}),
            ),
            (
                "pods",
                json!({"kind": "Pod", "spec": {"containers": [
                {"name": "app", "env": [{"name": "PASSWORD", "value": CLEAR}]}]}}),
            ),
        ] {
            let out = mask_body(body.to_string().as_bytes(), &settings(), resource).unwrap();
            let text = String::from_utf8(out.body).unwrap();
            assert!(
                !text.contains(CLEAR) && !text.contains(CLEAR_BASE64),
                "{text}"
            );
            assert_eq!(out.fields.len(), 1, "{body}");
        }
    }

    #[test]
    fn bodies_without_a_maskable_key_pass_unparsed_but_must_be_json() {
        let settings = MaskingConfig::default();
        let pods = json!({"kind": "PodList", "apiVersion": "v1", "items": [
            {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}}]})
        .to_string();
        let masked = mask_body(pods.as_bytes(), &settings, "pods").unwrap();
        assert_eq!(masked.body, pods.as_bytes(), "passed byte for byte");
        assert!(masked.fields.is_empty());
        assert!(matches!(
            mask_body(b"\x0a\x03Pod not json", &settings, "pods"),
            Err(MaskError::NotJson(_))
        ));
        // A key spelled with escapes is still found.
        let escaped = r#"{"kind":"Pod","spec":{"containers":[{"name":"a","\u0065nv":[{"name":"P","value":"pr0d-S3cret!"}]}]}}"#;
        let masked = mask_body(escaped.as_bytes(), &settings, "pods").unwrap();
        assert!(
            !String::from_utf8(masked.body)
                .unwrap()
                .contains("pr0d-S3cret!")
        );
        let applied = json!({"kind": "Secret", "data": {"password": CLEAR_BASE64}}).to_string();
        let escaped_slash = json!({"kind": "Table", "rows": [{"object": {
            "kind": "PartialObjectMetadata",
            "metadata": {"annotations": {LAST_APPLIED: applied}}}}]})
        .to_string()
        .replace("kubernetes.io/last", "kubernetes.io\\/last");
        let masked = mask_body(escaped_slash.as_bytes(), &settings, "secrets").unwrap();
        assert!(
            !String::from_utf8(masked.body)
                .unwrap()
                .contains(CLEAR_BASE64),
            "{escaped_slash}"
        );
    }

    #[test]
    fn golden_watch_events() {
        let stream = [
            json!({"type": "ADDED", "object": pod()}),
            json!({"type": "MODIFIED", "object": pod()}),
            json!({"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "43"}}}),
        ]
        .iter()
        .map(|event| format!("{event}\n"))
        .collect::<String>();
        golden("watch_pods", "pods", &stream);
    }

    /// Masks `body` through the one-pass path and through the tree and checks
    /// they agree: the same verdict, the same document once parsed, the same
    /// fields. Returns whether the one-pass path handled it.
    fn assert_paths_agree(body: &[u8], settings: &MaskingConfig, resource: &str) -> bool {
        let masking = Masking {
            settings,
            fields: None,
            resource_kind: kind_of_resource(resource),
        };
        let tree = mask_tree(body, &masking);
        // The one-pass route: the reading pass refuses what is not JSON.
        let streamed = match scan::scan(body, |_| true) {
            Err(error) => Err(MaskError::NotJson(error.to_string())),
            Ok(_) => match mask_streamed(body, &masking) {
                None => return false,
                Some(streamed) => Ok(streamed),
            },
        };
        let text = String::from_utf8_lossy(body);
        match (tree, streamed) {
            (Ok(tree), Ok(streamed)) => {
                let parse = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap();
                assert_eq!(
                    parse(&streamed.body),
                    parse(&tree.body),
                    "{resource}: {text}"
                );
                assert_eq!(streamed.fields, tree.fields, "{resource}: {text}");
                if tree.fields.is_empty() {
                    assert_eq!(streamed.body, body, "unmasked bodies pass byte for byte");
                }
            }
            (Err(_), Err(_)) => {}
            (tree, streamed) => panic!("{resource}: {text}: tree {tree:?}, one pass {streamed:?}"),
        }
        true
    }

    /// A tiny deterministic generator (xorshift) for the differential test.
    struct Draw(u64);

    impl Draw {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }

    /// Writes `value` as JSON with members in a drawn order and drawn
    /// whitespace, so `kind` may come after the members it governs.
    fn write_shuffled(value: &Value, draw: &mut Draw, out: &mut String) {
        let space = |draw: &mut Draw| *draw.pick(&["", "", " ", "\n  "]);
        match value {
            Value::Object(map) => {
                let mut members: Vec<_> = map.iter().collect();
                for i in (1..members.len()).rev() {
                    members.swap(i, draw.below(i + 1));
                }
                out.push('{');
                for (i, (key, item)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(space(draw));
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push_str(space(draw));
                    out.push(':');
                    out.push_str(space(draw));
                    write_shuffled(item, draw, out);
                }
                out.push_str(space(draw));
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(space(draw));
                    write_shuffled(item, draw, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }

    /// A drawn value where a masked field could be: the usual shape mostly,
    /// sometimes the wrong type.
    fn odd_or(draw: &mut Draw, usual: Value) -> Value {
        match draw.below(8) {
            0 => json!(null),
            1 => json!(42),
            2 => json!(["x", {"value": "nested"}]),
            3 => json!("a \"quoted\" \\ value \u{e9}\n"),
            _ => usual,
        }
    }

    fn drawn_containers(draw: &mut Draw) -> Value {
        let var = |draw: &mut Draw, i: usize| {
            let value = odd_or(draw, json!(format!("v{i}-{CLEAR}")));
            match draw.below(4) {
                0 => json!({"name": format!("V{i}"), "valueFrom": {"secretKeyRef": {"name": "s"}}}),
                1 => json!({"value": value}),
                _ => json!({"name": format!("V{i}"), "value": value}),
            }
        };
        let containers = (0..draw.below(3))
            .map(|c| {
                let env = (0..draw.below(4)).map(|i| var(draw, i)).collect::<Vec<_>>();
                json!({"name": format!("c{c}"), "image": "app:1", "env": odd_or(draw, json!(env))})
            })
            .collect::<Vec<_>>();
        odd_or(draw, json!(containers))
    }

    fn drawn_object(draw: &mut Draw, depth: usize) -> Value {
        let kind = *draw.pick(&[
            "Pod",
            "Secret",
            "Deployment",
            "CronJob",
            "PodTemplate",
            "ConfigMap",
            "PartialObjectMetadata",
            "",
        ]);
        let mut object = json!({"apiVersion": "v1", "metadata": {"name": "x", "namespace": "dev"}});
        if !kind.is_empty() {
            object["kind"] = json!(kind);
        }
        let spec = json!({"containers": drawn_containers(draw),
            "initContainers": drawn_containers(draw), "ephemeralContainers": drawn_containers(draw)});
        match draw.below(5) {
            0 => object["spec"] = spec,
            1 => object["spec"] = json!({"template": {"spec": spec}}),
            2 => object["template"] = json!({"spec": spec}),
            3 => object["spec"] = json!({"jobTemplate": {"spec": {"template": {"spec": spec}}}}),
            _ => {}
        }
        if draw.below(2) == 0 {
            object["data"] = odd_or(draw, json!({"password": CLEAR_BASE64, "user": "YXBw"}));
        }
        if draw.below(3) == 0 {
            object["stringData"] = odd_or(draw, json!({"password": CLEAR}));
        }
        if draw.below(3) == 0 && depth < 2 {
            let applied = match draw.below(4) {
                0 => json!("{not json"),
                1 => json!(42),
                _ => json!(drawn_object(draw, depth + 1).to_string()),
            };
            object["metadata"]["annotations"] = json!({LAST_APPLIED: applied, "a": "b"});
        }
        object
    }

    fn drawn_body(draw: &mut Draw) -> Value {
        let items = |draw: &mut Draw| {
            (0..draw.below(4))
                .map(|_| drawn_object(draw, 0))
                .collect::<Vec<_>>()
        };
        match draw.below(6) {
            0 => json!({"kind": *draw.pick(&["PodList", "SecretList", "List", "DeploymentList"]),
                "apiVersion": "v1", "metadata": {}, "items": items(draw)}),
            1 => {
                let rows = items(draw)
                    .into_iter()
                    .map(|object| json!({"cells": ["x", 1], "object": object}))
                    .collect::<Vec<_>>();
                json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "rows": rows})
            }
            2 => json!({"type": "ADDED", "object": drawn_object(draw, 0)}),
            _ => drawn_object(draw, 0),
        }
    }

    #[test]
    fn the_one_pass_path_agrees_with_the_tree_on_the_test_corpus() {
        let mut item = pod();
        item.as_object_mut().unwrap().remove("kind");
        let corpus = [
            ("secrets", secret()),
            ("pods", pod()),
            ("configmaps", config_map()),
            (
                "pods",
                json!({"kind": "PodList", "items": [item.clone(), item]}),
            ),
            (
                "secrets",
                json!({"kind": "Table", "rows": [{"cells": [], "object": secret()}]}),
            ),
            ("pods", json!({"type": "MODIFIED", "object": pod()})),
        ];
        for (resource, value) in &corpus {
            for text in [
                value.to_string(),
                serde_json::to_string_pretty(value).unwrap(),
            ] {
                assert!(assert_paths_agree(text.as_bytes(), &settings(), resource));
            }
        }
        // Escaped member names and kinds take the tree path.
        for escaped in [
            r#"{"kind":"Pod","spec":{"containers":[{"\u0065nv":[{"value":"x"}]}]}}"#,
            r#"{"kind":"S\u0065cret","data":{"a":"eA=="}}"#,
        ] {
            assert!(!assert_paths_agree(escaped.as_bytes(), &settings(), "pods"));
        }
        // Not JSON: both refuse.
        for broken in [
            &b"{\"kind\":\"Pod\",\"env\":"[..],
            b"{\"data\":1}x",
            b"[1,]",
        ] {
            assert_paths_agree(broken, &settings(), "secrets");
        }
    }

    #[test]
    fn the_one_pass_path_agrees_with_the_tree_on_generated_bodies() {
        let mut draw = Draw(0x9e37_79b9_7f4a_7c15);
        let variants = [
            settings(),
            MaskingConfig {
                secrets: false,
                ..settings()
            },
            MaskingConfig {
                pod_env: false,
                mask_text: "<\"hidden\">".to_owned(),
                ..settings()
            },
        ];
        let (mut streamed, mut masked) = (0, 0);
        for round in 0..3000 {
            let body = drawn_body(&mut draw);
            let mut text = String::new();
            write_shuffled(&body, &mut draw, &mut text);
            let resource = *draw.pick(&["pods", "secrets", "deployments", "configmaps"]);
            let settings = &variants[round % variants.len()];
            if assert_paths_agree(text.as_bytes(), settings, resource) {
                streamed += 1;
            }
            if mask_body(text.as_bytes(), settings, resource).is_ok_and(|m| !m.fields.is_empty()) {
                masked += 1;
            }
        }
        assert!(
            streamed > 2900,
            "the one-pass path handled {streamed} bodies"
        );
        assert!(masked > 300, "only {masked} bodies had something to mask");
    }
}
