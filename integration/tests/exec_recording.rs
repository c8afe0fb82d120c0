//! Recorded exec sessions: real kubectl on a real terminal (`script`),
//! through Envoy with the Kubernetes filter, to the stand-in API server's
//! shell. kubectl 1.33 speaks WebSocket, 1.29 SPDY/3.1; both are recorded, as
//! is the attach of `kubectl debug`,
//! a refused line never runs, typed and echoed secrets stay out of the
//! records, and the recordings verify and replay with the real `asciinema`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "an integration test: a failed unwrap or a missing item is a failed test"
)]

use gatehouse_integration::{Stack, StackOptions};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// kubectl on a pseudo-terminal, typed into like a person would.
struct Terminal {
    child: Child,
    screen: Arc<Mutex<String>>,
    /// Where the next `wait_for` starts looking.
    seen: usize,
}

impl Terminal {
    fn spawn(stack: &Stack, version: &str, args: &[&str]) -> Terminal {
        let kubectl = gatehouse_integration::tools::kubectl(Some(version)).unwrap();
        let mut command = format!(
            "'{}' --kubeconfig '{}' --cache-dir '{}'",
            kubectl.display(),
            stack.kubeconfig.display(),
            stack.dir.join(format!("kube-cache-{version}")).display()
        );
        for arg in args {
            command.push_str(&format!(" '{arg}'"));
        }
        let mut child = Command::new("script")
            .args(["-qefc", &command, "/dev/null"])
            .env_remove("KUBECONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script (bsdutils) runs kubectl on a terminal");
        let mut stdout = child.stdout.take().unwrap();
        let screen = Arc::new(Mutex::new(String::new()));
        let shared = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shared
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Terminal {
            child,
            screen,
            seen: 0,
        }
    }

