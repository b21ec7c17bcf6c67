//! The ASGI protocol: scopes, bodies, and the HTTP, websocket and lifespan bridges between
//! Tokio and the loop thread.

mod awaitable;
mod body;
mod http;
pub(crate) mod lifespan;
mod parking;
mod probe;
mod scope;
mod websocket;

pub use self::http::AsgiService;
pub use body::ResponseBody;
pub use lifespan::LifespanMode;
pub(crate) use probe::OwnershipProbe;
