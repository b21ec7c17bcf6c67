//! [`OwnershipReport`]: every (method, path) of the service and which side answers it.
//!
//! The operations are the Python app's routes (its route table, mounts and included routers
//! followed, HEAD left out where GET is there) and the operations the Rust routes document
//! (utoipa). Who answers each is what the router does with it, when the router is probed
//! (safe methods by default, see `probe.rs`); otherwise, Rust if the Rust document has it.

use std::fmt;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, Method, Response, header};
use serde_json::{Value, json};

use super::merge::METHODS;
use super::path_template::shape;
use super::probe::reaches_python;
use super::python_side::{PythonRoute, PythonSide};
use crate::app::PythonApp;
use crate::error::{Error, ErrorKind};

/// Which side answers an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A Rust handler of the router.
    Rust,
    /// The Python app, through [`AsgiService`](crate::AsgiService).
    Python,
}

/// One operation of the service and its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Operation {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path template, written as the Python app writes it where it has the path:
    /// `/items/{item_id}`.
    pub path: String,
    /// Who answers it.
    pub owner: Owner,
    /// The Python app has a route for it (it may still be answered by Rust).
    pub python_route: bool,
    /// The Python app's OpenAPI document has it (FastAPI's `include_in_schema`): false for
    /// `/docs`, `/openapi.json` and the like.
    pub python_documented: bool,
    /// The Rust routes' OpenAPI document has it.
    pub rust_documented: bool,
    /// The owner is what the router did with a probe's request; without a probe, the owner
    /// is Rust when the Rust document has the operation.
    pub probed: bool,
}

/// Every operation of the service and who answers it. Build it with
/// [`OwnershipReport::builder`]; it logs its [summary](OwnershipReport::summary); serve it
/// with [`OwnershipReport::router`].
///
/// ```no_run
/// # use rust_asgi_server::{PythonApp, migration::OwnershipReport};
/// # async fn run(python: PythonApp, rust_api: utoipa::openapi::OpenApi, router: axum::Router) -> Result<(), rust_asgi_server::Error> {
/// let ownership = OwnershipReport::builder(&python)
///     .documented(&rust_api)
///     .probe(&router)
///     .collect()
///     .await?;
/// let router = router.merge(ownership.router("/migration/ownership"));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct OwnershipReport {
    operations: Vec<Operation>,
}

/// Options of an [`OwnershipReport`]; finish with [`OwnershipReportBuilder::collect`].
pub struct OwnershipReportBuilder<'a> {
    python: &'a PythonApp,
    rust: Option<&'a utoipa::openapi::OpenApi>,
    router: Option<&'a Router>,
    probe_unsafe_methods: bool,
}

impl<'a> OwnershipReportBuilder<'a> {
    /// The Rust routes' OpenAPI document (utoipa-axum's `OpenApiRouter::split_for_parts`
    /// gives it): its operations are Rust's.
    pub fn documented(mut self, rust: &'a utoipa::openapi::OpenApi) -> Self {
        self.rust = Some(rust);
        self
    }

    /// Asks `router` (the one you serve) who answers each operation: a request per
    /// operation, marked so that the Python app's [`AsgiService`](crate::AsgiService)
    /// answers it without running the app. A Rust handler it reaches does run, with an empty
    /// body and `ownership-probe` for every path parameter; so only GET, HEAD, OPTIONS and
    /// TRACE are probed, unless [`probe_unsafe_methods`](Self::probe_unsafe_methods).
    pub fn probe(mut self, router: &'a Router) -> Self {
        self.router = Some(router);
        self
    }

    /// Also probe POST, PUT, PATCH and DELETE: for routers whose Rust handlers of those
    /// methods can run with an empty request without harm.
    pub fn probe_unsafe_methods(mut self, enabled: bool) -> Self {
        self.probe_unsafe_methods = enabled;
        self
    }

