//! Lineage ([`crate::sql::lineage`]) applied to masking: each Query and Parse
//! text is analyzed once, when it is judged, and its lineage follows the
//! statement (prepared statements and portals keep theirs) to the results it
//! produces. A result column that is a plain reference to a table or view
//! column is masked by its rule from the RowDescription's table OID and
//! attribute number; a computed column (table OID 0) is masked whole when
//! lineage says a masked column, or something opaque, flows into it:
//! - from a rule's column: with that rule's style, except that a style that
//!   shows part of the value (`partial`) becomes `redact` (the part it would
//!   keep need not be the part the rule meant to show: `reverse(card)`);
//! - opaque: redacted.
//!
//! A text whose lineage is unknown (never seen, unreadable, over the limits)
//! is opaque: every computed column is masked.
//!
//! Statements that would carry masked values somewhere they are not masked
//! (see [`Refusal`]) are refused before they reach the server, and so are
//! those with tainted or opaque result columns when the policy's
//! `lineage.derived` or `lineage.opaque` says `refuse`.
//!
//! The names lineage follows are the policy's table rules and, once the
//! catalog lookup has answered, the view columns it found; a text analyzed
//! before that is analyzed again when its result arrives.
//!
//! Lineage does not depend on constants, so each session keeps the lineage
//! of its recent texts by their normalized form (constants replaced): a
//! statement sent again with other values is not parsed again.

use super::SessionMasker;
use super::catalog::Resolved;
use super::config::{LineageAction, MaskingPolicy, RuleTarget};
use crate::policy::Lexing;
use crate::sql::lexer::{self, Lexed, Settings};
use crate::sql::lineage::{self, Outputs, Refusal, SourceColumn, Sources, StatementLineage, Taint};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Normalized texts whose lineage a session keeps; past this the cache
/// starts afresh.
const MAX_CACHED_TEXTS: usize = 64;
/// Longer normalized texts are not kept (a session's cache stays small).
const MAX_CACHED_TEXT_LEN: usize = 4 * 1024;

/// Lineage of recent texts by normalized form, for one generation of the
/// names lineage follows.
#[derive(Debug, Default)]
pub(super) struct LineageCache {
    generation: u64,
    texts: HashMap<String, Rc<[StatementLineage]>>,
}

/// The lineage of one Query or Parse text, per statement.
#[derive(Debug)]
pub(super) struct TextLineage {
    /// The text and the settings it was lexed under, kept while the names
    /// lineage follows may still grow (the catalog lookup has not answered).
    sql: Option<(Box<str>, Settings)>,
    analyzed: RefCell<(u64, Rc<[StatementLineage]>)>,
}

impl TextLineage {
    /// The lineage of a text of the engine's own (a denial's raising block):
    /// it redefines no name, and what it would return is unknown (it
    /// returns nothing: it raises).
    pub(super) fn engine_text() -> Self {
        TextLineage {
            sql: None,
            analyzed: RefCell::new((0, Rc::from([]))),
        }
    }

    /// The lineage of statement `index`; `None` when unknown.
    fn statement(&self, index: usize) -> Option<StatementLineage> {
        self.analyzed.borrow().1.get(index).cloned()
    }

    /// An estimate of the bytes it holds.
    pub(super) fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.sql.as_ref().map_or(0, |(sql, _)| sql.len())
            + statements_bytes(&self.analyzed.borrow().1)
    }

    /// Whether statement `index` reads masked columns (unknown: it may).
    pub(super) fn reads_masked(&self, index: usize) -> bool {
        self.analyzed
            .borrow()
            .1
            .get(index)
            .is_none_or(|s| s.reads_masked)
    }

    /// Whether any of its statements creates or drops prepared statements or
    /// portals by name.
    pub(super) fn redefines_names(&self) -> bool {
        self.analyzed.borrow().1.iter().any(|s| s.redefines_names)
    }
}

/// An estimate of the bytes the lineage of a text's statements holds.
fn statements_bytes(statements: &[StatementLineage]) -> usize {
    use crate::sql::lineage::Output;
    use std::mem::size_of;
    statements
        .iter()
        .map(|s| {
            size_of::<StatementLineage>()
                + match &s.outputs {
                    Outputs::Items(items) => items
                        .iter()
                        .map(|o| {
                            size_of::<Output>()
                                + match o {
                                    Output::Expand(taints) => taints.len() * size_of::<Taint>(),
                                    _ => 0,
                                }
                        })
                        .sum(),
                    _ => 0,
                }
        })
        .sum()
}

/// The policy's table and field-name rules, as names lineage follows.
pub(super) fn policy_sources(policy: &MaskingPolicy) -> Sources {
    let mut sources = Sources::default();
    for (i, rule) in policy.rules.iter().enumerate() {
        match &rule.target {
            RuleTarget::Column { table, column, .. } => sources.columns.push(SourceColumn {
                table: table.clone(),
                column: column.clone(),
                rule: i,
            }),
            RuleTarget::FieldName(pattern) => sources.patterns.push((pattern.clone(), i)),
        }
    }
    sources
}

