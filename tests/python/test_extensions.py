"""ASGI extensions the server advertises: response trailers and pathsend."""

import hashlib
import os

import httpx
import pytest

from harness import RawConnection

pytestmark = pytest.mark.rust_only  # uvicorn implements neither extension


def test_trailers_arrive_after_chunked_body_when_client_accepts_them(conformance_server):
    with RawConnection(conformance_server.port) as conn:
        conn.send(b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
        response = conn.read_response()
    assert response.status == 200
    assert response.chunked
    assert response.body == b"hello trailers"
    assert ("x-checksum", hashlib.sha256(b"hello trailers").hexdigest()) in response.trailers


def test_trailers_response_completes_without_te_header(conformance_server):
    with RawConnection(conformance_server.port, timeout=5) as conn:
        conn.send(b"GET /trailers HTTP/1.1\r\nHost: x\r\n\r\n")
        response = conn.read_response()
        # the connection is still usable afterwards
        conn.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        after = conn.read_response()
    assert response.status == 200
    assert response.body == b"hello trailers"
    assert after.body == b"ok"


def test_pathsend_serves_the_file_content(conformance_server, tmp_path):
    content = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "payload.bin"
    path.write_bytes(content)
    response = httpx.get(conformance_server.url + "/pathsend", params={"path": str(path)}, timeout=15)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(content))
    assert response.content == content


def test_pathsend_then_keep_alive_request(conformance_server, tmp_path):
    path = tmp_path / "small.txt"
    path.write_bytes(b"small file\n")
    with httpx.Client(base_url=conformance_server.url) as client:
        assert client.get("/pathsend", params={"path": str(path)}).content == b"small file\n"
        assert client.get("/ok").text == "ok"
