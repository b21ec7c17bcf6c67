//! When the loop thread is too busy for comparisons: its CPU use over the last sample.
//!
//! A bound on comparisons in flight alone does not keep them off the client's way: under a
//! load Python cannot follow, the slots refill as fast as they free up, the loop thread runs
//! comparisons all the time, and that CPU is taken from the Rust route being shadowed (and
//! from the app's own requests). So a sampled request is compared only while the loop thread
//! used less than a share of a CPU over the last [`SAMPLE`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the loop thread's CPU time is read.
const SAMPLE: Duration = Duration::from_millis(50);

/// Reads the loop thread's CPU time so far (`None` when it cannot).
pub(super) type CpuClock = Box<dyn Fn() -> Option<Duration> + Send + Sync>;

pub(super) struct LoopLoad {
    cpu_time: CpuClock,
    limit: f64,
    last: Mutex<Sample>,
}

struct Sample {
    at: Instant,
    cpu: Option<Duration>,
    /// Share of a CPU the loop thread used between the two latest readings.
    busy: f64,
}

impl LoopLoad {
    /// Comparisons start only while the loop thread is busy less than `limit` (a share of
    /// one CPU, 0 to 1; 1 or more never skips).
    pub(super) fn new(cpu_time: CpuClock, limit: f64) -> Self {
        let cpu = cpu_time();
        LoopLoad {
            cpu_time,
            limit,
            last: Mutex::new(Sample {
                at: Instant::now(),
                cpu,
                busy: 0.0,
            }),
        }
    }

    /// Whether the loop thread has room for a comparison now.
    pub(super) fn has_room(&self) -> bool {
        self.has_room_at(Instant::now())
    }

    fn has_room_at(&self, now: Instant) -> bool {
        if self.limit >= 1.0 {
            return true;
        }
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now.saturating_duration_since(last.at);
        if elapsed >= SAMPLE {
            let cpu = (self.cpu_time)();
            if let (Some(cpu), Some(before)) = (cpu, last.cpu) {
                last.busy = cpu.saturating_sub(before).as_secs_f64() / elapsed.as_secs_f64();
            }
            *last = Sample {
                at: now,
                cpu,
                busy: last.busy,
            };
        }
        last.busy < self.limit
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A loop thread whose CPU time the test sets, in milliseconds.
    fn fake_clock() -> (Arc<AtomicU64>, CpuClock) {
        let millis = Arc::new(AtomicU64::new(0));
        let read = millis.clone();
        let clock: CpuClock =
            Box::new(move || Some(Duration::from_millis(read.load(Ordering::Relaxed))));
        (millis, clock)
    }

    #[test]
    fn comparisons_stop_while_the_loop_is_busier_than_the_limit_and_resume_after() {
        let (cpu, clock) = fake_clock();
        let load = LoopLoad::new(clock, 0.5);
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
    fn a_limit_of_one_never_skips_and_an_unreadable_clock_does_not_stop_comparisons() {
        let (cpu, clock) = fake_clock();
        let load = LoopLoad::new(clock, 1.0);
        cpu.store(1000, Ordering::Relaxed);
        assert!(load.has_room_at(Instant::now() + SAMPLE));
        let blind = LoopLoad::new(Box::new(|| None), 0.5);
        assert!(blind.has_room_at(Instant::now() + SAMPLE));
    }
}
