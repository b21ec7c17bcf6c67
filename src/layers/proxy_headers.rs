//! Taking a reverse proxy's word for who the client is and which scheme it used, as
//! uvicorn's `--proxy-headers` does: only when the connecting peer is a trusted proxy.
//!
//! `X-Forwarded-For` and `X-Forwarded-Proto` are read exactly as uvicorn reads them, so a
//! deployment behind nginx or a cloud load balancer sees the same `client` and `scheme` after
//! the switch. A proxy that sends only the standard `Forwarded` header (RFC 7239) is
//! understood too: its `for=` and `proto=` stand in for whichever `X-Forwarded-*` header is
//! missing.
//!
//! Each proxy appends the address it received the request from, so the chain is read from the
//! right: the client is the right-most address that is not a trusted proxy. A forwarded host
//! that is not an IP address (a name, `unknown`, an RFC 7239 obfuscated `_id`) cannot be
//! reported as one, so the client then stays the connecting peer.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, Request};

use crate::connection_info::ConnectionInfo;

// Names known at compile time: a lookup by `&str` parses the name on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The peers whose proxy headers are believed: `--forwarded-allow-ips`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrustedProxies {
    /// `*`: every peer, and every hop of the chain.
    everyone: bool,
    networks: Vec<Network>,
    /// Entries that are not IP addresses or networks; they match forwarded hosts spelled
    /// the same (uvicorn's "literals", e.g. a unix socket path).
    literals: Vec<String>,
}

impl TrustedProxies {
    /// Trusts proxies on this machine only: uvicorn's default `--forwarded-allow-ips`.
    pub fn localhost() -> Self {
        TrustedProxies {
            networks: vec![Network {
                address: IpAddr::from([127, 0, 0, 1]),
                prefix: 32,
            }],
            ..TrustedProxies::default()
        }
    }

    /// Trusts every peer (`*`), for a server reachable only through its proxies.
    pub fn everyone() -> Self {
        TrustedProxies {
            everyone: true,
            ..TrustedProxies::default()
        }
    }

    fn trusts_ip(&self, ip: IpAddr) -> bool {
        self.everyone || self.networks.iter().any(|network| network.contains(ip))
    }

    /// Whether a host as it appears in a forwarding chain is one of our proxies.
    fn trusts_host(&self, host: &str) -> bool {
        match host.parse::<IpAddr>() {
            Ok(ip) => self.trusts_ip(ip),
            Err(_) => self.everyone || self.literals.iter().any(|literal| literal == host),
        }
    }

    /// The hop that describes the client: the right-most one whose host is not a trusted
    /// proxy. When every hop is trusted the client was a proxy itself, and the left-most hop
    /// (the original sender) is the best answer; with `*` it is always the left-most.
    fn client_hop<'a, T>(&self, hops: &'a [T], host: impl Fn(&T) -> Option<&str>) -> Option<&'a T> {
        if self.everyone {
            return hops.first();
        }
        hops.iter()
            .rev()
            .find(|hop| !host(hop).is_some_and(|host| self.trusts_host(host)))
            .or(hops.first())
    }

    /// The connection as the client made it, when `connection` comes from a trusted proxy;
    /// otherwise unchanged, since anyone can send these headers.
    pub fn apply(&self, connection: ConnectionInfo, headers: &HeaderMap) -> ConnectionInfo {
        let peer_trusted = match connection.client {
            Some(peer) => self.trusts_ip(peer.ip()),
            None => self.everyone,
        };
        // Most requests carry none of the three: one pass over the names costs less than
        // three lookups, which hash the names each time.
        let forwarding = |name: &HeaderName| {
            name == http::header::FORWARDED || name == X_FORWARDED_FOR || name == X_FORWARDED_PROTO
        };
        if !peer_trusted || !headers.keys().any(forwarding) {
            return connection;
        }
        let forwarded = forwarded_hops(headers);
        let forwarded = self.client_hop(&forwarded, |hop| hop.node.as_deref());
        let x_forwarded_for = x_forwarded_for(headers);
        let client = if x_forwarded_for.is_empty() {
            forwarded.and_then(|hop| hop.node.as_deref())
        } else {
            self.client_hop(&x_forwarded_for, |host| Some(host))
                .map(String::as_str)
        };
        let secure = x_forwarded_proto(headers)
            .or_else(|| forwarded.and_then(|hop| hop.proto.as_deref()))
            .and_then(scheme_is_secure);
        ConnectionInfo {
            client: client.and_then(socket_address).or(connection.client),
            secure: secure.unwrap_or(connection.secure),
            ..connection
        }
    }
}

