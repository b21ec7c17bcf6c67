"""Raw ASGI websocket apps the websocket tests run (stdlib only).

Each app is one behaviour of the ASGI websocket spec 2.x; ``app`` routes to them by path so
one server process can serve a whole test module. The apps are written against the spec,
not against this server, so ``SERVER_UNDER_TEST=uvicorn`` checks them (and the tests).

Websocket routes of ``app``:

- ``/echo...`` (and any unknown path)  every text/bytes message back, as it came.
- ``/scope...``                        the scope as JSON text (bytes tagged as
                                       ``{"bytes": latin-1 text}``), then close 1000.
- ``/subprotocol``                     accepts with the first offered subprotocol of
                                       ``SUPPORTED_SUBPROTOCOLS`` (server preference order).
- ``/accept-headers``                  accepts with extra response headers, sends ``"hi"``.
- ``/reject``                          ``websocket.close`` before accepting (→ HTTP 403).
- ``/return-before-accept``            returns without accepting or closing (→ HTTP 403).
- ``/deny``                            denial response (``websocket.http.response.*``):
                                       status 418, custom headers, body in two chunks.
- ``/raise-before-accept``             raises before accepting (→ HTTP 500).
- ``/raise-after-accept``              accepts, waits for one message, raises (→ close 1011).
- ``/close``                           echoes; the text ``close CODE REASON...`` makes the app
                                       send ``websocket.close`` with that code and reason.
- ``/record?key=K``                    accepts, reads until ``websocket.disconnect``; records
                                       the code, reason, and that its task ended.
- ``/flood?key=K&size=N``              accepts, then sends ``N``-byte messages until ``send``
                                       fails; records how many sends completed.
- ``/send-after-disconnect?key=K``    accepts, waits for ``websocket.disconnect``, then sends;
                                       records the exception ``send`` raised.
- ``/return-after-accept``             accepts and returns without closing.
- ``/bad-close?code=C&key=K``          accepts, sends ``websocket.close`` with code ``C``;
                                       records what that raised, then closes with 1000.
- ``/slow-reader?delay=S&count=N``     accepts, sleeps ``S`` seconds, receives ``N`` messages
                                       (each tagged by its 4-byte index), then sends a JSON
                                       summary ``{"count", "in_order", "bytes"}``.

HTTP routes of ``app``:

- ``/record?key=K``   the record of ``K`` as JSON, ``{"found": false}`` when none (yet).
- anything else       ``200 python http``.

Lifespan: startup puts ``{"ws_apps": "started"}`` into ``state``.

The single apps are also exported on their own (``echo``, ``scope_reporter``, ...).
"""

import asyncio
import json
from urllib.parse import parse_qs

SUPPORTED_SUBPROTOCOLS = ("chat.v2", "chat.v1")
DENIAL_STATUS = 418
DENIAL_BODY = (b"no websockets ", b"for you")

_records = {}  # key -> what a /record app observed


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


async def _expect_connect(receive):
    message = await receive()
    if message["type"] != "websocket.connect":
        raise RuntimeError(f"expected websocket.connect, got {message!r}")


async def _lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if scope.get("state") is not None:
                scope["state"]["ws_apps"] = "started"
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# --------------------------------------------------------------------------------------
# websocket apps


async def echo(scope, receive, send):
    """Echoes every message; also answers lifespan so it can be served alone."""
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    if scope["type"] != "websocket":
        return await _http(scope, receive, send)
    await _expect_connect(receive)
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def scope_reporter(scope, receive, send):
    await _expect_connect(receive)
    await send({"type": "websocket.accept"})
    report = {
        "scope": _plain({key: value for key, value in scope.items() if key != "state"}),
        "state": _plain(dict(scope["state"])) if isinstance(scope.get("state"), dict) else None,
        "types": {key: type(value).__name__ for key, value in scope.items()},
        "header_types": sorted(
            {f"{type(name).__name__},{type(value).__name__}" for name, value in scope["headers"]}
        ),
    }
    await send({"type": "websocket.send", "text": json.dumps(report)})
    await send({"type": "websocket.close", "code": 1000})


async def subprotocol(scope, receive, send):
    await _expect_connect(receive)
    offered = scope.get("subprotocols", [])
    chosen = next((proto for proto in SUPPORTED_SUBPROTOCOLS if proto in offered), None)
    await send({"type": "websocket.accept", "subprotocol": chosen})
    await send({"type": "websocket.send", "text": json.dumps({"offered": offered, "chosen": chosen})})
    await _drain(receive)


async def accept_headers(scope, receive, send):
    await _expect_connect(receive)
    await send(
        {
            "type": "websocket.accept",
            "headers": [
                (b"x-accept-extra", b"yes"),
                (b"set-cookie", b"session=abc"),
                (b"set-cookie", b"theme=dark"),
            ],
        }
    )
    await send({"type": "websocket.send", "text": "hi"})
    await _drain(receive)


async def reject(scope, receive, send):
    await _expect_connect(receive)
    await send({"type": "websocket.close"})


async def return_before_accept(scope, receive, send):
    await _expect_connect(receive)


