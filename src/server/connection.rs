//! Serving one accepted connection: the TLS handshake, the HTTP versions spoken, the
//! per-request plumbing (connection info, access log, request budget) and the two stages of
//! shutdown: draining (finish in-flight requests, take no new ones) and closing (drop it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, future};
use http::header::{ALT_SVC, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;
use tower::ServiceExt;
use tracing::Instrument;

use super::access_log::{LoggedBody, RequestLine};
use super::access_log_format::AccessLogFormat;
use super::body_timeout::TimedBody;
use super::extensions;
use super::handle::ServerHandle;
use super::health::Health;
use super::http_versions::HttpVersions;
use super::keep_alive::{DRAIN_GRACE, KeepAlive, close_when_draining};
use super::listener::Stream;
use super::options::ServerOptions;
use super::polled_when_woken::PolledWhenWoken;
use super::refusal;
use super::tls::TlsEndpoint;
use crate::BoxError;
use crate::connection_info::{ConnectionInfo, TlsInfo};
use crate::layers::TrustedProxies;
use crate::layers::guarded_body::GuardedBody;
use crate::shutdown::Shutdown;
use crate::telemetry::RequestSpan;

/// How long a closing connection may still write: the 500s of the requests shutdown cut off
/// unanswered go out in one write each; a response still streaming is cut off after it.
pub(super) const CLOSING_FLUSH: Duration = Duration::from_millis(250);

/// The hyper connection builder for the HTTP versions spoken, configured once.
///
/// HTTP/1 only is its own builder rather than the auto builder's `http1_only`, which the
/// auto builder ignores for connections that may be upgraded (websockets).
pub(crate) enum Protocols {
    Auto(auto::Builder<TokioExecutor>),
    Http1(http1::Builder),
    Http2(http2::Builder<TokioExecutor>),
}

impl Protocols {
    pub(super) fn new(versions: HttpVersions, options: &ServerOptions) -> Self {
        let max_buf_size = options.max_header_bytes.max(8192);
        let max_header_list = u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX);
        // hyper's own timer guards each later head of a kept-alive connection, at the cost
        // of a timer set and cleared per request. The keep-alive watch (`KeepAlive`) shuts
        // down a connection whose next head has not been read within the keep-alive timeout
        // of the last response, partly sent or not; hyper's timer only matters when that
        // timeout is the longer one.
        let header_read_timeout = (options.timeout_keep_alive > options.header_read_timeout)
            .then_some(options.header_read_timeout);
        match versions {
            HttpVersions::Auto => {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .max_buf_size(max_buf_size)
                    .max_headers(options.max_headers)
                    .header_read_timeout(header_read_timeout)
                    .auto_date_header(options.date_header);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .max_header_list_size(max_header_list)
                    .auto_date_header(options.date_header);
                Protocols::Auto(builder)
            }
            HttpVersions::Http1 => {
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .max_buf_size(max_buf_size)
                    .max_headers(options.max_headers)
                    .header_read_timeout(header_read_timeout)
                    .auto_date_header(options.date_header);
                Protocols::Http1(builder)
            }
            HttpVersions::Http2 => {
                let mut builder = http2::Builder::new(TokioExecutor::new());
                builder
                    .timer(TokioTimer::new())
                    .max_header_list_size(max_header_list)
                    .auto_date_header(options.date_header);
                Protocols::Http2(builder)
            }
        }
    }
}

/// `--limit-max-requests`: counts requests and starts the server's graceful shutdown when
/// the limit is reached, so a supervisor can replace the process.
pub(crate) struct RequestBudget {
    limit: u64,
    served: AtomicU64,
    server: ServerHandle,
}

impl RequestBudget {
    pub(super) fn new(limit: u64, server: ServerHandle) -> Self {
        RequestBudget {
            limit,
            served: AtomicU64::new(0),
            server,
        }
    }

    fn count(&self) {
        if self.served.fetch_add(1, Ordering::Relaxed) + 1 == self.limit {
            tracing::info!(
                "served {} requests (--limit-max-requests): shutting down",
                self.limit
            );
            self.server.shutdown();
        }
    }
}

