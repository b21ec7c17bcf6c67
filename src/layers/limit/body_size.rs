//! `--limit-request-body`: request bodies larger than the limit get 413.
//!
//! A body that declares its length (`Content-Length`) is refused before the app is called, so
//! an oversized upload costs no Python work and is never read. A body of unknown length
//! (chunked) is counted as it streams: the app receives at most the limit, then reading fails
//! (an ASGI app gets `http.disconnect`), and whatever the app answers after that becomes 413.
//! An app that answered before reading that far keeps its answer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::{Buf, Bytes};
use http::{Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;

/// Refuses request bodies over `max` bytes; a [`tower::Layer`] for the whole router.
#[derive(Clone, Copy, Debug)]
pub struct BodySizeLimitLayer {
    max: u64,
}

impl BodySizeLimitLayer {
    /// Request bodies of at most `max` bytes; larger ones are answered 413.
    pub fn new(max: u64) -> Self {
        BodySizeLimitLayer { max }
    }
}

impl<S> tower::Layer<S> for BodySizeLimitLayer {
    type Service = BodySizeLimit<S>;

    fn layer(&self, inner: S) -> BodySizeLimit<S> {
        BodySizeLimit {
            inner,
            max: self.max,
        }
    }
}

/// The service [`BodySizeLimitLayer`] makes.
#[derive(Clone, Debug)]
pub struct BodySizeLimit<S> {
    inner: S,
    max: u64,
}

impl<S, RequestBody, ResponseBody> tower::Service<Request<RequestBody>> for BodySizeLimit<S>
where
    S: tower::Service<Request<LimitedBody<RequestBody>>, Response = Response<ResponseBody>>,
    RequestBody: http_body::Body,
    ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResponseBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let version = request.version();
        // For hyper's bodies the lower bound is the declared `Content-Length`.
        if request.body().size_hint().lower() > self.max {
            return ResponseFuture::Refused {
                response: Some(super::refusal(StatusCode::PAYLOAD_TOO_LARGE, version)),
            };
        }
        let exceeded = Arc::new(AtomicBool::new(false));
        let request = request.map(|body| LimitedBody {
            inner: body,
            remaining: self.max,
            limit: self.max,
            exceeded: exceeded.clone(),
        });
        ResponseFuture::Admitted {
            inner: self.inner.call(request),
            exceeded,
            version,
        }
    }
}

pin_project! {
    /// The app's response, or 413 if the body turned out too large while it ran.
    #[project = ResponseFutureProjection]
    pub enum ResponseFuture<F> {
        Admitted {
            #[pin]
            inner: F,
            exceeded: Arc<AtomicBool>,
            version: Version,
        },
        Refused {
            response: Option<Response<Body>>,
        },
    }
}

impl<F, ResponseBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, E>>,
    ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResponseBody::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProjection::Admitted {
                inner,
                exceeded,
                version,
            } => {
                let response = ready!(inner.poll(cx))?;
                Poll::Ready(Ok(if exceeded.load(Ordering::Acquire) {
                    super::refusal(StatusCode::PAYLOAD_TOO_LARGE, *version)
                } else {
                    response.map(Body::new)
                }))
            }
            ResponseFutureProjection::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}

pin_project! {
    /// A request body that fails with [`BodyTooLarge`] rather than yield more than the limit.
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        limit: u64,
        exceeded: Arc<AtomicBool>,
    }
}

impl<B> http_body::Body for LimitedBody<B>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        let too_large = || Box::new(BodyTooLarge { limit: *this.limit }) as BoxError;
        if this.exceeded.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(too_large())));
        }
        let frame = match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            let size = data.remaining() as u64;
            if size > *this.remaining {
                this.exceeded.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(too_large())));
            }
            *this.remaining -= size;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a [`LimitedBody`] ends with when the client sends more than the limit.
#[derive(Debug)]
pub(crate) struct BodyTooLarge {
    limit: u64,
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body larger than {} bytes", self.limit)
    }
}

impl std::error::Error for BodyTooLarge {}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Full, StreamBody};
    use tower::{Layer, ServiceExt};

    use super::*;

    /// Reads the whole body; answers 200 with its length, or 400 when reading failed (as the
    /// ASGI bridge does when a buffered body cannot be read).
    fn reader() -> impl tower::Service<
        Request<LimitedBody<Body>>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future + Send,
    > + Clone {
        tower::service_fn(|request: Request<LimitedBody<Body>>| async move {
            Ok::<_, Infallible>(match request.into_body().collect().await {
                Ok(body) => Response::new(Body::from(body.to_bytes().len().to_string())),
                Err(_) => {
                    let mut response = Response::new(Body::empty());
                    *response.status_mut() = StatusCode::BAD_REQUEST;
                    response
                }
            })
        })
    }

    fn chunked(chunks: &[&'static str]) -> Body {
        let frames = chunks
            .iter()
            .map(|chunk| Ok::<_, Infallible>(Frame::data(Bytes::from_static(chunk.as_bytes()))))
            .collect::<Vec<_>>();
        Body::new(StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_without_calling_the_app() {
        let called = Arc::new(AtomicBool::new(false));
        let seen = called.clone();
        let service = BodySizeLimitLayer::new(4).layer(tower::service_fn(
            move |_: Request<LimitedBody<Full<Bytes>>>| {
                seen.store(true, Ordering::SeqCst);
                async { Ok::<_, Infallible>(Response::new(Body::empty())) }
            },
        ));
        let request = Request::post("/").body(Full::from("12345")).unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()["connection"], "close");
        assert!(!called.load(Ordering::SeqCst));

        let request = Request::post("/").body(Full::from("1234")).unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(called.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_streamed_body_is_cut_at_the_limit_and_the_answer_becomes_413() {
        let service = BodySizeLimitLayer::new(8).layer(reader());
        let request = Request::post("/")
            .body(chunked(&["1234", "5678", "9"]))
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "Payload Too Large");

        let request = Request::post("/").body(chunked(&["1234", "5678"])).unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "8"
        );
    }

    #[tokio::test]
    async fn the_body_never_yields_more_than_the_limit() {
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = LimitedBody {
            inner: chunked(&["12", "345", "6"]),
            remaining: 5,
            limit: 5,
            exceeded: exceeded.clone(),
        };
        let mut body = std::pin::pin!(body);
        let mut yielded = 0;
        let error = loop {
            match body.frame().await.unwrap() {
                Ok(frame) => yielded += frame.into_data().unwrap().len(),
                Err(err) => break err,
            }
        };
        assert_eq!(yielded, 5);
        assert_eq!(error.to_string(), "request body larger than 5 bytes");
        assert!(exceeded.load(Ordering::SeqCst));
        assert!(body.frame().await.unwrap().is_err());
    }
}
