"""--loop: which asyncio loop runs the app, on the server's one Python thread; with
--runtime-mode single, asyncio's own, whose selector runs the sockets."""

import signal
import subprocess

import httpx
import pytest

from harness import SERVER_CMD, SINGLE_THREAD
from markers import wait_exit

pytestmark = pytest.mark.rust_only


def loop_report(server):
    return httpx.get(f"{server.url}/loop", timeout=10).json()


def test_auto_uses_uvloop_when_installed_and_asyncio_with_one_thread(server_factory):
    report = loop_report(server_factory("pyapp.conformance:app"))
    assert report["loop"].startswith("asyncio" if SINGLE_THREAD else "uvloop"), report
    # The app runs on the loop thread, not on Python's main thread.
    assert report["in_main_thread"] is False


def test_the_request_task_shows_the_app_coroutine_running(server_factory):
    # The task steps the app's coroutine through the server's wrapper, which passes on what
    # inspect (and anyio's cancel scopes) read of a coroutine.
    report = loop_report(server_factory("pyapp.conformance:app"))
    assert report["task_state"] == "CORO_RUNNING", report
    # The task names the app's own coroutine (pyapp.conformance's `app`), not a wrapper.
    assert "coro=<app() running at" in report["task_repr"], report


def test_each_request_runs_in_its_own_task_and_context(server_factory):
    # With one thread, a request's app starts inside the connection's read and takes its
    # first step there: still in its own task and its own copy of the context.
    server = server_factory("pyapp.conformance:app")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for request in ("first", "second", "third"):
            report = client.get("/loop", params={request: ""}).json()
            assert report["context_var_before"] is None, report
            assert report["context_var_after_await"] == f"{request}=", report
            assert report["same_task_after_await"] is True, report
            assert report["task_state"] == "CORO_RUNNING", report


def test_each_request_task_has_a_name_of_its_own(server_factory):
    server = server_factory("pyapp.conformance:app")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        names = [client.get("/loop").json()["task_name"] for _ in range(3)]
    assert len(set(names)) == 3, names
    assert all(name.startswith("request-") for name in names), names


def test_a_task_factory_the_app_sets_makes_the_request_tasks(server_factory):
    server = server_factory("pyapp.conformance:app_with_task_factory")
    report = loop_report(server)
    assert report["task_name"] == "from-the-app's-factory", report
    assert report["task_state"] == "CORO_RUNNING", report


def test_requests_a_task_factory_ends_at_once_do_not_hold_up_exit(server_factory):
    # An eager task factory runs the app before the server sees its task: such a request
    # must not stay counted as running, or shutdown would wait for it, then warn that it
    # cancels it and that it did not end.
    server = server_factory(
        "pyapp.conformance:app_with_eager_task_factory", "--timeout-graceful-shutdown", "20"
    )
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert [client.get("/ok").text for _ in range(3)] == ["ok"] * 3
    server.proc.send_signal(signal.SIGTERM)
    elapsed = wait_exit(server, 25)
    assert elapsed is not None and elapsed < 5, f"exit took {elapsed} s:\n{server.logs()}"
    assert server.proc.returncode == 0, server.logs()
    assert "request task" not in server.logs(), server.logs()


def test_uvloop_can_be_required_with_split_threads(server_factory):
    server = server_factory("pyapp.conformance:app", "--loop", "uvloop", "--runtime-mode", "split")
    assert loop_report(server)["loop"].startswith("uvloop")


def test_uvloop_with_one_thread_is_refused_at_start_up():
    result = subprocess.run(
        [*SERVER_CMD, "--app", "pyapp.conformance:app", "--port", "0", "--runtime-mode", "single",
         "--loop", "uvloop"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert "uvloop cannot share its thread" in result.stderr, result.stderr


def test_asyncio_can_be_chosen(server_factory):
    report = loop_report(server_factory("pyapp.conformance:app", "--loop", "asyncio"))
    assert report["loop"].startswith("asyncio"), report
