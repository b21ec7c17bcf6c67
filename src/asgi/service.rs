//! [`AsgiService`]: the Tower service in front of the app, which gives each request to the
//! HTTP or the websocket bridge.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use http::{Request, Response};
use http_body::Body;

use super::body::ResponseBody;
use super::context::{ResponseState, ScopeState};
use super::{http as http_bridge, websocket};
use crate::BoxError;
use crate::metrics::{self, MetricsLayer, MetricsService, PythonRoute};
use crate::python::EventLoop;
use crate::shutdown::Shutdown;

/// Forwards HTTP requests into the Python app. Cheap to clone; works under any Tower stack.
#[derive(Clone)]
pub struct AsgiService {
    shared: Arc<ServiceConfig>,
}

#[derive(Clone)]
struct ServiceConfig {
    event_loop: EventLoop,
    root_path: Arc<str>,
    /// How this app's websockets are carried: their message limit and compression.
    websocket: websocket::Settings,
    /// Websockets close when the server shuts down.
    shutdown: Shutdown,
    /// Request extensions the app sees in `scope["state"]`.
    scope_state: ScopeState,
    /// Keys of `scope["state"]` the app fills for the response's extensions.
    response_state: ResponseState,
    /// Whether responses carry a [`PythonRoute`] even when the app's route is unknown, for
    /// a [`MetricsLayer`] that cannot tell them from a Rust service's otherwise.
    mark_for_metrics: bool,
}

impl AsgiService {
    pub(crate) fn new(
        event_loop: EventLoop,
        root_path: String,
        ws_max_size: usize,
        ws_per_message_deflate: bool,
        shutdown: Shutdown,
    ) -> Self {
        let websocket = websocket::Settings::new(ws_max_size, ws_per_message_deflate);
        AsgiService {
            shared: Arc::new(ServiceConfig {
                event_loop,
                root_path: root_path.into(),
                websocket,
                shutdown,
                scope_state: ScopeState::default(),
                response_state: ResponseState::default(),
                mark_for_metrics: true,
            }),
        }
    }

    /// This service inside a [`MetricsLayer`] that knows it wraps the Python app, so that
    /// a response whose route the app does not expose carries nothing for the metrics:
    /// the extensions the mark needs cost three allocations per request.
    pub(crate) fn metered(self) -> MetricsService<AsgiService> {
        let service = self.reconfigured(|config| config.mark_for_metrics = false);
        tower::Layer::layer(&MetricsLayer::around_python(), service)
    }

    /// The CPU time the app's loop thread has used so far (see `EventLoop::cpu_time`).
    pub(crate) fn loop_cpu_time(&self) -> Option<std::time::Duration> {
        self.shared.event_loop.cpu_time()
    }

    /// Hands what the app put in its request's `state` under `key` (`request.state.KEY =
    /// …` in Starlette and FastAPI) to the Rust side: when the response starts, the value
    /// is extracted as `T` and put in the response's extensions, where a Rust layer around
    /// the app finds it (`response.extensions().get::<T>()`). A request whose app set
    /// nothing there has none; a value that does not extract as `T` is logged and left
    /// out. HTTP only: a websocket has no response to carry it.
    ///
    /// `T` is extracted with pyo3: `#[derive(FromPyObject)]` reads a struct from an object's
    /// attributes (`#[pyo3(from_item_all)]`: from a dict's items); strings, numbers,
    /// `Option`, `Vec` and maps extract as pyo3 extracts them.
    pub fn response_state<T>(self, key: &'static str) -> Self
    where
        T: for<'a, 'py> pyo3::FromPyObject<'a, 'py> + Clone + Send + Sync + 'static,
    {
        self.reconfigured(|config| config.response_state = config.response_state.with::<T>(key))
    }

    /// Passes the request extension of type `T`, which a Rust middleware inserted (the
    /// authenticated user, a tenant, a request id), to the app as `scope["state"][key]`:
    /// `request.state.KEY` in Starlette and FastAPI. A request without it has no such key.
    ///
    /// `T` becomes a Python object on the loop thread: `#[derive(IntoPyObject)]` turns a
    /// struct into a dict, and strings, numbers, `Option`, `Vec` and maps convert as pyo3
    /// converts them. Each call declares one more type; see docs/migration.md for an
    /// example.
    pub fn scope_state<T>(self, key: &'static str) -> Self
    where
        T: for<'py> pyo3::IntoPyObject<'py> + Clone + Send + Sync + 'static,
    {
        self.reconfigured(|config| config.scope_state = config.scope_state.with::<T>(key))
    }

    /// This service with `change` made to its configuration (a copy, if clones share it).
    fn reconfigured(self, change: impl FnOnce(&mut ServiceConfig)) -> Self {
        let mut config = Arc::unwrap_or_clone(self.shared);
        change(&mut config);
        AsgiService {
            shared: Arc::new(config),
        }
    }
}

impl<B> tower::Service<Request<B>> for AsgiService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(answer) = super::probe::answer(&request) {
            return Box::pin(std::future::ready(Ok(answer)));
        }
        let shared = &self.shared;
        if let Some(values) = shared.scope_state.collect(request.extensions()) {
            request.extensions_mut().insert(values);
        }
        let (parts, body) = request.into_parts();
        let mark_for_metrics = shared.mark_for_metrics;
        let marked = move |response| {
            Ok(if mark_for_metrics {
                served_by_python(response)
            } else {
                response
            })
        };
        if websocket::is_upgrade_request(&parts) {
            let shared = shared.clone();
            return Box::pin(async move {
                let response = websocket::handle(
                    &shared.event_loop,
                    &shared.root_path,
                    &shared.websocket,
                    &shared.shutdown,
                    parts,
                )
                .await;
                marked(response)
            });
        }
        // Started here, so that the boxed future holds only what awaits the answer.
        let answer = http_bridge::handle(
            &shared.event_loop,
            &shared.root_path,
            &shared.response_state,
            parts,
            body,
        );
        Box::pin(answer.map(marked))
    }
}

/// Marks the response as the Python app's for the metrics, unless the app's route is
/// already known (set when the response started).
fn served_by_python(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    if metrics::enabled() && response.extensions().get::<PythonRoute>().is_none() {
        response.extensions_mut().insert(PythonRoute(None));
    }
    response
}
