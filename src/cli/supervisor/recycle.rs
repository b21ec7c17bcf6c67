//! Why a worker is replaced, and the two limits that replace a healthy one:
//! `--workers-max-rss` (its resident memory, read from `/proc`) and `--workers-lifetime`
//! (its age, shortened per worker by a random share so that workers started together do
//! not all come due together).

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

/// Why a worker was replaced: the `cause` label of `asgi_worker_restarts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cause {
    /// It died (a signal, or a non-zero exit) while serving.
    Crash,
    /// It exited on its own after `--limit-max-requests`.
    MaxRequests,
    /// Its resident memory went over `--workers-max-rss`.
    MaxRss,
    /// It reached `--workers-lifetime`.
    Lifetime,
    /// The supervisor received SIGHUP: every worker is replaced, one at a time.
    Sighup,
    /// A file watched by `--reload` changed.
    Reload,
}

impl Cause {
    pub(super) const ALL: [Cause; 6] = [
        Cause::Crash,
        Cause::MaxRequests,
        Cause::MaxRss,
        Cause::Lifetime,
        Cause::Sighup,
        Cause::Reload,
    ];

    /// The metric label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Cause::Crash => "crash",
            Cause::MaxRequests => "max_requests",
            Cause::MaxRss => "max_rss",
            Cause::Lifetime => "lifetime",
            Cause::Sighup => "sighup",
            Cause::Reload => "reload",
        }
    }

    /// What the log says.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Cause::Crash => "it died",
            Cause::MaxRequests => "--limit-max-requests",
            Cause::MaxRss => "--workers-max-rss",
            Cause::Lifetime => "--workers-lifetime",
            Cause::Sighup => "SIGHUP",
            Cause::Reload => "a file changed",
        }
    }
}

/// The limits past which a healthy worker is replaced, both off by default, and the time
/// a worker gets to become ready (none by default).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Limits {
    /// `--workers-max-rss`, in bytes.
    pub(super) max_rss: Option<u64>,
    /// `--workers-lifetime`.
    pub(super) lifetime: Option<Duration>,
    /// `--timeout-worker-startup`.
    pub(super) startup: Option<Duration>,
}

impl Limits {
    /// From the flags' units: MiB and seconds.
    pub(crate) fn new(max_rss_mib: Option<u64>, lifetime_seconds: Option<u64>) -> Self {
        Limits {
            max_rss: max_rss_mib.map(|mib| mib.saturating_mul(1 << 20)),
            lifetime: lifetime_seconds.map(Duration::from_secs),
            startup: None,
        }
    }

    /// A worker not ready `startup` after it started is killed.
    pub(crate) fn startup_within(self, startup: Duration) -> Self {
        Limits {
            startup: Some(startup),
            ..self
        }
    }

    /// Whether a healthy worker is ever replaced: then even one worker has a supervisor.
    pub(crate) fn any(&self) -> bool {
        self.max_rss.is_some() || self.lifetime.is_some()
    }

    /// Whether the supervisor has to look at its workers periodically.
    pub(super) fn checked(&self) -> bool {
        self.any() || self.startup.is_some()
    }

    /// Whether a worker started at `started` and not ready yet is late at `now`.
    pub(super) fn late_to_start(&self, started: Instant, now: Instant) -> bool {
        self.startup
            .is_some_and(|startup| now.saturating_duration_since(started) >= startup)
    }

    /// When a worker started at `started` is due for replacement by age, if ever.
    pub(super) fn retire_at(&self, started: Instant) -> Option<Instant> {
        let random = RandomState::new().hash_one(started);
        self.lifetime
            .map(|lifetime| started + jittered(lifetime, random))
    }

    /// Whether `resident` bytes are over `--workers-max-rss`.
    pub(super) fn over_max_rss(&self, resident: u64) -> bool {
        self.max_rss.is_some_and(|limit| resident > limit)
    }
}

/// The resident memory of the process `pid`, in bytes; `None` once it has gone.
pub(super) fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    vm_rss(&status)
}

/// `lifetime` less a share of up to a tenth of it picked by `random`: a worker never
/// outlives the limit, and workers started at the same moment come due apart.
fn jittered(lifetime: Duration, random: u64) -> Duration {
    // The top 53 bits, as a fraction in [0, 1).
    let share = (random >> 11) as f64 / (1u64 << 53) as f64;
    lifetime - (lifetime / 10).mul_f64(share)
}

/// The resident set (`VmRSS`) of a `/proc/PID/status` text, in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    let mut fields = line.split_whitespace();
    let kib: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\trust-asgi-server\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t  912340 kB\nVmHWM:\t   61234 kB\nVmRSS:\t   52480 kB\nRssAnon:\t   30000 kB\n";

    #[test]
    fn the_resident_set_is_read_from_the_status_in_bytes() {
        assert_eq!(vm_rss(STATUS), Some(52480 * 1024));
        // A kernel thread has no VmRSS line; a garbled one reads as unknown.
        assert_eq!(vm_rss("Name:\tkthreadd\nState:\tS (sleeping)\n"), None);
        assert_eq!(vm_rss("VmRSS:\t   lots kB\n"), None);
        assert_eq!(vm_rss("VmRSS:\t   52480 MB\n"), None);
        assert_eq!(vm_rss("VmRSS:\t   52480\n"), None);
        assert_eq!(vm_rss(&format!("VmRSS:\t{} kB\n", u64::MAX)), None);
    }

    #[test]
    fn this_process_has_a_resident_set_and_one_that_does_not_exist_has_none() {
        assert!(resident_bytes(std::process::id()).unwrap() > 1 << 20);
        assert_eq!(resident_bytes(u32::MAX), None);
    }

    #[test]
    fn only_more_than_the_limit_is_over_it() {
        let limits = Limits::new(Some(100), None);
        assert!(!limits.over_max_rss(100 << 20));
        assert!(limits.over_max_rss((100 << 20) + 1));
        assert!(!Limits::default().over_max_rss(u64::MAX));
    }

    #[test]
    fn a_lifetime_is_shortened_by_at_most_a_tenth() {
        let lifetime = Duration::from_secs(100);
        assert_eq!(jittered(lifetime, 0), lifetime);
        assert!(jittered(lifetime, u64::MAX) >= Duration::from_secs(90));
        assert!(jittered(lifetime, u64::MAX) < lifetime);
        assert_eq!(jittered(lifetime, 1 << 63), Duration::from_secs(95));
        assert_eq!(jittered(Duration::ZERO, u64::MAX), Duration::ZERO);
    }

    #[test]
    fn workers_started_together_come_due_at_different_times_within_the_limit() {
        let limits = Limits::new(None, Some(60));
        let started = Instant::now();
        let due: Vec<_> = (0..8).map(|_| limits.retire_at(started).unwrap()).collect();
        assert!(due.iter().all(|&at| at > started + Duration::from_secs(54)));
        assert!(
            due.iter()
                .all(|&at| at <= started + Duration::from_secs(60))
        );
        assert!(due.iter().any(|&at| at != due[0]), "{due:?}");
        assert_eq!(Limits::default().retire_at(started), None);
    }

    #[test]
    fn limits_are_taken_in_mib_and_seconds() {
        let limits = Limits::new(Some(512), Some(3600));
        assert_eq!(limits.max_rss, Some(512 << 20));
        assert_eq!(limits.lifetime, Some(Duration::from_secs(3600)));
        assert!(limits.any());
        assert!(!Limits::default().any());
    }
}
