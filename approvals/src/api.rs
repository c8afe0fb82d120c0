//! The HTTP JSON API.
//!
//! | method and path | caller | what |
//! |---|---|---|
//! | `POST /v1/requests` | filter | file a request: `{"requester": {…}, "request": NewRequest}` |
//! | `POST /v1/requests` | person | ask a window on a scope: `{"scope", "grant_seconds"?, "reason"?}` |
//! | `GET /v1/requests[?state=pending]` | person | the inbox, newest first |
//! | `GET /v1/requests/ID` | person | one request |
//! | `GET /v1/requests/ID/records` | person | its records, in order |
//! | `POST /v1/requests/ID/approve` | person | `{"reason"?}` |
//! | `POST /v1/requests/ID/deny` | person | `{"reason"}` |
//! | `POST /v1/requests/ID/expire` | person | withdraw (requester) or end (approver) |
//! | `POST /v1/requests/ID/consume` | filter | use up a single-use grant: `{"subject", "hash"}`; 409 if it cannot be |
//! | `POST /v1/requests?wait_ms=N` | filter | file a request and hold the answer until it is decided (at most N ms): see [`Api::await_decision`] |
//! | `POST /v1/requests/ID/await` | filter | the same for a request already filed: `{"subject", "hash", "wait_ms"}` |
//! | `GET /v1/grants` | filter | [`GrantsDocument`](gatehouse_core::approval::GrantsDocument) |
//! | `POST /v1/reasons` | person | `{"reason", "seconds"}`: the caller's reason for what they do next; requests filed for them without one carry it (a reason that works with plain kubectl) |
//! | `GET /healthz` | anyone | 200 once the database answered at start |
//!
//! People present an OIDC token the filters accept (`Authorization: Bearer`);
//! filters present the configured `filter_key`. Errors are `{"error": "…"}`.

use crate::store::{Store, StoreError, now_us};
use gatehouse_core::approval::{
    ApprovalError, ApprovalRequest, Event, NewRequest, Principal, State, Target, Verdict,
};
use gatehouse_core::identity::Verifier;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Largest request body read.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most requests one list returns.
const LIST_LIMIT: i64 = 500;

/// What every handler shares.
pub struct Api {
    pub store: Arc<Store>,
    pub verifier: Arc<RwLock<Verifier>>,
    pub filter_key: String,
    pub scopes: BTreeMap<String, gatehouse_core::approval::ApprovalRequirement>,
    /// Pending requests one requester may have at once.
    pub max_pending_per_requester: u32,
    /// Makes generated request ids unique within the process.
    pub counter: AtomicU64,
}

/// Who is calling.
#[derive(Debug)]
enum Caller {
    Filter,
    Person(Principal),
}

