//! Masking a server message that streams through (longer than the engine's
//! buffer limit) in place: its length is already on its way to the client, so
//! every rewrite here keeps the length of every value.
//!
//! - DataRow: the column count and every value length pass unchanged. A value
//!   under a column rule is masked as it streams: `partial` keeps its last
//!   bytes, every other style fills it with `*` (`0` for text-format numbers,
//!   zero bytes for binary non-text values). A value under detectors only is
//!   held up to `max_scan_bytes` and its findings starred; a longer one is
//!   starred whole (the default over-cap policy; `allow` passes it).
//! - CopyData over the limit: starred whole except tabs, newlines and
//!   backslash escapes (so a text row keeps its shape), unless `allow` and
//!   no column rule applies to the COPY.
//! - ErrorResponse/NoticeResponse: field codes, severity, SQLSTATE and source
//!   location pass; every other field's text is starred.
//! - NotificationResponse: the payload is starred.

use super::config::MaskingPolicy;
use super::values::{ColumnPlan, TypeClass};
use gatehouse_core::mask::{DetectorCounts, MaskStyle, OverCapPolicy, ValueStream};
use std::sync::Arc;

/// Detector findings in `data` replaced by `*`, byte for byte; `None` when
/// nothing was found. Values over the scan cap follow the over-cap policy
/// (starred whole unless `allow`).
pub fn star_findings(policy: &MaskingPolicy, data: &[u8]) -> (Option<Vec<u8>>, DetectorCounts) {
    let masker = &policy.masker;
    let mut counts = DetectorCounts::default();
    if data.len() > masker.max_scan_bytes() {
        counts.over_cap = 1;
        return match policy.over_cap {
            OverCapPolicy::Allow => (None, counts),
            _ => (Some(vec![b'*'; data.len()]), counts),
        };
    }
    let findings = masker.detectors().scan(data);
    if findings.is_empty() {
        return (None, counts);
    }
    let mut out = data.to_vec();
    for finding in &findings {
        counts.add(finding.detector);
        if let Some(bytes) = out.get_mut(finding.range.clone()) {
            bytes.fill(b'*');
        }
    }
    (Some(out), counts)
}

/// One streamed message's rewrite; feed it the body's bytes in order.
pub struct StreamRewrite {
    policy: Arc<MaskingPolicy>,
    kind: Kind,
    exempt: bool,
    allow_over_cap: bool,
    rules: Vec<u64>,
    detectors: DetectorCounts,
    is_error: bool,
}

enum Kind {
    DataRow(RowState),
    Copy {
        star: bool,
        after_backslash: bool,
    },
    Fields {
        at_code: bool,
        keep: bool,
    },
    Notification {
        header_left: usize,
        in_channel: bool,
    },
}

struct RowState {
    plan: Vec<ColumnPlan>,
    unknown: Vec<ColumnPlan>,
    /// Bytes of the column count or of a value length being read.
    header: Vec<u8>,
    columns_left: Option<usize>,
    column: usize,
    value: Option<Value>,
}

struct Value {
    remaining: usize,
    action: ValueAction,
}

enum ValueAction {
    Pass,
    Stream(Box<ValueStream>),
    Fill(u8),
    Scan(Vec<u8>),
}

impl StreamRewrite {
    fn new(policy: Arc<MaskingPolicy>, kind: Kind) -> Self {
        let allow_over_cap = policy.over_cap == OverCapPolicy::Allow;
        Self {
            rules: vec![0; policy.rules.len()],
            policy,
            kind,
            exempt: false,
            allow_over_cap,
            detectors: DetectorCounts::default(),
            is_error: false,
        }
    }

    /// A DataRow with the columns' plan (`unknown` for columns past it).
    pub fn data_row(
        policy: Arc<MaskingPolicy>,
        plan: Vec<ColumnPlan>,
        unknown: Vec<ColumnPlan>,
        _body_len: usize,
    ) -> Self {
        Self::new(
            policy,
            Kind::DataRow(RowState {
                plan,
                unknown,
                header: Vec::with_capacity(4),
                columns_left: None,
                column: 0,
                value: None,
            }),
        )
    }

