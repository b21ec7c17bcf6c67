//! Reading the fields of the app's messages, and the requests and responses the bridges
//! build from them. Malformed fields raise the exceptions of [`super::violation`].

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyList, PyString, PyTuple};

use super::body::ResponseBody;
use super::context::ScopeValues;
use super::scope::RequestHead;
use super::violation::{bad_value, wrong_type};
use crate::connection_info::{ConnectionInfo, TlsInfo};

/// The `type` of a message the app sent.
pub(super) fn message_type<'py>(message: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyString>> {
    let py = message.py();
    let message_type = message
        .get_item(intern!(py, "type"))?
        .ok_or_else(|| bad_value("ASGI message has no 'type' key"))?;
    match message_type.cast_into::<PyString>() {
        Ok(message_type) => Ok(message_type),
        Err(err) => Err(wrong_type(format!(
            "ASGI message 'type' must be a str, got {}",
            err.into_inner().repr()?
        ))),
    }
}

/// A boolean field; absent means false.
pub(super) fn flag(message: &Bound<'_, PyDict>, key: &Bound<'_, PyString>) -> PyResult<bool> {
    match message.get_item(key)? {
        Some(value) => value.is_truthy(),
        None => Ok(false),
    }
}

/// A field that may be absent or `None`.
pub(super) fn optional<'py>(
    message: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    Ok(message.get_item(key)?.filter(|value| !value.is_none()))
}

/// The `body` of a `*.response.body` message; absent means empty.
pub(super) fn body<'py>(
    message: &Bound<'py, PyDict>,
    message_type: &str,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let py = message.py();
    message
        .get_item(intern!(py, "body"))?
        .map(|body| {
            body.cast_into::<PyBytes>()
                .map_err(|_| wrong_type(format!("'{message_type}' body must be bytes")))
        })
        .transpose()
}

/// The `headers` of a message; absent means none.
pub(super) fn headers(message: &Bound<'_, PyDict>) -> PyResult<HeaderMap> {
    let py = message.py();
    match message.get_item(intern!(py, "headers"))? {
        Some(headers) => header_map(&headers),
        None => Ok(HeaderMap::new()),
    }
}

