//! The built-in masking rules applied in one walk over the body's bytes,
//! without building a JSON tree: untouched spans are copied verbatim and only
//! the values a rule acts on are replaced. It follows the tree walk in
//! [`super`] step for step and gives the same document once parsed, and the
//! same masked fields.
//!
//! The walk enters only values that hold one of the member names the reading
//! pass ([`super::scan`]) located; every other value is skipped whole, which
//! keeps a body with one Secret or one `env` in it nearly as cheap as one
//! without.
//!
//! The body must already be known to be JSON (the caller validates it). The
//! walk gives up ([`Fallback`]) on whatever it would have to decode to follow
//! a rule (a member name or `kind` written with escapes), and the caller then
//! takes the tree path. Configured `fields` rules always take the tree path.

use super::scan::Located;
use super::{Context, LAST_APPLIED, Masking, masked_last_applied_streamed};

/// The walk cannot follow this body; mask it through the tree instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fallback;

type Step<T> = Result<T, Fallback>;

/// One body being masked: the input, the output built lazily from verbatim
/// spans and replacements, and the masked fields.
pub(super) struct StreamMasker<'a, 'm> {
    json: &'a [u8],
    masking: &'a Masking<'m>,
    /// Where the reading pass found the member names a rule acts on.
    located: &'a Located,
    /// Replacement JSON string literals (escaped once per body).
    data_literal: String,
    text_literal: String,
    out: Option<Vec<u8>>,
    copied: usize,
    /// The JSON path of the value being walked (`items[].spec`, …).
    at: String,
    pub(super) fields: Vec<String>,
}

/// A document masked by the walk: the body (`None` when nothing was replaced)
/// and the masked fields, each once, unsorted.
pub(super) struct Streamed {
    pub(super) body: Option<Vec<u8>>,
    pub(super) fields: Vec<String>,
}

impl<'a, 'm> StreamMasker<'a, 'm> {
    /// Masks `json` (valid JSON) with the built-in rules of `masking`;
    /// `located` says where the member names a rule acts on are.
    pub(super) fn run(
        json: &'a [u8],
        masking: &'a Masking<'m>,
        located: &'a Located,
    ) -> Step<Streamed> {
        Self::run_in(json, masking, located, Context::root(masking.resource_kind))
    }

