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
//! Its ErrorResponse names the DO block's internals (CONTEXT, source file, line,
//! routine); [`client_error`] keeps only severity, SQLSTATE and message, so the client
//! sees `ERROR:  <message>` and nothing else.

use crate::protocol::{BackendMessage, ErrorField, FrontendMessage};
use gatehouse_core::policy::{Action, Decision};

/// SQLSTATE of a denied statement: insufficient_privilege.
pub const DENIED_SQLSTATE: &str = "42501";
/// Longest message (in bytes) shown to the client; longer ones are cut.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// The portal the engine binds to make the server raise a denial at Describe. Portal
/// names are arbitrary bytes; a client never picks one starting with a control byte.
pub const PRIVATE_PORTAL: &[u8] = b"\x01gatehouse_denied";

/// The message the client sees for a blocking decision: the rule's message, else
/// one naming the rule. Control characters (and NUL, which the protocol cannot
/// carry) become spaces; the result is at most [`MAX_MESSAGE_BYTES`].
pub fn denial_message(decision: &Decision) -> String {
    let text = match (&decision.message, &decision.rule) {
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
    };
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE_BYTES));
    for c in text.chars() {
        if out.len() + c.len_utf8() > MAX_MESSAGE_BYTES {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// The DO block that makes the server raise `message` with SQLSTATE 42501.
///
/// The message is an `E''` literal (backslash and quote escaped), which means the
/// same whatever `standard_conforming_strings` says; the dollar-quote tag is one the
/// literal does not contain, so the block cannot be closed early.
pub fn raise_block(message: &str) -> String {
    raise_block_with_hint(message, "")
}

/// [`raise_block`] with a HINT (none when `hint` is empty): what to do about it,
/// e.g. which approval request to wait for.
pub fn raise_block_with_hint(message: &str, hint: &str) -> String {
    let message = e_literal(message);
    let hint = (!hint.is_empty()).then(|| e_literal(&clean(hint)));
    let mut tag = String::from("gh");
    let mut n = 0u32;
    let clashes = |tag: &str| {
        let tag = format!("${tag}$");
        message.contains(&tag) || hint.as_ref().is_some_and(|h| h.contains(&tag))
    };
    while clashes(&tag) {
        n += 1;
        tag = format!("gh{n}");
    }
    let hint = hint.map(|h| format!(", HINT = E'{h}'")).unwrap_or_default();
    format!(
        "DO ${tag}$BEGIN RAISE EXCEPTION USING ERRCODE = '{DENIED_SQLSTATE}', \
         MESSAGE = E'{message}'{hint}; END${tag}$"
    )
}

/// The body of an `E''` literal meaning `text`.
fn e_literal(text: &str) -> String {
    let mut literal = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => literal.push_str("\\\\"),
            '\'' => literal.push_str("''"),
            c => literal.push(c),
        }
    }
    literal
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

/// A Query message running [`raise_block_with_hint`].
pub fn query_with_hint(message: &str, hint: &str) -> Vec<u8> {
    let mut out = Vec::new();
    FrontendMessage::Query {
        sql: raise_block_with_hint(message, hint).as_bytes(),
    }
    .encode(&mut out);
    out
}

/// A Parse of statement `name` as [`raise_block_with_hint`], with no parameter types.
pub fn parse_with_hint(name: &[u8], message: &str, hint: &str) -> Vec<u8> {
    let mut out = Vec::new();
    FrontendMessage::Parse {
        name,
        sql: raise_block_with_hint(message, hint).as_bytes(),
        param_types: Vec::new(),
    }
    .encode(&mut out);
    out
}

/// A Query message running [`raise_block`].
pub fn query(message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    FrontendMessage::Query {
        sql: raise_block(message).as_bytes(),
    }
    .encode(&mut out);
    out
}

/// A Parse of statement `name` as [`raise_block`], with no parameter types.
pub fn parse(name: &[u8], message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    FrontendMessage::Parse {
        name,
        sql: raise_block(message).as_bytes(),
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

/// Whether an ErrorResponse is the server raising the denial with `message`.
pub fn is_denial(fields: &[ErrorField<'_>], message: &str) -> bool {
    crate::protocol::error_field(fields, b'C') == Some(DENIED_SQLSTATE.as_bytes())
        && crate::protocol::error_field(fields, b'M') == Some(message.as_bytes())
}

/// The ErrorResponse the client gets for a raised denial: severity, SQLSTATE,
/// message and hint only (no CONTEXT naming the DO block, no source file, line
/// or routine).
pub fn client_error(fields: &[ErrorField<'_>]) -> Vec<u8> {
    let kept: Vec<ErrorField<'_>> = fields
        .iter()
        .filter(|(code, _)| matches!(code, b'S' | b'V' | b'C' | b'M' | b'H'))
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
        assert_eq!(
            denial_message(&deny(None, Some("no-ddl"))),
            "statement denied by policy (rule no-ddl)"
        );
        let approval = Decision {
            action: Action::RequireApproval,
            ..deny(None, None)
        };
        assert_eq!(denial_message(&approval), "statement requires approval");
        assert_eq!(denial_message(&deny(Some("a\0b\nc"), None)), "a b c");
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        assert!(denial_message(&deny(Some(&long), None)).len() <= MAX_MESSAGE_BYTES);
    }

    #[test]
    fn block_escapes_quotes_and_backslashes() {
        assert_eq!(
            raise_block(r"it's a \ test"),
            r"DO $gh$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = E'it''s a \\ test'; END$gh$"
        );
    }

    #[test]
    fn dollar_tag_never_occurs_in_the_message() {
        let block = raise_block("x $gh$ y $gh1$ z");
        assert!(block.starts_with("DO $gh2$BEGIN"), "{block}");
        assert!(block.ends_with("END$gh2$"));
        assert_eq!(block.matches("$gh2$").count(), 2);
    }

    #[test]
    fn a_hint_is_escaped_and_kept_apart_from_the_message() {
        assert_eq!(
            raise_block_with_hint("needs approval", "run 'gatehouse approve apr-x'\n"),
            "DO $gh$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = E'needs approval', \
             HINT = E'run ''gatehouse approve apr-x'' '; END$gh$"
        );
        let block = raise_block_with_hint("m", "x $gh$ y");
        assert!(block.starts_with("DO $gh1$BEGIN"), "{block}");
        assert_eq!(raise_block_with_hint("m", ""), raise_block("m"));
    }

    #[test]
    fn client_error_keeps_only_severity_code_and_message() {
        let fields: Vec<ErrorField<'_>> = vec![
            (b'S', b"ERROR"),
            (b'V', b"ERROR"),
            (b'C', b"42501"),
            (b'M', b"no"),
            (b'H', b"ask"),
            (b'W', b"PL/pgSQL function inline_code_block line 1 at RAISE"),
            (b'F', b"pl_exec.c"),
            (b'L', b"3907"),
            (b'R', b"exec_stmt_raise"),
        ];
        assert!(is_denial(&fields, "no"));
        assert!(!is_denial(&fields, "other"));
        let out = client_error(&fields);
        assert_eq!(&out[..1], b"E");
        assert_eq!(&out[5..], b"SERROR\0VERROR\0C42501\0Mno\0Hask\0\0");
    }
}
