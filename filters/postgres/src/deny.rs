//! How a statement the policy blocks is refused on the wire.
//!
//! The engine cannot answer the client itself, and faking an error would leave the
//! server's transaction state wrong. So the denied SQL is replaced by a block that
//! makes the server raise the permission error itself:
//!
//! ```sql
//! DO $gh$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = E'<message>'; END$gh$
//! ```
//!
//! The server aborts a transaction block (25P02 afterwards until ROLLBACK) and skips
//! extended-protocol messages until Sync, exactly as for a real permission error.
//! The block also sets the error's DETAIL to the deciding rule, so a client shows
//! which rule refused it, as kubectl does for the Kubernetes filter:
//!
//! ```text
//! ERROR:  gatehouse: schema changes … go through migrations, not ad-hoc sessions
//! DETAIL:  denied by gatehouse rule no-ddl
//! ```
//!
//! A statement waiting for approval also gets a HINT naming the request and the
//! command that approves it (see [`crate::approval`]).
//!
//! Its ErrorResponse names the DO block's internals (CONTEXT, source file, line,
//! routine); [`client_error`] keeps only severity, SQLSTATE, message, detail and
//! hint, so the client sees the lines above and nothing else.

use crate::protocol::{BackendMessage, ErrorField, FrontendMessage};
use gatehouse_core::policy::{Action, Decision};

/// SQLSTATE of a denied statement: insufficient_privilege.
pub const DENIED_SQLSTATE: &str = "42501";
/// Longest message (in bytes) shown to the client; longer ones are cut.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// The portal the engine binds to make the server raise a denial at Describe. Portal
/// names are arbitrary bytes; a client never picks one starting with a control byte.
pub const PRIVATE_PORTAL: &[u8] = b"\x01gatehouse_denied";

/// What the client is told about a refused statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The error's message.
    pub message: String,
    /// The error's DETAIL: which rule decided.
    pub detail: Option<String>,
    /// The error's HINT: what to do about it (the approval request to wait for).
    pub hint: Option<String>,
}

impl From<&str> for Denial {
    /// A denial with only a message.
    fn from(message: &str) -> Denial {
        Denial {
            message: message.to_owned(),
            detail: None,
            hint: None,
        }
    }
}

/// What the client sees for a blocking decision: the rule's message, else one
/// naming the rule, with a DETAIL naming the deciding rule (or the policy's
/// default). Control characters (and NUL, which the protocol cannot carry)
/// become spaces; each text is at most [`MAX_MESSAGE_BYTES`].
pub fn denial_message(decision: &Decision) -> Denial {
    let rule = decision.rule.as_deref();
    let detail = match (decision.action, rule) {
        (Action::RequireApproval, Some(rule)) => {
            format!("needs approval under gatehouse rule {rule}")
        }
        (Action::RequireApproval, None) => {
            "needs approval under the gatehouse policy's default".to_owned()
        }
        (_, Some(rule)) => format!("denied by gatehouse rule {rule}"),
        (_, None) => "denied by the gatehouse policy's default".to_owned(),
    };
    Denial {
        message: clean(&message_text(decision)),
        detail: Some(clean(&detail)),
        hint: None,
    }
}

impl Denial {
    /// The same denial with `hint` (control characters become spaces; empty: none).
    pub fn with_hint(mut self, hint: &str) -> Denial {
        self.hint = (!hint.is_empty()).then(|| clean(hint));
        self
    }
}

fn message_text(decision: &Decision) -> String {
    match (&decision.message, &decision.rule) {
        (Some(message), _) if !message.is_empty() => message.clone(),
        (_, rule) => {
            let what = if decision.action == Action::RequireApproval {
                "statement requires approval"
            } else {
                "statement denied by policy"
            };
            match rule {
                Some(rule) => format!("{what} (rule {rule})"),
                None => what.to_string(),
            }
        }
    }
}