/// The service a server serves, as its connections of every HTTP version need it: what
/// [`Server::new`](super::Server::new) accepts, named once for the server's own functions.
pub(super) trait Routed<B>:
    tower::Service<
        Request<axum::body::Body>,
        Response = Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> Routed<B> for S
where
    S: tower::Service<Request<axum::body::Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
}

/// The response body of a [`Routed`] service, as the connections send it.
pub(super) trait RoutedBody:
    Body<Data: Send, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

impl<B> RoutedBody for B
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
}

/// What every connection of one listener shares.
pub(crate) struct ConnectionSetup<S> {
    pub service: S,
    pub protocols: Arc<Protocols>,
    pub tls: Option<TlsEndpoint>,
    /// Time from accept to the first request head, TLS handshake included.
    pub header_read_timeout: Duration,
    /// Time a request body may make no progress while it is read.
    pub request_body_timeout: Duration,
    /// Idle time after a response before the connection is closed (`--timeout-keep-alive`).
    pub keep_alive_timeout: Duration,
    pub access_log: bool,
    /// `--access-log-format`; `None` writes the default line.
    pub access_log_format: Option<Arc<AccessLogFormat>>,
    /// A server span per request (`telemetry`).
    pub request_spans: bool,
    pub proxy_headers: Option<Arc<TrustedProxies>>,
    /// `Alt-Svc` announcing HTTP/3 on this listener's port (`--http3`), on every response
    /// that has none.
    pub alt_svc: Option<HeaderValue>,
    pub budget: Option<Arc<RequestBudget>>,
    /// `--health-path`, answered here.
    pub health: Option<Arc<Health>>,
    pub shutdown: Shutdown,
}

impl<S: Clone> Clone for ConnectionSetup<S> {
    fn clone(&self) -> Self {
        ConnectionSetup {
            service: self.service.clone(),
            protocols: self.protocols.clone(),
            tls: self.tls.clone(),
            header_read_timeout: self.header_read_timeout,
            request_body_timeout: self.request_body_timeout,
            keep_alive_timeout: self.keep_alive_timeout,
            access_log: self.access_log,
            access_log_format: self.access_log_format.clone(),
            request_spans: self.request_spans,
            proxy_headers: self.proxy_headers.clone(),
            alt_svc: self.alt_svc.clone(),
            budget: self.budget.clone(),
            health: self.health.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<S, B> ConnectionSetup<S>
where
    S: tower::Service<Request<axum::body::Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Serves `stream` until the client is done or shutdown closes it.
    pub(super) async fn serve(self, stream: Stream, connection: ConnectionInfo) {
        let peer = connection.client;
        let mut first_head = std::pin::pin!(tokio::time::sleep(self.header_read_timeout));
        let Some(tls) = &self.tls else {
            return self.serve_http(stream, connection, None, first_head).await;
        };
        let (stream, settled) = tokio::select! {
            handshake = tls.accept(stream) => match handshake {
                Ok(accepted) => accepted,
                Err(err) => return log_end(peer, "TLS handshake failed", &err),
            },
            () = first_head.as_mut() => return log_end(peer, "TLS handshake", &"timed out"),
            // A client that connected just before the drain gets its request answered.
            () = after_drain_grace(&self.shutdown) => return,
        };
        self.serve_http(stream, connection, Some(Arc::new(settled)), first_head)
            .await;
    }

    async fn serve_http<I>(
        self,
        io: I,
        connection: ConnectionInfo,
        tls: Option<Arc<TlsInfo>>,
        first_head: Pin<&mut Sleep>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        let keep_alive = KeepAlive::new(self.keep_alive_timeout);
        let silent = keep_alive.no_request_by(first_head);
        let requests = keep_alive.clone();
        let setup = self.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            // The request keeps the connection busy until its response is sent.
            // Mapped, not awaited in an async block, which would hold the future twice.
            setup
                .respond(request, connection, tls.as_ref(), requests.request())
                .map(Ok::<_, Infallible>)
        });
        let shutdown = &self.shutdown;
        let peer = connection.client;
        let result = match &*self.protocols {
            Protocols::Auto(builder) => drive(
                builder.serve_connection_with_upgrades(io, service),
                auto::UpgradeableConnection::graceful_shutdown,
                shutdown,
                keep_alive.finished(&shutdown.draining),
                silent,
            )
            .await
            .map_err(|err| err.to_string()),
            Protocols::Http1(builder) => drive(
                builder.serve_connection(io, service).with_upgrades(),
                http1::UpgradeableConnection::graceful_shutdown,
                shutdown,
                keep_alive.finished(&shutdown.draining),
                silent,
            )
            .await
            .map_err(|err| err.to_string()),
            Protocols::Http2(builder) => drive(
                builder.serve_connection(io, service),
                http2::Connection::graceful_shutdown,
                shutdown,
                keep_alive.finished(&shutdown.draining),
                silent,
            )
            .await
            .map_err(|err| err.to_string()),
        };
        if let Err(err) = result {
            log_end(peer, "connection ended with an error", &err);
        }
    }

