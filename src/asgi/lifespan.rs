//! The ASGI lifespan protocol: startup before the first request, shutdown after the last.

use std::collections::VecDeque;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::oneshot;

use super::awaitable::ready;
use super::cycle::{self, Asked, Cycle, Handler, submit_and_await};
use super::parking::{IntoMessage, deliver, park};
use super::scope;
use crate::python::{AppTask, EventLoop, format_traceback};

/// uvicorn's `--lifespan`: `auto` tolerates apps that fail on the lifespan scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum LifespanMode {
    /// Run lifespan; an app that fails on the lifespan scope before startup is served
    /// without it.
    #[default]
    Auto,
    /// Run lifespan; an app without lifespan support fails start-up.
    On,
    /// Never send the lifespan scope.
    Off,
}

/// A lifespan that has started; call [`RunningLifespan::shutdown`] after the last request.
pub(crate) struct RunningLifespan {
    cycle: Option<Py<LifespanCycle>>,
    shutdown_rx: Option<oneshot::Receiver<Result<(), String>>>,
    event_loop: EventLoop,
}

/// Runs the app's startup; `Err` carries the message to show the user (the app's own
/// `lifespan.startup.failed` message or its traceback).
pub(crate) async fn startup(
    event_loop: &EventLoop,
    mode: LifespanMode,
) -> Result<RunningLifespan, String> {
    let mut running = RunningLifespan {
        cycle: None,
        shutdown_rx: None,
        event_loop: event_loop.clone(),
    };
    if mode == LifespanMode::Off {
        return Ok(running);
    }
    let (startup_tx, startup_rx) = oneshot::channel();
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let cycle = submit_and_await(event_loop, move |py, asked| {
        let Asked {
            event_loop, answer, ..
        } = asked;
        let cycle = LifespanCycle {
            mode,
            startup_received: false,
            pending: VecDeque::from([Event::Startup]),
            waiter: None,
            startup_tx: Some(startup_tx),
            shutdown_tx: Some(shutdown_tx),
            event_loop: event_loop.clone(),
        };
        let started = cycle::start(py, &event_loop, cycle, AppTask::Lifespan, |state| {
            scope::lifespan_scope(py, state)
        });
        if let Some(cycle) = started {
            let _ = answer.send(cycle.unbind());
        }
    })
    .await;
    let outcome = startup_rx
        .await
        .unwrap_or_else(|_| Err("the lifespan task ended without reporting startup".into()));
    match outcome {
        Ok(Support::Supported) => {
            running.cycle = cycle;
            running.shutdown_rx = Some(shutdown_rx);
            Ok(running)
        }
        Ok(Support::Unsupported) => Ok(running),
        Err(message) => Err(message),
    }
}

impl RunningLifespan {
    /// Sends `lifespan.shutdown` and waits for the app to finish its clean-up.
    pub(crate) async fn shutdown(mut self) -> Result<(), String> {
        let (Some(cycle), Some(shutdown_rx)) = (self.cycle.take(), self.shutdown_rx.take()) else {
            return Ok(());
        };
        self.event_loop.submit(Box::new(move |py| {
            cycle.bind(py).borrow_mut().deliver(py, Event::Shutdown);
        }));
        shutdown_rx
            .await
            .unwrap_or_else(|_| Err("the lifespan task ended during shutdown".into()))
    }
}

enum Support {
    Supported,
    /// `--lifespan auto` and the app raised on the lifespan scope.
    Unsupported,
}

enum Event {
    Startup,
    Shutdown,
}

impl IntoMessage for Event {
    fn into_message(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let message = PyDict::new(py);
        let kind = match self {
            Event::Startup => intern!(py, "lifespan.startup"),
            Event::Shutdown => intern!(py, "lifespan.shutdown"),
        };
        message.set_item(intern!(py, "type"), kind)?;
        Ok(message.into_any().unbind())
    }
}

