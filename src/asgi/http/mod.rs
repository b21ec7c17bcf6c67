//! The ASGI HTTP bridge. A request travels like this:
//! 1. [`handle`] (Tokio) takes what of the body came with the head, then asks the loop
//!    thread to start the app and awaits the response.
//! 2. [`cycle::start`] (loop thread) builds the scope and runs `app(scope, receive, send)`.
//! 3. `send` builds the response ([`response`]), handed back in one piece when the first
//!    body message is also the last, otherwise with a bounded channel that streams the rest.

mod cycle;
mod response;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use http::{HeaderValue, Response, StatusCode};
use http_body::Body;
use tokio_util::sync::CancellationToken;

use self::cycle::Carried;
use self::response::internal_error;
use super::body::{RequestBody, ResponseBody};
use super::codec::{plain_response, request_head};
use super::context::ResponseState;
use super::cycle::submit_and_await;
use crate::BoxError;
use crate::metrics::{self, PythonRoute};
use crate::python::EventLoop;

/// Runs one HTTP request through the app.
pub(super) async fn handle<B>(
    event_loop: &EventLoop,
    root_path: &Arc<str>,
    response_state: &ResponseState,
    parts: http::request::Parts,
    body: B,
) -> Response<ResponseBody>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let body_failure = BodyFailure::default();
    let body = match RequestBody::prepare(&parts.headers, body) {
        Ok(body) => body,
        Err(err) => {
            body_failure.fail(&err);
            return body_failure.response();
        }
    };
    let head = request_head(parts);
    let root_path = root_path.clone();
    let failure = body_failure.clone();
    let response_state = response_state.clone();
    let queued = metrics::handles().map(|handles| (&handles.queue_wait, Instant::now()));
    let route_extensions = metrics::enabled().then(PythonRoute::unknown);
    let answer = submit_and_await(event_loop, move |py, asked| {
        if let Some((queue_wait, queued)) = queued {
            queue_wait.record(queued.elapsed());
        }
        let carried = Carried {
            state: response_state,
            route_extensions,
        };
        cycle::start(py, head, body, failure, &root_path, carried, asked);
    });
    // A broken or stalled request body is the client's fault: 400 or 408 unless the
    // response has started (the app, which saw a disconnect, may still answer, but too late).
    tokio::select! {
        biased;
        () = body_failure.fired.cancelled() => body_failure.response(),
        response = answer => response.unwrap_or_else(internal_error),
    }
}

/// Why the request body could not be read, as the client's answer tells it: a broken
/// framing or a client gone (400), or a body that stopped arriving (408; the server's
/// body timeout fails it with an `io::Error` of kind `TimedOut`).
#[derive(Clone, Default)]
pub(super) struct BodyFailure {
    fired: CancellationToken,
    stalled: Arc<AtomicBool>,
}

impl BodyFailure {
    /// Records a failed read of the body; fired before the app hears of it, so its end is
    /// never taken for its own mistake.
    fn fail(&self, err: &BoxError) {
        let mut causes =
            std::iter::successors(Some(&**err as &dyn std::error::Error), |err| err.source());
        let stalled = causes.any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
        if stalled {
            tracing::info!("{err}");
        } else {
            tracing::debug!("the request body failed: {err}");
        }
        self.stalled.store(stalled, Ordering::Relaxed);
        self.fired.cancel();
    }

    fn has_failed(&self) -> bool {
        self.fired.is_cancelled()
    }

    /// The answer to a request whose body could not be read; its framing is lost, so the
    /// connection closes.
    fn response(&self) -> Response<ResponseBody> {
        let mut response = if self.stalled.load(Ordering::Relaxed) {
            plain_response(StatusCode::REQUEST_TIMEOUT, "Request Timeout")
        } else {
            plain_response(StatusCode::BAD_REQUEST, "Bad Request")
        };
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}
