//! Masking what the server sends back to the client.
//!
//! A [`SessionMasker`] (one per session, sharing a compiled [`MaskingPolicy`])
//! sees every client message the server receives and every server message, and
//! rewrites the server messages that carry data:
//!
//! - DataRow, text and binary format: each column is masked by its column rule
//!   (resolved from RowDescription's table OID and attribute number, or its
//!   field name), otherwise text, JSON/JSONB and text-array values go through the
//!   detectors. A masked value stays valid for its type (see [`values`]); the
//!   row's lengths are recomputed.
//! - ErrorResponse and NoticeResponse: message, detail, hint, context and
//!   internal query, by detector; a unique violation's `Key (col)=(value)` detail
//!   whole, by the column's rule.
//! - NotificationResponse payloads, by detector.
//! - COPY TO STDOUT rows, text, CSV and binary: by column rule, with the
//!   columns described by a Parse + Describe of the equivalent query sent
//!   ahead of the COPY, and by detector (see [`copy`]).
//!
//! Prepared statements and portals are the session's ledger's: the masker
//! reads and annotates its entries through [`Names`] (each carries a
//! [`Shape`]: the lineage of its text and the COPY it runs), so masking and
//! the rest of the engine agree on what every name means, keyed as the server
//! keys it and unwound as the server unwinds it (see the ledger's module
//! docs). Which description applies to a DataRow follows the server's order
//! of answers: the masker keeps a queue of the client's requests whose
//! answers carry descriptions or rows (Parse, Bind, Describe, Execute, Query,
//! Sync), and unwinds it on errors as the server does. The requests it sends
//! itself and consumes whole (the catalog lookup, a COPY's describe) are
//! [`OwnRequest`]s in the session's ledger, which hands their answers to
//! [`SessionMasker::on_own_answer`].
//!
//! Masking fails closed. An Execute's rows are masked by a description of
//! that very portal: unless the client described the portal in the message
//! just before, the session sends a Describe of the portal ahead of the
//! Execute (in the same batch, so it costs no round trip) and the masker
//! consumes its answer. So a result is always described, whatever the client
//! did or did not describe, re-parsed or named, and however many names it
//! used. Where no description can be had (a shadow session adds no traffic),
//! with column rules every value is masked whole.
//!
//! Computed columns follow the data (see [`derived`]): lineage of the
//! statement's SQL says which masked columns flow into each of them.
//!
//! Table rules are resolved by a catalog lookup (see [`catalog`]) sent ahead of
//! the client's first request; its answers are consumed here. Until it has
//! answered, or if it fails, table rules match result fields by column name
//! instead (masking too much rather than too little).
//!
//! Messages longer than the engine's buffer limit stream through; a
//! [`StreamRewrite`] masks them in place with the length already sent: columns
//! under a rule are filled (`partial` keeps the last characters), detector
//! values up to `max_scan_bytes` have their findings starred, longer ones are
//! starred whole (or passed, when `over_cap` is `allow`).
//!
//! An exempt identity gets every message unchanged; the counts for the records
//! are computed all the same.

pub mod catalog;
pub mod config;
pub mod copy;
mod derived;
mod held;
#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod hostile_tests;
mod inspect;
#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod ledger_tests;
mod limits;
pub mod preview;
mod records;
pub mod stream;
#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests;
pub mod values;

pub use config::{ColumnRule, MaskingPolicy, RuleTarget};
pub use stream::StreamRewrite;

pub use crate::disposition::Disposition;
use crate::policy::Lexing;
use crate::protocol::{BackendMessage, DataRowValues, DecodeError, FrontendMessage};
use crate::sql::lineage::Taint;
use derived::TextLineage;
use gatehouse_core::mask::{DetectorCounts, Masked};
use gatehouse_core::record::MaskingCounts;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use values::{ColumnPlan, Field, RowPlan, ValueCounts};

/// Requests awaiting answers tracked; past this the masker stops tracking
/// (the engine ends such sessions well before).
const MAX_EXPECTED: usize = 64 * 1024;
/// Functions with an OID below this are built in (the server's
/// FirstNormalObjectId).
const FIRST_NORMAL_OID: u32 = 16_384;
/// The largest row buffer kept for reuse between rows.
const MAX_SPARE_ROW: usize = 64 * 1024;

/// A description filled when the server answers the Describe that asked for it.
type Slot = Rc<OnceCell<Rc<Vec<Field>>>>;

/// What masking knows of a prepared statement or portal, kept on its entry
/// in the session's ledger. The default knows nothing: computed columns are
/// masked whole and a COPY's rows by every rule.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shape {
    /// The lineage of the statement's text; `None` when unknown.
    lineage: Option<Rc<TextLineage>>,
    /// The statement is a `COPY … TO STDOUT`.
    copy: Option<Rc<copy::CopyStatement>>,
}

impl Shape {
    /// Its lineage becomes unknown (the COPY it is stays).
    pub(crate) fn forget_lineage(&mut self) {
        self.lineage = None;
    }

    /// The bytes it holds, shared out among the entries holding the same
    /// lineage or COPY.
    pub(crate) fn held_bytes(&self) -> usize {
        self.lineage.as_ref().map_or(0, held::lineage_share)
            + self.copy.as_ref().map_or(0, held::copy_share)
    }
}

