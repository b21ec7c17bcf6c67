"""The migration tools (src/migration/, docs/migration.md) through their examples.

- ``openapi_merge``: one OpenAPI document at the Python app's ``openapi_url``, with
  ``GET /items/{id}`` and ``GET /version`` from Rust (utoipa) and the rest of
  pyapp/service.py from Python, each operation marked ``x-served-by``; and the ownership
  report (who answers each operation), logged and served at ``/migration/ownership``.
- ``shadow_compare``: Rust routes behind a ``ShadowLayer`` that also asks the Python app
  and compares; ``GET /items/{item_id}`` drifted on purpose (its 404 detail), ``GET /health``
  adds an ignored field, ``GET /slow`` answers at once where Python sleeps.
- ``rust_from_python``: a FastAPI endpoint calling a Rust function registered in the
  embedded interpreter (``PythonAppBuilder::rust_module``).
- ``request_context``: a Rust middleware authenticates the caller; the FastAPI endpoint reads
  the user from ``request.state`` (``AsgiService::scope_state``) and leaves an audit record
  the middleware reads back (``AsgiService::response_state``).

The examples are started from target/PROFILE/examples like in test_examples.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
import time

import pytest
from openapi_spec_validator import validate

from harness import REPO_ROOT, server_env
from test_examples import EXAMPLES_DIR, client, log_line, served_by, start_example

pytestmark = pytest.mark.rust_only

DRIFTED = "pyapp.migration_apps:drifted"
# shadow_compare compares only on spare CPU and at most 100 times a second; the tests of
# what it compares must not depend on how busy the machine running them is.
ANY_LOAD = ("--min-idle-cpu", "0", "--max-per-second", "inf")
OPERATION_KEYS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def merged():
    server = start_example("openapi_merge")
    yield server
    server.stop()


def operations(document: dict) -> dict[tuple[str, str], dict]:
    """``(METHOD, path) -> operation`` of an OpenAPI document."""
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in OPERATION_KEYS
    }


def test_openapi_one_document_marks_who_serves_each_operation(merged):
    with client(merged) as http:
        document = http.get("/openapi.json").json()
    served = {key: operation.get("x-served-by") for key, operation in operations(document).items()}
    assert served[("GET", "/items/{item_id}")] == "rust"
    assert served[("GET", "/version")] == "rust"
    for key in [("PUT", "/items/{item_id}"), ("DELETE", "/items/{item_id}"), ("GET", "/items"),
                ("POST", "/items"), ("GET", "/api/v1/items/{item_id}"), ("GET", "/health")]:
        assert served[key] == "python", key
    assert sorted(key for key, side in served.items() if side == "rust") == [
        ("GET", "/items/{item_id}"), ("GET", "/version"),
    ]
    # One path for the moved operation: Rust's `{id}` is written with Python's `{item_id}`.
    assert "/items/{id}" not in document["paths"]
    moved = document["paths"]["/items/{item_id}"]["get"]
    assert moved["operationId"] == "get_item"  # utoipa's, not FastAPI's
    assert [p["name"] for p in moved["parameters"]] == ["item_id"]
    # The Python app's own document is the base.
    assert document["info"]["title"] == "items service"
    assert set(document["components"]["schemas"]) >= {"Item", "ItemIn", "Detail", "Version"}


def test_openapi_merged_document_is_valid_openapi_3(merged):
    with client(merged) as http:
        response = http.get("/openapi.json")
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"].startswith("3.")
    validate(document)  # raises on the first error


def test_openapi_moved_routes_answer_from_rust(merged):
    with client(merged) as http:
        item = http.get("/items/2")
        assert (item.status_code, served_by(item)) == (200, "rust")
        assert item.json() == {"id": 2, "name": "Gadget", "price": 24.5, "tags": ["tools", "electronics"]}
        missing = http.get("/items/999")
        assert (missing.status_code, served_by(missing), missing.json()) == (404, "rust", {"detail": "Item not found"})
        assert http.get("/version").json() == {"version": "0.1.0"}
        # The path's other methods still reach Python.
        replaced = http.put("/items/3", json={"name": "Gizmo", "price": 4.5})
        assert (replaced.status_code, served_by(replaced)) == (200, "python")


def test_openapi_docs_page_of_the_python_app_loads_the_merged_document(merged):
    with client(merged) as http:
        docs = http.get("/docs")
        assert (docs.status_code, served_by(docs)) == (200, "python")
        assert "url: '/openapi.json'" in docs.text
        document = http.get("/openapi.json")
    # What that URL serves is the merged document, not FastAPI's own.
    assert served_by(document) is None  # not the Python middleware's mark
    assert document.json()["paths"]["/version"]["get"]["x-served-by"] == "rust"


def test_openapi_merge_is_logged_at_startup(merged):
    line = log_line(merged, "OpenAPI: one document at /openapi.json")
    assert "2 operations from Rust, 13 from Python" in line
    assert "defined differently" not in merged.logs()


def test_openapi_conflicting_definition_is_a_warning():
    server = start_example("openapi_merge", app=DRIFTED)
    try:
        line = log_line(server, r"WARN .*OpenAPI: GET /items/\{item_id\} is defined differently")
        assert 'parameter path item_id: /schema/type: rust "integer", python "string"' in line
        assert "response 200 application/json: " in line and "/properties/sku" in line
        log_line(server, r"WARN .*components/schemas/Item differs between Rust and Python; Rust's is published as Item_rust")
        # Served all the same, from Rust's definition.
        with client(server) as http:
            document = http.get("/openapi.json").json()
        moved = document["paths"]["/items/{item_id}"]["get"]
        assert moved["x-served-by"] == "rust"
        assert moved["parameters"][0]["schema"]["type"] == "integer"
        validate(document)
    finally:
        server.stop()


def test_openapi_conflicting_definition_is_an_error_when_strict():
    command = [str(EXAMPLES_DIR / "openapi_merge"), "--bind", "127.0.0.1:0", "--app", DRIFTED, "--strict"]
    finished = subprocess.run(
        command, cwd=REPO_ROOT, env=server_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )
    assert finished.returncode != 0
    assert "OpenAPI (strict): GET /items/{item_id} is defined differently" in finished.stderr
    assert "listening on" not in finished.stderr


# ---------------------------------------------------------------------------------------
# Ownership report
# ---------------------------------------------------------------------------------------


def ownership(server) -> dict:
    with client(server) as http:
        response = http.get("/migration/ownership")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.json()


def test_ownership_lists_every_python_route_and_rust_operation(merged):
    report = ownership(merged)
    rows = {(row["method"], row["path"]): row for row in report["operations"]}
    # The Python route table, mounts and included routers followed (pyapp/service.py).
    python_routes = {key for key, row in rows.items() if row["python_route"]}
    assert {("GET", "/items"), ("POST", "/items"), ("GET", "/items/{item_id}"),
            ("DELETE", "/api/v1/items/{item_id}"), ("GET", "/api/v1/reports/summary"),
            ("GET", "/docs"), ("GET", "/openapi.json"), ("PATCH", "/{prefix}/whoami")} <= python_routes
    assert ("HEAD", "/docs") not in rows  # implied by GET
    assert rows[("GET", "/docs")]["python_documented"] is False
    assert rows[("GET", "/health")]["python_documented"] is True
    # What Rust documents: the moved operation under Python's path, and the Rust-only one.
    assert rows[("GET", "/items/{item_id}")] == {
        "method": "GET", "path": "/items/{item_id}", "owner": "rust",
        "python_route": True, "python_documented": True, "rust_documented": True, "probed": True,
    }
    assert rows[("GET", "/version")]["python_route"] is False
    assert rows[("PUT", "/items/{item_id}")]["owner"] == "python"
    rust = sum(row["owner"] == "rust" for row in report["operations"])
    assert (report["rust"], report["python"]) == (rust, len(rows) - rust)


def test_ownership_matches_the_router(merged):
    """Every operation, sent for real: Python's answers carry its middleware's mark."""
    report = ownership(merged)
    owners = {(row["method"], row["path"]): row["owner"] for row in report["operations"]}
    # The router's own routes beyond the documents: the merged OpenAPI document is Rust's now.
    assert owners[("GET", "/openapi.json")] == "rust"
    assert owners[("GET", "/docs")] == "python"
    probed = {key for key, row in zip(owners, report["operations"]) if row["probed"]}
    assert {method for method, _ in probed} == {"GET", "OPTIONS"}  # safe methods only
    with client(merged) as http:
        for (method, path), owner in owners.items():
            target = path.replace("{item_id}", "7").replace("{prefix}", "some")
            params = {"seconds": 0} if path in ("/slow", "/busy") else None
            response = http.request(method, target, params=params)
            answered_by = "python" if served_by(response) == "python" else "rust"
            assert answered_by == owner, f"{method} {target}: report says {owner}, {answered_by} answered"
    # The probe's own requests were answered without running the app.
    assert "ownership-probe" not in merged.logs()


def test_ownership_summary_is_logged_at_startup(merged):
    report = ownership(merged)
    line = log_line(merged, r"ownership: \d+ of \d+ operations in Rust")
    assert f"ownership: {report['rust']} of {len(report['operations'])} operations in Rust (" in line
    assert "GET /items/{item_id}" in line and "GET /version" in line


# ---------------------------------------------------------------------------------------
# Shadow comparison
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shadowed():
    server = start_example("shadow_compare", *ANY_LOAD)
    yield server
    server.stop()


def stats(server) -> dict:
    with client(server) as http:
        return http.get("/shadow/stats").json()


def wait_for_stats(server, expected: dict, timeout: float = 10.0) -> dict:
    """The counters once each one in ``expected`` has reached its value."""
    deadline = time.monotonic() + timeout
    while True:
        counts = stats(server)
        if all(counts[name] >= value for name, value in expected.items()):
            return counts
        assert time.monotonic() < deadline, f"counters {counts}, expected at least {expected}"
        time.sleep(0.05)


def test_shadow_mismatch_is_counted_and_logged_while_the_client_gets_rust(shadowed):
    before = stats(shadowed)
    with client(shadowed) as http:
        missing = http.get("/items/999")
    # The client sees the Rust answer, drift included.
    assert (missing.status_code, served_by(missing), missing.json()) == (404, "rust", {"detail": "Not found"})
    after = wait_for_stats(shadowed, {"mismatched": before["mismatched"] + 1, "compared": before["compared"] + 1})
    assert after["failed"] == before["failed"]
    line = log_line(shadowed, r"WARN .*shadow: GET /items/999 answered differently by Python")
    assert line.endswith('body /detail: rust "Not found", python "Item not found"')
    # Python did answer that request (its own log line), beside the Rust one.
    assert 'pyapp.service: request_id=' in log_line(shadowed, r'"GET /items/999" 404')


def test_shadow_equal_answers_are_compared_without_a_mismatch(shadowed):
    before = stats(shadowed)
    with client(shadowed) as http:
        item = http.get("/items/1")
        health = http.get("/health")
    assert (served_by(item), item.json()["name"]) == ("rust", "Widget")
    assert (served_by(health), health.json()["status"]) == ("rust", "ok")
    assert "checked_at" in health.json()  # left out of the comparison
    after = wait_for_stats(shadowed, {"compared": before["compared"] + 2})
    assert after["mismatched"] == before["mismatched"]
    assert "shadow: GET /items/1 " not in shadowed.logs()
    assert "shadow: GET /health " not in shadowed.logs()


def test_shadow_does_not_delay_the_client(shadowed):
    before = stats(shadowed)
    with client(shadowed) as http:
        started = time.monotonic()
        response = http.get("/slow", params={"seconds": 2})
        elapsed = time.monotonic() - started
    assert (served_by(response), response.json()) == ("rust", {"slept": 2.0})
    assert elapsed < 1.0, f"the client waited {elapsed:.2f}s for a Python side that sleeps 2s"
    # Compared once Python has answered, and equal.
    assert stats(shadowed)["compared"] == before["compared"]
    after = wait_for_stats(shadowed, {"compared": before["compared"] + 1})
    assert after["mismatched"] == before["mismatched"]


def test_shadow_is_skipped_while_python_is_busy():
    server = start_example("shadow_compare", *ANY_LOAD, "--max-in-flight", "1")
    try:
        with client(server) as http:
            # The first request takes the only permit until Python has slept 2 s ...
            assert served_by(http.get("/slow", params={"seconds": 2})) == "rust"
            # ... so these are answered by Rust and not sent to Python at all.
            for _ in range(3):
                assert http.get("/items/999").json() == {"detail": "Not found"}
        counts = stats(server)
        assert (counts["skipped_busy"], counts["mismatched"]) == (3, 0)
        assert wait_for_stats(server, {"compared": 1})["mismatched"] == 0
        assert '"GET /items/999"' not in server.logs()  # never reached Python
    finally:
        server.stop()


def test_shadow_is_skipped_while_the_loop_thread_is_busy():
    # Only the loop thread's gate: a spinning thread gets at least 0.4 of a CPU even on a
    # machine at load 5; another test covers the machine's idle CPU.
    server = start_example("shadow_compare", *ANY_LOAD, "--max-loop-busy", "0.2")
    try:
        with client(server) as http:
            assert http.get("/items/999").status_code == 404
            wait_for_stats(server, {"compared": 1})
            # A blocking Python call keeps the loop thread busy; Rust routes still answer,
            # and while the loop is busy their requests are not sent to Python.
            blocking = ThreadPoolExecutor(1).submit(http.get, "/busy", params={"seconds": 1.5})
            time.sleep(0.3)
            for _ in range(3):
                started = time.monotonic()
                assert http.get("/items/999").json() == {"detail": "Not found"}
                assert time.monotonic() - started < 0.5, "a Rust route waited for the busy loop"
                time.sleep(0.06)
            assert blocking.result(10).json() == {"busy": 1.5}
        counts = stats(server)
        assert (counts["compared"], counts["skipped_busy"]) == (1, 3), counts
    finally:
        server.stop()


def test_shadow_is_skipped_while_every_cpu_is_busy():
    server = start_example("shadow_compare", "--max-loop-busy", "1", "--min-idle-cpu", "0.1")
    burners = []
    try:
        with client(server) as http:
            # Compared while the machine has spare CPU (on a busy test machine, once it has).
            deadline = time.monotonic() + 10
            while stats(server)["compared"] == 0 and time.monotonic() < deadline:
                assert http.get("/items/999").status_code == 404
                time.sleep(0.1)
            wait_for_stats(server, {"compared": 1})
            # Other processes take every CPU: comparisons would take their CPU from the
            # clients, so the Rust route answers alone.
            burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                       for _ in range(os.cpu_count() or 1)]
            time.sleep(0.3)
            # The machine's idle share is measured between sampled requests: this one's
            # window still holds the quiet time before the burners, the next ones' do not.
            assert http.get("/items/999").status_code == 404
            time.sleep(0.3)  # a comparison it may have started ends
            before = stats(server)
            for _ in range(3):
                assert http.get("/items/999").json() == {"detail": "Not found"}
                time.sleep(0.06)
        after = stats(server)
        assert after["compared"] == before["compared"], after
        assert after["skipped_busy"] == before["skipped_busy"] + 3, after
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
        server.stop()


def test_shadow_comparisons_are_capped_per_second():
    server = start_example("shadow_compare", "--min-idle-cpu", "0", "--max-per-second", "5")
    try:
        started = time.monotonic()
        with client(server) as http:
            for _ in range(20):
                assert http.get("/items/999").json() == {"detail": "Not found"}
        elapsed = time.monotonic() - started
        time.sleep(0.3)  # comparisons still running end
        counts = stats(server)
        # One at once, then five a second: never one per request.
        assert counts["compared"] + counts["skipped_busy"] == 20, counts
        assert 1 <= counts["compared"] <= 1 + int(elapsed * 5) + 1, (counts, elapsed)
    finally:
        server.stop()


def test_shadow_share_samples_evenly():
    server = start_example("shadow_compare", *ANY_LOAD, "--share", "0.5")
    try:
        with client(server) as http:
            for _ in range(4):
                assert http.get("/items/999").status_code == 404
        counts = wait_for_stats(server, {"mismatched": 2})
        time.sleep(0.3)  # nothing more arrives
        assert stats(server)["mismatched"] == counts["mismatched"] == 2
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------
# Rust called from Python
# ---------------------------------------------------------------------------------------


def test_rust_from_python_endpoint_calls_the_registered_rust_function():
    # Imported here, without the Rust module: the Python implementation it replaces.
    from pyapp.migration_apps import total_price
    from pyapp.service import SEED_ITEMS

    assert total_price.__module__ == "pyapp.migration_apps"
    server = start_example("rust_from_python", app="pyapp.migration_apps:calls_rust")
    try:
        with client(server) as http:
            for item in SEED_ITEMS:
                for quantity in (1, 3, 7, 40):
                    response = http.get(f"/items/{item['id']}/total", params={"quantity": quantity})
                    assert response.status_code == 200, response.text
                    answer = response.json()
                    assert answer["computed_by"] == "rust_pricing"
                    assert answer["total"] == total_price(item["price"], quantity, 0.2), answer
            missing = http.get("/items/999/total")
            assert (missing.status_code, missing.json()) == (404, {"detail": "Item not found"})
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------
# Request context from Rust to Python
# ---------------------------------------------------------------------------------------


def test_context_both_ways_python_reads_the_rust_user_and_rust_reads_the_python_audit():
    server = start_example("request_context", app="pyapp.migration_apps:reads_context")
    try:
        with client(server) as http:
            ada = http.get("/me", headers={"authorization": "Bearer token-ada"})
            bob = http.get("/me", headers={"authorization": "Bearer token-bob"})
            stranger = http.get("/me", headers={"authorization": "Bearer forged"})
        assert ada.status_code == 200, ada.text
        assert ada.json()["user"] == {"id": 1, "name": "ada", "roles": ["admin", "billing"]}
        assert ada.json()["is_admin"] is True
        assert bob.json()["user"] == {"id": 2, "name": "bob", "roles": []}
        # Each request carries its own id, set by the middleware for that request only.
        ids = {ada.json()["request_id"], bob.json()["request_id"]}
        assert len(ids) == 2 and all(value.startswith("req-") for value in ids), ids
        assert stranger.status_code == 401
        # What the Python handler left in request.state came back to the Rust middleware.
        assert ada.headers["x-audit"] == "profile.read by 1"
        assert bob.headers["x-audit"] == "profile.read by 2"
        assert "x-audit" not in stranger.headers
    finally:
        server.stop()
