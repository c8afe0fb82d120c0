//! Stats with labels and histograms, shared by every filter's glue.
//!
//! Envoy's Wasm host knows no labels: a filter names a stat and Envoy keeps it
//! as `wasmcustom.<name>`. A labelled stat therefore carries its labels inside
//! its name, as `label=.=value;.;` pairs between the family name's last `_` and
//! its final word:
//!
//! ```text
//! gatehouse_pg_decisions_total{action="deny",rule="no-ddl"}
//!   is defined as  gatehouse_pg_decisions_action=.=deny;.;rule=.=no-ddl;.;total
//! ```
//!
//! and one `stats_config.stats_tags` rule per label name in the Envoy bootstrap,
//! `{tag_name: rule, regex: "(rule=\\.=(.*?);\\.;)"}`, turns each pair back into
//! a tag: Envoy cuts the pair out of the name and `/stats/prometheus` prints
//! `gatehouse_pg_decisions_total{action="deny",rule="no-ddl"}`. This is the
//! encoding Istio's own Wasm stats use, so Istio's `extraStatTags` produces
//! exactly these rules. The name ends in a fixed word, so none of Envoy's
//! default tag rules (`…_rq_200`) can mistake the end of a label for its own.
//!
//! A family's stats are defined on first use and their ids kept per VM, looked
//! up by the label values as they are (no formatting on the data path). Label
//! values come from operators' policies, so each family keeps at most
//! [`MAX_SERIES`] distinct values; later ones are counted under
//! [`OVERFLOW_LABEL`], and Envoy's stats cannot grow without bound.

use crate::{LogLevel, MetricType, Status};
use std::collections::BTreeMap;

pub use gatehouse_core::stats::{
    MAX_LABEL_VALUE_BYTES, MAX_SERIES, OVERFLOW_LABEL, labelled_name, push_label_value,
};

/// How a family defines its stats: the host's `define_metric`, or a stand-in
/// in tests.
pub type Define = fn(MetricType, &str) -> Result<u32, Status>;

/// A counter family with one operator-named label (`rule`, `name`) and
/// optionally one label from a fixed vocabulary the code supplies (`action`,
/// `kind`), e.g. `gatehouse_pg_decisions_total{action, rule}`.
pub struct LabelledCounter {
    family: &'static str,
    /// The label whose values come from the code (e.g. the action), if any.
    class_label: Option<&'static str>,
    /// The label whose values come from configuration (e.g. the rule).
    name_label: &'static str,
    /// Ids by class, then by raw name; `None`: the host refused to define it.
    ids: Vec<(&'static str, BTreeMap<String, Option<u32>>)>,
    /// Distinct (class, name) stats defined, overflow stats excluded.
    series: usize,
    max_series: usize,
    define: Define,
}

impl LabelledCounter {
    /// A family whose only label is `name_label`.
    pub fn new(family: &'static str, name_label: &'static str) -> Self {
        Self::with_class(family, None, name_label)
    }

    /// A family labelled by a class from the code and a configured name.
    pub fn with_class(
        family: &'static str,
        class_label: Option<&'static str>,
        name_label: &'static str,
    ) -> Self {
        LabelledCounter {
            family,
            class_label,
            name_label,
            ids: Vec::new(),
            series: 0,
            max_series: MAX_SERIES,
            define: crate::define_metric,
        }
    }

    /// The same family with another way to define stats and another cap (tests).
    pub fn with_definer(mut self, define: Define, max_series: usize) -> Self {
        self.define = define;
        self.max_series = max_series;
        self
    }

