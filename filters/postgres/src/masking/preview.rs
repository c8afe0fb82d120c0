//! What masking would do to a statement's results, told without a server:
//! for `gatehouse explain`, so a policy author sees masking next to the
//! statement's decision.
//!
//! The engine resolves table rules to (table OID, column number) through the
//! catalog; without a server the preview matches them by the tables the SQL
//! reads (unqualified names in the rule's schema, `public` by default), which is
//! what the catalog lookup finds under the default search_path.

use super::config::{MaskingPolicy, RuleTarget};
use crate::sql::{Access, Analysis};
use gatehouse_core::identity::Identity;
use gatehouse_core::mask::MaskStyle;
use serde::Serialize;

/// What would be masked for one identity and statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskingPreview {
    /// The identity sees values clear (what would be masked is still counted).
    pub exempt: bool,
    /// Column rules on tables the statement reads.
    pub columns: Vec<RulePreview>,
    /// Rules on result fields by name: they apply whatever the tables.
    pub field_names: Vec<RulePreview>,
    /// Detectors that scan every other text value of the results.
    pub detectors: Vec<&'static str>,
}

/// One rule that would apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulePreview {
    pub rule: String,
    /// `schema.table.column`, or the field-name pattern.
    pub target: String,
    pub style: MaskStyle,
}

/// What `policy` would mask in the results of the analysed statement.
pub fn preview(policy: &MaskingPolicy, identity: &Identity, analysis: &Analysis) -> MaskingPreview {
    let read: Vec<(Option<&str>, &str)> = analysis
        .statements
        .iter()
        .flat_map(|statement| statement.walk())
        .flat_map(|statement| &statement.objects)
        .filter(|object| object.access == Access::Read)
        .map(|object| (object.schema.as_deref(), object.name.as_str()))
        .collect();
    let mut columns = Vec::new();
    let mut field_names = Vec::new();
    for rule in &policy.rules {
        match &rule.target {
            RuleTarget::Column {
                schema,
                table,
                column,
            } => {
                let reads_table = read.iter().any(|(read_schema, read_table)| {
                    read_table.eq_ignore_ascii_case(table)
                        && read_schema.is_none_or(|s| s.eq_ignore_ascii_case(schema))
                });
                if reads_table {
                    columns.push(RulePreview {
                        rule: rule.name.clone(),
                        target: format!("{schema}.{table}.{column}"),
                        style: rule.style,
                    });
                }
            }
            RuleTarget::FieldName(pattern) => field_names.push(RulePreview {
                rule: rule.name.clone(),
                target: pattern.as_str().to_owned(),
                style: rule.style,
            }),
        }
    }
    MaskingPreview {
        exempt: policy.exempts(identity),
        columns,
        field_names,
        detectors: policy
            .masker
            .detectors()
            .iter()
            .map(|d| d.as_str())
            .collect(),
    }
}

impl MaskingPreview {
    /// The preview as `gatehouse explain` prints it.
    pub fn lines(&self) -> Vec<String> {
        let style = |style: MaskStyle| {
            serde_json::to_value(style)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        let rules = |rules: &[RulePreview]| {
            rules
                .iter()
                .map(|r| format!("{} by rule {} ({})", r.target, r.rule, style(r.style)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut lines = Vec::new();
        if self.exempt {
            lines.push(
                "masking: exempt: this identity sees values clear (what would be masked is counted)"
                    .to_owned(),
            );
            return lines;
        }
        lines.push(if self.columns.is_empty() {
            "masking: no column rule covers a table this statement reads".to_owned()
        } else {
            format!("masking: columns {}", rules(&self.columns))
        });
        if !self.field_names.is_empty() {
            lines.push(format!(
                "masking: result fields named {}",
                rules(&self.field_names)
            ));
        }
        if !self.detectors.is_empty() {
            lines.push(format!(
                "masking: detectors scan every other value: {}",
                self.detectors.join(", ")
            ));
        }
        lines
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::sql::{Limits, analyze};

    const POLICY: &str = include_str!("../../../../examples/postgres-masking.json");

    fn preview_for(identity: &Identity, sql: &str) -> MaskingPreview {
        let policy = MaskingPolicy::from_json(POLICY.as_bytes()).unwrap();
        preview(&policy, identity, &analyze(sql, &Limits::default()))
    }

    #[test]
    fn rules_of_the_tables_read_apply_and_exempt_identities_see_clear_values() {
        let developer = Identity {
            subject: "developer".into(),
            groups: vec!["developers".into()],
            ..Identity::default()
        };
        let read = preview_for(
            &developer,
            "select c.email from shop_orders o join public.customers c on c.id = o.id",
        );
        assert!(!read.exempt);
        let rules: Vec<&str> = read.columns.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(rules, ["customer-email", "customer-card", "customer-ssn"]);
        assert!(
            read.lines()[0].contains("public.customers.email by rule customer-email (partial)")
        );
        assert!(
            !read.detectors.is_empty(),
            "the default masker scans values"
        );

        let elsewhere = preview_for(&developer, "select * from orders");
        assert!(elsewhere.columns.is_empty());
        let other_schema = preview_for(&developer, "select * from archive.customers");
        assert!(other_schema.columns.is_empty());
        let written = preview_for(&developer, "insert into customers (email) values ('a@b.c')");
        assert!(written.columns.is_empty(), "nothing is read back");

        let dba = Identity {
            subject: "dba".into(),
            groups: vec!["dba".into()],
            ..Identity::default()
        };
        let exempt = preview_for(&dba, "select email from customers");
        assert!(exempt.exempt);
        assert!(exempt.lines()[0].starts_with("masking: exempt"));
    }
}
