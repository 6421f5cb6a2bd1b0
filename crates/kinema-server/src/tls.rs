//! TLS for the server's ports (docs/operations.md, "TLS"): a PEM certificate chain and
//! its private key, read once at start; a file that is missing or not PEM fails the
//! start with its path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::transport::{Identity, ServerTlsConfig};

/// The certificate chain and key files given with `--tls-cert` / `--tls-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS file {path}: no PEM {expected} in it")]
    NotPem {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("TLS certificate {cert} with key {key}: {message}")]
    Invalid {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// The PEM contents of the two files, checked to hold what they must.
#[derive(Clone)]
pub struct TlsIdentity {
    pub files: TlsFiles,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl TlsIdentity {
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let cert = read_pem(&files.cert, "CERTIFICATE", &["CERTIFICATE"])?;
        let key = read_pem(
            &files.key,
            "PRIVATE KEY",
            &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"],
        )?;
        Ok(TlsIdentity {
            files: files.clone(),
            cert,
            key,
        })
    }

    /// The gRPC port's TLS settings (HTTP/2 by ALPN).
    pub fn grpc(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(&self.cert, &self.key))
    }

    /// A rustls server configuration for an HTTP/1.1 port (the web console).
    pub fn http1(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(e))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| self.invalid(e))?;
        // ring, as tonic's TLS uses: no C library (aws-lc) to build. rustls marks it
        // deprecated only for its lack of post-quantum key exchange.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| self.invalid(e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| self.invalid(e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A certificate and key that parse as PEM but do not make a TLS server (a key
    /// that is not the certificate's, an unsupported algorithm).
    pub fn invalid(&self, message: impl ToString) -> TlsError {
        TlsError::Invalid {
            cert: self.files.cert.clone(),
            key: self.files.key.clone(),
            message: message.to_string(),
        }
    }
}

fn read_pem(path: &Path, expected: &'static str, labels: &[&str]) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let found = labels
        .iter()
        .any(|label| text.contains(&format!("-----BEGIN {label}-----")));
    if !found {
        return Err(TlsError::NotPem {
            path: path.to_path_buf(),
            expected,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_pem_block_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let err = TlsIdentity::load(&TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })
        .err()
        .expect("a key file without a key");
        assert!(
            matches!(&err, TlsError::NotPem { path, .. } if path == &key),
            "{err}"
        );
        let missing = dir.path().join("missing.pem");
        let err = TlsIdentity::load(&TlsFiles {
            cert: missing.clone(),
            key,
        })
        .err()
        .expect("a missing certificate file");
        assert!(
            matches!(&err, TlsError::Read { path, .. } if path == &missing),
            "{err}"
        );
    }
}
