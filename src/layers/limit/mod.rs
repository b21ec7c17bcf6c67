//! Refusing work the server should not take on, before any of it reaches Python: too many
//! requests in flight (503, `--limit-concurrency`) and request bodies that are too large
//! (413, `--limit-request-body`).

mod body_size;
mod in_flight;

pub use body_size::{BodySizeLimit, BodySizeLimitLayer};
pub use in_flight::{InFlightLimit, InFlightLimitLayer};

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, Version, header};

/// A refused request's answer: the status and its reason as plain text, as uvicorn words it.
/// An HTTP/1 connection is closed after it, so a body the client may still be sending is
/// never read as the next request.
fn refusal(status: StatusCode, version: Version) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or_default();
    let mut response = Response::new(Body::from(reason));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(reason.len()));
    if version < Version::HTTP_2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
