//! The loop-thread half of a websocket: the `receive`/`send` pair the app gets, and the
//! phases the app moves the websocket through (handshake, denial response, open, closed).

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt};
use tokio::sync::{mpsc, oneshot};
use yawc::Frame;

use super::event::{Event, close_frame};
use super::io::{self, Connection, Settings};
use crate::asgi::awaitable::ready;
use crate::asgi::body::{ResponseBody, app_bytes};
use crate::asgi::codec::{
    body, flag, headers, message_type, optional, plain_response, response_head,
};
use crate::asgi::cycle::{self, Asked, Cycle, Handler};
use crate::asgi::disconnected::client_disconnected;
use crate::asgi::parking::{Closed, Inbox, Next, Outbox};
use crate::asgi::scope::{self, RequestHead};
use crate::asgi::violation::{self, bad_value, refusal, refuse, wrong_type};
use crate::python::{AppTask, EventLoop};
use crate::shutdown::Shutdown;
use crate::signal::Signal;

/// Messages from the client that may wait for the app before reading stops.
const INCOMING_CAPACITY: usize = 16;

/// What accepting the handshake needs besides the answer.
pub(super) struct Handshake {
    pub(super) on_upgrade: OnUpgrade,
    /// The headers the 101 answer must carry: `Upgrade`, `Connection`, `Sec-WebSocket-Accept`,
    /// and `Sec-WebSocket-Extensions` when an extension was agreed.
    pub(super) upgrade_headers: http::HeaderMap,
    pub(super) settings: Settings,
    pub(super) shutdown: Shutdown,
}

/// Runs on the loop thread: builds the scope and starts the app, whose first `receive()`
/// gets `websocket.connect`. `asked.gone` fires if the client leaves during the handshake.
pub(super) fn start(
    py: Python<'_>,
    head: RequestHead,
    root_path: &str,
    handshake: Handshake,
    asked: Asked<Response<ResponseBody>>,
) {
    let Asked {
        event_loop,
        answer,
        gone,
    } = asked;
    let (incoming, events) = mpsc::channel(INCOMING_CAPACITY);
    let _ = incoming.try_send(Event::Connect);
    let cycle = WebSocketCycle {
        event_loop: event_loop.clone(),
        inbox: Inbox::new(Source { events, gone }),
        outbox: Outbox::new(),
        phase: Phase::Handshake {
            handshake: Box::new(handshake),
            answer,
            incoming,
        },
    };
    cycle::start(py, &event_loop, cycle, AppTask::Request, |state| {
        scope::websocket_scope(py, &head, root_path, state)
    });
}

/// Where the websocket is, from the app's point of view. The sender of `receive()`'s
/// events lives in the handshake phases: dropping it unaccepted ends `receive()`.
enum Phase {
    /// Waiting for the app to accept, close or deny.
    Handshake {
        handshake: Box<Handshake>,
        answer: Answer,
        incoming: mpsc::Sender<Event>,
    },
    /// The app answers the handshake with an HTTP response (`websocket.http.response.*`).
    Denying {
        answer: Answer,
        incoming: mpsc::Sender<Event>,
        head: Box<http::response::Parts>,
        body: BytesMut,
    },
    /// Accepted: frames go to the connection task.
    Open(Connection),
    /// The app closed the websocket or denied it; nothing more may be sent.
    Closed,
}

impl violation::State for Phase {
    fn problem(&self) -> &'static str {
        match self {
            Phase::Handshake { .. } => "the handshake is not answered yet",
            Phase::Denying { .. } => "a denial response is being sent",
            Phase::Open(_) => "the websocket handshake is over",
            Phase::Closed => "the websocket is closed",
        }
    }
}

/// Where the handshake's response goes.
type Answer = oneshot::Sender<Response<ResponseBody>>;

/// Where `receive()` reads from: events of the connection, or the client leaving during
/// the handshake.
struct Source {
    events: mpsc::Receiver<Event>,
    gone: Signal,
}

/// One websocket's ASGI `receive`/`send` pair. Lives on the loop thread.
#[pyclass(unsendable)]
pub(super) struct WebSocketCycle {
    event_loop: EventLoop,
    inbox: Inbox<Source, Event>,
    outbox: Outbox<Frame>,
    phase: Phase,
}

/// A frame for the connection, queued once the cycle is no longer borrowed.
type Push = Option<(mpsc::Sender<Frame>, Frame)>;

