"""The shapes an ASGI app can take, for the interface-detection tests (stdlib only).

Each app answers every HTTP request with JSON naming its own shape, so a test sees which one
the server called and how.

- ``asgi3_function``:  ``async def app(scope, receive, send)`` (ASGI 3)
- ``asgi3_instance``:  an object whose ``__call__`` is ``async def (scope, receive, send)``
- ``Asgi2App``:        an ASGI 2 double-callable class: ``Asgi2App(scope)`` then ``await instance(receive, send)``
- ``plain_function``:  ``def app(scope, receive, send)`` returning a coroutine (ASGI 3 without ``async def``)
- ``create_app``:      a factory for ``--factory``; the app reports how often the factory ran
- ``namespace.app``:   an ASGI 3 app behind a dotted attribute path
"""

import json
import types

from pyapp.plain_lifespan import serve_lifespan


async def _answer(scope, receive, send, shape, **extra):
    if scope["type"] == "lifespan":
        return await serve_lifespan(receive, send)
    if scope["type"] != "http":
        return None
    body = json.dumps({"interface": shape, "path": scope["path"], **extra}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def asgi3_function(scope, receive, send):
    await _answer(scope, receive, send, "asgi3-function")


class _Asgi3Callable:
    async def __call__(self, scope, receive, send):
        await _answer(scope, receive, send, "asgi3-instance")


asgi3_instance = _Asgi3Callable()


class Asgi2App:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await _answer(self.scope, receive, send, "asgi2-class")


def plain_function(scope, receive, send):
    return _answer(scope, receive, send, "plain-function")


factory_calls = 0


def create_app():
    global factory_calls
    factory_calls += 1

    async def app(scope, receive, send):
        await _answer(scope, receive, send, "factory", factory_calls=factory_calls)

    return app


async def _dotted(scope, receive, send):
    await _answer(scope, receive, send, "dotted-attribute")


namespace = types.SimpleNamespace(app=_dotted)
