#!/usr/bin/env bash
# The wheel stage of scripts/test.sh (issue #13), also runnable on its own once the release
# binary is built: builds the wheel and examples/maturin_router with maturin, installs both
# into a fresh virtualenv with the test requirements, and from there
#   - type-checks the Python API's stubs with `mypy --strict` on examples/python/,
#   - runs tests/python/test_wheel.py (the wheel against the binary, the Python API, the
#     maturin example) and the black-box HTTP, websocket, lifespan and workers files against
#     the installed `rust-asgi-server` command (RUST_ASGI_SERVER_CMD).
# The profile of the binary's build (RUST_ASGI_SERVER_PROFILE, scripts/test.sh: `ci`), whose
# compiled dependencies it reuses; `pip install .` builds `release`.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
wheel_venv=target/wheel-venv
wheels=target/wheels
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ ! -x "$venv/bin/maturin" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
profile=${RUST_ASGI_SERVER_PROFILE:-release}
rm -rf "$wheels" "$wheel_venv"
"$venv/bin/maturin" build --profile "$profile" --quiet --out "$wheels"
"$venv/bin/maturin" build --profile "$profile" --quiet --out "$wheels" -m examples/maturin_router/Cargo.toml
python3 -m venv "$wheel_venv"
"$wheel_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$wheels"/rust_asgi_server-*.whl "$wheels"/maturin_router-*.whl -r tests/requirements.txt

"$wheel_venv/bin/python" -m mypy --strict examples/python/

RUST_ASGI_SERVER_CMD="$PWD/$wheel_venv/bin/rust-asgi-server" \
    "$wheel_venv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/python/test_wheel.py \
    tests/python/test_http_protocol.py \
    tests/python/test_websocket.py \
    tests/python/test_lifespan.py \
    tests/python/test_shutdown.py \
    tests/python/test_serving.py \
    "$@"
