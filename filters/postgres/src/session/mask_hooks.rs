//! Where the session hands messages to its [`SessionMasker`]: every client
//! message as the server receives it, every server message after login, and
//! the bytes of server messages that stream through.

use super::ledger::{Injected, Ledger, Owner, Pending};
use super::{Dir, Disposition, Phase, Session};
use crate::masking::{OwnAnswer, OwnRequest, SessionMasker};
use crate::protocol::{self as pg, BackendMessage, FrontendMessage};
use gatehouse_core::identity::Identity;
use gatehouse_core::policy::Decision;
use gatehouse_core::record::{MaskingCounts, ParameterValue, StatementError};

impl Session {
    /// Masks what the server sends back from now on (see [`crate::masking`]).
    /// Whether the identity is exempt is decided at the first request after
    /// login, so an identity set by then ([`Session::set_identity`]) counts.
    pub fn set_masker(&mut self, masker: SessionMasker) {
        self.masker = Some(masker);
    }

    /// A client message: the engine's handling, plus what masking needs (the
    /// catalog lookup sent ahead of the first request, the describe of a
    /// COPY's columns sent ahead of its Query, the describe of a portal sent
    /// ahead of its Execute, and the requests the server will answer).
    pub(super) fn frontend_with_masking(
        &mut self,
        msg: &FrontendMessage<'_>,
        tag: u8,
        body: &[u8],
        now_us: u64,
    ) -> Result<Disposition, String> {
        if self.masker.is_none() || self.phase() != Phase::Ready {
            return self.on_frontend_message(msg, tag, now_us);
        }
        let identity = self
            .policy_identity
            .clone()
            .unwrap_or_else(|| Identity::claimed(self.client.user.clone()));
        let starts_request = !matches!(
            tag,
            pg::COPY_DATA_TAG | pg::COPY_DONE_TAG | pg::COPY_FAIL_TAG | pg::TERMINATE_TAG
        );
        // The masker's own requests wait only for their answers.
        let idle = self.ledger.client_requests() == 0;
        // Messages of the masker's own, sent ahead of the client's.
        let mut ahead = None;
        if let Some(masker) = self.masker.as_mut() {
            if !masker.exemption_decided() {
                let exempt = masker.policy().exempts(&identity);
                masker.set_exempt(exempt);
                let limit = masker.policy().limit_for(&identity).cloned();
                masker.set_limit(limit);
            }
            // A shadow session adds no traffic: without the catalog lookup its
            // table rules match by column name.
            if idle && starts_request && self.mode.is_enforce() {
                ahead = masker.take_lookup();
            }
        }
        if ahead.is_some() {
            self.ledger
                .requests
                .push_back(Pending::Injected(Injected::Masking(OwnRequest::Catalog)));
        }
        let may_describe_copy = idle
            && matches!(tag, pg::QUERY_TAG | pg::PARSE_TAG | pg::BIND_TAG)
            && self.mode.is_enforce();
        let action = self.on_frontend_message(msg, tag, now_us)?;
        if let Some(masker) = self.masker.as_mut() {
            match &action {
                Disposition::Pass => {
                    // The portal's columns, described ahead of its rows (a
                    // shadow session adds no traffic: its unknown columns
                    // are masked whole).
                    if self.mode.is_enforce()
                        && let Some(describe) = masker.describe_ahead_of_execute(msg)
                    {
                        ahead
                            .get_or_insert_with(Vec::new)
                            .extend_from_slice(&describe);
                    }
                    masker.on_frontend(msg, &mut self.ledger);
                    // A COPY's columns, described ahead of it (see
                    // `crate::masking::copy`).
                    if may_describe_copy
                        && let Some((describe, request)) = masker.take_copy_describe()
                    {
                        self.ledger.insert_masking_ahead_of_last(request);
                        ahead
                            .get_or_insert_with(Vec::new)
                            .extend_from_slice(&describe);
                    }
                }
                Disposition::Replace(bytes) => observe_frames(masker, &mut self.ledger, bytes),
                Disposition::Drop | Disposition::Withhold => {}
            }
        }
        Ok(match (ahead, action) {
            (None, action) => action,
            (Some(mut bytes), Disposition::Pass) => {
                bytes.push(tag);
                let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
                bytes.extend_from_slice(&len.to_be_bytes());
                bytes.extend_from_slice(body);
                Disposition::Replace(bytes)
            }
            (Some(mut bytes), Disposition::Replace(rest)) => {
                bytes.extend_from_slice(&rest);
                Disposition::Replace(bytes)
            }
            (Some(bytes), Disposition::Drop | Disposition::Withhold) => Disposition::Replace(bytes),
        })
    }

