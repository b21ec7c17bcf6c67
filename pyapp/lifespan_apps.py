"""Raw ASGI 3 apps for the lifespan and graceful-shutdown tests (stdlib only).

What an app observed is written as marker files, because the interesting moments (startup,
shutdown, a disconnect during shutdown) happen when no HTTP request can ask about them. When
the environment variable ``LIFESPAN_MARKERS`` names a directory, ``mark(name, ...)`` writes
``<dir>/<name>`` as JSON ``{"time": time.time(), "pid": ..., ...}`` (atomically: written
aside, then renamed), and ``append(name, line)`` adds a line to ``<dir>/<name>``. Without the
variable nothing is written, so the apps can also be served by hand.

``app`` — a lifespan-aware app with slow startup (``LIFESPAN_STARTUP_DELAY`` seconds,
default 1.0). Startup marks ``startup-begin``, sleeps, fills ``scope["state"]`` (``token``,
``started_at``, and a list ``shared`` that every request sees through the shallow copy), then
marks ``startup``. Shutdown marks ``shutdown`` with the number of requests still in flight and
the keys of the requests that finished. Routes:

- ``/ok``                     200 ``ok``.
- ``/state``                  JSON: the request's ``scope["state"]`` and whether startup was
                              complete when the request reached the app.
- ``/state-write?value=V``    sets ``scope["state"]["request_only"] = V`` and appends V to
                              ``state["shared"]``; answers like ``/state``.
- ``/sleep?s=S&key=K``        marks ``started-K``, sleeps S seconds, answers ``slept S`` and
                              marks ``done-K``.
- ``/hang?key=K``             marks ``started-K``, then waits on ``receive()`` without ever
                              answering; on ``http.disconnect`` marks ``disconnect-K``,
                              prints ``app saw http.disconnect for K`` on stderr and returns;
                              if cancelled instead, marks ``cancelled-K``.
- ``/stubborn?key=K``         marks ``started-K`` and sleeps for a minute without reading
                              (ignores a disconnect); marks ``cancelled-K`` if cancelled.
- ``/stream?id=N&pre=P&s=S``  appends N to ``seen``, sleeps P seconds (default 0), sends the
                              response head and half the body, sleeps S seconds (default
                              0.2), sends the other half. The body is
                              ``N`` repeated, with a content-length, so a client can tell a
                              response cut in the middle from a complete one.
- websocket ``/state``        accepts and sends the scope's ``state`` as JSON text, closes.
- websocket ``/echo?key=K``   accepts and echoes every message until ``websocket.disconnect``,
                              then marks ``ws-disconnect-K`` with its ``code``.

The other apps each show one lifespan behaviour (their HTTP side answers ``served``):

- ``startup_failed_app``      sends ``lifespan.startup.failed`` with a message.
- ``startup_raises_app``      receives ``lifespan.startup``, then raises ``RuntimeError``.
- ``lifespan_unsupported_app`` raises on the lifespan scope (after 0.5 s) without calling
                              ``receive()`` (an app written without lifespan support).
- ``recorder_app``            supports lifespan and records every scope type it is called
                              with; ``/seen`` returns them, and a lifespan scope marks
                              ``lifespan-scope``.
"""

import asyncio
import json
import os
import sys
import time
from urllib.parse import parse_qs

MARKERS = os.environ.get("LIFESPAN_MARKERS")
STARTUP_DELAY = float(os.environ.get("LIFESPAN_STARTUP_DELAY", "1.0"))

STARTUP_FAILED_MESSAGE = "database unreachable: db.internal:5432 refused the connection"
STARTUP_RAISES_MESSAGE = "startup exploded: SECRET_KEY is not set"
UNSUPPORTED_MESSAGE = "this app only speaks http, not"


def mark(name, **data):
    if not MARKERS:
        return
    record = {"time": time.time(), "pid": os.getpid(), **data}
    path = os.path.join(MARKERS, name)
    aside = path + ".tmp"
    with open(aside, "w") as fh:
        json.dump(record, fh)
    os.replace(aside, path)


def append(name, line):
    if not MARKERS:
        return
    with open(os.path.join(MARKERS, name), "a") as fh:
        fh.write(f"{line}\n")


def _query(scope):
    return {key: values[-1] for key, values in parse_qs(scope["query_string"].decode("latin-1")).items()}


async def _respond(send, status, body, content_type=b"text/plain; charset=utf-8"):
    if isinstance(body, str):
        body = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send, data):
    await _respond(send, 200, json.dumps(data), b"application/json")


async def _read_body(receive):
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


