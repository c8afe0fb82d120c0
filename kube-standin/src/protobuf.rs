//! The Kubernetes protobuf envelope (`k8s\0` + `runtime.Unknown`): decoding
//! the objects kubectl's typed clients create (`kubectl create namespace`,
//! `create configmap`, `create secret`, `create deployment`: those requests
//! carry `Content-Type: application/vnd.kubernetes.protobuf`), and encoding
//! the same kinds for a client that accepts nothing but protobuf.
//!
//! Only the fields listed in the schemas below are decoded or encoded (field
//! numbers from the `generated.proto` files of k8s.io/api and apimachinery);
//! other fields are skipped. Zero values are omitted, as JSON's `omitempty`
//! does.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";
/// Deepest message nesting decoded (the schemas need 6).
const MAX_DEPTH: usize = 16;

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Msg(&'static [Field]),
    StrMap,
    /// `map<string, bytes>`: JSON carries the bytes as base64.
    BytesMap,
}

struct Field(u32, &'static str, Ty, bool);

use Ty::{Bool, BytesMap, Int, Msg, Str, StrMap};

const ONE: bool = false;
const MANY: bool = true;

static OBJECT_META: &[Field] = &[
    Field(1, "name", Str, ONE),
    Field(2, "generateName", Str, ONE),
    Field(3, "namespace", Str, ONE),
    Field(11, "labels", StrMap, ONE),
    Field(12, "annotations", StrMap, ONE),
    Field(14, "finalizers", Str, MANY),
];
static NAMESPACE: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), ONE),
    Field(2, "spec", Msg(&[Field(1, "finalizers", Str, MANY)]), ONE),
];
static CONFIG_MAP: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), ONE),
    Field(2, "data", StrMap, ONE),
    Field(3, "binaryData", BytesMap, ONE),
    Field(4, "immutable", Bool, ONE),
];
static SECRET: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), ONE),
    Field(2, "data", BytesMap, ONE),
    Field(3, "type", Str, ONE),
    Field(4, "stringData", StrMap, ONE),
    Field(5, "immutable", Bool, ONE),
];
static CONTAINER: &[Field] = &[
    Field(1, "name", Str, ONE),
    Field(2, "image", Str, ONE),
    Field(3, "command", Str, MANY),
    Field(4, "args", Str, MANY),
    Field(5, "workingDir", Str, ONE),
    Field(
        6,
        "ports",
        Msg(&[
            Field(1, "name", Str, ONE),
            Field(2, "hostPort", Int, ONE),
            Field(3, "containerPort", Int, ONE),
            Field(4, "protocol", Str, ONE),
            Field(5, "hostIP", Str, ONE),
        ]),
        MANY,
    ),
    Field(
        7,
        "env",
        Msg(&[Field(1, "name", Str, ONE), Field(2, "value", Str, ONE)]),
        MANY,
    ),
    Field(13, "terminationMessagePath", Str, ONE),
    Field(14, "imagePullPolicy", Str, ONE),
    Field(16, "stdin", Bool, ONE),
    Field(18, "tty", Bool, ONE),
    Field(20, "terminationMessagePolicy", Str, ONE),
];
static POD_SPEC: &[Field] = &[
    Field(2, "containers", Msg(CONTAINER), MANY),
    Field(3, "restartPolicy", Str, ONE),
    Field(4, "terminationGracePeriodSeconds", Int, ONE),
    Field(6, "dnsPolicy", Str, ONE),
    Field(7, "nodeSelector", StrMap, ONE),
    Field(8, "serviceAccountName", Str, ONE),
    Field(10, "nodeName", Str, ONE),
    Field(19, "schedulerName", Str, ONE),
    Field(20, "initContainers", Msg(CONTAINER), MANY),
];
static POD: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), ONE),
    Field(2, "spec", Msg(POD_SPEC), ONE),
];
static LABEL_SELECTOR: &[Field] = &[
    Field(1, "matchLabels", StrMap, ONE),
    Field(
        2,
        "matchExpressions",
        Msg(&[
            Field(1, "key", Str, ONE),
            Field(2, "operator", Str, ONE),
            Field(3, "values", Str, MANY),
        ]),
        MANY,
    ),
];
static DEPLOYMENT_SPEC: &[Field] = &[
    Field(1, "replicas", Int, ONE),
    Field(2, "selector", Msg(LABEL_SELECTOR), ONE),
    Field(3, "template", Msg(POD), ONE),
    Field(4, "strategy", Msg(&[Field(1, "type", Str, ONE)]), ONE),
    Field(5, "minReadySeconds", Int, ONE),
    Field(6, "revisionHistoryLimit", Int, ONE),
    Field(7, "paused", Bool, ONE),
    Field(9, "progressDeadlineSeconds", Int, ONE),
];
static DEPLOYMENT: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), ONE),
    Field(2, "spec", Msg(DEPLOYMENT_SPEC), ONE),
];

