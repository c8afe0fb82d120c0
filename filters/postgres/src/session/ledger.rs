//! The session's ledger: the requests the server still owes answers to, in
//! the server's order (the client's, and the ones the engine sends itself,
//! tagged with the part of the engine that owns them), and the prepared
//! statements and portals the client defined, keyed as the server keys them.

use super::fastpath::OwnRequest;
use super::{Portal, StatementRun, StatementText};
use crate::masking::OwnRequest as MaskingRequest;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Requests awaiting answers, statements and portals (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Requests whose answers the server still owes, front first.
    pub(super) requests: VecDeque<Pending>,
    /// Prepared statements by server name.
    pub(super) statements: HashMap<Vec<u8>, Arc<StatementText>>,
    /// Portals by server name.
    pub(super) portals: HashMap<Vec<u8>, Portal>,
}

impl Ledger {
    /// The statement whose answers come next, when the front request runs one.
    pub(super) fn answering_run(&self) -> Option<&StatementRun> {
        match self.requests.front()? {
            Pending::Query(runs) => runs.front(),
            Pending::Execute(run) | Pending::FunctionCall(Some(run)) => Some(run),
            _ => None,
        }
    }

    /// Whether the front request is the engine's own, whoever owns it.
    pub(super) fn front_is_own(&self) -> bool {
        matches!(self.requests.front(), Some(Pending::Injected(_)))
    }

    /// Whether the front request is the engine's own, owned by `owner`.
    pub(super) fn front_is_injected(&self, owner: Owner) -> bool {
        matches!(self.requests.front(), Some(Pending::Injected(injected)) if injected.owner() == owner)
    }

    /// The masker's request whose answers come next, when the front request is one.
    pub(super) fn masking_front(&mut self) -> Option<&mut MaskingRequest> {
        match self.requests.front_mut() {
            Some(Pending::Injected(Injected::Masking(request))) => Some(request),
            _ => None,
        }
    }

    /// Requests other than the masker's own, whose answers the client never
    /// sees (they only ever wait at the front: the masker sends them when
    /// nothing else awaits an answer).
    pub(super) fn client_requests(&self) -> usize {
        let own = self
            .requests
            .iter()
            .take_while(|p| matches!(p, Pending::Injected(Injected::Masking(_))))
            .count();
        self.requests.len() - own
    }

    /// Puts the masker's `request` ahead of the client's request just
    /// recorded, the one it is sent ahead of.
    pub(super) fn insert_masking_ahead_of_last(&mut self, request: MaskingRequest) {
        let at = self.requests.len().saturating_sub(1);
        self.requests
            .insert(at, Pending::Injected(Injected::Masking(request)));
    }
}

/// A request whose answer the server still owes, in order.
#[derive(Debug)]
pub(super) enum Pending {
    /// A simple Query: statements not yet completed (front first). Ends at ReadyForQuery.
    Query(VecDeque<StatementRun>),
    Parse,
    Bind,
    Describe,
    Close,
    Execute(StatementRun),
    /// A FunctionCall; `None` once its result was recorded. Ends at ReadyForQuery.
    FunctionCall(Option<StatementRun>),
    Sync,
    /// A request the engine sent itself: its answers are not the client's.
    Injected(Injected),
}

impl Pending {
    /// Entries that end with ReadyForQuery, where the server stops skipping after an error.
    pub(super) fn ends_at_ready(&self) -> bool {
        matches!(
            self,
            Pending::Sync
                | Pending::Query(_)
                | Pending::FunctionCall(_)
                | Pending::Injected(Injected::FastPath(_) | Injected::Masking(_))
        )
    }
}

/// The part of the engine a request it sends itself belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// Policy enforcement (see `enforce` and `approvals`).
    Enforcement,
    /// The fast-path function table (see `fastpath`).
    FastPath,
    /// Masking (see [`crate::masking`] and `mask_hooks`).
    Masking,
}

/// A request the engine sends itself, by owner.
#[derive(Debug)]
pub(super) enum Injected {
    /// Enforcement's Bind of its private portal in place of a denied
    /// Describe: its BindComplete is not the client's.
    DenialBind,
    /// Enforcement's Close or Parse of its private statement in place of a
    /// Bind that needs approval: its answer is not the client's.
    DenialPrelude,
    /// A Query of the fast path's own: its answers, through ReadyForQuery,
    /// are consumed.
    FastPath(OwnRequest),
    /// The masker's catalog lookup or COPY describe: its answers, through
    /// ReadyForQuery, are consumed by the masker.
    Masking(MaskingRequest),
}

impl Injected {
    pub(super) fn owner(&self) -> Owner {
        match self {
            Injected::DenialBind | Injected::DenialPrelude => Owner::Enforcement,
            Injected::FastPath(_) => Owner::FastPath,
            Injected::Masking(_) => Owner::Masking,
        }
    }
}
