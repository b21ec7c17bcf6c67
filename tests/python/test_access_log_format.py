"""``--access-log-format`` (issue #15): gunicorn's syntax and atoms. The default line is
covered by the logging tests, which run without the flag.

App: ``pyapp/operations.py`` (every response carries ``x-app: operations``).
"""

import datetime
import re

import httpx
import pytest

from harness import raw_request, run_until_exit

pytestmark = pytest.mark.rust_only

APP = "pyapp.operations:app"

EVERY_ATOM = (
    '%(h)s|%(l)s|%(u)s|%(t)s|%(r)s|%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(b)s|%(B)s|%(f)s|%(a)s|'
    "%(T)s|%(M)s|%(D)s|%(L)s|%(p)s|%({X-Request-Tag}i)s|%({x-app}o)s|%({x-none}o)s|100%%"
)


def test_a_custom_format_renders_every_atom(server_factory):
    server = server_factory(APP, "--access-log-format", "ACCESS " + EVERY_ATOM)
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    response = httpx.get(
        server.url + "/sleep?seconds=0.2",
        headers={"referer": "https://example.com/from", "user-agent": "atom-test/1",
                 "x-request-tag": "tag-42"},
        timeout=5,
    )
    assert response.status_code == 200
    line = server.wait_for_log(re.compile(r"ACCESS (.*)"), timeout=5)
    assert line, server.logs()
    fields = line.group(1).split("|")
    (h, l, u, t, r, m, path, q, protocol, s, b, big_b, f, a,
     seconds, millis, micros, decimal, p, tag, app_header, missing, percent) = fields
    assert (h, l, u) == ("127.0.0.1", "-", "-")
    arrived = datetime.datetime.strptime(t, "[%d/%b/%Y:%H:%M:%S %z]")
    assert before - datetime.timedelta(seconds=1) <= arrived <= before + datetime.timedelta(seconds=2)
    assert r == "GET /sleep?seconds=0.2 HTTP/1.1"
    assert (m, path, q, protocol) == ("GET", "/sleep", "seconds=0.2", "HTTP/1.1")
    assert (s, b, big_b) == ("200", "2", "2")
    assert (f, a) == ("https://example.com/from", "atom-test/1")
    # The app took 0.2 s: every unit of the request time agrees with it.
    assert seconds == "0"
    assert 200 <= int(millis) < 2000
    assert 200_000 <= int(micros) < 2_000_000
    assert int(micros) // 1000 == int(millis)
    assert decimal == f"0.{int(micros):06d}"
    assert p == f"<{server.pid}>"
    assert (tag, app_header, missing, percent) == ("tag-42", "operations", "-", "100%")


def test_absent_headers_and_an_empty_body_render_as_dashes(server_factory):
    server = server_factory(APP, "--access-log-format", "ACCESS %(f)s %(a)s %(b)s %(B)s %(q)s.")
    response = raw_request(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", head_request=True)
    assert response.status == 200
    line = server.wait_for_log(re.compile(r"ACCESS .*"), timeout=5)
    assert line and line.group(0) == "ACCESS - - - 0 .", server.logs()


def test_an_unknown_atom_stops_start_up_with_a_usage_error():
    result = run_until_exit(APP, "--bind", "127.0.0.1:0", "--access-log-format", "%(h)s %(x)s")
    assert result.returncode == 2, result.stderr
    assert "unknown atom %(x)s" in result.stderr
    assert "listening on" not in result.stderr


def test_a_stray_percent_stops_start_up_naming_where_it_is():
    result = run_until_exit(APP, "--bind", "127.0.0.1:0", "--access-log-format", "50% %(s)s")
    assert result.returncode == 2, result.stderr
    assert "byte 2" in result.stderr


def test_the_default_line_is_unchanged_without_the_flag(server_factory):
    server = server_factory(APP)
    httpx.get(server.url + "/x?y=1", timeout=5)
    line = server.wait_for_log(re.compile(r'127\.0\.0\.1:\d+ "GET /x\?y=1 HTTP/1\.1" 200 2B \d+\.\d\dms$', re.M))
    assert line, server.logs()
