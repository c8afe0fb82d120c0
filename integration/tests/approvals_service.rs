//! The approval service as the filters and people use it, against real
//! PostgreSQL: two replicas over one database, tokens from the demo identity
//! provider, a webhook receiver that fails at first.
//!
//! One stack for every case (the service is stateless; each case files its
//! own requests).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_approvals::client::{Outgoing, exchange};
use gatehouse_integration::approvals::{
    ApprovalService, FILTER_KEY, WebhookReceiver, service_config,
};
use gatehouse_integration::idp::{self, IdentityProvider};
use gatehouse_integration::postgres::{PgOptions, Postgres};
use serde_json::{Value, json};

struct Fixture {
    service: ApprovalService,
    webhook: WebhookReceiver,
    minter: gatehouse_core::identity::testing::Minter,
    runtime: tokio::runtime::Runtime,
    _idp: IdentityProvider,
    postgres: Postgres,
    _dir: gatehouse_integration::ScratchDir,
}

impl Fixture {
    fn start() -> Fixture {
        let dir = gatehouse_integration::scratch_dir("it", "approvals-service").unwrap();
        let postgres = Postgres::start(&dir.join("postgres"), &PgOptions::default()).unwrap();
        let minter = idp::generate_minter().unwrap();
        let idp = IdentityProvider::start(&[&minter]).unwrap();
        // The first two deliveries fail: notifications must still arrive.
        let webhook = WebhookReceiver::start(2).unwrap();
        let config = service_config(postgres.port, idp.port(), None, Some(&webhook.url()));
        let service =
            ApprovalService::start(&dir.join("approvals"), &postgres, &config, 2).unwrap();
        Fixture {
            service,
            webhook,
            minter,
            runtime: tokio::runtime::Runtime::new().unwrap(),
            _idp: idp,
            postgres,
            _dir: gatehouse_integration::ScratchDir::new(dir),
        }
    }

    fn token(&self, identity: &str) -> String {
        idp::mint(&self.minter, identity, 600).unwrap()
    }

    /// `method path` on replica `replica` as `who` (a demo identity, or
    /// `"filter"` for the filter key); the status and JSON answer.
    fn call(
        &self,
        replica: usize,
        who: &str,
        method: &str,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let token = match who {
            "filter" => FILTER_KEY.to_owned(),
            identity if idp::DEMO_IDENTITIES.iter().any(|(n, _)| *n == identity) => {
                self.token(identity)
            }
            raw => raw.to_owned(),
        };
        let url = format!("{}{path}", self.service.url(replica));
        let outgoing = Outgoing {
            bearer: Some(&token),
            body: if body.is_null() {
                Vec::new()
            } else {
                body.to_string().into_bytes()
            },
            ..Outgoing::new(method, &url)
        };
        let (status, bytes) = self.runtime.block_on(exchange(outgoing)).unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Files a request as a filter would, for `requester` (a demo identity).
    fn file(&self, id: &str, requester: &str, requirement: Value, hash: &str) -> (u16, Value) {
        let groups = idp::claims_for(requester).unwrap()["groups"].clone();
        let body = json!({
            "requester": {"subject": requester, "groups": groups},
            "request": {
                "id": id,
                "rule": "customer-writes",
                "requirement": requirement,
                "reason": "ticket 42",
                "target": {"kind": "postgres_statement", "database": "shop", "role": "app",
                           "statement": "DELETE FROM customers WHERE id = $1",
                           "fingerprint": "delete from customers where id = ?",
                           "statement_hash": hash}
            }
        });
        self.call(0, "filter", "POST", "/v1/requests", body)
    }
}

fn requirement() -> Value {
    json!({"approvers": ["dba"], "approvals": 1, "reason_required": true,
           "pending_seconds": 600, "valid_seconds": 300, "grant": "single_use",
           "break_glass": ["platform-admins"]})
}

#[test]
fn approvals_through_the_service() {
    let mut f = Fixture::start();

    // Filed by a filter; filing the same id again returns it unchanged.
    let (status, created) = f.file("apr-svc1", "developer", requirement(), "sha256:one");
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["state"], "pending");
    let (status, again) = f.file("apr-svc1", "developer", requirement(), "sha256:one");
    assert_eq!((status, &again["id"]), (200, &json!("apr-svc1")));
    // The filter key cannot approve; a person's token cannot read grants.
    assert_eq!(
        f.call(
            0,
            "filter",
            "POST",
            "/v1/requests/apr-svc1/approve",
            Value::Null
        )
        .0,
        403
    );
    assert_eq!(f.call(0, "dba", "GET", "/v1/grants", Value::Null).0, 404);
    assert_eq!(
        f.call(0, "nobody-token", "GET", "/v1/requests", Value::Null)
            .0,
        401
    );

