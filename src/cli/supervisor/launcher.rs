//! Starting worker processes, and reporting what becomes of them as [`Event`]s.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::recycle::resident_bytes;

/// Hidden flag carrying the listening sockets a worker inherits.
pub(crate) const LISTEN_FDS_FLAG: &str = "--worker-listen-fds";
/// Hidden flag carrying the worker's end of its lifeline.
pub(crate) const LIFELINE_FD_FLAG: &str = "--worker-lifeline-fd";
/// Hidden flag carrying the metrics listener of the worker's slot (`--metrics-bind`).
pub(crate) const METRICS_FD_FLAG: &str = "--worker-metrics-fd";

/// What happened to a worker process (or to a slot's back-off).
pub(super) enum Event {
    /// The worker finished lifespan startup and serves.
    Ready { slot: usize, pid: u32 },
    Exited {
        slot: usize,
        pid: u32,
        status: io::Result<ExitStatus>,
        uptime: Duration,
    },
    /// A back-off has passed: start a worker in this slot again.
    Due { slot: usize },
}

/// What the supervisor's state machine asks of the worker processes: the [`Launcher`], or
/// a recording fake in its tests.
pub(super) trait Processes {
    /// Starts a worker in `slot`; its pid. What becomes of it arrives as [`Event`]s.
    fn spawn(&mut self, slot: usize) -> io::Result<u32>;
    /// Reports [`Event::Due`] for `slot` after `delay`.
    fn due_after(&mut self, slot: usize, delay: Duration);
    fn signal(&mut self, pid: u32, signal: Signal);
    /// The resident memory of the worker `pid`, in bytes; `None` once it has gone.
    fn resident(&self, pid: u32) -> Option<u64>;
}

/// Starts worker processes and reports what happens to them as [`Event`]s.
pub(super) struct Launcher {
    pub(super) program: PathBuf,
    pub(super) args: Vec<OsString>,
    /// The inherited listening sockets, as the worker flag takes them: `3,4`.
    pub(super) listen_fds: String,
    /// With `--metrics-bind`, each slot's metrics listener, handed to every worker of
    /// that slot in turn.
    pub(super) metrics: Vec<socket2::Socket>,
    pub(super) events: mpsc::UnboundedSender<Event>,
}

impl Processes for Launcher {
    fn spawn(&mut self, slot: usize) -> io::Result<u32> {
        let (supervisor_end, worker_end) = std::os::unix::net::UnixStream::pair()?;
        // Only the worker's own descriptors cross `exec` (the listening sockets cross for
        // every worker). Workers are started one at a time from this task, so no other
        // child can inherit them in between.
        socket2::SockRef::from(&worker_end).set_cloexec(false)?;
        let metrics = match self.metrics.get(slot) {
            Some(listener) => {
                let inherited = listener.try_clone()?;
                inherited.set_cloexec(false)?;
                Some(inherited)
            }
            None => None,
        };
        let started = Instant::now();
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .arg(LISTEN_FDS_FLAG)
            .arg(&self.listen_fds)
            .arg(LIFELINE_FD_FLAG)
            .arg(worker_end.as_raw_fd().to_string());
        if let Some(metrics) = &metrics {
            command
                .arg(METRICS_FD_FLAG)
                .arg(metrics.as_raw_fd().to_string());
        }
        let mut child = command.stdin(Stdio::null()).process_group(0).spawn()?;
        drop((worker_end, metrics));
        let pid = child.id().unwrap_or_default();
        supervisor_end.set_nonblocking(true)?;
        let mut lifeline = UnixStream::from_std(supervisor_end)?;
        let events = self.events.clone();
        tokio::spawn(async move {
            // One byte when the worker is ready; end-of-file if it exits before that.
            let mut ready = [0; 1];
            if matches!(lifeline.read(&mut ready).await, Ok(1)) {
                let _ = events.send(Event::Ready { slot, pid });
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

    fn due_after(&mut self, slot: usize, delay: Duration) {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Due { slot });
        });
    }

    fn signal(&mut self, pid: u32, signal: Signal) {
        let Ok(pid) = i32::try_from(pid) else {
            return;
        };
        if let Err(err) = kill(Pid::from_raw(pid), signal) {
            tracing::debug!("cannot send {signal} to worker process {pid}: {err}");
        }
    }

    fn resident(&self, pid: u32) -> Option<u64> {
        resident_bytes(pid)
    }
}
