//! Hostile Kubernetes clients through real Envoy and the gatehouse filter, as
//! `developer` (who may read `dev` and `prod` and write only in `dev`), with
//! the upstream effect checked on the stand-in API server, which records what
//! reached it:
//!
//! - every request the gateway refuses never reaches the server;
//! - every request it forwards reaches the server exactly as the filter judged
//!   it (the audit Event's `requestURI` is the path and query the server got);
//! - no answer, to a raw HTTP client or to kubectl, holds a value masking
//!   covers in clear, checked by value: the stand-in's credentials carry known
//!   passwords.
//!
//! The second test is the differential masking harness: every verb ×
//! subresource × content type that answers with an object, asked of the
//! stand-in directly and through the gateway.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use gatehouse_integration::http_batch::{self, RawRequest, RawResponse};
use gatehouse_integration::{Stack, StackOptions};
use kube_standin::store::DEMO_PASSWORDS;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// A value the client itself sends in a dry-run Secret: the answer must mask
/// it as it masks stored ones.
const SENT_SECRET: &str = "dry-S3cret";

/// Every value that must never leave the gateway in clear, in each form it
/// travels in (plain, base64 with and without padding).
fn clear_values() -> Vec<String> {
    let mut values = Vec::new();
    for secret in DEMO_PASSWORDS
        .iter()
        .map(|(_, password)| *password)
        .chain([SENT_SECRET])
    {
        let encoded = BASE64.encode(secret);
        values.push(secret.to_owned());
        values.push(encoded.trim_end_matches('=').to_owned());
    }
    values
}

/// The clear values found in `bytes`.
fn clear_in(bytes: &[u8], clear: &[String]) -> Vec<String> {
    clear
        .iter()
        .filter(|value| bytes.windows(value.len()).any(|w| w == value.as_bytes()))
        .cloned()
        .collect()
}

/// The default policy, with a custom resource's credential masked by kind
/// wherever it appears, and by resource in the Tables kubectl prints of it
/// (rows of metadata only do not say their kind).
fn filter_config() -> Value {
    let mut config = gatehouse_integration::stack::default_kubernetes_filter_config();
    config["masking"]["fields"] = json!([
        {"kinds": ["DatabaseCredential"], "resources": ["databasecredentials"],
         "paths": ["spec.password"], "whole": true}
    ]);
    config
}

fn stack(name: &str) -> Stack {
    Stack::start(
        "it",
        name,
        StackOptions {
            kubernetes_filter: filter_config(),
            ..StackOptions::default()
        },
    )
    .expect("stack starts")
}

