//! Names of the SQLSTATEs the broker recognises in what Postgres sends it. These are only
//! compared against: every code the broker itself chooses for a client is picked in
//! [`crate::error::client`], the only module that can build a client's error message, and
//! no other file spells a SQLSTATE or writes an ErrorResponse (a test there checks src/).
//!
//! <https://www.postgresql.org/docs/current/errcodes-appendix.html>

/// too_many_connections: Postgres is full (a refused login worth retrying).
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// cannot_connect_now: Postgres is starting up (a refused login worth retrying).
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// invalid_password: a login's password (or SCRAM proof) was refused.
pub const INVALID_PASSWORD: &str = "28P01";
/// query_canceled: the broker's cancel reached the query it was meant for.
pub const QUERY_CANCELED: &str = "57014";
/// duplicate_prepared_statement: a Parse under a name the server holds already.
pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
