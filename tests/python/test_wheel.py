"""The wheel (issue #13): `pip install` gives the binary's command line, a Python API and the
same engine.

Runs in the wheel stage of scripts/test.sh: pytest itself runs from a fresh virtualenv into
which the built wheel was installed, and RUST_ASGI_SERVER_CMD names the wheel's
`rust-asgi-server` script, so that the black-box files run in that stage test the installed
command too. These tests compare the wheel with the binary, which the stage before
built (target/PROFILE/rust-asgi-server).
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from harness import (
    IS_WHEEL,
    LISTENING_RE,
    READY_TIMEOUT,
    REPO_ROOT,
    SERVER_BIN,
    SERVER_CMD,
    ServerProcess,
    ServerStartError,
    _StreamDrain,
    server_env,
)
from test_serving import parent_of, pids_seen, wait_until

pytestmark = pytest.mark.rust_only

PYTHON_M = [sys.executable, "-m", "rust_asgi_server"]
CONSOLE_SCRIPT = str(Path(sys.executable).with_name("rust-asgi-server"))
EXAMPLES = REPO_ROOT / "examples" / "python"


def test_this_stage_tests_the_installed_wheel():
    import rust_asgi_server

    assert IS_WHEEL and SERVER_CMD == [CONSOLE_SCRIPT], SERVER_CMD
    package = Path(rust_asgi_server.__file__).parent
    # The installed copy, not python/ of the checkout.
    assert Path(sys.prefix) in package.parents, package
    assert Path(CONSOLE_SCRIPT).exists()


def run_cli(command: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, env=server_env(),
        cwd=REPO_ROOT,
    )


@pytest.mark.parametrize("command", [PYTHON_M, [CONSOLE_SCRIPT]], ids=["python -m", "script"])
def test_help_version_and_usage_errors_match_the_binary(command):
    for args in (["--help"], ["--version"], ["--no-such-flag"], ["--workers", "0", "a:b"], []):
        ours = run_cli(command, *args)
        binary = run_cli([str(SERVER_BIN)], *args)
        assert (ours.returncode, ours.stdout, ours.stderr) == (
            binary.returncode, binary.stdout, binary.stderr,
        ), args
    assert "Usage: rust-asgi-server [OPTIONS] [APP]" in run_cli(command, "--help").stdout


def test_an_app_that_does_not_import_fails_with_the_binarys_log_and_exit_code():
    ours = run_cli([CONSOLE_SCRIPT], "pyapp.no_such_module:app")
    binary = run_cli([str(SERVER_BIN)], "pyapp.no_such_module:app")
    assert ours.returncode == binary.returncode == 3
    strip = re.compile(r"^\S+Z ", re.MULTILINE)  # timestamps
    assert strip.sub("", ours.stderr) == strip.sub("", binary.stderr)
    assert 'Cannot import module "pyapp.no_such_module"' in ours.stderr


def dynamic_section(path: Path) -> str:
    return subprocess.run(
        ["readelf", "-d", str(path)], capture_output=True, text=True, check=True
    ).stdout


def test_the_extension_module_links_no_libpython_and_has_no_rpath():
    import rust_asgi_server._engine as engine

    extension = dynamic_section(Path(engine.__file__))
    assert "libpython" not in extension
    assert "RPATH" not in extension and "RUNPATH" not in extension
    # The embedding binary still links it, found through its rpath.
    binary = dynamic_section(SERVER_BIN)
    assert re.search(r"NEEDED.*libpython3", binary), binary


def start_python(*args: str, env: dict | None = None) -> ServerProcess:
    """Starts `python *args` and waits for its `listening on` line."""
    command = [sys.executable, *args]
    proc = subprocess.Popen(
        command, cwd=REPO_ROOT, env=server_env(env), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    server = ServerProcess(proc, command, _StreamDrain(proc.stderr), _StreamDrain(proc.stdout))
    match = server.log.wait_for(LISTENING_RE, READY_TIMEOUT, alive=server.alive)
    if match is None:
        server.stop()
        raise ServerStartError(f"{command} did not start:\n{server.logs()}")
    server.port = int(match.group(1))
    return server


def test_run_with_an_import_string_serves_and_drains_on_sigterm():
    server = start_python(
        "-c",
        "import rust_asgi_server; "
        "rust_asgi_server.run('pyapp.conformance:app', bind='127.0.0.1:0', access_log=False)",
    )
    try:
        response = httpx.get(server.url + "/ok", timeout=10)
        assert (response.status_code, response.text) == (200, "ok")
        assert response.headers["server"] == "rust-asgi-server"
    finally:
        assert server.stop(timeout=10) == 0, server.logs()
    assert "server stopped" in server.logs()
    assert '"GET /ok' not in server.logs()  # access_log=False became --no-access-log


@pytest.mark.parametrize("deflate", [True, False])
def test_ws_per_message_deflate_is_a_boolean_keyword(deflate):
    """uvicorn's `--ws-per-message-deflate true|false` takes a value: False must reach the
    server as `false`, not be dropped as other off switches are."""
    from websockets.sync.client import connect

    server = start_python(
        "-c",
        "import rust_asgi_server; "
        f"rust_asgi_server.run('pyapp.ws_apps:echo', bind='127.0.0.1:0', ws_per_message_deflate={deflate})",
    )
    try:
        with connect(f"ws://127.0.0.1:{server.port}/", open_timeout=10) as ws:
            agreed = ws.response.headers.get("Sec-WebSocket-Extensions")
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
        assert (agreed is not None) == deflate, agreed
    finally:
        assert server.stop(timeout=10) == 0, server.logs()


def test_run_with_an_app_object_serves_it():
    server = start_python(str(EXAMPLES / "run_app_object.py"), "127.0.0.1:0")
    try:
        response = httpx.get(server.url + "/anything", timeout=10)
        assert (response.status_code, response.text) == (200, "served by an app object")
    finally:
        assert server.stop(timeout=10) == 0, server.logs()


def test_an_app_object_cannot_go_to_worker_processes():
    result = subprocess.run(
        [sys.executable, "-c",
         "import rust_asgi_server\n"
         "async def app(scope, receive, send): pass\n"
         "rust_asgi_server.run(app, workers=2)"],
        capture_output=True, text=True, timeout=30, env=server_env(),
    )
    assert result.returncode == 2, result.stderr
    assert "give it as an import string" in result.stderr


def test_unknown_options_are_a_type_error():
    import rust_asgi_server

    with pytest.raises(TypeError, match="no_such_option"):
        rust_asgi_server.run("a:b", no_such_option=1)


def test_an_asyncio_program_serves_next_to_its_own_tasks_and_shuts_down():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "asyncio_server.py")],
        capture_output=True, text=True, timeout=60, env=server_env(), cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    first, second = seen["answers"]
    assert (first["path"], second["path"]) == ("/first", "/second")
    # The program's own task kept running on the loop while the server served.
    assert second["ticks"] > first["ticks"] > 0
    assert seen["lifespan"] == ["startup", "shutdown"]
    assert seen["app_on_this_thread"] is True
    # No signal handler was installed behind the program's back.
    assert seen["signal_handlers_unchanged"] is True and seen["sigterm_is_default"] is True
    assert "server stopped" in result.stderr


def test_a_server_that_cannot_start_fails_serve_and_started():
    program = (
        "import asyncio, rust_asgi_server\n"
        "async def main():\n"
        "    server = rust_asgi_server.Server('pyapp.no_such_module:app', bind='127.0.0.1:0')\n"
        "    task = asyncio.create_task(server.serve())\n"
        "    for awaitable in (server.started, task):\n"
        "        try:\n"
        "            await awaitable\n"
        "        except RuntimeError as exc:\n"
        "            print('failed:', str(exc).splitlines()[0])\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30,
        env=server_env(), cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('failed: Cannot import module "pyapp.no_such_module"') == 2, result


def test_workers_from_python_m_serve_and_a_killed_worker_is_replaced():
    server = start_python(
        "-m", "rust_asgi_server", "pyapp.conformance:app", "--workers", "2",
        "--bind", "127.0.0.1:0", "--no-access-log",
    )
    try:
        workers: set[int] = set()
        deadline = time.monotonic() + 20
        while len(workers) < 2 and time.monotonic() < deadline:
            workers |= pids_seen(server.url)
        assert len(workers) == 2, workers
        for pid in workers:
            assert parent_of(pid) == server.pid
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            # Started as `python -m rust_asgi_server`, with this venv's interpreter.
            assert [a.decode() for a in argv[:3]] == PYTHON_M, argv
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        assert server.wait_for_log(f"worker process {victim} died", timeout=10), server.logs()
        wait_until(lambda: pids_seen(server.url) - workers or None, 20, "no replacement answered")
    finally:
        assert server.stop(timeout=15) == 0, server.logs()
    assert "all workers have exited" in server.logs()


def test_every_flag_is_a_keyword_of_run_and_of_the_stubs():
    import rust_asgi_server

    help_text = run_cli([CONSOLE_SCRIPT], "--help").stdout
    flags = set(re.findall(r"^\s+(?:-\w, )?--([\w-]+)", help_text, re.MULTILINE))
    flags -= {"help", "version", "app"}
    flags -= {flag for flag in flags if flag.startswith("no-")}
    plural = {"header": "headers", "reload-dir": "reload_dirs",
              "reload-include": "reload_includes", "reload-exclude": "reload_excludes"}
    keywords = {plural.get(flag, flag.replace("-", "_")) for flag in flags}
    assert rust_asgi_server._OPTIONS == keywords

    stubs = ast.parse((Path(rust_asgi_server.__file__).parent / "__init__.pyi").read_text())
    typed = {
        field.target.id
        for node in stubs.body
        if isinstance(node, ast.ClassDef) and node.name in ("_Options", "_RunOptions")
        for field in node.body
        if isinstance(field, ast.AnnAssign)
    }
    assert typed == keywords


def test_the_maturin_router_example_serves_its_rust_route_and_the_python_app():
    # Built and installed into this virtualenv by scripts/test_wheel.sh.
    server = start_python(str(REPO_ROOT / "examples" / "maturin_router" / "app.py"), "127.0.0.1:0")
    try:
        rust = httpx.get(server.url + "/rust", timeout=10)
        python = httpx.get(server.url + "/items/1?q=x", timeout=10)
    finally:
        assert server.stop(timeout=10) == 0, server.logs()
    assert (rust.status_code, rust.text) == (200, "hello from Rust")
    assert (python.status_code, python.text) == (200, "hello from Python: /items/1")
