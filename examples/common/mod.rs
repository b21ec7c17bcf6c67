//! What the migration examples share: their command line, their logging set-up, and the
//! Rust handlers that replace Python ones (`items`). Not an example itself: cargo only
//! builds `examples/*.rs` and `examples/*/main.rs`.

// Every example uses a different part of this module.
#![allow(dead_code)]

pub mod items;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

// The options every migration example takes; the doc comment is their `--help` text.
/// A rust-asgi-server migration example: Axum routes in front of a Python ASGI app.
#[derive(clap::Parser, Debug)]
pub struct Args {
    /// Address to listen on, `host:port` (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub bind: String,
    /// The Python ASGI app, as `module:attribute`, imported from the current directory.
    #[arg(long, default_value = "pyapp.service:app")]
    pub app: String,
}

/// Logs on stderr, level from `RUST_LOG` (default `info`), colours only on a terminal.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
