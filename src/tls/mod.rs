//! TLS on both edges, with rustls (ring provider, TLS 1.2 and 1.3, its default suites): the
//! acceptor clients upgrade to after an SSLRequest ([`Acceptor`], its certificate re-read on
//! SIGHUP), the connector towards Postgres as libpq's `sslmode` ([`Connector`]), and the
//! socket that is either ([`Stream`]).
//!
//! <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL>

mod endpoint;
mod expiry;
mod stream;
mod verify;

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::config::{BackendTls, BackendTlsMode, ListenTls, ListenTlsMode};

pub use endpoint::{tls_server_end_point, EndPointError};
pub use expiry::not_after;
pub use stream::{ReadPart, Stream, WritePart};

/// A TLS session with a client, over its socket.
pub type ClientTlsStream = tokio_rustls::server::TlsStream<TcpStream>;
/// A TLS session with Postgres, over the broker's socket.
pub type ServerTlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// What can go wrong setting TLS up. Names the config key and file; never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{key} = {path:?}: {what}")]
    Pem {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the certificate and key (they do not match, an unsupported key type).
    #[error("listen.tls: certificate and key refused: {0}")]
    Refused(#[source] rustls::Error),
    /// The backend's host is neither a DNS name nor an IP address.
    #[error("backend.host {host:?} is not a name TLS can verify")]
    ServerName {
        /// The host.
        host: String,
    },
}

/// The crypto provider of every TLS session the broker has.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What is wrong with the PEM file `path` that config key `key` names.
fn pem_error(key: &'static str, path: &str, what: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        key,
        path: path.to_owned(),
        what: what.to_string(),
    }
}

/// The certificates in a PEM file.
fn certificates(key: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |what: &dyn std::fmt::Display| pem_error(key, path, what);
    let certs = CertificateDer::pem_file_iter(Path::new(path))
        .map_err(|e| pem(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(&e))?;
    if certs.is_empty() {
        return Err(pem(&"no CERTIFICATE in it"));
    }
    Ok(certs)
}

/// The private key in a PEM file.
fn private_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(Path::new(path)).map_err(|e| pem_error("listen.tls.key", path, e))
}

/// The client-facing side: the mode, and what is offered, built from the certificate and
/// key (swapped whole on reload, so sessions in a handshake keep the one they began).
#[derive(Debug)]
pub struct Acceptor {
    mode: ListenTlsMode,
    files: ListenTls,
    offer: RwLock<Option<Offer>>,
}

/// What a client that asks for TLS gets: the handshake, and the tls-server-end-point hash
/// of the same certificate for SCRAM-SHA-256-PLUS (none where the certificate's signature
/// names no hash, as with Ed25519: channel binding is then not offered).
#[derive(Clone)]
pub struct Offer {
    /// The rustls acceptor.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The channel binding data of the certificate.
    pub end_point: Option<Arc<[u8]>>,
    /// When the certificate expires (RFC 3339), for `/status`.
    pub not_after: Option<String>,
}

impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let binding = self.end_point.is_some();
        f.debug_struct("Offer")
            .field("channel_binding", &binding)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Loads `[listen.tls]`: with TLS offered, the certificate and key must load.
    pub fn new(tls: &ListenTls) -> Result<Acceptor, TlsError> {
        let acceptor = Acceptor {
            mode: tls.mode,
            files: tls.clone(),
            offer: RwLock::new(None),
        };
        acceptor.reload()?;
        Ok(acceptor)
    }

    /// What clients are offered.
    pub fn mode(&self) -> ListenTlsMode {
        self.mode
    }

    /// Re-reads the certificate and key; on an error the ones in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        if !self.mode.offered() {
            return Ok(());
        }
        let certs = certificates("listen.tls.cert", &self.files.cert)?;
        let leaf = certs.first().cloned();
        let key = private_key(&self.files.key)?;
        let end_point = certs.first().and_then(|leaf| match tls_server_end_point(leaf) {
            Ok(hash) => Some(Arc::from(hash)),
            Err(error) => {
                tracing::warn!(%error, "listen.tls.cert: no channel binding (SCRAM-SHA-256-PLUS) with this certificate");
                None
            }
        });
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Refused)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(TlsError::Refused)?;
        let offer = Offer {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            end_point,
            not_after: leaf.and_then(|cert| not_after(&cert).ok()),
        };
        *self.offer.write().unwrap_or_else(PoisonError::into_inner) = Some(offer);
        Ok(())
    }

    /// What a client's SSLRequest gets, when TLS is offered.
    pub fn offer(&self) -> Option<Offer> {
        self.offer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The Postgres-facing side: the mode and, unless disabled, the client config.
#[derive(Clone)]
pub struct Connector {
    mode: BackendTlsMode,
    connector: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Builds `[backend.tls]`'s connector (reading `ca` for verify-full).
    pub fn new(tls: &BackendTls) -> Result<Connector, TlsError> {
        let config = match tls.mode {
            BackendTlsMode::Disable => None,
            BackendTlsMode::Prefer | BackendTlsMode::Require => Some(unverified()),
            BackendTlsMode::VerifyFull => Some(verified(&tls.ca)?),
        };
        Ok(Connector {
            mode: tls.mode,
            connector: config.map(|c| tokio_rustls::TlsConnector::from(Arc::new(c))),
        })
    }

    /// The mode.
    pub fn mode(&self) -> BackendTlsMode {
        self.mode
    }

    /// The rustls connector, unless TLS is disabled.
    pub fn connector(&self) -> Option<&tokio_rustls::TlsConnector> {
        self.connector.as_ref()
    }

    /// The name the server's certificate must carry.
    pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
        ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName {
            host: host.to_owned(),
        })
    }
}

fn client_builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("ring supports the default versions"))
}

/// libpq's `require`: encrypted, the certificate not checked (its signature on the
/// handshake still is).
fn unverified() -> ClientConfig {
    let verifier = Arc::new(verify::AnyCertificate::new(provider()));
    (client_builder().dangerous())
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

/// libpq's `verify-full`: the chain against `ca` (or the webpki roots), and the host name.
fn verified(ca: &str) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    if ca.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        for cert in certificates("backend.tls.ca", ca)? {
            (roots.add(cert)).map_err(|e| pem_error("backend.tls.ca", ca, e))?;
        }
    }
    Ok(client_builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}
