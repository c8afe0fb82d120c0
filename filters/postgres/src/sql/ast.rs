//! Analysis of statements sqlparser can parse, by walking the AST with a visitor.
//!
//! Every statement node (top level, or nested: data-modifying CTEs, EXPLAIN bodies,
//! PREPARE bodies) gets a frame on a stack; tables and function calls seen while a
//! frame is on top belong to that statement. When a nested statement's frame is
//! popped it becomes one of its parent's [`StatementInfo::runs`], except under plain
//! EXPLAIN (nothing runs) and for the body of a top-level `WITH … DELETE` (which is
//! the statement itself).

use super::{
    Access, Limits, ObjectRef, StatementInfo, StatementKind, is_role_setting, normalize_name,
};
use sqlparser::ast::{
    CopySource, CopyTarget, Expr, FromTable, FunctionArg, FunctionArgExpr, FunctionArguments,
    Ident, MergeAction, ObjectName, ObjectType, OnConflict, OnConflictAction, OnInsert, Query,
    Reset, SetExpr, Statement, TableFactor, TableObject, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;
use std::ops::ControlFlow;

/// Parses one statement's text and analyzes what it contains, or `None` when
/// sqlparser cannot parse it.
/// `leading_kind` names statements by their leading keywords where the AST variant
/// needs no finer treatment.
pub(super) fn analyze_text(
    text: &str,
    leading_kind: StatementKind,
    limits: &Limits,
) -> Option<Vec<StatementInfo>> {
    let statements = parse(text, limits.max_depth)?;
    statements
        .iter()
        .map(|statement| {
            let mut collector = Collector::new(leading_kind);
            let _ = statement.visit(&mut collector);
            collector.done
        })
        .collect()
}

/// Parses a (canonical) text into its statements, or `None` when sqlparser cannot
/// parse every token of it or it holds no statement.
pub(super) fn parse(text: &str, max_depth: usize) -> Option<Vec<Statement>> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(max_depth)
        .try_with_sql(text)
        .ok()?;
    // Not `parse_statements`: it stops quietly at an END after a statement, so
    // `select 1 end, pg_read_file('x')` (a column labelled "end", then a call)
    // would lose everything after the label. Every token must be accounted for.
    let mut statements = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token_ref().token == Token::EOF {
            break;
        }
        statements.push(parser.parse_statement().ok()?);
        if !matches!(parser.peek_token_ref().token, Token::EOF | Token::SemiColon) {
            return None;
        }
    }
    (!statements.is_empty()).then_some(statements)
}

/// (schema, name) of a table as written.
type TableName = (Option<String>, String);

struct Frame {
    info: StatementInfo,
    /// Every table reference seen (a table read twice appears twice).
    reads: Vec<TableName>,
    /// Tables the statement itself writes.
    writes: Vec<TableName>,
    /// CTE names in scope: references to them are not tables.
    ctes: Vec<String>,
    /// Table-valued functions (`FROM dblink(…)`) whose name must not count as a table.
    skip_relations: Vec<TableName>,
    /// Plain EXPLAIN: the body is planned, not run.
    explain_only: bool,
    /// The statement that *is* this one (the body of `WITH … DELETE`), merged into it.
    body: Option<*const Statement>,
}

struct Collector {
    leading_kind: StatementKind,
    stack: Vec<Frame>,
    done: Option<StatementInfo>,
    /// Only probing an expression for the rows it refers to (see [`probe`]): no
    /// frame is ever pushed. A mode rather than a second visitor type: sqlparser's
    /// AST walk is generic over the visitor, and each visitor type would link
    /// another copy of it (about 40 KB of Wasm).
    probe: Option<RowProbe>,
}

/// The table an UPDATE, DELETE or INSERT writes, as its WHERE refers to it.
#[derive(Debug, Clone, Default)]
pub(super) struct Target {
    pub name: String,
    pub alias: Option<String>,
}

impl Target {
    fn is_named(&self, qualifier: &str) -> bool {
        self.alias.as_deref() == Some(qualifier) || self.name == qualifier
    }
}

/// What an expression refers to, relative to a [`Target`].
#[derive(Debug, Default)]
pub(super) struct RowProbe {
    target: Target,
    /// Subquery nesting at the current node.
    depth: usize,
    /// A column of the target (or an unqualified column) outside subqueries.
    pub target_columns: bool,
    /// A column qualified by another relation, outside subqueries.
    pub other_columns: bool,
    /// A subquery reads the target table.
    pub reads_target: bool,
    /// A subquery refers to the target by name or alias (is correlated with it).
    pub correlated: bool,
}

