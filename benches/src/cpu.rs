//! CPU time of processes and of the machine, from `/proc`, for end-to-end
//! benches: on a shared two-core machine the CPU a request costs each process
//! is steadier than the requests per second it reaches.

use std::time::Duration;

/// Clock ticks per second in `/proc` (Linux's USER_HZ, fixed at 100 for userspace).
const TICKS_PER_SECOND: u64 = 100;

/// A process's CPU time so far (zero when it cannot be read): the sum of its
/// threads' run time in nanoseconds from `/proc/<pid>/task/*/schedstat` where
/// the kernel keeps it, otherwise user + system time in clock ticks (10 ms,
/// coarse for a run that costs the proxy a fraction of a second).
pub fn process_time(pid: u32) -> Duration {
    scheduler_time(pid).unwrap_or_else(|| process_ticks(pid))
}

/// The run time of every live thread of a process, from schedstat.
fn scheduler_time(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut nanos: u64 = 0;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        nanos += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(nanos))
}

/// A process's user + system CPU time so far, in clock ticks.
fn process_ticks(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name (which may hold spaces):
    // state is field 3, utime 14 and stime 15.
    let ticks = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|field| field.parse::<u64>().ok())
                .sum::<u64>()
        })
        .unwrap_or_default();
    ticks_to_duration(ticks)
}

/// CPU time so far of a process's children that ended and were waited for
/// (`cutime` + `cstime`): for PostgreSQL's postmaster, the backends of the
/// connections that closed, one per connection.
pub fn reaped_children_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // cutime is field 16 and cstime 17; the state (field 3) follows the name.
    let ticks = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(13)
                .take(2)
                .filter_map(|field| field.parse::<u64>().ok())
                .sum::<u64>()
        })
        .unwrap_or_default();
    ticks_to_duration(ticks)
}

/// CPU time so far of each thread of a process, by thread name (Envoy names
/// its main thread `envoy` and its workers `wrk:worker_N`); threads of one
/// name are added up.
pub fn thread_times(pid: u32) -> std::collections::BTreeMap<String, Duration> {
    let mut times = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return times;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat.get(open + 1..close).unwrap_or_default().to_owned();
        let ticks: u64 = stat
            .get(close + 1..)
            .unwrap_or_default()
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|field| field.parse::<u64>().ok())
            .sum();
        *times.entry(name).or_default() += ticks_to_duration(ticks);
    }
    times
}

/// CPU time the machine's cores spent running its own work so far.
pub fn machine_busy_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice: busy is
    // user + nice + system + irq + softirq (steal is another VM's, and guest
    // time is already in user).
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(index, _)| matches!(index, 0 | 1 | 2 | 5 | 6))
        .map(|(_, ticks)| ticks)
        .sum();
    ticks_to_duration(busy)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks.saturating_mul(1000 / TICKS_PER_SECOND))
}

/// Waits until each process in `pids` spends under 5% of a core for a whole
/// second (a Wasm Envoy compiles its modules in the background after it
/// starts listening: that must not count against the first round; an idle
/// gatehouse Envoy still spends 1–3% of a core), for at most `limit`; returns
/// whether they settled.
pub fn wait_until_idle(pids: &[u32], limit: Duration) -> bool {
    let start = std::time::Instant::now();
    let window = Duration::from_secs(1);
    while start.elapsed() < limit {
        let before: Vec<Duration> = pids.iter().map(|pid| process_time(*pid)).collect();
        std::thread::sleep(window);
        let idle = pids
            .iter()
            .zip(before)
            .all(|(pid, before)| process_time(*pid).saturating_sub(before) < window / 20);
        if idle {
            return true;
        }
    }
    false
}

/// CPU spent between two readings, by whom.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// The proxy under test.
    pub proxy: Duration,
    /// The whole machine (proxy, load generator, upstream and anything else).
    pub machine: Duration,
}

impl Usage {
    /// Reads the counters now, for `proxy_pid`.
    pub fn now(proxy_pid: Option<u32>) -> Usage {
        Usage {
            proxy: proxy_pid.map(process_time).unwrap_or_default(),
            machine: machine_busy_time(),
        }
    }

    /// What was spent since `earlier`.
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            proxy: self.proxy.saturating_sub(earlier.proxy),
            machine: self.machine.saturating_sub(earlier.machine),
        }
    }

    /// Adds another measurement.
    pub fn add(&mut self, other: Usage) {
        self.proxy += other.proxy;
        self.machine += other.machine;
    }

    /// Proxy CPU per request, in µs.
    pub fn proxy_micros_per(&self, requests: u64) -> f64 {
        self.proxy.as_secs_f64() * 1e6 / requests.max(1) as f64
    }

    /// Machine CPU per request, in µs.
    pub fn machine_micros_per(&self, requests: u64) -> f64 {
        self.machine.as_secs_f64() * 1e6 / requests.max(1) as f64
    }
}
