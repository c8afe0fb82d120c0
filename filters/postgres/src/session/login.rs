//! Token login on the wire (see [`crate::login`] for the decision).
//!
//! The host cannot write to the client, so the exchange rides on the server's
//! own answers:
//!
//! ```text
//! client                         gatehouse                          server (trusts the gateway)
//! StartupMessage ──────────────────────────────────────────────────▶
//!                ◀── AuthenticationCleartextPassword (in place of) ◀── AuthenticationOk
//!                    held: ParameterStatus…, BackendKeyData, ReadyForQuery ◀──
//! PasswordMessage(token) ── verified; replaced by Sync ────────────▶
//!                ◀── the held messages (in place of) ◀───────────────── ReadyForQuery
//!                ◀── or FATAL 28P01/28000, then close (in place of) ◀── ReadyForQuery
//! ```
//!
//! Until the token is verified nothing the server says reaches the client: a
//! server error (an unknown database, say) becomes a generic refusal, so names
//! cannot be probed without a valid token.

use super::{Disposition, Session};
use crate::framing::{FrameMode, Header};
use crate::login::{Authenticator, LoginRefusal};
use crate::protocol::{self as pg, BackendMessage, FrontendMessage};
use gatehouse_core::identity::Identity;
use gatehouse_core::policy::{Action as PolicyAction, Decision};
use gatehouse_core::record::{EndReason, PgClient, Record, SessionStartRecord};

/// The rule name recorded for statements refused because the token expired.
pub(super) const TOKEN_EXPIRED_RULE: &str = "gatehouse:token-expired";

/// Most bytes of the server's startup answer held while the token is checked
/// (a real one is well under a kilobyte: parameter statuses and key data).
const MAX_HELD_STARTUP_BYTES: usize = 64 * 1024;

/// `AuthenticationCleartextPassword`: asks the client for its password (the token).
const CLEARTEXT_PASSWORD_REQUEST: [u8; 9] = [b'R', 0, 0, 0, 8, 0, 0, 0, 3];

/// Where a token login stands.
#[derive(Debug, Default)]
enum Stage {
    /// StartupMessage forwarded; the server has not accepted it yet.
    #[default]
    AwaitingServer,
    /// The client was asked for its token.
    AwaitingPassword,
    /// The token was judged and replaced by Sync; the server's answer to it
    /// carries the outcome to the client.
    Verifying(Result<Identity, LoginRefusal>),
}

impl Stage {
    fn step(&self) -> Step {
        match self {
            Stage::AwaitingServer => Step::AwaitingServer,
            Stage::AwaitingPassword => Step::AwaitingPassword,
            Stage::Verifying(_) => Step::Verifying,
        }
    }
}

/// [`Stage`] without its outcome, to match on while the session changes.
#[derive(Clone, Copy)]
enum Step {
    AwaitingServer,
    AwaitingPassword,
    Verifying,
}

/// How the client proves who it is, for the whole session.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum LoginMethod {
    /// The server authenticates the client itself.
    Server,
    /// The client logs in with a token the gateway verifies.
    Token,
    /// Shadow mode with token login: the token is checked as it passes.
    ObservedToken,
}

/// A session's token login while it is under way, when the filter requires one.
pub(super) struct TokenLogin {
    authenticator: Box<dyn Authenticator>,
    stage: Stage,
    /// The server's startup answer (AuthenticationOk … ReadyForQuery), held
    /// until the token is verified.
    held: Vec<u8>,
    /// The server's startup ReadyForQuery is among `held`: the next one answers
    /// the Sync that replaced the password.
    startup_complete: bool,
    protocol_version: String,
    deadline_us: u64,
}

impl TokenLogin {
    pub(super) fn new(authenticator: Box<dyn Authenticator>, deadline_us: u64) -> Self {
        TokenLogin {
            authenticator,
            stage: Stage::AwaitingServer,
            held: Vec::new(),
            startup_complete: false,
            protocol_version: String::new(),
            deadline_us,
        }
    }
}

impl TokenLogin {
    /// Bytes of the server's startup answer held (for the memory count).
    pub(super) fn held_bytes(&self) -> usize {
        self.held.len()
    }
}

