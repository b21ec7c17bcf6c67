//! How long a connection may go without a request: its first one must arrive within the
//! header-read timeout of accept, each later one within `--timeout-keep-alive` of the
//! previous response.
//!
//! hyper has neither setting. Its HTTP/1 `header_read_timeout` starts only when hyper reads
//! a request head: over `--http auto` that is after the first bytes, which tell HTTP/1 from
//! HTTP/2, have arrived, so a client that never sends a byte was held forever; HTTP/2 has
//! no such timeout at all. Between requests that timeout also runs, but as one clock for
//! the wait and the transfer of the next head (the slow-loris guard, much longer); HTTP/2's
//! keep-alive is a ping that keeps an idle connection open rather than closing it. So each
//! connection counts its requests in flight: it is dropped if none has arrived by the
//! header-read deadline, and shut down gracefully once none has been in flight for the
//! keep-alive timeout since its last response, as uvicorn does.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The least time between two looks of the watcher while requests are in flight, so that a
/// zero timeout does not make it spin.
const BUSY_RECHECK: Duration = Duration::from_millis(100);

/// No response has been finished on the connection yet.
const NOT_YET: u64 = u64::MAX;

/// One connection's requests in flight, and when the last one finished.
pub(crate) struct KeepAlive {
    timeout: Duration,
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the end of the latest response, or [`NOT_YET`].
    last_response_ms: AtomicU64,
}

impl KeepAlive {
    pub(super) fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(KeepAlive {
            timeout,
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_response_ms: AtomicU64::new(NOT_YET),
        })
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub(super) fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves once the connection has been idle for the timeout after a response.
    pub(super) async fn expired(&self) {
        loop {
            let check_at = match self.idle_since() {
                Some(since) => since + self.timeout,
                None => Instant::now() + self.timeout.max(BUSY_RECHECK),
            };
            if check_at <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(check_at).await;
        }
    }

    /// Resolves when `first_head` fires if no request has arrived by then.
    pub(super) async fn no_request_by(&self, first_head: Pin<&mut Sleep>) {
        first_head.await;
        let answered = self.last_response_ms.load(Ordering::Acquire) != NOT_YET;
        if answered || self.in_flight.load(Ordering::Acquire) != 0 {
            std::future::pending().await
        }
    }

    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) != 0 {
            return None;
        }
        match self.last_response_ms.load(Ordering::Acquire) {
            NOT_YET => None,
            ms => Some(self.opened + Duration::from_millis(ms)),
        }
    }
}

/// A request in flight on a [`KeepAlive`] connection; its drop ends the request.
pub(crate) struct InFlight(Arc<KeepAlive>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let keep_alive = &self.0;
        let ms = u64::try_from(keep_alive.opened.elapsed().as_millis()).unwrap_or(NOT_YET - 1);
        // Stamped before the count drops, so a watcher that sees no request in flight also
        // sees when the last one ended.
        keep_alive.last_response_ms.store(ms, Ordering::Release);
        keep_alive.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// Whether `expired` resolves within `wait` (paused time: no real waiting).
    async fn expires_within(keep_alive: &KeepAlive, wait: Duration) -> bool {
        tokio::time::timeout(wait, keep_alive.expired())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_expires_the_timeout_after_its_last_response() {
        let keep_alive = KeepAlive::new(TIMEOUT);
        drop(keep_alive.request());
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(keep_alive.request());
        assert!(!expires_within(&keep_alive, Duration::from_millis(4900)).await);
        assert!(expires_within(&keep_alive, Duration::from_millis(200)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_keeps_the_connection_however_long_it_takes() {
        let keep_alive = KeepAlive::new(TIMEOUT);
        drop(keep_alive.request());
        let slow = keep_alive.request();
        assert!(!expires_within(&keep_alive, TIMEOUT * 10).await);
        drop(slow);
        assert!(!expires_within(&keep_alive, TIMEOUT - BUSY_RECHECK * 2).await);
        assert!(expires_within(&keep_alive, BUSY_RECHECK * 3).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_response_yet_is_not_timed() {
        let keep_alive = KeepAlive::new(TIMEOUT);
        assert!(!expires_within(&keep_alive, TIMEOUT * 10).await);
    }

    /// Whether `no_request_by` resolves within `wait` for a first head due in `TIMEOUT`.
    async fn silent_within(keep_alive: &KeepAlive, wait: Duration) -> bool {
        let first_head = std::pin::pin!(tokio::time::sleep(TIMEOUT));
        tokio::time::timeout(wait, keep_alive.no_request_by(first_head))
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_by_the_deadline_is_silent() {
        let keep_alive = KeepAlive::new(TIMEOUT);
        assert!(!silent_within(&keep_alive, TIMEOUT - BUSY_RECHECK).await);
        assert!(silent_within(&keep_alive, TIMEOUT * 2).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_or_answered_keeps_a_connection_from_being_silent() {
        let keep_alive = KeepAlive::new(TIMEOUT);
        let request = keep_alive.request();
        assert!(!silent_within(&keep_alive, TIMEOUT * 2).await);
        drop(request);
        assert!(!silent_within(&keep_alive, TIMEOUT * 2).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_timeout_expires_as_soon_as_the_response_is_done() {
        let keep_alive = KeepAlive::new(Duration::ZERO);
        let request = keep_alive.request();
        assert!(!expires_within(&keep_alive, Duration::from_secs(1)).await);
        drop(request);
        assert!(expires_within(&keep_alive, BUSY_RECHECK).await);
    }
}
