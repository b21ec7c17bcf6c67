//! The one thread that runs Python: an asyncio loop fed by a queue of jobs from Tokio.
//!
//! Tokio workers never take the GIL. They push a [`Job`] (Rust-owned data plus what to do
//! with it) onto a queue and, only when the queue was idle, arrange for one byte to be
//! written to a socket the loop watches with `add_reader`. The loop then drains every
//! queued job in that single wake-up, so under load many requests cost one wake-up.
//!
//! From a Tokio worker, that byte is written by a small task that first yields once: every
//! connection already ready on that worker queues its request before the loop thread is
//! woken. Writing at once instead woke the loop for about three requests at a time and cost
//! one thread switch per request (measured: 1.1 switches/request at 50 connections, 0.12
//! with the deferred write).
//!
//! The loop runs until [`EventLoop::stop`]. `SystemExit` or `KeyboardInterrupt` raised by an
//! app escape asyncio's `run_forever` after the app's task has recorded them, so the loop
//! just resumes and the request ends in a 500 like any other failure (as under uvicorn).
//! Any other end (the app called `loop.stop()`, a panic) is fatal: queued and future jobs are
//! dropped, which answers their requests with 500, and [`EventLoop::died`] tells the server
//! to exit with an error instead of hanging every request.

use std::cell::OnceCell;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySet};

use super::app_coroutine::{AppCoroutine, OnEnd};
use super::call_soon::FirstStep;
use super::driver::{self, Driver, Feed, HandBackFn, RuntimeMode};
use super::loader::{AppSpec, LoopKind, load_app, new_event_loop};
use super::request_task::RequestTasks;
use crate::error::{Error, ErrorKind};
use crate::signal::Signal;

/// Work for the loop thread; it runs with the GIL held, between two asyncio callbacks.
pub(super) type Job = Box<dyn for<'py> FnOnce(Python<'py>) + Send>;

/// Python objects created on the loop thread at start-up and used by every request.
pub(crate) struct LoopObjects {
    pub event_loop: Py<PyAny>,
    pub create_future: Py<PyAny>,
    tasks: RequestTasks,
    /// The ASGI 3 callable (ASGI 2 apps are wrapped at import time).
    pub app: Py<PyAny>,
    /// Lifespan state; every request scope gets a shallow copy.
    pub state: Py<PyDict>,
    /// The tasks of requests and websockets still running, so shutdown can cancel them.
    running: Py<PySet>,
    hand_back: Py<HandBack>,
    /// [`RuntimeMode::Single`]: the selector's driver, which runs the connections.
    driver: Option<Py<Driver>>,
}

struct Shared {
    queue: Mutex<Vec<Job>>,
    /// How many app tasks are running; `apps_idle` fires when it drops to zero.
    running_apps: AtomicUsize,
    apps_idle: tokio::sync::Notify,
    wake_scheduled: AtomicBool,
    wake: Wake,
    /// The runtime of the server's connections: Tokio's workers, or the loop thread's own
    /// ([`RuntimeMode::Single`]).
    runtime: tokio::runtime::Handle,
    objects: OnceLock<LoopObjects>,
    /// The asyncio loop belongs to the caller ([`EventLoop::attach`]): stopping only
    /// unregisters from it.
    attached: bool,
    /// Set by [`EventLoop::stop`]: the loop ending afterwards is expected.
    stopping: AtomicBool,
    /// Fired when the loop ended without being asked to.
    died: Signal,
    /// The loop thread's CPU-time clock, for how busy it is.
    cpu_clock: OnceLock<libc::clockid_t>,
    /// A job runs inline ([`EventLoop::run_inline`]); loop thread only.
    inline: AtomicBool,
    /// The first step of the request task the running job started, to run once the job
    /// is done.
    first_step: Mutex<Option<FirstStep>>,
    /// A `SystemExit` or `KeyboardInterrupt` a first step raised, to raise out of the loop
    /// once the queued jobs have run, as the loop's own pass would have.
    escaped: Mutex<Option<PyErr>>,
}

