"""The HTTP scope an app receives, key by key (ASGI HTTP spec 2.x)."""

import json

import httpx
import pytest

from harness import RawConnection


def as_bytes(tagged) -> bytes:
    """Undo conformance._plain for a bytes value; fails if the app got something else."""
    assert isinstance(tagged, dict) and set(tagged) == {"bytes"}, f"expected bytes, app got {tagged!r}"
    return tagged["bytes"].encode("latin-1")


def get_scope(port: int, request: bytes) -> tuple[dict, int]:
    """Send one raw request; returns the app's report and the client's local port."""
    with RawConnection(port) as conn:
        conn.send(request)
        response = conn.read_response()
        assert response.status == 200, response
        return json.loads(response.body), conn.local_port


def simple_get(target: str, extra_headers: bytes = b"") -> bytes:
    return b"GET " + target.encode("latin-1") + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_headers + b"\r\n"


@pytest.fixture(scope="module")
def basic(conformance_server):
    report, client_port = get_scope(conformance_server.port, simple_get("/scope/basic?x=1"))
    return report, client_port


def test_type_is_http(basic):
    report, _ = basic
    assert report["scope"]["type"] == "http"


def test_asgi_version_is_3_and_spec_version_2x(basic):
    asgi = basic[0]["scope"]["asgi"]
    assert asgi["version"] == "3.0"
    assert isinstance(asgi["spec_version"], str) and asgi["spec_version"].startswith("2.")


def test_http_version_is_1_1(basic):
    assert basic[0]["scope"]["http_version"] == "1.1"


def test_scheme_is_http(basic):
    assert basic[0]["scope"]["scheme"] == "http"


def test_root_path_is_empty_by_default(basic):
    assert basic[0]["scope"]["root_path"] == ""


def test_state_is_a_dict(basic):
    assert basic[0]["types"]["state"] == "dict"


def test_lifespan_state_is_copied_into_request_scope(basic):
    assert basic[0]["scope"]["state"].get("lifespan") == "started"


def test_path_is_str_and_raw_path_and_query_string_are_bytes(basic):
    types = basic[0]["types"]
    assert types["path"] == "str"
    assert types["raw_path"] == "bytes"
    assert types["query_string"] == "bytes"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"])
def test_method_is_passed_as_sent(conformance_server, method):
    request = f"{method} /scope/m HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
    report, _ = get_scope(conformance_server.port, request)
    assert report["scope"]["method"] == method


def test_path_is_percent_decoded_and_raw_path_is_as_sent(conformance_server):
    report, _ = get_scope(conformance_server.port, simple_get("/scope/caf%C3%A9/a%20b/x%2Fy?q=1"))
    scope = report["scope"]
    assert scope["path"] == "/scope/café/a b/x/y"
    assert as_bytes(scope["raw_path"]) == b"/scope/caf%C3%A9/a%20b/x%2Fy"


def test_raw_path_excludes_query_string(conformance_server):
    report, _ = get_scope(conformance_server.port, simple_get("/scope/q?a=1"))
    assert as_bytes(report["scope"]["raw_path"]) == b"/scope/q"


def test_query_string_is_bytes_exactly_as_sent(conformance_server):
    query = b"a=1&b=%20x+y&c=caf%C3%A9&flag&a=2&empty="
    report, _ = get_scope(conformance_server.port, simple_get("/scope/q?" + query.decode()))
    assert as_bytes(report["scope"]["query_string"]) == query


def test_query_string_is_empty_bytes_without_query(conformance_server):
    report, _ = get_scope(conformance_server.port, simple_get("/scope/noquery"))
    assert as_bytes(report["scope"]["query_string"]) == b""


def test_headers_are_lowercased_byte_pairs(conformance_server):
    report, _ = get_scope(
        conformance_server.port, simple_get("/scope/h", b"X-Custom-Header: Some Value\r\nUser-Agent: raw-test\r\n")
    )
    headers = [(as_bytes(name), as_bytes(value)) for name, value in report["scope"]["headers"]]
    assert (b"x-custom-header", b"Some Value") in headers
    assert (b"user-agent", b"raw-test") in headers
    assert (b"host", b"127.0.0.1") in headers
    assert all(name == name.lower() for name, _ in headers)
    assert report["header_types"] in (["tuple(bytes,bytes)"], ["list(bytes,bytes)"])


