//! Where each output column of a statement comes from, as far as masking cares:
//! which masked columns (by rule) flow into it, through any expression, cast,
//! whole-row or record value, array, aggregate, subquery, CTE or derived table;
//! and whether tainted values would leave through a sink other than the result
//! (a write to another table, a function with side effects such as `pg_notify`
//! or `set_config`, code the filter cannot read).
//!
//! The analysis is deliberately name-based and scope-insensitive, so that it can
//! only over-approximate:
//! - every column name that any projection, CTE or derived table defines gets
//!   the union of what flows into it, anywhere in the statement (a name reused
//!   in two scopes carries both taints);
//! - a masked column is in play when its table (or a view the catalog lookup
//!   found to depend on it) is named anywhere in the statement; any reference
//!   to a column of that name is then tainted;
//! - a bare name that is a relation's alias or name is a whole-row reference and
//!   carries every taint of that relation; so do `t.*` and `*` inside an
//!   expression (`row(c.*)`, `to_json(c)`);
//! - a call of a function the filter does not know to be a pure built-in is
//!   *opaque*: its body may read any table, so its result is masked whole (or
//!   the statement refused, as configured), and a masked value passed to it is
//!   a sink (its side effects cannot be followed).
//!
//! The server tells the rest: a result column that is a plain reference to a
//! table or view column carries that column's table OID and attribute number in
//! RowDescription, and is masked by its rule exactly; only computed columns
//! (table OID 0) take their taint from here.

use super::lexer::{self, Lexed, Token};
use super::{ast, canonical};
use gatehouse_core::policy::Wildcard;
use sqlparser::ast::{
    AssignmentTarget, CopySource, CopyTarget, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, JoinConstraint, JoinOperator, MergeAction, MergeUpdateKind,
    ObjectName, OnConflictAction, OnInsert, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor, TableObject, TableWithJoins,
    Visit, Visitor,
};
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

/// Most rules a taint can name (the masking configuration allows as many).
pub const MAX_TAINT_RULES: usize = 256;
/// Rounds of name resolution before the analysis gives up (and the statement
/// is treated as unreadable). Each round adds taint, so a few suffice.
const MAX_ROUNDS: usize = 24;
/// Parser recursion limit, as the policy's.
const MAX_DEPTH: usize = 50;
/// Texts longer than this are not analyzed: unreadable.
pub const MAX_SQL_LEN: usize = 256 * 1024;
/// Statements analyzed per text; past this the text is unreadable.
const MAX_STATEMENTS: usize = 64;

/// Which masking rules flow into a value, and whether something the filter
/// cannot follow does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taint {
    rules: [u64; MAX_TAINT_RULES / 64],
    /// An opaque function or statement produced (part of) it.
    pub opaque: bool,
}

impl Taint {
    /// A taint of one rule.
    pub fn rule(rule: usize) -> Self {
        let mut t = Self::default();
        t.add_rule(rule);
        t
    }

    /// The opaque taint.
    pub fn opaque() -> Self {
        Self {
            opaque: true,
            ..Self::default()
        }
    }

    fn add_rule(&mut self, rule: usize) {
        if let Some(word) = self.rules.get_mut(rule / 64) {
            *word |= 1 << (rule % 64);
        }
    }

    /// Adds `other`; whether that changed anything.
    pub fn union(&mut self, other: &Taint) -> bool {
        let before = *self;
        for (mine, theirs) in self.rules.iter_mut().zip(other.rules) {
            *mine |= theirs;
        }
        self.opaque |= other.opaque;
        before != *self
    }

    /// Whether any rule flows in.
    pub fn has_rules(&self) -> bool {
        self.rules.iter().any(|w| *w != 0)
    }

    /// Whether nothing masked, and nothing opaque, flows in.
    pub fn is_clean(&self) -> bool {
        !self.has_rules() && !self.opaque
    }

    /// The rules, lowest first.
    pub fn rules(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_TAINT_RULES).filter(|r| self.has_rule(*r))
    }

    /// Whether `rule` flows in.
    pub fn has_rule(&self, rule: usize) -> bool {
        self.rules
            .get(rule / 64)
            .is_some_and(|w| w & (1 << (rule % 64)) != 0)
    }

    /// Whether every rule of `self` is one of `other`'s.
    fn rules_within(&self, other: &Taint) -> bool {
        self.rules
            .iter()
            .zip(other.rules)
            .all(|(mine, theirs)| mine & !theirs == 0)
    }
}

/// A masked column lineage follows, by name: a configured table rule, or a
/// view column the catalog lookup found to depend on one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceColumn {
    pub table: String,
    pub column: String,
    pub rule: usize,
}

/// What is masked, by name.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub columns: Vec<SourceColumn>,
    /// Result field name patterns (`column_pattern` rules): any column so named.
    pub patterns: Vec<(Wildcard, usize)>,
}

impl Sources {
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty() && self.patterns.is_empty()
    }

    /// Every rule on columns of `table`.
    fn table_taint(&self, table: &str) -> Taint {
        let mut t = Taint::default();
        for c in &self.columns {
            if c.table.eq_ignore_ascii_case(table) {
                t.add_rule(c.rule);
            }
        }
        t
    }

    /// Whether `name` is a masked table or column (for texts sqlparser cannot parse).
    fn names(&self, name: &str) -> bool {
        self.columns
            .iter()
            .any(|c| c.table.eq_ignore_ascii_case(name) || c.column.eq_ignore_ascii_case(name))
            || self.patterns.iter().any(|(p, _)| p.matches(name))
    }
}

/// One output item of a statement's result, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// One column.
    Column(Taint),
    /// `*` or `t.*` over a relation whose columns are known: one per column.
    Expand(Vec<Taint>),
    /// `*` or `t.*` over a relation of unknown width (a table): each column
    /// it yields carries this taint (table columns themselves are resolved
    /// exactly from RowDescription).
    ExpandUnknown(Taint),
}

/// What a statement's result columns are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outputs {
    /// Its items, in order.
    Items(Vec<Output>),
    /// Computed columns carry nothing masked (EXPLAIN, SHOW, statements
    /// without a result).
    Clean,
    /// Cannot be followed (EXECUTE, FETCH, CALL, an unparseable text): every
    /// computed column is opaque.
    Opaque,
}

/// Why a statement must be refused: tainted values would leave through a sink.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Masked values written where they are not masked (another table or
    /// column, a new relation, a server file).
    #[error("masked values would be written to {0}, where they are not masked")]
    Write(String),
    /// Masked values passed to a function whose effects the filter cannot
    /// follow (`pg_notify`, `set_config`, any non-built-in function).
    #[error("masked values would be passed to {0}(), whose effects cannot be followed")]
    Call(String),
    /// Code the filter cannot read (DO blocks, function and trigger bodies).
    #[error("{0} can read masked columns in ways that cannot be followed")]
    Code(&'static str),
    /// A statement the filter cannot parse that names masked tables or columns.
    #[error("the statement names masked data and could not be analyzed")]
    Unreadable,
}

