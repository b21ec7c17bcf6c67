//! TLS with rustls, configured from PEM files as uvicorn's `--ssl-*` flags name them.
//!
//! Everything is read and checked at start-up, so a missing file, a key that is not the
//! certificate's, a wrong key password or an unreadable CA bundle stops the server with a
//! message naming the flag, instead of failing handshakes later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pkcs8::der::pem::{LineEnding, PemLabel};
use pkcs8::{EncryptedPrivateKeyInfoOwned, EncryptedPrivateKeyInfoRef};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::http_versions::HttpVersions;
use crate::connection_info::TlsInfo;
use crate::error::{Error, ErrorKind};

/// The certificate, key and client-certificate policy to serve TLS with.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// PEM certificate chain, leaf first (`--ssl-certfile`).
    pub certfile: PathBuf,
    /// PEM private key, PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (`--ssl-keyfile`); `None` when the
    /// key is in the certificate file.
    pub keyfile: Option<PathBuf>,
    /// The password of an encrypted PKCS#8 key (`--ssl-keyfile-password`).
    pub keyfile_password: Option<KeyPassword>,
    /// PEM CA certificates that client certificates are checked against (`--ssl-ca-certs`).
    pub ca_certs: Option<PathBuf>,
    /// Whether clients are asked for a certificate (`--ssl-cert-reqs`).
    pub client_certificates: ClientCertificates,
}

/// Whether clients are asked for a certificate: uvicorn's `--ssl-cert-reqs` 0, 1, 2 (the
/// values of Python's `ssl.CERT_NONE`, `CERT_OPTIONAL`, `CERT_REQUIRED`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ClientCertificates {
    /// Not asked for.
    #[default]
    #[cfg_attr(feature = "cli", value(name = "0", alias = "none"))]
    NotRequested,
    /// Asked for; a client without one is still served, one with a bad one is refused.
    #[cfg_attr(feature = "cli", value(name = "1", alias = "optional"))]
    Optional,
    /// Asked for; a client without a valid one is refused.
    #[cfg_attr(feature = "cli", value(name = "2", alias = "required"))]
    Required,
}

impl TlsOptions {
    /// A certificate chain and its key, both PEM files; no client certificates asked for.
    pub fn new(certfile: impl Into<PathBuf>, keyfile: impl Into<PathBuf>) -> Self {
        TlsOptions {
            certfile: certfile.into(),
            keyfile: Some(keyfile.into()),
            keyfile_password: None,
            ca_certs: None,
            client_certificates: ClientCertificates::NotRequested,
        }
    }

    /// The rustls configuration, offering by ALPN the HTTP versions the server speaks.
    pub fn server_config(&self, versions: HttpVersions) -> Result<Arc<ServerConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificates = read_certificates(&self.certfile, "--ssl-certfile")?;
        let key_path = self.keyfile.as_deref().unwrap_or(&self.certfile);
        let key = read_private_key(key_path, self.keyfile_password.as_ref())?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::with_source(ErrorKind::Tls, "TLS set-up failed", err))?;
        let builder = match self.client_verifier(provider)? {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certificates, key)
            .map_err(|err| match err {
                rustls::Error::InconsistentKeys(_) => Error::new(
                    ErrorKind::Tls,
                    format!(
                        "--ssl-keyfile {} is not the key of the certificate in --ssl-certfile {}",
                        key_path.display(),
                        self.certfile.display()
                    ),
                ),
                err => Error::new(
                    ErrorKind::Tls,
                    format!(
                        "unusable certificate or key ({}, {}): {err}",
                        self.certfile.display(),
                        key_path.display()
                    ),
                ),
            })?;
        config.alpn_protocols = versions.alpn_protocols();
        Ok(Arc::new(config))
    }

    fn client_verifier(
        &self,
        provider: Arc<CryptoProvider>,
    ) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, Error> {
        if self.client_certificates == ClientCertificates::NotRequested {
            return Ok(None);
        }
        let Some(ca_certs) = &self.ca_certs else {
            return Err(Error::new(
                ErrorKind::Tls,
                "--ssl-cert-reqs 1 or 2 needs --ssl-ca-certs to check client certificates against",
            ));
        };
        let mut roots = RootCertStore::empty();
        for certificate in read_certificates(ca_certs, "--ssl-ca-certs")? {
            roots.add(certificate).map_err(|err| {
                Error::new(
                    ErrorKind::Tls,
                    format!(
                        "bad CA certificate in --ssl-ca-certs {}: {err}",
                        ca_certs.display()
                    ),
                )
            })?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = match self.client_certificates {
            ClientCertificates::Optional => verifier.allow_unauthenticated(),
            _ => verifier,
        };
        let verifier = verifier.build().map_err(|err| {
            Error::new(
                ErrorKind::Tls,
                format!("cannot use --ssl-ca-certs {}: {err}", ca_certs.display()),
            )
        })?;
        Ok(Some(verifier))
    }
}

