//! The session's ledger: the requests the server still owes answers to, in
//! the server's order (the client's, and the ones the engine sends itself,
//! tagged with the part of the engine that owns them), and the prepared
//! statements and portals the client defined, keyed as the server keys them.
//! Every part of the engine reads names here: policy and records the text
//! of a statement or portal, masking its [`Shape`] (through [`Names`]).
//!
//! When a name exists: a Parse or Bind defines its name, and a Close removes
//! it, when the client sends it, so that what follows it in the same batch
//! (a Bind of the statement, an Execute of the portal) reads what the server
//! will run. The ledger is thus the server's state as it will be once every
//! pending request has run. Each such request carries an [`Undo`] of what it
//! replaced, dropped when the server answers it. When the server refuses a
//! request, it skips the rest of the batch up to Sync: the refused request
//! and every skipped one are undone, newest first, so a Parse that fails
//! (`42P05` for a name in use, a syntax error) leaves the name as it was.
//! Requests a client pipelined after that batch's Sync were defined against
//! names as the skipped requests would have left them: they are applied
//! again on the names as the server has them, and masking forgets what it
//! took from names for them (failing closed; their Executes' records keep
//! the text read when they were sent).
//!
//! A request the client writes once the engine has seen such a refusal,
//! before the batch's Sync, is skipped too: it never enters the ledger
//! ([`Ledger::skipping`]), so it defines nothing, awaits no answer and is
//! not recorded, as a skipped pipelined request.
//!
//! Two exceptions follow the server: a failed Parse of the unnamed statement
//! leaves none (the server drops it before parsing), and so does a simple
//! Query that runs (with the unnamed portal; the server ignores a Query sent
//! after an error until Sync, so that one drops nothing). And a ReadyForQuery
//! outside a transaction ends every portal but those of Binds still pending.

use super::fastpath::OwnRequest;
use super::{Portal, StatementRun, StatementText, server_name};
use crate::masking::{Names, OwnRequest as MaskingRequest, Shape};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Requests awaiting answers, statements and portals (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Requests whose answers the server still owes, front first.
    pub(super) requests: VecDeque<Pending>,
    /// Prepared statements by server name.
    pub(super) statements: HashMap<Vec<u8>, Statement>,
    /// Portals by server name.
    pub(super) portals: HashMap<Vec<u8>, Portal>,
    /// The server refused a request of an extended-protocol batch whose
    /// Sync the client has not sent yet: it ignores every client request
    /// until that Sync.
    pub(super) skipping: bool,
}

/// A prepared statement.
#[derive(Debug, Clone)]
pub(super) struct Statement {
    /// Its text as recorded, with the policy's decision.
    pub(super) text: Arc<StatementText>,
    /// What masking knows of it.
    pub(super) masking: Shape,
}

/// What a Parse, Bind or Close changed in the ledger: put back if the server
/// refuses or skips it (see the module docs).
#[derive(Debug)]
pub(super) enum Undo {
    /// Nothing changed (a new name past the limit is not tracked).
    Nothing,
    /// The statement `name` was `previous`.
    Statement {
        name: Vec<u8>,
        previous: Option<Statement>,
    },
    /// The portal `name` was `previous`.
    Portal {
        name: Vec<u8>,
        previous: Option<Portal>,
    },
}

impl Ledger {
    /// A Parse defines the statement `name` as `text` (a new name only while
    /// fewer than `limit` are tracked; the unnamed one always).
    pub(super) fn define_statement(
        &mut self,
        name: &[u8],
        text: Arc<StatementText>,
        limit: usize,
    ) -> Undo {
        let name = server_name(name);
        if !name.is_empty() && !self.statements.contains_key(name) && self.statements.len() >= limit
        {
            return Undo::Nothing;
        }
        let statement = Statement {
            text,
            masking: Shape::default(),
        };
        Undo::Statement {
            name: name.to_vec(),
            previous: self.statements.insert(name.to_vec(), statement),
        }
    }

    /// A Bind defines the portal `name` (as [`Ledger::define_statement`]).
    pub(super) fn define_portal(&mut self, name: &[u8], portal: Portal, limit: usize) -> Undo {
        let name = server_name(name);
        if !name.is_empty() && !self.portals.contains_key(name) && self.portals.len() >= limit {
            return Undo::Nothing;
        }
        Undo::Portal {
            name: name.to_vec(),
            previous: self.portals.insert(name.to_vec(), portal),
        }
    }

