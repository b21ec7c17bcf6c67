//! A request body that could not be read, and the answer the client gets for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderValue, Response, StatusCode};

use crate::BoxError;
use crate::asgi::body::ResponseBody;
use crate::asgi::codec::plain_response;
use crate::signal::Signal;

/// Why the request body could not be read, as the client's answer tells it: a broken
/// framing or a client gone (400), or a body that stopped arriving (408; the server's
/// body timeout fails it with an `io::Error` of kind `TimedOut`).
///
/// A body read in full before the app started cannot fail any more: its request watches
/// nothing ([`BodyFailure::impossible`]), which spares a GET two allocations and the
/// registration of a waiter.
#[derive(Clone)]
pub(super) struct BodyFailure(Option<Watched>);

#[derive(Clone, Default)]
struct Watched {
    fired: Signal,
    stalled: Arc<AtomicBool>,
}

impl BodyFailure {
    /// For a body still to be read.
    pub(super) fn watched() -> Self {
        BodyFailure(Some(Watched::default()))
    }

    /// For a body already read in full.
    pub(super) fn impossible() -> Self {
        BodyFailure(None)
    }

    /// Records a failed read of the body; fired before the app hears of it, so its end is
    /// never taken for its own mistake.
    pub(super) fn fail(&self, err: &BoxError) {
        let Some(watched) = &self.0 else {
            return;
        };
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
        watched.stalled.store(stalled, Ordering::Relaxed);
        watched.fired.cancel();
    }

    /// Completes once the body has failed; never for a body that cannot fail.
    pub(super) async fn failed(&self) {
        match &self.0 {
            Some(watched) => watched.fired.cancelled().await,
            None => std::future::pending().await,
        }
    }

    pub(super) fn has_failed(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|watched| watched.fired.is_cancelled())
    }

    /// The answer to a request whose body could not be read; its framing is lost, so the
    /// connection closes.
    pub(super) fn response(&self) -> Response<ResponseBody> {
        let stalled = self
            .0
            .as_ref()
            .is_some_and(|watched| watched.stalled.load(Ordering::Relaxed));
        let mut response = if stalled {
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
