//! The glue against a recording host: what it asks of the host for real
//! PostgreSQL bytes, and what it does when a host call fails.

use super::*;
use gatehouse_postgres::policy::PgPolicy;
use std::collections::BTreeMap;

/// A host that records every call; buffers are given per direction.
#[derive(Default)]
struct FakeHost {
    now: u64,
    buffers: BTreeMap<&'static str, Vec<u8>>,
    fail_read: bool,
    fail_replace: bool,
    replaced: Vec<(Direction, Vec<u8>)>,
    closed: u32,
    closed_after_write: u32,
    state: BTreeMap<String, String>,
    counters: BTreeMap<Counter, u64>,
    gauges: BTreeMap<Gauge, i64>,
    labelled: BTreeMap<String, u64>,
    records: Vec<serde_json::Value>,
    flushed: u32,
    deadlines: Vec<Option<u64>>,
    approval_calls: Vec<String>,
    approval_bodies: Vec<Vec<u8>>,
    approval_timeouts: Vec<Option<u64>>,
    fail_approval_call: bool,
    grants_in_use: Vec<String>,
    resumed: u32,
    injected: Vec<Vec<u8>>,
    redelivered: u32,
}

fn key(direction: Direction) -> &'static str {
    match direction {
        Direction::FromClient => "client",
        Direction::FromServer => "server",
    }
}

impl Host for FakeHost {
    fn now_us(&mut self) -> Result<u64, HostError> {
        self.now += 1;
        Ok(1_700_000_000_000_000 + self.now)
    }
    fn connection_id(&mut self) -> Result<u64, HostError> {
        Ok(42)
    }
    fn client_address(&mut self) -> Result<String, HostError> {
        Ok("127.0.0.1:5555".into())
    }
    fn read(&mut self, direction: Direction, size: usize) -> Result<Vec<u8>, HostError> {
        if self.fail_read {
            return Err(HostError("no buffer".into()));
        }
        let bytes = self
            .buffers
            .get(key(direction))
            .cloned()
            .unwrap_or_default();
        Ok(bytes[..size.min(bytes.len())].to_vec())
    }
    fn replace(
        &mut self,
        direction: Direction,
        size: usize,
        bytes: &[u8],
    ) -> Result<(), HostError> {
        if self.fail_replace {
            return Err(HostError("refused".into()));
        }
        self.replaced.push((direction, bytes.to_vec()));
        // As Envoy's buffer does: the first `size` bytes become `bytes`.
        let buffer = self.buffers.entry(key(direction)).or_default();
        let rest = buffer.split_off(size.min(buffer.len()));
        *buffer = [bytes, &rest].concat();
        Ok(())
    }
    fn close(&mut self) -> Result<(), HostError> {
        self.closed += 1;
        Ok(())
    }
    fn close_after_write(&mut self) {
        self.closed_after_write += 1;
    }
    fn set_filter_state(&mut self, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.state
            .insert(key.into(), String::from_utf8_lossy(value).into_owned());
        Ok(())
    }
    fn count(&mut self, counter: Counter, by: u64) {
        *self.counters.entry(counter).or_default() += by;
    }
    fn adjust_gauge(&mut self, gauge: Gauge, delta: i64) {
        *self.gauges.entry(gauge).or_default() += delta;
    }
    fn set_gauge(&mut self, gauge: Gauge, value: u64) {
        self.gauges.insert(gauge, value as i64);
    }
    fn record(&mut self, _: HistogramStat, _: u64) {}
    fn count_labelled(&mut self, family: Family, class: &'static str, name: &str, by: u64) {
        *self
            .labelled
            .entry(family.stat_name(class, name))
            .or_default() += by;
    }
    fn emit_record(&mut self, line: &str, _: u64) {
        self.records.push(serde_json::from_str(line).unwrap());
    }
    fn flush_records(&mut self) {
        self.flushed += 1;
    }
    fn log(&mut self, _: Level, _: &str) {}
    fn login_deadline(&mut self, deadline_us: Option<u64>) {
        self.deadlines.push(deadline_us);
    }
    fn approval_call(
        &mut self,
        path: &str,
        body: &[u8],
        timeout_ms: Option<u64>,
    ) -> Result<u32, HostError> {
        if self.fail_approval_call {
            return Err(HostError("no such cluster".into()));
        }
        self.approval_calls.push(path.to_owned());
        self.approval_bodies.push(body.to_vec());
        self.approval_timeouts.push(timeout_ms);
        Ok(u32::try_from(self.approval_calls.len()).unwrap_or(u32::MAX))
    }
    fn share_grant_use(&mut self, id: &str) {
        self.grants_in_use.push(id.to_owned());
    }
    fn resume_client(&mut self) -> Result<(), HostError> {
        self.resumed += 1;
        Ok(())
    }
    fn inject_client(&mut self, bytes: &[u8]) -> Result<(), HostError> {
        self.injected.push(bytes.to_vec());
        Ok(())
    }
    fn redeliver_client(&mut self) -> Result<(), HostError> {
        self.redelivered += 1;
        Ok(())
    }
}