/// The lineage of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLineage {
    pub outputs: Outputs,
    /// Set when tainted values would leave through a sink.
    pub refusal: Option<Refusal>,
    /// A computed value (not a plain column reference) carries a masked column.
    pub derived: bool,
    /// A result column comes from something opaque.
    pub opaque: bool,
    /// The statement can create or drop portals (DECLARE, CLOSE) or prepared
    /// statements (PREPARE, DEALLOCATE, DISCARD) by name behind the protocol's back.
    pub redefines_names: bool,
    /// The statement reads masked columns (its errors may quote their values).
    pub reads_masked: bool,
}

impl StatementLineage {
    fn unreadable(sources: &Sources, mentions: bool) -> Self {
        Self {
            outputs: Outputs::Opaque,
            refusal: (mentions && !sources.is_empty()).then_some(Refusal::Unreadable),
            derived: false,
            opaque: true,
            redefines_names: true,
            reads_masked: mentions,
        }
    }
}

/// Whether a text names a masked table, view or column anywhere outside its
/// string constants (for records: literals of such a statement may be
/// values of masked columns). Names are read as the server resolves them.
pub fn mentions(sql: &str, lexed: &Lexed, sources: &Sources) -> bool {
    tokens_mention(sql, &lexed.tokens, sources)
}

fn tokens_mention(sql: &str, tokens: &[Token], sources: &Sources) -> bool {
    tokens
        .iter()
        .filter_map(|t| lexer::ident_value(sql, t))
        .any(|name| sources.names(&name))
}

/// The lineage of every statement of a text, as a server with default
/// settings splits and reads it.
pub fn analyze(sql: &str, sources: &Sources) -> Vec<StatementLineage> {
    if sql.len() > MAX_SQL_LEN {
        return vec![StatementLineage::unreadable(sources, true)];
    }
    analyze_lexed(sql, &lexer::tokenize(sql), sources)
}

/// [`analyze`] for a text already tokenized under the session's settings.
/// Each statement is read from its tokens as the policy's analysis reads it:
/// written out canonically for sqlparser (see [`super::canonical`]), never
/// from the client's text.
pub fn analyze_lexed(sql: &str, lexed: &Lexed, sources: &Sources) -> Vec<StatementLineage> {
    if sql.len() > MAX_SQL_LEN || lexed.error.is_some() {
        // The server refuses the whole text; it is not guessed at either.
        return vec![StatementLineage::unreadable(sources, true)];
    }
    let mut out = Vec::new();
    for tokens in lexed.statement_tokens() {
        if out.len() >= MAX_STATEMENTS {
            return vec![StatementLineage::unreadable(sources, true)];
        }
        let Some(first) = tokens.first() else {
            continue;
        };
        let leading = |word: &str| lexer::is_word(sql, first, word);
        let mentions = tokens_mention(sql, tokens, sources);
        let mut lineage = if leading("do") {
            // An anonymous code block: its body is a string the server runs.
            StatementLineage {
                refusal: (!sources.is_empty()).then_some(Refusal::Code("a DO block")),
                ..StatementLineage::unreadable(sources, true)
            }
        } else {
            analyze_statement(sql, tokens, sources)
                .unwrap_or_else(|| StatementLineage::unreadable(sources, mentions))
        };
        if ["prepare", "deallocate", "discard", "declare", "close"]
            .iter()
            .any(|w| leading(w))
        {
            lineage.redefines_names = true;
        }
        out.push(lineage);
    }
    out
}

/// One statement, parsed from its canonical text; `None` when sqlparser cannot
/// parse it (or an expression the canonical text leaves out) as exactly one
/// statement.
fn analyze_statement(sql: &str, tokens: &[Token], sources: &Sources) -> Option<StatementLineage> {
    let canonical = canonical::canonical(sql, tokens);
    let statements = ast::parse(&canonical.text, MAX_DEPTH)?;
    let [statement] = statements.as_slice() else {
        return None;
    };
    // What the canonical text leaves out (assignment subscripts, ON CONFLICT
    // inference, COPY's WHERE), each read as `SELECT <expression>`.
    let mut extracted = Vec::with_capacity(canonical.extracted.len());
    for expression in &canonical.extracted {
        let probe = ast::parse(&format!("SELECT {expression}"), MAX_DEPTH)?;
        let [Statement::Query(query)] = probe.as_slice() else {
            return None;
        };
        extracted.push(query.clone());
    }
    let mut gather = Gather::default();
    let _ = statement.visit(&mut gather);
    for query in &extracted {
        let _ = query.visit(&mut gather);
    }
    // Every name of the statement may name a relation (`FROM ONLY t`, syntax
    // sqlparser reads otherwise): a masked column is in play whenever its
    // table's name appears at all.
    gather
        .tables
        .extend(tokens.iter().filter_map(|t| lexer::ident_value(sql, t)));
    let Some(names) = Names::resolve(&gather, sources) else {
        return Some(StatementLineage::unreadable(sources, true));
    };
    let outputs = names.outputs(statement);
    // A masked value in a left-out expression decides where a write lands or
    // which rows a statement touches, in ways lineage does not follow.
    let refusal = names.refusal(statement, &gather).or_else(|| {
        extracted
            .iter()
            .any(|query| names.query_taints(query).iter().any(Taint::has_rules))
            .then_some(Refusal::Unreadable)
    });
    let derived = gather.items.iter().any(|item| {
        let taint = names.item_taint(item);
        match item.plain.as_deref() {
            // A plain reference to a column is masked by its rule exactly; a
            // bare name that is a relation is a whole row.
            Some([single]) => names.relations.get(single).is_some_and(Taint::has_rules),
            Some(_) => false,
            None => taint.has_rules(),
        }
    });
    let opaque = match &outputs {
        Outputs::Items(items) => items.iter().any(|o| match o {
            Output::Column(t) | Output::ExpandUnknown(t) => t.opaque,
            Output::Expand(ts) => ts.iter().any(|t| t.opaque),
        }),
        Outputs::Clean => false,
        Outputs::Opaque => true,
    };
    let code = match statement {
        Statement::CreateFunction(_) => Some("a function body"),
        Statement::CreateProcedure { .. } => Some("a procedure body"),
        Statement::CreateTrigger(_) => Some("a trigger"),
        _ => None,
    };
    let refusal = match code {
        Some(what) if !sources.is_empty() => Some(Refusal::Code(what)),
        _ => refusal,
    };
    let reads_masked = names.columns.values().any(Taint::has_rules)
        || names.relations.values().any(Taint::has_rules);
    Some(StatementLineage {
        outputs,
        refusal,
        derived,
        opaque,
        redefines_names: false,
        reads_masked,
    })
}

