//! The ASGI websocket bridge: the handshake is decided by the app (accept, close, or a
//! denial response), then yawc carries frames over hyper's upgraded connection ([`io`],
//! compressed when the client and the server agreed on permessage-deflate) while
//! `send`/`receive` ([`cycle`]) park on the loop thread exactly as for HTTP.

mod cycle;
mod event;
mod io;
mod message;

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use yawc::{Options, WebSocket, WebSocketError};

pub(super) use self::io::Settings;

use self::cycle::{Handshake, internal_error};
use super::body::ResponseBody;
use super::codec::{plain_response, request_head};
use super::cycle::submit_and_await;
use crate::python::EventLoop;
use crate::shutdown::Shutdown;

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
pub(super) async fn handle(
    event_loop: &EventLoop,
    root_path: &Arc<str>,
    settings: &Settings,
    shutdown: &Shutdown,
    mut parts: http::request::Parts,
) -> Response<ResponseBody> {
    // yawc checks the key and the version (RFC 6455 §4.2.1) as it builds the 101's headers.
    let upgrade_headers = match upgrade_headers(&parts, settings.options()) {
        Ok(headers) => headers,
        Err(WebSocketError::MissingSecWebSocketKey) => {
            return plain_response(StatusCode::BAD_REQUEST, "Missing Sec-WebSocket-Key");
        }
        Err(WebSocketError::InvalidSecWebsocketVersion) => {
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
        Err(_) => return plain_response(StatusCode::BAD_REQUEST, "Invalid websocket handshake"),
    };
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return plain_response(
            StatusCode::BAD_REQUEST,
            "This connection cannot be upgraded",
        );
    };
    let settings = settings.clone();
    let head = request_head(parts);
    let root_path = root_path.clone();
    let shutdown = shutdown.clone();
    submit_and_await(event_loop, move |py, asked| {
        let handshake = Handshake {
            on_upgrade,
            upgrade_headers,
            settings,
            shutdown,
        };
        cycle::start(py, head, &root_path, handshake, asked);
    })
    .await
    .unwrap_or_else(internal_error)
}

/// The headers of the 101 that accepts this handshake: the accept key, and the extensions
/// agreed from the client's offers and `options`.
fn upgrade_headers(
    parts: &http::request::Parts,
    options: &Options,
) -> yawc::Result<http::HeaderMap> {
    // yawc negotiates from a request, and reads one offer: of a client's several (RFC 7692
    // §5: in order of preference), the first one yawc agrees to is taken. The upgrade yawc
    // would wait for is left unused, since the connection switches once the app accepts.
    let mut request = http::Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    let offers: Vec<HeaderValue> = parts
        .headers
        .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|offer| HeaderValue::from_str(offer.trim()).ok())
        .collect();
    for offer in offers {
        request
            .headers_mut()
            .insert(http::header::SEC_WEBSOCKET_EXTENSIONS, offer);
        let (response, _upgrade) = WebSocket::upgrade_with_options(&mut request, options.clone())?;
        if response
            .headers()
            .contains_key(http::header::SEC_WEBSOCKET_EXTENSIONS)
        {
            return Ok(response.into_parts().0.headers);
        }
    }
    request
        .headers_mut()
        .remove(http::header::SEC_WEBSOCKET_EXTENSIONS);
    let (response, _upgrade) = WebSocket::upgrade_with_options(request, options.clone())?;
    Ok(response.into_parts().0.headers)
}
