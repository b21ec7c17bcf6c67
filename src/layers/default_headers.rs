//! Headers every response carries unless the app set its own: `server: rust-asgi-server`
//! (`--server-header`) and the `--header NAME:VALUE` ones, as uvicorn adds them.
//!
//! The layer wraps the whole router, so Rust routes, Python routes, websocket handshakes and
//! the server's own refusals (503, 413) all carry them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderMap, Request, Response};
use pin_project_lite::pin_project;

/// Adds `headers` to every response that has none of the same name; a [`tower::Layer`] for
/// the whole router. A name given several values adds them all.
#[derive(Clone, Debug)]
pub struct DefaultHeadersLayer {
    headers: Arc<HeaderMap>,
}

impl DefaultHeadersLayer {
    /// Adds these headers to responses that lack them.
    pub fn new(headers: HeaderMap) -> Self {
        DefaultHeadersLayer {
            headers: Arc::new(headers),
        }
    }
}

impl<S> tower::Layer<S> for DefaultHeadersLayer {
    type Service = DefaultHeaders<S>;

    fn layer(&self, inner: S) -> DefaultHeaders<S> {
        DefaultHeaders {
            inner,
            headers: self.headers.clone(),
        }
    }
}

/// The service [`DefaultHeadersLayer`] makes.
#[derive(Clone, Debug)]
pub struct DefaultHeaders<S> {
    inner: S,
    headers: Arc<HeaderMap>,
}

impl<S, RequestBody, ResponseBody> tower::Service<Request<RequestBody>> for DefaultHeaders<S>
where
    S: tower::Service<Request<RequestBody>, Response = Response<ResponseBody>>,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(request),
            headers: self.headers.clone(),
        }
    }
}

pin_project! {
    /// The inner response, completed with the default headers it lacks.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        headers: Arc<HeaderMap>,
    }
}

impl<F, ResponseBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        add_missing(response.headers_mut(), this.headers);
        Poll::Ready(Ok(response))
    }
}

fn add_missing(headers: &mut HeaderMap, defaults: &HeaderMap) {
    for name in defaults.keys() {
        if !headers.contains_key(name) {
            for value in defaults.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::HeaderValue;
    use http::header::SERVER as SERVER_NAME;
    use tower::{Layer, ServiceExt};

    use super::*;

    #[tokio::test]
    async fn defaults_fill_in_only_what_the_response_lacks() {
        let mut defaults = HeaderMap::new();
        defaults.insert(SERVER_NAME, HeaderValue::from_static("rust-asgi-server"));
        defaults.append("x-team", HeaderValue::from_static("a"));
        defaults.append("x-team", HeaderValue::from_static("b"));
        defaults.insert("x-frame-options", HeaderValue::from_static("DENY"));
        let service = DefaultHeadersLayer::new(defaults).layer(tower::service_fn(
            |request: Request<()>| async move {
                let mut response = Response::new(());
                if request.uri().path() == "/own" {
                    let headers = response.headers_mut();
                    headers.insert(SERVER_NAME, HeaderValue::from_static("my-app"));
                    headers.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
                }
                Ok::<_, Infallible>(response)
            },
        ));

        let response = service.clone().oneshot(Request::new(())).await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["server"], "rust-asgi-server");
        assert_eq!(headers["x-frame-options"], "DENY");
        let teams: Vec<_> = headers.get_all("x-team").iter().collect();
        assert_eq!(teams, ["a", "b"]);

        let request = Request::get("/own").body(()).unwrap();
        let response = service.oneshot(request).await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["server"], "my-app");
        assert_eq!(headers["x-frame-options"], "SAMEORIGIN");
        assert_eq!(headers.get_all("x-frame-options").iter().count(), 1);
    }
}
