"""Websockets, black-box: the ASGI websocket spec 2.x seen through a real client.

The apps are in ``pyapp/ws_apps.py`` (raw ASGI), ``pyapp/ws_starlette.py`` and
``pyapp/ws_fastapi.py``. The client is the ``websockets`` library; where a test needs exact
bytes (a status line, a ping frame, a TCP connection that just vanishes) it speaks RFC 6455
over a plain socket instead.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness import RawConnection

pytestmark = pytest.mark.timeout(120)

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OPEN_TIMEOUT = 10
STEP_TIMEOUT = 10


def run(coro):
    return asyncio.run(coro)


def ws_url(server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def ws_connect(server, path: str, **kwargs):
    kwargs.setdefault("open_timeout", OPEN_TIMEOUT)
    kwargs.setdefault("close_timeout", 5)
    return connect(ws_url(server, path), **kwargs)


async def recv(ws, timeout: float = STEP_TIMEOUT):
    return await asyncio.wait_for(ws.recv(), timeout)


async def expect_closed(ws, timeout: float = STEP_TIMEOUT) -> ConnectionClosed:
    """Reads until the server closes; returns the exception carrying the close frames."""
    try:
        while True:
            message = await asyncio.wait_for(ws.recv(), timeout)
            pytest.fail(f"expected the server to close, got a message {message!r:.200}")
    except ConnectionClosed as exc:
        return exc


async def send_refused(ws, message, timeout: float = STEP_TIMEOUT) -> ConnectionClosed:
    """Sends a message the server must refuse by closing. The server may close while the
    client is still writing a big message, so ``send`` itself may see the close."""
    try:
        await asyncio.wait_for(ws.send(message), timeout)
    except ConnectionClosed as exc:
        return exc
    return await expect_closed(ws, timeout)


def record(server, key: str, until=lambda rec: rec.get("ended"), timeout: float = 10.0) -> dict:
    """What ``pyapp.ws_apps``' ``/record?key`` app observed, once ``until(record)`` holds."""
    deadline = time.monotonic() + timeout
    rec = {}
    while time.monotonic() < deadline:
        rec = httpx.get(f"{server.url}/record", params={"key": key}, timeout=5).json()
        if rec.get("found") and until(rec):
            return rec
        time.sleep(0.05)
    pytest.fail(f"record {key!r} did not reach the expected state in {timeout}s: {rec}")


def assert_still_serving(server):
    """A new connection still echoes, and the process is alive."""

    async def check():
        async with ws_connect(server, "/echo/after") as ws:
            await ws.send("still here?")
            assert await recv(ws) == "still here?"

    run(check())
    assert server.alive()


# --- raw RFC 6455 over a socket ---------------------------------------------------------


def handshake_bytes(path: str, extra: bytes = b"") -> tuple[bytes, bytes]:
    key = base64.b64encode(os.urandom(16))
    request = (
        b"GET " + path.encode("latin-1") + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )
    return request, key


def expected_accept(key: bytes) -> str:
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One masked client frame."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return head + mask + masked


def read_frame(conn: RawConnection) -> tuple[bool, int, bytes]:
    """One server frame: (fin, opcode, payload). Server frames must not be masked."""
    head = conn.rfile.read(2)
    assert len(head) == 2, f"connection ended before a frame: {head!r}"
    fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
    assert not head[1] & 0x80, "a server frame was masked"
    size = head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", conn.rfile.read(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", conn.rfile.read(8))[0]
    payload = conn.rfile.read(size)
    assert len(payload) == size
    return fin, opcode, payload


def raw_open(server, path: str) -> RawConnection:
    """A raw connection that has completed the opening handshake."""
    conn = RawConnection(server.port, timeout=STEP_TIMEOUT)
    request, key = handshake_bytes(path)
    conn.send(request)
    head = conn.read_head()
    assert head.status == 101, head
    assert head.header("sec-websocket-accept") == expected_accept(key)
    return conn


OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ws_server():
    """One server for the raw ASGI websocket apps (tests use distinct paths and keys)."""
    from harness import start_server

    server = start_server("pyapp.ws_apps:app")
    yield server
    server.stop()


# --- echo -----------------------------------------------------------------------------------


