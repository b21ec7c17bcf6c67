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

use super::event::{ABNORMAL_CLOSURE, Event, close_frame};
use crate::shutdown::Shutdown;

/// The close code of websockets open when the server shuts down, for the client and the
/// app alike, as uvicorn sends: come back soon.
const SERVICE_RESTART: u16 = 1012;
/// How long a client has to answer that close frame before its socket is dropped.
const SERVICE_RESTART_GRACE: Duration = Duration::from_secs(1);

/// Runs an accepted websocket: frames from the client go to the app with backpressure,
/// frames from the app go to the client; pings are answered by tungstenite. When the server
/// drains, both sides are told [`SERVICE_RESTART`]; when it closes, the socket is dropped.
pub(super) async fn run_connection(
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
    incoming: mpsc::Sender<Event>,
    outgoing: mpsc::Sender<Message>,
    mut outgoing_rx: mpsc::Receiver<Message>,
    shutdown: Shutdown,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(_) => {
            let _ = incoming.send(Event::abnormal_closure()).await;
            return;
        }
    };
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (mut sink, mut stream) = socket.split();
    let restart = {
        let (incoming, outgoing) = (incoming.clone(), outgoing.clone());
        let draining = shutdown.draining.clone();
        async move {
            draining.cancelled().await;
            let goodbye = async {
                let _ = incoming
                    .send(Event::Disconnect {
                        code: SERVICE_RESTART,
                        reason: String::new(),
                    })
                    .await;
                let _ = outgoing
                    .send(close_frame(SERVICE_RESTART, String::new()))
                    .await;
                // The session ends itself once the client answers the close frame.
                std::future::pending::<()>().await;
            };
            let _ = tokio::time::timeout(SERVICE_RESTART_GRACE, goodbye).await;
        }
    };
    let writer = async move {
        while let Some(frame) = outgoing_rx.recv().await {
            let closing = matches!(frame, Message::Close(_));
            if sink.send(frame).await.is_err() || closing {
                break;
            }
        }
    };
    let reader = async move {
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
                        let _ = outgoing.send(close_frame(code, String::new())).await;
                    }
                    let _ = incoming
                        .send(Event::Disconnect {
                            code,
                            reason: String::new(),
                        })
                        .await;
                    return;
                }
            };
            let closed = matches!(event, Event::Disconnect { .. });
            if incoming.send(event).await.is_err() {
                return;
            }
            if closed {
                // Keep polling after the close frame: that flushes tungstenite's close reply.
                while let Some(Ok(_)) = stream.next().await {}
                return;
            }
        }
        let _ = incoming.send(Event::abnormal_closure()).await;
    };
    tokio::select! {
        _ = async { tokio::join!(writer, reader) } => {}
        () = restart => {}
        () = shutdown.closing.cancelled() => {}
    }
}
