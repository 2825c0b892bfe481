//! TLS (rustls) for the listener, from a PEM certificate chain and key.
//!
//! Why it matters for browsers: over plain HTTP a browser speaks HTTP/1.1
//! and opens at most six connections per origin, each busy for as long as
//! a watch stream lasts. Over TLS it negotiates HTTP/2 (ALPN `h2`) and
//! multiplexes every call onto one connection. Native gRPC clients get the
//! same listener; HTTP/1.1 clients (ALPN `http/1.1`, or none) too. The files
//! are read once at start-up; rotating them means restarting the server.
//!
//! This module only builds the acceptor; the handshake itself runs in the
//! accept loop ([`super::listen`]), under its handshake timeout.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and its private key, both PEM, as read from disk.
#[derive(Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("TlsPem")
            .field("cert_bytes", &self.cert.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the TLS certificate or key is unusable: {0}")]
    Invalid(String),
}

impl TlsPem {
    /// Reads both files and checks that rustls accepts them, so a bad file
    /// fails at start-up with its name rather than on the first connection.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let pem = Self {
            cert: read("certificate", cert)?,
            key: read("key", key)?,
        };
        pem.validate()?;
        Ok(pem)
    }

    /// Builds the rustls server configuration once and throws it away.
    pub fn validate(&self) -> Result<(), TlsError> {
        self.acceptor().map(|_| ())
    }

    /// The acceptor the listener hands every accepted socket to. ALPN offers
    /// `h2` first (browsers and gRPC clients) and `http/1.1` for grpc-web
    /// clients that only speak that.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Invalid(format!("certificate: {e}")))?;
        if chain.is_empty() {
            return Err(TlsError::Invalid(
                "the certificate file holds no PEM certificate".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| TlsError::Invalid(format!("private key: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_at_load_and_the_key_is_never_printed() {
        let pem = TlsPem {
            cert: b"not a certificate".to_vec(),
            key: b"SECRET KEY MATERIAL".to_vec(),
        };
        assert!(matches!(pem.validate(), Err(TlsError::Invalid(_))));
        assert!(!format!("{pem:?}").contains("SECRET"));
        let missing = TlsPem::load(Path::new("/nonexistent/cert.pem"), Path::new("/x"));
        assert!(
            matches!(
                missing,
                Err(TlsError::Read {
                    what: "certificate",
                    ..
                })
            ),
            "{missing:?}"
        );
    }
}
