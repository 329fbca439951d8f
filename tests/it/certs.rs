//! What the TLS tests need: throwaway certificates made with rcgen (a CA, a server
//! certificate it signs for `localhost` and `127.0.0.1`, and an unrelated CA for "wrong CA"
//! cases) as PEM strings and as files in a temporary directory that Drop removes; and a
//! tokio-postgres client over rustls (ring) that trusts one CA and remembers the server
//! certificates it was shown.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The names the server certificate is valid for (DNS and IP SANs).
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Numbers the certificate directories of this process.
static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A PEM text and the file that holds it.
#[derive(Debug, Clone)]
pub struct PemFile {
    pub path: PathBuf,
    pub pem: String,
}

impl PemFile {
    /// The first certificate of the PEM, as DER: what a TLS peer sends.
    pub fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("a certificate PEM")
    }
}

/// A CA, a server certificate and key it signed, and an unrelated CA, in `dir`.
pub struct TestCerts {
    pub dir: PathBuf,
    /// `ca.pem`: the CA that signed the server certificate.
    pub ca: PemFile,
    /// `server.crt`: for [`SERVER_NAMES`], signed by `ca`.
    pub server_cert: PemFile,
    /// `server.key`: the server certificate's private key (mode 0600).
    pub server_key: PemFile,
    /// `other-ca.pem`: a CA that signed nothing here, for "wrong CA" tests.
    pub other_ca: PemFile,
    /// Server certificates issued so far: their common names tell them apart.
    issued: u32,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCerts {
    /// A fresh CA, server certificate and other CA, written into a new temporary directory.
    pub fn new() -> TestCerts {
        let dir = std::env::temp_dir().join(format!(
            "pgbroker-certs-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir); // left by an earlier process of the same pid
        std::fs::create_dir_all(&dir).expect("certificate directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let (ca_pem, issuer) = new_ca("pgbroker test CA");
        let (other_pem, _) = new_ca("pgbroker unrelated CA");
        let placeholder = |name: &str| PemFile {
            path: dir.join(name),
            pem: String::new(),
        };
        let mut certs = TestCerts {
            ca: write(&dir.join("ca.pem"), ca_pem),
            other_ca: write(&dir.join("other-ca.pem"), other_pem),
            server_cert: placeholder("server.crt"),
            server_key: placeholder("server.key"),
            issued: 0,
            issuer,
            dir,
        };
        certs.reissue_server();
        certs
    }

    /// Issues a new server certificate, with a new key, from the same CA and overwrites
    /// `server.crt` and `server.key` (same paths: a broker reloads them on SIGHUP). Its
    /// common name is [`TestCerts::server_common_name`].
    pub fn reissue_server(&mut self) {
        self.issued += 1;
        let mut params = CertificateParams::new(SERVER_NAMES.map(String::from).to_vec())
            .expect("valid server names");
        let name = self.server_common_name();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign server");
        self.server_cert = write(&self.server_cert.path, cert.pem());
        self.server_key = write(&self.server_key.path, key.serialize_pem());
    }

    /// The common name of the current server certificate: "pgbroker test server N", N
    /// counting issues from 1.
    pub fn server_common_name(&self) -> String {
        format!("pgbroker test server {}", self.issued)
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A self-signed CA: its certificate's PEM, and the issuer that signs with it.
fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::new()).expect("no names");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert.pem(), Issuer::new(params, key))
}

/// Writes `pem` to `path`, readable by its owner alone (keys among them).
fn write(path: &Path, pem: String) -> PemFile {
    std::fs::write(path, &pem).expect("write PEM");
    let private = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(path, private).expect("chmod PEM");
    let path = path.to_path_buf();
    PemFile { path, pem }
}

/// The server certificates a [`RustlsClient`] was shown, in order.
type Seen = Arc<Mutex<Vec<CertificateDer<'static>>>>;

/// A tokio-postgres TLS setup over rustls (ring provider) that trusts one CA alone and
/// verifies the host name, as libpq's `sslmode=verify-full` does.
pub struct RustlsClient {
    tls: MakeRustlsConnect,
    seen: Seen,
}

impl RustlsClient {
    /// A client that trusts the certificates in `ca` and no others.
    pub fn trusting(ca: &PemFile) -> RustlsClient {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let builder = WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone());
        let seen = Seen::default();
        let verifier = Recording {
            inner: builder.build().expect("verifier"),
            seen: Arc::clone(&seen),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let tls = MakeRustlsConnect::new(config);
        RustlsClient { tls, seen }
    }

    /// Connects with `conninfo` (give it `sslmode=require`: tokio-postgres's default,
    /// `prefer`, would fall back to plaintext) and spawns the connection task.
    pub async fn connect(&self, conninfo: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(conninfo, self.tls.clone()).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// The last server certificate this client was shown (verified or not).
    pub fn last_server_cert(&self) -> Option<CertificateDer<'static>> {
        self.seen.lock().unwrap().last().cloned()
    }
}

/// Verifies as webpki does, and first records the certificate it was shown.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Seen,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.seen
            .lock()
            .unwrap()
            .push(end_entity.clone().into_owned());
        let inner = &self.inner;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
