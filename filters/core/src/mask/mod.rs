//! Masking: finding sensitive values in what flows back to a client and
//! replacing them, the same way for every filter.
//!
//! - [`DetectorKind`] / [`Detector`]: hand-written scanners for e-mail, payment
//!   cards, US SSNs, IBANs, phone numbers, JWTs, AWS access keys, PEM private
//!   keys and secret assignments, each validated (checksums, prefixes, lengths)
//!   to keep false positives low. [`DetectorSet::scan`] returns non-overlapping
//!   [`Finding`]s.
//! - [`MaskStyle`] / [`ValueType`] / [`Masker::mask_value`]: replacing a whole
//!   value (a column under a rule) so it stays decodable for its type.
//! - [`Masker::mask_text`]: masking detector findings inside a text value; the
//!   input comes back borrowed when nothing is found.
//! - [`Masker::mask_json_strings`]: the same inside JSON documents.
//! - [`Masker::begin_value_stream`]: a large value under a column rule, chunk
//!   by chunk, with its output length known up front.
//! - [`MaskConfig`]: the configuration, compiled into a [`Masker`].
//!
//! Records get [`DetectorCounts`], never the values.

mod config;
mod detector;
mod detectors;
mod json;
mod kind;
#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod robustness;
mod stream;
mod style;
mod write;

pub use config::{MAX_SCAN_BYTES_LIMIT, MaskConfig, detector_named, style_named};
pub use detector::{DetectorCounts, DetectorSet, Finding, scan};
pub use detectors::{is_secret_key_name, is_secret_value};
pub use json::{JsonMaskError, JsonMasked};
pub use kind::{Detector, DetectorKind};
pub use stream::ValueStream;
pub use style::{
    DEFAULT_KEEP_LAST, DEFAULT_MAX_SCAN_BYTES, DEFAULT_REDACT_TOKEN, MaskStyle, Masked, Masker,
    OverCapPolicy, TextMasked, ValueType,
};
