//! Records as serialized validate against schemas/postgres-record.schema.json
//! and schemas/exec-record.schema.json.
//!
//! A small validator for the keywords those schemas use (type, required,
//! properties, enum, const, minimum, minLength, items, prefixItems, minItems,
//! maxItems, anyOf, allOf, if/then, `$ref` to `#/$defs/…`,
//! additionalProperties: false); `pattern` is checked only for `time` and the
//! digests.

// Test code: a failed unwrap or index is a failed test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use gatehouse_core::policy::Decision;
use gatehouse_core::record::*;
use serde_json::Value;

fn schema_named(name: &str) -> Value {
    let path = format!("{}/../../schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn schema() -> Value {
    schema_named("postgres-record.schema.json")
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_u64() || v.is_i64(),
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        _ => false,
    }
}

fn validate(root: &Value, s: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(reference) = s.get("$ref").and_then(Value::as_str) {
        let name = reference.strip_prefix("#/$defs/").unwrap();
        return validate(root, &root["$defs"][name], v, at, errors);
    }
    let Some(s) = s.as_object() else { return };
    if let Some(t) = s.get("type").and_then(Value::as_str)
        && !type_ok(t, v)
    {
        errors.push(format!("{at}: not {t}"));
        return;
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        errors.push(format!("{at}: {v} is not {c}"));
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errors.push(format!("{at}: {v} not in enum"));
    }
    if let Some(min) = s.get("minimum").and_then(Value::as_i64)
        && v.as_i64().is_some_and(|n| n < min)
    {
        errors.push(format!("{at}: below {min}"));
    }
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && v.as_str().is_some_and(|x| (x.len() as u64) < min)
    {
        errors.push(format!("{at}: shorter than {min}"));
    }
    if let Some(obj) = v.as_object() {
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(k) = r.as_str()
                && !obj.contains_key(k)
            {
                errors.push(format!("{at}: missing {k}"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, child) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => validate(root, ps, child, &format!("{at}.{k}"), errors),
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: unexpected {k}"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            validate(root, items, item, &format!("{at}[{i}]"), errors);
        }
    }
    if let (Some(prefix), Some(arr)) =
        (s.get("prefixItems").and_then(Value::as_array), v.as_array())
    {
        for (i, (schema, item)) in prefix.iter().zip(arr).enumerate() {
            validate(root, schema, item, &format!("{at}[{i}]"), errors);
        }
    }
    if let Some(arr) = v.as_array() {
        let len = arr.len() as u64;
        if s.get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|min| len < min)
            || s.get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|max| len > max)
        {
            errors.push(format!("{at}: {len} items"));
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|alt| {
            let mut e = Vec::new();
            validate(root, alt, v, at, &mut e);
            e.is_empty()
        })
    {
        errors.push(format!("{at}: matches no anyOf branch: {v}"));
    }
    for sub in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(cond) = sub.get("if") {
            let mut e = Vec::new();
            validate(root, cond, v, at, &mut e);
            if e.is_empty()
                && let Some(then) = sub.get("then")
            {
                validate(root, then, v, at, errors);
            }
        } else {
            validate(root, sub, v, at, errors);
        }
    }
}

fn errors_for(record: &Record) -> Vec<String> {
    let v: Value = serde_json::from_str(&record.to_json()).unwrap();
    let mut errors = Vec::new();
    let schema = schema();
    validate(&schema, &schema, &v, "$", &mut errors);
    let time = v["time"].as_str().unwrap_or("");
    if time.len() != 27 || !time.ends_with('Z') {
        errors.push(format!("$.time: {time}"));
    }
    errors
}

fn header(sequence: u64) -> RecordHeader {
    RecordHeader {
        schema: SCHEMA_VERSION,
        sequence,
        connection_id: 7,
        time: Timestamp(1_795_308_488_123_456),
        gatehouse_version: gatehouse_core::build::VERSION,
        policy_hash: Some(Shared(std::sync::Arc::from(
            gatehouse_core::config::config_hash(b"{}"),
        ))),
        mode: gatehouse_core::record::FilterMode::Enforce,
    }
}

fn client() -> Shared<PgClient> {
    PgClient {
        client_address: "10.0.0.1:5000".into(),
        database: "app".into(),
        user: "alice".into(),
        application_name: Some("psql".into()),
        identity: None,
    }
    .into()
}

