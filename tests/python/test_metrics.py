"""Prometheus metrics (issue #15): ``--metrics-bind`` on the binary, and the library's
``MetricsLayer`` around a migration router (example ``metrics``), scraped after known
traffic.

Apps: ``pyapp/service.py`` (FastAPI, its routes have templates) and ``pyapp/operations.py``
(raw ASGI: no route, a blocking endpoint, a websocket echo).
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from websockets.sync.client import connect

from harness import free_port, run_until_exit
from test_examples import start_example

pytestmark = pytest.mark.rust_only

SAMPLE_RE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-z_]+)="([^"]*)"')


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition, keyed by name and label set."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        match = SAMPLE_RE.match(line)
        if match:
            name, labels, value = match.groups()
            samples[(name, frozenset(LABEL_RE.findall(labels or "")))] = float(value)
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_route_and_status_with_their_latency(server_factory):
    metrics_port = free_port()
    server = server_factory("pyapp.service:app", "--metrics-bind", f"127.0.0.1:{metrics_port}")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for _ in range(3):
            assert http.get("/items/1").status_code == 200
        assert http.get("/items/999").status_code == 404
        assert http.post("/items", json={"name": "Bolt", "price": 0.1}).status_code == 201
        assert http.get("/no/such/route").status_code == 404
    samples = scrape(metrics_port)
    item = {"method": "GET", "route": "/items/{item_id}", "backend": "python"}
    assert value(samples, "http_requests_total", **item, status="2xx") == 3
    assert value(samples, "http_requests_total", **item, status="4xx") == 1
    assert value(samples, "http_requests_total", method="POST", route="/items", backend="python", status="2xx") == 1
    # A path no route of the app matched is one series, not one per path.
    assert value(samples, "http_requests_total", method="GET", route="unmatched", backend="python", status="4xx") == 1
    assert value(samples, "http_request_duration_seconds_count", **item) == 4
    assert value(samples, "http_request_duration_seconds_bucket", **item, le="+Inf") == 4
    assert value(samples, "http_requests_in_flight") == 0
    assert value(samples, "http_request_body_bytes_total") > 0
    assert value(samples, "http_response_body_bytes_total", backend="python") > 0
    # Every request that reached Python waited in the loop's queue first.
    assert value(samples, "asgi_queue_wait_seconds_count") == 6


def test_the_loop_signals_and_websockets_are_measured(server_factory):
    metrics_port = free_port()
    server = server_factory("pyapp.operations:app", "--metrics-bind", f"127.0.0.1:{metrics_port}",
                            "--loop-block-warn", "0.5")
    assert value(scrape(metrics_port), "asgi_loop_blocked_total") == 0
    with connect(f"ws://127.0.0.1:{server.port}/echo") as websocket:
        websocket.send("hello")
        assert websocket.recv(timeout=5) == "hello"
        assert value(scrape(metrics_port), "websocket_connections") == 1
    deadline = time.monotonic() + 5
    while value(scrape(metrics_port), "websocket_connections") != 0:
        assert time.monotonic() < deadline, "the closed websocket is still counted"
        time.sleep(0.05)
    assert httpx.get(server.url + "/block?seconds=1.2", timeout=10).text == "ok"
    assert server.wait_for_log("the event loop runs again", timeout=5)
    samples = scrape(metrics_port)
    assert value(samples, "asgi_loop_blocked_total") == 1
    assert value(samples, "http_requests_total", method="GET", route="unmatched", backend="python", status="2xx") == 1
    # An idle loop thread after the blocked spell is reported almost idle again.
    time.sleep(2.2)
    assert value(scrape(metrics_port), "asgi_loop_busy_ratio") < 0.5


def test_a_request_the_client_gave_up_on_leaves_in_flight(server_factory):
    metrics_port = free_port()
    server = server_factory("pyapp.operations:app", "--metrics-bind", f"127.0.0.1:{metrics_port}")
    with pytest.raises(httpx.TimeoutException):
        httpx.get(server.url + "/sleep?seconds=1", timeout=0.3)
    deadline = time.monotonic() + 5
    while value(scrape(metrics_port), "http_requests_in_flight") != 0:
        assert time.monotonic() < deadline, "a request the client left is still in flight"
        time.sleep(0.05)


def test_rust_and_python_routes_of_a_migration_router_are_told_apart():
    metrics_port = free_port()
    server = start_example("metrics", "--metrics-bind", f"127.0.0.1:{metrics_port}")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
            for _ in range(2):
                assert http.get("/items").status_code == 200
            assert http.get("/items/2").status_code == 200
        samples = scrape(metrics_port)
        assert value(samples, "http_requests_total", method="GET", route="/items", backend="rust", status="2xx") == 2
        assert value(samples, "http_requests_total", method="GET", route="/items/{item_id}", backend="python",
                     status="2xx") == 1
        assert value(samples, "http_response_body_bytes_total", backend="rust") > 0
        # Only the Python request went through the loop's queue.
        assert value(samples, "asgi_queue_wait_seconds_count") == 1
    finally:
        server.stop()


def test_metrics_bind_is_refused_with_several_workers():
    result = run_until_exit("pyapp.service:app", "--workers", "2", "--metrics-bind", "127.0.0.1:0")
    assert result.returncode == 2
    assert "--metrics-bind" in result.stderr
