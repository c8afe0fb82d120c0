//! What a policy can decide, shared by every filter.

use serde::{Deserialize, Serialize};

/// The action a matching rule (or the default) takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let it through.
    Allow,
    /// Refuse it with the rule's message; the session or client carries on.
    Deny,
    /// Let it through but record what the rule would have done (shadow mode).
    Observe,
    /// Needs a human's approval first; until approvals exist this refuses like
    /// `Deny`, with a distinct reason in the record.
    RequireApproval,
}

impl Action {
    /// Whether the request is stopped.
    pub fn blocks(self) -> bool {
        matches!(self, Action::Deny | Action::RequireApproval)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Observe => "observe",
            Action::RequireApproval => "require_approval",
        }
    }
}

/// The outcome of judging one statement or request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub action: Action,
    /// Name of the rule that decided; `None` when the policy's default did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Message shown to the client when the action blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Decision {
    /// Allowed with no policy involved (the engine's behaviour before policy is loaded).
    pub fn allow() -> Self {
        Self { action: Action::Allow, rule: None, message: None }
    }
}