/// The complete message `tag` + length + `body`.
fn framed(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(body.len() + 5);
    bytes.push(tag);
    bytes.extend_from_slice(
        &u32::try_from(body.len() + 4)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    bytes.extend_from_slice(body);
    bytes
}

impl Session {
    /// Requires token login on this session: the client's password is judged by
    /// `authenticator`, and the session becomes usable only if it accepts (in
    /// shadow mode, set first, the token is only checked as it passes). Set it
    /// before any bytes; the login must complete within `deadline_seconds` (see
    /// [`Session::login_deadline_us`]).
    pub fn set_authenticator(
        &mut self,
        authenticator: Box<dyn Authenticator>,
        deadline_seconds: u32,
    ) {
        let check = if self.mode.is_shadow() {
            // Observing only: the token is checked as it passes (see `shadow`).
            self.login_method = LoginMethod::ObservedToken;
            super::TokenCheck::Observe(super::shadow::ShadowLogin::new(authenticator))
        } else {
            let deadline_us = self
                .started_us
                .saturating_add(u64::from(deadline_seconds).saturating_mul(1_000_000));
            self.login_method = LoginMethod::Token;
            super::TokenCheck::Enforce(TokenLogin::new(authenticator, deadline_us))
        };
        // Once the session is established, the check has nothing left to do.
        if let Some(opening) = self.stage.opening_mut() {
            opening.token_check = check;
        }
    }

    /// When the login must be complete (unix µs), while a token login is under
    /// way: past it the host closes the connection, since an unanswered
    /// password request holds a logged-in server backend. `None` otherwise.
    pub fn login_deadline_us(&self) -> Option<u64> {
        self.stage.token_login().map(|login| login.deadline_us)
    }

    /// The token of the PasswordMessage the client's next bytes `next` start
    /// with, while the session waits for it and holds no part of a message
    /// before them; `None` otherwise (also when the message is not whole in
    /// `next`). A host that can hold the client's bytes asks this to fetch the
    /// keys a token needs before the session judges it, since the judgement is
    /// final for the connection.
    pub fn token_ahead<'a>(&self, next: &'a [u8]) -> Option<&'a str> {
        let login = self.stage.token_login()?;
        if !matches!(login.stage, Stage::AwaitingPassword)
            || !self.frontend.at_tagged_message_start()
        {
            return None;
        }
        let header = Header::parse(FrameMode::Tagged, next)?.ok()?;
        let end = FrameMode::Tagged
            .header_len()
            .checked_add(header.body_len)?;
        let body = next.get(FrameMode::Tagged.header_len()..end)?;
        match FrontendMessage::decode(header.tag, body) {
            Ok(FrontendMessage::Password { data }) => crate::login::token_in(data),
            _ => None,
        }
    }

    /// Statements sent after the login token expired are refused (the session
    /// stays open, so the client can finish a transaction's ROLLBACK and
    /// reconnect with a fresh token). `None` while the token is valid.
    pub(super) fn expired_token_denial(&self, now_us: u64) -> Option<Decision> {
        if self.login_method == LoginMethod::Server {
            return None;
        }
        let identity = self.policy_identity.as_ref()?;
        let now = i64::try_from(now_us / 1_000_000).unwrap_or(i64::MAX);
        identity.token_expired(now).then(|| Decision {
            action: PolicyAction::Deny,
            rule: Some(TOKEN_EXPIRED_RULE.to_owned()),
            message: Some(
                "gatehouse: the login token of this session has expired; \
                 reconnect with a fresh token"
                    .to_owned(),
            ),
        })
    }

    /// Whether the session start waits for the token (recorded with the identity).
    pub(super) fn defer_session_start(&mut self, protocol_version: String) -> bool {
        match self.stage.token_login_mut() {
            Some(login) => {
                login.protocol_version = protocol_version;
                true
            }
            None => self.defer_shadow_session_start(protocol_version),
        }
    }

    /// The client's PasswordMessage under token login.
    pub(super) fn on_token_password(
        &mut self,
        data: &[u8],
        now_us: u64,
    ) -> Result<Disposition, String> {
        let role = self.client.user.clone();
        let Some(login) = self.stage.token_login_mut() else {
            return Ok(Disposition::Pass);
        };
        if !matches!(login.stage, Stage::AwaitingPassword) {
            return Err("password message before the gateway asked for it".into());
        }
        let outcome = login.authenticator.authenticate(data, &role, now_us);
        login.stage = Stage::Verifying(outcome);
        let mut sync = Vec::with_capacity(5);
        FrontendMessage::Sync.encode(&mut sync);
        Ok(Disposition::Replace(sync))
    }

    /// A server message while a token login is under way.
    pub(super) fn on_token_login_message(
        &mut self,
        msg: BackendMessage<'_>,
        tag: u8,
        body: &[u8],
        now_us: u64,
    ) -> Result<Disposition, String> {
        let Some(login) = self.stage.token_login_mut() else {
            return Err("token login state missing".into());
        };
        let step = login.stage.step();
        let startup_complete = login.startup_complete;
        match (&msg, step) {
            (BackendMessage::Authentication { code: 0, .. }, Step::AwaitingServer) => {
                login.held.extend_from_slice(&framed(tag, body));
                login.stage = Stage::AwaitingPassword;
                Ok(Disposition::Replace(CLEARTEXT_PASSWORD_REQUEST.to_vec()))
            }
            (BackendMessage::Authentication { code, .. }, _) => Ok(self.refuse_login(
                "28000",
                "gatehouse: login failed: the database server asked for its own \
                 authentication; with token login it must trust the gateway",
                format!("server asked for authentication method {code}"),
                None,
                now_us,
            )),
            (BackendMessage::NegotiateProtocolVersion { .. }, Step::AwaitingServer) => {
                Ok(Disposition::Pass)
            }
            (BackendMessage::ErrorResponse { fields }, _) => {
                let error = super::statement_error(fields);
                Ok(self.refuse_login(
                    "28000",
                    "gatehouse: login failed: the database refused the session \
                     (check the database and role names)",
                    format!(
                        "server refused the session: {} {}",
                        error.sqlstate, error.message
                    ),
                    None,
                    now_us,
                ))
            }
            (
                BackendMessage::ParameterStatus { .. }
                | BackendMessage::NoticeResponse { .. }
                | BackendMessage::BackendKeyData { .. }
                | BackendMessage::ReadyForQuery { .. },
                Step::AwaitingPassword | Step::Verifying,
            ) if !startup_complete => {
                if login.held.len() + body.len() > MAX_HELD_STARTUP_BYTES {
                    return Err(format!(
                        "server startup answer over {MAX_HELD_STARTUP_BYTES} bytes"
                    ));
                }
                match msg {
                    BackendMessage::BackendKeyData { pid, .. } => {
                        self.summary.backend_pid = Some(pid);
                    }
                    BackendMessage::ReadyForQuery { .. } => login.startup_complete = true,
                    _ => {}
                }
                login.held.extend_from_slice(&framed(tag, body));
                Ok(Disposition::Drop)
            }
            (BackendMessage::ReadyForQuery { .. }, Step::Verifying) => {
                let Stage::Verifying(outcome) = std::mem::take(&mut login.stage) else {
                    return Err("token login state lost".into());
                };
                let held = std::mem::take(&mut login.held);
                let protocol_version = std::mem::take(&mut login.protocol_version);
                match outcome {
                    Ok(identity) => {
                        Ok(self.complete_login(identity, held, protocol_version, now_us))
                    }
                    Err(refusal) => {
                        let detail = format!("token refused: {}", refusal.code);
                        Ok(self.refuse_login(
                            refusal.sqlstate,
                            &refusal.message,
                            detail,
                            refusal.identity,
                            now_us,
                        ))
                    }
                }
            }
            (other, _) => Err(format!(
                "message type {} during token login",
                pg::tag_name(other.tag())
            )),
        }
    }

    /// The token was good: the client gets the server's startup answer and the
    /// session starts, recorded with the verified identity.
    fn complete_login(
        &mut self,
        identity: Identity,
        held: Vec<u8>,
        protocol_version: String,
        now_us: u64,
    ) -> Disposition {
        self.client = PgClient {
            identity: Some(identity.clone()),
            ..(*self.client).clone()
        }
        .into();
        self.set_identity(identity);
        self.stage.become_ready();
        self.backend_bytes_since_record = 0;
        let header = self.next_header(now_us);
        self.push_record(Record::SessionStart(SessionStartRecord {
            header,
            client: self.client.clone(),
            protocol_version,
            login_refusal: None,
        }));
        Disposition::Replace(held)
    }

    /// Ends the session with a FATAL for the client in place of the server's answer.
    fn refuse_login(
        &mut self,
        sqlstate: &str,
        message: &str,
        detail: String,
        identity: Option<Box<Identity>>,
        now_us: u64,
    ) -> Disposition {
        if let Some(identity) = identity {
            self.client = PgClient {
                identity: Some(*identity),
                ..(*self.client).clone()
            }
            .into();
        }
        self.stage.finish(|ending| ending.close = true);
        self.frontend.discarding = true;
        self.backend.discarding = true;
        self.end_session(EndReason::AuthenticationFailed, Some(detail), now_us);
        Disposition::Replace(pg::fatal_error(sqlstate, message))
    }
}
