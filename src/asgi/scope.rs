//! Building ASGI scope dicts from Rust-owned request heads.
//!
//! Runs on the loop thread. Keys and constant values are interned once per process, so a
//! scope costs the dict, the header tuples and the few strings that really vary.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::LocalKey;

use http::{HeaderMap, Method, Version};
use percent_encoding::percent_decode;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::context::ScopeValues;
use crate::connection_info::{ConnectionInfo, ServerAddress, TlsInfo};

/// The HTTP and websocket spec version we implement; Starlette uses ≥ 2.4 to skip its own
/// disconnect watcher.
const SPEC_VERSION: &str = "2.4";
/// The lifespan spec version we implement (it is versioned on its own).
const LIFESPAN_SPEC_VERSION: &str = "2.0";

/// The parts of a request that the scope describes, owned by Rust until the loop thread
/// turns them into Python objects.
pub(super) struct RequestHead {
    pub method: Method,
    pub version: Version,
    /// Path and query as the client sent them, before any router stripped a prefix.
    pub path_and_query: http::uri::PathAndQuery,
    pub headers: HeaderMap,
    pub connection: ConnectionInfo,
    /// What the TLS handshake settled, on a TLS connection.
    pub tls: Option<Arc<TlsInfo>>,
    /// Values of the request's extensions the app sees in `state`.
    pub context: Option<ScopeValues>,
}

/// The scope of an HTTP request; `extensions` are copied, so an app may change its own.
pub(super) fn http_scope<'py>(
    py: Python<'py>,
    head: &RequestHead,
    root_path: &str,
    state: &Bound<'py, PyDict>,
    extensions: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
    let scheme = if head.connection.secure {
        intern!(py, "https")
    } else {
        intern!(py, "http")
    };
    let http_version = http_version(py, head.version);
    let kind = intern!(py, "http");
    static LAYOUT: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    let scope = layout(py, &LAYOUT, &["method", "extensions"])?.copy()?;
    connection_scope(&scope, kind, scheme, http_version, head, root_path, state)?;
    scope.set_item(intern!(py, "method"), method(py, &head.method))?;
    let extensions = extensions.copy()?;
    if let Some(tls) = &head.tls {
        extensions.set_item(intern!(py, "tls"), tls_extension(py, tls)?)?;
    }
    scope.set_item(intern!(py, "extensions"), extensions)?;
    Ok(scope)
}

/// The scope of a websocket handshake, with the subprotocols the client offers.
pub(super) fn websocket_scope<'py>(
    py: Python<'py>,
    head: &RequestHead,
    root_path: &str,
    state: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
    let scheme = if head.connection.secure {
        intern!(py, "wss")
    } else {
        intern!(py, "ws")
    };
    let kind = intern!(py, "websocket");
    let http_version = intern!(py, "1.1");
    static LAYOUT: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    let scope = layout(py, &LAYOUT, &["subprotocols", "extensions"])?.copy()?;
    connection_scope(&scope, kind, scheme, http_version, head, root_path, state)?;
    let subprotocols = PyList::empty(py);
    for value in head.headers.get_all(http::header::SEC_WEBSOCKET_PROTOCOL) {
        for protocol in value.to_str().unwrap_or("").split(',') {
            let protocol = protocol.trim();
            if !protocol.is_empty() {
                subprotocols.append(protocol)?;
            }
        }
    }
    scope.set_item(intern!(py, "subprotocols"), subprotocols)?;
    let extensions = PyDict::new(py);
    extensions.set_item("websocket.http.response", PyDict::new(py))?;
    if let Some(tls) = &head.tls {
        extensions.set_item(intern!(py, "tls"), tls_extension(py, tls)?)?;
    }
    scope.set_item(intern!(py, "extensions"), extensions)?;
    Ok(scope)
}

