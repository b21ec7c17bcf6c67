//! HTTP/3 (`--http3`): a QUIC endpoint (quinn) beside each TCP listener, on the same port
//! number over UDP, serving the same service through h3. Each request goes through the same
//! per-request plumbing as one over TCP ([`ConnectionSetup::respond`]): proxy headers,
//! connection info, the access log, the health path.
//!
//! ```text
//! endpoint.rs    the UDP socket and its accept loop; draining refuses new connections
//! connection.rs  one QUIC connection: h3 settings, its requests, GOAWAY when draining
//! request.rs     one request stream: the request in, the response body out
//! body.rs        the request body, read from the stream as the app asks for it
//! alt_svc.rs     the `Alt-Svc` header TCP responses announce HTTP/3 with
//! ```
//!
//! [`ConnectionSetup::respond`]: super::connection::ConnectionSetup::respond

mod alt_svc;
mod body;
mod connection;
mod endpoint;
mod request;

pub(super) use alt_svc::alt_svc;
pub(super) use endpoint::QuicEndpoint;
