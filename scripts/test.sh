#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: lint, Rust tests and doctests, then the
# black-box pytest suite against the release binary (in both runtime modes), then the wheel (scripts/test_wheel.sh).
# Needs only cargo and python3 on PATH. Everything is built in the `ci` profile (release
# without link-time optimisation, Cargo.toml), which the black-box tests then run.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

cargo fmt --all --check
export RUST_ASGI_SERVER_PROFILE=ci
cargo clippy --profile ci --workspace --all-targets --quiet -- -D warnings
cargo build --profile ci --bins --examples
cargo nextest run --cargo-profile ci --no-fail-fast
# nextest runs no doctests: this compiles the docs' Rust blocks (the crate docs and
# docs/migration.md) against the build above, about 15 s and no second dependency tree
# (a dev-profile `cargo test --doc` would first build every dependency again, ~2 min).
cargo test --doc --profile ci
# The API docs build without a broken or private link.
RUSTDOCFLAGS="-D warnings" cargo doc --profile ci --no-deps --lib --quiet

# The black-box suite once per --runtime-mode (the binary reads it from this variable): the
# sockets on the loop thread with Python, then on Tokio's worker threads.
for mode in single split; do
    echo "black-box suite, --runtime-mode $mode"
    RUST_ASGI_SERVER_RUNTIME_MODE=$mode "$venv/bin/python" -m pytest tests/python -q -p no:cacheprovider "$@"
done

scripts/test_wheel.sh
