"""Starlette's ``StaticFiles`` for bench/static_files.py: the directory named by
``BENCH_STATIC_DIR`` under ``/static`` (the uvicorn side of the static-file benchmark)."""

import os

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

app = Starlette(routes=[Mount("/static", StaticFiles(directory=os.environ["BENCH_STATIC_DIR"]))])
