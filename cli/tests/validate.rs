//! `gatehouse validate` run as a program: what it prints and how it exits.

mod common;

use common::{example, examples, file, gatehouse};

/// Shipped examples that hold one part of the Postgres filter configuration.
const PART_EXAMPLES: &[(&str, &str)] = &[("postgres-masking.json", "masking")];

#[test]
fn every_shipped_example_validates() {
    let mut seen = 0;
    for path in examples() {
        let part = PART_EXAMPLES
            .iter()
            .find(|(name, _)| path.ends_with(name))
            .map(|(_, part)| *part);
        let run = match part {
            Some(part) => gatehouse(&["validate", "--part", part, &path]),
            None => gatehouse(&["validate", &path]),
        };
        assert_eq!(run.code, 0, "{path}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stdout.starts_with(&format!("{path}: ok (")),
            "{}",
            run.stdout
        );
        seen += 1;
    }
    assert!(seen >= 2, "the examples directory holds the demo policies");
}

#[test]
fn demo_policies_are_recognised_by_their_content() {
    let run = gatehouse(&[
        "validate",
        &example("postgres-policy.json"),
        &example("kubernetes-policy.json"),
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("postgres-policy.json: ok (postgres-policy, policy version default-2026-11)")
    );
    assert!(
        run.stdout
            .contains("kubernetes-policy.json: ok (kubernetes, policy version default-2026-11)")
    );
}

#[test]
fn every_bad_rule_of_a_postgres_policy_is_reported_with_its_path() {
    let path = file(
        "pg-policy-bad-rules",
        r#"{
  "default": {"action": "maybe"},
  "rules": [
    {"name": "fine", "action": "allow"},
    {"name": "typo", "action": "allw"},
    {"name": "kind", "action": "deny", "match": {"kinds": ["selct"]}},
    {"name": "fine", "action": "deny"}
  ]
}"#,
    );
    let run = gatehouse(&["validate", "--kind", "postgres-policy", &path]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{path}: default.action: unknown action \"maybe\" (expected allow, deny, observe or require_approval)"
            ),
            format!(
                "{path}: rules[1].action: unknown action \"allw\" (expected allow, deny, observe or require_approval)"
            ),
            format!("{path}: rules[2].match.kinds[0]: unknown statement kind \"selct\""),
            format!("{path}: rules[3].name: duplicate rule name \"fine\""),
        ]
    );
}

#[test]
fn postgres_filter_problems_are_reported_under_each_part() {
    let path = file(
        "pg-filter-bad-parts",
        r#"{"engine": {"max_buffered_bytes": 1}, "policy": {"rules": [{"name": "x", "action": "nah"}]}}"#,
    );
    let run = gatehouse(&["validate", &path]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let paths: Vec<&str> = run
        .stdout
        .lines()
        .map(|line| line.split(": ").nth(1).expect("a path"))
        .collect();
    assert_eq!(
        paths,
        ["engine.max_buffered_bytes", "policy.rules[0].action"]
    );
}

#[test]
fn unknown_top_level_keys_are_reported_at_the_root_with_their_position() {
    let path = file("pg-filter-unknown-key", "{\n  \"engnie\": {}\n}");
    let run = gatehouse(&["validate", "--kind", "postgres-filter", &path]);
    assert_eq!(run.code, 1);
    let line = run.stdout.lines().next().expect("one problem");
    assert!(
        line.starts_with(&format!("{path}: (root): unknown field `engnie`")),
        "{line}"
    );
    assert!(line.ends_with("at line 2 column 10"), "{line}");
}

#[test]
fn kubernetes_problems_in_rules_and_settings_are_all_reported() {
    let path = file(
        "k8s-bad",
        r#"{
  "rules": [
    {"name": "list", "action": "allow", "match": {"verbs": ["lst"]}},
    {"name": "", "action": "allow"}
  ],
  "upstream": {"bearer_token": "a", "header": {"name": "x-token", "value": "b"}},
  "masking": {"mask_text": ""}
}"#,
    );
    let run = gatehouse(&["validate", &path]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{path}: rules[0].match.verbs[0]: unknown verb \"lst\""),
            format!("{path}: rules[1].name: must not be empty"),
            format!("{path}: upstream: set either bearer_token or header, not both"),
            format!("{path}: masking.mask_text: must be 1 to 256 bytes"),
        ]
    );
}

#[test]
fn a_part_file_is_checked_as_that_part_with_paths_relative_to_the_file() {
    let path = file("pg-engine-part-bad", r#"{"max_buffered_bytes": 1}"#);
    let run = gatehouse(&["validate", "--part", "engine", &path]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .starts_with(&format!("{path}: max_buffered_bytes: must be")),
        "{}",
        run.stdout
    );
    let good = file("pg-engine-part-good", r#"{"redact_literals": true}"#);
    let run = gatehouse(&["validate", "--part", "engine", &good]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        format!("{good}: ok (postgres-filter part engine)\n")
    );
}

#[test]
fn a_syntax_error_is_invalid_and_names_its_position() {
    let path = file("syntax", "{\"rules\": [\n");
    let run = gatehouse(&["validate", &path]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.starts_with(&format!("{path}: (root): ")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("line 2"), "{}", run.stdout);
}

#[test]
fn one_invalid_file_among_valid_ones_fails_the_run() {
    let bad = file(
        "one-bad",
        r#"{"rules": [{"name": "r", "action": "allw", "match": {"kinds": ["select"]}}]}"#,
    );
    let run = gatehouse(&["validate", &example("postgres-policy.json"), &bad]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("postgres-policy.json: ok"));
    assert!(run.stdout.contains(&format!("{bad}: rules[0].action: ")));
}

#[test]
fn unreadable_files_and_bad_arguments_are_usage_errors() {
    let missing = gatehouse(&["validate", "/nonexistent/gatehouse.json"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .contains("cannot read /nonexistent/gatehouse.json")
    );
    assert_eq!(gatehouse(&["validate"]).code, 2);
    assert_eq!(
        gatehouse(&["validate", "--kind", "mysql", "x.json"]).code,
        2
    );
    assert_eq!(gatehouse(&["validate", "--bogus", "x.json"]).code, 2);
}

#[test]
fn a_document_of_no_recognisable_kind_asks_for_kind() {
    let path = file("unknown-kind", r#"{"something": "else"}"#);
    let run = gatehouse(&["validate", &path]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--kind"), "{}", run.stderr);
}

#[test]
fn the_filter_mode_is_shown_and_an_unknown_mode_is_reported_at_mode() {
    let shadow = file("pg-filter-shadow", r#"{"mode": "shadow"}"#);
    let run = gatehouse(&["validate", "--kind", "postgres-filter", &shadow]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("ok (postgres-filter, mode shadow)"),
        "{}",
        run.stdout
    );
    let policy = std::fs::read_to_string(example("kubernetes-policy.json")).unwrap();
    let kube = file(
        "kube-shadow",
        &policy.replacen('{', r#"{"mode": "shadow", "#, 1),
    );
    let run = gatehouse(&["validate", "--kind", "kubernetes", &kube]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(", mode shadow)"), "{}", run.stdout);
    let bad = file("pg-filter-bad-mode", r#"{"mode": "observe"}"#);
    let run = gatehouse(&["validate", "--kind", "postgres-filter", &bad]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(": mode: unknown variant `observe`"),
        "{}",
        run.stdout
    );
    let run = gatehouse(&[
        "validate",
        "--kind",
        "kubernetes",
        &file("kube-bad-mode", r#"{"mode": 1}"#),
    ]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(": mode: "), "{}", run.stdout);
}