# --------------------------------------------------------------------------------------
# app: slow startup, state, slow and hanging requests


_status = {"startup_complete": False, "in_flight": 0, "finished": []}


def _plain_state(state):
    return {key: value for key, value in state.items() if isinstance(value, (str, int, float, list, bool))}


async def _lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            mark("startup-begin")
            await asyncio.sleep(STARTUP_DELAY)
            state = scope["state"]
            state["token"] = "from-startup"
            state["started_at"] = time.time()
            state["shared"] = []
            _status["startup_complete"] = True
            mark("startup", started_at=state["started_at"])
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            mark("shutdown", in_flight=_status["in_flight"], finished=list(_status["finished"]))
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(scope, receive, send):
    path = scope["path"]
    query = _query(scope)
    key = query.get("key", "")
    if path == "/ok":
        await _read_body(receive)
        await _respond(send, 200, "ok")
    elif path in ("/state", "/state-write"):
        arrived = {"startup_complete": _status["startup_complete"], "now": time.time()}
        await _read_body(receive)
        state = scope.get("state")
        if state is None:
            await _respond_json(send, {"state": None, **arrived})
            return
        if path == "/state-write":
            value = query.get("value", "")
            state["request_only"] = value
            state["shared"].append(value)
        await _respond_json(send, {"state": _plain_state(state), **arrived})
    elif path == "/sleep":
        mark(f"started-{key}")
        await asyncio.sleep(float(query.get("s", "2")))
        await _respond(send, 200, f"slept {query.get('s', '2')}")
        mark(f"done-{key}")
    elif path == "/hang":
        mark(f"started-{key}")
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    mark(f"disconnect-{key}")
                    print(f"app saw http.disconnect for {key}", file=sys.stderr, flush=True)
                    return
        except asyncio.CancelledError:
            mark(f"cancelled-{key}")
            raise
    elif path == "/stubborn":
        mark(f"started-{key}")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            mark(f"cancelled-{key}")
            raise
        await _respond(send, 200, "too late")
    elif path == "/stream":
        ident = query.get("id", "0")
        append("seen", ident)
        await _read_body(receive)
        await asyncio.sleep(float(query.get("pre", "0")))
        half = (ident + ".") * 512
        body = half.encode() * 2
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": half.encode(), "more_body": True})
        await asyncio.sleep(float(query.get("s", "0.2")))
        await send({"type": "http.response.body", "body": half.encode()})
    else:
        await _respond(send, 404, "not found")


async def _websocket(scope, receive, send):
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    if scope["path"] == "/echo":
        await _echo_until_disconnect(scope, receive, send)
        return
    state = scope.get("state")
    text = json.dumps({"state": None if state is None else _plain_state(state)})
    await send({"type": "websocket.send", "text": text})
    await send({"type": "websocket.close", "code": 1000})


async def _echo_until_disconnect(scope, receive, send):
    key = _query(scope).get("key")
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            mark(f"ws-disconnect-{key}", code=message.get("code"))
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    _status["in_flight"] += 1
    try:
        await _http(scope, receive, send)
        key = _query(scope).get("key")
        if key:
            _status["finished"].append(key)
    finally:
        _status["in_flight"] -= 1


# --------------------------------------------------------------------------------------
# one lifespan behaviour each


async def _served(scope, receive, send):
    mark("served")
    await _read_body(receive)
    await _respond(send, 200, "served")


async def startup_failed_app(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        mark("startup-begin")
        await asyncio.sleep(0.5)
        await send({"type": "lifespan.startup.failed", "message": STARTUP_FAILED_MESSAGE})
        return
    await _served(scope, receive, send)


async def startup_raises_app(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        mark("startup-begin")
        await asyncio.sleep(0.5)
        raise RuntimeError(STARTUP_RAISES_MESSAGE)
    await _served(scope, receive, send)


async def lifespan_unsupported_app(scope, receive, send):
    if scope["type"] != "http":
        mark(f"{scope['type']}-scope")
        await asyncio.sleep(0.5)  # long enough for a test to see that nothing listens meanwhile
        raise ValueError(f"{UNSUPPORTED_MESSAGE} {scope['type']!r}")
    await _served(scope, receive, send)


_seen_types = []


async def recorder_app(scope, receive, send):
    _seen_types.append(scope["type"])
    if scope["type"] == "lifespan":
        mark("lifespan-scope")
        while True:
            message = await receive()
            mark(message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await _read_body(receive)
    if scope["path"] == "/seen":
        await _respond_json(send, {"scope_types": _seen_types})
    else:
        await _respond(send, 200, "served")
