//! `--health-path`: a path answered by the server itself, without touching Python, for a
//! load balancer's or Kubernetes' probes: 200 while serving, 503 once draining after
//! SIGTERM or while the loop thread is blocked past `--loop-block-warn`.

use http::{Request, Response, StatusCode};
use http_body_util::Empty;

use crate::python::LoopWatch;
use crate::signal::Signal;

pub(super) struct Health {
    path: String,
    draining: Signal,
    loop_watch: LoopWatch,
}

impl Health {
    pub(super) fn new(path: String, draining: Signal, loop_watch: LoopWatch) -> Self {
        Health {
            path,
            draining,
            loop_watch,
        }
    }

    /// The answer when `request` asks for the health path (any method but its body).
    pub(super) fn answer<B, D>(&self, request: &Request<B>) -> Option<Response<Empty<D>>> {
        if request.uri().path() != self.path {
            return None;
        }
        let status = if self.draining.is_cancelled() || self.loop_watch.is_blocked() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        let mut response = Response::new(Empty::new());
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        Some(response)
    }
}
