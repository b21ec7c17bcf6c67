//! The ASGI protocol: scopes, the HTTP bridge and the awaitables it hands to apps.

pub mod awaitable;
pub mod body;
pub mod http;
pub mod lifespan;
pub mod parking;
pub mod scope;
pub mod websocket;

pub use self::http::AsgiService;
pub use body::ResponseBody;
pub use lifespan::LifespanMode;
pub use scope::{ConnectionInfo, ServerAddress};
