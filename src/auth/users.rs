//! The users the broker knows, as read from the config: what each authenticates with and
//! which account it belongs to.

use super::Secret;
use crate::config::AuthMethod;

/// A configured user, as the broker authenticates it and logs it in to Postgres.
#[derive(Debug, Clone)]
pub struct UserEntry {
    /// Its password, parsed.
    pub secret: Secret,
    /// How the client authenticates.
    pub method: AuthMethod,
    /// The account it belongs to.
    pub account: String,
}
