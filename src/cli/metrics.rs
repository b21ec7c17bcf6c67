//! `--metrics-bind`: serving `/metrics` on a listener of its own, in a single process, a
//! worker (on the listener its supervisor handed over for its slot) or the supervisor.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::RawFd;

use tokio::signal::unix::{SignalKind, signal};

use crate::ServerHandle;
use crate::error::{Error, ErrorKind};
use crate::metrics::Metrics;
use crate::server::inherited_socket;

/// Binds `address` for `/metrics`.
pub(super) fn bind(address: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(address).map_err(|err| {
        Error::with_source(
            ErrorKind::Bind,
            format!("cannot listen on {address} (--metrics-bind)"),
            err,
        )
    })
}

/// Serves `metrics` on `listener`, on the current Tokio runtime, for as long as the process
/// runs; `what` names them in the log line that says where they are.
pub(super) fn serve(listener: TcpListener, metrics: &Metrics, what: &str) -> Result<(), Error> {
    let listener = registered(listener)?;
    if let Ok(local) = listener.local_addr() {
        tracing::info!("{what} on http://{local}/metrics");
    }
    tokio::spawn(serve_until(
        listener,
        metrics.clone(),
        std::future::pending(),
    ));
    Ok(())
}

/// A single process: binds `address` and serves every series from before the app starts.
pub(super) fn serve_process(address: SocketAddr) -> Result<(), Error> {
    let listener = bind(address)?;
    serve(listener, &Metrics::install()?, "metrics")
}

/// A worker's metrics listener: the one of its slot, handed over by its supervisor.
pub(super) struct WorkerMetrics {
    listener: tokio::net::TcpListener,
    metrics: Metrics,
}

impl WorkerMetrics {
    /// Takes the listener `fd` and installs the recorder; call it before the app starts.
    pub(super) fn inherited(fd: RawFd) -> Result<Self, Error> {
        let listener = registered(TcpListener::from(inherited_socket(fd)?))?;
        let metrics = Metrics::install()?;
        Ok(WorkerMetrics { listener, metrics })
    }

    /// Serves the series from when `server` is ready until the worker is told to stop.
    /// The slot's previous worker stops answering there when it is told to drain, so a
    /// scrape sees one worker's counters at a time (a replacement starting up would
    /// otherwise answer with counters near zero in between the old one's).
    pub(super) fn serve(self, server: ServerHandle) -> Result<(), Error> {
        let stopping = stopping(&server)?;
        tokio::spawn(async move {
            server.ready().await;
            serve_until(self.listener, self.metrics, stopping).await;
        });
        Ok(())
    }
}

/// Resolves when this worker is told to stop: SIGTERM, SIGINT, or a shutdown of `server`
/// (`--limit-max-requests`, the supervisor gone).
fn stopping(server: &ServerHandle) -> Result<impl Future<Output = ()> + Send + use<>, Error> {
    let cannot = |err| Error::with_source(ErrorKind::System, "cannot handle signals", err);
    let mut terminate = signal(SignalKind::terminate()).map_err(cannot)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(cannot)?;
    let mut shutdown = server.subscribe_shutdown();
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    })
}

fn registered(listener: TcpListener) -> Result<tokio::net::TcpListener, Error> {
    let cannot = |err| Error::with_source(ErrorKind::Bind, "cannot serve --metrics-bind", err);
    listener.set_nonblocking(true).map_err(cannot)?;
    tokio::net::TcpListener::from_std(listener).map_err(cannot)
}

async fn serve_until(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let served = axum::serve(listener, metrics.router())
        .with_graceful_shutdown(stop)
        .await;
    if let Err(err) = served {
        tracing::error!("the metrics listener failed: {err}");
    }
}
