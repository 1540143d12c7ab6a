//! TLS configuration for IOCOM over TLS (port 6369), the one builder for the daemon and
//! iocomctl, both roles: rustls 0.23 with the ring provider, TLS 1.2 and 1.3, PEM files parsed
//! with rustls-pki-types.
//!
//! Unlike the C library, a client always verifies the server certificate against the given CA
//! file, including the server name (spec §7.2 item 1); there is no "accept any certificate" mode.
//! A client may present a certificate ([`Identity`]). A server given a client CA requires and
//! verifies client certificates (mutual TLS); without one it requests none, and clients
//! authenticate with the IOCOM authentication frame (password accounts, see
//! [`crate::proto::password`]).

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

/// A certificate chain (PEM, leaf first) and its private key (PEM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    /// The certificate chain file.
    pub cert: &'a Path,
    /// The private key file.
    pub key: &'a Path,
}

impl Identity<'_> {
    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let chain = certs(self.cert)?;
        let key = PrivateKeyDer::from_pem_file(self.key).map_err(|source| TlsError::Pem {
            path: self.key.to_owned(),
            source,
        })?;
        Ok((chain, key))
    }
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c).map_err(|source| TlsError::Rustls {
            path: ca.to_owned(),
            source,
        })?;
    }
    Ok(roots)
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

/// Server configuration for `identity`; with `client_ca`, clients must present a certificate
/// issued by a CA in that PEM file (mutual TLS).
pub fn server_config(
    identity: Identity<'_>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key_der) = identity.load()?;
    let rustls_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Rustls { path, source }
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(rustls_err(identity.key))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Rustls {
                path: ca.to_owned(),
                source: rustls::Error::General(e.to_string()),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let cfg = builder
        .with_single_cert(chain, key_der)
        .map_err(rustls_err(identity.key))?;
    Ok(Arc::new(cfg))
}

/// Client configuration trusting the CA certificates in the PEM file `ca`, presenting
/// `identity` when given.
pub fn client_config(
    ca: &Path,
    identity: Option<Identity<'_>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| TlsError::Rustls {
            path: ca.to_owned(),
            source,
        })?
        .with_root_certificates(roots(ca)?);
    let cfg = match identity {
        Some(id) => {
            let (chain, key) = id.load()?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| TlsError::Rustls {
                    path: id.key.to_owned(),
                    source,
                })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// A tokio acceptor for [`super::listen`] (see [`server_config`]).
pub fn acceptor(identity: Identity<'_>, client_ca: Option<&Path>) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(server_config(identity, client_ca)?))
}

/// A tokio connector for [`super::connect`] (see [`client_config`]).
pub fn connector(ca: &Path, identity: Option<Identity<'_>>) -> Result<TlsConnector, TlsError> {
    Ok(TlsConnector::from(client_config(ca, identity)?))
}