/// The schemas by `(apiVersion, kind)`.
static KINDS: &[(&str, &str, &[Field])] = &[
    ("v1", "Namespace", NAMESPACE),
    ("v1", "ConfigMap", CONFIG_MAP),
    ("v1", "Secret", SECRET),
    ("v1", "Pod", POD),
    ("apps/v1", "Deployment", DEPLOYMENT),
];

/// Decodes an enveloped object into its JSON form (with `kind` and `apiVersion`).
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("protobuf body does not start with the k8s envelope magic")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for field in Fields(envelope) {
        match field? {
            (1, Wire::Bytes(type_meta)) => {
                for f in Fields(type_meta) {
                    match f? {
                        (1, Wire::Bytes(v)) => api_version = text(v)?,
                        (2, Wire::Bytes(k)) => kind = text(k)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = Some(r),
            (3, Wire::Bytes(encoding)) if !encoding.is_empty() => {
                return Err("compressed protobuf bodies are not supported".into());
            }
            _ => {}
        }
    }
    let schema = KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, s)| *s)
        .ok_or_else(|| {
            format!("protobuf decoding of {api_version} {kind} is not supported; send JSON")
        })?;
    let mut object = message(raw.unwrap_or_default(), schema, 0)?;
    object.insert("apiVersion".into(), api_version.into());
    object.insert("kind".into(), kind.into());
    Ok(Value::Object(object))
}

/// Encodes an object (JSON form, with `kind` and `apiVersion`) in the
/// envelope; `None` for kinds without a schema here.
pub fn encode(object: &Value) -> Option<Vec<u8>> {
    let api_version = object.get("apiVersion")?.as_str()?;
    let kind = object.get("kind")?.as_str()?;
    let schema = KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, s)| *s)?;
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = MAGIC.to_vec();
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, &encode_message(object.as_object()?, schema));
    Some(out)
}