/// What a listener serving TLS needs: the acceptor, and the certificate it presents as the
/// scope's `tls` extension reports it.
#[derive(Clone)]
pub(crate) struct TlsEndpoint {
    config: Arc<ServerConfig>,
    acceptor: TlsAcceptor,
    certificate: Option<Arc<str>>,
}

impl TlsEndpoint {
    pub(super) fn new(options: &TlsOptions, versions: HttpVersions) -> Result<Self, Error> {
        let config = options.server_config(versions)?;
        let acceptor = TlsAcceptor::from(config.clone());
        let certificate = read_certificates(&options.certfile, "--ssl-certfile")?
            .first()
            .and_then(|leaf| certificate_pem(leaf))
            .map(Arc::from);
        Ok(TlsEndpoint {
            config,
            acceptor,
            certificate,
        })
    }

    /// The same certificate, key and client-certificate policy for QUIC, which offers only
    /// `h3` by ALPN (RFC 9114 §3.1).
    pub(super) fn quic_config(&self) -> ServerConfig {
        let mut config = ServerConfig::clone(&self.config);
        config.alpn_protocols = vec![b"h3".to_vec()];
        config
    }

    /// What a QUIC handshake settled. QUIC always runs TLS 1.3 (RFC 9001 §4.2); quinn does
    /// not tell which cipher suite was chosen, so the scope reports none.
    pub(super) fn settled_quic(&self, client_certificates: &[CertificateDer<'_>]) -> TlsInfo {
        TlsInfo {
            server_certificate: self.certificate.clone(),
            client_certificates: client_certificates
                .iter()
                .filter_map(certificate_pem)
                .collect(),
            version: Some(u16::from(rustls::ProtocolVersion::TLSv1_3)),
            cipher_suite: None,
        }
    }

    /// The TLS handshake, and what it settled.
    pub(super) async fn accept<IO>(&self, stream: IO) -> std::io::Result<(TlsStream<IO>, TlsInfo)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = self.acceptor.accept(stream).await?;
        let info = self.settled(stream.get_ref().1);
        Ok((stream, info))
    }

    fn settled(&self, session: &ServerConnection) -> TlsInfo {
        TlsInfo {
            server_certificate: self.certificate.clone(),
            client_certificates: session
                .peer_certificates()
                .unwrap_or_default()
                .iter()
                .filter_map(certificate_pem)
                .collect(),
            version: session.protocol_version().map(u16::from),
            cipher_suite: session
                .negotiated_cipher_suite()
                .map(|suite| u16::from(suite.suite())),
        }
    }
}

/// A DER certificate as PEM; `None` only for one too large to encode.
fn certificate_pem(der: &CertificateDer<'_>) -> Option<String> {
    pkcs8::der::pem::encode_string("CERTIFICATE", LineEnding::LF, der).ok()
}

/// A key file's password; `Debug` does not show it.
#[derive(Clone)]
pub struct KeyPassword(pub String);

impl std::fmt::Debug for KeyPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPassword(..)")
    }
}

