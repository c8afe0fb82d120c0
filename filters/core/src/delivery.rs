//! Record delivery state: the bounded outbox of the audit service.
//!
//! Producers hand over records as finished JSON lines. The [`Outbox`] holds them
//! until the sink has accepted each one, and decides what to send next:
//!
//! - **Batches.** A send carries up to [`DeliveryConfig::max_batch_records`]
//!   records and [`DeliveryConfig::max_batch_bytes`] bytes (a larger record goes
//!   alone) as NDJSON: the records in order, joined by `\n`. The sink writes each
//!   record of a batch as its own line. A batch goes when it is full or when its
//!   oldest record has waited [`DeliveryConfig::linger_us`], so a busy gateway
//!   sends few large batches instead of one request per record, and a quiet one
//!   delays each record by at most the linger.
//! - **Bounded.** At most [`DeliveryConfig::max_buffer`] records are held (queued,
//!   awaiting retry, or in flight). Past the bound the *newest* record is dropped
//!   and counted; once space frees, a `gatehouse.records_dropped` record with the
//!   count is queued like any other record, so the loss is itself in the log.
//! - **In order, with a window.** Up to [`DeliveryConfig::max_in_flight`] batches
//!   are in flight at once, oldest records first. Records of a failed batch go
//!   back ahead of everything not yet sent, in their original order. With one
//!   batch in flight (the default) records reach the sink in exactly the order
//!   they were offered, failures included.
//! - **Backoff.** After a failure nothing is sent until the backoff expires (doubling
//!   from [`DeliveryConfig::initial_backoff_us`] up to
//!   [`DeliveryConfig::max_backoff_us`]); then one batch probes the sink, and the
//!   full window resumes after a success.
//! - **Permanent rejections** (the sink says the batch itself is bad): a batch of
//!   several records is split and its records are sent again one at a time, so
//!   only a record the sink refuses on its own is dropped and counted, never
//!   retried forever.
//!
//! Sans-IO: the caller passes the current time (unix microseconds) and performs
//! the sends.

pub mod config;
pub mod sink;

use crate::record::{SCHEMA_VERSION, Timestamp};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

pub use config::RECORD_QUEUE;

/// Record type of the notice queued after records were dropped.
pub const DROPPED_RECORD_TYPE: &str = "gatehouse.records_dropped";

/// Limits and timings of delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Records held at most (queued + awaiting retry + in flight).
    pub max_buffer: usize,
    /// Batches sent and not yet answered, at most.
    pub max_in_flight: usize,
    /// Records per batch, at most.
    pub max_batch_records: usize,
    /// Bytes of a batch body, at most, unless one record alone is larger.
    pub max_batch_bytes: usize,
    /// How long a record may wait for a batch to fill before a partial batch
    /// goes (0: send whatever waits at once).
    pub linger_us: u64,
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
            max_in_flight: 1,
            max_batch_records: 1_000,
            max_batch_bytes: 256 << 10,
            linger_us: 20_000,
            max_record_bytes: 1 << 20,
            initial_backoff_us: 100_000,
            max_backoff_us: 5_000_000,
            gatehouse_version: crate::build::VERSION,
        }
    }
}

/// What the sink's answer to a send means for its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Delivered,
    /// The records themselves are refused; retrying cannot help
    /// ([`Outbox::rejected`]).
    Rejected,
    /// Try again later ([`Outbox::failed`]).
    Retry,
}

/// Classifies a send's HTTP status (`None`: no response, reset or timeout).
pub fn classify(status: Option<&str>) -> SendOutcome {
    match status.and_then(|s| s.parse::<u16>().ok()) {
        Some(200..=299) => SendOutcome::Delivered,
        Some(408 | 429) => SendOutcome::Retry,
        Some(400..=499) => SendOutcome::Rejected,
        _ => SendOutcome::Retry,
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

/// One send: a batch of records as an NDJSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Reports the outcome of this send.
    pub ticket: Ticket,
    /// Records in the batch.
    pub records: usize,
    /// The records in order, joined by `\n` (no trailing newline).
    pub body: String,
}

/// Running totals, for the service's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryTotals {
    /// Records accepted into the outbox (drop notices included).
    pub accepted: u64,
    /// Records the sink accepted.
    pub delivered: u64,
    /// Records dropped: over the bound, oversized, malformed or rejected by the sink.
    pub dropped: u64,
    /// Records of failed sends that were queued again.
    pub retried: u64,
    /// Batches sent (each record counts once per send).
    pub batches: u64,
}