/// Parses uvicorn's `--forwarded-allow-ips`: a comma-separated list of IP addresses, networks
/// (`10.0.0.0/8`) and literals, or `*`. Never fails: like uvicorn, anything that is not an
/// address or network is kept as a literal.
impl FromStr for TrustedProxies {
    type Err = Infallible;

    fn from_str(list: &str) -> Result<Self, Infallible> {
        let mut trusted = TrustedProxies::default();
        for entry in list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            if entry == "*" {
                trusted.everyone = true;
            } else if let Some(network) = Network::parse(entry) {
                trusted.networks.push(network);
            } else {
                trusted.literals.push(entry.to_string());
            }
        }
        Ok(trusted)
    }
}

/// An IP network; a single address is a network of one.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Network {
    address: IpAddr,
    prefix: u32,
}

impl Network {
    fn parse(text: &str) -> Option<Network> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix.parse::<u32>().ok()?)),
            None => (text, None),
        };
        let address = address.parse::<IpAddr>().ok()?.to_canonical();
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        (prefix <= bits).then_some(Network { address, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix).unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix).unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Header bytes as text the way uvicorn decodes them (latin-1), so no value is dropped.
fn latin1(value: &http::HeaderValue) -> String {
    value
        .as_bytes()
        .iter()
        .map(|&byte| char::from(byte))
        .collect()
}

/// Every `X-Forwarded-For` entry, across repeated header lines, in order.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .flat_map(|value| {
            latin1(value)
                .split(',')
                .map(|entry| entry.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The last `X-Forwarded-Proto` line, as uvicorn takes it.
fn x_forwarded_proto(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(X_FORWARDED_PROTO)
        .iter()
        .next_back()
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

/// `https`/`wss` mean TLS up to the proxy; `http`/`ws` mean none; anything else says nothing.
fn scheme_is_secure(scheme: &str) -> Option<bool> {
    match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => Some(true),
        "http" | "ws" => Some(false),
        _ => None,
    }
}

/// A forwarded host with an optional port (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`) as a
/// socket address, port 0 when none was given (uvicorn reports the same); `None` for names.
fn socket_address(host_port: &str) -> Option<SocketAddr> {
    let (host, port) = split_host_port(host_port);
    let ip = host.parse::<IpAddr>().ok()?;
    Some(SocketAddr::new(ip.to_canonical(), port))
}

fn split_host_port(value: &str) -> (&str, u16) {
    if let Some(bracketed) = value.strip_prefix('[') {
        return match bracketed.split_once(']') {
            Some((host, "")) => (host, 0),
            Some((host, port)) => match port.strip_prefix(':').map(str::parse) {
                Some(Ok(port)) => (host, port),
                _ => (host, 0),
            },
            None => (value, 0),
        };
    }
    match value.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, port.parse().unwrap_or(0)),
        _ => (value, 0),
    }
}

/// One element of an RFC 7239 `Forwarded` header: what one proxy saw.
#[derive(Debug, Default, PartialEq)]
struct ForwardedHop {
    /// `for=`: who the proxy received the request from.
    node: Option<String>,
    /// `proto=`: the scheme of the request the proxy received.
    proto: Option<String>,
}

/// Every `Forwarded` element, across repeated header lines, in order. Quoted values may hold
/// `,` `;` and `\`-escapes.
fn forwarded_hops(headers: &HeaderMap) -> Vec<ForwardedHop> {
    let mut hops = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        let mut hop = ForwardedHop::default();
        let mut element_empty = true;
        let mut pair = String::new();
        let mut quoted = false;
        let mut escaped = false;
        for character in latin1(value).chars() {
            match character {
                _ if escaped => {
                    pair.push(character);
                    escaped = false;
                }
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ';' | ',' if !quoted => {
                    element_empty &= pair.trim().is_empty();
                    hop.set(&pair);
                    pair.clear();
                    if character == ',' {
                        if !element_empty {
                            hops.push(std::mem::take(&mut hop));
                        }
                        element_empty = true;
                    }
                }
                _ => pair.push(character),
            }
        }
        element_empty &= pair.trim().is_empty();
        hop.set(&pair);
        if !element_empty {
            hops.push(hop);
        }
    }
    hops
}