/// The ASGI TLS extension of a request on a TLS connection. `client_cert_name` (the
/// subject's RFC 4514 name) is `None`, which the spec allows: reading it would take an
/// X.509 parser for one string. `client_cert_error` is always `None`: a certificate that
/// fails verification fails the handshake, so no request arrives with one.
fn tls_extension<'py>(py: Python<'py>, tls: &TlsInfo) -> PyResult<Bound<'py, PyDict>> {
    let extension = PyDict::new(py);
    extension.set_item(
        intern!(py, "server_cert"),
        tls.server_certificate.as_deref(),
    )?;
    extension.set_item(
        intern!(py, "client_cert_chain"),
        PyList::new(py, &tls.client_certificates)?,
    )?;
    extension.set_item(intern!(py, "client_cert_name"), py.None())?;
    extension.set_item(intern!(py, "client_cert_error"), py.None())?;
    extension.set_item(intern!(py, "tls_version"), tls.version)?;
    extension.set_item(intern!(py, "cipher_suite"), tls.cipher_suite)?;
    Ok(extension)
}

/// The scope of the lifespan protocol: the app's `state` itself, which request scopes copy.
pub(super) fn lifespan_scope<'py>(
    py: Python<'py>,
    state: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = PyDict::new(py);
    scope.set_item(intern!(py, "type"), intern!(py, "lifespan"))?;
    scope.set_item(
        intern!(py, "asgi"),
        asgi_versions(py, intern!(py, LIFESPAN_SPEC_VERSION))?,
    )?;
    scope.set_item(intern!(py, "state"), state)?;
    Ok(scope)
}

/// The keys every connection scope sets, in the order they are set, then `more`; each value
/// `None`. A scope is a copy of this, whose values are then replaced: a dict grown key by key
/// to a scope's 14 keys was resized twice per request.
fn layout<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyDict>>,
    more: &[&str],
) -> PyResult<&'py Bound<'py, PyDict>> {
    cell.get_or_try_init(py, || {
        let layout = PyDict::new(py);
        for key in CONNECTION_KEYS.iter().chain(more) {
            layout.set_item(PyString::intern(py, key), py.None())?;
        }
        Ok::<_, PyErr>(layout.unbind())
    })
    .map(|layout| layout.bind(py))
}

/// What [`connection_scope`] sets, in this order.
const CONNECTION_KEYS: [&str; 12] = [
    "type",
    "asgi",
    "http_version",
    "scheme",
    "path",
    "raw_path",
    "query_string",
    "root_path",
    "headers",
    "client",
    "server",
    "state",
];

/// The keys HTTP and websocket scopes share, set in `scope` (a copy of a [`layout`]): what
/// the client asked for, where, and a copy of the lifespan `state`.
fn connection_scope<'py>(
    scope: &Bound<'py, PyDict>,
    kind: &Bound<'py, PyString>,
    scheme: &Bound<'py, PyString>,
    http_version: &Bound<'py, PyString>,
    head: &RequestHead,
    root_path: &str,
    state: &Bound<'py, PyDict>,
) -> PyResult<()> {
    let py = scope.py();
    scope.set_item(intern!(py, "type"), kind)?;
    scope.set_item(
        intern!(py, "asgi"),
        asgi_versions(py, intern!(py, SPEC_VERSION))?,
    )?;
    scope.set_item(intern!(py, "http_version"), http_version)?;
    scope.set_item(intern!(py, "scheme"), scheme)?;
    let raw_path = head.path_and_query.path();
    let decoded = percent_decode(raw_path.as_bytes()).decode_utf8_lossy();
    let path = if root_path.is_empty() {
        PyString::new(py, &decoded)
    } else {
        PyString::new(py, &format!("{root_path}{decoded}"))
    };
    scope.set_item(intern!(py, "path"), path)?;
    // uvicorn prefixes `raw_path` with the root path too.
    let raw_path = if root_path.is_empty() {
        PyBytes::new(py, raw_path.as_bytes())
    } else {
        PyBytes::new(py, format!("{root_path}{raw_path}").as_bytes())
    };
    scope.set_item(intern!(py, "raw_path"), raw_path)?;
    let query = head.path_and_query.query().unwrap_or("");
    scope.set_item(
        intern!(py, "query_string"),
        PyBytes::new(py, query.as_bytes()),
    )?;
    scope.set_item(intern!(py, "root_path"), root_path)?;
    scope.set_item(intern!(py, "headers"), headers(py, &head.headers)?)?;
    scope.set_item(intern!(py, "client"), address(py, head.connection.client)?)?;
    scope.set_item(
        intern!(py, "server"),
        server_address(py, head.connection.server)?,
    )?;
    let state = state.copy()?;
    if let Some(context) = &head.context {
        context.set_in(&state)?;
    }
    scope.set_item(intern!(py, "state"), state)?;
    Ok(())
}

