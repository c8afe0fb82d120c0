//! The glue against a recording host: what it asks of the host for real
//! requests under the example policy, and what it does when a host call fails.

use super::*;
use gatehouse_core::approval::GrantBook;
use gatehouse_core::identity::JwsAlgorithm;
use gatehouse_core::identity::testing::Minter;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

const NOW: i64 = 1_790_000_000;
const ISSUER: &str = "https://idp.gatehouse.test";
const AUDIT: &str = "gatehouse_k8s_audit";

/// A host that records every call; `fail` names the calls that fail.
#[derive(Default)]
struct FakeHost {
    clock: u64,
    fail: BTreeSet<&'static str>,
    request: Vec<(String, String)>,
    response: Vec<(String, String)>,
    client_body: Vec<u8>,
    server_body: Vec<u8>,
    replaced: Vec<(Direction, Vec<u8>)>,
    state: BTreeMap<String, String>,
    sent: Vec<(u16, String)>,
    resumed: u32,
    resets: u32,
    key_fetches: Vec<String>,
    /// Whether a key fetch starts (else the host could not dispatch it).
    fetch_starts: bool,
    approval_calls: Vec<String>,
    counters: BTreeMap<Counter, u64>,
    labelled: BTreeMap<String, u64>,
    records: Vec<String>,
    logs: Vec<String>,
    /// Host calls made, by method.
    calls: BTreeMap<&'static str, u32>,
}

impl FakeHost {
    fn check(&mut self, call: &'static str) -> Result<(), HostError> {
        self.tally(call);
        if self.fail.contains(call) {
            Err(HostError(format!("{call} refused")))
        } else {
            Ok(())
        }
    }

    fn tally(&mut self, call: &'static str) {
        *self.calls.entry(call).or_default() += 1;
    }

    fn total_calls(&self) -> u32 {
        self.calls.values().sum()
    }

    fn headers(&mut self, map: Headers) -> &mut Vec<(String, String)> {
        match map {
            Headers::Request => &mut self.request,
            Headers::Response => &mut self.response,
        }
    }

    fn counter(&self, counter: Counter) -> u64 {
        self.counters.get(&counter).copied().unwrap_or_default()
    }

