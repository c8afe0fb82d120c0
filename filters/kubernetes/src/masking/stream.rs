//! The built-in masking rules applied in one pass over the body's bytes,
//! without building a JSON tree: untouched spans are copied verbatim and only
//! the string values a rule acts on are replaced. It follows the tree walk in
//! [`super`] step for step (watch events, Tables, lists, objects by kind) and
//! gives the same document once parsed, and the same masked fields.
//!
//! The body must already be known to be JSON (the caller validates it). The
//! pass gives up ([`Fallback`]) on whatever it would have to decode to follow
//! a rule, a member name or `kind` written with escapes, and the caller then
//! takes the tree path. Configured `fields` rules always take the tree path.

use super::{LAST_APPLIED, Masking, masked_last_applied};

/// The pass cannot follow this body; mask it through the tree instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fallback;

type Step<T> = Result<T, Fallback>;

/// One body being masked: the input, the output built lazily from verbatim
/// spans and replacements, and the masked fields.
pub(super) struct StreamMasker<'a, 'm> {
    json: &'a [u8],
    masking: &'a Masking<'m>,
    /// Replacement JSON string literals (escaped once per body).
    data_literal: String,
    text_literal: String,
    out: Option<Vec<u8>>,
    copied: usize,
    /// The JSON path prefix of the value being walked (`items[].`, …).
    at: String,
    pub(super) fields: Vec<String>,
}

/// A document masked by the pass: the body (`None` when nothing was replaced)
/// and the masked fields, each once, unsorted.
pub(super) struct Streamed {
    pub(super) body: Option<Vec<u8>>,
    pub(super) fields: Vec<String>,
}

/// The `spec` path of the pod template in objects of `kind`, as a dotted path.
pub(super) fn pod_spec_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("spec"),
        "PodTemplate" => Some("template.spec"),
        "CronJob" => Some("spec.jobTemplate.spec.template.spec"),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some("spec.template.spec"),
        _ => None,
    }
}

/// What an object's own members say about it.
#[derive(Default)]
struct Summary<'a> {
    /// The last `kind` member: `Some(None)` when it is not a string.
    kind: Option<Option<&'a str>>,
    has_type: bool,
}

impl<'a, 'm> StreamMasker<'a, 'm> {
    /// Masks `json` (valid JSON) with the built-in rules of `masking`.
    pub(super) fn run(json: &'a [u8], masking: &'a Masking<'m>) -> Step<Streamed> {
        let settings = masking.settings;
        let literal = |text: &str| serde_json::to_string(text).map_err(|_| Fallback);
        let mut pass = StreamMasker {
            json,
            masking,
            data_literal: literal(&super::base64(settings.mask_text.as_bytes()))?,
            text_literal: literal(&settings.mask_text)?,
            out: None,
            copied: 0,
            at: String::new(),
            fields: Vec::new(),
        };
        let start = pass.skip_ws(0);
        let end = pass.mask_value(start)?;
        if pass.skip_ws(end) != json.len() {
            return Err(Fallback);
        }
        let body = pass.out.take().map(|mut out| {
            out.extend_from_slice(json.get(pass.copied..).unwrap_or_default());
            out
        });
        Ok(Streamed {
            body,
            fields: pass.fields,
        })
    }

    fn byte(&self, i: usize) -> Step<u8> {
        self.json.get(i).copied().ok_or(Fallback)
    }

    fn skip_ws(&self, mut i: usize) -> usize {
        while self.json.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    }

