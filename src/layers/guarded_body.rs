//! A response body that holds something until hyper drops it: a concurrency permit, a
//! connection's count of requests in flight. The request ends when its body is done, not
//! when the handler returns.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// `inner`, with `guard` dropped together with it.
    pub(crate) struct GuardedBody<B, G> {
        #[pin]
        inner: B,
        guard: G,
    }
}

impl<B, G> GuardedBody<B, G> {
    pub(crate) fn new(inner: B, guard: G) -> Self {
        GuardedBody { inner, guard }
    }
}

impl<B: Body, G> Body for GuardedBody<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
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
    use std::sync::Arc;

    use http_body_util::{BodyExt, Full};

    use super::*;

    #[tokio::test]
    async fn the_guard_lives_as_long_as_the_body() {
        let guard = Arc::new(());
        let body = GuardedBody::new(Full::new(bytes::Bytes::from_static(b"hi")), guard.clone());
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(Arc::strong_count(&guard), 2);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hi");
        assert_eq!(Arc::strong_count(&guard), 1);
    }
}
