//! Named prepared statements in transaction pooling: what each client prepared (its names,
//! each bound to a statement), and what each server connection has prepared under the
//! broker's names (a bounded LRU). A statement's server-side name is derived from what it is
//! (query text and parameter types), so every client preparing the same text shares one
//! prepared statement per server connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::protocol::query::Effects;
use crate::protocol::statement::server_name;

/// One statement as a client defined it.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    /// Its name on every server connection.
    pub server_name: Arc<str>,
    /// The Parse body after the name: query text, parameter count and types.
    pub definition: Box<[u8]>,
    /// What it does to a session when it runs (a pin, a reset, a deallocation).
    pub effects: Effects,
}

impl Statement {
    /// The statement of a client Parse body's `definition`.
    pub fn new(definition: &[u8], effects: Effects) -> Arc<Statement> {
        Arc::new(Statement {
            server_name: server_name(definition).into(),
            definition: definition.into(),
            effects,
        })
    }
}

/// One client's named statements: its names → statements.
#[derive(Debug, Default)]
pub struct ClientStatements {
    names: HashMap<Box<str>, Arc<Statement>>,
    /// Bytes of names and definitions held.
    bytes: usize,
}

impl ClientStatements {
    /// Most named statements one client may hold at once.
    pub const MAX_COUNT: usize = 10_000;
    /// Most bytes of statement names and definitions one client may hold at once.
    pub const MAX_BYTES: usize = 16 << 20;

    /// True when the client may bind one more name to a definition this size: a client
    /// cannot grow the broker's memory without bound by preparing statements.
    pub fn has_room(&self, name: &str, definition: &[u8]) -> bool {
        self.names.len() < Self::MAX_COUNT
            && self.bytes + name.len() + definition.len() <= Self::MAX_BYTES
    }

    /// The statement the client named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Statement>> {
        self.names.get(name)
    }

    /// Binds `name` to `statement`.
    pub fn insert(&mut self, name: &str, statement: Arc<Statement>) {
        self.bytes += name.len() + statement.definition.len();
        if let Some(old) = self.names.insert(name.into(), statement) {
            self.bytes -= name.len() + old.definition.len();
        }
    }

    /// Drops `name`; returns what it was bound to.
    pub fn remove(&mut self, name: &str) -> Option<Arc<Statement>> {
        let old = self.names.remove(name)?;
        self.bytes -= name.len() + old.definition.len();
        Some(old)
    }

    /// Drops every name (DEALLOCATE ALL, DISCARD ALL).
    pub fn clear(&mut self) {
        self.names.clear();
        self.bytes = 0;
    }

    /// Named statements the client holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the client holds none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The statements prepared under the broker's names on one server connection, least
/// recently used first out.
#[derive(Debug, Default)]
pub struct ServerStatements {
    used: HashMap<Arc<str>, u64>,
    by_use: BTreeMap<u64, Arc<str>>,
    tick: u64,
}

impl ServerStatements {
    /// True when `name` is prepared; marks it used.
    pub fn touch(&mut self, name: &Arc<str>) -> bool {
        let Some(at) = self.used.get_mut(name) else {
            return false;
        };
        self.tick += 1;
        self.by_use.remove(at);
        *at = self.tick;
        self.by_use.insert(self.tick, Arc::clone(name));
        true
    }

    /// Records `name` as prepared (most recently used).
    pub fn insert(&mut self, name: &Arc<str>) {
        if self.touch(name) {
            return;
        }
        self.tick += 1;
        self.used.insert(Arc::clone(name), self.tick);
        self.by_use.insert(self.tick, Arc::clone(name));
    }

    /// The least recently used statement while there are more than `capacity` (at least
    /// one is kept), taken off the list for the caller to close on the server.
    pub fn evict(&mut self, capacity: usize) -> Option<Arc<str>> {
        if self.used.len() <= capacity.max(1) {
            return None;
        }
        let (_, oldest) = self.by_use.pop_first()?;
        self.used.remove(&oldest);
        Some(oldest)
    }

    /// Forgets `name` (its Parse failed or was skipped, or it was closed).
    pub fn remove(&mut self, name: &str) {
        if let Some(at) = self.used.remove(name) {
            self.by_use.remove(&at);
        }
    }

    /// Forgets every statement; returns their names.
    pub fn take_all(&mut self) -> Vec<Arc<str>> {
        self.used.clear();
        std::mem::take(&mut self.by_use).into_values().collect()
    }

    /// Statements prepared.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// True when none is prepared.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn the_least_recently_used_statement_is_evicted() {
        let mut server = ServerStatements::default();
        server.insert(&name("a"));
        server.insert(&name("b"));
        assert_eq!(server.evict(2), None);
        assert!(server.touch(&name("a")));
        server.insert(&name("c"));
        assert_eq!(server.evict(2), Some(name("b")));
        assert_eq!(server.evict(2), None);
        assert!(!server.touch(&name("b")));
        assert_eq!(server.len(), 2);
        server.remove("a");
        assert!(!server.touch(&name("a")));
        let mut all = server.take_all();
        all.sort();
        assert_eq!(all, vec![name("c")]);
        assert!(server.is_empty());
    }

    #[test]
    fn lru_stays_bounded_under_many_statements() {
        let mut server = ServerStatements::default();
        let mut evicted = 0;
        for i in 0..1000 {
            server.insert(&name(&i.to_string()));
            while server.evict(250).is_some() {
                evicted += 1;
            }
            // An old favourite stays by being used.
            assert!(i == 0 || server.touch(&name("0")));
        }
        assert_eq!((server.len(), evicted), (250, 750));
        assert!(server.touch(&name("0")));
        assert_eq!(server.by_use.len(), 250);
    }

    #[test]
    fn clients_share_statements_by_definition() {
        let a = Statement::new(b"SELECT 1\0\0\0", Effects::default());
        let b = Statement::new(b"SELECT 1\0\0\0", Effects::default());
        assert_eq!(a.server_name, b.server_name);
        let mut client = ClientStatements::default();
        client.insert("s1", a);
        assert!(client.get("s1").is_some() && client.get("s2").is_none());
        assert!(client.remove("s1").is_some());
        assert!(client.is_empty() && client.bytes == 0);
        let big = vec![b'x'; ClientStatements::MAX_BYTES / 2];
        assert!(client.has_room("a", &big));
        client.insert("a", Statement::new(&big, Effects::default()));
        assert!(!client.has_room("b", &big), "over the bytes bound");
        client.insert("a", Statement::new(b"SELECT 1\0\0\0", Effects::default()));
        assert!(
            client.has_room("b", &big),
            "a rebound name frees its old bytes"
        );
    }
}
