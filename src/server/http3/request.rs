//! One HTTP/3 request stream: the head is resolved into an `http::Request` whose body
//! streams from the stream, the service answers it, and the response goes back frame by
//! frame, each send awaited so a slow client holds back the app (backpressure).

use std::sync::Arc;

use bytes::{Buf, Bytes};
use h3::error::{Code, StreamError};
use h3::server::{RequestResolver, RequestStream};
use http::header::{CONNECTION, DATE, HeaderName, HeaderValue, TRANSFER_ENCODING, UPGRADE};
use http::{Method, Response};
use http_body::Body;
use http_body_util::BodyExt;

use super::body::RequestBody;
use crate::BoxError;
use crate::connection_info::{ConnectionInfo, TlsInfo};
use crate::server::connection::{ConnectionSetup, Routed, RoutedBody};

/// The sending half of a request stream.
type SendStream = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// Fields HTTP/3 forbids (RFC 9114 §4.2): they describe an HTTP/1.1 connection, which an
/// app or a layer written for one may still set. `keep-alive` and `proxy-connection` have
/// no constants in `http`.
const CONNECTION_SPECIFIC: [HeaderName; 5] = [
    CONNECTION,
    TRANSFER_ENCODING,
    UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Serves one request stream of `connection` to its end.
pub(super) async fn serve<S, B>(
    resolver: RequestResolver<h3_quinn::Connection, Bytes>,
    setup: ConnectionSetup<S>,
    connection: ConnectionInfo,
    tls: Arc<TlsInfo>,
    date_header: bool,
) where
    S: Routed<B>,
    B: RoutedBody,
{
    let (request, stream) = match resolver.resolve_request().await {
        Ok(resolved) => resolved,
        Err(err) => return tracing::debug!("HTTP/3 request refused: {err}"),
    };
    let head_only = request.method() == Method::HEAD;
    let (mut send, receive) = stream.split();
    let request = request.map(|()| RequestBody::new(receive));
    let mut response = setup.respond(request, connection, Some(&tls), ()).await;
    if date_header {
        let now = httpdate::fmt_http_date(std::time::SystemTime::now());
        if let Ok(now) = HeaderValue::try_from(now) {
            response.headers_mut().entry(DATE).or_insert(now);
        }
    }
    if let Err(err) = send_response(&mut send, response, head_only).await {
        // The client reset the stream or left: the response body is dropped with this
        // task, which the ASGI bridge reports to the app as `http.disconnect`.
        if !err.is_h3_no_error() {
            tracing::debug!("HTTP/3 response not sent: {err}");
        }
    }
}

/// Sends the head, the body (none for HEAD) and the trailers if any, then ends the stream.
/// A body that fails resets the stream, so the client does not take a cut-off body for
/// the whole.
async fn send_response<B>(
    send: &mut SendStream,
    response: Response<B>,
    head_only: bool,
) -> Result<(), StreamError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    for name in &CONNECTION_SPECIFIC {
        parts.headers.remove(name);
    }
    send.send_response(Response::from_parts(parts, ())).await?;
    if !head_only {
        let mut body = std::pin::pin!(body);
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(err) => {
                    tracing::debug!("HTTP/3 response body failed: {}", err.into());
                    send.stop_stream(Code::H3_INTERNAL_ERROR);
                    return Ok(());
                }
            };
            match frame.into_data() {
                Ok(mut data) => {
                    if data.has_remaining() {
                        send.send_data(data.copy_to_bytes(data.remaining())).await?;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        send.send_trailers(trailers).await?;
                    }
                }
            }
        }
    }
    send.finish().await
}
