//! kubectl through real Envoy with gatehouse's Kubernetes filter enforcing the
//! default policy (examples/kubernetes-policy.json) against the stand-in API
//! server: tokens are verified, requests decided, and each one recorded as an
//! audit.k8s.io/v1 Event in the access log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::{Stack, StackOptions};
use serde_json::Value;
use std::process::Output;

fn stack(name: &str) -> Stack {
    Stack::start("it", name, StackOptions::default()).expect("stack starts")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn succeeded(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed:\n{}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn events(stack: &Stack) -> Vec<Value> {
    stack
        .access_log_records()
        .unwrap()
        .into_iter()
        .filter(|r| r["kind"] == "Event")
        .collect()
}

#[test]
fn developers_read_pods_and_the_upstream_sees_the_gateway_not_the_token() {
    let stack = stack("k8s-read");
    let token = stack.token("developer").unwrap();
    for version in ["1.29", "1.33"] {
        let out = stack
            .kubectl(
                version,
                &["--context", "developer", "get", "pods", "-n", "dev"],
            )
            .unwrap();
        assert!(
            succeeded(&out, "get pods").contains("web-0"),
            "{}",
            text(&out)
        );
    }
    let seen = stack.upstream_requests();
    assert!(!seen.is_empty());
    for request in &seen {
        let auth = request.header("authorization").unwrap_or_default();
        assert!(
            !auth.contains(&token) && !auth.to_ascii_lowercase().starts_with("bearer ey"),
            "caller's token reached the API server: {} {auth}",
            request.uri
        );
        assert_eq!(request.header("impersonate-user"), Some("developer"));
        assert!(request.header("audit-id").is_some_and(|id| id.len() == 36));
    }
    let pods = seen
        .iter()
        .find(|r| r.uri.starts_with("/api/v1/namespaces/dev/pods"))
        .expect("the pod list reached the API server");
    let audit_id = pods.header("audit-id").unwrap().to_owned();
    let event = stack
        .wait_for_record("the pod list's Event", |r| {
            r["auditID"] == audit_id.as_str()
        })
        .unwrap();
    assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(event["stage"], "ResponseComplete");
    assert_eq!(event["verb"], "list");
    assert_eq!(event["user"]["username"], "developer");
    assert_eq!(event["user"]["groups"][0], "developers");
    assert_eq!(event["objectRef"]["resource"], "pods");
    assert_eq!(event["objectRef"]["namespace"], "dev");
    assert_eq!(event["responseStatus"]["code"], 200);
    assert_eq!(
        event["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
    assert_eq!(
        event["annotations"]["gatehouse.dev/rule"],
        "team-dev-and-prod"
    );
}

#[test]
fn deleting_a_prod_namespace_is_forbidden_for_developers_and_observed_for_admins() {
    let stack = stack("k8s-delete-ns");
    let out = stack
        .kubectl(
            "1.33",
            &["--context", "developer", "delete", "namespace", "prod"],
        )
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "Error from server (Forbidden): namespaces \"prod\" is forbidden: User \"developer\" cannot delete resource \"namespaces\""
        ) && stderr.contains("no-namespace-deletion"),
        "{stderr}"
    );
    assert!(
        !stack
            .upstream_requests()
            .iter()
            .any(|r| r.method == "DELETE"),
        "the delete never reached the API server"
    );
    let denied = stack
        .wait_for_record("the refused delete", |r| {
            r["kind"] == "Event" && r["verb"] == "delete"
        })
        .unwrap();
    assert_eq!(denied["responseStatus"]["code"], 403);
    assert_eq!(
        denied["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    assert_eq!(
        denied["annotations"]["gatehouse.dev/rule"],
        "no-namespace-deletion"
    );

    let out = stack
        .kubectl(
            "1.33",
            &[
                "--context",
                "admin",
                "delete",
                "namespace",
                "prod",
                "--wait=false",
            ],
        )
        .unwrap();
    succeeded(&out, "admin deletes prod");
    assert!(
        stack
            .upstream_requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.header("impersonate-user") == Some("admin"))
    );
}

#[test]
fn exec_is_allowed_in_dev_and_refused_in_prod_on_both_transports() {
    let stack = stack("k8s-exec");
    let out = stack
        .kubectl(
            "1.33",
            &[
                "--context",
                "developer",
                "exec",
                "web-0",
                "-n",
                "dev",
                "--",
                "ls",
            ],
        )
        .unwrap();
    let printed = succeeded(&out, "exec in dev");
    assert!(
        printed.contains("bin\netc\n"),
        "the stand-in's ls ran: {printed}"
    );

    for version in ["1.29", "1.33"] {
        let out = stack
            .kubectl(
                version,
                &[
                    "--context",
                    "developer",
                    "exec",
                    "web-0",
                    "-n",
                    "prod",
                    "--",
                    "ls",
                ],
            )
            .unwrap();
        assert!(!out.status.success(), "exec in prod ({version}) succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Error from server (Forbidden): pods \"web-0\" is forbidden: User \"developer\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"prod\"")
                && stderr.contains("prod-exec-needs-admin"),
            "kubectl {version}: {stderr}"
        );
    }
    let seen = stack.upstream_requests();
    assert!(
        !seen
            .iter()
            .any(|r| r.uri.contains("/namespaces/prod/pods/web-0/exec")),
        "no prod exec attempt (WebSocket GET or SPDY POST) reached the API server"
    );
    let all = events(&stack);
    let refused: Vec<&Value> = all
        .iter()
        .filter(|e| {
            e["objectRef"]["subresource"] == "exec" && e["objectRef"]["namespace"] == "prod"
        })
        .collect();
    assert!(
        refused.iter().any(|e| e["verb"] == "get") && refused.iter().any(|e| e["verb"] == "create"),
        "both the WebSocket GET and the SPDY POST were refused and recorded: {refused:?}"
    );
    let started = all.iter().find(|e| {
        e["stage"] == "ResponseStarted"
            && e["objectRef"]["subresource"] == "exec"
            && e["objectRef"]["namespace"] == "dev"
    });
    let started = started.expect("the dev exec has a ResponseStarted event");
    assert_eq!(started["responseStatus"]["code"], 101);
}

#[test]
fn logs_are_readable_in_prod() {
    let stack = stack("k8s-logs");
    let out = stack
        .kubectl("1.33", &["--context", "ci", "logs", "web-0", "-n", "prod"])
        .unwrap();
    let printed = succeeded(&out, "logs");
    assert!(!printed.trim().is_empty(), "log lines: {}", text(&out));
}

#[test]
fn requests_without_a_valid_token_get_a_401_kubectl_explains() {
    let stack = stack("k8s-401");
    // A blank token: kubectl sends `Authorization: Bearer ` with nothing after it.
    let anonymous = stack
        .kubectl(
            "1.33",
            &[
                "--context",
                "developer",
                "--token= ",
                "get",
                "pods",
                "-n",
                "dev",
            ],
        )
        .unwrap();
    assert!(!anonymous.status.success());
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    // Discovery errors make kubectl print client-go's generic text here; the
    // raw requests below show the filter's reason.
    assert!(
        stderr.contains("You must be logged in to the server"),
        "{stderr}"
    );

    let broken = stack
        .kubectl(
            "1.33",
            &[
                "--context",
                "developer",
                "--token=not-a-jwt",
                "get",
                "--raw",
                "/api/v1/namespaces/dev/pods",
            ],
        )
        .unwrap();
    assert!(!broken.status.success());
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.contains("You must be logged in to the server") && stderr.contains("malformed"),
        "{stderr}"
    );

    let expired = gatehouse_integration::idp::mint(&stack.minter, "developer", -600).unwrap();
    let out = stack
        .kubectl(
            "1.33",
            &[
                "--context",
                "developer",
                &format!("--token={expired}"),
                "get",
                "--raw",
                "/api/v1/namespaces/dev/pods",
            ],
        )
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("You must be logged in to the server") && stderr.contains("expired"),
        "{stderr}"
    );
    let record = stack
        .wait_for_record("a 401", |r| r["responseStatus"]["code"] == 401)
        .unwrap();
    assert_eq!(record["user"]["username"], "system:anonymous");
    assert!(
        !stack
            .upstream_requests()
            .iter()
            .any(|r| r.uri.contains("/namespaces/dev/pods")),
        "refused requests never reach the API server"
    );

    // Envoy itself refuses an encoded slash before the filter runs; the access
    // log still gets one JSON Event for it (access_log_records fails on any line
    // that is not JSON, such as the `-` Envoy writes for missing filter state).
    // curl sends the path as written (kubectl would decode the %2F first).
    let token = stack.token("developer").unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--path-as-is",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(&stack.pki.ca_cert)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!(
            "{}/api/v1/namespaces/dev/pods/web-0%2Fexec",
            stack.kube_server()
        ))
        .output()
        .expect("curl runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "400",
        "{}",
        text(&out)
    );
    let refused = stack
        .wait_for_record("the request Envoy refused", |r| {
            r["annotations"]["gatehouse.dev/refused-by"] == "envoy"
        })
        .unwrap();
    assert_eq!(refused["kind"], "Event");
    assert_eq!(refused["verb"], "get");
    assert_eq!(refused["responseStatus"]["code"], 400);
    assert!(
        refused["auditID"].as_str().is_some_and(|id| !id.is_empty()),
        "{refused}"
    );
}

