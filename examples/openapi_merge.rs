//! One OpenAPI document for a service moved in part: `GET /items/{id}` is answered by Rust and
//! documented with utoipa, `GET /version` exists only in Rust, everything else is the Python
//! app's. The app's `openapi_url` (`/openapi.json`) serves both sides merged, every operation
//! marked `x-served-by: rust` or `python`, so the app's own `/docs` page shows one API.
//!
//! `cargo run --release --example openapi_merge -- [--bind 127.0.0.1:3000] [--app pyapp.service:app] [--strict] [--ownership-path /migration/ownership]`
//!
//! Who answers each operation is logged at start-up and served as JSON at
//! `/migration/ownership`.
//!
//! Where a Rust operation's parameters or response schema differ from the Python definition
//! of the same operation, start-up logs a warning naming it; with `--strict` it refuses to
//! start. `--app pyapp.migration_apps:drifted` is the items service with such a drift.

mod common;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::any_service;
use clap::Parser;
use rust_asgi_server::migration::{OpenApiMerge, OwnershipReport};
use rust_asgi_server::{AsgiService, PythonApp, Server};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use common::items::{SEED_ITEMS, json_response, json_string};

/// Rust and Python routes behind one server, documented in one OpenAPI document.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: common::Args,
    /// Refuse to start when Rust and Python define an operation differently.
    #[arg(long)]
    strict: bool,
    /// Where the ownership report (who answers each operation) is served, as JSON.
    #[arg(long, default_value = "/migration/ownership")]
    ownership_path: String,
}

#[tokio::main]
async fn main() -> Result<(), rust_asgi_server::Error> {
    let cli = Cli::parse();
    common::init_logging();
    let python = PythonApp::import(&cli.args.app)?;
    let asgi = python.service();
    // Each handler documents itself (`#[utoipa::path]`); the router collects the documents.
    let (rust_routes, rust_api) = OpenApiRouter::new()
        .routes(rest_to_python(routes!(get_item), &asgi))
        .routes(routes!(version))
        .split_for_parts();
    let openapi = OpenApiMerge::new(rust_api.clone())
        .strict(cli.strict)
        .build(&python)
        .await?;
    // Merged now, so that a drift is logged (or refused) at start-up, not at the first request.
    openapi.document().await?;
    let router = rust_routes.merge(openapi.router()).fallback_service(asgi);
    // Who answers what: the Python route table and the Rust document, each operation asked
    // of the router itself. Logged now ("3 of 30 operations in Rust"), served as JSON.
    let ownership = OwnershipReport::builder(&python)
        .documented(&rust_api)
        .probe(&router)
        .collect()
        .await?;
    let router = router.merge(ownership.router(&cli.ownership_path));
    Server::new(router).bind(cli.args.bind).serve(python).await
}

/// utoipa's routes for one path, with every method they do not take sent to Python (as
/// `any_service(asgi).get(handler)` does in `mixed_routes`).
fn rest_to_python(routes: UtoipaMethodRouter, asgi: &AsgiService) -> UtoipaMethodRouter {
    let (schemas, paths, methods) = routes;
    (schemas, paths, any_service(asgi.clone()).merge(methods))
}

/// The Python service's `Item` model.
#[derive(Serialize, ToSchema)]
struct Item {
    id: i64,
    name: String,
    price: f64,
    tags: Vec<String>,
}

/// FastAPI's error body for an `HTTPException`.
#[derive(Serialize, ToSchema)]
struct Detail {
    detail: &'static str,
}

/// One item
///
/// Answers as `GET /items/{item_id}` of pyapp/service.py does, 404 and 422 included.
#[utoipa::path(
    get,
    path = "/items/{id}",
    tag = "items",
    params(("id" = i64, Path, description = "The item's id")),
    responses(
        (status = 200, description = "The item", body = Item),
        (status = 404, description = "No such item", body = Detail),
    ),
)]
async fn get_item(Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        let error = format!(
            r#"{{"detail":[{{"type":"int_parsing","loc":["path","item_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":{}}}]}}"#,
            json_string(&id)
        );
        return json_response(StatusCode::UNPROCESSABLE_ENTITY, error);
    };
    match SEED_ITEMS.iter().find(|item| i64::from(item.id) == id) {
        Some(item) => {
            let item = Item {
                id,
                name: item.name.to_string(),
                price: item.price,
                tags: item.tags.iter().map(|tag| tag.to_string()).collect(),
            };
            let body = serde_json::to_string(&item).expect("an item is JSON");
            json_response(StatusCode::OK, body)
        }
        None => {
            let body = serde_json::to_string(&Detail {
                detail: "Item not found",
            })
            .expect("a detail is JSON");
            json_response(StatusCode::NOT_FOUND, body)
        }
    }
}

/// The server's version.
#[derive(Serialize, ToSchema)]
struct Version {
    version: &'static str,
}

/// The server's version
///
/// An endpoint the Python app never had.
#[utoipa::path(
    get,
    path = "/version",
    tag = "server",
    responses((status = 200, description = "The version", body = Version)),
)]
async fn version() -> Response {
    let body = serde_json::to_string(&Version {
        version: env!("CARGO_PKG_VERSION"),
    })
    .expect("a version is JSON");
    json_response(StatusCode::OK, body)
}
