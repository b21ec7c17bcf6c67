//! The socket pump of an accepted websocket: frames from the client go to the app with
//! backpressure, frames from the app go to the client; pings are answered by yawc.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use http::HeaderValue;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use yawc::streaming::Streaming;
use yawc::{Frame, OpCode, Options, Role, WebSocket, WebSocketError};

use super::event::{ABNORMAL_CLOSURE, Event, close_frame};
use super::message::Assembler;
use crate::metrics::Counted;
use crate::shutdown::Shutdown;
use crate::signal::Signal;

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
    pub(super) frames: mpsc::Sender<Frame>,
    /// Fired before the app hears that the session ends (the client's close frame, a broken
    /// connection, shutdown): whatever the app sends after that has no one to go to.
    pub(super) closing: Signal,
    app_ended: Signal,
}

impl Connection {
    /// The app ended without closing: once the frames it sent are written, the connection
    /// is dropped without a close frame (the client sees 1006), as uvicorn does. A close
    /// already under way is left to finish.
    pub(super) fn app_ended(&self) {
        self.app_ended.cancel();
    }
}

/// How an app's websockets are carried: messages up to `max_size` bytes are accepted from
/// clients, and permessage-deflate (RFC 7692) is agreed with a client that offers it when
/// the server allows it.
#[derive(Clone)]
pub(crate) struct Settings {
    max_size: usize,
    options: Options,
}

impl Settings {
    pub(crate) fn new(max_size: usize, per_message_deflate: bool) -> Self {
        // yawc refuses a frame of its limit or more; ours is the largest message accepted.
        let limit = max_size.saturating_add(1);
        let options = Options::default()
            .with_max_payload_read(limit)
            .with_no_delay();
        let options = if per_message_deflate {
            // An empty message is sent uncompressed: yawc 0.5 compressing one right after
            // another message loops forever (its sync flush waits for output zlib never
            // writes).
            options
                .with_balanced_compression()
                .with_compression_threshold(1)
        } else {
            options.without_compression()
        };
        Settings { max_size, options }
    }

    /// What yawc is given: the frame limit and the compression offered.
    pub(super) fn options(&self) -> &Options {
        &self.options
    }
}

/// Starts the connection task of an accepted websocket on `runtime`; events for the app go
/// to `incoming`. `extensions` is what the 101 agreed (`Sec-WebSocket-Extensions`).
pub(super) fn spawn(
    on_upgrade: OnUpgrade,
    extensions: Option<HeaderValue>,
    settings: Settings,
    incoming: mpsc::Sender<Event>,
    shutdown: &Shutdown,
    runtime: &tokio::runtime::Handle,
) -> Connection {
    let (frames, frames_rx) = mpsc::channel(OUTGOING_CAPACITY);
    let connection = Connection {
        frames,
        closing: Signal::new(),
        app_ended: Signal::new(),
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
            extensions,
            settings,
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
    outgoing: mpsc::Sender<Frame>,
    closing: Signal,
}

impl Session {
    /// Tells the app the session ended; from now on its messages are refused.
    async fn ended(&self, code: u16, reason: String) {
        self.closing.cancel();
        let _ = self.incoming.send(Event::Disconnect { code, reason }).await;
    }
}

/// yawc's frame layer over the upgraded connection, as a stream that keeps its errors: the
/// app hears why the client's frames were refused. The stream ends once the connection is
/// closed (a close frame read, or the socket at its end).
struct Frames(Streaming<TokioIo<Upgraded>>);

impl Stream for Frames {
    type Item = Result<Frame, WebSocketError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match ready!(self.get_mut().0.poll_next_frame(cx)) {
            Err(WebSocketError::ConnectionClosed) => Poll::Ready(None),
            read => Poll::Ready(Some(read)),
        }
    }
}

impl Sink<Frame> for Frames {
    type Error = WebSocketError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().0.poll_ready_unpin(cx)
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        self.get_mut().0.start_send_unpin(frame)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().0.poll_flush_unpin(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().0.poll_close_unpin(cx)
    }
}

/// The close code the app hears for a frame yawc refused. yawc has queued a close frame
/// with that code for the client (1003 for an unknown opcode: see [`run_connection`]).
fn refused_frame_code(error: &WebSocketError) -> u16 {
    match error {
        WebSocketError::FrameTooLarge => 1009,
        WebSocketError::InvalidUTF8 => 1007,
        WebSocketError::IoError(_) => ABNORMAL_CLOSURE,
        _ => 1002,
    }
}