    /// The audit Events last written to filter state, one per line.
    fn events(&self) -> Vec<Value> {
        self.state
            .get(AUDIT)
            .map(|text| {
                text.lines()
                    .map(|line| serde_json::from_str(line).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn last_event_code(&self) -> u64 {
        let events = self.events();
        events.last().unwrap()["responseStatus"]["code"]
            .as_u64()
            .unwrap()
    }
}

impl Host for FakeHost {
    fn now_us(&mut self) -> Result<u64, HostError> {
        self.check("now_us")?;
        self.clock += 1;
        Ok(u64::try_from(NOW).unwrap() * 1_000_000 + self.clock)
    }
    fn request_headers(&mut self) -> Result<Vec<(String, String)>, HostError> {
        self.check("request_headers")?;
        Ok(self.request.clone())
    }
    fn header(&mut self, map: Headers, name: &str) -> Result<Option<String>, HostError> {
        self.check("header")?;
        Ok(self
            .headers(map)
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone()))
    }
    fn set_header(&mut self, map: Headers, name: &str, value: &str) -> Result<(), HostError> {
        self.check("set_header")?;
        let headers = self.headers(map);
        headers.retain(|(k, _)| k != name);
        headers.push((name.to_owned(), value.to_owned()));
        Ok(())
    }
    fn add_header(&mut self, map: Headers, name: &str, value: &str) -> Result<(), HostError> {
        self.check("add_header")?;
        self.headers(map).push((name.to_owned(), value.to_owned()));
        Ok(())
    }
    fn remove_header(&mut self, map: Headers, name: &str) -> Result<(), HostError> {
        self.check("remove_header")?;
        self.headers(map).retain(|(k, _)| k != name);
        Ok(())
    }
    fn peer_address(&mut self) -> Result<Option<String>, HostError> {
        self.check("peer_address")?;
        Ok(Some("10.0.0.7:5555".to_owned()))
    }
    fn read_body(&mut self, direction: Direction, size: usize) -> Result<Vec<u8>, HostError> {
        self.check("read_body")?;
        let body = match direction {
            Direction::FromClient => &self.client_body,
            Direction::FromServer => &self.server_body,
        };
        Ok(body[..size.min(body.len())].to_vec())
    }
    fn replace_body(
        &mut self,
        direction: Direction,
        _: usize,
        bytes: &[u8],
    ) -> Result<(), HostError> {
        self.check("replace_body")?;
        self.replaced.push((direction, bytes.to_vec()));
        Ok(())
    }
    fn send_response(&mut self, status: u16, json_body: &[u8]) -> Result<(), HostError> {
        self.check("send_response")?;
        self.sent
            .push((status, String::from_utf8_lossy(json_body).into_owned()));
        Ok(())
    }
    fn resume_request(&mut self) -> Result<(), HostError> {
        self.check("resume_request")?;
        self.resumed += 1;
        Ok(())
    }
    fn reset_stream(&mut self) -> Result<(), HostError> {
        self.check("reset_stream")?;
        self.resets += 1;
        Ok(())
    }
    fn set_filter_state(&mut self, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.check("set_filter_state")?;
        self.state
            .insert(key.to_owned(), String::from_utf8_lossy(value).into_owned());
        Ok(())
    }
    fn approval_call(
        &mut self,
        _: &ApprovalServiceConfig,
        method: &str,
        path: &str,
        _: &[u8],
        _: u64,
    ) -> Result<u32, HostError> {
        self.check("approval_call")?;
        self.approval_calls.push(format!("{method} {path}"));
        Ok(100 + u32::try_from(self.approval_calls.len()).unwrap())
    }
    fn adopt_shared_keys(&mut self, _: &mut Verifier) -> bool {
        false
    }
    fn start_key_fetch(&mut self, _: &mut Verifier, fetch: &KeyFetch, _: i64) -> Option<u32> {
        self.key_fetches.push(fetch.issuer.clone());
        self.fetch_starts
            .then(|| u32::try_from(self.key_fetches.len()).unwrap())
    }
    fn count(&mut self, counter: Counter, by: u64) {
        self.tally("count");
        *self.counters.entry(counter).or_default() += by;
    }
    fn record(&mut self, _: HistogramStat, _: u64) {
        self.tally("record");
    }
    fn count_labelled(&mut self, family: Family, class: &'static str, name: &str, by: u64) {
        self.tally("count_labelled");
        *self
            .labelled
            .entry(format!("{}{{{class},{name}}}", family.name()))
            .or_default() += by;
    }
    fn emit_record(&mut self, line: &str, _: u64) {
        self.tally("emit_record");
        self.records.push(line.to_owned());
    }
    fn log(&mut self, _: Level, message: &str) {
        self.tally("log");
        self.logs.push(message.to_owned());
    }
}

fn minter() -> Minter {
    Minter::generate(JwsAlgorithm::Es256, ISSUER, "gatehouse", "k1").unwrap()
}

/// A worker on the example policy, with `extra` configuration merged in.
fn worker(host: &mut FakeHost, extra: Value) -> Worker {
    let mut config: Value =
        serde_json::from_str(include_str!("../../../examples/kubernetes-policy.json")).unwrap();
    if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), extra) {
        config.extend(extra);
    }
    Worker::configure(host, 7, config.to_string().as_bytes()).unwrap()
}

/// [`worker`] with the issuer's keys loaded, as if fetched.
fn warm_worker(host: &mut FakeHost, minter: &Minter, extra: Value) -> Worker {
    let mut worker = worker(host, extra);
    worker
        .gate_mut()
        .verifier_mut()
        .unwrap()
        .keys_fetched(ISSUER, minter.jwks_json().as_bytes(), NOW)
        .unwrap();
    worker
}

/// A host whose request is `method path` from a developer.
fn developer_request(minter: &Minter, method: &str, path: &str) -> FakeHost {
    let token = minter
        .mint(&json!({"sub": "dana", "groups": ["developers"]}), 600, NOW)
        .unwrap();
    FakeHost {
        request: vec![
            (":method".into(), method.into()),
            (":path".into(), path.into()),
            ("authorization".into(), format!("Bearer {token}")),
        ],
        fetch_starts: true,
        ..FakeHost::default()
    }
}

#[test]
fn an_unconfigured_worker_refuses_with_a_recorded_503() {
    let mut host = FakeHost {
        request: vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/api/v1/namespaces/dev/pods".into()),
        ],
        ..FakeHost::default()
    };
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(None, &mut host, true),
        Flow::Pause
    );
    assert_eq!(host.sent.len(), 1);
    assert_eq!(host.sent[0].0, 503);
    assert!(host.sent[0].1.contains("not configured"), "{:?}", host.sent);
    assert_eq!(host.last_event_code(), 503);
    assert_eq!(
        host.events()[0]["requestURI"],
        "/api/v1/namespaces/dev/pods"
    );
    assert_eq!(host.counter(Counter::Denied), 1);
}

