"""What the server refuses or cuts off before a request reaches the app (RFC 9112, issue #12).

Raw sockets throughout: a client library would refuse to send most of these requests, and
hides whether the server closed the connection afterwards.
"""

import json
import resource
import socket
import threading
import time

import pytest

from harness import RawConnection, raw_request

pytestmark = pytest.mark.rust_only

# Slack for a shared, busy 2-core machine on top of every timeout under test.
SLACK = 3.0


@pytest.fixture
def server(server_factory):
    return server_factory("pyapp.conformance:app")


def refused(server, raw: bytes):
    """Sends ``raw``; returns the response and whether the server then closed the connection."""
    with RawConnection(server.port, timeout=5) as conn:
        conn.send(raw)
        response = conn.read_response()
        return response, conn.read_to_eof() == b""


def paths_seen_by_the_app(server) -> list[str]:
    return json.loads(raw_request(server.port, b"GET /seen HTTP/1.1\r\nHost: t\r\n\r\n").body)


def closed_within(conn: RawConnection, seconds: float) -> bool:
    """Whether the server closes ``conn`` within ``seconds`` (whatever it answers first)."""
    conn.sock.settimeout(seconds)
    try:
        while conn.sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        return False
    return True


# --- Transfer-Encoding ------------------------------------------------------------------

CHUNKED_ABC = b"3\r\nabc\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    "framing, status",
    [
        (b"Transfer-Encoding: identity, chunked\r\n", 400),
        (b"Transfer-Encoding: chunked, chunked\r\n", 400),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400),
        (b"Transfer-Encoding: , chunked\r\n", 400),
        (b"Transfer-Encoding: gzip, chunked\r\n", 501),
        (b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", 501),
        (b"Transfer-Encoding: x-compress;level=1 , chunked\r\n", 501),
    ],
    ids=["identity", "chunked-twice", "two-lines", "empty-element", "gzip", "gzip-line", "x-compress"],
)
def test_a_transfer_encoding_other_than_one_plain_chunked_is_refused(server, framing, status):
    path = f"/echo?te-{status}-{len(framing)}"
    request = f"POST {path} HTTP/1.1\r\nHost: t\r\n".encode() + framing + b"\r\n" + CHUNKED_ABC
    response, closed = refused(server, request + b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.status == status, response
    assert response.header("connection") == "close"
    assert closed, "the connection must close: its framing cannot be trusted"
    assert path not in paths_seen_by_the_app(server)


def test_plain_chunked_in_any_case_is_served_and_kept_alive(server):
    with RawConnection(server.port, timeout=5) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked \r\n\r\n" + CHUNKED_ABC)
        assert conn.read_response().body == b"abc"
        conn.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        assert conn.read_response().status == 200


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    ],
    ids=["length-first", "chunked-first"],
)
def test_content_length_beside_transfer_encoding_is_framed_as_chunked_and_closes(server, framing):
    # hyper frames such a request by Transfer-Encoding alone, drops its Content-Length and
    # closes the connection after the response (RFC 9112 §6.1 allows this instead of a
    # 400): the body is the chunked one and nothing after it is read as another request.
    request = b"POST /scope HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n" + b"9\r\nabcdefghi\r\n0\r\n\r\n"
    response, closed = refused(server, request + b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.status == 200
    headers = [name for name, _ in json.loads(response.body)["scope"]["headers"]]
    assert {"bytes": "content-length"} not in headers
    assert closed


@pytest.mark.xfail(
    strict=True,
    reason="issue #12: hyper 1.12 removes Content-Length from a request that also has "
    "Transfer-Encoding before any service sees it, and has no setting to refuse it",
)
def test_content_length_beside_transfer_encoding_is_refused(server):
    request = b"POST /echo?cl-te HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    response, _ = refused(server, request + CHUNKED_ABC)
    assert response.status == 400


# --- Host ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"GET /ok?no-host HTTP/1.1\r\n\r\n",
        b"GET /ok?two-hosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /ok?two-hosts-1.0 HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
    ],
    ids=["missing", "twice", "twice-http-1.0"],
)
def test_a_missing_or_repeated_host_is_a_bad_request(server, head):
    response, closed = refused(server, head)
    assert response.status == 400, response
    assert closed
    path = head.split(b" ")[1].decode()
    assert path not in paths_seen_by_the_app(server)


def test_http_1_0_needs_no_host_and_an_empty_host_is_valid(server):
    assert raw_request(server.port, b"GET /ok HTTP/1.0\r\n\r\n").status == 200
    assert raw_request(server.port, b"GET /ok HTTP/1.1\r\nHost:\r\n\r\n").status == 200


# --- Header count -------------------------------------------------------------------------


