//! The ASGI protocol: scopes, bodies, and the HTTP, websocket and lifespan bridges between
//! Tokio and the loop thread.
//!
//! The three bridges share one scaffold ([`cycle`]): a Tokio task asks the loop thread to
//! start the app and awaits its answer; the app runs as an asyncio task with a cycle's
//! `receive` and `send`; each message it sends goes to the handler of its type; its end is
//! handed to the cycle once. Calls that cannot be answered at once park on asyncio futures
//! ([`parking`]), and a wait the app cancelled is never resolved.
//!
//! A message that breaks the protocol raises, the same in every bridge ([`violation`]):
//! `RuntimeError` for a message not allowed now (an unknown type, the wrong order, after
//! the end), `TypeError` for a field of the wrong Python type, `ValueError` for a bad value
//! (a missing required key, an invalid status, header value or close code). A message sent
//! after the client has gone raises `rust_asgi_server.ClientDisconnected`, a subclass of
//! `OSError` ([`disconnected`]).

mod awaitable;
mod body;
mod codec;
mod context;
mod cycle;
mod disconnected;
mod http;
pub(crate) mod lifespan;
mod parking;
mod probe;
mod scope;
mod service;
mod violation;
mod websocket;

pub use body::ResponseBody;
pub(crate) use disconnected::ClientDisconnected;
pub use lifespan::LifespanMode;
pub(crate) use probe::OwnershipProbe;
pub use service::AsgiService;
