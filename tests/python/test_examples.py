"""The migration examples (examples/*.rs) serving the items service (pyapp/service.py).

For every example: which side answered (Rust handlers set ``x-served-by: rust``, the Python
service ``x-served-by: python``) and what Python saw of requests that crossed a Rust router
(its ``/…/whoami`` endpoint echoes method, path, raw_path, query string, root_path, body).
Then the contract test: the same requests against the service under uvicorn and under
``mixed_routes`` give the same status codes and JSON bodies for the moved endpoint.

The examples are built by ``cargo build --release --examples`` (scripts/test.sh: ``--profile
ci``); these tests start ``target/PROFILE/examples/NAME --bind 127.0.0.1:0 --app
pyapp.service:app`` from the repository root and wait for its ``listening on http://127.0.0.1:PORT`` line.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from harness import (
    LISTENING_RE,
    READY_TIMEOUT,
    REPO_ROOT,
    TARGET_DIR,
    ServerProcess,
    ServerStartError,
    _StreamDrain,
    _wait_port_open,
    free_port,
    server_env,
)

# Every test here runs a Rust example; in SERVER_UNDER_TEST=uvicorn mode there is nothing to
# validate beyond what the contract test already compares against uvicorn.
pytestmark = pytest.mark.rust_only

EXAMPLES_DIR = TARGET_DIR / "examples"
SERVICE = "pyapp.service:app"

# pyapp/service.py SEED_ITEMS and examples/common/items.rs SEED_ITEMS, written out once more
# so that a change on one side only is caught.
SEED = [
    {"id": 1, "name": "Widget", "price": 9.99, "tags": ["tools"]},
    {"id": 2, "name": "Gadget", "price": 24.5, "tags": ["tools", "electronics"]},
    {"id": 3, "name": "Gizmo", "price": 4.25, "tags": []},
    {"id": 4, "name": "Sprocket", "price": 0.75, "tags": ["parts"]},
    {"id": 5, "name": "Widget Pro", "price": 49.0, "tags": ["tools", "premium"]},
]


# ---------------------------------------------------------------------------------------
# Starting servers
# ---------------------------------------------------------------------------------------


def start_example(name: str, *args: str, app: str = SERVICE, env: dict | None = None) -> ServerProcess:
    """``target/PROFILE/examples/NAME --bind 127.0.0.1:0 --app APP ARGS…``, once it listens;
    ``env`` is added to its environment."""
    binary = EXAMPLES_DIR / name
    if not binary.exists():
        raise ServerStartError(
            f"example binary not found: {binary} (build it with `cargo build --release --examples`)"
        )
    command = [str(binary), "--bind", "127.0.0.1:0", "--app", app, *args]
    proc = subprocess.Popen(
        command, cwd=REPO_ROOT, env=server_env(env), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    server = ServerProcess(proc, command, _StreamDrain(proc.stderr), _StreamDrain(proc.stdout))
    match = server.log.wait_for(LISTENING_RE, READY_TIMEOUT, alive=server.alive)
    if match is None:
        server.stop()
        raise ServerStartError(
            f"{name} did not log 'listening on http://127.0.0.1:PORT'.\n"
            f"command: {command}\n--- stderr ---\n{server.logs()}"
        )
    server.port = int(match.group(1))
    return server


def start_uvicorn(app: str = SERVICE) -> ServerProcess:
    """The same service under ``python -m uvicorn``: the reference the examples must match."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log",
    ]
    proc = subprocess.Popen(
        command, cwd=REPO_ROOT, env=server_env({"PYTHONUNBUFFERED": "1"}),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    server = ServerProcess(proc, command, _StreamDrain(proc.stdout), None)
    try:
        server.port = _wait_port_open(server, port, READY_TIMEOUT)
    except BaseException:
        server.stop()
        raise
    return server


def _module_server(start):
    server = start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def asgi_only():
    yield from _module_server(lambda: start_example("asgi_only"))


@pytest.fixture(scope="module")
def mixed():
    yield from _module_server(lambda: start_example("mixed_routes"))


@pytest.fixture(scope="module")
def nested():
    yield from _module_server(lambda: start_example("nested_routes"))


@pytest.fixture(scope="module")
def layered():
    # A short timeout, so that the timeout test does not wait long.
    yield from _module_server(lambda: start_example("tower_layers", "--timeout", "1"))


@pytest.fixture(scope="module")
def uvicorn_service():
    yield from _module_server(start_uvicorn)


def client(server: ServerProcess, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=10, **kwargs)


def served_by(response: httpx.Response) -> str | None:
    return response.headers.get("x-served-by")


def whoami(server: ServerProcess, method: str, target: str, **kwargs) -> dict:
    """What the Python app saw of a request sent to ``target`` (a ``…/whoami`` path)."""
    with client(server) as http:
        response = http.request(method, target, **kwargs)
    assert response.status_code == 200, response.text
    assert served_by(response) == "python"
    return response.json()


def log_line(server: ServerProcess, pattern: str, timeout: float = 5.0) -> str:
    """The first stderr line matching ``pattern`` (a regex), waiting for it to be written."""
    match = server.wait_for_log(re.compile(f"^.*{pattern}.*$", re.MULTILINE), timeout)
    assert match, f"no log line matching {pattern!r} in:\n{server.logs()}"
    return match.group(0)


def python_log(server: ServerProcess, method: str, target: str, status: int) -> str:
    """The service's own log line for a request (pyapp/service.py RequestContextMiddleware)."""
    pattern = rf'pyapp\.service: request_id=\S+ "{re.escape(method)} {re.escape(target)}" {status} '
    return log_line(server, pattern)


# ---------------------------------------------------------------------------------------
# asgi_only: nothing in Rust
# ---------------------------------------------------------------------------------------


def test_asgi_only_serves_the_whole_service(asgi_only):
    with client(asgi_only) as http:
        listed = http.get("/items")
        assert (listed.status_code, served_by(listed), listed.json()) == (200, "python", SEED)
        assert http.get("/items", params={"limit": 2, "q": "DGET"}).json() == SEED[:2]
        assert http.get("/health").json() == {"status": "ok"}
        assert http.get("/items/3").json() == SEED[2]
        missing = http.get("/items/999")
        assert (missing.status_code, missing.json()) == (404, {"detail": "Item not found"})

        created = http.post("/items", json={"name": "Flange", "price": 3.5, "tags": ["parts"]})
        assert created.status_code == 201, created.text
        item = created.json()
        assert item == {"id": item["id"], "name": "Flange", "price": 3.5, "tags": ["parts"]}
        assert http.get(f"/items/{item['id']}").json() == item
        replaced = http.put(f"/items/{item['id']}", json={"name": "Flange XL", "price": 4})
        assert replaced.json() == {"id": item["id"], "name": "Flange XL", "price": 4.0, "tags": []}
        assert http.delete(f"/items/{item['id']}").status_code == 204
        assert http.get(f"/items/{item['id']}").status_code == 404

        invalid = http.post("/items", json={"name": "", "price": -1})
        assert invalid.status_code == 422
        assert [error["loc"] for error in invalid.json()["detail"]] == [
            ["body", "name"], ["body", "price"],
        ]
        bad_limit = http.get("/items", params={"limit": 0})
        assert bad_limit.status_code == 422
        assert bad_limit.json()["detail"][0]["type"] == "greater_than_equal"


def test_asgi_only_passes_requests_through_unchanged(asgi_only):
    seen = whoami(
        asgi_only, "POST", "/some%20where/whoami?x=1&y=%2F&x=2",
        content=b'{"hello": "world"}', headers={"content-type": "application/json"},
    )
    assert seen["method"] == "POST"
    assert seen["path"] == "/some where/whoami"
    assert seen["raw_path"] == "/some%20where/whoami"
    assert seen["query_string"] == "x=1&y=%2F&x=2"
    assert seen["root_path"] == ""
    assert seen["body"] == '{"hello": "world"}'
    assert seen["content_type"] == "application/json"


def test_asgi_only_runs_lifespan_and_stops_cleanly():
    server = start_example("asgi_only")
    try:
        # The service seeds its store in lifespan startup, before the server listens.
        assert "items service started with 5 items" in server.logs()
        with client(server) as http:
            assert http.get("/items").json() == SEED
    finally:
        returncode = server.stop()
    assert returncode == 0, server.logs()
    assert "items service stopped" in server.logs()


# ---------------------------------------------------------------------------------------
# mixed_routes: GET /items in Rust, everything else in Python
# ---------------------------------------------------------------------------------------


def test_mixed_get_items_is_answered_by_rust(mixed):
    with client(mixed) as http:
        listed = http.get("/items")
        assert (listed.status_code, served_by(listed), listed.json()) == (200, "rust", SEED)
        assert listed.headers["content-type"] == "application/json"
        filtered = http.get("/items?limit=1&q=WIDGET")
        assert (served_by(filtered), filtered.json()) == ("rust", SEED[:1])
        invalid = http.get("/items?limit=abc")
        assert (invalid.status_code, served_by(invalid)) == (422, "rust")


def test_mixed_other_methods_on_the_moved_path_reach_python(mixed):
    with client(mixed) as http:
        created = http.post(
            "/items?source=mixed-test", json={"name": "Bracket", "price": 1.25, "tags": ["parts"]}
        )
        assert (created.status_code, served_by(created)) == (201, "python"), created.text
        assert {k: v for k, v in created.json().items() if k != "id"} == {
            "name": "Bracket", "price": 1.25, "tags": ["parts"],
        }
        # axum adds an `Allow` header to what a method router's fallback answers; the
        # examples use `any_service(asgi).get(handler)`, which does not, so Python's
        # response is exactly what uvicorn sends.
        assert "allow" not in created.headers
        # Python saw the full method, path and query string (its own log line says so).
        python_log(mixed, "POST", "/items?source=mixed-test", 201)

        # Methods nobody implements get the Python app's 405, not an empty one from axum.
        for method in ("PATCH", "PUT", "DELETE", "OPTIONS"):
            response = http.request(method, "/items")
            assert (response.status_code, served_by(response)) == (405, "python"), method
            assert response.json() == {"detail": "Method Not Allowed"}


def test_mixed_unmoved_routes_reach_python(mixed):
    with client(mixed) as http:
        for path in ("/items/1", "/health", "/api/v1/items", "/api/v1/reports/summary"):
            response = http.get(path)
            assert (response.status_code, served_by(response)) == (200, "python"), path
        missing = http.get("/nope")
        assert (missing.status_code, served_by(missing)) == (404, "python")
        assert missing.json() == {"detail": "Not Found"}
    seen = whoami(mixed, "PUT", "/v2/x%20y/whoami?a=1&a=2&b=", content=b"hello")
    assert (seen["method"], seen["path"], seen["raw_path"]) == ("PUT", "/v2/x y/whoami", "/v2/x%20y/whoami")
    assert (seen["query_string"], seen["body"], seen["root_path"]) == ("a=1&a=2&b=", "hello", "")


# ---------------------------------------------------------------------------------------
# nested_routes: Rust routers at /api and /api/v1, Python fallback at every level
# ---------------------------------------------------------------------------------------


def test_nested_rust_routes_at_each_depth(nested):
    with client(nested) as http:
        health = http.get("/api/health")
        assert (health.status_code, served_by(health), health.json()) == (200, "rust", {"status": "ok"})
        listed = http.get("/api/v1/items")
        assert (listed.status_code, served_by(listed), listed.json()) == (200, "rust", SEED)
        invalid = http.get("/api/v1/items?limit=101")
        assert (invalid.status_code, served_by(invalid)) == (422, "rust")
        # Not moved at the top level: /items and /health are still Python's.
        for path in ("/items", "/health"):
            assert served_by(http.get(path)) == "python", path


def test_nested_other_methods_and_routes_reach_python(nested):
    with client(nested) as http:
        created = http.post("/api/v1/items", json={"name": "Hinge", "price": 2.0})
        assert (created.status_code, served_by(created)) == (201, "python"), created.text
        item_id = created.json()["id"]
        fetched = http.get(f"/api/v1/items/{item_id}")
        assert (served_by(fetched), fetched.json()["name"]) == ("python", "Hinge")
        assert http.delete(f"/api/v1/items/{item_id}").status_code == 204
        summary = http.get("/api/v1/reports/summary")
        assert (summary.status_code, served_by(summary)) == (200, "python")
        # Unknown paths inside each nested router end in the Python app's own 404.
        for path in ("/api/nope", "/api/v1/nope", "/api/v1/reports/nope"):
            response = http.get(path)
            assert (response.status_code, served_by(response)) == (404, "python"), path
            assert response.json() == {"detail": "Not Found"}
        # Exactly at a nesting prefix, where axum hands the inner router "/".
        for path in ("/api?at=prefix", "/api/v1?at=prefix", "/api/v1/reports?at=prefix"):
            response = http.get(path)
            assert (response.status_code, served_by(response)) == (404, "python"), path
            python_log(nested, "GET", path, 404)


# Each path reaches the Python app through a different part of the router:
NESTING = [
    pytest.param("", id="depth0-root-fallback"),
    pytest.param("/api", id="depth1-api-fallback"),
    pytest.param("/api/v1", id="depth2-v1-fallback"),
    pytest.param("/api/v1/reports", id="depth3-nest_service"),
]


@pytest.mark.parametrize("prefix", NESTING)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_nested_python_sees_full_path_and_query(nested, uvicorn_service, prefix, method):
    target = f"{prefix}/caf%C3%A9%20bar/a%2Fb/whoami?q=a%26b&x=%2F&empty=&x=2&plus=1+1"
    body = b"payload \xe2\x9c\x93" if method == "POST" else b""
    seen = whoami(nested, method, target, content=body)
    assert seen["method"] == method
    assert seen["path"] == f"{prefix}/café bar/a/b/whoami"
    assert seen["raw_path"] == f"{prefix}/caf%C3%A9%20bar/a%2Fb/whoami"
    assert seen["query_string"] == "q=a%26b&x=%2F&empty=&x=2&plus=1+1"
    assert seen["root_path"] == ""
    assert seen["body"] == body.decode()
    # ...and exactly what the same app sees under uvicorn with nothing in front.
    reference = whoami(uvicorn_service, method, target, content=body)
    for key in ("request_id",):
        seen.pop(key), reference.pop(key)
    assert seen == reference


# ---------------------------------------------------------------------------------------
# tower_layers: request id, tracing, CORS, compression and timeout around both sides
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, side", [("/items", "rust"), ("/api/v1/items", "python")], ids=["rust", "python"]
)
def test_layers_compress_both_sides(layered, path, side):
    with client(layered) as http:
        compressed = http.get(path, headers={"accept-encoding": "gzip"})
        assert (compressed.status_code, served_by(compressed)) == (200, side)
        assert compressed.headers.get("content-encoding") == "gzip"
        assert compressed.json() == SEED  # httpx decompressed it
        plain = http.get(path, headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.json() == SEED


@pytest.mark.parametrize(
    "path, side", [("/items", "rust"), ("/items/1", "python")], ids=["rust", "python"]
)
def test_layers_cors_on_both_sides(layered, path, side):
    origin = {"origin": "https://app.example"}
    with client(layered) as http:
        response = http.get(path, headers=origin)
        assert (response.status_code, served_by(response)) == (200, side)
        assert response.headers["access-control-allow-origin"] == "*"
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "x-request-id" in exposed and "x-served-by" in exposed
        # The preflight is answered by the CORS layer; it never reaches either handler.
        preflight_id = f"preflight-{uuid.uuid4()}"
        preflight = http.options(
            path,
            headers={
                **origin,
                "access-control-request-method": "DELETE",
                "x-request-id": preflight_id,
            },
        )
        assert preflight.status_code == 200
        assert served_by(preflight) is None
        assert preflight.headers["access-control-allow-origin"] == "*"
    log_line(layered, rf"request_id={preflight_id}.*finished processing request")
    assert f"pyapp.service: request_id={preflight_id}" not in layered.logs()


def test_layers_timeout_applies_to_python(layered):
    with client(layered) as http:
        started = time.monotonic()
        response = http.get("/slow", params={"seconds": 5})
        elapsed = time.monotonic() - started
        assert response.status_code == 504
        assert elapsed < 4, f"the 1 s timeout took {elapsed:.1f}s"
        # Fast Python requests are unaffected, and the server is fine afterwards.
        fast = http.get("/slow", params={"seconds": 0.05})
        assert (fast.status_code, fast.json()) == (200, {"slept": 0.05})


def test_layers_share_the_clients_request_id(layered):
    request_id = f"req-{uuid.uuid4()}"
    with client(layered) as http:
        response = http.get("/whoami", headers={"x-request-id": request_id})
    assert response.headers["x-request-id"] == request_id
    seen = response.json()
    assert (seen["x_request_id"], seen["request_id"]) == (request_id, request_id)
    # Logged by Rust (the trace span of the request) and by Python (the service's logger).
    rust = log_line(layered, rf"request{{request_id={request_id}.*finished processing request")
    assert "status=200" in rust
    python = log_line(layered, rf"pyapp\.service: request_id={request_id} ")
    assert '"GET /whoami"' in python


def test_layers_generate_a_request_id_both_sides_see(layered):
    with client(layered) as http:
        response = http.get("/whoami")
    request_id = response.headers["x-request-id"]
    assert uuid.UUID(request_id)  # generated by the Rust side
    assert response.json()["request_id"] == request_id
    log_line(layered, rf"request{{request_id={request_id}.*finished processing request")
    log_line(layered, rf"pyapp\.service: request_id={request_id} ")


def test_layers_rust_handler_logs_inside_the_request_span(layered):
    request_id = f"req-{uuid.uuid4()}"
    with client(layered) as http:
        response = http.get("/items", headers={"x-request-id": request_id})
    assert (served_by(response), response.headers["x-request-id"]) == ("rust", request_id)
    log_line(layered, rf"request{{request_id={request_id}.*items listed by the Rust handler count=5")
    assert f"pyapp.service: request_id={request_id}" not in layered.logs()


# ---------------------------------------------------------------------------------------
# Contract: the moved endpoint answers as the Python one does under uvicorn
# ---------------------------------------------------------------------------------------

# The client cases for GET /items, the endpoint mixed_routes moved to Rust: valid and
# invalid parameters, the query-string decoding corners. Run unchanged against both.
MOVED_CASES = [
    "/items",
    "/items?limit=2",
    "/items?limit=100",
    "/items?limit=5&q=",
    "/items?q=widget",
    "/items?q=WID&limit=1",
    "/items?q=nothing",
    "/items?q=widget+pro",
    "/items?q=g%69z",
    "/items?q=%C3%A9",
    "/items?q=%FF",
    "/items?q=%ZZ",
    "/items?other=1&q=get",
    "/items?limit=abc",
    "/items?limit=",
    "/items?limit",
    "/items?limit=0",
    "/items?limit=-1",
    "/items?limit=-0",
    "/items?limit=101",
    "/items?limit=99999999999999999999",
    "/items?limit=1.5",
    "/items?limit=2.0",
    "/items?limit=2.",
    "/items?limit=%202%20",
    "/items?limit=+3",
    "/items?limit=%2B3",
    "/items?limit=0003",
    "/items?limit=1_0",
    "/items?limit=1__0",
    "/items?limit=1e1",
    "/items?limit=0x10",
    "/items?limit=%E2%82%AC",
    "/items?limit=%01",
    "/items?limit=%22quoted%22",
    "/items?limit=abc&limit=2",
    "/items?limit=2&limit=abc",
    "/items?%6Cimit=1",
    "/items?limit=1&&q=gad",
]


@pytest.fixture
def both():
    """A fresh uvicorn and a fresh mixed_routes server, each with the seed data."""
    reference = start_uvicorn()
    try:
        candidate = start_example("mixed_routes")
    except BaseException:
        reference.stop()
        raise
    try:
        yield reference, candidate
    finally:
        candidate.stop()
        reference.stop()


def test_contract_moved_endpoint_matches_uvicorn(both):
    reference, candidate = both
    with client(reference) as python, client(candidate) as rust:
        for target in MOVED_CASES:
            expected = python.get(target)
            actual = rust.get(target)
            assert served_by(expected) == "python"
            assert served_by(actual) == "rust", f"{target} was not answered by Rust"
            context = f"GET {target}: uvicorn {expected.status_code} {expected.text} / mixed {actual.status_code} {actual.text}"
            assert actual.status_code == expected.status_code, context
            assert actual.headers["content-type"] == expected.headers["content-type"], context
            assert actual.json() == expected.json(), context
            # Same JSON down to the bytes (key order, `49.0`, escapes), not just same value.
            assert actual.content == expected.content, context


def test_contract_unmoved_methods_on_the_moved_path_match_uvicorn(both):
    reference, candidate = both
    requests = [
        ("POST", "/items", {"json": {"name": "Spring", "price": 0.5, "tags": ["parts"]}}),
        ("POST", "/items", {"json": {"name": "", "price": "free"}}),
        ("POST", "/items", {"content": b"not json", "headers": {"content-type": "application/json"}}),
        ("PATCH", "/items", {}),
        ("PUT", "/items", {"json": {}}),
        ("OPTIONS", "/items", {}),
        ("GET", "/items/", {}),  # FastAPI's trailing-slash redirect
    ]
    with client(reference) as python, client(candidate) as rust:
        for method, target, kwargs in requests:
            expected = python.request(method, target, **kwargs)
            actual = rust.request(method, target, **kwargs)
            context = f"{method} {target}: uvicorn {expected.status_code} {expected.text} / mixed {actual.status_code} {actual.text}"
            assert served_by(actual) == served_by(expected) == "python", context
            assert actual.status_code == expected.status_code, context
            for header in ("content-type", "allow"):
                assert actual.headers.get(header) == expected.headers.get(header), context
            if expected.status_code == 307:
                # The redirect names the host:port the client used; the path is the same.
                assert actual.headers["location"].endswith("/items"), context
                assert expected.headers["location"].endswith("/items"), context
            else:
                assert actual.json() == expected.json(), context


def test_contract_known_difference_head(both):
    """Documented in docs/migration.md: FastAPI answers HEAD on a GET route with 405, axum's
    `get()` answers it like GET without the body. Route HEAD explicitly to Python
    (`.head_service(asgi.clone())`) where the old behaviour matters."""
    reference, candidate = both
    with client(reference) as python, client(candidate) as rust:
        expected = python.head("/items")
        actual = rust.head("/items")
    assert (expected.status_code, served_by(expected)) == (405, "python")
    assert (actual.status_code, served_by(actual)) == (200, "rust")
    assert actual.content == b""