/// Runs an accepted websocket: frames from the client go to the app with backpressure,
/// frames from the app go to the client; pings are answered by yawc. When the server
/// drains, both sides are told [`SERVICE_RESTART`]; when it closes, or the app ended without
/// closing, the socket is dropped.
async fn run_connection(
    on_upgrade: OnUpgrade,
    extensions: Option<HeaderValue>,
    settings: Settings,
    session: Session,
    mut outgoing_rx: mpsc::Receiver<Frame>,
    app_ended: Signal,
    shutdown: Shutdown,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(_) => return session.ended(ABNORMAL_CLOSURE, String::new()).await,
    };
    let _open = Counted::websocket();
    let extensions = extensions.as_ref().and_then(|value| value.to_str().ok());
    let socket = WebSocket::from_stream_with_extensions(
        TokioIo::new(upgraded),
        Role::Server,
        extensions,
        settings.options,
    );
    let Ok(socket) = socket else {
        // The extensions were agreed from these very options: this does not happen.
        return session.ended(ABNORMAL_CLOSURE, String::new()).await;
    };
    let (mut sink, mut stream) = Frames(socket.into_streaming()).split();
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
    let dropped = Signal::new();
    // The connection is to be dropped once the app has heard why: nothing more is written,
    // not even a frame of the app's, whose flush would send the close frame yawc queued.
    let muted = Signal::new();
    // The client's frames are all read: its close handshake is done, or it is gone.
    let read_all = Signal::new();
    // The server's close frame is written: the client's close frame answers it.
    let close_sent = Signal::new();
    let writer = {
        let (closing, dropped, muted, read_all, close_sent) = (
            session.closing.clone(),
            dropped.clone(),
            muted.clone(),
            read_all.clone(),
            close_sent.clone(),
        );
        async move {
            let mut app_ended_heard = false;
            loop {
                tokio::select! {
                    biased;
                    () = muted.cancelled() => break,
                    frame = outgoing_rx.recv() => {
                        let Some(frame) = frame else { break };
                        let closing = frame.opcode() == OpCode::Close;
                        if closing {
                            close_sent.cancel();
                        }
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
    let reader = {
        let (dropped, muted) = (dropped.clone(), muted.clone());
        async move {
            let _read_all = read_all.drop_guard();
            let mut messages = Assembler::new(settings.max_size);
            while let Some(frame) = stream.next().await {
                let frame = match frame {
                    Ok(frame) => frame,
                    // An unknown opcode is a protocol error (1002), which yawc closes with
                    // 1003: the connection is dropped before that frame goes out.
                    Err(WebSocketError::InvalidOpCode(_)) => {
                        muted.cancel();
                        session.ended(1002, String::new()).await;
                        return dropped.cancel();
                    }
                    Err(error) => {
                        session
                            .ended(refused_frame_code(&error), String::new())
                            .await;
                        // Keep polling: that writes the close frame yawc queued.
                        while stream.next().await.is_some() {}
                        return;
                    }
                };
                let event = match frame.opcode() {
                    OpCode::Ping | OpCode::Pong => continue,
                    // RFC 6455 §5.5: a control frame's payload is at most 125 bytes. yawc
                    // queued its echo of this one, so the connection is dropped instead.
                    OpCode::Close if frame.payload().len() > 125 => {
                        muted.cancel();
                        session.ended(1002, String::new()).await;
                        return dropped.cancel();
                    }
                    OpCode::Close => {
                        let code = frame.close_code().map_or(1005, u16::from);
                        let reason = frame.close_reason().ok().flatten().unwrap_or_default();
                        session.ended(code, reason.to_owned()).await;
                        if !close_sent.is_cancelled() {
                            // Keep polling after the close frame: that writes yawc's reply.
                            while stream.next().await.is_some() {}
                        }
                        return;
                    }
                    _ => match messages.push(frame) {
                        Ok(Some(event)) => event,
                        Ok(None) => continue,
                        Err(refused) => {
                            let code = refused.close_code();
                            let _ = session
                                .outgoing
                                .send(close_frame(code, String::new()))
                                .await;
                            return session.ended(code, String::new()).await;
                        }
                    },
                };
                if session.incoming.send(event).await.is_err() {
                    return;
                }
            }
            session.ended(ABNORMAL_CLOSURE, String::new()).await;
        }
    };
    tokio::select! {
        _ = async { tokio::join!(writer, reader) } => {}
        () = dropped.cancelled() => {}
        () = restart => {}
        () = shutdown.closing.cancelled() => {}
    }
}