def head_with_lines(count: int) -> bytes:
    """A GET whose head has ``count`` header lines, ``Host`` included."""
    lines = b"".join(b"x-h%d: v\r\n" % i for i in range(count - 1))
    return b"GET /scope HTTP/1.1\r\nHost: t\r\n" + lines + b"\r\n"


def test_128_header_lines_are_served(server):
    # One more gets 431: test_http_protocol.py, test_more_than_128_header_lines_get_431_...
    response = raw_request(server.port, head_with_lines(128))
    assert response.status == 200, response
    assert len(json.loads(response.body)["scope"]["headers"]) == 128


# --- Connections that send nothing ------------------------------------------------------


H2_PREFACE_AND_SETTINGS = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


@pytest.mark.parametrize(
    "first_bytes",
    [b"", b"GET /ok HTTP/1.1\r\n", H2_PREFACE_AND_SETTINGS],
    ids=["nothing", "part-of-a-head", "h2-preface-only"],
)
def test_a_connection_without_a_request_is_closed_after_the_header_timeout(server_factory, first_bytes):
    server = server_factory("pyapp.conformance:app", "--timeout-header-read", "1")
    started = time.monotonic()
    with RawConnection(server.port) as conn:
        conn.send(first_bytes)
        assert closed_within(conn, 1 + SLACK), "a connection without a request must not be held forever"
    assert time.monotonic() - started >= 0.9
    assert raw_request(server.port, b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n").status == 200


@pytest.mark.parametrize(
    "timeouts",
    [("--timeout-keep-alive", "1"), ("--timeout-keep-alive", "10", "--timeout-header-read", "1")],
    ids=["keep-alive-shorter", "header-read-shorter"],
)
def test_a_next_head_sent_in_part_is_cut_off_by_the_shorter_timeout(server_factory, timeouts):
    # After one answered request, the next head stops half-way: whichever of the two
    # timeouts is shorter closes the connection (the other one is 10 s or 30 s).
    server = server_factory("pyapp.conformance:app", *timeouts)
    with RawConnection(server.port) as conn:
        conn.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        assert conn.read_response().status == 200
        started = time.monotonic()
        conn.send(b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        assert closed_within(conn, 1 + SLACK), "a head trickling in must not hold the connection"
    assert time.monotonic() - started >= 0.9


# --- Out of file descriptors --------------------------------------------------------------


def test_accept_errors_are_logged_once_a_second_and_accepting_resumes(server):
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (64, 64))
    clients = []
    try:
        for _ in range(120):
            clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        assert server.wait_for_log("accept failed", timeout=5), server.logs()
        before = server.logs().count("accept failed")
        time.sleep(3)
        logged = server.logs().count("accept failed") - before
        assert 1 <= logged <= 4, server.logs()[-2000:]
        assert "Too many open files" in server.logs()
    finally:
        for client in clients:
            client.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            assert raw_request(server.port, b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n", timeout=2).status == 200
            break
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise


# --- Request bodies that stop arriving ----------------------------------------------------


def test_a_chunk_that_never_arrives_times_out_and_the_app_sees_a_disconnect(server_factory):
    server = server_factory("pyapp.conformance:app", "--timeout-request-body", "1")
    with RawConnection(server.port) as conn:
        conn.send(
            b"POST /disconnect-watch?key=huge-chunk HTTP/1.1\r\nHost: t\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n100000\r\nhello"
        )
        conn.sock.settimeout(1 + SLACK)
        response = conn.read_response()
        assert response.status == 408, "a stalled body must not be waited for forever"
        assert conn.read_to_eof() == b""
    record = json.loads(raw_request(server.port, b"GET /report?key=huge-chunk HTTP/1.1\r\nHost: t\r\n\r\n").body)
    assert record["disconnected"] is True
    assert record["received"] == 5


def test_fifty_trickling_uploads_are_cut_off_while_others_are_served(server_factory):
    # A byte every two seconds: each pause is longer than the 1 s timeout.
    server = server_factory("pyapp.conformance:app", "--timeout-request-body", "1")
    trickles = [RawConnection(server.port) for _ in range(50)]
    closed = [False] * len(trickles)

    def trickle(index: int, conn: RawConnection):
        try:
            conn.send(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
            for _ in range(5):
                conn.send(b"x")
                if closed_within(conn, 2.0):
                    closed[index] = True
                    return
        except OSError:
            closed[index] = True

    started = time.monotonic()
    threads = [threading.Thread(target=trickle, args=item) for item in enumerate(trickles)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        served = time.monotonic()
        assert raw_request(server.port, b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n", timeout=5).status == 200
        assert time.monotonic() - served < 1.0
        for thread in threads:
            thread.join(timeout=15)
    finally:
        for conn in trickles:
            conn.close()
    assert all(closed), f"{closed.count(False)} of 50 trickling uploads still open"
    assert time.monotonic() - started < 2 + 1 + 2 * SLACK
