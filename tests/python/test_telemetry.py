"""OpenTelemetry (issue #15): a server span per request in the client's trace, the Python
app's own instrumentation continuing it, Rust handler spans as children, and the trace id
in the access log.

A small OTLP/HTTP receiver runs inside the test; what the server and the app export is
decoded with the ``opentelemetry-proto`` package. The app is ``pyapp/traced.py``
(OpenTelemetry's ASGI middleware, exporting each span as it ends).
"""

from __future__ import annotations

import http.server
import re
import threading
import time
from dataclasses import dataclass

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from harness import free_port, run_until_exit
from test_examples import start_example

pytestmark = pytest.mark.rust_only

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
# The server's batch exporter sends every 100 ms instead of every 5 s.
QUICK_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict
    status: int


class Receiver:
    """An OTLP/HTTP receiver on a free loopback port: every span posted to /v1/traces."""

    def __init__(self):
        self.spans: list[ExportedSpan] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.path == "/v1/traces":
                    receiver.add(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, export: ExportTraceServiceRequest):
        with self.lock:
            for resource_spans in export.resource_spans:
                service = next(
                    (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"),
                    "",
                )
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(ExportedSpan(
                            service=service,
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status=span.status.code,
                        ))

    def wait_for(self, count: int, predicate, timeout: float = 10.0) -> list[ExportedSpan]:
        """The spans matching ``predicate`` once at least ``count`` have arrived."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [span for span in self.spans if predicate(span)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


def python_env(receiver: Receiver) -> dict:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, **QUICK_EXPORT}


def server_spans(receiver: Receiver, count: int, trace_id: str | None = None) -> list[ExportedSpan]:
    return receiver.wait_for(
        count,
        lambda s: s.service == "rust-asgi-server" and s.kind == ProtoSpan.SPAN_KIND_SERVER
        and (trace_id is None or s.trace_id == trace_id),
    )


def python_server_span(receiver: Receiver, trace_id: str) -> ExportedSpan:
    """The span the ASGI middleware opens for a request (its other spans are its children)."""
    [span] = receiver.wait_for(
        1,
        lambda s: s.service == "python-app" and s.kind == ProtoSpan.SPAN_KIND_SERVER and s.trace_id == trace_id,
    )
    return span


def test_the_python_apps_trace_continues_below_the_server_span_of_the_clients_trace(server_factory, receiver):
    server = server_factory(
        "pyapp.traced:app", "--otel-endpoint", receiver.url, env=python_env(receiver),
    )
    response = httpx.get(f"{server.url}/traceparent?x=1", headers={"traceparent": CLIENT_TRACEPARENT}, timeout=10)
    assert response.status_code == 200

    [span] = server_spans(receiver, 1, CLIENT_TRACE)
    assert span.parent_span_id == CLIENT_SPAN
    assert span.attributes["http.request.method"] == "GET"
    assert span.attributes["url.path"] == "/traceparent"
    assert span.attributes["url.query"] == "x=1"
    assert span.attributes["http.response.status_code"] == 200
    assert span.status != Status.STATUS_CODE_ERROR
    # The app was given the server span as its parent, and its instrumentation used it.
    assert response.text == f"00-{CLIENT_TRACE}-{span.span_id}-01"
    assert python_server_span(receiver, CLIENT_TRACE).parent_span_id == span.span_id
    # The access-log line names the trace.
    server.wait_for_log(re.compile(rf'"GET /traceparent\?x=1 HTTP/1.1" 200 .*trace_id={CLIENT_TRACE}'))


def test_a_request_without_trace_context_starts_a_trace_the_app_joins(server_factory, receiver):
    server = server_factory(
        "pyapp.traced:app", "--otel-endpoint", receiver.url, env=python_env(receiver),
    )
    assert httpx.get(f"{server.url}/", timeout=10).status_code == 200
    [span] = server_spans(receiver, 1)
    assert span.parent_span_id == ""
    assert python_server_span(receiver, span.trace_id).parent_span_id == span.span_id


def test_a_failing_app_marks_the_server_span_as_an_error(server_factory, receiver):
    server = server_factory(
        "pyapp.traced:app", "--otel-endpoint", receiver.url, env=python_env(receiver),
    )
    assert httpx.get(f"{server.url}/fail", headers={"traceparent": CLIENT_TRACEPARENT}, timeout=10).status_code == 500
    [span] = server_spans(receiver, 1, CLIENT_TRACE)
    assert span.attributes["http.response.status_code"] == 500
    assert span.status == Status.STATUS_CODE_ERROR


def test_spans_still_queued_at_shutdown_are_exported(receiver):
    # The default export delay (5 s) is longer than the server lives: only the exporter's
    # flush at shutdown can deliver the span.
    port = free_port()
    ready = threading.Event()

    def request_then_stop():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", headers={"traceparent": CLIENT_TRACEPARENT}, timeout=5)
                ready.set()
                return
            except httpx.TransportError:
                time.sleep(0.1)

    client = threading.Thread(target=request_then_stop)
    client.start()
    result = run_until_exit(
        "pyapp.traced:app", "--port", str(port), "--otel-endpoint", receiver.url,
        "--limit-max-requests", "1",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url},
    )
    client.join()
    assert ready.is_set()
    assert result.returncode == 0, result.stderr
    assert len(server_spans(receiver, 1, CLIENT_TRACE)) == 1


def test_rust_handler_spans_and_python_spans_share_the_clients_trace(receiver):
    server = start_example(
        "opentelemetry", "--otel-endpoint", receiver.url, app="pyapp.traced:app", env=python_env(receiver),
    )
    try:
        headers = {"traceparent": CLIENT_TRACEPARENT}
        rust = httpx.get(f"{server.url}/hello", headers=headers, timeout=10)
        python = httpx.get(f"{server.url}/traceparent", headers=headers, timeout=10)
        assert rust.text == "hello from Rust"
        assert python.status_code == 200

        spans = server_spans(receiver, 2, CLIENT_TRACE)
        assert len(spans) == 2
        assert {span.parent_span_id for span in spans} == {CLIENT_SPAN}
        by_path = {span.attributes["url.path"]: span for span in spans}
        [handler] = receiver.wait_for(1, lambda s: s.name == "hello" and s.trace_id == CLIENT_TRACE)
        assert handler.parent_span_id == by_path["/hello"].span_id
        assert python_server_span(receiver, CLIENT_TRACE).parent_span_id == by_path["/traceparent"].span_id
    finally:
        server.stop()


def test_a_bad_endpoint_is_a_usage_error():
    result = run_until_exit("pyapp.traced:app", "--otel-endpoint", "not a url")
    assert result.returncode == 2
    assert "--otel-endpoint" in result.stderr or "not a url" in result.stderr