#[test]
fn a_request_waits_for_at_most_two_key_fetches_then_gets_a_recorded_401() {
    let minter = minter();
    let mut host = developer_request(&minter, "GET", "/api/v1/namespaces/dev/pods");
    let mut worker = worker(&mut host, json!({}));
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(Some(&mut worker), &mut host, true),
        Flow::Pause
    );
    assert_eq!(host.key_fetches, [ISSUER]);
    // An answer for another call is not this request's.
    assert!(!request.on_keys_answer(Some(&mut worker), &mut host, 99));
    // The answers bring no keys (another worker's fetch is still out).
    assert!(request.on_keys_answer(Some(&mut worker), &mut host, 1));
    assert_eq!(host.key_fetches.len(), 2);
    assert!(host.sent.is_empty());
    assert!(request.on_keys_answer(Some(&mut worker), &mut host, 2));
    assert_eq!(host.key_fetches.len(), 2, "no third fetch");
    assert_eq!(host.sent.len(), 1);
    assert_eq!(host.sent[0].0, 401);
    assert!(host.sent[0].1.contains("signing keys"), "{:?}", host.sent);
    assert_eq!(host.last_event_code(), 401);
    assert_eq!(host.counter(Counter::Unauthenticated), 1);
    assert_eq!(host.resumed, 0, "a refused request is not resumed");
}

#[test]
fn key_fetches_that_cannot_start_end_in_one_event_with_a_recorded_401() {
    let minter = minter();
    let mut host = developer_request(&minter, "GET", "/api/v1/namespaces/dev/pods");
    host.fetch_starts = false;
    let mut worker = worker(&mut host, json!({}));
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(Some(&mut worker), &mut host, true),
        Flow::Pause
    );
    assert_eq!(host.key_fetches.len(), usize::from(MAX_FETCHES_PER_REQUEST));
    assert_eq!(host.sent.len(), 1);
    assert_eq!(host.sent[0].0, 401);
    assert_eq!(host.last_event_code(), 401);
}

#[test]
fn keys_that_arrive_let_the_held_request_go_on_without_its_credential() {
    let minter = minter();
    let mut host = developer_request(&minter, "GET", "/api/v1/namespaces/dev/pods");
    let mut worker = worker(&mut host, json!({}));
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(Some(&mut worker), &mut host, true),
        Flow::Pause
    );
    // The host applies the fetched set before handing the answer on.
    worker
        .gate_mut()
        .verifier_mut()
        .unwrap()
        .keys_fetched(ISSUER, minter.jwks_json().as_bytes(), NOW)
        .unwrap();
    assert!(request.on_keys_answer(Some(&mut worker), &mut host, 1));
    assert_eq!(host.resumed, 1);
    assert!(host.sent.is_empty());
    assert!(!host.request.iter().any(|(k, _)| k == "authorization"));
    assert!(
        host.request
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("impersonate-user") && v == "dana"),
        "{:?}",
        host.request
    );
    assert_eq!(
        host.labelled
            .get("gatehouse_k8s_decisions_total{allow,team-dev-and-prod}"),
        Some(&1),
        "{:?}",
        host.labelled
    );
}

