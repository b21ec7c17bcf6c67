//! Request heads hyper parses but RFC 9112 says to refuse, answered here so that neither
//! the router nor the app ever sees them, and the connection closed after the answer:
//!
//! - a `Transfer-Encoding` other than one plain `chunked` (§6.1): 501 when it names a
//!   coding registered for HTTP that the server does not decode (`gzip, chunked`), as the
//!   RFC asks of a server that does not understand a coding; 400 for any other
//!   (`identity, chunked`, `chunked, chunked`, `chunked` on two lines), which no correct
//!   client sends;
//! - an HTTP/1.1 request without `Host`, and any HTTP/1 request with two (§3.2): 400.
//!
//! hyper itself answers 400 to a `Transfer-Encoding` whose last coding is not `chunked`, or
//! in an HTTP/1.0 request. A `Content-Length` beside `Transfer-Encoding` it drops before any
//! service sees the request, framing the body by `Transfer-Encoding` alone and closing the
//! connection after the response (RFC 9112 §6.1 allows this instead of a 400), so that case
//! cannot be refused here. HTTP/2 requests carry neither header: the h2 crate refuses them.

use http::header::{CONNECTION, HOST, HeaderValue, TRANSFER_ENCODING};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::Empty;

/// Transfer codings of the IANA registry other than `chunked` (`trailers` is reserved):
/// well-formed, but not decoded by this server.
const NOT_IMPLEMENTED: [&[u8]; 5] = [b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress"];

/// The status to refuse `request` with, if it must be refused.
pub(super) fn refusal<B>(request: &Request<B>) -> Option<StatusCode> {
    if request.version() > Version::HTTP_11 {
        return None;
    }
    let headers = request.headers();
    transfer_coding_refusal(headers).or_else(|| host_refusal(request.version(), headers))
}

/// The answer to a refused request: no body, and no further request on this connection.
pub(super) fn response<D>(status: StatusCode) -> Response<Empty<D>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn transfer_coding_refusal(headers: &HeaderMap) -> Option<StatusCode> {
    let mut lines = headers.get_all(TRANSFER_ENCODING).iter();
    let first = lines.next()?;
    let plain_chunked = first
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"chunked");
    if plain_chunked && lines.next().is_none() {
        return None;
    }
    let not_implemented = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&byte| byte == b','))
        .map(coding_name)
        .any(|name| {
            NOT_IMPLEMENTED
                .iter()
                .any(|known| name.eq_ignore_ascii_case(known))
        });
    Some(if not_implemented {
        StatusCode::NOT_IMPLEMENTED
    } else {
        StatusCode::BAD_REQUEST
    })
}

/// `gzip` of ` gzip;q=1 `: a coding without its parameters.
fn coding_name(coding: &[u8]) -> &[u8] {
    let name = coding.split(|&byte| byte == b';').next().unwrap_or(coding);
    name.trim_ascii()
}

fn host_refusal(version: Version, headers: &HeaderMap) -> Option<StatusCode> {
    let mut hosts = headers.get_all(HOST).iter();
    let missing = hosts.next().is_none() && version == Version::HTTP_11;
    (missing || hosts.next().is_some()).then_some(StatusCode::BAD_REQUEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn refused(headers: &[(&str, &str)]) -> Option<StatusCode> {
        let mut with_host = vec![("host", "t")];
        with_host.extend_from_slice(headers);
        refusal(&request(Version::HTTP_11, &with_host))
    }

    #[test]
    fn one_plain_chunked_in_any_case_is_accepted() {
        assert_eq!(refused(&[]), None);
        assert_eq!(refused(&[("transfer-encoding", "chunked")]), None);
        assert_eq!(refused(&[("transfer-encoding", " Chunked\t")]), None);
    }

    #[test]
    fn codings_the_server_does_not_decode_are_not_implemented() {
        for value in ["gzip, chunked", "X-GZIP,chunked", "deflate ;q=1, chunked"] {
            let headers = [("transfer-encoding", value)];
            assert_eq!(
                refused(&headers),
                Some(StatusCode::NOT_IMPLEMENTED),
                "{value}"
            );
        }
        let two_lines = [
            ("transfer-encoding", "compress"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(refused(&two_lines), Some(StatusCode::NOT_IMPLEMENTED));
    }

    #[test]
    fn any_other_transfer_encoding_is_a_bad_request() {
        for value in [
            "identity, chunked",
            "chunked, chunked",
            ", chunked",
            "chunked;x=1",
        ] {
            let headers = [("transfer-encoding", value)];
            assert_eq!(refused(&headers), Some(StatusCode::BAD_REQUEST), "{value}");
        }
        let two_lines = [
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(refused(&two_lines), Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn http_1_1_needs_exactly_one_host_and_http_1_0_at_most_one() {
        let bad = Some(StatusCode::BAD_REQUEST);
        assert_eq!(refusal(&request(Version::HTTP_11, &[])), bad);
        assert_eq!(refusal(&request(Version::HTTP_11, &[("host", "")])), None);
        let two = [("host", "a"), ("host", "a")];
        assert_eq!(refusal(&request(Version::HTTP_11, &two)), bad);
        assert_eq!(refusal(&request(Version::HTTP_10, &[])), None);
        assert_eq!(refusal(&request(Version::HTTP_10, &two)), bad);
    }

    #[test]
    fn http_2_requests_are_left_to_the_h2_crate() {
        assert_eq!(refusal(&request(Version::HTTP_2, &[])), None);
    }

    #[test]
    fn a_refusal_closes_the_connection_and_has_no_body() {
        let response = response::<bytes::Bytes>(StatusCode::NOT_IMPLEMENTED);
        assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(response.headers()[CONNECTION], "close");
        assert!(http_body::Body::is_end_stream(response.body()));
    }
}