impl Cycle for WebSocketCycle {
    const PROTOCOL: &'static str = "a websocket";
    const MESSAGES: &'static [(&'static str, Handler<Self>)] = &[
        ("websocket.accept", WebSocketCycle::accept),
        ("websocket.send", WebSocketCycle::send_data),
        ("websocket.close", WebSocketCycle::close),
        (
            "websocket.http.response.start",
            WebSocketCycle::denial_start,
        ),
        ("websocket.http.response.body", WebSocketCycle::denial_body),
    ];
    type Sent = Push;

    fn event_loop(&self) -> &EventLoop {
        &self.event_loop
    }

    fn app_finished(&mut self, _py: Python<'_>, error: Option<PyErr>) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Handshake { answer, .. } => {
                let response = if error.is_some() {
                    internal_error()
                } else {
                    plain_response(StatusCode::FORBIDDEN, "")
                };
                let _ = answer.send(response);
            }
            Phase::Denying { answer, .. } => {
                let _ = answer.send(internal_error());
            }
            // An app that fails says so with 1011 (internal error).
            Phase::Open(connection) if error.is_some() => {
                self.event_loop.runtime().spawn(async move {
                    let _ = connection
                        .frames
                        .send(close_frame(1011, String::new()))
                        .await;
                });
            }
            Phase::Open(connection) => connection.app_ended(),
            Phase::Closed => {}
        }
    }
}

#[pymethods]
impl WebSocketCycle {
    fn receive(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Inbox::receive(slf, WebSocketCycle::inbox, |_, source| {
            let Some(mut source) = source else {
                return Next::Ready(None, Event::abnormal_closure());
            };
            match source.events.try_recv() {
                Ok(event) => {
                    let goes_on = !matches!(event, Event::Disconnect { .. });
                    Next::Ready(goes_on.then_some(source), event)
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    Next::Ready(None, Event::abnormal_closure())
                }
                Err(mpsc::error::TryRecvError::Empty) => Next::Read(next_event(source)),
            }
        })
    }

    fn send(slf: &Bound<'_, Self>, message: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let push = {
            let mut cycle = slf.borrow_mut();
            if let Phase::Open(connection) = &cycle.phase
                && connection.closing.is_cancelled()
            {
                return Err(client_disconnected(message_type(message)?.to_str()?));
            }
            cycle::dispatch(&mut *cycle, message)?
        };
        let Some((sender, frame)) = push else {
            return ready(py, None);
        };
        match Outbox::push(slf, WebSocketCycle::outbox, &sender, frame)? {
            Ok(awaitable) => Ok(awaitable),
            Err(Closed) => Err(client_disconnected(message_type(message)?.to_str()?)),
        }
    }
}

impl WebSocketCycle {
    fn inbox(&mut self) -> &mut Inbox<Source, Event> {
        &mut self.inbox
    }

    fn outbox(&mut self) -> &mut Outbox<Frame> {
        &mut self.outbox
    }

