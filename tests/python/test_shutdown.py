"""Graceful shutdown on SIGTERM / SIGINT: stop accepting, let in-flight requests finish within
``--timeout-graceful-shutdown``, then ``http.disconnect`` what is left, run lifespan shutdown
last and exit 0; a second SIGINT exits at once; keep-alive connections are closed politely.

App: ``pyapp/lifespan_apps.py:app`` (markers: ``tests/python/markers.py``).
"""

import asyncio
import itertools
import random
import signal
import threading
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness import IncompleteResponse, RawConnection
from markers import InBackground, Markers, assert_clean_exit, connect_refused, wait_exit

APP = "pyapp.lifespan_apps:app"


@pytest.fixture
def markers(tmp_path):
    return Markers(tmp_path / "markers")


@pytest.fixture
def start(server_factory, markers):
    """Starts ``APP`` (startup without delay) with the markers directory."""

    def start(*args):
        return server_factory(APP, *args, env={**markers.env, "LIFESPAN_STARTUP_DELAY": "0"})

    return start


def get(url, timeout=30.0):
    return httpx.get(url, timeout=timeout)


# a clean stop -------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_runs_lifespan_shutdown_and_exits_zero(start, markers, sig):
    server = start()
    assert get(server.url + "/ok").text == "ok"
    assert not markers.exists("shutdown")
    server.proc.send_signal(sig)
    elapsed = wait_exit(server, 10)
    assert elapsed is not None, f"still running 10 s after {sig.name}:\n{server.logs()}"
    assert elapsed < 3, f"an idle server took {elapsed:.1f}s to stop"
    assert_clean_exit(server, sig)
    shutdown = markers.read("shutdown")
    assert shutdown["in_flight"] == 0


# requests in flight -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "sig, grace",
    [
        pytest.param(signal.SIGTERM, None, id="SIGTERM-no-timeout"),
        pytest.param(signal.SIGTERM, "5", id="SIGTERM-timeout-5s"),
        pytest.param(signal.SIGINT, None, id="SIGINT-no-timeout"),
    ],
)
def test_request_in_flight_at_signal_completes_with_200(start, markers, sig, grace):
    server = start(*(["--timeout-graceful-shutdown", grace] if grace else []))
    request = InBackground(get, server.url + "/sleep?s=2&key=slow")
    started = markers.wait("started-slow")["time"]
    time.sleep(0.2)
    signalled = time.monotonic()
    server.proc.send_signal(sig)

    response = request.result(15)
    assert response.status_code == 200
    assert response.text == "slept 2"
    elapsed = wait_exit(server, 10)
    assert elapsed is not None, f"still running after the request finished:\n{server.logs()}"
    assert_clean_exit(server, sig)
    stopped = time.monotonic() - signalled
    # It waited for the request (about 1.8 s left of it) and not much longer.
    assert 1.4 <= stopped < 4.5, f"stopped {stopped:.1f}s after {sig.name}"
    # lifespan shutdown ran last: after the request finished, with nothing in flight.
    shutdown = markers.read("shutdown")
    assert shutdown["in_flight"] == 0
    assert shutdown["finished"] == ["slow"]
    assert shutdown["time"] >= markers.read("done-slow")["time"] >= started + 1.9


def test_new_connections_are_refused_once_sigterm_arrives(start, markers):
    server = start()
    request = InBackground(get, server.url + "/sleep?s=2&key=slow")
    markers.wait("started-slow")
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.alive(), "exited with a request in flight"
    assert connect_refused(server.port), "accepted a new connection after SIGTERM"
    assert request.result(15).status_code == 200
    assert wait_exit(server, 10) is not None
    assert_clean_exit(server)


# past the graceful timeout ------------------------------------------------------------------