/// The private key in `path`: a plain one as rustls reads it, or an encrypted PKCS#8 one
/// (`ENCRYPTED PRIVATE KEY`, as `openssl pkcs8 -topk8` and Python's `cryptography` write
/// it) decrypted with `password`.
fn read_private_key(
    path: &Path,
    password: Option<&KeyPassword>,
) -> Result<PrivateKeyDer<'static>, Error> {
    let cannot_read = |err: &dyn std::fmt::Display| {
        Error::new(
            ErrorKind::Tls,
            format!("cannot read --ssl-keyfile {}: {err}", path.display()),
        )
    };
    let pem = std::fs::read(path).map_err(|err| cannot_read(&err))?;
    if let Some(encrypted) = encrypted_key_section(&pem) {
        let Some(KeyPassword(password)) = password else {
            return Err(Error::new(
                ErrorKind::Tls,
                format!(
                    "--ssl-keyfile {} is encrypted: give its password with --ssl-keyfile-password",
                    path.display()
                ),
            ));
        };
        let (_, der) = pkcs8::der::pem::decode_vec(encrypted).map_err(|err| cannot_read(&err))?;
        let encrypted = EncryptedPrivateKeyInfoRef::try_from(der.as_slice())
            .map_err(|err| cannot_read(&err))?;
        let key = encrypted.decrypt(password).map_err(|err| {
            Error::new(
                ErrorKind::Tls,
                format!(
                    "cannot decrypt --ssl-keyfile {} with --ssl-keyfile-password \
                 (wrong password?): {err}",
                    path.display()
                ),
            )
        })?;
        return Ok(PrivateKeyDer::Pkcs8(key.as_bytes().to_vec().into()));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| match err {
        pem::Error::NoItemsFound => Error::new(
            ErrorKind::Tls,
            format!("no private key in --ssl-keyfile {}", path.display()),
        ),
        err => cannot_read(&err),
    })
}

/// The PEM section of an encrypted PKCS#8 key within `pem`, which may hold certificates too.
fn encrypted_key_section(pem: &[u8]) -> Option<&[u8]> {
    let label = EncryptedPrivateKeyInfoOwned::PEM_LABEL;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let find = |haystack: &[u8], needle: &str| {
        haystack
            .windows(needle.len())
            .position(|window| window == needle.as_bytes())
    };
    let start = find(pem, &begin)?;
    let length = find(&pem[start..], &end)? + end.len();
    Some(&pem[start..start + length])
}