/// ASGI headers (an iterable of `[name, value]` byte pairs) as a `HeaderMap`, rejecting
/// what HTTP cannot carry (CR/LF in values, invalid names) before it reaches the wire.
fn header_map(headers: &Bound<'_, PyAny>) -> PyResult<HeaderMap> {
    let mut map = HeaderMap::new();
    for pair in headers.try_iter()? {
        let pair = pair?;
        let Some((name, value)) = name_and_value(&pair)? else {
            return Err(bad_value(format!(
                "response headers must be [name, value] pairs, got {}",
                pair.repr()?
            )));
        };
        let (Ok(name), Ok(value)) = (name.cast::<PyBytes>(), value.cast::<PyBytes>()) else {
            return Err(wrong_type(format!(
                "response header names and values must be bytes, got {}",
                pair.repr()?
            )));
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            bad_value(format!(
                "invalid response header name {}",
                name.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
            bad_value(format!(
                "invalid value for response header '{name}': {}",
                value.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        map.append(name, value);
    }
    Ok(map)
}

/// The two items of a header pair, or `None` when it has another length. Tuples and lists,
/// what apps send, are read in place: indexing any sequence makes a Python int of each
/// index, which cost a response half as much again as the rest of its headers.
fn name_and_value<'py>(
    pair: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    if let Ok(pair) = pair.cast::<PyTuple>() {
        return Ok((pair.len() == 2).then(|| {
            (
                pair.get_borrowed_item(0).expect("in range").to_owned(),
                pair.get_borrowed_item(1).expect("in range").to_owned(),
            )
        }));
    }
    if let Ok(pair) = pair.cast::<PyList>() {
        return Ok(match (pair.len(), pair.get_item(0), pair.get_item(1)) {
            (2, Ok(name), Ok(value)) => Some((name, value)),
            _ => None,
        });
    }
    if pair.len()? != 2 {
        return Ok(None);
    }
    Ok(Some((pair.get_item(0)?, pair.get_item(1)?)))
}

/// The `status` and `headers` of a `*.response.start` message as a response head.
pub(super) fn response_head(
    message: &Bound<'_, PyDict>,
    message_type: &str,
) -> PyResult<http::response::Parts> {
    let py = message.py();
    let status = message
        .get_item(intern!(py, "status"))?
        .ok_or_else(|| bad_value(format!("'{message_type}' has no 'status'")))?;
    let status = status
        .cast::<PyInt>()
        .map_err(|_| wrong_type(format!("'{message_type}' status must be an int")))?;
    // `http` takes 100 to 999; HTTP defines 100 to 599 (RFC 9110 §15), and clients may
    // refuse the rest.
    let status = status
        .extract::<u16>()
        .ok()
        .filter(|status| (100..600).contains(status))
        .and_then(|status| StatusCode::from_u16(status).ok())
        .ok_or_else(|| bad_value(format!("invalid HTTP status code {status}")))?;
    let (mut head, ()) = Response::new(()).into_parts();
    head.status = status;
    head.headers = headers(message)?;
    Ok(head)
}

/// A short text response the server writes itself.
pub(super) fn plain_response(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
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

/// The request head as the client sent it: behind `Router::nest` axum has stripped the
/// prefix from the URI, but Python must see the original path, as under uvicorn.
pub(super) fn request_head(mut parts: http::request::Parts) -> RequestHead {
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
        tls: parts.extensions.remove::<Arc<TlsInfo>>(),
        context: parts.extensions.remove::<ScopeValues>(),
    }
}

#[cfg(test)]
mod tests {
    use pyo3::exceptions::{PyTypeError, PyValueError};

    use super::*;

    /// The exception `read` raises for the message written as a Python literal.
    fn error_of<T>(
        literal: &str,
        read: impl for<'py> FnOnce(&Bound<'py, PyDict>) -> PyResult<T>,
    ) -> &'static str {
        Python::attach(|py| {
            let code = std::ffi::CString::new(literal).unwrap();
            let message = py.eval(&code, None, None).unwrap();
            let err = read(message.cast::<PyDict>().unwrap())
                .err()
                .expect(literal);
            if err.is_instance_of::<PyTypeError>(py) {
                "TypeError"
            } else if err.is_instance_of::<PyValueError>(py) {
                "ValueError"
            } else {
                "other"
            }
        })
    }

    fn start(message: &Bound<'_, PyDict>) -> PyResult<http::response::Parts> {
        response_head(message, "http.response.start")
    }

    #[test]
    fn a_missing_or_non_str_type_is_a_value_or_type_error() {
        let read = |message: &Bound<'_, PyDict>| message_type(message).map(drop);
        assert_eq!(error_of("{}", read), "ValueError");
        assert_eq!(error_of("{'type': b'x'}", read), "TypeError");
    }

    #[test]
    fn a_status_of_the_wrong_type_or_value_is_refused_by_kind() {
        assert_eq!(error_of("{'type': 'x'}", start), "ValueError");
        assert_eq!(error_of("{'status': '200'}", start), "TypeError");
        assert_eq!(error_of("{'status': 70000}", start), "ValueError");
        assert_eq!(error_of("{'status': -1}", start), "ValueError");
        assert_eq!(error_of("{'status': 42}", start), "ValueError");
        assert_eq!(error_of("{'status': 600}", start), "ValueError");
    }

    #[test]
    fn headers_of_the_wrong_type_or_value_are_refused_by_kind() {
        let with = |headers: &str| format!("{{'status': 200, 'headers': {headers}}}");
        assert_eq!(error_of(&with("[('x', 'y')]"), start), "TypeError");
        assert_eq!(
            error_of(&with("[(b'x', b'a\\r\\nb')]"), start),
            "ValueError"
        );
        assert_eq!(error_of(&with("[(b'x y', b'1')]"), start), "ValueError");
        assert_eq!(error_of(&with("[(b'x',)]"), start), "ValueError");
        assert_eq!(error_of(&with("[1]"), start), "TypeError");
    }

    #[test]
    fn header_pairs_may_be_tuples_lists_or_other_sequences() {
        Python::attach(|py| {
            let code = c"{'status': 200, 'headers': [(b'a', b'1'), [b'b', b'2'], memoryview(b'cd').cast('c')]}";
            let message = py.eval(code, None, None).unwrap();
            let head = start(message.cast::<PyDict>().unwrap()).unwrap();
            let pairs: Vec<(&str, &[u8])> = head
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_bytes()))
                .collect();
            // memoryview's items are 1-byte bytes: a pair of them is a pair like any other.
            assert_eq!(pairs, [("a", &b"1"[..]), ("b", b"2"), ("c", b"d")]);
        });
        let with = |headers: &str| format!("{{'status': 200, 'headers': {headers}}}");
        assert_eq!(error_of(&with("[(b'x', b'1', b'2')]"), start), "ValueError");
        assert_eq!(error_of(&with("[[b'x']]"), start), "ValueError");
        assert_eq!(error_of(&with("[b'xy']"), start), "TypeError");
    }

    #[test]
    fn a_body_that_is_not_bytes_is_a_type_error() {
        let read = |message: &Bound<'_, PyDict>| body(message, "http.response.body").map(drop);
        assert_eq!(error_of("{'body': 'text'}", read), "TypeError");
    }
}