fn setup() -> Setup {
    Setup {
        config: Arc::new(EngineConfig::default()),
        policy: None,
        masking: None,
        policy_hash: None,
        mode: FilterMode::Enforce,
        login: None,
        buffered_high_water: Arc::default(),
        approvals: None,
    }
}

fn startup(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for part in ["user", user, "database", database] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Sends `bytes` from one side through the glue.
fn deliver(glue: &mut PgConnection, host: &mut FakeHost, direction: Direction, bytes: Vec<u8>) {
    let size = bytes.len();
    host.buffers.insert(key(direction), bytes);
    assert_eq!(glue.on_data(host, direction, size, false), Flow::Continue);
}

#[test]
fn a_session_reaches_stats_filter_state_and_records() {
    let mut host = FakeHost::default();
    let mut glue = PgConnection::new(setup());
    glue.on_new_connection(&mut host);
    assert_eq!(
        host.state["gatehouse_build"],
        gatehouse_core::build::VERSION
    );
    assert_eq!(host.gauges[&Gauge::SessionsActive], 1);

    deliver(
        &mut glue,
        &mut host,
        Direction::FromClient,
        startup("app", "shop"),
    );
    let mut login = message(b'R', &0u32.to_be_bytes());
    login.extend(message(b'Z', b"I"));
    deliver(&mut glue, &mut host, Direction::FromServer, login);
    deliver(
        &mut glue,
        &mut host,
        Direction::FromClient,
        message(b'Q', b"select 1\0"),
    );
    let mut answer = message(b'C', b"SELECT 1\0");
    answer.extend(message(b'Z', b"I"));
    deliver(&mut glue, &mut host, Direction::FromServer, answer);
    glue.on_close(&mut host, CloseReason::Client);

    assert_eq!(host.state["gatehouse_pg_user"], "app");
    assert_eq!(host.state["gatehouse_pg_database"], "shop");
    assert_eq!(host.state["gatehouse_pg_statements"], "1");
    assert_eq!(host.counters[&Counter::Statements], 1);
    assert_eq!(host.counters[&Counter::Connections], 1);
    assert!(host.counters[&Counter::ClientBytes] > 0);
    assert_eq!(host.gauges[&Gauge::SessionsActive], 0);
    let types: Vec<&str> = host
        .records
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["pg.session_start", "pg.statement", "pg.session_end"]
    );
    assert_eq!(host.records[1]["connection_id"], 42);
    assert_eq!(host.counters[&Counter::Records], 3);
    assert_eq!(
        host.labelled["gatehouse_pg_decisions_action=.=allow;.;rule=.=default;.;total"],
        1
    );
    assert!(host.flushed > 0, "the last records go at close");
    assert!(
        host.replaced.is_empty(),
        "nothing to rewrite without policies"
    );
}

#[test]
fn a_buffer_the_host_cannot_read_closes_the_connection_unobserved_bytes_never_pass() {
    let mut host = FakeHost {
        fail_read: true,
        ..FakeHost::default()
    };
    let mut glue = PgConnection::new(setup());
    glue.on_new_connection(&mut host);
    let _ = glue.on_data(&mut host, Direction::FromClient, 8, false);
    assert_eq!(host.closed, 1);
    assert_eq!(host.counters[&Counter::HostErrors], 1);
    assert!(glue.closing());
}

#[test]
fn a_refused_rewrite_closes_the_connection() {
    let mut host = FakeHost {
        fail_replace: true,
        ..FakeHost::default()
    };
    let mut glue = PgConnection::new(setup());
    glue.on_new_connection(&mut host);
    // A client that speaks before its startup message is refused: the engine
    // rewrites, the host will not, so the connection goes.
    deliver(
        &mut glue,
        &mut host,
        Direction::FromClient,
        message(b'Q', b"select 1\0"),
    );
    assert!(host.closed + host.closed_after_write >= 1);
    assert!(host.counters[&Counter::HostErrors] >= 1);
}