fn encode_message(object: &Map<String, Value>, schema: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for Field(number, name, ty, _) in schema {
        let values: Vec<&Value> = match object.get(*name) {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(value) => vec![value],
            None => continue,
        };
        for value in values {
            match (ty, value) {
                (Str, Value::String(text)) => put_bytes(&mut out, *number, text.as_bytes()),
                (Int, Value::Number(n)) => {
                    put_varint(&mut out, u64::from(number << 3));
                    put_varint(&mut out, n.as_i64().unwrap_or_default() as u64);
                }
                (Bool, Value::Bool(b)) => {
                    put_varint(&mut out, u64::from(number << 3));
                    put_varint(&mut out, u64::from(*b));
                }
                (Msg(inner), Value::Object(map)) => {
                    put_bytes(&mut out, *number, &encode_message(map, inner));
                }
                (StrMap | BytesMap, Value::Object(map)) => {
                    for (key, value) in map {
                        let text = value.as_str().unwrap_or_default();
                        let bytes = match ty {
                            BytesMap => BASE64.decode(text).unwrap_or_default(),
                            _ => text.as_bytes().to_vec(),
                        };
                        let mut entry = Vec::new();
                        put_bytes(&mut entry, 1, key.as_bytes());
                        put_bytes(&mut entry, 2, &bytes);
                        put_bytes(&mut out, *number, &entry);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, u64::from((number << 3) | 2));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn message(bytes: &[u8], schema: &[Field], depth: usize) -> Result<Map<String, Value>, String> {
    if depth > MAX_DEPTH {
        return Err("protobuf message nested too deeply".into());
    }
    let mut out = Map::new();
    for field in Fields(bytes) {
        let (number, wire) = field?;
        let Some(Field(_, name, ty, repeated)) = schema.iter().find(|f| f.0 == number) else {
            continue;
        };
        let value = match (ty, wire) {
            (Str, Wire::Bytes(b)) => Value::from(text(b)?),
            // int32 negatives arrive sign-extended to 64 bits.
            (Int, Wire::Varint(v)) => Value::from(v as i64),
            (Bool, Wire::Varint(v)) => Value::from(v != 0),
            (Msg(inner), Wire::Bytes(b)) => Value::Object(message(b, inner, depth + 1)?),
            (StrMap | BytesMap, Wire::Bytes(entry)) => {
                let (key, value) = map_entry(entry, matches!(ty, BytesMap))?;
                let map = out
                    .entry(*name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
                continue;
            }
            _ => return Err(format!("protobuf field {name} has an unexpected wire type")),
        };
        if *repeated {
            let list = out.entry(*name).or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = list {
                list.push(value);
            }
        } else if !is_zero(&value) {
            out.insert((*name).into(), value);
        }
    }
    Ok(out)
}

fn map_entry(entry: &[u8], bytes_value: bool) -> Result<(String, Value), String> {
    let (mut key, mut value) = (String::new(), Value::from(""));
    for field in Fields(entry) {
        match field? {
            (1, Wire::Bytes(k)) => key = text(k)?,
            (2, Wire::Bytes(v)) if bytes_value => value = BASE64.encode(v).into(),
            (2, Wire::Bytes(v)) => value = text(v)?.into(),
            _ => {}
        }
    }
    Ok((key, value))
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Bool(b) => !b,
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "protobuf string is not UTF-8".to_string())
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Iterates the fields of one message; a malformed field ends with an error.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = self.read_field();
        if item.is_err() {
            self.0 = &[];
        }
        Some(item)
    }
}

impl<'a> Fields<'a> {
    fn read_field(&mut self) -> Result<(u32, Wire<'a>), String> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| "protobuf field number out of range")?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| "protobuf length out of range")?;
                let (bytes, rest) = self
                    .0
                    .split_at_checked(len)
                    .ok_or("protobuf field runs past the end")?;
                self.0 = rest;
                Wire::Bytes(bytes)
            }
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                let (_, rest) = self
                    .0
                    .split_at_checked(width)
                    .ok_or("protobuf field runs past the end")?;
                self.0 = rest;
                Wire::Fixed
            }
            other => return Err(format!("unsupported protobuf wire type {other}")),
        };
        Ok((number, wire))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .0
                .split_first()
                .ok_or("protobuf varint runs past the end")?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("protobuf varint is too long".into())
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // a missing key is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    fn bytes_field(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((number << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [
            bytes_field(1, api_version.as_bytes()),
            bytes_field(2, kind.as_bytes()),
        ]
        .concat();
        [
            MAGIC.to_vec(),
            bytes_field(1, &type_meta),
            bytes_field(2, raw),
        ]
        .concat()
    }

    #[test]
    fn decodes_a_configmap_with_labels_and_data() {
        let meta = [
            bytes_field(1, b"c1"),
            bytes_field(2, b""), // an empty generateName is omitted
            bytes_field(
                11,
                &[bytes_field(1, b"app"), bytes_field(2, b"web")].concat(),
            ),
        ]
        .concat();
        let data = bytes_field(2, &[bytes_field(1, b"a"), bytes_field(2, b"b")].concat());
        let raw = [bytes_field(1, &meta), data, vec![4 << 3, 0]].concat();
        let object = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "c1", "labels": {"app": "web"}}, "data": {"a": "b"}})
        );
    }

    #[test]
    fn secret_bytes_become_base64_and_ints_decode() {
        let data = bytes_field(
            2,
            &[bytes_field(1, b"password"), bytes_field(2, b"pw")].concat(),
        );
        let object = decode(&envelope("v1", "Secret", &data)).unwrap();
        assert_eq!(object["data"]["password"], "cHc=");
        let spec = bytes_field(2, &[1 << 3, 3]);
        let object = decode(&envelope("apps/v1", "Deployment", &spec)).unwrap();
        assert_eq!(object["spec"]["replicas"], 3);
    }

    #[test]
    fn encoded_objects_decode_to_what_the_schema_holds() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "prod", "uid": "dropped"},
            "type": "Opaque", "data": {"password": "cHIwZC1TM2NyZXQh"}});
        let bytes = encode(&secret).unwrap();
        assert!(bytes.starts_with(MAGIC));
        assert!(
            bytes.windows(12).any(|w| w == b"pr0d-S3cret!"),
            "Secret data travels as raw bytes"
        );
        let mut expected = secret.clone();
        expected["metadata"].as_object_mut().unwrap().remove("uid");
        assert_eq!(decode(&bytes).unwrap(), expected);
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 300, "template": {"spec": {
                "containers": [{"name": "app", "env": [{"name": "P", "value": "x"}]}]}}}});
        assert_eq!(decode(&encode(&deployment).unwrap()).unwrap(), deployment);
        assert!(encode(&json!({"apiVersion": "v1", "kind": "Event"})).is_none());
    }

    #[test]
    fn rejects_malformed_and_unknown_input() {
        assert!(decode(b"{}").is_err());
        assert!(decode(&envelope("v1", "Event", b"")).is_err());
        let truncated = [MAGIC, &[0x0a, 0x7f, 1]].concat();
        assert!(decode(&truncated).is_err());
        let endless_varint = [MAGIC, &[0x08], &[0xff; 12]].concat();
        assert!(decode(&endless_varint).is_err());
    }
}
