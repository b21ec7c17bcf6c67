//! The ASGI websocket bridge: the handshake is decided by the app (accept, close, or a
//! denial response), then tokio-tungstenite carries frames over hyper's upgraded
//! connection while `send`/`receive` park on the loop thread exactly as for HTTP.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, handshake::derive_accept_key};
use tokio_util::sync::CancellationToken;

use super::awaitable::ready;
use super::body::{ResponseBody, app_bytes};
use super::http::{flag, header_map, plain_response, request_head, response_head};
use super::parking::{Closed, Inbox, IntoMessage, Outbox};
use super::scope::{self, RequestHead};
use crate::python::{EventLoop, format_traceback};
use crate::shutdown::Shutdown;

/// Messages from the client that may wait for the app before reading stops.
const INCOMING_CAPACITY: usize = 16;
/// Messages from the app that may wait for the socket before `send` parks.
const OUTGOING_CAPACITY: usize = 16;

/// The close code the app sees when the connection ends without a close frame.
const ABNORMAL_CLOSURE: u16 = 1006;
/// The close code of websockets open when the server shuts down, for the client and the
/// app alike, as uvicorn sends: come back soon.
const SERVICE_RESTART: u16 = 1012;
/// How long a client has to answer that close frame before its socket is dropped.
const SERVICE_RESTART_GRACE: Duration = Duration::from_secs(1);

/// Whether a request asks for a websocket (RFC 6455 §4.2.1).
pub(super) fn is_upgrade_request(parts: &http::request::Parts) -> bool {
    let has_token = |name: http::header::HeaderName, token: &str| {
        parts.headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .unwrap_or("")
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    };
    parts.method == http::Method::GET
        && has_token(http::header::UPGRADE, "websocket")
        && has_token(http::header::CONNECTION, "upgrade")
}

/// Answers a websocket upgrade request by running the app's handshake.
pub(crate) async fn handle(
    event_loop: EventLoop,
    root_path: String,
    config: WebSocketConfig,
    shutdown: Shutdown,
    mut parts: http::request::Parts,
) -> Response<ResponseBody> {
    let Some(key) = parts.headers.get(http::header::SEC_WEBSOCKET_KEY).cloned() else {
        return plain_response(StatusCode::BAD_REQUEST, "Missing Sec-WebSocket-Key");
    };
    let version_ok = parts
        .headers
        .get(http::header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|version| version.as_bytes() == b"13");
    if !version_ok {
        let mut response = plain_response(
            StatusCode::UPGRADE_REQUIRED,
            "Unsupported websocket version",
        );
        response.headers_mut().insert(
            http::header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return plain_response(
            StatusCode::BAD_REQUEST,
            "This connection cannot be upgraded",
        );
    };
    let accept_key = derive_accept_key(key.as_bytes());
    let head = request_head(parts);
    let (response_tx, response_rx) = oneshot::channel();
    let gone = CancellationToken::new();
    // Dropped by hyper if the client leaves during the handshake.
    let gone_on_drop = gone.clone().drop_guard();
    let job_loop = event_loop.clone();
    event_loop.submit(Box::new(move |py| {
        start(
            py,
            job_loop,
            head,
            root_path,
            Handshake {
                response_tx,
                on_upgrade,
                accept_key,
                config,
                shutdown,
                gone,
                denial: None,
            },
        )
    }));
    let response = response_rx.await.unwrap_or_else(|_| {
        plain_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    });
    gone_on_drop.disarm();
    response
}

fn start(
    py: Python<'_>,
    event_loop: EventLoop,
    head: RequestHead,
    root_path: String,
    handshake: Handshake,
) {
    let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_CAPACITY);
    let _ = incoming_tx.try_send(Event::Connect);
    let cycle = WebSocketCycle {
        event_loop: event_loop.clone(),
        inbox: Inbox::new(Source {
            events: incoming_rx,
            gone: handshake.gone.clone(),
        }),
        outbox: Outbox::new(),
        phase: Phase::Handshake(Box::new(handshake)),
        incoming_tx: Some(incoming_tx),
    };
    let cycle = match Bound::new(py, cycle) {
        Ok(cycle) => cycle,
        Err(err) => {
            tracing::error!(
                "cannot start the websocket:\n{}",
                format_traceback(py, &err)
            );
            return;
        }
    };
    let run = || -> PyResult<()> {
        let objects = event_loop.objects();
        let scope = websocket_scope(py, &head, &root_path, objects.state.bind(py))?;
        event_loop.spawn_app(py, cycle.as_any(), scope)
    };
    if let Err(err) = run() {
        cycle.borrow_mut().app_finished(py, Some(err));
    }
}

