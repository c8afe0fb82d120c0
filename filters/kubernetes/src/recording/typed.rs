//! Typed commands: stdin rebuilt into the lines a shell would run, and the
//! policy that may refuse them.
//!
//! [`LineEditor`] applies the editing a terminal's line discipline and
//! readline share: backspace (DEL or ^H) removes a character, ^U the line,
//! ^W the word before the cursor, ^C abandons the line, and a line ending in
//! a backslash continues on the next. Anything it cannot follow (escape
//! sequences such as arrow keys or bracketed paste, tab completion, history
//! search, yank, cursor moves, other control characters) marks the line
//! *uncertain*: what the shell runs may differ from what the filter rebuilt.
//! The raw bytes of each line are kept beside its text.
//!
//! [`CommandPolicy`] judges a finished line. A pattern is a wildcard (`*`
//! matches any text) that must match a whole command: the line, or one of its
//! segments between `;`, `&`, `|`, parentheses and backquotes, with runs of
//! blanks read as one space. When patterns are configured, an uncertain line
//! is refused too: the filter cannot tell it does not spell a refused
//! command. Patterns catch mistakes and casual misuse; a user who may run
//! commands can always find a spelling no pattern lists, so they do not
//! replace the request-level rules on who may exec where.

use gatehouse_core::config::ConfigError;
use gatehouse_core::policy::{Wildcard, compile_wildcards};

/// Longest line rebuilt; a longer one is uncertain.
pub const MAX_LINE: usize = 4096;

/// A line the user finished (or abandoned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedLine {
    /// The line as the shell would read it (continuations joined).
    pub text: String,
    /// Every byte typed for it, terminator included.
    pub raw: Vec<u8>,
    /// Editing the filter could not follow: `text` may not be what runs.
    pub uncertain: bool,
    /// Abandoned with ^C: never submitted.
    pub cancelled: bool,
}

/// What one typed byte did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    /// Part of the line being edited.
    Editing,
    /// A line continues on the next (it ended in a backslash).
    Continued,
    /// A line ended: submitted with its terminator, or abandoned with ^C.
    Line(TypedLine),
}

/// Rebuilds typed lines from stdin bytes.
#[derive(Debug, Default)]
pub struct LineEditor {
    line: Vec<u8>,
    raw: Vec<u8>,
    uncertain: bool,
    escape: Escape,
    /// The previous byte was a CR: an LF right after it ends nothing.
    after_cr: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// ESC seen.
    Start,
    /// `ESC [` or `ESC O`: until a final byte.
    Sequence,
}

