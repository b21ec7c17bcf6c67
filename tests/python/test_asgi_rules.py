"""What the ASGI bridge does whatever the client or the app does (issue #12): when the app
starts, what ``receive()`` says, what ``send()`` raises, what a malformed request body or
a faulty app response becomes, and how websockets end.

Raw sockets where a client library would refuse to send the input or would hide what is on
the wire. The apps are ``pyapp/conformance.py`` and ``pyapp/ws_apps.py``; what an app
observed is read back from its ``/report`` (or ``/record``) route.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness import IncompleteResponse, RawConnection, start_server, strip_access_lines

pytestmark = [pytest.mark.rust_only, pytest.mark.timeout(180)]

CONFORMANCE = "pyapp.conformance:app"
WS_APPS = "pyapp.ws_apps:app"


@pytest.fixture
def server(server_factory):
    return server_factory(CONFORMANCE)


@pytest.fixture(scope="module")
def ws_server():
    server = start_server(WS_APPS)
    yield server
    server.stop()


def report(server, key: str) -> dict:
    """What the conformance app recorded under ``key`` (it waits up to 10 s for it)."""
    response = httpx.get(f"{server.url}/report", params={"key": key}, timeout=15)
    assert response.status_code == 200, f"nothing recorded under {key!r}:\n{server.logs()}"
    return response.json()


def error_lines(server, settle: float = 0.5) -> list[str]:
    """The ERROR lines the server logged so far, after a moment for late ones."""
    time.sleep(settle)
    return [line for line in strip_access_lines(server.logs()).splitlines() if " ERROR " in line]


def post_head(path: str, length: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n".encode()


def chunked_post(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    return head + body


# --- when the app starts -----------------------------------------------------------------------


def test_the_app_starts_before_the_body_has_all_arrived(server):
    with RawConnection(server.port) as conn:
        conn.send(post_head("/first-message?key=partial", 2048) + b"a" * 1024)
        assert report(server, "partial:first") == {"type": "http.request", "size": 1024, "more_body": True}
        conn.send(b"b" * 1024)
        response = conn.read_response()
    assert response.status == 200
    assert response.body == b"received 2048"


def test_a_small_body_that_came_with_the_head_is_one_message(server):
    with RawConnection(server.port) as conn:
        conn.send(post_head("/first-message?key=whole", 5) + b"hello")
        assert conn.read_response().body == b"received 5"
    assert report(server, "whole:first") == {"type": "http.request", "size": 5, "more_body": False}


def test_a_client_that_leaves_mid_body_is_a_disconnect_for_the_started_app(server):
    with RawConnection(server.port) as conn:
        conn.send(post_head("/first-message?key=left", 2048) + b"a" * 1024)
        report(server, "left:first")
    assert report(server, "left") == {"types": ["http.request", "http.disconnect"], "received": 1024}


# --- receive() and send() once the exchange is over ------------------------------------------


def test_receive_after_the_response_is_a_disconnect(server):
    response = httpx.post(f"{server.url}/after-response?key=unread&read=no", content=b"never read")
    assert response.text == "done"
    assert report(server, "unread") == {"type": "http.disconnect"}


@pytest.mark.parametrize("start", ["early", "late"])
def test_send_after_the_client_left_raises_client_disconnected(server, start):
    key = f"gone-{start}"
    with RawConnection(server.port) as conn:
        conn.send(f"GET /send-after-disconnect?key={key}&start={start} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        if start == "early":
            assert conn.read_head().status == 200
            assert conn.rfile.readline() == b"6\r\n"
            assert conn.rfile.readline() == b"first\n"
        else:
            time.sleep(0.3)
    assert report(server, key) == {"raised": "ClientDisconnected", "oserror": True}
    # The app let it propagate: a client leaving is not an app error.
    assert error_lines(server) == []


def test_websocket_send_after_the_client_left_raises_client_disconnected(ws_server):
    server = ws_server

    async def leave():
        async with connect(f"ws://127.0.0.1:{server.port}/send-after-disconnect?key=gone", open_timeout=10):
            pass

    asyncio.run(leave())
    deadline = time.monotonic() + 10
    while (record := httpx.get(f"{server.url}/record?key=gone").json()).get("found") is not True:
        assert time.monotonic() < deadline, "the app recorded nothing"
        time.sleep(0.05)
    assert record == {"found": True, "raised": "ClientDisconnected", "oserror": True}


# --- a malformed request body is the client's fault --------------------------------------------

MALFORMED_CHUNKED = {
    "bad size": b"zz\r\nhello\r\n0\r\n\r\n",
    "overflowing size": b"fffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "0x prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "negative size": b"-5\r\nhello\r\n0\r\n\r\n",
    "no CRLF after the data": b"5\r\nhello0\r\n\r\n",
    "data longer than its size": b"5\r\nhello world\r\n0\r\n\r\n",
    "bare LF in the size line": b"5\nhello\r\n0\r\n\r\n",
}


def test_a_malformed_chunked_body_is_400_and_no_error(server):
    statuses = {}
    for name, body in MALFORMED_CHUNKED.items():
        with RawConnection(server.port) as conn:
            conn.send(chunked_post("/echo", body))
            try:
                statuses[name] = conn.read_response().status
            except IncompleteResponse:
                statuses[name] = None
    assert statuses == {name: 400 for name in MALFORMED_CHUNKED}
    assert error_lines(server) == []


def mutate(rng: random.Random, request: bytes, body_start: int) -> bytes:
    """One bit flip, byte insertion or truncation, three times in four inside the body."""
    data = bytearray(request)
    at = rng.randrange(body_start, len(data)) if rng.random() < 0.75 else rng.randrange(len(data))
    kind = rng.choice(("flip", "flip", "insert", "truncate"))
    if kind == "flip":
        data[at] ^= 1 << rng.randrange(8)
    elif kind == "insert":
        data.insert(at, rng.choice(b"\r\n;0-9afxX \t\x00\xff"))
    else:
        del data[at:]
    return bytes(data)


def statuses_for(port: int, request: bytes, idle: float = 0.3) -> list[int]:
    """The status of every response to ``request``, sent on its own connection; a request
    the server still waits on after ``idle`` seconds of silence is abandoned."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        sock.settimeout(idle)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    return [int(status) for status in re.findall(rb"(?:^|\r\n)HTTP/1\.1 (\d{3}) ", received)]