    /// [`StreamMasker::run`] with the root in `root` (a last-applied copy
    /// is a root of the kind its place gives it).
    pub(super) fn run_in(
        json: &'a [u8],
        masking: &'a Masking<'m>,
        located: &'a Located,
        root: Context<'a>,
    ) -> Step<Streamed> {
        let settings = masking.settings;
        let literal = |text: &str| serde_json::to_string(text).map_err(|_| Fallback);
        let mut pass = StreamMasker {
            json,
            masking,
            located,
            data_literal: literal(&super::base64(settings.mask_text.as_bytes()))?,
            text_literal: literal(&settings.mask_text)?,
            out: None,
            copied: 0,
            at: String::new(),
            fields: Vec::new(),
        };
        let start = pass.skip_ws(0);
        let end = pass.value(start, root)?;
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

    /// Whether the root of `json` (valid JSON) is an object with a member
    /// `name`, as a parsed document's `get(name)` tells.
    pub(super) fn root_has_member(
        json: &'a [u8],
        masking: &'a Masking<'m>,
        name: &str,
    ) -> Step<bool> {
        let empty = Located::default();
        let reader = StreamMasker {
            json,
            masking,
            located: &empty,
            data_literal: String::new(),
            text_literal: String::new(),
            out: None,
            copied: 0,
            at: String::new(),
            fields: Vec::new(),
        };
        let start = reader.skip_ws(0);
        if reader.byte(start)? != b'{' {
            return Ok(false);
        }
        let mut found = false;
        let mut i = start + 1;
        loop {
            match reader.next_member(i)? {
                Ok((member, value)) => {
                    found |= member == name;
                    i = reader.skip_value(value)?;
                }
                Err(_) => return Ok(found),
            }
        }
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

    /// The located member names in `start..end`.
    fn located_in(&self, start: usize, end: usize) -> &'a [usize] {
        let located: &'a [usize] = &self.located.names;
        let first = located.partition_point(|&at| at < start);
        let last = located.partition_point(|&at| at < end);
        located.get(first..last).unwrap_or_default()
    }

    /// Whether `start..end` holds a located name whose rule depends on the
    /// kind of the object it is in: any but `env`, which is masked in every
    /// object alike. Without one, an object's kind need not be read.
    fn needs_kind(&self, start: usize, end: usize) -> bool {
        self.located_in(start, end)
            .iter()
            .any(|&at| self.json.get(at..at + 5) != Some(b"\"env\""))
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

    /// Records a masked field, `suffix` under the current path, once (a list
    /// masks the same fields in every item).
    fn note(&mut self, suffix: &str) {
        let len = self.at.len();
        super::push_member(&mut self.at, suffix);
        if !self.fields.contains(&self.at) {
            self.fields.push(self.at.clone());
        }
        self.at.truncate(len);
    }

    /// Runs `walk` with `suffix` (a member name, or `[]`) appended to the path.
    fn under<T>(&mut self, suffix: &str, walk: impl FnOnce(&mut Self) -> Step<T>) -> Step<T> {
        let len = self.at.len();
        super::push_member(&mut self.at, suffix);
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

    /// The object's own `kind` at `start`: `None` when it has none, or one
    /// that is not a string.
    fn own_kind(&self, start: usize) -> Step<Option<&'a str>> {
        let mut kind = None;
        let mut i = start + 1;
        loop {
            match self.next_member(i)? {
                Ok((name, value)) => {
                    if name == "kind" {
                        kind = match self.byte(value)? {
                            b'"' => Some(self.plain_string(value)?.0),
                            _ => None,
                        };
                    }
                    i = self.skip_value(value)?;
                }
                Err(_) => return Ok(kind),
            }
        }
    }

    /// Masks the value at `start` in `context`; returns its end. A value that
    /// holds no located member name is skipped whole.
    fn value(&mut self, start: usize, context: Context<'a>) -> Step<usize> {
        let Some(end) = self.located.container_end(start) else {
            return self.skip_value(start);
        };
        match self.byte(start)? {
            b'{' => self.object(start, end, context),
            _ => self.each_element(start, |pass, element| {
                pass.under("[]", |pass| pass.value(element, context.nested()))
            }),
        }
    }

    /// Masks one object (at `start`, ending at `end`) by the rules
    /// [`super::TreeWalk::object`] states; returns its end.
    fn object(&mut self, start: usize, end: usize, context: Context<'a>) -> Step<usize> {
        let settings = self.masking.settings;
        // Read ahead for the kind only where it decides something.
        let own = if self.needs_kind(start, end) {
            self.own_kind(start)?
        } else {
            None
        };
        let kind = own.or(context.hint);
        let secret = settings.secrets && kind == Some("Secret");
        let item_kind = kind.and_then(|k| k.strip_suffix("List"));
        let inner = context.inside(kind);
        self.each_member(start, |pass, name, value| {
            let first = pass.byte(value)?;
            match name {
                "data" | "stringData" if secret && first == b'{' => {
                    pass.mask_secret_values(value, name)
                }
                "env" if settings.pod_env && first == b'[' => pass.mask_env(value),
                LAST_APPLIED if first == b'"' => pass.mask_last_applied(value, inner),
                "items" if first == b'[' && item_kind.is_some() => {
                    let items = inner.item(item_kind);
                    pass.under("items", |pass| {
                        pass.each_element(value, |pass, item| {
                            pass.under("[]", |pass| pass.value(item, items))
                        })
                    })
                }
                "object" if context.is_root && own.is_none() => {
                    pass.under(name, |pass| pass.value(value, context))
                }
                _ => pass.under(name, |pass| pass.value(value, inner)),
            }
        })
    }

    /// Replaces every member value of the object at `start` (Secret `data` or
    /// `stringData`).
    fn mask_secret_values(&mut self, start: usize, field: &str) -> Step<usize> {
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

    /// Masks the string `value` of each variable of the `env` array at `start`.
    fn mask_env(&mut self, start: usize) -> Step<usize> {
        self.each_element(start, |pass, var| {
            if pass.byte(var)? != b'{' {
                return pass.skip_value(var);
            }
            pass.each_member(var, |pass, name, value| {
                let end = pass.skip_value(value)?;
                if name == "value" && pass.byte(value)? == b'"' {
                    let literal = std::mem::take(&mut pass.text_literal);
                    let replaced = pass.replace(value, end, literal.as_bytes());
                    pass.text_literal = literal;
                    replaced?;
                    pass.note("env[].value");
                }
                Ok(end)
            })
        })
    }

    /// Masks the last-applied annotation whose string value is at `start`.
    fn mask_last_applied(&mut self, start: usize, context: Context<'a>) -> Step<usize> {
        let end = self.skip_value(start)?;
        let raw = self.json.get(start..end).ok_or(Fallback)?;
        let text: String = serde_json::from_slice(raw).map_err(|_| Fallback)?;
        let fallback = context.applied_kind(self.masking);
        if let Some(masked) = masked_last_applied_streamed(&text, self.masking, fallback) {
            let literal = serde_json::to_string(&masked).map_err(|_| Fallback)?;
            self.replace(start, end, literal.as_bytes())?;
            self.note(LAST_APPLIED);
        }
        Ok(end)
    }
}
