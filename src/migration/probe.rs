//! Asking the router who answers an operation, without running Python: one synthetic
//! request through the user's router, marked so that [`AsgiService`](crate::AsgiService)
//! answers it at once if it gets it (`asgi/probe.rs`).
//!
//! A Rust handler the request reaches does run, with an empty body and [`PLACEHOLDER`] for
//! every path parameter: typed extractors (`Path<i64>`) usually refuse it before the handler
//! body runs, but a handler without them runs for real. That is why only safe methods are
//! probed unless the user opts in.

use axum::Router;
use axum::body::Body;
use http::{Method, Request};
use tower::ServiceExt;

use super::path_template::fill;
use crate::asgi::OwnershipProbe;

/// What stands for every path parameter in a probe's request.
const PLACEHOLDER: &str = "ownership-probe";

/// Whether `router` hands `method path` (a template) to the Python app; `None` when no
/// request can be made for it (a method or path that is not valid HTTP).
pub(crate) async fn reaches_python(router: &Router, method: &str, path: &str) -> Option<bool> {
    let request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).ok()?)
        .uri(fill(path, PLACEHOLDER))
        .extension(OwnershipProbe)
        .body(Body::empty())
        .ok()?;
    let response = router
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    Some(response.extensions().get::<OwnershipProbe>().is_some())
}