    /// A Close of a statement (`kind` `S`) or portal removes it.
    pub(super) fn close(&mut self, kind: u8, name: &[u8]) -> Undo {
        let name = server_name(name).to_vec();
        if kind == b'S' {
            let previous = self.statements.remove(&name);
            Undo::Statement { name, previous }
        } else {
            let previous = self.portals.remove(&name);
            Undo::Portal { name, previous }
        }
    }

    /// A simple Query ran (its ReadyForQuery came; one the server ignored
    /// after an error gets none): the server dropped the unnamed statement
    /// and portal. A request sent after it that defines or closes one of
    /// them is the ledger's word on it, and has nothing to put back.
    pub(super) fn query_ran(&mut self) {
        let (mut statement, mut portal) = (false, false);
        for entry in &mut self.requests {
            match entry {
                Pending::Parse(Undo::Statement { name, previous })
                | Pending::Close(Undo::Statement { name, previous })
                    if name.is_empty() && !statement =>
                {
                    *previous = None;
                    statement = true;
                }
                Pending::Bind(Undo::Portal { name, previous })
                | Pending::Close(Undo::Portal { name, previous })
                    if name.is_empty() && !portal =>
                {
                    *previous = None;
                    portal = true;
                }
                _ => {}
            }
            if statement && portal {
                return;
            }
        }
        if !statement {
            self.statements.remove(&[][..]);
        }
        if !portal {
            self.portals.remove(&[][..]);
        }
    }

    /// The server refused the first of `entries` (the front request) and
    /// skipped the rest (in the order sent; `None` for those already taken
    /// for their records): their changes are undone. Requests a client
    /// pipelined after that batch's Sync are still pending: theirs are undone
    /// first (newest first, keeping what each defined), then applied again
    /// on the names as the server has them. A portal they bind takes its
    /// statement's text as it is now; what masking took from the names for
    /// them is forgotten (see [`crate::masking::Names`]), so their computed
    /// columns are masked whole. Returns whether there were such requests.
    pub(super) fn unwind(&mut self, entries: Vec<Option<Pending>>) -> bool {
        let Ledger {
            requests,
            statements,
            portals,
            ..
        } = self;
        // What each pending request defined (`None`: it closed, or changed nothing).
        let mut defined: Vec<Defined> = Vec::with_capacity(requests.len());
        for entry in requests.iter_mut().rev() {
            defined.push(match entry {
                Pending::Parse(undo) | Pending::Bind(undo) | Pending::Close(undo) => {
                    undo_in_place(statements, portals, undo)
                }
                _ => Defined::Nothing,
            });
        }
        defined.reverse();
        // The server drops the unnamed statement before parsing its new text.
        let unnamed_parse_failed = matches!(
            entries.first(),
            Some(Some(Pending::Parse(Undo::Statement { name, .. }))) if name.is_empty()
        );
        for entry in entries.into_iter().rev().flatten() {
            if let Pending::Parse(undo) | Pending::Bind(undo) | Pending::Close(undo) = entry {
                self.undo(undo);
            }
        }
        if unnamed_parse_failed {
            self.statements.remove(&[][..]);
        }
        // Anything of the client's behind the batch's Sync.
        let later = self
            .requests
            .iter()
            .skip(1)
            .any(|p| !matches!(p, Pending::Injected(_)));
        for (entry, defined) in self.requests.iter_mut().zip(defined) {
            match (entry, defined) {
                (
                    Pending::Parse(Undo::Statement { name, previous })
                    | Pending::Close(Undo::Statement { name, previous }),
                    Defined::Statement(statement),
                ) => {
                    *previous = match statement {
                        Some(statement) => self.statements.insert(name.clone(), statement),
                        None => self.statements.remove(name.as_slice()),
                    };
                }
                (
                    Pending::Bind(Undo::Portal { name, previous })
                    | Pending::Close(Undo::Portal { name, previous }),
                    Defined::Portal(portal),
                ) => {
                    *previous = match portal {
                        Some(mut portal) => {
                            portal.text = self
                                .statements
                                .get(server_name(&portal.statement_name))
                                .map(|s| Arc::clone(&s.text));
                            portal.masking = Shape::default();
                            self.portals.insert(name.clone(), portal)
                        }
                        None => self.portals.remove(name.as_slice()),
                    };
                }
                _ => {}
            }
        }
        if later {
            self.forget_portal_shapes();
        }
        later
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Nothing => {}
            Undo::Statement { name, previous } => match previous {
                Some(statement) => {
                    self.statements.insert(name, statement);
                }
                None => {
                    self.statements.remove(&name);
                }
            },
            Undo::Portal { name, previous } => match previous {
                Some(portal) => {
                    self.portals.insert(name, portal);
                }
                None => {
                    self.portals.remove(&name);
                }
            },
        }
    }

    /// The server reported no transaction (ReadyForQuery `I`): its portals
    /// are gone; only those of Binds still pending (sent after its Sync)
    /// will exist.
    pub(super) fn end_transaction(&mut self) {
        if self.portals.is_empty() {
            return;
        }
        for entry in &mut self.requests {
            if let Pending::Bind(Undo::Portal { previous, .. })
            | Pending::Close(Undo::Portal { previous, .. }) = entry
            {
                *previous = None;
            }
        }
        let pending: HashSet<&[u8]> = self
            .requests
            .iter()
            .filter_map(|entry| match entry {
                Pending::Bind(Undo::Portal { name, .. }) => Some(name.as_slice()),
                _ => None,
            })
            .collect();
        self.portals
            .retain(|name, _| pending.contains(name.as_slice()));
    }

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

