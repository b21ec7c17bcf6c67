//! What the migration tools read from the Python app itself: where it serves its OpenAPI
//! document, the document, and its route table. Read on the loop thread, where the app
//! lives (the Python half is `python_side.py`).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;
use serde_json::Value;

use crate::app::{LoopCalls, PythonApp};
use crate::error::{Error, ErrorKind};

/// An HTTP route of the Python app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PythonRoute {
    /// `GET`, `POST`, …; HEAD only where the route has no GET.
    pub(crate) method: String,
    /// The path template, prefixes of mounts and included routers applied: `/items/{item_id}`.
    pub(crate) path: String,
    /// Listed in the app's OpenAPI document (`include_in_schema`).
    pub(crate) documented: bool,
}

/// Reads the app; cheap to clone, usable while the server runs.
#[derive(Clone)]
pub(crate) struct PythonSide {
    calls: LoopCalls,
}

impl PythonSide {
    pub(crate) fn new(python: &PythonApp) -> Self {
        PythonSide {
            calls: python.loop_calls(),
        }
    }

    /// Where the app serves its OpenAPI document; `None` when it turned it off.
    pub(crate) async fn openapi_url(&self) -> Result<Option<String>, Error> {
        self.call("cannot read the app's openapi_url", |helpers, app| {
            helpers.call_method1("openapi_url", (app,))?.extract()
        })
        .await
    }

    /// The app's OpenAPI document (`app.openapi()`), `Value::Null` when it has none.
    pub(crate) async fn openapi(&self) -> Result<Value, Error> {
        let text: String = self
            .call(
                "cannot read the app's OpenAPI document (app.openapi())",
                |helpers, app| helpers.call_method1("openapi_json", (app,))?.extract(),
            )
            .await?;
        // Parsed here, on Tokio, rather than while holding the loop thread.
        serde_json::from_str(&text).map_err(|err| {
            Error::with_source(
                ErrorKind::Migration,
                "the app's OpenAPI document is not JSON",
                err,
            )
        })
    }

    /// Every HTTP route of the app, in its routing order (websockets are left out).
    pub(crate) async fn routes(&self) -> Result<Vec<PythonRoute>, Error> {
        let rows: Vec<(String, String, bool)> = self
            .call("cannot read the app's routes", |helpers, app| {
                helpers.call_method1("routes", (app,))?.extract()
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(method, path, documented)| PythonRoute {
                method,
                path,
                documented,
            })
            .collect())
    }

    async fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        read: impl for<'py> FnOnce(&Bound<'py, PyModule>, &Bound<'py, PyAny>) -> PyResult<T>
        + Send
        + 'static,
    ) -> Result<T, Error> {
        self.calls
            .run(ErrorKind::Migration, what, |app| {
                read(helpers(app.py())?, app)
            })
            .await
    }
}

/// `python_side.py`, compiled once per interpreter.
fn helpers(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static HELPERS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    HELPERS
        .get_or_try_init(py, || {
            let source = std::ffi::CString::new(include_str!("python_side.py"))
                .expect("python_side.py has no NUL byte");
            PyModule::from_code(
                py,
                &source,
                c"rust_asgi_server/migration/python_side.py",
                c"_rust_asgi_server_migration",
            )
            .map(Bound::unbind)
        })
        .map(|module| module.bind(py))
}