/// The taint each of `n` result columns carries, from a statement's outputs.
/// Items before the first `*` of unknown width are matched from the start,
/// items after the last from the end; columns in between carry the union of
/// everything that may land there. When the shapes cannot match, every column
/// carries the union of all.
pub fn column_taints(outputs: &Outputs, n: usize) -> Vec<Taint> {
    let items = match outputs {
        Outputs::Items(items) => items,
        Outputs::Clean => return vec![Taint::default(); n],
        Outputs::Opaque => return vec![Taint::opaque(); n],
    };
    let width = |o: &Output| match o {
        Output::Column(_) => Some(1),
        Output::Expand(ts) => Some(ts.len()),
        Output::ExpandUnknown(_) => None,
    };
    let push_known = |o: &Output, out: &mut Vec<Taint>| match o {
        Output::Column(t) => out.push(*t),
        Output::Expand(ts) => out.extend_from_slice(ts),
        Output::ExpandUnknown(_) => {}
    };
    let union_all = || {
        let mut all = Taint::default();
        for o in items {
            match o {
                Output::Column(t) | Output::ExpandUnknown(t) => {
                    all.union(t);
                }
                Output::Expand(ts) => ts.iter().for_each(|t| {
                    all.union(t);
                }),
            }
        }
        vec![all; n]
    };
    let first_unknown = items.iter().position(|o| width(o).is_none());
    let Some(first_unknown) = first_unknown else {
        let mut out = Vec::with_capacity(n);
        items.iter().for_each(|o| push_known(o, &mut out));
        return if out.len() == n { out } else { union_all() };
    };
    let last_unknown = items
        .iter()
        .rposition(|o| width(o).is_none())
        .unwrap_or(first_unknown);
    let mut head = Vec::new();
    items
        .iter()
        .take(first_unknown)
        .for_each(|o| push_known(o, &mut head));
    let mut tail = Vec::new();
    items
        .iter()
        .skip(last_unknown + 1)
        .for_each(|o| push_known(o, &mut tail));
    if head.len() + tail.len() > n {
        return union_all();
    }
    let mut middle = Taint::default();
    for o in items.iter().take(last_unknown + 1).skip(first_unknown) {
        match o {
            Output::Column(t) | Output::ExpandUnknown(t) => {
                middle.union(t);
            }
            Output::Expand(ts) => ts.iter().for_each(|t| {
                middle.union(t);
            }),
        }
    }
    let mut out = head;
    out.resize(n - tail.len(), middle);
    out.extend(tail);
    out
}

// ---- gathering ------------------------------------------------------------

/// Names an expression refers to, collected wherever they appear in it
/// (subqueries included).
#[derive(Debug, Clone, Default)]
struct Refs {
    /// Identifier chains, normalized (`c.ssn` → ["c", "ssn"]).
    idents: Vec<Vec<String>>,
    /// `t.*` (Some) and bare `*` (None) inside expressions and subqueries.
    wildcards: Vec<Option<String>>,
    /// Calls an opaque function.
    opaque: bool,
}

/// One projection item.
#[derive(Debug, Clone)]
struct Item {
    /// The column name the server gives it.
    name: Option<String>,
    refs: Refs,
    /// A plain column reference: its identifier chain.
    plain: Option<Vec<String>>,
    /// `*` (Some(None)) or `t.*` (Some(Some(t))).
    wildcard: Option<Option<String>>,
}

#[derive(Debug, Clone)]
enum RelKind {
    /// A table, view or CTE reference by name.
    Named(String),
    /// A derived table or CTE body: its items, and whether they have a known width.
    Derived(Vec<Item>),
    /// A table function or anything else computed.
    Computed(Refs),
}

#[derive(Debug, Clone)]
struct Rel {
    alias: String,
    kind: RelKind,
    /// Column aliases (`AS t(a, b)`).
    columns: Vec<String>,
}

#[derive(Default)]
struct Gather {
    rels: Vec<Rel>,
    items: Vec<Item>,
    /// Relation names referenced anywhere.
    tables: HashSet<String>,
    /// Every function call: its name, whether schema-qualified outside
    /// pg_catalog, and its arguments' references.
    calls: Vec<(String, bool, Refs)>,
}

impl Visitor for Gather {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.rels.push(Rel {
                    alias: ident_name(&cte.alias.name),
                    kind: RelKind::Derived(body_items(&cte.query.body)),
                    columns: cte
                        .alias
                        .columns
                        .iter()
                        .map(|c| ident_name(&c.name))
                        .collect(),
                });
            }
        }
        self.items.extend(all_selects_items(&query.body));
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.tables.insert(last_name(relation));
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let Some(rel) = rel_of(factor) {
            self.rels.push(rel);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            let mut refs = Refs::default();
            if let FunctionArguments::List(list) = &f.args {
                for arg in &list.args {
                    arg_refs(arg, &mut refs);
                }
            }
            if let FunctionArguments::Subquery(q) = &f.args {
                collect_query(q, &mut refs);
            }
            self.calls
                .push((last_name(&f.name), foreign_schema(&f.name), refs));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        // RETURNING lists are projections too.
        let returning = match statement {
            Statement::Insert(i) => i.returning.as_ref(),
            Statement::Update(u) => u.returning.as_ref(),
            Statement::Delete(d) => d.returning.as_ref(),
            _ => None,
        };
        if let Some(items) = returning {
            self.items.extend(items.iter().map(item_of));
        }
        if let Statement::Insert(insert) = statement
            && let TableObject::TableName(name) = &insert.table
        {
            let table = last_name(name);
            self.tables.insert(table.clone());
            let alias = insert
                .table_alias
                .as_ref()
                .map(|a| ident_name(&a.alias))
                .unwrap_or_else(|| table.clone());
            self.rels.push(Rel {
                alias,
                kind: RelKind::Named(table),
                columns: Vec::new(),
            });
        }
        ControlFlow::Continue(())
    }
}

