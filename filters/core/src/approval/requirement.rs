//! What a `require_approval` rule asks for, as written in a policy and compiled.
//!
//! ```json
//! {"name": "customer-writes", "action": "require_approval",
//!  "approval": {"approvers": ["dba"], "approvals": 1, "reason_required": true,
//!               "pending": "1h", "valid": "15m", "grant": "single_use",
//!               "break_glass": ["oncall"]},
//!  "match": {...}}
//! ```

use super::duration::parse_duration;
use crate::config::ConfigError;
use serde::{Deserialize, Serialize};

/// Most approvals a rule may ask for.
pub const MAX_APPROVALS: u32 = 10;
/// Longest a request may stay pending or a grant stay valid: a week.
pub const MAX_SECONDS: u64 = 7 * 24 * 3600;
/// Longest a request or statement may be held waiting for a decision.
pub const MAX_HOLD_SECONDS: u64 = 300;

/// What an approval grants once given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// The approved statement or request, once, by its requester.
    SingleUse,
    /// Everything the rule covers, for its requester, until the grant ends.
    Window,
}

impl GrantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::SingleUse => "single_use",
            GrantKind::Window => "window",
        }
    }
}

/// The `approval` object of a rule, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequirementDoc {
    approvers: Vec<String>,
    #[serde(default = "one")]
    approvals: u32,
    #[serde(default)]
    reason_required: bool,
    #[serde(default = "default_pending")]
    pending: String,
    #[serde(default = "default_valid")]
    valid: String,
    #[serde(default = "default_grant")]
    grant: GrantKind,
    #[serde(default)]
    break_glass: Vec<String>,
    #[serde(default)]
    hold: Option<String>,
}

fn one() -> u32 {
    1
}
fn default_pending() -> String {
    "1h".to_owned()
}
fn default_valid() -> String {
    "15m".to_owned()
}
fn default_grant() -> GrantKind {
    GrantKind::SingleUse
}

/// A compiled approval requirement: also what a request carries to the approval
/// service, so the service enforces the same approver groups and counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequirement {
    /// Groups whose members may approve (or deny).
    pub approvers: Vec<String>,
    /// Distinct approvers needed.
    pub approvals: u32,
    /// Whether the requester must give a reason.
    pub reason_required: bool,
    /// How long a request waits for a decision before it expires.
    pub pending_seconds: u64,
    /// How long a grant is valid once approved.
    pub valid_seconds: u64,
    pub grant: GrantKind,
    /// Groups whose members may approve their own request, with a reason; such a
    /// grant is flagged as forced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub break_glass: Vec<String>,
    /// How long a request (Kubernetes) or simple Query (Postgres, native
    /// build) is held waiting for a decision before the client is refused (0:
    /// refused at once, approve and retry).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hold_seconds: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Whether a filter can hold what waits for approval (Kubernetes, and Postgres
/// in the native build; the service's scopes cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// The filter can hold (a Kubernetes request, a Postgres Query): `hold`
    /// is allowed.
    Allowed,
    /// Nothing can be held here: `hold` is an error.
    NotPossible,
}

impl ApprovalRequirement {
    /// Parses and checks a rule's `approval` object; errors are relative to it
    /// (`approvals: must be 1 to 10`).
    pub fn from_value(
        value: serde_json::Value,
        holding: Holding,
    ) -> Result<ApprovalRequirement, ConfigError> {
        let doc: RequirementDoc =
            serde_json::from_value(value).map_err(|e| ConfigError::new("", e.to_string()))?;
        if doc.approvers.is_empty() {
            return Err(ConfigError::new(
                "approvers",
                "name at least one group whose members may approve",
            ));
        }
        for (field, groups) in [
            ("approvers", &doc.approvers),
            ("break_glass", &doc.break_glass),
        ] {
            if let Some(i) = groups.iter().position(|g| g.trim().is_empty()) {
                return Err(ConfigError::new(
                    format!("{field}[{i}]"),
                    "group name must not be empty",
                ));
            }
        }
        if !(1..=MAX_APPROVALS).contains(&doc.approvals) {
            return Err(ConfigError::new(
                "approvals",
                format!("must be 1 to {MAX_APPROVALS}"),
            ));
        }
        let seconds = |field: &str, text: &str, max: u64| -> Result<u64, ConfigError> {
            let n = parse_duration(text).map_err(|e| ConfigError::new(field, e.to_string()))?;
            if n == 0 || n > max {
                return Err(ConfigError::new(
                    field,
                    format!("must be more than 0s and at most {max}s"),
                ));
            }
            Ok(n)
        };
        let hold_seconds = match (&doc.hold, holding) {
            (None, _) => 0,
            (Some(_), Holding::NotPossible) => {
                return Err(ConfigError::new(
                    "hold",
                    "nothing can be held here: it is refused at once and the client \
                     retries once approved",
                ));
            }
            (Some(text), Holding::Allowed) => seconds("hold", text, MAX_HOLD_SECONDS)?,
        };
        Ok(ApprovalRequirement {
            approvers: doc.approvers,
            approvals: doc.approvals,
            reason_required: doc.reason_required,
            pending_seconds: seconds("pending", &doc.pending, MAX_SECONDS)?,
            valid_seconds: seconds("valid", &doc.valid, MAX_SECONDS)?,
            grant: doc.grant,
            break_glass: doc.break_glass,
            hold_seconds,
        })
    }

