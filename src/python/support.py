"""Cold-path helpers of rust-asgi-server: app import, interface detection, ASGI 2 adapter.

Everything a request touches lives in Rust; this module only runs at start-up.
"""

import asyncio
import importlib
import inspect
import selectors
import sys
import traceback


class AppLoadError(Exception):
    """An app that cannot be served; the message is shown to the user as it is."""


class TokioSelector(selectors.EpollSelector):
    """asyncio's epoll selector, waiting in the server's Tokio runtime (--runtime-mode single).

    The connections run in `select`; it returns when one of asyncio's own descriptors is
    ready, the timeout passed, or a request was queued (its app task is then started).
    """

    def __init__(self, driver):
        super().__init__()
        self._run = driver.run
        self._driver = driver
        driver.watch(self._selector.fileno())

    def select(self, timeout=None):
        ready = []
        key_of = self._fd_to_key.get
        for fd, events in self._run(timeout):
            key = key_of(fd)
            if key:
                ready.append((key, events & key.events))
        return ready

    def close(self):
        self._driver.unwatch()
        super().close()


def new_event_loop(kind, driver=None):
    if kind == "single":
        return asyncio.SelectorEventLoop(TokioSelector(driver))
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise AppLoadError("--loop uvloop was given, but uvloop is not installed.")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def load_app(import_string, factory, interface, app_dir):
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    if not isinstance(import_string, str):
        # An app object from Python code of this process (rust_asgi_server.run(app), a
        # library user's PythonApp::builder_for): nothing to import.
        return _prepare_app(import_string, factory, interface, repr(import_string))
    module_name, sep, attrs = import_string.partition(":")
    if not sep or not module_name or not attrs:
        raise AppLoadError(
            f'Cannot load the app "{import_string}": expected the form "module:attribute", '
            'for example "main:app".'
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or module_name != exc.name and not module_name.startswith(exc.name + "."):
            raise
        raise AppLoadError(
            f'Cannot import module "{module_name}": no such module on sys.path '
            "(use --app-dir to add the directory that contains it)."
        ) from None
    app = module
    for attr in attrs.split("."):
        try:
            app = getattr(app, attr)
        except AttributeError:
            raise AppLoadError(
                f'Attribute "{attrs}" not found in module "{module_name}".'
            ) from None
    return _prepare_app(app, factory, interface, import_string)


def _prepare_app(app, factory, interface, import_string):
    if factory:
        if not callable(app):
            raise AppLoadError(f'--factory was given, but "{import_string}" is not callable.')
        app = app()
    if not callable(app):
        raise AppLoadError(
            f'The app "{import_string}" is not callable: it is {type(app).__name__}, '
            "expected an ASGI application."
        )
    if interface == "auto":
        interface = "asgi3" if _looks_like_asgi3(app) else "asgi2"
    if interface == "asgi2":
        return _asgi2_adapter(app)
    return app


def _looks_like_asgi3(app):
    if inspect.isclass(app):
        return hasattr(app, "__await__")
    call = app if inspect.isroutine(app) else getattr(app, "__call__", None)
    if asyncio.iscoroutinefunction(call):
        return True
    try:
        params = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in params)


def _asgi2_adapter(app):
    async def asgi3(scope, receive, send):
        instance = app(scope)
        await instance(receive, send)

    return asgi3


def format_exception(exc):
    return "".join(traceback.format_exception(exc)).rstrip()