fn websocket_scope<'py>(
    py: Python<'py>,
    head: &RequestHead,
    root_path: &str,
    state: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = PyDict::new(py);
    scope.set_item(intern!(py, "type"), intern!(py, "websocket"))?;
    let asgi = PyDict::new(py);
    asgi.set_item(intern!(py, "version"), intern!(py, "3.0"))?;
    asgi.set_item(
        intern!(py, "spec_version"),
        intern!(py, scope::SPEC_VERSION),
    )?;
    scope.set_item(intern!(py, "asgi"), asgi)?;
    scope.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
    let scheme = if head.connection.secure {
        intern!(py, "wss")
    } else {
        intern!(py, "ws")
    };
    scope.set_item(intern!(py, "scheme"), scheme)?;
    scope::fill_common(py, &scope, head, root_path, state)?;
    let subprotocols = PyList::empty(py);
    for value in head.headers.get_all(http::header::SEC_WEBSOCKET_PROTOCOL) {
        for protocol in value.to_str().unwrap_or("").split(',') {
            let protocol = protocol.trim();
            if !protocol.is_empty() {
                subprotocols.append(protocol)?;
            }
        }
    }
    scope.set_item(intern!(py, "subprotocols"), subprotocols)?;
    let extensions = PyDict::new(py);
    extensions.set_item("websocket.http.response", PyDict::new(py))?;
    scope.set_item(intern!(py, "extensions"), extensions)?;
    Ok(scope)
}

/// Everything needed to answer the handshake, until the app decides.
struct Handshake {
    response_tx: oneshot::Sender<Response<ResponseBody>>,
    on_upgrade: OnUpgrade,
    accept_key: String,
    config: WebSocketConfig,
    shutdown: Shutdown,
    gone: CancellationToken,
    /// A denial response being assembled (`websocket.http.response.*`).
    denial: Option<(http::response::Parts, BytesMut)>,
}

enum Phase {
    Handshake(Box<Handshake>),
    Open(mpsc::Sender<Message>),
    Closed,
}

/// Where `receive()` reads from: events of the connection, or the client leaving during
/// the handshake.
struct Source {
    events: mpsc::Receiver<Event>,
    gone: CancellationToken,
}

enum Event {
    Connect,
    Text(String),
    Binary(Bytes),
    Disconnect { code: u16, reason: String },
}

impl IntoMessage for Event {
    fn into_message(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let message = PyDict::new(py);
        match self {
            Event::Connect => {
                message.set_item(intern!(py, "type"), intern!(py, "websocket.connect"))?
            }
            Event::Text(text) => {
                message.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
                message.set_item(intern!(py, "text"), text)?;
            }
            Event::Binary(bytes) => {
                message.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
                message.set_item(intern!(py, "bytes"), PyBytes::new(py, &bytes))?;
            }
            Event::Disconnect { code, reason } => {
                message.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
                message.set_item(intern!(py, "code"), code)?;
                message.set_item(intern!(py, "reason"), reason)?;
            }
        }
        Ok(message.into_any().unbind())
    }
}

/// One websocket's ASGI `receive`/`send` pair. Lives on the loop thread.
#[pyclass(unsendable)]
pub struct WebSocketCycle {
    event_loop: EventLoop,
    inbox: Inbox<Source, Event>,
    outbox: Outbox<Message>,
    phase: Phase,
    /// Handed to the connection task on accept; dropping it unaccepted ends `receive()`.
    incoming_tx: Option<mpsc::Sender<Event>>,
}

#[pymethods]
impl WebSocketCycle {
    fn receive(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let mut cycle = slf.borrow_mut();
        let event_loop = cycle.event_loop.clone();
        if let Some(answer) = cycle.inbox.pending(py, &event_loop) {
            return answer;
        }
        let Some(mut source) = cycle.inbox.source.take() else {
            return ready(py, Some(abnormal_closure().into_message(py)?));
        };
        match source.events.try_recv() {
            Ok(event) => {
                if !matches!(event, Event::Disconnect { .. }) {
                    cycle.inbox.source = Some(source);
                }
                ready(py, Some(event.into_message(py)?))
            }
            Err(mpsc::error::TryRecvError::Disconnected) => {
                ready(py, Some(abnormal_closure().into_message(py)?))
            }
            Err(mpsc::error::TryRecvError::Empty) => {
                drop(cycle);
                Inbox::start_read(slf, &event_loop, WebSocketCycle::inbox, next_event(source))
            }
        }
    }

