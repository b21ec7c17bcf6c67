"""Reports where the serving interpreter finds its packages, for the virtualenv test.

Answers every HTTP request with JSON: ``sys.prefix``, ``sys.executable``, the path
``starlette`` was imported from (or the import error) and ``VIRTUAL_ENV``. Stdlib only; the
import of starlette happens per request so a missing package is reported, not fatal.
"""

import json
import os
import sys

from pyapp.plain_lifespan import serve_lifespan


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await serve_lifespan(receive, send)
    if scope["type"] != "http":
        return
    try:
        import starlette

        starlette_file, error = starlette.__file__, None
    except ImportError as exc:
        starlette_file, error = None, repr(exc)
    data = {
        "sys_prefix": sys.prefix,
        "sys_base_prefix": sys.base_prefix,
        "sys_path": sys.path,
        "starlette_file": starlette_file,
        "import_error": error,
        "virtual_env": os.environ.get("VIRTUAL_ENV"),
    }
    body = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
