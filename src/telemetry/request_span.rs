//! The server span of one request: parented on the client's trace context, named in the
//! request's `traceparent` for whatever serves it next.

use http::{Request, StatusCode};
use opentelemetry::global;
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::connection_info::ConnectionInfo;

/// A request's server span, held until its response has been sent.
pub(crate) struct RequestSpan {
    span: Span,
    trace_id: Option<TraceId>,
}

impl RequestSpan {
    /// Opens the span of `request` and rewrites the request's trace context to name it.
    pub(crate) fn start<B>(request: &mut Request<B>, connection: &ConnectionInfo) -> Self {
        let method = request.method().as_str();
        let span = tracing::info_span!(
            "request",
            otel.name = method,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = method,
            url.path = request.uri().path(),
            url.query = request.uri().query(),
            url.scheme = if connection.secure { "https" } else { "http" },
            network.protocol.version = protocol_version(request.version()),
            client.address = connection
                .client
                .map(|client| tracing::field::display(client.ip())),
            http.response.status_code = Empty,
        );
        let parent = global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        // Fails only without an OpenTelemetry layer: the span is then a plain tracing span.
        let _ = span.set_parent(parent);
        let context = span.context();
        let span_context = context.span().span_context().clone();
        let trace_id = span_context.is_valid().then(|| span_context.trace_id());
        if trace_id.is_some() {
            global::get_text_map_propagator(|propagator| {
                propagator.inject_context(&context, &mut HeaderInjector(request.headers_mut()));
            });
        }
        RequestSpan { span, trace_id }
    }

    /// The span to run the request's service in.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// The trace id, for the access log (its `Display` is the 32 hex digits of
    /// `traceparent`); `None` when no OpenTelemetry layer records spans.
    pub(crate) fn trace_id(&self) -> Option<TraceId> {
        self.trace_id
    }

    /// Records the response status; a server error marks the span as failed.
    pub(crate) fn responded(&self, status: StatusCode) {
        // As an i64: tracing-opentelemetry records unsigned values as their Debug text.
        self.span
            .record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}
