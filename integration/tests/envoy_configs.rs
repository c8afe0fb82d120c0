//! Every configuration shipped under `envoy/` renders with the shared variable
//! map and passes `envoy --mode validate`.

use gatehouse_integration::{configs, scratch_dir};

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