def test_duplicate_headers_are_kept_in_order(conformance_server):
    extra = b"X-Dup: one\r\nX-Other: a\r\nX-Dup: two\r\nx-dup: three\r\n"
    report, _ = get_scope(conformance_server.port, simple_get("/scope/dup", extra))
    headers = [(as_bytes(name), as_bytes(value)) for name, value in report["scope"]["headers"]]
    assert [value for name, value in headers if name == b"x-dup"] == [b"one", b"two", b"three"]


def test_interleaved_duplicates_keep_every_value_in_order(conformance_server):
    # The ASGI spec: "Order of header values must be preserved from the original HTTP
    # request; order of header names is not important." hyper groups repeated names, so
    # values of one name stay in order while other names may move around them.
    extra = b"X-Dup: one\r\nX-Other: a\r\nX-Dup: two\r\nX-Third: b\r\nx-dup: three\r\n"
    report, _ = get_scope(conformance_server.port, simple_get("/scope/interleaved", extra))
    headers = [(as_bytes(name), as_bytes(value)) for name, value in report["scope"]["headers"]]
    assert [value for name, value in headers if name == b"x-dup"] == [b"one", b"two", b"three"]
    assert (b"x-other", b"a") in headers and (b"x-third", b"b") in headers


def test_header_order_is_kept(conformance_server):
    extra = b"X-First: 1\r\nX-Second: 2\r\nX-Third: 3\r\n"
    report, _ = get_scope(conformance_server.port, simple_get("/scope/order", extra))
    names = [as_bytes(name) for name, _ in report["scope"]["headers"]]
    wanted = [b"x-first", b"x-second", b"x-third"]
    assert [name for name in names if name in wanted] == wanted


def test_header_value_bytes_are_passed_unchanged(conformance_server):
    extra = b"X-Latin: caf\xe9 \x80\xff\r\n"
    report, _ = get_scope(conformance_server.port, simple_get("/scope/latin", extra))
    headers = [(as_bytes(name), as_bytes(value)) for name, value in report["scope"]["headers"]]
    assert (b"x-latin", b"caf\xe9 \x80\xff") in headers


def test_client_is_host_and_port_of_the_connection(conformance_server):
    report, client_port = get_scope(conformance_server.port, simple_get("/scope/client"))
    assert list(report["scope"]["client"]) == ["127.0.0.1", client_port]


def test_server_is_host_and_listening_port(conformance_server):
    report, _ = get_scope(conformance_server.port, simple_get("/scope/server"))
    assert list(report["scope"]["server"]) == ["127.0.0.1", conformance_server.port]


@pytest.mark.rust_only
def test_extensions_advertise_trailers_and_pathsend(basic):
    extensions = basic[0]["scope"]["extensions"]
    assert "http.response.trailers" in extensions
    assert "http.response.pathsend" in extensions


def test_state_written_by_one_request_does_not_leak_into_the_next(conformance_server):
    with httpx.Client(base_url=conformance_server.url) as client:
        assert client.get("/state-write?value=leak").status_code == 200
        state = client.get("/scope/after-write").json()["scope"]["state"]
    assert "written_by_request" not in state
    assert state.get("lifespan") == "started"


def test_root_path_option_sets_root_path_and_prefixes_path(server_factory):
    server = server_factory("pyapp.conformance:app", "--root-path", "/api")
    report = httpx.get(server.url + "/scope/rooted?x=1").json()
    assert report["scope"]["root_path"] == "/api"
    assert report["scope"]["path"] == "/api/scope/rooted"
    assert as_bytes(report["scope"]["query_string"]) == b"x=1"


def test_root_path_lets_starlette_route_and_build_urls(server_factory):
    server = server_factory("pyapp.starlette_app:app", "--root-path", "/api")
    with httpx.Client(base_url=server.url) as client:
        item = client.get("/items/3")
        urls = client.get("/url-for").json()
    assert item.status_code == 200 and item.json()["item_id"] == 3
    assert urls["root_path"] == "/api"
    assert urls["url"] == f"{server.url}/api/items/7"
