//! Accept errors come in bursts: out of file descriptors, every retry of the accept loop
//! fails the same way until a connection closes. One warning a second, with how many
//! failures it stands for, says as much as twenty.

use std::io;
use std::time::{Duration, Instant};

/// The least time between two warnings of one listener.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// A listener's failed accepts, and when it last logged about them.
#[derive(Default)]
pub(super) struct AcceptErrors {
    last_logged: Option<Instant>,
    /// Failures since the last line, not yet logged.
    unlogged: u64,
}

impl AcceptErrors {
    /// Counts a failed accept; logs it unless a line went out less than a second ago.
    pub(super) fn failed(&mut self, err: &io::Error) {
        match self.count_failure(Instant::now()) {
            Some(0) => tracing::warn!("accept failed: {err}"),
            Some(more) => {
                tracing::warn!("accept failed: {err} ({more} more times since the last warning)")
            }
            None => {}
        }
    }

    /// After failures that were not logged yet, says that accepting works again, unless a
    /// line went out less than a second ago (the next one will count them then).
    pub(super) fn accepted(&mut self) {
        if let Some(failures) = self.count_success(Instant::now()) {
            tracing::info!(
                "accepting connections again ({failures} more failed accepts since the last warning)"
            );
        }
    }

    /// How many earlier failures a warning due `now` must report; `None` if none is due.
    fn count_failure(&mut self, now: Instant) -> Option<u64> {
        let report = self.report_due(now);
        if report.is_none() {
            self.unlogged += 1;
        }
        report
    }

    /// How many failures a line due `now` must report after an accept; `None` if none is.
    fn count_success(&mut self, now: Instant) -> Option<u64> {
        if self.unlogged == 0 {
            return None;
        }
        self.report_due(now)
    }

    /// The failures not logged yet, if a line may go out `now`; it is taken to have gone.
    fn report_due(&mut self, now: Instant) -> Option<u64> {
        let quiet = self
            .last_logged
            .is_none_or(|logged| now.duration_since(logged) >= LOG_EVERY);
        if !quiet {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_failures_is_logged_once_a_second_with_its_count() {
        let mut errors = AcceptErrors::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(errors.count_failure(at(0)), Some(0));
        let logged: Vec<_> = (1..=40)
            .filter_map(|step| errors.count_failure(at(step * 50)))
            .collect();
        // Failures every 50 ms for two seconds: one warning a second, each covering the 19
        // failures that went unlogged before it.
        assert_eq!(logged, [19, 19]);
    }

    #[test]
    fn accepts_between_failures_log_no_more_than_the_failures_alone() {
        let mut errors = AcceptErrors::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(errors.count_failure(at(0)), Some(0));
        // Descriptors freed one at a time: accepted, failed, accepted, failed...
        let mut lines = 0;
        for step in 1..=20 {
            lines += usize::from(errors.count_success(at(step * 100)).is_some());
            lines += usize::from(errors.count_failure(at(step * 100 + 50)).is_some());
        }
        assert_eq!(lines, 2);
        // Once accepting works for good, the failures not logged yet are told.
        assert_eq!(errors.count_success(at(5000)), Some(1));
        assert_eq!(errors.count_success(at(5100)), None);
    }
}