/// The relation a FROM item introduces.
fn rel_of(factor: &TableFactor) -> Option<Rel> {
    let columns = |alias: &Option<sqlparser::ast::TableAlias>| {
        alias
            .as_ref()
            .map(|a| a.columns.iter().map(|c| ident_name(&c.name)).collect())
            .unwrap_or_default()
    };
    let alias_or = |alias: &Option<sqlparser::ast::TableAlias>, default: String| {
        alias
            .as_ref()
            .map(|a| ident_name(&a.name))
            .unwrap_or(default)
    };
    Some(match factor {
        TableFactor::Table {
            name, alias, args, ..
        } => {
            let table = last_name(name);
            let kind = match args {
                Some(args) => {
                    let mut refs = Refs::default();
                    args.args.iter().for_each(|a| arg_refs(a, &mut refs));
                    refs.opaque |= !is_pure_builtin(&table) || foreign_schema(name);
                    RelKind::Computed(refs)
                }
                None => RelKind::Named(table.clone()),
            };
            Rel {
                alias: alias_or(alias, table),
                kind,
                columns: columns(alias),
            }
        }
        TableFactor::Derived {
            subquery, alias, ..
        } => Rel {
            alias: alias_or(alias, String::new()),
            kind: RelKind::Derived(body_items(&subquery.body)),
            columns: columns(alias),
        },
        TableFactor::Function {
            name, args, alias, ..
        } => {
            let mut refs = Refs::default();
            args.iter().for_each(|a| arg_refs(a, &mut refs));
            let function = last_name(name);
            refs.opaque |= !is_pure_builtin(&function) || foreign_schema(name);
            Rel {
                alias: alias_or(alias, function),
                kind: RelKind::Computed(refs),
                columns: columns(alias),
            }
        }
        TableFactor::TableFunction { expr, alias } => Rel {
            alias: alias_or(alias, String::new()),
            kind: RelKind::Computed(expr_refs(expr)),
            columns: columns(alias),
        },
        TableFactor::UNNEST {
            alias, array_exprs, ..
        } => {
            let mut refs = Refs::default();
            array_exprs
                .iter()
                .for_each(|e| merge_refs(&mut refs, expr_refs(e)));
            Rel {
                alias: alias_or(alias, "unnest".into()),
                kind: RelKind::Computed(refs),
                columns: columns(alias),
            }
        }
        TableFactor::NestedJoin {
            table_with_joins,
            alias,
        } => {
            // `(a JOIN b) AS x`: x is everything inside.
            let mut refs = Refs::default();
            for rel in joined_rels(table_with_joins) {
                refs.idents.push(vec![rel.alias]);
            }
            Rel {
                alias: alias_or(alias, String::new()),
                kind: RelKind::Computed(refs),
                columns: columns(alias),
            }
        }
        other => {
            // Anything else computed from expressions (JSON_TABLE, PIVOT, …):
            // everything it refers to.
            let mut refs = Refs::default();
            let mut collector = RefCollector {
                refs: &mut refs,
                count_depth: 0,
            };
            let _ = other.visit(&mut collector);
            Rel {
                alias: String::new(),
                kind: RelKind::Computed(refs),
                columns: Vec::new(),
            }
        }
    })
}

/// The relations of a FROM item with its joins, in order.
fn joined_rels(twj: &TableWithJoins) -> Vec<Rel> {
    std::iter::once(&twj.relation)
        .chain(twj.joins.iter().map(|j| &j.relation))
        .filter_map(rel_of)
        .collect()
}

/// Whether a FROM list merges columns (USING, NATURAL), which changes how
/// many columns `*` yields.
fn merges_columns(from: &[TableWithJoins]) -> bool {
    from.iter().flat_map(|t| &t.joins).any(|j| {
        let constraint = match &j.join_operator {
            JoinOperator::Join(c)
            | JoinOperator::Inner(c)
            | JoinOperator::Left(c)
            | JoinOperator::LeftOuter(c)
            | JoinOperator::Right(c)
            | JoinOperator::RightOuter(c)
            | JoinOperator::FullOuter(c)
            | JoinOperator::CrossJoin(c)
            | JoinOperator::Semi(c)
            | JoinOperator::LeftSemi(c)
            | JoinOperator::RightSemi(c)
            | JoinOperator::Anti(c)
            | JoinOperator::LeftAnti(c)
            | JoinOperator::RightAnti(c) => Some(c),
            _ => None,
        };
        matches!(
            constraint,
            Some(JoinConstraint::Using(_) | JoinConstraint::Natural) | None
        )
    })
}

/// The items of a query body's own result, positionally (set operations
/// union their branches column by column).
fn body_items(body: &SetExpr) -> Vec<Item> {
    match body {
        SetExpr::Select(select) => select.projection.iter().map(item_of).collect(),
        SetExpr::Query(q) => body_items(&q.body),
        SetExpr::SetOperation { left, right, .. } => {
            let mut left = body_items(left);
            let right = body_items(right);
            let known = |items: &[Item]| items.iter().all(|i| i.wildcard.is_none());
            if left.len() == right.len() && known(&left) && known(&right) {
                for (l, r) in left.iter_mut().zip(right) {
                    merge_refs(&mut l.refs, r.refs);
                    l.plain = None;
                }
                left
            } else {
                // Widths unknown: one unknown-width item carrying everything.
                let mut refs = Refs::default();
                for item in left.into_iter().chain(right) {
                    merge_refs(&mut refs, item.refs);
                    if let Some(w) = item.wildcard {
                        refs.wildcards.push(w);
                    }
                }
                vec![Item {
                    name: None,
                    refs,
                    plain: None,
                    wildcard: Some(None),
                }]
            }
        }
        SetExpr::Values(values) => {
            let mut columns: Vec<Item> = Vec::new();
            for row in &values.rows {
                for (i, expr) in row.iter().enumerate() {
                    let refs = expr_refs(expr);
                    match columns.get_mut(i) {
                        Some(item) => merge_refs(&mut item.refs, refs),
                        None => columns.push(Item {
                            name: Some(format!("column{}", i + 1)),
                            refs,
                            plain: None,
                            wildcard: None,
                        }),
                    }
                }
            }
            columns
        }
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            returning_items(s)
        }
        SetExpr::Table(table) => vec![Item {
            name: None,
            refs: Refs {
                wildcards: table
                    .table_name
                    .clone()
                    .map(|t| Some(t.to_ascii_lowercase()))
                    .into_iter()
                    .collect(),
                ..Refs::default()
            },
            plain: None,
            wildcard: Some(table.table_name.as_ref().map(|t| t.to_ascii_lowercase())),
        }],
    }
}

fn returning_items(statement: &Statement) -> Vec<Item> {
    let returning = match statement {
        Statement::Insert(i) => i.returning.as_ref(),
        Statement::Update(u) => u.returning.as_ref(),
        Statement::Delete(d) => d.returning.as_ref(),
        _ => None,
    };
    returning
        .map(|items| items.iter().map(item_of).collect())
        .unwrap_or_default()
}

/// The items of every SELECT in a body (set-operation branches included),
/// for naming.
fn all_selects_items(body: &SetExpr) -> Vec<Item> {
    match body {
        SetExpr::Select(select) => select.projection.iter().map(item_of).collect(),
        SetExpr::SetOperation { left, right, .. } => {
            let mut items = all_selects_items(left);
            items.extend(all_selects_items(right));
            items
        }
        SetExpr::Values(_) => body_items(body),
        _ => Vec::new(),
    }
}

fn item_of(item: &SelectItem) -> Item {
    match item {
        SelectItem::UnnamedExpr(expr) => Item {
            name: column_name(expr),
            refs: expr_refs(expr),
            plain: plain_ref(expr),
            wildcard: None,
        },
        SelectItem::ExprWithAlias { expr, alias } => Item {
            name: Some(ident_name(alias)),
            refs: expr_refs(expr),
            plain: plain_ref(expr),
            wildcard: None,
        },
        SelectItem::ExprWithAliases { expr, .. } => Item {
            name: None,
            refs: expr_refs(expr),
            plain: None,
            wildcard: None,
        },
        SelectItem::QualifiedWildcard(kind, _) => match kind {
            SelectItemQualifiedWildcardKind::ObjectName(name) => {
                let rel = last_name(name);
                Item {
                    name: None,
                    refs: Refs {
                        wildcards: vec![Some(rel.clone())],
                        ..Refs::default()
                    },
                    plain: None,
                    wildcard: Some(Some(rel)),
                }
            }
            SelectItemQualifiedWildcardKind::Expr(expr) => {
                // `(expr).*`: the fields of a computed record.
                let refs = expr_refs(expr);
                Item {
                    name: None,
                    refs: refs.clone(),
                    plain: None,
                    wildcard: Some(Some(String::new())),
                }
            }
        },
        SelectItem::Wildcard(_) => Item {
            name: None,
            refs: Refs {
                wildcards: vec![None],
                ..Refs::default()
            },
            plain: None,
            wildcard: Some(None),
        },
    }
}