#[test]
fn a_denied_request_is_answered_with_its_record_and_decision() {
    let minter = minter();
    let mut host = developer_request(&minter, "DELETE", "/api/v1/namespaces/dev");
    let mut worker = warm_worker(&mut host, &minter, json!({}));
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(Some(&mut worker), &mut host, true),
        Flow::Pause
    );
    assert_eq!(host.sent[0].0, 403);
    assert_eq!(host.last_event_code(), 403);
    assert_eq!(host.counter(Counter::Denied), 1);
    assert_eq!(
        host.labelled
            .get("gatehouse_k8s_decisions_total{deny,no-namespace-deletion}"),
        Some(&1),
        "{:?}",
        host.labelled
    );
}

#[test]
fn shadow_decisions_are_counted_apart() {
    let minter = minter();
    let mut host = developer_request(&minter, "DELETE", "/api/v1/namespaces/dev");
    let mut worker = warm_worker(&mut host, &minter, json!({"mode": "shadow"}));
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(Some(&mut worker), &mut host, true),
        Flow::Continue
    );
    assert!(host.sent.is_empty());
    assert_eq!(
        host.labelled
            .get("gatehouse_k8s_shadow_decisions_total{deny,no-namespace-deletion}"),
        Some(&1),
        "{:?}",
        host.labelled
    );
    host.response = vec![(":status".into(), "200".into())];
    assert_eq!(
        request.on_response_headers(Some(&mut worker), &mut host, true),
        Flow::Continue
    );
    assert!(host.state.contains_key("gatehouse_k8s_audit_shadow"));
    assert!(!host.state.contains_key(AUDIT), "{:?}", host.state);
}

#[test]
fn every_failed_host_call_on_a_forwarded_request_is_counted_and_logged() {
    let minter = minter();
    let mut host = developer_request(&minter, "GET", "/api/v1/namespaces/dev/pods");
    let mut worker = warm_worker(&mut host, &minter, json!({}));
    host.fail = [
        "peer_address",
        "remove_header",
        "set_header",
        "add_header",
        "set_filter_state",
    ]
    .into();
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(Some(&mut worker), &mut host, true),
        Flow::Continue
    );
    // The build stamp, the peer, the credential's removal, one set header.
    assert!(
        host.counter(Counter::HostErrors) >= 4,
        "{:?}",
        host.counters
    );
    assert_eq!(
        host.counter(Counter::HostErrors),
        u64::try_from(host.logs.len()).unwrap(),
        "{:?}",
        host.logs
    );
    for what in ["gatehouse_build", "peer address", "authorization"] {
        assert!(
            host.logs.iter().any(|line| line.contains(what)),
            "{what}: {:?}",
            host.logs
        );
    }
    // The response's record fails to be written too: counted again.
    let before = host.counter(Counter::HostErrors);
    host.response = vec![(":status".into(), "200".into())];
    assert_eq!(
        request.on_response_headers(Some(&mut worker), &mut host, true),
        Flow::Continue
    );
    assert_eq!(host.counter(Counter::HostErrors), before + 1);
}

#[test]
fn a_failed_local_answer_and_clock_are_counted() {
    let minter = minter();
    let mut host = developer_request(&minter, "DELETE", "/api/v1/namespaces/dev");
    let mut worker = warm_worker(&mut host, &minter, json!({}));
    host.fail = ["send_response"].into();
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(Some(&mut worker), &mut host, true),
        Flow::Pause
    );
    assert_eq!(host.counter(Counter::HostErrors), 1);
    assert!(
        host.logs
            .iter()
            .any(|l| l.contains("sending a local answer"))
    );
    // The record is still written.
    assert_eq!(host.last_event_code(), 403);

    let mut host = developer_request(&minter, "GET", "/api/v1/namespaces/dev/pods");
    host.fail = ["now_us"].into();
    let mut request = Request::new(2);
    let _ = request.on_request_headers(Some(&mut worker), &mut host, true);
    assert!(host.counter(Counter::HostErrors) >= 1);
    assert!(host.logs.iter().any(|l| l.contains("clock")));
}

/// A developer's secret read, admitted, with the response headers given.
fn secret_response(minter: &Minter, extra: Value) -> (FakeHost, Worker, Request) {
    let mut host = developer_request(minter, "GET", "/api/v1/namespaces/dev/secrets/db");
    let mut worker = warm_worker(&mut host, minter, extra);
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(Some(&mut worker), &mut host, true),
        Flow::Continue
    );
    host.response = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
    ];
    assert_eq!(
        request.on_response_headers(Some(&mut worker), &mut host, false),
        Flow::Pause,
        "a masked response is held"
    );
    (host, worker, request)
}

