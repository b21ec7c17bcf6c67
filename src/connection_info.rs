//! What the server knows of a connection, for the scope, the access log and proxy headers.
//!
//! Below both the server (which records it per connection) and the ASGI bridge (which puts it
//! in the scope), so neither depends on the other for it.

use std::net::SocketAddr;
use std::sync::Arc;

/// Where a request came from and arrived at, recorded by the server per connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionInfo {
    /// `None` for a Unix socket peer, which has no address to report.
    pub client: Option<SocketAddr>,
    pub server: Option<ServerAddress>,
    /// TLS was terminated by this server: `https`/`wss` schemes.
    pub secure: bool,
}

/// What the TLS handshake of a connection settled, as the ASGI TLS extension reports it.
///
/// Recorded once per TLS connection and shared by its requests as an `Arc` in each
/// request's extensions, beside the `Copy` [`ConnectionInfo`]; a plain connection has none
/// and pays nothing for it.
#[derive(Debug, Default)]
pub(crate) struct TlsInfo {
    /// The certificate the server presented, PEM.
    pub(crate) server_certificate: Option<Arc<str>>,
    /// The client's certificates, leaf first, PEM; empty when it sent none.
    pub(crate) client_certificates: Vec<String>,
    /// The protocol version's code point: `0x0304` for TLS 1.3.
    pub(crate) version: Option<u16>,
    /// The cipher suite's IANA number.
    pub(crate) cipher_suite: Option<u16>,
}

/// The listening address a connection arrived at, as the scope's `server` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerAddress {
    /// `[host, port]`.
    Tcp(SocketAddr),
    /// `[path, None]`, as the ASGI spec has it for Unix domain sockets. The path is leaked
    /// once per listener so that [`ConnectionInfo`] stays `Copy` (no per-request clone).
    Unix(&'static str),
}

impl From<SocketAddr> for ServerAddress {
    fn from(address: SocketAddr) -> Self {
        ServerAddress::Tcp(address)
    }
}

impl std::fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddress::Tcp(address) => address.fmt(f),
            ServerAddress::Unix(path) => write!(f, "unix:{path}"),
        }
    }
}
