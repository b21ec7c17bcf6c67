//! What the server knows of a connection, for the scope, the access log and proxy headers.
//!
//! Below both the server (which records it per connection) and the ASGI bridge (which puts it
//! in the scope), so neither depends on the other for it.

use std::net::SocketAddr;

/// Where a request came from and arrived at, recorded by the server per connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionInfo {
    /// `None` for a Unix socket peer, which has no address to report.
    pub client: Option<SocketAddr>,
    pub server: Option<ServerAddress>,
    /// TLS was terminated by this server: `https`/`wss` schemes.
    pub secure: bool,
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