const SECRET: &str = r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db","namespace":"dev"},"data":{"password":"aHVudGVyMg=="}}"#;

#[test]
fn a_held_secret_is_masked_whole_and_its_length_set() {
    let minter = minter();
    let (mut host, _worker, mut request) = secret_response(&minter, json!({}));
    host.server_body = SECRET.as_bytes().to_vec();
    assert_eq!(
        request.on_response_body(&mut host, SECRET.len() / 2, false),
        Flow::Pause,
        "held until whole"
    );
    assert!(host.replaced.is_empty());
    assert_eq!(
        request.on_response_body(&mut host, SECRET.len(), true),
        Flow::Continue
    );
    let (direction, masked) = host.replaced.last().unwrap();
    assert_eq!(*direction, Direction::FromServer);
    let masked = String::from_utf8_lossy(masked);
    assert!(!masked.contains("aHVudGVyMg=="), "{masked}");
    let length = host
        .response
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.clone());
    assert_eq!(length, Some(masked.len().to_string()));
    assert_eq!(host.last_event_code(), 200);
}

#[test]
fn a_repeated_read_answered_from_memory_is_masked_and_recorded_as_its_own() {
    let minter = minter();
    let mut host = developer_request(&minter, "GET", "/api/v1/namespaces/dev/secrets/db");
    let mut worker = warm_worker(&mut host, &minter, json!({}));
    let sent = host.request.clone();
    let mut ids = Vec::new();
    for context in 1..=3 {
        let mut request = Request::new(context);
        host.clock += 1_000;
        host.replaced.clear();
        // What the client sends again (the last request's changes undone).
        host.request.clone_from(&sent);
        assert_eq!(
            request.on_request_headers(Some(&mut worker), &mut host, true),
            Flow::Continue
        );
        host.response = vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "application/json".into()),
        ];
        assert_eq!(
            request.on_response_headers(Some(&mut worker), &mut host, false),
            Flow::Pause,
            "held to be masked, as the first time"
        );
        host.server_body = SECRET.as_bytes().to_vec();
        assert_eq!(
            request.on_response_body(&mut host, SECRET.len(), true),
            Flow::Continue
        );
        let (_, masked) = host.replaced.last().unwrap();
        assert!(!String::from_utf8_lossy(masked).contains("aHVudGVyMg=="));
        let sent_id = host
            .request
            .iter()
            .find(|(name, _)| name == "Audit-ID")
            .map(|(_, id)| id.clone())
            .unwrap();
        let event = host.events().pop().unwrap();
        assert_eq!(event["auditID"], sent_id.as_str());
        assert_eq!(event["annotations"]["gatehouse.dev/masked-fields"], "data");
        assert_eq!(event["responseStatus"]["code"], 200);
        ids.push(sent_id);
    }
    assert_eq!(worker.gate().remembered_admissions(), 1);
    ids.dedup();
    assert_eq!(ids.len(), 3, "every request has its own audit id: {ids:?}");
    assert_eq!(host.counter(Counter::Requests), 3);
}

#[test]
fn a_response_that_cannot_be_masked_is_refused_with_its_record() {
    let minter = minter();
    let (mut host, _worker, mut request) = secret_response(&minter, json!({}));
    host.server_body = b"{not json".to_vec();
    let size = host.server_body.len();
    assert_eq!(request.on_response_body(&mut host, size, true), Flow::Pause);
    assert_eq!(host.sent.len(), 1);
    assert_eq!(host.sent[0].0, 500);
    assert_eq!(host.last_event_code(), 500);
    assert!(host.replaced.is_empty(), "nothing of it passes");
}

#[test]
fn a_failed_rewrite_refuses_instead_of_passing_the_clear_secret() {
    let minter = minter();
    let (mut host, _worker, mut request) = secret_response(&minter, json!({}));
    host.server_body = SECRET.as_bytes().to_vec();
    host.fail = ["replace_body"].into();
    assert_eq!(
        request.on_response_body(&mut host, SECRET.len(), true),
        Flow::Pause
    );
    assert_eq!(host.sent[0].0, 500);
    assert_eq!(host.last_event_code(), 500);
    assert_eq!(host.counter(Counter::HostErrors), 1);
}

