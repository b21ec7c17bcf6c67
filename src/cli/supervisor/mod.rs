//! `--workers N` (and `--reload`): a supervising parent process and its worker processes.
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
//! for the workers too ("exit now"), exactly as with a single process.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::reload::FileWatcher;
use crate::ServerHandle;
use crate::error::{Error, ErrorKind};
use crate::server::{BoundSocket, inherited_socket};

/// Hidden flag carrying the listening sockets a worker inherits.
pub(super) const LISTEN_FDS_FLAG: &str = "--worker-listen-fds";
/// Hidden flag carrying the worker's end of its lifeline.
pub(super) const LIFELINE_FD_FLAG: &str = "--worker-lifeline-fd";

/// The first wait before restarting a worker that crashed; doubled for each crash in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A worker that ran this long before crashing resets the back-off: it was healthy.
const HEALTHY_UPTIME: Duration = Duration::from_secs(10);

/// Starts, watches and replaces worker processes serving shared listening sockets.
pub(super) struct Supervisor {
    program: PathBuf,
    args: Vec<OsString>,
    workers: usize,
    sockets: Vec<BoundSocket>,
    reload: Option<FileWatcher>,
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
        }
    }

    /// Development mode: restart the workers whenever `watcher` reports a change, and wait
    /// for the next change instead of retrying a worker that fails.
    pub(super) fn reload_on(mut self, watcher: FileWatcher) -> Self {
        self.reload = Some(watcher);
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
        let mut terminate = signal(SignalKind::terminate())
            .map_err(|err| Error::with_source(ErrorKind::System, "cannot handle SIGTERM", err))?;
        let mut interrupt = signal(SignalKind::interrupt())
            .map_err(|err| Error::with_source(ErrorKind::System, "cannot handle SIGINT", err))?;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let mut state = State {
            launcher: Launcher {
                program: self.program.clone(),
                args: self.args.clone(),
                listen_fds: listen_fds.join(","),
                events: events_tx,
            },
            slots: (0..self.workers).map(|_| Slot::default()).collect(),
            phase: Phase::Starting,
            reloading: self.reload.is_some(),
            failure: None,
        };
        tracing::info!(
            "supervisor (pid {}) starting {} worker process{}",
            std::process::id(),
            self.workers,
            if self.workers == 1 { "" } else { "es" }
        );
        for slot in 0..self.workers {
            state.start(slot);
        }
        while !state.finished() {
            tokio::select! {
                Some(event) = events.recv() => state.handle(event),
                Some(()) = terminate.recv() => state.received(Signal::SIGTERM),
                Some(()) = interrupt.recv() => state.received(Signal::SIGINT),
                Some(changed) = next_change(&mut self.reload) => state.reload(&changed),
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

/// What the supervisor is doing, which decides what a worker's exit means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No worker has reported ready yet: a worker failing now fails the whole server.
    Starting,
    /// Workers that exit are replaced.
    Serving,
    /// A signal arrived: workers drain and are not replaced.
    Stopping,
}

#[derive(Default)]
struct Slot {
    /// The running worker, if any.
    pid: Option<u32>,
    /// Crashes in a row, for the back-off.
    crashes: u32,
    /// Set when the supervisor stopped this worker on purpose (reload): start the next one
    /// at once.
    replacing: bool,
}

enum Event {
    Ready {
        slot: usize,
    },
    Exited {
        slot: usize,
        pid: u32,
        status: io::Result<ExitStatus>,
        uptime: Duration,
    },
    /// A back-off has passed: start a worker in this slot again.
    Due {
        slot: usize,
    },
}

struct State {
    launcher: Launcher,
    slots: Vec<Slot>,
    phase: Phase,
    reloading: bool,
    /// Why the server gives up, when it does.
    failure: Option<String>,
}

impl State {
    fn finished(&self) -> bool {
        self.phase == Phase::Stopping && self.slots.iter().all(|slot| slot.pid.is_none())
    }

    /// Starts a worker in `slot`. Failing to start the first ones fails the server; later,
    /// it is retried after a back-off, like a crash (out of processes or memory passes).
    fn start(&mut self, slot: usize) {
        if self.phase == Phase::Stopping {
            return;
        }
        match self.launcher.spawn(slot) {
            Ok(pid) => {
                tracing::info!("started worker process {pid}");
                self.slots[slot].pid = Some(pid);
            }
            Err(err) if self.phase == Phase::Starting => {
                self.failure = Some(format!("cannot start a worker process: {err}"));
                self.stop(Signal::SIGTERM);
            }
            Err(err) => {
                let state = &mut self.slots[slot];
                state.crashes += 1;
                let backoff = backoff(state.crashes);
                tracing::error!(
                    "cannot start a worker process: {err}; trying again in {}ms",
                    backoff.as_millis()
                );
                self.launcher.due_after(slot, backoff);
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Ready { slot } => {
                self.slots[slot].crashes = 0;
                if self.phase == Phase::Starting {
                    self.phase = Phase::Serving;
                }
            }
            Event::Exited {
                slot,
                pid,
                status,
                uptime,
            } => self.exited(slot, pid, status, uptime),
            Event::Due { slot } => {
                if self.slots[slot].pid.is_none() {
                    self.start(slot);
                }
            }
        }
    }

    fn exited(&mut self, slot: usize, pid: u32, status: io::Result<ExitStatus>, uptime: Duration) {
        let state = &mut self.slots[slot];
        state.pid = None;
        let crashed = !matches!(&status, Ok(status) if status.success());
        let status = match status {
            Ok(status) => status.to_string(),
            Err(err) => format!("unknown status ({err})"),
        };
        if self.phase == Phase::Stopping {
            tracing::info!("worker process {pid} stopped ({status})");
            return;
        }
        if std::mem::take(&mut state.replacing) {
            return self.start(slot);
        }
        if crashed && self.reloading {
            tracing::error!(
                "worker process {pid} failed ({status}); waiting for a file change to restart"
            );
            return;
        }
        if crashed && self.phase == Phase::Starting {
            let message = format!("worker process {pid} failed to start ({status}); stopping");
            self.failure = Some(message);
            self.stop(Signal::SIGTERM);
            return;
        }
        if !crashed {
            // Recycled (--limit-max-requests): replace it at once.
            tracing::info!("worker process {pid} exited; starting a new one");
            return self.start(slot);
        }
        state.crashes = if uptime >= HEALTHY_UPTIME {
            1
        } else {
            state.crashes + 1
        };
        let backoff = backoff(state.crashes);
        tracing::warn!(
            "worker process {pid} died ({status}); starting a new one in {}ms",
            backoff.as_millis()
        );
        self.launcher.due_after(slot, backoff);
    }

    /// A signal for the server: every worker gets it too. A second SIGINT is a second
    /// SIGINT for the workers as well ("exit now").
    fn received(&mut self, signal: Signal) {
        if self.phase != Phase::Stopping {
            tracing::info!("received {signal}: stopping the workers");
        }
        self.stop(signal);
    }

    /// Sends `signal` to every worker; they drain and exit, and are not replaced.
    fn stop(&mut self, signal: Signal) {
        self.phase = Phase::Stopping;
        for pid in self.slots.iter().filter_map(|slot| slot.pid) {
            send_signal(pid, signal);
        }
    }

    /// A watched file changed: stop every worker to start a fresh one in its place.
    fn reload(&mut self, changed: &std::path::Path) {
        if self.phase == Phase::Stopping {
            return;
        }
        tracing::info!("{} changed: restarting", changed.display());
        for slot in 0..self.slots.len() {
            match self.slots[slot].pid {
                Some(pid) => {
                    self.slots[slot].replacing = true;
                    send_signal(pid, Signal::SIGTERM);
                }
                None => self.start(slot),
            }
        }
    }
}

fn backoff(crashes: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << crashes.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

fn send_signal(pid: u32, signal: Signal) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    if let Err(err) = kill(Pid::from_raw(pid), signal) {
        tracing::debug!("cannot send {signal} to worker process {pid}: {err}");
    }
}

/// Starts worker processes and reports what happens to them as [`Event`]s.
struct Launcher {
    program: PathBuf,
    args: Vec<OsString>,
    /// The inherited listening sockets, as the worker flag takes them: `3,4`.
    listen_fds: String,
    events: mpsc::UnboundedSender<Event>,
}

impl Launcher {
    fn spawn(&self, slot: usize) -> io::Result<u32> {
        let (supervisor_end, worker_end) = std::os::unix::net::UnixStream::pair()?;
        // Only the worker's end crosses `exec`. Workers are started one at a time from
        // this task, so no other child can inherit it in between.
        socket2::SockRef::from(&worker_end).set_cloexec(false)?;
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .arg(LISTEN_FDS_FLAG)
            .arg(&self.listen_fds)
            .arg(LIFELINE_FD_FLAG)
            .arg(worker_end.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()?;
        drop(worker_end);
        let pid = child.id().unwrap_or_default();
        supervisor_end.set_nonblocking(true)?;
        let mut lifeline = UnixStream::from_std(supervisor_end)?;
        let events = self.events.clone();
        tokio::spawn(async move {
            // One byte when the worker is ready; end-of-file if it exits before that.
            let mut ready = [0; 1];
            if matches!(lifeline.read(&mut ready).await, Ok(1)) {
                let _ = events.send(Event::Ready { slot });
            }
            let status = child.wait().await;
            let _ = events.send(Event::Exited {
                slot,
                pid,
                status,
                uptime: started.elapsed(),
            });
        });
        Ok(pid)
    }

    fn due_after(&self, slot: usize, delay: Duration) {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Due { slot });
        });
    }
}

/// A worker's end of its lifeline to the supervisor.
pub(super) struct Lifeline(UnixStream);

impl Lifeline {
    /// Takes the descriptor given with the lifeline flag. Call inside a Tokio runtime.
    pub(super) fn inherited(fd: RawFd) -> Result<Self, Error> {
        let socket = std::os::unix::net::UnixStream::from(inherited_socket(fd)?);
        socket
            .set_nonblocking(true)
            .and_then(|()| UnixStream::from_std(socket))
            .map(Lifeline)
            .map_err(|err| {
                Error::with_source(
                    ErrorKind::System,
                    "cannot use the supervisor's lifeline",
                    err,
                )
            })
    }

    /// Reports `server` ready to the supervisor once it is, and shuts it down gracefully if
    /// the supervisor goes away.
    pub(super) async fn attend(self, server: ServerHandle) {
        let (mut from_supervisor, mut to_supervisor) = self.0.into_split();
        // The supervisor never writes: a read returns only when it is gone.
        let mut gone = [0; 1];
        let ready = tokio::select! {
            _ = server.ready() => true,
            _ = from_supervisor.read(&mut gone) => false,
        };
        if ready {
            let _ = to_supervisor.write_all(b"r").await;
            let _ = from_supervisor.read(&mut gone).await;
        }
        tracing::warn!("the supervisor has gone: shutting down");
        server.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_from_a_tenth_of_a_second_up_to_ten_seconds() {
        let waits: Vec<_> = (1..=9)
            .map(|crashes| backoff(crashes).as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