#[test]
fn end_of_stream_bytes_follow_the_events_output() {
    let replaced = merge(
        Verdict {
            forward: Forward::Replace(b"ab".to_vec()),
            close_connection: false,
        },
        b"xyz",
        Verdict {
            forward: Forward::Replace(b"E".to_vec()),
            close_connection: true,
        },
    );
    assert_eq!(replaced.forward, Forward::Replace(b"abE".to_vec()));
    assert!(replaced.close_connection);
    let appended = merge(
        unchanged(),
        b"xyz",
        Verdict {
            forward: Forward::Replace(b"E".to_vec()),
            close_connection: false,
        },
    );
    assert_eq!(appended.forward, Forward::Replace(b"xyzE".to_vec()));
    let unchanged = merge(unchanged(), b"xyz", unchanged());
    assert_eq!(unchanged.forward, Forward::Unchanged);
}

#[test]
fn stat_names_are_the_ones_both_builds_define() {
    assert_eq!(
        Family::MaskedByDetector { shadow: true }.stat_name("", "email"),
        "gatehouse_pg_shadow_masked_by_detector_detector=.=email;.;total"
    );
    let names: std::collections::BTreeSet<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(names.len(), Counter::ALL.len());
}

/// A worker whose policy asks approval for deletes, with a published
/// single-use grant for `sql` run by `developer`.
fn approvals_setup(sql: &str) -> Setup {
    use gatehouse_core::approval::grant::statement_hash;
    use gatehouse_core::approval::{Grant, GrantBook, GrantKind, GrantsDocument, Principal};
    let policy = Arc::new(
        PgPolicy::from_json(
            br#"{"default": {"action": "allow"}, "rules": [{"name": "deletes",
                "action": "require_approval", "approval": {"approvers": ["dba"]},
                "match": {"kinds": ["delete"]}}]}"#,
        )
        .unwrap(),
    );
    let book = Rc::new(RefCell::new(GrantBook::default()));
    book.borrow_mut().update(GrantsDocument {
        grants: vec![Grant {
            id: "apr-granted1".into(),
            rule: "deletes".into(),
            subject: "developer".into(),
            kind: GrantKind::SingleUse,
            hash: Some(statement_hash(sql.as_bytes(), &[])),
            // Ten minutes past the fake host's clock, within the rule's validity.
            until: 1_700_000_600,
            approvers: vec![Principal {
                subject: "dba".into(),
                groups: vec!["dba".into()],
            }],
            forced: false,
            reason: None,
        }],
        pending: vec![],
        ..GrantsDocument::default()
    });
    Setup {
        policy: Some(CachedPolicy::new(
            Arc::clone(&policy),
            Rc::new(RefCell::new(Default::default())),
        )),
        approvals: Some(Approvals {
            policy,
            book,
            holds: false,
        }),
        ..setup()
    }
}

/// A session of `developer` past its login, with its statement sent: the
/// flow of that data event.
fn run_granted_statement(glue: &mut PgConnection, host: &mut FakeHost, sql: &str) -> Flow {
    glue.on_new_connection(host);
    deliver(
        glue,
        host,
        Direction::FromClient,
        startup("developer", "shop"),
    );
    let mut login = message(b'R', &0u32.to_be_bytes());
    login.extend(message(b'Z', b"I"));
    deliver(glue, host, Direction::FromServer, login);
    let query = message(b'Q', format!("{sql}\0").as_bytes());
    let size = query.len();
    host.buffers.insert(key(Direction::FromClient), query);
    glue.on_data(host, Direction::FromClient, size, false)
}

#[test]
fn a_statement_on_a_single_use_grant_waits_for_the_service_to_confirm_its_use() {
    let sql = "delete from t where id = 1";
    let mut host = FakeHost::default();
    let mut glue = PgConnection::new(approvals_setup(sql));
    assert_eq!(run_granted_statement(&mut glue, &mut host, sql), Flow::Hold);
    assert_eq!(host.approval_calls, ["/v1/requests/apr-granted1/consume"]);
    assert_eq!(host.grants_in_use, ["apr-granted1"]);
    // More bytes while held stay held; an unrelated answer releases nothing.
    let mut more = host.buffers[&key(Direction::FromClient)].clone();
    more.extend(message(b'Q', b"select 1\0"));
    let size = more.len();
    host.buffers.insert(key(Direction::FromClient), more);
    assert_eq!(
        glue.on_data(&mut host, Direction::FromClient, size, false),
        Flow::Hold
    );
    glue.on_approval_answer(&mut host, 99, 200, b"");
    assert_eq!(host.resumed, 0);
    glue.on_approval_answer(&mut host, 1, 200, b"");
    assert_eq!(host.resumed, 1);
    assert_eq!(host.closed, 0);
}

