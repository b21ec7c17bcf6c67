//! TLS with rustls, configured from PEM files as uvicorn's `--ssl-*` flags name them.
//!
//! Everything is read and checked at start-up, so a missing file, a key that is not the
//! certificate's or an unreadable CA bundle stops the server with a message naming the flag,
//! instead of failing handshakes later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::Error;
use crate::connection::HttpVersions;

/// The certificate, key and client-certificate policy to serve TLS with.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// PEM certificate chain, leaf first (`--ssl-certfile`).
    pub certfile: PathBuf,
    /// PEM private key, PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (`--ssl-keyfile`); `None` when the
    /// key is in the certificate file.
    pub keyfile: Option<PathBuf>,
    /// PEM CA certificates that client certificates are checked against (`--ssl-ca-certs`).
    pub ca_certs: Option<PathBuf>,
    pub client_certificates: ClientCertificates,
}

/// Whether clients are asked for a certificate: uvicorn's `--ssl-cert-reqs` 0, 1, 2 (the
/// values of Python's `ssl.CERT_NONE`, `CERT_OPTIONAL`, `CERT_REQUIRED`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientCertificates {
    #[default]
    #[value(name = "0", alias = "none")]
    NotRequested,
    /// Asked for; a client without one is still served, one with a bad one is refused.
    #[value(name = "1", alias = "optional")]
    Optional,
    #[value(name = "2", alias = "required")]
    Required,
}

impl TlsOptions {
    pub fn new(certfile: impl Into<PathBuf>, keyfile: impl Into<PathBuf>) -> Self {
        TlsOptions {
            certfile: certfile.into(),
            keyfile: Some(keyfile.into()),
            ca_certs: None,
            client_certificates: ClientCertificates::NotRequested,
        }
    }

    /// The rustls configuration, offering by ALPN the HTTP versions the server speaks.
    pub fn server_config(&self, versions: HttpVersions) -> Result<Arc<ServerConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificates = read_certificates(&self.certfile, "--ssl-certfile")?;
        let key_path = self.keyfile.as_deref().unwrap_or(&self.certfile);
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|err| match err {
            pem::Error::NoItemsFound => Error::new(format!(
                "no private key in --ssl-keyfile {} (encrypted keys are not supported)",
                key_path.display()
            )),
            err => Error::new(format!(
                "cannot read --ssl-keyfile {}: {err}",
                key_path.display()
            )),
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::new(format!("TLS set-up failed: {err}")))?;
        let builder = match self.client_verifier(provider)? {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certificates, key)
            .map_err(|err| match err {
                rustls::Error::InconsistentKeys(_) => Error::new(format!(
                    "--ssl-keyfile {} is not the key of the certificate in --ssl-certfile {}",
                    key_path.display(),
                    self.certfile.display()
                )),
                err => Error::new(format!(
                    "unusable certificate or key ({}, {}): {err}",
                    self.certfile.display(),
                    key_path.display()
                )),
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
                "--ssl-cert-reqs 1 or 2 needs --ssl-ca-certs to check client certificates against",
            ));
        };
        let mut roots = RootCertStore::empty();
        for certificate in read_certificates(ca_certs, "--ssl-ca-certs")? {
            roots.add(certificate).map_err(|err| {
                Error::new(format!(
                    "bad CA certificate in --ssl-ca-certs {}: {err}",
                    ca_certs.display()
                ))
            })?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = match self.client_certificates {
            ClientCertificates::Optional => verifier.allow_unauthenticated(),
            _ => verifier,
        };
        let verifier = verifier.build().map_err(|err| {
            Error::new(format!(
                "cannot use --ssl-ca-certs {}: {err}",
                ca_certs.display()
            ))
        })?;
        Ok(Some(verifier))
    }
}

fn read_certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let cannot_read =
        |err: pem::Error| Error::new(format!("cannot read {flag} {}: {err}", path.display()));
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(cannot_read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cannot_read)?;
    if certificates.is_empty() {
        return Err(Error::new(format!(
            "no certificate in {flag} {}",
            path.display()
        )));
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
}