    fn send(slf: &Bound<'_, Self>, message: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let message_type = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("ASGI message has no 'type' key"))?;
        let message_type = message_type.cast::<PyString>()?.to_str()?;
        let (push, event_loop) = {
            let mut cycle = slf.borrow_mut();
            let push = match message_type {
                "websocket.accept" => cycle.accept(py, message)?,
                "websocket.send" => cycle.send_data(py, message)?,
                "websocket.close" => cycle.close(py, message)?,
                "websocket.http.response.start" => cycle.denial_start(message)?,
                "websocket.http.response.body" => cycle.denial_body(py, message)?,
                other => {
                    return Err(PyRuntimeError::new_err(format!(
                        "Unexpected ASGI message '{other}' sent by a websocket app."
                    )));
                }
            };
            (push, cycle.event_loop.clone())
        };
        match push {
            None => ready(py, None),
            Some((sender, frame)) => {
                match Outbox::push(slf, &event_loop, WebSocketCycle::outbox, &sender, frame)? {
                    Ok(awaitable) => Ok(awaitable),
                    Err(Closed) => Err(PyOSError::new_err("the websocket connection is closed")),
                }
            }
        }
    }

    fn _app_done(&mut self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let error = self.event_loop.app_done(task)?;
        self.app_finished(task.py(), error);
        Ok(())
    }
}

/// A frame for the connection, queued once the cycle is no longer borrowed.
type Push = Option<(mpsc::Sender<Message>, Message)>;

impl WebSocketCycle {
    fn inbox(&mut self) -> &mut Inbox<Source, Event> {
        &mut self.inbox
    }

    fn outbox(&mut self) -> &mut Outbox<Message> {
        &mut self.outbox
    }