/// `text` without control characters, at most [`MAX_MESSAGE_BYTES`].
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE_BYTES));
    for c in text.chars() {
        if out.len() + c.len_utf8() > MAX_MESSAGE_BYTES {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// The DO block that makes the server raise the denial with SQLSTATE 42501.
///
/// Message, detail and hint are `E''` literals (backslash and quote escaped),
/// which mean the same whatever `standard_conforming_strings` says; the
/// dollar-quote tag is one no literal contains, so the block cannot be closed
/// early.
pub fn raise_block(denial: &Denial) -> String {
    let literal = |text: &str| {
        let mut literal = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            match c {
                '\\' => literal.push_str("\\\\"),
                '\'' => literal.push_str("''"),
                c => literal.push(c),
            }
        }
        literal
    };
    let message = literal(&denial.message);
    let detail = denial
        .detail
        .as_deref()
        .map(|detail| format!(", DETAIL = E'{}'", literal(detail)))
        .unwrap_or_default();
    let hint = denial
        .hint
        .as_deref()
        .map(|hint| format!(", HINT = E'{}'", literal(hint)))
        .unwrap_or_default();
    let mut tag = String::from("gh");
    let mut n = 0u32;
    while [&message, &detail, &hint]
        .iter()
        .any(|text| text.contains(&format!("${tag}$")))
    {
        n += 1;
        tag = format!("gh{n}");
    }
    format!(
        "DO ${tag}$BEGIN RAISE EXCEPTION USING ERRCODE = '{DENIED_SQLSTATE}', \
         MESSAGE = E'{message}'{detail}{hint}; END${tag}$"
    )
}

/// A Query message running [`raise_block`].
pub fn query(denial: &Denial) -> Vec<u8> {
    let mut out = Vec::new();
    FrontendMessage::Query {
        sql: raise_block(denial).as_bytes(),
    }
    .encode(&mut out);
    out
}

/// A Parse of statement `name` as [`raise_block`], with no parameter types.
pub fn parse(name: &[u8], denial: &Denial) -> Vec<u8> {
    let mut out = Vec::new();
    FrontendMessage::Parse {
        name,
        sql: raise_block(denial).as_bytes(),
        param_types: Vec::new(),
    }
    .encode(&mut out);
    out
}

/// A Bind of `portal` to `statement` with no parameters, parameter formats or result
/// formats: what a DO block accepts.
pub fn bind(portal: &[u8], statement: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrontendMessage::Bind(crate::protocol::Bind {
        portal,
        statement,
        param_formats: Vec::new(),
        params: Vec::new(),
        result_formats: Vec::new(),
    })
    .encode(&mut out);
    out
}

/// In place of Describe of a denied statement: Bind and Execute it in
/// [`PRIVATE_PORTAL`], so the server raises the denial where the description was due.
pub fn describe_replacement(statement: &[u8]) -> Vec<u8> {
    let mut out = bind(PRIVATE_PORTAL, statement);
    FrontendMessage::Execute {
        portal: PRIVATE_PORTAL,
        max_rows: 0,
    }
    .encode(&mut out);
    out
}

/// Whether an ErrorResponse is the server raising the denial (by its SQLSTATE
/// and message).
pub fn is_denial(fields: &[ErrorField<'_>], denial: &Denial) -> bool {
    crate::protocol::error_field(fields, b'C') == Some(DENIED_SQLSTATE.as_bytes())
        && crate::protocol::error_field(fields, b'M') == Some(denial.message.as_bytes())
}

/// The ErrorResponse the client gets for a raised denial: severity, SQLSTATE,
/// message, the detail naming the rule and the hint only (no CONTEXT naming
/// the DO block, no source file, line or routine).
pub fn client_error(fields: &[ErrorField<'_>]) -> Vec<u8> {
    let kept: Vec<ErrorField<'_>> = fields
        .iter()
        .filter(|(code, _)| matches!(code, b'S' | b'V' | b'C' | b'M' | b'D' | b'H'))
        .copied()
        .collect();
    let mut out = Vec::new();
    BackendMessage::ErrorResponse { fields: kept }.encode(&mut out);
    out
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use gatehouse_core::policy::Action;

    fn deny(message: Option<&str>, rule: Option<&str>) -> Decision {
        Decision {
            action: Action::Deny,
            rule: rule.map(str::to_string),
            message: message.map(str::to_string),
        }
    }

    #[test]
    fn message_falls_back_to_the_rule_and_loses_control_characters() {
        let ddl = denial_message(&deny(None, Some("no-ddl")));
        assert_eq!(ddl.message, "statement denied by policy (rule no-ddl)");
        assert_eq!(
            ddl.detail.as_deref(),
            Some("denied by gatehouse rule no-ddl")
        );
        let approval = Decision {
            action: Action::RequireApproval,
            ..deny(None, None)
        };
        let approval = denial_message(&approval);
        assert_eq!(approval.message, "statement requires approval");
        assert_eq!(
            approval.detail.as_deref(),
            Some("needs approval under the gatehouse policy's default")
        );
        assert_eq!(
            denial_message(&deny(Some("a\0b\nc"), None)).message,
            "a b c"
        );
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        assert!(denial_message(&deny(Some(&long), None)).message.len() <= MAX_MESSAGE_BYTES);
        let odd_rule = denial_message(&deny(Some("no"), Some("x\ny")));
        assert_eq!(
            odd_rule.detail.as_deref(),
            Some("denied by gatehouse rule x y")
        );
    }

    #[test]
    fn the_detail_names_the_rule_and_cannot_close_the_block() {
        let denial = denial_message(&deny(Some("no DDL"), Some("it's $gh$")));
        assert_eq!(
            raise_block(&denial),
            "DO $gh1$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = E'no DDL', \
             DETAIL = E'denied by gatehouse rule it''s $gh$'; END$gh1$"
        );
    }

    #[test]
    fn block_escapes_quotes_and_backslashes() {
        assert_eq!(
            raise_block(&Denial::from(r"it's a \ test")),
            r"DO $gh$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = E'it''s a \\ test'; END$gh$"
        );
    }

    #[test]
    fn dollar_tag_never_occurs_in_the_message() {
        let block = raise_block(&Denial::from("x $gh$ y $gh1$ z"));
        assert!(block.starts_with("DO $gh2$BEGIN"), "{block}");
        assert!(block.ends_with("END$gh2$"));
        assert_eq!(block.matches("$gh2$").count(), 2);
    }

    #[test]
    fn a_hint_is_escaped_and_comes_after_the_detail() {
        let denial = Denial::from("needs approval").with_hint("run 'gatehouse approve apr-x'\n");
        assert_eq!(
            raise_block(&denial),
            "DO $gh$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = E'needs approval', \
             HINT = E'run ''gatehouse approve apr-x'' '; END$gh$"
        );
        let block = raise_block(&Denial::from("m").with_hint("x $gh$ y"));
        assert!(block.starts_with("DO $gh1$BEGIN"), "{block}");
        assert_eq!(Denial::from("m").with_hint("").hint, None);
    }

    #[test]
    fn client_error_keeps_only_severity_code_message_detail_and_hint() {
        let fields: Vec<ErrorField<'_>> = vec![
            (b'S', b"ERROR"),
            (b'V', b"ERROR"),
            (b'C', b"42501"),
            (b'M', b"no"),
            (b'D', b"denied by gatehouse rule r"),
            (b'H', b"ask"),
            (b'W', b"PL/pgSQL function inline_code_block line 1 at RAISE"),
            (b'F', b"pl_exec.c"),
            (b'L', b"3907"),
            (b'R', b"exec_stmt_raise"),
        ];
        assert!(is_denial(&fields, &Denial::from("no")));
        assert!(!is_denial(&fields, &Denial::from("other")));
        let out = client_error(&fields);
        assert_eq!(&out[..1], b"E");
        assert_eq!(
            &out[5..],
            b"SERROR\0VERROR\0C42501\0Mno\0Ddenied by gatehouse rule r\0Hask\0\0"
        );
    }
}
