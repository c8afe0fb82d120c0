//! The per-connection protocol engine: frames both directions, tracks the
//! session's phase and the server's answers, and produces records.
//!
//! ```text
//!  client ──chunk──▶ Session::on_frontend ──Verdict (bytes for the server)──▶
//!         ◀──Verdict (bytes for the client)── Session::on_backend ◀──chunk── server
//!                              Session::take_records ──▶ Record
//! ```
//!
//! # Buffering
//! A message the engine decodes (Query, Parse, Bind, ErrorResponse, …) is held
//! until complete, up to `max_buffered_bytes`. DataRow and CopyData, and any
//! message over the limit, stream through as their bytes arrive; for those only a
//! bounded prefix is kept (enough for the record). Held memory per direction is
//! therefore at most `max_buffered_bytes` plus that prefix.
//!
//! # Answering the client
//! The host cannot write to the client on its own: bytes reach the client only in
//! place of server bytes. So when the engine must tell the client something, it
//! makes the server answer and rewrites that answer:
//! - TLS requests (SSLRequest, GSSENCRequest) go to the server as an SSLRequest;
//!   its one-byte answer becomes `N` or, when refused, a FATAL ErrorResponse.
//!   See [`SslRequestPolicy`].
//! - A malformed or out-of-protocol frontend message is not forwarded. In its
//!   place the server gets CopyFail + Sync + Terminate (or, before startup, an
//!   SSLRequest), which it answers with ReadyForQuery, an ErrorResponse or a
//!   one-byte answer; that answer is replaced by `FATAL 08P01` and the
//!   connection is closed. Later client bytes are discarded.
//! - Malformed server bytes are replaced by `FATAL 08P01` and the connection is
//!   closed at once.
//! - A StartupMessage whose parameters are refused ([`crate::startup`]) goes to
//!   the server as an SSLRequest, whose answer becomes the refusal's FATAL.
//! - A session that holds more than `max_session_bytes` ends as after a
//!   malformed client message, with `FATAL 53200` (see `memory`).
//! - The engine's own catalog queries (for the fast path, see `fastpath`) go
//!   ahead of a client message; their answers are consumed.
//! - A statement the policy ([`Session::set_statement_policy`]) blocks is replaced
//!   by a block that makes the server raise `42501` itself, so transaction and
//!   extended-query semantics are the server's; see [`crate::deny`].
//!
//! # Glue
//! ```
//! use gatehouse_postgres::{CloseReason, ConnectionInfo, EngineConfig, Forward, Session};
//! use std::sync::Arc;
//!
//! let config = Arc::new(EngineConfig::default()); // parsed once, shared
//! let conn = ConnectionInfo { id: 1, client_address: "10.0.0.7:51000".into() };
//! let mut session = Session::new(config, conn, 1_700_000_000_000_000);
//! // In the client → server callback (the same shape for server → client):
//! let chunk = b"\0\0\0\x08\x04\xd2\x16\x2f"; // an SSLRequest
//! let verdict = session.on_frontend(chunk, 1_700_000_000_000_100);
//! match verdict.forward {
//!     Forward::Unchanged => {}                  // leave the buffer alone
//!     Forward::Replace(bytes) => drop(bytes),   // replace the whole buffer with `bytes`
//! }
//! if verdict.close_connection { /* close the client connection after the write */ }
//! for record in session.take_records() {
//!     let _line = record.to_json(); // hand to the record queue
//! }
//! session.on_close(CloseReason::Client, 1_700_000_000_000_200);
//! ```

use crate::config::{EngineConfig, SslRequestPolicy};
use crate::disposition::Disposition;
use crate::framing::{
    Buffering, Chunk, Frame, FrameMode, Framer, Header, Message, Output, Stream, Verdict,
};
use crate::protocol::{self as pg, BackendMessage, FrontendMessage, StartupPacket};
use crate::sql::lexer;
use base64::Engine as _;
use gatehouse_core::build;
use gatehouse_core::policy::Decision;
use gatehouse_core::record::{
    CopyDirection, EndReason, FilterMode, ParameterValue, PgClient, PgProtocol, Record,
    RecordHeader, SCHEMA_VERSION, SessionEndRecord, SessionStartRecord, Shared, StatementError,
    StatementRecord, Timestamp,
};
use ledger::{Ledger, Pending, Undo};
use std::collections::VecDeque;
use std::sync::Arc;

mod approvals;
mod enforce;
mod fastpath;
mod ledger;
mod login;
mod mask_hooks;
mod memory;
mod shadow;

/// Records held for the host beyond this are dropped (the sequence shows the gap).
const MAX_QUEUED_RECORDS: usize = 4096;
/// Requests awaiting the server's answer beyond this end the session: a client
/// that pipelines without reading would otherwise grow the engine without bound.
pub const MAX_PENDING_REQUESTS: usize = 16 * 1024;
/// Statements of one Query recorded separately; the rest share the last record.
pub const MAX_STATEMENTS_PER_QUERY: usize = 1000;
/// Prefix of an oversize Bind or FunctionCall kept for its names and OID.
const NAMES_PREFIX: usize = 1024;
/// Prefix of an oversize ErrorResponse kept for its SQLSTATE and message.
const ERROR_PREFIX: usize = 4096;
/// The server knows a prepared statement or portal by the first 63 bytes of its
/// name (NAMEDATALEN - 1): longer names that agree that far are one name.
const SERVER_NAME_BYTES: usize = 63;

/// A prepared statement or portal name as the server keys it.
fn server_name(name: &[u8]) -> &[u8] {
    name.get(..SERVER_NAME_BYTES).unwrap_or(name)
}

/// The startup user of a readiness probe (`gatehouse ready postgres`): the
/// filter answers it itself, after the server answered an SSLRequest, so a
/// probe proves the filter and the way to the server both work.
pub const READINESS_USER: &str = "gatehouse-readiness";
/// How the filter's readiness answer begins; the probe looks for it.
pub const READINESS_MESSAGE: &str = "gatehouse ready";

/// Who the connection belongs to, as the host knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The host's connection id.
    pub id: u64,
    /// The client's address (`ip:port`).
    pub client_address: String,
}

/// Why the host reports the connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client side closed.
    Client,
    /// The server side closed.
    Server,
    /// The host cannot tell.
    Unknown,
}

/// Where in the protocol the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the StartupMessage (or SSLRequest, GSSENCRequest, CancelRequest).
    Startup,
    /// An SSLRequest went to the server; waiting for its one-byte answer.
    TlsNegotiation,
    /// StartupMessage sent; authentication exchange under way.
    Authenticating,
    /// Logged in: queries flow.
    Ready,
    /// The connection carried a CancelRequest; nothing else may follow.
    Cancelling,
    /// Terminate seen, or the session failed: nothing more is forwarded.
    Finished,
}

/// Counters for the host's filter state and stats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSummary {
    pub statements: u64,
    pub errors: u64,
    /// Statements the policy refused.
    pub denied: u64,
    /// Values masked for the client (see `SessionEndRecord::masked`).
    pub masked: u64,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    /// Records dropped because the host did not take them in time.
    pub records_dropped: u64,
    /// Server messages that matched no outstanding request (tolerated).
    pub unmatched_backend_messages: u64,
    /// Bytes currently held in engine memory.
    pub buffered_bytes: usize,
    /// Bytes the session held at its last memory count (see
    /// [`Session::accounted_bytes`]).
    pub accounted_bytes: usize,
    /// Records produced so far (the last sequence number used).
    pub last_sequence: u64,
    pub backend_pid: Option<i32>,
}

/// The text of a statement as recorded, shared by every Execute of it.
#[derive(Debug)]
struct StatementText {
    text: Shared<str>,
    truncated: bool,
    kind: Option<String>,
    /// The policy's decision, when a policy judged the text.
    decision: Option<Decision>,
    /// The approval it runs under, when a `require_approval` rule matched it.
    approval: Option<gatehouse_core::approval::ApprovalRef>,
}

impl StatementText {
    /// Whether `other` is this text (a copy naming an approval included).
    fn is_same_text(&self, other: &StatementText) -> bool {
        Arc::ptr_eq(&self.text.0, &other.text.0)
    }
}

#[derive(Debug, Clone)]
struct Portal {
    statement_name: Vec<u8>,
    text: Option<Arc<StatementText>>,
    parameters: Option<Vec<ParameterValue>>,
    /// What masking knows of it.
    masking: ledger::Noted,
    /// Alive while the Bind that defined it awaits its answer: a portal
    /// the server has not bound yet outlives the end of a transaction.
    binder: std::rc::Weak<[u8]>,
    /// The transactions ended when an undo kept it (see the ledger).
    stashed_in: u64,
}

