//! The `Alt-Svc` header (RFC 7838) that tells HTTP/1.1 and HTTP/2 clients HTTP/3 is served
//! on a port: browsers and curl switch to it for later requests.

use http::HeaderValue;

/// How long clients may remember the announcement, in seconds: a day, as is usual.
const MAX_AGE: u32 = 86_400;

/// `h3=":PORT"; ma=86400`: HTTP/3 on `port` of the host the client already uses.
pub(in crate::server) fn alt_svc(port: u16) -> HeaderValue {
    HeaderValue::try_from(format!("h3=\":{port}\"; ma={MAX_AGE}"))
        .expect("digits and ASCII punctuation make a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announcement_names_the_port_and_a_day() {
        assert_eq!(alt_svc(8443), "h3=\":8443\"; ma=86400");
    }
}
