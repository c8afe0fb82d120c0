//! Record delivery state: the bounded outbox of the audit service.
//!
//! Producers hand over records as finished JSON lines. The [`Outbox`] holds them
//! until the sink has accepted each one, and decides what to send next:
//!
//! - **Bounded.** At most [`DeliveryConfig::max_buffer`] records are held (queued,
//!   awaiting retry, or in flight). Past the bound the *newest* record is dropped
//!   and counted; once space frees, a `gatehouse.records_dropped` record with the
//!   count is queued like any other record, so the loss is itself in the log.
//! - **In order, with a window.** Up to [`DeliveryConfig::max_in_flight`] records
//!   are in flight at once, oldest first. A record whose delivery failed goes back
//!   ahead of everything not yet sent, in its original order.
//! - **Backoff.** After a failure nothing is sent until the backoff expires (doubling
//!   from [`DeliveryConfig::initial_backoff_us`] up to
//!   [`DeliveryConfig::max_backoff_us`]); then one record probes the sink, and the
//!   full window resumes after a success.
//! - **Permanent rejections** (the sink says the record itself is bad) are dropped
//!   and counted, not retried forever.
//!
//! Sans-IO: the caller passes the current time (unix microseconds) and performs
//! the sends.

use crate::record::{SCHEMA_VERSION, Timestamp};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// Record type of the notice queued after records were dropped.
pub const DROPPED_RECORD_TYPE: &str = "gatehouse.records_dropped";

/// Limits and timings of delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Records held at most (queued + awaiting retry + in flight).
    pub max_buffer: usize,
    /// Records sent and not yet answered, at most.
    pub max_in_flight: usize,
    /// Largest record accepted, in bytes.
    pub max_record_bytes: usize,
    /// First backoff after a failure.
    pub initial_backoff_us: u64,
    /// Backoff ceiling.
    pub max_backoff_us: u64,
    /// Build version written into drop notices.
    pub gatehouse_version: &'static str,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_buffer: 100_000,
            max_in_flight: 64,
            max_record_bytes: 1 << 20,
            initial_backoff_us: 100_000,
            max_backoff_us: 5_000_000,
            gatehouse_version: crate::build::VERSION,
        }
    }
}

/// Why a record offered to the outbox was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The buffer is at its bound; the record was dropped and counted.
    Full,
    /// The record exceeds `max_record_bytes`; dropped and counted.
    TooLarge,
    /// The record is empty or spans several lines; dropped and counted.
    NotOneLine,
}

/// Identifies one send, from [`Outbox::next_send`] to its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

/// Running totals, for the service's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryTotals {
    /// Records accepted into the outbox (drop notices included).
    pub accepted: u64,
    /// Records the sink accepted.
    pub delivered: u64,
    /// Records dropped: over the bound, oversized, malformed or rejected by the sink.
    pub dropped: u64,
    /// Failed sends that were queued again.
    pub retried: u64,
}

/// Records dropped since the last notice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PendingDrops {
    count: u64,
    first_us: u64,
    last_us: u64,
}

#[derive(Serialize)]
struct DropNotice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: u32,
    time: Timestamp,
    gatehouse_version: &'a str,
    dropped: u64,
    first_drop_time: Timestamp,
    last_drop_time: Timestamp,
}

/// The service's records between producers and the sink. See the module docs.
#[derive(Debug)]
pub struct Outbox {
    config: DeliveryConfig,
    /// Never sent, oldest first: (ordinal, line).
    queued: VecDeque<(u64, String)>,
    /// Failed sends, by ordinal; sent before `queued`.
    retry: BTreeMap<u64, String>,
    /// Sent, awaiting an answer: ticket -> (ordinal, line).
    in_flight: BTreeMap<Ticket, (u64, String)>,
    next_ordinal: u64,
    next_ticket: u64,
    /// No sends before this time (backoff).
    paused_until_us: u64,
    /// Current backoff; 0 when the sink is healthy.
    backoff_us: u64,
    drops: PendingDrops,
    totals: DeliveryTotals,
}

impl Outbox {
    /// An empty outbox; limits of zero are raised to one.
    pub fn new(mut config: DeliveryConfig) -> Self {
        config.max_buffer = config.max_buffer.max(1);
        config.max_in_flight = config.max_in_flight.max(1);
        Self {
            config,
            queued: VecDeque::new(),
            retry: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_ordinal: 0,
            next_ticket: 0,
            paused_until_us: 0,
            backoff_us: 0,
            drops: PendingDrops::default(),
            totals: DeliveryTotals::default(),
        }
    }

    /// Records held: queued, awaiting retry and in flight.
    pub fn held(&self) -> usize {
        self.queued.len() + self.retry.len() + self.in_flight.len()
    }

    /// Records sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Running totals.
    pub fn totals(&self) -> DeliveryTotals {
        self.totals
    }

    /// Records dropped and not yet reported by a notice.
    pub fn unreported_drops(&self) -> u64 {
        self.drops.count
    }