/// A cheap, cloneable handle to the loop thread.
#[derive(Clone)]
pub(crate) struct EventLoop {
    shared: Arc<Shared>,
}

impl EventLoop {
    /// Starts the loop thread, imports the app on it (so import-time code sees the running
    /// loop's thread and event loop) and returns once the app is loaded or failed to load.
    /// In [`RuntimeMode::Split`] the server's connections run on `runtime`; in
    /// [`RuntimeMode::Single`] on a runtime of the loop thread's own ([`EventLoop::runtime`]).
    pub(crate) fn start(
        spec: AppSpec,
        loop_kind: LoopKind,
        mode: RuntimeMode,
        runtime: tokio::runtime::Handle,
    ) -> Result<(EventLoop, JoinHandle<()>), Error> {
        let (event_loop, own_runtime) = match mode {
            RuntimeMode::Split => (EventLoop::new(runtime, Wake::eventfd()?, false), None),
            RuntimeMode::Single => {
                if loop_kind == LoopKind::Uvloop {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "uvloop cannot share its thread with the server's sockets: \
                         use --loop asyncio (or auto) with --runtime-mode single",
                    ));
                }
                let own = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .event_interval(driver::TASKS_BETWEEN_PASSES)
                    .build()
                    .map_err(|err| {
                        Error::with_source(ErrorKind::System, "cannot start the Tokio runtime", err)
                    })?;
                let wake = Wake::Driver(Arc::new(tokio::sync::Notify::new()));
                (EventLoop::new(own.handle().clone(), wake, false), Some(own))
            }
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_loop = event_loop.clone();
        let thread = std::thread::Builder::new()
            .name("asgi-loop".into())
            .spawn(move || {
                Python::attach(|py| {
                    let driver = match (own_runtime, &thread_loop.shared.wake) {
                        (Some(own), Wake::Driver(queued)) => {
                            let feed = Box::new(DriverFeed {
                                event_loop: thread_loop.clone(),
                                batch: Mutex::new(Vec::with_capacity(256)),
                            });
                            match Bound::new(py, Driver::new(own, queued.clone(), feed)) {
                                Ok(driver) => Some(driver),
                                Err(err) => {
                                    let message = super::format_traceback(py, &err);
                                    let _ = ready_tx
                                        .send(Err(Error::new(ErrorKind::Interpreter, message)));
                                    return;
                                }
                            }
                        }
                        _ => None,
                    };
                    let prepared =
                        new_event_loop(py, loop_kind, driver.as_ref()).and_then(|asyncio_loop| {
                            thread_loop.prepare(py, asyncio_loop, driver.as_ref(), &spec)
                        });
                    match prepared {
                        Ok(run_forever) => {
                            let _ = ready_tx.send(Ok(()));
                            thread_loop.run(py, &run_forever);
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                        }
                    }
                    // Dropping the runtime drops the connections still on it; without the
                    // GIL, as they may be waiting for it.
                    if let Some(runtime) =
                        driver.and_then(|driver| driver.borrow_mut().take_runtime())
                    {
                        py.detach(move || runtime.shutdown_background());
                    }
                })
            })
            .map_err(|err| {
                Error::with_source(ErrorKind::Interpreter, "cannot start the loop thread", err)
            })?;
        event_loop.spawn_deferred_wake();
        // A caller inside Python (an extension module) holds the GIL the loop thread needs.
        match super::without_gil(move || ready_rx.recv()) {
            Ok(Ok(())) => Ok((event_loop, thread)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::new(
                ErrorKind::Interpreter,
                "the loop thread died while starting",
            )),
        }
    }

    /// The CPU time the loop thread has used so far; `None` once it has ended (or where the
    /// system has no thread CPU clocks). Comparing two readings tells how busy it was.
    pub(crate) fn cpu_time(&self) -> Option<Duration> {
        let clock = *self.shared.cpu_clock.get()?;
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid out-pointer; a clock of an ended thread fails with EINVAL.
        if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
            return None;
        }
        let nanos = u32::try_from(now.tv_nsec).ok()?;
        Some(Duration::new(u64::try_from(now.tv_sec).ok()?, nanos))
    }

    /// Serves the app on the asyncio loop running on the calling thread instead of a loop
    /// thread of its own: the loop belongs to the caller, who keeps running it (an
    /// `await` in an asyncio program). Imports the app on this thread.
    pub(crate) fn attach(
        py: Python<'_>,
        spec: AppSpec,
        runtime: tokio::runtime::Handle,
    ) -> Result<EventLoop, Error> {
        let asyncio_loop = py
            .import("asyncio")
            .and_then(|asyncio| asyncio.call_method0("get_running_loop"))
            .map_err(|_| {
                Error::new(
                    ErrorKind::Interpreter,
                    "serving on the running asyncio loop needs one running on this thread",
                )
            })?;
        let event_loop = EventLoop::new(runtime, Wake::eventfd()?, true);
        event_loop.prepare(py, asyncio_loop, None, &spec)?;
        event_loop.spawn_deferred_wake();
        Ok(event_loop)
    }

    fn new(runtime: tokio::runtime::Handle, wake: Wake, attached: bool) -> EventLoop {
        EventLoop {
            shared: Arc::new(Shared {
                queue: Mutex::new(Vec::with_capacity(256)),
                running_apps: AtomicUsize::new(0),
                apps_idle: tokio::sync::Notify::new(),
                wake_scheduled: AtomicBool::new(false),
                wake,
                runtime,
                objects: OnceLock::new(),
                attached,
                stopping: AtomicBool::new(false),
                died: Signal::new(),
                cpu_clock: OnceLock::new(),
                inline: AtomicBool::new(false),
                first_step: Mutex::new(None),
                escaped: Mutex::new(None),
            }),
        }
    }

    /// The Tokio task that writes the deferred wake-ups (see [`EventLoop::submit`]).
    fn spawn_deferred_wake(&self) {
        let Wake::Eventfd { wake_soon, .. } = &self.shared.wake else {
            return;
        };
        let deferred = self.clone();
        let wake_soon = wake_soon.clone();
        self.shared.runtime.spawn(async move {
            loop {
                wake_soon.notified().await;
                // Let every connection that is ready now queue its request first.
                tokio::task::yield_now().await;
                deferred.wake_now();
            }
        });
    }

    /// Makes the loop thread run the queued jobs as soon as it can.
    fn wake_now(&self) {
        match &self.shared.wake {
            Wake::Eventfd { waker, .. } => waker.wake(),
            Wake::Driver(queued) => queued.notify_one(),
        }
    }

    /// Runs on the thread of `event_loop`: imports the app, registers the waker; returns
    /// the loop's bound `run_forever`.
    fn prepare<'py>(
        &self,
        py: Python<'py>,
        event_loop: Bound<'py, PyAny>,
        driver: Option<&Bound<'py, Driver>>,
        spec: &AppSpec,
    ) -> Result<Bound<'py, PyAny>, Error> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: `pthread_self` is this live thread; `clock` is a valid out-pointer.
        if unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } == 0 {
            let _ = self.shared.cpu_clock.set(clock);
        }
        let app = load_app(py, spec)?;
        let setup = || -> PyResult<Bound<'py, PyAny>> {
            if let Wake::Eventfd { waker, .. } = &self.shared.wake {
                let drainer = Bound::new(
                    py,
                    Drainer {
                        event_loop: self.clone(),
                        batch: Vec::with_capacity(256),
                    },
                )?;
                event_loop.call_method1("add_reader", (waker.0.as_raw_fd(), drainer))?;
            }
            let hand_back = HandBack {
                pending: Vec::with_capacity(256),
                scheduled: false,
                call_soon: event_loop.getattr("call_soon")?.unbind(),
            };
            let objects = LoopObjects {
                hand_back: Py::new(py, hand_back)?,
                create_future: event_loop.getattr("create_future")?.unbind(),
                tasks: RequestTasks::new(&event_loop)?,
                event_loop: event_loop.clone().unbind(),
                app,
                state: PyDict::new(py).unbind(),
                running: PySet::empty(py)?.unbind(),
                driver: driver.map(|driver| driver.clone().unbind()),
            };
            if self.shared.objects.set(objects).is_err() {
                unreachable!("the loop objects are set once, on the loop thread");
            }
            event_loop.getattr("run_forever")
        };
        setup().map_err(|err| Error::new(ErrorKind::Interpreter, super::format_traceback(py, &err)))
    }

    /// Runs the asyncio loop until [`EventLoop::stop`] (see the module documentation).
    fn run(&self, py: Python<'_>, run_forever: &Bound<'_, PyAny>) {
        loop {
            let outcome = run_forever.call0();
            let stopping = self.shared.stopping.load(Ordering::Acquire);
            match outcome {
                Err(err)
                    if !stopping
                        && (err.is_instance_of::<PySystemExit>(py)
                            || err.is_instance_of::<PyKeyboardInterrupt>(py)) =>
                {
                    continue;
                }
                Err(err) => tracing::error!(
                    "the asyncio loop stopped with an error:\n{}",
                    super::format_traceback(py, &err)
                ),
                Ok(_) if !stopping => {
                    tracing::error!("the asyncio loop was stopped by the app (loop.stop())")
                }
                Ok(_) => {}
            }
            if !stopping {
                self.shared.died.cancel();
                self.drop_queued_jobs();
            }
            return;
        }
    }

    /// Resolves if the loop thread ended without [`EventLoop::stop`]: nothing will run
    /// Python any more.
    pub(crate) async fn died(&self) {
        self.shared.died.cancelled().await;
    }

    /// Dropping a job drops its response sender, which answers its request with a 500.
    fn drop_queued_jobs(&self) {
        let jobs = std::mem::take(&mut *self.queue());
        drop(jobs);
    }

    fn queue(&self) -> MutexGuard<'_, Vec<Job>> {
        lock(&self.shared.queue)
    }

    /// Runs every queued job; the queue is swapped with `batch` so that neither side
    /// reallocates under load. Raises what must stop the loop's pass, once all have run.
    fn run_queued(&self, py: Python<'_>, batch: &mut Vec<Job>) -> PyResult<()> {
        // Cleared before taking the queue: a job pushed after this point wakes the loop again.
        self.shared.wake_scheduled.store(false, Ordering::Release);
        std::mem::swap(&mut *self.queue(), batch);
        for job in batch.drain(..) {
            self.run_job(py, job);
        }
        match lock(&self.shared.escaped).take() {
            Some(escaped) => Err(escaped),
            None => Ok(()),
        }
    }

    /// Runs `job`, then the first step of the request task it started, if `call_soon` kept
    /// it ([`RequestTasks::create`]): the app starts now rather than on the loop's next pass,
    /// and one that answers without waiting is done before the next job runs, its task
    /// never queued. Jobs run from the loop's selector or from a callback, never inside a
    /// task, so the step finds no other task current, as a queued one would.
    fn run_job(&self, py: Python<'_>, job: Job) {
        job(py);
        let first_step = lock(&self.shared.first_step).take();
        if let Some(first_step) = first_step
            && let Err(escaped) = first_step.run(self.objects().event_loop.bind(py))
        {
            lock(&self.shared.escaped).get_or_insert(escaped);
        }
    }

    /// Queues a job for the loop thread, waking it only if it was idle; in
    /// [`RuntimeMode::Single`], from a connection on the loop thread, runs it at once.
    pub(crate) fn submit(&self, job: Job) {
        // A job queued by an inline one finds the turn taken: it is queued.
        if let Wake::Driver(queued) = &self.shared.wake
            && driver::take_inline_turn(queued)
        {
            return self.run_inline(job);
        }
        self.queue().push(job);
        // Checked after queueing: either the dying loop thread or this call drops the job.
        if self.shared.died.is_cancelled() {
            self.drop_queued_jobs();
            return;
        }
        if !self.shared.wake_scheduled.swap(true, Ordering::AcqRel) {
            match &self.shared.wake {
                Wake::Eventfd { wake_soon, .. }
                    if tokio::runtime::Handle::try_current().is_ok() =>
                {
                    wake_soon.notify_one();
                }
                _ => self.wake_now(),
            }
        }
    }

    /// Runs `job` on the loop thread from inside the driver's run of the connections
    /// ([`RuntimeMode::Single`]): a connection that read a request starts its app right
    /// away, and the app's first step runs before the connection's poll goes on, so an
    /// app that answers without waiting is answered in that same poll, written before
    /// anything else runs. The rest (what the app scheduled) runs as the driver returns to
    /// asyncio, which the job's wake-up makes it do.
    fn run_inline(&self, job: Job) {
        Python::attach(|py| {
            self.shared.inline.store(true, Ordering::Relaxed);
            self.run_job(py, job);
            self.shared.inline.store(false, Ordering::Relaxed);
        });
        // As a queued job's: the driver returns once to asyncio for all of them.
        if !self.shared.wake_scheduled.swap(true, Ordering::AcqRel) {
            self.wake_now();
        }
    }

    /// Runs `hand_back` (typically: give a finished response to its Tokio task) once the
    /// callbacks ready in this pass of the loop have run, together with every other hand-back
    /// of the pass; with no other request running, at once. Call on the loop thread only.
    pub(crate) fn hand_back(&self, py: Python<'_>, hand_back: impl FnOnce() + Send + 'static) {
        // Inside the connections' run: the connection is polled next.
        if self.shared.inline.load(Ordering::Relaxed) {
            return hand_back();
        }
        // With no other request running there is nothing to gather: the response goes out
        // now (with one thread, written from here), and the rest of the app's step, and of
        // the loop's pass, runs while the client reads it.
        if self.shared.running_apps.load(Ordering::Acquire) <= 1 {
            match &self.objects().driver {
                Some(driver) => {
                    if let Ok(mut driver) = driver.bind(py).try_borrow_mut() {
                        return driver.hand_back_now(py, Box::new(hand_back));
                    }
                }
                None => return hand_back(),
            }
        }
        let queue = self.objects().hand_back.bind(py);
        let mut queue = queue.borrow_mut();
        queue.pending.push(Box::new(hand_back));
        // With one thread, the driver hands them over as it next runs the connections.
        if !queue.scheduled && matches!(self.shared.wake, Wake::Eventfd { .. }) {
            queue.scheduled = true;
            let flush = queue
                .call_soon
                .bind(py)
                .call1((self.objects().hand_back.clone_ref(py),));
            if let Err(err) = flush {
                // Not expected from call_soon; handing back at once still answers the request.
                tracing::warn!("cannot schedule the response hand-back: {err}");
                queue.scheduled = false;
                let pending = std::mem::take(&mut queue.pending);
                drop(queue);
                pending.into_iter().for_each(|hand_back| hand_back());
            }
        }
    }

    /// Objects of the loop thread; only meaningful with the GIL held on that thread.
    pub(crate) fn objects(&self) -> &LoopObjects {
        self.shared
            .objects
            .get()
            .expect("the loop objects are set before any job runs")
    }

    /// The Tokio runtime that owns the sockets, for waits started from Python.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.shared.runtime
    }

    /// Runs `app(scope, cycle.receive, cycle.send)` as an asyncio task; `on_done` learns how it ended
    /// (`Some` error when it raised or was cancelled). A [`AppTask::Request`] counts as running
    /// until then, so shutdown waits for it and cancels it on time-out; the lifespan task
    /// lives as long as the loop and is not counted.
    pub(crate) fn spawn_app<'py>(
        &self,
        py: Python<'py>,
        scope: Bound<'py, PyDict>,
        cycle: &Bound<'py, PyAny>,
        task: AppTask,
        on_done: impl FnOnce(Python<'_>, Option<PyErr>) + 'static,
    ) -> PyResult<()> {
        let objects = self.objects();
        let coroutine = objects.app.bind(py).call1((
            scope,
            cycle.getattr(intern!(py, "receive"))?,
            cycle.getattr(intern!(py, "send"))?,
        ))?;
        // The request's task, for `request_ended`: set once the task exists, which is
        // before its first step. Looking the task up as it ends (`asyncio.current_task`)
        // cost each request more than this cell. A task factory that takes the first step
        // at once (Python 3.12's eager tasks) may end the app before: the cell then holds
        // `None`, and the task is not counted at all.
        let request_task: Rc<OnceCell<Option<Py<PyAny>>>> = Rc::new(OnceCell::new());
        let on_end: OnEnd = match task {
            AppTask::Request => {
                let event_loop = self.clone();
                let request_task = request_task.clone();
                Box::new(move |py, error| {
                    if let Some(task) = request_task.get_or_init(|| None) {
                        event_loop.request_ended(py, task);
                    }
                    on_done(py, error);
                })
            }
            AppTask::Lifespan => Box::new(on_done),
        };
        let coroutine = Bound::new(py, AppCoroutine::new(coroutine, on_end))?;
        let running = match task {
            AppTask::Request => {
                let (running, first_step) = objects.tasks.create(&coroutine)?;
                *lock(&self.shared.first_step) = first_step;
                running
            }
            AppTask::Lifespan => objects.tasks.create_unnamed(&coroutine)?,
        };
        if task == AppTask::Request && request_task.set(Some(running.clone().unbind())).is_ok() {
            objects.running.bind(py).add(&running)?;
            self.shared.running_apps.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Stops counting a request's task, which is running its last step.
    fn request_ended(&self, py: Python<'_>, task: &Py<PyAny>) {
        match self.objects().running.bind(py).discard(task) {
            Ok(true) => {
                if self.shared.running_apps.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.shared.apps_idle.notify_waiters();
                }
            }
            Ok(false) => {}
            Err(err) => tracing::error!("cannot find the task of a finished request: {err}"),
        }
    }

    /// Waits up to `timeout` for every running app task to end; on time-out cancels the
    /// rest and gives them `timeout` again to unwind. Returns whether all ended.
    pub(crate) async fn finish_apps(&self, timeout: Duration) -> bool {
        if self.wait_for_apps(timeout).await {
            return true;
        }
        let event_loop = self.clone();
        self.submit(Box::new(move |py| {
            let running = event_loop.objects().running.bind(py);
            let tasks: Vec<Bound<'_, PyAny>> = running.iter().collect();
            tracing::warn!("cancelling {} request task(s) still running", tasks.len());
            for task in tasks {
                let _ = task.call_method0(intern!(py, "cancel"));
            }
        }));
        self.wait_for_apps(timeout).await
    }

    async fn wait_for_apps(&self, timeout: Duration) -> bool {
        let idle = async {
            loop {
                let notified = self.shared.apps_idle.notified();
                if self.shared.running_apps.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, idle).await.is_ok()
    }

    /// Asks the asyncio loop to stop after the jobs queued so far; a loop of the caller's
    /// ([`EventLoop::attach`]) keeps running and only stops watching the queue.
    pub(crate) fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        let event_loop = self.clone();
        self.submit(Box::new(move |py| {
            let asyncio_loop = event_loop.objects().event_loop.bind(py);
            let stopped = match (&event_loop.shared.wake, event_loop.shared.attached) {
                (Wake::Eventfd { waker, .. }, true) => asyncio_loop
                    .call_method1("remove_reader", (waker.0.as_raw_fd(),))
                    .map(drop),
                _ => asyncio_loop.call_method0("stop").map(drop),
            };
            if let Err(err) = stopped {
                tracing::error!("cannot stop the asyncio loop: {err}");
            }
        }));
        // The caller is about to block joining the loop thread, possibly on the very Tokio
        // worker that would run the deferred wake-up: wake the loop directly.
        self.wake_now();
    }
}

