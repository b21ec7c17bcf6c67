"""Raw ASGI 3 app the black-box tests use to look at a server's behaviour (stdlib only).

Every route answers one question a test asks: what scope did the app get, which messages did
``receive()`` deliver, does a streamed response reach the client early, what happens when the
app fails. Tests that need to see something the app observed afterwards (a disconnect, a
message after the response) store it under a key and read it back with ``/report?key=...``.

Routes (paths are matched after removing ``root_path``):

- ``/ok``                    200 ``ok`` with content-length (also for HEAD).
- ``/dated``                 200 ``ok`` with a ``date`` header of its own (``APP_DATE``).
- ``/qs``                    the raw query string as the body.
- ``/scope...``              the scope as JSON (bytes tagged as ``{"bytes": latin-1 text}``).
- ``/state-write?value``     writes into ``scope["state"]`` (must not leak to other requests).
- ``/echo``                  the request body back.
- ``/body-chunks``           one line per ``http.request`` message received, as JSON.
- ``/count``                 counts the request body without keeping it.
- ``/download?size&chunk``   ``size`` bytes streamed in ``chunk``-sized messages.
- ``/stream-wait?key``       sends a first chunk, then waits for ``/release?key`` to finish.
- ``/release?key``           releases ``/stream-wait``.
- ``/disconnect-watch?key``  reads the body until ``http.disconnect``; records what it got.
- ``/wait-disconnect?key``   reads the (empty) body, then waits on ``receive()``; records.
- ``/after-response?key&read``  answers (after reading the body unless ``read=no``), then
                             records what ``receive()`` returns next.
- ``/busy-after-response?seconds``  answers, then blocks the loop for ``seconds`` (work an
                             app does after its response, done without awaiting).
- ``/first-message?key``     records the first ``receive()`` message at once under
                             ``key:first``, then reads to the end (or a disconnect) and
                             records every message type under ``key``.
- ``/send-after-disconnect?key&start``  waits for ``http.disconnect``, then sends (the head
                             if ``start=late``, else more body after a first chunk); records
                             the exception ``send`` raised.
- ``/hold?key``              records ``started``, then sleeps for a minute without sending.
- ``/report?key``            the record of ``key`` (waits up to 10 s for it).
- ``/wait-for-body``         reads the body with ``asyncio.wait_for(receive(), 0.05)``.
- ``/no-read``               answers without reading the body.
- ``/seen``                  every raw path and query this process was asked for.
- ``/env?name``              ``os.environ[name]``.
- ``/pid``                   the id of the process serving the request (one per worker).
- ``/trailers``              a chunked body followed by an ``x-checksum`` trailer.
- ``/pathsend?path``         the file at ``path`` via ``http.response.pathsend``.
- ``/fail/...``              the failure modes (see ``FAILURES``); ``/fail/status?code``
                             starts a response with that status.
"""

import asyncio
import contextvars
import hashlib
import json
import os
import time
from urllib.parse import parse_qs

_events = {}  # key -> asyncio.Event, for /stream-wait and /release
_records = {}  # key -> dict, what an app instance observed
_record_ready = {}  # key -> asyncio.Event set when the record exists
_seen = []  # raw paths of every request served by this process

APP_DATE = b"Thu, 01 Jan 2015 00:00:00 GMT"


# --------------------------------------------------------------------------------------
# helpers


def _plain(value):
    """A JSON-able copy of ``value`` that keeps the difference between bytes and str."""
    if isinstance(value, bytes):
        return {"bytes": value.decode("latin-1")}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return {"repr": repr(value), "type": type(value).__name__}


def _query(scope):
    parsed = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}


def _event(key):
    if key not in _events:
        _events[key] = asyncio.Event()
    return _events[key]


def _record(key, data):
    _records[key] = data
    _record_ready.setdefault(key, asyncio.Event()).set()


async def _respond(send, status, body, content_type=b"text/plain; charset=utf-8", headers=()):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _json(send, data, status=200):
    await _respond(send, status, json.dumps(data).encode(), b"application/json")


async def _read_body(receive):
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if "state" in scope:
                scope["state"]["lifespan"] = "started"
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# --------------------------------------------------------------------------------------
# routes


async def ok(scope, receive, send):
    await _respond(send, 200, b"ok")