/// Probes `exprs` for references to `target`'s rows.
pub(super) fn probe(exprs: &[&Expr], target: &Target) -> RowProbe {
    let mut collector = Collector::new(StatementKind::Other);
    collector.probe = Some(RowProbe {
        target: target.clone(),
        ..RowProbe::default()
    });
    for expr in exprs {
        let _ = expr.visit(&mut collector);
    }
    collector.probe.unwrap_or_default()
}

/// Probes a query (a subquery from the start) for reads of `target`.
pub(super) fn probe_query(query: &Query, target: &Target) -> RowProbe {
    let mut collector = Collector::new(StatementKind::Other);
    collector.probe = Some(RowProbe {
        target: target.clone(),
        ..RowProbe::default()
    });
    let _ = query.visit(&mut collector);
    collector.probe.unwrap_or_default()
}

impl RowProbe {
    fn column(&mut self, parts: &[Ident]) {
        let qualifiers = parts.len().saturating_sub(1);
        let names_target = parts
            .iter()
            .take(qualifiers)
            .any(|q| self.target.is_named(&ident_name(q)));
        if self.depth > 0 {
            self.correlated |= names_target;
        } else if qualifiers == 0 || names_target {
            self.target_columns = true;
        } else {
            self.other_columns = true;
        }
    }
}

fn table_name(name: &ObjectName) -> TableName {
    let mut idents = name.0.iter().rev().filter_map(|part| part.as_ident());
    let table = idents.next().map(ident_name).unwrap_or_default();
    let schema = idents.next().map(ident_name);
    (schema, table)
}

fn ident_name(ident: &Ident) -> String {
    normalize_name(&ident.value, ident.quote_style.is_some())
}

fn function_name(name: &ObjectName) -> String {
    table_name(name).1
}

impl Collector {
    fn new(leading_kind: StatementKind) -> Self {
        Self {
            leading_kind,
            stack: Vec::new(),
            done: None,
            probe: None,
        }
    }

    fn top(&mut self) -> Option<&mut Frame> {
        self.stack.last_mut()
    }

    fn frame_for(&self, statement: &Statement) -> Frame {
        let nested = !self.stack.is_empty();
        let mut frame = Frame {
            info: StatementInfo::new(kind_of(statement, nested, self.leading_kind)),
            reads: Vec::new(),
            writes: Vec::new(),
            ctes: Vec::new(),
            skip_relations: Vec::new(),
            explain_only: false,
            body: None,
        };
        frame.info.parsed = true;
        describe(statement, &mut frame);
        frame
    }

    fn is_cte(&self, name: &TableName) -> bool {
        name.0.is_none() && self.stack.iter().any(|f| f.ctes.contains(&name.1))
    }

