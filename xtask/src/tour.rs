//! `cargo xtask tour`: the README's five-minute tour, run as written against
//! the running demo, each command's output checked.
//!
//! The tour is the README's: the ```sh blocks between the `<!-- tour -->` and
//! `<!-- /tour -->` markers, one command per line (a trailing `\` continues
//! it). They run in order in one bash at the repository's root, so exports
//! carry over. [`EXPECTED`] says what the commands that show something must
//! print; every other command must succeed.

use anyhow::{Context, Result, bail};
use gatehouse_integration::workspace_root;
use std::process::{Command, Stdio};

/// What a tour command must show: the command (a part of it that picks it
/// out), whether it fails, and text its output must hold.
struct Expected {
    command: &'static str,
    fails: bool,
    shows: &'static [&'static str],
}

const EXPECTED: &[Expected] = &[
    Expected {
        command: "select current_user",
        fails: false,
        shows: &["app"],
    },
    Expected {
        command: "drop table orders",
        fails: true,
        shows: &[
            "ERROR:  gatehouse: schema changes",
            "DETAIL:  denied by gatehouse rule no-ddl",
        ],
    },
    Expected {
        command: "select name, email, card_number",
        fails: false,
        shows: &["****", "@"],
    },
    Expected {
        command: "gatehouse explain",
        fails: false,
        shows: &["masking: columns public.customers.email by rule customer-email"],
    },
    Expected {
        command: "delete namespace prod",
        fails: true,
        shows: &[
            "forbidden",
            "denied by gatehouse rule no-namespace-deletion",
        ],
    },
    Expected {
        command: "auth whoami",
        fails: false,
        shows: &["developer", "developers"],
    },
    Expected {
        command: "can-i delete namespace/prod",
        fails: true,
        shows: &["no - denied by gatehouse rule no-namespace-deletion"],
    },
    Expected {
        command: "can-i get pods",
        fails: false,
        shows: &["yes"],
    },
    Expected {
        command: "audit sessions",
        fails: false,
        shows: &["developer (app)", "DENIED", "client_terminate"],
    },
    Expected {
        command: "audit records",
        fails: false,
        shows: &["deny no-ddl", "forbid no-namespace-deletion"],
    },
    Expected {
        command: "audit replay",
        fails: false,
        shows: &["-- developer (groups developers)", "values masked"],
    },
    Expected {
        command: "exec -i -n dev web-0",
        fails: false,
        shows: &["web-0", "gatehouse: refused \"rm -rf /\""],
    },
    Expected {
        command: "audit verify",
        fails: false,
        shows: &[" 0 problems, 0 records reported dropped"],
    },
    // Before "for try in" and the refused statement: the retry loop holds both.
    Expected {
        command: "for retry in",
        fails: false,
        shows: &["UPDATE 1"],
    },
    Expected {
        command: "where id = 42\"",
        fails: true,
        shows: &[
            "needs approval under gatehouse rule customer-writes",
            "HINT:  approval request apr-",
        ],
    },
    Expected {
        command: "gatehouse approvals list | grep -B1",
        fails: false,
        shows: &["ID ", "apr-", "pending  developer  customer-writes"],
    },
    Expected {
        command: "request=$(",
        fails: false,
        shows: &[],
    },
    Expected {
        command: "gatehouse approve ",
        fails: false,
        shows: &["approved"],
    },
    Expected {
        command: "for try in",
        fails: false,
        shows: &[],
    },
    Expected {
        command: "--format asciicast",
        fails: false,
        shows: &[],
    },
    Expected {
        command: "gatehouse replay",
        fails: false,
        shows: &[
            "kubectl exec dev/web-0 -c app -- sh (developer)",
            "DB_PASSWORD=****",
            "deny rm -rf /",
        ],
    },
    Expected {
        command: "stats/prometheus",
        fails: false,
        shows: &["gatehouse_pg_decisions_total{action=\"deny\",rule=\"no-ddl\"}"],
    },
];

/// The tour's commands, from the README.
pub fn commands(readme: &str) -> Vec<String> {
    let Some((_, rest)) = readme.split_once("<!-- tour -->") else {
        return Vec::new();
    };
    let tour = rest
        .split_once("<!-- /tour -->")
        .map_or(rest, |(tour, _)| tour);
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in tour.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = trimmed == "```sh";
            continue;
        }
        if !in_block || (pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#'))) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head.trim_end());
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands
}

/// Runs the tour against the running demo; fails at the first command that
/// does not do what the README says.
pub fn run() -> Result<()> {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).context("reading README.md")?;
    let commands = commands(&readme);
    if commands.len() < EXPECTED.len() {
        bail!("README.md has no tour between <!-- tour --> and <!-- /tour -->");
    }
    let mut script = String::from("cd \"$1\"\n");
    for (i, command) in commands.iter().enumerate() {
        script.push_str(&format!(
            "echo '::tour {i}'\n{{ {command}\n}} 2>&1\necho \"::exit {i} $?\"\n"
        ));
    }
    let output = Command::new("bash")
        .args(["-c", &script, "tour"])
        .arg(&root)
        .stdin(Stdio::null())
        .output()
        .context("running bash")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut problems = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        let start = format!("::tour {i}\n");
        let shown = text
            .split_once(&start)
            .map(|(_, after)| after)
            .and_then(|after| after.split_once(&format!("::exit {i} ")))
            .map(|(shown, exit)| (shown, exit.lines().next().unwrap_or("").trim() == "0"));
        let Some((shown, succeeded)) = shown else {
            problems.push(format!("$ {command}\n   did not run"));
            continue;
        };
        println!("$ {command}\n{shown}");
        let expected = EXPECTED.iter().find(|e| command.contains(e.command));
        let fails = expected.is_some_and(|e| e.fails);
        if succeeded == fails {
            problems.push(format!(
                "$ {command}\n   {} but the tour says it {}",
                if succeeded { "succeeded" } else { "failed" },
                if fails { "fails" } else { "succeeds" }
            ));
        }
        for needle in expected.map_or(&[][..], |e| e.shows) {
            if !shown.contains(needle) {
                problems.push(format!("$ {command}\n   does not show {needle:?}"));
            }
        }
    }
    for expected in EXPECTED {
        if !commands.iter().any(|c| c.contains(expected.command)) {
            problems.push(format!(
                "the tour has no command with {:?}",
                expected.command
            ));
        }
    }
    if !problems.is_empty() {
        bail!("the README's tour does not hold:\n{}", problems.join("\n"));
    }
    println!("the README's tour holds: {} commands", commands.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tour_is_the_readmes_sh_blocks_between_the_markers() {
        let readme = "intro\n```sh\nnot this\n```\n<!-- tour -->\ntext\n```sh\n# a comment\necho a \\\n  b\n\necho c\n```\n```text\nout\n```\n<!-- /tour -->\n```sh\nnor this\n```\n";
        assert_eq!(commands(readme), ["echo a b", "echo c"]);
    }

    #[test]
    fn the_shipped_readme_has_every_expected_step() {
        let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
        let commands = commands(&readme);
        for expected in EXPECTED {
            assert!(
                commands.iter().any(|c| c.contains(expected.command)),
                "{:?}",
                expected.command
            );
        }
    }
}