#[test]
fn secrets_are_masked_for_developers_in_yaml_describe_and_lists() {
    let stack = stack("k8s-mask");
    for version in ["1.29", "1.33"] {
        for args in [
            &[
                "get",
                "secret",
                "db-credentials",
                "-n",
                "prod",
                "-o",
                "yaml",
            ][..],
            &["describe", "secret", "db-credentials", "-n", "prod"][..],
            &["get", "secrets", "-n", "prod", "-o", "json"][..],
        ] {
            let mut full = vec!["--context", "developer"];
            full.extend_from_slice(args);
            let out = stack.kubectl(version, &full).unwrap();
            let printed = succeeded(&out, &format!("kubectl {version} {args:?}"));
            assert!(
                !printed.contains("pr0d-S3cret!") && !printed.contains("cHIwZC1TM2NyZXQh"),
                "kubectl {version} {args:?} shows the secret:\n{printed}"
            );
        }
        let yaml = succeeded(
            &stack
                .kubectl(
                    version,
                    &[
                        "--context",
                        "developer",
                        "get",
                        "secret",
                        "db-credentials",
                        "-n",
                        "prod",
                        "-o",
                        "yaml",
                    ],
                )
                .unwrap(),
            "get secret",
        );
        assert!(
            yaml.contains("KioqKioqKio="),
            "masked values stay base64:\n{yaml}"
        );
    }
    let event = stack
        .wait_for_record("the masked secret read", |r| {
            r["objectRef"]["resource"] == "secrets"
                && r["annotations"]["gatehouse.dev/masked-fields"].is_string()
        })
        .unwrap();
    assert!(
        event["annotations"]["gatehouse.dev/masked-fields"]
            .as_str()
            .unwrap()
            .contains("data")
    );
    let read = stack
        .upstream_requests()
        .into_iter()
        .find(|r| r.uri.contains("/secrets/db-credentials"))
        .unwrap();
    assert!(read.header("accept-encoding").is_none());
    assert!(
        !read
            .header("accept")
            .unwrap_or_default()
            .contains("protobuf")
    );
}

