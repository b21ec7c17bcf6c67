"""rust-asgi-server from Python: the same engine and options as the `rust-asgi-server` binary.

- `run(app, **options)` serves until SIGINT/SIGTERM, as the command line does; `app` is an
  import string ("main:app") or the app object.
- `Server(app, **options)` is awaited in a program that already runs an asyncio loop:
  `await server.serve()`, `await server.started`, `server.shutdown()`. The app then runs on
  that loop, and no signal handler is installed.

Every keyword option is a flag of `rust-asgi-server --help` (`timeout_keep_alive=10` is
`--timeout-keep-alive 10`), with the same default; the command line is the one definition.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from rust_asgi_server import _engine
from rust_asgi_server._engine import ClientDisconnected

__all__ = ["ClientDisconnected", "Server", "run"]

# Every flag of the command line a program may set, by its keyword name (test_wheel.py
# checks this against `--help`).
_OPTIONS = frozenset(
    """
    host port bind uds fd backlog workers app_dir factory interface loop runtime_mode lifespan root_path
    log_level log_format access_log ws_max_size ws_per_message_deflate timeout_keep_alive timeout_header_read
    timeout_request_body timeout_graceful_shutdown proxy_headers forwarded_allow_ips
    limit_concurrency limit_request_body limit_max_requests limit_max_requests_jitter
    server_header date_header headers env_file http http3 ssl_certfile ssl_keyfile
    ssl_keyfile_password ssl_ca_certs ssl_cert_reqs reload reload_dirs reload_includes
    reload_excludes health_path loop_block_warn metrics_bind otel_endpoint access_log_format
    static_path_route static_path_mount workers_max_rss workers_lifetime timeout_worker_startup
    """.split()
)
# Switches with a `--no-…` form: False turns them off. Other switches are off unless True.
_NEGATABLE = frozenset({"access_log", "proxy_headers", "server_header", "date_header"})
# Flags taking `true` or `false`, as uvicorn's of the same name do.
_BOOLEAN_VALUED = frozenset({"ws_per_message_deflate"})
# Repeatable flags, given a list, and their singular flag names.
_REPEATED = {
    "headers": "--header",
    "reload_dirs": "--reload-dir",
    "reload_includes": "--reload-include",
    "reload_excludes": "--reload-exclude",
    "static_path_route": "--static-path-route",
    "static_path_mount": "--static-path-mount",
}


def _argv(app: Any, options: dict[str, Any]) -> list[str]:
    """The command line of `app` and `options`, program name first."""
    argv = ["rust-asgi-server"]
    if isinstance(app, str):
        argv.append(app)
    for name, value in options.items():
        if name not in _OPTIONS:
            raise TypeError(f"unexpected keyword argument {name!r}")
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if name in _BOOLEAN_VALUED:
            argv += [flag, "true" if value else "false"]
            continue
        if isinstance(value, bool):
            if value:
                argv.append(flag)
            elif name in _NEGATABLE:
                argv.append("--no-" + name.replace("_", "-"))
            continue
        if name in _REPEATED:
            for item in value:
                if name == "headers" and not isinstance(item, str):
                    item = f"{item[0]}:{item[1]}"
                argv += [_REPEATED[name], os.fspath(item)]
            continue
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        argv += [flag, str(value)]
    return argv


def _app_object(app: Any) -> Any:
    return None if isinstance(app, str) else app


def run(app: Any, **options: Any) -> None:
    """Serves `app` until SIGINT/SIGTERM, exactly as `rust-asgi-server` would with these
    options as flags; exits with the command line's exit code on failure.

    With `workers` > 1, `reload`, `workers_max_rss` or `workers_lifetime`, workers are
    started as `python -m rust_asgi_server`, so `app` must then be an import string.
    """
    code = _engine.main(_argv(app, options), _app_object(app))
    if code:
        sys.exit(code)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class Server:
    """A server awaited on the running asyncio loop: `await server.serve()`.

    The app (and its lifespan) runs on the caller's loop, next to the caller's own tasks;
    the sockets and HTTP are handled by the server's Tokio threads. No signal handler is
    installed: call `shutdown()` (or cancel `serve()`) to drain and stop.
    """

    def __init__(self, app: Any, **options: Any) -> None:
        self._argv = _argv(app, options)
        self._app = _app_object(app)
        self._engine: Any = None
        self._started: asyncio.Future[list[tuple[str, int]]] | None = None
        self._stop_requested = False

    @property
    def started(self) -> asyncio.Future[list[tuple[str, int]]]:
        """Resolves once the server listens and lifespan startup has completed, to the TCP
        addresses it listens on as `(host, port)`; fails with the server's error if it
        could not start."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
        return self._started

    async def serve(self) -> None:
        """Serves until `shutdown()`; raises RuntimeError if the server fails (the app does
        not import, lifespan startup fails, the address is in use)."""
        loop = asyncio.get_running_loop()
        started = self.started
        done: asyncio.Future[str | None] = loop.create_future()
        self._engine = _engine.EmbeddedServer()
        try:
            self._engine.start(self._argv, self._app, started, done, _resolve)
        except BaseException as exc:
            self._fail_started(exc)
            raise
        if self._stop_requested:
            self._engine.shutdown()
        try:
            error = await asyncio.shield(done)
        except asyncio.CancelledError:
            self._engine.shutdown()
            await done
            raise
        if error is not None:
            failure = RuntimeError(error)
            self._fail_started(failure)
            raise failure

    def shutdown(self) -> None:
        """Starts a graceful shutdown, as SIGTERM does the command line's server."""
        self._stop_requested = True
        if self._engine is not None:
            self._engine.shutdown()

    def _fail_started(self, exc: BaseException) -> None:
        started = self._started
        if started is not None and not started.done():
            started.set_exception(exc)
            # Retrieved here: a program that never awaits `started` gets no warning.
            started.exception()
