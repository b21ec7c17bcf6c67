//! [`ServerHandle`]: readiness and shutdown of a running server, from elsewhere.

use std::net::SocketAddr;

use tokio::sync::watch;

/// Observe and control a running [`Server`](super::Server) from elsewhere: wait until it serves, stop it.
#[derive(Clone)]
pub struct ServerHandle {
    pub(super) ready: watch::Sender<Option<Vec<SocketAddr>>>,
    shutdown: watch::Sender<bool>,
}

impl ServerHandle {
    pub(crate) fn new() -> Self {
        ServerHandle {
            ready: watch::Sender::new(None),
            shutdown: watch::Sender::new(false),
        }
    }

    /// Resolves once the server is bound, listening and lifespan startup has completed,
    /// with the TCP addresses it listens on.
    pub async fn ready(&self) -> Vec<SocketAddr> {
        let mut ready = self.ready.subscribe();
        match ready.wait_for(Option::is_some).await {
            Ok(addresses) => addresses.clone().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Starts a graceful shutdown, as SIGTERM does.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Becomes `true` when a shutdown is requested through the handle.
    pub(crate) fn subscribe_shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}