    /// Reads the Python app's route table (on its loop thread), sets it against the Rust
    /// operations, probes the router, and logs the [summary](OwnershipReport::summary).
    pub async fn collect(self) -> Result<OwnershipReport, Error> {
        let routes = PythonSide::new(self.python).routes().await?;
        let rust = match self.rust {
            Some(rust) => serde_json::to_value(rust).map_err(|err| {
                Error::with_source(
                    ErrorKind::Migration,
                    "cannot write the Rust OpenAPI document",
                    err,
                )
            })?,
            None => Value::Null,
        };
        let mut report = OwnershipReport::new(routes, &rust);
        if let Some(router) = self.router {
            for operation in &mut report.operations {
                let safe = Method::from_bytes(operation.method.as_bytes())
                    .is_ok_and(|method| method.is_safe());
                if !(safe || self.probe_unsafe_methods) {
                    continue;
                }
                if let Some(python) =
                    reaches_python(router, &operation.method, &operation.path).await
                {
                    operation.owner = if python { Owner::Python } else { Owner::Rust };
                    operation.probed = true;
                }
            }
        }
        tracing::info!("ownership: {}", report.summary());
        Ok(report)
    }
}

impl OwnershipReport {
    /// A report on `python`'s routes and the Rust operations given to the builder.
    pub fn builder(python: &PythonApp) -> OwnershipReportBuilder<'_> {
        OwnershipReportBuilder {
            python,
            rust: None,
            router: None,
            probe_unsafe_methods: false,
        }
    }

    /// The Python routes and the Rust document's operations, matched by method and path
    /// shape (`/items/{id}` is `/items/{item_id}`).
    fn new(routes: Vec<PythonRoute>, rust: &Value) -> OwnershipReport {
        let mut operations: Vec<Operation> = routes
            .into_iter()
            .map(|route| Operation {
                method: route.method,
                path: route.path,
                owner: Owner::Python,
                python_route: true,
                python_documented: route.documented,
                rust_documented: false,
                probed: false,
            })
            .collect();
        for (method, rust_path) in documented(rust) {
            let found = operations.iter_mut().find(|operation| {
                operation.method == method && shape(&operation.path) == shape(&rust_path)
            });
            match found {
                Some(operation) => {
                    operation.rust_documented = true;
                    operation.owner = Owner::Rust;
                }
                None => operations.push(Operation {
                    method,
                    path: rust_path,
                    owner: Owner::Rust,
                    python_route: false,
                    python_documented: false,
                    rust_documented: true,
                    probed: false,
                }),
            }
        }
        OwnershipReport { operations }
    }

    /// Every operation: the Python app's in its routing order, then the Rust-only ones.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// `2 of 31 operations in Rust (GET /items/{item_id}, GET /version)`.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }

    /// The report as JSON: `{"rust": 2, "python": 29, "operations": [{"method", "path",
    /// "owner", "python_route", "python_documented", "rust_documented", "probed"}, …]}`.
    pub fn to_json(&self) -> Value {
        let operations: Vec<Value> = self
            .operations
            .iter()
            .map(|operation| {
                json!({
                    "method": operation.method,
                    "path": operation.path,
                    "owner": match operation.owner { Owner::Rust => "rust", Owner::Python => "python" },
                    "python_route": operation.python_route,
                    "python_documented": operation.python_documented,
                    "rust_documented": operation.rust_documented,
                    "probed": operation.probed,
                })
            })
            .collect();
        let rust = self.in_rust().count();
        json!({ "rust": rust, "python": self.operations.len() - rust, "operations": operations })
    }

    /// A router answering `GET path` with [`OwnershipReport::to_json`], for `Router::merge`.
    pub fn router<S: Clone + Send + Sync + 'static>(&self, path: &str) -> Router<S> {
        let body = Bytes::from(self.to_json().to_string());
        Router::new().route(
            path,
            get(move || async move {
                let mut response = Response::new(Body::from(body));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }),
        )
    }

    fn in_rust(&self) -> impl Iterator<Item = &Operation> {
        self.operations
            .iter()
            .filter(|operation| operation.owner == Owner::Rust)
    }
}