def sigterm_while_hanging(server, markers, timeout, fetch=None):
    """Sends ``fetch`` (an HTTP/1.1 GET by default) for a request the app never answers,
    SIGTERM once the app has it, and waits for a clean exit: the request's background call,
    and the seconds from SIGTERM to exit, at most ``timeout`` + 1."""
    request = InBackground(fetch or get, server.url + "/hang?key=hang")
    markers.wait("started-hang")
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    elapsed = wait_exit(server, timeout + 10)
    assert elapsed is not None, f"still running {timeout + 10}s after SIGTERM:\n{server.logs()}"
    stopped = time.monotonic() - signalled
    assert stopped < timeout + 1, f"exited {stopped:.1f}s after SIGTERM (timeout {timeout}s + 1s allowed)"
    assert_clean_exit(server)
    return request, stopped


def test_request_past_graceful_timeout_does_not_hold_up_exit(start, markers):
    timeout = 2
    server = start("--timeout-graceful-shutdown", str(timeout))
    request, stopped = sigterm_while_hanging(server, markers, timeout)
    assert stopped >= timeout - 0.2, f"cut the request off after {stopped:.1f}s, before the {timeout}s grace"
    # Nothing was sent yet: the client gets a 500 (as from uvicorn), not a bare close.
    response = request.result(10)
    assert response.status_code == 500, f"the hanging request got {response.status_code} {response.text!r}"
    assert markers.exists("shutdown"), f"lifespan shutdown did not run:\n{server.logs()}"


def get_over_h2c(url, timeout=30.0):
    with httpx.Client(http1=False, http2=True, timeout=timeout) as client:
        return client.get(url)


@pytest.mark.rust_only  # uvicorn speaks no HTTP/2
def test_http2_request_past_graceful_timeout_gets_500_and_does_not_hold_up_exit(start, markers):
    # An HTTP/2 stream runs in a task of its own, which must be woken when closing begins
    # (an HTTP/1 request is polled by its connection's task instead).
    timeout = 1
    server = start("--timeout-graceful-shutdown", str(timeout))
    request, _ = sigterm_while_hanging(server, markers, timeout, get_over_h2c)
    response = request.result(10)
    assert response.http_version == "HTTP/2"
    assert response.status_code == 500, f"the hanging request got {response.status_code} {response.text!r}"


@pytest.mark.rust_only  # uvicorn cancels the task instead of sending http.disconnect
def test_request_past_graceful_timeout_gets_http_disconnect_before_lifespan_shutdown(start, markers):
    timeout = 1
    server = start("--timeout-graceful-shutdown", str(timeout))
    request, _ = sigterm_while_hanging(server, markers, timeout)
    server.stop()  # let the log readers reach the end
    assert markers.exists("disconnect-hang"), (
        f"the app never received http.disconnect (cancelled: {markers.exists('cancelled-hang')}):\n{server.logs()}"
    )
    assert "app saw http.disconnect for hang" in server.logs()
    disconnected = markers.read("disconnect-hang")["time"]
    shutdown = markers.read("shutdown")
    assert shutdown["time"] >= disconnected, "lifespan shutdown ran before the request was told to stop"
    assert shutdown["in_flight"] == 0, "lifespan shutdown ran while the request was still running"
    assert request.result(5).status_code == 500


def test_app_ignoring_disconnect_does_not_hold_up_exit(start, markers):
    timeout = 1
    server = start("--timeout-graceful-shutdown", str(timeout))
    InBackground(get, server.url + "/stubborn?key=stubborn")
    markers.wait("started-stubborn")
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    elapsed = wait_exit(server, timeout + 10)
    assert elapsed is not None, f"still running {timeout + 10}s after SIGTERM:\n{server.logs()}"
    stopped = time.monotonic() - signalled
    assert stopped < timeout + 1, f"exited {stopped:.1f}s after SIGTERM (timeout {timeout}s + 1s allowed)"
    assert_clean_exit(server)
    assert markers.exists("shutdown"), f"lifespan shutdown did not run:\n{server.logs()}"


def test_second_sigint_exits_at_once_while_a_request_hangs(start, markers):
    server = start()  # no graceful timeout: the first SIGINT would wait forever
    InBackground(get, server.url + "/hang?key=hang")
    markers.wait("started-hang")
    server.proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert server.alive(), "the first SIGINT did not wait for the request in flight"
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGINT)
    elapsed = wait_exit(server, 10)
    assert elapsed is not None, f"a second SIGINT did not stop the server:\n{server.logs()}"
    assert time.monotonic() - signalled < 2, "a second SIGINT should exit at once"