    /// A CopyData row: starred whole (shape kept) unless the over-cap policy
    /// is `allow` and no column rule applies to the COPY (`under_rules`).
    pub fn copy_data(policy: Arc<MaskingPolicy>, under_rules: bool, _body_len: usize) -> Self {
        let mut rewrite = Self::new(
            policy,
            Kind::Copy {
                star: false,
                after_backslash: false,
            },
        );
        rewrite.detectors.over_cap = 1;
        rewrite.kind = Kind::Copy {
            star: under_rules || !rewrite.allow_over_cap,
            after_backslash: false,
        };
        rewrite
    }

    pub fn fields(policy: Arc<MaskingPolicy>, _body_len: usize) -> Self {
        let mut rewrite = Self::new(
            policy,
            Kind::Fields {
                at_code: true,
                keep: true,
            },
        );
        rewrite.detectors.over_cap = 1;
        rewrite
    }

    pub fn notification(policy: Arc<MaskingPolicy>, _body_len: usize) -> Self {
        let mut rewrite = Self::new(
            policy,
            Kind::Notification {
                header_left: 4,
                in_channel: true,
            },
        );
        rewrite.detectors.over_cap = 1;
        rewrite
    }

    /// Leaves the bytes unchanged (an exempt identity) while still counting.
    pub fn with_exempt(mut self, exempt: bool) -> Self {
        self.exempt = exempt;
        self
    }

    /// Marks an ErrorResponse: the masker unwinds its requests at its end.
    pub fn with_error(mut self, is_error: bool) -> Self {
        self.is_error = is_error;
        self
    }

    pub(crate) fn is_error(&self) -> bool {
        self.is_error
    }

    /// Counts per rule (by index) and per detector so far.
    pub fn counts(&self) -> (&[u64], &DetectorCounts) {
        (&self.rules, &self.detectors)
    }