    /// Answers one request, whatever HTTP version carried it: the request learns where it
    /// came from (as a trusted proxy reports it) and is counted, the health path and refused
    /// heads are answered here, and the response body is wrapped for the access log and
    /// holds `guard` (and the server span) until it is dropped.
    pub(super) fn respond<I, G>(
        &self,
        mut request: Request<I>,
        connection: ConnectionInfo,
        tls: Option<&Arc<TlsInfo>>,
        guard: G,
    ) -> impl Future<Output = Response<Answer<B, G>>> + Send + use<S, B, I, G>
    where
        I: Body<Data = Bytes> + Send + 'static,
        I::Error: Into<BoxError>,
        G: Send + 'static,
    {
        let version = request.version();
        let connection = match &self.proxy_headers {
            Some(trusted) => trusted.apply(connection, request.headers()),
            None => connection,
        };
        // Before the access log copies headers: `%({traceparent}i)s` shows the server span.
        let trace = self
            .request_spans
            .then(|| Box::new(RequestSpan::start(&mut request, &connection)));
        let mut extensions = extensions::with_room();
        extensions.insert(connection);
        if let Some(tls) = tls {
            extensions.insert(tls.clone());
        }
        request.extensions_mut().extend(extensions);
        // The line and the span are boxed: they would be most of the response body's size,
        // and the body is moved up through every layer.
        let line = (self.access_log && RequestLine::wanted()).then(|| {
            Box::new(
                RequestLine::new(&request, connection.client, self.access_log_format.as_ref())
                    .traced(trace.as_deref().and_then(RequestSpan::trace_id)),
            )
        });
        let health = self
            .health
            .as_ref()
            .and_then(|health| health.answer(&request));
        if let (None, Some(budget)) = (&health, &self.budget) {
            budget.count();
        }
        // A response answered here is boxed too: it is rare, and as large as the rest of
        // the request's future (HTTP/2 streams moved whole: h2c 50x10 +1.7 % req/s).
        let answer = match (health, refusal::refusal(&request)) {
            (Some(health), _) => Err(Box::new(health)),
            (None, Some(status)) => Err(Box::new(refusal::response(status))),
            (None, None) => {
                let body_timeout = self.request_body_timeout;
                let request =
                    request.map(|body| axum::body::Body::new(TimedBody::new(body, body_timeout)));
                let routed = self.service.clone().oneshot(request);
                // Boxed, because the request's future is moved whole several times: hyper
                // spawns an HTTP/2 stream's task with it (four copies) and an HTTP/1
                // connection puts it in its slot. Moving a pointer instead of ~700 bytes:
                // h2c 50x10 +8 % req/s, HTTP/1 -3 % CPU per request.
                Ok(Box::pin(match &trace {
                    Some(trace) => future::Either::Left(routed.instrument(trace.span().clone())),
                    None => future::Either::Right(routed),
                }))
            }
        };
        let closing = self.shutdown.closing.clone();
        let draining = self.shutdown.draining.clone();
        let alt_svc = self.alt_svc.clone();
        // An HTTP/1 request is polled by its connection's task, which `drive` wakes when
        // closing begins, so a look at the signal on each poll is enough. HTTP/2 and HTTP/3
        // requests run in tasks of their own, which must wait on the signal to be woken (a
        // waiter on the one signal all connections share, taken and left on every request).
        let polled_by_connection = version < Version::HTTP_2;
        async move {
            let mut response = match answer {
                // Cut off by shutdown before it answered: dropping it tells the app
                // (`http.disconnect`), and the client gets a 500 rather than a bare close.
                Ok(routed) => {
                    let mut routed = std::pin::pin!(routed);
                    let mut cut_off = std::pin::pin!(closing.cancelled());
                    let routed = std::future::poll_fn(|cx| {
                        if let Poll::Ready(response) = routed.as_mut().poll(cx) {
                            return Poll::Ready(Some(response));
                        }
                        let closed = if polled_by_connection {
                            closing.is_cancelled()
                        } else {
                            cut_off.as_mut().poll(cx).is_ready()
                        };
                        if closed {
                            Poll::Ready(None)
                        } else {
                            Poll::Pending
                        }
                    })
                    .await;
                    match routed {
                        Some(Ok(response)) => response.map(Either::Left),
                        Some(Err(never)) => match never {},
                        None => {
                            refusal::response(StatusCode::INTERNAL_SERVER_ERROR).map(Either::Right)
                        }
                    }
                }
                Err(answered) => (*answered).map(Either::Right),
            };
            if let Some(trace) = &trace {
                trace.responded(response.status());
            }
            close_when_draining(&mut response, version, &draining);
            if let Some(alt_svc) = alt_svc {
                response.headers_mut().entry(ALT_SVC).or_insert(alt_svc);
            }
            let response = match line {
                Some(line) => {
                    let (parts, body) = response.into_parts();
                    let body = MaybeLogged::Logged(LoggedBody::new(body, line, &parts));
                    Response::from_parts(parts, body)
                }
                None => response.map(MaybeLogged::Plain),
            };
            // The server span ends with the response body, as the request does.
            response.map(|body| GuardedBody::new(body, (guard, trace)))
        }
    }
}

