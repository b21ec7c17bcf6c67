//! Listening, serving connections with hyper (HTTP/1.1 and HTTP/2, optionally over TLS) and
//! HTTP/3 over QUIC beside TLS (`http3/`), readiness and graceful shutdown. The router handed
//! to [`Server::new`] decides what is Rust and what is Python.

use std::any::Any;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::{Request, Response};
use http_body::Body;
use tokio::sync::watch;

use super::accept_errors::AcceptErrors;
use super::connection::{ConnectionSetup, Protocols, RequestBudget};
use super::handle::ServerHandle;
use super::health::Health;
use super::http3::{self, QuicEndpoint};
use super::listener::{Bind, Listener, describe};
use super::options::ServerOptions;
use super::tls::TlsEndpoint;
use crate::BoxError;
use crate::app::PythonApp;
use crate::connection_info::{ConnectionInfo, ServerAddress};
use crate::defaults;
use crate::error::{Error, ErrorKind};

/// How long the accept loop waits after a failed accept: short, so that serving resumes as
/// soon as a connection closes and frees a descriptor.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// How long apps get to return after `http.disconnect` at shutdown, and again after being
/// cancelled, so a stubborn app delays exit by at most twice this.
const APP_EXIT_GRACE: Duration = Duration::from_millis(300);

/// Serves a Tower service (usually an axum `Router`) with the Python app's lifespan.
///
/// Requests reach the service as `Request<axum::body::Body>`, as a `Router` takes them; a
/// body that stops arriving fails after [`ServerOptions::timeout_request_body`].
pub struct Server<S> {
    service: S,
    binds: Vec<Bind>,
    options: ServerOptions,
    handle: ServerHandle,
}

impl<S, B> Server<S>
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
    /// A server for `service`, with [`ServerOptions`]' defaults and no address yet.
    ///
    /// A `Router` is given its state here (`with_state(())`), as `axum::serve` does: its
    /// handlers become routes once, instead of being cloned and boxed on every request.
    pub fn new(mut service: S) -> Self {
        if let Some(router) = (&mut service as &mut dyn Any).downcast_mut::<Router>() {
            *router = std::mem::take(router).with_state(());
        }
        Server {
            service,
            binds: Vec::new(),
            options: ServerOptions::default(),
            handle: ServerHandle::new(),
        }
    }

    /// Adds a `host:port` to listen on (port 0 picks a free one). With no address at all,
    /// the server listens on uvicorn's default, `127.0.0.1:8000`.
    pub fn bind(mut self, address: impl Into<String>) -> Self {
        self.binds.push(Bind::Tcp(address.into()));
        self
    }

    /// Adds a place to listen: a TCP address, a Unix domain socket, or a socket that is
    /// already listening (one a process manager handed over).
    pub fn listen(mut self, bind: Bind) -> Self {
        self.binds.push(bind);
        self
    }

    /// Replaces the connection-level settings.
    pub fn options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    /// A handle to wait for readiness and to stop the server from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Runs lifespan startup, listens, serves until SIGINT/SIGTERM or
    /// [`ServerHandle::shutdown`], drains in-flight requests, then runs lifespan shutdown.
    ///
    /// TLS files are read before lifespan startup, so a bad certificate fails fast; the
    /// sockets are bound after it, so nothing connects to an app that failed to start.
    pub async fn serve(self, python: PythonApp) -> Result<(), Error> {
        let options = self.options;
        let tls = match &options.tls {
            Some(tls) => Some(TlsEndpoint::new(tls, options.http)?),
            None => None,
        };
        // QUIC has no cleartext: HTTP/3 is served only beside HTTPS.
        let http3_tls = match (options.http3, &tls) {
            (false, _) => None,
            (true, Some(tls)) => Some(tls),
            (true, None) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "HTTP/3 (--http3) needs TLS: give --ssl-certfile and --ssl-keyfile",
                ));
            }
        };
        let lifespan = python.startup().await?;
        // Sockets belong to the runtime that serves them: Tokio's workers, or the loop
        // thread's own with `RuntimeMode::Single`.
        let runtime = python.connections_runtime().clone();
        let entered = runtime.enter();
        let bound = listen(self.binds, options.backlog).and_then(|listeners| {
            let endpoints = match http3_tls {
                Some(tls) => quic_endpoints(&listeners, tls)?,
                None => Vec::new(),
            };
            Ok((listeners, endpoints))
        });
        drop(entered);
        let (listeners, endpoints) = match bound {
            Ok(bound) => bound,
            Err(err) => {
                // The app started: it gets its shutdown before the error is reported.
                if let Err(message) = lifespan.shutdown().await {
                    tracing::error!("Application shutdown failed:\n{message}");
                }
                stop_python(python).await;
                return Err(err);
            }
        };
        let mut addresses = Vec::new();
        for listener in &listeners {
            tracing::info!(
                "listening on {}",
                describe(listener.address(), tls.is_some())
            );
            if let ServerAddress::Tcp(address) = listener.address() {
                addresses.push(address);
            }
        }
        for endpoint in &endpoints {
            tracing::info!("serving HTTP/3 on udp {}", endpoint.address());
        }
        self.handle.ready.send_replace(Some(addresses));
        let loop_watch = options
            .loop_block_warn
            .map(|limit| python.watch_loop(limit))
            .unwrap_or_default();

        let setup = ConnectionSetup {
            service: self.service,
            protocols: Arc::new(Protocols::new(options.http, &options)),
            tls,
            header_read_timeout: options.header_read_timeout,
            request_body_timeout: options.timeout_request_body,
            keep_alive_timeout: options.timeout_keep_alive,
            access_log: options.access_log,
            access_log_format: options.access_log_format.clone(),
            request_spans: options.request_spans,
            proxy_headers: options.proxy_headers.clone().map(Arc::new),
            alt_svc: None,
            budget: options
                .limit_max_requests
                .map(|limit| Arc::new(RequestBudget::new(limit, self.handle.clone()))),
            health: options.health_path.clone().map(|path| {
                let draining = python.shutdown_stages().draining.clone();
                Arc::new(Health::new(path, draining, loop_watch.clone()))
            }),
            shutdown: python.shutdown_stages().clone(),
        };
        let connections = setup.shutdown.tasks.clone();
        let mut accepting = tokio::task::JoinSet::new();
        for listener in listeners {
            let mut setup = setup.clone();
            if let (true, ServerAddress::Tcp(address)) = (options.http3, listener.address()) {
                setup.alt_svc = Some(http3::alt_svc(address.port()));
            }
            accepting.spawn_on(accept_loop(listener, setup), &runtime);
        }
        // Tracked with the connections rather than aborted with the accept loops: an
        // endpoint drains its connections itself (GOAWAY), and shutdown waits for it.
        for endpoint in endpoints {
            connections.spawn_on(
                endpoint.serve(setup.clone(), options.max_header_bytes, options.date_header),
                &runtime,
            );
        }
        accepting.spawn_on(timer_heartbeat(), &runtime);
        let loop_died = tokio::select! {
            () = shutdown_signal(self.handle.subscribe_shutdown(), options.signals) => false,
            () = python.loop_died() => true,
        };
        // Ending the accept loops drops the listeners (and removes Unix socket files).
        accepting.abort_all();
        while accepting.join_next().await.is_some() {}
        if loop_died {
            // Requests still waiting on Python would wait forever: cut them off.
            setup.shutdown.draining.cancel();
            setup.shutdown.closing.cancel();
            connections.close();
            connections.wait().await;
            stop_python(python).await;
            return Err(Error::new(
                ErrorKind::LoopDied,
                "the Python event loop stopped unexpectedly (see the error above); exiting",
            ));
        }
        tracing::info!("shutting down: no new connections, waiting for in-flight requests");
        setup.shutdown.draining.cancel();
        connections.close();
        match options.timeout_graceful_shutdown {
            Some(timeout) => {
                if tokio::time::timeout(timeout, connections.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "graceful shutdown timed out after {timeout:?}; closing remaining connections"
                    );
                }
            }
            None => connections.wait().await,
        }
        // Dropping a connection drops its requests: their apps get `http.disconnect`.
        setup.shutdown.closing.cancel();
        connections.wait().await;
        // Let those apps see it and return (or cancel them) before lifespan shutdown.
        if !python.finish_apps(APP_EXIT_GRACE).await {
            tracing::warn!("some request tasks did not end after cancellation");
        }
        let result = lifespan.shutdown().await.map_err(|message| {
            Error::new(
                ErrorKind::LifespanShutdown,
                format!("Application shutdown failed:\n{message}"),
            )
        });
        stop_python(python).await;
        tracing::info!("server stopped");
        result
    }
}