/// What must become of one attempt.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Refused (by the filter, or by Envoy in front of it) with one of these
    /// statuses; it never reaches the API server.
    Refused(&'static [u16]),
    /// Forwarded as the filter judged it, answered 2xx; the answer holds no
    /// clear value.
    Judged,
    /// Forwarded as the filter judged it, and the server answered this status.
    JudgedAnswer(u16),
    /// Either, as Envoy's normalization decides: a path Envoy rewrites before
    /// the filter sees it is judged as rewritten.
    RefusedOrJudged(&'static [u16]),
    /// Forwarded, and the answer refused with this status because the filter
    /// cannot read it.
    AnswerRefused(u16),
}

struct Attempt {
    what: &'static str,
    request: RawRequest,
    expect: Expect,
}

fn attempt(what: &'static str, method: &str, target: &str, expect: Expect) -> Attempt {
    Attempt {
        what,
        request: RawRequest::new(method, target),
        expect,
    }
}

impl Attempt {
    fn header(mut self, name: &str, value: &str) -> Attempt {
        self.request = self.request.header(name, value);
        self
    }

    fn body(mut self, content_type: &str, body: &Value) -> Attempt {
        self.request = self.request.body(content_type, body.to_string().as_bytes());
        self
    }

    fn http2(mut self) -> Attempt {
        self.request = self.request.http2();
        self
    }
}

const BAD_REQUEST: &[u16] = &[400];
const METHOD: &[u16] = &[405];
const METHOD_OR_BAD: &[u16] = &[400, 405];
const FORBIDDEN: &[u16] = &[403];
const ANY_REFUSAL: &[u16] = &[400, 403, 404, 405];

const MERGE: &str = "application/merge-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const JSON: &str = "application/json";

#[rustfmt::skip]
fn attempts() -> Vec<Attempt> {
    use Expect::*;
    let secret = "/api/v1/namespaces/prod/secrets/db-credentials";
    let label = json!({"metadata": {"labels": {"hostile": "1"}}});
    vec![
        // The verb agrees with the method: the /watch/ prefix is a GET.
        attempt("PATCH through the watch prefix", "PATCH", "/api/v1/watch/namespaces/prod/secrets/db-credentials", Refused(METHOD)).body(MERGE, &label),
        attempt("DELETE through the watch prefix", "DELETE", "/api/v1/watch/namespaces/prod/pods/web-0", Refused(METHOD)),
        attempt("PUT through the watch prefix", "PUT", "/api/v1/watch/namespaces/prod/configmaps/app-config", Refused(METHOD)).body(JSON, &json!({"data": {}})),
        attempt("POST through the watch prefix", "POST", "/api/v1/watch/namespaces/prod/pods", Refused(METHOD)).body(JSON, &json!({})),
        attempt("DELETE of a collection through the watch prefix", "DELETE", "/apis/apps/v1/watch/namespaces/prod/deployments", Refused(METHOD)),
        attempt("HEAD through the watch prefix", "HEAD", "/api/v1/watch/namespaces/prod/pods", Refused(METHOD)),
        attempt("PATCH through the watch prefix over HTTP/2", "PATCH", "/api/v1/watch/namespaces/prod/secrets/db-credentials", Refused(METHOD)).body(MERGE, &label).http2(),
        attempt("DELETE through the watch prefix over HTTP/2", "DELETE", "/api/v1/watch/namespaces/prod/pods/web-0", Refused(METHOD)).http2(),
        attempt("the removed proxy prefix", "GET", "/api/v1/proxy/namespaces/prod/pods/web-0", Refused(BAD_REQUEST)),
        attempt("DELETE through the removed proxy prefix", "DELETE", "/api/v1/proxy/namespaces/prod/pods/web-0", Refused(BAD_REQUEST)),
        attempt("OPTIONS", "OPTIONS", "/api/v1/namespaces/prod/pods", Refused(METHOD)),
        attempt("TRACE", "TRACE", "/api/v1/namespaces/prod/pods", Refused(METHOD_OR_BAD)),
        attempt("PROPFIND", "PROPFIND", "/api/v1/namespaces/prod/secrets", Refused(METHOD_OR_BAD)),
        attempt("a lowercase delete", "delete", "/api/v1/namespaces/dev/pods/web-0", Refused(METHOD_OR_BAD)),
        attempt("a mixed-case Patch over HTTP/2", "Patch", "/api/v1/namespaces/dev/pods/web-0", Refused(METHOD_OR_BAD)).body(MERGE, &label).http2(),
        attempt("a method override header", "GET", "/api/v1/namespaces/dev/pods/web-0", Refused(BAD_REQUEST)).header("X-HTTP-Method-Override", "DELETE"),
        attempt("an X-HTTP-Method header", "POST", "/api/v1/namespaces/dev/pods/web-0", Refused(BAD_REQUEST)).header("X-HTTP-Method", "DELETE"),
        attempt("an X-Method-Override header", "GET", secret, Refused(BAD_REQUEST)).header("x-method-override", "PATCH"),
        attempt("PATCH of the readiness path", "PATCH", "/gatehouse/ready", Refused(FORBIDDEN)),
        // Paths the filter and the server could read differently.
        attempt("an encoded slash", "GET", "/api/v1/namespaces/prod/pods/web-0%2Fexec?command=id", Refused(BAD_REQUEST)),
        attempt("an encoded backslash", "GET", "/api/v1/namespaces/prod/pods/web-0%5Cexec?command=id", Refused(BAD_REQUEST)),
        attempt("an encoded name", "GET", "/api/v1/namespaces/prod/secrets/db%2Dcredentials", RefusedOrJudged(BAD_REQUEST)),
        attempt("an encoded resource", "GET", "/api/v1/namespaces/prod/%73ecrets", RefusedOrJudged(BAD_REQUEST)),
        attempt("an encoded subresource", "POST", "/api/v1/namespaces/prod/pods/web-0/%65xec?command=id", Refused(ANY_REFUSAL)),
        attempt("an encoded watch prefix", "PATCH", "/api/v1/w%61tch/namespaces/prod/pods/web-0", Refused(ANY_REFUSAL)).body(MERGE, &label),
        attempt("an encoded semicolon", "GET", "/api/v1/namespaces/prod/pods/web-0%3Bexec", RefusedOrJudged(BAD_REQUEST)),
        attempt("a semicolon in the path", "GET", "/api/v1/namespaces/prod/pods/web-0;exec", Refused(BAD_REQUEST)),
        attempt("path parameters on a subresource", "POST", "/api/v1/namespaces/prod/pods/web-0/exec;x=1?command=id", Refused(BAD_REQUEST)),
        attempt("a backslash", "GET", "/api/v1/namespaces/prod/pods/web-0\\exec?command=id", Refused(ANY_REFUSAL)),
        attempt("a doubled slash", "GET", "/api/v1/namespaces/prod//secrets", RefusedOrJudged(BAD_REQUEST)),
        attempt("dot segments into prod", "POST", "/api/v1/namespaces/dev/pods/../../prod/pods/web-0/exec?command=id", Refused(ANY_REFUSAL)),
        attempt("a dot segment", "GET", "/api/v1/namespaces/prod/./secrets", RefusedOrJudged(BAD_REQUEST)),
        attempt("a trailing slash", "GET", "/api/v1/namespaces/prod/secrets/", Refused(BAD_REQUEST)),
        attempt("a trailing slash on a name", "DELETE", "/api/v1/namespaces/prod/secrets/db-credentials/", Refused(BAD_REQUEST)),
        attempt("an encoded slash before a subresource", "PATCH", "/apis/apps/v1/namespaces/prod/deployments/web%2fscale", Refused(BAD_REQUEST)).body(MERGE, &json!({"spec": {"replicas": 9}})),
        attempt("non-ASCII bytes", "GET", "/api/v1/namespaces/prod/pods/w\u{e9}b", Refused(BAD_REQUEST)),
        attempt("a fragment", "GET", "/api/v1/namespaces/prod/secrets#x", Refused(BAD_REQUEST)),
        // Not an API path: a non-resource GET, which the server does not serve.
        attempt("an upper-case prefix", "GET", "/API/v1/namespaces/prod/secrets", JudgedAnswer(404)),
        // Query spellings.
        attempt("a differently-cased watch", "GET", "/api/v1/namespaces/prod/secrets?Watch=true", Refused(BAD_REQUEST)),
        attempt("an upper-case WATCH", "GET", "/api/v1/namespaces/prod/secrets?WATCH=1", Refused(BAD_REQUEST)),
        attempt("an escaped watch", "GET", "/api/v1/namespaces/prod/secrets?w%61tch=true", Refused(BAD_REQUEST)),
        attempt("a repeated watch", "GET", "/api/v1/namespaces/prod/secrets?watch=false&watch=true", Refused(BAD_REQUEST)),
        attempt("a watch spelled no", "GET", "/api/v1/namespaces/prod/secrets?watch=no", Refused(BAD_REQUEST)),
        attempt("a watch on a named object", "GET", "/api/v1/namespaces/prod/secrets/db-credentials?watch=true", Refused(BAD_REQUEST)),
        attempt("a watch on a delete", "DELETE", "/api/v1/namespaces/dev/pods?watch=true", Refused(BAD_REQUEST)),
        attempt("a repeated field selector", "GET", "/api/v1/namespaces/prod/secrets?fieldSelector=metadata.name%3Da&fieldSelector=metadata.name%3Ddb-credentials", Refused(BAD_REQUEST)),
        attempt("a differently-cased label selector", "DELETE", "/api/v1/namespaces/dev/configmaps?LabelSelector=app%3Dweb", Refused(BAD_REQUEST)),
        attempt("an unknown parameter", "GET", "/api/v1/namespaces/prod/secrets?export=true", Refused(BAD_REQUEST)),
        attempt("a method parameter", "PATCH", "/api/v1/namespaces/dev/pods/web-0?_method=GET", Refused(BAD_REQUEST)).body(MERGE, &label),
        attempt("an empty parameter name", "GET", "/api/v1/namespaces/prod/secrets?=1", Refused(BAD_REQUEST)),
        attempt("a semicolon in the query", "GET", "/api/v1/namespaces/prod/secrets?watch=false;watch=true", Refused(BAD_REQUEST)),
        attempt("a limit that is not a number", "GET", "/api/v1/namespaces/prod/secrets?limit=abc", Refused(BAD_REQUEST)),
        attempt("two containers for one exec", "POST", "/api/v1/namespaces/dev/pods/web-0/exec?command=id&container=app&container=sidecar", Refused(BAD_REQUEST)),
        attempt("a tty spelled yes", "POST", "/api/v1/namespaces/dev/pods/web-0/exec?command=sh&tty=yes", Refused(BAD_REQUEST)),
        attempt("a repeated dry run", "POST", "/api/v1/namespaces/dev/configmaps?dryRun=All&dryRun=All", Refused(BAD_REQUEST)).body(JSON, &json!({"metadata": {"name": "x"}})),
        attempt("a repeated watch over HTTP/2", "GET", "/api/v1/namespaces/prod/secrets?watch=0&watch=1", Refused(BAD_REQUEST)).http2(),
        // Headers.
        attempt("impersonating a user", "GET", secret, Refused(FORBIDDEN)).header("Impersonate-User", "admin"),
        attempt("impersonating a group", "GET", secret, Refused(FORBIDDEN)).header("Impersonate-Group", "system:masters"),
        attempt("impersonating a uid", "GET", secret, Refused(FORBIDDEN)).header("Impersonate-Uid", "0"),
        attempt("impersonating extra", "GET", secret, Refused(FORBIDDEN)).header("Impersonate-Extra-Scopes", "all"),
        // Writes policy denies, in every spelling.
        attempt("a patch of a prod Secret", "PATCH", secret, Refused(FORBIDDEN)).body(MERGE, &label),
        attempt("a status write in prod", "PATCH", "/api/v1/namespaces/prod/pods/web-0/status", Refused(FORBIDDEN)).body(MERGE, &json!({"status": {"phase": "Failed"}})),
        attempt("an ephemeral container in prod", "PATCH", "/api/v1/namespaces/prod/pods/web-0/ephemeralcontainers", Refused(FORBIDDEN)).body(STRATEGIC, &json!({"spec": {"ephemeralContainers": [{"name": "x", "image": "busybox"}]}})),
        attempt("a dry-run delete in prod", "DELETE", "/api/v1/namespaces/prod/pods/web-0?dryRun=All", Refused(FORBIDDEN)),
        attempt("a scale in prod", "PATCH", "/apis/apps/v1/namespaces/prod/deployments/web/scale", Refused(FORBIDDEN)).body(MERGE, &json!({"spec": {"replicas": 9}})),
        attempt("exec in prod over the WebSocket verb", "GET", "/api/v1/namespaces/prod/pods/web-0/exec?command=cat&command=/etc/passwd&container=app&stdout=true", Refused(FORBIDDEN)),
        // Answers that must be read to be masked.
        attempt("a Secret asked for as YAML", "GET", secret, Judged).header("Accept", "application/yaml"),
        attempt("a Secret asked for as protobuf", "GET", secret, Judged).header("Accept", "application/vnd.kubernetes.protobuf"),
        attempt("a Secret asked for as anything", "GET", secret, Judged).header("Accept", "*/*"),
        attempt("a Secret asked for compressed", "GET", secret, Judged).header("Accept-Encoding", "gzip, deflate, br"),
        attempt("Secrets as a Table with objects", "GET", "/api/v1/namespaces/prod/secrets?includeObject=Object", Judged).header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io"),
        attempt("Secrets as metadata", "GET", "/api/v1/namespaces/prod/secrets", Judged).header("Accept", "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"),
        attempt("a pod's status", "GET", "/api/v1/namespaces/prod/pods/web-0/status", Judged),
        attempt("a pod's ephemeral containers", "GET", "/api/v1/namespaces/prod/pods/web-0/ephemeralcontainers", Judged),
        attempt("a Deployment's status", "GET", "/apis/apps/v1/namespaces/prod/deployments/web/status", Judged),
        attempt("ControllerRevisions", "GET", "/apis/apps/v1/namespaces/prod/controllerrevisions", Judged),
        attempt("a database credential", "GET", "/apis/example.com/v1/namespaces/prod/databasecredentials/orders-db", Judged),
        attempt("a workflow", "GET", "/apis/example.com/v1/namespaces/prod/workflows/nightly", Judged),
        attempt("a patch's answer", "PATCH", "/api/v1/namespaces/dev/pods/web-0", Judged).body(MERGE, &label),
        attempt("a status patch's answer", "PATCH", "/api/v1/namespaces/dev/pods/web-0/status", Judged).body(MERGE, &json!({"status": {"message": "checked"}})),
        attempt("a dry-run create's answer", "POST", "/api/v1/namespaces/dev/secrets?dryRun=All", Judged).body(JSON, &json!({"metadata": {"name": "dry"}, "stringData": {"token": SENT_SECRET}})),
        attempt("a dry-run delete's answer", "DELETE", "/api/v1/namespaces/dev/pods/web-0?dryRun=All", Judged),
        attempt("a watch with events of Secrets", "GET", "/api/v1/namespaces/prod/secrets?watch=1&timeoutSeconds=1", Judged),
        attempt("a create in dev naming prod", "POST", "/api/v1/namespaces/dev/secrets", JudgedAnswer(400)).body(JSON, &json!({"metadata": {"name": "smuggled", "namespace": "prod"}, "data": {"k": "eA=="}})),
        attempt("an API that answers YAML whatever it is asked", "GET", "/apis/legacy.example.com/v1/namespaces/prod/reports/quarterly", AnswerRefused(500)),
        attempt("an API that answers YAML, over HTTP/2", "GET", "/apis/legacy.example.com/v1/namespaces/prod/reports", AnswerRefused(500)).http2(),
    ]
}

/// The key paths of a JSON document (arrays as `[]`), for comparing shapes.
fn key_paths(value: &Value, at: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                let path = format!("{at}.{key}");
                out.insert(path.clone());
                key_paths(item, &path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

/// Sends `requests` through the gateway with the caller's token and a
/// per-request id the upstream log is searched by.
fn through_gateway(
    stack: &Stack,
    name: &str,
    requests: Vec<RawRequest>,
    token: &str,
) -> Vec<RawResponse> {
    let requests: Vec<RawRequest> = requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            request
                .header("Authorization", &format!("Bearer {token}"))
                .header("X-Gatehouse-Attempt", &i.to_string())
        })
        .collect();
    http_batch::send(
        &stack.dir,
        name,
        &stack.kube_server(),
        Some(&stack.pki.ca_cert),
        &requests,
    )
    .expect("curl runs")
}

#[test]
fn hostile_requests_are_refused_before_the_server_or_judged_as_it_reads_them() {
    let stack = stack("k8s-hostile");
    let token = stack.token("developer").unwrap();
    let clear = clear_values();
    let attempts = attempts();
    assert!(attempts.len() >= 60, "{} attempts", attempts.len());
    let responses = through_gateway(
        &stack,
        "hostile",
        attempts.iter().map(|a| a.request.clone()).collect(),
        &token,
    );
    let seen = stack.upstream_requests();
    let records = stack.access_log_records().unwrap();
    let mut failures = Vec::new();
    for (i, (attempt, response)) in attempts.iter().zip(&responses).enumerate() {
        let id = i.to_string();
        let upstream: Vec<_> = seen
            .iter()
            .filter(|r| r.header("x-gatehouse-attempt") == Some(id.as_str()))
            .collect();
        let mut fail = |why: String| {
            failures.push(format!(
                "#{i} {} ({} {}): {why}\n  answer {} {}: {}",
                attempt.what,
                attempt.request.method,
                attempt.request.target,
                response.status,
                response.content_type,
                response.text().chars().take(300).collect::<String>()
            ))
        };
        let leaked = clear_in(&response.body, &clear);
        if !leaked.is_empty() {
            fail(format!("clear values in the answer: {leaked:?}"));
        }
        // curl 7.88 drops an HTTP/2 answer the server sent before the upload
        // ended (see `http_batch::send`), even when sent again: then the
        // refusal is read from its audit record, which holds its code.
        let answer_lost_but_recorded = |statuses: &[u16]| {
            response.status == 0
                && attempt.request.http2
                && records.iter().any(|r| {
                    r["requestURI"] == attempt.request.target.as_str()
                        && r["responseStatus"]["code"]
                            .as_u64()
                            .is_some_and(|code| statuses.iter().any(|s| u64::from(*s) == code))
                })
        };
        let refused = |statuses: &[u16]| {
            (statuses.contains(&response.status) || answer_lost_but_recorded(statuses))
                && upstream.is_empty()
        };
        let judged = || {
            upstream.len() == 1
                && upstream.first().is_some_and(|seen| {
                    let audit_id = seen.header("audit-id").unwrap_or_default();
                    records
                        .iter()
                        .any(|r| r["auditID"] == audit_id && r["requestURI"] == seen.uri.as_str())
                        && seen.method == attempt.request.method
                })
        };
        let ok = match attempt.expect {
            Expect::Refused(statuses) => refused(statuses),
            Expect::Judged => (200..300).contains(&response.status) && judged(),
            Expect::JudgedAnswer(status) => response.status == status && judged(),
            Expect::RefusedOrJudged(statuses) => {
                refused(statuses) || ((200..300).contains(&response.status) && judged())
            }
            Expect::AnswerRefused(status) => response.status == status && judged(),
        };
        if !ok {
            fail(format!(
                "expected {:?}; the API server saw {:?}",
                attempt.expect,
                upstream
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.uri))
                    .collect::<Vec<_>>()
            ));
        }
        // The gateway's own refusals are Status objects kubectl can print.
        if upstream.is_empty()
            && let Some(status) = response.json()
            && status["kind"] == "Status"
            && status["code"] != response.status
        {
            fail(format!(
                "Status code {} differs from HTTP {}",
                status["code"], response.status
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} attempts failed:\n{}",
        failures.len(),
        attempts.len(),
        failures.join("\n")
    );

    // Nothing refused changed the server: prod holds what it held.
    let standin = stack.kube_standin().expect("in-process stand-in");
    standin.with_store(|store| {
        let prod_secrets = store.list(
            &kube_standin::resources::SECRETS,
            Some("prod"),
            &Default::default(),
        );
        let names: Vec<_> = prod_secrets
            .iter()
            .filter_map(|s| s.pointer("/metadata/name"))
            .collect();
        assert_eq!(names, [&json!("db-credentials")], "prod Secrets");
        let pod = store
            .get(&kube_standin::resources::PODS, "prod", "web-0")
            .expect("prod pod kept");
        assert_eq!(pod.pointer("/status/phase"), Some(&json!("Running")));
        assert!(pod.pointer("/metadata/labels/hostile").is_none());
        assert!(pod.pointer("/spec/ephemeralContainers").is_none());
        let dev_pod = store
            .get(&kube_standin::resources::PODS, "dev", "web-0")
            .expect("dry-run delete kept the pod");
        assert_eq!(
            dev_pod.pointer("/metadata/labels/hostile"),
            Some(&json!("1"))
        );
        assert!(
            store
                .get(&kube_standin::resources::SECRETS, "dev", "dry")
                .is_err(),
            "a dry run stores nothing"
        );
    });

    // kubectl, where it applies: every answer that holds an object comes back
    // masked, and what cannot be read is refused with a message.
    let kubectl = |args: &[&str]| {
        let out = stack.kubectl("1.33", args).unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let leaked = clear_in(text.as_bytes(), &clear);
        assert!(
            leaked.is_empty(),
            "kubectl {args:?} shows {leaked:?}:\n{text}"
        );
        (out.status.success(), text)
    };
    for args in [
        &[
            "patch",
            "pod",
            "web-0",
            "-n",
            "dev",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"k":"1"}}}"#,
            "-o",
            "json",
        ][..],
        &[
            "get",
            "pod",
            "web-0",
            "-n",
            "prod",
            "--subresource=status",
            "-o",
            "yaml",
        ],
        &[
            "patch",
            "pod",
            "web-0",
            "-n",
            "dev",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"message":"m"}}"#,
            "-o",
            "json",
        ],
        &[
            "get",
            "deployment",
            "web",
            "-n",
            "prod",
            "--subresource=status",
            "-o",
            "json",
        ],
        &[
            "create",
            "secret",
            "generic",
            "dry",
            "-n",
            "dev",
            &format!("--from-literal=token={SENT_SECRET}"),
            "--dry-run=server",
            "-o",
            "yaml",
        ],
        &[
            "annotate",
            "pod",
            "web-0",
            "-n",
            "dev",
            "checked=yes",
            "--dry-run=server",
            "-o",
            "json",
        ],
        &["get", "controllerrevisions", "-n", "prod", "-o", "json"],
        &["get", "dbcred", "orders-db", "-n", "prod", "-o", "yaml"],
        &["get", "dbcred", "-A", "-o", "wide"],
        &["get", "workflows", "-n", "dev", "-o", "json"],
        &["get", "secrets", "-n", "prod", "-o", "yaml"],
        &[
            "debug",
            "web-0",
            "-n",
            "dev",
            "--image=busybox",
            "--container=dbg",
        ],
    ] {
        let (ok, text) = kubectl(args);
        assert!(ok, "kubectl {args:?}:\n{text}");
        if args.contains(&"-o") {
            assert!(
                text.contains("********") || text.contains("KioqKioqKio="),
                "kubectl {args:?} masked:\n{text}"
            );
        }
    }
    // kubectl's raw verbs send what they are given; each refusal is a Status
    // kubectl prints, and none reached the server.
    let body = stack.dir.join("raw-body.json");
    std::fs::write(&body, json!({"metadata": {"name": "raw"}}).to_string()).unwrap();
    let body = body.display().to_string();
    let before = stack.upstream_requests().len();
    for (args, printed) in [
        (
            &[
                "delete",
                "--raw",
                "/api/v1/watch/namespaces/prod/secrets/db-credentials",
            ][..],
            "Error from server (MethodNotAllowed)",
        ),
        (
            &[
                "create",
                "--raw",
                "/api/v1/watch/namespaces/prod/configmaps",
                "-f",
                &body,
            ],
            "Error from server (MethodNotAllowed)",
        ),
        (
            &[
                "replace",
                "--raw",
                "/api/v1/watch/namespaces/prod/configmaps/app-config",
                "-f",
                &body,
            ],
            "Error from server (MethodNotAllowed)",
        ),
        (
            &["get", "--raw", "/api/v1/namespaces/prod/secrets?watch=no"],
            "Error from server (BadRequest)",
        ),
        (
            &["get", "--raw", "/api/v1/namespaces/prod/secrets?export=1"],
            "Error from server (BadRequest)",
        ),
    ] {
        let (ok, text) = kubectl(args);
        assert!(
            !ok && text.contains(printed)
                && text.contains("gatehouse refused an ambiguous request"),
            "kubectl {args:?}:\n{text}"
        );
    }
    let reached: Vec<_> = stack
        .upstream_requests()
        .into_iter()
        .skip(before)
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    assert!(
        reached
            .iter()
            .all(|r| !r.contains("/watch/") && !r.contains("watch=no") && !r.contains("export")),
        "{reached:?}"
    );

    let (ok, text) = kubectl(&["get", "reports", "-n", "prod"]);
    assert!(
        !ok && text.contains("gatehouse must mask this response but cannot read application/yaml"),
        "{text}"
    );
    let (ok, text) = kubectl(&[
        "get",
        "--raw",
        "/api/v1/watch/namespaces/prod/secrets?timeoutSeconds=1",
    ]);
    assert!(
        ok,
        "a watch through the prefix is a GET and is masked:\n{text}"
    );
}

