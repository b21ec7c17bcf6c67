"""What rust-asgi-server's migration tools read from the app itself (src/migration/python_side.rs).

Run on the app's loop thread. Works with any ASGI app: an app without ``openapi`` has no
document.
"""

import json


def openapi_url(app):
    """Where the app serves its OpenAPI document; FastAPI's ``openapi_url`` is ``None`` when
    the app turned it off. An app that has no such setting gets the usual place."""
    return getattr(app, "openapi_url", "/openapi.json")


def openapi_json(app):
    """The app's OpenAPI document (FastAPI's ``app.openapi()``) as JSON, ``null`` if none."""
    openapi = getattr(app, "openapi", None)
    return json.dumps(openapi() if callable(openapi) else None)
