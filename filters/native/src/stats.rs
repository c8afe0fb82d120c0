//! The native build's stats.
//!
//! Plain counters, gauges and histograms are defined with the configuration
//! (main thread) and updated from the workers through their connection.
//! Labelled families ([`Family`]) name their stats after values from the
//! policy (rules, detectors), found only as statements run; a stat can only be
//! defined on the main thread (defining mutates the configuration Envoy's
//! workers read). So a worker tallies labelled counts in its own memory and
//! hands them over at most every [`HANDOVER`] (and at each close); the
//! configuration's main-thread event defines what is new and adds the counts.
//! Labelled stats thus lag by up to about that interval.

use gatehouse_dynamic_modules_abi::network::{ConfigEnvoy, ConfigScheduler, MetricId};
use gatehouse_postgres_glue::{Counter, Family, Gauge, HistogramStat};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Longest a worker keeps labelled counts before handing them over (µs).
pub const HANDOVER: u64 = 100_000;
/// Distinct labelled stats one configuration defines; later ones count under
/// the family's `other` value, so Envoy's stats cannot grow without bound.
pub const MAX_SERIES: usize = gatehouse_core::stats::MAX_SERIES;

/// The configuration's plain stats.
#[derive(Debug)]
pub struct Metrics {
    counters: [Option<MetricId>; Counter::ALL.len()],
    gauges: [Option<MetricId>; Gauge::ALL.len()],
    histograms: [Option<MetricId>; HistogramStat::ALL.len()],
}

impl Metrics {
    pub fn define(envoy: &mut ConfigEnvoy) -> Metrics {
        Metrics {
            counters: Counter::ALL.map(|c| envoy.define_counter(c.name())),
            gauges: Gauge::ALL.map(|g| envoy.define_gauge(g.name())),
            histograms: HistogramStat::ALL.map(|h| envoy.define_histogram(h.name())),
        }
    }

    pub fn counter(&self, counter: Counter) -> Option<MetricId> {
        self.counters.get(counter as usize).copied().flatten()
    }

    pub fn gauge(&self, gauge: Gauge) -> Option<MetricId> {
        self.gauges.get(gauge as usize).copied().flatten()
    }

    pub fn histogram(&self, histogram: HistogramStat) -> Option<MetricId> {
        self.histograms.get(histogram as usize).copied().flatten()
    }
}

/// A family's stats for one class, by name.
type ClassCounts = ((Family, &'static str), BTreeMap<String, u64>);

/// Labelled counts of one worker, by family and class, then by name.
#[derive(Debug, Default)]
pub struct Tally {
    counts: Vec<ClassCounts>,
    /// When the counts were last handed over (unix µs).
    handed_over_at: u64,
}

impl Tally {
    /// Adds `by` (no allocation once `name` was seen).
    pub fn add(&mut self, family: Family, class: &'static str, name: &str, by: u64) {
        let index = match self
            .counts
            .iter()
            .position(|(key, _)| *key == (family, class))
        {
            Some(index) => index,
            None => {
                self.counts.push(((family, class), BTreeMap::new()));
                self.counts.len() - 1
            }
        };
        let Some((_, names)) = self.counts.get_mut(index) else {
            return;
        };
        match names.get_mut(name) {
            Some(count) => *count = count.saturating_add(by),
            None => {
                names.insert(name.to_owned(), by);
            }
        }
    }

    /// Whether the counts are due for handing over at `now_us`.
    pub fn due(&self, now_us: u64) -> bool {
        now_us.saturating_sub(self.handed_over_at) >= HANDOVER
    }

    /// Takes the non-zero counts as (stat name, count), keeping the names
    /// seen (their counts reset).
    pub fn take(&mut self, now_us: u64) -> Vec<(String, u64)> {
        self.handed_over_at = now_us;
        let mut taken = Vec::new();
        for ((family, class), names) in &mut self.counts {
            for (name, count) in names.iter_mut() {
                if *count > 0 {
                    taken.push((family.stat_name(class, name), std::mem::take(count)));
                }
            }
        }
        taken
    }
}

/// The main thread's side of the labelled stats of one configuration.
#[derive(Default)]
pub struct Labelled {
    pending: Mutex<Vec<(String, u64)>>,
    /// Stats defined so far (main thread only, behind the lock for `Sync`).
    defined: Mutex<BTreeMap<String, Option<MetricId>>>,
    /// A main-thread event is already on its way.
    queued: AtomicBool,
    scheduler: Option<ConfigScheduler>,
}

impl Labelled {
    pub fn new(scheduler: Option<ConfigScheduler>) -> Labelled {
        Labelled {
            scheduler,
            ..Labelled::default()
        }
    }

    /// A worker hands over counts; the main thread is woken once per batch.
    pub fn hand_over(&self, counts: Vec<(String, u64)>) {
        if counts.is_empty() {
            return;
        }
        if let Ok(mut pending) = self.pending.lock() {
            pending.extend(counts);
        }
        if !self.queued.swap(true, Ordering::AcqRel)
            && let Some(scheduler) = &self.scheduler
        {
            scheduler.commit(crate::EVENT_LABELLED_STATS);
        }
    }

    /// On the main thread: defines what is new and adds the counts.
    pub fn publish(&self, envoy: &mut ConfigEnvoy) {
        self.queued.store(false, Ordering::Release);
        let counts = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return,
        };
        let Ok(mut defined) = self.defined.lock() else {
            return;
        };
        for (name, count) in counts {
            let id = match defined.get(&name) {
                Some(id) => *id,
                None => {
                    let name = if defined.len() >= MAX_SERIES {
                        overflow_name(&name)
                    } else {
                        name
                    };
                    let id = match defined.get(&name) {
                        Some(id) => *id,
                        None => envoy.define_counter(&name),
                    };
                    defined.insert(name, id);
                    id
                }
            };
            if let Some(id) = id {
                envoy.increment_counter(id, count);
            }
        }
    }
}

/// The family's overflow stat for a stat past [`MAX_SERIES`]: its last label
/// value replaced by `other`.
fn overflow_name(name: &str) -> String {
    match name.rsplit_once("=.=") {
        Some((head, tail)) => {
            let rest = tail.split_once(";.;").map_or("", |(_, rest)| rest);
            format!(
                "{head}=.={};.;{rest}",
                gatehouse_core::stats::OVERFLOW_LABEL
            )
        }
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_hands_over_each_count_once() {
        let mut tally = Tally::default();
        let decisions = Family::Decisions { shadow: false };
        tally.add(decisions, "allow", "default", 1);
        tally.add(decisions, "allow", "default", 1);
        tally.add(decisions, "deny", "no-ddl", 1);
        let mut taken = tally.take(1);
        taken.sort();
        assert_eq!(
            taken,
            [
                (
                    "gatehouse_pg_decisions_action=.=allow;.;rule=.=default;.;total".to_owned(),
                    2
                ),
                (
                    "gatehouse_pg_decisions_action=.=deny;.;rule=.=no-ddl;.;total".to_owned(),
                    1
                ),
            ]
        );
        assert!(tally.take(2).is_empty());
        assert!(!tally.due(2 + HANDOVER - 1));
        assert!(tally.due(2 + HANDOVER));
    }

    #[test]
    fn the_overflow_stat_keeps_the_family_and_class() {
        assert_eq!(
            overflow_name("gatehouse_pg_decisions_action=.=deny;.;rule=.=r9999;.;total"),
            "gatehouse_pg_decisions_action=.=deny;.;rule=.=other;.;total"
        );
    }
}