#[test]
fn a_failed_filing_is_forgotten_so_the_next_run_files_anew() {
    let sql = "delete from t where id = 3";
    let mut host = FakeHost::default();
    // The grant is for another statement: this one needs a request.
    let mut glue = PgConnection::new(approvals_setup("delete from t where id = 4"));
    // The refusal naming the request waits until the service has it: a
    // client leaving at once would otherwise take the filing with it.
    assert_eq!(run_granted_statement(&mut glue, &mut host, sql), Flow::Hold);
    assert_eq!(host.approval_calls, ["/v1/requests"]);
    glue.on_approval_answer(&mut host, 99, 201, b"");
    assert_eq!(host.resumed, 0, "another call's answer releases nothing");
    // The service refused it: the refusal goes on, and a retry files anew.
    glue.on_approval_answer(&mut host, 1, 503, b"");
    assert_eq!((host.resumed, host.closed), (1, 0));
    let send = |glue: &mut PgConnection, host: &mut FakeHost, sql: &str| {
        let query = message(b'Q', format!("{sql}\0").as_bytes());
        let size = query.len();
        host.buffers.insert(key(Direction::FromClient), query);
        glue.on_data(host, Direction::FromClient, size, false)
    };
    assert_eq!(send(&mut glue, &mut host, sql), Flow::Hold);
    assert_eq!(host.approval_calls.len(), 2);
    // Filed: retries name it, without a call.
    glue.on_approval_answer(&mut host, 2, 201, b"");
    assert_eq!(host.resumed, 2);
    assert_eq!(send(&mut glue, &mut host, sql), Flow::Continue);
    assert_eq!(host.approval_calls.len(), 2);
    // A filing that cannot even start is forgotten too.
    let other = "delete from t where id = 5";
    host.fail_approval_call = true;
    assert_eq!(send(&mut glue, &mut host, other), Flow::Continue);
    host.fail_approval_call = false;
    assert_eq!(send(&mut glue, &mut host, other), Flow::Hold);
    assert_eq!(host.approval_calls.len(), 3);
}

#[test]
fn a_use_the_service_refuses_ends_the_connection_with_the_statement_still_held() {
    let sql = "delete from t where id = 2";
    let mut host = FakeHost::default();
    let mut glue = PgConnection::new(approvals_setup(sql));
    assert_eq!(run_granted_statement(&mut glue, &mut host, sql), Flow::Hold);
    glue.on_approval_answer(&mut host, 1, 409, b"");
    assert_eq!(host.resumed, 0);
    assert_eq!(host.closed, 1);
}

/// A session of `developer` past its login whose `delete` statements need
/// approval, held for up to 2 s (the native build's host).
fn holding_session(host: &mut FakeHost) -> PgConnection {
    let policy = Arc::new(
        PgPolicy::from_json(
            br#"{"default": {"action": "allow"}, "rules": [{"name": "deletes",
                "action": "require_approval",
                "approval": {"approvers": ["dba"], "hold": "2s"},
                "match": {"kinds": ["delete"]}}]}"#,
        )
        .unwrap(),
    );
    let mut glue = PgConnection::new(Setup {
        policy: Some(CachedPolicy::new(
            Arc::clone(&policy),
            Rc::new(RefCell::new(Default::default())),
        )),
        approvals: Some(Approvals {
            policy,
            book: Rc::default(),
            holds: true,
        }),
        ..setup()
    });
    glue.on_new_connection(host);
    deliver(
        &mut glue,
        host,
        Direction::FromClient,
        startup("developer", "shop"),
    );
    let mut login = message(b'R', &0u32.to_be_bytes());
    login.extend(message(b'Z', b"I"));
    deliver(&mut glue, host, Direction::FromServer, login);
    glue
}

fn query(sql: &str) -> Vec<u8> {
    message(b'Q', format!("{sql}\0").as_bytes())
}

