//! Every default, in one place: the library's builders start from these and the command
//! line shows them, so the two never disagree. Where uvicorn has the setting, its default.

use std::time::Duration;

/// Where the command line's server runs its sockets: on the loop thread with Python, which
/// measured faster than the split in most cells (bench/results/2026-12-03-runtime-modes.md).
/// The library keeps `RuntimeMode::Split` (its `Default`), for migration routers whose Rust
/// routes should run beside Python.
#[cfg(feature = "cli")]
pub(crate) const RUNTIME_MODE: crate::RuntimeMode = crate::RuntimeMode::Single;

/// Host listened on when none is given.
pub(crate) const HOST: &str = "127.0.0.1";

/// Port listened on when none is given.
pub(crate) const PORT: u16 = 8000;

/// Connections the kernel queues before they are accepted (`--backlog`).
pub(crate) const BACKLOG: u32 = 2048;

/// Idle time after a response before a connection is closed (`--timeout-keep-alive`).
pub(crate) const TIMEOUT_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Time a client has to send a complete request head, the first one counted from accept
/// (`--timeout-header-read`).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Time a request body may make no progress while the app waits for it
/// (`--timeout-request-body`).
pub(crate) const TIMEOUT_REQUEST_BODY: Duration = Duration::from_secs(60);

/// How long the loop thread may stay away from the event loop before the watchdog warns
/// (`--loop-block-warn`).
pub(crate) const LOOP_BLOCK_WARN: Duration = Duration::from_secs(1);

/// Largest request head accepted (HTTP/2: header list); larger ones get 431.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Most header lines an HTTP/1 request head may have; more get 431. Room for 100 of the
/// application's own and what proxies add, where hyper's default stops at 100.
pub(crate) const MAX_HEADERS: usize = 128;

/// Largest websocket message accepted from a client (`--ws-max-size`): 16 MiB.
pub(crate) const WS_MAX_SIZE: usize = 16 * 1024 * 1024;

/// Websockets are compressed with clients that offer permessage-deflate
/// (`--ws-per-message-deflate`), as uvicorn does.
pub(crate) const WS_PER_MESSAGE_DEFLATE: bool = true;

/// Peers whose proxy headers are believed (`--forwarded-allow-ips`).
pub(crate) const FORWARDED_ALLOW_IPS: &str = "127.0.0.1";

/// The `server` header sent on responses without one (`--server-header`).
#[cfg(feature = "cli")]
pub(crate) const SERVER_HEADER: &str = "rust-asgi-server";