def test_echo_text_and_bytes(ws_server):
    async def main():
        async with ws_connect(ws_server, "/echo") as ws:
            for text in ["hello", "", "ünïcødé ✓ 🚀", "x" * 70_000]:
                await ws.send(text)
                assert await recv(ws) == text
            for data in [b"\x00\x01\x02\xff", b"", os.urandom(70_000)]:
                await ws.send(data)
                echoed = await recv(ws)
                assert isinstance(echoed, bytes)
                assert echoed == data

    run(main())


@pytest.mark.parametrize("kind", ["text", "bytes"])
def test_echo_one_megabyte_message(ws_server, kind):
    size = 1024 * 1024
    payload = ("abcdefghij" * (size // 10 + 1))[:size] if kind == "text" else os.urandom(size)

    async def main():
        async with ws_connect(ws_server, "/echo", max_size=4 * size) as ws:
            await ws.send(payload)
            echoed = await recv(ws, 30)
            assert type(echoed) is type(payload)
            assert len(echoed) == size
            assert echoed == payload

    run(main())


def test_ping_from_the_client_is_answered(ws_server):
    async def main():
        async with ws_connect(ws_server, "/echo", ping_interval=None) as ws:
            pong = await ws.ping(b"are you there")
            latency = await asyncio.wait_for(pong, STEP_TIMEOUT)
            assert latency >= 0
            # the ping was not delivered to the app as a message
            await ws.send("after ping")
            assert await recv(ws) == "after ping"

    run(main())


def test_ping_answered_with_the_same_payload_raw(ws_server):
    conn = raw_open(ws_server, "/echo/raw-ping")
    try:
        conn.send(client_frame(OP_PING, b"ping-payload"))
        fin, opcode, payload = read_frame(conn)
        assert (fin, opcode, payload) == (True, OP_PONG, b"ping-payload")
    finally:
        conn.close()


def test_fragmented_message_arrives_whole(ws_server):
    async def main():
        async with ws_connect(ws_server, "/echo") as ws:
            await ws.send(["frag-one|", "frag-two|", "frag-three"])
            assert await recv(ws) == "frag-one|frag-two|frag-three"
            await ws.send([b"\x01\x02", b"\x03", b"\x04\x05\x06"])
            assert await recv(ws) == b"\x01\x02\x03\x04\x05\x06"

    run(main())


def test_fragmented_message_with_a_ping_in_between_raw(ws_server):
    """Control frames may be injected between fragments (RFC 6455 §5.4): the pong comes
    right away and the app still gets the message whole."""
    conn = raw_open(ws_server, "/echo/raw-fragments")
    try:
        conn.send(client_frame(OP_TEXT, b"first ", fin=False))
        conn.send(client_frame(OP_PING, b"mid"))
        conn.send(client_frame(OP_CONT, b"second ", fin=False))
        conn.send(client_frame(OP_CONT, "third ✓".encode(), fin=True))
        frames = [read_frame(conn), read_frame(conn)]
        assert (True, OP_PONG, b"mid") in frames
        assert (True, OP_TEXT, "first second third ✓".encode()) in frames
    finally:
        conn.close()


# --- scope ------------------------------------------------------------------------------------


def as_bytes(tagged) -> bytes:
    assert isinstance(tagged, dict) and set(tagged) == {"bytes"}, f"expected bytes, app got {tagged!r}"
    return tagged["bytes"].encode("latin-1")


@pytest.fixture(scope="module")
def ws_scope(ws_server):
    async def main():
        async with ws_connect(
            ws_server,
            "/scope/caf%C3%A9%20x?a=1&b=%20two",
            subprotocols=["proto.one", "proto.two"],
            additional_headers={"X-Custom-Header": "Custom Value"},
        ) as ws:
            report = json.loads(await recv(ws))
            return report, ws.local_address[1]

    return run(main())


def test_scope_type_and_versions(ws_scope):
    scope = ws_scope[0]["scope"]
    assert scope["type"] == "websocket"
    assert scope["asgi"]["version"] == "3.0"
    assert isinstance(scope["asgi"]["spec_version"], str) and scope["asgi"]["spec_version"].startswith("2.")
    assert scope["http_version"] == "1.1"


def test_scope_scheme_is_ws(ws_scope):
    assert ws_scope[0]["scope"]["scheme"] == "ws"


def test_scope_path_raw_path_and_query_string(ws_scope):
    scope = ws_scope[0]["scope"]
    assert scope["path"] == "/scope/café x"
    assert as_bytes(scope["raw_path"]) == b"/scope/caf%C3%A9%20x"
    assert as_bytes(scope["query_string"]) == b"a=1&b=%20two"
    assert scope["root_path"] == ""


def test_scope_subprotocols_in_the_order_offered(ws_scope):
    assert ws_scope[0]["scope"]["subprotocols"] == ["proto.one", "proto.two"]
    assert ws_scope[0]["types"]["subprotocols"] == "list"


def test_scope_headers(ws_scope):
    report = ws_scope[0]
    headers = [(as_bytes(name), as_bytes(value)) for name, value in report["scope"]["headers"]]
    assert report["header_types"] == ["bytes,bytes"]
    assert (b"x-custom-header", b"Custom Value") in headers
    names = [name for name, _ in headers]
    assert all(name == name.lower() for name in names)
    for name in (b"host", b"upgrade", b"connection", b"sec-websocket-key", b"sec-websocket-version"):
        assert name in names, f"{name!r} missing from {names}"
    assert (b"sec-websocket-protocol", b"proto.one, proto.two") in headers


def test_scope_client_and_server(ws_scope, ws_server):
    scope = ws_scope[0]["scope"]
    assert scope["client"] == ["127.0.0.1", ws_scope[1]]
    assert scope["server"] == ["127.0.0.1", ws_server.port]


def test_scope_extensions_advertise_the_denial_response(ws_scope):
    extensions = ws_scope[0]["scope"]["extensions"]
    assert isinstance(extensions, dict)
    assert extensions.get("websocket.http.response") == {}


def test_scope_state_comes_from_lifespan(ws_scope):
    assert ws_scope[0]["types"]["state"] == "dict"
    assert ws_scope[0]["state"] == {"ws_apps": "started"}


def test_scope_root_path(server_factory):
    server = server_factory("pyapp.ws_apps:app", "--root-path", "/api")

    async def main():
        async with ws_connect(server, "/scope/x?q=1") as ws:
            return json.loads(await recv(ws))["scope"]

    scope = run(main())
    assert scope["root_path"] == "/api"
    # as uvicorn does: path and raw_path include the root path
    assert scope["path"] == "/api/scope/x"
    assert as_bytes(scope["raw_path"]) == b"/api/scope/x"
    assert as_bytes(scope["query_string"]) == b"q=1"


# --- handshake: accept, subprotocol, headers, reject, denial -------------------------------------


def test_subprotocol_negotiation(ws_server):
    async def main():
        async with ws_connect(ws_server, "/subprotocol", subprotocols=["unknown", "chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"  # the app's preference, not the client's order
            assert ws.response.headers.get_all("Sec-WebSocket-Protocol") == ["chat.v2"]
            seen = json.loads(await recv(ws))
            assert seen == {"offered": ["unknown", "chat.v1", "chat.v2"], "chosen": "chat.v2"}
        async with ws_connect(ws_server, "/subprotocol", subprotocols=["chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v1"
        async with ws_connect(ws_server, "/subprotocol") as ws:
            assert ws.subprotocol is None
            assert "Sec-WebSocket-Protocol" not in ws.response.headers
            assert json.loads(await recv(ws)) == {"offered": [], "chosen": None}

    run(main())


def test_accept_with_extra_headers(ws_server):
    async def main():
        async with ws_connect(ws_server, "/accept-headers") as ws:
            headers = ws.response.headers
            assert ws.response.status_code == 101
            assert headers.get("x-accept-extra") == "yes"
            assert headers.get_all("set-cookie") == ["session=abc", "theme=dark"]
            assert await recv(ws) == "hi"

    run(main())


def test_accept_handshake_bytes(ws_server):
    """The 101 response itself: status, Upgrade/Connection, the accept key (RFC 6455 §4.2.2)."""
    conn = raw_open(ws_server, "/echo/handshake")  # checks status 101 and the accept key
    conn.close()


def handshake_status(server, path: str) -> tuple[int, str | None]:
    """The status of a raw handshake for ``path``, and its Sec-WebSocket-Accept header."""
    request, _ = handshake_bytes(path)
    with RawConnection(server.port) as conn:
        conn.send(request)
        head = conn.read_head()
    return head.status, head.header("sec-websocket-accept")


@pytest.mark.parametrize(
    "drop, add, status, version_header",
    [
        (b"Sec-WebSocket-Key", b"", 400, None),
        (b"Sec-WebSocket-Version", b"Sec-WebSocket-Version: 8\r\n", 426, "13"),
    ],
    ids=["no-key", "version-8"],
)
def test_a_malformed_handshake_is_refused_before_the_app(ws_server, drop, add, status, version_header):
    """RFC 6455 §4.2.2: no Sec-WebSocket-Key is a 400; a version other than 13 is a 426
    that names the version the server speaks."""
    request, _ = handshake_bytes("/echo")
    lines = [line for line in request.split(b"\r\n") if not line.startswith(drop)]
    request = b"\r\n".join(lines[:-2]) + b"\r\n" + add + b"\r\n"
    with RawConnection(ws_server.port) as conn:
        conn.send(request)
        head = conn.read_head()
    assert head.status == status
    assert head.header("sec-websocket-version") == version_header
    assert_still_serving(ws_server)


def test_close_before_accept_is_http_403(ws_server):
    """ASGI spec: websocket.close before websocket.accept → the server answers HTTP 403."""

    async def main():
        with pytest.raises(InvalidStatus) as info:
            async with ws_connect(ws_server, "/reject"):
                pass
        return info.value.response

    assert run(main()).status_code == 403
    assert handshake_status(ws_server, "/reject") == (403, None)
    assert_still_serving(ws_server)


@pytest.mark.rust_only
def test_returning_without_accept_is_http_403(ws_server):
    """The spec leaves an app that returns without accepting or closing open; this server
    treats it as a refusal (403, like close-before-accept). uvicorn answers 500 here."""
    assert handshake_status(ws_server, "/return-before-accept") == (403, None)
    assert_still_serving(ws_server)


def test_denial_response_with_custom_status_headers_and_body(ws_server):
    async def main():
        with pytest.raises(InvalidStatus) as info:
            async with ws_connect(ws_server, "/deny"):
                pass
        return info.value.response

    response = run(main())
    assert response.status_code == 418
    assert response.headers.get("x-denied") == "teapot"
    assert response.body == b"no websockets for you"

    request, _ = handshake_bytes("/deny")
    with RawConnection(ws_server.port) as conn:
        conn.send(request)
        raw = conn.read_response()
    assert raw.status == 418
    assert raw.header("x-denied") == "teapot"
    assert raw.header("content-type") == "text/plain"
    assert raw.body == b"no websockets for you"
    assert raw.header("sec-websocket-accept") is None


# --- close codes both ways ------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, reason",
    [(1000, ""), (1001, "going away"), (4001, "custom reason ✓"), (3000, "x" * 120)],
)
def test_app_close_code_and_reason_seen_by_the_client(ws_server, code, reason):
    async def main():
        async with ws_connect(ws_server, "/close") as ws:
            await ws.send("before close")
            assert await recv(ws) == "before close"
            await ws.send(f"close {code} {reason}".rstrip(" ") if reason else f"close {code}")
            closed = await expect_closed(ws)
            assert closed.rcvd is not None, "no close frame from the server"
            assert closed.rcvd.code == code
            assert closed.rcvd.reason == reason

    run(main())


@pytest.mark.parametrize("code, reason", [(1000, ""), (1001, "tab closed"), (4002, "client says bye ✓")])
def test_client_close_code_and_reason_seen_by_the_app(ws_server, code, reason):
    key = f"client-close-{code}"

    async def main():
        async with ws_connect(ws_server, f"/record?key={key}") as ws:
            await ws.send("one")
            assert await recv(ws) == "got it"
            await ws.close(code, reason)
            assert ws.close_code == code  # the server echoed the close frame

    run(main())
    rec = record(ws_server, key)
    assert rec["messages"] == 1
    assert rec["disconnect"] == {"code": code, "reason": reason}
    assert "error" not in rec


def test_close_frame_without_status_is_1005_for_the_app(ws_server):
    key = "empty-close"
    conn = raw_open(ws_server, f"/record?key={key}")
    try:
        conn.send(client_frame(OP_CLOSE, b""))
        fin, opcode, _payload = read_frame(conn)
        assert (fin, opcode) == (True, OP_CLOSE)
    finally:
        conn.close()
    rec = record(ws_server, key)
    assert rec["disconnect"]["code"] == 1005


# --- failures -------------------------------------------------------------------------------------


def test_app_exception_before_accept_is_http_500(ws_server):
    request, _ = handshake_bytes("/raise-before-accept")
    with RawConnection(ws_server.port) as conn:
        conn.send(request)
        head = conn.read_head()
    assert head.status == 500
    assert ws_server.wait_for_log("raised before accept (expected by the test)", timeout=5)
    assert_still_serving(ws_server)


@pytest.mark.rust_only
def test_app_exception_after_accept_is_close_1011(ws_server):
    """Issue #5: an exception after accept closes with 1011 (internal error). uvicorn drops
    the TCP connection without a close frame instead, hence rust_only."""

    async def main():
        async with ws_connect(ws_server, "/raise-after-accept") as ws:
            await ws.send("boom")
            closed = await expect_closed(ws)
            assert closed.rcvd is not None, "no close frame from the server"
            assert closed.rcvd.code == 1011

    run(main())
    assert ws_server.wait_for_log("raised after accept (expected by the test)", timeout=5)
    assert "Exception in ASGI application" in ws_server.logs()
    assert_still_serving(ws_server)


@pytest.mark.rust_only
@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_vanishing_is_disconnect_1006_and_the_task_ends(ws_server, how):
    """The TCP connection ends without a close frame (a FIN, or a reset): the app gets
    websocket.disconnect with code 1006 (RFC 6455 §7.1.5: closed abnormally, no close frame)
    and its task ends. uvicorn reports 1005 here, hence rust_only."""
    key = f"vanish-{how}"
    conn = raw_open(ws_server, f"/record?key={key}")
    conn.send(client_frame(OP_TEXT, b"hello"))
    assert read_frame(conn) == (True, OP_TEXT, b"got it")
    record(ws_server, key, until=lambda rec: rec["messages"] == 1)
    if how == "rst":
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    rec = record(ws_server, key)
    assert rec["disconnect"] is not None, rec
    assert rec["disconnect"]["code"] == 1006, rec
    assert rec["ended"] is True
    assert_still_serving(ws_server)


@pytest.mark.rust_only
def test_sessions_the_client_closes_leave_no_socket_behind(server_factory):
    """The client closes, the app returns on websocket.disconnect: the server closes its end
    of the connection too (it used to keep each one open in CLOSE-WAIT, one descriptor per
    finished session)."""
    server = server_factory("pyapp.ws_apps:app")

    def sockets() -> int:
        return sum(os.readlink(f"/proc/{server.pid}/fd/{fd}").startswith("socket:")
                   for fd in os.listdir(f"/proc/{server.pid}/fd"))

    before = sockets()

    async def main():
        for _ in range(20):
            async with ws_connect(server, "/echo") as ws:
                await ws.send("hello")
                assert await recv(ws) == "hello"

    run(main())
    deadline = time.monotonic() + 5
    while sockets() > before:
        assert time.monotonic() < deadline, f"{sockets() - before} sockets of closed sessions still open"
        time.sleep(0.05)


def test_client_vanishing_mid_handshake_leaves_the_server_up(ws_server):
    request, _ = handshake_bytes("/echo/half")
    with socket.create_connection(("127.0.0.1", ws_server.port)) as sock:
        sock.sendall(request[: len(request) // 2])
    assert_still_serving(ws_server)


# --- limits and backpressure ----------------------------------------------------------------------

MAX_SIZE = 64 * 1024


@pytest.fixture(scope="module")
def small_limit_server():
    from harness import start_server

    server = start_server("pyapp.ws_apps:app", "--ws-max-size", str(MAX_SIZE))
    yield server
    server.stop()


def test_ws_max_size_allows_a_message_at_the_limit(small_limit_server):
    async def main():
        async with ws_connect(small_limit_server, "/echo", max_size=None, compression=None) as ws:
            payload = os.urandom(MAX_SIZE)
            await ws.send(payload)
            assert await recv(ws) == payload

    run(main())


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "fragmented"])
def test_ws_max_size_message_above_the_limit_is_close_1009(small_limit_server, fragmented):
    async def main():
        async with ws_connect(small_limit_server, "/echo", max_size=None, compression=None) as ws:
            await ws.send("small")
            assert await recv(ws) == "small"
            if fragmented:
                # every frame is under the limit, the message is not
                closed = await send_refused(ws, [b"a" * (MAX_SIZE // 4)] * 5)
            else:
                closed = await send_refused(ws, b"a" * (MAX_SIZE + 1))
            assert closed.rcvd is not None, "no close frame from the server"
            assert closed.rcvd.code == 1009

    run(main())
    assert_still_serving(small_limit_server)


def test_default_ws_max_size_is_16_mib(ws_server):
    """uvicorn's default: 16 MiB passes, one byte more is refused with 1009."""
    limit = 16 * 1024 * 1024

    async def main():
        async with ws_connect(ws_server, "/echo", max_size=None, compression=None) as ws:
            await ws.send(b"\x00" * limit)
            assert len(await recv(ws, 60)) == limit
        async with ws_connect(ws_server, "/echo", max_size=None, compression=None) as ws:
            closed = await send_refused(ws, b"\x00" * (limit + 1), 60)
            assert closed.rcvd is not None and closed.rcvd.code == 1009

    run(main())
    assert_still_serving(ws_server)


def test_concurrent_connections_lose_nothing(ws_server):
    """200 connections at once, each sends 100 messages (text and bytes alternating) without
    waiting, and reads them back: every one arrives, in order, unchanged."""
    connections, messages = 200, 100

    async def one(index: int):
        expected = [
            f"conn {index} msg {n}" if n % 2 == 0 else f"{index}:{n}:".encode() + bytes(range(n))
            for n in range(messages)
        ]
        async with ws_connect(ws_server, f"/echo/many/{index}", open_timeout=30) as ws:

            async def sender():
                for message in expected:
                    await ws.send(message)

            send_task = asyncio.create_task(sender())
            received = [await recv(ws, 30) for _ in range(messages)]
            await send_task
        assert received == expected, f"connection {index}"
        return len(received)

    async def main():
        return await asyncio.gather(*(one(i) for i in range(connections)))

    counts = run(main())
    assert counts == [messages] * connections
    assert ws_server.alive()


def test_backpressure_when_the_client_does_not_read(ws_server):
    """The app floods 256 KiB messages at a client that reads nothing: its sends must
    block (bounded buffering) instead of queueing without limit."""
    key = "flood"
    conn = raw_open(ws_server, f"/flood?key={key}&size=262144")
    try:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        time.sleep(2.0)
        first = record(ws_server, key, until=lambda rec: rec["sent"] > 0)["sent"]
        time.sleep(1.0)
        second = record(ws_server, key, until=lambda rec: True)["sent"]
        # Unbounded buffering would have let the app send thousands of messages (GBs) by now.
        assert second < 400, f"the app sent {second} x 256 KiB to a client that reads nothing"
        assert second - first < 20, f"sends kept completing while the client read nothing: {first} → {second}"
        # Reading resumes the flow.
        for _ in range(second + 5):
            fin, opcode, payload = read_frame(conn)
            assert (fin, opcode, len(payload)) == (True, OP_BINARY, 262144)
    finally:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    rec = record(ws_server, key)
    assert rec["ended"] is True


def test_backpressure_when_the_app_does_not_receive(ws_server):
    """The client floods 1 MiB messages at an app that waits before receiving: the server
    stops reading (the client's sends stall) and, once the app reads, nothing is lost."""
    total = 200
    size = 1024 * 1024

    async def main():
        async with ws_connect(
            ws_server, f"/slow-reader?delay=3&count={total}", compression=None, max_size=None
        ) as ws:
            sent = 0

            async def sender():
                nonlocal sent
                for n in range(total):
                    await ws.send(n.to_bytes(4, "big") * (size // 4))
                    sent += 1

            task = asyncio.create_task(sender())
            await asyncio.sleep(2.0)
            stalled_at = sent
            await asyncio.wait_for(task, 60)
            summary = json.loads(await recv(ws, 60))
            return stalled_at, summary

    stalled_at, summary = run(main())
    # Without backpressure the server would have read all 200 MiB during the app's delay.
    assert stalled_at < 120, f"{stalled_at} MiB were taken from the client while the app was not receiving"
    assert summary == {"count": total, "in_order": True, "bytes": total * size}


# --- Starlette and FastAPI ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def starlette_server():
    from harness import start_server

    server = start_server("pyapp.ws_starlette:app")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fastapi_server():
    from harness import start_server

    server = start_server("pyapp.ws_fastapi:app")
    yield server
    server.stop()


def test_starlette_websocket_route_echo(starlette_server):
    async def main():
        async with ws_connect(starlette_server, "/ws/echo") as ws:
            await ws.send("text")
            assert await recv(ws) == "text"
            await ws.send(b"\x00bytes")
            assert await recv(ws) == b"\x00bytes"
            big = "y" * (1024 * 1024)
            await ws.send(big)
            assert await recv(ws, 30) == big

    run(main())
    assert httpx.get(starlette_server.url + "/").text == "starlette http"


def test_starlette_websocket_endpoint_with_path_params_state_and_close(starlette_server):
    async def main():
        async with ws_connect(starlette_server, "/ws/rooms/lobby?user=ann") as ws:
            assert json.loads(await recv(ws)) == {"room": "lobby", "user": "ann", "greeting": "set by lifespan"}
            await ws.send(json.dumps({"n": 1}))
            assert json.loads(await recv(ws)) == {"room": "lobby", "echo": {"n": 1}}
            await ws.send(json.dumps({"close": 4100}))
            closed = await expect_closed(ws)
            assert closed.rcvd is not None
            assert (closed.rcvd.code, closed.rcvd.reason) == (4100, "room closed")

    run(main())


def test_starlette_subprotocol(starlette_server):
    async def main():
        async with ws_connect(starlette_server, "/ws/subprotocol", subprotocols=["x", "chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v1"
            assert await recv(ws) == "x,chat.v1"

    run(main())


def test_starlette_denial_response_and_forbidden(starlette_server):
    async def main():
        with pytest.raises(InvalidStatus) as denied:
            async with ws_connect(starlette_server, "/ws/deny"):
                pass
        with pytest.raises(InvalidStatus) as forbidden:
            async with ws_connect(starlette_server, "/ws/forbidden"):
                pass
        with pytest.raises(InvalidStatus) as missing:
            async with ws_connect(starlette_server, "/ws/no-such-route"):
                pass
        return denied.value.response, forbidden.value.response, missing.value.response

    denied, forbidden, missing = run(main())
    assert denied.status_code == 401
    assert json.loads(denied.body) == {"detail": "login first"}
    assert forbidden.status_code == 403
    assert missing.status_code == 403  # Starlette closes unknown websocket routes before accept


def test_fastapi_websocket_endpoint(fastapi_server):
    async def main():
        async with ws_connect(fastapi_server, "/ws/42?token=secret") as ws:
            assert json.loads(await recv(ws)) == {"hello": 42, "token": "secret"}
            for n in range(1, 4):
                await ws.send(json.dumps({"value": n}))
                assert json.loads(await recv(ws)) == {"client_id": 42, "n": n, "echo": {"value": n}}
            await ws.close(4003, "done")

    run(main())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = httpx.get(fastapi_server.url + "/disconnects").json()
        if "42" in seen:
            break
        time.sleep(0.05)
    assert seen.get("42") == 4003


def test_fastapi_dependency_refusal_is_http_403(fastapi_server):
    async def main():
        with pytest.raises(InvalidStatus) as info:
            async with ws_connect(fastapi_server, "/ws/7"):
                pass
        return info.value.response

    assert run(main()).status_code == 403
    assert httpx.get(fastapi_server.url + "/").json() == {"app": "fastapi"}


def test_fastapi_bytes_echo(fastapi_server):
    async def main():
        async with ws_connect(fastapi_server, "/bytes", max_size=2**22) as ws:
            for size in (0, 1, 1000, 1024 * 1024):
                data = os.urandom(size)
                await ws.send(data)
                assert await recv(ws, 30) == data

    run(main())