/// One row of the masking matrix: a request that answers with objects.
struct Row {
    what: &'static str,
    method: &'static str,
    target: &'static str,
    body: Option<(&'static str, Value)>,
    /// Whether the stand-in's own answer holds a clear value (the harness
    /// would see one if the gateway let it through).
    holds_clear: bool,
}

fn row(what: &'static str, method: &'static str, target: &'static str, holds_clear: bool) -> Row {
    Row {
        what,
        method,
        target,
        body: None,
        holds_clear,
    }
}

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    let mut rows = vec![
        row("get a Secret", "GET", "/api/v1/namespaces/prod/secrets/db-credentials", true),
        row("list Secrets", "GET", "/api/v1/namespaces/prod/secrets", true),
        row("list Secrets everywhere", "GET", "/api/v1/secrets?limit=500", true),
        row("get a pod", "GET", "/api/v1/namespaces/dev/pods/web-0", true),
        row("get a pod's status", "GET", "/api/v1/namespaces/dev/pods/web-0/status", true),
        row("get a pod's ephemeral containers", "GET", "/api/v1/namespaces/dev/pods/web-0/ephemeralcontainers", true),
        row("list pods everywhere", "GET", "/api/v1/pods", true),
        row("get a Deployment", "GET", "/apis/apps/v1/namespaces/prod/deployments/web", true),
        row("get a Deployment's status", "GET", "/apis/apps/v1/namespaces/prod/deployments/web/status", true),
        row("get a Deployment's scale", "GET", "/apis/apps/v1/namespaces/prod/deployments/web/scale", false),
        row("list ControllerRevisions", "GET", "/apis/apps/v1/namespaces/prod/controllerrevisions", true),
        row("get a ControllerRevision", "GET", "/apis/apps/v1/namespaces/prod/controllerrevisions/web-1", true),
        row("get a database credential", "GET", "/apis/example.com/v1/namespaces/prod/databasecredentials/orders-db", true),
        row("list database credentials", "GET", "/apis/example.com/v1/namespaces/prod/databasecredentials", true),
        row("get a database credential's status", "GET", "/apis/example.com/v1/namespaces/prod/databasecredentials/orders-db/status", true),
        row("list workflows", "GET", "/apis/example.com/v1/namespaces/dev/workflows", true),
        row("get a report from a YAML-only API", "GET", "/apis/legacy.example.com/v1/namespaces/prod/reports/quarterly", true),
        row("watch Secrets", "GET", "/api/v1/namespaces/prod/secrets?watch=1&timeoutSeconds=1", true),
        row("watch pods", "GET", "/api/v1/namespaces/dev/pods?watch=true&timeoutSeconds=1", true),
        row("watch ControllerRevisions", "GET", "/apis/apps/v1/namespaces/prod/controllerrevisions?watch=1&timeoutSeconds=1", true),
        row("watch one Secret through the prefix", "GET", "/api/v1/watch/namespaces/prod/secrets/db-credentials?timeoutSeconds=1", true),
    ];
    let write = |what, method, target, content_type, body: Value| Row { what, method, target, body: Some((content_type, body)), holds_clear: true };
    let label = json!({"metadata": {"labels": {"checked": "yes"}}});
    rows.extend([
        write("merge-patch a pod", "PATCH", "/api/v1/namespaces/dev/pods/web-0", MERGE, label.clone()),
        write("strategic-patch a pod's status", "PATCH", "/api/v1/namespaces/dev/pods/web-0/status", STRATEGIC, json!({"status": {"message": "checked"}})),
        write("patch a pod's ephemeral containers", "PATCH", "/api/v1/namespaces/dev/pods/web-0/ephemeralcontainers", STRATEGIC,
              json!({"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox", "env": [{"name": "T", "value": SENT_SECRET}]}]}})),
        write("dry-run create a Secret", "POST", "/api/v1/namespaces/dev/secrets?dryRun=All", JSON, json!({"metadata": {"name": "dry"}, "stringData": {"token": SENT_SECRET}})),
        write("dry-run create a pod", "POST", "/api/v1/namespaces/dev/pods?dryRun=All&fieldManager=kubectl-run", JSON,
              json!({"metadata": {"name": "dry"}, "spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "T", "value": SENT_SECRET}]}]}})),
        write("dry-run delete a pod", "DELETE", "/api/v1/namespaces/dev/pods/web-0?dryRun=All", JSON, json!({"propagationPolicy": "Background"})),
        write("dry-run patch a Deployment", "PATCH", "/apis/apps/v1/namespaces/dev/deployments/web?dryRun=All", MERGE, label.clone()),
        write("patch a Deployment's scale", "PATCH", "/apis/apps/v1/namespaces/dev/deployments/web/scale", MERGE, json!({"spec": {"replicas": 1}})),
        write("patch a database credential", "PATCH", "/apis/example.com/v1/namespaces/dev/databasecredentials/orders-db", MERGE, label.clone()),
        write("patch a workflow", "PATCH", "/apis/example.com/v1/namespaces/dev/workflows/nightly", MERGE, label.clone()),
        write("dry-run create a ControllerRevision", "POST", "/apis/apps/v1/namespaces/dev/controllerrevisions?dryRun=All", JSON,
              json!({"metadata": {"name": "web-2"}, "revision": 2, "data": {"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "T", "value": SENT_SECRET}]}]}}}}})),
        write("dry-run delete every Secret in dev", "DELETE", "/api/v1/namespaces/dev/secrets?dryRun=All", JSON, json!({})),
    ]);
    rows
}

/// The content types a client can ask for.
const ACCEPTS: &[(&str, &str)] = &[
    ("json", "application/json"),
    ("yaml", "application/yaml"),
    ("protobuf only", "application/vnd.kubernetes.protobuf"),
    (
        "protobuf then json",
        "application/vnd.kubernetes.protobuf, application/json",
    ),
    ("anything", "*/*"),
    (
        "table",
        "application/json;as=Table;v=v1;g=meta.k8s.io, application/json",
    ),
];

#[test]
fn masking_differential_every_verb_subresource_and_content_type() {
    let stack = stack("k8s-masking-diff");
    let token = stack.token("developer").unwrap();
    let clear = clear_values();
    // A Secret in dev, for the dry-run collection delete to answer with.
    stack.kube_standin().expect("in-process stand-in").with_store(|store| {
        store
            .create(&kube_standin::resources::SECRETS, "dev", json!({"metadata": {"name": "dev-token"}, "stringData": {"token": "dev-Passw0rd!"}}))
            .expect("dev Secret created");
    });
    let rows = rows();
    let mut cases = Vec::new();
    for row in &rows {
        for (accept_name, accept) in ACCEPTS {
            for table_objects in [false, true] {
                if table_objects && !accept.contains("as=Table") {
                    continue;
                }
                let target = if table_objects {
                    let separator = if row.target.contains('?') { '&' } else { '?' };
                    format!("{}{separator}includeObject=Object", row.target)
                } else {
                    row.target.to_owned()
                };
                let mut request = RawRequest::new(row.method, &target).header("Accept", accept);
                if let Some((content_type, body)) = &row.body {
                    request = request.body(content_type, body.to_string().as_bytes());
                }
                cases.push((row, *accept_name, table_objects, request));
            }
        }
    }
    // Reads and writes in separate batches, so the watches see the same objects
    // directly and through the gateway; the writes (idempotent, or dry runs)
    // run once beforehand, so every batch after finds the same objects.
    let (reads, writes): (Vec<_>, Vec<_>) = cases.iter().partition(|(row, ..)| row.body.is_none());
    let upstream = format!("http://{}", stack.kube_upstream);
    let direct = |name: &str, requests: &[RawRequest]| {
        http_batch::send(&stack.dir, name, &upstream, None, requests).expect("curl runs")
    };
    let mut checked = 0;
    let mut direct_clear = 0;
    let mut failures = Vec::new();
    for (name, batch) in [("reads", reads), ("writes", writes)] {
        let requests: Vec<RawRequest> = batch.iter().map(|(.., request)| request.clone()).collect();
        if name == "writes" {
            direct("writes-settle", &requests);
        }
        // As asked (does the server's own answer hold clear values?), and as
        // the gateway asks (the document the gateway's answer must match).
        let as_asked = direct(&format!("{name}-direct"), &requests);
        let as_gateway_asks: Vec<RawRequest> = requests
            .iter()
            .map(|request| {
                let mut request = request.clone();
                for (header, value) in &mut request.headers {
                    if header == "Accept" {
                        *value = gatehouse_kubernetes::masking::json_only_accept(value);
                    }
                }
                request
            })
            .collect();
        let baseline = direct(&format!("{name}-baseline"), &as_gateway_asks);
        let gateway = through_gateway(&stack, &format!("{name}-gateway"), requests, &token);
        for ((row, accept, table_objects, _), ((as_asked, direct), gateway)) in batch
            .iter()
            .zip(as_asked.iter().zip(&baseline).zip(&gateway))
        {
            checked += 1;
            let case = format!(
                "{} [{accept}{}]",
                row.what,
                if *table_objects {
                    ", includeObject"
                } else {
                    ""
                }
            );
            let leaked = clear_in(&gateway.body, &clear);
            if !leaked.is_empty() {
                failures.push(format!(
                    "{case}: the gateway let {leaked:?} through ({} {})",
                    gateway.status, gateway.content_type
                ));
            }
            if !clear_in(&as_asked.body, &clear).is_empty() {
                direct_clear += 1;
            }
            // What the gateway answers: the object in JSON (masked), or a
            // Status saying why it cannot, never another media type.
            let readable = gateway.content_type.starts_with("application/json");
            if !readable {
                failures.push(format!(
                    "{case}: the gateway answered {} {}",
                    gateway.status, gateway.content_type
                ));
                continue;
            }
            if row.target.contains("legacy.example.com") {
                if gateway.status != 500 {
                    failures.push(format!(
                        "{case}: an unreadable answer came back {}",
                        gateway.status
                    ));
                }
                continue;
            }
            let direct_json = direct
                .json()
                .filter(|_| direct.content_type.starts_with("application/json"));
            if gateway.status != direct.status && direct_json.is_some() {
                failures.push(format!(
                    "{case}: {} through the gateway, {} directly: {}",
                    gateway.status,
                    direct.status,
                    gateway.text()
                ));
                continue;
            }
            // The same document, value for value, apart from what masking hides.
            match (direct_json, gateway.json()) {
                (Some(direct_json), Some(gateway_json)) => {
                    let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
                    key_paths(&direct_json, "", &mut a);
                    key_paths(&gateway_json, "", &mut b);
                    if a != b {
                        failures.push(format!(
                            "{case}: shapes differ: {:?}",
                            a.symmetric_difference(&b).collect::<Vec<_>>()
                        ));
                    }
                }
                (_, None) if row.target.contains("watch") => {
                    let lines =
                        |r: &RawResponse| r.text().lines().filter(|l| !l.trim().is_empty()).count();
                    if direct.content_type.starts_with("application/json")
                        && lines(direct) != lines(gateway)
                    {
                        failures.push(format!(
                            "{case}: {} events directly, {} through the gateway",
                            lines(direct),
                            lines(gateway)
                        ));
                    }
                }
                (_, None) => failures.push(format!(
                    "{case}: the gateway's answer is not JSON: {}",
                    gateway.text()
                )),
                (None, Some(_)) => {}
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let expected_clear = cases.iter().filter(|(row, ..)| row.holds_clear).count();
    assert!(
        direct_clear * 10 >= expected_clear * 7,
        "the stand-in's own answers held clear values in {direct_clear} of {expected_clear} cases: the harness would not see a leak"
    );
    assert!(checked >= 200, "{checked} cases");
}

/// A worker fetches its issuer's signing keys on its first request; a request
/// body that arrives meanwhile must wait for the judgment, not carry the
/// request past it. Every request here is the first of a fresh stack, sent
/// with its body in the same packets as its headers, over HTTP/1.1 on its
/// own connection (so the workers share them): curl 7.88 drops an HTTP/2
/// answer that arrives before its upload ends, which Envoy's early refusals
/// can race.
#[test]
fn a_body_sent_while_the_keys_are_fetched_waits_for_the_judgment() {
    let stack = stack("k8s-body-during-key-fetch");
    let token = stack.token("developer").unwrap();
    let denied_write = || {
        RawRequest::new("POST", "/api/v1/namespaces/prod/configmaps").body(
            JSON,
            &serde_json::to_vec(&json!({"metadata": {"name": "slipped-past"}, "data": {"a": "b"}}))
                .unwrap(),
        )
    };
    let can_i = RawRequest::new(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    )
    .body(
        JSON,
        &serde_json::to_vec(&json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": "create", "resource": "configmaps", "namespace": "prod"}}
        }))
        .unwrap(),
    );
    let mut requests: Vec<RawRequest> = (0..6).map(|_| denied_write()).collect();
    requests.push(can_i.clone());
    requests.push(can_i);
    let responses = through_gateway(&stack, "first-requests", requests, &token);
    for (i, response) in responses.iter().enumerate().take(6) {
        assert_eq!(response.status, 403, "write {i}: {}", response.text());
    }
    for response in &responses[6..] {
        assert_eq!(response.status, 201, "{}", response.text());
        let review = response.json().expect("a SelfSubjectAccessReview");
        assert_eq!(review["status"]["allowed"], false, "{review}");
    }
    let leaked: Vec<String> = stack
        .upstream_requests()
        .into_iter()
        .filter(|seen| seen.method != "GET")
        .map(|seen| format!("{} {}", seen.method, seen.uri))
        .collect();
    assert!(
        leaked.is_empty(),
        "reached the API server unjudged: {leaked:?}"
    );
}
