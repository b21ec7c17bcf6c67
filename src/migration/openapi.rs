//! [`OpenApiMerge`]: one OpenAPI document for a service served half by Rust, half by Python,
//! at the URL where the Python app serves its own, so that its `/docs` page shows one API.
//!
//! How the documents are merged is in `merge.rs`; docs/migration.md shows the use.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::Value;

use super::merge::{Merged, merge};
use super::python_side::PythonSide;
use crate::app::PythonApp;
use crate::error::{Error, ErrorKind};

/// Merges the OpenAPI document of Rust routes (written with utoipa) into the Python app's.
///
/// ```no_run
/// # use rust_asgi_server::{PythonApp, migration::OpenApiMerge};
/// # async fn run(python: PythonApp, rust_api: utoipa::openapi::OpenApi) -> Result<(), rust_asgi_server::Error> {
/// let openapi = OpenApiMerge::new(rust_api).strict(true).build(&python).await?;
/// openapi.document().await?; // check now rather than at the first request
/// let router: axum::Router = openapi.router(); // merge it into yours
/// # Ok(()) }
/// ```
pub struct OpenApiMerge {
    rust: utoipa::openapi::OpenApi,
    strict: bool,
}

/// The merged document: served by [`MergedOpenApi::router`], computed once, when first
/// asked for. Cheap to clone.
#[derive(Clone)]
pub struct MergedOpenApi {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    rust: Value,
    strict: bool,
    python: PythonSide,
    merged: tokio::sync::OnceCell<Served>,
}

struct Served {
    document: Value,
    body: Bytes,
}

impl OpenApiMerge {
    /// Merges `rust`, the document of the Rust routes (utoipa-axum's
    /// `OpenApiRouter::split_for_parts` gives it), into the Python app's.
    pub fn new(rust: utoipa::openapi::OpenApi) -> Self {
        OpenApiMerge {
            rust,
            strict: false,
        }
    }

    /// With `true`, an operation that Rust and Python define differently is an error
    /// ([`ErrorKind::Migration`]) instead of a warning: the document is not served.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Reads where the app serves its document (FastAPI's `openapi_url`). The document
    /// itself is read when first needed: [`MergedOpenApi::document`], or the first request.
    pub async fn build(self, python: &PythonApp) -> Result<MergedOpenApi, Error> {
        let rust = serde_json::to_value(&self.rust).map_err(|err| {
            Error::with_source(
                ErrorKind::Migration,
                "cannot write the Rust OpenAPI document",
                err,
            )
        })?;
        let python = PythonSide::new(python);
        let url = python.openapi_url().await?.ok_or_else(|| {
            Error::new(
                ErrorKind::Migration,
                "the app's openapi_url is None: it serves no OpenAPI document to merge with",
            )
        })?;
        Ok(MergedOpenApi {
            shared: Arc::new(Shared {
                url,
                rust,
                strict: self.strict,
                python,
                merged: tokio::sync::OnceCell::new(),
            }),
        })
    }
}

impl MergedOpenApi {
    /// Where the document is served: the Python app's `openapi_url`, e.g. `/openapi.json`.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The merged document. The first call reads `app.openapi()` on the loop thread, merges,
    /// and logs a warning for each operation defined differently on the two sides (an
    /// error in strict mode); later calls return the same document.
    pub async fn document(&self) -> Result<Value, Error> {
        Ok(self.served().await?.document.clone())
    }

    /// A router serving the document at [`MergedOpenApi::url`], for `Router::merge`.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let merged = self.clone();
        Router::new().route(
            &self.shared.url,
            get(move || async move { merged.response().await }),
        )
    }

    async fn response(&self) -> Response<Body> {
        let (status, body) = match self.served().await {
            Ok(served) => (StatusCode::OK, Body::from(served.body.clone())),
            Err(error) => {
                tracing::error!("{error}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Body::from("Internal Server Error"),
                )
            }
        };
        let content_type = if status.is_success() {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }

    async fn served(&self) -> Result<&Served, Error> {
        let shared = &self.shared;
        shared
            .merged
            .get_or_try_init(|| async {
                let python = shared.python.openapi().await?;
                let merged = merge(&shared.rust, &python);
                report(&merged, shared.strict, &shared.url)?;
                let body = Bytes::from(serde_json::to_vec(&merged.document).map_err(|err| {
                    Error::with_source(
                        ErrorKind::Migration,
                        "cannot write the merged OpenAPI document",
                        err,
                    )
                })?);
                Ok(Served {
                    document: merged.document,
                    body,
                })
            })
            .await
    }
}

/// Logs what merging found; in strict mode, differing operations are an error instead.
fn report(merged: &Merged, strict: bool, url: &str) -> Result<(), Error> {
    for renamed in &merged.renamed {
        tracing::warn!("OpenAPI: {renamed}");
    }
    let conflicts: Vec<String> = merged
        .conflicts
        .iter()
        .map(|conflict| {
            format!(
                "{} is defined differently in Rust, which serves it, and in Python: {}",
                conflict.operation,
                conflict.differences.join("; ")
            )
        })
        .collect();
    if strict && !conflicts.is_empty() {
        return Err(Error::new(
            ErrorKind::Migration,
            format!("OpenAPI (strict): {}", conflicts.join(". ")),
        ));
    }
    for conflict in &conflicts {
        tracing::warn!("OpenAPI: {conflict}");
    }
    let (rust, python) = served_counts(&merged.document);
    tracing::info!(
        "OpenAPI: one document at {url}: {rust} operations from Rust, {python} from Python"
    );
    Ok(())
}

/// How many operations the merged document marks as served by Rust, and by Python.
fn served_counts(document: &Value) -> (usize, usize) {
    let sides = document["paths"]
        .as_object()
        .into_iter()
        .flat_map(|paths| paths.values())
        .filter_map(Value::as_object)
        .flat_map(|item| item.values())
        .filter_map(|operation| operation.get("x-served-by")?.as_str());
    sides.fold((0, 0), |(rust, python), side| {
        if side == "rust" {
            (rust + 1, python)
        } else {
            (rust, python + 1)
        }
    })
}