/// The session's prepared statements and portals, as masking reads and
/// annotates them: the session's ledger, which defines, closes and unwinds
/// the names (the masker never keeps names of its own). Names are the
/// client's; the ledger keys them as the server does.
pub(crate) trait Names {
    /// The statement `name` as the server will have it when the request
    /// being handled runs; `None` when the ledger does not track it.
    fn statement_shape(&self, name: &[u8]) -> Option<Shape>;
    /// The portal `name`, likewise.
    fn portal_shape(&self, name: &[u8]) -> Option<Shape>;
    /// Annotates the statement the request being handled (a Parse) defines.
    fn set_statement_shape(&mut self, name: &[u8], shape: Shape);
    /// Annotates the portal the request being handled (a Bind) defines.
    fn set_portal_shape(&mut self, name: &[u8], shape: Shape);
    /// Statements may have been redefined behind the protocol: none has a
    /// known lineage any more (what an unwound request would put back
    /// included).
    fn forget_statement_lineages(&mut self);
    /// Portals may have been declared or closed behind the protocol: none
    /// has a known shape any more (likewise).
    fn forget_portal_shapes(&mut self);
}

/// A request whose answer the masker cares about, in the server's order.
#[derive(Debug)]
enum Expect {
    /// A Parse, with its text's lineage (for its errors).
    Parse {
        lineage: Option<Rc<TextLineage>>,
        noted: Forgets,
    },
    /// A Bind, with its statement's lineage (for its errors).
    Bind {
        lineage: Option<Rc<TextLineage>>,
        noted: Forgets,
    },
    /// The client's Describe.
    Describe(Slot),
    /// The masker's own Describe of a portal, sent ahead of its Execute: its
    /// answer is consumed.
    OwnDescribe(Slot),
    Execute {
        /// The portal's shape as the ledger had it when the Execute was sent
        /// (what the server runs, since an Execute after a failed Bind is
        /// skipped); `None` when untracked.
        portal: Option<Shape>,
        /// The portal's description (with its result formats).
        slot: Slot,
        plan: Option<Rc<RowPlan>>,
        noted: Forgets,
    },
    /// A simple Query or FunctionCall, with its `COPY … TO STDOUT`
    /// statements in order and its lineage: ends at ReadyForQuery.
    Query {
        copies: VecDeque<copy::CopyStatement>,
        lineage: Option<Rc<TextLineage>>,
        /// The statement whose results come next.
        statement: usize,
    },
    /// A FunctionCall in the given result format: ends at ReadyForQuery.
    FunctionCall {
        binary: bool,
        builtin: bool,
    },
    Sync,
}

impl Expect {
    fn ends_at_ready(&self) -> bool {
        matches!(
            self,
            Expect::Query { .. } | Expect::FunctionCall { .. } | Expect::Sync
        )
    }

    /// The lineage of a Parse, Bind or Execute, unless masking forgot what
    /// it took from names since it was sent (`forgot`: the count now).
    fn known_lineage(&self, forgot: Forgets) -> Option<&Rc<TextLineage>> {
        match self {
            Expect::Parse { lineage, noted } if noted.lineages == forgot.lineages => {
                lineage.as_ref()
            }
            Expect::Bind { lineage, noted } if *noted == forgot => lineage.as_ref(),
            Expect::Execute { portal, noted, .. } if noted.pending == forgot.pending => {
                portal.as_ref().and_then(|p| p.lineage.as_ref())
            }
            _ => None,
        }
    }
}

/// How many times masking forgot what requests awaiting answers took from
/// names: every lineage (a statement redefined names behind the protocol),
/// or what pending requests read (the ledger unwound a failed batch). A
/// request notes the counts when sent, and reads as forgotten once they
/// moved, so forgetting costs nothing however deep the pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Forgets {
    lineages: u64,
    pending: u64,
}

/// A request the masker sends ahead of the client's, kept in the session's
/// ledger with the masker as its owner: everything the server answers to it,
/// through its ReadyForQuery, is consumed by [`SessionMasker::on_own_answer`]
/// (except the asynchronous messages, which are the client's).
#[derive(Debug)]
pub(crate) enum OwnRequest {
    /// The catalog lookup (see [`catalog`]).
    Catalog,
    /// The describe of a COPY's columns sent ahead of its Query (or Parse or
    /// Bind; see [`copy`]).
    CopyDescribe {
        fields: copy::DescribedFields,
        /// Sent inside a transaction block: its error is kept for the COPY's
        /// `25P02` answer.
        in_block: bool,
        /// Its error, when it failed inside a transaction block.
        error: Option<Vec<u8>>,
    },
}

/// What a server message answering an [`OwnRequest`] is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OwnAnswer {
    /// Part of the answer, consumed.
    Consumed,
    /// Its last message (ReadyForQuery), consumed: the request is answered.
    Answered,
    /// An asynchronous message: the client's, to handle as any other.
    Client,
}

/// The server's transaction status, as of its last ReadyForQuery.
#[derive(Debug)]
enum Transaction {
    Idle,
    InBlock,
    /// A failed transaction block.
    Failed {
        /// The error of the COPY describe that failed the block, for the
        /// COPY's `25P02` answer (see [`copy`]); `None` once used.
        copy_describe_error: Option<Vec<u8>>,
    },
}