/// The name the server gives an unaliased result column (FigureColname, for
/// the shapes that matter): a column's name, a function's, a cast's operand's.
fn column_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(id) => Some(ident_name(id)),
        Expr::CompoundIdentifier(ids) => ids.last().map(ident_name),
        Expr::Function(f) => Some(last_name(&f.name)),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => column_name(expr),
        _ => None,
    }
}

/// A plain column (or whole-row) reference: its identifier chain.
fn plain_ref(expr: &Expr) -> Option<Vec<String>> {
    match expr {
        Expr::Identifier(id) => Some(vec![ident_name(id)]),
        Expr::CompoundIdentifier(ids) => Some(ids.iter().map(ident_name).collect()),
        _ => None,
    }
}

fn expr_refs(expr: &Expr) -> Refs {
    let mut refs = Refs::default();
    let mut collector = RefCollector {
        refs: &mut refs,
        count_depth: 0,
    };
    let _ = expr.visit(&mut collector);
    refs
}

fn arg_refs(arg: &FunctionArg, refs: &mut Refs) {
    let arg = match arg {
        FunctionArg::Named { arg, .. }
        | FunctionArg::ExprNamed { arg, .. }
        | FunctionArg::Unnamed(arg) => arg,
    };
    match arg {
        FunctionArgExpr::Expr(e) => merge_refs(refs, expr_refs(e)),
        FunctionArgExpr::QualifiedWildcard(name) => refs.wildcards.push(Some(last_name(name))),
        FunctionArgExpr::Wildcard | FunctionArgExpr::WildcardWithOptions(_) => {
            refs.wildcards.push(None)
        }
    }
}

fn collect_query(query: &Query, refs: &mut Refs) {
    let mut collector = RefCollector {
        refs,
        count_depth: 0,
    };
    let _ = query.visit(&mut collector);
}

fn merge_refs(into: &mut Refs, from: Refs) {
    into.idents.extend(from.idents);
    into.wildcards.extend(from.wildcards);
    into.opaque |= from.opaque;
}

/// Collects the names an expression refers to. Inside `count(…)` nothing is
/// collected: a count reveals no value.
struct RefCollector<'a> {
    refs: &'a mut Refs,
    count_depth: usize,
}

impl Visitor for RefCollector<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if self.count_depth > 0 {
            return ControlFlow::Continue(());
        }
        // Wildcards of nested selects are not expressions.
        let mut stack = vec![query.body.as_ref()];
        while let Some(body) = stack.pop() {
            match body {
                SetExpr::Select(select) => self.select_wildcards(select),
                SetExpr::SetOperation { left, right, .. } => {
                    stack.push(left);
                    stack.push(right);
                }
                SetExpr::Table(table) => self
                    .refs
                    .wildcards
                    .push(table.table_name.as_ref().map(|t| t.to_ascii_lowercase())),
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Function(f) => {
                let name = last_name(&f.name);
                if name == "count" && !foreign_schema(&f.name) {
                    self.count_depth += 1;
                } else if self.count_depth == 0 {
                    if !is_pure_builtin(&name) || foreign_schema(&f.name) {
                        self.refs.opaque = true;
                    }
                    if let FunctionArguments::List(list) = &f.args {
                        for arg in &list.args {
                            let arg = match arg {
                                FunctionArg::Named { arg, .. }
                                | FunctionArg::ExprNamed { arg, .. }
                                | FunctionArg::Unnamed(arg) => arg,
                            };
                            match arg {
                                FunctionArgExpr::QualifiedWildcard(name) => {
                                    self.refs.wildcards.push(Some(last_name(name)))
                                }
                                FunctionArgExpr::Wildcard
                                | FunctionArgExpr::WildcardWithOptions(_) => {
                                    self.refs.wildcards.push(None)
                                }
                                FunctionArgExpr::Expr(_) => {}
                            }
                        }
                    }
                }
            }
            _ if self.count_depth > 0 => {}
            Expr::Identifier(id) => self.refs.idents.push(vec![ident_name(id)]),
            Expr::CompoundIdentifier(ids) => {
                self.refs.idents.push(ids.iter().map(ident_name).collect())
            }
            Expr::QualifiedWildcard(name, _) => self.refs.wildcards.push(Some(last_name(name))),
            Expr::Wildcard(_) => self.refs.wildcards.push(None),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr
            && last_name(&f.name) == "count"
            && !foreign_schema(&f.name)
        {
            self.count_depth = self.count_depth.saturating_sub(1);
        }
        ControlFlow::Continue(())
    }
}

impl RefCollector<'_> {
    fn select_wildcards(&mut self, select: &Select) {
        for item in &select.projection {
            match item {
                SelectItem::Wildcard(_) => self.refs.wildcards.push(None),
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(n),
                    _,
                ) => self.refs.wildcards.push(Some(last_name(n))),
                _ => {}
            }
        }
    }
}

// ---- resolving --------------------------------------------------------------

/// What each name carries, resolved over the whole statement.
struct Names<'a> {
    sources: &'a Sources,
    /// Column names → taint (masked columns in play, and every projection
    /// name of the statement).
    columns: HashMap<String, Taint>,
    /// Relation aliases and names → the taint of their whole row.
    relations: HashMap<String, Taint>,
    rels: &'a [Rel],
}

impl<'a> Names<'a> {
    /// Resolves every name until nothing changes; `None` when that does not
    /// happen within [`MAX_ROUNDS`].
    fn resolve(gather: &'a Gather, sources: &'a Sources) -> Option<Self> {
        let mut names = Names {
            sources,
            columns: HashMap::new(),
            relations: HashMap::new(),
            rels: &gather.rels,
        };
        for source in &sources.columns {
            if gather
                .tables
                .iter()
                .any(|t| t.eq_ignore_ascii_case(&source.table))
            {
                names
                    .columns
                    .entry(source.column.to_ascii_lowercase())
                    .or_default()
                    .add_rule(source.rule);
            }
        }
        for _ in 0..MAX_ROUNDS {
            let mut changed = false;
            for rel in &gather.rels {
                let taint = names.rel_taint(rel);
                changed |= names
                    .relations
                    .entry(rel.alias.clone())
                    .or_default()
                    .union(&taint);
                if let RelKind::Derived(items) = &rel.kind {
                    for (alias, item) in rel.columns.iter().zip(items) {
                        let t = names.item_taint(item);
                        changed |= names.columns.entry(alias.clone()).or_default().union(&t);
                    }
                }
            }
            for item in &gather.items {
                if let Some(name) = &item.name {
                    let t = names.item_taint(item);
                    changed |= names.columns.entry(name.clone()).or_default().union(&t);
                }
            }
            if !changed {
                return Some(names);
            }
        }
        None
    }

