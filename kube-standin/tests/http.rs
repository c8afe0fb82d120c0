//! The wire contract at the HTTP level: discovery negotiation, Status
//! errors, watch streams, and the binary's port file.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test harness: a missing item or a failed unwrap is a failed test"
)]

mod common;

use std::process::Command;

use common::http;
use kube_standin::StandIn;

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

#[test]
fn discovery_format_follows_the_accept_header() {
    let server = StandIn::start_demo().unwrap();
    let v2 = http(
        server.addr(),
        "GET",
        "/apis",
        &[("Accept", &format!("{AGGREGATED_V2},application/json"))],
        b"",
    );
    assert_eq!(v2.header("content-type"), Some(AGGREGATED_V2));
    assert_eq!(v2.json()["kind"], "APIGroupDiscoveryList");
    let beta = http(
        server.addr(),
        "GET",
        "/api",
        &[("Accept", &format!("{AGGREGATED_V2BETA1},application/json"))],
        b"",
    );
    assert_eq!(beta.header("content-type"), Some(AGGREGATED_V2BETA1));
    assert_eq!(beta.json()["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    let legacy = http(
        server.addr(),
        "GET",
        "/apis",
        &[("Accept", "application/json")],
        b"",
    );
    assert_eq!(legacy.header("content-type"), Some("application/json"));
    assert_eq!(legacy.json()["kind"], "APIGroupList");
    let apps = http(server.addr(), "GET", "/apis/apps/v1", &[], b"");
    assert_eq!(apps.json()["resources"][0]["name"], "deployments");
    assert_eq!(
        http(server.addr(), "GET", "/openapi/v2", &[], b"").status,
        404
    );
}

#[test]
fn errors_are_status_objects_with_matching_codes() {
    let server = StandIn::start_demo().unwrap();
    let put_log = http(
        server.addr(),
        "PUT",
        "/api/v1/namespaces/dev/pods/web-0/log",
        &[],
        b"{}",
    );
    assert_eq!(put_log.status, 405);
    assert_eq!(put_log.json()["reason"], "MethodNotAllowed");
    assert_eq!(put_log.json()["code"], 405);
    let bad = http(
        server.addr(),
        "POST",
        "/api/v1/namespaces/dev/configmaps",
        &[("Content-Type", "application/json")],
        b"{not json",
    );
    assert_eq!(
        (bad.status, bad.json()["reason"].as_str()),
        (400, Some("BadRequest"))
    );
    let json_patch = http(
        server.addr(),
        "PATCH",
        "/api/v1/namespaces/dev/pods/web-0",
        &[("Content-Type", "application/json-patch+json")],
        b"[]",
    );
    assert_eq!(json_patch.status, 415);
    let wrong_ns = http(
        server.addr(),
        "POST",
        "/api/v1/namespaces/dev/configmaps",
        &[("Content-Type", "application/json")],
        br#"{"metadata":{"name":"c","namespace":"prod"}}"#,
    );
    assert_eq!(wrong_ns.status, 400);
    let missing = http(
        server.addr(),
        "GET",
        "/api/v1/namespaces/dev/widgets",
        &[],
        b"",
    );
    assert_eq!(
        missing.json()["message"],
        "the server could not find the requested resource"
    );
}

#[test]
fn list_carries_a_resource_version_and_pages() {
    let server = StandIn::start(
        kube_standin::Store::demo().with_pods("load", 100),
        ([127, 0, 0, 1], 0).into(),
    )
    .unwrap();
    let first = http(
        server.addr(),
        "GET",
        "/api/v1/namespaces/load/pods?limit=60",
        &[],
        b"",
    )
    .json();
    assert_eq!(first["kind"], "PodList");
    assert!(
        first["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| !rv.is_empty())
    );
    assert_eq!(first["items"].as_array().unwrap().len(), 60);
    assert_eq!(first["metadata"]["remainingItemCount"], 40);
    let token = first["metadata"]["continue"].as_str().unwrap();
    let rest = http(
        server.addr(),
        "GET",
        &format!("/api/v1/namespaces/load/pods?limit=60&continue={token}"),
        &[],
        b"",
    )
    .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 40);
    assert!(rest["metadata"].get("continue").is_none());
}

#[test]
fn watch_streams_events_until_timeout_seconds() {
    let server = StandIn::start_demo().unwrap();
    let watch = http(
        server.addr(),
        "GET",
        "/api/v1/watch/namespaces/dev/pods?timeoutSeconds=1",
        &[],
        b"",
    );
    assert_eq!(
        watch.header("content-type"),
        Some("application/json;stream=watch")
    );
    assert_eq!(watch.header("transfer-encoding"), Some("chunked"));
    let events: Vec<serde_json::Value> = watch
        .body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "web-0");
    let named = http(
        server.addr(),
        "GET",
        "/api/v1/pods?watch=1&timeoutSeconds=1&fieldSelector=metadata.namespace%3Dprod",
        &[],
        b"",
    );
    assert!(String::from_utf8_lossy(&named.body).contains("\"namespace\":\"prod\""));
    assert!(!String::from_utf8_lossy(&named.body).contains("\"namespace\":\"dev\""));
}

