//! Names of labelled stats, shared by every build's glue.
//!
//! Envoy's extension stats (Wasm `wasmcustom.…`, dynamic modules
//! `dynamicmodulescustom.…`) know no labels: a labelled stat carries its labels
//! inside its name as `label=.=value;.;` pairs, which one
//! `stats_config.stats_tags` rule per label name turns back into tags (see
//! `gatehouse_host::metrics` for the whole scheme).

/// Distinct label values one family defines per filter instance before
/// counting new ones under [`OVERFLOW_LABEL`].
pub const MAX_SERIES: usize = 1_000;

/// The label value that stands for every value past [`MAX_SERIES`].
pub const OVERFLOW_LABEL: &str = "other";

/// Longest label value kept, in bytes; longer values are cut.
pub const MAX_LABEL_VALUE_BYTES: usize = 64;

/// Appends `value` to `out` as a label value that neither Envoy's stat names
/// nor the tag rules can misread: ASCII letters, digits and `_ - : /` stay,
/// every other character (`.`, `=`, `;`, spaces, quotes, non-ASCII) becomes
/// `_`; the result is cut to [`MAX_LABEL_VALUE_BYTES`]; an empty value is `_`.
pub fn push_label_value(out: &mut String, value: &str) {
    let start = out.len();
    for c in value.chars().take(MAX_LABEL_VALUE_BYTES) {
        let keep = c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '/');
        out.push(if keep { c } else { '_' });
    }
    if out.len() == start {
        out.push('_');
    }
}

/// The name to define for one stat of a labelled family: `family` is the name
/// Prometheus shows (`gatehouse_pg_decisions_total`), `labels` its label names
/// and raw values, in the order they are encoded.
pub fn labelled_name(family: &str, labels: &[(&str, &str)]) -> String {
    let (head, tail) = family.rfind('_').map_or((family, ""), |at| {
        family.split_at_checked(at + 1).unwrap_or((family, ""))
    });
    let mut name = String::with_capacity(family.len() + labels.len() * 24);
    name.push_str(head);
    for (label, value) in labels {
        name.push_str(label);
        name.push_str("=.=");
        push_label_value(&mut name, value);
        name.push_str(";.;");
    }
    name.push_str(tail);
    name
}
