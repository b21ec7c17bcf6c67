//! One thread for the sockets and Python ([`RuntimeMode::Single`]): a Tokio current-thread
//! runtime, run by the loop thread as the asyncio loop's selector.
//!
//! `support.TokioSelector` is asyncio's own epoll selector whose `select(timeout)` calls
//! [`Driver::run`]. With the GIL released, that runs the runtime holding the server's
//! connections until asyncio's own descriptors are ready (the selector's epoll descriptor,
//! watched by Tokio's reactor), the timeout passes, or a connection queued a request for
//! Python; then, with the GIL back, it starts the queued requests (each task's first step
//! runs at once: `EventLoop::run_job`) and returns to asyncio, which runs the rest in the
//! same pass. A request therefore crosses no thread: hyper reads it, the app runs and hyper
//! writes the answer, all on this one thread.
//!
//! Responses the app finished in a pass are handed to their connections at the start of the
//! next [`Driver::run`], inside the runtime, so waking a connection is a push onto the
//! runtime's local queue rather than a wake-up through its driver; they write before the run
//! goes on. A response finished while no other request runs has nothing to wait for:
//! [`Driver::hand_back_now`] runs the runtime from the app's step just long enough for its
//! connection to write it, and the rest of the step and of the loop's pass runs while the
//! client reads it (one connection: +4–5 % req/s, paired runs).
//!
//! A run that starts idle lets the first request a connection reads start at once, from
//! inside that connection's poll ([`take_inline_turn`], `EventLoop::run_inline`): an app
//! that answers without waiting is answered before the poll returns, and the rest of the
//! run, and of the loop's pass, comes after the response is out.

use std::cell::Cell;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use pyo3::prelude::*;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// Where the socket work runs relative to Python.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum RuntimeMode {
    /// Sockets, TLS, hyper and Rust routes on the loop thread with Python: no thread
    /// hand-off on a request's path. Rust routes wait while Python runs; the app runs on
    /// asyncio's own loop (uvloop cannot take a selector).
    Single,
    /// Sockets, TLS, hyper and Rust routes on Tokio's worker threads, Python on the loop
    /// thread: Rust routes run in parallel with Python.
    #[default]
    Split,
}

/// How many connection polls the runtime runs before it looks at whether requests were
/// queued, so at most about this many requests start in one pass of the asyncio loop
/// (Tokio's own default is 61). While a request's task was queued for the next pass, each
/// started request kept its scope, task and messages alive until that pass, and with 61 or
/// more in flight Python's young-generation collections ran and found them all alive, so
/// this was 48. Since a task's first step runs as soon as its request starts
/// (`EventLoop::run_job`), a request answered in that step is gone before the next starts,
/// and no collection runs at any size: 128 measured +6 % req/s against 48 on raw hello and
/// Starlette at 256 connections (paired; 96 was 0.8 % short of 128, 192 below 96), +8 % on
/// h2c 50 × 10, with p99 level or better; 50 connections, FastAPI, raw echo and the app
/// doing socket round trips level. Fewer than 32 cost throughput: each batch ends with a
/// poll of the sockets.
pub(super) const TASKS_BETWEEN_PASSES: u32 = 128;

/// A response finished by the app, to give to its connection.
pub(super) type HandBackFn = Box<dyn FnOnce() + Send>;

