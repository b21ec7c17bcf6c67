//! Listening sockets: TCP or Unix domain, bound here or inherited as a file descriptor.
//!
//! Binding is split from accepting. [`Bind::open`] makes a listening socket that no runtime
//! owns yet, so the `--workers` supervisor can bind once and hand the same socket to every
//! worker process; a worker (or a server started by systemd with `--fd`) turns the socket it
//! inherited into a [`Listener`] exactly as a single process turns the one it bound.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::connection_info::ServerAddress;
use crate::error::{Error, ErrorKind};

/// Where to listen.
#[derive(Debug)]
pub enum Bind {
    /// `host:port`; the host may be a name. Port 0 picks a free port.
    Tcp(String),
    /// A Unix domain socket at this path. A socket file left behind by a server that is no
    /// longer running is replaced; one a live server answers on is an error.
    Unix(PathBuf),
    /// A socket that is already listening, handed to this process (`--fd`, systemd socket
    /// activation, the `--workers` supervisor).
    Socket(OwnedFd),
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Tcp(address) => f.write_str(address),
            Bind::Unix(path) => write!(f, "unix:{}", path.display()),
            Bind::Socket(fd) => write!(f, "fd {}", fd.as_raw_fd()),
        }
    }
}

impl Bind {
    /// Binds and listens with room for `backlog` pending connections. Blocking: meant for
    /// start-up, before serving.
    pub fn open(self, backlog: u32) -> Result<BoundSocket, Error> {
        let description = self.to_string();
        let cannot = |err: io::Error| {
            Error::with_source(
                ErrorKind::Bind,
                format!("cannot listen on {description}"),
                err,
            )
        };
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        match self {
            Bind::Tcp(address) => bind_tcp(&address, backlog).map_err(cannot),
            Bind::Unix(path) => bind_unix(&path, backlog).map_err(cannot),
            Bind::Socket(fd) => {
                let socket = Socket::from(fd);
                check_listening(&socket).map_err(cannot)?;
                Ok(BoundSocket {
                    socket,
                    unix_file: None,
                })
            }
        }
    }
}

/// The socket `fd` this process was started with (`--fd`, or from the `--workers`
/// supervisor), taken over for this process alone.
///
/// Whoever started the process promises the descriptor is ours to use. It is checked to be
/// an open socket, so a wrong number is a start-up error rather than a stray close later.
#[cfg(any(feature = "cli", test))]
pub(crate) fn inherited_socket(fd: RawFd) -> Result<OwnedFd, Error> {
    if fd < 0 {
        return Err(Error::new(
            ErrorKind::Bind,
            format!("file descriptor {fd}: not a file descriptor"),
        ));
    }
    // SAFETY: the descriptor was handed to this process for it to serve, and is taken once,
    // at start-up, before anything else in the process could have claimed it.
    let socket = unsafe { <Socket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    match socket.r#type() {
        Ok(_) => {
            // Python code forking or spawning processes must not carry the socket along.
            socket.set_cloexec(true).map_err(|err| {
                Error::with_source(
                    ErrorKind::Bind,
                    format!("file descriptor {fd}: cannot set close-on-exec"),
                    err,
                )
            })?;
            Ok(socket.into())
        }
        Err(err) => {
            // Not open, or not a socket: not ours to close.
            std::mem::forget(socket);
            Err(Error::new(
                ErrorKind::Bind,
                format!("file descriptor {fd}: not an open socket ({err})"),
            ))
        }
    }
}

fn bind_tcp(address: &str, backlog: i32) -> io::Result<BoundSocket> {
    let mut last_error = None;
    for address in address.to_socket_addrs()? {
        let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
        // Restarting right after a stop must not fail on connections in TIME_WAIT.
        socket.set_reuse_address(true)?;
        match socket.bind(&address.into()) {
            Ok(()) => {
                socket.listen(backlog)?;
                return Ok(BoundSocket {
                    socket,
                    unix_file: None,
                });
            }
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the name resolves to no address",
        )
    }))
}

fn bind_unix(path: &Path, backlog: i32) -> io::Result<BoundSocket> {
    remove_stale_socket(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    // As uvicorn does: a proxy running as another user must be able to connect.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    socket.listen(backlog)?;
    Ok(BoundSocket {
        socket,
        unix_file: Some(UnixSocketFile(path.to_owned())),
    })
}

/// Removes a socket file nobody answers on any more; refuses to touch anything else.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another server is listening on it",
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

fn check_listening(socket: &Socket) -> io::Result<()> {
    if socket.r#type()? != Type::STREAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a stream socket",
        ));
    }
    if !socket.is_listener()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket is not listening",
        ));
    }
    Ok(())
}

/// A listening socket that no runtime owns yet.
#[derive(Debug)]
pub struct BoundSocket {
    socket: Socket,
    /// The socket file this process created, removed again when the socket is dropped.
    unix_file: Option<UnixSocketFile>,
}

impl BoundSocket {
    /// Where the socket listens. For a Unix socket this leaks its path (see
    /// [`ServerAddress::Unix`]), so it is asked once, when the listener is made.
    fn address(&self) -> io::Result<ServerAddress> {
        let address = self.socket.local_addr()?;
        if let Some(address) = address.as_socket() {
            return Ok(ServerAddress::Tcp(address));
        }
        let path = address
            .as_pathname()
            .map_or_else(String::new, |path| path.to_string_lossy().into_owned());
        Ok(ServerAddress::Unix(Box::leak(path.into_boxed_str())))
    }

