//! The OTLP/HTTP exporter of the server's spans: `--otel-endpoint`.

use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetryLayer;

use crate::error::{Error, ErrorKind};

/// The service name spans carry unless `OTEL_SERVICE_NAME` names another.
const DEFAULT_SERVICE_NAME: &str = "rust-asgi-server";

/// Spans exported in batches over OTLP/HTTP (protobuf) by a background thread, and W3C trace
/// context as the process's propagator.
///
/// The exporter also follows the standard `OTEL_*` variables it does not get here
/// (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`, …).
/// Call [`Telemetry::shutdown`] before the process exits, or drop it: spans not yet
/// exported are sent then.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports to the OTLP/HTTP receiver at `endpoint`, its base URL
    /// (`http://collector:4318`): spans are posted to `/v1/traces` under it, unless the URL
    /// already ends with that path.
    pub fn otlp(endpoint: &str) -> Result<Telemetry, Error> {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces_url(endpoint))
            .build()
            .map_err(|err| {
                Error::with_source(
                    ErrorKind::Config,
                    format!("cannot export traces to {endpoint}"),
                    err,
                )
            })?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(Telemetry { provider })
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans for this exporter. Give
    /// it a level filter of its own (`LevelFilter::INFO`) when your log output is quieter:
    /// the request spans are at `INFO`.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer(env!("CARGO_PKG_NAME")))
    }

    /// Exports the spans not sent yet and stops the exporter.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::warn!("cannot export the last spans: {err}");
        }
    }
}

fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_endpoint_is_a_base_url_unless_it_names_the_traces_path() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(traces_url("http://c/otel/"), "http://c/otel/v1/traces");
    }
}
