"""What a client and the logs see when the app fails, and that the server carries on.

Each test runs a fresh server so that its log holds exactly one failure.
"""

import time

import httpx
import pytest

from harness import strip_access_lines

TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture
def server(server_factory):
    return server_factory("pyapp.conformance:app")


def still_serves(server):
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(3):
            response = client.get("/ok")
            assert response.status_code == 200 and response.text == "ok"


def settled_logs(server, wait_for: str) -> str:
    """The log once ``wait_for`` appeared in it, plus a moment for anything logged twice."""
    assert server.wait_for_log(wait_for, timeout=5), f"{wait_for!r} never logged:\n{server.logs()}"
    time.sleep(0.3)
    return server.logs()


def get_unless_cut(server, path: str, timeout: float = 5):
    """The response to GET ``path``, or None when the server closed the connection instead."""
    with httpx.Client(base_url=server.url, timeout=timeout) as client:
        try:
            return client.get(path)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            return None


def get_incomplete(server, path: str):
    """GET that must end in a protocol error: the response started but was cut."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            with client.stream("GET", path) as response:
                assert response.status_code == 200
                response.read()


def test_exception_before_start_gives_500_and_one_traceback(server):
    response = httpx.get(server.url + "/fail/before-start")
    assert response.status_code == 500
    logs = settled_logs(server, "failed before http.response.start")
    assert logs.count(TRACEBACK) == 1, logs
    assert logs.count("in _fail_before_start") == 1, logs
    assert "RuntimeError: conformance: failed before http.response.start" in logs
    still_serves(server)


def test_exception_after_start_cuts_the_response_and_logs_once(server):
    get_incomplete(server, "/fail/after-start")
    logs = settled_logs(server, "failed after http.response.start")
    assert logs.count(TRACEBACK) == 1, logs
    assert logs.count("in _fail_after_start") == 1, logs
    still_serves(server)


def test_return_without_response_gives_500(server):
    response = httpx.get(server.url + "/fail/no-response")
    assert response.status_code == 500
    still_serves(server)


def test_return_with_unfinished_body_cuts_the_response(server):
    get_incomplete(server, "/fail/incomplete-body")
    still_serves(server)


def test_unknown_message_type_gives_500_and_names_it_in_log(server):
    response = httpx.get(server.url + "/fail/unknown-message")
    assert response.status_code == 500
    settled_logs(server, "http.response.bogus")
    still_serves(server)


def test_header_value_with_newline_is_refused_and_never_injected(server):
    response = get_unless_cut(server, "/fail/newline-value")
    if response is not None:
        assert "x-injected" not in response.headers
        assert response.status_code == 500
    assert server.wait_for_log("Traceback", timeout=5) or server.wait_for_log("header", timeout=1)
    still_serves(server)


@pytest.mark.rust_only  # uvicorn (h11) closes the connection instead of answering 500
def test_header_value_with_newline_gives_500_and_logs_the_header_problem(server):
    response = httpx.get(server.url + "/fail/newline-value")
    assert response.status_code == 500
    assert "x-injected" not in response.headers
    time.sleep(0.3)
    assert "header" in strip_access_lines(server.logs()).lower(), server.logs()
    still_serves(server)


@pytest.mark.rust_only  # uvicorn (h11) accepts str headers
def test_str_header_instead_of_bytes_gives_500_and_is_logged(server):
    response = httpx.get(server.url + "/fail/str-value")
    assert response.status_code == 500
    time.sleep(0.3)
    other_logs = strip_access_lines(server.logs()).lower()
    assert "bytes" in other_logs or "str" in other_logs, server.logs()
    still_serves(server)


def test_second_response_start_is_refused_and_logged(server):
    # A closed connection is fine when the first start was already sent.
    response = get_unless_cut(server, "/fail/double-start")
    if response is not None:
        assert response.status_code == 500
    settled_logs(server, "http.response.start")
    still_serves(server)


def test_many_failures_in_a_row_do_not_break_the_server(server):
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(20):
            assert client.get("/fail/before-start").status_code == 500
            assert client.get("/ok").text == "ok"
    logs = settled_logs(server, "failed before http.response.start")
    assert logs.count("in _fail_before_start") == 20


def test_system_exit_in_the_app_gives_500_and_the_server_carries_on(server):
    response = httpx.get(server.url + "/fail/system-exit")
    assert response.status_code == 500
    logs = settled_logs(server, "sys.exit() inside a request")
    assert logs.count("in _fail_system_exit") == 1, logs
    still_serves(server)
    assert server.alive()


def test_app_stopping_the_event_loop_ends_the_server_with_an_error(server):
    # Nothing can run Python any more: the server must not hang on every request.
    response = get_unless_cut(server, "/fail/stop-loop", timeout=10)
    if response is not None:
        assert response.status_code == 500
    server.proc.wait(timeout=10)
    assert server.proc.returncode != 0