    /// The descriptor, left open across `exec` so that worker processes inherit it.
    pub fn inheritable_fd(&self) -> io::Result<RawFd> {
        self.socket.set_cloexec(false)?;
        Ok(self.socket.as_raw_fd())
    }

    /// Registers the socket with the current Tokio runtime.
    pub fn into_listener(self) -> io::Result<Listener> {
        let address = self.address()?;
        self.socket.set_nonblocking(true)?;
        let fd = OwnedFd::from(self.socket);
        let accept = match address {
            ServerAddress::Tcp(_) => Accept::Tcp(TcpListener::from_std(fd.into())?),
            ServerAddress::Unix(_) => Accept::Unix(UnixListener::from_std(fd.into())?),
        };
        Ok(Listener {
            accept,
            address,
            _unix_file: self.unix_file,
        })
    }
}

/// Removes the socket file at drop, as uvicorn does when it exits.
#[derive(Debug)]
struct UnixSocketFile(PathBuf);

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A listening socket registered with the runtime, accepting connections.
#[derive(Debug)]
pub struct Listener {
    accept: Accept,
    address: ServerAddress,
    _unix_file: Option<UnixSocketFile>,
}

#[derive(Debug)]
enum Accept {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    pub fn address(&self) -> ServerAddress {
        self.address
    }

    /// The next connection and the peer's address (`None` for a Unix socket peer).
    pub async fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match &self.accept {
            Accept::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                // Responses are written whole; waiting to coalesce them only adds latency.
                let _ = stream.set_nodelay(true);
                Ok((Stream::Tcp(stream), Some(peer)))
            }
            Accept::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok((Stream::Unix(stream), None))
            }
        }
    }
}

/// A listening address as users type it: `http://127.0.0.1:8000`, `unix:/run/app.sock`.
pub(super) fn describe(address: ServerAddress, tls: bool) -> String {
    match (address, tls) {
        (ServerAddress::Tcp(address), false) => format!("http://{address}"),
        (ServerAddress::Tcp(address), true) => format!("https://{address}"),
        (ServerAddress::Unix(_), false) => address.to_string(),
        (ServerAddress::Unix(_), true) => format!("{address} (TLS)"),
    }
}

/// An accepted connection, TCP or Unix, as one type for hyper and rustls.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(stream) => stream.is_write_vectored(),
            Stream::Unix(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn temp_socket_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("ras-{}-{name}.sock", std::process::id()))
    }

    #[tokio::test]
    async fn tcp_port_zero_picks_a_port_and_accepts() {
        let bound = Bind::Tcp("127.0.0.1:0".into()).open(16).unwrap();
        let ServerAddress::Tcp(address) = bound.address().unwrap() else {
            panic!("not TCP");
        };
        assert_ne!(address.port(), 0);
        let listener = bound.into_listener().unwrap();
        let mut client = TcpStream::connect(address).await.unwrap();
        let (mut stream, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, Some(client.local_addr().unwrap()));
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0; 4];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn unix_socket_replaces_a_stale_file_and_removes_its_own() {
        let path = temp_socket_path("stale");
        // A socket file whose server is gone.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let listener = Bind::Unix(path.clone())
            .open(16)
            .unwrap()
            .into_listener()
            .unwrap();
        assert_eq!(
            listener.address(),
            ServerAddress::Unix(Box::leak(path.to_string_lossy().into()))
        );
        let _client = UnixStream::connect(&path).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, None);
        drop(listener);
        assert!(!path.exists());
    }

    #[test]
    fn unix_socket_of_a_live_server_or_a_regular_file_is_left_alone() {
        let path = temp_socket_path("live");
        let _live = Bind::Unix(path.clone()).open(16).unwrap();
        let err = Bind::Unix(path.clone()).open(16).unwrap_err();
        assert!(err.to_string().contains("another server"), "{err}");

        let file = temp_socket_path("regular");
        std::fs::write(&file, b"data").unwrap();
        let err = Bind::Unix(file.clone()).open(16).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"data");
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn an_inherited_descriptor_must_be_a_listening_socket() {
        let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listening.local_addr().unwrap();
        let bound = Bind::Socket(listening.into()).open(16).unwrap();
        assert_eq!(bound.address().unwrap(), ServerAddress::Tcp(address));

        let unconnected = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let err = Bind::Socket(unconnected.into()).open(16).unwrap_err();
        assert!(err.to_string().contains("not listening"), "{err}");

        let file = std::fs::File::open("/dev/null").unwrap();
        let err = inherited_socket(file.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not an open socket"), "{err}");
    }

    #[test]
    fn listening_addresses_are_described_as_users_type_them() {
        let tcp = ServerAddress::Tcp("127.0.0.1:8000".parse().unwrap());
        assert_eq!(describe(tcp, false), "http://127.0.0.1:8000");
        assert_eq!(describe(tcp, true), "https://127.0.0.1:8000");
        let unix = ServerAddress::Unix("/run/app.sock");
        assert_eq!(describe(unix, false), "unix:/run/app.sock");
        assert_eq!(describe(unix, true), "unix:/run/app.sock (TLS)");
    }
}
