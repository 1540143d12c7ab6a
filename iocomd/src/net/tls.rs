//! TLS configuration for IOCOM over TLS (port 6369): rustls 0.23 with the ring provider, TLS 1.2
//! and 1.3, PEM files parsed with rustls-pki-types.
//!
//! Unlike the C library, a client always verifies the server certificate against the given CA
//! file, including the server name (spec §7.2 item 1); there is no "accept any certificate" mode.
//! Servers do not request client certificates: clients authenticate with the IOCOM
//! authentication frame (password accounts, see [`crate::proto::password`]).

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Why a TLS configuration cannot be built.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file cannot be read or parsed.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{0}: no certificate found")]
    NoCertificate(PathBuf),
    /// rustls refused the material (bad key, key/cert mismatch, bad CA).
    #[error("{path}: {source}")]
    Rustls {
        /// The file involved.
        path: PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// Server configuration from a PEM certificate chain (leaf first) and a PEM private key.
pub fn server_config(cert_chain: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs(cert_chain)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        path: key.to_owned(),
        source,
    })?;
    let rustls_err = |source| TlsError::Rustls {
        path: key.to_owned(),
        source,
    };
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(rustls_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(rustls_err)?;
    Ok(Arc::new(cfg))
}

/// Client configuration trusting the CA certificates in the PEM file `ca`.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c).map_err(|source| TlsError::Rustls {
            path: ca.to_owned(),
            source,
        })?;
    }
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| TlsError::Rustls {
            path: ca.to_owned(),
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A tokio acceptor for [`super::listen`].
pub fn acceptor(cert_chain: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(server_config(cert_chain, key)?))
}

/// A tokio connector for [`super::connect`].
pub fn connector(ca: &Path) -> Result<TlsConnector, TlsError> {
    Ok(TlsConnector::from(client_config(ca)?))
}