fn read_certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let cannot_read = |err: pem::Error| {
        Error::new(
            ErrorKind::Tls,
            format!("cannot read {flag} {}: {err}", path.display()),
        )
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(cannot_read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cannot_read)?;
    if certificates.is_empty() {
        return Err(Error::new(
            ErrorKind::Tls,
            format!("no certificate in {flag} {}", path.display()),
        ));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("ras-tls-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Files { dir }
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn self_signed(algorithm: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    #[test]
    fn ecdsa_and_ed25519_keys_load_with_alpn_for_the_http_versions() {
        let files = Files::new("ok");
        for (name, algorithm) in [
            ("ecdsa", &rcgen::PKCS_ECDSA_P256_SHA256),
            ("ed25519", &rcgen::PKCS_ED25519),
        ] {
            let (cert, key) = self_signed(algorithm);
            let options = TlsOptions::new(
                files.write(&format!("{name}.crt"), &cert),
                files.write(&format!("{name}.key"), &key),
            );
            let config = options.server_config(HttpVersions::Auto).unwrap();
            assert_eq!(config.alpn_protocols, [&b"h2"[..], b"http/1.1"]);
            let config = options.server_config(HttpVersions::Http1).unwrap();
            assert_eq!(config.alpn_protocols, [&b"http/1.1"[..]]);
        }
    }

    #[test]
    fn the_key_may_be_in_the_certificate_file() {
        let files = Files::new("bundle");
        let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let options = TlsOptions {
            keyfile: None,
            ..TlsOptions::new(files.write("both.pem", &format!("{cert}{key}")), "")
        };
        assert!(options.server_config(HttpVersions::Auto).is_ok());
    }

    #[test]
    fn start_up_errors_name_the_flag_and_the_file() {
        let files = Files::new("errors");
        let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, other_key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let cert = files.write("a.crt", &cert);
        let key = files.write("a.key", &key);
        let error = |options: TlsOptions| {
            options
                .server_config(HttpVersions::Auto)
                .unwrap_err()
                .to_string()
        };

        let message = error(TlsOptions::new(files.dir.join("missing.crt"), &key));
        assert!(
            message.starts_with("cannot read --ssl-certfile"),
            "{message}"
        );
        assert!(message.contains("missing.crt"), "{message}");

        let message = error(TlsOptions::new(&key, &key));
        assert!(
            message.starts_with("no certificate in --ssl-certfile"),
            "{message}"
        );

        let message = error(TlsOptions::new(&cert, &cert));
        assert!(
            message.starts_with("no private key in --ssl-keyfile"),
            "{message}"
        );

        let message = error(TlsOptions::new(&cert, files.dir.join("missing.key")));
        assert!(
            message.starts_with("cannot read --ssl-keyfile"),
            "{message}"
        );
        assert!(message.contains("missing.key"), "{message}");

        let mismatched = files.write("other.key", &other_key);
        let message = error(TlsOptions::new(&cert, &mismatched));
        assert!(
            message.contains("is not the key of the certificate"),
            "{message}"
        );

        let message = error(TlsOptions {
            client_certificates: ClientCertificates::Required,
            ..TlsOptions::new(&cert, &key)
        });
        assert!(message.contains("needs --ssl-ca-certs"), "{message}");
    }

    /// An encrypted PKCS#8 key section; its content is never looked at without a password.
    const ENCRYPTED_KEY: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----\n\
        MAA=\n-----END ENCRYPTED PRIVATE KEY-----\n";

    #[test]
    fn an_encrypted_key_is_found_among_certificates() {
        let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let bundle = format!("{cert}{ENCRYPTED_KEY}{cert}");
        assert_eq!(
            encrypted_key_section(bundle.as_bytes()),
            Some(ENCRYPTED_KEY.trim_end().as_bytes())
        );
        assert_eq!(encrypted_key_section(key.as_bytes()), None);
        assert_eq!(
            encrypted_key_section(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\ncut short"),
            None
        );
    }

    #[test]
    fn an_encrypted_key_needs_its_password_and_a_bad_one_is_an_error_not_a_panic() {
        let files = Files::new("encrypted");
        let (cert, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let cert = files.write("a.crt", &cert);
        let key = files.write("a.key", ENCRYPTED_KEY);
        let error = |password: Option<&str>| {
            TlsOptions {
                keyfile_password: password.map(|password| KeyPassword(password.into())),
                ..TlsOptions::new(&cert, &key)
            }
            .server_config(HttpVersions::Auto)
            .unwrap_err()
            .to_string()
        };
        let message = error(None);
        assert!(message.contains("is encrypted"), "{message}");
        assert!(message.contains("a.key"), "{message}");
        let message = error(Some("secret"));
        assert!(
            message.starts_with("cannot read --ssl-keyfile"),
            "{message}"
        );
        assert_eq!(
            format!("{:?}", KeyPassword("secret".into())),
            "KeyPassword(..)"
        );
    }

    #[test]
    fn client_certificates_are_checked_against_the_ca_bundle() {
        let files = Files::new("mtls");
        let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (ca, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let options = TlsOptions {
            ca_certs: Some(files.write("ca.pem", &ca)),
            client_certificates: ClientCertificates::Required,
            ..TlsOptions::new(files.write("a.crt", &cert), files.write("a.key", &key))
        };
        assert!(options.server_config(HttpVersions::Auto).is_ok());
    }

    #[test]
    fn quic_offers_only_h3_with_the_same_certificate_and_reports_tls_1_3() {
        let files = Files::new("quic");
        let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let options = TlsOptions::new(files.write("a.crt", &cert), files.write("a.key", &key));
        let endpoint = TlsEndpoint::new(&options, HttpVersions::Auto).unwrap();
        assert_eq!(endpoint.quic_config().alpn_protocols, [&b"h3"[..]]);
        assert_eq!(endpoint.config.alpn_protocols, [&b"h2"[..], b"http/1.1"]);
        let settled = endpoint.settled_quic(&[]);
        assert_eq!(settled.version, Some(0x0304));
        assert_eq!(settled.server_certificate, endpoint.certificate);
        assert!(settled.client_certificates.is_empty());
    }

    #[test]
    fn the_endpoint_reports_the_leaf_certificate_as_pem() {
        let files = Files::new("endpoint");
        let (leaf, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (other, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let options = TlsOptions::new(
            files.write("chain.crt", &format!("{leaf}{other}")),
            files.write("a.key", &key),
        );
        let endpoint = TlsEndpoint::new(&options, HttpVersions::Auto).unwrap();
        let reported = endpoint.certificate.unwrap();
        assert!(reported.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(
            CertificateDer::from_pem_slice(reported.as_bytes()).unwrap(),
            CertificateDer::from_pem_slice(leaf.as_bytes()).unwrap()
        );
    }
}