/// The service's counters, one per field of [`DeliveryTotals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryCounter {
    Accepted,
    Delivered,
    Dropped,
    Retried,
    Batches,
}

impl DeliveryCounter {
    pub const ALL: [Self; 5] = [
        Self::Accepted,
        Self::Delivered,
        Self::Dropped,
        Self::Retried,
        Self::Batches,
    ];

    /// The stat's name (`wasmcustom.<name>` in Envoy).
    pub fn name(self) -> &'static str {
        match self {
            Self::Accepted => "gatehouse_records_accepted",
            Self::Delivered => "gatehouse_records_delivered",
            Self::Dropped => "gatehouse_records_dropped",
            Self::Retried => "gatehouse_records_retried",
            Self::Batches => "gatehouse_records_batches",
        }
    }
}

impl DeliveryTotals {
    /// This total of one counter.
    pub fn get(&self, counter: DeliveryCounter) -> u64 {
        match counter {
            DeliveryCounter::Accepted => self.accepted,
            DeliveryCounter::Delivered => self.delivered,
            DeliveryCounter::Dropped => self.dropped,
            DeliveryCounter::Retried => self.retried,
            DeliveryCounter::Batches => self.batches,
        }
    }

    /// What each counter grew by since `reported`, the counters that did not
    /// grow left out: what the service adds to its stats.
    pub fn increases_since(
        &self,
        reported: &DeliveryTotals,
    ) -> impl Iterator<Item = (DeliveryCounter, u64)> {
        DeliveryCounter::ALL.into_iter().filter_map(move |counter| {
            let delta = self.get(counter).saturating_sub(reported.get(counter));
            (delta > 0).then_some((counter, delta))
        })
    }
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

/// A record with its place in the offer order.
type Entry = (u64, String);

/// A record never sent yet.
#[derive(Debug)]
struct Waiting {
    ordinal: u64,
    offered_us: u64,
    line: String,
}

/// The service's records between producers and the sink. See the module docs.
#[derive(Debug)]
pub struct Outbox {
    config: DeliveryConfig,
    /// Never sent, oldest first.
    queued: VecDeque<Waiting>,
    /// Bytes of the lines in `queued`.
    queued_bytes: usize,
    /// Records of failed or split sends, by ordinal; sent before `queued`.
    retry: BTreeMap<u64, String>,
    /// Records up to this ordinal go one per send (they came from a rejected batch).
    alone_through: Option<u64>,
    /// Sent, awaiting an answer: ticket -> the batch's records.
    in_flight: BTreeMap<Ticket, Vec<Entry>>,
    in_flight_records: usize,
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
        config.max_batch_records = config.max_batch_records.max(1);
        Self {
            config,
            queued: VecDeque::new(),
            queued_bytes: 0,
            retry: BTreeMap::new(),
            alone_through: None,
            in_flight: BTreeMap::new(),
            in_flight_records: 0,
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
        self.queued.len() + self.retry.len() + self.in_flight_records
    }

