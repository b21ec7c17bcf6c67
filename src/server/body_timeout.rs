//! `--timeout-request-body`: a request body that makes no progress for that long fails, so
//! a client that announces a body and stops sending it is not waited for forever.
//!
//! The clock runs only while the body is being waited for: it starts when a read of it
//! finds nothing, and every frame stops it. A body nobody reads does not time out; hyper
//! closes its connection after the response instead of reading the rest.
//!
//! The body fails with an `io::Error` of kind `TimedOut` (carrying a [`RequestBodyTimeout`]),
//! which whoever reads it finds in the error's source chain (behind axum's `Body`, which
//! wraps it), to tell a client that stalled from one that broke the framing or went away:
//! the ASGI bridge answers 408 if no response has started.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::BoxError;

/// What a timeout too large to be a deadline means: never, as for `tokio::time::sleep`.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The error of a request body that made no progress for `--timeout-request-body`.
#[derive(Debug)]
pub(crate) struct RequestBodyTimeout {
    after: Duration,
}

impl fmt::Display for RequestBodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the client sent no request body for {:?} (--timeout-request-body)",
            self.after
        )
    }
}

impl std::error::Error for RequestBodyTimeout {}

pin_project! {
    /// A request body that fails with [`RequestBodyTimeout`] when it makes no progress.
    pub(super) struct TimedBody<B> {
        #[pin]
        inner: B,
        timeout: Duration,
        // When the wait under way times out; `None` while there is none.
        deadline: Option<Instant>,
        // Armed at the first wait and moved on only when it fires early, so that a body
        // streaming in registers no timer per frame, and one that arrives with its head none.
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<B> TimedBody<B> {
    pub(super) fn new(inner: B, timeout: Duration) -> Self {
        TimedBody {
            inner,
            timeout,
            deadline: None,
            timer: None,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.deadline = None;
            if frame.is_none() {
                this.timer.set(None);
            }
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let timeout = *this.timeout;
        let deadline = *this.deadline.get_or_insert_with(|| deadline_after(timeout));
        let mut timer = armed(this.timer, deadline);
        loop {
            ready!(timer.as_mut().poll(cx));
            if timer.deadline() >= deadline {
                *this.deadline = None;
                let timed_out = RequestBodyTimeout { after: timeout };
                let err = io::Error::new(io::ErrorKind::TimedOut, timed_out);
                return Poll::Ready(Some(Err(err.into())));
            }
            // Armed for an earlier wait, which the client ended in time.
            timer.as_mut().reset(deadline);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + FAR_FUTURE)
}

/// The timer, set for `deadline` if it was not armed yet.
fn armed(mut timer: Pin<&mut Option<Sleep>>, deadline: Instant) -> Pin<&mut Sleep> {
    if timer.is_none() {
        timer.set(Some(tokio::time::sleep_until(deadline)));
    }
    timer.as_pin_mut().expect("the timer was just armed")
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A body of `frames` one-byte frames, each `gap` after the previous one.
    fn trickle(
        frames: usize,
        gap: Duration,
    ) -> impl Body<Data = Bytes, Error = Infallible> + Unpin {
        let stream = futures_util::stream::iter(0..frames).then(move |_| async move {
            tokio::time::sleep(gap).await;
            Ok(Frame::data(Bytes::from_static(b"x")))
        });
        StreamBody::new(Box::pin(stream))
    }

    fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
        std::iter::successors(Some(err), |err| err.source()).any(|err| {
            err.downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_coming_never_times_out() {
        let started = Instant::now();
        let body = TimedBody::new(trickle(5, TIMEOUT - Duration::from_secs(1)), TIMEOUT);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"xxxxx");
        assert!(started.elapsed() > TIMEOUT * 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_with_a_timeout_found_behind_axums_body() {
        let started = Instant::now();
        let body = axum::body::Body::new(TimedBody::new(trickle(2, TIMEOUT * 2), TIMEOUT));
        let err = body.collect().await.unwrap_err();
        assert!(is_timeout(&err), "{err}");
        assert_eq!(started.elapsed(), TIMEOUT);
        assert!(err.to_string().contains("--timeout-request-body"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_runs_only_while_the_body_is_waited_for() {
        let mut body = std::pin::pin!(TimedBody::new(trickle(2, TIMEOUT / 2), TIMEOUT));
        // Nobody reads for three timeouts; then each frame comes half a timeout after the
        // wait for it began.
        tokio::time::sleep(TIMEOUT * 3).await;
        let started = Instant::now();
        assert!(body.as_mut().frame().await.unwrap().is_ok());
        assert!(body.as_mut().frame().await.unwrap().is_ok());
        assert!(body.frame().await.is_none());
        assert_eq!(started.elapsed(), TIMEOUT);
    }
}