    // The inbox, from the other replica.
    let (status, inbox) = f.call(1, "dba", "GET", "/v1/requests?state=pending", Value::Null);
    assert_eq!(status, 200);
    assert!(
        inbox["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "apr-svc1")
    );

    // Self-approval and approval by a non-approver are refused.
    let (status, refusal) = f.call(
        0,
        "developer",
        "POST",
        "/v1/requests/apr-svc1/approve",
        json!({"reason": "me"}),
    );
    assert_eq!(status, 403, "{refusal}");
    assert!(
        refusal["error"].as_str().unwrap().contains("own request"),
        "{refusal}"
    );
    let (status, _) = f.call(
        0,
        "ci",
        "POST",
        "/v1/requests/apr-svc1/approve",
        Value::Null,
    );
    assert_eq!(status, 403);

    // A dba approves; the grant is published to the filters.
    let (status, approved) = f.call(
        1,
        "dba",
        "POST",
        "/v1/requests/apr-svc1/approve",
        json!({"reason": "ok"}),
    );
    assert_eq!(
        (status, &approved["state"]),
        (200, &json!("approved")),
        "{approved}"
    );
    let (_, grants) = f.call(0, "filter", "GET", "/v1/grants", Value::Null);
    let grant = grants["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "apr-svc1")
        .unwrap()
        .clone();
    assert_eq!(grant["hash"], "sha256:one");
    assert_eq!(grant["approvers"][0]["subject"], "dba");

    // Both replicas race to use it: exactly one wins.
    let consume = |replica: usize| {
        f.call(
            replica,
            "filter",
            "POST",
            "/v1/requests/apr-svc1/consume",
            json!({"subject": "developer", "hash": "sha256:one"}),
        )
        .0
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| consume(0));
        let b = s.spawn(|| consume(1));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut outcomes = [a, b];
    outcomes.sort();
    assert_eq!(outcomes, [200, 409]);
    assert_eq!(consume(0), 409, "a third use");
    // Used, it is no longer granted: the publication names it closed, so a
    // filter that filed it forgets its note.
    let (_, grants) = f.call(0, "filter", "GET", "/v1/grants", Value::Null);
    assert!(
        !grants["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == "apr-svc1"),
        "{grants}"
    );
    assert_eq!(grants["closed"], json!(["apr-svc1"]), "{grants}");

    // A restart loses nothing.
    f.service.restart(0).unwrap();
    let (status, used) = f.call(0, "dba", "GET", "/v1/requests/apr-svc1", Value::Null);
    assert_eq!((status, &used["state"]), (200, &json!("used")));
    let (_, records) = f.call(
        0,
        "dba",
        "GET",
        "/v1/requests/apr-svc1/records",
        Value::Null,
    );
    let kinds: Vec<&str> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["approval.requested", "approval.approved", "approval.used"]
    );
    let sequences: Vec<u64> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, [1, 2, 3]);
    assert_eq!(records["records"][1]["actor"]["subject"], "dba");
    assert_eq!(records["records"][0]["schema"], 1);

    // Webhooks arrived despite the failing first deliveries.
    f.webhook.wait_for("apr-svc1: developer asks").unwrap();
    f.webhook.wait_for("apr-svc1 approved by dba").unwrap();
    assert!(f.webhook.attempts() > f.webhook.bodies().len());

    // One denial ends a request; it must say why.
    f.file("apr-svc2", "developer", requirement(), "sha256:two");
    assert_eq!(
        f.call(0, "dba", "POST", "/v1/requests/apr-svc2/deny", Value::Null)
            .0,
        400
    );
    let (status, denied) = f.call(
        0,
        "dba",
        "POST",
        "/v1/requests/apr-svc2/deny",
        json!({"reason": "no ticket"}),
    );
    assert_eq!((status, &denied["state"]), (200, &json!("denied")));
    assert_eq!(
        f.call(
            1,
            "dba",
            "POST",
            "/v1/requests/apr-svc2/approve",
            Value::Null
        )
        .0,
        409
    );
    f.webhook
        .wait_for("apr-svc2 denied by dba: no ticket")
        .unwrap();

    // Pending requests expire on their own.
    let mut short = requirement();
    short["pending_seconds"] = json!(1);
    f.file("apr-svc3", "developer", short, "sha256:three");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (_, r) = f.call(1, "dba", "GET", "/v1/requests/apr-svc3", Value::Null);
        if r["state"] == "expired" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never expired: {r}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    f.webhook.wait_for("apr-svc3 expired").unwrap();

    // Break-glass: an admin approves their own request with a reason, flagged forced.
    f.file("apr-svc4", "admin", requirement(), "sha256:four");
    assert_eq!(
        f.call(
            0,
            "admin",
            "POST",
            "/v1/requests/apr-svc4/approve",
            Value::Null
        )
        .0,
        400
    );
    let (status, forced) = f.call(
        0,
        "admin",
        "POST",
        "/v1/requests/apr-svc4/approve",
        json!({"reason": "outage"}),
    );
    assert_eq!((status, &forced["forced"]), (200, &json!(true)), "{forced}");
    f.webhook.wait_for("BREAK-GLASS apr-svc4").unwrap();

    // A person asks a window on a configured scope; reasons are required there.
    let (status, _) = f.call(
        0,
        "developer",
        "POST",
        "/v1/requests",
        json!({"scope": "customer-writes", "grant_seconds": 1800}),
    );
    assert_eq!(status, 400);
    let (status, window) = f.call(
        0,
        "developer",
        "POST",
        "/v1/requests",
        json!({"scope": "customer-writes", "grant_seconds": 1800, "reason": "migration"}),
    );
    assert_eq!(status, 201, "{window}");
    assert_eq!(window["target"]["kind"], "scope");
    assert_eq!(
        f.call(
            0,
            "developer",
            "POST",
            "/v1/requests",
            json!({"scope": "nope"})
        )
        .0,
        404
    );

    // The same through the command line.
    f.file("apr-cli1", "developer", requirement(), "sha256:cli");
    let cli = |who: &str, args: &[&str]| {
        let out =
            std::process::Command::new(gatehouse_integration::tools::gatehouse_cli().unwrap())
                .args(args)
                .env("GATEHOUSE_APPROVALS_URL", f.service.url(1))
                .env("GATEHOUSE_TOKEN", f.token(who))
                .output()
                .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = cli("dba", &["approvals", "list"]);
    assert_eq!(code, 0);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("apr-cli1"))
        .unwrap_or_default();
    assert!(
        line.contains("pending") && line.contains("developer"),
        "{stdout}"
    );
    let (_, stdout, _) = cli("dba", &["approvals", "list", "--json"]);
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "apr-cli1")
    );
    let (code, _, stderr) = cli("developer", &["approve", "apr-cli1", "--reason", "me"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("may not approve their own request"),
        "{stderr}"
    );
    let (code, stdout, stderr) = cli("dba", &["approve", "apr-cli1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("apr-cli1: approved; developer may now run it"),
        "{stdout}"
    );
    let (_, stdout, _) = cli("dba", &["approvals", "show", "apr-cli1"]);
    assert!(
        stdout.contains("approved   by dba") && stdout.contains("reason     ticket 42"),
        "{stdout}"
    );
    let (code, _, _) = cli("dba", &["deny", "apr-cli1"]);
    assert_eq!(code, 2, "deny needs a reason");
    let (code, stdout, stderr) = cli(
        "developer",
        &[
            "request",
            "--scope",
            "customer-writes",
            "--for",
            "30m",
            "--reason",
            "backfill",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("apr-") && stdout.contains("30m window"),
        "{stdout}"
    );

    // One requester's pending requests are bounded (20 by default), so a
    // client filing in a loop cannot grow the publication every filter
    // polls: the next filing is refused and says what to do. Another
    // requester still files, a stored id is still answered, and a
    // withdrawn request makes room.
    for n in 0..20 {
        let hash = format!("sha256:cap{n}");
        let (status, body) = f.file(&format!("apr-cap{n:02}"), "ci", requirement(), &hash);
        assert_eq!(status, 201, "{body}");
    }
    let (status, refusal) = f.file("apr-cap20", "ci", requirement(), "sha256:cap20");
    assert_eq!(status, 429, "{refusal}");
    assert!(
        refusal["error"]
            .as_str()
            .unwrap()
            .starts_with("ci has 20 approval requests pending, the most this service allows"),
        "{refusal}"
    );
    let missing = f.call(0, "dba", "GET", "/v1/requests/apr-cap20", Value::Null);
    assert_eq!(missing.0, 404, "{}", missing.1);
    assert_eq!(
        f.file("apr-cap00", "ci", requirement(), "sha256:cap0").0,
        200
    );
    let other = f.file("apr-capdev", "developer", requirement(), "sha256:capdev");
    assert_eq!(other.0, 201, "{}", other.1);
    let withdrawn = f.call(
        1,
        "ci",
        "POST",
        "/v1/requests/apr-cap00/expire",
        Value::Null,
    );
    assert_eq!(withdrawn.0, 200, "{}", withdrawn.1);
    let (status, body) = f.file("apr-cap20", "ci", requirement(), "sha256:cap20");
    assert_eq!(status, 201, "{body}");

    // The database holds it all (the service's own tables).
    let count = f
        .postgres
        .psql_in("gatehouse_approvals", "SELECT count(*) FROM records")
        .unwrap();
    assert!(count.trim().parse::<u32>().unwrap() >= 9, "{count}");
}