    /// Rewrites the next bytes of the body, appending the output to `out`.
    /// Over the whole message the output has exactly the input's length.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.exempt {
            let mut scratch = Vec::new();
            self.rewrite(input, &mut scratch);
            out.extend_from_slice(input);
        } else {
            self.rewrite(input, out);
        }
    }

    fn rewrite(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let star_all = !self.allow_over_cap;
        match &mut self.kind {
            Kind::Copy {
                star,
                after_backslash,
            } => {
                for &b in input {
                    let keep = !*star || *after_backslash || matches!(b, b'\t' | b'\n' | b'\\');
                    *after_backslash = b == b'\\' && !*after_backslash;
                    out.push(if keep { b } else { b'*' });
                }
            }
            Kind::Fields { at_code, keep } => {
                for &b in input {
                    if *at_code {
                        *keep =
                            !star_all || matches!(b, b'S' | b'V' | b'C' | b'F' | b'L' | b'R' | 0);
                        *at_code = false;
                        out.push(b);
                    } else if b == 0 {
                        *at_code = true;
                        out.push(0);
                    } else {
                        out.push(if *keep { b } else { b'*' });
                    }
                }
            }
            Kind::Notification {
                header_left,
                in_channel,
            } => {
                for &b in input {
                    if *header_left > 0 {
                        *header_left -= 1;
                        out.push(b);
                    } else if *in_channel {
                        *in_channel = b != 0;
                        out.push(b);
                    } else {
                        out.push(if b == 0 || !star_all { b } else { b'*' });
                    }
                }
            }
            Kind::DataRow(_) => self.rewrite_row(input, out),
        }
    }

    fn rewrite_row(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            let Kind::DataRow(row) = &mut self.kind else {
                return;
            };
            if let Some(value) = row.value.as_mut() {
                let n = value.remaining.min(input.len());
                let (chunk, rest) = input.split_at(n);
                input = rest;
                value.remaining -= n;
                let done = value.remaining == 0;
                match &mut value.action {
                    ValueAction::Pass => out.extend_from_slice(chunk),
                    ValueAction::Stream(stream) => stream.update(chunk, out),
                    ValueAction::Fill(byte) => out.resize(out.len() + n, *byte),
                    ValueAction::Scan(buf) => buf.extend_from_slice(chunk),
                }
                if done && let Some(value) = row.value.take() {
                    match value.action {
                        ValueAction::Stream(stream) => stream.finish(out),
                        ValueAction::Scan(buf) => {
                            let (masked, counts) = star_findings(&self.policy, &buf);
                            self.detectors.merge(&counts);
                            out.extend_from_slice(masked.as_deref().unwrap_or(&buf));
                        }
                        ValueAction::Pass | ValueAction::Fill(_) => {}
                    }
                }
                continue;
            }
            // Reading the column count (2 bytes) or a value length (4 bytes).
            let want = if row.columns_left.is_none() { 2 } else { 4 };
            let n = (want - row.header.len()).min(input.len());
            let (chunk, rest) = input.split_at(n);
            input = rest;
            row.header.extend_from_slice(chunk);
            out.extend_from_slice(chunk);
            if row.header.len() < want {
                return;
            }
            let header = std::mem::take(&mut row.header);
            match row.columns_left {
                None => {
                    let count = header
                        .get(..2)
                        .and_then(|b| <[u8; 2]>::try_from(b).ok())
                        .map_or(0, i16::from_be_bytes);
                    row.columns_left = Some(usize::try_from(count).unwrap_or(0));
                }
                Some(_) => {
                    let len = header
                        .get(..4)
                        .and_then(|b| <[u8; 4]>::try_from(b).ok())
                        .map_or(-1, i32::from_be_bytes);
                    let column = row.column;
                    row.column += 1;
                    if let Some(left) = row.columns_left.as_mut() {
                        *left = left.saturating_sub(1);
                    }
                    let Ok(len) = usize::try_from(len) else {
                        continue; // NULL
                    };
                    if len == 0 {
                        continue;
                    }
                    let plan = row
                        .plan
                        .get(column)
                        .or_else(|| row.unknown.get(column))
                        .or_else(|| row.unknown.last())
                        .copied();
                    let action = self.value_action(plan, len);
                    if let Kind::DataRow(row) = &mut self.kind {
                        row.value = Some(Value {
                            remaining: len,
                            action,
                        });
                    }
                }
            }
        }
    }

    fn value_action(&mut self, plan: Option<ColumnPlan>, len: usize) -> ValueAction {
        let Some(plan) = plan else {
            return ValueAction::Pass;
        };
        let masker = &self.policy.masker;
        if plan.masks_whole() {
            if let Some(n) = plan.rule.and_then(|index| self.rules.get_mut(index)) {
                *n = n.saturating_add(1);
            }
            let (style, _) = plan.whole_style(&self.policy);
            let text_like = matches!(
                (plan.class, plan.binary),
                (TypeClass::Text, _) | (TypeClass::Bytea, true)
            );
            return match plan.class {
                _ if text_like => {
                    let style = if style == MaskStyle::Partial {
                        MaskStyle::Partial
                    } else {
                        MaskStyle::RedactKeepLength
                    };
                    ValueAction::Stream(Box::new(masker.begin_value_stream(style, len)))
                }
                _ if plan.binary => ValueAction::Fill(0),
                TypeClass::Int2 | TypeClass::Int4 | TypeClass::Int8 | TypeClass::Numeric => {
                    ValueAction::Fill(b'0')
                }
                _ => ValueAction::Fill(b'*'),
            };
        }
        // Every type is scanned: its text form, or its raw binary bytes
        // (findings are starred in place, so lengths and binary structure
        // hold).
        if len <= masker.max_scan_bytes() {
            return ValueAction::Scan(Vec::with_capacity(len));
        }
        self.detectors.over_cap = self.detectors.over_cap.saturating_add(1);
        if self.allow_over_cap {
            ValueAction::Pass
        } else {
            ValueAction::Fill(b'*')
        }
    }
}