    fn rel_taint(&self, rel: &Rel) -> Taint {
        match &rel.kind {
            RelKind::Named(table) => {
                let mut t = self.sources.table_taint(table);
                if let Some(cte) = self.relations.get(table) {
                    t.union(cte);
                }
                t
            }
            RelKind::Derived(items) => {
                let mut t = Taint::default();
                for item in items {
                    t.union(&self.item_taint(item));
                }
                t
            }
            RelKind::Computed(refs) => self.refs_taint(refs),
        }
    }

    fn item_taint(&self, item: &Item) -> Taint {
        self.refs_taint(&item.refs)
    }

    fn refs_taint(&self, refs: &Refs) -> Taint {
        let mut t = Taint {
            opaque: refs.opaque,
            ..Taint::default()
        };
        for ident in &refs.idents {
            let Some(column) = ident.last() else {
                continue;
            };
            if let Some(c) = self.columns.get(column) {
                t.union(c);
            }
            for (pattern, rule) in &self.sources.patterns {
                if pattern.matches(column) {
                    t.add_rule(*rule);
                }
            }
            if ident.len() == 1
                && let Some(r) = self.relations.get(column)
            {
                // A whole-row reference.
                t.union(r);
            }
        }
        for wildcard in &refs.wildcards {
            match wildcard {
                Some(rel) => {
                    if let Some(r) = self.relations.get(rel) {
                        t.union(r);
                    }
                }
                None => self.relations.values().for_each(|r| {
                    t.union(r);
                }),
            }
        }
        t
    }

    fn rel_named(&self, alias: &str) -> Option<&Rel> {
        self.rels.iter().find(|r| r.alias == alias)
    }

    /// What `*` or `t.*` yields over one relation.
    fn expansion(&self, rel: &Rel, merged: bool) -> Output {
        let whole = self.relations.get(&rel.alias).copied().unwrap_or_default();
        match &rel.kind {
            RelKind::Derived(items) if !merged && items.iter().all(|i| i.wildcard.is_none()) => {
                Output::Expand(items.iter().map(|i| self.item_taint(i)).collect())
            }
            RelKind::Named(table) if !merged => {
                // A CTE of known width, referenced by name.
                match self
                    .rels
                    .iter()
                    .find(|r| &r.alias == table && matches!(r.kind, RelKind::Derived(_)))
                {
                    Some(cte) if !std::ptr::eq(cte, rel) => self.expansion(cte, merged),
                    _ => Output::ExpandUnknown(whole),
                }
            }
            _ => Output::ExpandUnknown(whole),
        }
    }

    /// The outputs of the statement's own result.
    fn outputs(&self, statement: &Statement) -> Outputs {
        match statement {
            Statement::Query(query) => self.query_outputs(query),
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                let items = returning_items(statement);
                if items.is_empty() {
                    return Outputs::Clean;
                }
                let from: Vec<Rel> = match statement {
                    Statement::Update(u) => joined_rels(&u.table),
                    Statement::Insert(i) => match &i.table {
                        TableObject::TableName(name) => vec![Rel {
                            alias: i
                                .table_alias
                                .as_ref()
                                .map(|a| ident_name(&a.alias))
                                .unwrap_or_else(|| last_name(name)),
                            kind: RelKind::Named(last_name(name)),
                            columns: Vec::new(),
                        }],
                        _ => Vec::new(),
                    },
                    _ => self.rels.to_vec(),
                };
                Outputs::Items(self.items_outputs(&items, &from, true))
            }
            Statement::Explain { .. }
            | Statement::ExplainTable { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::Set(_)
            | Statement::Reset(_)
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::LISTEN { .. }
            | Statement::UNLISTEN { .. }
            | Statement::NOTIFY { .. }
            | Statement::Prepare { .. }
            | Statement::Deallocate { .. }
            | Statement::Declare { .. }
            | Statement::Copy { .. } => Outputs::Clean,
            _ => Outputs::Opaque,
        }
    }

    fn query_outputs(&self, query: &Query) -> Outputs {
        self.body_outputs(&query.body)
    }

    fn body_outputs(&self, body: &SetExpr) -> Outputs {
        match body {
            SetExpr::Select(select) => {
                if select.into.is_some() {
                    return Outputs::Clean;
                }
                let from: Vec<Rel> = select.from.iter().flat_map(joined_rels).collect();
                let items: Vec<Item> = select.projection.iter().map(item_of).collect();
                Outputs::Items(self.items_outputs(&items, &from, merges_columns(&select.from)))
            }
            SetExpr::Query(q) => self.query_outputs(q),
            SetExpr::SetOperation { left, right, .. } => {
                let (Outputs::Items(l), Outputs::Items(r)) =
                    (self.body_outputs(left), self.body_outputs(right))
                else {
                    return Outputs::Opaque;
                };
                let columns = |items: &[Output]| -> Option<Vec<Taint>> {
                    let mut out = Vec::new();
                    for o in items {
                        match o {
                            Output::Column(t) => out.push(*t),
                            Output::Expand(ts) => out.extend_from_slice(ts),
                            Output::ExpandUnknown(_) => return None,
                        }
                    }
                    Some(out)
                };
                match (columns(&l), columns(&r)) {
                    (Some(mut l), Some(r)) if l.len() == r.len() => {
                        for (a, b) in l.iter_mut().zip(&r) {
                            a.union(b);
                        }
                        Outputs::Items(l.into_iter().map(Output::Column).collect())
                    }
                    _ => {
                        let mut all = Taint::default();
                        for o in l.iter().chain(&r) {
                            match o {
                                Output::Column(t) | Output::ExpandUnknown(t) => {
                                    all.union(t);
                                }
                                Output::Expand(ts) => ts.iter().for_each(|t| {
                                    all.union(t);
                                }),
                            }
                        }
                        Outputs::Items(vec![Output::ExpandUnknown(all)])
                    }
                }
            }
            other => {
                let items = body_items(other);
                Outputs::Items(self.items_outputs(&items, self.rels, true))
            }
        }
    }

    fn items_outputs(&self, items: &[Item], from: &[Rel], merged: bool) -> Vec<Output> {
        items
            .iter()
            .map(|item| match &item.wildcard {
                None => Output::Column(self.item_taint(item)),
                Some(None) if from.len() == 1 => from
                    .first()
                    .map(|rel| self.expansion(rel, merged))
                    .unwrap_or(Output::ExpandUnknown(Taint::default())),
                Some(None) => {
                    // Several relations: their widths add up, each may be unknown.
                    let mut all = Taint::default();
                    let mut known = Vec::new();
                    let mut unknown = false;
                    for rel in from {
                        match self.expansion(rel, merged) {
                            Output::Expand(ts) => {
                                ts.iter().for_each(|t| {
                                    all.union(t);
                                });
                                known.extend(ts);
                            }
                            Output::ExpandUnknown(t) | Output::Column(t) => {
                                all.union(&t);
                                unknown = true;
                            }
                        }
                    }
                    if unknown {
                        Output::ExpandUnknown(all)
                    } else {
                        Output::Expand(known)
                    }
                }
                Some(Some(alias)) => match self.rel_named(alias) {
                    Some(rel) => self.expansion(rel, merged),
                    None => Output::ExpandUnknown(self.item_taint(item)),
                },
            })
            .collect()
    }

