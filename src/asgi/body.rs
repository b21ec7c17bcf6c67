//! Bodies flowing between hyper and the app, both directions.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;

use crate::BoxError;
use crate::signal::{DropGuard, Signal};

/// A request body of any Tower stack, erased once at the edge.
pub(super) type IncomingBody = UnsyncBoxBody<Bytes, BoxError>;

/// One item of a streamed response; an `Err` aborts the connection so a client never takes
/// a cut-off response for a complete one.
pub(super) type StreamItem = Result<Frame<Bytes>, BoxError>;

/// Of bodies at most this large (by `content-length`), what arrived with the head is taken
/// before the app starts, so its first `receive()` completes at once.
pub(super) const PREREAD_LIMIT: u64 = 64 * 1024;

/// Chunks from the app at least this large are written from the Python object itself
/// instead of a copy. Below it a copy is cheaper than keeping the object alive until Tokio
/// has written it (its release then waits in pyo3's deferred reference pool for the loop
/// thread).
const SHARE_FROM: usize = 16 * 1024;

/// The contents of a `bytes` the app sent. Large chunks are shared, not copied: a streamed
/// download then holds no second copy of what the app still references, and the common
/// case of an app sending one prebuilt chunk over and over allocates nothing per chunk.
pub(super) fn app_bytes(bytes: &Bound<'_, PyBytes>) -> Bytes {
    let data = bytes.as_bytes();
    if data.len() < SHARE_FROM {
        Bytes::copy_from_slice(data)
    } else {
        Bytes::from_owner(PyBackedBytes::from(bytes.clone()))
    }
}

/// How the app's `receive()` gets the request body.
pub(super) enum RequestBody {
    /// Complete before the app started (or empty): handed over in one message.
    Buffered(Bytes),
    /// What arrived with the head, handed over first; the rest streams.
    Partial(Bytes, IncomingBody),
    /// Read frame by frame as the app asks for it, which gives backpressure on uploads.
    Streaming(IncomingBody),
}

impl RequestBody {
    /// Decides, on the Tokio side, what of the body to take before the app starts: of a
    /// small body, whatever is already here, without waiting for the rest (a client that
    /// pauses mid-body must not hold the app back). `Expect: 100-continue` bodies are left
    /// alone: the client waits until the app first calls `receive()`.
    pub(super) fn prepare<B>(headers: &HeaderMap, body: B) -> Result<RequestBody, BoxError>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        if body.is_end_stream() {
            return Ok(RequestBody::Buffered(Bytes::new()));
        }
        let expects_continue = headers
            .get(http::header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let small = body
            .size_hint()
            .exact()
            .is_some_and(|length| length <= PREREAD_LIMIT);
        // Measured before `map_frame`, which forgets the length.
        let mut body = UnsyncBoxBody::new(
            body.map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
                .map_err(Into::into),
        );
        if !small || expects_continue {
            return Ok(RequestBody::Streaming(body));
        }
        let mut arrived = BytesMut::new();
        // hyper hands over the body bytes it read with the head before the service runs; a
        // poll that would wait means the rest is still on its way.
        let mut cx = Context::from_waker(Waker::noop());
        while let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(&mut cx) {
            match frame {
                None => return Ok(RequestBody::Buffered(arrived.freeze())),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        arrived.extend_from_slice(&data);
                    }
                    if body.is_end_stream() {
                        return Ok(RequestBody::Buffered(arrived.freeze()));
                    }
                }
            }
        }
        Ok(if arrived.is_empty() {
            RequestBody::Streaming(body)
        } else {
            RequestBody::Partial(arrived.freeze(), body)
        })
    }
}

/// The body of every response the app produces.
///
/// It holds the request's disconnect token: when hyper drops the body (fully written, or the
/// client went away) the app's pending `receive()` gets `http.disconnect`.
pub struct ResponseBody {
    kind: Kind,
    _disconnect_on_drop: Option<DropGuard>,
}

enum Kind {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<StreamItem>),
    /// Boxed: a file's reader is several times the size of the other kinds, and every
    /// response moves its body up through each layer it passes.
    File(Box<FileBody>),
}

struct FileBody {
    stream: ReaderStream<tokio::fs::File>,
    length: u64,
}

impl ResponseBody {
    pub(crate) fn full(bytes: Bytes, disconnect: Option<&Signal>) -> Self {
        // An empty body is already at its end: hyper never polls it, and it must not look cut off.
        let bytes = (!bytes.is_empty()).then_some(bytes);
        Self::new(Kind::Full(bytes), disconnect)
    }

    pub(crate) fn channel(receiver: mpsc::Receiver<StreamItem>, disconnect: &Signal) -> Self {
        Self::new(Kind::Channel(receiver), Some(disconnect))
    }