/// The scope's `asgi` dict: ASGI 3 and the version of the protocol's spec.
fn asgi_versions<'py>(
    py: Python<'py>,
    spec_version: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyDict>> {
    let asgi = PyDict::new(py);
    asgi.set_item(intern!(py, "version"), intern!(py, "3.0"))?;
    asgi.set_item(intern!(py, "spec_version"), spec_version)?;
    Ok(asgi)
}

fn http_version(py: Python<'_>, version: Version) -> &Bound<'_, PyString> {
    match version {
        Version::HTTP_09 => intern!(py, "0.9"),
        Version::HTTP_10 => intern!(py, "1.0"),
        Version::HTTP_2 => intern!(py, "2"),
        Version::HTTP_3 => intern!(py, "3"),
        _ => intern!(py, "1.1"),
    }
}

fn method<'py>(py: Python<'py>, method: &Method) -> Bound<'py, PyString> {
    let interned = match *method {
        Method::GET => intern!(py, "GET"),
        Method::POST => intern!(py, "POST"),
        Method::PUT => intern!(py, "PUT"),
        Method::DELETE => intern!(py, "DELETE"),
        Method::PATCH => intern!(py, "PATCH"),
        Method::HEAD => intern!(py, "HEAD"),
        Method::OPTIONS => intern!(py, "OPTIONS"),
        _ => return PyString::new(py, method.as_str()),
    };
    interned.clone()
}

/// `[(name, value), …]` as bytes; `http` already lower-cases names. Repeated names keep
/// their relative order (a `HeaderMap` groups them under the first occurrence).
fn headers<'py>(py: Python<'py>, headers: &HeaderMap) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for (name, value) in headers {
        let pair = PyTuple::new(
            py,
            [
                PyBytes::new(py, name.as_str().as_bytes()),
                PyBytes::new(py, value.as_bytes()),
            ],
        )?;
        list.append(pair)?;
    }
    Ok(list)
}

fn address(py: Python<'_>, address: Option<SocketAddr>) -> PyResult<Bound<'_, PyAny>> {
    let Some(address) = address else {
        return Ok(py.None().into_bound(py));
    };
    let ip = address.ip().to_canonical();
    let host = reuse_last(py, &LAST_HOST, ip, || {
        Ok(match ip {
            IpAddr::V4(ip) => PyString::new(py, ipv4_text(ip, &mut [0; 15])),
            IpAddr::V6(_) => PyString::new(py, &ip.to_string()),
        })
    })?;
    let port = address.port().into_pyobject(py)?;
    Ok(PyTuple::new(py, [host.into_any(), port.into_any()])?.into_any())
}

/// The value a [`reuse_last`] cache last built, with the key it was built for.
type LastBuilt<K, T> = RefCell<Option<(K, Py<T>)>>;

thread_local! {
    /// The host text last written on this thread (the loop thread), with its address.
    static LAST_HOST: LastBuilt<IpAddr, PyString> = const { RefCell::new(None) };
    /// The `server` value last built on this thread, with its address.
    static LAST_SERVER: LastBuilt<ServerAddress, PyAny> = const { RefCell::new(None) };
}

/// The value kept in `last` if it was built for `key`, else `build`'s, kept in its place.
/// Under load most requests share these keys (a listener's address; a proxy's, a load
/// balancer's or the same machine's client address), and the values are immutable, so
/// scopes can share them.
fn reuse_last<'py, K: Copy + PartialEq + 'static, T>(
    py: Python<'py>,
    last: &'static LocalKey<LastBuilt<K, T>>,
    key: K,
    build: impl FnOnce() -> PyResult<Bound<'py, T>>,
) -> PyResult<Bound<'py, T>> {
    let kept = last.with_borrow(|last| match last {
        Some((kept_for, value)) if *kept_for == key => Some(value.clone_ref(py)),
        _ => None,
    });
    if let Some(value) = kept {
        return Ok(value.into_bound(py));
    }
    let value = build()?;
    last.set(Some((key, value.clone().unbind())));
    Ok(value)
}