/// Stops the loop thread. Joining it blocks, so it happens off the runtime's workers: the
/// wake-up that lets the loop see the stop request may be queued on this very worker.
async fn stop_python(python: PythonApp) {
    if tokio::task::spawn_blocking(move || python.stop())
        .await
        .is_err()
    {
        tracing::warn!("stopping the Python loop thread failed");
    }
}

/// A QUIC endpoint on the UDP port of every TCP listener (a Unix socket has none).
fn quic_endpoints(listeners: &[Listener], tls: &TlsEndpoint) -> Result<Vec<QuicEndpoint>, Error> {
    listeners
        .iter()
        .filter_map(|listener| match listener.address() {
            ServerAddress::Tcp(address) => Some(QuicEndpoint::bind(address, tls)),
            ServerAddress::Unix(_) => None,
        })
        .collect()
}

/// Opens every place to listen, uvicorn's `127.0.0.1:8000` when none is given.
fn listen(mut binds: Vec<Bind>, backlog: u32) -> Result<Vec<Listener>, Error> {
    if binds.is_empty() {
        binds.push(Bind::Tcp(format!("{}:{}", defaults::HOST, defaults::PORT)));
    }
    binds
        .into_iter()
        .map(|bind| {
            let description = bind.to_string();
            bind.open(backlog)?.into_listener().map_err(|err| {
                Error::with_source(
                    ErrorKind::Bind,
                    format!("cannot listen on {description}"),
                    err,
                )
            })
        })
        .collect()
}

async fn shutdown_signal(mut requested: watch::Receiver<bool>, signals: bool) {
    if !signals {
        let _ = requested.wait_for(|stop| *stop).await;
        return;
    }
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

/// Keeps a timer due within the next second registered with Tokio's time driver.
///
/// Tokio wakes its parked I/O driver (an eventfd write, then an extra `epoll_wait`) whenever
/// a timer is armed that expires before every other registered one. hyper arms a
/// header-read timer for each request, so with a single client every request paid for that
/// wake-up; with this heartbeat registered, those 30-second timers are never the earliest.
async fn timer_heartbeat() {
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    loop {
        heartbeat.tick().await;
    }
}

async fn accept_loop<S, B>(listener: Listener, setup: ConnectionSetup<S>)
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
    let server = Some(listener.address());
    let secure = setup.tls.is_some();
    let mut errors = AcceptErrors::default();
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                errors.failed(&err);
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        errors.accepted();
        let connection = ConnectionInfo {
            client,
            server,
            secure,
        };
        setup
            .shutdown
            .tasks
            .spawn(setup.clone().serve(stream, connection));
    }
}
