//! The ASGI HTTP bridge. A request travels like this:
//! 1. [`handle`] (Tokio) takes what of the body came with the head, then asks the loop
//!    thread to start the app and awaits the response.
//! 2. [`cycle::start`] (loop thread) builds the scope and runs `app(scope, receive, send)`.
//! 3. `send` builds the response ([`response`]), handed back in one piece when the first
//!    body message is also the last, otherwise with a bounded channel that streams the rest.

mod cycle;
mod response;

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode};
use http_body::Body;
use tokio_util::sync::CancellationToken;

use self::response::internal_error;
use super::body::{RequestBody, ResponseBody};
use super::codec::{plain_response, request_head};
use super::cycle::submit_and_await;
use crate::BoxError;
use crate::python::EventLoop;

/// Runs one HTTP request through the app.
pub(super) async fn handle<B>(
    event_loop: &EventLoop,
    root_path: &Arc<str>,
    parts: http::request::Parts,
    body: B,
) -> Response<ResponseBody>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let body = match RequestBody::prepare(&parts.headers, body) {
        Ok(body) => body,
        Err(_) => return bad_request(),
    };
    let head = request_head(parts);
    let root_path = root_path.clone();
    let body_failed = CancellationToken::new();
    let failed = body_failed.clone();
    let answer = submit_and_await(event_loop, move |py, asked| {
        cycle::start(py, head, body, failed, &root_path, asked);
    });
    // A broken request body is the client's fault: 400 unless the response has started
    // (the app, which saw a disconnect, may still answer, but too late).
    tokio::select! {
        biased;
        () = body_failed.cancelled() => bad_request(),
        response = answer => response.unwrap_or_else(internal_error),
    }
}

/// The answer to a request whose body cannot be read; its framing is lost, so the
/// connection closes.
fn bad_request() -> Response<ResponseBody> {
    let mut response = plain_response(StatusCode::BAD_REQUEST, "Bad Request");
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}
