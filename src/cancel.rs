//! Cancelling: where a CancelRequest for a server connection goes ([`CancelTarget`]) and
//! sending it ([`send_cancel`]), and the broker-issued keys. Each client gets a (pid,
//! secret) of the broker's own in its BackendKeyData; while it holds a server connection the
//! key maps to that server's real key, so a CancelRequest reaches the query running for that
//! client now, and nothing else. Below the server connections and the sessions, which both
//! send cancels; it knows only the protocol.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;
use rand::RngExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::write;

/// Where to send a CancelRequest for the query running on a server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    /// The server's address.
    pub addr: SocketAddr,
    /// Backend process id.
    pub pid: i32,
    /// Backend secret key.
    pub secret: i32,
}

#[derive(Debug)]
struct Slot {
    secret: i32,
    target: Option<CancelTarget>,
    /// Cancel requests for this client on their way to Postgres.
    in_flight: u32,
}

/// A cancel request on its way; while any exists for a client, the server connection it
/// targets must not go back to the pool (the signal could hit the next client's query).
#[derive(Debug)]
pub struct InFlight {
    registry: Arc<CancelRegistry>,
    pid: i32,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut slots = self
            .registry
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(&self.pid) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
    }
}

/// The map from broker-issued keys to the server serving each client now.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    slots: Mutex<HashMap<i32, Slot>>,
}

/// A client's registered key; unregisters on drop.
#[derive(Debug)]
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    /// The pid sent to the client.
    pub pid: i32,
    /// The secret sent to the client.
    pub secret: i32,
}

impl CancelRegistry {
    /// Issues a fresh, unique key.
    pub fn register(self: &Arc<Self>) -> CancelKey {
        let mut rng = rand::rng();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let pid = rng.random_range(1..i32::MAX);
            if let std::collections::hash_map::Entry::Vacant(slot) = slots.entry(pid) {
                let secret = rng.random();
                slot.insert(Slot {
                    secret,
                    target: None,
                    in_flight: 0,
                });
                return CancelKey {
                    registry: Arc::clone(self),
                    pid,
                    secret,
                };
            }
        }
    }

    /// The server a (pid, secret) pair may cancel now, if the pair is genuine, with a
    /// guard that marks the cancel in flight until dropped.
    pub fn begin(self: &Arc<Self>, pid: i32, secret: i32) -> Option<(CancelTarget, InFlight)> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = slots.get_mut(&pid).filter(|s| s.secret == secret)?;
        let target = slot.target?;
        slot.in_flight += 1;
        Some((
            target,
            InFlight {
                registry: Arc::clone(self),
                pid,
            },
        ))
    }

    fn set(&self, pid: i32, target: Option<CancelTarget>) {
        if let Some(slot) = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&pid)
        {
            slot.target = target;
        }
    }
}

impl CancelKey {
    /// True while a cancel request for this client is on its way to Postgres.
    pub fn cancelling(&self) -> bool {
        let slots = self
            .registry
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slots.get(&self.pid).is_some_and(|s| s.in_flight > 0)
    }

    /// Points the key at the server now serving the client (`None`: no server held).
    pub fn serve(&self, target: Option<CancelTarget>) {
        self.registry.set(self.pid, target);
    }
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.pid);
    }
}

/// How long a cancel request may take to reach Postgres.
const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends a CancelRequest for `target` to Postgres and waits until Postgres closes that
/// connection, which it does once the signal is sent (best effort, bounded).
pub async fn send_cancel(target: CancelTarget) -> std::io::Result<()> {
    let send = async {
        let mut stream = TcpStream::connect(target.addr).await?;
        let mut buf = BytesMut::new();
        write::cancel_request(&mut buf, target.pid, target.secret);
        stream.write_all(&buf).await?;
        let mut sink = [0u8; 64];
        while stream.read(&mut sink).await? > 0 {}
        Ok(())
    };
    tokio::time::timeout(CANCEL_TIMEOUT, send)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_only_while_serving_and_only_with_the_secret() {
        let registry = Arc::new(CancelRegistry::default());
        let key = registry.register();
        assert!(registry.begin(key.pid, key.secret).is_none());
        let target = CancelTarget {
            addr: "127.0.0.1:5432".parse().unwrap(),
            pid: 9,
            secret: 10,
        };
        key.serve(Some(target));
        let (got, in_flight) = registry.begin(key.pid, key.secret).unwrap();
        assert_eq!(got, target);
        assert!(key.cancelling());
        drop(in_flight);
        assert!(!key.cancelling());
        assert!(registry
            .begin(key.pid, key.secret.wrapping_add(1))
            .is_none());
        let pid = key.pid;
        let secret = key.secret;
        drop(key);
        assert!(registry.begin(pid, secret).is_none());
    }
}
