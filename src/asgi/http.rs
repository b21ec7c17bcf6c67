//! The ASGI HTTP bridge: a Tower service on the Tokio side, a `send`/`receive` pair on
//! the loop thread, and nothing but Rust-owned data crossing between them.
//!
//! A request travels like this:
//! 1. [`AsgiService::call`] (Tokio) reads small bodies, then queues a job for the loop.
//! 2. [`start`] (loop thread) builds the scope and runs `app(scope, receive, send)` as a task.
//! 3. [`HttpCycle::send`] turns ASGI messages into an `http::Response`, handed back over a
//!    oneshot channel — in one piece when the first body message is also the last,
//!    otherwise with a bounded channel that streams the rest.
//! 4. [`HttpCycle::receive`] answers at once when it can; otherwise it parks on an asyncio
//!    future that a Tokio task resolves (through the job queue) when data or a disconnect
//!    arrives.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::awaitable::ready;
use super::body::{IncomingBody, RequestBody, ResponseBody, StreamItem, app_bytes};
use super::parking::{Closed, Inbox, IntoMessage, Outbox};
use super::scope::{self, RequestHead};
use super::websocket;
use crate::BoxError;
use crate::connection_info::ConnectionInfo;
use crate::python::{EventLoop, format_traceback};
use crate::shutdown::Shutdown;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Chunks of a streamed response that may wait for the socket before `send` parks.
const STREAM_CHANNEL_CAPACITY: usize = 4;

/// Forwards HTTP requests into the Python app. Cheap to clone; works under any Tower stack.
#[derive(Clone)]
pub struct AsgiService {
    shared: Arc<ServiceConfig>,
}

struct ServiceConfig {
    event_loop: EventLoop,
    root_path: String,
    /// Largest websocket message or frame accepted from a client.
    ws_max_size: usize,
    /// Websockets close when the server shuts down.
    shutdown: Shutdown,
}

impl AsgiService {
    pub(crate) fn new(
        event_loop: EventLoop,
        root_path: String,
        ws_max_size: usize,
        shutdown: Shutdown,
    ) -> Self {
        AsgiService {
            shared: Arc::new(ServiceConfig {
                event_loop,
                root_path,
                ws_max_size,
                shutdown,
            }),
        }
    }
}

impl<B> tower::Service<Request<B>> for AsgiService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if let Some(answer) = super::probe::answer(&request) {
            return Box::pin(std::future::ready(Ok(answer)));
        }
        let shared = self.shared.clone();
        Box::pin(async move { Ok(shared.handle(request).await) })
    }
}

impl ServiceConfig {
    async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        if websocket::is_upgrade_request(&parts) {
            let config = WebSocketConfig::default()
                .max_message_size(Some(self.ws_max_size))
                .max_frame_size(Some(self.ws_max_size));
            return websocket::handle(
                self.event_loop.clone(),
                self.root_path.clone(),
                config,
                self.shutdown.clone(),
                parts,
            )
            .await;
        }
        let body = match RequestBody::prepare(&parts.headers, body).await {
            Ok(body) => body,
            Err(_) => return plain_response(StatusCode::BAD_REQUEST, "Bad Request"),
        };
        let head = request_head(parts);
        let (response_tx, response_rx) = oneshot::channel();
        let disconnect = CancellationToken::new();
        // Hyper drops this future when the client goes away before the response is ready.
        let disconnect_on_drop = disconnect.clone().drop_guard();
        let event_loop = self.event_loop.clone();
        let root_path = self.root_path.clone();
        self.event_loop.submit(Box::new(move |py| {
            start(
                py,
                event_loop,
                Exchange {
                    head,
                    body,
                    root_path,
                    response_tx,
                    disconnect,
                },
            )
        }));
        let response = response_rx.await.unwrap_or_else(|_| internal_error());
        disconnect_on_drop.disarm();
        response
    }
}

