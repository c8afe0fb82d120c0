//! Shadow (observe-only) mode: the session decodes and judges everything as an
//! enforcing one would, but every verdict forwards the bytes unchanged and never
//! closes the connection. Its records carry `mode: shadow`, and their decisions
//! and masking counts are what it would have done:
//! - a statement the policy blocks runs anyway; its record has the blocking
//!   decision and the server's real outcome;
//! - masking counts what it would have masked, without the catalog lookup (which
//!   would add traffic), so table rules match by column name;
//! - with token login, the token is checked passively on its way to the server.
//!
//! # Token login beside an enforcing instance
//! The shadow instance comes first in the filter chain: client bytes reach it
//! before the enforcing instance, server bytes after it (write filters run in
//! reverse order). So it sees:
//!
//! ```text
//! client                   shadow (first)                 enforcing            server
//! StartupMessage ──────────▶ noted ────────────────────────▶ ──────────────────▶
//!        ◀── AuthenticationCleartextPassword ◀── (in place of AuthenticationOk) ◀──
//!                            password requested
//! PasswordMessage(token) ──▶ token verified, bytes pass ───▶ (replaced by Sync) ─▶
//!        ◀── AuthenticationOk … ReadyForQuery ◀── (the held startup answer) ◀──
//!                            session start recorded with the identity
//! ```
//!
//! A token the shadow instance would refuse does not stop the session: its
//! session start says why (`login_refusal`) and the session goes on with the
//! claimed, unverified identity.

use super::{Disposition, Session};
use crate::login::{Authenticator, LoginRefusal};
use crate::protocol::BackendMessage;
use gatehouse_core::identity::Identity;
use gatehouse_core::record::{FilterMode, PgClient, Record, SessionStartRecord};

/// The passive token check of a shadow session.
pub(super) struct ShadowLogin {
    authenticator: Box<dyn Authenticator>,
    /// The client was asked for a cleartext password (the token).
    password_requested: bool,
    /// The check of the token the client sent, once it passed.
    outcome: Option<Result<Identity, LoginRefusal>>,
    /// From the StartupMessage, for the deferred session start.
    protocol_version: String,
    /// The session start was recorded.
    started: bool,
}

impl ShadowLogin {
    pub(super) fn new(authenticator: Box<dyn Authenticator>) -> Self {
        ShadowLogin {
            authenticator,
            password_requested: false,
            outcome: None,
            protocol_version: String::new(),
            started: false,
        }
    }
}

impl Session {
    /// Observe only (`FilterMode::Shadow`) or enforce (the default). Set it
    /// first, before the policy, masker and authenticator, and before any bytes.
    pub fn set_mode(&mut self, mode: FilterMode) {
        self.mode = mode;
    }

    /// The mode the session runs in.
    pub fn mode(&self) -> FilterMode {
        self.mode
    }

    /// The host's verdict: in shadow mode always "forward unchanged, keep the
    /// connection", whatever the engine would have done.
    pub(super) fn observed(&self, verdict: crate::framing::Verdict) -> crate::framing::Verdict {
        if self.mode.is_enforce() {
            return verdict;
        }
        crate::framing::Verdict {
            forward: crate::framing::Forward::Unchanged,
            close_connection: false,
        }
    }

    /// Whether a shadow login defers the session start until the token is checked.
    pub(super) fn defer_shadow_session_start(&mut self, protocol_version: String) -> bool {
        match self.stage.shadow_login_mut() {
            Some(login) => {
                login.protocol_version = protocol_version;
                true
            }
            None => false,
        }
    }

    /// The client's PasswordMessage in a shadow session: checked when it answers
    /// a cleartext password request (the token), passed on either way.
    pub(super) fn observe_token_password(&mut self, data: &[u8], now_us: u64) -> Disposition {
        let role = self.client.user.clone();
        if let Some(login) = self.stage.shadow_login_mut()
            && login.password_requested
            && login.outcome.is_none()
        {
            login.outcome = Some(login.authenticator.authenticate(data, &role, now_us));
        }
        Disposition::Pass
    }

    /// A server message during a shadow session's login (before the engine's
    /// own handling, which passes it on).
    pub(super) fn observe_login_message(&mut self, msg: &BackendMessage<'_>, now_us: u64) {
        let Some(login) = self.stage.shadow_login_mut() else {
            return;
        };
        match msg {
            // Cleartext password: the token is asked for.
            BackendMessage::Authentication { code: 3, .. } => login.password_requested = true,
            BackendMessage::Authentication { code: 0, .. } if !login.started => {
                login.started = true;
                let protocol_version = std::mem::take(&mut login.protocol_version);
                let outcome = login.outcome.take();
                self.start_shadow_session(outcome, protocol_version, now_us);
            }
            _ => {}
        }
    }

    /// The server accepted the login: the session starts, recorded with the
    /// identity the token proves, or with why it would have been refused.
    fn start_shadow_session(
        &mut self,
        outcome: Option<Result<Identity, LoginRefusal>>,
        protocol_version: String,
        now_us: u64,
    ) {
        let login_refusal = match outcome {
            Some(Ok(identity)) => {
                self.client = PgClient {
                    identity: Some(identity.clone()),
                    ..(*self.client).clone()
                }
                .into();
                self.set_identity(identity);
                None
            }
            Some(Err(refusal)) => {
                if let Some(identity) = refusal.identity {
                    self.client = PgClient {
                        identity: Some(*identity),
                        ..(*self.client).clone()
                    }
                    .into();
                }
                Some(format!("token refused: {}", refusal.code))
            }
            None => Some("no token: the client was not asked for one".to_owned()),
        };
        // Refused startup parameters would have ended the session first.
        let startup_refusal = self
            .stage
            .authenticating_mut()
            .and_then(|(_, startup_refusal)| startup_refusal.take());
        let login_refusal = startup_refusal.or(login_refusal);
        let header = self.next_header(now_us);
        self.push_record(Record::SessionStart(SessionStartRecord {
            header,
            client: self.client.clone(),
            protocol_version,
            login_refusal,
        }));
    }
}