#[test]
fn watched_pod_events_are_masked_as_they_stream_and_the_watch_is_recorded() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    // The default policy, plus the detectors over pod annotations.
    let mut config = gatehouse_integration::stack::default_kubernetes_filter_config();
    config["masking"]["fields"] =
        serde_json::json!([{"resources": ["pods"], "paths": ["metadata.annotations.*"]}]);
    let stack = Stack::start(
        "it",
        "k8s-watch",
        StackOptions {
            kubernetes_filter: config,
            ..StackOptions::default()
        },
    )
    .expect("stack starts");

    let mut watch =
        std::process::Command::new(gatehouse_integration::tools::kubectl(Some("1.33")).unwrap())
            .arg("--kubeconfig")
            .arg(&stack.kubeconfig)
            .args([
                "--context",
                "developer",
                "get",
                "pods",
                "web-0",
                "-n",
                "dev",
            ])
            .args(["--watch", "--output-watch-events", "-o", "json"])
            .env_remove("KUBECONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // kubectl prints each watch event as one line of JSON.
    let mut printed = String::new();
    let read_events = |want: usize, printed: &mut String| {
        while printed
            .lines()
            .filter(|l| l.starts_with("{\"type\":"))
            .count()
            < want
        {
            match lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    printed.push_str(&line);
                    printed.push('\n');
                }
                Err(_) => panic!("the watch printed fewer than {want} events:\n{printed}"),
            }
        }
    };
    read_events(1, &mut printed);

    let annotate = stack
        .kubectl(
            "1.33",
            &[
                "--context",
                "developer",
                "annotate",
                "pod",
                "web-0",
                "-n",
                "dev",
                "owner=alice@example.com",
            ],
        )
        .unwrap();
    succeeded(&annotate, "annotate the watched pod");
    read_events(2, &mut printed);
    let _ = watch.kill();
    let _ = watch.wait();

    assert!(
        printed.contains("{\"type\":\"ADDED\"") && printed.contains("{\"type\":\"MODIFIED\""),
        "{printed}"
    );
    assert!(
        !printed.contains("dev-Passw0rd!") && !printed.contains("alice@example.com"),
        "the streamed events show clear data:\n{printed}"
    );
    assert!(
        printed.contains("\"owner\":\"****\"") && printed.contains("\"value\":\"********\""),
        "annotations and env values arrive masked:\n{printed}"
    );

    let watched = stack
        .upstream_requests()
        .into_iter()
        .find(|r| r.uri.contains("/namespaces/dev/pods") && r.uri.contains("watch"))
        .expect("the watch reached the API server");
    assert!(
        !watched
            .header("accept")
            .unwrap_or_default()
            .contains("protobuf")
            && watched.header("accept-encoding").is_none(),
        "a masked watch is asked for uncompressed JSON"
    );
    let audit_id = watched.header("audit-id").unwrap().to_owned();
    let recorded = |stage: &str| {
        stack
            .wait_for_record(&format!("the watch's {stage} Event"), |r| {
                r["auditID"] == audit_id.as_str() && r["stage"] == stage
            })
            .unwrap()
    };
    let started = recorded("ResponseStarted");
    let complete = recorded("ResponseComplete");
    for event in [&started, &complete] {
        assert_eq!(event["verb"], "watch");
        assert_eq!(event["objectRef"]["resource"], "pods");
        assert_eq!(event["objectRef"]["namespace"], "dev");
        assert_eq!(event["user"]["username"], "developer");
        assert_eq!(event["responseStatus"]["code"], 200);
    }
    let masked = complete["annotations"]["gatehouse.dev/masked-fields"]
        .as_str()
        .unwrap_or_default();
    assert!(
        masked.contains("object.metadata.annotations.*")
            && masked.contains("object.spec.containers[].env[].value"),
        "the record names what was masked in the stream: {complete}"
    );
}