/// The request head as the client sent it: behind `Router::nest` axum has stripped the
/// prefix from the URI, but Python must see the original path, as under uvicorn.
pub(crate) fn request_head(mut parts: http::request::Parts) -> RequestHead {
    let uri = parts
        .extensions
        .remove::<axum::extract::OriginalUri>()
        .map_or(parts.uri, |original| original.0);
    let path_and_query = uri
        .into_parts()
        .path_and_query
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let connection = parts
        .extensions
        .get::<ConnectionInfo>()
        .copied()
        .or_else(|| {
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| ConnectionInfo {
                    client: Some(info.0),
                    ..ConnectionInfo::default()
                })
        })
        .unwrap_or_default();
    RequestHead {
        method: parts.method,
        version: parts.version,
        path_and_query,
        headers: parts.headers,
        connection,
    }
}

/// Everything one request hands to the loop thread.
struct Exchange {
    head: RequestHead,
    body: RequestBody,
    root_path: String,
    response_tx: oneshot::Sender<Response<ResponseBody>>,
    disconnect: CancellationToken,
}

/// Runs on the loop thread: builds the scope and starts the app as an asyncio task.
fn start(py: Python<'_>, event_loop: EventLoop, exchange: Exchange) {
    let Exchange {
        head,
        body,
        root_path,
        response_tx,
        disconnect,
    } = exchange;
    let head_request = head.method == http::Method::HEAD;
    let cycle = match Bound::new(
        py,
        HttpCycle::new(
            event_loop.clone(),
            body,
            response_tx,
            disconnect,
            head_request,
        ),
    ) {
        Ok(cycle) => cycle,
        Err(err) => {
            tracing::error!("cannot start the request:\n{}", format_traceback(py, &err));
            return;
        }
    };
    let run = || -> PyResult<()> {
        let objects = event_loop.objects();
        let scope = scope::http_scope(
            py,
            &head,
            &root_path,
            objects.state.bind(py),
            http_extensions(py)?,
        )?;
        event_loop.spawn_app(py, cycle.as_any(), scope)
    };
    if let Err(err) = run() {
        cycle.borrow_mut().app_finished(py, Some(err));
    }
}