    /// The stat id for `class` and `name` (`class` is ignored by a family
    /// without a class label), defining it on first use; `None` when the host
    /// would not define it.
    pub fn id(&mut self, class: &'static str, name: &str) -> Option<u32> {
        let index = match self.ids.iter().position(|(known, _)| *known == class) {
            Some(index) => index,
            None => {
                self.ids.push((class, BTreeMap::new()));
                self.ids.len() - 1
            }
        };
        let (family, class_label, name_label, define) =
            (self.family, self.class_label, self.name_label, self.define);
        let full = self.series >= self.max_series;
        let (_, ids) = self.ids.get_mut(index)?;
        if let Some(id) = ids.get(name) {
            return *id;
        }
        let name = if full { OVERFLOW_LABEL } else { name };
        if let Some(id) = ids.get(name) {
            return *id;
        }
        let stat = match class_label {
            Some(class_label) => labelled_name(family, &[(class_label, class), (name_label, name)]),
            None => labelled_name(family, &[(name_label, name)]),
        };
        let id = match define(MetricType::Counter, &stat) {
            Ok(id) => Some(id),
            Err(status) => {
                crate::log(
                    LogLevel::Warn,
                    &format!("gatehouse: stat {stat} not defined: {status:?}"),
                );
                None
            }
        };
        ids.insert(name.to_owned(), id);
        if !full {
            self.series += 1;
        }
        id
    }

    /// Adds `by` to the stat for `class` and `name`.
    pub fn add(&mut self, class: &'static str, name: &str, by: u64) {
        if by > 0 {
            increment(self.id(class, name), by);
        }
    }
}

/// Adds `by` to a counter (or gauge) the host defined; a failed update is
/// dropped, since logging it on the data path would cost more than the stat.
pub fn increment(id: Option<u32>, by: u64) {
    if let Some(id) = id
        && by > 0
    {
        let _ = crate::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
    }
}

/// Moves a gauge by `delta` (negative lowers it).
pub fn adjust(id: Option<u32>, delta: i64) {
    if let Some(id) = id {
        let _ = crate::increment_metric(id, delta);
    }
}

/// Defines a stat, logging (not failing) when the host refuses; `filter`
/// names the filter in the log line.
pub fn define(kind: MetricType, name: &str, filter: &str) -> Option<u32> {
    match crate::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(status) => {
            crate::log(
                LogLevel::Warn,
                &format!("gatehouse {filter}: stat {name} not defined: {status:?}"),
            );
            None
        }
    }
}

/// A histogram (Envoy keeps its buckets, sum and count; `/stats/prometheus`
/// prints `<name>_bucket{le=…}`, `<name>_sum` and `<name>_count`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Histogram(Option<u32>);

impl Histogram {
    pub fn define(name: &str, filter: &str) -> Self {
        Histogram(define(MetricType::Histogram, name, filter))
    }

    /// Records one sample.
    pub fn record(self, value: u64) {
        if let Some(id) = self.0 {
            let _ = crate::record_metric(id, value);
        }
    }
}

/// Sums increments of one counter at a time and hands them to the host when
/// the counter changes or the batch ends: a callback that finishes many
/// statements under the same rule makes one host call, not one per statement.
#[derive(Debug, Default)]
pub struct Tally {
    pending: Option<(u32, u64)>,
}

impl Tally {
    /// Counts one for `id`.
    pub fn add(&mut self, id: Option<u32>) {
        let Some(id) = id else { return };
        match &mut self.pending {
            Some((pending, count)) if *pending == id => *count = count.saturating_add(1),
            _ => {
                self.flush();
                self.pending = Some((id, 1));
            }
        }
    }