impl Transaction {
    /// The status a ReadyForQuery reports.
    fn from_status(status: u8) -> Self {
        match status {
            b'T' => Transaction::InBlock,
            b'E' => Transaction::Failed {
                copy_describe_error: None,
            },
            _ => Transaction::Idle,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// Not sent yet.
    Due,
    Sent,
    Done,
    /// The server refused it: table rules match by column name.
    Failed,
}

/// One session's masking state; see the module documentation.
pub struct SessionMasker {
    policy: Arc<MaskingPolicy>,
    exempt: Option<bool>,
    lookup: Lookup,
    /// (table OID, attribute number) → rule index, from the catalog lookup.
    resolved: HashMap<(u32, i16), usize>,
    /// The portal just described, with the slot its description fills, for
    /// an Execute of it as the next client message: the client's Describe
    /// (then the Execute needs no describe of its own) or the masker's own,
    /// sent ahead of the Execute being handled.
    described_portal: Option<(Vec<u8>, Slot)>,
    /// Masked columns by name, for lineage: the table rules, then the view
    /// columns the catalog lookup found.
    sources: Rc<crate::sql::lineage::Sources>,
    /// Bumped when `sources` grows.
    sources_generation: u64,
    /// How the server will lex the text being judged (see
    /// [`SessionMasker::set_lexing`]).
    lexing: Lexing,
    /// The last text analyzed, how it was lexed, and its lineage.
    last_text: Option<(Vec<u8>, Lexing, Rc<TextLineage>)>,
    /// Lineage of recent texts by normalized form.
    lineage_cache: derived::LineageCache,
    /// Values masked whole because something opaque computed them.
    opaque_count: u64,
    expected: VecDeque<Expect>,
    /// What masking forgot so far (see [`Forgets`]).
    forgot: Forgets,
    /// The description of the simple Query result being received.
    query_plan: Option<Rc<RowPlan>>,
    /// A COPY TO STDOUT in progress: how its rows are masked.
    copy: Option<copy::CopyRows>,
    /// The transaction status of the last ReadyForQuery.
    transaction: Transaction,
    /// An extended-protocol batch is open (no Sync since its first message).
    batch_open: bool,
    /// The client message being handled starts a batch (see `copy`).
    at_boundary: bool,
    /// The COPY whose columns the client message being handled may have
    /// described ahead of it (a Parse or Bind of one).
    copy_describe_next: Option<Rc<copy::CopyStatement>>,
    rule_counts: Vec<u64>,
    detector_counts: DetectorCounts,
    over_cap: u64,
    /// The buffer the next rewritten row is written into (see [`SessionMasker::recycle`]).
    spare_row: Vec<u8>,
    /// The result-size limit and where the current result stands.
    guard: limits::ResultGuard,
}

impl SessionMasker {
    pub fn new(policy: Arc<MaskingPolicy>) -> Self {
        let lookup = if policy.column_rules().next().is_some() {
            Lookup::Due
        } else {
            Lookup::Done
        };
        Self {
            rule_counts: vec![0; policy.rules.len()],
            policy: Arc::clone(&policy),
            exempt: None,
            lookup,
            resolved: HashMap::new(),
            described_portal: None,
            sources: Rc::new(derived::policy_sources(&policy)),
            sources_generation: 0,
            lexing: Lexing::default(),
            last_text: None,
            lineage_cache: derived::LineageCache::default(),
            opaque_count: 0,
            expected: VecDeque::new(),
            forgot: Forgets::default(),
            query_plan: None,
            copy: None,
            transaction: Transaction::Idle,
            batch_open: false,
            at_boundary: true,
            copy_describe_next: None,
            detector_counts: DetectorCounts::default(),
            over_cap: 0,
            spare_row: Vec::new(),
            guard: limits::ResultGuard::default(),
        }
    }

    /// Exempt sessions get every message unchanged (counts are still kept).
    pub fn set_exempt(&mut self, exempt: bool) {
        self.exempt = Some(exempt);
    }

    pub fn is_exempt(&self) -> bool {
        self.exempt == Some(true)
    }

    /// Whether [`SessionMasker::set_exempt`] was called.
    pub fn exemption_decided(&self) -> bool {
        self.exempt.is_some()
    }

    pub fn policy(&self) -> &MaskingPolicy {
        &self.policy
    }

    /// Whether the catalog lookup is still to be sent.
    pub fn lookup_due(&self) -> bool {
        self.lookup == Lookup::Due
    }

    /// The catalog lookup to send ahead of the client's next request (once),
    /// as [`OwnRequest::Catalog`]; its answers are consumed by
    /// [`SessionMasker::on_own_answer`].
    pub fn take_lookup(&mut self) -> Option<Vec<u8>> {
        if self.lookup != Lookup::Due {
            return None;
        }
        let sql = catalog::lookup_sql(&self.policy);
        let Some(sql) = sql else {
            self.lookup = Lookup::Done;
            return None;
        };
        self.lookup = Lookup::Sent;
        Some(catalog::query_message(&sql))
    }

    /// Whether the catalog lookup has answered (or will not be sent).
    fn catalog_answered(&self) -> bool {
        matches!(self.lookup, Lookup::Done | Lookup::Failed)
    }

    /// A client message as the server receives it, after the session's
    /// ledger (`names`) recorded what it defines or closes.
    pub(crate) fn on_frontend(&mut self, msg: &FrontendMessage<'_>, names: &mut impl Names) {
        self.note_batch(msg);
        let described = self.described_portal.take();
        match msg {
            FrontendMessage::Query { sql } => {
                let lineage = self.text_lineage(sql);
                if lineage.as_deref().is_none_or(TextLineage::redefines_names) {
                    self.forget_names(names);
                }
                // Portals may be declared or closed by any statement of it.
                self.forget_portals(names);
                self.expect(Expect::Query {
                    copies: self.copies_of(sql),
                    lineage,
                    statement: 0,
                });
            }
            FrontendMessage::FunctionCall(call) => {
                let binary = call.result_format == 1;
                self.expect(Expect::FunctionCall {
                    binary,
                    builtin: call.oid < FIRST_NORMAL_OID,
                });
            }
            FrontendMessage::Parse { name, sql, .. } => {
                let copy = self.note_prepared(sql);
                let lineage = self.text_lineage(sql);
                if lineage.as_deref().is_none_or(TextLineage::redefines_names) {
                    self.forget_names(names);
                }
                names.set_statement_shape(
                    name,
                    Shape {
                        lineage: lineage.clone(),
                        copy,
                    },
                );
                self.expect(Expect::Parse {
                    lineage,
                    noted: self.forgot,
                });
            }
            FrontendMessage::Bind(bind) => {
                let shape = names.statement_shape(bind.statement).unwrap_or_default();
                if shape
                    .lineage
                    .as_deref()
                    .is_none_or(TextLineage::redefines_names)
                {
                    // Running it may declare or close cursors by any name.
                    self.forget_portals(names);
                }
                // The client's unnamed statement is described at its Parse only.
                if !bind.statement.is_empty() {
                    self.copy_describe_next.clone_from(&shape.copy);
                }
                let lineage = shape.lineage.clone();
                names.set_portal_shape(bind.portal, shape);
                self.expect(Expect::Bind {
                    lineage,
                    noted: self.forgot,
                });
            }
            FrontendMessage::Describe { kind, name } => {
                let slot = Slot::default();
                if *kind == b'P' {
                    self.described_portal = Some((name.to_vec(), Rc::clone(&slot)));
                }
                self.expect(Expect::Describe(slot));
            }
            FrontendMessage::Execute { portal, .. } => {
                let slot = match described {
                    Some((name, slot)) if name == *portal => slot,
                    // Not described: the columns stay unknown.
                    _ => Slot::default(),
                };
                self.expect(Expect::Execute {
                    portal: names.portal_shape(portal),
                    slot,
                    plan: None,
                    noted: self.forgot,
                });
            }
            FrontendMessage::Sync => self.expect(Expect::Sync),
            _ => {}
        }
    }

    /// A message the engine wrote in place of the client's (a denial's
    /// raising block, a session reason's replacement), as the server gets it.
    /// Its texts are the engine's own: they redefine no name, so masking
    /// forgets nothing it knows of the other names, and what they would
    /// return is unknown (they return nothing).
    pub(crate) fn on_engine_frontend(&mut self, msg: &FrontendMessage<'_>, names: &mut impl Names) {
        let engine_text = || Some(Rc::new(TextLineage::engine_text()));
        match msg {
            FrontendMessage::Parse { name, .. } => {
                self.note_batch(msg);
                self.described_portal = None;
                let lineage = engine_text();
                let shape = Shape {
                    lineage: lineage.clone(),
                    copy: None,
                };
                names.set_statement_shape(name, shape);
                self.expect(Expect::Parse {
                    lineage,
                    noted: self.forgot,
                });
            }
            FrontendMessage::Query { .. } => {
                self.note_batch(msg);
                self.described_portal = None;
                // As any Query: the server ends the unnamed portal.
                self.forget_portals(names);
                self.expect(Expect::Query {
                    copies: VecDeque::new(),
                    lineage: engine_text(),
                    statement: 0,
                });
            }
            _ => self.on_frontend(msg, names),
        }
    }

    /// The Describe of a portal to send ahead of the client's Execute of it,
    /// unless the client described it in the message just before. Call it
    /// right before [`SessionMasker::on_frontend`] with the Execute; its
    /// answer is consumed.
    pub fn describe_ahead_of_execute(&mut self, msg: &FrontendMessage<'_>) -> Option<Vec<u8>> {
        let FrontendMessage::Execute { portal, .. } = msg else {
            return None;
        };
        if self
            .described_portal
            .as_ref()
            .is_some_and(|(name, _)| name == portal)
            || self.expected.len() >= MAX_EXPECTED
        {
            return None;
        }
        let slot = Slot::default();
        self.expected
            .push_back(Expect::OwnDescribe(Rc::clone(&slot)));
        self.described_portal = Some((portal.to_vec(), slot));
        let mut bytes = Vec::with_capacity(portal.len() + 7);
        FrontendMessage::Describe {
            kind: b'P',
            name: portal,
        }
        .encode(&mut bytes);
        Some(bytes)
    }

    /// Prepared statements may have been redefined behind the protocol
    /// (PREPARE, DEALLOCATE, DISCARD): none has a known lineage any more.
    fn forget_names(&mut self, names: &mut impl Names) {
        names.forget_statement_lineages();
        // Those of pending Parses and Binds too.
        self.forgot.lineages += 1;
        self.forget_portals(names);
    }

    /// Portals may have been declared or closed behind the protocol: none is
    /// known any more, those of Binds not yet answered included.
    fn forget_portals(&mut self, names: &mut impl Names) {
        names.forget_portal_shapes();
    }

    /// Requests still awaiting answers were read against names the server
    /// does not have (see the ledger's unwinding): what they took from those
    /// names is forgotten.
    pub(crate) fn forget_pending_names(&mut self) {
        self.forgot.pending += 1;
    }

    fn expect(&mut self, expect: Expect) {
        if self.expected.len() < MAX_EXPECTED {
            self.expected.push_back(expect);
        }
    }

    /// A server message after login: what to forward in its place.
    pub fn on_backend(&mut self, msg: &BackendMessage<'_>) -> Disposition {
        if let BackendMessage::DataRow { .. } = msg {
            return self.route(msg);
        }
        let guarded = self.guard_message(msg);
        match (self.route(msg), guarded) {
            (Disposition::Drop, _) => Disposition::Drop,
            (_, Some(guarded)) => guarded,
            (action, None) => action,
        }
    }

    /// A server message of the client's: masked, and followed.
    fn route(&mut self, msg: &BackendMessage<'_>) -> Disposition {
        match msg {
            BackendMessage::RowDescription { body } => {
                // A description that does not parse describes nothing: its
                // rows are masked as of unknown columns.
                let fields = values::parse_row_description(body).ok();
                match self.expected.front() {
                    Some(Expect::Describe(slot) | Expect::OwnDescribe(slot)) => {
                        if let Some(fields) = fields {
                            let _ = slot.set(Rc::new(fields));
                        }
                        let own = matches!(self.expected.pop_front(), Some(Expect::OwnDescribe(_)));
                        if own {
                            return Disposition::Drop;
                        }
                    }
                    _ => {
                        self.query_plan = fields.map(|fields| {
                            let (lineage, statement) = match self.expected.front() {
                                Some(Expect::Query {
                                    lineage, statement, ..
                                }) => (lineage.clone(), *statement),
                                _ => (None, 0),
                            };
                            let taints =
                                self.column_taints(lineage.as_deref(), statement, fields.len());
                            Rc::new(self.plan(&fields, None, &taints))
                        });
                    }
                }
                Disposition::Pass
            }
            BackendMessage::NoData => {
                if let Some(Expect::Describe(slot) | Expect::OwnDescribe(slot)) =
                    self.expected.front()
                {
                    let _ = slot.set(Rc::new(Vec::new()));
                    if matches!(self.expected.pop_front(), Some(Expect::OwnDescribe(_))) {
                        return Disposition::Drop;
                    }
                }
                Disposition::Pass
            }
            // The ledger defined the names when the client sent them.
            BackendMessage::ParseComplete => {
                if let Some(Expect::Parse { .. }) = self.expected.front() {
                    self.expected.pop_front();
                }
                Disposition::Pass
            }
            BackendMessage::BindComplete => {
                if let Some(Expect::Bind { .. }) = self.expected.front() {
                    self.expected.pop_front();
                }
                Disposition::Pass
            }
            BackendMessage::FunctionCallResponse { result } => {
                self.on_function_result(msg, *result)
            }
            BackendMessage::DataRow { .. } => {
                // The session hands rows over undecoded ([`Self::on_data_row`]);
                // a decoded one is encoded again, which always gives a valid
                // row (were it not, the row would be dropped, never passed).
                let mut row = Vec::new();
                msg.encode(&mut row);
                self.on_data_row(row.get(5..).unwrap_or_default())
                    .unwrap_or(Disposition::Drop)
            }
            BackendMessage::CommandComplete { .. }
            | BackendMessage::EmptyQueryResponse
            | BackendMessage::PortalSuspended => {
                self.copy = None;
                match self.expected.front_mut() {
                    Some(Expect::Execute { .. }) => {
                        self.expected.pop_front();
                    }
                    Some(Expect::Query { statement, .. }) => {
                        *statement += 1;
                        self.query_plan = None;
                    }
                    _ => self.query_plan = None,
                }
                Disposition::Pass
            }
            BackendMessage::CopyOutResponse(copy) | BackendMessage::CopyBothResponse(copy) => {
                self.start_copy(copy);
                Disposition::Pass
            }
            BackendMessage::CopyData { data } => self.on_copy_data(data),
            BackendMessage::CopyDone => {
                self.copy = None;
                Disposition::Pass
            }
            BackendMessage::ErrorResponse { fields } => {
                if let Some(action) = self.copy_error(msg, fields) {
                    return action;
                }
                let quoted = self.statement_reads_masked();
                self.on_error();
                self.mask_fields(msg, fields, quoted)
            }
            BackendMessage::NoticeResponse { fields } => {
                let quoted = self.statement_reads_masked();
                self.mask_fields(msg, fields, quoted)
            }
            BackendMessage::NotificationResponse {
                pid,
                channel,
                payload,
            } => {
                let masked = self.policy.masker.mask_text(payload);
                self.detector_counts.merge(&masked.counts);
                match masked.value {
                    Masked::Value(Cow::Borrowed(_)) => Disposition::Pass,
                    value => self.replace(BackendMessage::NotificationResponse {
                        pid: *pid,
                        channel,
                        payload: value.as_bytes().unwrap_or_default(),
                    }),
                }
            }
            BackendMessage::ReadyForQuery { status } => {
                self.query_plan = None;
                self.copy = None;
                // (Portals end with their transaction: the ledger drops them.)
                self.transaction = Transaction::from_status(*status);
                while let Some(entry) = self.expected.pop_front() {
                    if entry.ends_at_ready() {
                        break;
                    }
                }
                Disposition::Pass
            }
            _ => Disposition::Pass,
        }
    }

    /// A FunctionCallResponse: its value is inspected as one of unknown type
    /// in the call's result format; a function defined in the database (not
    /// built in) is opaque, so under column rules its value is masked whole.
    fn on_function_result(
        &mut self,
        msg: &BackendMessage<'_>,
        result: Option<&[u8]>,
    ) -> Disposition {
        let (binary, builtin) = match self.expected.front() {
            Some(Expect::FunctionCall { binary, builtin }) => (*binary, *builtin),
            _ => (true, false),
        };
        let Some(value) = result else {
            return Disposition::Pass;
        };
        let mut plan = ColumnPlan::scanned(values::UNKNOWN_TYPE, binary);
        plan.opaque = !builtin && !self.policy.rules.is_empty();
        if plan.opaque {
            self.opaque_count = self.opaque_count.saturating_add(1);
        }
        let mut counts = ValueCounts::default();
        let masked = values::mask_value(&self.policy, plan, value, &mut counts);
        self.count(&counts);
        if masked.is_unchanged() {
            return Disposition::Pass;
        }
        let _ = msg;
        self.replace(BackendMessage::FunctionCallResponse {
            result: masked.as_bytes(),
        })
    }

    /// A server message answering `request`, one of the masker's own.
    pub(crate) fn on_own_answer(
        &mut self,
        request: &mut OwnRequest,
        msg: &BackendMessage<'_>,
    ) -> OwnAnswer {
        if matches!(
            msg,
            BackendMessage::ParameterStatus { .. } | BackendMessage::NotificationResponse { .. }
        ) {
            return OwnAnswer::Client;
        }
        match request {
            OwnRequest::Catalog => self.on_lookup_answer(msg),
            OwnRequest::CopyDescribe {
                fields,
                in_block,
                error,
            } => self.on_copy_describe_answer(fields, *in_block, error, msg),
        }
    }

    /// The answers to the catalog lookup.
    fn on_lookup_answer(&mut self, msg: &BackendMessage<'_>) -> OwnAnswer {
        match msg {
            BackendMessage::DataRow { values } => {
                if let Some(resolved) = catalog::parse_row(values)
                    && resolved.rule < self.policy.rules.len()
                {
                    self.resolved
                        .entry((resolved.oid, resolved.attnum))
                        .or_insert(resolved.rule);
                    self.add_catalog_source(&resolved);
                }
            }
            BackendMessage::ErrorResponse { .. } => self.lookup = Lookup::Failed,
            BackendMessage::ReadyForQuery { .. } => {
                if self.lookup == Lookup::Sent {
                    self.lookup = Lookup::Done;
                }
                return OwnAnswer::Answered;
            }
            _ => {}
        }
        OwnAnswer::Consumed
    }

    /// The server skips the rest of an extended-query batch after an error,
    /// up to Sync (a Query or FunctionCall in it gets no answer at all).
    fn on_error(&mut self) {
        self.query_plan = None;
        self.copy = None;
        match self.expected.front() {
            Some(Expect::Query { .. } | Expect::FunctionCall { .. } | Expect::Sync) | None => {}
            Some(_) => {
                while self
                    .expected
                    .front()
                    .is_some_and(|e| !matches!(e, Expect::Sync))
                {
                    self.expected.pop_front();
                }
            }
        }
    }

    fn plan(&self, fields: &[Field], formats: Option<&[i16]>, taints: &[Taint]) -> RowPlan {
        values::plan_for(
            &self.policy,
            &self.resolved,
            // Until the lookup has answered, table rules match by column name.
            self.lookup != Lookup::Done,
            fields,
            formats,
            taints,
        )
    }

    /// The plan for the DataRow being received.
    fn current_plan(&mut self) -> Option<Rc<RowPlan>> {
        let forgot = self.forgot;
        if let Some(Expect::Execute {
            portal,
            plan,
            noted,
            ..
        }) = self.expected.front_mut()
            && noted.pending != forgot.pending
        {
            // Built from what masking forgot since: built again without it.
            (*portal, *plan, *noted) = (None, None, forgot);
        }
        if let Some(Expect::Execute {
            portal, slot, plan, ..
        }) = self.expected.front()
        {
            if let Some(plan) = plan {
                return Some(Rc::clone(plan));
            }
            // The portal's own description carries its result formats.
            let fields = slot.get().cloned()?;
            let lineage = portal.as_ref().and_then(|p| p.lineage.clone());
            let taints = self.column_taints(lineage.as_deref(), 0, fields.len());
            let built = Rc::new(self.plan(&fields, None, &taints));
            if let Some(Expect::Execute { plan, .. }) = self.expected.front_mut() {
                *plan = Some(Rc::clone(&built));
            }
            return Some(built);
        }
        self.query_plan.clone()
    }

    /// A DataRow, read in place from its body: each value is masked by its
    /// column's plan and, from the first value that changes, the row is
    /// rewritten into the masker's spare buffer (the values before it are
    /// copied as they came). Errors are the row's decoding errors.
    pub fn on_data_row(&mut self, body: &[u8]) -> Result<Disposition, DecodeError> {
        if let Some(action) = self.guard_row(body.len()) {
            return Ok(action);
        }
        let plan = self.current_plan();
        let known = plan.is_some();
        let plan = plan.as_deref().map(Vec::as_slice).unwrap_or_default();
        let rewrite = !self.is_exempt();
        let mut out: Option<Vec<u8>> = None;
        let mut row = DataRowValues::new(body)?;
        // Detector counts add up over the row and are counted once at its end.
        let mut counts = ValueCounts::default();
        for (i, next) in row.by_ref().enumerate() {
            let (offset, value) = next?;
            let masked = match value {
                None => Masked::Null,
                Some(value) => {
                    let column = plan
                        .get(i)
                        .copied()
                        .unwrap_or_else(|| self.unknown_column(known));
                    if column.opaque {
                        self.opaque_count = self.opaque_count.saturating_add(1);
                    }
                    if rewrite && column.masks_whole() {
                        // A rule always changes its value: written straight
                        // into the row.
                        let out = match out.as_mut() {
                            Some(out) => out,
                            None => out.insert(self.start_row(body, offset)),
                        };
                        values::push_rule_value(&self.policy, column, value, &mut counts, out);
                        if let Some(rule) = counts.rule.take() {
                            self.count_rule(rule);
                        }
                        continue;
                    }
                    let masked = values::mask_value(&self.policy, column, value, &mut counts);
                    if let Some(rule) = counts.rule.take() {
                        self.count_rule(rule);
                    }
                    masked
                }
            };
            let changed = value.is_some() && !masked.is_unchanged();
            if changed && rewrite && out.is_none() {
                out = Some(self.start_row(body, offset));
            }
            if let Some(out) = out.as_mut() {
                push_value(out, masked.as_bytes());
            }
        }
        row.finish()?;
        self.count(&counts);
        Ok(match out {
            Some(mut bytes) => {
                let len = u32::try_from(bytes.len() - 1).unwrap_or(u32::MAX);
                if let Some(field) = bytes.get_mut(1..5) {
                    field.copy_from_slice(&len.to_be_bytes());
                }
                Disposition::Replace(bytes)
            }
            None => Disposition::Pass,
        })
    }

    /// A rewritten DataRow begun in the spare buffer: tag, length to fill in,
    /// then the body's bytes before `offset` as they came.
    fn start_row(&mut self, body: &[u8], offset: usize) -> Vec<u8> {
        let mut row = std::mem::take(&mut self.spare_row);
        row.clear();
        row.reserve(body.len() + 69);
        row.push(crate::protocol::DATA_ROW_TAG);
        row.extend_from_slice(&[0; 4]);
        row.extend_from_slice(body.get(..offset).unwrap_or_default());
        row
    }

    /// Takes back a buffer the caller is done with, as the next rewritten
    /// row's: one allocation per session instead of one per masked row.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        if buffer.capacity() <= MAX_SPARE_ROW && buffer.capacity() > self.spare_row.capacity() {
            self.spare_row = buffer;
        }
    }

