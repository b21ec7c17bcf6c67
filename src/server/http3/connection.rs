//! One QUIC connection: its HTTP/3 settings, a task per request stream, and the shutdown
//! stages. Draining sends GOAWAY (streams the client opens after the last one accepted are
//! refused, which tells it they are safe to retry) and closes the connection once its
//! requests are answered and delivered; closing drops it with its requests, so their apps
//! see `http.disconnect`, after the 500s of the ones still unanswered had a moment to go out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::Incoming;
use rustls::pki_types::CertificateDer;
use tokio::task::JoinSet;

use super::request;
use crate::connection_info::{ConnectionInfo, ServerAddress};
use crate::server::connection::{CLOSING_FLUSH, ConnectionSetup, Routed, RoutedBody};
use crate::server::tls::TlsEndpoint;

/// How many round trips without a datagram sent make a drained connection quiet: more than
/// a probe timeout (about one and a half round trips plus the ACK delay) with its backoff,
/// so data whose last packet was lost is retransmitted and acknowledged before the close.
const QUIET_ROUND_TRIPS: u32 = 3;

/// The least quiet time, for a loopback client whose round trip is microseconds: it covers
/// the peer's ACK delay (25 ms by default).
const MIN_QUIET: Duration = Duration::from_millis(100);

/// What every QUIC connection of one endpoint shares.
pub(super) struct QuicSetup<S> {
    pub(super) setup: ConnectionSetup<S>,
    pub(super) tls: TlsEndpoint,
    pub(super) server: SocketAddr,
    /// The largest request head accepted (`max_header_bytes`), announced in the settings.
    pub(super) max_field_section_size: u64,
    /// Add a `date` header to responses without one (`--date-header`).
    pub(super) date_header: bool,
}

impl<S: Clone> Clone for QuicSetup<S> {
    fn clone(&self) -> Self {
        QuicSetup {
            setup: self.setup.clone(),
            tls: self.tls.clone(),
            server: self.server,
            max_field_section_size: self.max_field_section_size,
            date_header: self.date_header,
        }
    }
}

/// Serves the connection `incoming` until the client is done with it or shutdown ends it.
pub(super) async fn serve<S, B>(incoming: Incoming, quic: QuicSetup<S>)
where
    S: Routed<B>,
    B: RoutedBody,
{
    let client = incoming.remote_address();
    let shutdown = quic.setup.shutdown.clone();
    let connection = tokio::select! {
        handshake = incoming => match handshake {
            Ok(connection) => connection,
            Err(err) => return tracing::debug!("QUIC handshake failed (client {client}): {err}"),
        },
        () = tokio::time::sleep(quic.setup.header_read_timeout) => {
            return tracing::debug!("QUIC handshake (client {client}): timed out");
        }
        () = shutdown.closing.cancelled() => return,
    };
    let client_certificates = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|certificates| *certificates)
        .unwrap_or_default();
    let tls = Arc::new(quic.tls.settled_quic(&client_certificates));
    let quic_connection = connection.clone();
    let info = ConnectionInfo {
        client: Some(client),
        server: Some(ServerAddress::Tcp(quic.server)),
        secure: true,
    };
    let mut h3 = match h3::server::builder()
        .max_field_section_size(quic.max_field_section_size)
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await
    {
        Ok(h3) => h3,
        Err(err) => return tracing::debug!("HTTP/3 set-up failed (client {client}): {err}"),
    };
    // Dropped with this function: a connection that ends takes its requests with it.
    let mut requests = JoinSet::new();
    let mut goaway_sent = false;
    loop {
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    requests.spawn(request::serve(
                        resolver,
                        quic.setup.clone(),
                        info,
                        tls.clone(),
                        quic.date_header,
                    ));
                }
                // The client sent GOAWAY and its requests are answered.
                Ok(None) => return,
                Err(err) => {
                    if !err.is_h3_no_error() {
                        tracing::debug!("HTTP/3 connection ended (client {client}): {err}");
                    }
                    return;
                }
            },
            Some(_) = requests.join_next() => {}
            () = shutdown.draining.cancelled(), if !goaway_sent => {
                goaway_sent = true;
                if h3.shutdown(0).await.is_err() {
                    return;
                }
            }
            () = shutdown.closing.cancelled() => break,
        }
        if goaway_sent && requests.is_empty() {
            tokio::select! {
                () = delivered(&quic_connection) => {}
                () = shutdown.closing.cancelled() => {}
            }
            // Dropping the connection closes it with H3_NO_ERROR.
            return;
        }
    }
    // Requests cut off unanswered are being answered 500: let those answers out.
    let _ = tokio::time::timeout(CLOSING_FLUSH, async {
        while requests.join_next().await.is_some() {}
    })
    .await;
}

/// Resolves once `connection` has sent nothing for a while (or the client closed it): the
/// responses it finished are then acknowledged. Closing discards stream data quinn has not
/// sent yet (up to its send window, megabytes), and quinn does not tell when a stream's data
/// is acknowledged, so a response handed over in full could otherwise be cut off.
async fn delivered(connection: &quinn::Connection) {
    let mut sent = connection.stats().udp_tx.datagrams;
    loop {
        let quiet = (connection.rtt() * QUIET_ROUND_TRIPS).max(MIN_QUIET);
        tokio::select! {
            _ = connection.closed() => return,
            () = tokio::time::sleep(quiet) => {}
        }
        let now = connection.stats().udp_tx.datagrams;
        if now == sent {
            return;
        }
        sent = now;
    }
}
