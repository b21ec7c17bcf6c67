//! [`ShadowLayer`]: parity checks on live traffic. Around a Rust route, it also sends a share
//! of the requests to the Python app and compares the two answers; the client always gets
//! the Rust one.
//!
//! On the client's path the layer adds only what sending a request twice needs: a request
//! body is read into memory before the Rust handler runs (only bodies of known length up to
//! the limit; any other request is not shadowed) and the response body passes through a
//! [`TeeBody`] that keeps a copy. The Python call starts in its own task once the Rust
//! response's last byte has been handed to hyper, so neither a slow Python side nor the CPU
//! the Python call takes ever delays the client. At most `max_in_flight` comparisons run at once; a request arriving when all
//! permits are taken is not shadowed (the Python side is busy), and counted.

mod compare;
mod load;
mod stats;
mod tee;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::OriginalUri;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response};
use http_body_util::{BodyExt, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tower::{Layer, Service, ServiceExt};

use self::compare::{Comparison, Observed};
use self::load::{Limits, Load, MachineTimes};
use self::stats::{Outcome, Sampler};
use self::tee::{Captured, TeeBody};
use crate::asgi::{AsgiService, OwnershipProbe};

pub use self::stats::{ShadowCounts, ShadowStats};

/// A Tower layer for a Rust route that compares its answers with the Python app's.
///
/// ```no_run
/// # use axum::{Router, routing::get};
/// # use rust_asgi_server::migration::ShadowLayer;
/// # async fn get_item() -> &'static str { "" }
/// # fn run(asgi: rust_asgi_server::AsgiService) {
/// let shadow = ShadowLayer::new(asgi.clone()).share(0.1).ignore_field("checked_at");
/// let stats = shadow.stats(); // stats.counts().mismatched, …
/// let router: Router = Router::new()
///     .route("/items/{id}", get(get_item).layer(shadow))
///     .fallback_service(asgi);
/// # }
/// ```
#[derive(Clone)]
pub struct ShadowLayer {
    python: AsgiService,
    sampler: Arc<Sampler>,
    unsafe_methods: bool,
    comparison: Comparison,
    body_limit: usize,
    in_flight: Arc<Semaphore>,
    limits: Limits,
    load: Arc<Load>,
    timeout: Duration,
    stats: ShadowStats,
}

/// The service of a [`ShadowLayer`] around a Rust route.
#[derive(Clone)]
pub struct ShadowService<S> {
    inner: S,
    layer: ShadowLayer,
}

/// Largest request or response body compared by default, in bytes.
const BODY_LIMIT: usize = 256 * 1024;
/// Comparisons running at once by default.
const MAX_IN_FLIGHT: usize = 32;
/// When comparisons start, by default: the loop thread busy less than half of a CPU, a
/// tenth of the machine's CPU time idle, at most 100 a second.
const LIMITS: Limits = Limits {
    max_loop_busy: 0.5,
    min_machine_idle: 0.1,
    max_per_second: 100.0,
};
/// How long the Python side may take by default.
const TIMEOUT: Duration = Duration::from_secs(30);

impl ShadowLayer {
    /// Compares with what `python` (the app's [`AsgiService`]) answers. Defaults: every
    /// request of a safe method (GET, HEAD, OPTIONS, TRACE), headers `content-type`,
    /// bodies up to 256 KiB, 32 comparisons at once, at most 100 started a second and only
    /// on spare CPU (the loop thread less than half busy, a tenth of the machine idle), 30 s
    /// for the Python side.
    pub fn new(python: AsgiService) -> Self {
        let load = Arc::new(load_gauge(&python, LIMITS));
        ShadowLayer {
            python,
            sampler: Arc::new(Sampler::new(1.0)),
            unsafe_methods: false,
            comparison: Comparison {
                headers: vec![http::header::CONTENT_TYPE],
                ignored_fields: Vec::new(),
            },
            body_limit: BODY_LIMIT,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            limits: LIMITS,
            load,
            timeout: TIMEOUT,
            stats: ShadowStats::default(),
        }
    }

    /// The share of requests compared, from 0.0 to 1.0, spread evenly (0.25: every fourth).
    pub fn share(mut self, share: f64) -> Self {
        self.sampler = Arc::new(Sampler::new(share));
        self
    }

    /// Also shadow POST, PUT, PATCH and DELETE. The Python app then runs them too, side
    /// effects included: for routes where running twice is harmless (idempotent, or a
    /// Python side writing elsewhere).
    pub fn unsafe_methods(mut self, enabled: bool) -> Self {
        self.unsafe_methods = enabled;
        self
    }

    /// Headers whose values must be equal; replaces the default (`content-type`).
    pub fn compare_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.comparison.headers = names.into_iter().collect();
        self
    }

    /// Leaves a field out of JSON bodies before they are compared: a bare name
    /// (`checked_at`) in every object, a JSON pointer (`/meta/took_ms`) at that place only.
    pub fn ignore_field(mut self, field: impl Into<String>) -> Self {
        self.comparison.ignored_fields.push(field.into());
        self
    }

    /// Largest request body sent twice and largest response body compared, in bytes.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Comparisons that may run at once; a request beyond it is not shadowed.
    pub fn max_in_flight(mut self, comparisons: usize) -> Self {
        self.in_flight = Arc::new(Semaphore::new(comparisons));
        self
    }

    /// How busy the loop thread may be, as a share of one CPU over the last 50 ms, for a
    /// sampled request to be compared; above it the request is not shadowed
    /// (`skipped_busy`). Under a load Python cannot follow, this keeps the comparisons'
    /// CPU from the route they shadow and from the app's own requests (default 0.5; 1.0
    /// lifts it).
    pub fn max_loop_busy(mut self, share: f64) -> Self {
        self.limits.max_loop_busy = share;
        self.load = Arc::new(load_gauge(&self.python, self.limits));
        self
    }

    /// Comparisons started per second at most (default 100; `f64::INFINITY` lifts it); a
    /// sampled request beyond it is not shadowed (`skipped_busy`). Whatever else is idle, a
    /// comparison runs a Python request beside the client's on the same CPUs: the cap keeps
    /// that cost small and known (on a 2-CPU machine at 17,000 requests a second, 2,400
    /// comparisons a second added a quarter to the shadowed route's median latency).
    pub fn max_per_second(mut self, comparisons: f64) -> Self {
        self.limits.max_per_second = comparisons;
        self.load = Arc::new(load_gauge(&self.python, self.limits));
        self
    }

    /// The share of the machine's CPU time (all CPUs, over the last 50 ms) that must have
    /// been idle for a sampled request to be compared; below it the request is not
    /// shadowed (`skipped_busy`). When every CPU is busy serving, a comparison would take
    /// its CPU from the clients, so comparisons run on spare CPU only (default 0.1; 0.0
    /// lifts it). Read from `/proc/stat`; where that does not exist, no limit.
    pub fn min_idle_cpu(mut self, share: f64) -> Self {
        self.limits.min_machine_idle = share;
        self.load = Arc::new(load_gauge(&self.python, self.limits));
        self
    }

    /// How long the Python side may take before the comparison is given up.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The counters, shared with every service of this layer.
    pub fn stats(&self) -> ShadowStats {
        self.stats.clone()
    }

    /// A permit when this request is to be shadowed; counts why a sampled one is not.
    fn admit<B: http_body::Body>(&self, request: &Request<B>) -> Option<OwnedSemaphorePermit> {
        let method_allowed = request.method().is_safe() || self.unsafe_methods;
        // The ownership probe's requests are not traffic.
        let probe = request.extensions().get::<OwnershipProbe>().is_some();
        if !method_allowed || probe || !self.sampler.pick() {
            return None;
        }
        if !fits(request.body().size_hint().upper(), self.body_limit) {
            self.stats.count(Outcome::TooLarge);
            return None;
        }
        let permit = self
            .in_flight
            .clone()
            .try_acquire_owned()
            .ok()
            .filter(|_| self.load.has_room());
        if permit.is_none() {
            self.stats.count(Outcome::Busy);
        }
        permit
    }
}

