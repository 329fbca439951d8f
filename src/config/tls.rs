//! `[listen.tls]` and `[backend.tls]`: TLS towards clients and towards Postgres.
//!
//! Modes follow Postgres's own words: a client may `allow` or `require` TLS of the broker
//! (as `hostssl` does), and the broker reaches Postgres as libpq's `sslmode` would
//! (<https://www.postgresql.org/docs/current/libpq-ssl.html#LIBPQ-SSL-PROTECTION>).

use serde::{Deserialize, Serialize};

/// `[listen.tls]`: TLS offered to clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenTls {
    /// Whether clients may or must use TLS.
    pub mode: ListenTlsMode,
    /// PEM certificate chain, the broker's own first; re-read on SIGHUP.
    pub cert: String,
    /// PEM private key of that certificate; re-read on SIGHUP.
    pub key: String,
}

/// What the broker answers a client's SSLRequest, and whether it needs one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenTlsMode {
    /// SSLRequest is answered 'N'; clients speak in plaintext.
    #[default]
    Disable,
    /// SSLRequest is answered 'S'; plaintext clients are served too.
    Allow,
    /// SSLRequest is answered 'S'; a plaintext startup gets FATAL 28000.
    Require,
}

/// `[backend.tls]`: TLS towards Postgres.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendTls {
    /// As libpq's sslmode.
    pub mode: BackendTlsMode,
    /// PEM roots trusted for `verify-full`; empty: the webpki roots (Mozilla's set).
    pub ca: String,
}

/// How the broker reaches Postgres, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS when the server offers it, plain TCP when it answers 'N'; no verification.
    Prefer,
    /// TLS or no connection; the certificate is not verified (libpq's `require`).
    Require,
    /// TLS with the certificate verified against `ca` and the host name checked.
    VerifyFull,
}

impl ListenTlsMode {
    /// Whether an SSLRequest is answered 'S'.
    pub fn offered(self) -> bool {
        self != ListenTlsMode::Disable
    }
}