    /// Waits until `text` shows after what was already seen.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen.lock().unwrap().clone();
            if let Some(at) = screen.get(self.seen..).and_then(|rest| rest.find(text)) {
                self.seen += at + text.len();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} never showed; the terminal shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `text` a character at a time.
    fn type_text(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        for byte in text.bytes() {
            stdin.write_all(&[byte]).unwrap();
            stdin.flush().unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
    }

    fn exit_code(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (status.code(), self.screen.lock().unwrap().clone());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("kubectl did not end:\n{}", self.screen.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A shell session: a command, a file holding a password, a refused line,
/// a password typed at a prompt and echoed back, and `exit 3`.
fn shell_session(stack: &Stack, version: &str) -> String {
    let mut term = Terminal::spawn(
        stack,
        version,
        &[
            "--context",
            "developer",
            "exec",
            "-it",
            "web-0",
            "-n",
            "dev",
            "--",
            "sh",
        ],
    );
    term.wait_for("$ ");
    // kubectl puts the terminal in raw mode once the stream is up, around
    // when the prompt arrives: keys typed before that are the terminal's.
    std::thread::sleep(Duration::from_millis(300));
    term.type_text("hostname\r");
    term.wait_for("web-0\r\n$ ");
    term.type_text("cat /app/.env\r");
    term.wait_for("DB_PASSWORD=Sup3r-S3cret-Passw0rd\r\n$ ");
    term.type_text("rm -rf /\r");
    term.wait_for(
        "gatehouse: refused \"rm -rf /\": matches deny pattern \"rm -rf /\"; it was not run",
    );
    term.wait_for("$ ");
    term.type_text("read -s -p Password: p\r");
    term.wait_for("Password:");
    term.type_text("hunter2-horse\r");
    term.wait_for("$ ");
    term.type_text("echo $p\r");
    term.wait_for("hunter2-horse\r\n$ ");
    term.type_text("exit 3\r");
    let (code, screen) = term.exit_code();
    assert_eq!(
        code,
        Some(3),
        "kubectl {version} ends with the shell's status:\n{screen}"
    );
    assert!(
        !screen.contains("rm: not found"),
        "the refused line never ran:\n{screen}"
    );
    screen
}

fn exec_records(stack: &Stack) -> Vec<Value> {
    stack
        .access_log_records()
        .unwrap()
        .into_iter()
        .filter(|r| {
            r["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("k8s.exec."))
        })
        .collect()
}

fn session_of<'a>(records: &'a [Value], id: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["session"] == id).collect()
}

fn gatehouse(args: &[&str]) -> std::process::Output {
    Command::new(gatehouse_integration::tools::gatehouse_cli().unwrap())
        .args(args)
        .output()
        .unwrap()
}

/// `asciinema cat` of a cast file (asciinema opens /dev/tty: `script` gives it one).
fn asciinema_cat(cast: &Path) -> String {
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("asciinema cat '{}'", cast.display()),
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "asciinema cat {}: {}",
        cast.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn exec_sessions_over_websocket_and_spdy_are_recorded_refused_lines_stopped_and_replayed() {
    let stack =
        Stack::start("it", "exec-recording", StackOptions::default()).expect("stack starts");
    let mut transports = Vec::new();
    for (version, transport) in [("1.33", "websocket"), ("1.29", "spdy")] {
        shell_session(&stack, version);
        transports.push(transport);
    }

    // `kubectl debug`: an ephemeral container, then an attach, recorded too.
    let mut debug = Terminal::spawn(
        &stack,
        "1.33",
        &[
            "--context",
            "developer",
            "debug",
            "-it",
            "web-0",
            "-n",
            "dev",
            "--image=busybox",
            "--profile=general",
        ],
    );
    debug.wait_for("If you don't see a command prompt");
    std::thread::sleep(Duration::from_millis(300));
    debug.type_text("\r");
    debug.wait_for("$ ");
    debug.type_text("rm -rf /\r");
    debug.wait_for("gatehouse: refused \"rm -rf /\"");
    debug.type_text("exit\r");
    let (code, screen) = debug.exit_code();
    assert_eq!(code, Some(0), "{screen}");

    // Without a terminal: whole lines are held, a refused one is dropped and
    // the user told on stderr.
    let mut piped = Command::new(gatehouse_integration::tools::kubectl(Some("1.33")).unwrap())
        .arg("--kubeconfig")
        .arg(&stack.kubeconfig)
        .args([
            "--context",
            "developer",
            "exec",
            "-i",
            "web-0",
            "-n",
            "dev",
            "--",
            "sh",
        ])
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    piped
        .stdin
        .take()
        .unwrap()
        .write_all(b"hostname\nrm -rf /\necho after\n")
        .unwrap();
    let piped = piped.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout),
        "web-0\nafter\n",
        "{stderr}"
    );
    assert!(
        stderr.contains("gatehouse: refused \"rm -rf /\""),
        "{stderr}"
    );
    assert!(!stderr.contains("not found"), "{stderr}");
    // A command without stdin over SPDY.
    let once = stack
        .kubectl(
            "1.29",
            &[
                "--context",
                "developer",
                "exec",
                "web-0",
                "-n",
                "dev",
                "--",
                "id",
            ],
        )
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&once.stdout),
        "uid=0(root) gid=0(root) groups=0(root)\n"
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    let records = loop {
        let records = exec_records(&stack);
        let ended = records
            .iter()
            .filter(|r| r["type"] == "k8s.exec.session_end")
            .count();
        if ended >= 4 {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "4 sessions should have ended: {records:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(&stack.access_log).unwrap();
    for secret in ["hunter2-horse", "Sup3r-S3cret-Passw0rd"] {
        assert!(!log.contains(secret), "{secret} reached the access log");
    }
    let starts: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "k8s.exec.session_start")
        .collect();
    for transport in transports {
        let start = starts
            .iter()
            .find(|s| s["transport"] == transport && s["tty"] == true)
            .unwrap_or_else(|| panic!("a {transport} terminal session: {starts:#?}"));
        assert_eq!(start["user"], "developer");
        assert_eq!(
            (start["namespace"].as_str(), start["pod"].as_str()),
            (Some("dev"), Some("web-0"))
        );
        assert_eq!(start["rule"], "exec-in-dev-recorded");
        let id = start["session"].as_str().unwrap();
        let session = session_of(&records, id);
        let commands: Vec<(String, String)> = session
            .iter()
            .filter(|r| r["type"] == "k8s.exec.command")
            .map(|c| {
                (
                    c["line"].as_str().unwrap().to_owned(),
                    c["action"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expected = [
            ("hostname", "allow"),
            ("cat /app/.env", "allow"),
            ("rm -rf /", "deny"),
            ("read -s -p Password: p", "allow"),
            ("****", "allow"),
            ("echo $p", "allow"),
            ("exit 3", "allow"),
        ];
        assert_eq!(
            commands,
            expected.map(|(l, a)| (l.to_owned(), a.to_owned())),
            "{transport}"
        );
        let end = session.last().unwrap();
        assert_eq!(end["type"], "k8s.exec.session_end");
        assert_eq!(
            (end["reason"].as_str(), end["exit_code"].as_i64()),
            (Some("completed"), Some(3))
        );
        assert_eq!(end["denied"], 1);
        // The request's Events name the same session.
        assert!(
            stack
                .access_log_records()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "Event"
                    && e["auditID"] == id
                    && e["stage"] == "ResponseStarted"),
            "the exec's Event has auditID {id}"
        );

        let cast = stack.dir.join(format!("{transport}.cast"));
        let replay = gatehouse(&[
            "replay",
            &stack.access_log.to_string_lossy(),
            "--session",
            id,
            "--format",
            "asciicast",
        ]);
        assert!(
            replay.status.success(),
            "{}",
            String::from_utf8_lossy(&replay.stderr)
        );
        std::fs::write(&cast, &replay.stdout).unwrap();
        assert!(
            replay.stderr.is_empty(),
            "the chain holds: {}",
            String::from_utf8_lossy(&replay.stderr)
        );
        let shown = asciinema_cat(&cast);
        assert!(
            shown.contains("web-0")
                && shown.contains("gatehouse: refused")
                && shown.contains("DB_PASSWORD=****"),
            "{transport} replay:\n{shown}"
        );
        assert!(!shown.contains("hunter2-horse"), "{shown}");
        let text = gatehouse(&[
            "replay",
            &stack.access_log.to_string_lossy(),
            "--session",
            id,
        ]);
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains("deny rm -rf /") && text.contains("exit code 3"),
            "{text}"
        );
    }
    let piped_start = starts
        .iter()
        .find(|s| s["tty"] == false && s["stdin"] == true)
        .unwrap();
    let piped_session = session_of(&records, piped_start["session"].as_str().unwrap());
    assert_eq!(piped_session.last().unwrap()["denied"], 1);

    let verify = gatehouse(&["audit", "verify", &stack.access_log.to_string_lossy()]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let tampered_log = stack.dir.join("tampered.log");
    std::fs::write(&tampered_log, log.replacen("web-0\\r\\n", "web-9\\r\\n", 1)).unwrap();
    let verify = gatehouse(&["audit", "verify", &tampered_log.to_string_lossy()]);
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(
        !verify.status.success() && said.contains("altered"),
        "{said}"
    );
}
