//! The ASGI websocket bridge: the handshake is decided by the app (accept, close, or a
//! denial response), then tokio-tungstenite carries frames over hyper's upgraded
//! connection ([`io`]) while `send`/`receive` ([`cycle`]) park on the loop thread exactly
//! as for HTTP.

mod cycle;
mod event;
mod io;

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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
    config: WebSocketConfig,
    shutdown: &Shutdown,
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
    let root_path = root_path.clone();
    let shutdown = shutdown.clone();
    submit_and_await(event_loop, move |py, asked| {
        let handshake = Handshake {
            on_upgrade,
            accept_key,
            config,
            shutdown,
        };
        cycle::start(py, head, &root_path, handshake, asked);
    })
    .await
    .unwrap_or_else(internal_error)
}