/// `ip` in dotted decimal, written into `text` without the formatting machinery (two of
/// these a request, for the client and the server).
fn ipv4_text(ip: Ipv4Addr, text: &mut [u8; 15]) -> &str {
    let mut length = 0;
    for (index, octet) in ip.octets().into_iter().enumerate() {
        if index > 0 {
            text[length] = b'.';
            length += 1;
        }
        if octet >= 100 {
            text[length] = b'0' + octet / 100;
            length += 1;
        }
        if octet >= 10 {
            text[length] = b'0' + octet / 10 % 10;
            length += 1;
        }
        text[length] = b'0' + octet % 10;
        length += 1;
    }
    std::str::from_utf8(&text[..length]).expect("digits and dots are ASCII")
}

fn server_address(py: Python<'_>, address: Option<ServerAddress>) -> PyResult<Bound<'_, PyAny>> {
    let Some(address) = address else {
        return Ok(py.None().into_bound(py));
    };
    reuse_last(py, &LAST_SERVER, address, || match address {
        ServerAddress::Unix(path) => Ok(PyTuple::new(
            py,
            [path.into_pyobject(py)?.into_any(), py.None().into_bound(py)],
        )?
        .into_any()),
        ServerAddress::Tcp(address) => self::address(py, Some(address)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &'static str, headers: &[(&'static str, &'static str)]) -> RequestHead {
        RequestHead {
            method: Method::GET,
            version: Version::HTTP_11,
            path_and_query: http::uri::PathAndQuery::from_static(target),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (
                        http::HeaderName::from_static(name),
                        http::HeaderValue::from_static(value),
                    )
                })
                .collect(),
            connection: ConnectionInfo {
                client: Some("127.0.0.1:5000".parse().unwrap()),
                server: Some(ServerAddress::Tcp(
                    "[::ffff:127.0.0.1]:8000".parse().unwrap(),
                )),
                secure: false,
            },
            tls: None,
            context: None,
        }
    }

    fn get<'py, T>(scope: &Bound<'py, PyDict>, key: &str) -> T
    where
        T: for<'a> FromPyObject<'a, 'py, Error = PyErr>,
    {
        scope.get_item(key).unwrap().unwrap().extract().unwrap()
    }

    #[test]
    fn path_is_decoded_while_raw_path_and_query_keep_the_bytes_sent() {
        Python::attach(|py| {
            let state = PyDict::new(py);
            let extensions = PyDict::new(py);
            let head = head("/caf%C3%A9/a%20b?x=%20&y", &[]);
            let scope = http_scope(py, &head, "", &state, &extensions).unwrap();
            assert_eq!(get::<String>(&scope, "path"), "/café/a b");
            assert_eq!(get::<Vec<u8>>(&scope, "raw_path"), b"/caf%C3%A9/a%20b");
            assert_eq!(get::<Vec<u8>>(&scope, "query_string"), b"x=%20&y");
            assert_eq!(get::<String>(&scope, "type"), "http");
            assert_eq!(get::<String>(&scope, "http_version"), "1.1");
        });
    }

    #[test]
    fn each_scope_is_its_own_dict_with_every_key_set() {
        Python::attach(|py| {
            let state = PyDict::new(py);
            let extensions = PyDict::new(py);
            let first = http_scope(py, &head("/a?x", &[]), "", &state, &extensions).unwrap();
            // An app may change its scope in place; the next request must not see it.
            first.set_item("path", "/changed").unwrap();
            first.del_item("type").unwrap();
            first.set_item("added", 1).unwrap();
            let second = http_scope(py, &head("/b", &[]), "", &state, &extensions).unwrap();
            let keys: Vec<String> = second.keys().extract().unwrap();
            assert_eq!(
                keys,
                [
                    "type",
                    "asgi",
                    "http_version",
                    "scheme",
                    "path",
                    "raw_path",
                    "query_string",
                    "root_path",
                    "headers",
                    "client",
                    "server",
                    "state",
                    "method",
                    "extensions",
                ]
            );
            // A key of the layout that nothing sets would keep its placeholder.
            for (key, value) in second.iter() {
                assert!(!value.is_none(), "{key} was left None");
            }
            assert_eq!(get::<String>(&second, "path"), "/b");
            assert_eq!(get::<String>(&second, "method"), "GET");
            let second_extensions = second.get_item("extensions").unwrap().unwrap();
            assert!(!second_extensions.is(&extensions), "copied, not shared");
        });
    }

    #[test]
    fn each_scope_has_its_own_asgi_versions() {
        Python::attach(|py| {
            let state = PyDict::new(py);
            let extensions = PyDict::new(py);
            let versions = |scope: &Bound<'_, PyDict>| -> (String, String) {
                let asgi = scope.get_item("asgi").unwrap().unwrap();
                let asgi = asgi.cast::<PyDict>().unwrap();
                (get(asgi, "version"), get(asgi, "spec_version"))
            };
            let first = http_scope(py, &head("/", &[]), "", &state, &extensions).unwrap();
            assert_eq!(versions(&first), ("3.0".into(), SPEC_VERSION.into()));
            // An app that changes its scope's `asgi` changes only its own.
            let asgi = first.get_item("asgi").unwrap().unwrap();
            asgi.set_item("spec_version", "9.9").unwrap();
            let second = http_scope(py, &head("/", &[]), "", &state, &extensions).unwrap();
            assert_eq!(versions(&second), ("3.0".into(), SPEC_VERSION.into()));
            let lifespan = lifespan_scope(py, &state).unwrap();
            assert_eq!(
                versions(&lifespan),
                ("3.0".into(), LIFESPAN_SPEC_VERSION.into())
            );
        });
    }

    #[test]
    fn root_path_prefixes_path_as_uvicorn_does() {
        Python::attach(|py| {
            let state = PyDict::new(py);
            let extensions = PyDict::new(py);
            let scope = http_scope(py, &head("/users", &[]), "/api", &state, &extensions).unwrap();
            assert_eq!(get::<String>(&scope, "root_path"), "/api");
            assert_eq!(get::<String>(&scope, "path"), "/api/users");
            assert_eq!(get::<Vec<u8>>(&scope, "raw_path"), b"/api/users");
        });
    }

    #[test]
    fn repeated_headers_are_all_kept_in_order() {
        Python::attach(|py| {
            let state = PyDict::new(py);
            let extensions = PyDict::new(py);
            let head = head("/", &[("x-a", "1"), ("x-b", "2"), ("x-a", "3")]);
            let scope = http_scope(py, &head, "", &state, &extensions).unwrap();
            let headers: Vec<(Vec<u8>, Vec<u8>)> = get(&scope, "headers");
            let values: Vec<(&[u8], &[u8])> = headers
                .iter()
                .map(|(name, value)| (name.as_slice(), value.as_slice()))
                .collect();
            assert_eq!(
                values,
                [(&b"x-a"[..], &b"1"[..]), (b"x-a", b"3"), (b"x-b", b"2")]
            );
        });
    }

    #[test]
    fn addresses_are_host_port_pairs_with_ipv4_mapped_hosts_unwrapped() {
        Python::attach(|py| {
            let state = PyDict::new(py);
            let extensions = PyDict::new(py);
            let scope = http_scope(py, &head("/", &[]), "", &state, &extensions).unwrap();
            assert_eq!(
                get::<(String, u16)>(&scope, "client"),
                ("127.0.0.1".into(), 5000)
            );
            assert_eq!(
                get::<(String, u16)>(&scope, "server"),
                ("127.0.0.1".into(), 8000)
            );
        });
    }

    #[test]
    fn requests_of_two_listeners_each_name_their_own() {
        Python::attach(|py| {
            let state = PyDict::new(py);
            let extensions = PyDict::new(py);
            let on = |port: u16| {
                let mut head = head("/", &[]);
                head.connection.server = Some(ServerAddress::Tcp(([127, 0, 0, 1], port).into()));
                let scope = http_scope(py, &head, "", &state, &extensions).unwrap();
                get::<(String, u16)>(&scope, "server").1
            };
            for port in [8000, 8000, 9000, 8000, 9000, 9000] {
                assert_eq!(on(port), port);
            }
        });
    }

    #[test]
    fn requests_from_two_clients_each_name_their_own() {
        Python::attach(|py| {
            let state = PyDict::new(py);
            let extensions = PyDict::new(py);
            let from = |client: &str| {
                let mut head = head("/", &[]);
                head.connection.client = Some(client.parse().unwrap());
                let scope = http_scope(py, &head, "", &state, &extensions).unwrap();
                get::<(String, u16)>(&scope, "client")
            };
            for client in [
                "10.0.0.1:1000",
                "10.0.0.1:1001",
                "10.0.0.2:1000",
                "[::1]:1000",
                "10.0.0.1:1000",
            ] {
                let address: SocketAddr = client.parse().unwrap();
                assert_eq!(from(client), (address.ip().to_string(), address.port()));
            }
        });
    }

    #[test]
    fn ipv4_hosts_are_written_as_std_writes_them() {
        for octet in 0..=255 {
            let ip = Ipv4Addr::new(octet, 255 - octet, 0, octet);
            assert_eq!(ipv4_text(ip, &mut [0; 15]), ip.to_string());
        }
    }

    #[test]
    fn a_unix_socket_server_is_its_path_and_no_port() {
        Python::attach(|py| {
            let state = PyDict::new(py);
            let extensions = PyDict::new(py);
            let mut head = head("/", &[]);
            head.connection = ConnectionInfo {
                client: None,
                server: Some(ServerAddress::Unix("/run/app.sock")),
                secure: false,
            };
            let scope = http_scope(py, &head, "", &state, &extensions).unwrap();
            assert_eq!(
                get::<(String, Option<u16>)>(&scope, "server"),
                ("/run/app.sock".into(), None)
            );
            assert!(scope.get_item("client").unwrap().unwrap().is_none());
        });
    }

    #[test]
    fn each_scope_gets_its_own_copy_of_the_lifespan_state() {
        Python::attach(|py| {
            let state = PyDict::new(py);
            state.set_item("db", "pool").unwrap();
            let extensions = PyDict::new(py);
            let scope = http_scope(py, &head("/", &[]), "", &state, &extensions).unwrap();
            let copied = scope.get_item("state").unwrap().unwrap();
            copied.set_item("request_only", 1).unwrap();
            assert!(!state.contains("request_only").unwrap());
            assert_eq!(
                copied.get_item("db").unwrap().extract::<String>().unwrap(),
                "pool"
            );
        });
    }
}