impl SessionMasker {
    /// Whether lineage applies: there are rules on columns, and the identity
    /// is not exempt.
    fn lineage_applies(&self) -> bool {
        !self.sources.is_empty() && !self.is_exempt()
    }

    /// A view (or table) column the catalog lookup found under a rule.
    pub(super) fn add_catalog_source(&mut self, resolved: &Resolved) {
        let source = SourceColumn {
            table: resolved.relation.clone(),
            column: resolved.column.clone(),
            rule: resolved.rule,
        };
        if !self.sources.columns.contains(&source) {
            Rc::make_mut(&mut self.sources).columns.push(source);
            self.sources_generation += 1;
        }
    }

    /// How the server will lex the texts judged from now on: the settings it
    /// last reported, and whether a request in flight may change them.
    pub fn set_lexing(&mut self, lexing: Lexing) {
        self.lexing = lexing;
    }

    /// The lineage of a Query or Parse text (the last one is kept: a text is
    /// judged, then seen again as it goes to the server); `None` (unknown)
    /// when lineage does not apply or the text cannot be read for certain.
    pub(super) fn text_lineage(&mut self, sql: &[u8]) -> Option<Rc<TextLineage>> {
        if !self.lineage_applies() {
            return None;
        }
        if let Some((last_sql, lexing, last)) = &self.last_text
            && last_sql.as_slice() == sql
            && *lexing == self.lexing
        {
            return Some(Rc::clone(last));
        }
        let text = std::str::from_utf8(sql).ok()?;
        if text.len() > lineage::MAX_SQL_LEN {
            return None;
        }
        // Read as the server will read it; a text whose reading a setting in
        // flight may change is unknown.
        let lexed = self.lexing.lex(text)?;
        let statements = self.analyze_cached(text, &lexed);
        let settings = self.lexing.settings();
        let lineage = Rc::new(TextLineage {
            sql: (!self.catalog_answered()).then(|| (text.into(), settings)),
            analyzed: RefCell::new((self.sources_generation, statements)),
        });
        self.last_text = Some((sql.to_vec(), self.lexing.clone(), Rc::clone(&lineage)));
        Some(lineage)
    }

    /// `lineage::analyze_lexed`, through the session's cache of normalized
    /// texts (keyed by the statements' tokens, constants left out).
    fn analyze_cached(&mut self, text: &str, lexed: &Lexed) -> Rc<[StatementLineage]> {
        let mut key = String::with_capacity(text.len());
        for tokens in lexed.statement_tokens() {
            lexer::fingerprint_into(text, tokens, false, &mut key);
            key.push(';');
        }
        let cache = &mut self.lineage_cache;
        if cache.generation != self.sources_generation || cache.texts.len() >= MAX_CACHED_TEXTS {
            cache.texts.clear();
            cache.generation = self.sources_generation;
        }
        let cacheable = lexed.error.is_none();
        if cacheable && let Some(hit) = cache.texts.get(&key) {
            return Rc::clone(hit);
        }
        let statements: Rc<[StatementLineage]> =
            lineage::analyze_lexed(text, lexed, &self.sources).into();
        if cacheable && key.len() <= MAX_CACHED_TEXT_LEN {
            cache.texts.insert(key, Rc::clone(&statements));
        }
        statements
    }

    /// An estimate of the bytes lineage holds beyond the names it tracks:
    /// the names it follows, the last text and the cache.
    pub(super) fn lineage_held_bytes(&self) -> usize {
        let sources: usize = self
            .sources
            .columns
            .iter()
            .map(|c| 64 + c.table.len() + c.column.len())
            .sum();
        let last = self
            .last_text
            .as_ref()
            .map_or(0, |(sql, _, lineage)| sql.len() + lineage.held_bytes());
        let cache: usize = self
            .lineage_cache
            .texts
            .iter()
            .map(|(key, statements)| 64 + key.len() + statements_bytes(statements))
            .sum();
        sources + last + cache
    }

    /// Why a Query or Parse text must be refused, as the client's error
    /// message; `None` when it may run.
    pub fn refusal(&mut self, sql: &[u8]) -> Option<String> {
        if !self.lineage_applies() {
            return None;
        }
        let Some(lineage) = self.text_lineage(sql) else {
            // Too long or not UTF-8 to analyze: nothing can be followed.
            return Some(Refusal::Unreadable.to_string());
        };
        let statements = Rc::clone(&lineage.analyzed.borrow().1);
        for statement in statements.iter() {
            if let Some(refusal) = &statement.refusal {
                return Some(refusal.to_string());
            }
            if self.policy.derived == LineageAction::Refuse && statement.derived {
                return Some("a result column would be computed from masked columns".into());
            }
            if self.policy.opaque == LineageAction::Refuse && statement.opaque {
                return Some(
                    "a result column would be computed by something masking cannot follow".into(),
                );
            }
        }
        None
    }

