"""A Starlette app end to end."""

import time

import httpx
import pytest

from harness import REPO_ROOT, start_server


@pytest.fixture(scope="module")
def client():
    server = start_server("pyapp.starlette_app:app")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http
    server.stop()


def test_json_homepage(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"app": "starlette", "hello": "world"}


def test_path_and_query_params(client):
    assert client.get("/items/42", params={"q": "spam eggs"}).json() == {"item_id": 42, "q": "spam eggs"}


def test_unknown_route_is_404(client):
    assert client.get("/nope").status_code == 404


def test_path_param_of_wrong_type_does_not_match(client):
    assert client.get("/items/abc").status_code == 404


def test_wrong_method_is_405(client):
    assert client.get("/echo-json").status_code == 405


def test_json_body_round_trip(client):
    payload = {"name": "widget", "tags": ["a", "b"], "nested": {"n": 1}, "text": "caf\u00e9"}
    assert client.post("/echo-json", json=payload).json() == {"received": payload}


def test_invalid_json_body_is_400(client):
    response = client.post("/echo-json", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_http_exception_status_and_detail(client):
    response = client.get("/teapot")
    assert response.status_code == 418
    assert "I'm a teapot" in response.text


def test_unhandled_exception_is_500_and_server_keeps_serving(client):
    assert client.get("/crash").status_code == 500
    # a new connection: the crashed request's connection may be closed by the server
    assert httpx.get(str(client.base_url) + "/").status_code == 200


def test_streaming_response(client):
    with client.stream("GET", "/stream", params={"lines": 50}) as response:
        assert response.status_code == 200
        lines = list(response.iter_lines())
    assert lines == [f"line {n}" for n in range(50)]


def test_background_task_runs_after_response(client):
    token = f"bg-{time.monotonic_ns()}"
    assert client.post("/background", params={"token": token}).json() == {"accepted": token}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if token in client.get("/background-log").json():
            return
        time.sleep(0.05)
    pytest.fail("the background task never ran")


def test_lifespan_state_reaches_request(client):
    assert client.get("/state").json() == {"greeting": "set by lifespan"}


def test_file_response(client):
    response = client.get("/file")
    assert response.status_code == 200
    assert response.content == (REPO_ROOT / "pyapp" / "starlette_app.py").read_bytes()
