"""--loop: which asyncio loop runs the app, on the server's one Python thread."""

import httpx
import pytest

pytestmark = pytest.mark.rust_only


def loop_report(server):
    return httpx.get(f"{server.url}/loop", timeout=10).json()


def test_auto_uses_uvloop_when_installed(server_factory):
    report = loop_report(server_factory("pyapp.conformance:app"))
    assert report["loop"].startswith("uvloop"), report
    # The app runs on the loop thread, not on Python's main thread.
    assert report["in_main_thread"] is False


def test_uvloop_can_be_required(server_factory):
    assert loop_report(server_factory("pyapp.conformance:app", "--loop", "uvloop"))["loop"].startswith(
        "uvloop"
    )


def test_asyncio_can_be_chosen(server_factory):
    report = loop_report(server_factory("pyapp.conformance:app", "--loop", "asyncio"))
    assert report["loop"].startswith("asyncio"), report
