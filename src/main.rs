//! `rust-asgi-server --app module:app`: the drop-in uvicorn replacement.

fn main() -> std::process::ExitCode {
    rust_asgi_server::cli::main()
}
