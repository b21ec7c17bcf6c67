//! Prometheus metrics: what the server, the ASGI bridge and the loop thread count, and the
//! handle that renders it.
//!
//! Nothing is recorded until [`Metrics::install`] has run: the bridge checks whether it has
//! before it takes a timestamp, and the `metrics` facade's calls are no-ops without a
//! recorder. The series (every `_seconds` histogram has the same buckets, 0.5 ms to 10 s):
//!
//! | series | labels | from |
//! |---|---|---|
//! | `http_requests_total` | `method`, `route`, `backend`, `status` | [`MetricsLayer`] |
//! | `http_request_duration_seconds` | `method`, `route`, `backend` | [`MetricsLayer`], to the response's last byte |
//! | `http_requests_in_flight` | | [`MetricsLayer`] |
//! | `http_request_body_bytes_total` | | [`MetricsLayer`] |
//! | `http_response_body_bytes_total` | `backend` | [`MetricsLayer`] |
//! | `websocket_connections` | | the websocket bridge, while open |
//! | `asgi_queue_wait_seconds` | | the HTTP bridge: from the request's hand-off to the loop thread starting it |
//! | `asgi_loop_busy_ratio` | | the loop watchdog (`--loop-block-warn`): the share of a CPU the loop thread used over the last second |
//! | `asgi_loop_blocked_total` | | the loop watchdog, once per blocked spell |
//!
//! `route` is the Axum route template (`/items/{id}`) for Rust routes, the Starlette or
//! FastAPI route's path for the Python app when it exposes one (`scope["route"]`), else
//! `unmatched` (the binary's static directories are labelled by their mount, as
//! `/static/{*path}`); `backend` is `rust` or `python`; `status` is the class (`2xx`).
//!
//! The binary's `--workers` supervisor records series of its own instead (worker restarts
//! and workers, in `cli/supervisor/metrics.rs`), in a recorder without these.

mod handles;
mod layer;

use std::time::Duration;

use metrics::Gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub(crate) use self::handles::handles;
pub use self::layer::{MetricsLayer, MetricsService};
use crate::error::{Error, ErrorKind};

pub(crate) const REQUESTS: &str = "http_requests_total";
pub(crate) const DURATION: &str = "http_request_duration_seconds";
pub(crate) const IN_FLIGHT: &str = "http_requests_in_flight";
pub(crate) const REQUEST_BYTES: &str = "http_request_body_bytes_total";
pub(crate) const RESPONSE_BYTES: &str = "http_response_body_bytes_total";
pub(crate) const WEBSOCKETS: &str = "websocket_connections";
pub(crate) const QUEUE_WAIT: &str = "asgi_queue_wait_seconds";
pub(crate) const LOOP_BUSY: &str = "asgi_loop_busy_ratio";
pub(crate) const LOOP_BLOCKED: &str = "asgi_loop_blocked_total";

/// Histogram buckets of every `_seconds` series: 0.5 ms to 10 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets between scrapes. Until then
/// each sample is kept (8 bytes); at 50,000 requests a second, 5 s held 10 MiB more.
const UPKEEP: Duration = Duration::from_secs(1);

/// Whether a recorder is installed: the parts that would take a timestamp or read Python
/// for a label only to have it thrown away check this first.
pub(crate) fn enabled() -> bool {
    handles().is_some()
}

/// The process's Prometheus recorder; [`Metrics::render`] gives the text exposition.
///
/// ```no_run
/// # use axum::{Router, routing::get};
/// # use rust_asgi_server::metrics::{Metrics, MetricsLayer};
/// # fn run(asgi: rust_asgi_server::AsgiService) -> Result<(), rust_asgi_server::Error> {
/// let metrics = Metrics::install()?;
/// let app: Router = Router::new()
///     .route("/health", get(|| async { "ok" }))
///     .fallback_service(asgi)
///     .layer(MetricsLayer::new());
/// // Served on a listener of its own, as `--metrics-bind` does:
/// let scrape: Router = metrics.router();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the Prometheus recorder for the whole process (once; a second call fails)
    /// and starts a thread that folds histogram samples every few seconds, so memory stays
    /// flat when nobody scrapes.
    pub fn install() -> Result<Metrics, Error> {
        let metrics = Metrics::install_empty()?;
        describe();
        handles::register();
        Ok(metrics)
    }

    /// The recorder alone, for a process that records series of its own rather than the
    /// request series (the `--workers` supervisor): none of those appear in its exposition.
    pub(crate) fn install_empty() -> Result<Metrics, Error> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .and_then(|builder| builder.install_recorder())
            .map_err(|err| {
                Error::with_source(
                    ErrorKind::System,
                    "cannot install the metrics recorder",
                    err,
                )
            })?;
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                }
            })
            .map_err(|err| {
                Error::with_source(ErrorKind::System, "cannot start the metrics thread", err)
            })?;
        Ok(Metrics { handle })
    }

    /// Every series in Prometheus' text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// A router that answers `GET /metrics` with [`render`](Self::render), to serve on a
    /// listener of its own (scrapes then never queue behind application traffic).
    pub fn router(&self) -> axum::Router {
        let metrics = self.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let text = metrics.render();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
    }
}

/// Set by the ASGI bridge on the responses of the Python app: which of its routes answered
/// (`scope["route"].path`) when the app exposes it, else `None`, which still says the Python
/// app answered. A [`MetricsLayer`] that wraps the app directly needs neither.
#[derive(Clone, Debug)]
pub(crate) struct PythonRoute(pub Option<std::sync::Arc<str>>);

/// Set on the responses of a Rust service nested under a prefix (the binary's static
/// directories), where Axum records no matched route: the `route` label to use.
#[derive(Clone, Debug)]
pub(crate) struct NestedRoute(pub std::sync::Arc<str>);

/// The HELP lines, and the series that exist from the start at 0.
fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        "Requests answered, by method, route, backend and status class"
    );
    describe_histogram!(
        DURATION,
        Unit::Seconds,
        "Time from the request to the response's last byte"
    );
    describe_gauge!(IN_FLIGHT, "Requests whose response has not ended");
    describe_counter!(REQUEST_BYTES, Unit::Bytes, "Request body bytes read");
    describe_counter!(
        RESPONSE_BYTES,
        Unit::Bytes,
        "Response body bytes sent, by backend"
    );
    describe_gauge!(WEBSOCKETS, "Open websocket connections");
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time from a request's hand-off to the loop thread to the app starting on it"
    );
    describe_gauge!(
        LOOP_BUSY,
        "Share of a CPU the loop thread used over the last second"
    );
    describe_counter!(
        LOOP_BLOCKED,
        "Times the event loop was blocked past --loop-block-warn"
    );
    ::metrics::gauge!(IN_FLIGHT).set(0.0);
    ::metrics::gauge!(WEBSOCKETS).set(0.0);
    ::metrics::counter!(LOOP_BLOCKED).absolute(0);
}

/// One item counted in a gauge (an open websocket, a request in flight) for as long as it
/// lives: dropped however its owner ends, the count cannot leak.
pub(crate) struct Counted(Option<&'static Gauge>);

impl Counted {
    pub(crate) fn websocket() -> Self {
        Counted::new(handles().map(|handles| &handles.websockets))
    }

    fn in_flight() -> Self {
        Counted::new(handles().map(|handles| &handles.in_flight))
    }

    fn new(gauge: Option<&'static Gauge>) -> Self {
        if let Some(gauge) = gauge {
            gauge.increment(1.0);
        }
        Counted(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(gauge) = self.0 {
            gauge.decrement(1.0);
        }
    }
}
