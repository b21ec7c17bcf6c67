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
#[derive(Clone, Default)]
pub(super) struct BodyFailure {
    fired: Signal,
    stalled: Arc<AtomicBool>,
}

impl BodyFailure {
    /// Records a failed read of the body; fired before the app hears of it, so its end is
    /// never taken for its own mistake.
    pub(super) fn fail(&self, err: &BoxError) {
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

    /// Completes once the body has failed.
    pub(super) async fn failed(&self) {
        self.fired.cancelled().await;
    }

    pub(super) fn has_failed(&self) -> bool {
        self.fired.is_cancelled()
    }

    /// The answer to a request whose body could not be read; its framing is lost, so the
    /// connection closes.
    pub(super) fn response(&self) -> Response<ResponseBody> {
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
