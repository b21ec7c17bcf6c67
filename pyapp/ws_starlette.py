"""Starlette websocket endpoints for the websocket tests.

- ``WS /ws/echo``               echoes text and bytes (``WebSocketRoute`` with a function)
- ``WS /ws/rooms/{room}``       ``WebSocketEndpoint`` class (``encoding = "json"``): greets with
                                the path parameter, query parameter ``user`` and the lifespan
                                state, then echoes JSON as ``{"room", "echo"}``; ``{"close": CODE}``
                                makes it close with that code
- ``WS /ws/subprotocol``        accepts with ``chat.v1`` when the client offers it
- ``WS /ws/deny``               ``send_denial_response`` (Starlette's use of the
                                ``websocket.http.response`` extension): 401 JSON
- ``WS /ws/forbidden``          ``close()`` before accepting (→ HTTP 403)
- ``GET /``                     a plain HTTP route next to the websocket ones
"""

import contextlib

from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"greeting": "set by lifespan"}


async def echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


class Room(WebSocketEndpoint):
    encoding = "json"

    async def on_connect(self, websocket: WebSocket):
        await websocket.accept()
        await websocket.send_json(
            {
                "room": websocket.path_params["room"],
                "user": websocket.query_params.get("user"),
                "greeting": websocket.state.greeting,
            }
        )

    async def on_receive(self, websocket: WebSocket, data):
        if "close" in data:
            await websocket.close(code=data["close"], reason="room closed")
            return
        await websocket.send_json({"room": websocket.path_params["room"], "echo": data})


async def subprotocol(websocket: WebSocket):
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol="chat.v1" if "chat.v1" in offered else None)
    await websocket.send_text(",".join(offered))
    await websocket.close()


async def deny(websocket: WebSocket):
    await websocket.send_denial_response(JSONResponse({"detail": "login first"}, status_code=401))


async def forbidden(websocket: WebSocket):
    await websocket.close()


async def homepage(request):
    return PlainTextResponse("starlette http")


app = Starlette(
    routes=[
        Route("/", homepage),
        WebSocketRoute("/ws/echo", echo),
        WebSocketRoute("/ws/rooms/{room}", Room),
        WebSocketRoute("/ws/subprotocol", subprotocol),
        WebSocketRoute("/ws/deny", deny),
        WebSocketRoute("/ws/forbidden", forbidden),
    ],
    lifespan=lifespan,
)