    /// A server message: the masker's rewrite, unless the engine itself
    /// replaces or drops the message. Decoded once, here, except a DataRow
    /// that only masking reads.
    pub(super) fn backend_with_masking(
        &mut self,
        tag: u8,
        body: &[u8],
        now_us: u64,
    ) -> Result<Disposition, String> {
        if tag == pg::DATA_ROW_TAG
            && self.masking_backend()
            && !self.ledger.front_is_injected(Owner::Masking)
        {
            // The hottest path: the row is read in place, not decoded first.
            let masked = match self.masker.as_mut() {
                Some(masker) => masker.on_data_row(body).map_err(|e| e.to_string())?,
                None => Disposition::Pass,
            };
            if !matches!(masked, Disposition::Drop | Disposition::Withhold) {
                // Held DataRows are counted here (streamed ones when they end).
                self.count_row();
            }
            return Ok(masked);
        }
        let msg = BackendMessage::decode(tag, body).map_err(|e| e.to_string())?;
        self.backend_decoded_with_masking(msg, tag, body, now_us)
    }

    /// Whether server messages go through the masker first.
    fn masking_backend(&self) -> bool {
        self.masker.is_some()
            && matches!(self.phase(), Phase::Ready | Phase::Finished)
            && !self.stage.owes_client_error()
    }

    /// [`Session::backend_with_masking`] for a message already decoded: the
    /// masker reads it, then the engine.
    pub(super) fn backend_decoded_with_masking(
        &mut self,
        msg: BackendMessage<'_>,
        tag: u8,
        body: &[u8],
        now_us: u64,
    ) -> Result<Disposition, String> {
        if !self.masking_backend() {
            return self.on_backend_message(msg, tag, body, now_us);
        }
        if let (Some(request), Some(masker)) = (self.ledger.masking_front(), self.masker.as_mut()) {
            match masker.on_own_answer(request, &msg) {
                OwnAnswer::Consumed => return Ok(Disposition::Drop),
                OwnAnswer::Answered => {
                    self.ledger.requests.pop_front();
                    return Ok(Disposition::Drop);
                }
                OwnAnswer::Client => {}
            }
        }
        let masked = match self.masker.as_mut() {
            Some(masker) => masker.on_backend(&msg),
            None => Disposition::Pass,
        };
        if masked == Disposition::Drop {
            return Ok(Disposition::Drop);
        }
        if tag == pg::COPY_DATA_TAG {
            // Nothing else in the engine acts on a row after login.
            return Ok(masked);
        }
        let action = self.on_backend_message(msg, tag, body, now_us)?;
        Ok(match (action, masked) {
            (Disposition::Pass, Disposition::Replace(bytes)) => Disposition::Replace(bytes),
            // Followed by the engine, withheld from the client.
            (_, Disposition::Withhold) => Disposition::Withhold,
            (action, _) => action,
        })
    }

    /// Starts the in-place rewrite of a server message that streams through.
    pub(super) fn begin_stream_mask(&mut self, dir: Dir, tag: u8, body_len: usize) {
        if dir != Dir::Backend
            || !matches!(self.phase(), Phase::Ready | Phase::Finished)
            || self.ledger.front_is_injected(Owner::Masking)
        {
            return;
        }
        self.stream_mask = self
            .masker
            .as_mut()
            .and_then(|m| m.begin_stream(tag, body_len));
    }

    /// Rewrites the next bytes of a streaming server message, when masked.
    pub(super) fn stream_mask_bytes(&mut self, dir: Dir, bytes: &[u8]) -> Option<Vec<u8>> {
        if dir != Dir::Backend {
            return None;
        }
        let rewrite = self.stream_mask.as_mut()?;
        let mut out = Vec::with_capacity(bytes.len());
        rewrite.feed(bytes, &mut out);
        Some(out)
    }