/// Locks a mutex of the loop's; a panic that poisoned it left nothing half-changed that
/// the loop relies on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What an app task serves, which decides whether shutdown waits for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppTask {
    /// An HTTP request or a websocket: finished (or cancelled) before the loop stops.
    Request,
    /// The lifespan protocol: runs until after the last request.
    Lifespan,
}

/// What the loop thread hands back to Tokio, gathered over one pass of the loop.
///
/// Handing each finished response over at once wakes a Tokio worker per response. On a
/// busy CPU the woken worker preempts the loop thread, writes one response and sleeps again:
/// two thread switches per request, which for an app as slow as FastAPI cost about as much
/// as the server's own work. Gathered, the worker wakes once per pass and writes them all.
#[pyclass(unsendable)]
struct HandBack {
    pending: Vec<HandBackFn>,
    /// The flush is queued with `call_soon`.
    scheduled: bool,
    call_soon: Py<PyAny>,
}

#[pymethods]
impl HandBack {
    fn __call__(&mut self) {
        self.scheduled = false;
        self.pending.drain(..).for_each(|hand_back| hand_back());
    }
}

/// How the loop thread learns that jobs are queued.
enum Wake {
    /// [`RuntimeMode::Split`], or the caller's loop: an eventfd the loop watches, written
    /// by a Tokio task that first lets every ready connection queue its request.
    Eventfd {
        waker: Waker,
        wake_soon: Arc<tokio::sync::Notify>,
    },
    /// [`RuntimeMode::Single`]: the driver returns to asyncio when notified.
    Driver(Arc<tokio::sync::Notify>),
}

