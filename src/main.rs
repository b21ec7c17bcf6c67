//! `rust-asgi-server --app module:app`: the drop-in uvicorn replacement.

// A request makes many small, short-lived allocations across two threads; mimalloc serves
// them in fewer cycles than glibc (bench/results/2026-12-03-allocator.md). Python's objects
// keep CPython's allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rust_asgi_server::cli::main()
}