/// The service's answer to hold call `n` (from 1): the request it filed,
/// approved by a dba and used up for the statement.
fn approved_and_used(host: &FakeHost, n: usize) -> Vec<u8> {
    use gatehouse_core::approval::{ApprovalRequest, NewRequest, Principal, Verdict};
    let body: serde_json::Value = serde_json::from_slice(&host.approval_bodies[n - 1]).unwrap();
    let new: NewRequest = serde_json::from_value(body["request"].clone()).unwrap();
    let requester: Principal = serde_json::from_value(body["requester"].clone()).unwrap();
    let id = new.id.clone().unwrap();
    let hash = new.target.hash().unwrap().to_owned();
    let mut request = ApprovalRequest::new(id, new, requester, 1_700_000_000).unwrap();
    let dba = Principal {
        subject: "dana".into(),
        groups: vec!["dba".into()],
    };
    request
        .review(&dba, Verdict::Approve, None, 1_700_000_001)
        .unwrap();
    request.consume("developer", &hash, 1_700_000_001).unwrap();
    serde_json::to_vec(&request).unwrap()
}

#[test]
fn a_held_statement_and_what_the_client_sent_after_it_go_on_in_order_once_approved() {
    let mut host = FakeHost::default();
    let mut glue = holding_session(&mut host);
    let delete = query("delete from t where id = 1");
    // The held statement leaves nothing in Envoy's buffer: reading goes on.
    deliver(&mut glue, &mut host, Direction::FromClient, delete.clone());
    assert!(glue.holds_statement());
    assert_eq!(host.replaced.last().unwrap().1, b"");
    assert_eq!(host.approval_calls, ["/v1/requests?wait_ms=2000"]);
    assert_eq!(host.approval_timeouts, [Some(7_000)]);
    // What the client sends meanwhile waits in Envoy's buffer, unread.
    let after = query("select 2");
    host.buffers
        .insert(key(Direction::FromClient), after.clone());
    let replaced = host.replaced.len();
    assert_eq!(
        glue.on_data(&mut host, Direction::FromClient, after.len(), false),
        Flow::Hold
    );
    assert_eq!(host.replaced.len(), replaced);
    // Approved: Envoy hands the buffer again, and the statement goes ahead
    // of what waited there.
    let answer = approved_and_used(&host, 1);
    glue.on_approval_answer(&mut host, 1, 200, &answer);
    assert!(!glue.holds_statement());
    assert_eq!((host.redelivered, host.injected.len()), (1, 0));
    assert_eq!(
        glue.on_data(&mut host, Direction::FromClient, after.len(), false),
        Flow::Continue
    );
    assert_eq!(
        host.buffers[key(Direction::FromClient)],
        [delete, after].concat()
    );
    assert_eq!(host.closed, 0);
}

#[test]
fn a_refused_hold_with_nothing_waiting_is_sent_at_once_and_the_session_goes_on() {
    let mut host = FakeHost::default();
    let mut glue = holding_session(&mut host);
    deliver(
        &mut glue,
        &mut host,
        Direction::FromClient,
        query("delete from t where id = 1"),
    );
    // No answer from the service: the at-once refusal, sent on its own.
    glue.on_approval_answer(&mut host, 1, 0, b"");
    assert_eq!((host.redelivered, host.injected.len()), (0, 1));
    let refusal = String::from_utf8_lossy(&host.injected[0]).into_owned();
    assert!(refusal.contains("42501") && refusal.contains("is pending; once approved"));
    assert!(!refusal.contains("delete from t"));
    // The next statement is read as usual.
    deliver(
        &mut glue,
        &mut host,
        Direction::FromClient,
        query("select 1"),
    );
    assert_eq!(host.closed, 0);
}

#[test]
fn a_hold_whose_call_cannot_start_is_refused_in_the_same_event() {
    let mut host = FakeHost::default();
    let mut glue = holding_session(&mut host);
    host.fail_approval_call = true;
    let sent = [query("select 1"), query("delete from t where id = 1")].concat();
    deliver(&mut glue, &mut host, Direction::FromClient, sent);
    assert!(!glue.holds_statement());
    let out = String::from_utf8_lossy(&host.buffers[key(Direction::FromClient)]).into_owned();
    assert!(out.starts_with("Q\0\0\0\rselect 1\0"), "{out}");
    assert!(out.contains("is pending; once approved") && !out.contains("delete from t"));
    assert!(host.injected.is_empty());
}
