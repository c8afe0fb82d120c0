//! Masking over configured JSON paths (`masking.fields`, compiled in
//! [`crate::config`] as [`FieldMasking`]): selecting the rules for one
//! response and one object, and masking the values their paths reach.

use crate::config::{FieldMasking, FieldPath, FieldRule, Segment};
use gatehouse_core::mask::{
    DetectorKind, MaskStyle, Masked, Masker, ValueType, is_secret_key_name, is_secret_value,
};
use serde_json::Value;

impl FieldMasking {
    /// The rules that apply to a response to a request for `resource`: those
    /// naming it, and every rule naming kinds.
    pub(crate) fn for_response(&self, resource: &str) -> Option<FieldSelection<'_>> {
        let compiled = self.compiled.as_deref()?;
        let by_resource: Vec<&FieldRule> = compiled
            .rules
            .iter()
            .filter(|r| r.resources.iter().any(|w| w.matches(resource)))
            .collect();
        let by_kind: Vec<&FieldRule> = compiled
            .rules
            .iter()
            .filter(|r| !r.kinds.is_empty())
            .collect();
        (!by_resource.is_empty() || !by_kind.is_empty()).then_some(FieldSelection {
            by_resource,
            by_kind,
            masker: &compiled.masker,
        })
    }
}

/// The `fields` rules that may apply to one response.
#[derive(Debug, Clone)]
pub(crate) struct FieldSelection<'a> {
    by_resource: Vec<&'a FieldRule>,
    by_kind: Vec<&'a FieldRule>,
    masker: &'a Masker,
}

impl<'a> FieldSelection<'a> {
    /// Whether `body` may hold an object these rules act on: always when a
    /// rule names the requested resource, else when the body names one of the
    /// kinds (a string starting `"Kind`, which `"KindList"` does too; an
    /// escaped spelling counts, since the body then holds a backslash).
    pub(crate) fn may_apply(&self, body: &[u8]) -> bool {
        !self.by_resource.is_empty()
            || self.by_kind.iter().flat_map(|r| &r.kinds).any(|kind| {
                let needle = format!("\"{kind}");
                memchr::memmem::find(body, needle.as_bytes()).is_some()
            })
            || (!self.by_kind.is_empty() && memchr::memchr(b'\\', body).is_some())
    }

    /// Whether a `whole` rule applies to the requested resource's objects,
    /// or to objects of `kind`: the columns a Table prints of them may show
    /// what the rule hides, and are masked too.
    pub(crate) fn masks_whole(&self, kind: Option<&str>) -> bool {
        self.by_resource.iter().any(|r| r.whole)
            || kind.is_some_and(|kind| {
                self.by_kind
                    .iter()
                    .any(|r| r.whole && r.kinds.iter().any(|k| k == kind))
            })
    }

    /// The paths to mask in one object of `kind`.
    pub(crate) fn for_object(&self, kind: &str) -> Option<SelectedFields<'a>> {
        let paths: Vec<(&FieldPath, bool)> = self
            .by_resource
            .iter()
            .chain(
                self.by_kind
                    .iter()
                    .filter(|r| r.kinds.iter().any(|k| k == kind)),
            )
            .flat_map(|r| r.paths.iter().map(|p| (p, r.whole)))
            .collect();
        (!paths.is_empty()).then_some(SelectedFields {
            paths,
            masker: self.masker,
        })
    }
}

/// The field paths that apply to one object.
#[derive(Debug, Clone)]
pub(crate) struct SelectedFields<'a> {
    /// Each path, and whether its values are replaced whole.
    paths: Vec<(&'a FieldPath, bool)>,
    masker: &'a Masker,
}

impl SelectedFields<'_> {
    /// Masks every selected value in `object` (`whole` rules replace values
    /// with `mask_text`); returns the paths (as written) under which
    /// something was masked.
    pub(crate) fn mask(&self, object: &mut Value, mask_text: &str) -> Vec<&str> {
        let mut masked = Vec::new();
        for (path, whole) in &self.paths {
            let how = if *whole {
                How::Whole(mask_text)
            } else {
                How::Detect(self.masker)
            };
            if visit(object, None, &path.segments, how) {
                masked.push(path.as_str());
            }
        }
        masked
    }
}

/// How the values a path selects are masked.
#[derive(Clone, Copy)]
enum How<'a> {
    Detect(&'a Masker),
    Whole(&'a str),
}

/// Follows `segments` from `node` (reached under member `name`) and masks what
/// they select; whether anything changed.
fn visit(node: &mut Value, name: Option<&str>, segments: &[Segment], how: How<'_>) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return match how {
            How::Detect(masker) => mask_values(node, name, masker),
            How::Whole(text) => replace_values(node, text),
        };
    };
    let mut changed = false;
    match (first, node) {
        (Segment::Member(member), Value::Object(map)) => {
            if let Some(child) = map.get_mut(member) {
                changed = visit(child, Some(member), rest, how);
            }
        }
        (Segment::Any, Value::Object(map)) => {
            for (key, child) in map.iter_mut() {
                changed |= visit(child, Some(key), rest, how);
            }
        }
        (Segment::Any | Segment::Elements, Value::Array(items)) => {
            for child in items {
                changed |= visit(child, None, rest, how);
            }
        }
        _ => {}
    }
    changed
}

/// Replaces every string and number in `node` with `text`; whether anything
/// changed.
fn replace_values(node: &mut Value, text: &str) -> bool {
    match node {
        Value::String(_) | Value::Number(_) => {
            *node = Value::String(text.to_owned());
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| replace_values(item, text) | changed),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, item| replace_values(item, text) | changed),
        Value::Null | Value::Bool(_) => false,
    }
}

/// Masks every string and number in `node`; whether anything changed.
fn mask_values(node: &mut Value, name: Option<&str>, masker: &Masker) -> bool {
    let replacement = match node {
        Value::String(text) => {
            let named_secret = name.is_some_and(|n| is_secret_key_name(n.as_bytes()))
                && masker.detectors().contains(DetectorKind::SecretAssignment)
                && is_secret_value(text.as_bytes());
            if named_secret {
                let style = masker.style_for(DetectorKind::SecretAssignment);
                let hint = Some(DetectorKind::SecretAssignment);
                masked_scalar(match style {
                    MaskStyle::Null => Masked::Null,
                    _ => masker.mask_value(style, text.as_bytes(), ValueType::Text, hint),
                })
            } else {
                masked_scalar(masker.mask_text(text.as_bytes()).value)
            }
        }
        Value::Number(number) => {
            let text = number.to_string();
            masked_scalar(masker.mask_text(text.as_bytes()).value)
        }
        Value::Array(items) => {
            return items.iter_mut().fold(false, |changed, item| {
                mask_values(item, None, masker) | changed
            });
        }
        Value::Object(map) => {
            return map.iter_mut().fold(false, |changed, (key, item)| {
                mask_values(item, Some(key), masker) | changed
            });
        }
        Value::Null | Value::Bool(_) => None,
    };
    match replacement {
        Some(value) => {
            *node = value;
            true
        }
        None => false,
    }
}

/// The JSON value a masked scalar becomes, or `None` when it is unchanged.
fn masked_scalar(masked: Masked<'_>) -> Option<Value> {
    if masked.is_unchanged() {
        return None;
    }
    Some(match masked {
        Masked::Null => Value::Null,
        Masked::Value(value) => Value::String(String::from_utf8_lossy(&value).into_owned()),
    })
}