/// A refusal with its HTTP status.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError(status, message.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        let status = match &error {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Refused(refusal) => match refusal {
                ApprovalError::SelfApproval { .. }
                | ApprovalError::NotApprover { .. }
                | ApprovalError::WrongRequester { .. } => StatusCode::FORBIDDEN,
                ApprovalError::ReasonRequired(_)
                | ApprovalError::ReasonTooLong
                | ApprovalError::TooLong { .. }
                | ApprovalError::InvalidId(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::CONFLICT,
            },
            StoreError::TooManyPending { .. } => StatusCode::TOO_MANY_REQUESTS,
            StoreError::Db(_) | StoreError::Corrupt(..) => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            eprintln!("gatehouse-approvals: {error}");
        }
        ApiError(status, error.to_string())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FiledRequest {
    requester: Principal,
    request: NewRequest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeRequest {
    scope: String,
    #[serde(default)]
    grant_seconds: Option<u64>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
    seconds: u64,
}

/// Longest a stated reason lasts.
const MAX_REASON_SECONDS: u64 = 24 * 3600;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumeBody {
    subject: String,
    hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AwaitBody {
    subject: String,
    hash: String,
    wait_ms: u64,
}

/// Longest a filter may hold an answer open.
const MAX_WAIT_MS: u64 = 300_000;
/// How often a held answer looks at the request again.
const WAIT_STEP_MS: u64 = 200;

type Reply = Result<(StatusCode, Value), ApiError>;

impl Api {
    /// Answers one HTTP request.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, body) = match self.route(request).await {
            Ok(reply) => reply,
            Err(ApiError(status, message)) => (status, json!({ "error": message })),
        };
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        response
    }

    async fn route(&self, request: Request<Incoming>) -> Reply {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if method == Method::GET && segments == ["healthz"] {
            return Ok((StatusCode::OK, json!({"status": "ok"})));
        }
        let caller = self.authenticate(request.headers())?;
        let body = read_body(request).await?;
        match (method, segments.as_slice(), caller) {
            (Method::POST, ["v1", "requests"], Caller::Filter) => {
                let filed = self.file(&body).await?;
                match query_value(&query, "wait_ms").and_then(|w| w.parse().ok()) {
                    Some(wait_ms) => {
                        let (id, subject, hash) = waiting_for(&filed.1);
                        self.await_decision(&id, &subject, &hash, wait_ms).await
                    }
                    None => Ok(filed),
                }
            }
            (Method::POST, ["v1", "requests", id, "await"], Caller::Filter) => {
                let AwaitBody {
                    subject,
                    hash,
                    wait_ms,
                } = parse(&body)?;
                self.await_decision(id, &subject, &hash, wait_ms).await
            }
            (Method::POST, ["v1", "requests"], Caller::Person(who)) => {
                self.ask_scope(&body, who).await
            }
            (Method::GET, ["v1", "requests"], Caller::Person(_)) => self.list(&query).await,
            (Method::GET, ["v1", "requests", id], Caller::Person(_)) => {
                Ok((StatusCode::OK, to_value(&self.store.get(id).await?)))
            }
            (Method::GET, ["v1", "requests", id, "records"], Caller::Person(_)) => {
                let lines = self.store.records(id).await?;
                let records: Vec<Value> = lines
                    .iter()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
                Ok((StatusCode::OK, json!({ "records": records })))
            }
            (Method::POST, ["v1", "requests", id, "approve"], Caller::Person(who)) => {
                self.review(id, who, Verdict::Approve, &body).await
            }
            (Method::POST, ["v1", "requests", id, "deny"], Caller::Person(who)) => {
                self.review(id, who, Verdict::Deny, &body).await
            }
            (Method::POST, ["v1", "requests", id, "expire"], Caller::Person(who)) => {
                let request = self
                    .store
                    .update(id, now_us(), |r, now| {
                        r.expire(&who, now).map(|e| Some((e, who.clone())))
                    })
                    .await?;
                Ok((StatusCode::OK, to_value(&request)))
            }
            (Method::POST, ["v1", "requests", id, "consume"], Caller::Filter) => {
                let ConsumeBody { subject, hash } = parse(&body)?;
                let actor = Principal {
                    subject: subject.clone(),
                    groups: Vec::new(),
                };
                let request = self
                    .store
                    .update(id, now_us(), |r, now| {
                        r.consume(&subject, &hash, now).map(|e| Some((e, actor)))
                    })
                    .await?;
                Ok((StatusCode::OK, to_value(&request)))
            }
            (Method::POST, ["v1", "reasons"], Caller::Person(who)) => {
                let ReasonBody { reason, seconds } = parse(&body)?;
                let reason = reason.trim();
                if reason.is_empty()
                    || reason.len() > gatehouse_core::approval::request::MAX_REASON_BYTES
                {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "a reason is 1 to 1000 bytes of text",
                    ));
                }
                let until = now_us() / 1_000_000 + seconds.clamp(1, MAX_REASON_SECONDS);
                self.store.set_reason(&who.subject, reason, until).await?;
                Ok((
                    StatusCode::OK,
                    json!({"subject": who.subject, "reason": reason, "until": until}),
                ))
            }
            (Method::GET, ["v1", "grants"], Caller::Filter) => {
                let mut document = self.store.grants(now_us()).await?;
                document.max_pending_per_requester = Some(self.max_pending_per_requester);
                Ok((StatusCode::OK, to_value(&document)))
            }
            (_, ["v1", ..], Caller::Filter) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the filter key may only file, read grants and use them",
            )),
            (_, ["v1", ..], Caller::Person(_)) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such operation: {path}"),
            )),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such path: {path}"),
            )),
        }
    }

    fn authenticate(&self, headers: &hyper::HeaderMap) -> Result<Caller, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
        let token = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| unauthorized("send Authorization: Bearer <token>"))?;
        if constant_time_eq(token.as_bytes(), self.filter_key.as_bytes()) {
            return Ok(Caller::Filter);
        }
        let now = i64::try_from(now_us() / 1_000_000).unwrap_or(i64::MAX);
        let verifier = self
            .verifier
            .read()
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "verifier unavailable"))?;
        let identity = verifier
            .verify(token, now)
            .map_err(|r| unauthorized(&format!("token rejected: {r} ({})", r.code())))?;
        Ok(Caller::Person(Principal {
            subject: identity.subject,
            groups: identity.groups,
        }))
    }

    async fn file(&self, body: &[u8]) -> Reply {
        let FiledRequest {
            requester,
            mut request,
        } = parse(body)?;
        if request.reason.is_none() {
            request.reason = self
                .store
                .current_reason(&requester.subject, now_us() / 1_000_000)
                .await?;
        }
        let id = match &request.id {
            Some(id) => id.clone(),
            None => self.fresh_id(&requester.subject),
        };
        let now = now_us();
        let new = ApprovalRequest::new(id, request, requester, now / 1_000_000)
            .map_err(StoreError::from)?;
        self.create(new, now).await
    }

    async fn ask_scope(&self, body: &[u8], who: Principal) -> Reply {
        let ScopeRequest {
            scope,
            grant_seconds,
            reason,
        } = parse(body)?;
        let requirement = self.scopes.get(&scope).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no scope {scope} (the service's configuration lists them)"),
            )
        })?;
        let id = self.fresh_id(&who.subject);
        let now = now_us();
        let new = ApprovalRequest::new(
            id,
            NewRequest {
                id: None,
                rule: scope.clone(),
                requirement,
                reason,
                target: Target::Scope { name: scope },
                grant_seconds,
            },
            who,
            now / 1_000_000,
        )
        .map_err(StoreError::from)?;
        self.create(new, now).await
    }

    async fn create(&self, request: ApprovalRequest, now: u64) -> Reply {
        let (stored, created) = self
            .store
            .create(&request, self.max_pending_per_requester, now)
            .await?;
        if !created && stored.requester.subject != request.requester.subject {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("request id {} is taken", request.id),
            ));
        }
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((status, to_value(&stored)))
    }

    async fn list(&self, query: &str) -> Reply {
        let state = match query_value(query, "state") {
            None | Some("all") => None,
            Some(name) => Some(
                serde_json::from_value::<State>(Value::String(name.to_owned())).map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "unknown state {name} (pending, approved, denied, expired, used, all)"
                        ),
                    )
                })?,
            ),
        };
        let requests = self.store.list(state, LIST_LIMIT).await?;
        Ok((StatusCode::OK, json!({ "requests": requests })))
    }

    async fn review(&self, id: &str, who: Principal, verdict: Verdict, body: &[u8]) -> Reply {
        let ReviewBody { reason } = if body.is_empty() {
            ReviewBody::default()
        } else {
            parse(body)?
        };
        let request = self
            .store
            .update(id, now_us(), |r, now| {
                r.review(&who, verdict, reason, now)
                    .map(|e: Event| Some((e, who.clone())))
            })
            .await?;
        Ok((StatusCode::OK, to_value(&request)))
    }

    /// Holds the answer until request `id` is decided or `wait_ms` pass, then
    /// answers it as it stands. An approved single-use grant is used up for
    /// `subject` running `hash` before the answer (state `used`): the filter
    /// holding the request lets it through on that answer alone. If it cannot
    /// be (another caller used it a moment earlier), the answer is 409, so a
    /// `used` answer always means the use was this call's. Any replica
    /// may answer: the wait reads the database, the use takes the row lock.
    async fn await_decision(&self, id: &str, subject: &str, hash: &str, wait_ms: u64) -> Reply {
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(wait_ms.min(MAX_WAIT_MS));
        loop {
            let request = self.store.get(id).await?;
            match request.state {
                State::Pending if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(WAIT_STEP_MS)).await;
                }
                State::Approved
                    if request.requirement.grant
                        == gatehouse_core::approval::GrantKind::SingleUse =>
                {
                    let actor = Principal {
                        subject: subject.to_owned(),
                        groups: Vec::new(),
                    };
                    let used = self
                        .store
                        .update(id, now_us(), |r, now| {
                            r.consume(subject, hash, now).map(|e| Some((e, actor)))
                        })
                        .await;
                    return match used {
                        Ok(request) => Ok((StatusCode::OK, to_value(&request))),
                        // Used by another caller, or ended, meanwhile: the
                        // holder must not take that for its own use.
                        Err(StoreError::Refused(e)) => Err(ApiError::new(
                            StatusCode::CONFLICT,
                            format!("request {id} was approved but cannot be used here: {e}"),
                        )),
                        Err(e) => Err(e.into()),
                    };
                }
                _ => return Ok((StatusCode::OK, to_value(&request))),
            }
        }
    }

    /// `apr-…` from the subject, the time, the process and a counter.
    fn fresh_id(&self, subject: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let seed = format!("{subject}\0{}\0{}\0{n}", now_us(), std::process::id());
        gatehouse_core::approval::grant::request_id(seed.as_bytes())
    }
}

/// The id, requester and hash of a request just filed (as answered).
fn waiting_for(request: &Value) -> (String, String, String) {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let target_hash = request
        .get("target")
        .and_then(|t| t.get("statement_hash").or_else(|| t.get("request_hash")));
    (
        text(request.get("id")),
        text(request.get("requester").and_then(|r| r.get("subject"))),
        text(target_hash),
    )
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

async fn read_body(request: Request<Incoming>) -> Result<Vec<u8>, ApiError> {
    Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body unreadable or over {MAX_BODY_BYTES} bytes: {e}"),
            )
        })
}

/// The value of `name` in a query string (no percent-decoding: values are
/// plain words).
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Compares secrets without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_and_secret_comparison() {
        assert_eq!(query_value("a=1&state=pending", "state"), Some("pending"));
        assert_eq!(query_value("", "state"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