/// A statement sent to the server whose outcome is awaited.
#[derive(Debug)]
struct StatementRun {
    protocol: PgProtocol,
    text: Option<Arc<StatementText>>,
    statement_name: Option<String>,
    portal: Option<String>,
    parameters: Option<Vec<ParameterValue>>,
    function_oid: Option<u32>,
    copy: Option<CopyDirection>,
    start_us: u64,
    bytes_from_client: u64,
    rows_seen: u64,
    /// The portal an Execute runs, as the server keys it (`None` for other
    /// runs): what its record names is read there again when the ledger
    /// applies its batch again.
    portal_key: Option<Vec<u8>>,
}

impl StatementRun {
    fn new(protocol: PgProtocol, text: Option<Arc<StatementText>>, start_us: u64) -> Self {
        Self {
            protocol,
            text,
            statement_name: None,
            portal: None,
            parameters: None,
            function_oid: None,
            copy: None,
            start_us,
            bytes_from_client: 0,
            rows_seen: 0,
            portal_key: None,
        }
    }

    /// Reads the text, parameters and statement name of `portal` (none when
    /// it is unknown).
    fn reread(&mut self, portal: Option<&Portal>) {
        self.text = portal.and_then(|p| p.text.clone());
        self.parameters = portal.and_then(|p| p.parameters.clone());
        self.statement_name = portal.and_then(|p| non_empty(&p.statement_name));
    }
}

/// The outcome of one statement, from the server.
#[derive(Default)]
struct Outcome {
    command_tag: Option<String>,
    error: Option<StatementError>,
    suspended: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Frontend,
    Backend,
}

/// One client connection's protocol engine. Sans-IO: bytes and time in, verdicts
/// and records out.
pub struct Session {
    config: Arc<EngineConfig>,
    conn: ConnectionInfo,
    /// Shared by every record of the session; set once the StartupMessage is seen.
    client: Shared<PgClient>,
    /// Where in the protocol the session is, with the state only that stretch needs.
    stage: PhaseState,
    frontend: Framer,
    backend: Framer,
    /// The requests the server owes answers to, with the statements and
    /// portals they define.
    ledger: Ledger,
    frontend_bytes_since_record: u64,
    backend_bytes_since_record: u64,
    started_us: u64,
    sequence: u64,
    records: Vec<Record>,
    summary: SessionSummary,
    /// Masks what the server sends back, when configured.
    masker: Option<crate::masking::SessionMasker>,
    /// The in-place rewrite of the server message streaming through.
    stream_mask: Option<crate::masking::StreamRewrite>,
    statement_policy: Option<Box<dyn crate::guard::StatementPolicy>>,
    policy_identity: Option<gatehouse_core::identity::Identity>,
    /// How the client proves who it is (see [`Session::set_authenticator`]).
    login_method: login::LoginMethod,
    /// The configuration in force, stamped on every record.
    policy_hash: Option<Shared<str>>,
    /// Enforcing, or observing only (see [`Session::set_mode`]).
    mode: FilterMode,
    /// Connected to the approval service (see [`Session::set_approval_gate`]).
    approvals: Option<approvals::SessionApprovals>,
    /// The settings that decide how the server lexes, as it last reported them.
    server_lexing: crate::policy::Lexing,
    /// The fast-path functions and the engine's own catalog queries.
    fast_path: fastpath::FastPathTable,
    /// The count behind the session's memory bound.
    memory: memory::MemoryWatch,
}

/// Why the engine ends a session itself.
struct Failure {
    sqlstate: &'static str,
    /// What the client is told, in a FATAL.
    client_message: String,
    reason: EndReason,
    detail: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TlsRequestKind {
    Ssl,
    GssEnc,
}

/// The session's place in the protocol behind [`Phase`], with the state
/// only that stretch needs: the state before the session is established
/// lives in [`Opening`] and is dropped when the session is ready or ends;
/// the state of its ending lives in [`Ending`].
enum PhaseState {
    /// Startup, TLS negotiation or authentication.
    Opening(Box<Opening>),
    Ready {
        /// Why the session will end, when the server already said.
        end_hint: Option<EndHint>,
    },
    /// A CancelRequest went to the server: the session ends for it.
    Cancelling,
    Finished(Box<Ending>),
}

/// Why a session will end, with the detail its end record gives, learned
/// before the connection closes.
type EndHint = (EndReason, Option<String>);

/// What the session needs until it is established.
struct Opening {
    step: OpeningStep,
    /// The server already answered an SSLRequest: it refuses a second one.
    server_saw_ssl_request: bool,
    /// The check of the client's token, with token login.
    token_check: TokenCheck,
    /// Why the session will end, when the server already said.
    end_hint: Option<EndHint>,
}

/// What the session needs once it is ending: the client ended it, the server
/// did, or the engine did (then nothing more reaches the server).
#[derive(Default)]
struct Ending {
    /// Why it ends, when known before the connection closes.
    reason: Option<EndHint>,
    /// A FATAL the client is owed in place of the server's next answer.
    owed_client_error: Option<Vec<u8>>,
    /// The connection closes after what is forwarded now.
    close: bool,
    /// The session's end is recorded (or, for a readiness probe, never will be).
    recorded: bool,
}

/// The token check under way while the client logs in.
enum TokenCheck {
    /// The server authenticates the client itself.
    None,
    /// The client must log in with a token.
    Enforce(login::TokenLogin),
    /// Shadow mode: the token is checked passively as it passes.
    Observe(shadow::ShadowLogin),
}

enum OpeningStep {
    /// Waiting for the StartupMessage (or SSLRequest, GSSENCRequest, CancelRequest).
    Startup,
    /// An SSLRequest went to the server; waiting for its one-byte answer.
    TlsNegotiation {
        /// What the client asked for, answered when the server's byte arrives;
        /// `None` for a second request, which the server refuses.
        requested: Option<TlsRequestKind>,
    },
    /// StartupMessage sent; authentication exchange under way.
    Authenticating {
        /// Protocol options the client asked for that the server has not yet
        /// said it does not know (see [`crate::startup`]).
        protocol_options: Vec<String>,
        /// Why an enforcing session would have refused the startup parameters
        /// (shadow mode records it on the session start).
        startup_refusal: Option<String>,
    },
}

impl PhaseState {
    fn phase(&self) -> Phase {
        match self {
            PhaseState::Opening(opening) => match opening.step {
                OpeningStep::Startup => Phase::Startup,
                OpeningStep::TlsNegotiation { .. } => Phase::TlsNegotiation,
                OpeningStep::Authenticating { .. } => Phase::Authenticating,
            },
            PhaseState::Ready { .. } => Phase::Ready,
            PhaseState::Cancelling => Phase::Cancelling,
            PhaseState::Finished(_) => Phase::Finished,
        }
    }

    /// The session is established, keeping what the opening learned of its end.
    fn become_ready(&mut self) {
        let end_hint = self
            .opening_mut()
            .and_then(|opening| opening.end_hint.take());
        *self = PhaseState::Ready { end_hint };
    }

    /// The session is ending (if it was not already): what the phase knew
    /// of why goes to its [`Ending`], which `change` then updates.
    fn finish<R>(&mut self, change: impl FnOnce(&mut Ending) -> R) -> R {
        let from = |reason| {
            Box::new(Ending {
                reason,
                ..Ending::default()
            })
        };
        let mut ending = match std::mem::replace(self, PhaseState::Cancelling) {
            PhaseState::Finished(ending) => ending,
            PhaseState::Opening(opening) => from(opening.end_hint),
            PhaseState::Ready { end_hint } => from(end_hint),
            PhaseState::Cancelling => from(Some((EndReason::CancelRequest, None))),
        };
        let changed = change(&mut ending);
        *self = PhaseState::Finished(ending);
        changed
    }

    fn ending(&self) -> Option<&Ending> {
        match self {
            PhaseState::Finished(ending) => Some(ending),
            _ => None,
        }
    }

    /// Where the phase keeps why the session will end; `None` when the phase
    /// itself says (a cancel request).
    fn end_hint_mut(&mut self) -> Option<&mut Option<EndHint>> {
        match self {
            PhaseState::Opening(opening) => Some(&mut opening.end_hint),
            PhaseState::Ready { end_hint } => Some(end_hint),
            PhaseState::Cancelling => None,
            PhaseState::Finished(ending) => Some(&mut ending.reason),
        }
    }

    /// A FATAL the client is owed in place of the server's next answer.
    fn owes_client_error(&self) -> bool {
        self.ending()
            .is_some_and(|ending| ending.owed_client_error.is_some())
    }

    fn opening_mut(&mut self) -> Option<&mut Opening> {
        match self {
            PhaseState::Opening(opening) => Some(opening),
            _ => None,
        }
    }

    fn opening(&self) -> Option<&Opening> {
        match self {
            PhaseState::Opening(opening) => Some(opening),
            _ => None,
        }
    }

    /// The token login under way, with token login before the session is ready.
    fn token_login(&self) -> Option<&login::TokenLogin> {
        match &self.opening()?.token_check {
            TokenCheck::Enforce(login) => Some(login),
            _ => None,
        }
    }

