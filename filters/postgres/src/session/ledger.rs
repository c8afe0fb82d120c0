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
//! names for them (failing closed). Only the names the refused batch changed
//! are applied again, and each only up to the first pending request that
//! defines or closes it anew, so that a client pipelining thousands of
//! failing batches costs each error about its own requests, not the queue.
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
//!
//! No message's handling walks the whole queue of pending requests: they
//! are indexed by the names they change ([`Requests`]), an unwound batch
//! applies again only what its names reach, and masking forgets by counting
//! (see [`Noted`]). A client pipelining thousands of requests pays for each
//! about what it pays alone (`cargo bench -p gatehouse-benches --bench
//! pg_pipeline_floods`).

use super::fastpath::OwnRequest;
use super::{Portal, StatementRun, StatementText, server_name};
use crate::masking::{Names, OwnRequest as MaskingRequest, Shape};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

mod requests;
pub(super) use requests::Requests;

/// Requests awaiting answers, statements and portals (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Requests whose answers the server still owes, front first.
    pub(super) requests: Requests,
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
    /// Times masking forgot every statement's lineage, and every portal's
    /// shape: a [`Noted`] shape older than these reads as forgotten.
    lineages_forgotten: u64,
    portal_shapes_forgotten: u64,
    /// Pending requests [`Ledger::apply_again`] walked, in all.
    #[cfg(test)]
    applied_again: usize,
}