async def dated(scope, receive, send):
    await _respond(send, 200, b"ok", headers=[(b"date", APP_DATE)])


async def qs(scope, receive, send):
    await _respond(send, 200, scope["query_string"])


async def scope_echo(scope, receive, send):
    await _read_body(receive)
    types = {key: type(value).__name__ for key, value in scope.items()}
    header_types = sorted(
        {f"{type(item).__name__}({type(item[0]).__name__},{type(item[1]).__name__})" for item in scope["headers"]}
    )
    await _json(send, {"scope": _plain(scope), "types": types, "header_types": header_types})


async def state_write(scope, receive, send):
    scope["state"]["written_by_request"] = _query(scope).get("value", "yes")
    await _respond(send, 200, b"written")


async def echo(scope, receive, send):
    body = await _read_body(receive)
    if body is None:
        return
    content_type = dict(scope["headers"]).get(b"content-type", b"application/octet-stream")
    await _respond(send, 200, body, content_type)


async def body_chunks(scope, receive, send):
    messages = []
    digest = hashlib.sha256()
    length = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            messages.append({"type": message["type"]})
            break
        body = message.get("body", b"")
        digest.update(body)
        length += len(body)
        messages.append({"type": message["type"], "size": len(body), "more_body": message.get("more_body", False)})
        if not message.get("more_body", False):
            break
    await _json(send, {"messages": messages, "length": length, "sha256": digest.hexdigest()})


async def count(scope, receive, send):
    length = 0
    messages = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        messages += 1
        length += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await _json(send, {"length": length, "messages": messages})


async def download(scope, receive, send):
    query = _query(scope)
    size = int(query.get("size", "1048576"))
    chunk_size = int(query.get("chunk", "65536"))
    chunk = b"x" * chunk_size
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())],
        }
    )
    sent = 0
    while sent < size:
        part = chunk if size - sent >= chunk_size else chunk[: size - sent]
        sent += len(part)
        await send({"type": "http.response.body", "body": part, "more_body": sent < size})
    if size == 0:
        await send({"type": "http.response.body", "body": b""})


async def stream_wait(scope, receive, send):
    key = _query(scope)["key"]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
    try:
        await asyncio.wait_for(_event(key).wait(), 30)
        last = b"second\n"
    except asyncio.TimeoutError:
        last = b"timed out waiting for /release\n"
    await send({"type": "http.response.body", "body": last})


async def release(scope, receive, send):
    _event(_query(scope)["key"]).set()
    await _respond(send, 200, b"released")


async def disconnect_watch(scope, receive, send):
    key = _query(scope)["key"]
    received = 0
    types = []
    while True:
        message = await receive()
        types.append(message["type"])
        if message["type"] == "http.disconnect":
            _record(key, {"disconnected": True, "received": received, "types": types})
            return
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            _record(key, {"disconnected": False, "received": received, "types": types})
            await _respond(send, 200, b"complete body")
            return


async def wait_disconnect(scope, receive, send):
    key = _query(scope)["key"]
    started = time.monotonic()
    first = await receive()
    second = await receive()
    _record(
        key,
        {"first": first["type"], "second": second["type"], "waited": time.monotonic() - started},
    )


async def after_response(scope, receive, send):
    query = _query(scope)
    key = query["key"]
    if query.get("read") != "no":
        await _read_body(receive)
    await _respond(send, 200, b"done")
    try:
        message = await asyncio.wait_for(receive(), 5)
        _record(key, {"type": message["type"]})
    except asyncio.TimeoutError:
        _record(key, {"type": "timeout"})


async def busy_after_response(scope, receive, send):
    seconds = float(_query(scope)["seconds"])
    await _respond(send, 200, b"answered before the work")
    time.sleep(seconds)


async def first_message(scope, receive, send):
    key = _query(scope)["key"]
    message = await receive()
    body = message.get("body", b"")
    _record(f"{key}:first", {"type": message["type"], "size": len(body), "more_body": message.get("more_body", False)})
    types, received = [message["type"]], len(body)
    while message["type"] == "http.request" and message.get("more_body", False):
        message = await receive()
        types.append(message["type"])
        received += len(message.get("body", b""))
    _record(key, {"types": types, "received": received})
    if message["type"] == "http.request":
        await _respond(send, 200, b"received %d" % received)