impl LineEditor {
    /// Whether anything of an unfinished line is held.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Feeds one typed byte.
    pub fn push(&mut self, byte: u8) -> Typed {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        if byte == b'\n' && after_cr {
            return Typed::Editing;
        }
        if self.raw.len() < MAX_LINE * 2 {
            self.raw.push(byte);
        } else {
            self.uncertain = true;
        }
        match self.escape {
            Escape::Start => {
                self.escape = if byte == b'[' || byte == b'O' {
                    Escape::Sequence
                } else {
                    Escape::None
                };
                return Typed::Editing;
            }
            Escape::Sequence => {
                if (0x40..=0x7e).contains(&byte) {
                    self.escape = Escape::None;
                }
                return Typed::Editing;
            }
            Escape::None => {}
        }
        match byte {
            b'\r' | b'\n' => {
                self.after_cr = byte == b'\r';
                if self.line.last() == Some(&b'\\') {
                    self.line.pop();
                    return Typed::Continued;
                }
                Typed::Line(self.finish(false))
            }
            0x03 => Typed::Line(self.finish(true)),
            0x7f | 0x08 => {
                // One character: a UTF-8 sequence's continuation bytes go with it.
                while let Some(last) = self.line.pop() {
                    if last & 0xc0 != 0x80 {
                        break;
                    }
                }
                Typed::Editing
            }
            0x15 => {
                self.line.clear();
                Typed::Editing
            }
            0x17 => {
                while self.line.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
                    self.line.pop();
                }
                while self.line.last().is_some_and(|b| *b != b' ' && *b != b'\t') {
                    self.line.pop();
                }
                Typed::Editing
            }
            // ^L redraws the screen and changes nothing.
            0x0c => Typed::Editing,
            0x1b => {
                self.escape = Escape::Start;
                self.uncertain = true;
                Typed::Editing
            }
            byte if byte < 0x20 => {
                // Tab completion, ^A/^E/^K/^Y/^R/^P/^V...: the shell's line is
                // no longer what the filter rebuilt.
                self.uncertain = true;
                Typed::Editing
            }
            byte => {
                if self.line.len() < MAX_LINE {
                    self.line.push(byte);
                } else {
                    self.uncertain = true;
                }
                Typed::Editing
            }
        }
    }

    /// Ends the input: an unterminated line is handed over as it stands.
    pub fn finish_input(&mut self) -> Option<TypedLine> {
        (!self.raw.is_empty()).then(|| self.finish(false))
    }

    fn finish(&mut self, cancelled: bool) -> TypedLine {
        let line = TypedLine {
            text: String::from_utf8_lossy(&self.line).into_owned(),
            raw: std::mem::take(&mut self.raw),
            uncertain: self.uncertain || self.escape != Escape::None,
            cancelled,
        };
        self.line.clear();
        self.uncertain = false;
        self.escape = Escape::None;
        line
    }
}

/// Typed-line rules of the rule that admitted a session.
#[derive(Debug, Clone, Default)]
pub struct CommandPolicy {
    deny: Vec<Wildcard>,
}

/// The judgement of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineVerdict {
    Allow,
    /// A configured pattern matched.
    Deny {
        pattern: String,
    },
    /// Patterns are configured and the line is uncertain.
    Uncertain,
}

impl CommandPolicy {
    /// Compiles `deny_commands` patterns (error paths relative to the list).
    pub fn new(deny: &[String]) -> Result<Self, ConfigError> {
        Ok(Self {
            deny: compile_wildcards("deny_commands", deny)?,
        })
    }

    /// Whether any pattern is configured (typed lines are then checked
    /// before they reach the pod).
    pub fn is_active(&self) -> bool {
        !self.deny.is_empty()
    }

    /// Judges a submitted line.
    pub fn judge(&self, line: &TypedLine) -> LineVerdict {
        if self.deny.is_empty() {
            return LineVerdict::Allow;
        }
        let whole = normalize(&line.text);
        let matched = std::iter::once(whole.as_str())
            .chain(whole.split([';', '&', '|', '(', ')', '`']).map(str::trim))
            .filter(|command| !command.is_empty())
            .find_map(|command| self.deny.iter().find(|p| p.matches(command)));
        match matched {
            Some(pattern) => LineVerdict::Deny {
                pattern: pattern.as_str().to_owned(),
            },
            None if line.uncertain => LineVerdict::Uncertain,
            None => LineVerdict::Allow,
        }
    }
}