#[test]
fn the_filter_answers_its_readiness_path_itself() {
    let stack = stack("k8s-ready");
    let out = stack
        .kubectl(
            "1.33",
            &["--context", "developer", "get", "--raw", "/gatehouse/ready"],
        )
        .unwrap();
    let body: Value = serde_json::from_str(&succeeded(&out, "the readiness path")).unwrap();
    assert_eq!(body["status"], "Success");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("gatehouse ready: gatehouse kubernetes filter ")
            && message.contains("policy sha256:"),
        "{message}"
    );
    let record = stack
        .wait_for_record("the probe", |r| r["requestURI"] == "/gatehouse/ready")
        .unwrap();
    assert_eq!(record["responseStatus"]["code"], 200);
    assert_eq!(
        record["annotations"]["gatehouse.dev/rule"],
        "gatehouse:readiness"
    );
    assert!(
        !stack
            .upstream_requests()
            .iter()
            .any(|r| r.uri.contains("/gatehouse/ready")),
        "the API server never sees the probe"
    );
}

#[test]
fn whoami_and_can_i_are_answered_from_gatehouses_identity_and_policy() {
    let stack = stack("k8s-self-review");
    for version in ["1.29", "1.33"] {
        let whoami = stack
            .kubectl(version, &["--context", "developer", "auth", "whoami"])
            .unwrap();
        let whoami = succeeded(&whoami, "auth whoami");
        assert!(
            whoami.contains("developer") && whoami.contains("developers"),
            "kubectl {version}: {whoami}"
        );
        let can_i = |args: &[&str]| {
            let mut all = vec!["--context", "developer", "auth", "can-i"];
            all.extend_from_slice(args);
            stack.kubectl(version, &all).unwrap()
        };
        // kubectl exits 1 for "no" and prints the reason after it.
        let no = can_i(&["delete", "namespace/prod"]);
        assert_eq!(no.status.code(), Some(1), "{}", text(&no));
        assert_eq!(
            String::from_utf8_lossy(&no.stdout).trim(),
            "no - denied by gatehouse rule no-namespace-deletion: namespaces are deleted through the platform team, not kubectl"
        );
        let exec = can_i(&["create", "pods", "--subresource=exec", "-n", "prod"]);
        assert!(
            text(&exec).contains("needs approval under gatehouse rule prod-exec-needs-admin"),
            "{}",
            text(&exec)
        );
        let yes = can_i(&["get", "pods", "-n", "dev"]);
        assert_eq!(succeeded(&yes, "can-i get pods").trim(), "yes");
        let list = can_i(&["--list", "-n", "dev"]);
        let listed = text(&list);
        // kubectl merges the rules for every resource (`*.*`); the answer
        // is marked incomplete, naming the refusing rules that come first.
        assert!(
            listed.contains("*.*") && listed.contains("[/api]"),
            "kubectl {version}: {listed}"
        );
        assert!(
            listed.contains("incomplete") && listed.contains("no-namespace-deletion"),
            "kubectl {version}: {listed}"
        );
    }
    let reviews: Vec<Value> = events(&stack)
        .into_iter()
        .filter(|e| e["annotations"]["gatehouse.dev/rule"] == "gatehouse:self-review")
        .collect();
    assert_eq!(reviews.len(), 2 * 5, "every self-check is recorded");
    assert!(reviews.iter().all(|e| e["user"]["username"] == "developer"));
}
