//! A bounded decision cache, so the same statement shape is parsed once per policy.
//!
//! The key is the session's [`Applicability`] (which rules can apply to it at all),
//! the `standard_conforming_strings` setting the text was lexed under, and the
//! text's fingerprint ([`lexer::fingerprint_into`]): each
//! token's kind and form with names as the server resolves them, comments and layout
//! removed, and every string and number constant replaced by a placeholder of its
//! kind. `SELECT abalance FROM pgbench_accounts WHERE aid = 42` and `… aid = 77`
//! share one entry; `"u&x"` and `U&"u&x"`, or a string and a quoted name, never do.
//!
//! Why sharing across constants is safe: the lexer that fingerprints is the one that
//! splits statements, so constants cannot hide statements or keywords, and identifiers
//! (quoted ones verbatim) are kept. Analysis only looks at constants in a few places:
//! the setting name given to `set_config` (`'role'` or `'search_path'`), the value
//! given to `client_encoding`, a LIKE pattern in a write's WHERE and the value of
//! `EXPLAIN (ANALYZE <const>)`. An analysis that did is marked literal-sensitive;
//! its fingerprint entry then only records that fact, and decisions for that shape are
//! cached under the full text with constants kept, so `set_config('role', …)` can never
//! reuse the decision made for `set_config('application_name', …)`. COPY targets need
//! no such care: PROGRAM, STDIN and STDOUT are keywords, and every file name is a
//! server file.
//!
//! Eviction is CLOCK (second chance): a hit marks the entry; the hand clears marks and
//! replaces the first unmarked entry. Entries whose key would exceed `max_key_len` are
//! not cached, which bounds memory at about `capacity × max_key_len`.

use super::{Applicability, PgPolicy, SessionContext, Verdict};
use crate::sql::{self, lexer};
use std::collections::HashMap;

enum Entry {
    Decided(Verdict),
    /// Decisions for this shape depend on its constants: look up the exact text.
    LiteralSensitive,
}

struct Slot {
    key: String,
    entry: Entry,
    referenced: bool,
}

/// Memoized decisions of one policy version; keep one per worker.
pub struct PolicyCache {
    capacity: usize,
    max_key_len: usize,
    policy: Option<u64>,
    index: HashMap<String, usize>,
    slots: Vec<Slot>,
    hand: usize,
    hits: u64,
    misses: u64,
}

impl Default for PolicyCache {
    /// 1024 entries of at most 8 KiB keys.
    fn default() -> Self {
        Self::new(1024, 8 * 1024)
    }
}

impl PolicyCache {
    /// A cache of at most `capacity` entries whose keys are at most `max_key_len` bytes.
    pub fn new(capacity: usize, max_key_len: usize) -> Self {
        Self {
            capacity,
            max_key_len,
            policy: None,
            index: HashMap::new(),
            slots: Vec::new(),
            hand: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// (hits, misses) since creation.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.hand = 0;
    }

    /// [`PgPolicy::decide`], answered from the cache when this shape was seen before
    /// under the same policy by a session to which the same rules apply.
    pub fn decide(&mut self, policy: &PgPolicy, ctx: &SessionContext, sql: &str) -> Verdict {
        if self.policy != Some(policy.fingerprint()) {
            self.clear();
            self.policy = Some(policy.fingerprint());
        }
        let applicable = policy.applicability(ctx);
        if sql.len() > policy.limits().max_sql_len {
            return policy.judge(&applicable, &sql::analyze(sql, policy.limits()));
        }
        let lexed = match policy.lex(ctx, sql) {
            Ok(lexed) => lexed,
            Err(refusal) => return refusal,
        };
        let scs = ctx.lexing.standard_conforming_strings;
        let key_for = |keep_literals: bool| key(&applicable, scs, sql, &lexed, keep_literals);
        let shape_key = key_for(false);
        let exact = match self.lookup(&shape_key) {
            Some(Entry::Decided(verdict)) => {
                let verdict = verdict.clone();
                self.hits += 1;
                return verdict;
            }
            Some(Entry::LiteralSensitive) => {
                let exact_key = key_for(true);
                if let Some(Entry::Decided(verdict)) = self.lookup(&exact_key) {
                    let verdict = verdict.clone();
                    self.hits += 1;
                    return verdict;
                }
                Some(exact_key)
            }
            None => None,
        };
        self.misses += 1;
        let analysis = sql::analyze_lexed(sql, &lexed, policy.limits());
        let verdict = policy.judge(&applicable, &analysis);
        if analysis.literal_sensitive() {
            let exact_key = exact.unwrap_or_else(|| key_for(true));
            self.insert(shape_key, Entry::LiteralSensitive);
            self.insert(exact_key, Entry::Decided(verdict.clone()));
        } else {
            self.insert(shape_key, Entry::Decided(verdict.clone()));
        }
        verdict
    }

    fn lookup(&mut self, key: &str) -> Option<&Entry> {
        let slot = self.slots.get_mut(*self.index.get(key)?)?;
        slot.referenced = true;
        Some(&slot.entry)
    }

    fn insert(&mut self, key: String, entry: Entry) {
        if self.capacity == 0 || key.len() > self.max_key_len {
            return;
        }
        if let Some(slot) = self.index.get(&key).and_then(|&i| self.slots.get_mut(i)) {
            slot.entry = entry;
            slot.referenced = true;
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(key.clone(), self.slots.len());
            self.slots.push(Slot {
                key,
                entry,
                referenced: false,
            });
            return;
        }
        // Second chance: at most two sweeps find an unmarked slot.
        let victim = loop {
            let hand = self.hand % self.slots.len();
            self.hand = hand + 1;
            match self.slots.get_mut(hand) {
                Some(slot) if slot.referenced => slot.referenced = false,
                Some(_) => break hand,
                None => return,
            }
        };
        if let Some(slot) = self.slots.get_mut(victim) {
            self.index.remove(&slot.key);
            self.index.insert(key.clone(), victim);
            *slot = Slot {
                key,
                entry,
                referenced: false,
            };
        }
    }
}

/// Applicability, the lexing setting, then the text's fingerprint (with or without
/// its constants): token kinds and forms, resolved names, statement boundaries.
fn key(
    applicable: &Applicability,
    standard_conforming_strings: bool,
    sql: &str,
    lexed: &lexer::Lexed,
    keep_literals: bool,
) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    applicable.write_key(&mut out);
    out.push(if standard_conforming_strings {
        's'
    } else {
        'e'
    });
    out.push(if keep_literals { '=' } else { '~' });
    if lexed.error.is_some() {
        out.push_str("<refused>");
    }
    lexer::fingerprint_into(sql, &lexed.tokens, keep_literals, &mut out);
    out
}