    /// A column no description covers (a result never described, or a
    /// column past its description): with column rules, masked whole; else
    /// scanned whatever it holds.
    fn unknown_column(&self, described: bool) -> ColumnPlan {
        let _ = described;
        values::unknown_column(!self.policy.rules.is_empty())
    }

    /// Whether the statement being answered reads masked columns (or may:
    /// its lineage is unknown), so that its errors may quote their values.
    fn statement_reads_masked(&self) -> bool {
        if self.sources.is_empty() {
            return false;
        }
        let reads = |lineage: Option<&Rc<TextLineage>>, index: usize| {
            lineage.is_none_or(|l| l.reads_masked(index))
        };
        match self.expected.front() {
            Some(Expect::Query {
                lineage, statement, ..
            }) => reads(lineage.as_ref(), *statement),
            Some(
                expect @ (Expect::Parse { .. } | Expect::Bind { .. } | Expect::Execute { .. }),
            ) => reads(expect.known_lineage(self.forgot), 0),
            Some(Expect::Describe(_) | Expect::OwnDescribe(_) | Expect::FunctionCall { .. }) => {
                true
            }
            _ => false,
        }
    }

    /// ErrorResponse / NoticeResponse: the fields that can quote values. When
    /// the statement reads masked columns (`quoted`), the values its messages
    /// quote (`"…"`, a failing row) are masked whole too: a value glued to
    /// other text (`(ssn || 'x')::numeric`) is no longer what a detector knows.
    fn mask_fields(
        &mut self,
        msg: &BackendMessage<'_>,
        fields: &[(u8, &[u8])],
        quoted: bool,
    ) -> Disposition {
        let mut changed = false;
        let mut out: Vec<(u8, Cow<'_, [u8]>)> = Vec::with_capacity(fields.len());
        for &(code, value) in fields {
            let key_detail = match code {
                b'D' => self.mask_key_detail(fields, value),
                _ => None,
            };
            let masked = key_detail.or_else(|| {
                if !matches!(code, b'M' | b'D' | b'H' | b'W' | b'q') {
                    return None;
                }
                let unquoted = quoted
                    .then(|| mask_quoted(value, self.policy.masker.redact_token()))
                    .flatten();
                if unquoted.is_some() {
                    self.opaque_count = self.opaque_count.saturating_add(1);
                }
                let text = unquoted.as_deref().unwrap_or(value);
                let m = self.policy.masker.mask_text(text);
                self.detector_counts.merge(&m.counts);
                match m.value {
                    Masked::Value(Cow::Borrowed(_)) => unquoted,
                    Masked::Value(Cow::Owned(v)) => Some(v),
                    Masked::Null => Some(self.policy.masker.redact_token().to_vec()),
                }
            });
            match masked {
                Some(v) => {
                    changed = true;
                    out.push((code, Cow::Owned(v)));
                }
                None => out.push((code, Cow::Borrowed(value))),
            }
        }
        if !changed || self.is_exempt() {
            return Disposition::Pass;
        }
        let fields: Vec<(u8, &[u8])> = out.iter().map(|(c, v)| (*c, v.as_ref())).collect();
        let rebuilt = match msg {
            BackendMessage::ErrorResponse { .. } => BackendMessage::ErrorResponse { fields },
            _ => BackendMessage::NoticeResponse { fields },
        };
        self.replace(rebuilt)
    }

    /// A detail `Key (a, b)=(x, y) …` (unique and foreign key violations)
    /// whose table and one of whose columns are under a rule: the values part
    /// is masked whole with that rule's style.
    fn mask_key_detail(&mut self, fields: &[(u8, &[u8])], detail: &[u8]) -> Option<Vec<u8>> {
        let field = |code| {
            fields
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let schema = field(b's').unwrap_or_else(|| "public".into());
        let table = field(b't')?;
        let rest = detail.strip_prefix(b"Key (")?;
        let split = rest.windows(3).position(|w| w == b")=(")?;
        let columns = String::from_utf8_lossy(rest.get(..split)?).into_owned();
        let values_start = 5 + split + 3;
        // The values end at the last `)` of the detail.
        let values_end = detail.iter().rposition(|&b| b == b')')?;
        if values_end < values_start {
            return None;
        }
        let rule = columns.split(", ").find_map(|column| {
            let column = column.trim_matches('"');
            self.policy
                .column_rules()
                .find(|(_, s, t, c)| *s == schema && *t == table && *c == column)
                .map(|(i, ..)| i)
                .or_else(|| self.policy.rule_for_field_name(column.as_bytes()))
        })?;
        let style = self.policy.rules.get(rule)?.style;
        let value = detail.get(values_start..values_end)?;
        let masked = self.policy.masker.mask_value(
            style,
            value,
            gatehouse_core::mask::ValueType::Text,
            self.policy.rules.get(rule).and_then(|r| r.kind),
        );
        self.count(&ValueCounts {
            rule: Some(rule),
            detectors: DetectorCounts::default(),
        });
        let masked = match masked {
            // A NULL does not fit in a message: the redact token does.
            Masked::Null => self.policy.masker.mask_value(
                gatehouse_core::mask::MaskStyle::Redact,
                value,
                gatehouse_core::mask::ValueType::Text,
                None,
            ),
            other => other,
        };
        let mut out = detail.get(..values_start)?.to_vec();
        out.extend_from_slice(masked.as_bytes().unwrap_or_default());
        out.extend_from_slice(detail.get(values_end..)?);
        Some(out)
    }

    fn replace(&self, msg: BackendMessage<'_>) -> Disposition {
        if self.is_exempt() {
            return Disposition::Pass;
        }
        let mut bytes = Vec::new();
        msg.encode(&mut bytes);
        Disposition::Replace(bytes)
    }

    fn count(&mut self, counts: &ValueCounts) {
        if let Some(rule) = counts.rule {
            self.count_rule(rule);
        }
        self.detector_counts.merge(&counts.detectors);
        self.over_cap = self
            .over_cap
            .saturating_add(u64::from(counts.detectors.over_cap));
    }

    fn count_rule(&mut self, rule: usize) {
        if let Some(n) = self.rule_counts.get_mut(rule) {
            *n = n.saturating_add(1);
        }
    }

    /// Counts from a streamed message.
    pub(crate) fn add_counts(&mut self, rules: &[u64], detectors: &DetectorCounts) {
        for (mine, theirs) in self.rule_counts.iter_mut().zip(rules) {
            *mine = mine.saturating_add(*theirs);
        }
        self.detector_counts.merge(detectors);
        self.over_cap = self.over_cap.saturating_add(u64::from(detectors.over_cap));
    }

    /// A streamed server message's in-place rewrite; `None` when it carries no
    /// data to mask.
    pub fn begin_stream(&mut self, tag: u8, body_len: usize) -> Option<StreamRewrite> {
        let policy = Arc::clone(&self.policy);
        let rewrite = match tag {
            crate::protocol::DATA_ROW_TAG => {
                let past_limit = self.guard_streamed_row(body_len);
                let plan: RowPlan = self
                    .current_plan()
                    .map(|p| p.as_ref().clone())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|column| ColumnPlan {
                        opaque: column.opaque || past_limit,
                        ..column
                    })
                    .collect();
                // Columns past the plan (or all, without one) are read as unknown.
                let unknown = vec![self.unknown_column(false); plan.len() + 1];
                StreamRewrite::data_row(policy, plan, unknown, body_len)
            }
            crate::protocol::COPY_DATA_TAG => {
                let under_rules = self.copy.as_mut().is_some_and(|rows| {
                    rows.streamed();
                    rows.under_rules()
                }) || (self.copy.is_none() && !self.policy.rules.is_empty());
                StreamRewrite::copy_data(policy, under_rules, body_len)
            }
            crate::protocol::ERROR_RESPONSE_TAG => {
                StreamRewrite::fields(policy, body_len).with_error(true)
            }
            crate::protocol::NOTICE_RESPONSE_TAG => StreamRewrite::fields(policy, body_len),
            crate::protocol::NOTIFICATION_RESPONSE_TAG => {
                StreamRewrite::notification(policy, body_len)
            }
            _ => return None,
        };
        Some(rewrite.with_exempt(self.is_exempt()))
    }

    /// Ends a streamed message's rewrite, adding its counts.
    pub fn end_stream(&mut self, rewrite: StreamRewrite) {
        let (rules, detectors) = rewrite.counts();
        self.add_counts(rules, detectors);
        if rewrite.is_error() {
            self.on_error();
        }
    }

    /// What was masked since the last call, for the statement record; `None`
    /// when nothing was (or would have been).
    pub fn take_counts(&mut self) -> Option<MaskingCounts> {
        let mut counts = MaskingCounts {
            exempt: self.is_exempt(),
            over_cap: std::mem::take(&mut self.over_cap),
            opaque: std::mem::take(&mut self.opaque_count),
            limited: self.guard.limited.take(),
            ..MaskingCounts::default()
        };
        for (rule, n) in self.policy.rules.iter().zip(self.rule_counts.iter_mut()) {
            let n = std::mem::take(n);
            if n > 0 {
                *counts.rules.entry(rule.name.clone()).or_default() += n;
            }
        }
        let detectors = std::mem::take(&mut self.detector_counts);
        for (kind, n) in detectors.iter() {
            counts
                .detectors
                .insert(kind.as_str().to_string(), u64::from(n));
        }
        (!counts.is_empty()).then_some(counts)
    }
}

/// `text` with the content of every `"…"` it quotes, and the row of a
/// `Failing row contains (…)`, replaced by `token`; `None` when it quotes
/// nothing.
pub(super) fn mask_quoted(text: &[u8], token: &[u8]) -> Option<Vec<u8>> {
    const FAILING_ROW: &[u8] = b"Failing row contains (";
    let mut out = Vec::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'"' {
            match tail.iter().position(|&c| c == b'"') {
                Some(end) => {
                    out.push(b'"');
                    out.extend_from_slice(token);
                    out.push(b'"');
                    changed = true;
                    rest = tail.get(end + 1..).unwrap_or_default();
                }
                None => {
                    // An unclosed quote: the rest is its content.
                    out.push(b'"');
                    out.extend_from_slice(token);
                    return Some(out);
                }
            }
            continue;
        }
        if rest.starts_with(FAILING_ROW) {
            out.extend_from_slice(FAILING_ROW);
            out.extend_from_slice(token);
            out.push(b')');
            changed = true;
            // The row ends at the last `)`.
            let after = rest.get(FAILING_ROW.len()..).unwrap_or_default();
            rest = match after.iter().rposition(|&c| c == b')') {
                Some(end) => after.get(end + 1..).unwrap_or_default(),
                None => &[],
            };
            continue;
        }
        out.push(b);
        rest = tail;
    }
    changed.then_some(out)
}

/// One DataRow value: its length (-1 for NULL), then its bytes.
fn push_value(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(bytes) => {
            let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}
