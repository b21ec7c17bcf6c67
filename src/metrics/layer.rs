//! [`MetricsLayer`]: counts every request that passes, with its route, backend and status,
//! and times it to the response's last byte.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::MatchedPath;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::handles::{ExchangeLabels, handles};
use super::{Counted, NestedRoute, PythonRoute};

/// A Tower layer that records [`crate::metrics`]' request series.
///
/// Put it on an axum `Router` with `Router::layer`, which wraps each route (and the
/// fallback) on its own, so the route template is known; it records nothing unless
/// [`Metrics::install`](super::Metrics::install) has run. A fallback service (the Python
/// app's, typically) can be wrapped directly instead, `MetricsLayer::new().layer(service)`
/// before `Router::fallback_service`, and the layer put on the router before the fallback:
/// `Router::layer` would box each fallback request's body, response body and future once
/// more, which costs a few percent of a hello-world request.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer {
    backend: Backend,
}

/// Which backend a [`MetricsService`] labels its responses with.
#[derive(Clone, Copy, Debug, Default)]
enum Backend {
    /// `python` when the ASGI bridge marked the response ([`PythonRoute`]), else `rust`.
    #[default]
    FromResponse,
    /// The layer wraps the Python app itself: every response is `python`, marked or not.
    Python,
}

impl MetricsLayer {
    /// The layer; its series are listed in [`crate::metrics`].
    pub fn new() -> Self {
        MetricsLayer::default()
    }

    /// The layer around the Python app's own service, whose responses then need no mark
    /// (see `AsgiService::metered`).
    pub(crate) fn around_python() -> Self {
        MetricsLayer {
            backend: Backend::Python,
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            backend: self.backend,
        }
    }
}

/// The service of a [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    backend: Backend,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S>
where
    S: Service<Request<CountedBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body<Data = Bytes>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let method = method_label(request.method());
        let route = request.extensions().get::<MatchedPath>().cloned();
        let in_flight = Counted::in_flight();
        let request = request.map(|body| CountedBody::new(body, Ending::Request));
        ResponseFuture {
            inner: self.inner.call(request),
            exchange: Some(Exchange {
                started,
                method,
                route,
                backend: self.backend,
                in_flight,
            }),
        }
    }
}

/// What is known of a request before its response.
struct Exchange {
    started: Instant,
    method: &'static str,
    /// The Axum route template, when a route matched.
    route: Option<MatchedPath>,
    backend: Backend,
    /// Until the response body ends, or the future is dropped (the client left first).
    in_flight: Counted,
}

pin_project! {
    /// The future of a [`MetricsService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        exchange: Option<Exchange>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<CountedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let exchange = this.exchange.take().expect("polled after completion");
        Poll::Ready(result.map(|response| {
            let extensions = response.extensions();
            let (backend, route) = match (extensions.get::<PythonRoute>(), exchange.backend) {
                (Some(PythonRoute(Some(route))), _) => ("python", Route::Named(route.clone())),
                // A method of an Axum route may be the Python app's: its template still holds.
                (Some(PythonRoute(None)), _) | (None, Backend::Python) => {
                    ("python", Route::matched_or_unmatched(exchange.route))
                }
                (None, Backend::FromResponse) => match extensions.get::<NestedRoute>() {
                    Some(NestedRoute(route)) if exchange.route.is_none() => {
                        ("rust", Route::Named(route.clone()))
                    }
                    _ => ("rust", Route::matched_or_unmatched(exchange.route)),
                },
            };
            let ending = Ending::Response {
                started: exchange.started,
                route,
                labels: ExchangeLabels {
                    method: exchange.method,
                    backend,
                    status: status_class(response.status()),
                },
                _in_flight: exchange.in_flight,
            };
            response.map(|body| CountedBody::new(body, ending))
        }))
    }
}

/// What a [`CountedBody`] records when it is dropped: after its last byte, or when the
/// client went away.
enum Ending {
    Request,
    Response {
        started: Instant,
        route: Route,
        labels: ExchangeLabels,
        _in_flight: Counted,
    },
}

/// The `route` label, kept as the request had it: no string is copied per request.
enum Route {
    /// The Axum route's template.
    Matched(MatchedPath),
    /// The Python app's route, or a nested service's.
    Named(Arc<str>),
    Unmatched,
}

impl Route {
    fn matched_or_unmatched(matched: Option<MatchedPath>) -> Self {
        matched.map_or(Route::Unmatched, Route::Matched)
    }

    fn as_str(&self) -> &str {
        match self {
            Route::Matched(path) => path.as_str(),
            Route::Named(path) => path,
            Route::Unmatched => "unmatched",
        }
    }
}

pin_project! {
    /// A request or response body whose bytes are counted as they pass.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        bytes: u64,
        ending: Ending,
    }

    impl<B> PinnedDrop for CountedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let Some(handles) = handles() else {
                return;
            };
            match this.ending {
                Ending::Request => handles.request_bytes.increment(*this.bytes),
                Ending::Response {
                    started,
                    route,
                    labels,
                    ..
                } => handles.record_response(route.as_str(), *labels, started.elapsed(), *this.bytes),
            }
        }
    }
}

impl<B> CountedBody<B> {
    fn new(inner: B, ending: Ending) -> Self {
        CountedBody {
            inner,
            bytes: 0,
            ending,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(data)) = frame
            .as_ref()
            .map(|frame| frame.as_ref().map(Frame::data_ref))
        {
            *this.bytes += data.map_or(0, |data| data.len() as u64);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        // Any other method is one label value more per client that sends it: one bucket.
        _ => "other",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_and_method_labels_are_bounded() {
        assert_eq!(status_class(StatusCode::OK), "2xx");
        assert_eq!(status_class(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(status_class(StatusCode::SWITCHING_PROTOCOLS), "1xx");
        assert_eq!(method_label(&Method::GET), "GET");
        let odd = Method::from_bytes(b"PURGE").expect("a token");
        assert_eq!(method_label(&odd), "other");
    }
}