    /// The taint of each of `n` computed result columns of statement `index`
    /// of a text; every column opaque when the lineage is unknown.
    pub(super) fn column_taints(
        &self,
        lineage: Option<&TextLineage>,
        index: usize,
        n: usize,
    ) -> Vec<Taint> {
        if !self.lineage_applies() {
            return vec![Taint::default(); n];
        }
        let Some(lineage) = lineage else {
            return vec![Taint::opaque(); n];
        };
        self.refresh(lineage);
        match lineage.statement(index) {
            Some(statement) => lineage::column_taints(&statement.outputs, n),
            None => lineage::column_taints(&Outputs::Opaque, n),
        }
    }

    /// The taints of a COPY's columns, from the query its description ran.
    pub(super) fn copy_taints(&mut self, describe_sql: Option<&str>, n: usize) -> Vec<Taint> {
        let lineage = describe_sql.and_then(|sql| self.text_lineage(sql.as_bytes()));
        self.column_taints(lineage.as_deref(), 0, n)
    }

    /// Analyzes a text again when the names lineage follows grew since.
    fn refresh(&self, lineage: &TextLineage) {
        let stale = lineage.analyzed.borrow().0 != self.sources_generation;
        if let (true, Some((sql, settings))) = (stale, lineage.sql.as_ref()) {
            let lexed = lexer::tokenize_with(sql, *settings);
            let statements: Rc<[StatementLineage]> =
                lineage::analyze_lexed(sql, &lexed, &self.sources).into();
            *lineage.analyzed.borrow_mut() = (self.sources_generation, statements);
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::masking::MaskingPolicy;
    use std::sync::Arc;

    fn masker() -> SessionMasker {
        let policy =
            MaskingPolicy::from_json(include_bytes!("../../../../examples/postgres-masking.json"))
                .unwrap();
        let mut masker = SessionMasker::new(Arc::new(policy));
        masker.set_exempt(false);
        masker
    }

    fn statements(lineage: &TextLineage) -> Rc<[StatementLineage]> {
        Rc::clone(&lineage.analyzed.borrow().1)
    }

    #[test]
    fn a_text_sent_again_with_other_constants_is_not_parsed_again() {
        let mut masker = masker();
        let a = masker
            .text_lineage(b"select upper(ssn) from customers where id = 1")
            .unwrap();
        let b = masker
            .text_lineage(b"select upper(ssn) from customers where id = 2")
            .unwrap();
        assert!(Rc::ptr_eq(&statements(&a), &statements(&b)));
        let other = masker
            .text_lineage(b"select upper(email) from customers where id = 2")
            .unwrap();
        assert!(!Rc::ptr_eq(&statements(&a), &statements(&other)));
        // A text whose constant is where a sink is (COPY's target) is another text.
        let to_stdout = masker.text_lineage(b"copy customers to stdout").unwrap();
        let to_file = masker.text_lineage(b"copy customers to '/tmp/x'").unwrap();
        assert!(statements(&to_stdout)[0].refusal.is_none());
        assert!(statements(&to_file)[0].refusal.is_some());
    }

    #[test]
    fn texts_are_read_under_the_settings_the_server_reports() {
        // Under standard_conforming_strings = off, `'\''` is one quote and the
        // call is code; under on, the text ends inside a string.
        let sql = br"select '\'', upper(ssn) from customers";
        let mut masker = masker();
        assert!(masker.refusal(sql).is_some());
        let off = Lexing {
            standard_conforming_strings: false,
            ..Lexing::default()
        };
        masker.set_lexing(off.clone());
        assert_eq!(masker.refusal(sql), None);
        let lineage = masker.text_lineage(sql).unwrap();
        let taints = masker.column_taints(Some(&lineage), 0, 2);
        assert!(taints[0].is_clean());
        assert!(taints[1].has_rules());
        // A request in flight may switch the setting: the reading is unknown.
        masker.set_lexing(Lexing {
            settings_in_flight: true,
            ..off
        });
        assert!(masker.text_lineage(sql).is_none());
        assert!(masker.refusal(sql).is_some());
        assert!(
            masker
                .text_lineage(b"select upper(ssn) from customers")
                .is_some()
        );
    }

    #[test]
    fn exempt_identities_and_policies_without_column_rules_analyze_nothing() {
        let mut masker = masker();
        masker.set_exempt(true);
        assert!(masker.text_lineage(b"select ssn from customers").is_none());
        assert_eq!(
            masker.refusal(b"select pg_notify('c', ssn) from customers"),
            None
        );
        let mut plain = SessionMasker::new(Arc::new(MaskingPolicy::from_json(b"{}").unwrap()));
        plain.set_exempt(false);
        assert_eq!(
            plain.refusal(b"select pg_notify('c', ssn) from customers"),
            None
        );
    }
}