def test_mutated_chunked_requests_never_get_a_5xx_and_memory_stays_flat(server):
    """A bounded mutation fuzzer: FUZZ_REQUESTS requests (default 3000) or FUZZ_SECONDS
    (default 60), seeded by FUZZ_SEED."""
    requests = int(os.environ.get("FUZZ_REQUESTS", "3000"))
    seconds = float(os.environ.get("FUZZ_SECONDS", "60"))
    rng = random.Random(int(os.environ.get("FUZZ_SEED", "12")))
    head = (
        b"POST /echo HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
    )
    valid = head + b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"
    mutated = [mutate(rng, valid, len(head)) for _ in range(requests)]
    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(lambda _: statuses_for(server.port, valid), range(300))) == [[200]] * 300
        rss_before = server.rss_kb()
        deadline = time.monotonic() + seconds

        def send(request: bytes) -> list[int] | None:
            return statuses_for(server.port, request) if time.monotonic() < deadline else None

        answers = list(pool.map(send, mutated))
    grown = server.rss_kb() - rss_before
    sent = sum(answer is not None for answer in answers)
    server_errors = [
        request for request, answer in zip(mutated, answers) if answer and any(status >= 500 for status in answer)
    ]
    assert sent >= min(requests, 500), f"only {sent} requests in {seconds}s"
    assert server_errors == [], f"{len(server_errors)} of {sent} got a 5xx, e.g. {server_errors[:3]}"
    assert grown < 4096, f"RSS grew by {grown} KiB over {sent} malformed requests"
    assert error_lines(server) == []


def test_an_aborted_upload_is_not_an_error(server):
    for _ in range(5):
        with RawConnection(server.port) as conn:
            conn.send(post_head("/echo", 100_000) + b"a" * 1000)
            time.sleep(0.05)
    assert server.alive()
    assert error_lines(server, settle=1.0) == []


# --- a faulty app response ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/fail/double-start", "/fail/body-not-bytes"])
def test_an_invalid_message_before_any_byte_went_out_is_a_500(server, path):
    with RawConnection(server.port) as conn:
        conn.send(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        response = conn.read_response()
    assert response.status == 500
    assert response.body == b"Internal Server Error"


@pytest.mark.parametrize("status", [99, 600, 999, 1000])
def test_a_status_outside_100_to_599_is_an_app_error(server, status):
    response = httpx.get(f"{server.url}/fail/status", params={"code": status})
    assert response.status_code == 500
    assert server.wait_for_log(f"invalid HTTP status code {status}", timeout=5), server.logs()


# --- websockets ---------------------------------------------------------------------------------


def server_closes(server, path: str) -> ConnectionClosed:
    """How the server ends a websocket on ``path`` that the client only listens to."""

    async def listen():
        async with connect(f"ws://127.0.0.1:{server.port}{path}", open_timeout=10) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        return closed.value

    return asyncio.run(listen())


def test_a_websocket_app_that_returns_without_closing_aborts_the_connection(ws_server):
    closed = server_closes(ws_server, "/return-after-accept")
    assert closed.rcvd is None, f"the server sent a close frame {closed.rcvd}"


@pytest.mark.parametrize(
    "code, raised",
    [(999, "ValueError"), (1004, "ValueError"), (1005, "ValueError"), (1006, "ValueError"),
     (1015, "ValueError"), (1016, "ValueError"), (2999, "ValueError"), (5000, "ValueError"),
     (1000, None), (1003, None), (1007, None), (1014, None), (3000, None), (4999, None)],
)
def test_a_close_code_that_may_not_go_on_the_wire_raises_value_error(ws_server, code, raised):
    server = ws_server
    key = f"close-{code}"
    closed = server_closes(server, f"/bad-close?code={code}&key={key}")
    record = httpx.get(f"{server.url}/record?key={key}").json()
    assert record == {"found": True, "raised": raised}
    expected = (1000, "recovered") if raised else (code, "")
    assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == expected