#[test]
fn an_unreadable_response_is_refused_not_passed() {
    let minter = minter();
    let (mut host, _worker, mut request) = secret_response(&minter, json!({}));
    host.server_body = SECRET.as_bytes().to_vec();
    host.fail = ["read_body"].into();
    assert_eq!(
        request.on_response_body(&mut host, SECRET.len(), true),
        Flow::Pause
    );
    assert_eq!(host.sent[0].0, 500);
    assert_eq!(host.last_event_code(), 500);
    assert_eq!(host.counter(Counter::HostErrors), 1);
}

#[test]
fn an_oversize_held_body_is_refused_and_later_chunks_are_left_alone() {
    let minter = minter();
    let limit = 64;
    let masking = json!({"masking": {"secrets": true, "max_body_bytes": limit}});
    let (mut host, _worker, mut request) = secret_response(&minter, masking);
    assert_eq!(
        request.on_response_body(&mut host, limit + 1, false),
        Flow::Pause
    );
    assert_eq!(host.sent[0].0, 500);
    assert_eq!(host.last_event_code(), 500);
    // Later chunks of the refused response are neither masked nor read.
    host.fail = ["read_body"].into();
    let _ = request.on_response_body(&mut host, limit + 2, true);
    assert_eq!(host.counter(Counter::HostErrors), 0);
    assert_eq!(host.sent.len(), 1, "refused once");
}

const PROD_EXEC: &str =
    "/api/v1/namespaces/prod/pods/web/exec?command=sh&stdin=true&stdout=true&tty=true";
const DEV_EXEC: &str =
    "/api/v1/namespaces/dev/pods/web/exec?command=sh&stdin=true&stdout=true&tty=true";

/// A worker with the approval service and an empty grant book.
fn approvals_worker(host: &mut FakeHost, minter: &Minter) -> Worker {
    let approvals = json!({"approvals": {"cluster": "gatehouse_approvals", "key": "k-123456"}});
    let mut worker = warm_worker(host, minter, approvals);
    worker
        .gate_mut()
        .set_grant_book(Rc::new(RefCell::new(GrantBook::default())));
    worker
}

/// A developer's exec in prod, which the example policy holds for approval.
fn held_exec(minter: &Minter) -> (FakeHost, Worker, Request) {
    let mut host = developer_request(minter, "GET", PROD_EXEC);
    let mut worker = approvals_worker(&mut host, minter);
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(Some(&mut worker), &mut host, false),
        Flow::Pause
    );
    (host, worker, request)
}

#[test]
fn a_held_request_stays_held_until_its_answer_and_no_answer_is_a_recorded_refusal() {
    let minter = minter();
    let (mut host, mut worker, mut request) = held_exec(&minter);
    assert_eq!(host.approval_calls.len(), 1, "{:?}", host.approval_calls);
    assert!(host.approval_calls[0].starts_with("POST /v1/requests"));
    assert!(host.sent.is_empty());
    // Whatever follows its headers stays held with them.
    host.client_body = b"stdin".to_vec();
    assert_eq!(
        request.on_request_body(Some(&mut worker), &mut host, 5, false),
        Flow::Pause
    );
    assert_eq!(request.on_request_trailers(), Flow::Pause);
    assert!(!request.on_approval_answer(Some(&mut worker), &mut host, 7, 200, b"{}"));
    // The service did not answer (a timeout): refused, with its record.
    assert!(request.on_approval_answer(Some(&mut worker), &mut host, 101, 0, b""));
    assert_eq!(host.sent.len(), 1);
    assert_eq!(host.sent[0].0, 403);
    assert_eq!(host.last_event_code(), 403);
    assert_eq!(host.resumed, 0);
    assert_eq!(request.on_request_trailers(), Flow::Continue);
}

