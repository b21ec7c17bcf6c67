"""The demo app the README serves (pyapp/demo.py)."""

import httpx
import pytest

from harness import start_server


@pytest.fixture(scope="module")
def client():
    server = start_server("pyapp.demo:app")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http
    server.stop()


def test_home_page_is_html(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>Hello, world!</h1>" in response.text


def test_json_greeting(client):
    response = client.get("/json")
    assert response.headers["content-type"] == "application/json"
    assert response.json()["message"] == "Hello, world!"


def test_echo_returns_body_and_content_type(client):
    response = client.post("/echo", content=b"hello echo", headers={"content-type": "text/plain"})
    assert response.status_code == 200
    assert response.content == b"hello echo"
    assert response.headers["content-type"] == "text/plain"


def test_unknown_path_is_404(client):
    assert client.get("/nope").status_code == 404


def test_wrong_method_is_405(client):
    assert client.post("/json").status_code == 405
