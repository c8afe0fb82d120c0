//! The parsed log, what each record says about who and where, and selection.

use serde_json::Value;

/// One record: the parsed object and its line as written.
#[derive(Debug, Clone)]
pub struct Record {
    pub value: Value,
    pub line: String,
}

/// The parsed log.
#[derive(Debug, Default)]
pub struct Log {
    pub records: Vec<Record>,
    pub skipped: usize,
}

impl Log {
    pub fn parse(text: &str) -> Self {
        let mut log = Log::default();
        for line in text.lines() {
            log.push_line(line);
        }
        log
    }

    /// Adds one line (blank lines are ignored); returns the record it made.
    pub fn push_line(&mut self, line: &str) -> Option<&Record> {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(value) if value.is_object() => {
                self.records.push(Record {
                    value,
                    line: line.to_owned(),
                });
                self.records.last()
            }
            _ => {
                self.skipped += 1;
                None
            }
        }
    }

    /// The records `select` picks, in log order.
    pub fn select(&self, select: &Selection) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| select.matches(&r.value))
            .collect()
    }

    /// Records of one Postgres session, by connection id.
    pub fn session(&self, connection_id: &str) -> Vec<&Value> {
        self.records
            .iter()
            .map(|r| &r.value)
            .filter(|r| session_id(r).as_deref() == Some(connection_id))
            .collect()
    }
}

/// Which records to show. Every option given must match; `--group` repeated
/// matches any of the groups.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Selection {
    /// The verified caller: a Postgres token's subject, a Kubernetes Event's user.
    #[arg(long, visible_alias = "identity", value_name = "NAME")]
    pub subject: Option<String>,
    /// A group of the verified caller (repeat for any of several).
    #[arg(long, value_name = "GROUP")]
    pub group: Vec<String>,
    /// The Postgres database role the session logged in as (not an identity:
    /// many people may share a role).
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// One session: a Postgres connection id, or a recorded exec or attach
    /// session's audit ID.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
}

impl Selection {
    pub fn matches(&self, record: &Value) -> bool {
        let who = Who::of(record);
        self.subject
            .as_deref()
            .is_none_or(|s| who.subject.as_deref() == Some(s))
            && (self.group.is_empty() || who.groups.iter().any(|g| self.group.contains(g)))
            && self
                .role
                .as_deref()
                .is_none_or(|role| who.role.as_deref() == Some(role))
            && self
                .session
                .as_deref()
                .is_none_or(|id| any_session_id(record).as_deref() == Some(id))
    }
}

/// Who a record is about.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Who {
    /// The verified subject (`None` for a Postgres session without token login).
    pub subject: Option<String>,
    pub groups: Vec<String>,
    /// The Postgres database role.
    pub role: Option<String>,
}

impl Who {
    pub fn of(record: &Value) -> Who {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        if is_kubernetes(record) {
            let user = &record["user"];
            return Who {
                subject: user["username"].as_str().map(str::to_owned),
                groups: strings(&user["groups"]),
                role: None,
            };
        }
        if is_exec(record) {
            // Every record of a recorded session names its caller; the first
            // also names their groups.
            return Who {
                subject: record["user"].as_str().map(str::to_owned),
                groups: strings(&record["groups"]),
                role: None,
            };
        }
        if is_postgres(record) {
            let identity = &record["identity"];
            return Who {
                subject: identity["subject"].as_str().map(str::to_owned),
                groups: strings(&identity["groups"]),
                role: record["user"].as_str().map(str::to_owned),
            };
        }
        Who::default()
    }

    /// `developer (app)`, `role app` without a verified subject, or `-`.
    pub fn short(&self) -> String {
        match (&self.subject, &self.role) {
            (Some(subject), Some(role)) => format!("{subject} ({role})"),
            (Some(subject), None) => subject.clone(),
            (None, Some(role)) => format!("role {role}"),
            (None, None) => "-".to_owned(),
        }
    }
}

/// A gatehouse Postgres record (not Envoy's per-connection `pg.connection` line).
pub fn is_postgres(record: &Value) -> bool {
    record["type"]
        .as_str()
        .is_some_and(|t| t.starts_with("pg.") && t != "pg.connection")
}

/// A Kubernetes audit Event.
pub fn is_kubernetes(record: &Value) -> bool {
    record["kind"] == "Event"
}

/// A record of a recorded exec or attach session (`k8s.exec.*`).
pub fn is_exec(record: &Value) -> bool {
    record["type"]
        .as_str()
        .is_some_and(|t| t.starts_with("k8s.exec."))
}

/// A recorded exec or attach session's id: the request's audit ID.
pub fn exec_session_id(record: &Value) -> Option<String> {
    if !is_exec(record) {
        return None;
    }
    record["session"].as_str().map(str::to_owned)
}

/// The session a record belongs to: a Postgres connection or a recorded
/// exec or attach session.
pub fn any_session_id(record: &Value) -> Option<String> {
    session_id(record).or_else(|| exec_session_id(record))
}