#[test]
fn audit_id_is_echoed_and_requests_are_recorded() {
    let server = StandIn::start_demo().unwrap();
    let response = http(
        server.addr(),
        "GET",
        "/version",
        &[("Audit-ID", "abc-123"), ("Authorization", "Bearer x")],
        b"",
    );
    assert_eq!(response.header("audit-id"), Some("abc-123"));
    assert_eq!(response.json()["minor"], "33");
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("GET", "/version")
    );
    assert_eq!(seen[0].header("Authorization"), Some("Bearer x"));
    server.clear_requests();
    assert!(server.requests().is_empty());
}

#[test]
fn binary_writes_its_port_file_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-standin"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--minor",
            "31",
            "--pods",
            "5",
            "--port-file",
        ])
        .arg(&port_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            break text.parse().unwrap();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "kube-standin exited early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(
        http(addr, "GET", "/version", &[], b"").json()["minor"],
        "31"
    );
    let pods = http(addr, "GET", "/api/v1/namespaces/load/pods", &[], b"").json();
    assert_eq!(pods["items"].as_array().unwrap().len(), 5);
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn starts_and_stops_inside_an_async_test() {
    let server = StandIn::start_demo().unwrap();
    let addr = server.addr();
    let version =
        tokio::task::spawn_blocking(move || http(addr, "GET", "/version", &[], b"").json())
            .await
            .unwrap();
    assert_eq!(version["gitVersion"], "v1.33.2");
    drop(server);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the listener is closed after drop"
    );
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let first = StandIn::start_demo().unwrap();
    let err = StandIn::start(kube_standin::Store::demo(), first.addr())
        .err()
        .expect("second bind fails");
    assert!(
        format!("{err:#}").contains(&format!("binding {}", first.addr())),
        "{err:#}"
    );
}

/// Objects in the media the client asks for, as kube-apiserver answers:
/// JSON, YAML, protobuf for a client that accepts only protobuf, a 406 for
/// what cannot be written; and the YAML-only API whatever is asked.
#[test]
fn objects_are_written_in_the_media_asked_for() {
    let server = StandIn::start_demo().unwrap();
    let secret = "/api/v1/namespaces/prod/secrets/db-credentials";
    let yaml = http(
        server.addr(),
        "GET",
        secret,
        &[("accept", "application/yaml")],
        b"",
    );
    assert_eq!(yaml.header("content-type"), Some("application/yaml"));
    let text = String::from_utf8_lossy(&yaml.body);
    assert!(
        text.contains("\"password\": \"cHIwZC1TM2NyZXQh\""),
        "{text}"
    );
    let proto = http(
        server.addr(),
        "GET",
        secret,
        &[("accept", "application/vnd.kubernetes.protobuf")],
        b"",
    );
    assert_eq!(
        proto.header("content-type"),
        Some("application/vnd.kubernetes.protobuf")
    );
    assert!(proto.body.starts_with(b"k8s\0"));
    assert!(proto.body.windows(12).any(|w| w == b"pr0d-S3cret!"));
    let kubectl_style = http(
        server.addr(),
        "GET",
        secret,
        &[(
            "accept",
            "application/vnd.kubernetes.protobuf, application/json",
        )],
        b"",
    );
    assert_eq!(
        kubectl_style.header("content-type"),
        Some("application/json")
    );
    let refused = http(
        server.addr(),
        "GET",
        "/apis/apps/v1/namespaces/prod/controllerrevisions",
        &[("accept", "application/vnd.kubernetes.protobuf")],
        b"",
    );
    assert_eq!(refused.status, 406);
    assert_eq!(refused.json()["reason"], "NotAcceptable");
    let report = http(
        server.addr(),
        "GET",
        "/apis/legacy.example.com/v1/namespaces/prod/reports/quarterly",
        &[("accept", "application/json")],
        b"",
    );
    assert_eq!(report.header("content-type"), Some("application/yaml"));
}