impl Wake {
    fn eventfd() -> Result<Wake, Error> {
        let waker = Waker::new().map_err(|err| {
            Error::with_source(
                ErrorKind::Interpreter,
                "cannot create the loop's waker",
                err,
            )
        })?;
        Ok(Wake::Eventfd {
            waker,
            wake_soon: Arc::new(tokio::sync::Notify::new()),
        })
    }
}

/// The job queue as the driver sees it ([`RuntimeMode::Single`]).
struct DriverFeed {
    event_loop: EventLoop,
    /// Swapped with the queue, as [`Drainer`]'s. A `Mutex` only so that the driver is
    /// `Sync`: it is reached through `&mut` and never locked.
    batch: Mutex<Vec<Job>>,
}

impl Feed for DriverFeed {
    fn take_hand_backs(&mut self, py: Python<'_>, into: &mut Vec<HandBackFn>) {
        if let Some(objects) = self.event_loop.shared.objects.get() {
            std::mem::swap(&mut objects.hand_back.bind(py).borrow_mut().pending, into);
        }
    }

    fn start_queued(&mut self, py: Python<'_>) -> PyResult<()> {
        let batch = self
            .batch
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.event_loop.run_queued(py, batch)
    }
}

/// An eventfd the loop watches with `add_reader`: waking is one write of a counter and one
/// read clears it, where a socket pair costs a socket buffer per wake-up.
struct Waker(std::fs::File);

impl Waker {
    fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd has no memory arguments; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        Ok(Waker(unsafe { std::fs::File::from_raw_fd(fd) }))
    }

    /// Makes the loop's reader callback run. A full counter means a wake-up is already
    /// pending, so the error is moot.
    fn wake(&self) {
        let _ = (&self.0).write(&1u64.to_ne_bytes());
    }

    fn clear(&self) {
        let mut counter = [0u8; 8];
        let _ = (&self.0).read(&mut counter);
    }
}

/// The `add_reader` callback: clears the waker and runs every queued job.
#[pyclass(unsendable)]
struct Drainer {
    event_loop: EventLoop,
    /// Swapped with the queue on each wake-up so neither side reallocates under load.
    batch: Vec<Job>,
}

#[pymethods]
impl Drainer {
    fn __call__(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Wake::Eventfd { waker, .. } = &self.event_loop.shared.wake {
            waker.clear();
        }
        self.event_loop.run_queued(py, &mut self.batch)
    }
}