/// What feeds the driver: the job queue of the loop thread.
pub(super) trait Feed: Send + Sync {
    /// Swaps the responses finished since the last call into `into`, which is empty.
    fn take_hand_backs(&mut self, py: Python<'_>, into: &mut Vec<HandBackFn>);
    /// Runs every queued job (starting requests' app tasks); raises what must stop the
    /// loop's pass (`SystemExit`, `KeyboardInterrupt`).
    fn start_queued(&mut self, py: Python<'_>) -> PyResult<()>;
}

/// The Rust half of `support.TokioSelector`. Sendable: the asyncio loop holding it may be
/// collected on another thread (after a failed import), by then without its runtime.
#[pyclass]
pub(super) struct Driver {
    runtime: Option<tokio::runtime::Runtime>,
    /// The selector's epoll descriptor, registered with the runtime's reactor.
    asyncio_fds: Option<AsyncFd<OwnedFd>>,
    /// Notified when a job is queued for Python.
    queued: Arc<Notify>,
    feed: Box<dyn Feed>,
    /// Swapped with the finished responses on each run, so neither side reallocates. A
    /// `Mutex` only so that the pyclass is `Sync`: `run` has `&mut self` and never locks.
    hand_backs: Mutex<Vec<HandBackFn>>,
}

impl Driver {
    pub(super) fn new(
        runtime: tokio::runtime::Runtime,
        queued: Arc<Notify>,
        feed: Box<dyn Feed>,
    ) -> Self {
        Driver {
            runtime: Some(runtime),
            asyncio_fds: None,
            queued,
            feed,
            hand_backs: Mutex::new(Vec::with_capacity(256)),
        }
    }

    /// Gives a finished response to its connection and lets the connection write it, from a
    /// step of the loop (not inside [`Driver::run`]).
    pub(super) fn hand_back_now(&mut self, py: Python<'_>, hand_back: HandBackFn) {
        let Some(runtime) = &self.runtime else {
            return hand_back();
        };
        py.detach(|| {
            runtime.block_on(async move {
                hand_back();
                tokio::task::yield_now().await;
            });
        });
    }

    /// Takes the runtime out, to be dropped after the asyncio loop has ended (dropping it
    /// drops the connections still there).
    pub(super) fn take_runtime(&mut self) -> Option<tokio::runtime::Runtime> {
        self.asyncio_fds = None;
        self.runtime.take()
    }
}

#[pymethods]
impl Driver {
    /// Watches the selector's epoll descriptor (level-triggered inside, so it stays readable
    /// while asyncio has a ready descriptor).
    fn watch(&mut self, epoll_fd: RawFd) -> PyResult<()> {
        let Some(runtime) = &self.runtime else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "the server's runtime has stopped",
            ));
        };
        // SAFETY: the selector's descriptor is open while it calls `watch`.
        let epoll = unsafe { BorrowedFd::borrow_raw(epoll_fd) }.try_clone_to_owned()?;
        let _entered = runtime.enter();
        // SAFETY: the registration owns its duplicate, which stays open as long as it does.
        let registered = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) };
        self.asyncio_fds = Some(registered.map_err(std::io::Error::from)?);
        Ok(())
    }

    /// Stops watching, as the selector closes.
    fn unwatch(&mut self) {
        self.asyncio_fds = None;
    }

    /// Runs the server's connections for up to `timeout` seconds (`None`: as long as
    /// nothing else happens), then starts the requests they queued. Returns asyncio's
    /// ready descriptors as `(fd, selector events)`, as `EpollSelector.select` reads them.
    fn run(&mut self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Vec<(RawFd, u8)>> {
        let (Some(runtime), Some(asyncio_fds)) = (&self.runtime, &self.asyncio_fds) else {
            return Ok(Vec::new());
        };
        let hand_backs = self
            .hand_backs
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.feed.take_hand_backs(py, hand_backs);
        let timeout = timeout.map(|seconds| Duration::from_secs_f64(seconds.max(0.0)));
        let queued = &self.queued;
        // Only a loop with nothing else to do starts a request inline; a busy one starts
        // those read together in one pass.
        let answered = !hand_backs.is_empty();
        let idle = !answered && timeout != Some(Duration::ZERO);
        let ready = py.detach(|| {
            let _running = RunningHere::enter(queued, idle);
            runtime.block_on(async move {
                hand_backs.drain(..).for_each(|hand_back| hand_back());
                // The answered connections write before anything else runs.
                if timeout == Some(Duration::ZERO) || answered {
                    tokio::task::yield_now().await;
                }
                if timeout == Some(Duration::ZERO) {
                    return ready_now(asyncio_fds);
                }
                let ready = ready_now(asyncio_fds);
                if !ready.is_empty() {
                    tokio::task::yield_now().await;
                    return ready;
                }
                let sleep = async {
                    match timeout {
                        Some(timeout) => tokio::time::sleep(timeout).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    () = queued.notified() => Vec::new(),
                    _ = asyncio_fds.readable() => ready_now(asyncio_fds),
                    () = sleep => Vec::new(),
                }
            })
        });
        self.feed.start_queued(py)?;
        Ok(ready)
    }
}

thread_local! {
    /// The `queued` notifier of the driver whose connections run on this thread, while
    /// [`Driver::run`] runs them (the GIL released), and whether a job may still run inline
    /// in that run.
    static RUNNING: Cell<(*const Notify, bool)> = const { Cell::new((std::ptr::null(), false)) };
}

/// Whether a job queued now may run at once, taking the GIL back: the driver notified
/// through `queued` is running its connections on this thread, it started idle, and no
/// job has run inline in this run yet. The first request after a wait starts without
/// waiting for anything; under load, the requests read together start together, in one
/// pass of the asyncio loop (started one by one, 50 connections lost 5 %).
pub(super) fn take_inline_turn(queued: &Arc<Notify>) -> bool {
    RUNNING.with(|running| {
        let (driver, turn) = running.get();
        let mine = turn && std::ptr::eq(driver, Arc::as_ptr(queued));
        if mine {
            running.set((driver, false));
        }
        mine
    })
}

/// Marks this thread as running `queued`'s connections until dropped.
struct RunningHere((*const Notify, bool));

impl RunningHere {
    fn enter(queued: &Arc<Notify>, inline_turn: bool) -> Self {
        RunningHere(RUNNING.with(|running| running.replace((Arc::as_ptr(queued), inline_turn))))
    }
}

impl Drop for RunningHere {
    fn drop(&mut self) {
        RUNNING.with(|running| running.set(self.0));
    }
}

/// How many ready descriptors one pass takes; more stay ready (level-triggered) for the next.
const MAX_EVENTS: usize = 256;

/// asyncio's ready descriptors. Tokio's readiness of the epoll descriptor is
/// edge-triggered: set when an event arrives, kept until cleared. It is cleared here once the
/// epoll descriptor is found empty (only if nothing arrived since Tokio reported it, which
/// Tokio tracks), so while it is clear nothing is ready and no system call is needed to know.
fn ready_now(asyncio_fds: &AsyncFd<OwnedFd>) -> Vec<(RawFd, u8)> {
    let Some(Ok(mut readiness)) = asyncio_fds.readable().now_or_never() else {
        return Vec::new();
    };
    let ready = ready_events(asyncio_fds.as_raw_fd());
    if ready.is_empty() {
        readiness.clear_ready();
    }
    ready
}

/// The ready descriptors of the level-triggered epoll `fd`, without waiting, with their
/// events as `selectors` names them (`EVENT_READ` 1, `EVENT_WRITE` 2). Reading an event of
/// a level-triggered registration leaves it ready.
fn ready_events(fd: RawFd) -> Vec<(RawFd, u8)> {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
    // SAFETY: `events` is valid for MAX_EVENTS entries; a zero timeout never blocks.
    let count = unsafe { libc::epoll_wait(fd, events.as_mut_ptr(), MAX_EVENTS as i32, 0) };
    let count = usize::try_from(count).unwrap_or(0);
    events[..count]
        .iter()
        .map(|event| {
            let mask = event.events;
            let write = u8::from(mask & !(libc::EPOLLIN as u32) != 0) << 1;
            let read = u8::from(mask & !(libc::EPOLLOUT as u32) != 0);
            // Python's epoll registers each descriptor with itself as the event's data.
            (event.u64 as RawFd, read | write)
        })
        .collect()
}