/// The extensions every HTTP scope advertises; copied per request so apps may mutate theirs.
fn http_extensions(py: Python<'_>) -> PyResult<&Bound<'_, PyDict>> {
    static EXTENSIONS: pyo3::sync::PyOnceLock<Py<PyDict>> = pyo3::sync::PyOnceLock::new();
    EXTENSIONS
        .get_or_try_init(py, || {
            let extensions = PyDict::new(py);
            extensions.set_item("http.response.trailers", PyDict::new(py))?;
            extensions.set_item("http.response.pathsend", PyDict::new(py))?;
            Ok::<_, PyErr>(extensions.unbind())
        })
        .map(|extensions| extensions.bind(py))
}

/// Where the response is, from the app's point of view.
enum ResponseState {
    NotStarted {
        sender: oneshot::Sender<Response<ResponseBody>>,
    },
    /// `http.response.start` received; the head waits for the first body message to learn
    /// whether the whole response can go in one piece.
    Started {
        sender: oneshot::Sender<Response<ResponseBody>>,
        head: http::response::Parts,
        trailers: bool,
    },
    Streaming {
        sender: mpsc::Sender<StreamItem>,
        /// `http.response.start` had `trailers: True`.
        trailers_expected: bool,
        /// The last body message was sent; only trailers may follow.
        body_done: bool,
        trailers: HeaderMap,
    },
    Complete,
    /// The server cut the response off (the app broke its own framing): whatever the app
    /// sends from now on is dropped, as after a disconnect.
    Abandoned,
}

/// One request's ASGI `receive`/`send` pair. Lives on the loop thread.
#[pyclass(unsendable)]
pub struct HttpCycle {
    event_loop: EventLoop,
    inbox: Inbox<RequestBody, Incoming>,
    outbox: Outbox<StreamItem>,
    disconnect: CancellationToken,
    response: ResponseState,
    /// The request was `HEAD`: a `content-length` describes the body it would have had.
    head_request: bool,
    /// The body length the app's `content-length` promised, checked as the body goes out.
    length: DeclaredLength,
}

/// What a `receive()` call produces.
enum Incoming {
    Body { chunk: Bytes, more: bool },
    Disconnect,
}

/// An item for the response stream, to be queued once the cycle is no longer borrowed.
type Push = Option<(mpsc::Sender<StreamItem>, StreamItem)>;

#[pymethods]
impl HttpCycle {
    fn receive(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let mut cycle = slf.borrow_mut();
        let event_loop = cycle.event_loop.clone();
        if let Some(answer) = cycle.inbox.pending(py, &event_loop) {
            return answer;
        }
        let disconnect = cycle.disconnect.clone();
        let source = cycle.inbox.source.take();
        drop(cycle);
        match source {
            Some(RequestBody::Buffered(chunk)) => {
                let message = Incoming::Body { chunk, more: false };
                ready(py, Some(message.into_message(py)?))
            }
            Some(RequestBody::Streaming(body)) => Inbox::start_read(
                slf,
                &event_loop,
                HttpCycle::inbox,
                read_chunk(body, disconnect),
            ),
            None if disconnect.is_cancelled() => {
                ready(py, Some(Incoming::Disconnect.into_message(py)?))
            }
            None => Inbox::start_read(slf, &event_loop, HttpCycle::inbox, async move {
                disconnect.cancelled().await;
                (None, Incoming::Disconnect)
            }),
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
                "http.response.start" => cycle.response_start(py, message)?,
                "http.response.body" => cycle.response_body(py, message)?,
                "http.response.trailers" => cycle.response_trailers(py, message)?,
                "http.response.pathsend" => cycle.response_pathsend(py, message)?,
                other => {
                    return Err(PyRuntimeError::new_err(format!(
                        "Unexpected ASGI message '{other}' sent by an HTTP app; expected \
                         'http.response.start', 'http.response.body', \
                         'http.response.trailers' or 'http.response.pathsend'."
                    )));
                }
            };
            (push, cycle.event_loop.clone())
        };
        match push {
            None => ready(py, None),
            Some((sender, item)) => {
                match Outbox::push(slf, &event_loop, HttpCycle::outbox, &sender, item)? {
                    Ok(awaitable) => Ok(awaitable),
                    // The client went away; like uvicorn, further body is dropped silently
                    // and the app learns of it from `receive()`.
                    Err(Closed) => ready(py, None),
                }
            }
        }
    }

    /// Done-callback of the app's task.
    fn _app_done(&mut self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let error = self.event_loop.app_done(task)?;
        self.app_finished(task.py(), error);
        Ok(())
    }
}

impl HttpCycle {
    fn inbox(&mut self) -> &mut Inbox<RequestBody, Incoming> {
        &mut self.inbox
    }

    fn outbox(&mut self) -> &mut Outbox<StreamItem> {
        &mut self.outbox
    }

    fn new(
        event_loop: EventLoop,
        body: RequestBody,
        exchange_tx: oneshot::Sender<Response<ResponseBody>>,
        disconnect: CancellationToken,
        head_request: bool,
    ) -> Self {
        HttpCycle {
            event_loop,
            inbox: Inbox::new(body),
            outbox: Outbox::new(),
            disconnect,
            response: ResponseState::NotStarted {
                sender: exchange_tx,
            },
            head_request,
            length: DeclaredLength::Unchecked,
        }
    }

    /// The app returned or raised: log what went wrong and make sure the client is not left
    /// waiting for a response that will never come.
    fn app_finished(&mut self, py: Python<'_>, error: Option<PyErr>) {
        if let Some(error) = &error {
            tracing::error!(
                "Exception in ASGI application\n{}",
                format_traceback(py, error)
            );
        }
        match std::mem::replace(&mut self.response, ResponseState::Complete) {
            ResponseState::Complete | ResponseState::Abandoned => {}
            ResponseState::NotStarted { sender } => {
                if error.is_none() {
                    tracing::error!("ASGI app returned without starting a response");
                }
                let _ = sender.send(internal_error());
            }
            ResponseState::Started { sender, head, .. } => {
                if error.is_none() {
                    tracing::error!("ASGI app returned without completing the response");
                }
                let (stream, receiver) = mpsc::channel(1);
                let _ = stream.try_send(Err(aborted()));
                let body = ResponseBody::channel(receiver, &self.disconnect);
                let _ = sender.send(Response::from_parts(head, body));
            }
            ResponseState::Streaming { sender, .. } => {
                if error.is_none() {
                    tracing::error!("ASGI app returned without completing the response");
                }
                self.event_loop.runtime().spawn(async move {
                    let _ = sender.send(Err(aborted())).await;
                });
            }
        }
    }