impl ForwardedHop {
    /// Records one `name=value` pair (quotes already removed); other parameters are ignored.
    fn set(&mut self, pair: &str) {
        let Some((name, value)) = pair.split_once('=') else {
            return;
        };
        let value = Some(value.trim().to_string());
        match name.trim() {
            name if name.eq_ignore_ascii_case("for") => self.node = value,
            name if name.eq_ignore_ascii_case("proto") => self.proto = value,
            _ => {}
        }
    }
}

/// Applies [`TrustedProxies`] to every request: a [`tower::Layer`] for the whole router, for
/// routers served some other way than by [`crate::Server`], which applies
/// [`crate::ServerOptions::proxy_headers`] itself (so that its access log sees them too).
///
/// It rewrites the request's `ConnectionInfo` (inserted by [`crate::Server`] for each
/// connection, or derived from axum's `ConnectInfo`), which the ASGI scope's `client` and
/// `scheme` come from.
#[derive(Clone, Debug)]
pub struct ProxyHeadersLayer {
    trusted: Arc<TrustedProxies>,
}

impl ProxyHeadersLayer {
    /// Believes the proxy headers of these peers.
    pub fn new(trusted: TrustedProxies) -> Self {
        ProxyHeadersLayer {
            trusted: Arc::new(trusted),
        }
    }
}

impl<S> tower::Layer<S> for ProxyHeadersLayer {
    type Service = ProxyHeaders<S>;

    fn layer(&self, inner: S) -> ProxyHeaders<S> {
        ProxyHeaders {
            inner,
            trusted: self.trusted.clone(),
        }
    }
}

/// The service [`ProxyHeadersLayer`] makes.
#[derive(Clone, Debug)]
pub struct ProxyHeaders<S> {
    inner: S,
    trusted: Arc<TrustedProxies>,
}

