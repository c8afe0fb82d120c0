//! `metav1.Status` errors shaped as the apiserver shapes them (apimachinery
//! `pkg/api/errors`), so kubectl prints `Error from server (Reason): message`.

use serde_json::{Value, json};

use crate::resources::Resource;

/// A failure answer: the HTTP status equals `code`.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl Status {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Status {
        Status {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, resource: &Resource, name: &str) -> Status {
        let mut details = serde_json::Map::new();
        if !name.is_empty() {
            details.insert("name".into(), name.into());
        }
        if !resource.group.is_empty() {
            details.insert("group".into(), resource.group.into());
        }
        details.insert("kind".into(), resource.plural.into());
        self.details = Some(Value::Object(details));
        self
    }

    /// `pods "x" not found`.
    pub fn not_found(resource: &Resource, name: &str) -> Status {
        let message = format!("{} \"{name}\" not found", resource.qualified());
        Status::new(404, "NotFound", message).with_details(resource, name)
    }

    /// An unknown path or resource type.
    pub fn no_such_path() -> Status {
        let mut status = Status::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        status.details = Some(json!({}));
        status
    }

    /// `namespaces "dev" already exists`.
    pub fn already_exists(resource: &Resource, name: &str) -> Status {
        let message = format!("{} \"{name}\" already exists", resource.qualified());
        Status::new(409, "AlreadyExists", message).with_details(resource, name)
    }

    /// A stale resourceVersion on update.
    pub fn conflict(resource: &Resource, name: &str) -> Status {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            resource.qualified()
        );
        Status::new(409, "Conflict", message).with_details(resource, name)
    }

    /// `delete is not supported on resources of kind "pods/log"`.
    pub fn method_not_supported(resource: &Resource, qualified_kind: &str, action: &str) -> Status {
        let message = format!("{action} is not supported on resources of kind {qualified_kind:?}");
        Status::new(405, "MethodNotAllowed", message).with_details(resource, "")
    }

    pub fn bad_request(message: impl Into<String>) -> Status {
        Status::new(400, "BadRequest", message)
    }

    /// `Pod "Bad_Name" is invalid: metadata.name: Invalid value: ...` (422).
    pub fn invalid(resource: &Resource, name: &str, field: &str, detail: &str) -> Status {
        let cause = format!("Invalid value: {name:?}: {detail}");
        let message = format!("{} {name:?} is invalid: {field}: {cause}", resource.kind);
        let mut status = Status::new(422, "Invalid", message).with_details(resource, name);
        if let Some(Value::Object(details)) = status.details.as_mut() {
            details.insert("kind".into(), resource.kind.into());
            details.insert(
                "causes".into(),
                json!([{"reason": "FieldValueInvalid", "message": cause, "field": field}]),
            );
        }
        status
    }

    pub fn unsupported_media_type(content_type: &str) -> Status {
        Status::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/vnd.kubernetes.protobuf, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    pub fn too_large(limit: usize) -> Status {
        Status::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// The watch fell too far behind (`410 Gone`, the client relists).
    pub fn expired() -> Status {
        Status::new(410, "Expired", "too old resource version")
    }

    /// No acceptable media type can be written (406).
    pub fn not_acceptable() -> Status {
        Status::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        )
    }

    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(500, "InternalError", message)
    }

    /// The wire form.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        if let (Some(details), Value::Object(map)) = (&self.details, &mut body) {
            map.insert("details".into(), details.clone());
        }
        if let Value::Object(map) = &mut body {
            map.insert("code".into(), self.code.into());
        }
        body
    }
}

/// The success Status some deletes answer with, and exec's channel-3 message.
pub fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // a missing key is a failed test
mod tests {
    use super::*;
    use crate::resources::{DEPLOYMENTS, PODS};

    #[test]
    fn not_found_matches_the_apiserver_shape() {
        let body = Status::not_found(&PODS, "x").to_json();
        assert_eq!(
            body,
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"pods \"x\" not found","reason":"NotFound",
                   "details":{"name":"x","kind":"pods"},"code":404})
        );
    }

    #[test]
    fn named_groups_are_qualified_and_carry_the_group() {
        let body = Status::already_exists(&DEPLOYMENTS, "web").to_json();
        assert_eq!(body["message"], "deployments.apps \"web\" already exists");
        assert_eq!(body["details"]["group"], "apps");
        assert_eq!(body["code"], 409);
    }
}
