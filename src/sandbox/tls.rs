//! TLS for a sandbox cluster: the server's certificate and key in its data directory, and
//! `ssl = on`, so that the broker's TLS can be tested against a real Postgres. The caller
//! brings the PEM (the tests make it with rcgen). See
//! <https://www.postgresql.org/docs/current/ssl-tcp.html>.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::setup::{write_owned, write_private};
use super::{io_err, Cluster, Result, SandboxError, CONNECT_TIMEOUT};

/// The settings file that `sandbox.conf` includes if it exists.
pub(super) const CONF_FILE: &str = "tls.conf";
/// The server's certificate (and any chain after it), in the data directory.
const CERT_FILE: &str = "server.crt";
/// The server's private key, in the data directory.
const KEY_FILE: &str = "server.key";
/// An SSLRequest: length 8, then the request code 1234 5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

impl Cluster {
    /// Installs `cert_pem` (the server's certificate, any intermediates after it) and
    /// `key_pem` as the server's TLS files, turns `ssl` on and reloads; returns once the
    /// server answers an SSLRequest with 'S'. Called again, it replaces the certificate
    /// without a restart: sessions stay up, new ones get the new certificate.
    pub async fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        self.write_tls_files(cert_pem, key_pem)?;
        self.reload().await?;
        // A server that cannot load its key still says `ssl = on` but answers 'N'.
        if self.offers_tls().await? {
            return Ok(());
        }
        let log = self.log_tail();
        Err(SandboxError::NotApplied { what: "TLS", log })
    }

    /// Writes the certificate, the key (0600, as PostgreSQL demands) and the settings.
    fn write_tls_files(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        let dir = &self.data_dir;
        write_owned(&self.pg, &dir.join(CERT_FILE), cert_pem)?;
        write_private(&self.pg, &dir.join(KEY_FILE), key_pem)?;
        // Relative paths are read from the data directory.
        let conf =
            format!("ssl = on\nssl_cert_file = '{CERT_FILE}'\nssl_key_file = '{KEY_FILE}'\n");
        write_owned(&self.pg, &dir.join(CONF_FILE), &conf)
    }

    /// Whether the server answers an SSLRequest with 'S' (it then expects a TLS handshake,
    /// which this probe never starts).
    async fn offers_tls(&self) -> Result<bool> {
        let addr = (Self::HOST, self.port);
        let probe = async {
            let mut stream = TcpStream::connect(addr).await?;
            stream.write_all(&SSL_REQUEST).await?;
            stream.read_u8().await
        };
        let answer = tokio::time::timeout(CONNECT_TIMEOUT, probe).await;
        let answer = answer.unwrap_or_else(|elapsed| Err(io::Error::other(elapsed)));
        let target = format!("{}:{}", Self::HOST, self.port);
        Ok(answer.map_err(io_err(target))? == b'S')
    }
}
