//! The pretend container behind exec and attach: a small shell with a
//! prompt, echo on a terminal, and a few commands, so recorded sessions look
//! like real ones.
//!
//! On a terminal (`tty`) it behaves like a shell reading a line discipline:
//! typed characters are echoed, backspace erases, ^U clears the line, ^C
//! abandons it (printing `^C` and a new prompt), CR runs it. Without a
//! terminal it reads `\n`-separated lines and echoes nothing. Commands:
//! `echo`, `ls`, `pwd`, `id`, `whoami`, `hostname`, `uname`, `env`, `seq`, `cat`
//! (a few fixed files, one of them holding a password), `export`,
//! `read [-s] [-p PROMPT] NAME` (with `-s` nothing is echoed, as for a
//! password), `sleep`, `true`, `false` and `exit [CODE]`; anything else is
//! "not found" with status 127. `$NAME` expands in arguments.

use std::collections::BTreeMap;

/// Most numbers one `seq` prints.
const MAX_SEQ: u64 = 10_000_000;
/// The prompt.
pub const PROMPT: &str = "$ ";
/// What `cat /app/.env` prints: a secret the recording must mask.
pub const APP_ENV: &str = "DB_HOST=db.dev.svc\nDB_PASSWORD=Sup3r-S3cret-Passw0rd\n";

/// What the shell writes after some input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The shell exited with this status.
    pub exit: Option<i32>,
}

/// A `read` waiting for its line.
#[derive(Debug)]
struct PendingRead {
    name: String,
    silent: bool,
}

/// The shell's state.
#[derive(Debug)]
pub struct Shell {
    tty: bool,
    hostname: String,
    line: Vec<u8>,
    vars: BTreeMap<String, String>,
    read: Option<PendingRead>,
    status: i32,
    exited: bool,
}

impl Shell {
    /// A shell for pod `hostname`; the first output (the prompt on a
    /// terminal) is in [`Shell::start`].
    pub fn new(tty: bool, hostname: &str) -> Shell {
        let mut vars = BTreeMap::new();
        vars.insert("HOME".to_owned(), "/root".to_owned());
        vars.insert("HOSTNAME".to_owned(), hostname.to_owned());
        vars.insert("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned());
        Shell {
            tty,
            hostname: hostname.to_owned(),
            line: Vec::new(),
            vars,
            read: None,
            status: 0,
            exited: false,
        }
    }

    /// What an interactive shell prints first.
    pub fn start(&self) -> ShellOutput {
        ShellOutput {
            stdout: if self.tty {
                PROMPT.as_bytes().to_vec()
            } else {
                Vec::new()
            },
            ..ShellOutput::default()
        }
    }

    /// Runs one command line as `sh -c` would, then exits with its status.
    pub fn run_once(&mut self, argv: &[String]) -> ShellOutput {
        let mut out = ShellOutput::default();
        let words: Vec<String> = argv.iter().map(|a| self.expand(a)).collect();
        self.status = self.run(&words, &mut out);
        out.exit = Some(self.status);
        out
    }

    /// Feeds typed bytes.
    pub fn input(&mut self, bytes: &[u8]) -> ShellOutput {
        let mut out = ShellOutput::default();
        for &byte in bytes {
            if self.exited {
                break;
            }
            self.byte(byte, &mut out);
        }
        if self.exited {
            out.exit = Some(self.status);
        }
        out
    }

    /// Stdin closed: a last unterminated line runs, then the shell exits.
    pub fn end_of_input(&mut self) -> ShellOutput {
        let mut out = ShellOutput::default();
        if !self.exited {
            if !self.line.is_empty() {
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, &mut out);
            }
            self.exited = true;
        }
        out.exit = Some(self.status);
        out
    }