/// The lifespan's ASGI `receive`/`send` pair. Lives on the loop thread.
#[pyclass(unsendable)]
pub(crate) struct LifespanCycle {
    mode: LifespanMode,
    /// The app took `lifespan.startup`: it speaks the protocol, so a later exception is a
    /// failed startup even under `--lifespan auto`.
    startup_received: bool,
    /// Events no `receive()` has taken yet.
    pending: VecDeque<Event>,
    waiter: Option<Py<PyAny>>,
    startup_tx: Option<oneshot::Sender<Result<Support, String>>>,
    shutdown_tx: Option<oneshot::Sender<Result<(), String>>>,
    event_loop: EventLoop,
}

impl Cycle for LifespanCycle {
    const PROTOCOL: &'static str = "a lifespan";
    const MESSAGES: &'static [(&'static str, Handler<Self>)] = &[
        ("lifespan.startup.complete", |cycle, _| {
            cycle.report_startup(Ok(Support::Supported));
            Ok(())
        }),
        ("lifespan.startup.failed", |cycle, message| {
            cycle.report_startup(Err(failure_message(message)?));
            Ok(())
        }),
        ("lifespan.shutdown.complete", |cycle, _| {
            cycle.report_shutdown(Ok(()));
            Ok(())
        }),
        ("lifespan.shutdown.failed", |cycle, message| {
            cycle.report_shutdown(Err(failure_message(message)?));
            Ok(())
        }),
    ];
    type Sent = ();

    fn event_loop(&self) -> &EventLoop {
        &self.event_loop
    }

    /// [`LifespanCycle::app_failed`] logs it: how bad it is depends on how far startup got.
    fn log_error(&self, _py: Python<'_>, _error: &PyErr) {}

    fn app_finished(&mut self, py: Python<'_>, error: Option<PyErr>) {
        match error {
            // Returning without a word counts as success, as under uvicorn.
            None => {
                self.report_startup(Ok(Support::Supported));
                self.report_shutdown(Ok(()));
            }
            Some(error) => self.app_failed(py, error),
        }
    }
}

#[pymethods]
impl LifespanCycle {
    fn receive(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(event) = self.pending.pop_front() {
            self.startup_received |= matches!(event, Event::Startup);
            return ready(py, Some(event.into_message(py)?));
        }
        park(py, &self.event_loop, &mut self.waiter)
    }

    fn send(&mut self, message: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        cycle::dispatch(self, message)?;
        ready(message.py(), None)
    }
}

impl LifespanCycle {
    fn deliver(&mut self, py: Python<'_>, event: Event) {
        if let Some(event) = deliver(py, &mut self.waiter, event) {
            self.pending.push_back(event);
        }
    }

    fn report_startup(&mut self, outcome: Result<Support, String>) {
        if let Some(tx) = self.startup_tx.take() {
            let _ = tx.send(outcome);
        }
    }

    fn report_shutdown(&mut self, outcome: Result<(), String>) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(outcome);
        }
    }

    fn app_failed(&mut self, py: Python<'_>, err: PyErr) {
        let traceback = format_traceback(py, &err);
        if self.startup_tx.is_some() {
            if self.mode == LifespanMode::Auto && !self.startup_received {
                tracing::info!("ASGI 'lifespan' protocol appears unsupported.");
                tracing::debug!("the app raised on the lifespan scope:\n{traceback}");
                self.report_startup(Ok(Support::Unsupported));
            } else {
                tracing::error!("Exception in 'lifespan' protocol\n{traceback}");
                self.report_startup(Err(traceback));
            }
        } else {
            tracing::error!("Exception in 'lifespan' protocol\n{traceback}");
            self.report_shutdown(Err(traceback));
        }
    }
}

/// The `message` of a `lifespan.*.failed` message, shown to the user.
fn failure_message(message: &Bound<'_, PyDict>) -> PyResult<String> {
    Ok(match message.get_item(intern!(message.py(), "message"))? {
        Some(text) => text.str()?.to_string(),
        None => String::new(),
    })
}
