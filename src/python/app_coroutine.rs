//! [`AppCoroutine`]: what an app's asyncio task runs, the app's own coroutine stepped through
//! a wrapper that tells the bridge how the app ended from inside the task's last step.
//!
//! A done-callback would tell the same one loop pass later: asyncio schedules it with
//! `call_soon`, which costs each request a callback and a pass of the loop (in
//! `--runtime-mode single`, a return to the selector before the next request can start).
//!
//! What the app raises ends its request; the task itself then ends normally, so asyncio has
//! nothing left to report. `SystemExit` and `KeyboardInterrupt` still go on through the task
//! and out of the loop's `run_forever`, as under any asyncio server.

use std::cell::RefCell;

use pyo3::exceptions::asyncio::CancelledError;
use pyo3::exceptions::{PyException, PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyString;
use pyo3::{ffi, intern};

/// What the bridge does once its app ended, with the error it ended on.
pub(super) type OnEnd = Box<dyn FnOnce(Python<'_>, Option<PyErr>)>;

/// The coroutine of an app task: steps the app's coroutine (`send`, `throw` and `close`
/// go to it) and calls its [`OnEnd`] the moment the app returns or raises.
#[pyclass(unsendable)]
pub(super) struct AppCoroutine {
    app: Py<PyAny>,
    /// Behind a `RefCell`, not `&mut self`: while the app runs inside a step, whatever
    /// inspects the task's coroutine (`__getattr__`) borrows this object too.
    on_end: RefCell<Option<OnEnd>>,
}

impl AppCoroutine {
    pub(super) fn new(app: Bound<'_, PyAny>, on_end: OnEnd) -> Self {
        AppCoroutine {
            app: app.unbind(),
            on_end: RefCell::new(Some(on_end)),
        }
    }

    /// One step of the app with `value` sent in: what it yielded (the asyncio future the
    /// task waits on), or `None` once it ended.
    fn step(&self, value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        let py = value.py();
        let mut result = std::ptr::null_mut();
        // SAFETY: both objects are alive for the call; `result` receives a new reference,
        // or NULL with an exception set (PYGEN_ERROR).
        let status = unsafe { ffi::PyIter_Send(self.app.as_ptr(), value.as_ptr(), &mut result) };
        match status {
            // SAFETY: PYGEN_NEXT comes with the yielded value, a new reference.
            ffi::PySendResult::PYGEN_NEXT => {
                Ok(Some(unsafe { Bound::from_owned_ptr(py, result) }.unbind()))
            }
            ffi::PySendResult::PYGEN_RETURN => {
                // SAFETY: PYGEN_RETURN comes with the return value, a new reference.
                drop(unsafe { Bound::from_owned_ptr(py, result) });
                self.end(py, None);
                Ok(None)
            }
            ffi::PySendResult::PYGEN_ERROR => self.raised(py, PyErr::fetch(py)),
        }
    }

    /// The app raised `error`, which ends its request. Only what must stop the loop goes
    /// on to the task.
    fn raised(&self, py: Python<'_>, error: PyErr) -> PyResult<Option<Py<PyAny>>> {
        // The exception object carries its traceback from here on, for the log line and for
        // the task (as asyncio's own task attaches it).
        let error = PyErr::from_value(error.into_value(py).into_bound(py).into_any());
        if error.is_instance_of::<PyStopIteration>(py) {
            // Raised by `throw` for an app that returned.
            self.end(py, None);
            return Err(error);
        }
        if error.is_instance_of::<CancelledError>(py) {
            self.end(
                py,
                Some(PyRuntimeError::new_err("the ASGI app's task was cancelled")),
            );
            return Ok(None);
        }
        if error.is_instance_of::<PyException>(py) {
            self.end(py, Some(error));
            return Ok(None);
        }
        self.end(py, Some(error.clone_ref(py)));
        retrieve_when_done(py);
        Err(error)
    }

    fn end(&self, py: Python<'_>, error: Option<PyErr>) {
        let on_end = self.on_end.borrow_mut().take();
        if let Some(on_end) = on_end {
            on_end(py, error);
        }
    }
}

/// Makes the current task's exception read once the task has it, so that asyncio does not
/// log it as never retrieved: the bridge has it already.
fn retrieve_when_done(py: Python<'_>) {
    let added = py
        .import(intern!(py, "asyncio"))
        .and_then(|asyncio| asyncio.call_method0(intern!(py, "current_task")))
        .and_then(|task| {
            let exception = task.get_type().getattr(intern!(py, "exception"))?;
            task.call_method1(intern!(py, "add_done_callback"), (exception,))
        });
    if let Err(err) = added {
        tracing::debug!("cannot watch the app task's exit: {err}");
    }
}

#[pymethods]
impl AppCoroutine {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// asyncio's task steps a coroutine with `PyIter_Send`, which comes here when it sends
    /// `None`, as it always does: returning `None` ends the task without an exception object.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.step(&py.None().into_bound(py))
    }

    fn send(&self, value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        match self.step(value)? {
            Some(yielded) => Ok(Some(yielded)),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    /// How the task cancels the app (`CancelledError`), and how anything else is thrown in.
    #[pyo3(signature = (exception, value=None, traceback=None))]
    fn throw(
        &self,
        py: Python<'_>,
        exception: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let thrown = match (value, traceback) {
            (None, None) => self
                .app
                .call_method1(py, intern!(py, "throw"), (exception,)),
            (value, traceback) => {
                self.app
                    .call_method1(py, intern!(py, "throw"), (exception, value, traceback))
            }
        };
        match thrown {
            Ok(yielded) => Ok(yielded),
            Err(error) => match self.raised(py, error)? {
                Some(yielded) => Ok(yielded),
                None => Err(PyStopIteration::new_err(())),
            },
        }
    }

    /// The app coroutine's other attributes (`cr_frame`, `cr_running`, `__qualname__`…), for
    /// what inspects a task's coroutine: `inspect.getcoroutinestate`, a task's repr, anyio.
    fn __getattr__(&self, py: Python<'_>, name: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        self.app.getattr(py, name)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        // The task was dropped unfinished: the request is answered as the bridge's own
        // state is dropped, not by `on_end`.
        self.on_end.borrow_mut().take();
        self.app.call_method0(py, intern!(py, "close")).map(drop)
    }
}
