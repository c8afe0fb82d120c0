//! The policy a [`Session`](crate::Session) consults for every Query and Parse text.

use crate::policy::{PgPolicy, PolicyCache, SessionContext, Verdict};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// Judges the statement texts of a session. Implemented by [`CachedPolicy`]; tests
/// and hosts may supply their own.
pub trait StatementPolicy {
    /// The decision about a whole Query or Parse text for the session `ctx`.
    fn decide(&mut self, ctx: &SessionContext, sql: &str) -> Verdict;
}

/// A compiled policy with a decision cache that the sessions of one worker share
/// (sessions of a worker run one at a time, so an `Rc<RefCell<…>>` suffices).
#[derive(Clone)]
pub struct CachedPolicy {
    policy: Arc<PgPolicy>,
    cache: Rc<RefCell<PolicyCache>>,
}

impl CachedPolicy {
    /// `policy` judged through `cache`; clone the result for every session of the worker.
    pub fn new(policy: Arc<PgPolicy>, cache: Rc<RefCell<PolicyCache>>) -> Self {
        Self { policy, cache }
    }

    pub fn policy(&self) -> &PgPolicy {
        &self.policy
    }
}

impl StatementPolicy for CachedPolicy {
    fn decide(&mut self, ctx: &SessionContext, sql: &str) -> Verdict {
        match self.cache.try_borrow_mut() {
            Ok(mut cache) => cache.decide(&self.policy, ctx, sql),
            // Never borrowed across a call; judge uncached rather than fail.
            Err(_) => self.policy.decide(ctx, sql),
        }
    }
}

impl StatementPolicy for Arc<PgPolicy> {
    fn decide(&mut self, ctx: &SessionContext, sql: &str) -> Verdict {
        PgPolicy::decide(self, ctx, sql)
    }
}
