//! Request context both ways. From Rust to Python: values a Rust middleware put in a
//! request's extensions (the authenticated user, a tenant, a request id) reach the app as
//! entries of the scope's `state` (Starlette and FastAPI: `request.state.NAME`), declared
//! once per type with [`AsgiService::scope_state`](super::AsgiService::scope_state). From
//! Python to Rust: what the app put in its request's `state` under a declared key (an
//! audit record, the user it resolved) is in the response's extensions when the response
//! starts, for the Rust layers around the app
//! ([`AsgiService::response_state`](super::AsgiService::response_state)).
//!
//! Rust values are cloned out of the extensions on the Tokio side, without the GIL, and
//! turned into Python objects on the loop thread, where the scope is built; Python values
//! are extracted there too, at `http.response.start`.

use std::sync::Arc;

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The request extension types the app sees, and the `state` key of each.
#[derive(Clone, Default)]
pub(super) struct ScopeState {
    entries: Arc<[StateEntry]>,
}

#[derive(Clone, Copy)]
struct StateEntry {
    key: &'static str,
    take: fn(&http::Extensions) -> Option<Box<dyn ScopeValue>>,
}

impl ScopeState {
    /// Adds the extension of type `T`, passed as `state[key]`.
    pub(super) fn with<T>(&self, key: &'static str) -> ScopeState
    where
        T: for<'py> IntoPyObject<'py> + Clone + Send + Sync + 'static,
    {
        let entry = StateEntry {
            key,
            take: |extensions| {
                let value = extensions.get::<T>()?.clone();
                Some(Box::new(value) as Box<dyn ScopeValue>)
            },
        };
        let entries = self.entries.iter().copied().chain([entry]).collect();
        ScopeState { entries }
    }

    /// Takes this request's values, to travel with its head to the loop thread; `None` when
    /// no type is declared (no allocation on the common path).
    pub(super) fn collect(&self, extensions: &http::Extensions) -> Option<ScopeValues> {
        if self.entries.is_empty() {
            return None;
        }
        let values = self
            .entries
            .iter()
            .filter_map(|entry| Some((entry.key, (entry.take)(extensions)?)))
            .collect();
        Some(ScopeValues(values))
    }
}

/// The `state` keys the app may fill for Rust, and the Rust type each is extracted as.
#[derive(Clone, Default)]
pub(super) struct ResponseState {
    entries: Arc<[ResponseEntry]>,
}

#[derive(Clone, Copy)]
struct ResponseEntry {
    key: &'static str,
    put: fn(&Bound<'_, PyAny>, &mut http::Extensions) -> PyResult<()>,
}

impl ResponseState {
    /// Adds `state[key]`, extracted as `T` into the response's extensions.
    pub(super) fn with<T>(&self, key: &'static str) -> ResponseState
    where
        T: for<'a, 'py> FromPyObject<'a, 'py> + Clone + Send + Sync + 'static,
    {
        let entry = ResponseEntry {
            key,
            put: |value, extensions| {
                let value = value.extract::<T>().map_err(Into::into)?;
                extensions.insert(value);
                Ok(())
            },
        };
        let entries = self.entries.iter().copied().chain([entry]).collect();
        ResponseState { entries }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Puts each declared key the app set in `state` into `extensions`; a value of the wrong
    /// shape is the app's mistake, logged, and left out.
    pub(super) fn put(&self, state: &Bound<'_, PyDict>, extensions: &mut http::Extensions) {
        for entry in self.entries.iter() {
            let value = match state.get_item(entry.key) {
                Ok(Some(value)) => value,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!("cannot read state[{:?}] of the request: {err}", entry.key);
                    continue;
                }
            };
            if let Err(err) = (entry.put)(&value, extensions) {
                tracing::warn!(
                    "state[{:?}] set by the app is not what the Rust side expects: {err}",
                    entry.key
                );
            }
        }
    }
}

/// One request's context values, carried in its extensions from the service to the scope.
pub(super) struct ScopeValues(Vec<(&'static str, Box<dyn ScopeValue>)>);

impl Clone for ScopeValues {
    fn clone(&self) -> Self {
        ScopeValues(
            self.0
                .iter()
                .map(|(key, value)| (*key, value.clone_boxed()))
                .collect(),
        )
    }
}

impl ScopeValues {
    /// Sets each value in the scope's `state` (the request's own copy), converted now.
    pub(super) fn set_in(&self, state: &Bound<'_, PyDict>) -> PyResult<()> {
        for (key, value) in &self.0 {
            state.set_item(key, value.to_python(state.py())?)?;
        }
        Ok(())
    }
}

/// A Rust value the loop thread can turn into a Python object.
trait ScopeValue: Send + Sync {
    fn to_python(&self, py: Python<'_>) -> PyResult<Py<PyAny>>;
    fn clone_boxed(&self) -> Box<dyn ScopeValue>;
}

impl<T> ScopeValue for T
where
    T: for<'py> IntoPyObject<'py> + Clone + Send + Sync + 'static,
{
    fn to_python(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.clone().into_py_any(py)
    }

    fn clone_boxed(&self) -> Box<dyn ScopeValue> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, IntoPyObject)]
    struct User {
        id: u64,
        name: String,
    }

    #[derive(Clone, IntoPyObject)]
    struct Tenant(String);

    #[test]
    fn declared_extensions_become_state_entries_and_missing_ones_are_left_out() {
        let state = ScopeState::default()
            .with::<User>("user")
            .with::<Tenant>("tenant")
            .with::<u32>("absent");
        let mut extensions = http::Extensions::new();
        extensions.insert(User {
            id: 7,
            name: "ada".into(),
        });
        extensions.insert(Tenant("acme".into()));
        let values = state.collect(&extensions).unwrap();
        Python::attach(|py| {
            let dict = PyDict::new(py);
            values.set_in(&dict).unwrap();
            let user = dict.get_item("user").unwrap().unwrap();
            assert_eq!(user.get_item("id").unwrap().extract::<u64>().unwrap(), 7);
            assert_eq!(user.get_item("name").unwrap().to_string(), "ada");
            assert_eq!(
                dict.get_item("tenant").unwrap().unwrap().to_string(),
                "acme"
            );
            assert!(!dict.contains("absent").unwrap());
        });
    }

    #[derive(Clone, FromPyObject)]
    #[pyo3(from_item_all)]
    struct Audit {
        action: String,
    }

    #[test]
    fn declared_state_keys_go_into_the_response_extensions_and_bad_values_are_left_out() {
        let declared = ResponseState::default()
            .with::<Audit>("audit")
            .with::<u32>("count")
            .with::<String>("absent");
        Python::attach(|py| {
            let state = PyDict::new(py);
            let audit = PyDict::new(py);
            audit.set_item("action", "profile.read").unwrap();
            state.set_item("audit", audit).unwrap();
            state.set_item("count", "not a number").unwrap();
            let mut extensions = http::Extensions::new();
            declared.put(&state, &mut extensions);
            assert_eq!(extensions.get::<Audit>().unwrap().action, "profile.read");
            assert!(extensions.get::<u32>().is_none());
            assert!(extensions.get::<String>().is_none());
        });
    }

    #[test]
    fn nothing_is_collected_when_no_type_is_declared() {
        assert!(
            ScopeState::default()
                .collect(&http::Extensions::new())
                .is_none()
        );
    }
}