    fn response_start(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        let ResponseState::NotStarted { .. } = self.response else {
            return Err(PyRuntimeError::new_err(
                "Unexpected ASGI message 'http.response.start' sent: the response has already started.",
            ));
        };
        let head = response_head(message, "http.response.start")?;
        let trailers = flag(message, intern!(py, "trailers"))?;
        self.length = DeclaredLength::of(&head, self.head_request)?;
        let ResponseState::NotStarted { sender } =
            std::mem::replace(&mut self.response, ResponseState::Complete)
        else {
            unreachable!("checked above");
        };
        self.response = ResponseState::Started {
            sender,
            head,
            trailers,
        };
        Ok(None)
    }

    fn response_body(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        let chunk = match message.get_item(intern!(py, "body"))? {
            Some(body) => app_bytes(
                body.cast::<PyBytes>()
                    .map_err(|_| PyTypeError::new_err("'http.response.body' body must be bytes"))?,
            ),
            None => Bytes::new(),
        };
        let more = flag(message, intern!(py, "more_body"))?;
        match std::mem::replace(&mut self.response, ResponseState::Complete) {
            ResponseState::Started {
                sender,
                mut head,
                trailers: false,
            } if !more => {
                let chunk = match self.length.whole(chunk) {
                    Whole::Intact(chunk) => chunk,
                    Whole::Close(chunk) => {
                        head.headers
                            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                        chunk
                    }
                };
                let body = ResponseBody::full(chunk, Some(&self.disconnect));
                self.event_loop.hand_back(py, move || {
                    let _ = sender.send(Response::from_parts(head, body));
                });
                Ok(None)
            }
            ResponseState::Started {
                sender,
                head,
                trailers,
            } => {
                let (stream, receiver) = mpsc::channel(STREAM_CHANNEL_CAPACITY);
                let body = ResponseBody::channel(receiver, &self.disconnect);
                let _ = sender.send(Response::from_parts(head, body));
                Ok(self.stream_chunk(stream, chunk, more, trailers))
            }
            ResponseState::Streaming {
                sender,
                trailers_expected,
                body_done: false,
                ..
            } => Ok(self.stream_chunk(sender, chunk, more, trailers_expected)),
            ResponseState::Abandoned => {
                self.response = ResponseState::Abandoned;
                Ok(None)
            }
            previous => {
                let problem = match previous {
                    ResponseState::NotStarted { .. } => "before 'http.response.start'",
                    _ => "after the last body message",
                };
                self.response = previous;
                Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message 'http.response.body' sent {problem}."
                )))
            }
        }
    }

    /// Records what comes after this chunk; the chunk itself is queued by the caller. When
    /// the response ends here, the stream's sender goes with the chunk and is dropped after
    /// it, which ends the body cleanly.
    fn stream_chunk(
        &mut self,
        sender: mpsc::Sender<StreamItem>,
        chunk: Bytes,
        more: bool,
        trailers_expected: bool,
    ) -> Push {
        let Some(chunk) = self.length.next(chunk, more) else {
            self.response = ResponseState::Abandoned;
            return Some((sender, Err(aborted())));
        };
        if more || trailers_expected {
            self.response = ResponseState::Streaming {
                sender: sender.clone(),
                trailers_expected,
                body_done: !more,
                trailers: HeaderMap::new(),
            };
        }
        (!chunk.is_empty()).then(|| (sender, Ok(Frame::data(chunk))))
    }

    fn response_trailers(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        if let ResponseState::Abandoned = self.response {
            return Ok(None);
        }
        let ResponseState::Streaming {
            trailers_expected: true,
            body_done: true,
            ..
        } = self.response
        else {
            return Err(PyRuntimeError::new_err(
                "Unexpected ASGI message 'http.response.trailers': it must follow the last \
                 body message of a response started with 'trailers': True.",
            ));
        };
        let headers = match message.get_item(intern!(py, "headers"))? {
            Some(headers) => header_map(&headers)?,
            None => HeaderMap::new(),
        };
        let more = flag(message, intern!(py, "more_trailers"))?;
        let ResponseState::Streaming {
            sender,
            mut trailers,
            ..
        } = std::mem::replace(&mut self.response, ResponseState::Complete)
        else {
            unreachable!("checked above");
        };
        trailers.extend(headers);
        if more {
            self.response = ResponseState::Streaming {
                sender,
                trailers_expected: true,
                body_done: true,
                trailers,
            };
            return Ok(None);
        }
        Ok(Some((sender, Ok(Frame::trailers(trailers)))))
    }

    fn response_pathsend(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        let ResponseState::Started { .. } = self.response else {
            return Err(PyRuntimeError::new_err(
                "Unexpected ASGI message 'http.response.pathsend': it must directly follow \
                 'http.response.start'.",
            ));
        };
        let path: std::path::PathBuf = message
            .get_item(intern!(py, "path"))?
            .ok_or_else(|| PyValueError::new_err("'http.response.pathsend' has no 'path'"))?
            .extract()?;
        if !path.is_absolute() {
            return Err(PyValueError::new_err(
                "'http.response.pathsend' path must be absolute",
            ));
        }
        // Opening happens on the loop thread (one syscall); reading happens on Tokio.
        let file = std::fs::File::open(&path)?;
        let length = file.metadata()?.len();
        let ResponseState::Started {
            sender, mut head, ..
        } = std::mem::replace(&mut self.response, ResponseState::Complete)
        else {
            unreachable!("checked above");
        };
        if let DeclaredLength::Remaining(declared) = self.length
            && declared != length
        {
            tracing::error!(
                "ASGI app declared content-length: {declared} for a file of {length} bytes \
                 ('http.response.pathsend'); sent the file's length instead"
            );
        }
        head.headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
        let _runtime = self.event_loop.runtime().enter();
        let body = ResponseBody::file(tokio::fs::File::from_std(file), length, &self.disconnect);
        let _ = sender.send(Response::from_parts(head, body));
        Ok(None)
    }
}

