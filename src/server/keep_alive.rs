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
//! keep-alive timeout since its last response, as uvicorn does. A next head still arriving
//! then is cut off with it (hyper counts a connection busy only once a whole head is read),
//! so hyper's own timer, which costs a timer set and cleared per request, is set only when
//! the keep-alive timeout is the longer one (`Protocols::new`).
//!
//! Draining ends keep-alive without closing a connection under a client that is sending on
//! it: responses given meanwhile say `connection: close` (HTTP/1), and a connection is shut
//! down gracefully only once a request has arrived since the drain began or nothing has been
//! in flight on it for [`DRAIN_GRACE`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, Version};
use tokio::time::{Instant, Sleep};

use crate::signal::Signal;

/// The least time between two looks of the watcher while requests are in flight, so that a
/// zero timeout does not make it spin.
const BUSY_RECHECK: Duration = Duration::from_millis(100);

/// No response has been finished on the connection yet.
const NOT_YET: u64 = u64::MAX;

/// How long a draining connection with nothing in flight stays open. A client may be
/// sending a request at that very moment (the next one on a kept-alive connection, the first
/// on a connection accepted just before the drain): closing the connection under it would
/// fail a request the server never saw, which clients do not retry on their own. A client
/// that keeps sending gets its next answer with `connection: close` well within it.
pub(super) const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// One connection's requests in flight, and when the last one finished.
pub(crate) struct KeepAlive {
    timeout: Duration,
    opened: Instant,
    in_flight: AtomicUsize,
    /// Requests started, to tell that one arrived while draining.
    requests: AtomicU64,
    /// Milliseconds from `opened` to the end of the latest response, or [`NOT_YET`].
    last_response_ms: AtomicU64,
}

impl KeepAlive {
    pub(super) fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(KeepAlive {
            timeout,
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_response_ms: AtomicU64::new(NOT_YET),
        })
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub(super) fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves when the connection is to be shut down gracefully: once it has been idle for
    /// the timeout after a response, or once `draining` is cancelled and [`drained`](Self::drained).
    pub(super) async fn finished(&self, draining: &Signal) {
        tokio::select! {
            () = self.expired() => {}
            () = self.drained(draining) => {}
        }
    }

    /// After `draining` is cancelled: resolves once a request has arrived since (HTTP/1
    /// answers it with `connection: close` and then closes; HTTP/2 gets its GOAWAY with it
    /// in flight), or once nothing has been in flight for [`DRAIN_GRACE`] (or the
    /// keep-alive timeout, when shorter) since the drain began or the last response.
    async fn drained(&self, draining: &Signal) {
        draining.cancelled().await;
        let began = Instant::now();
        let requests = self.requests.load(Ordering::Acquire);
        let grace = DRAIN_GRACE.min(self.timeout);
        let mut wait = std::pin::pin!(tokio::time::sleep_until(began + grace));
        std::future::poll_fn(|cx| {
            // Looked at whenever the connection's task wakes, as a request arriving wakes it.
            if self.requests.load(Ordering::Acquire) != requests {
                return Poll::Ready(());
            }
            while wait.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                let check_at = match self.quiet_since(began) {
                    Some(since) => since + grace,
                    None => now + grace.max(BUSY_RECHECK),
                };
                if check_at <= now {
                    return Poll::Ready(());
                }
                wait.as_mut().reset(check_at);
            }
            Poll::Pending
        })
        .await;
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
    pub(super) async fn no_request_by(&self, mut first_head: Pin<&mut Sleep>) {
        std::future::poll_fn(|cx| {
            // Once a request has arrived this never resolves: the timer is no longer
            // looked at (no waker to register again on every wake of the connection).
            if self.requests.load(Ordering::Acquire) != 0 {
                return Poll::Pending;
            }
            first_head.as_mut().poll(cx)
        })
        .await;
    }

