//! When the process is too busy for comparisons: the loop thread's CPU use, and the
//! machine's idle CPU, over the last sample.
//!
//! A bound on comparisons in flight alone does not keep them off the client's way: under a
//! load Python cannot follow, the slots refill as fast as they free up, the loop thread runs
//! comparisons all the time, and that CPU is taken from the Rust route being shadowed (and
//! from the app's own requests). Nor is a quiet loop thread enough: when every CPU is busy
//! serving, a comparison's CPU is still taken from the route. So a sampled request is
//! compared only while, over the last [`SAMPLE`], the loop thread used less than a share of a
//! CPU and the machine had at least a share of its CPU time idle: comparisons run on spare
//! CPU only. Even with spare CPU, each comparison still puts a Python request, its
//! hand-offs between threads and a JSON comparison beside the client's request on the same
//! CPUs (on a small machine under load, that alone moved the shadowed route's median latency
//! by a quarter, at 2,400 comparisons a second), so their rate is capped too: parity on live
//! traffic needs hundreds of samples a second, not every request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the clocks are read, at most: on a sampled request, once this much has passed
/// since the last reading, so a reading after a quiet spell covers that spell too.
const SAMPLE: Duration = Duration::from_millis(50);

/// Reads the loop thread's CPU time so far (`None` when it cannot).
pub(super) type CpuClock = Box<dyn Fn() -> Option<Duration> + Send + Sync>;

/// Reads the machine's CPU times so far (`None` when it cannot).
pub(super) type MachineClock = Box<dyn Fn() -> Option<MachineTimes> + Send + Sync>;

/// CPU time of all of the machine's CPUs together, in the kernel's ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MachineTimes {
    pub idle: u64,
    pub total: u64,
}

impl MachineTimes {
    /// The machine's CPU times from `/proc/stat` (Linux); `None` elsewhere.
    pub(super) fn read() -> Option<MachineTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        Self::parse(stat.lines().next()?)
    }

    /// `cpu  user nice system idle iowait irq softirq steal …`: idle is idle + iowait; the
    /// total leaves out guest times, which `user` and `nice` already include.
    fn parse(line: &str) -> Option<MachineTimes> {
        let mut fields = line.split_ascii_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
            return None;
        };
        Some(MachineTimes {
            idle: idle + iowait,
            total: user + nice + system + idle + iowait + irq + softirq + steal,
        })
    }
}

/// When comparisons may start.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Share of one CPU the loop thread may use (1 or more: no limit).
    pub max_loop_busy: f64,
    /// Share of the machine's CPU time that must be idle (0: no limit).
    pub min_machine_idle: f64,
    /// Comparisons started per second at most, with a burst of a tenth of a second's worth
    /// (infinite: no limit).
    pub max_per_second: f64,
}

impl Limits {
    fn lifted(&self) -> bool {
        self.max_loop_busy >= 1.0
            && self.min_machine_idle <= 0.0
            && self.max_per_second.is_infinite()
    }

    fn burst(&self) -> f64 {
        (self.max_per_second / 10.0).max(1.0)
    }
}

pub(super) struct Load {
    loop_cpu: CpuClock,
    machine: MachineClock,
    limits: Limits,
    last: Mutex<Sample>,
}

struct Sample {
    at: Instant,
    loop_cpu: Option<Duration>,
    machine: Option<MachineTimes>,
    /// The verdict of the two latest readings.
    has_room: bool,
    /// Comparisons that may start now, refilled at `max_per_second`.
    tokens: f64,
    refilled: Instant,
}

impl Load {
    pub(super) fn new(loop_cpu: CpuClock, machine: MachineClock, limits: Limits) -> Self {
        let now = Instant::now();
        let last = Sample {
            at: now,
            loop_cpu: loop_cpu(),
            machine: machine(),
            has_room: true,
            tokens: limits.burst(),
            refilled: now,
        };
        Load {
            loop_cpu,
            machine,
            limits,
            last: Mutex::new(last),
        }
    }

    /// Whether there is spare CPU for a comparison now.
    pub(super) fn has_room(&self) -> bool {
        self.has_room_at(Instant::now())
    }

