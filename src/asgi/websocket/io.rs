//! The socket pump of an accepted websocket: frames from the client go to the app with
//! backpressure, frames from the app go to the client; pings are answered by tungstenite.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use tokio_util::sync::CancellationToken;

use super::event::{ABNORMAL_CLOSURE, Event, close_frame};
use crate::metrics::Counted;
use crate::shutdown::Shutdown;

/// Messages from the app that may wait for the socket before `send` parks.
const OUTGOING_CAPACITY: usize = 16;
/// The close code of websockets open when the server shuts down, for the client and the
/// app alike, as uvicorn sends: come back soon.
const SERVICE_RESTART: u16 = 1012;
/// How long a client has to answer that close frame before its socket is dropped.
const SERVICE_RESTART_GRACE: Duration = Duration::from_secs(1);

/// The cycle's side of an accepted websocket's connection task.
pub(super) struct Connection {
    /// Frames for the client.
    pub(super) frames: mpsc::Sender<Message>,
    /// Fired before the app hears that the session ends (the client's close frame, a broken
    /// connection, shutdown): whatever the app sends after that has no one to go to.
    pub(super) closing: CancellationToken,
    app_ended: CancellationToken,
}

impl Connection {
    /// The app ended without closing: once the frames it sent are written, the connection
    /// is dropped without a close frame (the client sees 1006), as uvicorn does. A close
    /// already under way is left to finish.
    pub(super) fn app_ended(&self) {
        self.app_ended.cancel();
    }
}

/// Starts the connection task of an accepted websocket on `runtime`; events for the app go
/// to `incoming`.
pub(super) fn spawn(
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
    incoming: mpsc::Sender<Event>,
    shutdown: &Shutdown,
    runtime: &tokio::runtime::Handle,
) -> Connection {
    let (frames, frames_rx) = mpsc::channel(OUTGOING_CAPACITY);
    let connection = Connection {
        frames,
        closing: CancellationToken::new(),
        app_ended: CancellationToken::new(),
    };
    let session = Session {
        incoming,
        outgoing: connection.frames.clone(),
        closing: connection.closing.clone(),
    };
    let app_ended = connection.app_ended.clone();
    shutdown.tasks.spawn_on(
        run_connection(
            on_upgrade,
            config,
            session,
            frames_rx,
            app_ended,
            shutdown.clone(),
        ),
        runtime,
    );
    connection
}

/// The connection task's ends of the channels, and how it tells that the session ends.
#[derive(Clone)]
struct Session {
    incoming: mpsc::Sender<Event>,
    outgoing: mpsc::Sender<Message>,
    closing: CancellationToken,
}

impl Session {
    /// Tells the app the session ended; from now on its messages are refused.
    async fn ended(&self, code: u16, reason: String) {
        self.closing.cancel();
        let _ = self.incoming.send(Event::Disconnect { code, reason }).await;
    }
}

/// Runs an accepted websocket: frames from the client go to the app with backpressure,
/// frames from the app go to the client; pings are answered by tungstenite. When the server
/// drains, both sides are told [`SERVICE_RESTART`]; when it closes, or the app ended without
/// closing, the socket is dropped.
async fn run_connection(
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
    session: Session,
    mut outgoing_rx: mpsc::Receiver<Message>,
    app_ended: CancellationToken,
    shutdown: Shutdown,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(_) => return session.ended(ABNORMAL_CLOSURE, String::new()).await,
    };
    let _open = Counted::websocket();
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (mut sink, mut stream) = socket.split();
    let restart = {
        let session = session.clone();
        let draining = shutdown.draining.clone();
        async move {
            draining.cancelled().await;
            let goodbye = async {
                session.ended(SERVICE_RESTART, String::new()).await;
                let _ = session
                    .outgoing
                    .send(close_frame(SERVICE_RESTART, String::new()))
                    .await;
                // The session ends itself once the client answers the close frame.
                std::future::pending::<()>().await;
            };
            let _ = tokio::time::timeout(SERVICE_RESTART_GRACE, goodbye).await;
        }
    };
    let dropped = CancellationToken::new();
    // The client's frames are all read: its close handshake is done, or it is gone.
    let read_all = CancellationToken::new();
    let writer = {
        let (closing, dropped, read_all) =
            (session.closing.clone(), dropped.clone(), read_all.clone());
        async move {
            let mut app_ended_heard = false;
            loop {
                tokio::select! {
                    biased;
                    frame = outgoing_rx.recv() => {
                        let Some(frame) = frame else { break };
                        let closing = matches!(frame, Message::Close(_));
                        if sink.send(frame).await.is_err() || closing {
                            break;
                        }
                    }
                    // Heard only once the app's frames are written.
                    () = app_ended.cancelled(), if !app_ended_heard => {
                        app_ended_heard = true;
                        if !closing.is_cancelled() {
                            dropped.cancel();
                            break;
                        }
                    }
                    // A close under way with the app ended: the writer waits for frames only
                    // until the client's side is done (else the socket would be held forever,
                    // by the channel's sender the app's cycle keeps).
                    () = read_all.cancelled(), if app_ended_heard => break,
                }
            }
        }
    };
    let reader = async move {
        let _read_all = read_all.drop_guard();
        while let Some(frame) = stream.next().await {
            let event = match frame {
                Ok(Message::Text(text)) => Event::Text(text.as_str().to_owned()),
                Ok(Message::Binary(bytes)) => Event::Binary(bytes),
                Ok(Message::Close(frame)) => Event::Disconnect {
                    code: frame.as_ref().map_or(1005, |frame| u16::from(frame.code)),
                    reason: frame
                        .map(|frame| frame.reason.as_str().to_owned())
                        .unwrap_or_default(),
                },
                Ok(_) => continue,
                Err(err) => {
                    let code = match err {
                        WsError::Capacity(_) => 1009,
                        WsError::Utf8(_) => 1007,
                        // The peer vanished: nothing to close, and 1006 for the app.
                        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                            ABNORMAL_CLOSURE
                        }
                        WsError::Protocol(_) => 1002,
                        _ => ABNORMAL_CLOSURE,
                    };
                    if code != ABNORMAL_CLOSURE {
                        let _ = session
                            .outgoing
                            .send(close_frame(code, String::new()))
                            .await;
                    }
                    return session.ended(code, String::new()).await;
                }
            };
            if let Event::Disconnect { code, reason } = event {
                session.ended(code, reason).await;
                // Keep polling after the close frame: that flushes tungstenite's close reply.
                while let Some(Ok(_)) = stream.next().await {}
                return;
            }
            if session.incoming.send(event).await.is_err() {
                return;
            }
        }
        session.ended(ABNORMAL_CLOSURE, String::new()).await;
    };
    tokio::select! {
        _ = async { tokio::join!(writer, reader) } => {}
        () = dropped.cancelled() => {}
        () = restart => {}
        () = shutdown.closing.cancelled() => {}
    }
}
