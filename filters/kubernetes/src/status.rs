//! `metav1.Status` bodies, shaped as the API server writes them.
//!
//! kubectl prints a refusal cleanly (`Error from server (Forbidden): ...`) only when
//! the body is a `Status`; a plain-text body prints as an empty error. The forbidden
//! message follows the API server's `responsewriters.ForbiddenStatusError` and
//! apimachinery's `NewForbidden` word for word, so users and tools see the same text
//! an RBAC refusal would give. Send each body with [`CONTENT_TYPE`] and an HTTP
//! status equal to [`Status::code`].

use crate::exec::authorization_verb;
use crate::request_info::RequestInfo;
use serde::Serialize;
use std::fmt::Write as _;

/// The content type of a `Status` body.
pub const CONTENT_TYPE: &str = "application/json";

/// `metav1.Status`. Empty fields are omitted as Go's `omitempty` omits them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// Always `{}`.
    pub metadata: ListMeta,
    /// `Success` or `Failure`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// A `StatusReason` such as `Forbidden`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code; 0 is omitted.
    #[serde(skip_serializing_if = "is_zero")]
    pub code: u16,
}

/// `metav1.ListMeta` with nothing set: serializes as `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ListMeta {}

/// `metav1.StatusDetails` (the fields gatehouse sets).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatusDetails {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The resource (not the kind), as the API server fills it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

fn is_zero(code: &u16) -> bool {
    *code == 0
}

impl Status {
    /// The HTTP status to send with this body (always [`Status::code`]).
    pub fn http_status(&self) -> u16 {
        self.code
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            // Unreachable for these plain fields; keep the client's error readable anyway.
            format!(r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","code":{}}}"#, self.code)
        })
    }

    /// The form an audit event's `responseStatus` carries: the API server copies
    /// only status, message, reason, details and code.
    pub fn for_audit(&self) -> Status {
        Status {
            kind: String::new(),
            api_version: String::new(),
            ..self.clone()
        }
    }

    /// A bare `{"metadata":{},"code":N}`, as audit events record a success.
    pub fn code_only(code: u16) -> Status {
        Status {
            code,
            ..Status::default()
        }
    }
}

/// A generic `Status`: `Failure` unless `code` is 2xx.
pub fn status(code: u16, reason: &str, message: &str) -> Status {
    let outcome = if (200..300).contains(&code) {
        "Success"
    } else {
        "Failure"
    };
    Status {
        kind: "Status".to_owned(),
        api_version: "v1".to_owned(),
        status: outcome.to_owned(),
        message: message.to_owned(),
        reason: reason.to_owned(),
        code,
        ..Status::default()
    }
}

/// 401, as the API server answers an unauthenticated request. An empty
/// `message` becomes `not authorized` (apimachinery's `NewUnauthorized`); the API
/// server itself says `Unauthorized`.
pub fn unauthorized(message: &str) -> Status {
    status(
        401,
        "Unauthorized",
        if message.is_empty() {
            "not authorized"
        } else {
            message
        },
    )
}

/// 403 for a request policy refused, worded as the API server's RBAC refusal:
/// `pods "web-0" is forbidden: User "alice" cannot create resource "pods/exec" in
/// API group "" in the namespace "prod": <reason>`. The verb is the one policy
/// judged ([`authorization_verb`]); an empty `reason` adds nothing.
pub fn forbidden(info: &RequestInfo, user: &str, reason: &str) -> Status {
    let verb = authorization_verb(info);
    let mut cause = String::new();
    if info.is_resource_request {
        let mut resource = info.resource.clone();
        if !info.subresource.is_empty() {
            resource.push('/');
            resource.push_str(&info.subresource);
        }
        let _ = write!(
            cause,
            "User {} cannot {verb} resource {} in API group {} ",
            go_quote(user),
            go_quote(&resource),
            go_quote(&info.api_group)
        );
        if info.namespace.is_empty() {
            cause.push_str("at the cluster scope");
        } else {
            let _ = write!(cause, "in the namespace {}", go_quote(&info.namespace));
        }
    } else {
        let _ = write!(
            cause,
            "User {} cannot {verb} path {}",
            go_quote(user),
            go_quote(&info.path)
        );
    }
    if !reason.is_empty() {
        cause.push_str(": ");
        cause.push_str(reason);
    }

    // NewForbidden: the qualified resource is `resource.group`, or just `resource`
    // for the core group; non-resource requests have none.
    let (group, resource, name) = if info.is_resource_request {
        (
            info.api_group.as_str(),
            info.resource.as_str(),
            info.name.as_str(),
        )
    } else {
        ("", "", "")
    };
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    let message = match (qualified.is_empty(), name.is_empty()) {
        (true, _) => format!("forbidden: {cause}"),
        (false, true) => format!("{qualified} is forbidden: {cause}"),
        (false, false) => format!("{qualified} {} is forbidden: {cause}", go_quote(name)),
    };
    Status {
        details: Some(StatusDetails {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: resource.to_owned(),
        }),
        ..status(403, "Forbidden", &message)
    }
}