    fn has_room_at(&self, now: Instant) -> bool {
        if self.limits.lifted() {
            return true;
        }
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now.saturating_duration_since(last.at);
        if elapsed >= SAMPLE {
            // A lifted limit's clock is not read (the machine's is a file read); an
            // unreadable clock does not stop comparisons.
            let loop_cpu = (self.limits.max_loop_busy < 1.0)
                .then(|| (self.loop_cpu)())
                .flatten();
            let machine = (self.limits.min_machine_idle > 0.0)
                .then(|| (self.machine)())
                .flatten();
            let loop_busy = match (loop_cpu, last.loop_cpu) {
                (Some(now), Some(before)) => {
                    now.saturating_sub(before).as_secs_f64() / elapsed.as_secs_f64()
                }
                _ => 0.0,
            };
            let machine_idle = match (machine, last.machine) {
                (Some(now), Some(before)) if now.total > before.total => {
                    now.idle.saturating_sub(before.idle) as f64 / (now.total - before.total) as f64
                }
                _ => 1.0,
            };
            last.at = now;
            last.loop_cpu = loop_cpu;
            last.machine = machine;
            last.has_room = loop_busy < self.limits.max_loop_busy
                && machine_idle >= self.limits.min_machine_idle;
        }
        if !last.has_room {
            return false;
        }
        let refill = now.saturating_duration_since(last.refilled).as_secs_f64();
        last.tokens = (last.tokens + refill * self.limits.max_per_second).min(self.limits.burst());
        last.refilled = now;
        if last.tokens < 1.0 {
            return false;
        }
        last.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    const LIMITS: Limits = Limits {
        max_loop_busy: 0.5,
        min_machine_idle: 0.2,
        max_per_second: f64::INFINITY,
    };

    /// A loop thread whose CPU time the test sets, in milliseconds.
    fn fake_loop() -> (Arc<AtomicU64>, CpuClock) {
        let millis = Arc::new(AtomicU64::new(0));
        let read = millis.clone();
        let clock: CpuClock =
            Box::new(move || Some(Duration::from_millis(read.load(Ordering::Relaxed))));
        (millis, clock)
    }

    /// A machine whose idle ticks the test sets; 100 ticks pass between readings.
    fn fake_machine() -> (Arc<AtomicU64>, MachineClock) {
        let idle = Arc::new(AtomicU64::new(0));
        let readings = Arc::new(AtomicU64::new(0));
        let read = idle.clone();
        let clock: MachineClock = Box::new(move || {
            let total = readings.fetch_add(100, Ordering::Relaxed);
            Some(MachineTimes {
                idle: read.load(Ordering::Relaxed),
                total,
            })
        });
        (idle, clock)
    }

    #[test]
    fn comparisons_stop_while_the_loop_is_busier_than_the_limit_and_resume_after() {
        let (cpu, clock) = fake_loop();
        let load = Load::new(clock, Box::new(|| None), LIMITS);
        let start = Instant::now();
        assert!(load.has_room_at(start));
        // 45 ms of CPU in 50 ms: 90% busy.
        cpu.store(45, Ordering::Relaxed);
        assert!(!load.has_room_at(start + SAMPLE));
        // Within the sample the verdict stands; the next sample finds it idle.
        assert!(!load.has_room_at(start + SAMPLE + Duration::from_millis(10)));
        assert!(load.has_room_at(start + SAMPLE * 2));
    }

    #[test]
    fn comparisons_stop_while_the_machine_has_no_spare_cpu_and_resume_after() {
        let (idle, clock) = fake_machine();
        let load = Load::new(Box::new(|| None), clock, LIMITS);
        let start = Instant::now();
        // 10 idle ticks of 100: below the 20% asked for.
        idle.store(10, Ordering::Relaxed);
        assert!(!load.has_room_at(start + SAMPLE));
        // 50 of the next 100.
        idle.store(60, Ordering::Relaxed);
        assert!(load.has_room_at(start + SAMPLE * 2));
    }

    #[test]
    fn lifted_limits_never_skip_and_unreadable_clocks_do_not_stop_comparisons() {
        let (cpu, clock) = fake_loop();
        let lifted = Limits {
            max_loop_busy: 1.0,
            min_machine_idle: 0.0,
            max_per_second: f64::INFINITY,
        };
        let load = Load::new(clock, Box::new(|| None), lifted);
        cpu.store(1000, Ordering::Relaxed);
        assert!(load.has_room_at(Instant::now() + SAMPLE));
        let blind = Load::new(Box::new(|| None), Box::new(|| None), LIMITS);
        assert!(blind.has_room_at(Instant::now() + SAMPLE));
    }

    #[test]
    fn comparisons_are_capped_per_second_after_a_short_burst() {
        let capped = Limits {
            max_loop_busy: 1.0,
            min_machine_idle: 0.0,
            max_per_second: 100.0,
        };
        let load = Load::new(Box::new(|| None), Box::new(|| None), capped);
        let start = Instant::now();
        // A burst of a tenth of a second's worth, then nothing until tokens refill.
        let burst = (0..50).filter(|_| load.has_room_at(start)).count();
        assert_eq!(burst, 10);
        assert!(!load.has_room_at(start + Duration::from_millis(5)));
        // 100 a second: one more after 10 ms, and never more than the burst after a pause.
        assert!(load.has_room_at(start + Duration::from_millis(16)));
        let later = start + Duration::from_secs(5);
        assert_eq!((0..50).filter(|_| load.has_room_at(later)).count(), 10);
    }

    #[test]
    fn the_first_line_of_proc_stat_gives_idle_and_total_ticks() {
        let line = "cpu  100 5 50 800 20 3 2 10 7 0";
        let times = MachineTimes::parse(line).expect("parsed");
        assert_eq!(
            times,
            MachineTimes {
                idle: 820,
                total: 990
            }
        );
        assert_eq!(MachineTimes::parse("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(MachineTimes::parse("cpu  1 2 3"), None);
    }
}
