"""The ASGI lifespan protocol: startup before the first request, state shared into request
scopes, failed startups, ``--lifespan auto|on|off``, Starlette and FastAPI lifespans.

Apps: ``pyapp/lifespan_apps.py`` (raw ASGI), ``pyapp/lifespan_starlette.py``,
``pyapp/lifespan_fastapi.py``; they report what they saw through marker files
(``tests/python/markers.py``).
"""

import json
import signal
import socket
import threading
import time

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from harness import free_port, run_until_exit
from markers import Markers, assert_clean_exit, wait_exit
from pyapp import lifespan_apps, lifespan_starlette

APP = "pyapp.lifespan_apps:app"


@pytest.fixture
def markers(tmp_path):
    return Markers(tmp_path / "markers")


class PortProbe:
    """Tries to connect to ``port`` over and over from another thread, remembering every
    attempt that got through, until stopped."""

    def __init__(self, port: int):
        self.port = port
        self.attempts = 0
        self.connected: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.attempts += 1
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    self.connected.append(time.time())
            except OSError:
                pass
            time.sleep(0.01)

    def stop(self):
        self._stop.set()
        self._thread.join(5)


def assert_failed_startup(result, *messages):
    assert not result.timed_out, f"the server kept running after a failed startup:\n{result.stderr}"
    assert result.returncode != 0, f"exit code 0 after a failed startup:\n{result.stderr}"
    assert "panicked" not in result.stderr, result.stderr
    for message in messages:
        assert message in result.stderr, f"{message!r} not on stderr:\n{result.stderr}"
    assert "listening on" not in result.stderr, f"announced readiness anyway:\n{result.stderr}"


def run_failing(app, *args, markers, env=None):
    """Runs a server expected to fail at startup on a fixed port, probing that port the
    whole time. Returns the exit result and the times a connection got through."""
    port = free_port()
    probe = PortProbe(port)
    try:
        result = run_until_exit(
            app, "--bind", f"127.0.0.1:{port}", *args, env={**markers.env, **(env or {})}, timeout=10
        )
    finally:
        probe.stop()
    assert probe.attempts > 5, "the port was hardly probed; the test proves nothing"
    return result, probe.connected


# startup before the first request ----------------------------------------------------------


def test_no_request_reaches_the_app_before_startup_completes(server_factory, markers):
    port = free_port()
    tried = []  # when each attempt was made
    answers = []  # (time sent, status, JSON answer)
    stop = threading.Event()

    def keep_asking():
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                sent = time.time()
                tried.append(sent)
                try:
                    response = client.get(f"http://127.0.0.1:{port}/state")
                except httpx.TransportError:
                    time.sleep(0.01)
                    continue
                answers.append((sent, response.status_code, response.json()))

    asker = threading.Thread(target=keep_asking, daemon=True)
    asker.start()
    try:
        server_factory(APP, "--bind", f"127.0.0.1:{port}", env={**markers.env, "LIFESPAN_STARTUP_DELAY": "1.5"})
        time.sleep(0.3)
    finally:
        stop.set()
        asker.join(10)

    begin = markers.read("startup-begin")["time"]
    done = markers.read("startup")["time"]
    assert done - begin >= 1.4
    assert any(begin <= sent < done for sent in tried), "no request was tried during startup"
    assert answers, "no request was answered after startup"
    for sent, status, body in answers:
        assert status == 200, body
        assert body["startup_complete"] is True, f"a request reached the app during startup: {body}"
        assert body["now"] >= done
        assert body["state"]["token"] == "from-startup"


def test_listening_is_announced_only_after_startup_completed(server_factory, markers):
    started = time.monotonic()
    server = server_factory(APP, env={**markers.env, "LIFESPAN_STARTUP_DELAY": "1.0"})
    # server_factory returns the moment the server announced readiness (our server: the
    # `listening on` line; uvicorn: the port accepting connections).
    assert markers.exists("startup"), "ready before lifespan startup completed"
    assert time.monotonic() - started >= 1.0
    # Ready means ready: the very first request is served, no retry.
    response = httpx.get(server.url + "/state", timeout=5)
    assert response.status_code == 200
    assert response.json()["startup_complete"] is True


