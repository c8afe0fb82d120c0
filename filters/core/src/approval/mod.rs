//! Approvals: a person other than the requester lets one risky statement or
//! request through (single use), or opens a time window on a rule.
//!
//! - [`requirement`]: what a `require_approval` rule asks for, parsed from policy;
//! - [`request`]: the request and grant state machine the approval service runs;
//! - [`grant`]: what the filters learn from the service and how they look it up;
//! - [`filings`]: requests filed that no publication names yet, shared by the workers;
//! - [`record`]: the records every state change leaves.
//!
//! Pure logic, no I/O: the approval service (`gatehouse-approvals`) stores the
//! requests and the filters' glue carries the calls.

pub mod duration;
pub mod filings;
pub mod grant;
pub mod record;
pub mod request;
pub mod requirement;
pub mod service;

pub use duration::{format_duration, parse_duration};
pub use filings::{FiledNotes, Filings, LocalFilings, RivalFiling};
pub use grant::{ApprovalRef, Grant, GrantBook, GrantsDocument, Lookup, PendingRef};
pub use request::{
    ApprovalError, ApprovalRequest, Event, NewRequest, Principal, Review, State, Target, Verdict,
};
pub use requirement::{ApprovalRequirement, GrantKind, Holding, rule_requirement};
pub use service::ApprovalServiceConfig;