    /// Replaces the bytes in `start..end` with `literal`.
    fn replace(&mut self, start: usize, end: usize, literal: &[u8]) -> Step<()> {
        let verbatim = self.json.get(self.copied..start).ok_or(Fallback)?;
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity(self.json.len() + 64));
        out.extend_from_slice(verbatim);
        out.extend_from_slice(literal);
        self.copied = end;
        Ok(())
    }

    /// Records a masked field under the current path prefix, once (a list
    /// masks the same fields in every item).
    fn note(&mut self, field: &str) {
        let at = self.at.as_str();
        let known = self.fields.iter().any(|known| {
            known.len() == at.len() + field.len() && known.starts_with(at) && known.ends_with(field)
        });
        if !known {
            self.fields.push(format!("{at}{field}"));
        }
    }

    /// Runs `walk` with `suffix` appended to the path prefix.
    fn under<T>(&mut self, suffix: &str, walk: impl FnOnce(&mut Self) -> Step<T>) -> Step<T> {
        let len = self.at.len();
        self.at.push_str(suffix);
        let result = walk(self);
        self.at.truncate(len);
        result
    }

    /// End (after the closing quote) of the string whose quote is at `start`,
    /// and whether it holds escapes.
    fn string_end(&self, start: usize) -> Step<(usize, bool)> {
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            let rest = self.json.get(i..).ok_or(Fallback)?;
            let at = memchr::memchr2(b'"', b'\\', rest).ok_or(Fallback)?;
            if rest.get(at) == Some(&b'"') {
                return Ok((i + at + 1, escaped));
            }
            escaped = true;
            i += at + 2;
        }
    }

    /// A string without escapes starting at `start`, and its end.
    fn plain_string(&self, start: usize) -> Step<(&'a str, usize)> {
        let (end, escaped) = self.string_end(start)?;
        if escaped {
            return Err(Fallback);
        }
        let json: &'a [u8] = self.json;
        let raw = json.get(start + 1..end - 1).ok_or(Fallback)?;
        Ok((std::str::from_utf8(raw).map_err(|_| Fallback)?, end))
    }

    /// End of the value starting at `start` (not whitespace).
    fn skip_value(&self, start: usize) -> Step<usize> {
        match self.byte(start)? {
            b'"' => Ok(self.string_end(start)?.0),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut i = start;
                loop {
                    let rest = self.json.get(i..).ok_or(Fallback)?;
                    let at = rest
                        .iter()
                        .position(|b| matches!(b, b'"' | b'{' | b'[' | b'}' | b']'))
                        .ok_or(Fallback)?;
                    i += at;
                    match self.byte(i)? {
                        b'"' => i = self.string_end(i)?.0,
                        b'{' | b'[' => {
                            depth += 1;
                            i += 1;
                        }
                        _ => {
                            depth = depth.checked_sub(1).ok_or(Fallback)?;
                            i += 1;
                            if depth == 0 {
                                return Ok(i);
                            }
                        }
                    }
                }
            }
            _ => {
                let rest = self.json.get(start..).ok_or(Fallback)?;
                let len = rest
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                    .unwrap_or(rest.len());
                Ok(start + len)
            }
        }
    }

    /// The next member of an object: `at` is just after its `{` or after the
    /// previous member's value. Returns the member name and where its value
    /// starts, or `None` after the closing `}` (with the position after it).
    fn next_member(&self, at: usize) -> Step<Result<(&'a str, usize), usize>> {
        let mut i = self.skip_ws(at);
        match self.byte(i)? {
            b'}' => return Ok(Err(i + 1)),
            b',' => i = self.skip_ws(i + 1),
            _ => {}
        }
        if self.byte(i)? != b'"' {
            return Err(Fallback);
        }
        let (name, end) = self.plain_string(i)?;
        let colon = self.skip_ws(end);
        if self.byte(colon)? != b':' {
            return Err(Fallback);
        }
        Ok(Ok((name, self.skip_ws(colon + 1))))
    }

    /// Walks the members of the object at `start` (a `{`), handing each value
    /// to `member`, which returns the value's end; the end of the object.
    fn each_member(
        &mut self,
        start: usize,
        mut member: impl FnMut(&mut Self, &'a str, usize) -> Step<usize>,
    ) -> Step<usize> {
        let mut i = start + 1;
        loop {
            match self.next_member(i)? {
                Ok((name, value)) => i = member(self, name, value)?,
                Err(end) => return Ok(end),
            }
        }
    }

    /// Walks the elements of the array at `start` (a `[`), as `each_member`.
    fn each_element(
        &mut self,
        start: usize,
        mut element: impl FnMut(&mut Self, usize) -> Step<usize>,
    ) -> Step<usize> {
        let mut i = self.skip_ws(start + 1);
        if self.byte(i)? == b']' {
            return Ok(i + 1);
        }
        loop {
            i = element(self, i)?;
            i = self.skip_ws(i);
            match self.byte(i)? {
                b',' => i = self.skip_ws(i + 1),
                b']' => return Ok(i + 1),
                _ => return Err(Fallback),
            }
        }
    }

    /// Reads the `kind` and whether there is a `type` of the object at `start`.
    fn summary(&self, start: usize) -> Step<Summary<'a>> {
        let mut summary = Summary::default();
        let mut i = start + 1;
        loop {
            match self.next_member(i)? {
                Ok((name, value)) => {
                    if name == "kind" {
                        summary.kind = Some(if self.byte(value)? == b'"' {
                            Some(self.plain_string(value)?.0)
                        } else {
                            None
                        });
                    } else if name == "type" {
                        summary.has_type = true;
                    }
                    i = self.skip_value(value)?;
                }
                Err(_) => return Ok(summary),
            }
        }
    }

    /// Masks whatever the value at `start` is: a watch event, a list, a
    /// Table or an object; returns its end.
    fn mask_value(&mut self, start: usize) -> Step<usize> {
        if self.byte(start)? != b'{' {
            return self.skip_value(start);
        }
        let summary = self.summary(start)?;
        let kind = summary.kind.flatten().unwrap_or_default();
        if kind.is_empty() && summary.has_type {
            return self.each_member(start, |pass, name, value| match name {
                "object" => pass.under("object.", |pass| pass.mask_value(value)),
                _ => pass.skip_value(value),
            });
        }
        if kind == "Table" {
            return self.each_member(start, |pass, name, value| match name {
                "rows" if pass.byte(value)? == b'[' => pass.each_element(value, |pass, row| {
                    if pass.byte(row)? != b'{' {
                        return pass.skip_value(row);
                    }
                    pass.each_member(row, |pass, name, value| match name {
                        "object" => pass.under("rows[].object.", |pass| pass.mask_value(value)),
                        _ => pass.skip_value(value),
                    })
                }),
                _ => pass.skip_value(value),
            });
        }
        if kind.ends_with("List") {
            let item_kind = kind.trim_end_matches("List");
            return self.each_member(start, |pass, name, value| match name {
                "items" if pass.byte(value)? == b'[' => pass.each_element(value, |pass, item| {
                    pass.under("items[].", |pass| pass.mask_object(item, item_kind))
                }),
                _ => pass.skip_value(value),
            });
        }
        self.mask_object(start, kind)
    }

    /// Masks one object (the value at `start`) with the built-in rules of its
    /// kind (`kind` when it names none); returns its end.
    fn mask_object(&mut self, start: usize, kind: &'a str) -> Step<usize> {
        if self.byte(start)? != b'{' {
            return self.skip_value(start);
        }
        let settings = self.masking.settings;
        let kind = match self.summary(start)?.kind {
            Some(Some("PartialObjectMetadata")) => self.masking.resource_kind.unwrap_or_default(),
            Some(Some(own)) => own,
            _ => kind,
        };
        let secret = kind == "Secret" && settings.secrets;
        let spec_path = pod_spec_path(kind).filter(|_| settings.pod_env);
        let builtin = if kind == "Secret" {
            settings.secrets
        } else {
            spec_path.is_some()
        };
        if !builtin {
            return self.skip_value(start);
        }
        self.each_member(start, |pass, name, value| match name {
            "data" | "stringData" if secret => pass.mask_secret_values(value, name),
            "metadata" => pass.mask_last_applied(value),
            _ => match spec_path {
                Some(path) => pass.mask_pod_spec_at(value, name, path, path),
                None => pass.skip_value(value),
            },
        })
    }

    /// Replaces every member value of the object at `start` (Secret `data` or
    /// `stringData`).
    fn mask_secret_values(&mut self, start: usize, field: &str) -> Step<usize> {
        if self.byte(start)? != b'{' {
            return self.skip_value(start);
        }
        let replacement = if field == "data" {
            std::mem::take(&mut self.data_literal)
        } else {
            std::mem::take(&mut self.text_literal)
        };
        let mut any = false;
        let end = self.each_member(start, |pass, _, value| {
            let end = pass.skip_value(value)?;
            pass.replace(value, end, replacement.as_bytes())?;
            any = true;
            Ok(end)
        });
        if field == "data" {
            self.data_literal = replacement;
        } else {
            self.text_literal = replacement;
        }
        if any {
            self.note(field);
        }
        end
    }

    /// Follows the rest of the pod spec path `path` (of which `name` is the
    /// member whose value is at `start`) and masks the env values there.
    fn mask_pod_spec_at(
        &mut self,
        start: usize,
        name: &str,
        rest: &'static str,
        path: &'static str,
    ) -> Step<usize> {
        let (segment, further) = rest.split_once('.').unwrap_or((rest, ""));
        if name != segment || self.byte(start)? != b'{' {
            return self.skip_value(start);
        }
        if further.is_empty() {
            return self.under(path, |pass| {
                pass.under(".", |pass| pass.mask_pod_spec(start))
            });
        }
        self.each_member(start, |pass, name, value| {
            pass.mask_pod_spec_at(value, name, further, path)
        })
    }

    /// Masks `env[].value` of every container in the pod spec at `start`.
    fn mask_pod_spec(&mut self, start: usize) -> Step<usize> {
        self.each_member(start, |pass, name, value| {
            let list = match name {
                "containers" | "initContainers" | "ephemeralContainers" => name,
                _ => return pass.skip_value(value),
            };
            if pass.byte(value)? != b'[' {
                return pass.skip_value(value);
            }
            pass.each_element(value, |pass, container| {
                if pass.byte(container)? != b'{' {
                    return pass.skip_value(container);
                }
                pass.each_member(container, |pass, name, env| {
                    if name != "env" || pass.byte(env)? != b'[' {
                        return pass.skip_value(env);
                    }
                    pass.each_element(env, |pass, var| pass.mask_env_var(var, list))
                })
            })
        })
    }

    /// Masks the string `value` of one env var (the value at `start`).
    fn mask_env_var(&mut self, start: usize, list: &str) -> Step<usize> {
        if self.byte(start)? != b'{' {
            return self.skip_value(start);
        }
        self.each_member(start, |pass, name, value| {
            let end = pass.skip_value(value)?;
            if name == "value" && pass.byte(value)? == b'"' {
                let literal = std::mem::take(&mut pass.text_literal);
                let replaced = pass.replace(value, end, literal.as_bytes());
                pass.text_literal = literal;
                replaced?;
                pass.under(list, |pass| {
                    pass.note("[].env[].value");
                    Ok(())
                })?;
            }
            Ok(end)
        })
    }

    /// Masks the last-applied annotation in the metadata object at `start`.
    fn mask_last_applied(&mut self, start: usize) -> Step<usize> {
        if self.byte(start)? != b'{' {
            return self.skip_value(start);
        }
        self.each_member(start, |pass, name, annotations| {
            if name != "annotations" || pass.byte(annotations)? != b'{' {
                return pass.skip_value(annotations);
            }
            pass.each_member(annotations, |pass, name, value| {
                let end = pass.skip_value(value)?;
                if name != LAST_APPLIED || pass.byte(value)? != b'"' {
                    return Ok(end);
                }
                let raw = pass.json.get(value..end).ok_or(Fallback)?;
                let text: String = serde_json::from_slice(raw).map_err(|_| Fallback)?;
                if let Some(masked) = masked_last_applied(&text, pass.masking) {
                    let literal = serde_json::to_string(&masked).map_err(|_| Fallback)?;
                    pass.replace(value, end, literal.as_bytes())?;
                    pass.under("metadata.annotations.", |pass| {
                        pass.note(LAST_APPLIED);
                        Ok(())
                    })?;
                }
                Ok(end)
            })
        })
    }
}