/// Reads the next data frame of a streamed request body, or notices the client leaving.
async fn read_chunk(
    mut body: IncomingBody,
    disconnect: CancellationToken,
) -> (Option<RequestBody>, Incoming) {
    loop {
        let frame = tokio::select! {
            biased;
            frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => frame,
            () = disconnect.cancelled() => return (None, Incoming::Disconnect),
        };
        match frame {
            None => {
                let end = Incoming::Body {
                    chunk: Bytes::new(),
                    more: false,
                };
                return (None, end);
            }
            Some(Ok(frame)) => {
                // Request trailers have no ASGI message; skip them.
                if let Ok(chunk) = frame.into_data() {
                    let more = !body.is_end_stream();
                    let body = more.then_some(RequestBody::Streaming(body));
                    return (body, Incoming::Body { chunk, more });
                }
            }
            // A body that fails mid-way means the client is gone (or broke the framing).
            Some(Err(_)) => return (None, Incoming::Disconnect),
        }
    }
}

impl IntoMessage for Incoming {
    fn into_message(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let message = PyDict::new(py);
        match self {
            Incoming::Body { chunk, more } => {
                message.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
                message.set_item(intern!(py, "body"), PyBytes::new(py, &chunk))?;
                message.set_item(intern!(py, "more_body"), more)?;
            }
            Incoming::Disconnect => {
                message.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
            }
        }
        Ok(message.into_any().unbind())
    }
}

/// The `status` and `headers` of a `*.response.start` message as a response head.
pub(crate) fn response_head(
    message: &Bound<'_, PyDict>,
    message_type: &str,
) -> PyResult<http::response::Parts> {
    let py = message.py();
    let status = message
        .get_item(intern!(py, "status"))?
        .ok_or_else(|| PyValueError::new_err(format!("'{message_type}' has no 'status'")))?
        .extract::<u16>()?;
    let status = StatusCode::from_u16(status)
        .map_err(|_| PyValueError::new_err(format!("invalid HTTP status code {status}")))?;
    let headers = match message.get_item(intern!(py, "headers"))? {
        Some(headers) => header_map(&headers)?,
        None => HeaderMap::new(),
    };
    let (mut head, ()) = Response::new(()).into_parts();
    head.status = status;
    head.headers = headers;
    Ok(head)
}

