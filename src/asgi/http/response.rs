//! The response an HTTP app builds with its `http.response.*` messages: a state machine
//! from the held-back head to the end, and the check of the body against the
//! `content-length` the app declared.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::Frame;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tokio::sync::{mpsc, oneshot};

use crate::BoxError;
use crate::asgi::body::{ResponseBody, StreamItem, app_bytes};
use crate::asgi::codec::{body, flag, headers, plain_response, response_head};
use crate::asgi::context::ResponseState;
use crate::asgi::violation::{self, bad_value, refusal, refuse};
use crate::metrics::PythonRoute;
use crate::python::EventLoop;
use crate::signal::Signal;

/// Chunks of a streamed response that may wait for the socket before `send` parks.
const STREAM_CHANNEL_CAPACITY: usize = 4;

/// Where the finished response, or the head of a streamed one, goes to Tokio.
pub(super) type Answer = oneshot::Sender<Response<ResponseBody>>;

/// Where the response is, from the app's point of view.
enum State {
    /// Waiting for `http.response.start`.
    NotStarted {
        answer: Answer,
    },
    /// `http.response.start` received; the head waits for the first body message to learn
    /// whether the whole response can go in one piece.
    HeadHeld {
        answer: Answer,
        head: http::response::Parts,
        /// `http.response.start` had `trailers: True`.
        trailers: bool,
    },
    /// The head went out; body chunks follow.
    Streaming {
        stream: mpsc::Sender<StreamItem>,
        trailers: bool,
    },
    /// The last body message was sent; trailers gather until the last of them.
    Trailers {
        stream: mpsc::Sender<StreamItem>,
        trailers: HeaderMap,
    },
    Done,
    /// The server cut the response off (the app broke its own framing): whatever the app
    /// sends from now on is dropped, as after a disconnect.
    Abandoned,
}

/// What the cycle does after a message moved the response on.
pub(super) enum Step {
    /// Nothing to hand over.
    Nothing,
    /// The whole response, to hand back to Tokio together with the others of this pass.
    HandBack(Answer, Response<ResponseBody>),
    /// An item for the response stream, queued once the cycle is no longer borrowed.
    Stream(mpsc::Sender<StreamItem>, StreamItem),
}

/// The response of one request, as the app's messages build it.
pub(super) struct AppResponse {
    state: State,
    /// The request was `HEAD`: a `content-length` describes the body it would have had.
    head_request: bool,
    /// The body length the app's `content-length` promised, checked as the body goes out.
    length: DeclaredLength,
    /// Given to the response body, which fires it when hyper drops the body.
    disconnect: Signal,
    /// Keys of the request's `state` that go into the response's extensions, and that
    /// `state` (set once the scope exists, when any key is declared).
    carried_state: Option<(ResponseState, Py<PyDict>)>,
    /// The scope, when the metrics want the app's route (`scope["route"]`, set by Starlette
    /// and FastAPI as they route) on the response.
    routed_scope: Option<Py<PyDict>>,
}

impl AppResponse {
    pub(super) fn new(answer: Answer, head_request: bool, disconnect: Signal) -> Self {
        AppResponse {
            state: State::NotStarted { answer },
            head_request,
            length: DeclaredLength::Unchecked,
            disconnect,
            carried_state: None,
            routed_scope: None,
        }
    }

    /// Puts the app's route into the response's extensions, as a [`PythonRoute`], when the
    /// response starts and the app has one.
    pub(super) fn tell_route(&mut self, scope: Py<PyDict>) {
        self.routed_scope = Some(scope);
    }

    /// Carries the declared keys of the request's `state` into the response's extensions
    /// when the response starts.
    pub(super) fn carry_state(&mut self, keys: ResponseState, state: Py<PyDict>) {
        self.carried_state = Some((keys, state));
    }

    /// The app sent all of its response, or the server cut it off.
    pub(super) fn is_complete(&self) -> bool {
        matches!(self.state, State::Done | State::Abandoned)
    }