/// Runs of blanks read as one space; no blanks at either end.
fn normalize(text: &str) -> String {
    text.split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lines(typed: &[u8]) -> Vec<TypedLine> {
        let mut editor = LineEditor::default();
        let mut out = Vec::new();
        for &byte in typed {
            if let Typed::Line(line) = editor.push(byte) {
                out.push(line);
            }
        }
        out.extend(editor.finish_input());
        out
    }

    fn texts(typed: &[u8]) -> Vec<(String, bool, bool)> {
        lines(typed)
            .into_iter()
            .map(|l| (l.text, l.uncertain, l.cancelled))
            .collect()
    }

    #[test]
    fn line_editing_is_applied() {
        assert_eq!(texts(b"ls -l\r"), [("ls -l".into(), false, false)]);
        assert_eq!(texts(b"lx\x7fs\r"), [("ls".into(), false, false)]);
        assert_eq!(texts(b"lx\x08s\n"), [("ls".into(), false, false)]);
        assert_eq!(
            texts(b"rm -rf /\x15echo ok\r"),
            [("echo ok".into(), false, false)]
        );
        assert_eq!(
            texts(b"echo one two\x17\x17three\r"),
            [("echo three".into(), false, false)]
        );
        assert_eq!(texts(b"echo a  \x17b\r"), [("echo b".into(), false, false)]);
        assert_eq!(
            texts(b"rm -rf /\x03ls\r"),
            [
                ("rm -rf /".into(), false, true),
                ("ls".into(), false, false)
            ]
        );
        assert_eq!(texts("é\x7fe\r".as_bytes()), [("e".into(), false, false)]);
        assert_eq!(
            texts(b"a\r\nb\r\n"),
            [("a".into(), false, false), ("b".into(), false, false)]
        );
        assert_eq!(
            texts(b"rm -rf \\\r/\r"),
            [("rm -rf /".into(), false, false)]
        );
        assert_eq!(texts(b"tail"), [("tail".into(), false, false)]);
    }

    #[test]
    fn the_raw_bytes_are_kept_beside_the_text() {
        let line = &lines(b"lx\x7fs\r")[0];
        assert_eq!(line.raw, b"lx\x7fs\r");
    }

    #[test]
    fn editing_it_cannot_follow_makes_a_line_uncertain() {
        for typed in [
            &b"rm -rf /tmp/x\x1b[D\x1b[D\x7f\r"[..], // arrow keys
            b"\x1b[A\r",                             // history
            b"rm -rf /b\t\r",                        // completion
            b"rm -rf /\x15\x19\r",                   // ^U then yank it back
            b"\x12rm\r",                             // reverse search
            b"\x1b[200~rm -rf /\x1b[201~\r",         // bracketed paste
        ] {
            let line = &lines(typed)[0];
            assert!(line.uncertain, "{typed:?} -> {line:?}");
        }
        assert!(!lines(b"\x1b[A\rls\r")[1].uncertain, "only that line");
        let long = vec![b'a'; MAX_LINE + 1];
        assert!(lines(&[&long[..], b"\r"].concat())[0].uncertain);
    }

    #[test]
    fn patterns_match_whole_commands_and_refuse_uncertain_lines() {
        let policy = CommandPolicy::new(&["rm -rf /".into(), "shutdown*".into()]).unwrap();
        let judge = |typed: &[u8]| policy.judge(&lines(typed)[0]);
        let denied = LineVerdict::Deny {
            pattern: "rm -rf /".into(),
        };
        assert_eq!(judge(b"rm -rf /\r"), denied);
        assert_eq!(judge(b"  rm   -rf  / \r"), denied);
        assert_eq!(
            judge(b"rm -rf\t/\r"),
            LineVerdict::Uncertain,
            "a tab completes"
        );
        assert_eq!(judge(b"cd / && rm -rf /\r"), denied);
        assert_eq!(judge(b"echo $(rm -rf /)\r"), denied);
        assert_eq!(judge(b"ls; rm -rf /; ls\r"), denied);
        assert_eq!(judge(b"rm -rf \\\r/\r"), denied);
        assert_eq!(
            judge(b"shutdown -h now\r"),
            LineVerdict::Deny {
                pattern: "shutdown*".into()
            }
        );
        assert_eq!(judge(b"rm -rf /tmp/build\r"), LineVerdict::Allow);
        assert_eq!(
            judge(b"echo rm -rf /\r"),
            LineVerdict::Allow,
            "a whole command only"
        );
        assert_eq!(judge(b"ls\x1b[D\r"), LineVerdict::Uncertain);
        let none = CommandPolicy::default();
        assert!(!none.is_active());
        assert_eq!(none.judge(&lines(b"\x1b[A\r")[0]), LineVerdict::Allow);
        assert!(CommandPolicy::new(&["".into()]).is_err());
    }
}