/// A prepared statement.
#[derive(Debug, Clone)]
pub(super) struct Statement {
    /// Its text as recorded, with the policy's decision.
    pub(super) text: Arc<StatementText>,
    /// What masking knows of it.
    pub(super) masking: Noted,
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
        /// A Bind's: the statement it binds (as the server keys it), held
        /// while the Bind is pending (the portal's `binder` sees it alive).
        bind: Option<Rc<[u8]>>,
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
            masking: Noted::default(),
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
        let Some(last_sync) = self.requests.last_sync() else {
            return targets;
        };
        for number in self.requests.statement_changes(name).rev() {
            if number > last_sync {
                continue;
            }
            if let Some(
                Pending::Parse(Undo::Statement {
                    previous: Some(previous),
                    ..
                })
                | Pending::Close(Undo::Statement {
                    previous: Some(previous),
                    ..
                }),
            ) = self.requests.numbered(number)
            {
                targets.push(previous);
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
        let bind: Rc<[u8]> = Rc::from(server_name(&portal.statement_name));
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
        let first_statement_change = self.requests.statement_changes(b"").next();
        match first_statement_change {
            Some(number) => replaces_nothing(self.requests.numbered_mut(number)),
            None => {
                self.statements.remove(&[][..]);
            }
        }
        match self.requests.first_unnamed_portal_change() {
            Some(number) => replaces_nothing(self.requests.numbered_mut(number)),
            None => {
                self.portals.remove(&[][..]);
            }
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
        // What the server has under each name the refused and skipped
        // requests changed (the oldest one's previous value wins).
        let mut restored = Restored::default();
        for entry in entries.into_iter().rev().flatten() {
            if let Pending::Parse(undo) | Pending::Bind(undo) | Pending::Close(undo) = entry {
                match undo {
                    Undo::Nothing => {}
                    Undo::Statement { name, previous } => {
                        restored.statements.insert(name, previous);
                    }
                    Undo::Portal { name, previous, .. } => {
                        let previous = restorable(previous, self.transactions_ended);
                        restored.portals.insert(name, previous);
                    }
                }
            }
        }
        // The server drops the unnamed statement before parsing its new text.
        if unnamed_parse_failed {
            restored.statements.insert(Vec::new(), None);
        }
        // Anything of the client's behind the batch's Sync.
        let later = self
            .requests
            .iter()
            .skip(1)
            .any(|p| !matches!(p, Pending::Injected(_)));
        self.apply_again(restored);
        if later {
            self.forget_portal_shapes();
        }
        later
    }

    /// Applies the pending requests again over `restored`: each name's first
    /// pending request that defines or closes it now replaces the restored
    /// value, and what read a restored name before that (a Bind of the
    /// statement, an Execute of the portal) reads it again. Walks the queue
    /// only as far as some name is still open, so a flood of failing
    /// batches over the same names costs each error its own requests.
    fn apply_again(&mut self, mut restored: Restored) {
        let epoch = self.transactions_ended;
        for entry in &mut self.requests {
            if restored.is_empty() {
                break;
            }
            #[cfg(test)]
            {
                self.applied_again += 1;
            }
            match entry {
                Pending::Parse(Undo::Statement { name, previous })
                | Pending::Close(Undo::Statement { name, previous }) => {
                    if let Some(value) = restored.statements.remove(name.as_slice()) {
                        *previous = value;
                        if previous.as_ref().is_some_and(|s| s.guard != Guard::Open) {
                            self.replaced_guarded += 1;
                        }
                    }
                }
                Pending::Bind(Undo::Portal {
                    name,
                    previous,
                    bind,
                }) => {
                    restored.replace_portal(name, previous, epoch);
                    // The portal it binds takes its statement's text as it is now.
                    let statement = bind
                        .as_deref()
                        .and_then(|statement| restored.statements.get(server_name(statement)));
                    if let Some(statement) = statement {
                        let text = statement.as_ref().map(|s| Arc::clone(&s.text));
                        restored.rebound.insert(name.clone(), text);
                    }
                }
                Pending::Close(Undo::Portal { name, previous, .. }) => {
                    restored.replace_portal(name, previous, epoch);
                }
                // Its record names what the server runs: the portal as
                // applied again.
                Pending::Execute(run) => {
                    let Some(portal) = run.portal_key.as_deref() else {
                        continue;
                    };
                    if let Some(value) = restored.portals.get(portal) {
                        run.reread(value.as_ref());
                    } else if let Some(text) = restored.rebound.get(portal) {
                        take_text(&mut run.text, text.as_ref());
                    }
                }
                _ => {}
            }
        }
        // Names no pending request defines again: the server's value stands.
        for (name, value) in restored.statements {
            match value {
                Some(statement) => self.statements.insert(name, statement),
                None => self.statements.remove(&name),
            };
        }
        for (name, value) in restored.portals {
            match value {
                Some(portal) => self.portals.insert(name, portal),
                None => self.portals.remove(&name),
            };
        }
        for (name, text) in restored.rebound {
            if let Some(portal) = self.portals.get_mut(&name) {
                take_text(&mut portal.text, text.as_ref());
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

/// The names a refused batch changed, while the pending requests are
/// applied again over them (see [`Ledger::apply_again`]): each is dropped at
/// the first pending request that defines or closes it again.
#[derive(Default)]
struct Restored {
    /// Statements as the server has them.
    statements: HashMap<Vec<u8>, Option<Statement>>,
    /// Portals as the server has them.
    portals: HashMap<Vec<u8>, Option<Portal>>,
    /// Portals a pending Bind defined from a restored statement, with that
    /// statement's text as the server has it.
    rebound: HashMap<Vec<u8>, Option<Arc<StatementText>>>,
}

impl Restored {
    fn is_empty(&self) -> bool {
        self.statements.is_empty() && self.portals.is_empty() && self.rebound.is_empty()
    }

    /// A pending Bind or Close of the portal `name`, which replaced
    /// `previous`: what it replaces on the server is the restored value, or
    /// the rebound one as it now reads.
    fn replace_portal(&mut self, name: &[u8], previous: &mut Option<Portal>, epoch: u64) {
        if let Some(value) = self.portals.remove(name) {
            *previous = stash(value, epoch);
        } else if let Some(text) = self.rebound.remove(name)
            && let Some(portal) = previous.as_mut()
        {
            take_text(&mut portal.text, text.as_ref());
        }
    }
}

/// A portal (or an Execute's record of it) bound again to a statement whose
/// text is now `text`; the same text keeps what its Bind found (the approval
/// it runs under).
fn take_text(current: &mut Option<Arc<StatementText>>, text: Option<&Arc<StatementText>>) {
    let same = current
        .as_ref()
        .is_some_and(|old| text.is_some_and(|new| old.is_same_text(new)));
    if !same {
        *current = text.cloned();
    }
}

/// A pending Parse, Bind or Close now replaces nothing: the server dropped
/// what it replaced before running it.
fn replaces_nothing(entry: Option<&mut Pending>) {
    match entry {
        Some(
            Pending::Parse(Undo::Statement { previous, .. })
            | Pending::Close(Undo::Statement { previous, .. }),
        ) => *previous = None,
        Some(
            Pending::Bind(Undo::Portal { previous, .. })
            | Pending::Close(Undo::Portal { previous, .. }),
        ) => *previous = None,
        _ => {}
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

/// What masking knows of a statement or portal, and when it learnt it: a
/// shape learnt before masking last forgot them reads as forgotten, so that
/// forgetting costs nothing however many names and pending requests hold
/// one (a client pipelining thousands of Queries makes masking forget every
/// portal at each).
#[derive(Debug, Clone, Default)]
pub(super) struct Noted {
    shape: Shape,
    /// The ledger's count of forgettings when it was learnt.
    at: u64,
}

impl Noted {
    pub(super) fn held_bytes(&self) -> usize {
        self.shape.held_bytes()
    }
}

impl Names for Ledger {
    fn statement_shape(&self, name: &[u8]) -> Option<Shape> {
        let noted = &self.statements.get(server_name(name))?.masking;
        let mut shape = noted.shape.clone();
        if noted.at < self.lineages_forgotten {
            shape.forget_lineage();
        }
        Some(shape)
    }

    fn portal_shape(&self, name: &[u8]) -> Option<Shape> {
        let noted = &self.portals.get(server_name(name))?.masking;
        (noted.at == self.portal_shapes_forgotten).then(|| noted.shape.clone())
    }

    fn set_statement_shape(&mut self, name: &[u8], shape: Shape) {
        if let Some(statement) = self.statements.get_mut(server_name(name)) {
            statement.masking = Noted {
                shape,
                at: self.lineages_forgotten,
            };
        }
    }

    fn set_portal_shape(&mut self, name: &[u8], shape: Shape) {
        if let Some(portal) = self.portals.get_mut(server_name(name)) {
            portal.masking = Noted {
                shape,
                at: self.portal_shapes_forgotten,
            };
        }
    }

    fn forget_statement_lineages(&mut self) {
        self.lineages_forgotten += 1;
    }

    fn forget_portal_shapes(&mut self) {
        self.portal_shapes_forgotten += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal(statement: &[u8]) -> Portal {
        Portal {
            statement_name: statement.to_vec(),
            text: None,
            parameters: None,
            masking: Noted::default(),
            binder: std::rc::Weak::<[u8; 0]>::new(),
            stashed_in: 0,
        }
    }

    fn text(sql: &str) -> Arc<StatementText> {
        Arc::new(StatementText {
            text: sql.into(),
            truncated: false,
            kind: None,
            decision: None,
            approval: None,
        })
    }

    fn previous_text(entry: Option<&Pending>) -> Option<String> {
        match entry? {
            Pending::Parse(Undo::Statement { previous, .. }) => {
                previous.as_ref().map(|s| s.text.text.0.to_string())
            }
            Pending::Bind(Undo::Portal { previous, .. }) => previous
                .as_ref()
                .map(|p| String::from_utf8_lossy(&p.statement_name).into_owned()),
            _ => None,
        }
    }

    /// A simple Query drops the unnamed statement and portal when it runs:
    /// the first Parse and Bind of them pipelined behind it replace none,
    /// and the later ones replace what those define.
    #[test]
    fn a_query_that_ran_leaves_the_first_pending_unnamed_changes_nothing_to_put_back() {
        let mut ledger = Ledger::default();
        ledger.define_statement(b"", text("old"), 100);
        ledger.define_portal(b"", portal(b"old"), 100);
        ledger.requests.push_back(Pending::Query(VecDeque::new()));
        for sql in ["a", "b"] {
            let undo = ledger.define_statement(b"", text(sql), 100);
            ledger.requests.push_back(Pending::Parse(undo));
            let undo = ledger.define_portal(b"", portal(sql.as_bytes()), 100);
            ledger.requests.push_back(Pending::Bind(undo));
            ledger.requests.push_back(Pending::Sync);
        }
        ledger.requests.pop_front();
        ledger.query_ran();
        let previous = |at| previous_text(ledger.requests.get(at));
        assert_eq!(previous(0), None);
        assert_eq!(previous(1), None);
        assert_eq!(previous(3).as_deref(), Some("a"));
        assert_eq!(previous(4).as_deref(), Some("a"));
    }

    /// The engine inserts its own requests ahead of the client message's:
    /// the client's requests behind keep being found by their names.
    #[test]
    fn requests_moved_by_an_insert_are_found_by_their_names() {
        let mut ledger = Ledger::default();
        for name in [&b"s"[..], b""] {
            let undo = ledger.define_statement(name, text("a"), 100);
            ledger.requests.push_back(Pending::Parse(undo));
        }
        let undo = ledger.define_portal(b"", portal(b"s"), 100);
        ledger.requests.push_back(Pending::Bind(undo));
        ledger.requests.push_back(Pending::Sync);
        ledger
            .requests
            .insert(0, Pending::Injected(Injected::DenialPrelude));
        for name in [&b"s"[..], b""] {
            let parse = ledger.requests.statement_changes(name).next();
            assert!(matches!(
                parse.and_then(|n| ledger.requests.numbered(n)),
                Some(Pending::Parse(Undo::Statement { name: parsed, .. })) if parsed == name
            ));
        }
        let bind = ledger.requests.first_unnamed_portal_change();
        assert!(matches!(
            bind.and_then(|n| ledger.requests.numbered(n)),
            Some(Pending::Bind(_))
        ));
        let sync = ledger.requests.last_sync();
        assert!(matches!(
            sync.and_then(|n| ledger.requests.numbered(n)),
            Some(Pending::Sync)
        ));
        while ledger.requests.pop_front().is_some() {}
        assert_eq!(ledger.requests.statement_changes(b"s").count(), 0);
        assert_eq!(ledger.requests.statement_changes(b"").count(), 0);
        assert_eq!(ledger.requests.first_unnamed_portal_change(), None);
        assert_eq!(ledger.requests.last_sync(), None);
    }

    /// The server refuses the front batch: its requests are taken off, up
    /// to its Sync, and unwound, as the session's error handler does.
    fn refuse_front_batch(ledger: &mut Ledger) {
        let mut entries = Vec::new();
        while let Some(entry) = ledger.requests.pop_front() {
            if entry.ends_batch() {
                break;
            }
            entries.push(Some(entry));
        }
        ledger.unwind(entries);
    }

    /// A client pipelines thousands of batches that each bind the unnamed
    /// portal to a statement that does not exist, and the server refuses
    /// each. Every error is unwound over the same name the next batch binds
    /// again: each costs its own requests, where applying the whole queue
    /// again on each error cost the queue's length squared (a minute of a
    /// worker's time for 16 000 pipelined requests).
    #[test]
    fn a_flood_of_failing_batches_is_unwound_in_linear_work() {
        const BATCHES: usize = 4_000;
        let mut ledger = Ledger::default();
        for _ in 0..BATCHES {
            let undo = ledger.define_portal(b"", portal(b"missing"), 100);
            ledger.requests.push_back(Pending::Bind(undo));
            ledger.requests.push_back(Pending::Sync);
        }
        for _ in 0..BATCHES {
            refuse_front_batch(&mut ledger);
        }
        assert!(ledger.requests.is_empty());
        // Every Bind was refused: the server has no unnamed portal, and
        // neither has the ledger.
        assert!(ledger.portals.is_empty());
        assert!(
            ledger.applied_again <= 2 * BATCHES,
            "{} requests walked for {BATCHES} errors",
            ledger.applied_again
        );
    }
}
