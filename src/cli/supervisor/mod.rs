//! `--workers N` (and `--reload`, `--workers-max-rss`, `--workers-lifetime`): a supervising
//! parent process and its worker processes.
//!
//! The parent binds the listening sockets and never starts Python. It starts each worker by
//! running its own executable again with the original arguments, plus the inherited socket
//! descriptors and one end of a *lifeline* (a socket pair) on the command line. Each worker
//! is a complete server (its own interpreter, loop thread and Tokio runtime) accepting on the
//! shared sockets, so the kernel spreads connections across them.
//!
//! The lifeline carries the worker's one message, "ready" (lifespan startup done), and tells
//! a worker its supervisor has gone: if the parent dies without forwarding a signal, the
//! worker reads end-of-file and drains on its own instead of serving forever, orphaned.
//!
//! Workers run in their own process group, so a Ctrl-C at the terminal reaches only the
//! parent, which forwards it once to every worker: a second Ctrl-C is then a second signal
//! for the workers too ("exit now"), exactly as with a single process. SIGHUP is the
//! supervisor's own: it replaces every worker, one at a time (`state.rs`).

mod launcher;
mod lifeline;
mod metrics;
mod recycle;
mod state;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use self::launcher::Launcher;
pub(super) use self::launcher::{LIFELINE_FD_FLAG, LISTEN_FDS_FLAG, METRICS_FD_FLAG};
pub(super) use self::lifeline::Lifeline;
pub(super) use self::metrics::{MetricsListeners, slot_addresses};
pub(super) use self::recycle::Limits;
use self::state::State;
use super::reload::FileWatcher;
use crate::error::{Error, ErrorKind};
use crate::server::BoundSocket;

/// How often `--workers-max-rss` and `--workers-lifetime` are checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Starts, watches and replaces worker processes serving shared listening sockets.
pub(super) struct Supervisor {
    program: PathBuf,
    args: Vec<OsString>,
    workers: usize,
    sockets: Vec<BoundSocket>,
    reload: Option<FileWatcher>,
    limits: Limits,
    metrics: Option<MetricsListeners>,
}

impl Supervisor {
    /// Workers run this program with `args` (the supervisor's own arguments) on `sockets`.
    pub(super) fn new(
        program: PathBuf,
        args: Vec<OsString>,
        workers: usize,
        sockets: Vec<BoundSocket>,
    ) -> Self {
        Supervisor {
            program,
            args,
            workers: workers.max(1),
            sockets,
            reload: None,
            limits: Limits::default(),
            metrics: None,
        }
    }

    /// Development mode: restart the workers whenever `watcher` reports a change, and wait
    /// for the next change instead of retrying a worker that fails.
    pub(super) fn reload_on(mut self, watcher: FileWatcher) -> Self {
        self.reload = Some(watcher);
        self
    }

    /// Replaces a worker past `limits` (`--workers-max-rss`, `--workers-lifetime`).
    pub(super) fn recycle(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// `--metrics-bind`: the supervisor's series on the first of `listeners`, and one
    /// listener per slot handed to its workers.
    pub(super) fn metrics(mut self, listeners: MetricsListeners) -> Self {
        self.metrics = Some(listeners);
        self
    }

    /// Supervises until SIGTERM/SIGINT and every worker has exited. Fails when the first
    /// workers cannot start (the app does not import, lifespan startup fails, …): restarting
    /// them would fail the same way.
    pub(super) async fn run(mut self) -> Result<(), Error> {
        let mut listen_fds = Vec::new();
        for socket in &self.sockets {
            let fd = socket.inheritable_fd().map_err(|err| {
                Error::with_source(ErrorKind::System, "cannot share the listening socket", err)
            })?;
            listen_fds.push(fd.to_string());
        }
        let handled = |kind| {
            signal(kind)
                .map_err(|err| Error::with_source(ErrorKind::System, "cannot handle signals", err))
        };
        let mut terminate = handled(SignalKind::terminate())?;
        let mut interrupt = handled(SignalKind::interrupt())?;
        let mut hangup = handled(SignalKind::hangup())?;
        let metrics = match self.metrics.take() {
            Some(listeners) => listeners.serve()?,
            None => Vec::new(),
        };
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let launcher = Launcher {
            program: self.program.clone(),
            args: self.args.clone(),
            listen_fds: listen_fds.join(","),
            metrics,
            events: events_tx,
        };
        let mut state = State::new(launcher, self.workers, self.limits, self.reload.is_some());
        let mut checks = self
            .limits
            .checked()
            .then(|| tokio::time::interval(CHECK_EVERY));
        tracing::info!(
            "supervisor (pid {}) starting {} worker process{}",
            std::process::id(),
            self.workers,
            if self.workers == 1 { "" } else { "es" }
        );
        state.start_all();
        while !state.finished() {
            metrics::report(state.census());
            tokio::select! {
                Some(event) = events.recv() => state.handle(event),
                Some(()) = terminate.recv() => state.received(Signal::SIGTERM),
                Some(()) = interrupt.recv() => state.received(Signal::SIGINT),
                Some(()) = hangup.recv() => state.hangup(),
                Some(changed) = next_change(&mut self.reload) => state.reload(&changed),
                () = next_check(&mut checks) => state.check_limits(Instant::now()),
            }
        }
        drop(self.sockets);
        match state.failure {
            Some(failure) => Err(Error::new(ErrorKind::System, failure)),
            None => {
                tracing::info!("all workers have exited");
                Ok(())
            }
        }
    }
}

async fn next_change(watcher: &mut Option<FileWatcher>) -> Option<PathBuf> {
    match watcher {
        Some(watcher) => watcher.changed().await,
        None => std::future::pending().await,
    }
}

async fn next_check(checks: &mut Option<tokio::time::Interval>) {
    match checks {
        Some(checks) => {
            checks.tick().await;
        }
        None => std::future::pending().await,
    }
}
