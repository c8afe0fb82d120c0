//! End-to-end exec throughput with and without session recording: real
//! kubectl 1.33 (WebSocket) through Envoy with gatehouse's Kubernetes filter
//! to the stand-in API server, `kubectl exec web-0 -- seq N` (about 23 MB
//! for three million lines, in 32 KiB frames as a kubelet writes them). One
//! identity's execs are recorded (every byte decoded, masked a line at a
//! time, chunked, chained and delivered to the access log), another's pass
//! unrecorded under an otherwise equal rule; runs alternate between them in
//! each round. Prints bytes/s per run, the medians and their ratio, and the
//! CPU Envoy spent per MB (steadier than bytes/s on a shared machine; it
//! includes delivering the records to the access log); each run's output is
//! checked whole, and each recorded session's records must account for every
//! byte and verify. The Wasm and the native build run side by side, their
//! rounds interleaved.
//!
//! Needs both builds (`cargo xtask build`, `cargo xtask build --native`) and
//! Envoy installed.
//! `cargo bench -p gatehouse-benches --bench exec_recording`; knobs:
//! `EXEC_BENCH_LINES` (3000000), `EXEC_BENCH_ROUNDS` (5).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench: a failed unwrap is a failed bench"
)]

use anyhow::{Context, Result, bail};
use gatehouse_benches::cpu::{Usage, thread_times};
use gatehouse_benches::pgbench::{env_or, skipped};
use gatehouse_integration::tools::Build;
use gatehouse_integration::{Stack, StackOptions};
use serde_json::{Value, json};
use std::time::Instant;

/// The shipped policy with two exec rules in front: `developers`' execs in
/// dev are recorded, `ci`'s are not.
fn policy() -> Value {
    let mut policy = gatehouse_integration::stack::default_kubernetes_filter_config();
    let exec = |name: &str, group: &str| {
        json!({"name": name, "action": "allow",
               "match": {"groups": [group], "namespaces": ["dev"], "resources": ["pods/exec"]}})
    };
    let mut recorded = exec("bench-recorded", "developers");
    if let Some(rule) = recorded.as_object_mut() {
        rule.insert("record".into(), json!({}));
    }
    if let Some(rules) = policy.get_mut("rules").and_then(Value::as_array_mut) {
        rules.insert(0, exec("bench-unrecorded", "ci"));
        rules.insert(0, recorded);
    }
    policy
}