/// A Postgres record's connection id, as text.
pub fn session_id(record: &Value) -> Option<String> {
    if !is_postgres(record) {
        return None;
    }
    match &record["connection_id"] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Values masked for the client in a `pg.statement` (none when the identity
/// is exempt: then the counts say what would have been masked).
pub fn masked_values(record: &Value) -> u64 {
    let masking = &record["masking"];
    if masking["exempt"] == true {
        return 0;
    }
    masking_total(masking)
}

/// Every count in a `masking` object.
pub fn masking_total(masking: &Value) -> u64 {
    let sum = |v: &Value| {
        v.as_object()
            .map_or(0, |o| o.values().filter_map(Value::as_u64).sum::<u64>())
    };
    sum(&masking["rules"]) + sum(&masking["detectors"]) + masking["over_cap"].as_u64().unwrap_or(0)
}

/// Whether a statement's decision refused it.
pub fn denied(record: &Value) -> bool {
    matches!(
        record["decision"]["action"].as_str(),
        Some("deny" | "require_approval")
    ) && record["mode"] != "shadow"
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A token-login session: refused statement, masked read, a Kubernetes
    /// Event of the same person, and a refused login.
    pub const LOG: &str = r#"{"type":"pg.session_start","schema":1,"sequence":1,"connection_id":7,"time":"2026-12-07T01:00:00.000000Z","user":"app","database":"shop","client_address":"127.0.0.1:5000","identity":{"subject":"developer","groups":["developers"],"issuer":"https://idp","verified":true,"expires_at":1900000000}}
{"type":"pg.connection","connection_id":"7"}
not json
{"type":"pg.statement","schema":1,"sequence":2,"connection_id":7,"time":"2026-12-07T01:00:01.000000Z","user":"app","database":"shop","identity":{"subject":"developer","groups":["developers"]},"statement":"select email from customers","command_tag":"SELECT 2","rows":2,"duration_us":5,"decision":{"action":"allow","rule":"team-read"},"masking":{"rules":{"customer-email":2},"detectors":{"email":1}}}
{"type":"pg.statement","schema":1,"sequence":3,"connection_id":7,"time":"2026-12-07T01:00:02.000000Z","user":"app","database":"shop","identity":{"subject":"developer","groups":["developers"]},"statement":"drop table orders","error":{"sqlstate":"42501","message":"no DDL","severity":"ERROR"},"duration_us":5,"decision":{"action":"deny","rule":"no-ddl","message":"no DDL"}}
{"type":"pg.session_end","schema":1,"sequence":4,"connection_id":7,"time":"2026-12-07T01:00:03.000000Z","user":"app","database":"shop","client_address":"127.0.0.1:5000","identity":{"subject":"developer","groups":["developers"]},"reason":"client_terminate","statements":2,"errors":1,"denied":1,"masked":3,"last_sequence":4}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","verb":"delete","requestURI":"/api/v1/namespaces/prod","objectRef":{"resource":"namespaces","name":"prod"},"user":{"username":"developer","groups":["developers"]},"responseStatus":{"code":403},"stageTimestamp":"2026-12-07T01:00:04.000000Z","annotations":{"authorization.k8s.io/decision":"forbid","gatehouse.dev/rule":"no-namespace-deletion"}}
{"type":"pg.session_end","schema":1,"sequence":1,"connection_id":9,"time":"2026-12-07T01:00:05.000000Z","user":"postgres","database":"shop","client_address":"127.0.0.1:5001","reason":"authentication_failed","detail":"token refused: expired","statements":0,"errors":0,"last_sequence":1}
{"type":"pg.statement","schema":1,"sequence":2,"connection_id":11,"time":"2026-12-07T01:00:06.000000Z","user":"postgres","database":"shop","identity":{"subject":"dba","groups":["dba"]},"statement":"select ssn from customers","command_tag":"SELECT 1","rows":1,"duration_us":5,"decision":{"action":"allow","rule":"dba-all"},"masking":{"rules":{"customer-ssn":1},"exempt":true}}"#;

    fn select(select: Selection) -> Vec<String> {
        Log::parse(LOG)
            .select(&select)
            .iter()
            .map(|r| {
                r.value["type"]
                    .as_str()
                    .or(r.value["kind"].as_str())
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn records_are_selected_by_verified_subject_group_role_and_session() {
        let log = Log::parse(LOG);
        assert_eq!(log.skipped, 1);
        let by_subject = select(Selection {
            subject: Some("developer".into()),
            ..Selection::default()
        });
        assert_eq!(
            by_subject,
            [
                "pg.session_start",
                "pg.statement",
                "pg.statement",
                "pg.session_end",
                "Event"
            ],
            "the person's Postgres records and their Kubernetes Event, not the role's"
        );
        let by_role = select(Selection {
            role: Some("app".into()),
            ..Selection::default()
        });
        assert_eq!(by_role.len(), 4, "Postgres records of the role only");
        assert!(
            select(Selection {
                subject: Some("app".into()),
                ..Selection::default()
            })
            .is_empty(),
            "a role is not a subject"
        );
        let by_groups = select(Selection {
            group: vec!["nobody".into(), "dba".into()],
            ..Selection::default()
        });
        assert_eq!(by_groups, ["pg.statement"]);
        let by_session = select(Selection {
            session: Some("9".into()),
            ..Selection::default()
        });
        assert_eq!(by_session, ["pg.session_end"]);
    }

    #[test]
    fn masked_values_leave_out_exempt_identities() {
        let log = Log::parse(LOG);
        let counts: Vec<u64> = log
            .records
            .iter()
            .filter(|r| r.value["type"] == "pg.statement")
            .map(|r| masked_values(&r.value))
            .collect();
        assert_eq!(counts, [3, 0, 0]);
    }
}
