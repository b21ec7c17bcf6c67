"""HTTP/1.1 behaviour a client sees: HEAD, 100-continue, keep-alive, pipelining, bad requests."""

import uuid

import httpx
import pytest

from harness import IncompleteResponse, RawConnection, raw_request


# HEAD -------------------------------------------------------------------------------------


def test_head_has_headers_of_get_but_no_body(conformance_server):
    get = raw_request(conformance_server.port, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    with RawConnection(conformance_server.port) as conn:
        conn.send(b"HEAD /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = conn.read_response(head_request=True)
        rest = conn.read_to_eof()
    assert head.status == 200
    assert head.header("content-length") == get.header("content-length") == "2"
    assert rest == b"", "a HEAD response must not carry a body"


def test_head_of_streamed_response_sends_no_body(conformance_server):
    with RawConnection(conformance_server.port) as conn:
        conn.send(b"HEAD /download?size=200000&chunk=10000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = conn.read_response(head_request=True)
        rest = conn.read_to_eof()
    assert head.status == 200
    assert rest == b""


def test_head_then_get_on_same_connection(conformance_server):
    with RawConnection(conformance_server.port) as conn:
        conn.send(b"HEAD /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        head = conn.read_response(head_request=True)
        conn.send(b"GET /qs?after-head HTTP/1.1\r\nHost: x\r\n\r\n")
        get = conn.read_response()
    assert head.status == 200
    assert get.status == 200 and get.body == b"after-head"


# Expect: 100-continue -----------------------------------------------------------------------


def test_expect_100_continue_gets_interim_response_then_final(conformance_server):
    with RawConnection(conformance_server.port, timeout=5) as conn:
        conn.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = conn.read_head()
        assert interim.status == 100, "expected 'HTTP/1.1 100 Continue' before the body is sent"
        conn.send(b"hello")
        final = conn.read_response()
    assert final.status == 200
    assert final.body == b"hello"


def test_no_100_continue_when_app_answers_without_reading_body(conformance_server):
    with RawConnection(conformance_server.port, timeout=5) as conn:
        conn.send(b"POST /no-read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        response = conn.read_response()
    assert response.status == 200
    assert response.body == b"answered without reading"


# keep-alive and pipelining -----------------------------------------------------------------


def test_keep_alive_reuses_one_connection(conformance_server):
    with httpx.Client(base_url=conformance_server.url) as client:
        ports = {tuple(client.get(f"/scope/ka{i}").json()["scope"]["client"])[1] for i in range(5)}
    assert len(ports) == 1, f"client port changed across requests: {ports}"


def test_sequential_requests_on_one_raw_connection(conformance_server):
    with RawConnection(conformance_server.port) as conn:
        for i in range(3):
            conn.send(f"GET /qs?n={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            response = conn.read_response()
            assert response.status == 200 and response.body == f"n={i}".encode()


def test_pipelined_requests_are_answered_in_order(conformance_server):
    requests = (
        b"GET /qs?first HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nsecond"
        b"GET /qs?third HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    with RawConnection(conformance_server.port) as conn:
        conn.send(requests)
        bodies = [conn.read_response().body for _ in range(3)]
    assert bodies == [b"first", b"second", b"third"]


def test_connection_close_request_closes_after_response(conformance_server):
    with RawConnection(conformance_server.port) as conn:
        conn.send(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200
        assert conn.read_to_eof() == b""


# malformed requests ----------------------------------------------------------------------


def app_saw(server, marker: str) -> bool:
    seen = httpx.get(server.url + "/seen").json()
    return any(marker in path for path in seen)


def read_status(port: int, data: bytes) -> int:
    with RawConnection(port, timeout=5) as conn:
        try:
            conn.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return conn.read_head().status


@pytest.mark.parametrize(
    "template",
    [
        b"GE(T /qs?{marker} HTTP/1.1\r\nHost: x\r\n\r\n",  # illegal character in the method
        b"GET /qs?{marker} with spaces HTTP/1.1\r\nHost: x\r\n\r\n",  # too many parts
        b"GET /qs?{marker} HTTP/1.1\r\nHost: x\r\nthis header has no colon\r\n\r\n",
        b"GET /qs?{marker} HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ],
    ids=["bad-method", "bad-request-line", "header-without-colon", "bad-content-length"],
)
def test_malformed_request_gets_400_and_never_reaches_app(conformance_server, template):
    marker = "never-seen-" + uuid.uuid4().hex
    status = read_status(conformance_server.port, template.replace(b"{marker}", marker.encode()))
    assert status == 400
    assert not app_saw(conformance_server, marker)


@pytest.mark.rust_only  # uvicorn (h11) accepts a 100 KB header that arrives in one read
def test_100kb_header_gets_431_and_never_reaches_app(conformance_server):
    marker = "never-seen-" + uuid.uuid4().hex
    request = (
        f"GET /qs?{marker} HTTP/1.1\r\nHost: x\r\n".encode()
        + b"X-Huge: " + b"a" * 100_000 + b"\r\n\r\n"
    )
    status = read_status(conformance_server.port, request)
    assert status == 431
    assert not app_saw(conformance_server, marker)


def header_lines_request(marker: str, extra_lines: int) -> bytes:
    """A GET of /qs?marker with Host and ``extra_lines`` more header lines."""
    return (
        f"GET /qs?{marker} HTTP/1.1\r\nHost: x\r\n".encode()
        + b"".join(b"X-Extra-%d: %d\r\n" % (n, n) for n in range(extra_lines))
        + b"\r\n"
    )


def test_a_request_with_100_header_lines_is_served(conformance_server):
    marker = "seen-" + uuid.uuid4().hex
    assert read_status(conformance_server.port, header_lines_request(marker, 99)) == 200
    assert app_saw(conformance_server, marker)


@pytest.mark.rust_only  # uvicorn (h11, httptools) has no limit on the number of headers
def test_more_than_128_header_lines_get_431_and_never_reach_app(conformance_server):
    marker = "never-seen-" + uuid.uuid4().hex
    status = read_status(conformance_server.port, header_lines_request(marker, 128))
    assert status == 431
    assert not app_saw(conformance_server, marker)


def test_server_still_answers_after_malformed_requests(conformance_server):
    try:
        read_status(conformance_server.port, b"\x16\x03\x01\x02\x00garbage-not-http\r\n\r\n")
    except (IncompleteResponse, OSError):
        pass  # closing the connection without an answer is fine too
    assert httpx.get(conformance_server.url + "/ok").text == "ok"
