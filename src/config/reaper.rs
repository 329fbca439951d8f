//! `[reaper]`: the TTLs of what frozen or vanished clients leave behind.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units;

/// `[reaper]`: what frozen or vanished clients leave behind is reclaimed by a sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reaper {
    /// A client silent this long outside a transaction is disconnected (57P05).
    #[serde(with = "units::duration")]
    pub client_idle_timeout: Duration,
    /// A client silent this long inside a transaction is rolled back and disconnected (25P03).
    #[serde(with = "units::duration")]
    pub idle_in_transaction_timeout: Duration,
    /// How often the sweep runs.
    #[serde(with = "units::duration")]
    pub interval: Duration,
}

impl Default for Reaper {
    fn default() -> Self {
        Reaper {
            client_idle_timeout: Duration::from_secs(300),
            idle_in_transaction_timeout: Duration::from_secs(30),
            interval: Duration::from_secs(1),
        }
    }
}