    fn handshake(&mut self, message_type: &str) -> PyResult<Handshake> {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Handshake(handshake) => Ok(*handshake),
            other => {
                self.phase = other;
                Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message '{message_type}': the websocket handshake is over."
                )))
            }
        }
    }

    fn accept(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        let mut headers = match message.get_item(intern!(py, "headers"))? {
            Some(headers) => header_map(&headers)?,
            None => HeaderMap::new(),
        };
        if let Some(subprotocol) = message.get_item(intern!(py, "subprotocol"))?
            && !subprotocol.is_none()
        {
            let subprotocol: String = subprotocol.extract()?;
            let value = HeaderValue::from_str(&subprotocol)
                .map_err(|_| PyValueError::new_err("invalid websocket subprotocol"))?;
            headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        let handshake = self.handshake("websocket.accept")?;
        let accept_key =
            HeaderValue::from_str(&handshake.accept_key).expect("base64 is a valid header value");
        let mut response = Response::new(ResponseBody::full(Bytes::new(), None));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *response.headers_mut() = headers;
        let response_headers = response.headers_mut();
        response_headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        response_headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        response_headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept_key);
        let (outgoing_tx, outgoing_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let incoming_tx = self
            .incoming_tx
            .take()
            .expect("present until the handshake ends");
        handshake.shutdown.tasks.spawn_on(
            run_connection(
                handshake.on_upgrade,
                handshake.config,
                incoming_tx,
                outgoing_tx.clone(),
                outgoing_rx,
                handshake.shutdown.clone(),
            ),
            self.event_loop.runtime(),
        );
        let _ = handshake.response_tx.send(response);
        self.phase = Phase::Open(outgoing_tx);
        Ok(None)
    }

    fn send_data(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        let sender = match &self.phase {
            Phase::Open(sender) => sender.clone(),
            Phase::Closed => return Err(PyOSError::new_err("the websocket connection is closed")),
            Phase::Handshake(_) => {
                return Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'websocket.send' before 'websocket.accept'.",
                ));
            }
        };
        let text = message
            .get_item(intern!(py, "text"))?
            .filter(|text| !text.is_none());
        let frame = match text {
            Some(text) => Message::Text(text.extract::<String>()?.into()),
            None => match message
                .get_item(intern!(py, "bytes"))?
                .filter(|bytes| !bytes.is_none())
            {
                Some(bytes) => {
                    Message::Binary(app_bytes(bytes.cast::<PyBytes>().map_err(|_| {
                        PyTypeError::new_err("'websocket.send' bytes must be bytes")
                    })?))
                }
                None => {
                    return Err(PyValueError::new_err(
                        "'websocket.send' needs a 'text' or a 'bytes' key",
                    ));
                }
            },
        };
        Ok(Some((sender, frame)))
    }

    fn close(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        let code = match message.get_item(intern!(py, "code"))? {
            Some(code) if !code.is_none() => code.extract::<u16>()?,
            _ => 1000,
        };
        let reason = match message.get_item(intern!(py, "reason"))? {
            Some(reason) if !reason.is_none() => reason.extract::<String>()?,
            _ => String::new(),
        };
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            // Closing before accepting refuses the handshake, as uvicorn does.
            Phase::Handshake(handshake) => {
                self.deny(*handshake, plain_response(StatusCode::FORBIDDEN, ""));
                Ok(None)
            }
            Phase::Open(sender) => Ok(Some((sender, close_frame(code, reason)))),
            Phase::Closed => Ok(None),
        }
    }

    fn denial_start(&mut self, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        let head = response_head(message, "websocket.http.response.start")?;
        let mut handshake = self.handshake("websocket.http.response.start")?;
        if handshake.denial.is_some() {
            self.phase = Phase::Handshake(Box::new(handshake));
            return Err(PyRuntimeError::new_err(
                "Unexpected ASGI message 'websocket.http.response.start' sent twice.",
            ));
        }
        handshake.denial = Some((head, BytesMut::new()));
        self.phase = Phase::Handshake(Box::new(handshake));
        Ok(None)
    }

    fn denial_body(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        let mut handshake = self.handshake("websocket.http.response.body")?;
        let Some((head, mut body)) = handshake.denial.take() else {
            self.phase = Phase::Handshake(Box::new(handshake));
            return Err(PyRuntimeError::new_err(
                "Unexpected ASGI message 'websocket.http.response.body' before \
                 'websocket.http.response.start'.",
            ));
        };
        if let Some(chunk) = message.get_item(intern!(py, "body"))? {
            body.extend_from_slice(chunk.cast::<PyBytes>()?.as_bytes());
        }
        if flag(message, intern!(py, "more_body"))? {
            handshake.denial = Some((head, body));
            self.phase = Phase::Handshake(Box::new(handshake));
        } else {
            let response = Response::from_parts(head, ResponseBody::full(body.freeze(), None));
            self.deny(handshake, response);
        }
        Ok(None)
    }

    /// Answers the handshake with a plain HTTP response; the app's `receive()` then ends.
    fn deny(&mut self, handshake: Handshake, response: Response<ResponseBody>) {
        let _ = handshake.response_tx.send(response);
        self.incoming_tx = None;
    }

    fn app_finished(&mut self, py: Python<'_>, error: Option<PyErr>) {
        if let Some(error) = &error {
            tracing::error!(
                "Exception in ASGI application\n{}",
                format_traceback(py, error)
            );
        }
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Handshake(handshake) => {
                let response = match (&error, handshake.denial) {
                    (None, None) => plain_response(StatusCode::FORBIDDEN, ""),
                    _ => plain_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
                };
                let _ = handshake.response_tx.send(response);
            }
            Phase::Open(sender) => {
                let code = if error.is_some() { 1011 } else { 1000 };
                self.event_loop.runtime().spawn(async move {
                    let _ = sender.send(close_frame(code, String::new())).await;
                });
            }
            Phase::Closed => {}
        }
        self.incoming_tx = None;
    }
}

fn close_frame(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }))
}

fn abnormal_closure() -> Event {
    Event::Disconnect {
        code: ABNORMAL_CLOSURE,
        reason: String::new(),
    }
}

/// Waits for the next event; the client leaving mid-handshake counts as a disconnect.
async fn next_event(mut source: Source) -> (Option<Source>, Event) {
    let event = tokio::select! {
        event = source.events.recv() => event.unwrap_or_else(abnormal_closure),
        () = source.gone.cancelled(), if source.events.is_empty() => abnormal_closure(),
    };
    let source = (!matches!(event, Event::Disconnect { .. })).then_some(source);
    (source, event)
}

/// Runs an accepted websocket: frames from the client go to the app with backpressure,
/// frames from the app go to the client; pings are answered by tungstenite. When the server
/// drains, both sides are told [`SERVICE_RESTART`]; when it closes, the socket is dropped.
async fn run_connection(
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
            let _ = incoming.send(abnormal_closure()).await;
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
        let _ = incoming.send(abnormal_closure()).await;
    };
    tokio::select! {
        _ = async { tokio::join!(writer, reader) } => {}
        () = restart => {}
        () = shutdown.closing.cancelled() => {}
    }
}
