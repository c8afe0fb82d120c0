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
//! and every skipped one (the client's behind a refused or skipped request
//! of the engine's own, such as a denial's Bind, included) are undone,
//! newest first, so a Parse that fails (`42P05` for a name in use, a syntax
//! error) leaves the name as it was.
//! Requests a client pipelined after that batch's Sync were defined against
//! names as the skipped requests would have left them: they are applied
//! again on the names as the server has them (their Executes' records name
//! the portals as applied again), and masking forgets what it took from
//! names for them (failing closed).
//!
//! Enforcement's [`Guard`] of a statement (denied, or needing approval)
//! lives with it, so it is undone and applied again with it. Those
//! pipelined requests already reached the server, though: a Bind written
//! while a Parse or Close of its statement's name in an earlier batch is
//! unanswered must pass for the statement that request replaced too
//! ([`Ledger::bind_targets`]), and a denied statement's Describe raises the
//! denial only when the server holds the raising block whatever is pending.
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
//! outside a transaction ends every portal but those of Binds still pending
//! (each portal knows whether its Bind is, so this costs the portals, not
//! the pending requests).

use super::fastpath::OwnRequest;
use super::{Portal, StatementRun, StatementText, server_name};
use crate::masking::{Names, OwnRequest as MaskingRequest, Shape};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
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
    /// Parses and Closes sent since the queue was last empty that replaced
    /// a guarded statement, or defined one: while any may be pending, a Bind
    /// or Describe is checked against what the server may still hold (see
    /// [`Ledger::bind_targets`]).
    replaced_guarded: usize,
    /// ReadyForQuery `I` answers so far: a portal an undo kept is put back
    /// only when none came since (see [`Ledger::end_transaction`]).
    transactions_ended: u64,
}

/// A prepared statement.
#[derive(Debug, Clone)]
pub(super) struct Statement {
    /// Its text as recorded, with the policy's decision.
    pub(super) text: Arc<StatementText>,
    /// What masking knows of it.
    pub(super) masking: Shape,
    /// What enforcement does at its Binds and Describes.
    pub(super) guard: Guard,
}

