//! `--limit-concurrency`: past N requests in flight, answer 503 at once.
//!
//! Unlike tower's `ConcurrencyLimit`, which queues requests until a slot frees up, this rejects
//! them as uvicorn does: under overload a fast 503 lets a load balancer retry elsewhere, where
//! a queue would only add latency. A request counts from the moment it arrives until its
//! response body has been sent (or the client went away); a websocket counts while its
//! handshake is answered, not for the whole session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::BoxError;
use crate::layers::guarded_body::GuardedBody;

/// Admits at most `max` requests at a time across every service it makes; a [`tower::Layer`]
/// for the whole router.
#[derive(Clone, Debug)]
pub struct InFlightLimitLayer {
    permits: Arc<Semaphore>,
}

impl InFlightLimitLayer {
    /// At most `max` requests in flight; the rest are answered 503 at once.
    pub fn new(max: usize) -> Self {
        InFlightLimitLayer {
            permits: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
        }
    }
}

impl<S> tower::Layer<S> for InFlightLimitLayer {
    type Service = InFlightLimit<S>;

    fn layer(&self, inner: S) -> InFlightLimit<S> {
        InFlightLimit {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// The service [`InFlightLimitLayer`] makes.
#[derive(Clone, Debug)]
pub struct InFlightLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, RequestBody, ResponseBody> tower::Service<Request<RequestBody>> for InFlightLimit<S>
where
    S: tower::Service<Request<RequestBody>, Response = Response<ResponseBody>>,
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
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => ResponseFuture::Admitted {
                inner: self.inner.call(request),
                permit: Some(permit),
            },
            Err(_) => {
                tracing::warn!("Exceeded concurrency limit.");
                ResponseFuture::Refused {
                    response: Some(super::refusal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        request.version(),
                    )),
                }
            }
        }
    }
}

pin_project! {
    /// The response of an admitted request, which keeps its slot until the body is sent, or
    /// the 503 of a refused one.
    #[project = ResponseFutureProjection]
    pub enum ResponseFuture<F> {
        Admitted {
            #[pin]
            inner: F,
            permit: Option<OwnedSemaphorePermit>,
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
            ResponseFutureProjection::Admitted { inner, permit } => {
                let response = ready!(inner.poll(cx))?;
                let permit = permit.take().expect("polled after completion");
                Poll::Ready(Ok(
                    response.map(|body| Body::new(GuardedBody::new(body, permit)))
                ))
            }
            ResponseFutureProjection::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    #[tokio::test]
    async fn requests_past_the_limit_get_503_until_a_response_body_is_done() {
        let mut service =
            InFlightLimitLayer::new(1).layer(tower::service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(Body::from("done")))
            }));
        let get = || Request::get("/").body(()).unwrap();

        // Called but not finished: the one slot is taken.
        let first = service.ready().await.unwrap().call(get());
        let refused = service.clone().oneshot(get()).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["connection"], "close");
        assert_eq!(refused.headers()["content-length"], "19");
        let body = refused.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "Service Unavailable");

        // Answered, but its body not yet sent: still taken.
        let first = first.await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let refused = service.clone().oneshot(get()).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);

        assert_eq!(
            first.into_body().collect().await.unwrap().to_bytes(),
            "done"
        );
        let admitted = service.oneshot(get()).await.unwrap();
        assert_eq!(admitted.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn http2_refusals_carry_no_connection_header() {
        let service = InFlightLimitLayer::new(0).layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }));
        let request = Request::get("/")
            .version(http::Version::HTTP_2)
            .body(())
            .unwrap();
        let refused = service.oneshot(request).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.headers().get("connection").is_none());
    }
}