    /// Hands the pending count to the host.
    pub fn flush(&mut self) {
        if let Some((id, count)) = self.pending.take() {
            increment(Some(id), count);
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        static DEFINED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    fn record_definition(_: MetricType, name: &str) -> Result<u32, Status> {
        DEFINED.with(|defined| {
            let mut defined = defined.borrow_mut();
            defined.push(name.to_owned());
            Ok(u32::try_from(defined.len()).unwrap())
        })
    }

    fn definitions() -> Vec<String> {
        DEFINED.with(|defined| defined.borrow().clone())
    }

    fn refuse(_: MetricType, _: &str) -> Result<u32, Status> {
        Err(Status::BadArgument)
    }

    #[test]
    fn labels_are_encoded_between_the_family_name_and_its_last_word() {
        assert_eq!(
            labelled_name(
                "gatehouse_pg_decisions_total",
                &[("action", "deny"), ("rule", "no-ddl")]
            ),
            "gatehouse_pg_decisions_action=.=deny;.;rule=.=no-ddl;.;total"
        );
        assert_eq!(labelled_name("plain", &[("a", "b")]), "plaina=.=b;.;");
    }

    #[test]
    fn label_values_cannot_break_the_name_or_the_tag_rules() {
        let mut out = String::new();
        push_label_value(&mut out, "gatehouse:token-expired");
        assert_eq!(out, "gatehouse:token-expired");
        let name = labelled_name(
            "gatehouse_pg_decisions_total",
            &[("rule", "x;.;action=.=allow \"é\n")],
        );
        assert_eq!(
            name,
            "gatehouse_pg_decisions_rule=.=x___action___allow____;.;total"
        );
        assert_eq!(name.matches(";.;").count(), 1);
        assert_eq!(name.matches("=.=").count(), 1);
        let mut empty = String::new();
        push_label_value(&mut empty, "");
        assert_eq!(empty, "_");
        let mut long = String::new();
        push_label_value(&mut long, &"ü".repeat(200));
        assert_eq!(long, "_".repeat(MAX_LABEL_VALUE_BYTES));
    }

    #[test]
    fn a_stat_is_defined_once_per_label_values_and_its_id_reused() {
        let mut decisions =
            LabelledCounter::with_class("gatehouse_pg_decisions_total", Some("action"), "rule")
                .with_definer(record_definition, 10);
        let deny = decisions.id("deny", "no-ddl");
        assert_eq!(decisions.id("deny", "no-ddl"), deny);
        let allow = decisions.id("allow", "no-ddl");
        assert_ne!(allow, deny);
        assert_eq!(
            definitions(),
            [
                "gatehouse_pg_decisions_action=.=deny;.;rule=.=no-ddl;.;total",
                "gatehouse_pg_decisions_action=.=allow;.;rule=.=no-ddl;.;total"
            ]
        );
    }

    #[test]
    fn names_past_the_cap_are_counted_under_other_and_define_nothing_more() {
        let mut masked = LabelledCounter::new("gatehouse_pg_masked_total", "rule")
            .with_definer(record_definition, 3);
        for rule in ["a", "b", "c"] {
            assert!(masked.id("", rule).is_some());
        }
        let other = masked.id("", "d");
        assert!(other.is_some());
        for i in 0..1_000 {
            assert_eq!(masked.id("", &format!("hostile-{i}")), other);
        }
        // Names seen before the cap keep their own stat.
        assert_eq!(masked.id("", "a"), Some(1));
        assert_eq!(
            definitions(),
            [
                "gatehouse_pg_masked_rule=.=a;.;total",
                "gatehouse_pg_masked_rule=.=b;.;total",
                "gatehouse_pg_masked_rule=.=c;.;total",
                "gatehouse_pg_masked_rule=.=other;.;total"
            ]
        );
    }

    #[test]
    fn a_stat_the_host_refuses_is_not_asked_for_again() {
        let mut family = LabelledCounter::new("gatehouse_x_total", "rule").with_definer(refuse, 2);
        assert_eq!(family.id("", "a"), None);
        assert_eq!(family.id("", "a"), None);
        assert_eq!(family.series, 1);
    }

    #[test]
    fn a_tally_keeps_one_pending_count() {
        let mut tally = Tally::default();
        tally.add(Some(4));
        tally.add(Some(4));
        tally.add(None);
        assert_eq!(tally.pending, Some((4, 2)));
        tally.add(Some(5));
        assert_eq!(tally.pending, Some((5, 1)));
        tally.flush();
        assert_eq!(tally.pending, None);
    }
}
