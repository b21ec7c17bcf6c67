"""``--static-path-route`` / ``--static-path-mount`` (issue #15): files served in Rust by
tower-http's ``ServeDir``, never by the app.

App: ``pyapp/operations.py``; its ``/seen`` lists every path it was asked for.
"""

import gzip
import os

import httpx
import pytest

from harness import raw_request, run_until_exit

pytestmark = pytest.mark.rust_only

APP = "pyapp.operations:app"
CSS = b"body { color: teal; }\n" * 50


@pytest.fixture
def files(tmp_path):
    """A served directory (with a precompressed sibling and a symlink out of it), and a
    secret beside it."""
    served = tmp_path / "public"
    (served / "css").mkdir(parents=True)
    (served / "css" / "site.css").write_bytes(CSS)
    (served / "css" / "site.css.gz").write_bytes(gzip.compress(CSS))
    (served / "index.html").write_text("<h1>home</h1>")
    (tmp_path / "secret").write_text("do not serve")
    os.symlink(tmp_path / "secret", served / "escape.txt")
    os.symlink(served / "index.html", served / "alias.html")
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("other dir")
    return served, other


@pytest.fixture
def server(server_factory, files):
    served, other = files
    return server_factory(
        APP,
        "--static-path-route", "/static", "--static-path-mount", str(served),
        "--static-path-route", "/more/", "--static-path-mount", str(other),
    )


def seen_by_app(server) -> list[str]:
    return httpx.get(server.url + "/seen", timeout=5).json()


def test_files_are_served_with_their_type_and_validators_and_the_app_never_sees_them(server):
    response = httpx.get(server.url + "/static/css/site.css", timeout=5)
    assert response.status_code == 200
    assert response.content == CSS
    assert response.headers["content-type"] == "text/css"
    assert response.headers["last-modified"]
    assert response.headers["etag"]
    assert "x-app" not in response.headers
    assert httpx.get(server.url + "/more/a.txt", timeout=5).text == "other dir"
    assert httpx.get(server.url + "/static/", timeout=5).text == "<h1>home</h1>"
    # A symlink that stays inside the directory is served.
    assert httpx.get(server.url + "/static/alias.html", timeout=5).text == "<h1>home</h1>"
    missing = httpx.get(server.url + "/static/nope.css", timeout=5)
    assert missing.status_code == 404 and "x-app" not in missing.headers
    assert httpx.post(server.url + "/static/css/site.css", timeout=5).status_code == 405
    assert httpx.get(server.url + "/elsewhere", timeout=5).headers["x-app"] == "operations"
    assert seen_by_app(server) == ["/elsewhere", "/seen"]


def test_conditional_requests_get_304(server):
    first = httpx.get(server.url + "/static/css/site.css", timeout=5)
    by_date = httpx.get(
        server.url + "/static/css/site.css",
        headers={"if-modified-since": first.headers["last-modified"]}, timeout=5,
    )
    assert (by_date.status_code, by_date.content) == (304, b"")
    by_tag = httpx.get(
        server.url + "/static/css/site.css",
        headers={"if-none-match": first.headers["etag"]}, timeout=5,
    )
    assert (by_tag.status_code, by_tag.content) == (304, b"")
    stale = httpx.get(
        server.url + "/static/css/site.css", headers={"if-none-match": '"other"'}, timeout=5
    )
    assert stale.status_code == 200


def test_a_range_gets_206_with_its_content_range(server):
    # identity: a range of the gzip sibling would be a range of the compressed bytes.
    response = httpx.get(server.url + "/static/css/site.css",
                         headers={"range": "bytes=5-9", "accept-encoding": "identity"}, timeout=5)
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 5-9/{len(CSS)}"
    assert response.content == CSS[5:10]


def test_a_precompressed_sibling_is_sent_to_clients_that_accept_it(server):
    with httpx.Client(timeout=5) as client:
        raw = client.get(server.url + "/static/css/site.css", headers={"accept-encoding": "gzip"})
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.content == CSS  # httpx decodes it
        assert int(raw.headers["content-length"]) == len(gzip.compress(CSS))
        plain = client.get(server.url + "/static/css/site.css", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == CSS


@pytest.mark.parametrize(
    "target", ["/static/../secret", "/static/%2e%2e/secret", "/static/css/..%2f..%2fsecret",
               "/static/escape.txt"],
)
def test_paths_out_of_the_directory_are_refused(server, target):
    response = raw_request(server.port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert response.status in (400, 403, 404), response
    assert b"do not serve" not in response.body
    assert seen_by_app(server) == ["/seen"]


def test_routes_and_mounts_must_pair_up(files):
    served, _ = files
    for args in (
        ["--static-path-route", "/static"],
        ["--static-path-route", "/a", "--static-path-mount", str(served), "--static-path-mount", str(served)],
        ["--static-path-route", "/static", "--static-path-mount", str(served / "missing")],
        ["--static-path-route", "/", "--static-path-mount", str(served)],
    ):
        result = run_until_exit(APP, "--bind", "127.0.0.1:0", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "static-path" in result.stderr or "'/'" in result.stderr, result.stderr
