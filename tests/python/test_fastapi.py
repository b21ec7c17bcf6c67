"""A FastAPI app end to end."""

import json
import time

import httpx
import pytest

from harness import start_server


@pytest.fixture(scope="module")
def client():
    server = start_server("pyapp.fastapi_app:app")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http
    server.stop()


def test_json_root(client):
    assert client.get("/").json() == {"app": "fastapi", "hello": "world"}


def test_path_and_query_params(client):
    assert client.get("/items/5", params={"q": "x"}).json() == {"item_id": 5, "q": "x"}
    assert client.get("/items/6").json() == {"item_id": 6, "q": None}


def test_http_exception_404_detail(client):
    response = client.get("/items/1234")
    assert response.status_code == 404
    assert response.json() == {"detail": "Item not found"}


def test_unknown_route_is_404(client):
    assert client.get("/does-not-exist").status_code == 404


def test_invalid_path_param_is_422(client):
    response = client.get("/items/not-a-number")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "item_id"]


def test_model_body_is_validated_and_created(client):
    response = client.post("/items", json={"name": "widget", "price": 9.5, "tags": ["new"]})
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "widget" and body["price"] == 9.5 and body["tags"] == ["new"]
    assert isinstance(body["id"], int)


def test_invalid_model_body_is_422(client):
    response = client.post("/items", json={"name": "widget", "price": "not a price"})
    assert response.status_code == 422
    assert any(error["loc"][-1] == "price" for error in response.json()["detail"])


def test_header_parameter(client):
    assert client.get("/headers", headers={"X-Request-Id": "abc-123"}).json() == {"x_request_id": "abc-123"}


def test_streaming_response(client):
    with client.stream("GET", "/stream", params={"count": 20}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        rows = [json.loads(line) for line in response.iter_lines() if line]
    assert rows == [{"n": n} for n in range(20)]


def test_background_task_runs(client):
    token = f"task-{time.monotonic_ns()}"
    response = client.post("/tasks", params={"token": token})
    assert response.status_code == 202
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if token in client.get("/tasks").json():
            return
        time.sleep(0.05)
    pytest.fail("the background task never ran")


def test_openapi_schema_is_served(client):
    schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "rust-asgi-server test app"
    assert "/items/{item_id}" in schema["paths"]


def test_sync_endpoints_run_in_the_thread_pool_while_the_loop_serves_others(client):
    """A plain ``def`` endpoint runs on a pool thread, which needs the GIL while the loop thread
    waits for sockets (in --runtime-mode single: inside its Tokio runtime); its end wakes the
    loop through asyncio's self-pipe."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        sleepers = [pool.submit(client.get, "/sync-sleep", params={"seconds": 0.6}) for _ in range(3)]
        time.sleep(0.1)
        quick = client.get("/items/7")
        quick_done = time.monotonic() - started
        answers = [future.result() for future in sleepers]
    elapsed = time.monotonic() - started
    assert quick.json() == {"item_id": 7, "q": None}
    assert quick_done < 0.5, quick_done  # not behind the sleepers
    assert all(answer.status_code == 200 for answer in answers)
    assert all(answer.json()["thread"] != "asgi-loop" for answer in answers)
    assert elapsed < 1.5, elapsed  # the three sleeps overlapped (one after another: 1.8 s)
