//! [`HttpVersions`]: which HTTP versions a server speaks (`--http`).

/// Which HTTP versions the server speaks (`--http`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum HttpVersions {
    /// HTTP/1.1, and HTTP/2 by ALPN over TLS or with prior knowledge in cleartext (h2c).
    #[default]
    Auto,
    /// HTTP/1.1 only. uvicorn's implementation names `h11` and `httptools` mean this too.
    #[cfg_attr(feature = "cli", value(name = "1", alias = "h11", alias = "httptools"))]
    Http1,
    /// HTTP/2 only: ALPN `h2` over TLS, prior knowledge in cleartext.
    #[cfg_attr(feature = "cli", value(name = "2"))]
    Http2,
}

impl HttpVersions {
    /// What TLS offers by ALPN, preferred first.
    pub(crate) fn alpn_protocols(self) -> Vec<Vec<u8>> {
        let (h2, http11) = (b"h2".to_vec(), b"http/1.1".to_vec());
        match self {
            HttpVersions::Auto => vec![h2, http11],
            HttpVersions::Http1 => vec![http11],
            HttpVersions::Http2 => vec![h2],
        }
    }
}