/// The response body [`ConnectionSetup::respond`] gives: the service's, or one answered
/// here, logged or not, with what must live until it is dropped.
pub(super) type Answer<B, G> =
    GuardedBody<MaybeLogged<Either<B, Empty<<B as Body>::Data>>>, (G, Option<Box<RequestSpan>>)>;

/// Resolves [`DRAIN_GRACE`] after draining began.
async fn after_drain_grace(shutdown: &Shutdown) {
    shutdown.draining.cancelled().await;
    tokio::time::sleep(DRAIN_GRACE).await;
}

fn log_end(peer: Option<SocketAddr>, what: &str, detail: &dyn std::fmt::Display) {
    match peer {
        Some(peer) => tracing::debug!("{what} (client {peer}): {detail}"),
        None => tracing::debug!("{what}: {detail}"),
    }
}

/// Runs a hyper connection through the shutdown stages: when it is `finished` (idle too
/// long, or draining and not in the middle of a client's request: `KeepAlive::finished`),
/// it is asked to finish gracefully; on closing it is dropped after at most
/// [`CLOSING_FLUSH`], as it is at once when it stays silent too long (no request is in
/// flight then).
async fn drive<C, E>(
    connection: C,
    graceful_shutdown: fn(Pin<&mut C>),
    shutdown: &Shutdown,
    finished: impl Future<Output = ()>,
    silent_too_long: impl Future<Output = ()>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = std::pin::pin!(connection);
    let watched = PolledWhenWoken::new(async {
        tokio::select! {
            () = finished => Watched::Finished,
            () = silent_too_long => Watched::Silent,
            () = shutdown.closing.cancelled() => Watched::Closing,
        }
    });
    tokio::select! {
        biased;
        result = connection.as_mut() => return result,
        watched = watched => match watched {
            Watched::Finished => graceful_shutdown(connection.as_mut()),
            Watched::Silent => return Ok(()),
            Watched::Closing => {}
        },
    }
    tokio::select! {
        result = connection.as_mut() => return result,
        () = shutdown.closing.cancelled() => {}
    }
    // Requests cut off unanswered are being answered 500: let those answers out.
    tokio::time::timeout(CLOSING_FLUSH, connection)
        .await
        .unwrap_or(Ok(()))
}

