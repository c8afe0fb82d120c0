//! Real kubectl binaries against the stand-in, straight over plain HTTP.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test harness: a missing item or a failed unwrap is a failed test"
)]

mod common;

use common::{Kubectl, kubectl_dispatcher, wait_for_line};
use kube_standin::resources::PODS;
use kube_standin::{StandIn, Store};
use serde_json::json;

fn demo() -> StandIn {
    StandIn::start_demo().expect("stand-in starts")
}

#[test]
fn get_pods_across_namespaces_prints_a_table_with_1_33_and_1_29() {
    let server = demo();
    for version in ["1.33", "1.29"] {
        let out = Kubectl::new(version, server.addr()).ok(&["get", "pods", "-A"]);
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            "{version}:\n{out}"
        );
        assert_eq!(
            rows[1][..4],
            ["dev", "web-0", "1/1", "Running"],
            "{version}:\n{out}"
        );
        assert_eq!(
            rows[2][..4],
            ["prod", "web-0", "1/1", "Running"],
            "{version}:\n{out}"
        );
    }
    // 1.29 must have been answered with v2beta1 aggregated discovery, 1.33 with v2.
    let discovery: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path() == "/api")
        .collect();
    assert!(discovery.iter().all(|r| {
        r.header("accept")
            .is_some_and(|a| a.contains("apidiscovery.k8s.io"))
    }));
}

#[test]
fn namespaced_get_and_deployments_list() {
    let server = demo();
    let kubectl = Kubectl::new("1.33", server.addr());
    let pods = kubectl.ok(&["get", "pods", "-n", "dev"]);
    assert!(
        pods.contains("web-0") && pods.lines().count() == 2,
        "{pods}"
    );
    let wide = kubectl.ok(&["get", "pods", "-n", "dev", "-o", "wide"]);
    let row = wide.lines().nth(1).unwrap_or_default();
    assert!(row.ends_with("10.244.0.12   node-1"), "{wide}");
    let deployments = kubectl.ok(&["get", "deploy", "-A"]);
    assert!(
        deployments.contains("dev         web    1/1"),
        "{deployments}"
    );
    let namespaces = kubectl.ok(&["get", "ns", "-o", "name"]);
    assert_eq!(
        namespaces,
        "namespace/default\nnamespace/dev\nnamespace/kube-system\nnamespace/prod\n"
    );
}