# keep-alive -------------------------------------------------------------------------------


@pytest.mark.rust_only  # uvicorn closes the connection after the response without announcing it
def test_keep_alive_response_in_flight_at_sigterm_says_connection_close(start, markers):
    server = start("--timeout-keep-alive", "30")
    with RawConnection(server.port) as conn:
        conn.send(b"GET /ok HTTP/1.1\r\nHost: test\r\n\r\n")
        first = conn.read_response()
        assert first.status == 200
        assert "close" not in (first.header("connection") or "").lower()

        conn.send(b"GET /sleep?s=1.5&key=ka HTTP/1.1\r\nHost: test\r\n\r\n")
        markers.wait("started-ka")
        server.proc.send_signal(signal.SIGTERM)
        second = conn.read_response()
        assert second.status == 200
        assert second.body == b"slept 1.5"
        assert "close" in (second.header("connection") or "").lower(), (
            f"response in flight at SIGTERM lacks 'Connection: close': {second.headers}"
        )
        conn.sock.settimeout(5)
        assert conn.read_to_eof() == b"", "the server did not close the connection after it"
    assert wait_exit(server, 10) is not None
    assert_clean_exit(server)


def test_idle_keep_alive_connection_is_closed_at_sigterm(start, markers):
    server = start("--timeout-keep-alive", "30")
    with RawConnection(server.port) as conn:
        conn.send(b"GET /ok HTTP/1.1\r\nHost: test\r\n\r\n")
        assert conn.read_response().status == 200
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        conn.sock.settimeout(10)
        assert conn.read_to_eof() == b""
        closed = time.monotonic() - signalled
    assert closed < 2, f"an idle keep-alive connection stayed open {closed:.1f}s after SIGTERM"
    elapsed = wait_exit(server, 10)
    assert elapsed is not None and time.monotonic() - signalled < 3, (
        "an idle keep-alive connection held up the exit"
    )
    assert_clean_exit(server)


# websockets ---------------------------------------------------------------------------------


def test_open_websocket_is_closed_with_1012_service_restart_at_sigterm(start, markers):
    server = start()

    async def talk_through_sigterm():
        async with connect(f"ws://127.0.0.1:{server.port}/echo?key=open", open_timeout=10) as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 10) == "hello"
            server.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            return closed.value

    closed = asyncio.run(talk_through_sigterm())
    assert closed.rcvd is not None, f"no close frame from the server: {closed!r}"
    assert closed.rcvd.code == 1012
    assert wait_exit(server, 10) is not None, server.logs()
    assert_clean_exit(server)
    assert markers.wait("ws-disconnect-open")["code"] == 1012


# a steady stream across SIGTERM -------------------------------------------------------------