/// What ended [`drive`]'s first stage, other than the connection itself.
enum Watched {
    Finished,
    Silent,
    Closing,
}

/// The response body with or without access logging, as one type for hyper.
pub(super) enum MaybeLogged<B: Body> {
    Logged(LoggedBody<B>),
    Plain(B),
}

impl<B> Body for MaybeLogged<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        match self.get_mut() {
            MaybeLogged::Logged(body) => Pin::new(body).poll_frame(cx),
            MaybeLogged::Plain(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MaybeLogged::Logged(body) => body.is_end_stream(),
            MaybeLogged::Plain(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            MaybeLogged::Logged(body) => body.size_hint(),
            MaybeLogged::Plain(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_offers_h2_first_unless_restricted() {
        assert_eq!(
            HttpVersions::Auto.alpn_protocols(),
            [&b"h2"[..], b"http/1.1"]
        );
        assert_eq!(HttpVersions::Http1.alpn_protocols(), [&b"http/1.1"[..]]);
        assert_eq!(HttpVersions::Http2.alpn_protocols(), [&b"h2"[..]]);
    }

    #[tokio::test]
    async fn the_request_budget_shuts_the_server_down_once_at_the_limit() {
        let handle = ServerHandle::new();
        let mut stopped = handle.subscribe_shutdown();
        let budget = RequestBudget::new(3, handle);
        budget.count();
        budget.count();
        assert!(!*stopped.borrow_and_update());
        budget.count();
        assert!(*stopped.borrow_and_update());
        budget.count();
        assert_eq!(budget.served.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_connection_idle_too_long_is_asked_to_finish() {
        use std::sync::atomic::AtomicBool;
        static ASKED: AtomicBool = AtomicBool::new(false);
        let shutdown = Shutdown::default();
        let driven = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                drive(
                    std::future::pending::<Result<(), ()>>(),
                    |_| ASKED.store(true, Ordering::SeqCst),
                    &shutdown,
                    std::future::ready(()),
                    std::future::pending(),
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(ASKED.load(Ordering::SeqCst));
        assert!(!driven.is_finished());
        shutdown.closing.cancel();
        assert_eq!(driven.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_connection_silent_too_long_is_dropped() {
        let shutdown = Shutdown::default();
        let dropped = drive(
            std::future::pending::<Result<(), ()>>(),
            |_| panic!("a silent connection is dropped, not asked to finish"),
            &shutdown,
            std::future::pending(),
            std::future::ready(()),
        );
        assert_eq!(dropped.await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_draining_idle_connection_is_asked_to_finish_after_the_grace_and_closing_drops_it() {
        use std::sync::atomic::AtomicBool;
        static ASKED: AtomicBool = AtomicBool::new(false);
        let shutdown = Shutdown::default();
        let connection = std::future::pending::<Result<(), ()>>();
        let driven = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                let keep_alive = KeepAlive::new(Duration::from_secs(5));
                drive(
                    connection,
                    |_| ASKED.store(true, Ordering::SeqCst),
                    &shutdown,
                    keep_alive.finished(&shutdown.draining),
                    std::future::pending(),
                )
                .await
            }
        });
        shutdown.draining.cancel();
        tokio::time::sleep(DRAIN_GRACE - Duration::from_millis(10)).await;
        assert!(!ASKED.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(ASKED.load(Ordering::SeqCst));
        assert!(!driven.is_finished());
        shutdown.closing.cancel();
        assert_eq!(driven.await.unwrap(), Ok(()));
    }
}