    pub(crate) fn file(file: tokio::fs::File, length: u64, disconnect: &Signal) -> Self {
        let stream = ReaderStream::with_capacity(file, 64 * 1024);
        Self::new(
            Kind::File(Box::new(FileBody { stream, length })),
            Some(disconnect),
        )
    }

    fn new(kind: Kind, disconnect: Option<&Signal>) -> Self {
        ResponseBody {
            kind,
            _disconnect_on_drop: disconnect.map(|token| token.clone().drop_guard()),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Kind::Channel(receiver) => receiver.poll_recv(cx),
            Kind::File(file) => Pin::new(&mut file.stream)
                .poll_next(cx)
                .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data).map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::File(file) => SizeHint::with_exact(file.length),
            Kind::Channel(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn small_bodies_that_arrived_are_taken_before_the_app_starts() {
        let body = Full::new(Bytes::from_static(b"hello"));
        match RequestBody::prepare(&HeaderMap::new(), body).unwrap() {
            RequestBody::Buffered(bytes) => assert_eq!(bytes, "hello"),
            _ => panic!("a 5-byte body should be buffered"),
        }
    }

    /// A body of `length` bytes of which only `arrived` are here yet.
    fn arriving(length: u64, arrived: &'static [u8]) -> impl Body<Data = Bytes, Error = BoxError> {
        struct Arriving(Option<Bytes>, u64);
        impl Body for Arriving {
            type Data = Bytes;
            type Error = BoxError;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
                match self.0.take() {
                    Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                    None => Poll::Pending,
                }
            }
            fn size_hint(&self) -> SizeHint {
                SizeHint::with_exact(self.1)
            }
        }
        Arriving(
            (!arrived.is_empty()).then(|| Bytes::from_static(arrived)),
            length,
        )
    }

    #[test]
    fn the_rest_of_a_small_body_is_never_waited_for() {
        match RequestBody::prepare(&HeaderMap::new(), arriving(10, b"hello")).unwrap() {
            RequestBody::Partial(bytes, _) => assert_eq!(bytes, "hello"),
            _ => panic!("the 5 bytes here should go first, the rest stream"),
        }
        assert!(matches!(
            RequestBody::prepare(&HeaderMap::new(), arriving(10, b"")).unwrap(),
            RequestBody::Streaming(_)
        ));
    }

    #[test]
    fn expect_continue_bodies_wait_for_the_app() {
        let body = Full::new(Bytes::from_static(b"hello"));
        let headers = headers(&[("expect", "100-Continue")]);
        assert!(matches!(
            RequestBody::prepare(&headers, body).unwrap(),
            RequestBody::Streaming(_)
        ));
    }

    #[test]
    fn bodies_of_unknown_or_large_length_stream() {
        let chunks =
            futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"a")))]);
        assert!(matches!(
            RequestBody::prepare(&HeaderMap::new(), StreamBody::new(chunks)).unwrap(),
            RequestBody::Streaming(_)
        ));
        let large = Full::new(Bytes::from(vec![0u8; PREREAD_LIMIT as usize + 1]));
        assert!(matches!(
            RequestBody::prepare(&HeaderMap::new(), large).unwrap(),
            RequestBody::Streaming(_)
        ));
    }

    #[tokio::test]
    async fn a_full_response_body_reports_its_length_and_ends() {
        let mut body = ResponseBody::full(Bytes::from_static(b"abc"), None);
        assert_eq!(body.size_hint().exact(), Some(3));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn dropping_a_response_body_signals_disconnect_to_the_app() {
        let disconnect = Signal::new();
        let (_sender, receiver) = mpsc::channel(1);
        let body = ResponseBody::channel(receiver, &disconnect);
        assert!(!disconnect.is_cancelled());
        drop(body);
        assert!(disconnect.is_cancelled());
    }

    #[test]
    fn large_app_chunks_are_shared_and_small_ones_copied() {
        Python::attach(|py| {
            let large = PyBytes::new(py, &vec![b'x'; SHARE_FROM]);
            let shared = app_bytes(&large);
            assert_eq!(shared.as_ptr(), large.as_bytes().as_ptr());
            assert_eq!(shared.len(), SHARE_FROM);

            let small = PyBytes::new(py, b"hello");
            let copied = app_bytes(&small);
            assert_ne!(copied.as_ptr(), small.as_bytes().as_ptr());
            assert_eq!(&copied[..], b"hello");
        });
    }

    #[test]
    fn a_shared_chunk_outlives_the_apps_reference() {
        let chunk = Python::attach(|py| {
            let bytes = PyBytes::new(py, &vec![7u8; 2 * SHARE_FROM]);
            app_bytes(&bytes)
        });
        // Read (and later dropped) where Tokio would, with no Python reference left.
        let chunk = std::thread::spawn(move || chunk).join().unwrap();
        assert!(chunk.iter().all(|&byte| byte == 7));
        assert_eq!(chunk.len(), 2 * SHARE_FROM);
    }
}
