//! A QUIC endpoint on the UDP port of a TCP listener, and its accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::task::TaskTracker;

use super::connection::{self, QuicSetup};
use crate::error::{Error, ErrorKind};
use crate::server::connection::{ConnectionSetup, Routed, RoutedBody};
use crate::server::tls::TlsEndpoint;

/// How long an endpoint whose connections have all ended waits for their closing frames to
/// be acknowledged, so clients learn of the close instead of timing out; a client that does
/// not answer is not waited for longer.
const CLOSE_WAIT: Duration = Duration::from_millis(250);

/// A bound QUIC endpoint serving HTTP/3.
pub(in crate::server) struct QuicEndpoint {
    endpoint: quinn::Endpoint,
    tls: TlsEndpoint,
    address: SocketAddr,
}

impl QuicEndpoint {
    /// Binds UDP `address` (the address of a TCP listener) with `tls`' certificate, offering
    /// `h3` by ALPN.
    ///
    /// The socket is bound with `SO_REUSEPORT`, as every `--workers` process binds its own:
    /// the kernel then keeps a client's datagrams on one process by their addresses.
    pub(in crate::server) fn bind(address: SocketAddr, tls: &TlsEndpoint) -> Result<Self, Error> {
        let crypto = QuicServerConfig::try_from(tls.quic_config()).map_err(|err| {
            Error::with_source(
                ErrorKind::Tls,
                "the TLS configuration cannot serve QUIC",
                err,
            )
        })?;
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let cannot_bind = |err: std::io::Error| {
            Error::with_source(
                ErrorKind::Bind,
                format!("cannot listen on udp {address} (--http3)"),
                err,
            )
        };
        let socket = Socket::new(
            Domain::for_address(address),
            Type::DGRAM,
            Some(Protocol::UDP),
        )
        .map_err(cannot_bind)?;
        socket.set_reuse_port(true).map_err(cannot_bind)?;
        socket.set_nonblocking(true).map_err(cannot_bind)?;
        socket.bind(&address.into()).map_err(cannot_bind)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(config),
            socket.into(),
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(cannot_bind)?;
        Ok(QuicEndpoint {
            endpoint,
            tls: tls.clone(),
            address,
        })
    }

    pub(in crate::server) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Accepts connections until draining; then refuses new ones while those it has finish
    /// (or closing ends them), and closes.
    pub(in crate::server) async fn serve<S, B>(
        self,
        setup: ConnectionSetup<S>,
        max_header_bytes: usize,
        date_header: bool,
    ) where
        S: Routed<B>,
        B: RoutedBody,
    {
        let draining = setup.shutdown.draining.clone();
        let quic = QuicSetup {
            setup,
            tls: self.tls,
            server: self.address,
            max_field_section_size: u64::try_from(max_header_bytes).unwrap_or(u64::MAX),
            date_header,
        };
        let connections = TaskTracker::new();
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => {
                        connections.spawn(connection::serve(incoming, quic.clone()));
                    }
                    None => break,
                },
                () = draining.cancelled() => break,
            }
        }
        connections.close();
        let refuse_new = async {
            while let Some(incoming) = self.endpoint.accept().await {
                incoming.refuse();
            }
        };
        tokio::select! {
            () = connections.wait() => {}
            () = refuse_new => {}
        }
        let _ = tokio::time::timeout(CLOSE_WAIT, self.endpoint.wait_idle()).await;
    }
}
