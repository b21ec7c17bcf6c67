//! The ASGI HTTP bridge. A request travels like this:
//! 1. [`handle`] (Tokio) takes what of the body came with the head, then asks the loop
//!    thread to start the app and awaits the response.
//! 2. [`cycle::start`] (loop thread) builds the scope and runs `app(scope, receive, send)`.
//! 3. `send` builds the response ([`response`]), handed back in one piece when the first
//!    body message is also the last, otherwise with a bounded channel that streams the rest.

mod body_failure;
mod cycle;
mod response;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::Either;
use http::Response;
use http_body::Body;

use self::body_failure::BodyFailure;
use self::cycle::Carried;
use self::response::internal_error;
use super::body::{RequestBody, ResponseBody};
use super::codec::request_head;
use super::context::ResponseState;
use super::cycle::submit_and_await;
use crate::BoxError;
use crate::metrics;
use crate::python::EventLoop;

/// Runs one HTTP request through the app: the body is prepared and the app's start queued
/// now, and the future answers with the response.
pub(super) fn handle<B>(
    event_loop: &EventLoop,
    root_path: &Arc<str>,
    response_state: &ResponseState,
    parts: http::request::Parts,
    body: B,
) -> impl Future<Output = Response<ResponseBody>> + Send + 'static
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let body = match RequestBody::prepare(&parts.headers, body) {
        Ok(body) => body,
        Err(err) => {
            let body_failure = BodyFailure::watched();
            body_failure.fail(&err);
            return Either::Left(std::future::ready(body_failure.response()));
        }
    };
    let body_failure = match body {
        RequestBody::Buffered(_) => BodyFailure::impossible(),
        RequestBody::Partial(..) | RequestBody::Streaming(_) => BodyFailure::watched(),
    };
    let head = request_head(parts);
    let root_path = root_path.clone();
    let failure = body_failure.clone();
    let response_state = response_state.clone();
    let queued = metrics::handles().map(|handles| (&handles.queue_wait, Instant::now()));
    let wants_route = metrics::enabled();
    let answer = submit_and_await(event_loop, move |py, asked| {
        if let Some((queue_wait, queued)) = queued {
            queue_wait.record(queued.elapsed());
        }
        let carried = Carried {
            state: response_state,
            wants_route,
        };
        cycle::start(py, head, body, failure, &root_path, carried, asked);
    });
    // A broken or stalled request body is the client's fault: 400 or 408 unless the
    // response has started (the app, which saw a disconnect, may still answer, but too late).
    Either::Right(async move {
        tokio::select! {
            biased;
            () = body_failure.failed() => body_failure.response(),
            response = answer => response.unwrap_or_else(internal_error),
        }
    })
}
