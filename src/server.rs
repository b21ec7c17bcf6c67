//! Listening, serving connections with hyper (HTTP/1.1 and HTTP/2), readiness and graceful
//! shutdown. The router handed to [`Server::new`] decides what is Rust and what is Python.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::access_log::{LoggedBody, RequestLine};
use crate::asgi::ConnectionInfo;
use crate::asgi::body::BoxError;
use crate::{Error, PythonApp};

/// How long apps get to return after `http.disconnect` at shutdown, and again after being
/// cancelled, so a stubborn app delays exit by at most twice this.
const APP_EXIT_GRACE: Duration = Duration::from_millis(300);

/// Serves a Tower service (usually an axum `Router`) with the Python app's lifespan.
pub struct Server<S> {
    service: S,
    binds: Vec<String>,
    options: ServerOptions,
    handle: ServerHandle,
}

/// Connection-level settings; the defaults are uvicorn's.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub access_log: bool,
    /// Idle time before a keep-alive connection is closed.
    pub timeout_keep_alive: Duration,
    /// How long in-flight requests may run after a shutdown signal; `None` waits for them.
    pub timeout_graceful_shutdown: Option<Duration>,
    /// Time a client has to send complete request headers (slow-loris protection).
    pub header_read_timeout: Duration,
    /// Largest request head accepted; larger ones get 431.
    pub max_header_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            access_log: true,
            timeout_keep_alive: Duration::from_secs(5),
            timeout_graceful_shutdown: None,
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Observe and control a running [`Server`] from elsewhere: wait until it serves, stop it.
#[derive(Clone)]
pub struct ServerHandle {
    ready: watch::Sender<Option<Vec<SocketAddr>>>,
    shutdown: watch::Sender<bool>,
}

impl ServerHandle {
    fn new() -> Self {
        ServerHandle {
            ready: watch::Sender::new(None),
            shutdown: watch::Sender::new(false),
        }
    }

    /// Resolves once the server is bound, listening and lifespan startup has completed,
    /// with the addresses it listens on.
    pub async fn ready(&self) -> Vec<SocketAddr> {
        let mut ready = self.ready.subscribe();
        match ready.wait_for(Option::is_some).await {
            Ok(addresses) => addresses.clone().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Starts a graceful shutdown, as SIGTERM does.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

impl<S, B> Server<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub fn new(service: S) -> Self {
        Server {
            service,
            binds: Vec::new(),
            options: ServerOptions::default(),
            handle: ServerHandle::new(),
        }
    }

    /// Adds a `host:port` to listen on (port 0 picks a free one).
    pub fn bind(mut self, address: impl Into<String>) -> Self {
        self.binds.push(address.into());
        self
    }

    pub fn options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Runs lifespan startup, listens, serves until SIGINT/SIGTERM or
    /// [`ServerHandle::shutdown`], drains in-flight requests, then runs lifespan shutdown.
    pub async fn serve(self, python: PythonApp) -> Result<(), Error> {
        let lifespan = python.startup().await?;
        let mut listeners = Vec::new();
        let binds = if self.binds.is_empty() {
            vec!["127.0.0.1:8000".to_string()]
        } else {
            self.binds.clone()
        };
        for bind in &binds {
            let listener = TcpListener::bind(bind)
                .await
                .map_err(|err| Error::new(format!("cannot listen on {bind}: {err}")))?;
            listeners.push(listener);
        }
        let addresses: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(|listener| listener.local_addr().ok())
            .collect();
        for address in &addresses {
            tracing::info!("listening on http://{address}");
        }
        self.handle.ready.send_replace(Some(addresses));

        let graceful = Arc::new(GracefulShutdown::new());
        let connections = Connections {
            tracker: TaskTracker::new(),
            force_close: CancellationToken::new(),
        };
        let mut accepting = tokio::task::JoinSet::new();
        for listener in listeners {
            accepting.spawn(accept_loop(
                listener,
                self.service.clone(),
                self.options.clone(),
                graceful.clone(),
                connections.clone(),
            ));
        }
        shutdown_signal(self.handle.shutdown.subscribe()).await;
        tracing::info!("shutting down: no new connections, waiting for in-flight requests");
        accepting.abort_all();
        while accepting.join_next().await.is_some() {}
        let graceful = Arc::into_inner(graceful).expect("accept loops have ended");
        match self.options.timeout_graceful_shutdown {
            Some(timeout) => {
                if tokio::time::timeout(timeout, graceful.shutdown())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "graceful shutdown timed out after {timeout:?}; closing remaining connections"
                    );
                }
            }
            None => graceful.shutdown().await,
        }
        // Dropping a connection drops its requests: their apps get `http.disconnect`.
        connections.force_close.cancel();
        connections.tracker.close();
        connections.tracker.wait().await;
        // Let those apps see it and return (or cancel them) before lifespan shutdown.
        if !python.finish_apps(APP_EXIT_GRACE).await {
            tracing::warn!("some request tasks did not end after cancellation");
        }
        let result = lifespan
            .shutdown()
            .await
            .map_err(|message| Error::new(format!("Application shutdown failed:\n{message}")));
        python.stop();
        tracing::info!("server stopped");
        result
    }
}

async fn shutdown_signal(mut requested: watch::Receiver<bool>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            // A second Ctrl-C means "now", as with uvicorn.
            tokio::spawn(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    tracing::warn!("second interrupt: exiting immediately");
                    std::process::exit(130);
                }
            });
        }
        () = terminate => {}
        _ = requested.wait_for(|stop| *stop) => {}
    }
}

async fn accept_loop<S, B>(
    listener: TcpListener,
    service: S,
    options: ServerOptions,
    graceful: Arc<GracefulShutdown>,
    connections: Connections,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .max_buf_size(options.max_header_bytes.max(8192))
        .header_read_timeout(options.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let server_address = listener.local_addr().ok();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = ConnectionInfo {
            client: Some(peer),
            server: server_address,
            secure: false,
        };
        let service = service.clone();
        let access_log = options.access_log;
        let hyper_service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(connection);
            let line = access_log.then(|| RequestLine::new(&request, connection.client));
            let response = service.clone().oneshot(request);
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(match line {
                    Some(line) => {
                        let status = response.status();
                        response.map(|body| Either::Logged(LoggedBody::new(body, line, status)))
                    }
                    None => response.map(Either::Plain),
                })
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), hyper_service)
            .into_owned();
        let connection = graceful.watch(connection);
        let force_close = connections.force_close.clone();
        connections.tracker.spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(err) = result {
                        tracing::debug!("connection from {peer} ended with an error: {err}");
                    }
                }
                () = force_close.cancelled() => {}
            }
        });
    }
}

/// The connections being served, so shutdown can wait for them or cut them off.
#[derive(Clone)]
struct Connections {
    tracker: TaskTracker,
    force_close: CancellationToken,
}

/// The response body with or without access logging, as one type for hyper.
enum Either<B: Body> {
    Logged(LoggedBody<B>),
    Plain(B),
}

impl<B> Body for Either<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        match self.get_mut() {
            Either::Logged(body) => std::pin::Pin::new(body).poll_frame(cx),
            Either::Plain(body) => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Either::Logged(body) => body.is_end_stream(),
            Either::Plain(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Either::Logged(body) => body.size_hint(),
            Either::Plain(body) => body.size_hint(),
        }
    }
}
