//! One log line per request, for Rust and Python routes alike: method, path, status,
//! body bytes and duration (or the `--access-log-format` line), written when the response
//! body has been fully sent.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::trace::TraceId;

use super::access_log_format::{AccessLogFormat, Exchange};

/// What the access log needs to know about the request, taken before it is handed on.
pub(super) struct RequestLine {
    method: Method,
    path_and_query: String,
    version: Version,
    client: Option<std::net::SocketAddr>,
    started: Instant,
    /// With request spans exported: the request's trace.
    trace_id: Option<TraceId>,
    /// Only with `--access-log-format`, so the default line costs nothing more.
    formatted: Option<Box<FormattedLine>>,
}

/// What a `--access-log-format` line shows beyond the default line's facts.
struct FormattedLine {
    format: Arc<AccessLogFormat>,
    arrived: SystemTime,
    request_headers: Vec<Option<HeaderValue>>,
    response_headers: Vec<Option<HeaderValue>>,
}

/// The target of the access-log events: `RUST_LOG=rust_asgi_server::access=off` silences
/// them alone.
const TARGET: &str = "rust_asgi_server::access";

impl RequestLine {
    /// Whether a line may be written anywhere: with no subscriber, or every log level above
    /// `info` (`--log-level warning`, as uvicorn hides its access log then), the request's
    /// facts are not even gathered.
    ///
    /// Asked of the level alone, not of [`TARGET`] with `tracing::enabled!`: under
    /// per-layer filters (the binary's) that question, asked without an event following,
    /// leaves the layer's decision behind for the thread's next event, which was then lost
    /// (an app's traceback, with `RUST_LOG=info,rust_asgi_server::access=off`).
    pub(super) fn wanted() -> bool {
        tracing::level_enabled!(tracing::Level::INFO)
    }

    pub(super) fn new<B>(
        request: &http::Request<B>,
        client: Option<std::net::SocketAddr>,
        format: Option<&Arc<AccessLogFormat>>,
    ) -> Self {
        RequestLine {
            formatted: format.map(|format| {
                Box::new(FormattedLine {
                    arrived: SystemTime::now(),
                    request_headers: format.request_headers(request.headers()),
                    response_headers: Vec::new(),
                    format: format.clone(),
                })
            }),
            method: request.method().clone(),
            path_and_query: request
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), ToString::to_string),
            version: request.version(),
            client,
            started: Instant::now(),
            trace_id: None,
        }
    }

    /// The line names the request's trace, as a `trace_id` field of the event (a JSON key
    /// with `--log-format json`).
    pub(super) fn traced(mut self, trace_id: Option<TraceId>) -> Self {
        self.trace_id = trace_id;
        self
    }
}

/// A response body that counts what it yields and logs the request line when done.
pub(super) struct LoggedBody<B: Body> {
    inner: B,
    /// HEAD responses are complete without any body being polled.
    head: bool,
    /// Boxed: the body is moved up through every layer, and the line is most of its size.
    line: Option<Box<RequestLine>>,
    status: StatusCode,
    bytes: u64,
}

impl<B: Body> LoggedBody<B> {
    pub(super) fn new(
        inner: B,
        mut line: Box<RequestLine>,
        response: &http::response::Parts,
    ) -> Self {
        if let Some(formatted) = &mut line.formatted {
            formatted.response_headers = formatted.format.response_headers(&response.headers);
        }
        LoggedBody {
            head: line.method == Method::HEAD,
            inner,
            line: Some(line),
            status: response.status,
            bytes: 0,
        }
    }

    fn log(&mut self, completed: bool) {
        let Some(line) = self.line.take() else {
            return;
        };
        let status = self.status;
        if let Some(formatted) = &line.formatted {
            let exchange = Exchange {
                method: &line.method,
                path_and_query: &line.path_and_query,
                version: line.version,
                client: line.client,
                arrived: formatted.arrived,
                elapsed: line.started.elapsed(),
                status,
                bytes: self.bytes,
                request_headers: &formatted.request_headers,
                response_headers: &formatted.response_headers,
            };
            // The format is the whole line: no "(incomplete)" mark that a parser of it
            // would not expect.
            tracing::info!(
                target: TARGET,
                trace_id = line.trace_id.map(tracing::field::display),
                "{}",
                formatted.format.line(&exchange)
            );
            return;
        }
        tracing::info!(
            target: TARGET,
            trace_id = line.trace_id.map(tracing::field::display),
            "{} \"{} {} {:?}\" {} {}B {:.2}ms{}",
            Client(line.client),
            line.method,
            line.path_and_query,
            line.version,
            status.as_u16(),
            self.bytes,
            line.started.elapsed().as_secs_f64() * 1000.0,
            if completed { "" } else { " (incomplete)" },
        );
    }
}

/// The client's address, or `-` when there is none (a Unix socket), formatted only when
/// the line is.
struct Client(Option<std::net::SocketAddr>);

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(client) => client.fmt(f),
            None => f.write_str("-"),
        }
    }
}

impl<B: Body + Unpin> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += bytes::Buf::remaining(data) as u64;
                }
                if this.inner.is_end_stream() {
                    this.log(true);
                }
            }
            Poll::Ready(None) => this.log(true),
            Poll::Ready(Some(Err(_))) => this.log(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        // A body polled to its end has logged already; one dropped earlier was cut off,
        // unless there was nothing to send.
        let completed = self.head || self.inner.is_end_stream();
        self.log(completed);
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;

    use super::RequestLine;

    fn wanted_at(level: LevelFilter) -> bool {
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(level),
        );
        tracing::subscriber::with_default(subscriber, RequestLine::wanted)
    }

    #[test]
    fn lines_are_gathered_only_when_a_subscriber_would_write_them() {
        assert!(!RequestLine::wanted(), "no subscriber");
        assert!(wanted_at(LevelFilter::INFO));
        assert!(wanted_at(LevelFilter::DEBUG));
        assert!(!wanted_at(LevelFilter::WARN), "--log-level warning");
    }
}