#[test]
fn a_failed_approval_call_is_counted_and_refused_with_its_record() {
    let minter = minter();
    let mut host = developer_request(&minter, "GET", PROD_EXEC);
    host.fail = ["approval_call"].into();
    let mut worker = approvals_worker(&mut host, &minter);
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(Some(&mut worker), &mut host, true),
        Flow::Pause
    );
    assert_eq!(host.counter(Counter::HostErrors), 1);
    assert!(host.logs.iter().any(|l| l.contains("approval service")));
    assert_eq!(host.sent.len(), 1);
    assert_eq!(host.sent[0].0, 403);
    assert_eq!(host.last_event_code(), 403);
}

/// A developer's recorded exec in dev over WebSocket, upgraded with
/// `protocol`.
fn upgraded_exec(minter: &Minter, protocol: &str) -> (FakeHost, Worker, Request, Flow) {
    let mut host = developer_request(minter, "GET", DEV_EXEC);
    host.request.push(("upgrade".into(), "websocket".into()));
    let mut worker = warm_worker(&mut host, minter, json!({}));
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(Some(&mut worker), &mut host, false),
        Flow::Continue
    );
    host.response = vec![
        (":status".into(), "101".into()),
        ("sec-websocket-protocol".into(), protocol.into()),
    ];
    let flow = request.on_response_headers(Some(&mut worker), &mut host, false);
    (host, worker, request, flow)
}

#[test]
fn an_upgraded_exec_is_recorded_from_start_to_end() {
    let minter = minter();
    let (mut host, mut worker, mut request, flow) = upgraded_exec(&minter, "v5.channel.k8s.io");
    assert_eq!(flow, Flow::Continue);
    assert_eq!(host.last_event_code(), 101);
    // Nothing arrived yet: the tick and the end still give the session's records.
    worker.on_tick(&mut host);
    request.on_log(&mut host);
    assert!(
        !host.records.is_empty(),
        "a recorded session leaves records"
    );
    for line in &host.records {
        serde_json::from_str::<Value>(line).unwrap();
    }
    // The worker forgets the ended session.
    let records = host.records.len();
    worker.on_tick(&mut host);
    assert_eq!(host.records.len(), records);
}

#[test]
fn an_exec_stream_that_cannot_be_read_is_ended_not_passed_unrecorded() {
    let minter = minter();
    let (mut host, mut worker, mut request, flow) = upgraded_exec(&minter, "v5.channel.k8s.io");
    assert_eq!(flow, Flow::Continue);
    host.fail = ["read_body"].into();
    assert_eq!(
        request.on_request_body(Some(&mut worker), &mut host, 16, false),
        Flow::Pause
    );
    assert_eq!(host.resets, 1);
    assert_eq!(host.replaced, [(Direction::FromClient, Vec::new())]);
    assert_eq!(host.counter(Counter::HostErrors), 1);
    host.fail.clear();
    assert_eq!(
        request.on_response_body(&mut host, 16, false),
        Flow::Pause,
        "the server side of an ended session goes nowhere either"
    );
}

#[test]
fn an_exec_on_a_protocol_gatehouse_cannot_read_is_ended_with_its_records() {
    let minter = minter();
    let (host, _worker, _request, flow) = upgraded_exec(&minter, "v9.unknown.k8s.io");
    assert_eq!(flow, Flow::Pause);
    assert_eq!(host.resets, 1);
    assert!(
        host.records
            .iter()
            .any(|line| line.contains("v9.unknown.k8s.io")),
        "{:?}",
        host.records
    );
}

/// The host calls of one developer GET the rule masks, from its headers to
/// its log, answered with `body` in two chunks, as kubectl sends it.
fn host_calls_of_a_read(path: &str, accept: &str, body: &str) -> FakeHost {
    let minter = minter();
    let mut host = developer_request(&minter, "GET", path);
    host.request.extend([
        ("accept".into(), accept.into()),
        ("user-agent".into(), "kubectl/v1.33.0".into()),
        ("accept-encoding".into(), "gzip".into()),
    ]);
    let mut worker = warm_worker(&mut host, &minter, json!({}));
    host.calls.clear();
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(Some(&mut worker), &mut host, true),
        Flow::Continue
    );
    host.response = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
        ("content-length".into(), body.len().to_string()),
        ("audit-id".into(), "a".into()),
        ("cache-control".into(), "no-cache, private".into()),
    ];
    assert_eq!(
        request.on_response_headers(Some(&mut worker), &mut host, false),
        Flow::Pause
    );
    host.server_body = body.as_bytes().to_vec();
    assert_eq!(
        request.on_response_body(&mut host, body.len() / 2, false),
        Flow::Pause
    );
    assert_eq!(
        request.on_response_body(&mut host, body.len(), true),
        Flow::Continue
    );
    request.on_log(&mut host);
    assert_eq!(host.last_event_code(), 200);
    assert_eq!(host.counter(Counter::HostErrors), 0);
    host
}

