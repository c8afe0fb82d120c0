//! One pass over a response body that checks it is JSON and notes where the
//! member names a built-in rule acts on are. Most bodies (Tables of metadata,
//! lists of pods without `env`, ConfigMaps) hold no such name, and this pass
//! is then all the masking they cost; the others are masked by a walk that
//! skips every value holding none of the places noted here.
//!
//! It accepts exactly what `serde_json` accepts when it reads a document
//! without keeping it (a differential test holds them together): like that
//! reader it follows nesting with a stack of its own, to any depth. Only
//! member names are looked at: every built-in rule is keyed by one, and a
//! name written with any escape counts as interesting, since an escape could
//! spell a rule's key.

/// Why a body is not JSON, with the byte offset where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} at byte {at}")]
pub(super) struct NotJson {
    pub(super) expected: &'static str,
    pub(super) at: usize,
}

/// Bytes a string scan must stop at: the closing quote, an escape, and the
/// control characters JSON forbids inside strings.
fn stops_string(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

struct Reader<'a, F> {
    json: &'a [u8],
    i: usize,
    interesting: F,
    located: Located,
}

/// Where the interesting member names of a document are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Located {
    /// The byte offset of each one's opening quote, ascending.
    pub(super) names: Vec<usize>,
    /// The span (from its bracket to just after its closing one) of every
    /// object or array that holds one, at any depth, by ascending start.
    pub(super) containers: Vec<(usize, usize)>,
}

impl Located {
    pub(super) fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The end of the container starting at `start` when it holds a located
    /// name; `None` when it holds none.
    pub(super) fn container_end(&self, start: usize) -> Option<usize> {
        let at = self
            .containers
            .binary_search_by_key(&start, |&(start, _)| start)
            .ok()?;
        self.containers.get(at).map(|&(_, end)| end)
    }
}

/// A container the reader is inside.
struct Open {
    object: bool,
    start: usize,
    /// Whether a located name was found in it.
    holds: bool,
}

/// Reads `json` whole: where the member names that satisfy `interesting`
/// (given the name's raw bytes) or are written with an escape are, and an
/// error when `json` is not JSON.
pub(super) fn scan(json: &[u8], interesting: impl Fn(&[u8]) -> bool) -> Result<Located, NotJson> {
    let mut reader = Reader {
        json,
        i: 0,
        interesting,
        located: Located::default(),
    };
    reader.document()?;
    reader.located.containers.sort_unstable();
    Ok(reader.located)
}