#[test]
fn secret_yaml_and_describe_carry_the_masking_material() {
    let server = demo();
    let kubectl = Kubectl::new("1.33", server.addr());
    let yaml = kubectl.ok(&[
        "get",
        "secret",
        "db-credentials",
        "-n",
        "prod",
        "-o",
        "yaml",
    ]);
    assert!(yaml.contains("password: cHIwZC1TM2NyZXQh"), "{yaml}");
    assert!(
        yaml.contains("kubectl.kubernetes.io/last-applied-configuration"),
        "{yaml}"
    );
    let described = kubectl.ok(&["describe", "secret", "db-credentials", "-n", "prod"]);
    assert!(described.contains("password:  12 bytes"), "{described}");
    let pod = kubectl.ok(&[
        "get",
        "pod",
        "web-0",
        "-n",
        "prod",
        "-o",
        "jsonpath={.spec.containers[0].env[2]}",
    ]);
    assert_eq!(pod, r#"{"name":"DB_PASSWORD","value":"pr0d-S3cret!"}"#);
}

#[test]
fn missing_objects_render_as_apiserver_errors() {
    let server = demo();
    let kubectl = Kubectl::new("1.33", server.addr());
    let err = kubectl.fails(&["get", "pod", "nope", "-n", "dev"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): pods "nope" not found"#
    );
    let err = kubectl.fails(&["get", "deploy", "nope", "-n", "dev"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): deployments.apps "nope" not found"#
    );
    let err = kubectl.fails(&["create", "namespace", "dev"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (AlreadyExists): namespaces "dev" already exists"#
    );
}

#[test]
fn namespaces_are_created_and_deleted_for_real() {
    let server = demo();
    let kubectl = Kubectl::new("1.33", server.addr());
    assert_eq!(
        kubectl.ok(&["create", "namespace", "x"]).trim(),
        "namespace/x created"
    );
    kubectl.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "x",
        "--from-literal=mode=fast",
    ]);
    assert_eq!(
        kubectl.ok(&["delete", "ns", "x"]).trim(),
        r#"namespace "x" deleted"#
    );
    let err = kubectl.fails(&["get", "ns", "x"]);
    assert!(err.contains(r#"namespaces "x" not found"#), "{err}");
    let err = kubectl.fails(&["get", "configmap", "settings", "-n", "x"]);
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn typed_creates_arrive_as_protobuf_and_are_stored() {
    let server = demo();
    let kubectl = Kubectl::new("1.33", server.addr());
    kubectl.ok(&[
        "create",
        "configmap",
        "flags",
        "-n",
        "dev",
        "--from-literal=beta=on",
    ]);
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "token",
        "-n",
        "dev",
        "--from-literal=token=abc",
    ]);
    kubectl.ok(&[
        "create",
        "deployment",
        "api",
        "-n",
        "dev",
        "--image=nginx:1.27",
        "--replicas=2",
    ]);
    let data = kubectl.ok(&[
        "get",
        "cm",
        "flags",
        "-n",
        "dev",
        "-o",
        "jsonpath={.data.beta}",
    ]);
    assert_eq!(data, "on");
    let token = kubectl.ok(&[
        "get",
        "secret",
        "token",
        "-n",
        "dev",
        "-o",
        "jsonpath={.data.token}",
    ]);
    assert_eq!(token, "YWJj");
    let deployments = kubectl.ok(&["get", "deploy", "-A"]);
    assert!(
        deployments.contains("dev         api    2/2"),
        "{deployments}"
    );
    let image = kubectl.ok(&[
        "get",
        "deploy",
        "api",
        "-n",
        "dev",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "nginx:1.27");
    let posts: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert!(
        posts
            .iter()
            .any(|r| r.header("content-type") == Some("application/vnd.kubernetes.protobuf"))
    );
}

#[test]
fn label_and_annotate_apply_merge_patches() {
    let server = demo();
    let kubectl = Kubectl::new("1.33", server.addr());
    kubectl.ok(&["label", "pod", "web-0", "-n", "dev", "tier=front"]);
    kubectl.ok(&["annotate", "cm", "app-config", "-n", "dev", "owner=team-a"]);
    let labels = kubectl.ok(&[
        "get",
        "pod",
        "web-0",
        "-n",
        "dev",
        "-o",
        "jsonpath={.metadata.labels.tier}",
    ]);
    assert_eq!(labels, "front");
    let owner = server.with_store(|s| {
        s.get(&kube_standin::resources::CONFIGMAPS, "dev", "app-config")
            .map(|cm| cm["metadata"]["annotations"]["owner"].clone())
    });
    assert_eq!(owner.unwrap(), json!("team-a"));
}

#[test]
fn watch_prints_current_objects_then_later_changes() {
    let server = demo();
    let kubectl = Kubectl::new("1.33", server.addr());
    let (mut child, lines) =
        kubectl.spawn_lines(&["get", "pods", "-n", "dev", "-w", "--output-watch-events"]);
    wait_for_line(&lines, "web-0");
    server
        .with_store(|s| {
            s.create(
                &PODS,
                "dev",
                json!({"metadata": {"name": "late"}, "spec": {"containers": [{"name": "app"}]}}),
            )
        })
        .unwrap();
    let added = wait_for_line(&lines, "late");
    assert!(added.starts_with("ADDED"), "{added}");
    server
        .with_store(|s| s.delete(&PODS, "dev", "web-0"))
        .unwrap();
    let deleted = wait_for_line(&lines, "web-0");
    assert!(deleted.starts_with("DELETED"), "{deleted}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "kubectl get -w keeps running"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let watch = server
        .requests()
        .into_iter()
        .find(|r| r.uri.contains("watch=true"))
        .expect("a watch request");
    assert!(watch.uri.contains("resourceVersion="), "{}", watch.uri);
}

#[test]
fn watch_of_one_named_secret_uses_a_field_selector() {
    let server = demo();
    let kubectl = Kubectl::new("1.33", server.addr());
    let (mut child, lines) =
        kubectl.spawn_lines(&["get", "secret", "db-credentials", "-n", "prod", "-w"]);
    wait_for_line(&lines, "db-credentials");
    kubectl.ok(&["delete", "secret", "db-credentials", "-n", "prod"]);
    wait_for_line(&lines, "db-credentials");
    child.kill().unwrap();
    child.wait().unwrap();
    let watch = server
        .requests()
        .into_iter()
        .find(|r| r.uri.contains("watch=true"))
        .expect("a watch request");
    assert!(
        watch
            .uri
            .contains("fieldSelector=metadata.name%3Ddb-credentials"),
        "{}",
        watch.uri
    );
}

#[test]
fn exec_over_websocket_runs_the_command() {
    let server = demo();
    let kubectl = Kubectl::new("1.33", server.addr());
    let out = kubectl.ok(&["exec", "web-0", "-n", "dev", "--", "echo", "hi"]);
    assert_eq!(out, "hi\n");
    let exec = server
        .requests()
        .into_iter()
        .find(|r| r.path().ends_with("/exec"))
        .expect("exec request");
    assert_eq!(exec.method, "GET");
    assert_eq!(
        exec.header("sec-websocket-protocol"),
        Some("v5.channel.k8s.io")
    );
    assert!(exec.uri.contains("command=echo&command=hi"), "{}", exec.uri);
    let err = kubectl.fails(&["exec", "web-0", "-n", "dev", "-c", "nope", "--", "id"]);
    assert!(
        err.contains("container nope is not valid for pod web-0"),
        "{err}"
    );
}

#[test]
fn spdy_exec_from_1_29_runs_the_command() {
    let server = demo();
    let out = Kubectl::new("1.29", server.addr()).ok(&["exec", "web-0", "-n", "dev", "--", "id"]);
    assert_eq!(out, "uid=0(root) gid=0(root) groups=0(root)\n");
    let post = server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("SPDY POST");
    assert_eq!(post.header("upgrade"), Some("SPDY/3.1"));
}

/// A shell fed on stdin, over both transports: the commands' output, stderr
/// apart, and the exit code of `exit`.
#[test]
fn interactive_exec_reads_stdin_over_spdy_and_websocket() {
    use std::io::Write as _;
    use std::process::Stdio;
    let server = demo();
    for version in ["1.29", "1.33"] {
        let kubectl = Kubectl::new(version, server.addr());
        let mut child = kubectl
            .command(&["exec", "-i", "web-0", "-n", "dev", "--", "sh"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"hostname\ncat /nope\nexit 3\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "web-0\n",
            "{version}: {stderr}"
        );
        assert!(
            stderr.contains("cat: /nope: No such file or directory"),
            "{version}: {stderr}"
        );
        assert_eq!(out.status.code(), Some(3), "{version}: {stderr}");
    }
}

#[test]
fn logs_print_fixed_lines() {
    let server = demo();
    let kubectl = Kubectl::new("1.33", server.addr());
    let out = kubectl.ok(&["logs", "web-0", "-n", "prod"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.ends_with("web-0/app ready\n"), "{out}");
    let tail = kubectl.ok(&["logs", "web-0", "-n", "prod", "-f", "--tail=1"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
}

#[test]
fn impersonation_headers_are_recorded() {
    let server = demo();
    let kubectl = Kubectl::new("1.33", server.addr());
    kubectl.ok(&[
        "--token=t0ken",
        "--as=alice",
        "--as-group=devs",
        "--as-group=ops",
        "get",
        "pods",
        "-n",
        "dev",
    ]);
    let list = server
        .requests()
        .into_iter()
        .find(|r| r.path() == "/api/v1/namespaces/dev/pods")
        .expect("list request");
    // kubectl keeps bearer tokens off plain-HTTP servers; through Envoy (TLS) it sends them.
    assert_eq!(list.header("authorization"), None);
    assert_eq!(list.header("impersonate-user"), Some("alice"));
    assert_eq!(list.header_all("impersonate-group"), ["devs", "ops"]);
    assert!(
        list.header("accept")
            .is_some_and(|a| a.contains("as=Table"))
    );
}

#[test]
fn the_dispatcher_picks_its_client_from_the_version_minor() {
    let dispatcher = kubectl_dispatcher();
    let server = StandIn::start(
        Store::demo().with_version_minor(29),
        ([127, 0, 0, 1], 0).into(),
    )
    .unwrap();
    let out = Kubectl::with_binary(dispatcher, server.addr()).ok(&["version"]);
    assert!(out.contains("Client Version: v1.29."), "{out}");
    assert!(out.contains("Server Version: v1.29.2"), "{out}");
}

#[test]
fn apply_creates_then_patches_with_server_side_validation() {
    let server = demo();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("deploy.yaml");
    let write = |replicas: u32| {
        let yaml = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: api, namespace: prod}}\n\
             spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: api}}}}\n  template:\n    \
             metadata: {{labels: {{app: api}}}}\n    spec: {{containers: [{{name: app, image: nginx}}]}}\n"
        );
        std::fs::write(&manifest, yaml).unwrap();
    };
    let path = manifest.to_str().unwrap();
    for (version, replicas) in [("1.33", 2), ("1.29", 3)] {
        write(replicas);
        let out = Kubectl::new(version, server.addr()).ok(&["apply", "-f", path]);
        assert!(out.starts_with("deployment.apps/api "), "{version}: {out}");
    }
    let ready = Kubectl::new("1.33", server.addr()).ok(&[
        "get",
        "deploy",
        "api",
        "-n",
        "prod",
        "-o",
        "jsonpath={.status.readyReplicas}",
    ]);
    assert_eq!(ready, "3");
    let posts: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert!(
        posts[0].uri.contains("fieldValidation=Strict"),
        "{}",
        posts[0].uri
    );
    assert!(server.requests().iter().any(|r| r.method == "PATCH"));
}

