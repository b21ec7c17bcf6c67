"""What an operator relies on (issue #15): the blocked-loop watchdog (``--loop-block-warn``)
and the health path answered without Python (``--health-path``). Its 503 while draining
after SIGTERM is not tested here: the listener closes at SIGTERM and kept-alive connections
close after their request, so no new probe can arrive then (see docs/deployment.md).

App: ``pyapp/operations.py``.
"""

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from harness import SINGLE_THREAD

pytestmark = pytest.mark.rust_only

APP = "pyapp.operations:app"


def health(server) -> int:
    return httpx.get(server.url + "/healthz", timeout=5).status_code


def test_a_blocked_loop_is_reported_with_the_blocking_line_and_health_answers_503(server_factory):
    server = server_factory(APP, "--health-path", "/healthz", "--loop-block-warn", "0.5")
    assert health(server) == 200
    with ThreadPoolExecutor(1) as pool:
        blocked = pool.submit(httpx.get, server.url + "/block?seconds=2", timeout=10)
        warning = server.wait_for_log(r"the event loop has been blocked for", timeout=5)
        assert warning, server.logs()
        if SINGLE_THREAD:
            # The sockets wait with Python on the one thread: a probe times out, which a
            # load balancer counts as a failure, as it does a 503.
            with pytest.raises(httpx.TimeoutException):
                httpx.get(server.url + "/healthz", timeout=0.3)
        else:
            # The health path is answered in Rust while Python cannot run.
            assert health(server) == 503
        assert blocked.result().text == "ok"
    recovered = re.compile(r"the event loop runs again after being blocked for [12]\.\d s")
    assert server.wait_for_log(recovered, timeout=5), server.logs()
    logs = server.logs()
    # The warning carries the Python stack down to the line that blocks.
    assert "time.sleep(seconds)  # the blocking call in async code" in logs
    assert 'in blocking_call' in logs
    assert logs.count("the event loop has been blocked for") == 1
    assert health(server) == 200


def test_a_busy_but_responsive_loop_is_not_reported(server_factory):
    server = server_factory(APP, "--loop-block-warn", "0.5")
    with ThreadPoolExecutor(8) as pool:
        for response in pool.map(lambda _: httpx.get(server.url + "/sleep?seconds=1", timeout=10), range(8)):
            assert response.text == "ok"
    time.sleep(0.3)
    assert "blocked" not in server.logs()


def test_the_health_path_is_answered_without_python_on_any_method(server_factory):
    server = server_factory(APP, "--health-path", "/healthz")
    for method in ("GET", "HEAD", "POST"):
        response = httpx.request(method, server.url + "/healthz", timeout=5)
        assert (response.status_code, response.headers["cache-control"]) == (200, "no-store")
    assert httpx.get(server.url + "/healthz/deeper", timeout=5).text == "ok"  # only the path itself
    assert json.loads(httpx.get(server.url + "/seen", timeout=5).text) == ["/healthz/deeper", "/seen"]


def test_without_a_health_path_the_app_answers_it(server_factory):
    server = server_factory(APP)
    assert httpx.get(server.url + "/healthz", timeout=5).text == "ok"
