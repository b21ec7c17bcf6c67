//! The worker's end of its lifeline: "ready" goes up once lifespan startup is done, and
//! end-of-file comes down when the supervisor has gone.

use std::os::fd::RawFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::ServerHandle;
use crate::error::{Error, ErrorKind};
use crate::server::inherited_socket;

/// A worker's end of its lifeline to the supervisor.
pub(crate) struct Lifeline(UnixStream);

impl Lifeline {
    /// Takes the descriptor given with the lifeline flag. Call inside a Tokio runtime.
    pub(crate) fn inherited(fd: RawFd) -> Result<Self, Error> {
        let socket = std::os::unix::net::UnixStream::from(inherited_socket(fd)?);
        socket
            .set_nonblocking(true)
            .and_then(|()| UnixStream::from_std(socket))
            .map(Lifeline)
            .map_err(|err| {
                Error::with_source(
                    ErrorKind::System,
                    "cannot use the supervisor's lifeline",
                    err,
                )
            })
    }

    /// Reports `server` ready to the supervisor once it is, and shuts it down gracefully if
    /// the supervisor goes away.
    pub(crate) async fn attend(self, server: ServerHandle) {
        let (mut from_supervisor, mut to_supervisor) = self.0.into_split();
        // The supervisor never writes: a read returns only when it is gone.
        let mut gone = [0; 1];
        let ready = tokio::select! {
            _ = server.ready() => true,
            _ = from_supervisor.read(&mut gone) => false,
        };
        if ready {
            let _ = to_supervisor.write_all(b"r").await;
            let _ = from_supervisor.read(&mut gone).await;
        }
        tracing::warn!("the supervisor has gone: shutting down");
        server.shutdown();
    }
}