impl<S, B> tower::Service<Request<B>> for ProxyHeaders<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> S::Future {
        let extensions = request.extensions();
        let connection = extensions
            .get::<ConnectionInfo>()
            .copied()
            .or_else(|| {
                extensions
                    .get::<axum::extract::ConnectInfo<SocketAddr>>()
                    .map(|info| ConnectionInfo {
                        client: Some(info.0),
                        ..ConnectionInfo::default()
                    })
            })
            .unwrap_or_default();
        let connection = self.trusted.apply(connection, request.headers());
        request.extensions_mut().insert(connection);
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &str) -> TrustedProxies {
        list.parse().unwrap()
    }

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

    fn from_peer(peer: &str) -> ConnectionInfo {
        ConnectionInfo {
            client: Some(peer.parse().unwrap()),
            server: Some("127.0.0.1:8000".parse::<SocketAddr>().unwrap().into()),
            secure: false,
        }
    }

    /// (client, secure) after applying `list` to a request from `peer` with `pairs`.
    fn seen(list: &str, peer: &str, pairs: &[(&'static str, &'static str)]) -> (String, bool) {
        let connection = trusted(list).apply(from_peer(peer), &headers(pairs));
        (connection.client.unwrap().to_string(), connection.secure)
    }

    #[test]
    fn allow_list_holds_addresses_networks_literals_and_star() {
        let list = trusted(" 127.0.0.1, 10.0.0.0/8 ,::1,unix:/tmp/sock");
        assert!(list.trusts_host("127.0.0.1"));
        assert!(list.trusts_host("10.200.3.4"));
        assert!(!list.trusts_host("11.0.0.1"));
        assert!(list.trusts_host("::1"));
        assert!(list.trusts_host("::ffff:127.0.0.1"));
        assert!(list.trusts_host("unix:/tmp/sock"));
        // Not a network (the prefix is too long): only a literal, as in uvicorn.
        let malformed = trusted("10.0.0.1/33");
        assert!(!malformed.trusts_host("10.0.0.1"));
        assert!(malformed.trusts_host("10.0.0.1/33"));
        assert!(!list.trusts_host("example.com"));
        assert!(trusted("*").trusts_host("anything"));
        assert_eq!(trusted("*"), TrustedProxies::everyone());
        assert_eq!(trusted("127.0.0.1"), TrustedProxies::localhost());
        assert!(!trusted("").trusts_host("127.0.0.1"));
    }

    #[test]
    fn networks_match_by_prefix_in_both_families() {
        let network = Network::parse("192.168.0.0/16").unwrap();
        assert!(network.contains("192.168.255.1".parse().unwrap()));
        assert!(!network.contains("192.169.0.1".parse().unwrap()));
        assert!(!network.contains("::1".parse().unwrap()));
        let network = Network::parse("2001:db8::/32").unwrap();
        assert!(network.contains("2001:db8:1::7".parse().unwrap()));
        assert!(!network.contains("2001:db9::".parse().unwrap()));
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Network::parse("1.2.3.4/x").is_none());
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let pairs = [
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ];
        assert_eq!(
            seen("10.0.0.1", "127.0.0.1:5000", &pairs),
            ("127.0.0.1:5000".into(), false)
        );
        assert_eq!(
            seen("127.0.0.1", "127.0.0.1:5000", &pairs),
            ("1.2.3.4:0".into(), true)
        );
    }

    #[test]
    fn client_is_the_rightmost_untrusted_hop() {
        let chain = [("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.5")];
        let list = "127.0.0.1, 10.0.0.0/8";
        assert_eq!(seen(list, "127.0.0.1:1", &chain).0, "2.2.2.2:0");
        // Every hop trusted: the client was a proxy too, and the first one is reported.
        let chain = [("x-forwarded-for", "10.1.1.1, 10.0.0.5")];
        assert_eq!(seen(list, "127.0.0.1:1", &chain).0, "10.1.1.1:0");
        // `*` trusts every hop, so the left-most is the client.
        let chain = [("x-forwarded-for", "1.1.1.1, 2.2.2.2")];
        assert_eq!(seen("*", "9.9.9.9:1", &chain).0, "1.1.1.1:0");
    }

    #[test]
    fn repeated_x_forwarded_for_lines_form_one_chain() {
        let chain = [
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2, 127.0.0.1"),
        ];
        assert_eq!(seen("127.0.0.1", "127.0.0.1:1", &chain).0, "2.2.2.2:0");
    }

    #[test]
    fn forwarded_hosts_may_carry_ports_and_ipv6_brackets() {
        let cases = [
            ("1.2.3.4:8080", "1.2.3.4:8080"),
            ("[2001:db8::1]:443", "[2001:db8::1]:443"),
            ("[2001:db8::1]", "[2001:db8::1]:0"),
            ("2001:db8::1", "[2001:db8::1]:0"),
            ("1.2.3.4:bad", "1.2.3.4:0"),
        ];
        for (host, expected) in cases {
            assert_eq!(
                socket_address(host).unwrap().to_string(),
                expected,
                "{host}"
            );
        }
        assert_eq!(socket_address("unknown"), None);
        assert_eq!(socket_address("_hidden"), None);
    }

    #[test]
    fn a_client_that_is_not_an_ip_address_leaves_the_peer() {
        let pairs = [("x-forwarded-for", "client.example")];
        assert_eq!(seen("127.0.0.1", "127.0.0.1:7", &pairs).0, "127.0.0.1:7");
        let pairs = [("x-forwarded-for", "")];
        assert_eq!(seen("127.0.0.1", "127.0.0.1:7", &pairs).0, "127.0.0.1:7");
    }

    #[test]
    fn x_forwarded_proto_sets_the_scheme_only_when_recognised() {
        let secure =
            |proto: &'static str| seen("*", "127.0.0.1:1", &[("x-forwarded-proto", proto)]).1;
        assert!(secure("https"));
        assert!(secure(" wss "));
        assert!(secure("HTTPS"));
        assert!(!secure("http"));
        assert!(!secure("ws"));
        assert!(!secure("https, http"));
        let tls = ConnectionInfo {
            secure: true,
            ..from_peer("127.0.0.1:1")
        };
        let bogus = headers(&[("x-forwarded-proto", "gopher")]);
        assert!(trusted("*").apply(tls, &bogus).secure);
        let plain = headers(&[("x-forwarded-proto", "http")]);
        assert!(!trusted("*").apply(tls, &plain).secure);
        // The last line counts, as in uvicorn.
        let lines = [
            ("x-forwarded-proto", "http"),
            ("x-forwarded-proto", "https"),
        ];
        assert!(seen("*", "127.0.0.1:1", &lines).1);
    }

    #[test]
    fn forwarded_elements_parameters_and_quotes_are_parsed() {
        let hops = forwarded_hops(&headers(&[
            (
                "forwarded",
                "for=192.0.2.60;proto=http;by=203.0.113.43, For=\"[2001:db8:cafe::17]:4711\"",
            ),
            ("forwarded", "for=\"a\\\"b,c\";PROTO=https, , by=x"),
        ]));
        let hop = |node: Option<&str>, proto: Option<&str>| ForwardedHop {
            node: node.map(str::to_string),
            proto: proto.map(str::to_string),
        };
        assert_eq!(
            hops,
            [
                hop(Some("192.0.2.60"), Some("http")),
                hop(Some("[2001:db8:cafe::17]:4711"), None),
                hop(Some("a\"b,c"), Some("https")),
                hop(None, None),
            ]
        );
    }

    #[test]
    fn forwarded_gives_client_and_scheme_of_the_hop_that_met_the_client() {
        let pairs = [(
            "forwarded",
            "for=1.1.1.1;proto=http, for=\"[2001:db8::9]:4711\";proto=https, for=10.0.0.2;proto=http",
        )];
        assert_eq!(
            seen("127.0.0.1, 10.0.0.0/8", "127.0.0.1:1", &pairs),
            ("[2001:db8::9]:4711".into(), true)
        );
        // A hop without `for=` is an unknown client: nothing to report but its scheme.
        let pairs = [("forwarded", "proto=https")];
        assert_eq!(
            seen("127.0.0.1", "127.0.0.1:1", &pairs),
            ("127.0.0.1:1".into(), true)
        );
    }

    #[test]
    fn x_forwarded_headers_take_precedence_over_forwarded() {
        let pairs = [
            ("forwarded", "for=1.1.1.1;proto=https"),
            ("x-forwarded-for", "2.2.2.2"),
        ];
        // The client comes from X-Forwarded-For, the scheme (which it lacks) from Forwarded.
        assert_eq!(
            seen("127.0.0.1", "127.0.0.1:1", &pairs),
            ("2.2.2.2:0".into(), true)
        );
        let pairs = [
            ("forwarded", "for=1.1.1.1;proto=https"),
            ("x-forwarded-proto", "http"),
        ];
        assert_eq!(
            seen("127.0.0.1", "127.0.0.1:1", &pairs),
            ("1.1.1.1:0".into(), false)
        );
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_entries() {
        let pairs = [("x-forwarded-for", "1.2.3.4")];
        assert_eq!(
            seen("127.0.0.1", "[::ffff:127.0.0.1]:5000", &pairs).0,
            "1.2.3.4:0"
        );
    }

    #[tokio::test]
    async fn the_layer_rewrites_the_connection_extension() {
        use tower::{Layer, ServiceExt};
        let service = ProxyHeadersLayer::new(trusted("127.0.0.1")).layer(tower::service_fn(
            |request: Request<()>| async move {
                Ok::<_, Infallible>(*request.extensions().get::<ConnectionInfo>().unwrap())
            },
        ));
        let mut request = Request::builder()
            .header("x-forwarded-for", "5.6.7.8:99")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap();
        request.extensions_mut().insert(from_peer("127.0.0.1:5000"));
        let connection = service.clone().oneshot(request).await.unwrap();
        assert_eq!(connection.client, Some("5.6.7.8:99".parse().unwrap()));
        assert!(connection.secure);
        assert_eq!(
            connection.server,
            Some("127.0.0.1:8000".parse::<SocketAddr>().unwrap().into())
        );

        // Served by axum::serve: only ConnectInfo is there.
        let mut request = Request::builder()
            .header("x-forwarded-for", "5.6.7.8")
            .body(())
            .unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo::<SocketAddr>(
                "127.0.0.1:1".parse().unwrap(),
            ));
        let connection = service.oneshot(request).await.unwrap();
        assert_eq!(connection.client, Some("5.6.7.8:0".parse().unwrap()));
    }
}