class StreamClient:
    """Threads sending ``/stream?id=N`` requests back to back, each classifying every
    request it tried. Half of them open a new connection per request, the other half keep
    their connection alive while the server allows it. Each request waits a random time
    before its response head and between its two halves (up to ``seconds`` each), so SIGTERM
    finds requests in every phase."""

    def __init__(self, port: int, threads: int = 8, seconds: float = 0.15):
        self.port = port
        self.seconds = seconds
        self.ids = itertools.count()
        self.lock = threading.Lock()
        self.results: list[dict] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(index % 2 == 1,), daemon=True) for index in range(threads)
        ]
        for thread in self.threads:
            thread.start()

    def _record(self, **result):
        with self.lock:
            self.results.append(result)

    def count(self, outcome) -> int:
        with self.lock:
            return sum(1 for result in self.results if result["outcome"] == outcome)

    def _run(self, keep_alive: bool):
        conn = None
        rng = random.Random(threading.get_ident())
        while not self.stop.is_set():
            ident = next(self.ids)
            sent = time.monotonic()
            reused = conn is not None
            if conn is None:
                try:
                    conn = RawConnection(self.port, timeout=15)
                except ConnectionRefusedError:
                    self._record(id=ident, outcome="refused", sent=sent, done=time.monotonic(), reused=False)
                    time.sleep(0.02)
                    continue
                except OSError as err:
                    self._record(id=ident, outcome="connect-error", error=repr(err), sent=sent,
                                 done=time.monotonic(), reused=False)
                    time.sleep(0.02)
                    continue
            timing = (round(rng.uniform(0, self.seconds), 3), round(rng.uniform(0, self.seconds), 3))
            outcome, detail, close = self._exchange(conn, ident, keep_alive, timing)
            self._record(id=ident, outcome=outcome, detail=detail, sent=sent, done=time.monotonic(), reused=reused)
            if outcome != "ok" or close or not keep_alive:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _exchange(self, conn, ident, keep_alive, timing):
        pre, between = timing
        request = f"GET /stream?id={ident}&pre={pre}&s={between} HTTP/1.1\r\nHost: test\r\n"
        if not keep_alive:
            request += "Connection: close\r\n"
        try:
            conn.send((request + "\r\n").encode())
        except OSError as err:
            return "closed-before-response", f"send: {err!r}", True
        try:
            first = conn.rfile.peek(1)[:1]
        except OSError as err:
            first, error = b"", err
        else:
            error = None
        if not first:
            return "closed-before-response", f"no byte of a response ({error!r})", True
        try:
            response = conn.read_response()
        except (IncompleteResponse, OSError, ValueError) as err:
            return "cut", repr(err), True
        expected = f"{ident}.".encode() * 1024
        if response.status != 200:
            return "bad-status", f"{response.status} {response.body[:200]!r}", True
        if response.body != expected:
            return "cut", f"body of {len(response.body)} bytes, expected {len(expected)}", True
        return "ok", None, "close" in (response.header("connection") or "").lower()

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in self.threads), "a client thread is stuck"


def test_steady_stream_of_requests_across_sigterm_none_is_cut(start, markers):
    server = start("--no-access-log")
    clients = StreamClient(server.port)
    try:
        deadline = time.monotonic() + 15
        while clients.count("ok") < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert clients.count("ok") >= 40, f"the stream did not get going: {clients.results[:5]}"
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        elapsed = wait_exit(server, 15)
        assert elapsed is not None, f"still running 15 s after SIGTERM:\n{server.logs()}"
        time.sleep(0.5)  # keep knocking on the closed port for a moment
    finally:
        clients.finish()
    assert_clean_exit(server)

    seen = set(markers.lines("seen"))
    results = clients.results
    by_outcome = {}
    for result in results:
        by_outcome.setdefault(result["outcome"], []).append(result)
    summary = {outcome: len(items) for outcome, items in by_outcome.items()}

    assert by_outcome.get("cut", []) == [], f"responses cut mid-way ({summary}): {by_outcome['cut'][:5]}"
    assert by_outcome.get("bad-status", []) == [], f"non-200 answers ({summary}): {by_outcome['bad-status'][:5]}"
    assert by_outcome.get("connect-error", []) == [], f"connect errors ({summary}): {by_outcome['connect-error'][:5]}"
    # A connection closed before any byte of a response is only acceptable for a request the
    # app never saw (it was still queued in the listen backlog, or sent on an idle keep-alive
    # connection as the server closed it): the client can tell it was not processed.
    swallowed = [r for r in by_outcome.get("closed-before-response", []) if str(r["id"]) in seen]
    assert swallowed == [], f"the app handled these but the client got nothing ({summary}): {swallowed[:5]}"

    # The stream really did cross the shutdown: requests in flight at SIGTERM finished with
    # 200, and clients were refused once the server had stopped listening.
    in_flight = [r for r in by_outcome.get("ok", []) if r["sent"] < signalled < r["done"]]
    assert in_flight, f"no request was in flight at SIGTERM ({summary})"
    assert any(r["sent"] > signalled for r in by_outcome.get("refused", [])), f"nobody was refused ({summary})"
