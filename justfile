# Everyday recipes. `just` comes from PyPI: pip install rust-just

app := "pyapp.demo:app"
bind := "127.0.0.1:3000"

# Build the release binary and the examples.
build:
    cargo build --release --bins --examples

# Serve an app (default: the demo) with the release binary.
serve app=app bind=bind:
    cargo run --release -- --app {{app}} --bind {{bind}}

# The whole test suite, exactly as CI runs it.
test *args:
    scripts/test.sh {{args}}

# Compile the Rust blocks of the docs (crate docs, docs/migration.md) as doctests.
doctest:
    cargo test --doc --release

# Only the black-box pytest suite (expects a built release binary).
pytest *args:
    .venv/bin/python -m pytest tests/python -q {{args}}

# Benchmark against uvicorn and granian; `just bench --quick` for a short run.
bench *args:
    python3 bench/run.py {{args}}

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --check
    cargo clippy --release --all-targets -- -D warnings
