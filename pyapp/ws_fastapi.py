"""FastAPI websocket endpoints for the websocket tests.

- ``WS /ws/{client_id}?token=T``  ``@app.websocket`` with a path parameter, a query parameter
                                  and a dependency; without ``token`` it is refused (HTTP 403);
                                  otherwise it greets, then answers each JSON message with
                                  ``{"client_id", "n", "echo"}`` until the client leaves
- ``WS /bytes``                   echoes bytes
- ``GET /disconnects``            the client ids whose disconnect the app saw, with the code
- ``GET /``                       a plain HTTP route next to the websocket ones
"""

from typing import Optional

from fastapi import Depends, FastAPI, Query, WebSocket, WebSocketDisconnect, WebSocketException, status

app = FastAPI(title="rust-asgi-server websocket test app")

_disconnects = {}


async def require_token(token: Optional[str] = Query(default=None)) -> str:
    if token is None:
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="token required")
    return token


@app.get("/")
async def root():
    return {"app": "fastapi"}


@app.get("/disconnects")
async def disconnects():
    return _disconnects


@app.websocket("/bytes")
async def bytes_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_bytes(await websocket.receive_bytes())
    except WebSocketDisconnect:
        pass


@app.websocket("/ws/{client_id}")
async def chat(websocket: WebSocket, client_id: int, token: str = Depends(require_token)):
    await websocket.accept()
    await websocket.send_json({"hello": client_id, "token": token})
    n = 0
    try:
        while True:
            data = await websocket.receive_json()
            n += 1
            await websocket.send_json({"client_id": client_id, "n": n, "echo": data})
    except WebSocketDisconnect as exc:
        _disconnects[str(client_id)] = exc.code