    fn token_login_mut(&mut self) -> Option<&mut login::TokenLogin> {
        match &mut self.opening_mut()?.token_check {
            TokenCheck::Enforce(login) => Some(login),
            _ => None,
        }
    }

    /// The passive token check under way, in a shadow session with token login.
    fn shadow_login_mut(&mut self) -> Option<&mut shadow::ShadowLogin> {
        match &mut self.opening_mut()?.token_check {
            TokenCheck::Observe(login) => Some(login),
            _ => None,
        }
    }

    /// Bytes held for the opening or the ending (for the memory count).
    fn held_bytes(&self) -> usize {
        let login = self.token_login().map_or(0, login::TokenLogin::held_bytes);
        let opening = self.opening().map_or(0, |_| size_of::<Opening>() + login);
        let ending = self.ending().map_or(0, |ending| {
            size_of::<Ending>() + ending.owed_client_error.as_ref().map_or(0, Vec::len)
        });
        opening + ending
    }

    /// The authentication step's state, while it is under way.
    fn authenticating_mut(&mut self) -> Option<(&mut Vec<String>, &mut Option<String>)> {
        match self.opening_mut()?.step {
            OpeningStep::Authenticating {
                ref mut protocol_options,
                ref mut startup_refusal,
            } => Some((protocol_options, startup_refusal)),
            _ => None,
        }
    }
}

impl Session {
    /// A session for a new connection, before any bytes.
    pub fn new(config: Arc<EngineConfig>, conn: ConnectionInfo, now_us: u64) -> Self {
        let client = PgClient {
            client_address: conn.client_address.clone(),
            ..PgClient::default()
        }
        .into();
        Self {
            config,
            conn,
            client,
            stage: PhaseState::Opening(Box::new(Opening {
                step: OpeningStep::Startup,
                server_saw_ssl_request: false,
                token_check: TokenCheck::None,
                end_hint: None,
            })),
            frontend: Framer::new(FrameMode::Untagged),
            backend: Framer::new(FrameMode::Tagged),
            ledger: Ledger::default(),
            frontend_bytes_since_record: 0,
            backend_bytes_since_record: 0,
            started_us: now_us,
            sequence: 0,
            records: Vec::new(),
            summary: SessionSummary::default(),
            masker: None,
            stream_mask: None,
            statement_policy: None,
            policy_identity: None,
            login_method: login::LoginMethod::Server,
            policy_hash: None,
            mode: FilterMode::Enforce,
            approvals: None,
            server_lexing: crate::policy::Lexing::default(),
            fast_path: fastpath::FastPathTable::default(),
            memory: memory::MemoryWatch::default(),
        }
    }

    /// Stamps every record with `hash`, the configuration in force
    /// ([`gatehouse_core::config::config_hash`]). Set it before any bytes.
    pub fn set_policy_hash(&mut self, hash: Shared<str>) {
        self.policy_hash = Some(hash);
    }

    /// Client → server bytes. Returns what to forward to the server.
    pub fn on_frontend(&mut self, chunk: &[u8], now_us: u64) -> Verdict {
        self.summary.bytes_from_client += chunk.len() as u64;
        let verdict = self.process(Dir::Frontend, chunk, now_us);
        self.observed(verdict)
    }

    /// Server → client bytes. Returns what to forward to the client. Call it with
    /// an empty chunk when the server's side reaches end of stream: if the client
    /// is owed an error, it is returned then.
    pub fn on_backend(&mut self, chunk: &[u8], now_us: u64) -> Verdict {
        self.summary.bytes_to_client += chunk.len() as u64;
        if chunk.is_empty()
            && let Some(Disposition::Replace(error)) = self.deliver_owed_error(now_us)
        {
            return self.observed(Verdict {
                forward: crate::framing::Forward::Replace(error),
                close_connection: true,
            });
        }
        let verdict = self.process(Dir::Backend, chunk, now_us);
        self.observed(verdict)
    }

    /// The connection closed. Records the session's end (once) and statements
    /// left without an answer.
    pub fn on_close(&mut self, reason: CloseReason, now_us: u64) {
        if self.stage.ending().is_some_and(|ending| ending.recorded) {
            return;
        }
        self.abandon_hold(now_us);
        let unanswered = StatementError {
            sqlstate: "08006".into(),
            message: "connection closed before the server completed the statement".into(),
            severity: "FATAL".into(),
        };
        while let Some(entry) = self.ledger.requests.pop_front() {
            let runs: Vec<StatementRun> = match entry {
                Pending::Query(runs) => runs.into_iter().take(1).collect(),
                Pending::Execute(run) | Pending::FunctionCall(Some(run)) => vec![run],
                _ => Vec::new(),
            };
            for run in runs {
                let outcome = Outcome {
                    error: Some(unanswered.clone()),
                    ..Outcome::default()
                };
                self.finish_statement(run, outcome, now_us);
            }
        }
        let (reason, detail) = if let Some(hint) = self.stage.finish(|ending| ending.reason.take())
        {
            hint
        } else {
            let r = match reason {
                CloseReason::Client => EndReason::ClientClosed,
                CloseReason::Server => EndReason::ServerClosed,
                CloseReason::Unknown => EndReason::Closed,
            };
            (r, None)
        };
        self.end_session(reason, detail, now_us);
    }

    /// Records produced since the last call, oldest first.
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }

    /// Counters for the host.
    pub fn summary(&self) -> SessionSummary {
        SessionSummary {
            buffered_bytes: self.buffered_bytes(),
            accounted_bytes: self.last_counted_bytes(),
            last_sequence: self.sequence,
            ..self.summary.clone()
        }
    }

    /// Bytes of partial frames and captured prefixes held in engine memory.
    pub fn buffered_bytes(&self) -> usize {
        self.frontend.held_bytes() + self.backend.held_bytes()
    }

    /// The session's protocol phase.
    pub fn phase(&self) -> Phase {
        self.stage.phase()
    }

    fn framer(&mut self, dir: Dir) -> &mut Framer {
        match dir {
            Dir::Frontend => &mut self.frontend,
            Dir::Backend => &mut self.backend,
        }
    }

    // ---- framing ------------------------------------------------------------

