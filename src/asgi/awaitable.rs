//! Awaitables returned by `send` and `receive`.
//!
//! Most calls can be answered at once (the body is already buffered, the response channel
//! has room). For those we hand back [`Ready`], which finishes on its first step without
//! creating an asyncio future or scheduling anything on the loop; or, when the app's task
//! should let the loop go on before it does (a response its connection writes once the
//! step ends), on its second: the first yields, as `asyncio.sleep(0)` does.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

/// An awaitable that is already complete: `await Ready(v)` evaluates to `v`.
///
/// Not `unsendable`: it holds only a `Py`, and pyo3's thread check would run each time one
/// is made, stepped and dropped, twice per request.
#[pyclass(freelist = 128)]
pub struct Ready {
    value: Option<Py<PyAny>>,
    /// Yield once (a bare `yield`: the task runs again on the loop's next pass) first.
    yields: bool,
}

impl Ready {
    pub fn new(value: Option<Py<PyAny>>) -> Self {
        Ready {
            value,
            yields: false,
        }
    }

    fn step(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if std::mem::take(&mut self.yields) {
            return Ok(Some(py.None()));
        }
        match self.value.take() {
            // Returning `None` from `__next__` raises a bare StopIteration: the await yields None.
            None => Ok(None),
            Some(value) => Err(PyStopIteration::new_err((value,))),
        }
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.step(py)
    }

    fn send(&mut self, value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        self.step(value.py())
    }

    #[pyo3(signature = (exception, _value=None, _traceback=None))]
    fn throw(
        &mut self,
        exception: &Bound<'_, PyAny>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.value = None;
        self.yields = false;
        Err(PyErr::from_value(exception.clone()))
    }

    fn close(&mut self) {
        self.value = None;
        self.yields = false;
    }
}

/// `Ready(value)` as a Python object.
pub(super) fn ready(py: Python<'_>, value: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, Ready::new(value))?.into_any())
}

/// An awaitable that yields once, then evaluates to `None`: the awaiting task's step ends
/// here and the task goes on in the loop's next pass.
pub(super) fn yield_once(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let ready = Ready {
        value: None,
        yields: true,
    };
    Ok(Py::new(py, ready)?.into_any())
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;

    use pyo3::types::PyDict;

    use super::*;

    /// Runs `code` with `ready_value` (`Ready(42)`) and `yielding` (`yield_once()`) in its
    /// globals, awaited by a task of a new asyncio loop.
    fn run(code: &str) {
        Python::attach(|py| {
            let globals = PyDict::new(py);
            globals
                .set_item(
                    "ready_value",
                    ready(
                        py,
                        Some(42_i32.into_pyobject(py).unwrap().into_any().unbind()),
                    )
                    .unwrap(),
                )
                .unwrap();
            globals
                .set_item("yielding", yield_once(py).unwrap())
                .unwrap();
            let code = CString::new(code).unwrap();
            py.run(&code, Some(&globals), None).unwrap();
        });
    }

    #[test]
    fn ready_finishes_on_its_first_step() {
        run(r#"
steps = ready_value.__await__()
try:
    steps.send(None)
    raise AssertionError("Ready yielded")
except StopIteration as stop:
    assert stop.value == 42
"#);
    }

    #[test]
    fn yield_once_lets_the_loop_run_other_callbacks_first() {
        run(r#"
import asyncio

async def main():
    order = []
    asyncio.get_running_loop().call_soon(order.append, "callback")
    assert await yielding is None
    order.append("after the yield")
    return order

assert asyncio.run(main()) == ["callback", "after the yield"]
"#);
    }

    #[test]
    fn a_task_cancelled_at_the_yield_gets_the_cancellation() {
        run(r#"
import asyncio

async def main():
    async def waits():
        await yielding
        return "not cancelled"
    task = asyncio.ensure_future(waits())
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    return task.result()

assert asyncio.run(main()) == "cancelled"
"#);
    }
}