    /// Takes a record (one JSON line, no trailing newline) for delivery.
    pub fn offer(&mut self, line: String, now_us: u64) -> Result<(), Refusal> {
        let refusal = if line.is_empty() || line.contains('\n') {
            Some(Refusal::NotOneLine)
        } else if line.len() > self.config.max_record_bytes {
            Some(Refusal::TooLarge)
        } else {
            self.queue_drop_notice(now_us);
            (self.held() >= self.config.max_buffer).then_some(Refusal::Full)
        };
        match refusal {
            Some(r) => {
                self.count_drop(now_us);
                Err(r)
            }
            None => {
                self.push(line);
                Ok(())
            }
        }
    }

    /// The next record to send, if the window and backoff allow one now. The
    /// caller sends it and reports the outcome with [`Outbox::delivered`],
    /// [`Outbox::failed`] or [`Outbox::rejected`].
    pub fn next_send(&mut self, now_us: u64) -> Option<(Ticket, &str)> {
        if now_us < self.paused_until_us {
            return None;
        }
        // While the sink is failing, probe with one record at a time.
        let window = if self.backoff_us > 0 {
            1
        } else {
            self.config.max_in_flight
        };
        if self.in_flight.len() >= window {
            return None;
        }
        let (ordinal, line) = match self.retry.pop_first() {
            Some(entry) => entry,
            None => self.queued.pop_front()?,
        };
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        let (_, line) = self.in_flight.entry(ticket).or_insert((ordinal, line));
        Some((ticket, line.as_str()))
    }

    /// The sink accepted the record.
    pub fn delivered(&mut self, ticket: Ticket, now_us: u64) {
        if self.in_flight.remove(&ticket).is_some() {
            self.totals.delivered += 1;
            self.backoff_us = 0;
            self.paused_until_us = 0;
            self.queue_drop_notice(now_us);
        }
    }

    /// The send failed (no answer, timeout, a retryable status): the record is
    /// queued again ahead of newer ones and sending pauses for the backoff.
    pub fn failed(&mut self, ticket: Ticket, now_us: u64) {
        if let Some((ordinal, line)) = self.in_flight.remove(&ticket) {
            self.retry.insert(ordinal, line);
            self.totals.retried += 1;
            self.backoff_us = if self.backoff_us == 0 {
                self.config.initial_backoff_us
            } else {
                self.backoff_us.saturating_mul(2)
            }
            .min(self.config.max_backoff_us);
            self.paused_until_us = now_us.saturating_add(self.backoff_us);
        }
    }

    /// The sink refused the record itself (it would never accept it): drop and count it.
    pub fn rejected(&mut self, ticket: Ticket, now_us: u64) {
        // The notice waits for the next offer or delivery: queuing it here would
        // let a sink that refuses everything refuse notices about notices forever.
        if self.in_flight.remove(&ticket).is_some() {
            self.count_drop(now_us);
        }
    }

    fn push(&mut self, line: String) {
        self.queued.push_back((self.next_ordinal, line));
        self.next_ordinal += 1;
        self.totals.accepted += 1;
    }

    fn count_drop(&mut self, now_us: u64) {
        if self.drops.count == 0 {
            self.drops.first_us = now_us;
        }
        self.drops.count += 1;
        self.drops.last_us = now_us;
        self.totals.dropped += 1;
    }

