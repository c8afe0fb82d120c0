//! Label selector validity, as apimachinery's `labels.Parse` judges it.
//!
//! `NewRequestInfo` drops the field-selector name when any list option fails to
//! decode, an invalid `labelSelector` included, so gatehouse needs the same
//! verdict. Only validity is computed; nothing here matches labels.
//!
//! ```text
//! <selector-syntax>         ::= <requirement> | <requirement> "," <selector-syntax>
//! <requirement>             ::= [!] KEY [ <set-based-restriction> | <exact-match-restriction> ]
//! <set-based-restriction>   ::= "" | <inclusion-exclusion> <value-set>
//! <inclusion-exclusion>     ::= "in" | "notin"
//! <value-set>               ::= "(" <values> ")"
//! <values>                  ::= VALUE | VALUE "," <values>
//! <exact-match-restriction> ::= ["="|"=="|"!="|">"|"<"] VALUE
//! ```

/// Lexer tokens (`labels.Token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier(&'a str),
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

impl Token<'_> {
    /// In a value position `in` and `notin` are plain identifiers.
    fn in_values(self) -> Self {
        match self {
            Token::In => Token::Identifier("in"),
            Token::NotIn => Token::Identifier("notin"),
            other => other,
        }
    }
}

/// The lexer's symbol tokens, longest first where one prefixes another.
fn symbol_token(symbol: &str) -> Option<Token<'static>> {
    Some(match symbol {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(byte: u8) -> bool {
    matches!(byte, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits a selector into tokens, ending with `EndOfString`. As upstream, a NUL
/// byte ends the input.
fn tokens(selector: &str) -> Vec<Token<'_>> {
    let bytes = selector.as_bytes();
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        while is_whitespace(at(pos)) {
            pos += 1;
        }
        let start = pos;
        match at(pos) {
            0 => {
                out.push(Token::EndOfString);
                return out;
            }
            byte if is_special_symbol(byte) => {
                // Grow the symbol while it stays a token; stop at the first byte
                // that would spoil it.
                let mut token = None;
                while is_special_symbol(at(pos)) {
                    match selector.get(start..=pos).and_then(symbol_token) {
                        Some(longer) => token = Some(longer),
                        None if token.is_some() => break,
                        None => {}
                    }
                    pos += 1;
                }
                // Every single special symbol is a token, so one was found.
                out.push(token.unwrap_or(Token::EndOfString));
            }
            _ => {
                while !matches!(at(pos), 0)
                    && !is_special_symbol(at(pos))
                    && !is_whitespace(at(pos))
                {
                    pos += 1;
                }
                let word = selector.get(start..pos).unwrap_or_default();
                out.push(match word {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Identifier(word),
                });
            }
        }
    }
}

/// The recursive-descent parser of `labels.Parser`, answering only "valid?".
struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    position: usize,
}

/// Operators of a requirement (`selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Exists,
    DoesNotExist,
    In,
    NotIn,
    Exact,
    Ordered,
}