/// Go's `%q` for the strings that appear in these messages: quotes and
/// backslashes escaped, control characters as Go writes them.
fn go_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            c if c.is_ascii_control() => {
                let _ = write!(quoted, "\\x{:02x}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: &str, url: &str) -> RequestInfo {
        RequestInfo::new(method, url).unwrap()
    }

    #[test]
    fn forbidden_exec_in_namespace_matches_the_api_server() {
        let status = forbidden(
            &info("GET", "/api/v1/namespaces/prod/pods/web-0/exec?command=sh"),
            "alice@example.com",
            "blocked by policy no-exec-in-prod",
        );
        assert_eq!(status.http_status(), 403);
        assert_eq!(
            status.to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"web-0\" is forbidden: User \"alice@example.com\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"prod\": blocked by policy no-exec-in-prod","reason":"Forbidden","details":{"name":"web-0","kind":"pods"},"code":403}"#
        );
    }

    #[test]
    fn forbidden_cluster_scoped_named_group_has_group_detail() {
        let status = forbidden(
            &info(
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            ),
            "bob",
            "",
        );
        assert_eq!(
            status.to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"clusterrolebindings.rbac.authorization.k8s.io is forbidden: User \"bob\" cannot create resource \"clusterrolebindings\" in API group \"rbac.authorization.k8s.io\" at the cluster scope","reason":"Forbidden","details":{"group":"rbac.authorization.k8s.io","kind":"clusterrolebindings"},"code":403}"#
        );
    }

    #[test]
    fn forbidden_namespace_delete_names_the_namespace() {
        let status = forbidden(
            &info("DELETE", "/api/v1/namespaces/prod"),
            "dev",
            "rule protect-namespaces",
        );
        assert_eq!(
            status.to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"namespaces \"prod\" is forbidden: User \"dev\" cannot delete resource \"namespaces\" in API group \"\" in the namespace \"prod\": rule protect-namespaces","reason":"Forbidden","details":{"name":"prod","kind":"namespaces"},"code":403}"#
        );
    }

    #[test]
    fn forbidden_non_resource_path() {
        let status = forbidden(&info("GET", "/openapi/v2"), "u", "");
        assert_eq!(
            status.to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User \"u\" cannot get path \"/openapi/v2\"","reason":"Forbidden","details":{},"code":403}"#
        );
    }

    #[test]
    fn forbidden_quotes_user_names_like_go() {
        let status = forbidden(&info("GET", "/api/v1/pods"), "a\"b\\c\n", "");
        assert!(
            status
                .message
                .contains(r#"User "a\"b\\c\n" cannot list resource "pods""#),
            "{}",
            status.message
        );
    }

    #[test]
    fn unauthorized_matches_the_api_server() {
        let status = unauthorized("Unauthorized");
        assert_eq!(status.http_status(), 401);
        assert_eq!(
            status.to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#
        );
        assert_eq!(unauthorized("").message, "not authorized");
    }

    #[test]
    fn generic_status_and_audit_forms() {
        let status = status(413, "RequestEntityTooLarge", "response too large to mask");
        assert_eq!(status.http_status(), 413);
        assert_eq!(
            status.to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"response too large to mask","reason":"RequestEntityTooLarge","code":413}"#
        );
        assert_eq!(
            status.for_audit().to_json(),
            r#"{"metadata":{},"status":"Failure","message":"response too large to mask","reason":"RequestEntityTooLarge","code":413}"#
        );
        assert_eq!(
            Status::code_only(200).to_json(),
            r#"{"metadata":{},"code":200}"#
        );
    }
}
