//! Every configuration shipped under `envoy/` renders with the shared variable
//! map and passes `envoy --mode validate`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::envoy::{self, Envoy};
use gatehouse_integration::{
    configs::{self, EcdsGateway},
    scratch_dir, stack,
};

#[test]
fn every_shipped_bootstrap_passes_envoy_validation() {
    let dir = scratch_dir("it", "envoy-configs").unwrap();
    let vars = configs::vars(&dir).unwrap();
    let templates = configs::bootstrap_templates().unwrap();
    let names: Vec<String> = templates
        .iter()
        .filter_map(|t| t.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    for expected in [
        "gatehouse.yaml",
        "postgres.yaml",
        "kubernetes.yaml",
        "ecds.yaml",
        "shadow.yaml",
        "gatehouse-native.yaml",
        "postgres-native.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    for template in &templates {
        configs::validate_template(template, &vars, &dir).unwrap();
    }
}

#[test]
fn every_ecds_resource_renders_to_a_wasm_extension_config_with_local_code() {
    let dir = scratch_dir("it", "ecds-resources").unwrap();
    let vars = configs::vars(&dir).unwrap();
    let templates = configs::ecds_templates().unwrap();
    assert_eq!(templates.len(), configs::ECDS_RESOURCES.len());
    for template in templates {
        let rendered = configs::render_file(&template, &vars).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&rendered).unwrap();
        let resource = &doc["resources"][0];
        let config = &resource["typed_config"]["config"];
        assert_eq!(
            config["failure_policy"],
            "FAIL_RELOAD",
            "{}",
            template.display()
        );
        assert!(config["vm_config"]["code"]["remote"].is_null());
        let module = config["vm_config"]["code"]["local"]["filename"]
            .as_str()
            .unwrap();
        assert!(std::path::Path::new(module).is_file(), "{module}");
        assert_eq!(
            config["configuration"]["@type"],
            "type.googleapis.com/google.protobuf.StringValue"
        );
    }
}

/// `select 1` as superuser through Envoy's Postgres listener.
fn psql_through(port: u16) -> std::process::Output {
    std::process::Command::new(gatehouse_integration::tools::pg_client("psql").unwrap())
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!(
            "postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
        ))
        .args(["-c", "select 1"])
        .output()
        .unwrap()
}

/// Starts pgbench as superuser through Envoy's Postgres listener.
fn pgbench_through(port: u16, args: &[&str]) -> std::process::Child {
    std::process::Command::new(gatehouse_integration::tools::pg_client("pgbench").unwrap())
        .args(["-n", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(port.to_string())
        .args(args)
        .arg("postgres")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (bounded) until a stat reaches `at_least`.
fn wait_for_stat(envoy: &Envoy, name: &str, at_least: u64) {
    gatehouse_integration::process::wait_until(
        name,
        std::time::Duration::from_secs(30),
        || Ok(()),
        || envoy.stat(name).ok().flatten().unwrap_or(0) >= at_least,
    )
    .unwrap_or_else(|e| {
        let (_, stats) =
            envoy::http_get(&envoy.admin, "/stats?filter=extension_config_discovery").unwrap();
        panic!("{e}\n{stats}\n{}", envoy.log_tail(30))
    });
}

#[test]
fn ecds_rollout_under_pgbench_load_applies_new_versions_and_rejects_a_corrupt_module() {
    let dir = scratch_dir("it", "ecds-rollout").unwrap();
    let EcdsGateway {
        envoy,
        postgres,
        mut vars,
    } = EcdsGateway::start(&dir).unwrap();
    let port = envoy.listener_port("postgres").unwrap();
    let reload = "extension_config_discovery.network_filter.gatehouse_postgres.config_reload";
    let rejected = "extension_config_discovery.network_filter.gatehouse_postgres.update_rejected";
    wait_for_stat(&envoy, reload, 1);
    let out = psql_through(port);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{out:?}");

    // A new version (new vm_id) is applied under load: sessions open during the
    // rollout finish on the version they started with, sessions opened during
    // and after it run on the new one, and no transaction fails.
    let init =
        std::process::Command::new(gatehouse_integration::tools::pg_client("pgbench").unwrap())
            .args(["-i", "-q", "-s", "1", "-d"])
            .arg(postgres.direct_url("postgres"))
            .output()
            .unwrap();
    assert!(init.status.success(), "{init:?}");
    let long_lived = pgbench_through(port, &["-S", "-c", "2", "-j", "2", "-T", "6"]);
    let reconnecting = pgbench_through(port, &["-S", "-C", "-c", "1", "-T", "6"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    vars.insert("ECDS_VERSION", "v2".to_string());
    configs::write_ecds_resources(&vars).unwrap();
    wait_for_stat(&envoy, reload, 2);
    for (what, run) in [("long-lived", long_lived), ("reconnecting", reconnecting)] {
        let out = run.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{what} pgbench failed: {out:?}");
        assert!(
            text.contains("number of failed transactions: 0"),
            "{what}: {text}"
        );
    }
    let out = psql_through(port);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{out:?}");

    // A corrupt module is rejected and the filter keeps running on new sessions.
    let filtered = "wasmcustom.gatehouse_pg_connections_total";
    let filtered_before = envoy.stat(filtered).unwrap().unwrap_or(0);
    let corrupt = dir.join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm garbage").unwrap();
    vars.insert("ECDS_VERSION", "v3".to_string());
    vars.insert("PG_WASM", corrupt.display().to_string());
    configs::push_postgres_resource(&vars).unwrap();
    wait_for_stat(&envoy, rejected, 1);
    let out = psql_through(port);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{out:?}");
    assert!(
        envoy.stat(filtered).unwrap().unwrap_or(0) > filtered_before,
        "the session after the rejected update ran without the filter"
    );
}

#[test]
fn a_failed_module_vm_is_reloaded_and_records_keep_flowing() {
    let stack = stack::Stack::start(
        "it",
        "fail-reload",
        stack::StackOptions {
            extra_listeners: Some(envoy::record_producer_listener().unwrap()),
            ..stack::StackOptions::default()
        },
    )
    .unwrap();
    let port = stack.envoy.listener_port("test_record_producer").unwrap();
    let producer = format!("127.0.0.1:{port}");
    let produce =
        |session: &str| envoy::http_get(&producer, &format!("/produce?session={session}&count=3"));
    assert_eq!(produce("before").unwrap().0, 200);
    let delivered = |session: &str| {
        stack
            .wait_for_record(&format!("the {session} records"), |r| {
                r["type"] == "test.record" && r["session"] == session && r["sequence"] == 3
            })
            .unwrap();
    };
    delivered("before");

    // The module traps: the request fails, and with FAIL_RELOAD (the policy every
    // shipped configuration uses) a fresh VM serves the requests after it.
    let aborted = envoy::http_get(&producer, "/abort");
    assert!(
        aborted.as_ref().map_or(true, |(code, _)| *code >= 500),
        "the trapping request does not succeed: {aborted:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match produce("after") {
            Ok((200, _)) => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "the module never came back: {other:?}\n{}",
                stack.envoy.log_tail(30)
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    delivered("after");
}
