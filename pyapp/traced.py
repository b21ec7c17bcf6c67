"""An app instrumented with OpenTelemetry's ASGI middleware, as a user's traced service is
(tests/python/test_telemetry.py): its spans go over OTLP/HTTP to
``OTEL_EXPORTER_OTLP_ENDPOINT``, one at a time as they end, under the service name
``python-app``.

- ``/traceparent``: the ``traceparent`` header the app received, as text.
- ``/fail``: raises (the middleware records the error; the server answers 500).
- anything else: ``ok``.
"""

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from pyapp.plain_lifespan import serve_lifespan

provider = TracerProvider(resource=Resource.create({"service.name": "python-app"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)


async def plain_app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await serve_lifespan(receive, send)
    if scope["path"] == "/fail":
        raise RuntimeError("the traced app failed")
    body = b"ok"
    if scope["path"] == "/traceparent":
        body = dict(scope["headers"]).get(b"traceparent", b"")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


app = OpenTelemetryMiddleware(plain_app)