fn statement() -> StatementRecord {
    StatementRecord {
        header: header(2),
        client: client(),
        protocol: PgProtocol::Extended,
        statement: Some(Shared::from("select $1")),
        statement_truncated: true,
        statement_name: Some("s1".into()),
        portal: None,
        kind: Some("SELECT".into()),
        category: None,
        parameters: Some(vec![
            ParameterValue::Null,
            ParameterValue::Text("x".into()),
            ParameterValue::Binary {
                base64: "AAE=".into(),
            },
            ParameterValue::Omitted { omitted_bytes: 9 },
        ]),
        function_oid: None,
        copy: Some(CopyDirection::Out),
        command_tag: Some("SELECT 1".into()),
        rows: Some(1),
        suspended: true,
        error: Some(StatementError {
            sqlstate: "42501".into(),
            message: "denied".into(),
            severity: "ERROR".into(),
        }),
        duration_us: 5,
        bytes_from_client: 10,
        bytes_to_client: 20,
        decision: Decision::allow(),
        approval: Some(gatehouse_core::approval::ApprovalRef {
            id: "apr-abcd1234".into(),
            grant: gatehouse_core::approval::GrantKind::SingleUse,
            approvers: vec!["dana".into()],
            forced: false,
            reason: Some("ticket 42".into()),
        }),
        access_reason: Some(Shared::from("ticket 42")),
        masking: Some(gatehouse_core::record::MaskingCounts {
            rules: [("customer-ssn".to_string(), 2)].into_iter().collect(),
            detectors: [("email".to_string(), 1)].into_iter().collect(),
            over_cap: 0,
            opaque: 3,
            limited: Some(gatehouse_core::record::LimitedResult {
                limit: "max_rows".into(),
                value: 1000,
                action: "truncate".into(),
                rows_withheld: 7,
            }),
            exempt: true,
        }),
    }
}

#[test]
fn every_record_kind_validates_against_the_schema() {
    let records = [
        Record::SessionStart(SessionStartRecord {
            header: header(1),
            client: client(),
            protocol_version: "3.0".into(),
            login_refusal: None,
        }),
        Record::Statement(Box::new(statement())),
        Record::SessionEnd(SessionEndRecord {
            header: header(3),
            client: client(),
            reason: EndReason::ClientTerminate,
            detail: None,
            statements: 1,
            errors: 1,
            denied: 0,
            masked: 2,
            bytes_from_client: 10,
            bytes_to_client: 20,
            duration_us: 9,
            backend_pid: Some(42),
            last_sequence: 3,
        }),
    ];
    for r in &records {
        assert_eq!(errors_for(r), Vec::<String>::new(), "{}", r.to_json());
    }
}

#[test]
fn the_schema_catches_a_record_that_breaks_it() {
    let mut broken = statement();
    broken.header.sequence = 0;
    let errors = errors_for(&Record::Statement(Box::new(broken)));
    assert_eq!(errors, vec!["$.sequence: below 1".to_string()]);
}

#[test]
fn every_approval_record_validates_against_its_schema() {
    use gatehouse_core::approval::record::ApprovalRecord;
    use gatehouse_core::approval::*;
    let who = |subject: &str, group: &str| Principal {
        subject: subject.into(),
        groups: vec![group.into()],
    };
    let requirement = ApprovalRequirement::from_value(
        serde_json::json!({"approvers": ["dba"], "approvals": 2, "break_glass": ["oncall"]}),
        Holding::NotPossible,
    )
    .unwrap();
    let mut request = ApprovalRequest::new(
        "apr-schema1".into(),
        NewRequest {
            id: None,
            rule: "customer-writes".into(),
            requirement,
            reason: Some("ticket 9".into()),
            target: Target::PostgresStatement {
                database: "shop".into(),
                role: "app".into(),
                statement: "DELETE FROM customers WHERE id = $1".into(),
                fingerprint: "delete from customers where id = ?".into(),
                statement_hash: grant::statement_hash(b"x", &[]),
            },
            grant_seconds: None,
        },
        who("developer", "developers"),
        1_795_308_488,
    )
    .unwrap();
    let mut lines =
        vec![ApprovalRecord::new(Event::Requested, &request, &request.requester, 1, 1).to_json()];
    let dana = who("dana", "dba");
    let erin = who("erin", "dba");
    for (sequence, by) in [(2, &dana), (3, &erin)] {
        let event = request
            .review(by, Verdict::Approve, Some("ok".into()), 1_795_308_489)
            .unwrap();
        lines.push(ApprovalRecord::new(event, &request, by, sequence, 2).to_json());
    }
    let hash = request.target.hash().unwrap().to_owned();
    let event = request.consume("developer", &hash, 1_795_308_490).unwrap();
    lines.push(ApprovalRecord::new(event, &request, &request.requester, 4, 3).to_json());
    let mut forced = request.clone();
    forced.state = State::Approved;
    forced.forced = true;
    lines.push(ApprovalRecord::new(Event::Approved, &forced, &forced.requester, 5, 4).to_json());
    let schema = schema_named("approval-record.schema.json");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap();
        let mut errors = Vec::new();
        validate(&schema, &schema, &v, "$", &mut errors);
        assert_eq!(errors, Vec::<String>::new(), "{line}");
    }
    let types: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        types,
        [
            "approval.requested",
            "approval.reviewed",
            "approval.approved",
            "approval.used",
            "approval.approved"
        ]
    );
    let mut broken: Value = serde_json::from_str(&lines[0]).unwrap();
    broken["request"]["state"] = "maybe".into();
    let mut errors = Vec::new();
    validate(&schema, &schema, &broken, "$", &mut errors);
    assert_eq!(
        errors,
        vec!["$.request.state: \"maybe\" not in enum".to_string()]
    );
}