/// What a pending request defined under its name, kept while it is undone
/// and applied again (see [`Ledger::unwind`]).
enum Defined {
    Nothing,
    Statement(Option<Statement>),
    Portal(Option<Portal>),
}

/// Undoes `undo` on the maps, leaving it empty; what the request defined.
fn undo_in_place(
    statements: &mut HashMap<Vec<u8>, Statement>,
    portals: &mut HashMap<Vec<u8>, Portal>,
    undo: &mut Undo,
) -> Defined {
    match undo {
        Undo::Nothing => Defined::Nothing,
        Undo::Statement { name, previous } => {
            let defined = match previous.take() {
                Some(previous) => statements.insert(name.clone(), previous),
                None => statements.remove(name.as_slice()),
            };
            Defined::Statement(defined)
        }
        Undo::Portal { name, previous } => {
            let defined = match previous.take() {
                Some(previous) => portals.insert(name.clone(), previous),
                None => portals.remove(name.as_slice()),
            };
            Defined::Portal(defined)
        }
    }
}

/// A request whose answer the server still owes, in order.
#[derive(Debug)]
pub(super) enum Pending {
    /// A simple Query: statements not yet completed (front first). Ends at ReadyForQuery.
    Query(VecDeque<StatementRun>),
    Parse(Undo),
    Bind(Undo),
    Describe,
    Close(Undo),
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

impl Names for Ledger {
    fn statement_shape(&self, name: &[u8]) -> Option<&Shape> {
        self.statements.get(server_name(name)).map(|s| &s.masking)
    }

    fn portal_shape(&self, name: &[u8]) -> Option<&Shape> {
        self.portals.get(server_name(name)).map(|p| &p.masking)
    }

    fn set_statement_shape(&mut self, name: &[u8], shape: Shape) {
        if let Some(statement) = self.statements.get_mut(server_name(name)) {
            statement.masking = shape;
        }
    }

    fn set_portal_shape(&mut self, name: &[u8], shape: Shape) {
        if let Some(portal) = self.portals.get_mut(server_name(name)) {
            portal.masking = shape;
        }
    }

    fn forget_statement_lineages(&mut self) {
        let forget = |statement: &mut Statement| statement.masking.forget_lineage();
        self.statements.values_mut().for_each(forget);
        for entry in &mut self.requests {
            if let Pending::Parse(Undo::Statement { previous, .. })
            | Pending::Close(Undo::Statement { previous, .. }) = entry
            {
                previous.iter_mut().for_each(forget);
            }
        }
    }

    fn forget_portal_shapes(&mut self) {
        let forget = |portal: &mut Portal| portal.masking = Shape::default();
        self.portals.values_mut().for_each(forget);
        for entry in &mut self.requests {
            if let Pending::Bind(Undo::Portal { previous, .. })
            | Pending::Close(Undo::Portal { previous, .. }) = entry
            {
                previous.iter_mut().for_each(forget);
            }
        }
    }
}