    /// Whether a member of `groups` may approve or deny under this requirement.
    pub fn is_approver(&self, groups: &[String]) -> bool {
        groups.iter().any(|g| self.approvers.contains(g))
    }

    /// Whether a member of `groups` may approve their own request (break-glass).
    pub fn is_break_glass(&self, groups: &[String]) -> bool {
        groups.iter().any(|g| self.break_glass.contains(g))
    }
}

/// A rule's `approval` object checked against its action: required for
/// `require_approval`, refused for any other action. Errors name `approval`.
pub fn rule_requirement(
    requires_approval: bool,
    value: Option<serde_json::Value>,
    holding: Holding,
) -> Result<Option<ApprovalRequirement>, ConfigError> {
    match (requires_approval, value) {
        (true, Some(value)) => ApprovalRequirement::from_value(value, holding)
            .map(Some)
            .map_err(|e| e.under("approval")),
        (true, None) => Err(ConfigError::new(
            "approval",
            "a require_approval rule must say who approves: {\"approvers\": [\"group\"]}",
        )),
        (false, Some(_)) => Err(ConfigError::new(
            "approval",
            "only a require_approval rule takes approval settings",
        )),
        (false, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(value: serde_json::Value) -> Result<ApprovalRequirement, String> {
        ApprovalRequirement::from_value(value, Holding::Allowed).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_one_single_use_approval_valid_for_fifteen_minutes() {
        let r = compile(json!({"approvers": ["dba"]})).unwrap();
        assert_eq!(r.approvals, 1);
        assert_eq!(r.grant, GrantKind::SingleUse);
        assert_eq!((r.pending_seconds, r.valid_seconds), (3600, 900));
        assert!(!r.reason_required && r.break_glass.is_empty() && r.hold_seconds == 0);
    }

    #[test]
    fn every_parameter_is_read() {
        let r = compile(json!({"approvers": ["dba", "lead"], "approvals": 2,
            "reason_required": true, "pending": "30m", "valid": "2h", "grant": "window",
            "break_glass": ["oncall"], "hold": "45s"}))
        .unwrap();
        assert_eq!(r.approvers, ["dba", "lead"]);
        assert_eq!(r.approvals, 2);
        assert!(r.reason_required);
        assert_eq!((r.pending_seconds, r.valid_seconds), (1800, 7200));
        assert_eq!(r.grant, GrantKind::Window);
        assert_eq!(r.break_glass, ["oncall"]);
        assert_eq!(r.hold_seconds, 45);
        assert!(r.is_approver(&["x".into(), "lead".into()]));
        assert!(!r.is_approver(&["oncall".into()]));
        assert!(r.is_break_glass(&["oncall".into()]));
    }

    #[test]
    fn bad_parameters_are_named() {
        let cases = [
            (
                json!({"approvers": []}),
                "approvers: name at least one group",
            ),
            (
                json!({"approvers": ["dba", " "]}),
                "approvers[1]: group name",
            ),
            (
                json!({"approvers": ["a"], "approvals": 0}),
                "approvals: must be 1 to 10",
            ),
            (
                json!({"approvers": ["a"], "approvals": 11}),
                "approvals: must be 1 to 10",
            ),
            (json!({"approvers": ["a"], "pending": "soon"}), "pending: "),
            (
                json!({"approvers": ["a"], "valid": "0s"}),
                "valid: must be more than 0s",
            ),
            (
                json!({"approvers": ["a"], "valid": "8d"}),
                "valid: must be more than 0s",
            ),
            (
                json!({"approvers": ["a"], "grant": "twice"}),
                "unknown variant `twice`",
            ),
            (
                json!({"approvers": ["a"], "approver": ["b"]}),
                "unknown field `approver`",
            ),
            (
                json!({"approvers": ["a"], "hold": "10m"}),
                "hold: must be more than 0s and at most 300s",
            ),
        ];
        for (doc, want) in cases {
            let err = compile(doc.clone()).unwrap_err();
            assert!(err.contains(want), "{doc}: {err}");
        }
    }

    #[test]
    fn a_filter_that_cannot_hold_refuses_hold() {
        let err = ApprovalRequirement::from_value(
            json!({"approvers": ["dba"], "hold": "30s"}),
            Holding::NotPossible,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("hold: nothing can be held here"),
            "{err}"
        );
    }

    #[test]
    fn the_action_and_the_settings_go_together() {
        let missing = rule_requirement(true, None, Holding::Allowed).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("approval: a require_approval rule")
        );
        let stray = rule_requirement(false, Some(json!({"approvers": ["a"]})), Holding::Allowed)
            .unwrap_err();
        assert_eq!(
            stray.to_string(),
            "approval: only a require_approval rule takes approval settings"
        );
        let nested = rule_requirement(
            true,
            Some(json!({"approvers": ["a"], "approvals": 0})),
            Holding::Allowed,
        )
        .unwrap_err();
        assert_eq!(nested.to_string(), "approval.approvals: must be 1 to 10");
        assert_eq!(
            rule_requirement(false, None, Holding::Allowed).unwrap(),
            None
        );
    }
}