    // ---- sinks ----------------------------------------------------------------

    /// Why the statement must be refused, if tainted values would leave
    /// through a sink other than its result.
    fn refusal(&self, statement: &Statement, gather: &Gather) -> Option<Refusal> {
        for (function, foreign, refs) in &gather.calls {
            let taint = self.refs_taint(refs);
            if taint.has_rules() && (*foreign || !is_pure_builtin(function)) {
                return Some(Refusal::Call(function.clone()));
            }
        }
        let mut found = None;
        let _ = statement.visit(&mut SinkFinder {
            names: self,
            found: &mut found,
        });
        found
    }

    /// The rules on `table.column` (configured or found by the catalog lookup).
    fn column_rules(&self, table: &str, column: &str) -> Taint {
        let mut t = Taint::default();
        for c in &self.sources.columns {
            if c.table.eq_ignore_ascii_case(table) && c.column.eq_ignore_ascii_case(column) {
                t.add_rule(c.rule);
            }
        }
        for (pattern, rule) in &self.sources.patterns {
            if pattern.matches(column) {
                t.add_rule(*rule);
            }
        }
        t
    }

    /// Writing `value` into `table.column` keeps it masked only when the target
    /// column is under every rule the value carries.
    fn write_allowed(&self, table: &str, column: Option<&str>, value: &Taint) -> bool {
        if !value.has_rules() {
            return true;
        }
        column.is_some_and(|c| value.rules_within(&self.column_rules(table, c)))
    }

    fn query_taints(&self, query: &Query) -> Vec<Taint> {
        // The full taint of each value, plain references included.
        body_items(&query.body)
            .iter()
            .map(|item| self.item_taint(item))
            .collect()
    }
}

/// Finds the first write of tainted values into an unmasked place, in the
/// statement or any statement nested in it.
struct SinkFinder<'n, 'a> {
    names: &'n Names<'a>,
    found: &'n mut Option<Refusal>,
}