    /// Since when nothing has been in flight, counting from `floor` at the earliest; `None`
    /// while a request is.
    fn quiet_since(&self, floor: Instant) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) != 0 {
            return None;
        }
        Some(self.idle_since().map_or(floor, |since| since.max(floor)))
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

/// Ends keep-alive with a response given while the server drains: an HTTP/1 client learns
/// from `connection: close` not to send on the connection again, and hyper closes it after
/// the response. (HTTP/2 has GOAWAY; a protocol switch keeps its `connection: upgrade`.)
pub(super) fn close_when_draining<B>(
    response: &mut Response<B>,
    version: Version,
    draining: &Signal,
) {
    let http1 = matches!(version, Version::HTTP_10 | Version::HTTP_11);
    if http1 && draining.is_cancelled() && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
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

    /// Whether `finished` resolves within `wait` on a connection that drains.
    async fn finishes_within(finished: Pin<&mut impl Future<Output = ()>>, wait: Duration) -> bool {
        tokio::time::timeout(wait, finished).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_draining_connection_with_nothing_in_flight_finishes_after_the_grace() {
        let keep_alive = KeepAlive::new(TIMEOUT);
        drop(keep_alive.request());
        let draining = Signal::new();
        let mut finished = std::pin::pin!(keep_alive.finished(&draining));
        assert!(!finishes_within(finished.as_mut(), TIMEOUT / 2).await);
        draining.cancel();
        // Counted from the drain, not from the response before it.
        assert!(!finishes_within(finished.as_mut(), DRAIN_GRACE - BUSY_RECHECK).await);
        assert!(finishes_within(finished.as_mut(), BUSY_RECHECK * 2).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_draining_connection_not_used_yet_waits_the_grace_for_its_first_request() {
        let keep_alive = KeepAlive::new(TIMEOUT);
        let draining = Signal::new();
        draining.cancel();
        let mut finished = std::pin::pin!(keep_alive.finished(&draining));
        assert!(!finishes_within(finished.as_mut(), DRAIN_GRACE / 2).await);
        // The request arrives: the connection is asked to finish with it in flight.
        let _request = keep_alive.request();
        assert!(finishes_within(finished.as_mut(), Duration::ZERO).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_at_the_drain_gets_the_grace_after_its_response() {
        let keep_alive = KeepAlive::new(TIMEOUT);
        let request = keep_alive.request();
        let draining = Signal::new();
        draining.cancel();
        let mut finished = std::pin::pin!(keep_alive.finished(&draining));
        assert!(!finishes_within(finished.as_mut(), TIMEOUT * 10).await);
        drop(request);
        let ended = Instant::now();
        finished.await;
        let waited = ended.elapsed();
        assert!(
            waited >= DRAIN_GRACE && waited <= DRAIN_GRACE * 2,
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_timeout_shorter_than_the_grace_bounds_the_drain() {
        let short = Duration::from_millis(200);
        let keep_alive = KeepAlive::new(short);
        let draining = Signal::new();
        draining.cancel();
        let mut finished = std::pin::pin!(keep_alive.finished(&draining));
        assert!(finishes_within(finished.as_mut(), short + Duration::from_millis(1)).await);
    }

    #[test]
    fn http1_responses_given_while_draining_say_connection_close() {
        let draining = Signal::new();
        let closes = |version, status| {
            let mut response = Response::builder().status(status).body(()).unwrap();
            close_when_draining(&mut response, version, &draining);
            response.headers().get(http::header::CONNECTION).cloned()
        };
        assert_eq!(closes(Version::HTTP_11, StatusCode::OK), None);
        draining.cancel();
        assert_eq!(closes(Version::HTTP_11, StatusCode::OK).unwrap(), "close");
        assert_eq!(
            closes(Version::HTTP_10, StatusCode::NOT_FOUND).unwrap(),
            "close"
        );
        assert_eq!(closes(Version::HTTP_2, StatusCode::OK), None);
        assert_eq!(
            closes(Version::HTTP_11, StatusCode::SWITCHING_PROTOCOLS),
            None
        );
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
