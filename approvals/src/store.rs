//! Requests, their records and the delivery outbox in PostgreSQL.
//!
//! Every change to a request runs in one transaction that locks its row
//! (`SELECT … FOR UPDATE`), applies the state machine from `gatehouse-core`,
//! writes the request back and queues its record and notification in the
//! outbox. So any number of replicas can serve the same database: two that
//! race to use one single-use grant are serialized by the row lock, and the
//! second sees it used. Background work (expiry, delivery) claims rows with
//! `FOR UPDATE SKIP LOCKED`, so replicas share it without doing it twice.

use crate::notify;
use gatehouse_core::approval::record::ApprovalRecord;
use gatehouse_core::approval::{
    ApprovalError, ApprovalRequest, Event, Grant, GrantsDocument, PendingRef, Principal, State,
};
use std::sync::Mutex;
use tokio_postgres::{Client, NoTls, Transaction};

/// Schema changes, applied in order at start; the number of those applied is
/// kept in `gatehouse_approvals_schema`.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE requests (
    id            text PRIMARY KEY,
    state         text NOT NULL,
    requester     text NOT NULL,
    rule          text NOT NULL,
    target_hash   text,
    created_at    bigint NOT NULL,
    pending_until bigint NOT NULL,
    grant_until   bigint,
    events        bigint NOT NULL,
    doc           text NOT NULL
);
CREATE INDEX requests_open ON requests (state) WHERE state IN ('pending', 'approved');
CREATE TABLE records (
    id         bigserial PRIMARY KEY,
    request_id text NOT NULL,
    line       text NOT NULL
);
CREATE INDEX records_by_request ON records (request_id);
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    kind       text NOT NULL,
    body       text NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    next_at    bigint NOT NULL,
    done       boolean NOT NULL DEFAULT false,
    last_error text
);
CREATE INDEX outbox_due ON outbox (next_at) WHERE NOT done;
",
    r"
CREATE TABLE reasons (
    subject text PRIMARY KEY,
    reason  text NOT NULL,
    until   bigint NOT NULL
);
",
    // The publication's `closed` list reads requests by the end of their
    // pending window.
    r"
CREATE INDEX requests_pending_until ON requests (pending_until);
",
];

/// Connections kept open between requests.
const MAX_IDLE: usize = 8;

/// Serializes schema changes between replicas starting together.
const MIGRATION_LOCK: i64 = 0x6761_7465_6170_7072;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("stored request {0} is unreadable: {1}")]
    Corrupt(String, serde_json::Error),
    #[error("no request {0}")]
    NotFound(String),
    #[error(transparent)]
    Refused(#[from] ApprovalError),
    #[error(
        "{requester} has {pending} approval requests pending, the most this service allows: \
         withdraw one (gatehouse withdraw ID) or wait for a decision, then ask again"
    )]
    TooManyPending { requester: String, pending: u32 },
}

/// What is delivered for the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// A record line for the records endpoint.
    Record,
    /// A chat notification.
    Webhook,
}

impl OutboxKind {
    fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Record => "record",
            OutboxKind::Webhook => "webhook",
        }
    }
}

/// A claimed outbox entry.
#[derive(Debug)]
pub struct OutboxItem {
    pub id: i64,
    pub kind: String,
    pub body: String,
    pub attempts: i32,
}

/// Which deliveries are configured.
#[derive(Debug, Clone, Copy)]
pub struct Deliveries {
    pub records: bool,
    pub webhook: bool,
}

/// A small pool of connections.
pub struct Store {
    url: String,
    idle: Mutex<Vec<Client>>,
    deliveries: Deliveries,
}