/// How many operations Rust answers, naming them (the first few); see
/// [`OwnershipReport::summary`].
pub struct Summary<'a>(&'a OwnershipReport);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Operations named in a summary; a long list helps nobody in a log line.
        const NAMED: usize = 8;
        let report = self.0;
        let rust: Vec<String> = report
            .in_rust()
            .map(|operation| format!("{} {}", operation.method, operation.path))
            .collect();
        write!(
            f,
            "{} of {} operations in Rust",
            rust.len(),
            report.operations.len()
        )?;
        if !rust.is_empty() {
            let more = rust.len().saturating_sub(NAMED);
            let named = rust[..rust.len() - more].join(", ");
            match more {
                0 => write!(f, " ({named})")?,
                more => write!(f, " ({named} and {more} more)")?,
            }
        }
        Ok(())
    }
}

/// `(METHOD, path)` of every operation of an OpenAPI document.
fn documented(document: &Value) -> Vec<(String, String)> {
    let paths = document["paths"].as_object().into_iter().flatten();
    paths
        .flat_map(|(path, item)| {
            let methods = item
                .as_object()
                .into_iter()
                .flatten()
                .map(|(method, _)| method);
            methods
                .filter(|method| METHODS.contains(&method.as_str()))
                .map(move |method| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> PythonRoute {
        PythonRoute {
            method: method.into(),
            path: path.into(),
            documented: true,
        }
    }

    fn report() -> OwnershipReport {
        let routes = vec![
            route("GET", "/items/{item_id}"),
            route("PUT", "/items/{item_id}"),
            route("GET", "/health"),
        ];
        let rust = json!({"paths": {
            "/items/{id}": {"get": {}, "parameters": []},
            "/version": {"get": {}},
        }});
        OwnershipReport::new(routes, &rust)
    }

    #[test]
    fn documented_rust_operations_own_their_python_routes() {
        let owners: Vec<(String, String, Owner, bool)> = report()
            .operations()
            .iter()
            .map(|op| {
                (
                    op.method.clone(),
                    op.path.clone(),
                    op.owner,
                    op.python_route,
                )
            })
            .collect();
        assert_eq!(
            owners,
            [
                ("GET".into(), "/items/{item_id}".into(), Owner::Rust, true),
                ("PUT".into(), "/items/{item_id}".into(), Owner::Python, true),
                ("GET".into(), "/health".into(), Owner::Python, true),
                ("GET".into(), "/version".into(), Owner::Rust, false),
            ]
        );
    }

    #[test]
    fn the_summary_counts_and_names_the_rust_operations() {
        assert_eq!(
            report().summary().to_string(),
            "2 of 4 operations in Rust (GET /items/{item_id}, GET /version)"
        );
        let many: Vec<PythonRoute> = (0..12).map(|n| route("GET", &format!("/r{n}"))).collect();
        let rust = json!({"paths": (0..10).map(|n| (format!("/r{n}"), json!({"get": {}}))).collect::<serde_json::Map<_, _>>()});
        let summary = OwnershipReport::new(many, &rust).summary().to_string();
        assert!(
            summary.starts_with("10 of 12 operations in Rust (GET /r0, "),
            "{summary}"
        );
        assert!(summary.ends_with("GET /r7 and 2 more)"), "{summary}");
    }

    #[test]
    fn the_json_report_has_counts_and_rows() {
        let json = report().to_json();
        assert_eq!(
            (json["rust"].as_u64(), json["python"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(
            json["operations"][0],
            json!({"method": "GET", "path": "/items/{item_id}", "owner": "rust",
                   "python_route": true, "python_documented": true, "rust_documented": true,
                   "probed": false})
        );
    }
}
