"""An Axum router with one Rust route (`/rust`) and a Python ASGI app as its fallback."""

from maturin_router._router import serve

__all__ = ["serve"]