    /// Reads a chunk frame by frame: framing decides where messages begin and
    /// end, the session what each one means.
    fn process(&mut self, dir: Dir, bytes: &[u8], now_us: u64) -> Verdict {
        let mut chunk = Chunk::new(bytes);
        loop {
            let frame = match self.framer(dir).next(&mut chunk) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    self.violation(dir, error.to_string(), &mut chunk.out, now_us);
                    break;
                }
            };
            match frame {
                Frame::Header(header) => self.on_header(dir, header, &mut chunk, now_us),
                Frame::Message(message) => {
                    let action = self.on_message(dir, &message, now_us);
                    self.apply(action, &message, &mut chunk);
                    if dir == Dir::Frontend && self.hold_began() {
                        // Held for approval: the Query and what follows it
                        // wait, unread, for the service's answer.
                        let held = [message.wire(), chunk.take_rest()].concat();
                        self.set_aside_held(message.wire().len(), held);
                        self.framer(dir).recycle(message);
                        break;
                    }
                    self.framer(dir).recycle(message);
                }
                Frame::Part { range, bytes } => match self.stream_mask_bytes(dir, bytes) {
                    Some(masked) => chunk.out.emit(&masked),
                    None => chunk.out.pass(range),
                },
                Frame::Streamed(stream) => {
                    self.end_stream_mask(dir);
                    self.on_streamed(dir, stream, now_us);
                }
            }
        }
        let close = self.stage.ending().is_some_and(|ending| ending.close);
        chunk.finish(close)
    }

    /// A message's header is whole: decides whether it is held or streamed,
    /// and charges it to the session's memory bound.
    fn on_header(&mut self, dir: Dir, header: Header, chunk: &mut Chunk<'_>, now_us: u64) {
        let mode = self.framer(dir).mode;
        let buffering = match self.buffering(dir, mode, header) {
            Ok(buffering) => buffering,
            Err(reason) => {
                self.violation(dir, reason, &mut chunk.out, now_us);
                return;
            }
        };
        self.count_message(dir, mode.header_len() + header.body_len);
        if let Err(detail) = self.admit_message(dir, header.tag, header.body_len) {
            let failure = Failure {
                sqlstate: "53200",
                client_message: format!(
                    "gatehouse: the session holds more than {} bytes \
                     (max_session_bytes); read the server's answers before \
                     sending more",
                    self.config.max_session_bytes
                ),
                reason: EndReason::MemoryLimit,
                detail,
            };
            self.fail(dir, failure, &mut chunk.out, now_us);
            return;
        }
        self.framer(dir).read_as(buffering, chunk);
        if matches!(buffering, Buffering::Stream { .. }) && header.body_len > 0 {
            self.begin_stream_mask(dir, header.tag, header.body_len);
        }
    }

    fn apply(&mut self, action: Disposition, message: &Message<'_>, chunk: &mut Chunk<'_>) {
        match action {
            Disposition::Pass => chunk.forward(message),
            Disposition::Replace(bytes) => {
                chunk.out.emit(&bytes);
                if let Some(masker) = self.masker.as_mut() {
                    masker.recycle(bytes);
                }
            }
            // Withheld messages were followed like any other; the client
            // gets neither kind.
            Disposition::Drop | Disposition::Withhold => {}
        }
    }

    fn count_message(&mut self, dir: Dir, len: usize) {
        match dir {
            Dir::Frontend => self.frontend_bytes_since_record += len as u64,
            Dir::Backend => self.backend_bytes_since_record += len as u64,
        }
    }

    /// Whether a message is held until complete or streamed, or is refused.
    fn buffering(&self, dir: Dir, mode: FrameMode, h: Header) -> Result<Buffering, String> {
        let cap = self.config.max_buffered_bytes;
        // Startup packets are short (framing checks their limit): held.
        if mode == FrameMode::Untagged {
            return Ok(Buffering::Hold);
        }
        let over = h.body_len > cap;
        if over && dir == Dir::Frontend {
            self.refuse_unjudgeable(h.tag, h.body_len)?;
        }
        let statement_prefix = self.config.max_statement_bytes + NAMES_PREFIX;
        if dir == Dir::Backend && self.ledger.front_is_own() {
            // Answers to the engine's own queries (the fast path's and the
            // masker's) are read whole and never reach the client unread,
            // the asynchronous messages amid them included.
            if over {
                return Err(format!(
                    "message type {} of {} bytes in answer to the gateway's catalog query",
                    pg::tag_name(h.tag),
                    h.body_len
                ));
            }
            return Ok(Buffering::Hold);
        }
        let disposition = match (dir, h.tag) {
            (Dir::Frontend, pg::COPY_DATA_TAG) => Buffering::Stream { capture_limit: 0 },
            (Dir::Frontend, pg::QUERY_TAG | pg::PARSE_TAG) if over => Buffering::Stream {
                capture_limit: statement_prefix,
            },
            (Dir::Frontend, pg::BIND_TAG | pg::FUNCTION_CALL_TAG) if over => Buffering::Stream {
                capture_limit: NAMES_PREFIX,
            },
            // The masker rewrites DataRows and CopyData held whole when it can.
            (Dir::Backend, pg::DATA_ROW_TAG | pg::COPY_DATA_TAG)
                if self.masker.is_some() && !over =>
            {
                Buffering::Hold
            }
            (Dir::Backend, pg::DATA_ROW_TAG | pg::COPY_DATA_TAG) => {
                Buffering::Stream { capture_limit: 0 }
            }
            (Dir::Backend, pg::ERROR_RESPONSE_TAG) if over => Buffering::Stream {
                capture_limit: ERROR_PREFIX,
            },
            (
                Dir::Backend,
                pg::ROW_DESCRIPTION_TAG
                | pg::PARAMETER_DESCRIPTION_TAG
                | pg::NOTICE_RESPONSE_TAG
                | pg::NOTIFICATION_RESPONSE_TAG
                | pg::FUNCTION_CALL_RESPONSE_TAG,
            ) if over => Buffering::Stream { capture_limit: 0 },
            (_, tag) if over => {
                return Err(format!(
                    "message type {} length {} over max_buffered_bytes",
                    pg::tag_name(tag),
                    h.body_len
                ));
            }
            _ => Buffering::Hold,
        };
        // Streamed messages are never decoded whole, so check their phase here.
        let allowed = match dir {
            Dir::Frontend => self.phase() == Phase::Ready,
            Dir::Backend => matches!(self.phase(), Phase::Ready | Phase::Finished),
        };
        if matches!(disposition, Buffering::Stream { .. }) && !allowed {
            let when = if self.phase() == Phase::Authenticating {
                "during authentication"
            } else {
                "before startup"
            };
            return Err(format!("message type {} {when}", pg::tag_name(h.tag)));
        }
        Ok(disposition)
    }

    // ---- violations and endings -----------------------------------------------

    /// Ends the session because of bad bytes from `dir`; see the module docs.
    fn violation(&mut self, dir: Dir, reason: String, out: &mut Output<'_>, now_us: u64) {
        let side = match dir {
            Dir::Frontend => "client",
            Dir::Backend => "server",
        };
        let detail = format!("{side}: {reason}");
        let failure = Failure {
            sqlstate: "08P01",
            client_message: format!("gatehouse: protocol violation by the {detail}"),
            reason: EndReason::ProtocolError,
            detail,
        };
        self.fail(dir, failure, out, now_us);
    }

    /// Ends the session while handling bytes from `dir`: the client gets a FATAL
    /// (at once, or in place of the server's next answer) and nothing more
    /// reaches the server; see the module docs.
    fn fail(&mut self, dir: Dir, failure: Failure, out: &mut Output<'_>, now_us: u64) {
        let client_error = pg::fatal_error(failure.sqlstate, &failure.client_message);
        self.frontend.discard();
        match dir {
            Dir::Backend => {
                out.emit(&client_error);
                self.backend.discarding = true;
                self.stage.finish(|ending| {
                    ending.close = true;
                    ending.owed_client_error = None;
                });
            }
            Dir::Frontend => {
                match self.phase() {
                    Phase::Startup => {
                        let mut req = Vec::with_capacity(8);
                        StartupPacket::SslRequest.encode(&mut req);
                        out.emit(&req);
                        self.backend.restart(FrameMode::AnswerByte);
                    }
                    Phase::TlsNegotiation => {}
                    Phase::Authenticating | Phase::Ready => {
                        let mut bytes = Vec::with_capacity(32);
                        FrontendMessage::CopyFail {
                            message: b"gatehouse: protocol violation",
                        }
                        .encode(&mut bytes);
                        FrontendMessage::Sync.encode(&mut bytes);
                        FrontendMessage::Terminate.encode(&mut bytes);
                        out.emit(&bytes);
                    }
                    Phase::Cancelling | Phase::Finished => {}
                }
                // The server still answers what came before; the session ends
                // when the client gets its error or the connection closes.
                self.stage.finish(|ending| {
                    ending.owed_client_error = Some(client_error);
                    ending.reason = Some((failure.reason, Some(failure.detail)));
                });
                return;
            }
        }
        self.end_session(failure.reason, Some(failure.detail), now_us);
    }

    /// Remembers why the session will end, unless the engine's own ending of it
    /// already explains it.
    fn hint_end(&mut self, reason: EndReason, detail: Option<String>) {
        let Some(hint) = self.stage.end_hint_mut() else {
            return;
        };
        if !matches!(
            hint,
            Some((
                EndReason::ProtocolError | EndReason::MemoryLimit | EndReason::StartupRefused,
                _
            ))
        ) {
            *hint = Some((reason, detail));
        }
    }

    /// When the client is owed an error: the server's answer becomes that error.
    fn deliver_owed_error(&mut self, now_us: u64) -> Option<Disposition> {
        if !self.stage.owes_client_error() {
            return None;
        }
        let (error, reason) = self.stage.finish(|ending| {
            ending.close = true;
            (ending.owed_client_error.take(), ending.reason.take())
        });
        let error = error?;
        self.backend.discarding = true;
        if let Some((reason, detail)) = reason {
            self.end_session(reason, detail, now_us);
        }
        Some(Disposition::Replace(error))
    }

    /// Records the session's end, once; the session is ending from now on.
    fn end_session(&mut self, reason: EndReason, detail: Option<String>, now_us: u64) {
        if self
            .stage
            .finish(|ending| std::mem::replace(&mut ending.recorded, true))
        {
            return;
        }
        let header = self.next_header(now_us);
        let last_sequence = header.sequence;
        let record = SessionEndRecord {
            header,
            client: self.client.clone(),
            reason,
            detail,
            statements: self.summary.statements,
            errors: self.summary.errors,
            denied: self.summary.denied,
            masked: self.summary.masked,
            bytes_from_client: self.summary.bytes_from_client,
            bytes_to_client: self.summary.bytes_to_client,
            duration_us: now_us.saturating_sub(self.started_us),
            backend_pid: self.summary.backend_pid,
            last_sequence,
        };
        self.push_record(Record::SessionEnd(record));
    }

    fn next_header(&mut self, time_us: u64) -> RecordHeader {
        self.sequence += 1;
        RecordHeader {
            schema: SCHEMA_VERSION,
            sequence: self.sequence,
            connection_id: self.conn.id,
            time: Timestamp(time_us),
            gatehouse_version: build::VERSION,
            policy_hash: self.policy_hash.clone(),
            mode: self.mode,
        }
    }

    fn push_record(&mut self, record: Record) {
        if self.records.len() >= MAX_QUEUED_RECORDS {
            self.summary.records_dropped += 1;
        } else {
            self.records.push(record);
        }
    }

    // ---- startup and TLS ----------------------------------------------------------

    fn on_startup_packet(&mut self, body: &[u8], now_us: u64) -> Result<Disposition, String> {
        if self.phase() != Phase::Startup {
            return Err("startup packet while a TLS answer is pending".into());
        }
        let packet = StartupPacket::decode(body).map_err(|e| e.to_string())?;
        match packet {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                let kind = if packet == StartupPacket::SslRequest {
                    TlsRequestKind::Ssl
                } else {
                    TlsRequestKind::GssEnc
                };
                // A second request (libpq tries GSSAPI encryption, then SSL) cannot
                // be answered `N`: the server refuses a second SSLRequest. It is
                // forwarded so that the server answers, and refused.
                if let Some(opening) = self.stage.opening_mut() {
                    opening.step = OpeningStep::TlsNegotiation {
                        requested: (!opening.server_saw_ssl_request).then_some(kind),
                    };
                    opening.server_saw_ssl_request = true;
                }
                self.backend.mode = FrameMode::AnswerByte;
                if kind == TlsRequestKind::Ssl {
                    Ok(Disposition::Pass)
                } else {
                    let mut req = Vec::with_capacity(8);
                    StartupPacket::SslRequest.encode(&mut req);
                    Ok(Disposition::Replace(req))
                }
            }
            StartupPacket::Cancel { .. } => {
                // The phase says why the session ends.
                self.stage = PhaseState::Cancelling;
                // Anything after it is a violation; frame it as messages to say so.
                self.frontend.mode = FrameMode::Tagged;
                Ok(Disposition::Pass)
            }
            StartupPacket::Startup { version, params } => {
                let param = |name: &str| {
                    params
                        .iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| (*v).to_string())
                };
                let user = param("user").unwrap_or_default();
                if user == READINESS_USER && self.mode.is_enforce() {
                    return Ok(self.answer_readiness());
                }
                self.client = PgClient {
                    client_address: self.conn.client_address.clone(),
                    database: param("database").unwrap_or_else(|| user.clone()),
                    user,
                    application_name: param("application_name"),
                    identity: None,
                }
                .into();
                let mut startup_refusal = None;
                if let Err(refusal) =
                    crate::startup::check(&params, &self.config.startup_parameters)
                {
                    if self.mode.is_enforce() {
                        return Ok(self.refuse_startup(&refusal));
                    }
                    startup_refusal = Some(refusal.to_string());
                }
                let protocol_options = crate::startup::protocol_options(&params);
                if let Some(opening) = self.stage.opening_mut() {
                    opening.step = OpeningStep::Authenticating {
                        protocol_options,
                        startup_refusal,
                    };
                }
                self.frontend.mode = FrameMode::Tagged;
                self.backend.mode = FrameMode::Tagged;
                let protocol_version = format!("{}.{}", version >> 16, version & 0xffff);
                if !self.defer_session_start(protocol_version.clone()) {
                    let header = self.next_header(now_us);
                    let login_refusal = self
                        .stage
                        .authenticating_mut()
                        .and_then(|(_, startup_refusal)| startup_refusal.take());
                    self.push_record(Record::SessionStart(SessionStartRecord {
                        header,
                        client: self.client.clone(),
                        protocol_version,
                        login_refusal,
                    }));
                }
                Ok(Disposition::Pass)
            }
        }
    }

    /// Refuses a StartupMessage the server must not see (see [`crate::startup`]):
    /// the server gets an SSLRequest in its place, and its answer is replaced by
    /// the refusal.
    fn refuse_startup(&mut self, refusal: &crate::startup::StartupRefusal) -> Disposition {
        let message = refusal.to_string();
        self.stage.finish(|ending| {
            ending.owed_client_error = Some(pg::fatal_error(refusal.sqlstate(), &message));
            ending.reason = Some((EndReason::StartupRefused, Some(message)));
        });
        self.frontend.discarding = true;
        self.backend.mode = FrameMode::AnswerByte;
        let mut ssl_request = Vec::with_capacity(8);
        StartupPacket::SslRequest.encode(&mut ssl_request);
        Disposition::Replace(ssl_request)
    }

    /// During login: the server's NegotiateProtocolVersion names the protocol
    /// options it does not know; once it asks for authentication, any other
    /// option the client sent was accepted, and the session ends. `Some` with the
    /// refusal for the client in place of `msg`.
    fn check_protocol_options(
        &mut self,
        msg: &BackendMessage<'_>,
        now_us: u64,
    ) -> Option<Disposition> {
        let enforce = self.mode.is_enforce();
        let (protocol_options, _) = self.stage.authenticating_mut()?;
        if protocol_options.is_empty() {
            return None;
        }
        match msg {
            BackendMessage::NegotiateProtocolVersion { unrecognized, .. } => {
                protocol_options.retain(|option| !unrecognized.contains(&option.as_bytes()));
                None
            }
            BackendMessage::Authentication { .. } if enforce => {
                let option = protocol_options.swap_remove(0);
                let refusal = crate::startup::StartupRefusal::AcceptedProtocolOption(option);
                let message = refusal.to_string();
                self.stage.finish(|ending| ending.close = true);
                self.frontend.discarding = true;
                self.backend.discarding = true;
                self.end_session(EndReason::StartupRefused, Some(message.clone()), now_us);
                Some(Disposition::Replace(pg::fatal_error(
                    refusal.sqlstate(),
                    &message,
                )))
            }
            _ => None,
        }
    }

    /// Answers a readiness probe: the server gets an SSLRequest instead of the
    /// startup (it logs no connection attempt and no one logs in), and its
    /// answer is replaced by the readiness message. A probe is not a session:
    /// it leaves no records, which would otherwise arrive every few seconds.
    fn answer_readiness(&mut self) -> Disposition {
        let policy = self.policy_hash.as_deref().unwrap_or("none");
        let message = format!(
            "{READINESS_MESSAGE}: gatehouse postgres filter {}, policy {policy}",
            gatehouse_core::build::VERSION
        );
        self.stage.finish(|ending| {
            ending.owed_client_error = Some(pg::fatal_error("08004", &message));
            // A probe leaves no records.
            ending.recorded = true;
        });
        self.frontend.discarding = true;
        self.backend.mode = FrameMode::AnswerByte;
        let mut ssl_request = Vec::with_capacity(8);
        StartupPacket::SslRequest.encode(&mut ssl_request);
        Disposition::Replace(ssl_request)
    }

    fn on_tls_answer(&mut self, answer: u8, now_us: u64) -> Disposition {
        self.backend.mode = FrameMode::Tagged;
        if let Some(error) = self.deliver_owed_error(now_us) {
            return error;
        }
        let requested = match self.stage.opening_mut().map(|opening| &opening.step) {
            Some(OpeningStep::TlsNegotiation { requested }) => *requested,
            _ => None,
        };
        let refuse = |s: &mut Self, detail: &str| {
            let message = format!(
                "gatehouse: {detail}; connect without TLS or with TLS to the gateway itself"
            );
            s.stage.finish(|ending| ending.close = true);
            s.frontend.discarding = true;
            s.backend.discarding = true;
            s.end_session(EndReason::TlsRefused, Some(detail.to_string()), now_us);
            Disposition::Replace(pg::fatal_error("08P01", &message))
        };
        if requested.is_none() {
            return refuse(
                self,
                "second TLS request on one connection (GSSAPI encryption, then SSL); \
                 connect with gssencmode=disable",
            );
        }
        if self.config.ssl_request == SslRequestPolicy::Refuse {
            return refuse(self, "TLS negotiation with the server is refused by policy");
        }
        match (answer, requested) {
            (b'N', Some(_)) => {
                if let Some(opening) = self.stage.opening_mut() {
                    opening.step = OpeningStep::Startup;
                }
                self.frontend.mode = FrameMode::Untagged;
                Disposition::Pass
            }
            (b'S', _) => refuse(
                self,
                "the server accepted TLS, which would make the session opaque (opaque TLS refused)",
            ),
            (other, _) => {
                let detail = format!("unexpected answer {} to a TLS request", pg::tag_name(other));
                refuse(self, &detail)
            }
        }
    }

    // ---- messages -------------------------------------------------------------------

    fn on_message(&mut self, dir: Dir, message: &Message<'_>, now_us: u64) -> Disposition {
        let (tag, body) = (message.tag, message.body());
        let result = match (dir, message.mode) {
            (_, FrameMode::AnswerByte) => Ok(self.on_tls_answer(tag, now_us)),
            (Dir::Frontend, FrameMode::Untagged) => self.on_startup_packet(body, now_us),
            // Each client message is decoded once, here; the engine's
            // handling, enforcement, masking and records all read it.
            (Dir::Frontend, _) => match FrontendMessage::decode(tag, body) {
                Err(e) => Err(e.to_string()),
                Ok(msg) if self.phase() == Phase::Ready => {
                    match self.skipped_until_sync(&msg, now_us) {
                        Some(action) => Ok(action),
                        None => self.frontend_with_own_requests(&msg, tag, body, now_us),
                    }
                }
                Ok(msg) => self.frontend_with_masking(&msg, tag, body, now_us),
            },
            (Dir::Backend, _)
                if matches!(self.phase(), Phase::Ready | Phase::Finished)
                    && self.answering_own_request() =>
            {
                self.on_own_answer(tag, body, now_us)
            }
            (Dir::Backend, _) => self.backend_with_masking(tag, body, now_us),
        };
        match result {
            Ok(action) => action,
            Err(reason) => {
                // The violation's bytes go out through `out`; collect them here.
                let mut scratch = Output::new(&[]);
                self.violation(dir, reason, &mut scratch, now_us);
                match scratch.finish(false).forward {
                    crate::framing::Forward::Replace(bytes) => Disposition::Replace(bytes),
                    crate::framing::Forward::Unchanged => Disposition::Drop,
                }
            }
        }
    }

    fn on_streamed(&mut self, dir: Dir, stream: Stream, now_us: u64) {
        let truncated = stream.captured.len() < stream.body_len;
        if dir == Dir::Frontend {
            self.note_batch_message(stream.tag);
            // Streamed only when there is nothing to judge (see
            // `refuse_unjudgeable`): it passes, and the server ignores it.
            if self.ledger.skipping {
                return;
            }
        }
        match (dir, stream.tag) {
            (Dir::Backend, pg::DATA_ROW_TAG) => self.count_row(),
            (Dir::Frontend, pg::QUERY_TAG) => {
                let sql = stream
                    .captured
                    .split(|&b| b == 0)
                    .next()
                    .unwrap_or_default();
                self.enqueue_query(sql, truncated, None, now_us);
            }
            (Dir::Frontend, pg::PARSE_TAG) => {
                let mut parts = stream.captured.splitn(3, |&b| b == 0);
                let name = parts.next().unwrap_or_default().to_vec();
                let sql = parts.next().unwrap_or_default();
                let undo = self.register_statement(&name, sql, truncated, None);
                self.ledger.requests.push_back(Pending::Parse(undo));
            }
            (Dir::Frontend, pg::BIND_TAG) => {
                let mut parts = stream.captured.splitn(3, |&b| b == 0);
                let portal = parts.next().unwrap_or_default().to_vec();
                let statement = parts.next().unwrap_or_default().to_vec();
                let undo = self.register_portal(&portal, statement, None);
                self.ledger.requests.push_back(Pending::Bind(undo));
            }
            (Dir::Frontend, pg::FUNCTION_CALL_TAG) => {
                let oid = stream
                    .captured
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes);
                self.enqueue_function_call(oid, None, now_us);
            }
            (Dir::Backend, pg::ERROR_RESPONSE_TAG) => {
                let error = lenient_error(&stream.captured);
                self.on_error_response(error, now_us);
            }
            _ => {}
        }
    }

    fn on_frontend_message(
        &mut self,
        msg: &FrontendMessage<'_>,
        tag: u8,
        now_us: u64,
    ) -> Result<Disposition, String> {
        match self.phase() {
            Phase::Authenticating => {
                return match *msg {
                    FrontendMessage::Password { data }
                        if self.login_method == login::LoginMethod::Token =>
                    {
                        self.on_token_password(data, now_us)
                    }
                    FrontendMessage::Password { data }
                        if self.login_method == login::LoginMethod::ObservedToken =>
                    {
                        Ok(self.observe_token_password(data, now_us))
                    }
                    FrontendMessage::Password { .. } => Ok(Disposition::Pass),
                    FrontendMessage::Terminate => Ok(self.on_terminate()),
                    ref other => Err(format!(
                        "message type {} during authentication",
                        pg::tag_name(other.tag())
                    )),
                };
            }
            Phase::Ready if self.ledger.client_requests() >= MAX_PENDING_REQUESTS => {
                return Err(format!(
                    "more than {MAX_PENDING_REQUESTS} requests awaiting the server's answer"
                ));
            }
            Phase::Ready => {}
            Phase::Cancelling => return Err("data after CancelRequest".into()),
            _ => {
                return Err(format!(
                    "message type {} after the session ended",
                    pg::tag_name(tag)
                ));
            }
        }
        match *msg {
            FrontendMessage::Query { sql } => return Ok(self.enforce_query(sql, now_us)),
            FrontendMessage::Parse { name, sql, .. } => {
                let (action, undo) = self.enforce_parse(name, sql, now_us)?;
                self.ledger.requests.push_back(Pending::Parse(undo));
                return Ok(action);
            }
            FrontendMessage::Bind(ref bind) => {
                let parameters = self
                    .config
                    .record_parameters
                    .then(|| self.parameter_values(bind));
                let undo = self.register_portal(bind.portal, bind.statement.to_vec(), parameters);
                self.ledger.requests.push_back(Pending::Bind(undo));
                return Ok(self.enforce_bind(bind, now_us));
            }
            FrontendMessage::Describe { kind, name } => {
                return Ok(self.enforce_describe(kind, name, now_us));
            }
            FrontendMessage::Close { kind, name } => {
                let undo = self.ledger.close(kind, name);
                self.ledger.requests.push_back(Pending::Close(undo));
            }
            FrontendMessage::Execute { portal, .. } => {
                let key = server_name(portal);
                let mut run = StatementRun::new(PgProtocol::Extended, None, now_us);
                run.reread(self.ledger.portals.get(key));
                run.portal_key = Some(key.to_vec());
                run.portal = non_empty(portal);
                run.bytes_from_client = std::mem::take(&mut self.frontend_bytes_since_record);
                self.ledger.requests.push_back(Pending::Execute(run));
            }
            FrontendMessage::Sync => self.ledger.requests.push_back(Pending::Sync),
            FrontendMessage::FunctionCall(ref call) => {
                let parameters = self.config.record_parameters.then(|| {
                    let bind = pg::Bind {
                        portal: b"",
                        statement: b"",
                        param_formats: call.arg_formats.clone(),
                        params: call.args.clone(),
                        result_formats: Vec::new(),
                    };
                    self.parameter_values(&bind)
                });
                self.enqueue_function_call(Some(call.oid), parameters, now_us);
                return Ok(self.enforce_function_call(call, now_us));
            }
            FrontendMessage::Terminate => return Ok(self.on_terminate()),
            FrontendMessage::Flush
            | FrontendMessage::CopyData { .. }
            | FrontendMessage::CopyDone
            | FrontendMessage::CopyFail { .. } => {}
            FrontendMessage::Password { .. } => {
                return Err("password message after authentication".into());
            }
        }
        Ok(Disposition::Pass)
    }

    fn on_terminate(&mut self) -> Disposition {
        // A reason the session already had stands.
        self.stage.finish(|ending| {
            ending
                .reason
                .get_or_insert((EndReason::ClientTerminate, None));
        });
        Disposition::Pass
    }

    fn statement_text(&self, sql: &[u8], truncated: bool) -> StatementText {
        let limit = self.config.max_statement_bytes;
        let cut = sql.len() > limit;
        let sql = String::from_utf8_lossy(sql.get(..limit.min(sql.len())).unwrap_or_default());
        let lexed = lexer::tokenize_with(&sql, self.lexer_settings());
        let kind = lexed
            .statement_tokens()
            .next()
            .and_then(|tokens| lexer::leading_keyword(&sql, tokens));
        let text = if self.config.redact_literals {
            lexer::redact_literals(&sql, &lexed)
        } else {
            sql.into_owned()
        };
        let text = Shared(Arc::from(self.text_for_record(text)));
        StatementText {
            text,
            truncated: truncated || cut,
            kind,
            decision: None,
            approval: None,
        }
    }

    fn enqueue_query(
        &mut self,
        sql: &[u8],
        truncated: bool,
        decision: Option<Decision>,
        now_us: u64,
    ) {
        let mut ranges = lexer::statement_spans(sql, self.lexer_settings());
        if ranges.len() > MAX_STATEMENTS_PER_QUERY {
            // The last record covers the remaining statements together.
            let end = ranges.last().map_or(0, |r| r.end);
            ranges.truncate(MAX_STATEMENTS_PER_QUERY);
            if let Some(last) = ranges.last_mut() {
                last.end = end;
            }
        }
        let mut runs: VecDeque<StatementRun> = ranges
            .into_iter()
            .map(|range| {
                // A cut query's last statement is cut too.
                let piece_truncated = truncated && range.end == sql.len();
                let mut text =
                    self.statement_text(sql.get(range).unwrap_or_default(), piece_truncated);
                text.decision = decision.clone();
                StatementRun::new(PgProtocol::Simple, Some(Arc::new(text)), now_us)
            })
            .collect();
        if let Some(first) = runs.front_mut() {
            first.bytes_from_client = std::mem::take(&mut self.frontend_bytes_since_record);
        }
        self.ledger.requests.push_back(Pending::Query(runs));
    }

    fn enqueue_function_call(
        &mut self,
        oid: Option<u32>,
        parameters: Option<Vec<ParameterValue>>,
        now_us: u64,
    ) {
        let mut run = StatementRun::new(PgProtocol::FunctionCall, None, now_us);
        run.function_oid = oid;
        run.parameters = parameters;
        run.bytes_from_client = std::mem::take(&mut self.frontend_bytes_since_record);
        self.ledger
            .requests
            .push_back(Pending::FunctionCall(Some(run)));
    }

    /// A Parse (or a statement the engine defines in its place) defines
    /// `name` in the ledger; what it replaced, to undo.
    fn register_statement(
        &mut self,
        name: &[u8],
        sql: &[u8],
        truncated: bool,
        decision: Option<Decision>,
    ) -> Undo {
        // A statement the policy blocks is tracked past the limit (as far
        // again): its Binds and Describes must know it.
        let mut limit = self.config.max_prepared_statements;
        if decision.as_ref().is_some_and(|d| self.applies(d)) {
            limit = limit.saturating_mul(2);
        }
        let mut text = self.statement_text(sql, truncated);
        text.decision = decision;
        self.ledger.define_statement(name, Arc::new(text), limit)
    }

    /// A Bind defines `portal` in the ledger; what it replaced, to undo.
    fn register_portal(
        &mut self,
        portal: &[u8],
        statement: Vec<u8>,
        parameters: Option<Vec<ParameterValue>>,
    ) -> Undo {
        let text = self
            .ledger
            .statements
            .get(server_name(&statement))
            .map(|s| Arc::clone(&s.text));
        let portal_entry = Portal {
            statement_name: statement,
            text,
            parameters,
            masking: ledger::Noted::default(),
            binder: std::rc::Weak::<[u8; 0]>::new(),
            stashed_in: 0,
        };
        let limit = self.config.max_prepared_statements;
        self.ledger.define_portal(portal, portal_entry, limit)
    }

    fn parameter_values(&self, bind: &pg::Bind<'_>) -> Vec<ParameterValue> {
        let limit = self.config.max_parameter_bytes;
        let values = bind
            .params
            .iter()
            .enumerate()
            .map(|(i, value)| match value {
                None => ParameterValue::Null,
                Some(v) if v.len() > limit => ParameterValue::Omitted {
                    omitted_bytes: v.len() as u64,
                },
                Some(v) if bind.param_is_binary(i) => ParameterValue::Binary {
                    base64: base64::engine::general_purpose::STANDARD.encode(v),
                },
                Some(v) => ParameterValue::Text(String::from_utf8_lossy(v).into_owned()),
            })
            .collect();
        self.parameters_for_record(bind.statement, values)
    }

    // ---- server answers -------------------------------------------------------------

    fn on_backend_message(
        &mut self,
        msg: BackendMessage<'_>,
        tag: u8,
        body: &[u8],
        now_us: u64,
    ) -> Result<Disposition, String> {
        if let BackendMessage::ParameterStatus { name, value } = &msg
            && let Some(action) = self.on_parameter_status(name, value, now_us)
        {
            return Ok(action);
        }
        if matches!(
            msg,
            BackendMessage::ReadyForQuery { .. } | BackendMessage::ErrorResponse { .. }
        ) && let Some(action) = self.deliver_owed_error(now_us)
        {
            return Ok(action);
        }
        if matches!(self.phase(), Phase::Ready | Phase::Finished)
            && let Some(action) = self.denial_reply(&msg, now_us)
        {
            return Ok(action);
        }
        if self.phase() == Phase::Authenticating
            && let Some(action) = self.check_protocol_options(&msg, now_us)
        {
            return Ok(action);
        }
        match self.phase() {
            Phase::Authenticating if self.login_method == login::LoginMethod::Token => {
                self.on_token_login_message(msg, tag, body, now_us)
            }
            Phase::Authenticating => self.on_login_message(msg, now_us),
            Phase::Ready | Phase::Finished => self.on_ready_message(msg, now_us),
            Phase::Startup | Phase::TlsNegotiation | Phase::Cancelling => {
                Err(format!("message type {} before startup", pg::tag_name(tag)))
            }
        }
    }

    fn on_login_message(
        &mut self,
        msg: BackendMessage<'_>,
        now_us: u64,
    ) -> Result<Disposition, String> {
        if self.login_method == login::LoginMethod::ObservedToken {
            self.observe_login_message(&msg, now_us);
        }
        match msg {
            BackendMessage::Authentication { code: 10, data } => {
                Ok(pg::sasl_without_channel_binding(data)
                    .map_or(Disposition::Pass, Disposition::Replace))
            }
            BackendMessage::Authentication { .. }
            | BackendMessage::ParameterStatus { .. }
            | BackendMessage::NoticeResponse { .. }
            | BackendMessage::NegotiateProtocolVersion { .. } => Ok(Disposition::Pass),
            BackendMessage::BackendKeyData { pid, .. } => {
                self.summary.backend_pid = Some(pid);
                Ok(Disposition::Pass)
            }
            BackendMessage::ErrorResponse { fields } => {
                let error = statement_error(&fields);
                let detail = format!("{} {}", error.sqlstate, error.message);
                self.hint_end(EndReason::AuthenticationFailed, Some(detail));
                let _ = now_us;
                Ok(Disposition::Pass)
            }
            BackendMessage::ReadyForQuery { .. } => {
                self.stage.become_ready();
                self.backend_bytes_since_record = 0;
                Ok(Disposition::Pass)
            }
            other => Err(format!(
                "message type {} during authentication",
                pg::tag_name(other.tag())
            )),
        }
    }

    fn on_ready_message(
        &mut self,
        msg: BackendMessage<'_>,
        now_us: u64,
    ) -> Result<Disposition, String> {
        match msg {
            BackendMessage::ParameterStatus { .. }
            | BackendMessage::NoticeResponse { .. }
            | BackendMessage::NotificationResponse { .. }
            | BackendMessage::CopyData { .. }
            | BackendMessage::CopyDone
            | BackendMessage::DataRow { .. } => {}
            BackendMessage::RowDescription { .. } => {
                if matches!(self.ledger.requests.front(), Some(Pending::Describe)) {
                    self.ledger.requests.pop_front();
                }
            }
            BackendMessage::NoData => self.expect_head(|p| matches!(p, Pending::Describe)),
            BackendMessage::ParameterDescription { .. } => {
                if !matches!(self.ledger.requests.front(), Some(Pending::Describe)) {
                    self.summary.unmatched_backend_messages += 1;
                }
            }
            BackendMessage::ParseComplete => self.expect_head(|p| matches!(p, Pending::Parse(_))),
            BackendMessage::BindComplete => self.expect_head(|p| matches!(p, Pending::Bind(_))),
            BackendMessage::CloseComplete => self.expect_head(|p| matches!(p, Pending::Close(_))),
            BackendMessage::CommandComplete { tag } => {
                let tag = String::from_utf8_lossy(tag).into_owned();
                self.complete_current(
                    Outcome {
                        command_tag: Some(tag),
                        ..Outcome::default()
                    },
                    now_us,
                );
            }
            BackendMessage::EmptyQueryResponse => {
                if matches!(self.ledger.requests.front(), Some(Pending::Execute(_))) {
                    self.complete_current(Outcome::default(), now_us);
                }
            }
            BackendMessage::PortalSuspended => {
                self.complete_current(
                    Outcome {
                        suspended: true,
                        ..Outcome::default()
                    },
                    now_us,
                );
            }
            BackendMessage::CopyInResponse(_) => self.mark_copy(CopyDirection::In),
            BackendMessage::CopyOutResponse(_) => self.mark_copy(CopyDirection::Out),
            BackendMessage::CopyBothResponse(_) => self.mark_copy(CopyDirection::Both),
            BackendMessage::FunctionCallResponse { .. } => {
                if let Some(Pending::FunctionCall(run)) = self.ledger.requests.front_mut() {
                    if let Some(run) = run.take() {
                        self.finish_statement(run, Outcome::default(), now_us);
                    }
                } else {
                    self.summary.unmatched_backend_messages += 1;
                }
            }
            BackendMessage::ErrorResponse { fields } => {
                let error = statement_error(&fields);
                self.on_error_response(error, now_us);
            }
            BackendMessage::ReadyForQuery { status } => self.on_ready_for_query(status),
            other @ (BackendMessage::Authentication { .. }
            | BackendMessage::BackendKeyData { .. }
            | BackendMessage::NegotiateProtocolVersion { .. }) => {
                return Err(format!(
                    "message type {} after login",
                    pg::tag_name(other.tag())
                ));
            }
        }
        Ok(Disposition::Pass)
    }

    fn expect_head(&mut self, matches: impl Fn(&Pending) -> bool) {
        if self.ledger.requests.front().is_some_and(matches) {
            self.ledger.requests.pop_front();
        } else {
            self.summary.unmatched_backend_messages += 1;
        }
    }

    fn count_row(&mut self) {
        match self.ledger.requests.front_mut() {
            Some(Pending::Query(runs)) => {
                if let Some(run) = runs.front_mut() {
                    run.rows_seen += 1;
                }
            }
            Some(Pending::Execute(run)) => run.rows_seen += 1,
            _ => {}
        }
    }

    fn mark_copy(&mut self, direction: CopyDirection) {
        match self.ledger.requests.front_mut() {
            Some(Pending::Query(runs)) => {
                if let Some(run) = runs.front_mut() {
                    run.copy = Some(direction);
                }
            }
            Some(Pending::Execute(run)) => run.copy = Some(direction),
            _ => self.summary.unmatched_backend_messages += 1,
        }
    }

    /// CommandComplete, EmptyQueryResponse or PortalSuspended for the head request.
    fn complete_current(&mut self, outcome: Outcome, now_us: u64) {
        match self.ledger.requests.front_mut() {
            Some(Pending::Query(runs)) => {
                if let Some(run) = runs.pop_front() {
                    // The next statement of the same Query starts now.
                    if let Some(next) = runs.front_mut() {
                        next.start_us = now_us;
                    }
                    self.finish_statement(run, outcome, now_us);
                } else {
                    self.summary.unmatched_backend_messages += 1;
                }
            }
            Some(Pending::Execute(_)) => {
                if let Some(Pending::Execute(run)) = self.ledger.requests.pop_front() {
                    self.finish_statement(run, outcome, now_us);
                }
            }
            _ => self.summary.unmatched_backend_messages += 1,
        }
    }

    fn on_error_response(&mut self, error: StatementError, now_us: u64) {
        let error = self.error_for_record(error);
        let outcome = || Outcome {
            error: Some(error.clone()),
            ..Outcome::default()
        };
        match self.ledger.requests.front_mut() {
            None => {
                // Not tied to a request: e.g. a FATAL shutdown notice.
                self.hint_end(
                    EndReason::ServerClosed,
                    Some(format!("{} {}", error.sqlstate, error.message)),
                );
                return;
            }
            Some(Pending::Query(runs)) => {
                // The server abandons the rest of the Query string.
                let first = runs.pop_front();
                runs.clear();
                if let Some(run) = first {
                    self.finish_statement(run, outcome(), now_us);
                }
                return;
            }
            Some(Pending::FunctionCall(run)) => {
                if let Some(run) = run.take() {
                    self.finish_statement(run, outcome(), now_us);
                }
                return;
            }
            Some(Pending::Sync) => return,
            Some(_) => {}
        }
        // Extended query: the failing message, and everything up to the next Sync
        // (which the server skips, a Query or FunctionCall included), are done.
        // The first Execute among them is the statement that failed (its Parse or
        // Bind may be what the server refused); later ones never ran and get no
        // record.
        // The engine's own requests of the batch (a denial's Bind, refused or
        // skipped) are done with it, and so are the client's behind them.
        // What the refused request and the skipped ones defined or closed is
        // undone (see the ledger).
        let mut failed = false;
        let mut entries = Vec::new();
        while self
            .ledger
            .requests
            .front()
            .is_some_and(|p| !p.ends_batch())
        {
            match self.ledger.requests.pop_front() {
                Some(Pending::Execute(run)) if !failed => {
                    failed = true;
                    self.finish_statement(run, outcome(), now_us);
                    entries.push(None);
                }
                entry => entries.push(entry),
            }
        }
        if self.ledger.unwind(entries)
            && let Some(masker) = self.masker.as_mut()
        {
            masker.forget_pending_names();
        }
        // The batch's Sync not sent yet: what the client writes until it is skipped.
        self.ledger.skipping = !self
            .ledger
            .requests
            .iter()
            .any(|p| matches!(p, Pending::Sync));
    }

    /// A client request written while the server skips up to Sync after an
    /// error (see [`ledger::Ledger::skipping`]): it is no request, so it
    /// enters neither the ledger nor masking, and is not recorded. It still
    /// passes only as the policy would let it (dropping it changes nothing
    /// the server does); `None` for a message handled as usual. A Sync ends
    /// the skip.
    fn skipped_until_sync(
        &mut self,
        msg: &FrontendMessage<'_>,
        now_us: u64,
    ) -> Option<Disposition> {
        if matches!(msg, FrontendMessage::Sync) {
            self.ledger.skipping = false;
        }
        if !self.ledger.skipping {
            return None;
        }
        let allowed = match *msg {
            FrontendMessage::Query { sql } | FrontendMessage::Parse { sql, .. } => !self
                .judge_text(sql, now_us)
                .is_some_and(|decision| self.applies(&decision)),
            // Its parameters must not reach a denied statement.
            FrontendMessage::Bind(ref bind) => self
                .ledger
                .bind_targets(bind.statement)
                .iter()
                .all(|target| target.guard != ledger::Guard::Denied),
            // Judged only with the fast path's function table: not here.
            FrontendMessage::FunctionCall(_) => {
                self.statement_policy.is_none() && self.login_method != login::LoginMethod::Token
            }
            FrontendMessage::Describe { .. }
            | FrontendMessage::Execute { .. }
            | FrontendMessage::Close { .. } => true,
            _ => return None,
        };
        Some(if allowed {
            Disposition::Pass
        } else {
            Disposition::Drop
        })
    }

    fn on_ready_for_query(&mut self, status: u8) {
        // Everything up to and including the request ReadyForQuery answers.
        let mut answered = None;
        while let Some(entry) = self.ledger.requests.pop_front() {
            if entry.ends_at_ready() {
                answered = Some(entry);
                break;
            }
        }
        match answered {
            Some(Pending::Query(_)) => self.ledger.query_ran(),
            Some(_) => {}
            None => self.summary.unmatched_backend_messages += 1,
        }
        self.ledger.settled();
        if status == b'I' {
            self.ledger.end_transaction();
        }
    }

    fn finish_statement(&mut self, run: StatementRun, outcome: Outcome, now_us: u64) {
        let rows = outcome.command_tag.as_deref().and_then(rows_from_tag).or(
            if run.rows_seen > 0 || outcome.suspended {
                Some(run.rows_seen)
            } else {
                None
            },
        );
        self.summary.statements += 1;
        if outcome.error.is_some() {
            self.summary.errors += 1;
        }
        let header = self.next_header(run.start_us);
        let approval = run.text.as_ref().and_then(|t| t.approval.clone());
        let (statement, statement_truncated, kind, decision) = match &run.text {
            Some(t) => (
                Some(t.text.clone()),
                t.truncated,
                t.kind.clone(),
                t.decision.clone(),
            ),
            None => (None, false, None, None),
        };
        let kind = kind.or_else(|| {
            (run.protocol == PgProtocol::FunctionCall).then(|| "FUNCTION CALL".to_string())
        });
        let decision = decision.unwrap_or_else(Decision::allow);
        if decision.action.blocks() {
            self.summary.denied += 1;
        }
        let masking = self.take_masking_counts();
        if let Some(counts) = masking.as_ref().filter(|c| !c.exempt) {
            self.summary.masked = self.summary.masked.saturating_add(counts.total());
        }
        let record = StatementRecord {
            header,
            client: self.client.clone(),
            protocol: run.protocol,
            statement,
            statement_truncated,
            statement_name: run.statement_name,
            portal: run.portal,
            kind,
            category: None,
            parameters: run.parameters,
            function_oid: run.function_oid,
            copy: run.copy,
            command_tag: outcome.command_tag,
            rows,
            suspended: outcome.suspended,
            error: outcome.error,
            duration_us: now_us.saturating_sub(run.start_us),
            bytes_from_client: run.bytes_from_client,
            bytes_to_client: std::mem::take(&mut self.backend_bytes_since_record),
            decision,
            approval,
            access_reason: self.access_reason(),
            masking,
        };
        self.push_record(Record::Statement(Box::new(record)));
    }
}

