//! Records never hold in clear what masking would hide. Unless the masking
//! policy says `"records": "clear"`, before a statement record is written:
//! - a statement that names a masked table, view or column (see
//!   [`lineage::mentions`]) has its literals replaced by `$n` placeholders
//!   (they may be values of those columns, in any form: `ssn = '123456789'`);
//!   any other statement's text goes through the detectors;
//! - bind and function-call parameters go through the detectors; those of a
//!   statement that names masked data are replaced whole;
//! - error messages go through the detectors; those of a statement that
//!   names masked data (or an unknown one) also lose the values they quote.
//!
//! This holds for exempt identities too: records are read by others.

use super::SessionMasker;
use crate::sql::lexer::{self, Settings};
use crate::sql::lineage;
use base64::Engine as _;
use gatehouse_core::mask::Masked;
use gatehouse_core::record::ParameterValue;

/// What a masked parameter is recorded as.
const MASKED_PARAMETER: &str = "****";

impl SessionMasker {
    fn masks_records(&self) -> bool {
        self.policy.records_masked
    }

    /// Whether a statement names masked data. The text may have been judged
    /// under other settings than the server's current ones: where the setting
    /// changes its reading (a backslash, a `U&'` string), either reading counts.
    fn names_masked(&self, sql: &str) -> bool {
        let settings = self.lexing.settings();
        let mentions =
            |settings| lineage::mentions(sql, &lexer::tokenize_with(sql, settings), &self.sources);
        mentions(settings)
            || ((sql.contains('\\') || sql.contains("&'"))
                && mentions(Settings {
                    standard_conforming_strings: !settings.standard_conforming_strings,
                }))
    }

    /// A statement's text as its record holds it.
    pub fn record_text(&self, text: String) -> String {
        if !self.masks_records() {
            return text;
        }
        if self.names_masked(&text) {
            let lexed = lexer::tokenize_with(&text, self.lexing.settings());
            return lexer::redact_literals(&text, &lexed);
        }
        self.record_message(text)
    }

    /// Bind or FunctionCall parameters as a record holds them; `statement`
    /// is the text they are bound to, when known.
    pub fn record_parameters(
        &self,
        statement: Option<&str>,
        parameters: Vec<ParameterValue>,
    ) -> Vec<ParameterValue> {
        if !self.masks_records() {
            return parameters;
        }
        // Unknown statement: it may name masked data.
        let whole = statement.is_none_or(|sql| self.names_masked(sql));
        parameters
            .into_iter()
            .map(|value| match value {
                ParameterValue::Text(_) | ParameterValue::Binary { .. } if whole => {
                    ParameterValue::Text(MASKED_PARAMETER.into())
                }
                ParameterValue::Text(text) => ParameterValue::Text(self.record_message(text)),
                ParameterValue::Binary { base64 } => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(&base64)
                        .unwrap_or_default();
                    if self.policy.masker.mask_text(&bytes).value.is_unchanged() {
                        ParameterValue::Binary { base64 }
                    } else {
                        ParameterValue::Text(MASKED_PARAMETER.into())
                    }
                }
                other => other,
            })
            .collect()
    }

    /// A server error's message as a record holds it; `statement` is the
    /// text that caused it, when known.
    pub fn record_error_message(&self, message: String, statement: Option<&str>) -> String {
        if !self.masks_records() {
            return message;
        }
        let message = match statement.is_none_or(|sql| self.names_masked(sql)) {
            true => match super::mask_quoted(message.as_bytes(), self.policy.masker.redact_token())
            {
                Some(masked) => String::from_utf8_lossy(&masked).into_owned(),
                None => message,
            },
            false => message,
        };
        self.record_message(message)
    }

    /// A message (an error's, a statement's text) through the detectors.
    pub fn record_message(&self, message: String) -> String {
        if !self.masks_records() {
            return message;
        }
        match self.policy.masker.mask_text(message.as_bytes()).value {
            Masked::Value(std::borrow::Cow::Owned(masked)) => {
                String::from_utf8_lossy(&masked).into_owned()
            }
            Masked::Null => MASKED_PARAMETER.into(),
            Masked::Value(std::borrow::Cow::Borrowed(_)) => message,
        }
    }
}
