//! The stages of a graceful shutdown, shared by the server's connections and the app's
//! websockets (which outlive the HTTP connection they were upgraded from).

use tokio_util::task::TaskTracker;

use crate::signal::Signal;

/// The shutdown stages every connection watches, and the tasks that serve clients, which
/// shutdown waits for: connections, and the websockets upgraded from them, which outlive
/// their HTTP connection.
#[derive(Clone, Default)]
pub(crate) struct Shutdown {
    /// Finish the requests in flight, then close (HTTP/1 stops keep-alive, HTTP/2 sends
    /// GOAWAY, websockets close with 1012).
    pub(crate) draining: Signal,
    /// Drop the connection now; its requests' apps see `http.disconnect`.
    pub(crate) closing: Signal,
    pub(crate) tasks: TaskTracker,
}
