//! The native build's stats.
//!
//! Envoy lets a dynamic module define stats only while its configuration is
//! being built (later definitions fail as "frozen"), so every stat is defined
//! then, on the main thread, and the workers only count. That includes the
//! labelled families ([`Family`]), whose label values come from the policy:
//! each family is defined for every action and every rule name (and
//! detector) the configuration can produce, plus the family's `other` value,
//! which counts anything else (as the Wasm build's overflow does).

use gatehouse_core::mask::DetectorKind;
use gatehouse_core::policy::Action;
use gatehouse_dynamic_modules_abi::network::{ConfigEnvoy, MetricId};
use gatehouse_postgres_glue::{Counter, Family, Gauge, HistogramStat};
use std::collections::BTreeMap;

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

/// The rule a decision names when the policy's default decided.
const DEFAULT_RULE: &str = "default";
/// The rule a login refusal for an expired token names.
const TOKEN_EXPIRED_RULE: &str = "gatehouse:token-expired";
const ACTIONS: [Action; 4] = [
    Action::Allow,
    Action::Deny,
    Action::Observe,
    Action::RequireApproval,
];

/// One family's stats for one class: by label value, and the overflow stat.
#[derive(Debug)]
struct Series {
    family: Family,
    class: &'static str,
    by_name: BTreeMap<String, Option<MetricId>>,
    other: Option<MetricId>,
}

/// Every labelled stat of one configuration, defined with it.
#[derive(Debug, Default)]
pub struct LabelledStats {
    series: Vec<Series>,
}

impl LabelledStats {
    /// Defines the families for the rule names of the statement policy
    /// (`policy_rules`) and of masking (`masking_rules`); `shadow` picks the
    /// shadow instance's family names.
    pub fn define(
        envoy: &mut ConfigEnvoy,
        shadow: bool,
        policy_rules: &[String],
        masking_rules: &[String],
    ) -> LabelledStats {
        let mut decision_rules: Vec<&str> = policy_rules.iter().map(String::as_str).collect();
        decision_rules.extend([DEFAULT_RULE, TOKEN_EXPIRED_RULE]);
        let masking_rules: Vec<&str> = masking_rules.iter().map(String::as_str).collect();
        let detectors: Vec<&str> = DetectorKind::ALL.iter().map(|d| d.as_str()).collect();
        let mut plan: Vec<(Family, &'static str, &[&str])> = ACTIONS
            .iter()
            .map(|action| {
                (
                    Family::Decisions { shadow },
                    action.as_str(),
                    &decision_rules[..],
                )
            })
            .collect();
        plan.push((Family::MaskedByRule { shadow }, "", &masking_rules[..]));
        plan.push((Family::MaskedByDetector { shadow }, "", &detectors[..]));
        let mut defined = LabelledStats::default();
        for (family, class, names) in plan {
            let mut by_name = BTreeMap::new();
            for name in names.iter().take(MAX_SERIES) {
                by_name.insert(
                    (*name).to_owned(),
                    envoy.define_counter(&family.stat_name(class, name)),
                );
            }
            let other = envoy
                .define_counter(&family.stat_name(class, gatehouse_core::stats::OVERFLOW_LABEL));
            defined.series.push(Series {
                family,
                class,
                by_name,
                other,
            });
        }
        defined
    }

    /// The stat for `class` and `name` of `family` (its `other` stat for a
    /// name the configuration did not name).
    pub fn id(&self, family: Family, class: &str, name: &str) -> Option<MetricId> {
        let series = self
            .series
            .iter()
            .find(|s| s.family == family && s.class == class)?;
        match series.by_name.get(name) {
            Some(id) => *id,
            None => series.other,
        }
    }
}

/// Distinct label values one family defines; later ones count under `other`.
const MAX_SERIES: usize = gatehouse_core::stats::MAX_SERIES;

/// The names of the rules under `section.rules[]` of a filter configuration.
pub fn rule_names(filter: &serde_json::Value, section: &str) -> Vec<String> {
    filter
        .get(section)
        .and_then(|s| s.get("rules"))
        .and_then(serde_json::Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .filter_map(|rule| rule.get("name")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_come_from_the_configuration() {
        let filter = serde_json::json!({
            "policy": {"rules": [{"name": "no-ddl"}, {"name": "everyday-sql"}, {"action": "deny"}]},
            "masking": {"rules": [{"name": "customer-email"}]}
        });
        assert_eq!(rule_names(&filter, "policy"), ["no-ddl", "everyday-sql"]);
        assert_eq!(rule_names(&filter, "masking"), ["customer-email"]);
        assert!(rule_names(&serde_json::json!({}), "policy").is_empty());
    }
}