    fn record_function(&mut self, function: &sqlparser::ast::Function) {
        let name = function_name(&function.name);
        let Some(frame) = self.top() else { return };
        if name == "set_config" {
            judge_set_config(first_argument(&function.args), &mut frame.info);
        }
        push_unique(&mut frame.info.functions, name);
    }
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

fn first_argument(args: &FunctionArguments) -> Option<&Expr> {
    let FunctionArguments::List(list) = args else {
        return None;
    };
    match list.args.first()? {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
        | FunctionArg::Named {
            arg: FunctionArgExpr::Expr(e),
            ..
        }
        | FunctionArg::ExprNamed {
            arg: FunctionArgExpr::Expr(e),
            ..
        } => Some(e),
        _ => None,
    }
}

/// `set_config(name, value, is_local)`: which setting it changes decides whether it
/// switches role, so the decision depends on a string constant. A name that is not
/// a constant could be anything and counts as a role switch.
fn judge_set_config(name: Option<&Expr>, info: &mut StatementInfo) {
    info.literal_sensitive = true;
    let setting = match name {
        Some(Expr::Value(v)) => v
            .value
            .clone()
            .into_string()
            .map(|s| s.to_ascii_lowercase()),
        _ => None,
    };
    match setting.as_deref() {
        Some(s) if is_role_setting(s) => info.properties.set_role = true,
        Some("standard_conforming_strings") => info.properties.string_syntax_change = true,
        Some(_) => {}
        None => info.properties.set_role = true,
    }
}

/// The kind of a statement node. Top-level statements whose variant is not mapped
/// here take the kind of their leading keywords, which is how the server itself
/// names them (CREATE …, ALTER …).
fn kind_of(statement: &Statement, nested: bool, leading: StatementKind) -> StatementKind {
    use StatementKind as K;
    match statement {
        Statement::Query(q) => query_kind(q),
        Statement::Insert(_) => K::Insert,
        Statement::Update(_) => K::Update,
        Statement::Delete(_) => K::Delete,
        Statement::Merge(_) => K::Merge,
        Statement::Explain { .. } => K::Explain,
        Statement::Execute { .. } => K::Execute,
        Statement::Declare { .. } => K::Cursor,
        Statement::CreateTable(_) | Statement::CreateView(_) => K::Create,
        _ if nested => K::Other,
        _ => leading,
    }
}

fn query_kind(query: &Query) -> StatementKind {
    match query.body.as_ref() {
        SetExpr::Insert(_) => StatementKind::Insert,
        SetExpr::Update(_) => StatementKind::Update,
        SetExpr::Delete(_) => StatementKind::Delete,
        SetExpr::Merge(_) => StatementKind::Merge,
        SetExpr::Select(s) if s.into.is_some() => StatementKind::Create,
        _ => StatementKind::Select,
    }
}

/// Fills in what a statement does by itself: write targets and properties. Reads and
/// function calls are collected by the visitor as it descends.
fn describe(statement: &Statement, frame: &mut Frame) {
    let props = &mut frame.info.properties;
    match statement {
        Statement::Query(q) => {
            if let SetExpr::Insert(s)
            | SetExpr::Update(s)
            | SetExpr::Delete(s)
            | SetExpr::Merge(s) = q.body.as_ref()
            {
                frame.body = Some(std::ptr::from_ref(s));
            }
        }
        Statement::Insert(insert) => {
            if let TableObject::TableName(name) = &insert.table {
                frame.writes.push(table_name(name));
                // An upsert fed from its own table can rewrite every row.
                let upserts = matches!(
                    &insert.on,
                    Some(OnInsert::OnConflict(OnConflict {
                        action: OnConflictAction::DoUpdate(_),
                        ..
                    }))
                );
                let target = Target {
                    name: table_name(name).1,
                    alias: insert.table_alias.as_ref().map(|a| ident_name(&a.alias)),
                };
                if upserts
                    && let Some(source) = &insert.source
                    && probe_query(source, &target).reads_target
                {
                    props.without_where = true;
                }
            }
        }
        Statement::Update(update) => {
            if let TableFactor::Table { name, .. } = &update.table.relation {
                frame.writes.push(table_name(name));
            }
            let target = factor_target(&update.table.relation).unwrap_or_default();
            props.without_where = !super::rows::constrains(
                update.selection.as_ref(),
                &target,
                &mut frame.info.literal_sensitive,
            );
        }
        Statement::Delete(delete) => {
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
            let mut target = None;
            for table in from {
                if let TableFactor::Table { name, .. } = &table.relation {
                    frame.writes.push(table_name(name));
                    target = target.or_else(|| factor_target(&table.relation));
                }
            }
            frame.writes.extend(delete.tables.iter().map(table_name));
            let literal_sensitive = &mut frame.info.literal_sensitive;
            props.without_where = !target.is_some_and(|t| {
                super::rows::constrains(delete.selection.as_ref(), &t, literal_sensitive)
            });
        }
        Statement::Merge(merge) => {
            if let TableFactor::Table { name, .. } = &merge.table {
                frame.writes.push(table_name(name));
            }
            // A MERGE that updates or deletes matched rows can reach every row of
            // its target, whatever joins it: the join condition is the source's.
            props.without_where = merge.clauses.iter().any(|c| {
                matches!(
                    c.action,
                    MergeAction::Update(_) | MergeAction::Delete { .. }
                )
            });
        }
        Statement::Truncate(truncate) => {
            frame
                .writes
                .extend(truncate.table_names.iter().map(|t| table_name(&t.name)));
        }
        Statement::Copy {
            source, to, target, ..
        } => {
            if let CopySource::Table {
                table_name: name, ..
            } = source
            {
                if *to {
                    frame.reads.push(table_name(name));
                } else {
                    frame.writes.push(table_name(name));
                }
            }
            match target {
                CopyTarget::Program { .. } => props.copy_program = true,
                CopyTarget::File { .. } => props.copy_server_file = true,
                CopyTarget::Stdin | CopyTarget::Stdout => {}
            }
        }
        Statement::Drop {
            object_type, names, ..
        } => match object_type {
            ObjectType::Database => props.drop_database = true,
            ObjectType::Role | ObjectType::User => props.role_change = true,
            ObjectType::Table
            | ObjectType::View
            | ObjectType::MaterializedView
            | ObjectType::Sequence
            | ObjectType::Index => frame.writes.extend(names.iter().map(table_name)),
            _ => {}
        },
        Statement::AlterTable(alter) => frame.writes.push(table_name(&alter.name)),
        Statement::CreateTable(create) => frame.writes.push(table_name(&create.name)),
        Statement::CreateView(create) => frame.writes.push(table_name(&create.name)),
        Statement::CreateRole(_)
        | Statement::AlterRole { .. }
        | Statement::CreateUser(_)
        | Statement::AlterUser(_) => props.role_change = true,
        Statement::Grant(grant) if grant.objects.is_none() => props.role_change = true,
        Statement::Revoke(revoke) if revoke.objects.is_none() => props.role_change = true,
        Statement::Set(set) => describe_set(set, &mut frame.info),
        Statement::Reset(reset) => match &reset.reset {
            Reset::SessionAuthorization => props.set_role = true,
            Reset::ConfigurationParameter(name) => judge_setting_name(name, &mut frame.info),
            Reset::ALL => {}
        },
        Statement::Explain {
            analyze, options, ..
        } => {
            let mut runs = *analyze;
            for option in options.iter().flatten() {
                // The server names the option `analyze` for either spelling; a quoted
                // name is taken as the same option whatever its case (erring towards
                // running the body, which is judged).
                let name = option.name.value.to_ascii_lowercase();
                if name == "analyze" || name == "analyse" {
                    // `ANALYZE 0` and `ANALYZE 'off'` differ from `ANALYZE 1` only in a
                    // constant, so the decision is constant-sensitive.
                    if matches!(option.arg, Some(Expr::Value(_))) {
                        frame.info.literal_sensitive = true;
                    }
                    runs |= !option.arg.as_ref().is_some_and(is_false);
                }
            }
            frame.explain_only = !runs;
        }
        Statement::Prepare { name, .. } => frame.info.prepared_name = Some(ident_name(name)),
        Statement::Execute {
            name: Some(name), ..
        } => {
            frame.info.prepared_name = Some(function_name(name));
        }
        Statement::Deallocate { name, .. } => frame.info.prepared_name = Some(ident_name(name)),
        _ => {}
    }
}

fn describe_set(set: &sqlparser::ast::Set, info: &mut StatementInfo) {
    use sqlparser::ast::Set;
    match set {
        Set::SetRole { .. } | Set::SetSessionAuthorization(_) => info.properties.set_role = true,
        Set::SingleAssignment { variable, .. } => judge_setting_name(variable, info),
        Set::MultipleAssignments { assignments } => {
            for assignment in assignments {
                judge_setting_name(&assignment.name, info);
            }
        }
        Set::ParenthesizedAssignments { variables, .. } => {
            for variable in variables {
                judge_setting_name(variable, info);
            }
        }
        _ => {}
    }
}

fn judge_setting_name(name: &ObjectName, info: &mut StatementInfo) {
    let setting = table_name(name).1.to_ascii_lowercase();
    if is_role_setting(&setting) {
        info.properties.set_role = true;
    } else if setting == "standard_conforming_strings" {
        info.properties.string_syntax_change = true;
    }
}

fn expr_table_name(expr: &Expr) -> Option<TableName> {
    match expr {
        Expr::Identifier(ident) => Some((None, ident_name(ident))),
        Expr::CompoundIdentifier(parts) => {
            let mut rev = parts.iter().rev();
            let name = rev.next().map(ident_name)?;
            Some((rev.next().map(ident_name), name))
        }
        _ => None,
    }
}

fn is_false(expr: &Expr) -> bool {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Boolean(b) => !b,
            Value::Number(n, _) => n.trim() == "0",
            other => other
                .clone()
                .into_string()
                .is_some_and(|s| matches!(s.to_ascii_lowercase().as_str(), "off" | "false" | "0")),
        },
        Expr::Identifier(i) => matches!(i.value.to_ascii_lowercase().as_str(), "off" | "false"),
        _ => false,
    }
}

