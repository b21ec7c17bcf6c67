//! `rust-asgi-server --app module:app`: the drop-in uvicorn replacement.

#[global_allocator]
static ALLOCATOR: rust_asgi_server::cli::Allocator = rust_asgi_server::cli::Allocator;

fn main() -> std::process::ExitCode {
    rust_asgi_server::cli::main()
}
