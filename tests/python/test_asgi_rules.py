"""What the ASGI bridge does whatever the client or the app does (issue #12): when the app
starts, what ``receive()`` says, what ``send()`` raises, what a malformed request body or
a faulty app response becomes, and how websockets end.

Raw sockets where a client library would refuse to send the input or would hide what is on
the wire. The apps are ``pyapp/conformance.py`` and ``pyapp/ws_apps.py``; what an app
observed is read back from its ``/report`` (or ``/record``) route.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from websockets.asyncio.client import connect

from harness import RawConnection, start_server, strip_access_lines

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