const POD: &str = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web","namespace":"dev"},"spec":{"containers":[{"name":"app","image":"nginx","env":[{"name":"DB_PASSWORD","value":"hunter2"}]}]}}"#;
const POD_TABLE: &str = r#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","columnDefinitions":[{"name":"Name","type":"string"}],"rows":[{"cells":["web"],"object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"web","namespace":"dev"}}}]}"#;

#[test]
fn a_masked_read_makes_few_host_calls() {
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    for (kind, path, accept, body) in [
        (
            "get secret",
            "/api/v1/namespaces/dev/secrets/db",
            "application/json",
            SECRET,
        ),
        (
            "get pod",
            "/api/v1/namespaces/dev/pods/web",
            "application/json",
            POD,
        ),
        (
            "list pods",
            "/api/v1/namespaces/dev/pods?limit=500",
            table,
            POD_TABLE,
        ),
    ] {
        let host = host_calls_of_a_read(path, accept, body);
        eprintln!("{kind}: {} host calls {:?}", host.total_calls(), host.calls);
        let calls = |name: &str| host.calls.get(name).copied().unwrap_or_default();
        // One clock read per event, and one more where the filter's own time
        // is measured (request headers, the whole body's masking); none for
        // a chunk that is only held.
        assert_eq!(calls("now_us"), 6, "{kind}: {:?}", host.calls);
        assert_eq!(calls("record"), 3, "{kind}: {:?}", host.calls);
        // The Accept header is already JSON only: left as it is.
        assert_eq!(
            host.request.iter().filter(|(k, _)| k == "accept").count(),
            1,
            "{kind}"
        );
        assert!(host.total_calls() <= 27, "{kind}: {:?}", host.calls);
    }
}

#[test]
fn header_changes_the_request_already_shows_are_not_made() {
    let minter = minter();
    let mut host = developer_request(&minter, "GET", "/api/v1/namespaces/dev/secrets/db");
    host.request
        .push(("accept".into(), "application/json".into()));
    let mut worker = warm_worker(&mut host, &minter, json!({}));
    host.calls.clear();
    let mut request = Request::new(1);
    assert_eq!(
        request.on_request_headers(Some(&mut worker), &mut host, true),
        Flow::Continue
    );
    // Only the credential is removed (there is no Accept-Encoding), and the
    // Accept header stays: Audit-ID and Impersonate-User are set.
    assert_eq!(
        host.calls.get("remove_header"),
        Some(&1),
        "{:?}",
        host.calls
    );
    assert_eq!(host.calls.get("set_header"), Some(&2), "{:?}", host.calls);
    assert!(!host.request.iter().any(|(k, _)| k == "authorization"));
    assert!(
        host.request
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("impersonate-user") && v == "dana")
    );

    // A repeated Accept, or another value, is set; a present
    // Accept-Encoding is removed.
    for (accept, encoding) in [
        (vec!["application/json", "application/json"], None),
        (vec!["application/yaml"], Some("gzip")),
    ] {
        let mut host = developer_request(&minter, "GET", "/api/v1/namespaces/dev/secrets/db");
        for value in &accept {
            host.request.push(("accept".into(), (*value).into()));
        }
        if let Some(encoding) = encoding {
            host.request
                .push(("accept-encoding".into(), encoding.into()));
        }
        let mut request = Request::new(2);
        assert_eq!(
            request.on_request_headers(Some(&mut worker), &mut host, true),
            Flow::Continue
        );
        let accepts: Vec<&str> = host
            .request
            .iter()
            .filter(|(k, _)| k == "accept")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(accepts, ["application/json"], "{accept:?}");
        assert!(!host.request.iter().any(|(k, _)| k == "accept-encoding"));
    }
}