/// How enforcement treats a prepared statement (see `enforce` and
/// `approvals`). It lives with the statement, so it is undone and applied
/// again with it, as the server keeps or drops the statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Guard {
    /// Its Binds pass.
    #[default]
    Open,
    /// The policy denied it: the server holds the raising block under its
    /// name, and its Binds lose their parameters.
    Denied,
    /// It needs approval: each Bind is checked with its parameters against
    /// this exact text.
    Gated(Arc<[u8]>),
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
        /// A Bind's: held, never read, while the Bind is pending (the
        /// portal's `binder` sees it alive).
        #[expect(dead_code, reason = "held for its liveness only")]
        bind: Option<Rc<()>>,
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
            guard: Guard::Open,
        };
        let previous = self.statements.insert(name.to_vec(), statement);
        self.note_replaced(previous.as_ref());
        Undo::Statement {
            name: name.to_vec(),
            previous,
        }
    }

    /// Guards the statement `name` as just defined; `false` when the name is
    /// not tracked (past the limit).
    pub(super) fn guard_statement(&mut self, name: &[u8], guard: Guard) -> bool {
        match self.statements.get_mut(server_name(name)) {
            Some(statement) => {
                statement.guard = guard;
                // What it replaced may stay on the server: see `bind_targets`.
                self.replaced_guarded += 1;
                true
            }
            None => false,
        }
    }

    fn note_replaced(&mut self, previous: Option<&Statement>) {
        if previous.is_some_and(|s| s.guard != Guard::Open) {
            self.replaced_guarded += 1;
        }
    }

    /// The statements a Bind of `name` written now may bind on the server:
    /// the ledger's, and, when a Parse or Close of the name in an earlier
    /// batch is still unanswered, what it replaced (the server keeps that if
    /// it refuses or skips the request; within the Bind's own batch, a
    /// refusal skips the Bind too). A Bind must pass for each of them.
    pub(super) fn bind_targets(&self, name: &[u8]) -> Vec<&Statement> {
        let name = server_name(name);
        let mut targets: Vec<&Statement> = self.statements.get(name).into_iter().collect();
        if self.replaced_guarded == 0 {
            return targets;
        }
        let mut earlier_batch = false;
        for entry in self.requests.iter().rev() {
            match entry {
                Pending::Sync => earlier_batch = true,
                Pending::Parse(Undo::Statement {
                    name: replaced,
                    previous: Some(previous),
                })
                | Pending::Close(Undo::Statement {
                    name: replaced,
                    previous: Some(previous),
                }) if earlier_batch && replaced.as_slice() == name => targets.push(previous),
                _ => {}
            }
        }
        targets
    }

    /// Whether some statement the server holds or may hold is denied.
    pub(super) fn any_denied(&self) -> bool {
        let denied = |s: &Statement| s.guard == Guard::Denied;
        self.statements.values().any(denied)
            || self.requests.iter().any(|entry| {
                matches!(
                    entry,
                    Pending::Parse(Undo::Statement { previous: Some(s), .. })
                        | Pending::Close(Undo::Statement { previous: Some(s), .. })
                        if denied(s)
                )
            })
    }

    /// Every request was answered: none replaced a guarded statement any more.
    pub(super) fn settled(&mut self) {
        if self.requests.is_empty() {
            self.replaced_guarded = 0;
        }
    }

    /// A Bind defines the portal `name` (as [`Ledger::define_statement`]).
    pub(super) fn define_portal(&mut self, name: &[u8], mut portal: Portal, limit: usize) -> Undo {
        let name = server_name(name);
        if !name.is_empty() && !self.portals.contains_key(name) && self.portals.len() >= limit {
            return Undo::Nothing;
        }
        let bind = Rc::new(());
        portal.binder = Rc::downgrade(&bind);
        let previous = self.portals.insert(name.to_vec(), portal);
        Undo::Portal {
            name: name.to_vec(),
            previous: stash(previous, self.transactions_ended),
            bind: Some(bind),
        }
    }

    /// A Close of a statement (`kind` `S`) or portal removes it.
    pub(super) fn close(&mut self, kind: u8, name: &[u8]) -> Undo {
        let name = server_name(name).to_vec();
        if kind == b'S' {
            let previous = self.statements.remove(&name);
            self.note_replaced(previous.as_ref());
            Undo::Statement { name, previous }
        } else {
            let previous = stash(self.portals.remove(&name), self.transactions_ended);
            Undo::Portal {
                name,
                previous,
                bind: None,
            }
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
                Pending::Bind(Undo::Portal { name, previous, .. })
                | Pending::Close(Undo::Portal { name, previous, .. })
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
    /// statement's text as it is now (the text its Bind read keeps the
    /// approval it was checked under), and their Executes' records read the
    /// portals so applied again; what masking took from the names for
    /// them is forgotten (see [`crate::masking::Names`]), so their computed
    /// columns are masked whole. Returns whether there were such requests
    /// and the refused or skipped ones changed a name (else nothing pending
    /// is read again).
    pub(super) fn unwind(&mut self, entries: Vec<Option<Pending>>) -> bool {
        // The server changed no name the ledger did not: what is pending
        // was read against names as the server has them (a flood of
        // failing batches costs each error its own requests only).
        let unnamed_parse_failed = matches!(
            entries.first(),
            Some(Some(Pending::Parse(Undo::Statement { name, .. }))) if name.is_empty()
        );
        let changed = entries.iter().flatten().any(|entry| {
            matches!(
                entry,
                Pending::Parse(undo) | Pending::Bind(undo) | Pending::Close(undo)
                    if !matches!(undo, Undo::Nothing)
            )
        });
        if !changed {
            return false;
        }
        let Ledger {
            requests,
            statements,
            portals,
            transactions_ended,
            ..
        } = self;
        // What each pending request defined (`None`: it closed, or changed nothing).
        let mut defined: Vec<Defined> = Vec::with_capacity(requests.len());
        for entry in requests.iter_mut().rev() {
            defined.push(match entry {
                Pending::Parse(undo) | Pending::Bind(undo) | Pending::Close(undo) => {
                    undo_in_place(statements, portals, *transactions_ended, undo)
                }
                _ => Defined::Nothing,
            });
        }
        defined.reverse();
        // The server drops the unnamed statement before parsing its new text.
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
                    if previous.as_ref().is_some_and(|s| s.guard != Guard::Open) {
                        self.replaced_guarded += 1;
                    }
                }
                (
                    Pending::Bind(Undo::Portal { name, previous, .. })
                    | Pending::Close(Undo::Portal { name, previous, .. }),
                    Defined::Portal(portal),
                ) => {
                    let replaced = match portal {
                        Some(mut portal) => {
                            let text = self
                                .statements
                                .get(server_name(&portal.statement_name))
                                .map(|s| Arc::clone(&s.text));
                            // The same text keeps what its Bind found (the
                            // approval it runs under).
                            if !portal.text.as_ref().is_some_and(|old| {
                                text.as_ref().is_some_and(|new| old.is_same_text(new))
                            }) {
                                portal.text = text;
                            }
                            portal.masking = Shape::default();
                            self.portals.insert(name.clone(), portal)
                        }
                        None => self.portals.remove(name.as_slice()),
                    };
                    *previous = stash(replaced, self.transactions_ended);
                }
                // Its record names what the server runs: the portal as
                // applied again.
                (Pending::Execute(run), _) => {
                    if let Some(portal) = run.portal_key.as_deref() {
                        run.reread(self.portals.get(portal));
                    }
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
            Undo::Portal { name, previous, .. } => {
                match restorable(previous, self.transactions_ended) {
                    Some(portal) => self.portals.insert(name, portal),
                    None => self.portals.remove(&name),
                };
            }
        }
    }

    /// The server reported no transaction (ReadyForQuery `I`): its portals
    /// are gone; only those of Binds still pending (sent after its Sync)
    /// will exist, and a pending request that is undone puts back none of
    /// the portals it replaced. Costs the portals, not the pending requests.
    pub(super) fn end_transaction(&mut self) {
        self.transactions_ended += 1;
        self.portals
            .retain(|_, portal| portal.binder.strong_count() > 0);
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
    transactions_ended: u64,
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
        Undo::Portal { name, previous, .. } => {
            let defined = match restorable(previous.take(), transactions_ended) {
                Some(previous) => portals.insert(name.clone(), previous),
                None => portals.remove(name.as_slice()),
            };
            Defined::Portal(defined)
        }
    }
}

/// `previous`, kept in an undo: stamped with the transactions ended so far,
/// so that it is put back only while its transaction lasts.
fn stash(mut previous: Option<Portal>, transactions_ended: u64) -> Option<Portal> {
    if let Some(portal) = previous.as_mut() {
        portal.stashed_in = transactions_ended;
    }
    previous
}

/// A portal an undo kept, when it exists on the server: no transaction
/// ended since it was replaced, or its own Bind is still pending (so it is
/// bound after that end).
fn restorable(previous: Option<Portal>, transactions_ended: u64) -> Option<Portal> {
    previous.filter(|portal| {
        portal.stashed_in == transactions_ended || portal.binder.strong_count() > 0
    })
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
    /// Entries a server's error in an extended-protocol batch does not skip:
    /// the batch's Sync, and the engine's own Queries, which it sends only
    /// outside a batch.
    pub(super) fn ends_batch(&self) -> bool {
        matches!(
            self,
            Pending::Sync | Pending::Injected(Injected::FastPath(_) | Injected::Masking(_))
        )
    }

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
