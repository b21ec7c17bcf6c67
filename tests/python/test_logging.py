"""The access log: one line per request on stderr, gone with --no-access-log."""

import re
import time

import httpx
import pytest


def access_lines(logs: str, path: str) -> list[str]:
    return [line for line in logs.splitlines() if f" {path} HTTP/1.1\"" in line]


def test_access_log_line_has_method_path_and_status(server_factory):
    server = server_factory("pyapp.demo:app")
    assert httpx.get(server.url + "/json").status_code == 200
    match = server.wait_for_log(re.compile(r'.*"GET /json HTTP/1\.1" 200.*'), timeout=5)
    assert match, f"no access-log line for GET /json:\n{server.logs()}"
    assert "INFO" in match.group(0)


def test_access_log_has_one_line_per_request(server_factory):
    server = server_factory("pyapp.demo:app")
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            client.get("/json")
        client.post("/echo", content=b"hi")
        client.get("/missing")
    assert server.wait_for_log('"GET /missing HTTP/1.1" 404', timeout=5), server.logs()
    time.sleep(0.3)
    logs = server.logs()
    assert len(access_lines(logs, "/json")) == 3, logs
    assert len(access_lines(logs, "/echo")) == 1, logs
    assert '"POST /echo HTTP/1.1" 200' in logs


@pytest.mark.rust_only  # uvicorn's access line has no size or duration
def test_access_log_line_has_bytes_and_duration(server_factory):
    server = server_factory("pyapp.demo:app")
    response = httpx.get(server.url + "/json")
    size = len(response.content)
    match = server.wait_for_log(re.compile(r'.*"GET /json HTTP/1\.1" 200.*'), timeout=5)
    assert match, server.logs()
    line = match.group(0)
    after_status = line.split('" 200', 1)[1]
    assert re.search(rf"(?<![\d.]){size}(?![\d.])", after_status), f"body size {size} not in {line!r}"
    assert re.search(r"\d+(\.\d+)?\s?(ns|µs|us|ms|s)\b", after_status), f"no duration in {line!r}"


@pytest.mark.rust_only  # uvicorn writes access lines to stdout
def test_logs_go_to_stderr_not_stdout(server_factory):
    server = server_factory("pyapp.demo:app")
    httpx.get(server.url + "/json")
    assert server.wait_for_log('"GET /json HTTP/1.1" 200', timeout=5)
    assert server.stdout_text() == ""


def test_no_access_log_flag_removes_access_lines(server_factory):
    server = server_factory("pyapp.demo:app", "--no-access-log")
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            assert client.get("/json").status_code == 200
    time.sleep(0.5)
    assert access_lines(server.logs(), "/json") == [], server.logs()


def test_no_access_log_still_logs_app_errors(server_factory):
    server = server_factory("pyapp.conformance:app", "--no-access-log")
    assert httpx.get(server.url + "/fail/before-start").status_code == 500
    assert server.wait_for_log("Traceback (most recent call last)", timeout=5), server.logs()
    assert access_lines(server.logs(), "/fail/before-start") == []


@pytest.mark.rust_only  # RUST_LOG is our filter; uvicorn's access logger is "uvicorn.access"
def test_access_lines_filtered_out_by_target_hide_no_app_error(server_factory):
    env = {"RUST_LOG": "info,rust_asgi_server::access=off"}
    server = server_factory("pyapp.conformance:app", env=env)
    assert httpx.get(server.url + "/qs").status_code == 200
    assert httpx.get(server.url + "/fail/before-start").status_code == 500
    assert server.wait_for_log("Traceback (most recent call last)", timeout=5), server.logs()
    time.sleep(0.3)
    assert access_lines(server.logs(), "/qs") == [], server.logs()
    assert access_lines(server.logs(), "/fail/before-start") == [], server.logs()


@pytest.mark.rust_only  # "(incomplete)" is our access-log marker for cut responses
def test_complete_empty_response_is_not_logged_as_incomplete(server_factory):
    server = server_factory("pyapp.conformance:app")
    response = httpx.get(server.url + "/qs")  # 200 with an empty body
    assert response.status_code == 200 and response.content == b""
    match = server.wait_for_log(re.compile(r'.*"GET /qs HTTP/1\.1" 200.*'), timeout=5)
    assert match, server.logs()
    assert "incomplete" not in match.group(0)
