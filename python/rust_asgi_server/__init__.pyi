"""Types of rust-asgi-server's Python API (see __init__.py)."""

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Literal, TypeAlias, TypedDict, Unpack

__all__ = ["ClientDisconnected", "Server", "run"]

_Scope: TypeAlias = MutableMapping[str, Any]
_Message: TypeAlias = MutableMapping[str, Any]
_Receive: TypeAlias = Callable[[], Awaitable[_Message]]
_Send: TypeAlias = Callable[[_Message], Awaitable[None]]
_ASGI3App: TypeAlias = Callable[[_Scope, _Receive, _Send], Awaitable[None]]
# An ASGI 3 app, an ASGI 2 app (detected as uvicorn does), or with factory=True its factory.
_App: TypeAlias = str | _ASGI3App | Callable[..., Any]
_Path: TypeAlias = str | os.PathLike[str]

class ClientDisconnected(OSError):
    """Raised by `send()` once the client has gone: the message was not sent."""

class _Options(TypedDict, total=False):
    """The options of `Server`: every flag of `rust-asgi-server --help` that applies to a
    server on the caller's loop, by the flag's name (`--timeout-keep-alive` is
    `timeout_keep_alive`). None, or leaving an option out, keeps the flag's default."""

    host: str | None
    port: int | None
    bind: str | None
    uds: _Path | None
    fd: int | None
    backlog: int | None
    app_dir: _Path | None
    factory: bool | None
    interface: Literal["auto", "asgi3", "asgi2"] | None
    lifespan: Literal["auto", "on", "off"] | None
    root_path: str | None
    log_level: str | None
    log_format: Literal["text", "json"] | None
    access_log: bool | None
    access_log_format: str | None
    ws_max_size: int | None
    ws_per_message_deflate: bool | None
    timeout_keep_alive: int | None
    timeout_header_read: int | None
    timeout_request_body: int | None
    timeout_graceful_shutdown: int | None
    proxy_headers: bool | None
    forwarded_allow_ips: str | None
    limit_concurrency: int | None
    limit_request_body: int | None
    limit_max_requests: int | None
    limit_max_requests_jitter: int | None
    health_path: str | None
    loop_block_warn: float | None
    metrics_bind: str | None
    otel_endpoint: str | None
    static_path_route: Iterable[str] | None
    static_path_mount: Iterable[_Path] | None
    server_header: bool | None
    date_header: bool | None
    headers: Iterable[str | tuple[str, str]] | None
    env_file: _Path | None
    http: Literal["auto", "1", "2", 1, 2, "h11", "httptools"] | None
    http3: bool | None
    ssl_certfile: _Path | None
    ssl_keyfile: _Path | None
    ssl_keyfile_password: str | None
    ssl_ca_certs: _Path | None
    ssl_cert_reqs: Literal[0, 1, 2, "none", "optional", "required"] | None

class _RunOptions(_Options, total=False):
    """The options of `run`: those of `Server`, worker processes, reload and the loop."""

    workers: int | None
    workers_max_rss: int | None
    workers_lifetime: int | None
    timeout_worker_startup: int | None
    loop: Literal["auto", "asyncio", "uvloop"] | None
    runtime_mode: Literal["single", "split"] | None
    reload: bool | None
    reload_dirs: Iterable[_Path] | None
    reload_includes: Iterable[str] | None
    reload_excludes: Iterable[str] | None

def run(app: _App, **options: Unpack[_RunOptions]) -> None:
    """Serves `app` (an import string or the app object) until SIGINT/SIGTERM, as the
    command line does; exits with its exit code on failure."""

class Server:
    """A server awaited on the running asyncio loop; the app runs on that loop."""

    def __init__(self, app: _App, **options: Unpack[_Options]) -> None: ...
    @property
    def started(self) -> asyncio.Future[list[tuple[str, int]]]:
        """Resolves to the TCP addresses `(host, port)` once the server listens and
        lifespan startup has completed."""
    async def serve(self) -> None:
        """Serves until `shutdown()` (or cancellation); RuntimeError if the server fails."""
    def shutdown(self) -> None:
        """Starts a graceful drain, as SIGTERM does the command line's server."""
