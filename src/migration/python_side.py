"""What rust-asgi-server's migration tools read from the app itself (src/migration/python_side.rs).

Run on the app's loop thread. Works with any ASGI app: what an app does not have (no
``openapi``, no ``routes``) reads as nothing.
"""

import json
import re

# `{name:convertor}` in a Starlette path: the OpenAPI template writes `{name}`.
_CONVERTOR = re.compile(r"{([^}:]+):[^}]*}")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def openapi_url(app):
    """Where the app serves its OpenAPI document; FastAPI's ``openapi_url`` is ``None`` when
    the app turned it off. An app that has no such setting gets the usual place."""
    return getattr(app, "openapi_url", "/openapi.json")


def openapi_json(app):
    """The app's OpenAPI document (FastAPI's ``app.openapi()``) as JSON, ``null`` if none."""
    openapi = getattr(app, "openapi", None)
    return json.dumps(openapi() if callable(openapi) else None)


def routes(app):
    """``(method, path template, in the OpenAPI document)`` for every HTTP route, mounts
    followed. HEAD is left out where GET is there (Starlette adds it to every GET route)."""
    found = []
    _walk(getattr(app, "routes", None) or [], "", found)
    return found


def _walk(routes, prefix, found):
    from starlette.routing import Host, Mount, WebSocketRoute

    for route in _flat(routes):
        # FastAPI's route contexts stand for an included router's routes, prefix applied.
        original = getattr(route, "original_route", route)
        if isinstance(original, Mount):
            _walk(original.routes or [], prefix + _CONVERTOR.sub(r"{\1}", original.path), found)
        elif isinstance(original, Host):
            _walk(original.routes or [], prefix, found)
        elif not isinstance(original, WebSocketRoute) and getattr(route, "path_format", None):
            methods = set(route.methods or _endpoint_methods(route.endpoint))
            if "GET" in methods:
                methods.discard("HEAD")
            documented = bool(getattr(route, "include_in_schema", True))
            for method in sorted(methods):
                found.append((method, prefix + route.path_format, documented))


def _flat(routes):
    """FastAPI (from 0.16x) keeps included routers as one entry; this lists their routes."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return routes
    return iter_route_contexts(routes)


def _endpoint_methods(endpoint):
    """A route without methods takes what its endpoint handles: an ``HTTPEndpoint`` class
    its handler methods, any other ASGI app every method."""
    handled = [method for method in _METHODS if callable(getattr(endpoint, method.lower(), None))]
    return handled or _METHODS