    /// A streamed server message ended: its counts go to the masker.
    pub(super) fn end_stream_mask(&mut self, dir: Dir) {
        if dir != Dir::Backend {
            return;
        }
        if let (Some(rewrite), Some(masker)) = (self.stream_mask.take(), self.masker.as_mut()) {
            masker.end_stream(rewrite);
        }
    }

    /// A policy decision with masking's own say added: a text whose lineage
    /// would carry masked values where they are not masked (or, as the
    /// masking policy says, compute result columns from them) is denied,
    /// even when the policy would let it run once approved (an approval is
    /// for the policy's concern, not a way around masking).
    pub(super) fn with_masking_refusal(
        &mut self,
        sql: &[u8],
        decision: Option<Decision>,
    ) -> Option<Decision> {
        let lexing = self.lexing();
        if let Some(masker) = self.masker.as_mut() {
            masker.set_lexing(lexing);
        }
        if decision
            .as_ref()
            .is_some_and(|d| d.action == gatehouse_core::policy::Action::Deny)
        {
            return decision;
        }
        let identity = self
            .policy_identity
            .clone()
            .unwrap_or_else(|| Identity::claimed(self.client.user.clone()));
        let Some(masker) = self.masker.as_mut() else {
            return decision;
        };
        if !masker.exemption_decided() {
            let exempt = masker.policy().exempts(&identity);
            masker.set_exempt(exempt);
            let limit = masker.policy().limit_for(&identity).cloned();
            masker.set_limit(limit);
        }
        match masker.refusal(sql) {
            Some(reason) => Some(Decision {
                action: gatehouse_core::policy::Action::Deny,
                rule: Some("masking".into()),
                message: Some(format!("gatehouse: refused by masking: {reason}")),
            }),
            None => decision,
        }
    }

    /// A statement text as records hold it (see [`crate::masking`]'s
    /// records module): masked unless masking is off or says `clear`.
    pub(super) fn text_for_record(&self, text: String) -> String {
        match self.masker.as_ref() {
            Some(masker) => masker.record_text(text),
            None => text,
        }
    }

    /// Bind parameters as records hold them.
    pub(super) fn parameters_for_record(
        &self,
        statement: &[u8],
        values: Vec<ParameterValue>,
    ) -> Vec<ParameterValue> {
        let Some(masker) = self.masker.as_ref() else {
            return values;
        };
        let text = self
            .ledger
            .statements
            .get(super::server_name(statement))
            .map(|s| &*s.text.text.0);
        masker.record_parameters(text, values)
    }

    /// A server error as records hold it.
    pub(super) fn error_for_record(&self, mut error: StatementError) -> StatementError {
        let Some(masker) = self.masker.as_ref() else {
            return error;
        };
        let text = self
            .ledger
            .answering_run()
            .and_then(|r| r.text.as_ref())
            .map(|t| &*t.text.0);
        error.message = masker.record_error_message(error.message, text);
        error
    }

    /// What masking did since the previous statement record.
    pub(super) fn take_masking_counts(&mut self) -> Option<MaskingCounts> {
        self.masker.as_mut().and_then(SessionMasker::take_counts)
    }
}

/// Messages the engine wrote in place of the client's, as the server gets
/// them (every text among them is the engine's own).
fn observe_frames(masker: &mut SessionMasker, ledger: &mut Ledger, mut bytes: &[u8]) {
    while let Some((&tag, rest)) = bytes.split_first() {
        let Some((len, rest)) = rest.split_at_checked(4) else {
            return;
        };
        let len = len
            .try_into()
            .map(u32::from_be_bytes)
            .map_or(0, |l| l as usize);
        let Some((body, rest)) = rest.split_at_checked(len.saturating_sub(4)) else {
            return;
        };
        if let Ok(msg) = FrontendMessage::decode(tag, body) {
            masker.on_engine_frontend(&msg, ledger);
        }
        bytes = rest;
    }
}
