//! The handles of the series recorded on every request, looked up once. The facade's
//! `counter!(name, labels…)` builds its key (a vector of labels), hashes it and searches the
//! registry at each call: on the hot path that was most of what metrics cost.

use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use rustc_hash::FxHashMap;

use super::{DURATION, IN_FLIGHT, QUEUE_WAIT, REQUEST_BYTES, REQUESTS, RESPONSE_BYTES, WEBSOCKETS};

static HANDLES: OnceLock<Handles> = OnceLock::new();

/// The installed recorder's handles; `None` until [`super::Metrics::install`] has run.
pub(crate) fn handles() -> Option<&'static Handles> {
    HANDLES.get()
}

/// Looks the handles up in the recorder just installed.
pub(super) fn register() {
    HANDLES.get_or_init(|| Handles {
        in_flight: gauge!(IN_FLIGHT),
        websockets: gauge!(WEBSOCKETS),
        request_bytes: counter!(REQUEST_BYTES),
        queue_wait: histogram!(QUEUE_WAIT),
        routes: RwLock::default(),
    });
}

pub(crate) struct Handles {
    pub(crate) in_flight: Gauge,
    pub(crate) websockets: Gauge,
    pub(crate) request_bytes: Counter,
    pub(crate) queue_wait: Histogram,
    /// Per route, then per method, backend and status class: a route's handles are made
    /// on its first response (route labels are bounded: templates or `unmatched`). Looked up
    /// on every response: Fx, not SipHash (the keys are the app's own route templates).
    routes: RwLock<FxHashMap<Box<str>, FxHashMap<ExchangeLabels, Exchange>>>,
}

/// The labels of a response besides its route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ExchangeLabels {
    pub(crate) method: &'static str,
    pub(crate) backend: &'static str,
    pub(crate) status: &'static str,
}

/// The series one response updates.
struct Exchange {
    requests: Counter,
    duration: Histogram,
    response_bytes: Counter,
}

impl Handles {
    /// Counts a response of `route` that took `elapsed` and sent `bytes` of body.
    pub(crate) fn record_response(
        &self,
        route: &str,
        labels: ExchangeLabels,
        elapsed: Duration,
        bytes: u64,
    ) {
        let record = |exchange: &Exchange| {
            exchange.requests.increment(1);
            exchange.duration.record(elapsed);
            exchange.response_bytes.increment(bytes);
        };
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(exchange) = routes.get(route).and_then(|route| route.get(&labels)) {
            return record(exchange);
        }
        drop(routes);
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let exchange = routes
            .entry(route.into())
            .or_default()
            .entry(labels)
            .or_insert_with(|| Exchange::register(route, labels));
        record(exchange);
    }
}

impl Exchange {
    fn register(route: &str, labels: ExchangeLabels) -> Self {
        let ExchangeLabels {
            method,
            backend,
            status,
        } = labels;
        let route = route.to_owned();
        Exchange {
            requests: counter!(
                REQUESTS,
                "method" => method,
                "route" => route.clone(),
                "backend" => backend,
                "status" => status,
            ),
            duration: histogram!(
                DURATION,
                "method" => method,
                "route" => route,
                "backend" => backend,
            ),
            response_bytes: counter!(RESPONSE_BYTES, "backend" => backend),
        }
    }
}