    fn eol(&self) -> &'static [u8] {
        if self.tty { b"\r\n" } else { b"\n" }
    }

    fn byte(&mut self, byte: u8, out: &mut ShellOutput) {
        let silent = self.read.as_ref().is_some_and(|r| r.silent);
        match byte {
            b'\r' | b'\n' if self.tty || byte == b'\n' => {
                if self.tty && !silent {
                    out.stdout.extend_from_slice(b"\r\n");
                }
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, out);
            }
            0x03 if self.tty => {
                self.line.clear();
                self.read = None;
                out.stdout.extend_from_slice(b"^C\r\n");
                self.status = 130;
                out.stdout.extend_from_slice(PROMPT.as_bytes());
            }
            0x7f | 0x08 if self.tty => {
                if self.line.pop().is_some() && !silent {
                    out.stdout.extend_from_slice(b"\x08 \x08");
                }
            }
            0x15 if self.tty => {
                if !silent {
                    for _ in 0..self.line.len() {
                        out.stdout.extend_from_slice(b"\x08 \x08");
                    }
                }
                self.line.clear();
            }
            0x04 if self.tty && self.line.is_empty() => {
                out.stdout.extend_from_slice(b"exit\r\n");
                self.exited = true;
            }
            byte if byte < 0x20 && byte != b'\t' && self.tty => {}
            byte => {
                self.line.push(byte);
                if self.tty && !silent {
                    out.stdout.push(byte);
                }
            }
        }
    }

    fn line_done(&mut self, line: &[u8], out: &mut ShellOutput) {
        let text = String::from_utf8_lossy(line).trim().to_owned();
        if let Some(read) = self.read.take() {
            if read.silent && self.tty {
                out.stdout.extend_from_slice(b"\r\n");
            }
            self.vars.insert(read.name, text);
            self.status = 0;
        } else if !text.is_empty() {
            let words: Vec<String> = text.split_whitespace().map(|w| self.expand(w)).collect();
            self.status = self.run(&words, out);
        }
        if self.tty && !self.exited && self.read.is_none() {
            out.stdout.extend_from_slice(PROMPT.as_bytes());
        }
    }

    fn expand(&self, word: &str) -> String {
        match word.strip_prefix('$') {
            Some(name) => self.vars.get(name).cloned().unwrap_or_default(),
            None => word.to_owned(),
        }
    }

    /// Runs a command; its exit status.
    fn run(&mut self, words: &[String], out: &mut ShellOutput) -> i32 {
        let Some((command, args)) = words.split_first() else {
            return 0;
        };
        let eol = self.eol();
        let mut print = |text: &str| {
            for (i, line) in text.split('\n').enumerate() {
                if i > 0 {
                    out.stdout.extend_from_slice(eol);
                }
                out.stdout.extend_from_slice(line.as_bytes());
            }
        };
        match command.as_str() {
            "echo" => print(&format!("{}\n", args.join(" "))),
            "ls" => print("app\nbin\netc\nhome\nroot\ntmp\nusr\nvar\n"),
            "pwd" => print("/\n"),
            "id" => print("uid=0(root) gid=0(root) groups=0(root)\n"),
            "whoami" => print("root\n"),
            "hostname" => print(&format!("{}\n", self.hostname)),
            "uname" => print("Linux\n"),
            "true" | "sleep" => {}
            "seq" => {
                let numbers: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
                let (first, last) = match *numbers.as_slice() {
                    [last] => (1, last),
                    [first, last] => (first, last),
                    _ => {
                        self.error("seq: usage: seq [FIRST] LAST", out);
                        return 1;
                    }
                };
                let mut text = String::new();
                for n in first..=last.min(first.saturating_add(MAX_SEQ)) {
                    text.push_str(&n.to_string());
                    text.push('\n');
                }
                print(&text);
            }
            "false" => return 1,
            "env" => {
                let vars: Vec<String> = self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
                print(&format!("{}\n", vars.join("\n")));
            }
            "cat" => {
                for file in args {
                    match file.as_str() {
                        "/etc/hostname" => print(&format!("{}\n", self.hostname)),
                        "/etc/os-release" => print("NAME=\"Alpine Linux\"\nVERSION_ID=3.20.3\n"),
                        "/app/.env" => print(APP_ENV),
                        other => {
                            let message = format!("cat: {other}: No such file or directory");
                            self.error(&message, out);
                            return 1;
                        }
                    }
                }
            }
            "export" => {
                for assignment in args {
                    if let Some((name, value)) = assignment.split_once('=') {
                        self.vars.insert(name.to_owned(), value.to_owned());
                    }
                }
            }
            "read" => {
                let mut silent = false;
                let mut prompt = String::new();
                let mut rest = args.iter();
                let mut name = "REPLY".to_owned();
                while let Some(arg) = rest.next() {
                    match arg.as_str() {
                        "-s" => silent = true,
                        "-p" => prompt = rest.next().cloned().unwrap_or_default(),
                        other => name = other.to_owned(),
                    }
                }
                out.stdout.extend_from_slice(prompt.as_bytes());
                self.read = Some(PendingRead { name, silent });
            }
            "exit" => {
                self.exited = true;
                return args
                    .first()
                    .and_then(|code| code.parse().ok())
                    .unwrap_or(self.status);
            }
            other => {
                let message = format!("sh: {other}: not found");
                self.error(&message, out);
                return 127;
            }
        }
        0
    }

    /// An error message: on stderr without a terminal, in the terminal's
    /// output with one (a terminal merges them).
    fn error(&self, message: &str, out: &mut ShellOutput) {
        let eol = self.eol();
        let stream = if self.tty {
            &mut out.stdout
        } else {
            &mut out.stderr
        };
        stream.extend_from_slice(message.as_bytes());
        stream.extend_from_slice(eol);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(shell: &mut Shell, bytes: &[u8]) -> String {
        String::from_utf8_lossy(&shell.input(bytes).stdout).into_owned()
    }

    #[test]
    fn a_terminal_shell_echoes_edits_and_prompts() {
        let mut shell = Shell::new(true, "web-0");
        assert_eq!(shell.start().stdout, b"$ ");
        assert_eq!(typed(&mut shell, b"echo hix\x7f"), "echo hix\x08 \x08");
        assert_eq!(typed(&mut shell, b"\r"), "\r\nhi\r\n$ ");
        assert_eq!(typed(&mut shell, b"rm -rf /\x03"), "rm -rf /^C\r\n$ ");
        assert_eq!(
            typed(&mut shell, b"nope\r"),
            "nope\r\nsh: nope: not found\r\n$ "
        );
        let out = shell.input(b"exit 3\r");
        assert_eq!(out.exit, Some(3));
    }

    #[test]
    fn read_s_takes_a_password_without_echo_and_echo_shows_it() {
        let mut shell = Shell::new(true, "web-0");
        let out = typed(&mut shell, b"read -s -p Password: p\r");
        assert_eq!(out, "read -s -p Password: p\r\nPassword:");
        assert_eq!(typed(&mut shell, b"hunter2\r"), "\r\n$ ");
        assert_eq!(
            typed(&mut shell, b"echo got $p\r"),
            "echo got $p\r\ngot hunter2\r\n$ "
        );
    }

    #[test]
    fn without_a_terminal_lines_run_quietly_and_errors_go_to_stderr() {
        let mut shell = Shell::new(false, "web-0");
        assert!(shell.start().stdout.is_empty());
        let out = shell.input(b"echo a\ncat /nope\nhostname");
        assert_eq!(out.stdout, b"a\n");
        assert_eq!(out.stderr, b"cat: /nope: No such file or directory\n");
        let end = shell.end_of_input();
        assert_eq!(end.stdout, b"web-0\n");
        assert_eq!(end.exit, Some(0));
    }

    #[test]
    fn a_command_runs_once_with_its_status() {
        let mut shell = Shell::new(false, "web-0");
        let out = shell.run_once(&["cat".into(), "/app/.env".into()]);
        assert_eq!(out.stdout, APP_ENV.as_bytes());
        assert_eq!(out.exit, Some(0));
        assert_eq!(shell.run_once(&["ls".into(), "/x".into()]).exit, Some(0));
        assert_eq!(shell.run_once(&["frob".into()]).exit, Some(127));
        let seq = shell.run_once(&["seq".into(), "3".into()]);
        assert_eq!((seq.stdout, seq.exit), (b"1\n2\n3\n".to_vec(), Some(0)));
    }
}
