//! Awaitables returned by `send` and `receive`.
//!
//! Most calls can be answered at once (the body is already buffered, the response channel
//! has room). For those we hand back [`Ready`], which finishes on its first step without
//! creating an asyncio future or scheduling anything on the loop.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

/// An awaitable that is already complete: `await Ready(v)` evaluates to `v`.
///
/// Not `unsendable`: it holds only a `Py`, and pyo3's thread check would run each time one
/// is made, stepped and dropped, twice per request.
#[pyclass(freelist = 128)]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

impl Ready {
    pub fn new(value: Option<Py<PyAny>>) -> Self {
        Ready { value }
    }

    fn step(&mut self) -> PyResult<Option<Py<PyAny>>> {
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

    fn __next__(&mut self) -> PyResult<Option<Py<PyAny>>> {
        self.step()
    }

    fn send(&mut self, _value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        self.step()
    }

    #[pyo3(signature = (exception, _value=None, _traceback=None))]
    fn throw(
        &mut self,
        exception: &Bound<'_, PyAny>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.value = None;
        Err(PyErr::from_value(exception.clone()))
    }

    fn close(&mut self) {
        self.value = None;
    }
}

/// `Ready(value)` as a Python object.
pub(super) fn ready(py: Python<'_>, value: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, Ready::new(value))?.into_any())
}
