//! Approval records: every state change of a request, in the same family as
//! the filters' records (`type`, `schema`, `time`, `gatehouse_version`; see
//! `docs/records.md` and `schemas/approval-record.schema.json`).
//!
//! | field | JSON | meaning |
//! |---|---|---|
//! | `type` | string | `approval.requested`, `.reviewed` (an approval short of the number needed), `.approved`, `.denied`, `.expired`, `.used` |
//! | `sequence` | integer | the request's own event count, from 1: a gap means a lost record |
//! | `request_id` | string | the request |
//! | `state` | string | its state after the change |
//! | `actor` | object | `{"subject", "groups"?}` who caused it (`gatehouse` for an expiry by time) |
//! | `forced` | bool | present (true) when a break-glass self-approval granted it |
//! | `request` | object | the whole request after the change: requester, reason, target, requirement, reviews, grant times |

use super::request::{ApprovalRequest, Event, Principal, State};
use crate::record::{SCHEMA_VERSION, Timestamp};
use serde::Serialize;

/// The actor named when time, not a person, changed a request.
pub const SYSTEM_ACTOR: &str = "gatehouse";

/// One approval record.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRecord<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub schema: u32,
    pub time: Timestamp,
    pub gatehouse_version: &'static str,
    pub sequence: u64,
    pub request_id: &'a str,
    pub state: State,
    pub actor: &'a Principal,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    pub request: &'a ApprovalRequest,
}

impl<'a> ApprovalRecord<'a> {
    /// The record of `event` on `request` (already applied), caused by `actor`
    /// at `now_us`, the request's `sequence`-th event.
    pub fn new(
        event: Event,
        request: &'a ApprovalRequest,
        actor: &'a Principal,
        sequence: u64,
        now_us: u64,
    ) -> Self {
        ApprovalRecord {
            kind: event.record_type(),
            schema: SCHEMA_VERSION,
            time: Timestamp(now_us),
            gatehouse_version: crate::build::VERSION,
            sequence,
            request_id: &request.id,
            state: request.state,
            actor,
            forced: request.forced && matches!(event, Event::Approved | Event::Used),
            request,
        }
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        crate::record::to_json_line(self).unwrap_or_default()
    }
}