    /// Batches sent and not yet answered.
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
                self.push(line, now_us);
                Ok(())
            }
        }
    }

    /// Takes the records of one queue message: one record per line (producers
    /// join what they emit within their linger), a final newline ignored,
    /// invalid UTF-8 replaced rather than lost. Returns how many were refused;
    /// the outbox counts them and reports them in its drop notice.
    pub fn offer_message(&mut self, message: &[u8], now_us: u64) -> usize {
        let text = String::from_utf8_lossy(message);
        text.strip_suffix('\n')
            .unwrap_or(&text)
            .split('\n')
            .filter(|line| self.offer((*line).to_string(), now_us).is_err())
            .count()
    }

    /// The next batch to send, if the window and backoff allow one now. The
    /// caller sends it and reports the outcome with [`Outbox::delivered`],
    /// [`Outbox::failed`] or [`Outbox::rejected`].
    pub fn next_send(&mut self, now_us: u64) -> Option<Batch> {
        if now_us < self.paused_until_us {
            return None;
        }
        // While the sink is failing, probe with one batch at a time.
        let window = if self.backoff_us > 0 {
            1
        } else {
            self.config.max_in_flight
        };
        if self.in_flight.len() >= window || !self.batch_due(now_us) {
            return None;
        }
        let first = self.take_next()?;
        let alone = self.alone_through.is_some_and(|last| first.0 <= last);
        let mut bytes = first.1.len();
        let mut records = vec![first];
        while !alone && records.len() < self.config.max_batch_records {
            let Some(len) = self.peek_next_len() else {
                break;
            };
            if bytes + 1 + len > self.config.max_batch_bytes {
                break;
            }
            let Some(next) = self.take_next() else {
                break;
            };
            bytes += 1 + len;
            records.push(next);
        }
        if self.retry.is_empty() {
            self.alone_through = None;
        }
        let mut body = String::with_capacity(bytes);
        for (i, (_, line)) in records.iter().enumerate() {
            if i > 0 {
                body.push('\n');
            }
            body.push_str(line);
        }
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.totals.batches += 1;
        self.in_flight_records += records.len();
        let batch = Batch {
            ticket,
            records: records.len(),
            body,
        };
        self.in_flight.insert(ticket, records);
        Some(batch)
    }

    /// The sink accepted every record of the batch.
    pub fn delivered(&mut self, ticket: Ticket, now_us: u64) {
        if let Some(records) = self.take_in_flight(ticket) {
            self.totals.delivered += records.len() as u64;
            self.backoff_us = 0;
            self.paused_until_us = 0;
            self.queue_drop_notice(now_us);
        }
    }

    /// The send failed (no answer, timeout, a retryable status): its records are
    /// queued again ahead of newer ones and sending pauses for the backoff.
    pub fn failed(&mut self, ticket: Ticket, now_us: u64) {
        if let Some(records) = self.take_in_flight(ticket) {
            self.totals.retried += records.len() as u64;
            self.retry.extend(records);
            self.backoff_us = if self.backoff_us == 0 {
                self.config.initial_backoff_us
            } else {
                self.backoff_us.saturating_mul(2)
            }
            .min(self.config.max_backoff_us);
            self.paused_until_us = now_us.saturating_add(self.backoff_us);
        }
    }

    /// The sink refused the batch itself (it would never accept it). A single
    /// record is dropped and counted; the records of a larger batch are sent
    /// again one per send, so only those refused on their own are dropped.
    pub fn rejected(&mut self, ticket: Ticket, now_us: u64) {
        let Some(records) = self.take_in_flight(ticket) else {
            return;
        };
        if let [_single] = records.as_slice() {
            // The notice waits for the next offer or delivery: queuing it here
            // would let a sink that refuses everything refuse notices about
            // notices forever.
            self.count_drop(now_us);
            return;
        }
        if let Some((last, _)) = records.last() {
            self.alone_through = Some(self.alone_through.map_or(*last, |a| a.max(*last)));
        }
        self.retry.extend(records);
    }

    fn take_in_flight(&mut self, ticket: Ticket) -> Option<Vec<Entry>> {
        let records = self.in_flight.remove(&ticket)?;
        self.in_flight_records = self.in_flight_records.saturating_sub(records.len());
        Some(records)
    }

    /// Whether a batch should go now: records to retry, a full batch waiting,
    /// or the oldest waiting record has lingered long enough.
    fn batch_due(&self, now_us: u64) -> bool {
        !self.retry.is_empty()
            || self.queued.len() >= self.config.max_batch_records
            || self.queued_bytes >= self.config.max_batch_bytes
            || self
                .queued
                .front()
                .is_some_and(|w| now_us >= w.offered_us.saturating_add(self.config.linger_us))
    }

    /// Removes the oldest record waiting to be sent (retries first).
    fn take_next(&mut self) -> Option<Entry> {
        if let Some(entry) = self.retry.pop_first() {
            return Some(entry);
        }
        let waiting = self.queued.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(waiting.line.len());
        Some((waiting.ordinal, waiting.line))
    }

    /// Length of the record [`Outbox::take_next`] would return, if it may join
    /// the current batch (records from a split batch never do).
    fn peek_next_len(&self) -> Option<usize> {
        match self.retry.first_key_value() {
            Some((ordinal, _)) if self.alone_through.is_some_and(|last| *ordinal <= last) => None,
            Some((_, line)) => Some(line.len()),
            None => self.queued.front().map(|w| w.line.len()),
        }
    }

    fn push(&mut self, line: String, now_us: u64) {
        self.queued_bytes += line.len();
        self.queued.push_back(Waiting {
            ordinal: self.next_ordinal,
            offered_us: now_us,
            line,
        });
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
            self.push(line, now_us);
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn outbox_with(max_buffer: usize, max_in_flight: usize, max_batch_records: usize) -> Outbox {
        Outbox::new(DeliveryConfig {
            max_buffer,
            max_in_flight,
            max_batch_records,
            max_batch_bytes: 1 << 10,
            linger_us: 0,
            max_record_bytes: 64,
            initial_backoff_us: 100,
            max_backoff_us: 1_000,
            gatehouse_version: "test",
        })
    }

    /// One record per send, as the window tests want.
    fn outbox(max_buffer: usize, max_in_flight: usize) -> Outbox {
        outbox_with(max_buffer, max_in_flight, 1)
    }

    fn send_all(o: &mut Outbox, now: u64) -> Vec<(Ticket, String)> {
        let mut sent = Vec::new();
        while let Some(batch) = o.next_send(now) {
            sent.push((batch.ticket, batch.body));
        }
        sent
    }

    fn bodies(sent: &[(Ticket, String)]) -> Vec<&str> {
        sent.iter().map(|s| s.1.as_str()).collect()
    }

    #[test]
    fn sends_in_order_within_the_window() {
        let mut o = outbox(10, 2);
        for i in 0..3 {
            o.offer(format!("r{i}"), 0).unwrap();
        }
        let sent = send_all(&mut o, 0);
        assert_eq!(bodies(&sent), ["r0", "r1"]);
        o.delivered(sent[0].0, 0);
        let next = send_all(&mut o, 0);
        assert_eq!(next[0].1, "r2");
        assert_eq!(o.totals().delivered, 1);
    }

    #[test]
    fn waiting_records_go_in_one_batch_joined_by_newlines() {
        let mut o = outbox_with(100, 1, 1_000);
        o.offer("r0".into(), 0).unwrap();
        let first = o.next_send(0).unwrap();
        assert_eq!((first.records, first.body.as_str()), (1, "r0"));
        for i in 1..=3 {
            o.offer(format!("r{i}"), 0).unwrap();
        }
        assert!(o.next_send(0).is_none(), "one batch in flight by default");
        o.delivered(first.ticket, 0);
        let second = o.next_send(0).unwrap();
        assert_eq!((second.records, second.body.as_str()), (3, "r1\nr2\nr3"));
        assert_eq!(o.held(), 3);
        o.delivered(second.ticket, 0);
        assert_eq!(o.totals().delivered, 4);
        assert_eq!(o.totals().batches, 2);
        assert_eq!(o.held(), 0);
    }

    #[test]
    fn batches_stop_at_the_record_and_byte_limits_but_a_large_record_still_goes() {
        let mut o = outbox_with(100, 10, 3);
        for i in 0..7 {
            o.offer(format!("r{i}"), 0).unwrap();
        }
        let sent = send_all(&mut o, 0);
        assert_eq!(bodies(&sent), ["r0\nr1\nr2", "r3\nr4\nr5", "r6"]);

        let mut o = Outbox::new(DeliveryConfig {
            max_batch_bytes: 10,
            linger_us: 0,
            ..DeliveryConfig::default()
        });
        for line in ["aaaa", "bbbb", "cccc", "a record over the batch size"] {
            o.offer(line.into(), 0).unwrap();
        }
        let mut got = Vec::new();
        while let Some(batch) = o.next_send(0) {
            o.delivered(batch.ticket, 0);
            got.push(batch.body);
        }
        // "aaaa\nbbbb" is 9 bytes; "cccc" would make it 14.
        assert_eq!(got, ["aaaa\nbbbb", "cccc", "a record over the batch size"]);
    }

    #[test]
    fn a_partial_batch_waits_for_the_linger_and_a_full_one_goes_at_once() {
        let mut o = Outbox::new(DeliveryConfig {
            max_batch_records: 3,
            linger_us: 100,
            ..DeliveryConfig::default()
        });
        o.offer("r0".into(), 1_000).unwrap();
        o.offer("r1".into(), 1_050).unwrap();
        assert!(o.next_send(1_099).is_none(), "r0 has waited 99us");
        let partial = o.next_send(1_100).unwrap();
        assert_eq!(partial.body, "r0\nr1");
        o.delivered(partial.ticket, 1_100);
        for i in 2..5 {
            o.offer(format!("r{i}"), 2_000).unwrap();
        }
        let full = o.next_send(2_000).unwrap();
        assert_eq!(full.body, "r2\nr3\nr4", "a full batch does not linger");
    }

    #[test]
    fn a_failed_batch_is_resent_whole_and_first_after_backoff() {
        let mut o = outbox_with(100, 1, 1_000);
        for i in 0..3 {
            o.offer(format!("r{i}"), 0).unwrap();
        }
        let batch = o.next_send(0).unwrap();
        o.offer("r3".into(), 5).unwrap();
        o.failed(batch.ticket, 10);
        assert_eq!(o.totals().retried, 3);
        assert_eq!(o.held(), 4, "nothing lost");
        assert!(o.next_send(109).is_none(), "paused during backoff");
        let again = o.next_send(110).unwrap();
        assert_eq!(
            again.body, "r0\nr1\nr2\nr3",
            "the old records first, in order"
        );
        o.delivered(again.ticket, 120);
        assert_eq!(o.totals().delivered, 4);
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
        assert_eq!(bodies(&rest), ["r2", "r3"]);
        assert_eq!(o.totals().retried, 2);
    }

    #[test]
    fn backoff_is_capped() {
        let mut o = outbox(10, 1);
        o.offer("r".into(), 0).unwrap();
        let mut now = 0;
        for _ in 0..20 {
            let ticket = loop {
                if let Some(batch) = o.next_send(now) {
                    break batch.ticket;
                }
                now += 1;
            };
            o.failed(ticket, now);
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
    fn records_in_a_batch_count_against_the_bound_until_delivered() {
        let mut o = outbox_with(3, 1, 1_000);
        for i in 0..3 {
            o.offer(format!("r{i}"), 0).unwrap();
        }
        let batch = o.next_send(0).unwrap();
        assert_eq!(batch.records, 3);
        assert_eq!(o.offer("r3".into(), 1), Err(Refusal::Full));
        o.delivered(batch.ticket, 2);
        assert_eq!(o.held(), 1, "the drop notice");
        assert_eq!(o.totals().dropped, 1);
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
        let batch = o.next_send(0).unwrap();
        o.rejected(batch.ticket, 1);
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
    fn a_rejected_batch_is_split_so_only_the_refused_record_is_dropped() {
        let mut o = outbox_with(100, 1, 1_000);
        for line in ["r0", "bad", "r2"] {
            o.offer(line.into(), 0).unwrap();
        }
        let batch = o.next_send(0).unwrap();
        o.offer("r3".into(), 0).unwrap();
        o.rejected(batch.ticket, 1);
        assert_eq!(o.totals().dropped, 0);
        let mut logged = Vec::new();
        while let Some(batch) = o.next_send(2) {
            if batch.body.contains("bad") {
                o.rejected(batch.ticket, 2);
            } else {
                o.delivered(batch.ticket, 2);
                logged.push(batch.body);
            }
        }
        // One at a time for the split batch, then batching again; the drop
        // notice is queued when the delivery after the refusal frees room.
        assert_eq!(logged.len(), 3, "{logged:?}");
        assert_eq!(logged[..2], ["r0", "r2"]);
        let (r3, notice) = logged[2].split_once('\n').unwrap();
        assert_eq!(r3, "r3");
        assert!(notice.contains(DROPPED_RECORD_TYPE), "{notice}");
        assert_eq!(o.totals().dropped, 1);
        assert_eq!(o.held(), 0);
    }

    #[test]
    fn a_queue_message_is_offered_one_record_per_line() {
        let mut o = outbox_with(100, 1, 100);
        assert_eq!(o.offer_message(b"{\"a\":1}\n{\"b\":2}\n", 0), 0);
        assert_eq!(o.offer_message(b"{\"c\":\xff}", 0), 0);
        // An empty line inside a message is refused and counted, the rest kept.
        assert_eq!(o.offer_message(b"{\"d\":4}\n\n{\"e\":5}", 0), 1);
        assert_eq!(o.totals().dropped, 1);
        let sent = send_all(&mut o, 0);
        assert_eq!(sent.len(), 1);
        let lines: Vec<&str> = sent[0].1.split('\n').collect();
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert_eq!(
            lines[..4],
            ["{\"a\":1}", "{\"b\":2}", "{\"c\":\u{fffd}}", "{\"d\":4}"]
        );
        assert!(lines[4].contains(DROPPED_RECORD_TYPE), "{}", lines[4]);
        assert_eq!(lines[5], "{\"e\":5}");
    }

    #[test]
    fn counter_increases_are_what_grew_since_the_last_report() {
        let mut o = outbox_with(2, 1, 10);
        let reported = o.totals();
        assert_eq!(o.totals().increases_since(&reported).count(), 0);
        for i in 0..3 {
            let _ = o.offer(format!("r{i}"), 0);
        }
        let batch = o.next_send(0).unwrap();
        o.failed(batch.ticket, 0);
        let grown: Vec<_> = o.totals().increases_since(&reported).collect();
        assert_eq!(
            grown,
            [
                (DeliveryCounter::Accepted, 2),
                (DeliveryCounter::Dropped, 1),
                (DeliveryCounter::Retried, 2),
                (DeliveryCounter::Batches, 1),
            ]
        );
        let reported = o.totals();
        let batch = o.next_send(1_000).unwrap();
        o.delivered(batch.ticket, 1_000);
        let grown: Vec<_> = o.totals().increases_since(&reported).collect();
        assert_eq!(
            grown,
            [
                (DeliveryCounter::Accepted, 1),
                (DeliveryCounter::Delivered, 2),
                (DeliveryCounter::Batches, 1),
            ],
            "the drop notice is accepted once room frees"
        );
        assert_eq!(DeliveryCounter::Dropped.name(), "gatehouse_records_dropped");
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

    /// Runs 500 records through a flaky sink; returns the lines it accepted, in
    /// the order it accepted them.
    fn deliver_through_a_flaky_sink(max_in_flight: usize, max_batch_records: usize) -> Vec<String> {
        // A small deterministic generator stands in for a flaky sink.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut o = outbox_with(1_000, max_in_flight, max_batch_records);
        let mut delivered = Vec::new();
        let mut now = 0;
        let mut offered = 0;
        while offered < 500 || o.held() > 0 {
            now += 1_000;
            // Records keep arriving while earlier ones are in flight.
            for _ in 0..rand() % 20 {
                if offered < 500 {
                    o.offer(format!("r{offered:03}"), now).unwrap();
                    offered += 1;
                }
            }
            for batch in std::iter::from_fn(|| o.next_send(now)).collect::<Vec<_>>() {
                if rand() % 4 == 0 {
                    o.failed(batch.ticket, now);
                } else {
                    o.delivered(batch.ticket, now);
                    delivered.extend(batch.body.split('\n').map(str::to_string));
                }
            }
        }
        assert_eq!(o.totals().delivered, 500);
        delivered
    }

    #[test]
    fn every_accepted_record_is_delivered_exactly_once_under_random_failures() {
        let mut got = deliver_through_a_flaky_sink(8, 1);
        let expected: Vec<String> = (0..500).map(|i| format!("r{i:03}")).collect();
        got.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn with_one_batch_in_flight_records_arrive_in_offer_order_despite_failures() {
        let got = deliver_through_a_flaky_sink(1, 7);
        let expected: Vec<String> = (0..500).map(|i| format!("r{i:03}")).collect();
        assert_eq!(got, expected);
    }
}