/// The target of an UPDATE or DELETE: its table's name and alias.
fn factor_target(factor: &TableFactor) -> Option<Target> {
    let TableFactor::Table { name, alias, .. } = factor else {
        return None;
    };
    Some(Target {
        name: table_name(name).1,
        alias: alias.as_ref().map(|a| ident_name(&a.name)),
    })
}

impl Visitor for Collector {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        if self.probe.is_some() {
            return ControlFlow::Continue(());
        }
        let frame = self.frame_for(statement);
        self.stack.push(frame);
        if let Statement::Call(function) = statement {
            self.record_function(function);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        if self.probe.is_some() {
            return ControlFlow::Continue(());
        }
        let Some(frame) = self.stack.pop() else {
            return ControlFlow::Continue(());
        };
        let info = finish(frame);
        match self.stack.last_mut() {
            None => self.done = Some(info),
            Some(parent) if parent.explain_only => {
                for nested in info.walk() {
                    for f in &nested.functions {
                        push_unique(&mut parent.info.functions, f.clone());
                    }
                    parent.info.literal_sensitive |= nested.literal_sensitive;
                }
            }
            Some(parent) if parent.body.is_some_and(|b| std::ptr::eq(b, statement)) => {
                merge_body(&mut parent.info, info);
            }
            Some(parent) => parent.info.runs.push(info),
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(probe) = self.probe.as_mut() {
            probe.depth += 1;
            return ControlFlow::Continue(());
        }
        if let (Some(with), Some(frame)) = (&query.with, self.stack.last_mut()) {
            frame.ctes.extend(
                with.cte_tables
                    .iter()
                    .map(|cte| ident_name(&cte.alias.name)),
            );
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        if let Some(probe) = self.probe.as_mut() {
            probe.depth = probe.depth.saturating_sub(1);
        }
        ControlFlow::Continue(())
    }

    /// `SELECT … INTO` anywhere in the statement (a set operation's branch, a
    /// parenthesized query, a CTE) creates a table.
    fn pre_visit_select(&mut self, select: &sqlparser::ast::Select) -> ControlFlow<()> {
        if let (Some(into), Some(frame)) = (&select.into, self.stack.last_mut()) {
            if frame.info.kind == StatementKind::Select {
                frame.info.kind = StatementKind::Create;
            }
            frame
                .writes
                .extend(into.targets.iter().filter_map(expr_table_name));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                let function = function_name(name);
                if let Some(frame) = self.top() {
                    frame.skip_relations.push(table_name(name));
                    push_unique(&mut frame.info.functions, function);
                }
            }
            TableFactor::Function { name, .. } => {
                let function = function_name(name);
                if let Some(frame) = self.top() {
                    push_unique(&mut frame.info.functions, function);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let name = table_name(relation);
        if let Some(probe) = self.probe.as_mut() {
            if probe.depth > 0 && probe.target.name == name.1 {
                probe.reads_target = true;
            }
            return ControlFlow::Continue(());
        }
        if self.is_cte(&name) {
            return ControlFlow::Continue(());
        }
        if let Some(frame) = self.top() {
            if let Some(i) = frame.skip_relations.iter().position(|n| *n == name) {
                frame.skip_relations.swap_remove(i);
            } else {
                frame.reads.push(name);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Some(probe) = self.probe.as_mut() {
            match expr {
                Expr::Identifier(ident) => probe.column(std::slice::from_ref(ident)),
                Expr::CompoundIdentifier(parts) => probe.column(parts),
                _ => {}
            }
            return ControlFlow::Continue(());
        }
        if let Expr::Function(function) = expr {
            self.record_function(function);
        }
        ControlFlow::Continue(())
    }
}

/// Turns a frame's raw observations into the statement's objects: every write target
/// was also seen as a table reference once, which is not a read.
fn finish(mut frame: Frame) -> StatementInfo {
    for write in &frame.writes {
        if let Some(i) = frame.reads.iter().position(|r| r == write) {
            frame.reads.swap_remove(i);
        }
    }
    let mut objects: Vec<ObjectRef> = frame
        .writes
        .into_iter()
        .map(|n| (n, Access::Write))
        .chain(frame.reads.into_iter().map(|n| (n, Access::Read)))
        .map(|((schema, name), access)| ObjectRef {
            schema,
            name,
            access,
        })
        .collect();
    objects.sort();
    objects.dedup();
    frame.info.objects = objects;
    frame.info
}

/// Folds the body of `WITH … <dml>` into the statement it is.
fn merge_body(parent: &mut StatementInfo, body: StatementInfo) {
    parent.kind = body.kind;
    for object in body.objects {
        push_unique(&mut parent.objects, object);
    }
    parent.objects.sort();
    for function in body.functions {
        push_unique(&mut parent.functions, function);
    }
    let (p, b) = (&mut parent.properties, body.properties);
    p.without_where |= b.without_where;
    p.set_role |= b.set_role;
    p.string_syntax_change |= b.string_syntax_change;
    parent.literal_sensitive |= body.literal_sensitive;
    parent.runs.extend(body.runs);
}