fn non_empty(name: &[u8]) -> Option<String> {
    (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
}

fn statement_error(fields: &[pg::ErrorField<'_>]) -> StatementError {
    let field = |code| {
        String::from_utf8_lossy(pg::error_field(fields, code).unwrap_or_default()).into_owned()
    };
    let severity = pg::error_field(fields, b'V')
        .or_else(|| pg::error_field(fields, b'S'))
        .unwrap_or_default();
    StatementError {
        sqlstate: field(b'C'),
        message: field(b'M'),
        severity: String::from_utf8_lossy(severity).into_owned(),
    }
}

/// Fields of an ErrorResponse of which only a prefix was kept.
fn lenient_error(prefix: &[u8]) -> StatementError {
    let mut fields = Vec::new();
    let mut rest = prefix;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let (value, after) = tail.split_at(end);
        fields.push((code, value));
        rest = after.get(1..).unwrap_or_default();
    }
    statement_error(&fields)
}

/// Rows affected or returned, from a CommandComplete tag (`INSERT 0 5` → 5).
pub fn rows_from_tag(tag: &str) -> Option<u64> {
    let mut words = tag.split(' ');
    let command = words.next()?;
    let last = tag.rsplit(' ').next()?;
    match command {
        "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "FETCH" | "MOVE" | "COPY" => {
            last.parse().ok()
        }
        _ => None,
    }
}
