//! Row masking: how the rows of the COPY in progress are masked (by column
//! rule, by detector, or starred when they cannot be read).

use super::super::values::{self, ColumnPlan, RowPlan, ValueCounts};
use super::super::{Disposition, Expect, MaskingPolicy, SessionMasker, stream};
use super::codec::{self, FieldEdit, MalformedRows};
use super::{CopyFormat, CopyOptions, CopyStatement};
use crate::protocol::{BackendMessage, CopyResponse};
use gatehouse_core::mask::{DetectorCounts, Masked};
use std::borrow::Cow;
use std::rc::Rc;

/// How the rows of the COPY in progress are masked.
#[derive(Debug, Clone)]
pub struct CopyRows {
    binary: bool,
    mode: RowMode,
    /// The text or CSV header line, or the binary header, is still to come.
    header_pending: bool,
}

#[derive(Debug, Clone)]
enum RowMode {
    /// No column rules: the detectors run over each whole message.
    Detectors,
    /// Rows parsed with these options; values masked by the plan, or NULL
    /// without one.
    Parsed {
        options: CopyOptions,
        plan: Option<Rc<RowPlan>>,
    },
    /// Column rules, but text rows that cannot be parsed: starred whole.
    Starred,
}

/// What masking one COPY message did, for the records.
#[derive(Debug, Default)]
pub(crate) struct CopyCounts {
    pub rules: Vec<u64>,
    pub detectors: DetectorCounts,
}

impl CopyCounts {
    fn add(&mut self, counts: &ValueCounts) {
        if let Some(rule) = counts.rule {
            if self.rules.len() <= rule {
                self.rules.resize(rule + 1, 0);
            }
            if let Some(n) = self.rules.get_mut(rule) {
                *n = n.saturating_add(1);
            }
        }
        self.detectors.merge(&counts.detectors);
    }

    fn unknown_value(&mut self) {
        self.detectors.over_cap = self.detectors.over_cap.saturating_add(1);
    }
}

impl CopyRows {
    /// Whether column rules apply to these rows (streamed rows are then
    /// starred whatever the over-cap policy).
    pub fn under_rules(&self) -> bool {
        !matches!(self.mode, RowMode::Detectors)
    }

    /// A streamed message went by: whatever header it held is past.
    pub fn streamed(&mut self) {
        self.header_pending = false;
    }

    /// One CopyData's rows masked; `None` when unchanged.
    pub(crate) fn mask(
        &mut self,
        policy: &MaskingPolicy,
        data: &[u8],
        counts: &mut CopyCounts,
    ) -> Option<Vec<u8>> {
        let header_pending = std::mem::replace(&mut self.header_pending, false);
        match &self.mode {
            RowMode::Detectors => detectors_only(policy, self.binary, data, counts),
            RowMode::Starred => {
                counts.unknown_value();
                Some(star_keeping_shape(data))
            }
            RowMode::Parsed { options, plan } => {
                let plan = plan.as_deref().map(Vec::as_slice);
                let result = match options.format {
                    CopyFormat::Binary => {
                        codec::rewrite_binary(data, header_pending, |column, value| {
                            mask_one(policy, plan, column, true, value, counts).into()
                        })
                    }
                    // The header line is column names: it passes.
                    _ if header_pending && options.header => codec::header_line_end(options, data)
                        .and_then(|end| {
                            let (header, rows) = data.split_at_checked(end).ok_or(MalformedRows)?;
                            Ok(mask_rows(policy, options, plan, rows, counts)?
                                .map(|masked| [header, masked.as_slice()].concat()))
                        }),
                    _ => mask_rows(policy, options, plan, data, counts),
                };
                match result {
                    Ok(masked) => masked,
                    Err(MalformedRows) => {
                        counts.unknown_value();
                        Some(vec![b'*'; data.len()])
                    }
                }
            }
        }
    }
}

/// The rows of a COPY: `statement` is the COPY's entry in its Query (if any),
/// `plan` the plan built from its description.
pub(crate) fn start_rows(
    has_rules: bool,
    response: &CopyResponse,
    statement: Option<&CopyStatement>,
    plan: Option<RowPlan>,
) -> CopyRows {
    let binary = response.format == 1;
    let options = statement.and_then(|s| s.options.clone());
    let mode = match options {
        _ if !has_rules => RowMode::Detectors,
        Some(options) if (options.format == CopyFormat::Binary) == binary => {
            // The description must cover exactly the COPY's columns (a table
            // with generated columns, for one, copies fewer than `*` selects).
            let plan = plan.filter(|p| p.len() == response.column_formats.len());
            RowMode::Parsed {
                options,
                plan: plan.map(Rc::new),
            }
        }
        // Binary rows describe themselves.
        _ if binary => RowMode::Parsed {
            options: CopyOptions::defaults(CopyFormat::Binary),
            plan: None,
        },
        _ => RowMode::Starred,
    };
    CopyRows {
        binary,
        mode,
        header_pending: true,
    }
}

