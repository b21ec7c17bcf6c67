"""An app whose body does not match its own ``content-length`` must not desync the connection.

A surplus that went out on a kept-alive connection would be read by the client (or a proxy
that pools connections) as the start of the next response: response splitting. Raw sockets,
because a client library hides what was on the wire.
"""

import socket
import time

import pytest

pytestmark = pytest.mark.rust_only

READ_TIMEOUT = 5.0


@pytest.fixture
def server(server_factory):
    return server_factory("pyapp.conformance:app")


def exchange(server, raw: bytes, timeout: float = READ_TIMEOUT) -> tuple[bytes, bool]:
    """Sends ``raw``; returns everything received and whether the server closed the connection."""
    received = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(raw)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received, True
            except socket.timeout:
                return received, False
            if not chunk:
                return received, True
            received += chunk
    return received, False


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


def split_response(received: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def error_logged(server, text: str) -> str:
    assert server.wait_for_log(text, timeout=5), server.logs()
    return server.logs()


def test_a_body_longer_than_its_content_length_is_cut_and_the_connection_closed(server):
    # A second request rides on the same connection: it must not be answered by the surplus.
    received, closed = exchange(server, get("/fail/long-body") + get("/ok"))
    status, headers, body = split_response(received)
    assert status.startswith(b"HTTP/1.1 200")
    assert headers[b"content-length"] == b"5"
    assert body == b"12345", received
    assert closed, "the connection must close after a cut response"
    logs = error_logged(server, "sent more body than its content-length declared")
    assert "sent at most 5 and closed the connection" in logs


def test_a_streamed_body_past_its_content_length_never_reaches_the_wire(server):
    # The response is aborted where the surplus would start; how much of its head and first
    # chunk was flushed before that is up to timing, but never anything past 5 body bytes.
    received, closed = exchange(server, get("/fail/long-stream") + get("/ok"))
    _, _, body = split_response(received)
    assert received.count(b"HTTP/1.1") <= 1, received
    assert b"HTTP/1.1 200 OK" not in body and b"more after the cut" not in body, received
    assert len(body) <= 5
    assert closed
    error_logged(server, "sent more body than its content-length declared")
    time.sleep(0.3)
    # The app's later sends are dropped quietly, as after a disconnect: no traceback.
    assert "Traceback" not in server.logs()


def test_a_body_shorter_than_its_content_length_closes_instead_of_hanging(server):
    received, closed = exchange(server, get("/fail/short-body"))
    status, headers, body = split_response(received)
    assert status.startswith(b"HTTP/1.1 200")
    assert headers[b"content-length"] == b"10"
    assert len(body) < 10
    assert closed, "the client must not wait forever for the missing bytes"
    error_logged(server, "5 bytes short of its declared content-length")


def test_a_stream_that_ends_short_of_its_content_length_closes(server):
    # The head went out with the first chunk; the connection is aborted at the short end
    # (whether the head and first chunk were flushed before that is up to timing).
    received, closed = exchange(server, get("/fail/short-stream"))
    _, _, body = split_response(received)
    assert len(body) < 10
    assert closed
    error_logged(server, "5 bytes short of its declared content-length")


def test_an_unreadable_content_length_is_an_app_error(server):
    received, _ = exchange(server, get("/fail/bad-length"))
    status, _, body = split_response(received)
    assert status.startswith(b"HTTP/1.1 500"), received
    assert b"12345" not in body
    error_logged(server, "invalid content-length response header")


def test_matching_lengths_keep_the_connection_alive(server):
    head = b"HEAD /ok HTTP/1.1\r\nHost: test\r\n\r\n"
    received, closed = exchange(server, get("/ok") + head + get("/ok"), timeout=1.0)
    assert received.count(b"HTTP/1.1 200") == 3, received
    assert not closed
    assert "content-length" not in server.logs()
