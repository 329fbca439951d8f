//! Broker-issued cancel keys. Each client gets a (pid, secret) of the broker's own in its
//! BackendKeyData; while it holds a server connection the key maps to that server's real
//! key, so a CancelRequest reaches the query running for that client now, and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;
use rand::RngExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::pool::CancelTarget;
use crate::protocol::write;

#[derive(Debug)]
struct Slot {
    secret: i32,
    target: Option<CancelTarget>,
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
                });
                return CancelKey {
                    registry: Arc::clone(self),
                    pid,
                    secret,
                };
            }
        }
    }

    /// The server a (pid, secret) pair may cancel now, if the pair is genuine.
    pub fn target(&self, pid: i32, secret: i32) -> Option<CancelTarget> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .get(&pid)
            .filter(|s| s.secret == secret)
            .and_then(|s| s.target)
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

/// Sends a CancelRequest for `target` to Postgres (best effort, as Postgres itself treats it).
pub async fn send_cancel(target: CancelTarget) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(target.addr).await?;
    let mut buf = BytesMut::new();
    write::cancel_request(&mut buf, target.pid, target.secret);
    stream.write_all(&buf).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_only_while_serving_and_only_with_the_secret() {
        let registry = Arc::new(CancelRegistry::default());
        let key = registry.register();
        assert_eq!(registry.target(key.pid, key.secret), None);
        let target = CancelTarget {
            addr: "127.0.0.1:5432".parse().unwrap(),
            pid: 9,
            secret: 10,
        };
        key.serve(Some(target));
        assert_eq!(registry.target(key.pid, key.secret), Some(target));
        assert_eq!(registry.target(key.pid, key.secret.wrapping_add(1)), None);
        let pid = key.pid;
        let secret = key.secret;
        drop(key);
        assert_eq!(registry.target(pid, secret), None);
    }
}