impl<F: Fn(&[u8]) -> bool> Reader<'_, F> {
    fn error<T>(&self, expected: &'static str) -> Result<T, NotJson> {
        Err(NotJson {
            expected,
            at: self.i,
        })
    }

    fn peek(&self) -> Option<u8> {
        self.json.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    /// The whole document: one value, then only whitespace. Open containers
    /// are kept on a stack (`true`: an object), not in recursion.
    fn document(&mut self) -> Result<(), NotJson> {
        let mut open: Vec<Open> = Vec::new();
        self.skip_ws();
        'value: loop {
            match self.peek() {
                Some(bracket @ (b'{' | b'[')) => {
                    let start = self.i;
                    self.i += 1;
                    self.skip_ws();
                    match (bracket, self.peek()) {
                        (b'{', Some(b'}')) | (b'[', Some(b']')) => self.i += 1,
                        (b'{', _) => {
                            let holds = self.member_name()?;
                            open.push(Open {
                                object: true,
                                start,
                                holds,
                            });
                            continue 'value;
                        }
                        _ => {
                            open.push(Open {
                                object: false,
                                start,
                                holds: false,
                            });
                            continue 'value;
                        }
                    }
                }
                Some(b'"') => self.string().map(|_| ())?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return self.error("a value"),
            }
            // After a value: a separator, the end of its container, or the end.
            loop {
                self.skip_ws();
                let Some(top) = open.last_mut() else {
                    return match self.peek() {
                        None => Ok(()),
                        Some(_) => self.error("the end of the document"),
                    };
                };
                let in_object = top.object;
                match (self.peek(), in_object) {
                    (Some(b','), _) => {
                        self.i += 1;
                        self.skip_ws();
                        if in_object && self.member_name()? {
                            top.holds = true;
                        }
                        continue 'value;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.i += 1;
                        if let Some(closed) = open.pop().filter(|closed| closed.holds) {
                            self.located.containers.push((closed.start, self.i));
                            if let Some(parent) = open.last_mut() {
                                parent.holds = true;
                            }
                        }
                    }
                    (_, true) => return self.error("`,` or `}`"),
                    (_, false) => return self.error("`,` or `]`"),
                }
            }
        }
    }

    /// A member name and its colon; whether the name is located.
    fn member_name(&mut self) -> Result<bool, NotJson> {
        if self.peek() != Some(b'"') {
            return self.error("a member name");
        }
        let quote = self.i;
        let escaped = self.string()?;
        let name = self.json.get(quote + 1..self.i - 1).unwrap_or_default();
        let located = escaped || (self.interesting)(name);
        if located {
            self.located.names.push(quote);
        }
        self.skip_ws();
        if self.peek() != Some(b':') {
            return self.error("`:`");
        }
        self.i += 1;
        self.skip_ws();
        Ok(located)
    }

    /// A string from its opening quote; whether it holds an escape.
    fn string(&mut self) -> Result<bool, NotJson> {
        self.i += 1;
        let mut escaped = false;
        loop {
            let rest = self.json.get(self.i..).unwrap_or_default();
            let Some(stop) = rest.iter().position(|&b| stops_string(b)) else {
                self.i = self.json.len();
                return self.error("the end of a string");
            };
            self.i += stop;
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.i += 1;
                    self.escape()?;
                }
                _ => return self.error("no control character in a string"),
            }
        }
    }

    /// The rest of an escape, after its backslash.
    fn escape(&mut self) -> Result<(), NotJson> {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 1;
                Ok(())
            }
            Some(b'u') => {
                self.i += 1;
                for _ in 0..4 {
                    if !self.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
                        return self.error("four hex digits");
                    }
                    self.i += 1;
                }
                Ok(())
            }
            _ => self.error("an escape"),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), NotJson> {
        if self.json.get(self.i..self.i + word.len()) != Some(word) {
            return self.error("`true`, `false` or `null`");
        }
        self.i += word.len();
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), NotJson> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.error("a digit"),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return self.error("a digit after `.`");
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return self.error("a digit in the exponent");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn serde_accepts(json: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok()
    }

    fn names_data(json: &[u8]) -> Result<Vec<usize>, NotJson> {
        scan(json, |name| name == b"data").map(|located| located.names)
    }

    #[test]
    fn every_container_on_the_way_to_a_located_name_is_spanned() {
        let json = br#"{"a":[1,{"b":{}}],"c":{"d":[{"data":1},{}]},"e":{"data":2}}"#;
        let located = scan(json, |name| name == b"data").unwrap();
        let spans: Vec<&[u8]> = located
            .containers
            .iter()
            .map(|&(start, end)| &json[start..end])
            .collect();
        assert_eq!(
            spans,
            [
                &json[..],
                br#"{"d":[{"data":1},{}]}"#,
                br#"[{"data":1},{}]"#,
                br#"{"data":1}"#,
                br#"{"data":2}"#,
            ]
        );
        assert_eq!(located.container_end(0), Some(json.len()));
        assert_eq!(
            located.container_end(5),
            None,
            "the first array holds no data"
        );
    }

    #[test]
    fn only_member_names_are_interesting_and_each_is_located() {
        assert_eq!(names_data(br#"{"kind":"Secret","data":{}}"#), Ok(vec![17]));
        assert_eq!(names_data(br#"{"kind":"data","x":["data"]}"#), Ok(vec![]));
        assert_eq!(
            names_data(br#"[{"data":1},{"b":{"data":2}}]"#),
            Ok(vec![2, 18])
        );
        // An escape could spell the name.
        assert_eq!(names_data(br#"{"d\u0061ta":1}"#), Ok(vec![1]));
        assert_eq!(names_data(br#"{"a":"\u0064"}"#), Ok(vec![]));
    }

    #[test]
    fn errors_say_what_was_expected_where() {
        let error = names_data(br#"{"a" 1}"#).unwrap_err();
        assert_eq!(error.to_string(), "expected `:` at byte 5");
        assert_eq!(names_data(b"").unwrap_err().expected, "a value");
        assert_eq!(names_data(b"[1,]").unwrap_err().at, 3);
    }

    /// Documents at the edges of the grammar, each also given to serde_json.
    const EDGES: &[&str] = &[
        "0",
        "-0",
        "01",
        "-",
        "1.",
        "1.5",
        ".5",
        "1e5",
        "1E+5",
        "1e-",
        "1e",
        "-01",
        "2.0e10",
        "true",
        "tru",
        "truex",
        "null",
        "nul",
        "false",
        "\"\"",
        "\"a",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\u12g4\"",
        "\"\\uD800\"",
        "\"\\/\"",
        "\"\t\"",
        "\"\u{7f}\"",
        "[]",
        "[1 2]",
        "[,1]",
        "[1,]",
        "{}",
        "{,}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{\"a\":1 \"b\":2}",
        "{1:2}",
        "{\"a\"}",
        " [ 1 , { \"a\" : [ ] } ] \n",
        "[1]]",
        "[1]x",
        "[[]",
        "{\"a\":1}}",
        "\u{feff}1",
        "\r\n1",
        "1 2",
        "nan",
        "[\"\u{1}\"]",
        "{\"\\\"\":1}",
    ];

    #[test]
    fn accepts_what_serde_json_accepts_at_the_edges() {
        for edge in EDGES {
            let json = edge.as_bytes();
            assert_eq!(names_data(json).is_ok(), serde_accepts(json), "{edge:?}");
        }
    }

    #[test]
    fn nesting_is_followed_to_any_depth() {
        for depth in [1, 128, 129, 100_000] {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                let json = format!("{}1{}", open.repeat(depth), close.repeat(depth));
                let json = json.as_bytes();
                assert_eq!(
                    names_data(json).is_ok(),
                    serde_accepts(json),
                    "depth {depth}"
                );
            }
        }
    }

    #[test]
    fn accepts_what_serde_json_accepts_on_mutated_documents() {
        let documents = [
            r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s","labels":{"a":"b"}},"data":{"k":"dmFsdWU="},"n":[1,-2.5e3,true,false,null]}"#,
            r#"{"kind":"Table","rows":[{"cells":["web-0","1/1",0,"5d"],"object":{"kind":"PartialObjectMetadata","metadata":{"name":"web-0"}}}]}"#,
            r#"[{"a":"\u00e9\n\"x\""},{"b":[[],{}]},"é",0.5]"#,
        ];
        // Bytes that move a reader between states.
        let replacements = b"{}[]:,\"\\ 0-.eE+1tfnu\x01\x7f";
        let mut checked = 0;
        for document in documents {
            let bytes = document.as_bytes();
            assert!(names_data(bytes).is_ok() && serde_accepts(bytes));
            for at in 0..bytes.len() {
                let mut cut = bytes.to_vec();
                cut.truncate(at);
                assert_eq!(names_data(&cut).is_ok(), serde_accepts(&cut), "{cut:?}");
                for &replacement in replacements {
                    for insert in [false, true] {
                        let mut mutated = bytes.to_vec();
                        if insert {
                            mutated.insert(at, replacement);
                        } else {
                            mutated.splice(at..=at, [replacement]);
                        }
                        let ours = names_data(&mutated).is_ok();
                        assert_eq!(
                            ours,
                            serde_accepts(&mutated),
                            "{:?}",
                            String::from_utf8_lossy(&mutated)
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 10_000);
    }
}
