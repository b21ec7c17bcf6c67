//! What the HTTP, websocket and lifespan bridges share: a Tokio task asks the loop thread
//! to start the app and awaits its answer, the app runs as an asyncio task with a
//! [`Cycle`]'s `receive` and `send`, each message it sends goes to the handler of its type,
//! and its end is handed to the cycle once. (How a call parks without blocking, and why a
//! cancelled wait is never resolved, is [`super::parking`].)

use std::future::Future;

use pyo3::PyClass;
use pyo3::prelude::*;
use pyo3::pyclass::boolean_struct::False;
use pyo3::pyclass_init::PyClassInitializer;
use pyo3::types::PyDict;
use tokio::sync::oneshot;

use super::codec::message_type;
use super::disconnected::ClientDisconnected;
use super::violation::not_allowed;
use crate::python::{AppTask, EventLoop, format_traceback};
use crate::signal::Signal;

/// The loop-thread half of one app call: a Python object whose `receive` and `send` the app
/// gets.
pub(super) trait Cycle: PyClass<Frozen = False> + Into<PyClassInitializer<Self>> {
    /// Names the app in errors: "an HTTP", "a websocket", "a lifespan".
    const PROTOCOL: &'static str;
    /// Every message type the app may send, each with its handler.
    const MESSAGES: &'static [(&'static str, Handler<Self>)];
    /// What a handler leaves for `send` to finish once the cycle is no longer borrowed.
    type Sent;

    /// The loop thread the cycle lives on.
    fn event_loop(&self) -> &EventLoop;

    /// The app's task ended: `error` when it raised, was cancelled or could not start. Runs
    /// once, after [`Cycle::log_error`]; the client must not be left waiting.
    fn app_finished(&mut self, py: Python<'_>, error: Option<PyErr>);

    /// Logs the exception the app's task ended with, as uvicorn logs a request's; a
    /// [`ClientDisconnected`] the app let through is no app error.
    fn log_error(&self, py: Python<'_>, error: &PyErr) {
        if error.is_instance_of::<ClientDisconnected>(py) {
            tracing::debug!("the ASGI app ended on its client's disconnect: {error}");
        } else {
            tracing::error!(
                "Exception in ASGI application\n{}",
                format_traceback(py, error)
            );
        }
    }
}

/// Handles one message type of a [`Cycle`].
pub(super) type Handler<C> = fn(&mut C, &Bound<'_, PyDict>) -> PyResult<<C as Cycle>::Sent>;

/// What a job queued by [`submit_and_await`] gets besides the GIL.
pub(super) struct Asked<T> {
    pub(super) event_loop: EventLoop,
    /// Where the answer goes.
    pub(super) answer: oneshot::Sender<T>,
    /// Fires if the asking task stops waiting first: hyper drops a request's future when its
    /// client leaves.
    pub(super) gone: Signal,
}

/// Queues `job` on the loop thread at once, and gives a future of its answer on Tokio.
/// `None` when the job ended without answering, or never ran (the loop died). Dropping the
/// future before the answer fires the job's `gone`.
///
/// Queued here rather than at the first poll so that the future keeps only the receiving end
/// and the guard: the job's captures are moved once, into its box, not also through the
/// states of the futures awaiting it.
pub(super) fn submit_and_await<T: Send + 'static>(
    event_loop: &EventLoop,
    job: impl for<'py> FnOnce(Python<'py>, Asked<T>) + Send + 'static,
) -> impl Future<Output = Option<T>> + Send + 'static {
    let (answer, answer_rx) = oneshot::channel();
    let gone = Signal::new();
    let gone_on_drop = gone.clone().drop_guard();
    let asked = Asked {
        event_loop: event_loop.clone(),
        answer,
        gone,
    };
    event_loop.submit(Box::new(move |py| job(py, asked)));
    async move {
        let answer = answer_rx.await.ok();
        gone_on_drop.disarm();
        answer
    }
}

/// Runs on the loop thread: runs `app(scope(state), cycle.receive, cycle.send)` as an
/// asyncio task whose end goes to [`Cycle::app_finished`], as does a failure to start it.
/// `None` only when the cycle itself cannot be created (dropping it answers the client).
pub(super) fn start<'py, C: Cycle>(
    py: Python<'py>,
    event_loop: &EventLoop,
    cycle: C,
    task: AppTask,
    scope: impl FnOnce(&Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>>,
) -> Option<Bound<'py, C>> {
    let cycle = match Bound::new(py, cycle) {
        Ok(cycle) => cycle,
        Err(err) => {
            tracing::error!("cannot start the ASGI app:\n{}", format_traceback(py, &err));
            return None;
        }
    };
    let run = || -> PyResult<()> {
        let scope = scope(event_loop.objects().state.bind(py))?;
        let finished = cycle.clone().unbind();
        event_loop.spawn_app(py, scope, cycle.as_any(), task, move |py, error| {
            finish(py, &mut *finished.bind(py).borrow_mut(), error);
        })
    };
    if let Err(err) = run() {
        finish(py, &mut *cycle.borrow_mut(), Some(err));
    }
    Some(cycle)
}

/// Ends a cycle: the error is logged before the cycle answers the client.
fn finish<C: Cycle>(py: Python<'_>, cycle: &mut C, error: Option<PyErr>) {
    if let Some(error) = &error {
        cycle.log_error(py, error);
    }
    cycle.app_finished(py, error);
}

/// Hands a message the app sent to the handler of its type; any other type is refused,
/// naming those the protocol has. The exceptions are [`super::violation`]'s.
pub(super) fn dispatch<C: Cycle>(cycle: &mut C, message: &Bound<'_, PyDict>) -> PyResult<C::Sent> {
    let message_type = message_type(message)?;
    let message_type = message_type.to_str()?;
    match C::MESSAGES.iter().find(|(known, _)| *known == message_type) {
        Some((_, handler)) => handler(cycle, message),
        None => {
            let known: Vec<String> = C::MESSAGES
                .iter()
                .map(|(known, _)| format!("'{known}'"))
                .collect();
            Err(not_allowed(format!(
                "Unexpected ASGI message '{message_type}' sent by {} app; expected one of {}.",
                C::PROTOCOL,
                known.join(", ")
            )))
        }
    }
}
