//! The Tower layers the binary puts around its router, for a `main.rs` of your own to put
//! around yours (`tower::ServiceBuilder::new().layer(…).service(router)`), so Rust and Python
//! routes get the same treatment. Proxy headers are [`Server`](crate::Server)'s own business
//! ([`ServerOptions::proxy_headers`](crate::ServerOptions::proxy_headers)); their layer is for
//! routers served without it.

mod default_headers;
pub(crate) mod guarded_body;
mod limit;
mod proxy_headers;

pub use default_headers::{DefaultHeaders, DefaultHeadersLayer};
pub use limit::{BodySizeLimit, BodySizeLimitLayer, InFlightLimit, InFlightLimitLayer};
pub use proxy_headers::{ProxyHeaders, ProxyHeadersLayer, TrustedProxies};