/// The answers a masking gateway must read: subresources, writes, dry runs,
/// custom resources and ControllerRevisions, each served as kube-apiserver
/// serves them, every one carrying the namespace's password.
#[test]
fn subresources_writes_and_dry_runs_answer_with_the_object() {
    let server = demo();
    let kubectl = Kubectl::new("1.33", server.addr());
    let status = kubectl.ok(&[
        "get",
        "pod",
        "web-0",
        "-n",
        "dev",
        "--subresource=status",
        "-o",
        "json",
    ]);
    assert!(status.contains("dev-Passw0rd!"), "{status}");
    let patched = kubectl.ok(&[
        "patch",
        "pod",
        "web-0",
        "-n",
        "dev",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"message":"checked"}}"#,
        "-o",
        "json",
    ]);
    let patched: serde_json::Value = serde_json::from_str(&patched).unwrap();
    assert_eq!(patched["status"]["message"], "checked");
    assert_eq!(
        patched["spec"]["containers"][0]["env"][2]["value"],
        "dev-Passw0rd!"
    );
    // A status write changes the status alone.
    let ignored = kubectl.ok(&[
        "patch",
        "pod",
        "web-0",
        "-n",
        "dev",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(!ignored.contains("\"x\""), "{ignored}");

    let scaled = kubectl.ok(&["scale", "deployment", "web", "-n", "dev", "--replicas=3"]);
    assert!(scaled.contains("scaled"), "{scaled}");
    let replicas = kubectl.ok(&[
        "get",
        "deployment",
        "web",
        "-n",
        "dev",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "3");
    let scale = kubectl.ok(&[
        "get",
        "deployment",
        "web",
        "-n",
        "dev",
        "--subresource=scale",
        "-o",
        "json",
    ]);
    assert!(scale.contains("\"kind\": \"Scale\""), "{scale}");

    // Dry runs answer with the object and change nothing.
    let dry = kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "dry",
        "-n",
        "dev",
        "--from-literal=token=dry-S3cret",
        "--dry-run=server",
        "-o",
        "json",
    ]);
    assert!(dry.contains("ZHJ5LVMzY3JldA=="), "{dry}");
    kubectl.fails(&["get", "secret", "dry", "-n", "dev"]);
    let dry_patch = kubectl.ok(&[
        "label",
        "pod",
        "web-0",
        "-n",
        "dev",
        "dry=run",
        "--dry-run=server",
        "-o",
        "json",
    ]);
    assert!(dry_patch.contains("dev-Passw0rd!") && dry_patch.contains("\"dry\": \"run\""));
    let labels = kubectl.ok(&[
        "get",
        "pod",
        "web-0",
        "-n",
        "dev",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(!labels.contains("dry"), "{labels}");

    // ControllerRevisions and custom resources, in discovery and served.
    let revisions = kubectl.ok(&["get", "controllerrevisions", "-n", "prod", "-o", "json"]);
    assert!(revisions.contains("pr0d-S3cret!"), "{revisions}");
    let credential = kubectl.ok(&["get", "dbcred", "orders-db", "-n", "prod", "-o", "yaml"]);
    assert!(
        credential.contains("password: pr0d-S3cret!"),
        "{credential}"
    );
    let workflows = kubectl.ok(&["get", "workflows", "-A"]);
    assert!(workflows.contains("nightly"), "{workflows}");
    // An aggregated API that answers YAML whatever is asked: kubectl cannot
    // read it either.
    let reports = kubectl.fails(&["get", "reports", "-n", "prod", "-o", "json"]);
    assert!(
        reports.contains("serializer for application/yaml doesn't exist"),
        "{reports}"
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.uri.contains("dryRun=All") && r.method == "POST")
    );
}

#[test]
fn debug_adds_an_ephemeral_container_through_its_subresource() {
    let server = demo();
    let kubectl = Kubectl::new("1.33", server.addr());
    let out = kubectl.run(&[
        "debug",
        "web-0",
        "-n",
        "dev",
        "--image=busybox",
        "--container=debugger",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path().ends_with("/pods/web-0/ephemeralcontainers")),
        "{text}"
    );
    let ephemeral = kubectl.ok(&[
        "get",
        "pod",
        "web-0",
        "-n",
        "dev",
        "-o",
        "jsonpath={.spec.ephemeralContainers[0].name}",
    ]);
    assert_eq!(ephemeral, "debugger", "{text}");
}