/// Exec records as the chain seals them: every kind, with its optional fields.
fn exec_lines() -> Vec<String> {
    use gatehouse_core::exec_record::*;
    let mut chain = Chain::default();
    let groups = vec!["developers".to_owned()];
    let command = vec!["sh".to_owned()];
    let mut lines = Vec::new();
    let start = ExecRecord::SessionStart(SessionStart {
        header: header(
            &chain,
            "0f5cbb4c-8f6e-4b0e-9c7e-000000000001",
            "developer",
            1_795_308_488_123_456,
        ),
        groups: &groups,
        namespace: "dev",
        pod: "web-0",
        container: Some("app"),
        subresource: "exec",
        command: &command,
        tty: true,
        stdin: true,
        transport: "spdy",
        protocol: "v4.channel.k8s.io",
        rule: "exec-in-dev-recorded",
        policy_hash: Some("sha256:00"),
    });
    lines.push(chain.seal(&start));
    let events = vec![
        Event {
            offset_us: 0,
            code: EventCode::Resize,
            data: b"80x24".to_vec(),
        },
        Event {
            offset_us: 5,
            code: EventCode::Output,
            data: b"$ ".to_vec(),
        },
        Event {
            offset_us: 6,
            code: EventCode::ErrorOutput,
            data: vec![0xff],
        },
        Event {
            offset_us: 7,
            code: EventCode::Input,
            data: b"ls\r".to_vec(),
        },
        Event {
            offset_us: 8,
            code: EventCode::Marker,
            data: b"refused".to_vec(),
        },
        Event {
            offset_us: 9,
            code: EventCode::Status,
            data: b"{}".to_vec(),
        },
    ];
    let mut masking = Masking::default();
    masking.detectors.insert("email", 2);
    masking.typed_secrets = 1;
    let chunk = ExecRecord::Chunk(Chunk {
        header: header(
            &chain,
            "0f5cbb4c-8f6e-4b0e-9c7e-000000000001",
            "developer",
            1_795_308_488_123_456,
        ),
        events: &events,
        bytes: 10,
        masking: masking.clone(),
        truncated: true,
    });
    lines.push(chain.seal(&chunk));
    let line = ExecRecord::Command(Command {
        header: header(
            &chain,
            "0f5cbb4c-8f6e-4b0e-9c7e-000000000001",
            "developer",
            1_795_308_488_123_456,
        ),
        offset_us: 7,
        line: "rm -rf /",
        raw: "rm -rf /\r",
        uncertain: true,
        cancelled: true,
        secret: true,
        action: "deny",
        reason: Some("matches deny pattern"),
        masking,
    });
    lines.push(chain.seal(&line));
    let status = serde_json::json!({"metadata": {}, "status": "Success"});
    let end = ExecRecord::SessionEnd(SessionEnd {
        header: header(
            &chain,
            "0f5cbb4c-8f6e-4b0e-9c7e-000000000001",
            "developer",
            1_795_308_489_123_456,
        ),
        reason: "completed",
        detail: Some("detail"),
        duration_us: 1_000_000,
        status: Some(&status),
        exit_code: Some(0),
        stdin_bytes: 3,
        stdout_bytes: 2,
        stderr_bytes: 1,
        commands: 1,
        denied: 1,
        truncated: true,
        last_sequence: chain.next_sequence(),
    });
    lines.push(chain.seal(&end));
    lines
}

fn exec_errors(line: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(line).unwrap();
    let schema = schema_named("exec-record.schema.json");
    let mut errors = Vec::new();
    validate(&schema, &schema, &v, "$", &mut errors);
    let time = v["time"].as_str().unwrap_or("");
    if time.len() != 27 || !time.ends_with('Z') {
        errors.push(format!("$.time: {time}"));
    }
    for key in ["digest", "prev_digest"] {
        if let Some(digest) = v.get(key).and_then(Value::as_str)
            && !(digest.len() == 71
                && digest.starts_with("sha256:")
                && digest[7..]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        {
            errors.push(format!("$.{key}: {digest}"));
        }
    }
    errors
}

#[test]
fn every_exec_record_kind_validates_against_its_schema() {
    let lines = exec_lines();
    assert_eq!(lines.len(), 4);
    for line in &lines {
        assert_eq!(exec_errors(line), Vec::<String>::new(), "{line}");
    }
}

#[test]
fn the_exec_schema_catches_records_that_break_it() {
    let lines = exec_lines();
    let bad_event = lines[1].replacen("[5,\"o\",\"$ \"]", "[5,\"q\",\"$ \"]", 1);
    assert_eq!(
        exec_errors(&bad_event),
        vec!["$.events[1][1]: \"q\" not in enum".to_string()]
    );
    let bad_action = lines[2].replacen("\"action\":\"deny\"", "\"action\":\"block\"", 1);
    assert_eq!(
        exec_errors(&bad_action),
        vec!["$.action: \"block\" not in enum".to_string()]
    );
    let no_digest = lines[3].rsplit_once(",\"digest\"").unwrap().0.to_owned() + "}";
    assert_eq!(
        exec_errors(&no_digest),
        vec!["$: missing digest".to_string()]
    );
}
