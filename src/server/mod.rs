//! The server: listeners (TCP, Unix, inherited), TLS, hyper connections (HTTP/1.1, HTTP/2),
//! HTTP/3 over QUIC (`http3/`), keep-alive, the access log and graceful shutdown. The router handed to [`Server::new`]
//! decides what is Rust and what is Python.

mod accept_errors;
mod access_log;
mod access_log_format;
mod body_timeout;
mod connection;
mod extensions;
mod handle;
mod health;
mod http3;
mod http_versions;
mod keep_alive;
mod listener;
mod options;
mod polled_when_woken;
mod refusal;
mod serve;
mod tls;

pub use access_log_format::{AccessLogFormat, AccessLogFormatError};
pub use handle::ServerHandle;
pub use http_versions::HttpVersions;
pub use listener::Bind;
pub use options::ServerOptions;
pub use serve::Server;
pub use tls::{ClientCertificates, KeyPassword, TlsOptions};

#[cfg(feature = "cli")]
pub(crate) use listener::{BoundSocket, inherited_socket};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::TrustedProxies;

    #[test]
    fn proxy_headers_are_trusted_from_this_machine_by_default() {
        assert_eq!(
            ServerOptions::default().proxy_headers,
            Some(TrustedProxies::localhost())
        );
    }
}