/// One exec: its output's bytes/s, Envoy's CPU milliseconds per MB, and
/// that CPU on the main thread (the audit service), after checking the
/// output is `seq`'s.
fn run(stack: &Stack, context: &str, lines: u64) -> Result<(f64, f64, f64)> {
    let envoy = stack.envoy.pid();
    let before = Usage::now(envoy);
    let main_thread = |pid: Option<u32>| {
        pid.map(thread_times)
            .and_then(|times| times.get("envoy").copied())
            .unwrap_or_default()
    };
    let main_before = main_thread(envoy);
    let started = Instant::now();
    let out = stack.kubectl(
        "1.33",
        &[
            "--context",
            context,
            "exec",
            "web-0",
            "-n",
            "dev",
            "--",
            "seq",
            &lines.to_string(),
        ],
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    // Records still on their way to the access log are part of the cost.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let cpu = Usage::now(envoy).since(&before).proxy.as_secs_f64();
    let main = main_thread(envoy).saturating_sub(main_before).as_secs_f64();
    if !out.status.success() {
        bail!(
            "kubectl exec as {context}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let expected: usize = (1..=lines).map(|n| n.to_string().len() + 1).sum();
    let stdout = &out.stdout;
    let last = format!("\n{lines}\n");
    if stdout.len() != expected || !stdout.ends_with(last.as_bytes()) {
        bail!(
            "{context}: seq output of {} bytes, expected {expected}",
            stdout.len()
        );
    }
    let megabytes = stdout.len() as f64 / 1e6;
    Ok((
        stdout.len() as f64 / elapsed,
        cpu * 1e3 / megabytes,
        main * 1e3 / megabytes,
    ))
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(0.0)
}

/// One build's stack and what its runs measured.
struct Column {
    build: Build,
    stack: Stack,
    /// (bytes/s, Envoy ms CPU per MB), per run: recorded, then unrecorded.
    recorded: Vec<(f64, f64)>,
    plain: Vec<(f64, f64)>,
}

impl Column {
    fn start(build: Build) -> Result<Column> {
        let stack = Stack::start(
            "bench",
            &format!("exec-recording-{build:?}").to_lowercase(),
            StackOptions {
                kubernetes_filter: policy(),
                build: Some(build),
                ..StackOptions::default()
            },
        )
        .with_context(|| format!("starting the {build:?} stack"))?;
        // Warm both paths (discovery caches, key fetches).
        run(&stack, "developer", 1000)?;
        run(&stack, "ci", 1000)?;
        Ok(Column {
            build,
            stack,
            recorded: Vec::new(),
            plain: Vec::new(),
        })
    }

    fn summary(&self, lines: u64, rounds: usize) {
        let rate = |runs: &[(f64, f64)]| median(runs.iter().map(|r| r.0).collect());
        let cpu = |runs: &[(f64, f64)]| median(runs.iter().map(|r| r.1).collect());
        let (recorded, plain) = (rate(&self.recorded), rate(&self.plain));
        let (recorded_cpu, plain_cpu) = (cpu(&self.recorded), cpu(&self.plain));
        println!(
            "{:?}: exec `seq {lines}` through Envoy, medians of {rounds}: recorded {:.1} MB/s, unrecorded {:.1} MB/s, ratio {:.2}; Envoy CPU per MB {recorded_cpu:.1} ms recorded, {plain_cpu:.1} ms unrecorded",
            self.build,
            recorded / 1e6,
            plain / 1e6,
            recorded / plain
        );
    }
}

fn main() -> Result<()> {
    if skipped("exec_recording") {
        return Ok(());
    }
    let lines: u64 = env_or("EXEC_BENCH_LINES", "3000000").parse()?;
    let rounds: usize = env_or("EXEC_BENCH_ROUNDS", "5").parse()?;
    // Both builds side by side, same run: the Wasm modules and the native
    // module (`cargo xtask build` and `cargo xtask build --native`).
    let mut columns = vec![Column::start(Build::Wasm)?, Column::start(Build::Native)?];
    for round in 0..rounds {
        // Rotate which configuration goes first, so drift on a shared
        // machine hits all four.
        let mut order: Vec<(usize, &str)> = (0..columns.len())
            .flat_map(|column| [(column, "developer"), (column, "ci")])
            .collect();
        let first = round % order.len();
        order.rotate_left(first);
        for (index, context) in order {
            let Some(column) = columns.get_mut(index) else {
                continue;
            };
            let (rate, cpu, main) = run(&column.stack, context, lines)?;
            println!(
                "round {round}: {:>6} {context:>9} {:>8.1} MB/s, Envoy {cpu:>6.1} ms CPU per MB ({main:.1} on the main thread)",
                format!("{:?}", column.build),
                rate / 1e6
            );
            if context == "developer" {
                column.recorded.push((rate, cpu));
            } else {
                column.plain.push((rate, cpu));
            }
        }
    }
    for column in &columns {
        column.summary(lines, rounds);
    }
    for column in &columns {
        check_records(column.build, &column.stack, rounds)?;
    }
    Ok(())
}

/// Every recorded session of a stack accounts for its bytes and verifies.
fn check_records(build: Build, stack: &Stack, rounds: usize) -> Result<()> {
    std::thread::sleep(std::time::Duration::from_secs(2));
    let log = std::fs::read_to_string(&stack.access_log)?;
    let ends: Vec<Value> = log
        .lines()
        .filter(|l| l.contains("\"k8s.exec.session_end\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let full = ends
        .iter()
        .filter(|end| end.get("stdout_bytes").and_then(Value::as_u64) > Some(1_000_000))
        .count();
    if full != rounds {
        bail!("{build:?}: {full} recorded sessions of {rounds} account for their output: {ends:?}");
    }
    let cli = gatehouse_integration::tools::gatehouse_cli()?;
    let verify = std::process::Command::new(cli)
        .args(["audit", "verify"])
        .arg(&stack.access_log)
        .output()?;
    if !verify.status.success() {
        let envoy_log =
            std::fs::read_to_string(stack.dir.join("envoy/envoy.log")).unwrap_or_default();
        let warnings: Vec<&str> = envoy_log
            .lines()
            .filter(|l| l.contains("gatehouse") || l.contains("record"))
            .collect();
        let drops: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("records_dropped"))
            .collect();
        bail!(
            "audit verify: {}\nenvoy:\n{}\ndrop notices: {drops:?}",
            String::from_utf8_lossy(&verify.stdout),
            warnings.join("\n")
        );
    }
    println!("{build:?}: {} recorded sessions verified", ends.len());
    Ok(())
}
