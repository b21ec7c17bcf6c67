//! What a shadow layer counts, and which requests it samples.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters of a [`ShadowLayer`](super::ShadowLayer), shared by every copy of it and
/// of its services. Cheap to clone.
#[derive(Clone, Default)]
pub struct ShadowStats {
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    compared: AtomicU64,
    mismatched: AtomicU64,
    skipped_busy: AtomicU64,
    skipped_too_large: AtomicU64,
    failed: AtomicU64,
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShadowCounts {
    /// Requests whose Rust and Python responses were compared.
    pub compared: u64,
    /// Of those, the ones that differed (each was logged with its differences).
    pub mismatched: u64,
    /// Sampled requests not sent to Python because the loop thread was busier than
    /// `max_loop_busy` or `max_in_flight` comparisons were running (Python is busy or slow).
    pub skipped_busy: u64,
    /// Sampled requests not compared because a body (request or either response) was larger
    /// than the limit, or of unknown length.
    pub skipped_too_large: u64,
    /// Comparisons that could not finish: the Python call failed or timed out, or the
    /// client left before the Rust response's end.
    pub failed: u64,
}

/// What to count.
#[derive(Clone, Copy)]
pub(super) enum Outcome {
    Matched,
    Mismatched,
    Busy,
    TooLarge,
    Failed,
}

impl ShadowStats {
    /// The counters now.
    pub fn counts(&self) -> ShadowCounts {
        let counters = &self.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ShadowCounts {
            compared: read(&counters.compared),
            mismatched: read(&counters.mismatched),
            skipped_busy: read(&counters.skipped_busy),
            skipped_too_large: read(&counters.skipped_too_large),
            failed: read(&counters.failed),
        }
    }

    pub(super) fn count(&self, outcome: Outcome) {
        let counters = &self.counters;
        let add = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Matched => add(&counters.compared),
            Outcome::Mismatched => {
                add(&counters.mismatched);
                add(&counters.compared)
            }
            Outcome::Busy => add(&counters.skipped_busy),
            Outcome::TooLarge => add(&counters.skipped_too_large),
            Outcome::Failed => add(&counters.failed),
        };
    }
}

/// Picks `share` of the requests, spread evenly: with 0.25, every fourth.
pub(super) struct Sampler {
    share: f64,
    seen: AtomicU64,
}

impl Sampler {
    pub(super) fn new(share: f64) -> Self {
        Sampler {
            share: share.clamp(0.0, 1.0),
            seen: AtomicU64::new(0),
        }
    }

    /// Whether this request is one of the share.
    pub(super) fn pick(&self) -> bool {
        let seen = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((seen + 1.0) * self.share).floor() > (seen * self.share).floor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picked(share: f64, requests: usize) -> usize {
        let sampler = Sampler::new(share);
        (0..requests).filter(|_| sampler.pick()).count()
    }

    #[test]
    fn the_share_is_picked_evenly() {
        assert_eq!(picked(1.0, 100), 100);
        assert_eq!(picked(0.0, 100), 0);
        assert_eq!(picked(0.25, 100), 25);
        assert_eq!(picked(0.1, 95), 9);
        assert_eq!(picked(7.0, 10), 10);
        let sampler = Sampler::new(0.5);
        let pattern: Vec<bool> = (0..4).map(|_| sampler.pick()).collect();
        assert_eq!(pattern, [false, true, false, true]);
    }

    #[test]
    fn a_mismatch_is_also_a_comparison() {
        let stats = ShadowStats::default();
        for outcome in [
            Outcome::Matched,
            Outcome::Mismatched,
            Outcome::Busy,
            Outcome::TooLarge,
            Outcome::Failed,
        ] {
            stats.count(outcome);
        }
        let counts = stats.counts();
        assert_eq!(
            (
                counts.compared,
                counts.mismatched,
                counts.skipped_busy,
                counts.skipped_too_large,
                counts.failed
            ),
            (2, 1, 1, 1, 1)
        );
    }
}