# state --------------------------------------------------------------------------------------


def test_state_set_at_startup_is_visible_in_request_scope(server_factory, markers):
    server = server_factory(APP, env={**markers.env, "LIFESPAN_STARTUP_DELAY": "0"})
    state = httpx.get(server.url + "/state").json()["state"]
    assert state["token"] == "from-startup"
    assert state["started_at"] == markers.read("startup")["started_at"]


def test_state_is_a_shallow_copy_per_request(server_factory, markers):
    server = server_factory(APP, env={**markers.env, "LIFESPAN_STARTUP_DELAY": "0"})
    first = httpx.get(server.url + "/state-write", params={"value": "a"}).json()["state"]
    assert first["request_only"] == "a"
    second = httpx.get(server.url + "/state-write", params={"value": "b"}).json()["state"]
    assert second["request_only"] == "b"
    after = httpx.get(server.url + "/state").json()["state"]
    # A key a request sets on its scope's state does not leak into the lifespan state...
    assert "request_only" not in after
    assert after["token"] == "from-startup"
    # ...but the objects in it are shared, not deep-copied.
    assert after["shared"] == ["a", "b"]


def test_state_is_visible_in_websocket_scope(server_factory, markers):
    server = server_factory(APP, env={**markers.env, "LIFESPAN_STARTUP_DELAY": "0"})
    httpx.get(server.url + "/state-write", params={"value": "from-http"})
    with ws_connect(f"ws://127.0.0.1:{server.port}/state", open_timeout=5) as ws:
        state = json.loads(ws.recv(timeout=5))["state"]
    assert state["token"] == "from-startup"
    assert state["shared"] == ["from-http"]
    assert "request_only" not in state


# failed startups ----------------------------------------------------------------------------


def test_startup_failed_exits_nonzero_with_the_message_and_serves_nothing(markers):
    result, connected = run_failing("pyapp.lifespan_apps:startup_failed_app", markers=markers)
    assert markers.exists("startup-begin"), result.stderr
    assert_failed_startup(result, lifespan_apps.STARTUP_FAILED_MESSAGE)
    assert connected == [], "the port accepted connections although startup failed"
    assert not markers.exists("served")


def test_startup_failed_with_lifespan_on_exits_nonzero_with_the_message(markers):
    result, connected = run_failing(
        "pyapp.lifespan_apps:startup_failed_app", "--lifespan", "on", markers=markers
    )
    assert_failed_startup(result, lifespan_apps.STARTUP_FAILED_MESSAGE)
    assert connected == []


def test_exception_in_startup_with_lifespan_on_exits_nonzero_with_the_exception(markers):
    result, connected = run_failing(
        "pyapp.lifespan_apps:startup_raises_app", "--lifespan", "on", markers=markers
    )
    assert markers.exists("startup-begin"), result.stderr
    assert_failed_startup(result, "RuntimeError", lifespan_apps.STARTUP_RAISES_MESSAGE)
    assert connected == []
    assert not markers.exists("served")


# uvicorn's auto mode cannot tell "raises after receiving lifespan.startup" from "does not
# support lifespan" and serves such an app; issue #4 asks that a startup which fails with an
# exception exits non-zero. An app that has received `lifespan.startup` supports lifespan.
@pytest.mark.rust_only
def test_exception_in_startup_with_lifespan_auto_exits_nonzero_with_the_exception(markers):
    result, connected = run_failing("pyapp.lifespan_apps:startup_raises_app", markers=markers)
    assert markers.exists("startup-begin"), result.stderr
    assert_failed_startup(result, "RuntimeError", lifespan_apps.STARTUP_RAISES_MESSAGE)
    assert connected == []
    assert not markers.exists("served")


