//! The request body of an HTTP/3 request, read from its stream only when polled, so QUIC's
//! flow control holds a client back while the app is not reading (backpressure).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h3::error::StreamError;
use h3::server::RequestStream;
use http_body::{Body, Frame};

/// The receiving half of a request stream.
type RecvStream = RequestStream<h3_quinn::RecvStream, Bytes>;

/// The request body: DATA frames, then trailers if the client sends any. A stream the
/// client resets, or a connection lost, fails it; the ASGI bridge then gives the app
/// `http.disconnect`. Dropping it unread tells the client to stop sending.
pub(super) struct RequestBody {
    stream: RecvStream,
    state: State,
}

enum State {
    Data,
    Trailers,
    Done,
}

impl RequestBody {
    pub(super) fn new(stream: RecvStream) -> Self {
        RequestBody {
            stream,
            state: State::Data,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = self.get_mut();
        loop {
            match this.state {
                State::Data => match ready!(this.stream.poll_recv_data(cx)) {
                    Ok(Some(mut chunk)) => {
                        // An empty DATA frame is legal and means nothing.
                        if chunk.has_remaining() {
                            let data = chunk.copy_to_bytes(chunk.remaining());
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                    }
                    Ok(None) => this.state = State::Trailers,
                    Err(err) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(err)));
                    }
                },
                State::Trailers => {
                    let trailers = ready!(this.stream.poll_recv_trailers(cx));
                    this.state = State::Done;
                    return Poll::Ready(match trailers {
                        Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
                        Ok(None) => None,
                        Err(err) => Some(Err(err)),
                    });
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }
}