pub(crate) fn flag(message: &Bound<'_, PyDict>, key: &Bound<'_, PyString>) -> PyResult<bool> {
    match message.get_item(key)? {
        Some(value) => value.is_truthy(),
        None => Ok(false),
    }
}

/// ASGI headers (an iterable of `[name, value]` byte pairs) as a `HeaderMap`, rejecting
/// what HTTP cannot carry (CR/LF in values, invalid names) before it reaches the wire.
pub(crate) fn header_map(headers: &Bound<'_, PyAny>) -> PyResult<HeaderMap> {
    let mut map = HeaderMap::new();
    for pair in headers.try_iter()? {
        let pair = pair?;
        let name = pair.get_item(0)?;
        let value = pair.get_item(1)?;
        let (Ok(name), Ok(value)) = (name.cast::<PyBytes>(), value.cast::<PyBytes>()) else {
            return Err(PyTypeError::new_err(format!(
                "response header names and values must be bytes, got {}",
                pair.repr()?
            )));
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            PyValueError::new_err(format!(
                "invalid response header name {}",
                name.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
            PyValueError::new_err(format!(
                "invalid value for response header '{name}': {}",
                value.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        map.append(name, value);
    }
    Ok(map)
}

pub(crate) fn plain_response(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(
        Bytes::from_static(text.as_bytes()),
        None,
    ));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn internal_error() -> Response<ResponseBody> {
    let mut response = plain_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The `content-length` an app declared, against what it sends.
///
/// hyper frames an HTTP/1 response by the body's known length when there is one and writes
/// the app's header as it is, so a body longer than its header would spill into the next
/// response on a kept-alive connection. Every body is therefore checked here first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeclaredLength {
    /// No `content-length`, or one that describes no body (`HEAD`, 1xx, 204, 304).
    Unchecked,
    /// This many bytes are still owed.
    Remaining(u64),
}

/// A whole body checked against the declared length.
#[derive(Debug, PartialEq, Eq)]
enum Whole {
    /// As the app sent it.
    Intact(Bytes),
    /// Cut to the declared length, or short of it: the connection must close after it, so
    /// the client neither reads past the response nor waits for bytes that never come.
    Close(Bytes),
}

impl DeclaredLength {
    fn of(head: &http::response::Parts, head_request: bool) -> PyResult<Self> {
        let mut values = head.headers.get_all(http::header::CONTENT_LENGTH).iter();
        let Some(first) = values.next() else {
            return Ok(DeclaredLength::Unchecked);
        };
        let parse = |value: &HeaderValue| {
            value
                .to_str()
                .ok()
                .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|text| text.parse::<u64>().ok())
        };
        let declared = parse(first)
            .filter(|&length| values.all(|other| parse(other) == Some(length)))
            .ok_or_else(|| {
                PyValueError::new_err(format!("invalid content-length response header {first:?}"))
            })?;
        let bodiless = head_request
            || head.status.is_informational()
            || head.status == StatusCode::NO_CONTENT
            || head.status == StatusCode::NOT_MODIFIED;
        Ok(if bodiless {
            DeclaredLength::Unchecked
        } else {
            DeclaredLength::Remaining(declared)
        })
    }

    /// The whole body in one chunk. Logs the app's mistake.
    fn whole(&mut self, mut chunk: Bytes) -> Whole {
        let DeclaredLength::Remaining(declared) = *self else {
            return Whole::Intact(chunk);
        };
        *self = DeclaredLength::Unchecked;
        let length = chunk.len() as u64;
        if length > declared {
            Self::log_surplus(length, declared);
            chunk.truncate(declared as usize);
            Whole::Close(chunk)
        } else if length < declared {
            Self::log_shortfall(declared - length);
            Whole::Close(chunk)
        } else {
            Whole::Intact(chunk)
        }
    }

    /// The next chunk of a streamed body; `more` is false for the last one. `None` when the
    /// body breaks its declared length: nothing more may go out, and the connection must be
    /// aborted so the client does not take what it got for a complete response. (A surplus
    /// is not sent at all: hyper would end the body at the declared length and keep the
    /// connection, with no way left to close it.)
    fn next(&mut self, chunk: Bytes, more: bool) -> Option<Bytes> {
        let DeclaredLength::Remaining(remaining) = *self else {
            return Some(chunk);
        };
        let length = chunk.len() as u64;
        if length > remaining {
            *self = DeclaredLength::Unchecked;
            Self::log_surplus(length, remaining);
            return None;
        }
        if !more && length < remaining {
            *self = DeclaredLength::Unchecked;
            Self::log_shortfall(remaining - length);
            return None;
        }
        *self = DeclaredLength::Remaining(remaining - length);
        Some(chunk)
    }

    fn log_surplus(length: u64, remaining: u64) {
        tracing::error!(
            "ASGI app sent more body than its content-length declared ({length} bytes with \
             {remaining} left to send); sent at most {remaining} and closed the connection"
        );
    }

    fn log_shortfall(missing: u64) {
        tracing::error!(
            "ASGI app ended its response {missing} bytes short of its declared content-length; \
             closed the connection"
        );
    }
}

fn aborted() -> BoxError {
    "the ASGI app failed before completing its response".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, content_length: &[&'static str]) -> http::response::Parts {
        let (mut head, ()) = Response::new(()).into_parts();
        head.status = StatusCode::from_u16(status).unwrap();
        for value in content_length {
            head.headers.append(
                http::header::CONTENT_LENGTH,
                HeaderValue::from_static(value),
            );
        }
        head
    }

    fn declared(status: u16, content_length: &[&'static str]) -> DeclaredLength {
        DeclaredLength::of(&head(status, content_length), false).unwrap()
    }

    #[test]
    fn a_whole_body_longer_or_shorter_than_declared_closes_the_connection() {
        let mut length = declared(200, &["5"]);
        assert_eq!(
            length.whole(Bytes::from_static(b"0123456789")),
            Whole::Close(Bytes::from_static(b"01234"))
        );
        let mut length = declared(200, &["10"]);
        assert_eq!(
            length.whole(Bytes::from_static(b"01234")),
            Whole::Close(Bytes::from_static(b"01234"))
        );
        let mut length = declared(200, &["5", "5"]);
        assert_eq!(
            length.whole(Bytes::from_static(b"01234")),
            Whole::Intact(Bytes::from_static(b"01234"))
        );
    }

    #[test]
    fn a_stream_stops_where_it_would_pass_the_declared_length() {
        let mut length = declared(200, &["5"]);
        assert_eq!(
            length.next(Bytes::from_static(b"012"), true).as_deref(),
            Some(&b"012"[..])
        );
        assert_eq!(length.next(Bytes::from_static(b"3456"), true), None);
        // Reported once; the cycle drops whatever follows.
        assert_eq!(length, DeclaredLength::Unchecked);
    }

    #[test]
    fn a_stream_that_ends_short_stops() {
        let mut length = declared(200, &["10"]);
        assert!(length.next(Bytes::from_static(b"01234"), true).is_some());
        assert_eq!(length.next(Bytes::new(), false), None);
        let mut exact = declared(200, &["5"]);
        assert!(exact.next(Bytes::from_static(b"012"), true).is_some());
        assert!(exact.next(Bytes::from_static(b"34"), false).is_some());
    }

    #[test]
    fn bodiless_responses_are_not_checked() {
        assert_eq!(declared(304, &["10"]), DeclaredLength::Unchecked);
        assert_eq!(declared(204, &["10"]), DeclaredLength::Unchecked);
        assert_eq!(
            DeclaredLength::of(&head(200, &["10"]), true).unwrap(),
            DeclaredLength::Unchecked
        );
        assert_eq!(declared(200, &[]), DeclaredLength::Unchecked);
    }

    #[test]
    fn unreadable_or_conflicting_lengths_are_app_errors() {
        for values in [&["abc"][..], &["-1"], &["+5"], &["5", "6"], &[""]] {
            assert!(
                DeclaredLength::of(&head(200, values), false).is_err(),
                "{values:?}"
            );
        }
    }
}
