#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: lint, Rust tests and doctests, then the
# black-box pytest suite against the release binary, then the wheel (scripts/test_wheel.sh).
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

"$venv/bin/python" -m pytest tests/python -q -p no:cacheprovider "$@"

scripts/test_wheel.sh