async def deny(scope, receive, send):
    await _expect_connect(receive)
    if "websocket.http.response" not in scope.get("extensions", {}):
        raise RuntimeError("the server does not offer the websocket.http.response extension")
    await send(
        {
            "type": "websocket.http.response.start",
            "status": DENIAL_STATUS,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(sum(map(len, DENIAL_BODY))).encode()),
                (b"x-denied", b"teapot"),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": DENIAL_BODY[0], "more_body": True})
    await send({"type": "websocket.http.response.body", "body": DENIAL_BODY[1]})


async def raise_before_accept(scope, receive, send):
    await _expect_connect(receive)
    raise RuntimeError("raised before accept (expected by the test)")


async def raise_after_accept(scope, receive, send):
    await _expect_connect(receive)
    await send({"type": "websocket.accept"})
    await receive()
    raise RuntimeError("raised after accept (expected by the test)")


async def close_on_command(scope, receive, send):
    await _expect_connect(receive)
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None and text.startswith("close "):
            _, code, *reason = text.split(" ", 2)
            await send({"type": "websocket.close", "code": int(code), "reason": reason[0] if reason else ""})
            return
        await send({"type": "websocket.send", "text": text, "bytes": message.get("bytes")})


async def disconnect_recorder(scope, receive, send):
    key = _query(scope).get("key", "default")
    record = {"found": True, "accepted": False, "messages": 0, "disconnect": None, "ended": False}
    _records[key] = record
    try:
        await _expect_connect(receive)
        await send({"type": "websocket.accept"})
        record["accepted"] = True
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                record["disconnect"] = {"code": message.get("code"), "reason": message.get("reason")}
                return
            record["messages"] += 1
            await send({"type": "websocket.send", "text": "got it"})
    except BaseException as exc:
        record["error"] = repr(exc)
        raise
    finally:
        record["ended"] = True


async def flood(scope, receive, send):
    query = _query(scope)
    key = query.get("key", "flood")
    payload = b"\x5a" * int(query.get("size", "65536"))
    record = {"found": True, "sent": 0, "ended": False}
    _records[key] = record
    try:
        await _expect_connect(receive)
        await send({"type": "websocket.accept"})
        while True:
            await send({"type": "websocket.send", "bytes": payload})
            record["sent"] += 1
    except BaseException as exc:
        record["error"] = repr(exc)
        if not isinstance(exc, Exception):
            raise
    finally:
        record["ended"] = True


async def slow_reader(scope, receive, send):
    query = _query(scope)
    await _expect_connect(receive)
    await send({"type": "websocket.accept"})
    await asyncio.sleep(float(query.get("delay", "2")))
    expected = int(query.get("count", "1"))
    count, total, in_order = 0, 0, True
    while count < expected:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes") or b""
        in_order = in_order and int.from_bytes(data[:4], "big") == count
        count += 1
        total += len(data)
    summary = {"count": count, "in_order": in_order, "bytes": total}
    await send({"type": "websocket.send", "text": json.dumps(summary)})
    await _drain(receive)


async def send_after_disconnect(scope, receive, send):
    key = _query(scope).get("key", "default")
    await _expect_connect(receive)
    await send({"type": "websocket.accept"})
    await _drain(receive)
    try:
        await send({"type": "websocket.send", "text": "anyone there?"})
    except BaseException as exc:
        _records[key] = {"found": True, "raised": type(exc).__name__, "oserror": isinstance(exc, OSError)}
        if not isinstance(exc, Exception):
            raise
    else:
        _records[key] = {"found": True, "raised": None}


async def return_after_accept(scope, receive, send):
    await _expect_connect(receive)
    await send({"type": "websocket.accept"})


async def bad_close(scope, receive, send):
    query = _query(scope)
    record = {"found": True, "raised": None}
    _records[query.get("key", "default")] = record
    await _expect_connect(receive)
    await send({"type": "websocket.accept"})
    try:
        await send({"type": "websocket.close", "code": int(query["code"])})
    except Exception as exc:
        record["raised"] = type(exc).__name__
        await send({"type": "websocket.close", "code": 1000, "reason": "recovered"})


async def _drain(receive):
    while (await receive())["type"] != "websocket.disconnect":
        pass


# --------------------------------------------------------------------------------------
# HTTP side and routing


async def _http(scope, receive, send):
    if scope["path"].startswith("/record"):
        key = _query(scope).get("key", "default")
        body = json.dumps(_records.get(key, {"found": False})).encode()
        content_type = b"application/json"
    else:
        body, content_type = b"python http", b"text/plain"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


ROUTES = {
    "/scope": scope_reporter,
    "/subprotocol": subprotocol,
    "/accept-headers": accept_headers,
    "/reject": reject,
    "/return-before-accept": return_before_accept,
    "/deny": deny,
    "/raise-before-accept": raise_before_accept,
    "/raise-after-accept": raise_after_accept,
    "/close": close_on_command,
    "/record": disconnect_recorder,
    "/flood": flood,
    "/slow-reader": slow_reader,
    "/send-after-disconnect": send_after_disconnect,
    "/return-after-accept": return_after_accept,
    "/bad-close": bad_close,
}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    if scope["type"] == "http":
        return await _http(scope, receive, send)
    path = scope["path"]
    root_path = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path):]
    for prefix, handler in ROUTES.items():
        if path == prefix or path.startswith(prefix + "/"):
            return await handler(scope, receive, send)
    return await echo(scope, receive, send)