async def send_after_disconnect(scope, receive, send):
    query = _query(scope)
    late = query.get("start") == "late"
    if not late:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass
    try:
        if late:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"more\n", "more_body": True})
    except BaseException as exc:
        _record(query["key"], {"raised": type(exc).__name__, "oserror": isinstance(exc, OSError)})
        raise
    _record(query["key"], {"raised": None})


async def hold(scope, receive, send):
    _record(_query(scope)["key"], {"started": True})
    await asyncio.sleep(60)


async def report(scope, receive, send):
    key = _query(scope)["key"]
    ready = _record_ready.setdefault(key, asyncio.Event())
    try:
        await asyncio.wait_for(ready.wait(), 10)
    except asyncio.TimeoutError:
        await _json(send, {"error": f"nothing recorded for {key}"}, status=404)
        return
    await _json(send, _records[key])


async def wait_for_body(scope, receive, send):
    digest = hashlib.sha256()
    length = 0
    timeouts = 0
    messages = 0
    while True:
        try:
            message = await asyncio.wait_for(receive(), 0.05)
        except asyncio.TimeoutError:
            timeouts += 1
            continue
        if message["type"] != "http.request":
            return
        messages += 1
        body = message.get("body", b"")
        digest.update(body)
        length += len(body)
        if not message.get("more_body", False):
            break
    await _json(send, {"length": length, "sha256": digest.hexdigest(), "timeouts": timeouts, "messages": messages})


async def no_read(scope, receive, send):
    await _respond(send, 200, b"answered without reading")


async def seen(scope, receive, send):
    await _json(send, _seen)


async def env(scope, receive, send):
    name = _query(scope)["name"]
    await _json(send, {"name": name, "value": os.environ.get(name)})


async def pid(scope, receive, send):
    await _json(send, {"pid": os.getpid()})


_request_var = contextvars.ContextVar("request_var", default=None)


async def event_loop(scope, receive, send):
    import asyncio
    import inspect
    import threading

    running = asyncio.get_running_loop()
    task = asyncio.current_task()
    # What an earlier request set in its context must not show here.
    var_before = _request_var.get()
    _request_var.set(scope.get("query_string", b"").decode())
    await asyncio.sleep(0)
    await _json(
        send,
        {
            "context_var_before": var_before,
            "context_var_after_await": _request_var.get(),
            "same_task_after_await": asyncio.current_task() is task,
            "loop": f"{type(running).__module__}.{type(running).__name__}",
            "in_main_thread": threading.current_thread() is threading.main_thread(),
            # What anyio and debuggers read of the request's task.
            "task_state": inspect.getcoroutinestate(task.get_coro()),
            "task_repr": repr(task),
            "task_name": task.get_name(),
        },
    )


async def trailers(scope, receive, send):
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum")],
            "trailers": True,
        }
    )
    await send({"type": "http.response.body", "body": b"hello ", "more_body": True})
    await send({"type": "http.response.body", "body": b"trailers", "more_body": False})
    checksum = hashlib.sha256(b"hello trailers").hexdigest().encode()
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", checksum)], "more_trailers": False})


async def pathsend(scope, receive, send):
    path = _query(scope)["path"]
    if "http.response.pathsend" not in scope.get("extensions", {}):
        await _respond(send, 501, b"no http.response.pathsend extension")
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(os.stat(path).st_size).encode()),
            ],
        }
    )
    await send({"type": "http.response.pathsend", "path": path})


# failure modes: each has its own function so a traceback names it


async def _fail_before_start(scope, receive, send):
    raise RuntimeError("conformance: failed before http.response.start")


async def _fail_after_start(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"partial ", "more_body": True})
    raise RuntimeError("conformance: failed after http.response.start")


async def _fail_no_response(scope, receive, send):
    return None


async def _fail_incomplete_body(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"partial ", "more_body": True})
    return None


async def _fail_unknown_message(scope, receive, send):
    await send({"type": "http.response.bogus", "status": 200})


async def _fail_newline_value(scope, receive, send):
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"x-bad", b"a\r\nx-injected: yes")],
        }
    )
    await send({"type": "http.response.body", "body": b"should not be sent"})


async def _fail_str_value(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [("x-str", "not bytes")]})
    await send({"type": "http.response.body", "body": b"should not be sent"})


async def _fail_double_start(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"should not be sent"})


