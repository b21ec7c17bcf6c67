//! OpenTelemetry: a server span for every request, in the trace the client started.
//!
//! With [`ServerOptions::request_spans`](crate::ServerOptions::request_spans) on, each
//! request gets a `tracing` span of kind `server` whose parent is the incoming W3C
//! `traceparent`/`tracestate` (read with the global text-map propagator), and the router runs
//! inside it, so the spans of Rust handlers are its children. The request then goes on with
//! its `traceparent` rewritten to name the server span: a Python app instrumented with
//! OpenTelemetry's ASGI middleware continues the same trace below it. The access log line
//! carries the trace id.
//!
//! The spans reach OpenTelemetry through `tracing-opentelemetry`: install its layer in your
//! subscriber, with your tracer provider and `global::set_text_map_propagator`, or let
//! [`Telemetry`] (feature `otlp`, on with the command line) set up an OTLP/HTTP exporter and
//! give you the layer. Without a layer the spans are plain `tracing` spans and nothing is
//! rewritten.
//!
//! ```no_run
//! # fn main() -> Result<(), rust_asgi_server::Error> {
//! use rust_asgi_server::telemetry::Telemetry;
//! use tracing_subscriber::prelude::*;
//!
//! let telemetry = Telemetry::otlp("http://127.0.0.1:4318")?;
//! tracing_subscriber::registry().with(telemetry.layer()).init();
//! // ... Server::new(router).options(ServerOptions::new().request_spans(true)) ...
//! telemetry.shutdown(); // exports what is left
//! # Ok(()) }
//! ```

#[cfg(feature = "otlp")]
mod otlp;
mod request_span;

#[cfg(feature = "otlp")]
pub use otlp::Telemetry;
pub(crate) use request_span::RequestSpan;