    /// Queues the notice for unreported drops once there is room for it.
    fn queue_drop_notice(&mut self, now_us: u64) {
        if self.drops.count == 0 || self.held() >= self.config.max_buffer {
            return;
        }
        let notice = DropNotice {
            kind: DROPPED_RECORD_TYPE,
            schema: SCHEMA_VERSION,
            time: Timestamp(now_us),
            gatehouse_version: self.config.gatehouse_version,
            dropped: self.drops.count,
            first_drop_time: Timestamp(self.drops.first_us),
            last_drop_time: Timestamp(self.drops.last_us),
        };
        if let Ok(line) = serde_json::to_string(&notice) {
            self.drops = PendingDrops::default();
            self.push(line);
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn outbox(max_buffer: usize, max_in_flight: usize) -> Outbox {
        Outbox::new(DeliveryConfig {
            max_buffer,
            max_in_flight,
            max_record_bytes: 64,
            initial_backoff_us: 100,
            max_backoff_us: 1_000,
            gatehouse_version: "test",
        })
    }

    fn send_all(o: &mut Outbox, now: u64) -> Vec<(Ticket, String)> {
        let mut sent = Vec::new();
        while let Some((t, l)) = o.next_send(now) {
            sent.push((t, l.to_string()));
        }
        sent
    }

    #[test]
    fn sends_in_order_within_the_window() {
        let mut o = outbox(10, 2);
        for i in 0..3 {
            o.offer(format!("r{i}"), 0).unwrap();
        }
        let sent = send_all(&mut o, 0);
        assert_eq!(
            sent.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
            ["r0", "r1"]
        );
        o.delivered(sent[0].0, 0);
        let next = send_all(&mut o, 0);
        assert_eq!(next[0].1, "r2");
        assert_eq!(o.totals().delivered, 1);
    }

    #[test]
    fn failed_records_are_resent_first_in_original_order_after_backoff() {
        let mut o = outbox(10, 3);
        for i in 0..4 {
            o.offer(format!("r{i}"), 0).unwrap();
        }
        let sent = send_all(&mut o, 0);
        // r1 delivered, r2 then r0 fail.
        o.delivered(sent[1].0, 0);
        o.failed(sent[2].0, 10);
        o.failed(sent[0].0, 10);
        assert!(o.next_send(10).is_none(), "paused during backoff");
        // Backoff doubled to 200us after the second failure.
        assert!(o.next_send(209).is_none());
        let probe = send_all(&mut o, 210);
        assert_eq!(probe.len(), 1, "one probe while failing");
        assert_eq!(probe[0].1, "r0");
        o.delivered(probe[0].0, 220);
        let rest = send_all(&mut o, 220);
        assert_eq!(
            rest.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
            ["r2", "r3"]
        );
        assert_eq!(o.totals().retried, 2);
    }

    #[test]
    fn backoff_is_capped() {
        let mut o = outbox(10, 1);
        o.offer("r".into(), 0).unwrap();
        let mut now = 0;
        for _ in 0..20 {
            let (t, _) = loop {
                if let Some((t, l)) = o.next_send(now) {
                    break (t, l.to_string());
                }
                now += 1;
            };
            o.failed(t, now);
        }
        assert_eq!(o.backoff_us, 1_000);
        assert_eq!(o.held(), 1, "nothing lost while failing");
    }

    #[test]
    fn over_the_bound_the_newest_is_dropped_and_a_notice_follows_once_room_frees() {
        let mut o = outbox(2, 2);
        o.offer("a".into(), 1).unwrap();
        o.offer("b".into(), 2).unwrap();
        assert_eq!(o.offer("c".into(), 3), Err(Refusal::Full));
        assert_eq!(o.offer("d".into(), 4), Err(Refusal::Full));
        assert_eq!(o.unreported_drops(), 2);
        let sent = send_all(&mut o, 5);
        o.delivered(sent[0].0, 6);
        // Room for one: the notice takes it.
        assert_eq!(o.unreported_drops(), 0);
        let sent = send_all(&mut o, 7);
        let notice: serde_json::Value = serde_json::from_str(&sent[0].1).unwrap();
        assert_eq!(notice["type"], DROPPED_RECORD_TYPE);
        assert_eq!(notice["dropped"], 2);
        assert_eq!(notice["schema"], SCHEMA_VERSION);
        assert_eq!(notice["first_drop_time"], "1970-01-01T00:00:00.000003Z");
        assert_eq!(notice["last_drop_time"], "1970-01-01T00:00:00.000004Z");
        assert_eq!(o.totals().dropped, 2);
    }

    #[test]
    fn oversized_and_multiline_records_are_refused_and_counted() {
        let mut o = outbox(10, 1);
        assert_eq!(o.offer("x".repeat(65), 0), Err(Refusal::TooLarge));
        assert_eq!(o.offer("a\nb".into(), 0), Err(Refusal::NotOneLine));
        assert_eq!(o.offer(String::new(), 0), Err(Refusal::NotOneLine));
        assert_eq!(o.totals().dropped, 3);
        // The notice is queued ahead of the next record.
        o.offer("ok".into(), 1).unwrap();
        let sent = send_all(&mut o, 1);
        assert!(sent[0].1.contains("\"dropped\":3"));
    }

    #[test]
    fn a_rejected_record_is_dropped_not_retried() {
        let mut o = outbox(10, 2);
        o.offer("bad".into(), 0).unwrap();
        let (t, _) = o.next_send(0).unwrap();
        o.rejected(t, 1);
        assert_eq!(o.totals().dropped, 1);
        assert!(
            o.next_send(1).is_none(),
            "neither retried nor a notice by itself"
        );
        o.offer("next".into(), 2).unwrap();
        let sent = send_all(&mut o, 2);
        assert_eq!(sent.len(), 2);
        assert!(sent[0].1.contains(DROPPED_RECORD_TYPE));
        assert_eq!(sent[1].1, "next");
    }

    #[test]
    fn unknown_tickets_are_ignored() {
        let mut o = outbox(10, 1);
        o.delivered(Ticket(99), 0);
        o.failed(Ticket(99), 0);
        o.rejected(Ticket(99), 0);
        assert_eq!(o.totals(), DeliveryTotals::default());
        assert!(o.next_send(0).is_none());
    }

    #[test]
    fn every_accepted_record_is_delivered_exactly_once_under_random_failures() {
        // A small deterministic generator stands in for a flaky sink.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut o = outbox(1_000, 8);
        for i in 0..500 {
            o.offer(format!("r{i}"), 0).unwrap();
        }
        let mut delivered = Vec::new();
        let mut now = 0;
        while o.held() > 0 {
            now += 1_000;
            let sent = send_all(&mut o, now);
            for (t, line) in sent {
                if rand() % 4 == 0 {
                    o.failed(t, now);
                } else {
                    o.delivered(t, now);
                    delivered.push(line);
                }
            }
        }
        let mut expected: Vec<String> = (0..500).map(|i| format!("r{i}")).collect();
        let mut got = delivered.clone();
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
        assert_eq!(o.totals().delivered, 500);
    }
}