    /// `http.response.start`.
    pub(super) fn start(&mut self, message: &Bound<'_, PyDict>) -> PyResult<Step> {
        let answer = match std::mem::replace(&mut self.state, State::Done) {
            State::NotStarted { answer } => answer,
            other => return refuse(&mut self.state, other, "http.response.start"),
        };
        let started = response_head(message, "http.response.start").and_then(|head| {
            let trailers = flag(message, intern!(message.py(), "trailers"))?;
            Ok((
                DeclaredLength::of(&head, self.head_request)?,
                head,
                trailers,
            ))
        });
        match started {
            Ok((length, mut head, trailers)) => {
                if let Some(route) = self
                    .routed_scope
                    .take()
                    .and_then(|scope| route_template(scope.bind(message.py())))
                {
                    head.extensions.insert(PythonRoute(Some(route)));
                }
                if let Some((keys, state)) = &self.carried_state {
                    keys.put(state.bind(message.py()), &mut head.extensions);
                }
                self.length = length;
                self.state = State::HeadHeld {
                    answer,
                    head,
                    trailers,
                };
                Ok(Step::Nothing)
            }
            Err(err) => {
                self.state = State::NotStarted { answer };
                Err(err)
            }
        }
    }

    /// `http.response.body`.
    pub(super) fn body(&mut self, message: &Bound<'_, PyDict>) -> PyResult<Step> {
        let chunk = body(message, "http.response.body")?.map_or_else(Bytes::new, |b| app_bytes(&b));
        let more = flag(message, intern!(message.py(), "more_body"))?;
        match std::mem::replace(&mut self.state, State::Done) {
            State::HeadHeld {
                answer,
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
                Ok(Step::HandBack(answer, Response::from_parts(head, body)))
            }
            State::HeadHeld {
                answer,
                head,
                trailers,
            } => {
                let (stream, receiver) = mpsc::channel(STREAM_CHANNEL_CAPACITY);
                let body = ResponseBody::channel(receiver, &self.disconnect);
                let _ = answer.send(Response::from_parts(head, body));
                Ok(self.stream_chunk(stream, chunk, more, trailers))
            }
            State::Streaming { stream, trailers } => {
                Ok(self.stream_chunk(stream, chunk, more, trailers))
            }
            State::Abandoned => {
                self.state = State::Abandoned;
                Ok(Step::Nothing)
            }
            other => refuse(&mut self.state, other, "http.response.body"),
        }
    }

    /// Records what comes after this chunk and gives the chunk to queue. When the response
    /// ends here, the stream's sender goes with the chunk and is dropped after it, which
    /// ends the body cleanly.
    fn stream_chunk(
        &mut self,
        stream: mpsc::Sender<StreamItem>,
        chunk: Bytes,
        more: bool,
        trailers: bool,
    ) -> Step {
        let Some(chunk) = self.length.next(chunk, more) else {
            self.state = State::Abandoned;
            return Step::Stream(stream, Err(aborted()));
        };
        if more {
            self.state = State::Streaming {
                stream: stream.clone(),
                trailers,
            };
        } else if trailers {
            self.state = State::Trailers {
                stream: stream.clone(),
                trailers: HeaderMap::new(),
            };
        }
        if chunk.is_empty() {
            Step::Nothing
        } else {
            Step::Stream(stream, Ok(Frame::data(chunk)))
        }
    }

    /// `http.response.trailers`.
    pub(super) fn trailers(&mut self, message: &Bound<'_, PyDict>) -> PyResult<Step> {
        let (stream, trailers) = match &mut self.state {
            State::Abandoned => return Ok(Step::Nothing),
            State::Trailers { stream, trailers } => (stream, trailers),
            other => return Err(refusal(other, "http.response.trailers")),
        };
        trailers.extend(headers(message)?);
        if flag(message, intern!(message.py(), "more_trailers"))? {
            return Ok(Step::Nothing);
        }
        let last = Step::Stream(
            stream.clone(),
            Ok(Frame::trailers(std::mem::take(trailers))),
        );
        self.state = State::Done;
        Ok(last)
    }