/// Unix microseconds now.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn seconds(us: u64) -> u64 {
    us / 1_000_000
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    pub fn new(url: &str, deliveries: Deliveries) -> Store {
        Store {
            url: url.to_owned(),
            idle: Mutex::new(Vec::new()),
            deliveries,
        }
    }

    /// A connection: an idle one, or a new one. Hand it back with
    /// [`Store::release`]; one dropped on an error path is closed instead.
    pub async fn conn(&self) -> Result<Client, StoreError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let client = match idle {
            Some(client) => client,
            None => {
                let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        eprintln!("gatehouse-approvals: database connection ended: {e}");
                    }
                });
                client
            }
        };
        Ok(client)
    }

    /// Returns a connection to the pool.
    pub fn release(&self, client: Client) {
        if !client.is_closed()
            && let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(client);
        }
    }

    /// Applies the migrations this database lacks.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS gatehouse_approvals_schema (version integer NOT NULL)",
        )
        .await?;
        let applied: i64 = tx
            .query_one("SELECT count(*) FROM gatehouse_approvals_schema", &[])
            .await?
            .get(0);
        let applied = usize::try_from(applied).unwrap_or(0);
        let mut count = 0;
        for (version, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            tx.batch_execute(sql).await?;
            let version = i32::try_from(version + 1).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO gatehouse_approvals_schema (version) VALUES ($1)",
                &[&version],
            )
            .await?;
            count += 1;
        }
        tx.commit().await?;
        self.release(conn);
        Ok(count)
    }

    /// Stores a new request with its `requested` record; when the id is taken,
    /// returns the stored one instead (a filter filing the same request twice).
    /// A requester with `max_pending` requests pending files no more
    /// ([`StoreError::TooManyPending`]).
    pub async fn create(
        &self,
        request: &ApprovalRequest,
        max_pending: u32,
        now_us: u64,
    ) -> Result<(ApprovalRequest, bool), StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let doc = serde_json::to_string(request)
            .map_err(|e| StoreError::Corrupt(request.id.clone(), e))?;
        // One filing per requester at a time, so concurrent filings on
        // every replica count each other.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('gatehouse.requester:' || $1))",
            &[&request.requester.subject],
        )
        .await?;
        let inserted = tx
            .execute(
                "INSERT INTO requests (id, state, requester, rule, target_hash, created_at,
                     pending_until, grant_until, events, doc)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, 1, $8)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &request.id,
                    &request.state.as_str(),
                    &request.requester.subject,
                    &request.rule,
                    &request.target.hash(),
                    &to_i64(request.created_at),
                    &to_i64(request.pending_until),
                    &doc,
                ],
            )
            .await?;
        if inserted == 0 {
            tx.rollback().await?;
            self.release(conn);
            return Ok((self.get(&request.id).await?, false));
        }
        let pending: i64 = tx
            .query_one(
                "SELECT count(*) FROM requests
                 WHERE requester = $1 AND state = 'pending' AND pending_until > $2",
                &[&request.requester.subject, &to_i64(seconds(now_us))],
            )
            .await?
            .get(0);
        if pending > i64::from(max_pending) {
            tx.rollback().await?;
            self.release(conn);
            return Err(StoreError::TooManyPending {
                requester: request.requester.subject.clone(),
                pending: max_pending,
            });
        }
        self.log_event(
            &tx,
            Event::Requested,
            request,
            &request.requester,
            1,
            now_us,
        )
        .await?;
        tx.commit().await?;
        self.release(conn);
        Ok((request.clone(), true))
    }

    /// Changes a request under its row lock: `change` gets it (expired first if
    /// its time is over) and the time in seconds, and returns the event it
    /// caused with its actor, if any. Every event is recorded and notified; a
    /// refused change still keeps an expiry it revealed.
    pub async fn update<F>(
        &self,
        id: &str,
        now_us: u64,
        change: F,
    ) -> Result<ApprovalRequest, StoreError>
    where
        F: FnOnce(&mut ApprovalRequest, u64) -> Result<Option<(Event, Principal)>, ApprovalError>,
    {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT doc, events FROM requests WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let mut request: ApprovalRequest = serde_json::from_str(row.get::<_, &str>(0))
            .map_err(|e| StoreError::Corrupt(id.to_owned(), e))?;
        let mut events = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
        let now = seconds(now_us);
        let mut happened = Vec::new();
        if let Some(expired) = request.expire_if_due(now) {
            happened.push((expired, system()));
        }
        let outcome = change(&mut request, now);
        if let Ok(Some(event)) = &outcome {
            happened.push(event.clone());
        }
        if happened.is_empty() {
            tx.rollback().await?;
        } else {
            for (event, actor) in &happened {
                events += 1;
                self.log_event(&tx, *event, &request, actor, events, now_us)
                    .await?;
            }
            self.save(&tx, &request, events).await?;
            tx.commit().await?;
        }
        self.release(conn);
        outcome?;
        Ok(request)
    }

    async fn save(
        &self,
        tx: &Transaction<'_>,
        request: &ApprovalRequest,
        events: u64,
    ) -> Result<(), StoreError> {
        let doc = serde_json::to_string(request)
            .map_err(|e| StoreError::Corrupt(request.id.clone(), e))?;
        tx.execute(
            "UPDATE requests SET state = $2, grant_until = $3, events = $4, doc = $5 WHERE id = $1",
            &[
                &request.id,
                &request.state.as_str(),
                &request.grant_until.map(to_i64),
                &to_i64(events),
                &doc,
            ],
        )
        .await?;
        Ok(())
    }

    /// Writes an event's record, and queues its delivery and notification.
    async fn log_event(
        &self,
        tx: &Transaction<'_>,
        event: Event,
        request: &ApprovalRequest,
        actor: &Principal,
        sequence: u64,
        now_us: u64,
    ) -> Result<(), StoreError> {
        let line = ApprovalRecord::new(event, request, actor, sequence, now_us).to_json();
        println!("{line}");
        tx.execute(
            "INSERT INTO records (request_id, line) VALUES ($1, $2)",
            &[&request.id, &line],
        )
        .await?;
        let now = to_i64(now_us);
        if self.deliveries.records {
            tx.execute(
                "INSERT INTO outbox (kind, body, next_at) VALUES ($1, $2, $3)",
                &[&OutboxKind::Record.as_str(), &line, &now],
            )
            .await?;
        }
        if self.deliveries.webhook
            && let Some(message) = notify::message(event, request, actor)
        {
            tx.execute(
                "INSERT INTO outbox (kind, body, next_at) VALUES ($1, $2, $3)",
                &[&OutboxKind::Webhook.as_str(), &message, &now],
            )
            .await?;
        }
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<ApprovalRequest, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt("SELECT doc FROM requests WHERE id = $1", &[&id])
            .await?;
        self.release(conn);
        let row = row.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        serde_json::from_str(row.get::<_, &str>(0))
            .map_err(|e| StoreError::Corrupt(id.to_owned(), e))
    }

    /// The records of one request, in order.
    pub async fn records(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT line FROM records WHERE request_id = $1 ORDER BY id",
                &[&id],
            )
            .await?;
        self.release(conn);
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// Records `subject`'s reason for what they do until `until` (unix seconds).
    pub async fn set_reason(
        &self,
        subject: &str,
        reason: &str,
        until: u64,
    ) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO reasons (subject, reason, until) VALUES ($1, $2, $3)
             ON CONFLICT (subject) DO UPDATE SET reason = $2, until = $3",
            &[&subject, &reason, &to_i64(until)],
        )
        .await?;
        self.release(conn);
        Ok(())
    }

    /// `subject`'s reason, while it lasts.
    pub async fn current_reason(
        &self,
        subject: &str,
        now: u64,
    ) -> Result<Option<String>, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT reason FROM reasons WHERE subject = $1 AND until > $2",
                &[&subject, &to_i64(now)],
            )
            .await?;
        self.release(conn);
        Ok(row.map(|r| r.get(0)))
    }

    /// Requests, newest first, optionally in one state (at most `limit`).
    pub async fn list(
        &self,
        state: Option<State>,
        limit: i64,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT id, doc FROM requests WHERE ($1::text IS NULL OR state = $1)
                 ORDER BY created_at DESC, id LIMIT $2",
                &[&state.map(State::as_str), &limit],
            )
            .await?;
        self.release(conn);
        rows.iter()
            .map(|row| {
                serde_json::from_str(row.get::<_, &str>(1))
                    .map_err(|e| StoreError::Corrupt(row.get::<_, String>(0), e))
            })
            .collect()
    }

    /// Every grant still running and every request still pending at `now`,
    /// and the ids of those no longer pending that still could be (see
    /// [`GrantsDocument::closed`]).
    pub async fn grants(&self, now_us: u64) -> Result<GrantsDocument, StoreError> {
        let now = to_i64(seconds(now_us));
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT id, doc, coalesce((state = 'approved' AND grant_until > $1)
                                           OR state = 'pending', false) AS open
                 FROM requests
                 WHERE (state = 'approved' AND grant_until > $1)
                    OR pending_until > $1",
                &[&now],
            )
            .await?;
        self.release(conn);
        let mut document = GrantsDocument::default();
        for row in &rows {
            if !row.get::<_, bool>(2) {
                document.closed.push(row.get(0));
                continue;
            }
            let request: ApprovalRequest = serde_json::from_str(row.get::<_, &str>(1))
                .map_err(|e| StoreError::Corrupt(row.get::<_, String>(0), e))?;
            match request.state {
                State::Approved => document.grants.extend(Grant::from_request(&request)),
                _ => document.pending.push(PendingRef {
                    id: request.id.clone(),
                    rule: request.rule.clone(),
                    subject: request.requester.subject.clone(),
                    hash: request.target.hash().map(str::to_owned),
                }),
            }
        }
        Ok(document)
    }

    /// Expires what is due (pending too long, grants over); returns how many.
    pub async fn sweep(&self, now_us: u64) -> Result<usize, StoreError> {
        let now = to_i64(seconds(now_us));
        let conn = self.conn().await?;
        let due: Vec<String> = conn
            .query(
                "SELECT id FROM requests
                 WHERE (state = 'pending' AND pending_until <= $1)
                    OR (state = 'approved' AND grant_until <= $1)
                 LIMIT 100",
                &[&now],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        self.release(conn);
        let mut expired = 0;
        for id in due {
            // `update` expires what is due under the row lock; another replica
            // may have got there first, and then nothing happens here.
            let request = self.update(&id, now_us, |_, _| Ok(None)).await?;
            if request.state == State::Expired {
                expired += 1;
            }
        }
        Ok(expired)
    }

    /// Claims up to `limit` due outbox entries for 30 s.
    pub async fn claim_outbox(
        &self,
        now_us: u64,
        limit: i64,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let conn = self.conn().await?;
        let lease = to_i64(now_us + 30_000_000);
        let rows = conn
            .query(
                "UPDATE outbox SET next_at = $2 WHERE id IN (
                     SELECT id FROM outbox WHERE NOT done AND next_at <= $1
                     ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING id, kind, body, attempts",
                &[&to_i64(now_us), &lease, &limit],
            )
            .await?;
        self.release(conn);
        let mut items: Vec<OutboxItem> = rows
            .iter()
            .map(|r| OutboxItem {
                id: r.get(0),
                kind: r.get(1),
                body: r.get(2),
                attempts: r.get(3),
            })
            .collect();
        items.sort_by_key(|item| item.id);
        Ok(items)
    }

    /// Marks an outbox entry delivered, or schedules its retry (`None`: give up).
    pub async fn finish_outbox(
        &self,
        id: i64,
        outcome: Result<(), (String, Option<u64>)>,
    ) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        match outcome {
            Ok(()) => {
                conn.execute("UPDATE outbox SET done = true WHERE id = $1", &[&id])
                    .await?;
            }
            Err((error, Some(next_at_us))) => {
                conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_at = $2, last_error = $3 WHERE id = $1",
                    &[&id, &to_i64(next_at_us), &error],
                )
                .await?;
            }
            Err((error, None)) => {
                conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, done = true, last_error = $2 WHERE id = $1",
                    &[&id, &format!("gave up: {error}")],
                )
                .await?;
            }
        }
        self.release(conn);
        Ok(())
    }
}

/// The actor of changes time makes.
pub fn system() -> Principal {
    Principal {
        subject: gatehouse_core::approval::record::SYSTEM_ACTOR.to_owned(),
        groups: Vec::new(),
    }
}
