//! Tools for moving a Python service to Axum one route at a time, and staying sure nothing
//! broke: one OpenAPI document for both sides ([`OpenApiMerge`]), who answers what
//! ([`OwnershipReport`]), and parity checks on live traffic ([`ShadowLayer`]).
//!
//! docs/migration.md shows each tool in the order a team meets them; the `openapi_merge`
//! example uses them on the items service of `pyapp/service.py`.

mod json_diff;
mod merge;
mod openapi;
mod operation_diff;
mod ownership;
mod path_template;
mod probe;
mod python_side;
mod schema;
mod shadow;

pub use openapi::{MergedOpenApi, OpenApiMerge};
pub use ownership::{Operation, Owner, OwnershipReport, OwnershipReportBuilder, Summary};
pub use shadow::{ShadowCounts, ShadowLayer, ShadowService, ShadowStats};
