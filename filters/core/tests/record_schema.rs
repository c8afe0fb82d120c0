//! Records as serialized validate against schemas/postgres-record.schema.json.
//!
//! A small validator for the keywords that schema uses (type, required,
//! properties, enum, const, minimum, minLength, items, anyOf, allOf, if/then,
//! additionalProperties: false); `pattern` is checked only for `time`.

// Test code: a failed unwrap or index is a failed test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use gatehouse_core::policy::Decision;
use gatehouse_core::record::*;
use serde_json::Value;

fn schema() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/postgres-record.schema.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
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

fn validate(s: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
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
                Some(ps) => validate(ps, child, &format!("{at}.{k}"), errors),
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: unexpected {k}"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            validate(items, item, &format!("{at}[{i}]"), errors);
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|alt| {
            let mut e = Vec::new();
            validate(alt, v, at, &mut e);
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
            validate(cond, v, at, &mut e);
            if e.is_empty()
                && let Some(then) = sub.get("then")
            {
                validate(then, v, at, errors);
            }
        } else {
            validate(sub, v, at, errors);
        }
    }
}

fn errors_for(record: &Record) -> Vec<String> {
    let v: Value = serde_json::from_str(&record.to_json()).unwrap();
    let mut errors = Vec::new();
    validate(&schema(), &v, "$", &mut errors);
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

fn approval_schema() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/approval-record.schema.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
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
    let schema = approval_schema();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap();
        let mut errors = Vec::new();
        validate(&schema, &v, "$", &mut errors);
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
    validate(&schema, &broken, "$", &mut errors);
    assert_eq!(
        errors,
        vec!["$.request.state: \"maybe\" not in enum".to_string()]
    );
}
