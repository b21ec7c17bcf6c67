//! The ASGI lifespan protocol: startup before the first request, shutdown after the last.

use std::collections::VecDeque;

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tokio::sync::oneshot;

use super::awaitable::ready;
use crate::python::{EventLoop, format_traceback};

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
    let (cycle_tx, cycle_rx) = oneshot::channel();
    let job_loop = event_loop.clone();
    event_loop.submit(Box::new(move |py| {
        let cycle = LifespanCycle {
            mode,
            startup_received: false,
            pending: VecDeque::from([Event::Startup]),
            waiter: None,
            startup_tx: Some(startup_tx),
            shutdown_tx: Some(shutdown_tx),
            event_loop: job_loop.clone(),
        };
        match run_app(py, &job_loop, cycle) {
            Ok(cycle) => {
                let _ = cycle_tx.send(cycle);
            }
            Err(err) => tracing::error!(
                "cannot run the lifespan protocol:\n{}",
                format_traceback(py, &err)
            ),
        }
    }));
    let outcome = startup_rx
        .await
        .unwrap_or_else(|_| Err("the lifespan task ended without reporting startup".into()));
    match outcome {
        Ok(Support::Supported) => {
            running.cycle = cycle_rx.await.ok();
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
            let cycle = cycle.bind(py);
            cycle.borrow_mut().deliver(py, Event::Shutdown);
        }));
        shutdown_rx
            .await
            .unwrap_or_else(|_| Err("the lifespan task ended during shutdown".into()))
    }
}

fn run_app(
    py: Python<'_>,
    event_loop: &EventLoop,
    cycle: LifespanCycle,
) -> PyResult<Py<LifespanCycle>> {
    let objects = event_loop.objects();
    let cycle = Bound::new(py, cycle)?;
    let scope = PyDict::new(py);
    scope.set_item(intern!(py, "type"), intern!(py, "lifespan"))?;
    let asgi = PyDict::new(py);
    asgi.set_item(intern!(py, "version"), intern!(py, "3.0"))?;
    asgi.set_item(intern!(py, "spec_version"), intern!(py, "2.0"))?;
    scope.set_item(intern!(py, "asgi"), asgi)?;
    scope.set_item(intern!(py, "state"), objects.state.bind(py))?;
    let started = (|| -> PyResult<()> {
        let coroutine = objects.app.bind(py).call1((
            scope,
            cycle.getattr(intern!(py, "receive"))?,
            cycle.getattr(intern!(py, "send"))?,
        ))?;
        let task = objects.create_task.bind(py).call1((coroutine,))?;
        task.call_method1(
            intern!(py, "add_done_callback"),
            (cycle.getattr(intern!(py, "_app_done"))?,),
        )?;
        Ok(())
    })();
    if let Err(err) = started {
        cycle.borrow_mut().app_failed(py, err);
    }
    Ok(cycle.unbind())
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

#[pyclass(unsendable)]
pub struct LifespanCycle {
    mode: LifespanMode,
    /// The app took `lifespan.startup`: it speaks the protocol, so a later exception is a
    /// failed startup even under `--lifespan auto`.
    startup_received: bool,
    pending: VecDeque<Event>,
    waiter: Option<Py<PyAny>>,
    startup_tx: Option<oneshot::Sender<Result<Support, String>>>,
    shutdown_tx: Option<oneshot::Sender<Result<(), String>>>,
    event_loop: EventLoop,
}

#[pymethods]
impl LifespanCycle {
    fn receive(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(event) = self.pending.pop_front() {
            self.startup_received |= matches!(event, Event::Startup);
            return ready(py, Some(event_message(py, event)?));
        }
        let waiter = self.event_loop.objects().create_future.call0(py)?;
        self.waiter = Some(waiter.clone_ref(py));
        Ok(waiter)
    }

    fn send(&mut self, message: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let py = message.py();
        let message_type = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyRuntimeError::new_err("ASGI message has no 'type' key"))?;
        let failure_message = || -> PyResult<String> {
            Ok(match message.get_item(intern!(py, "message"))? {
                Some(text) => text.str()?.to_string(),
                None => String::new(),
            })
        };
        match message_type.cast::<PyString>()?.to_str()? {
            "lifespan.startup.complete" => self.report_startup(Ok(Support::Supported)),
            "lifespan.startup.failed" => self.report_startup(Err(failure_message()?)),
            "lifespan.shutdown.complete" => self.report_shutdown(Ok(())),
            "lifespan.shutdown.failed" => self.report_shutdown(Err(failure_message()?)),
            other => {
                return Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message '{other}' sent by the lifespan protocol."
                )));
            }
        }
        ready(py, None)
    }

    fn _app_done(&mut self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = task.py();
        if task.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            self.app_failed(
                py,
                PyRuntimeError::new_err("the lifespan task was cancelled"),
            );
            return Ok(());
        }
        let exception = task.call_method0(intern!(py, "exception"))?;
        if exception.is_none() {
            // Returning without a word counts as success, as under uvicorn.
            self.report_startup(Ok(Support::Supported));
            self.report_shutdown(Ok(()));
        } else {
            self.app_failed(py, PyErr::from_value(exception));
        }
        Ok(())
    }
}

impl LifespanCycle {
    fn deliver(&mut self, py: Python<'_>, event: Event) {
        match self.waiter.take() {
            Some(waiter) => {
                let delivered = event_message(py, event).and_then(|message| {
                    waiter
                        .bind(py)
                        .call_method1(intern!(py, "set_result"), (message,))
                });
                if let Err(err) = delivered {
                    tracing::error!("cannot deliver a lifespan event: {err}");
                }
            }
            None => self.pending.push_back(event),
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

fn event_message(py: Python<'_>, event: Event) -> PyResult<Py<PyAny>> {
    let message = PyDict::new(py);
    let kind = match event {
        Event::Startup => intern!(py, "lifespan.startup"),
        Event::Shutdown => intern!(py, "lifespan.shutdown"),
    };
    message.set_item(intern!(py, "type"), kind)?;
    Ok(message.into_any().unbind())
}
