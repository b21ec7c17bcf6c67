//! [`RequestTasks`]: how a request's asyncio task is created.
//!
//! Under Python 3.11 an unnamed task names itself `Task-N` with `PyUnicode_FromFormat`,
//! about 2 % of a plain request's instructions, and uvloop's `create_task` names the task
//! only after creating it. A request's task is therefore created as
//! `asyncio.Task(coroutine, loop=…, name="request-N")`, as asyncio's own `create_task` does,
//! with a number from a counter of the server's. When the app has set a task factory
//! (`loop.set_task_factory`), the loop's `create_task` makes the task instead, so the
//! factory still decides.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use super::call_soon::{FirstStep, first_step_of};

/// What creating request tasks needs, looked up once on the loop thread.
pub(super) struct RequestTasks {
    event_loop: Py<PyAny>,
    create_task: Py<PyAny>,
    get_task_factory: Py<PyAny>,
    task_type: Py<PyAny>,
    /// The keyword names of `asyncio.Task(coroutine, …)`.
    keywords: Py<PyTuple>,
    /// The number of the next task's name.
    next: AtomicU64,
}

impl RequestTasks {
    pub(super) fn new(event_loop: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = event_loop.py();
        Ok(RequestTasks {
            event_loop: event_loop.clone().unbind(),
            create_task: event_loop.getattr("create_task")?.unbind(),
            get_task_factory: event_loop.getattr("get_task_factory")?.unbind(),
            task_type: py.import("asyncio")?.getattr("Task")?.unbind(),
            keywords: PyTuple::new(py, ["loop", "name"])?.unbind(),
            next: AtomicU64::new(1),
        })
    }

    /// A task made by the loop's `create_task` (or the app's task factory), named as asyncio
    /// names it: the lifespan's.
    pub(super) fn create_unnamed<'py>(
        &self,
        coroutine: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.create_task.bind(coroutine.py()).call1((coroutine,))
    }

    /// A new request task that runs `coroutine` in a copy of the current context, and its
    /// first step if the loop's `call_soon` kept it for the caller to run
    /// ([`first_step_of`]); otherwise the loop runs it on its next pass.
    pub(super) fn create<'py>(
        &self,
        coroutine: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, Option<FirstStep>)> {
        let py = coroutine.py();
        if !self.get_task_factory.bind(py).call0()?.is_none() {
            return Ok((self.create_unnamed(coroutine)?, None));
        }
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let mut text = [0u8; 28];
        let name = PyString::new(py, name_text(number, &mut text));
        let arguments = [coroutine.as_ptr(), self.event_loop.as_ptr(), name.as_ptr()];
        let (task, first_step) = first_step_of(|| {
            // SAFETY: the GIL is held; every argument is alive for the call, the keyword
            // tuple names the arguments after the one positional, and a non-NULL result is
            // a new reference (NULL comes with the exception set).
            unsafe {
                let task = ffi::PyObject_Vectorcall(
                    self.task_type.as_ptr(),
                    arguments.as_ptr(),
                    1,
                    self.keywords.as_ptr(),
                );
                Bound::from_owned_ptr_or_err(py, task)
            }
        });
        Ok((task?, first_step))
    }
}

/// `request-{number}`, written into `text`.
fn name_text(number: u64, text: &mut [u8; 28]) -> &str {
    use std::io::Write;
    let capacity = text.len();
    let mut rest = &mut text[..];
    write!(rest, "request-{number}").expect("28 bytes hold `request-` and any u64");
    let written = capacity - rest.len();
    std::str::from_utf8(&text[..written]).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_request_and_the_number() {
        assert_eq!(name_text(1, &mut [0; 28]), "request-1");
        assert_eq!(
            name_text(u64::MAX, &mut [0; 28]),
            "request-18446744073709551615"
        );
    }
}
