//! TLS (rustls) for the listener, from a PEM certificate chain and key.
//!
//! Why it matters for browsers: over plain HTTP a browser speaks HTTP/1.1
//! and opens at most six connections per origin, each busy for as long as
//! a watch stream lasts. Over TLS it negotiates HTTP/2 (ALPN `h2`) and
//! multiplexes every call onto one connection. Native gRPC clients get the
//! same listener. The files are read once at start-up; rotating them means
//! restarting the server.

use std::fmt;
use std::path::{Path, PathBuf};

use tonic::transport::{Identity, Server, ServerTlsConfig};

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
        Server::builder()
            .tls_config(self.server_config())
            .map(|_| ())
            .map_err(|e| TlsError::Invalid(describe(&e)))
    }

    /// The tonic server configuration (ALPN `h2`; browsers use HTTP/2).
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(&self.cert, &self.key))
    }
}

/// The whole cause chain: tonic's transport error alone says only
/// "transport error".
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