    /// `http.response.pathsend`: the file is opened here (one syscall) and read on Tokio.
    pub(super) fn pathsend(
        &mut self,
        message: &Bound<'_, PyDict>,
        event_loop: &EventLoop,
    ) -> PyResult<Step> {
        let (answer, mut head, trailers) = match std::mem::replace(&mut self.state, State::Done) {
            State::HeadHeld {
                answer,
                head,
                trailers,
            } => (answer, head, trailers),
            other => return refuse(&mut self.state, other, "http.response.pathsend"),
        };
        let (file, length) = match open_pathsend(message) {
            Ok(opened) => opened,
            Err(err) => {
                self.state = State::HeadHeld {
                    answer,
                    head,
                    trailers,
                };
                return Err(err);
            }
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
        let _runtime = event_loop.runtime().enter();
        let body = ResponseBody::file(tokio::fs::File::from_std(file), length, &self.disconnect);
        let _ = answer.send(Response::from_parts(head, body));
        Ok(Step::Nothing)
    }

    /// The app's task ended: the client must not be left waiting for a response that will
    /// never come.
    pub(super) fn finish(&mut self, ending: Ending, event_loop: &EventLoop) {
        let unfinished = match std::mem::replace(&mut self.state, State::Done) {
            State::Done | State::Abandoned => return,
            State::NotStarted { answer } => {
                ending.log("starting a response");
                let _ = answer.send(internal_error());
                return;
            }
            // The head is still held back: nothing went out, so the client can be told.
            State::HeadHeld { answer, .. } => {
                let _ = answer.send(internal_error());
                None
            }
            State::Streaming { stream, .. } | State::Trailers { stream, .. } => Some(stream),
        };
        ending.log("completing the response");
        if let Some(stream) = unfinished {
            event_loop.runtime().spawn(async move {
                let _ = stream.send(Err(aborted())).await;
            });
        }
    }
}

/// The path template of the Starlette or FastAPI route that matched (`scope["route"].path`).
fn route_template(scope: &Bound<'_, PyDict>) -> Option<Arc<str>> {
    let py = scope.py();
    let route = scope.get_item(intern!(py, "route")).ok()??;
    let path = route.getattr(intern!(py, "path")).ok()?;
    Some(shared_template(
        path.cast::<PyString>().ok()?.to_str().ok()?,
    ))
}

/// One `Arc` per route template, so that a response's route costs no allocation: an app
/// has a bounded set of templates, and the cache stops growing past a bound in case not.
fn shared_template(template: &str) -> Arc<str> {
    const MAX_TEMPLATES: usize = 1024;
    thread_local! {
        static TEMPLATES: RefCell<HashMap<Box<str>, Arc<str>>> = RefCell::default();
    }
    TEMPLATES.with_borrow_mut(|templates| {
        if let Some(shared) = templates.get(template) {
            return shared.clone();
        }
        let shared = Arc::<str>::from(template);
        if templates.len() < MAX_TEMPLATES {
            templates.insert(template.into(), shared.clone());
        }
        shared
    })
}

/// How the app's task ended, as far as an unfinished response goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    /// It returned with the client still there: leaving the response unfinished is its bug.
    Returned,
    /// It raised; its traceback is logged already.
    Raised,
    /// The client left, or broke its request body, first: an everyday event, not an error.
    ClientGone,
}

impl Ending {
    fn log(self, without: &str) {
        match self {
            Ending::Returned => tracing::error!("ASGI app returned without {without}"),
            Ending::Raised => {}
            Ending::ClientGone => {
                tracing::debug!("the client left before the ASGI app finished {without}")
            }
        }
    }
}

impl violation::State for State {
    fn problem(&self) -> &'static str {
        match self {
            State::NotStarted { .. } => "'http.response.start' was not sent yet",
            State::HeadHeld { .. } => "the response has already started",
            State::Streaming { .. } => "the response body is being sent",
            State::Trailers { .. } => "the response body is complete; only trailers may follow",
            State::Done | State::Abandoned => "the response is complete",
        }
    }
}

/// The file of an `http.response.pathsend` message, and its length.
fn open_pathsend(message: &Bound<'_, PyDict>) -> PyResult<(std::fs::File, u64)> {
    let path: std::path::PathBuf = message
        .get_item(intern!(message.py(), "path"))?
        .ok_or_else(|| bad_value("'http.response.pathsend' has no 'path'"))?
        .extract()?;
    if !path.is_absolute() {
        return Err(bad_value("'http.response.pathsend' path must be absolute"));
    }
    let file = std::fs::File::open(&path)?;
    let length = file.metadata()?.len();
    Ok((file, length))
}

/// The answer when the app fails before any byte of its response went out.
pub(super) fn internal_error() -> Response<ResponseBody> {
    let mut response = plain_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn aborted() -> BoxError {
    "the ASGI app failed before completing its response".into()
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
                bad_value(format!("invalid content-length response header {first:?}"))
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