impl Visitor for SinkFinder<'_, '_> {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        if let Some(refusal) = self.check(statement) {
            *self.found = Some(refusal);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        // SELECT … INTO a new table.
        if let SetExpr::Select(select) = query.body.as_ref()
            && let Some(into) = &select.into
        {
            let tainted = self.names.query_taints(query).iter().any(Taint::has_rules);
            if tainted {
                let name = into
                    .targets
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                *self.found = Some(Refusal::Write(format!("new table {name}")));
                return ControlFlow::Break(());
            }
        }
        // Data-modifying statements inside WITH.
        if let SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) =
            query.body.as_ref()
            && let Some(refusal) = self.check(s)
        {
            *self.found = Some(refusal);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

impl SinkFinder<'_, '_> {
    fn check(&self, statement: &Statement) -> Option<Refusal> {
        let names = self.names;
        match statement {
            Statement::Insert(insert) => {
                let TableObject::TableName(name) = &insert.table else {
                    return None;
                };
                let table = last_name(name);
                let columns: Vec<String> = insert.columns.iter().map(last_name).collect();
                if let Some(source) = &insert.source {
                    let taints = names.query_taints(source);
                    let has_wildcard = body_items(&source.body)
                        .iter()
                        .any(|i| i.wildcard.is_some());
                    for (i, taint) in taints.iter().enumerate() {
                        let column = if has_wildcard { None } else { columns.get(i) };
                        if !names.write_allowed(&table, column.map(String::as_str), taint) {
                            return Some(Refusal::Write(target(&table, column)));
                        }
                    }
                }
                for assignment in &insert.assignments {
                    if let Some(r) = self.assignment(&table, assignment) {
                        return Some(r);
                    }
                }
                if let Some(OnInsert::OnConflict(conflict)) = &insert.on
                    && let OnConflictAction::DoUpdate(update) = &conflict.action
                {
                    for assignment in &update.assignments {
                        if let Some(r) = self.assignment(&table, assignment) {
                            return Some(r);
                        }
                    }
                }
                None
            }
            Statement::Update(update) => {
                let table = match &update.table.relation {
                    TableFactor::Table { name, .. } => last_name(name),
                    _ => String::new(),
                };
                update
                    .assignments
                    .iter()
                    .find_map(|a| self.assignment(&table, a))
            }
            Statement::Merge(merge) => {
                let table = match &merge.table {
                    TableFactor::Table { name, .. } => last_name(name),
                    _ => String::new(),
                };
                for clause in &merge.clauses {
                    match &clause.action {
                        MergeAction::Update(update) => match &update.kind {
                            MergeUpdateKind::Set(assignments) => {
                                if let Some(r) =
                                    assignments.iter().find_map(|a| self.assignment(&table, a))
                                {
                                    return Some(r);
                                }
                            }
                            // `UPDATE SET *`: every source column, by position.
                            _ => {
                                let source = rel_of(&merge.source)
                                    .map(|rel| names.rel_taint(&rel))
                                    .unwrap_or_default();
                                if source.has_rules() {
                                    return Some(Refusal::Write(target(&table, None)));
                                }
                            }
                        },
                        MergeAction::Insert(insert) => {
                            let columns: Vec<String> =
                                insert.columns.iter().map(last_name).collect();
                            let mut refs = Refs::default();
                            let mut collector = RefCollector {
                                refs: &mut refs,
                                count_depth: 0,
                            };
                            let _ = insert.kind.visit(&mut collector);
                            let taint = names.refs_taint(&refs);
                            let all_within = columns.len() == 1
                                && names.write_allowed(
                                    &table,
                                    columns.first().map(String::as_str),
                                    &taint,
                                );
                            if taint.has_rules() && !all_within {
                                return Some(Refusal::Write(target(&table, None)));
                            }
                        }
                        _ => {}
                    }
                }
                None
            }
            Statement::CreateTable(create) => {
                let query = create.query.as_ref()?;
                let tainted = names.query_taints(query).iter().any(Taint::has_rules);
                tainted.then(|| Refusal::Write(format!("new table {}", last_name(&create.name))))
            }
            Statement::CreateView(view) => {
                let tainted = names.query_taints(&view.query).iter().any(Taint::has_rules);
                tainted.then(|| Refusal::Write(format!("new view {}", last_name(&view.name))))
            }
            Statement::Copy {
                source,
                to: true,
                target,
                ..
            } if !matches!(target, CopyTarget::Stdout) => {
                let tainted = match source {
                    CopySource::Table { table_name, .. } => names
                        .sources
                        .table_taint(&last_name(table_name))
                        .has_rules(),
                    CopySource::Query(query) => {
                        names.query_taints(query).iter().any(Taint::has_rules)
                    }
                };
                tainted.then(|| Refusal::Write("a file or program on the server".into()))
            }
            Statement::Call(function) => {
                let mut refs = Refs::default();
                if let FunctionArguments::List(list) = &function.args {
                    list.args.iter().for_each(|a| arg_refs(a, &mut refs));
                }
                names
                    .refs_taint(&refs)
                    .has_rules()
                    .then(|| Refusal::Call(last_name(&function.name)))
            }
            _ => None,
        }
    }

    fn assignment(&self, table: &str, assignment: &sqlparser::ast::Assignment) -> Option<Refusal> {
        let taint = self.names.refs_taint(&expr_refs(&assignment.value));
        let columns: Vec<String> = match &assignment.target {
            AssignmentTarget::ColumnName(name) => vec![last_name(name)],
            AssignmentTarget::Tuple(names) => names.iter().map(last_name).collect(),
        };
        let allowed = match columns.as_slice() {
            [one] => self.names.write_allowed(table, Some(one), &taint),
            // `(a, b) = (…)`: every target must take every rule.
            many => many
                .iter()
                .all(|c| self.names.write_allowed(table, Some(c), &taint)),
        };
        (!allowed).then(|| Refusal::Write(target(table, columns.first())))
    }
}

fn target(table: &str, column: Option<&String>) -> String {
    match column {
        Some(c) => format!("{table}.{c}"),
        None => table.to_string(),
    }
}

// ---- names ------------------------------------------------------------------

fn ident_name(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// The last part of a qualified name, normalized.
fn last_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .rev()
        .find_map(|part| part.as_ident())
        .map(ident_name)
        .unwrap_or_default()
}

/// Whether a function name is qualified with a schema other than pg_catalog:
/// not the built-in of that name.
fn foreign_schema(name: &ObjectName) -> bool {
    name.0.len() > 1
        && name
            .0
            .iter()
            .rev()
            .nth(1)
            .and_then(|p| p.as_ident())
            .is_none_or(|schema| ident_name(schema) != "pg_catalog")
}

/// Built-in functions whose result depends only on their arguments (and the
/// clock, settings or sequences), never on a table they read themselves.
/// Sorted: looked up by binary search. Every other function is opaque.
const PURE_BUILTINS: &[&str] = &[
    "abs",
    "acos",
    "age",
    "any_value",
    "array",
    "array_agg",
    "array_append",
    "array_cat",
    "array_dims",
    "array_fill",
    "array_length",
    "array_lower",
    "array_ndims",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_sample",
    "array_shuffle",
    "array_to_json",
    "array_to_string",
    "array_to_tsvector",
    "array_upper",
    "ascii",
    "asin",
    "atan",
    "atan2",
    "avg",
    "bit_and",
    "bit_count",
    "bit_length",
    "bit_or",
    "bit_xor",
    "bool",
    "bool_and",
    "bool_or",
    "btrim",
    "cardinality",
    "cbrt",
    "ceil",
    "ceiling",
    "char",
    "char_length",
    "character_length",
    "chr",
    "clock_timestamp",
    "coalesce",
    "concat",
    "concat_ws",
    "convert",
    "convert_from",
    "convert_to",
    "corr",
    "cos",
    "count",
    "covar_pop",
    "covar_samp",
    "crc32",
    "cume_dist",
    "current_database",
    "current_date",
    "current_role",
    "current_schema",
    "current_schemas",
    "current_setting",
    "current_time",
    "current_timestamp",
    "current_user",
    "date",
    "date_add",
    "date_bin",
    "date_part",
    "date_subtract",
    "date_trunc",
    "daterange",
    "decode",
    "degrees",
    "dense_rank",
    "div",
    "encode",
    "every",
    "exp",
    "extract",
    "factorial",
    "first_value",
    "float4",
    "float8",
    "floor",
    "format",
    "format_type",
    "gcd",
    "gen_random_uuid",
    "generate_series",
    "generate_subscripts",
    "get_byte",
    "greatest",
    "hashtext",
    "initcap",
    "int2",
    "int4",
    "int4range",
    "int8",
    "int8range",
    "interval",
    "isempty",
    "isfinite",
    "json_agg",
    "json_agg_strict",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_each_text",
    "json_extract_path",
    "json_extract_path_text",
    "json_object",
    "json_object_agg",
    "json_object_keys",
    "json_populate_record",
    "json_scalar",
    "json_serialize",
    "json_strip_nulls",
    "json_to_record",
    "json_to_recordset",
    "json_typeof",
    "jsonb_agg",
    "jsonb_agg_strict",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_contains",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_exists",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_insert",
    "jsonb_object",
    "jsonb_object_agg",
    "jsonb_object_keys",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_populate_record",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_strip_nulls",
    "jsonb_to_record",
    "jsonb_to_recordset",
    "jsonb_typeof",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "lag",
    "last_value",
    "lcm",
    "lead",
    "least",
    "left",
    "length",
    "ln",
    "localtime",
    "localtimestamp",
    "log",
    "log10",
    "lower",
    "lower_inc",
    "lower_inf",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "max",
    "md5",
    "min",
    "mod",
    "mode",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "num_nonnulls",
    "num_nulls",
    "numeric",
    "numrange",
    "octet_length",
    "overlay",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_backend_pid",
    "pg_column_size",
    "pg_typeof",
    "phraseto_tsquery",
    "pi",
    "plainto_tsquery",
    "position",
    "power",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "radians",
    "random",
    "random_normal",
    "range_merge",
    "rank",
    "regexp_count",
    "regexp_instr",
    "regexp_like",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_substr",
    "regr_count",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row",
    "row_number",
    "row_to_json",
    "rpad",
    "rtrim",
    "scale",
    "session_user",
    "set_byte",
    "setseed",
    "setweight",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "sign",
    "sin",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "string_to_array",
    "string_to_table",
    "strip",
    "strpos",
    "substr",
    "substring",
    "sum",
    "tan",
    "text",
    "time",
    "timeofday",
    "timestamp",
    "timestamptz",
    "to_ascii",
    "to_char",
    "to_date",
    "to_hex",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_regclass",
    "to_timestamp",
    "to_tsquery",
    "to_tsvector",
    "transaction_timestamp",
    "translate",
    "trim",
    "trim_array",
    "trunc",
    "ts_headline",
    "ts_rank",
    "tsrange",
    "tstzrange",
    "tsvector_to_array",
    "unaccent",
    "unistr",
    "unnest",
    "upper",
    "upper_inc",
    "upper_inf",
    "user",
    "uuid_generate_v4",
    "var_pop",
    "var_samp",
    "varchar",
    "variance",
    "version",
    "websearch_to_tsquery",
    "width_bucket",
    "xml_is_well_formed",
    "xmlagg",
    "xmlcomment",
    "xmlconcat",
    "xmlelement",
    "xmlforest",
    "xmlparse",
    "xmlroot",
    "xmlserialize",
    "xmltext",
    "xpath",
    "xpath_exists",
];

/// Whether `name` is a built-in the filter knows reads no table itself.
pub fn is_pure_builtin(name: &str) -> bool {
    PURE_BUILTINS.binary_search(&name).is_ok()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
#[path = "lineage_tests.rs"]
mod tests;
