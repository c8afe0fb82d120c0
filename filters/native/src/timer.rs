//! Alarms for connections: the network-filter ABI has no timers, so one
//! module thread keeps the alarms in time order and, when one is due, commits
//! its event to the connection's [`Scheduler`]; Envoy then runs the filter's
//! `on_scheduled` on the connection's own worker thread. A connection that
//! ended meanwhile makes the commit a no-op.

use gatehouse_dynamic_modules_abi::network::Scheduler;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One alarm: `event` for `scheduler` at `at`.
struct Alarm {
    at: Instant,
    scheduler: Arc<Scheduler>,
    event: u64,
}

impl PartialEq for Alarm {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Alarm {}
impl PartialOrd for Alarm {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Alarm {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

fn alarms() -> Option<&'static Mutex<Sender<Alarm>>> {
    static ALARMS: OnceLock<Option<Mutex<Sender<Alarm>>>> = OnceLock::new();
    ALARMS
        .get_or_init(|| {
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("gatehouse-alarms".into())
                .spawn(move || run(&receiver))
                .ok()
                .map(|_| Mutex::new(sender))
        })
        .as_ref()
}

/// Commits `event` to `scheduler` after `delay`; `false` if the alarm thread
/// could not be started.
pub fn after(delay: Duration, scheduler: Arc<Scheduler>, event: u64) -> bool {
    let Some(alarms) = alarms() else {
        return false;
    };
    let alarm = Alarm {
        at: Instant::now() + delay,
        scheduler,
        event,
    };
    alarms
        .lock()
        .map(|sender| sender.send(alarm).is_ok())
        .unwrap_or(false)
}

fn run(receiver: &Receiver<Alarm>) {
    let mut due: BinaryHeap<Reverse<Alarm>> = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while due.peek().is_some_and(|Reverse(alarm)| alarm.at <= now) {
            if let Some(Reverse(alarm)) = due.pop() {
                alarm.scheduler.commit(alarm.event);
            }
        }
        let wait = due
            .peek()
            .map_or(Duration::from_secs(3600), |Reverse(alarm)| {
                alarm.at.saturating_duration_since(now)
            });
        match receiver.recv_timeout(wait) {
            Ok(alarm) => due.push(Reverse(alarm)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