async def _fail_body_not_bytes(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": "not bytes"})


async def _fail_status(scope, receive, send):
    status = int(_query(scope)["code"])
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _fail_long_body(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"12345HTTP/1.1 200 OK\r\n"})


async def _fail_long_stream(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"123", "more_body": True})
    await send({"type": "http.response.body", "body": b"45HTTP/1.1 200 OK\r\n", "more_body": True})
    await send({"type": "http.response.body", "body": b"more after the cut"})


async def _fail_short_body(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
    await send({"type": "http.response.body", "body": b"12345"})


async def _fail_short_stream(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
    await send({"type": "http.response.body", "body": b"12345", "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _fail_bad_length(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"five")]})
    await send({"type": "http.response.body", "body": b"12345"})


async def _fail_system_exit(scope, receive, send):
    raise SystemExit("conformance: sys.exit() inside a request")


async def _fail_stop_loop(scope, receive, send):
    asyncio.get_running_loop().stop()
    await asyncio.sleep(10)


FAILURES = {
    "/fail/before-start": _fail_before_start,
    "/fail/after-start": _fail_after_start,
    "/fail/no-response": _fail_no_response,
    "/fail/incomplete-body": _fail_incomplete_body,
    "/fail/unknown-message": _fail_unknown_message,
    "/fail/newline-value": _fail_newline_value,
    "/fail/str-value": _fail_str_value,
    "/fail/double-start": _fail_double_start,
    "/fail/body-not-bytes": _fail_body_not_bytes,
    "/fail/status": _fail_status,
    "/fail/long-body": _fail_long_body,
    "/fail/long-stream": _fail_long_stream,
    "/fail/short-body": _fail_short_body,
    "/fail/short-stream": _fail_short_stream,
    "/fail/bad-length": _fail_bad_length,
    "/fail/system-exit": _fail_system_exit,
    "/fail/stop-loop": _fail_stop_loop,
}

ROUTES = {
    "/ok": ok,
    "/dated": dated,
    "/qs": qs,
    "/echo": echo,
    "/state-write": state_write,
    "/body-chunks": body_chunks,
    "/count": count,
    "/download": download,
    "/stream-wait": stream_wait,
    "/release": release,
    "/disconnect-watch": disconnect_watch,
    "/wait-disconnect": wait_disconnect,
    "/after-response": after_response,
    "/busy-after-response": busy_after_response,
    "/first-message": first_message,
    "/send-after-disconnect": send_after_disconnect,
    "/hold": hold,
    "/report": report,
    "/wait-for-body": wait_for_body,
    "/no-read": no_read,
    "/seen": seen,
    "/env": env,
    "/pid": pid,
    "/loop": event_loop,
    "/trailers": trailers,
    "/pathsend": pathsend,
    **FAILURES,
}


async def app_with_task_factory(scope, receive, send):
    """`app`, with a task factory set on the loop as its lifespan starts."""
    if scope["type"] == "lifespan":
        import asyncio

        def factory(loop, coroutine, **kwargs):
            kwargs.setdefault("name", "from-the-app's-factory")
            return asyncio.Task(coroutine, loop=loop, **kwargs)

        asyncio.get_running_loop().set_task_factory(factory)
    await app(scope, receive, send)


async def app_with_eager_task_factory(scope, receive, send):
    """`app`, with a task factory that takes a task's first step at once, as Python 3.12's
    `asyncio.eager_task_factory` does: a request answered without waiting ends inside it."""
    if scope["type"] == "lifespan":
        import asyncio

        def eager(loop, coroutine, **kwargs):
            try:
                coroutine.send(None)
            except StopIteration:
                done = loop.create_future()
                done.set_result(None)
                return done
            raise RuntimeError("this test factory takes only apps that answer at once")

        asyncio.get_running_loop().set_task_factory(eager)
    await app(scope, receive, send)


async def not_found(scope, receive, send):
    await _respond(send, 404, b"not found")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    if scope["type"] != "http":
        return None
    _seen.append((scope.get("raw_path", b"") + b"?" + scope.get("query_string", b"")).decode("latin-1"))
    path = scope["path"]
    root_path = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path):]
    if path == "/scope" or path.startswith("/scope/"):
        handler = scope_echo
    else:
        handler = ROUTES.get(path, not_found)
    await handler(scope, receive, send)