/// Whether a request body can be read into memory to be sent twice: only when its size is
/// known up front (a `content-length`, or no body) and within the limit.
fn fits(size: Option<u64>, limit: usize) -> bool {
    size.is_some_and(|size| size <= limit as u64)
}

impl<S> Layer<S> for ShadowLayer {
    type Service = ShadowService<S>;

    fn layer(&self, inner: S) -> ShadowService<S> {
        ShadowService {
            inner,
            layer: self.clone(),
        }
    }
}

impl<S> Service<Request<Body>> for ShadowService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone is not ready; the ready one serves this request (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(permit) = self.layer.admit(&request) else {
            return Box::pin(inner.call(request));
        };
        Box::pin(self.layer.clone().shadow(inner, request, permit))
    }
}

impl ShadowLayer {
    /// Sends `request` to both sides; answers with Rust's response, compares in the
    /// background.
    async fn shadow<S>(
        self,
        mut inner: S,
        request: Request<Body>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        S::Future: Send,
    {
        let (parts, body) = request.into_parts();
        let body = match axum::body::to_bytes(body, self.body_limit).await {
            Ok(body) => body,
            Err(error) => {
                // The client's body failed (it left, or sent less than it announced): the
                // Rust handler sees the same failure, and nothing is compared.
                self.stats.count(Outcome::Failed);
                let failed = futures_util::stream::once(async move { Err::<Bytes, _>(error) });
                return inner
                    .call(Request::from_parts(parts, Body::from_stream(failed)))
                    .await;
            }
        };
        let target = parts
            .extensions
            .get::<OriginalUri>()
            .map_or(&parts.uri, |original| &original.0)
            .clone();
        let label = format!("{} {target}", parts.method);
        let python = python_copy(&parts, body.clone());
        let response = inner
            .call(Request::from_parts(parts, Body::from(body)))
            .await?;
        let (parts, body) = response.into_parts();
        let (captured_tx, captured_rx) = oneshot::channel();
        let body = Body::new(TeeBody::new(body, self.body_limit, captured_tx));
        let rust_head = (
            parts.status,
            chosen(&parts.headers, &self.comparison.headers),
        );
        tokio::spawn(async move {
            let outcome = self.compare(&label, rust_head, captured_rx, python).await;
            self.stats.count(outcome);
            drop(permit);
        });
        Ok(Response::from_parts(parts, body))
    }

    /// The Python app's answer, its body read up to the limit.
    async fn ask_python(&self, request: Request<Body>) -> Result<Observed, Outcome> {
        let answer = async {
            let response = self
                .python
                .clone()
                .oneshot(request)
                .await
                .unwrap_or_else(|never: Infallible| match never {});
            let (parts, body) = response.into_parts();
            let body = match Limited::new(body, self.body_limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                    return Err(Outcome::TooLarge);
                }
                Err(_) => return Err(Outcome::Failed),
            };
            Ok(Observed {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, answer)
            .await
            .unwrap_or(Err(Outcome::Failed))
    }

    /// Waits for the end of the Rust response, then asks Python: the Python call never
    /// competes with the client's response for the CPU.
    async fn compare(
        &self,
        label: &str,
        (status, headers): (http::StatusCode, HeaderMap),
        captured: oneshot::Receiver<Captured>,
        python: Request<Body>,
    ) -> Outcome {
        let body = match captured.await {
            Ok(Captured::Whole(body)) => body,
            Ok(Captured::TooLarge) => return Outcome::TooLarge,
            // The client left before the end of the Rust response.
            Err(_) => return Outcome::Failed,
        };
        let python = match self.ask_python(python).await {
            Ok(python) => python,
            Err(outcome) => return outcome,
        };
        let rust = Observed {
            status,
            headers,
            body,
        };
        match self.comparison.differences(&rust, &python) {
            None => Outcome::Matched,
            Some(differences) => {
                tracing::warn!("shadow: {label} answered differently by Python: {differences}");
                Outcome::Mismatched
            }
        }
    }
}

/// Reads the CPU time of the loop thread behind `python`.
fn load_gauge(python: &AsgiService, limits: Limits) -> Load {
    let python = python.clone();
    Load::new(
        Box::new(move || python.loop_cpu_time()),
        Box::new(MachineTimes::read),
        limits,
    )
}

/// The same request for the Python app: method, URI, headers, and the extensions that
/// [`AsgiService`] reads (the original URI behind `Router::nest`, the client's address).
fn python_copy(parts: &http::request::Parts, body: Bytes) -> Request<Body> {
    let mut request = Request::new(Body::from(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    request
}

/// The headers to compare, out of all the response's.
fn chosen(headers: &HeaderMap, names: &[HeaderName]) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in names {
        for value in headers.get_all(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodies_of_known_size_within_the_limit_are_sent_twice() {
        assert!(fits(Some(0), 0));
        assert!(fits(Some(1024), 1024));
        assert!(!fits(Some(1025), 1024));
        // Chunked: the size is known only once it has all been read.
        assert!(!fits(None, 1024));
    }
}