def test_starlette_lifespan_raising_exits_nonzero_with_the_message(markers):
    result, connected = run_failing(
        "pyapp.lifespan_starlette:app", markers=markers, env={"LIFESPAN_FAIL_STARTUP": "1"}
    )
    assert markers.exists("startup-begin"), result.stderr
    assert_failed_startup(result, lifespan_starlette.FAIL_MESSAGE)
    assert connected == []


# --lifespan auto | on | off ----------------------------------------------------------------


def test_lifespan_auto_tolerates_an_app_raising_on_the_lifespan_scope(server_factory, markers):
    server = server_factory("pyapp.lifespan_apps:lifespan_unsupported_app", env=markers.env)
    assert markers.exists("lifespan-scope"), "auto mode should have tried the lifespan scope"
    response = httpx.get(server.url + "/")
    assert (response.status_code, response.text) == (200, "served")
    server.proc.send_signal(signal.SIGTERM)
    assert wait_exit(server, 10) is not None, "did not stop on SIGTERM"
    assert_clean_exit(server)
    # An unsupported lifespan is not an error worth a traceback.
    assert "Traceback" not in server.logs(), server.logs()


def test_lifespan_on_makes_an_app_raising_on_the_lifespan_scope_fatal(markers):
    result, connected = run_failing(
        "pyapp.lifespan_apps:lifespan_unsupported_app", "--lifespan", "on", markers=markers
    )
    assert markers.exists("lifespan-scope"), result.stderr
    assert_failed_startup(result, "ValueError", lifespan_apps.UNSUPPORTED_MESSAGE)
    assert connected == []
    assert not markers.exists("served")


def test_lifespan_off_never_sends_lifespan(server_factory, markers):
    server = server_factory("pyapp.lifespan_apps:recorder_app", "--lifespan", "off", env=markers.env)
    assert httpx.get(server.url + "/").text == "served"
    assert httpx.get(server.url + "/seen").json() == {"scope_types": ["http", "http"]}
    server.proc.send_signal(signal.SIGTERM)
    assert wait_exit(server, 10) is not None, "did not stop on SIGTERM"
    assert_clean_exit(server)
    assert sorted(path.name for path in markers.dir.iterdir()) == [], "the app was called with a lifespan scope"


def test_lifespan_on_runs_startup_and_shutdown_of_a_supporting_app(server_factory, markers):
    server = server_factory("pyapp.lifespan_apps:recorder_app", "--lifespan", "on", env=markers.env)
    assert markers.exists("lifespan.startup")
    assert httpx.get(server.url + "/seen").json() == {"scope_types": ["lifespan", "http"]}
    server.proc.send_signal(signal.SIGTERM)
    assert wait_exit(server, 10) is not None, "did not stop on SIGTERM"
    assert_clean_exit(server)
    assert markers.exists("lifespan.shutdown")


# frameworks ---------------------------------------------------------------------------------


def _framework_round_trip(server_factory, markers, app, token):
    server = server_factory(app, env=markers.env)
    assert markers.exists("startup"), "served before the framework's startup ran"
    response = httpx.get(server.url + "/state")
    assert response.status_code == 200, response.text
    assert response.json()["token"] == token
    assert not markers.exists("shutdown")
    server.proc.send_signal(signal.SIGTERM)
    assert wait_exit(server, 10) is not None, "did not stop on SIGTERM"
    assert_clean_exit(server)
    assert markers.exists("shutdown"), f"shutdown code did not run:\n{server.logs()}"


def test_starlette_lifespan_context_manager_state_and_shutdown(server_factory, markers):
    _framework_round_trip(server_factory, markers, "pyapp.lifespan_starlette:app", "starlette-lifespan")


def test_fastapi_on_event_startup_and_shutdown_handlers(server_factory, markers):
    _framework_round_trip(server_factory, markers, "pyapp.lifespan_fastapi:app_events", "fastapi-on-event")


def test_fastapi_lifespan_context_manager_state_and_shutdown(server_factory, markers):
    _framework_round_trip(server_factory, markers, "pyapp.lifespan_fastapi:app_lifespan", "fastapi-lifespan")