fn detectors_only(
    policy: &MaskingPolicy,
    binary: bool,
    data: &[u8],
    counts: &mut CopyCounts,
) -> Option<Vec<u8>> {
    if binary {
        let (masked, found) = stream::star_findings(policy, data);
        counts.detectors.merge(&found);
        return masked;
    }
    let masked = policy.masker.mask_text(data);
    counts.detectors.merge(&masked.counts);
    match masked.value {
        Masked::Value(Cow::Borrowed(_)) => None,
        Masked::Value(Cow::Owned(v)) => Some(v),
        // A `null` style finding: the row keeps its shape with the finding
        // starred instead.
        Masked::Null => stream::star_findings(policy, data).0,
    }
}

/// Every byte starred except tabs, newlines and what follows a backslash.
pub fn star_keeping_shape(data: &[u8]) -> Vec<u8> {
    let mut after_backslash = false;
    data.iter()
        .map(|&b| {
            let keep = after_backslash || matches!(b, b'\t' | b'\n' | b'\\');
            after_backslash = b == b'\\' && !after_backslash;
            if keep { b } else { b'*' }
        })
        .collect()
}

/// One value of a row: its plan masks it, or without a plan it becomes NULL.
fn mask_one<'a>(
    policy: &MaskingPolicy,
    plan: Option<&[ColumnPlan]>,
    column: usize,
    binary: bool,
    value: &'a [u8],
    counts: &mut CopyCounts,
) -> Masked<'a> {
    match plan.and_then(|p| p.get(column)) {
        Some(column_plan) => {
            let column_plan = ColumnPlan {
                binary,
                ..*column_plan
            };
            let mut value_counts = ValueCounts::default();
            let masked = values::mask_value(policy, column_plan, value, &mut value_counts);
            counts.add(&value_counts);
            masked
        }
        None => {
            counts.unknown_value();
            Masked::Null
        }
    }
}

/// Text or CSV rows, each value masked by its column's plan.
fn mask_rows(
    policy: &MaskingPolicy,
    options: &CopyOptions,
    plan: Option<&[ColumnPlan]>,
    data: &[u8],
    counts: &mut CopyCounts,
) -> Result<Option<Vec<u8>>, MalformedRows> {
    let edit = |column, value: &[u8]| -> FieldEdit {
        mask_one(policy, plan, column, false, value, counts).into()
    };
    match options.format {
        CopyFormat::Csv => codec::rewrite_csv_rows(options, data, edit),
        _ => codec::rewrite_text_rows(options, data, edit),
    }
}

impl SessionMasker {
    /// A CopyOutResponse: how its rows are masked.
    pub(in crate::masking) fn start_copy(&mut self, response: &CopyResponse) {
        let statement = match self.expected.front_mut() {
            Some(Expect::Query { copies, .. }) => copies.pop_front(),
            Some(Expect::Execute { portal, .. }) => portal
                .as_ref()
                .and_then(|shape| shape.copy.as_deref().cloned()),
            _ => None,
        };
        let binary = response.format == 1;
        let described = statement.as_ref().and_then(|s| s.fields.borrow().clone());
        let plan = described.map(|fields| {
            let describe_sql = statement.as_ref().and_then(|s| s.describe_sql.clone());
            let taints = self.copy_taints(describe_sql.as_deref(), fields.len());
            self.plan(&fields, Some(&[i16::from(binary)]), &taints)
        });
        self.copy = Some(start_rows(
            !self.policy.rules.is_empty(),
            response,
            statement.as_ref(),
            plan,
        ));
    }

    pub(in crate::masking) fn on_copy_data(&mut self, data: &[u8]) -> Disposition {
        let Some(mut rows) = self.copy.take() else {
            // CopyData outside a COPY the masker saw begin: detectors only.
            let response = CopyResponse {
                format: 0,
                column_formats: Vec::new(),
            };
            self.copy = Some(start_rows(
                !self.policy.rules.is_empty(),
                &response,
                None,
                None,
            ));
            return self.on_copy_data(data);
        };
        let mut counts = CopyCounts::default();
        let masked = rows.mask(&self.policy, data, &mut counts);
        self.copy = Some(rows);
        self.add_counts(&counts.rules, &counts.detectors);
        match masked {
            Some(data) => self.replace(BackendMessage::CopyData { data: &data }),
            None => Disposition::Pass,
        }
    }
}