    /// The handshake, for a message that answers it; refused once it is answered.
    fn take_handshake(
        &mut self,
        message_type: &str,
    ) -> PyResult<(Box<Handshake>, Answer, mpsc::Sender<Event>)> {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            // hyper dropped the handshake: the client left before the app answered.
            Phase::Handshake { answer, .. } if answer.is_closed() => {
                Err(client_disconnected(message_type))
            }
            Phase::Handshake {
                handshake,
                answer,
                incoming,
            } => Ok((handshake, answer, incoming)),
            other => refuse(&mut self.phase, other, message_type),
        }
    }

    fn accept(&mut self, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        let py = message.py();
        let mut headers = headers(message)?;
        if let Some(subprotocol) = optional(message, intern!(py, "subprotocol"))? {
            let subprotocol: String = subprotocol.extract()?;
            let value = HeaderValue::from_str(&subprotocol)
                .map_err(|_| bad_value("invalid websocket subprotocol"))?;
            headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        let (handshake, answer, incoming) = self.take_handshake("websocket.accept")?;
        let Handshake {
            on_upgrade,
            upgrade_headers,
            settings,
            shutdown,
        } = *handshake;
        let extensions = upgrade_headers
            .get(http::header::SEC_WEBSOCKET_EXTENSIONS)
            .cloned();
        let mut response = Response::new(ResponseBody::full(Bytes::new(), None));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *response.headers_mut() = headers;
        response.headers_mut().extend(upgrade_headers);
        let connection = io::spawn(
            on_upgrade,
            extensions,
            settings,
            incoming,
            &shutdown,
            self.event_loop.runtime(),
        );
        let _ = answer.send(response);
        self.phase = Phase::Open(connection);
        Ok(None)
    }

    fn send_data(&mut self, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        let py = message.py();
        let sender = match &self.phase {
            Phase::Open(connection) => connection.frames.clone(),
            other => return Err(refusal(other, "websocket.send")),
        };
        let frame = if let Some(text) = optional(message, intern!(py, "text"))? {
            Frame::text(text.extract::<String>()?)
        } else if let Some(bytes) = optional(message, intern!(py, "bytes"))? {
            let bytes = bytes
                .cast::<PyBytes>()
                .map_err(|_| wrong_type("'websocket.send' bytes must be bytes"))?;
            Frame::binary(app_bytes(bytes))
        } else {
            return Err(bad_value(
                "'websocket.send' needs a 'text' or a 'bytes' key",
            ));
        };
        Ok(Some((sender, frame)))
    }

    fn close(&mut self, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        let py = message.py();
        let code = match optional(message, intern!(py, "code"))? {
            Some(code) => code
                .cast::<PyInt>()
                .map_err(|_| wrong_type("'websocket.close' code must be an int"))?
                .extract::<u16>()
                .map_err(|_| bad_value(format!("invalid websocket close code {code}")))?,
            None => 1000,
        };
        if !may_be_sent(code) {
            return Err(bad_value(format!(
                "websocket close code {code} may not be sent (RFC 6455 §7.4)"
            )));
        }
        let reason = match optional(message, intern!(py, "reason"))? {
            Some(reason) => reason.extract::<String>()?,
            None => String::new(),
        };
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            // Closing before accepting refuses the handshake, as uvicorn does.
            Phase::Handshake { answer, .. } => answer
                .send(plain_response(StatusCode::FORBIDDEN, ""))
                .map(|()| None)
                .map_err(|_| client_disconnected("websocket.close")),
            Phase::Open(connection) => Ok(Some((connection.frames, close_frame(code, reason)))),
            other => refuse(&mut self.phase, other, "websocket.close"),
        }
    }

    fn denial_start(&mut self, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        let head = response_head(message, "websocket.http.response.start")?;
        let (_, answer, incoming) = self.take_handshake("websocket.http.response.start")?;
        self.phase = Phase::Denying {
            answer,
            incoming,
            head: Box::new(head),
            body: BytesMut::new(),
        };
        Ok(None)
    }

    fn denial_body(&mut self, message: &Bound<'_, PyDict>) -> PyResult<Push> {
        let chunk = body(message, "websocket.http.response.body")?;
        let more = flag(message, intern!(message.py(), "more_body"))?;
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Denying {
                answer,
                incoming,
                head,
                mut body,
            } => {
                if let Some(chunk) = chunk {
                    body.extend_from_slice(chunk.as_bytes());
                }
                if more {
                    self.phase = Phase::Denying {
                        answer,
                        incoming,
                        head,
                        body,
                    };
                } else {
                    // Answered: the app's `receive()` ends as `incoming` goes.
                    let body = ResponseBody::full(body.freeze(), None);
                    let _ = answer.send(Response::from_parts(*head, body));
                }
                Ok(None)
            }
            other => refuse(&mut self.phase, other, "websocket.http.response.body"),
        }
    }
}

/// Whether a close frame may carry `code`: 1005, 1006 and 1015 only report what happened
/// locally, 1004 is reserved, the rest below 3000 is kept for the protocol (IANA registers
/// 1000-1003 and 1007-1014), 3000-4999 are for libraries and apps.
fn may_be_sent(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The answer to a handshake the app failed on.
pub(super) fn internal_error() -> Response<ResponseBody> {
    plain_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

/// Waits for the next event; the client leaving mid-handshake counts as a disconnect.
async fn next_event(mut source: Source) -> (Option<Source>, Event) {
    let event = tokio::select! {
        event = source.events.recv() => event.unwrap_or_else(Event::abnormal_closure),
        () = source.gone.cancelled(), if source.events.is_empty() => Event::abnormal_closure(),
    };
    let source = (!matches!(event, Event::Disconnect { .. })).then_some(source);
    (source, event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_codes_meant_for_the_wire_may_be_sent() {
        for code in [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(may_be_sent(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!may_be_sent(code), "{code}");
        }
    }
}
