"""Prometheus metrics (issue #15): ``--metrics-bind`` on the binary, and the library's
``MetricsLayer`` around a migration router (example ``metrics``), scraped after known
traffic.

With ``--workers``, the supervisor's own series (restarts, workers) and each worker slot's
port.

Apps: ``pyapp/service.py`` (FastAPI, its routes have templates), ``pyapp/operations.py``
(raw ASGI: no route, a blocking endpoint, a websocket echo) and ``pyapp/workers.py``
(``/pid``).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter

import httpx
import pytest
from websockets.sync.client import connect

from harness import free_port, run_until_exit
from test_examples import start_example
from test_serving import wait_until

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


def test_static_files_are_counted_under_their_mount_as_rust(server_factory, tmp_path):
    (tmp_path / "a.txt").write_text("static")
    metrics_port = free_port()
    server = server_factory(
        "pyapp.operations:app", "--metrics-bind", f"127.0.0.1:{metrics_port}",
        "--static-path-route", "/static", "--static-path-mount", str(tmp_path),
    )
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/static/a.txt").text == "static"
        assert http.get("/static/a.txt").text == "static"
        assert http.get("/static/missing.txt").status_code == 404
        assert http.get("/other").status_code == 200
    samples = scrape(metrics_port)
    files = {"method": "GET", "route": "/static/{*path}", "backend": "rust"}
    assert value(samples, "http_requests_total", **files, status="2xx") == 2
    assert value(samples, "http_requests_total", **files, status="4xx") == 1
    assert value(samples, "http_requests_total", method="GET", route="unmatched", backend="python", status="2xx") == 1


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


def test_a_python_method_of_a_rust_route_keeps_the_rust_template_when_the_app_names_none():
    # A raw ASGI app sets no scope["route"]: POST /items is the Python app's, under the
    # template of the Axum route it was routed by; other paths are the fallback's.
    metrics_port = free_port()
    server = start_example("metrics", "--metrics-bind", f"127.0.0.1:{metrics_port}", app="pyapp.bench_raw:hello")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
            assert http.get("/items").status_code == 200
            assert http.post("/items", content=b"x").text == "Hello, world!"
            assert http.get("/elsewhere").text == "Hello, world!"
        samples = scrape(metrics_port)
        assert value(samples, "http_requests_total", method="GET", route="/items", backend="rust", status="2xx") == 1
        assert value(samples, "http_requests_total", method="POST", route="/items", backend="python",
                     status="2xx") == 1
        assert value(samples, "http_requests_total", method="GET", route="unmatched", backend="python",
                     status="2xx") == 1
    finally:
        server.stop()


# --- with --workers ----------------------------------------------------------------------

METRICS_LINE = re.compile(r"metrics of (?:the supervisor|worker slot (\d+)) on http://127\.0\.0\.1:(\d+)/metrics")
PID_REQUESTS = {"method": "GET", "route": "unmatched", "backend": "python", "status": "2xx"}


def metrics_ports(server, workers: int) -> tuple[int, list[int]]:
    """The supervisor's metrics port and each worker slot's, from the log."""
    wait_until(lambda: len(METRICS_LINE.findall(server.logs())) == workers + 1, 10, server.logs())
    found = METRICS_LINE.findall(server.logs())
    supervisor = [int(port) for slot, port in found if not slot]
    slots = [int(port) for slot, port in sorted((int(slot), port) for slot, port in found if slot)]
    return supervisor[0], slots


def test_with_workers_the_supervisor_counts_restarts_and_each_slot_serves_its_worker(server_factory):
    server = server_factory("pyapp.workers:app", "--workers", "2", "--metrics-bind", "127.0.0.1:0",
                            "--no-access-log")
    supervisor, slots = metrics_ports(server, 2)
    assert len(slots) == 2 and supervisor not in slots
    wait_until(lambda: value(scrape(supervisor), "asgi_workers", state="serving") == 2, 20, server.logs())
    samples = scrape(supervisor)
    causes = ["crash", "max_requests", "max_rss", "lifetime", "sighup", "reload"]
    assert all((("asgi_worker_restarts_total", frozenset({("cause", cause)})) in samples) for cause in causes)
    assert sum(value(samples, "asgi_worker_restarts_total", cause=cause) for cause in causes) == 0
    # The supervisor serves no requests: none of the request series are its.
    assert not any(name.startswith("http_") for name, _ in samples)

    # Each slot's port is its worker's own exposition: its requests, and only its.
    answered = Counter(pid_of_new_connection(server.url) for _ in range(40))
    per_slot = sorted(value(scrape(port), "http_requests_total", **PID_REQUESTS) for port in slots)
    per_worker = sorted([0] * (2 - len(answered)) + list(answered.values()))
    assert per_slot == per_worker

    # SIGHUP replaces both: the restarts are counted, and each slot keeps its port with the
    # new worker's counters behind it.
    os.kill(server.pid, signal.SIGHUP)
    assert server.wait_for_log("every worker has been replaced (SIGHUP)", timeout=30), server.logs()
    wait_until(lambda: value(scrape(supervisor), "asgi_workers", state="draining") == 0, 20, server.logs())
    samples = scrape(supervisor)
    assert value(samples, "asgi_worker_restarts_total", cause="sighup") == 2
    assert value(samples, "asgi_workers", state="serving") == 2
    assert [value(scrape(port), "http_requests_total", **PID_REQUESTS) for port in slots] == [0, 0]

    # A worker killed is a crash.
    os.kill(pid_of_new_connection(server.url), signal.SIGKILL)
    wait_until(lambda: value(scrape(supervisor), "asgi_worker_restarts_total", cause="crash") == 1, 20,
               server.logs())


def pid_of_new_connection(url: str) -> int:
    return int(httpx.get(url + "/pid", timeout=10).text)


def test_metrics_ports_past_65535_are_a_usage_error():
    result = run_until_exit("pyapp.workers:app", "--workers", "2", "--metrics-bind", "127.0.0.1:65535")
    assert result.returncode == 2
    assert "--metrics-bind 127.0.0.1:65535 with 2 workers needs ports up to 65537" in result.stderr