impl<'a> Parser<'a> {
    fn lookahead(&self) -> Token<'a> {
        self.tokens
            .get(self.position)
            .copied()
            .unwrap_or(Token::EndOfString)
            .in_values()
    }

    fn consume_raw(&mut self) -> Token<'a> {
        let token = self
            .tokens
            .get(self.position)
            .copied()
            .unwrap_or(Token::EndOfString);
        self.position += 1;
        token
    }

    fn consume(&mut self) -> Token<'a> {
        self.consume_raw().in_values()
    }

    fn parse(&mut self) -> Option<()> {
        loop {
            match self.lookahead() {
                Token::Identifier(_) | Token::DoesNotExist => {
                    self.requirement()?;
                    match self.consume() {
                        Token::EndOfString => return Some(()),
                        Token::Comma => {
                            if !matches!(
                                self.lookahead(),
                                Token::Identifier(_) | Token::DoesNotExist
                            ) {
                                return None;
                            }
                        }
                        _ => return None,
                    }
                }
                Token::EndOfString => return Some(()),
                _ => return None,
            }
        }
    }

    fn requirement(&mut self) -> Option<()> {
        let operator = self.key_and_inferred_operator()?;
        if matches!(operator, Some(Operator::Exists | Operator::DoesNotExist)) {
            return Some(());
        }
        let operator = match self.consume_raw() {
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Equals | Token::DoubleEquals | Token::NotEquals => Operator::Exact,
            Token::GreaterThan | Token::LessThan => Operator::Ordered,
            _ => return None,
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        if operator == Operator::Ordered && values.iter().any(|v| v.parse::<i64>().is_err()) {
            return None;
        }
        values.iter().all(|v| is_label_value(v)).then_some(())
    }

    /// Reads `[!]KEY`; the operator is known when nothing follows the key.
    fn key_and_inferred_operator(&mut self) -> Option<Option<Operator>> {
        let mut token = self.consume();
        let negated = token == Token::DoesNotExist;
        if negated {
            token = self.consume();
        }
        let Token::Identifier(key) = token else {
            return None;
        };
        if !is_label_key(key) {
            return None;
        }
        if negated {
            Some(Some(Operator::DoesNotExist))
        } else if matches!(self.lookahead(), Token::EndOfString | Token::Comma) {
            Some(Some(Operator::Exists))
        } else {
            Some(None)
        }
    }

    /// `( v1, v2, ... )`; empty entries count as the empty value.
    fn value_set(&mut self) -> Option<Vec<&'a str>> {
        if self.consume() != Token::OpenPar {
            return None;
        }
        match self.lookahead() {
            Token::ClosedPar => {
                self.consume();
                Some(vec![""])
            }
            Token::Identifier(_) | Token::Comma => {
                let values = self.identifiers()?;
                (self.consume() == Token::ClosedPar).then_some(values)
            }
            _ => None,
        }
    }

    fn identifiers(&mut self) -> Option<Vec<&'a str>> {
        let mut values = Vec::new();
        loop {
            match self.consume() {
                Token::Identifier(value) => {
                    values.push(value);
                    match self.lookahead() {
                        Token::Comma => {}
                        Token::ClosedPar => return Some(values),
                        _ => return None,
                    }
                }
                Token::Comma => {
                    if values.is_empty()
                        || matches!(self.lookahead(), Token::ClosedPar | Token::Comma)
                    {
                        values.push("");
                    }
                    if self.lookahead() == Token::ClosedPar {
                        return Some(values);
                    }
                }
                _ => return None,
            }
        }
    }

    fn exact_value(&mut self) -> Option<&'a str> {
        if matches!(self.lookahead(), Token::EndOfString | Token::Comma) {
            return Some("");
        }
        match self.consume() {
            Token::Identifier(value) => Some(value),
            _ => None,
        }
    }
}

/// Whether `labels.Parse(selector)` succeeds.
pub(crate) fn is_valid(selector: &str) -> bool {
    Parser {
        tokens: tokens(selector),
        position: 0,
    }
    .parse()
    .is_some()
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 bytes.
fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    bytes.len() <= 63
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A label value: empty, or a label name.
fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_label_name(value)
}

/// `[prefix/]name` with a lowercase RFC 1123 subdomain prefix (`content.IsLabelKey`).
fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        None => is_label_name(key),
        Some((prefix, name)) => {
            !name.contains('/') && is_dns1123_subdomain(prefix) && is_label_name(name)
        }
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`, at most 253 bytes.
fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253
        && value.split('.').all(|label| {
            let bytes = label.as_bytes();
            let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            bytes.first().is_some_and(alphanumeric)
                && bytes.last().is_some_and(alphanumeric)
                && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_selectors_from_upstream_and_kubectl() {
        for selector in [
            "",
            "x=a",
            "x=a,y=b,z=c",
            "x = a",
            "x==a",
            "x!=a",
            "x=",
            "x",
            "!x",
            "x>1",
            "x<10",
            "x=a,y",
            "x in (foo,,baz),y,z notin ()",
            "x in (foo)",
            "x notin (foo, bar)",
            "x in (,)",
            "in in (in)",
            "example.com/app=web",
            "app.kubernetes.io/name in (web, api)",
            "x=a\u{0}ignored after NUL",
            "a-b_c.d=E-f_g.h",
        ] {
            assert!(is_valid(selector), "{selector:?} should be valid");
        }
    }

    #[test]
    fn invalid_selectors_from_upstream_and_edge_cases() {
        for selector in [
            "x=a||y=b",
            "x==a==b",
            "!x=a",
            "x<a",
            "x>1,z<a",
            "x=a,",
            ",x=a",
            "x in",
            "x in (",
            "x in foo",
            "x notin ( foo",
            "=a",
            "x=a b",
            "x=(a)",
            "-x=a",
            "x=-a",
            "Example.com/app=web",
            "/app=web",
            "a/b/c=d",
            "x<-1",
            "x=a;y=b",
            &format!("{}=a", "k".repeat(64)),
            &format!("x={}", "v".repeat(64)),
        ] {
            assert!(!is_valid(selector), "{selector:?} should be invalid");
        }
    }
}
