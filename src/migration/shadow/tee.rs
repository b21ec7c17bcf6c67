//! The Rust response body on its way to the client, with a copy kept for the comparison.
//!
//! Frames go to the client as they come; the copy is a list of the same `Bytes` (no data is
//! copied on the client's path), handed to the comparison when the body ends.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame, SizeHint};
use tokio::sync::oneshot;

/// What the client got of the body, for the comparison.
pub(super) enum Captured {
    Whole(Bytes),
    /// Larger than the limit: not compared.
    TooLarge,
}

/// A body passing `inner` through and sending what passed once it has ended. If it never
/// ends (the client went away, the body failed), the sender is dropped unsent.
pub(super) struct TeeBody {
    inner: Body,
    capture: Option<Capture>,
}

struct Capture {
    chunks: Vec<Bytes>,
    size: usize,
    limit: usize,
    done: oneshot::Sender<Captured>,
}

impl TeeBody {
    pub(super) fn new(inner: Body, limit: usize, done: oneshot::Sender<Captured>) -> Self {
        let mut tee = TeeBody {
            inner,
            capture: Some(Capture {
                chunks: Vec::new(),
                size: 0,
                limit,
                done,
            }),
        };
        // An empty body may never be polled: hyper asks `is_end_stream` first.
        tee.finish_if_ended();
        tee
    }

    fn finish_if_ended(&mut self) {
        if self.inner.is_end_stream() {
            self.finish();
        }
    }

    /// Sends what passed, once.
    fn finish(&mut self) {
        if let Some(capture) = self.capture.take() {
            let mut whole = BytesMut::with_capacity(capture.size);
            capture
                .chunks
                .iter()
                .for_each(|chunk| whole.extend_from_slice(chunk));
            let _ = capture.done.send(Captured::Whole(whole.freeze()));
        }
    }
}

impl http_body::Body for TeeBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let (Some(data), Some(capture)) = (frame.data_ref(), self.capture.as_mut()) {
                    capture.size += data.len();
                    capture.chunks.push(data.clone());
                    if capture.size > capture.limit
                        && let Some(capture) = self.capture.take()
                    {
                        let _ = capture.done.send(Captured::TooLarge);
                    }
                }
                // hyper stops polling a body that says it has ended.
                self.finish_if_ended();
            }
            Some(Err(_)) => self.capture = None,
            None => self.finish(),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn through(body: Body, limit: usize) -> (Bytes, Option<Captured>) {
        let (done, captured) = oneshot::channel();
        let sent = TeeBody::new(body, limit, done)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        (sent, captured.await.ok())
    }

    #[tokio::test]
    async fn the_client_gets_the_body_and_the_comparison_a_copy() {
        let chunks = futures_util::stream::iter(["he", "llo"].map(Ok::<_, axum::Error>));
        let (sent, captured) = through(Body::from_stream(chunks), 100).await;
        assert_eq!(sent, "hello");
        assert!(matches!(captured, Some(Captured::Whole(copy)) if copy == "hello"));
        let (sent, captured) = through(Body::from("whole"), 100).await;
        assert_eq!(sent, "whole");
        assert!(matches!(captured, Some(Captured::Whole(copy)) if copy == "whole"));
        let (_, captured) = through(Body::empty(), 100).await;
        assert!(matches!(captured, Some(Captured::Whole(copy)) if copy.is_empty()));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_passed_on_but_not_kept() {
        let (sent, captured) = through(Body::from("x".repeat(10)), 4).await;
        assert_eq!(sent.len(), 10);
        assert!(matches!(captured, Some(Captured::TooLarge)));
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_sends_nothing() {
        let (done, captured) = oneshot::channel();
        let pending =
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, axum::Error>>());
        drop(TeeBody::new(pending, 10, done));
        assert!(captured.await.is_err());
    }
}
