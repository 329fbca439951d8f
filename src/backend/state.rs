//! Where a server connection stands in the protocol, as seen from the messages the broker
//! forwards: how many Syncs/Queries await their ReadyForQuery, whether messages were sent
//! since the last Sync, COPY IN, and the last transaction status.

/// Protocol position of one server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Query / Sync / FunctionCall messages sent whose ReadyForQuery has not come back.
    pub outstanding: u32,
    /// Extended-protocol messages were sent after the last Sync.
    pub unsynced: bool,
    /// The server is in COPY IN and waits for CopyData from the client.
    pub copy_in: bool,
    /// Transaction status of the last ReadyForQuery: 'I', 'T' or 'E'.
    pub status: u8,
    /// Syncs sent since the last Execute: if that Execute starts a COPY IN, Postgres reads
    /// and ignores them as part of the COPY, so they get no ReadyForQuery.
    pub syncs_since_execute: u32,
}

impl Default for Position {
    fn default() -> Self {
        Position {
            outstanding: 0,
            unsynced: false,
            copy_in: false,
            status: b'I',
            syncs_since_execute: 0,
        }
    }
}

impl Position {
    /// Accounts for a client message about to be sent to the server.
    pub fn sent(&mut self, tag: u8) {
        match tag {
            // Postgres ignores Sync and Flush during COPY IN.
            b'S' | b'H' if self.copy_in => {}
            b'Q' | b'F' => {
                self.outstanding += 1;
                self.syncs_since_execute = 0;
            }
            b'S' => {
                self.outstanding += 1;
                self.syncs_since_execute += 1;
                self.unsynced = false;
            }
            b'E' => {
                self.syncs_since_execute = 0;
                self.unsynced = true;
            }
            // A Flush opens nothing: a lone one needs no Sync after it.
            b'P' | b'B' | b'D' | b'C' => self.unsynced = true,
            b'c' | b'f' => self.copy_in = false,
            _ => {}
        }
    }

    /// Accounts for a server message; `body` is its body (only read for 'Z').
    pub fn received(&mut self, tag: u8, body: &[u8]) {
        match tag {
            b'Z' => {
                self.outstanding = self.outstanding.saturating_sub(1);
                self.copy_in = false;
                self.status = body.first().copied().unwrap_or(b'E');
            }
            // An error ends COPY IN on the server's side: Syncs count again.
            b'E' => self.copy_in = false,
            b'G' => {
                self.copy_in = true;
                // Syncs pipelined behind the Execute that started this COPY were eaten by it.
                self.outstanding = self.outstanding.saturating_sub(self.syncs_since_execute);
                if self.syncs_since_execute > 0 {
                    self.unsynced = true;
                }
                self.syncs_since_execute = 0;
            }
            _ => {}
        }
    }

    /// The server skipped `queries` Queries sent behind an extended-protocol error (it
    /// ignores everything up to the next Sync): they owe no ReadyForQuery.
    pub fn skipped(&mut self, queries: u32) {
        self.outstanding = self.outstanding.saturating_sub(queries);
    }

    /// Nothing in flight and no transaction open: the connection may serve another client.
    pub fn is_idle(&self) -> bool {
        self.outstanding == 0 && !self.unsynced && !self.copy_in && self.status == b'I'
    }

    /// Nothing in flight (a transaction may still be open).
    pub fn is_quiet(&self) -> bool {
        self.outstanding == 0 && !self.unsynced && !self.copy_in
    }

    /// The server tags whose whole frame the broker must see to keep this position.
    pub fn watches(tag: u8) -> bool {
        matches!(tag, b'Z' | b'G' | b'S' | b'E')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_queries_keep_the_server_until_the_last_ready() {
        let mut p = Position::default();
        p.sent(b'Q');
        p.sent(b'Q');
        p.received(b'Z', b"I");
        assert!(!p.is_idle());
        p.received(b'Z', b"I");
        assert!(p.is_idle());
    }

    #[test]
    fn extended_without_sync_is_not_idle() {
        let mut p = Position::default();
        for t in *b"PBES" {
            p.sent(t);
        }
        p.sent(b'P');
        p.received(b'Z', b"I");
        assert!(!p.is_idle());
        p.sent(b'S');
        p.received(b'Z', b"I");
        assert!(p.is_idle());
    }

    #[test]
    fn extended_copy_in_eats_the_pipelined_sync() {
        let mut p = Position::default();
        for t in *b"PBES" {
            p.sent(t);
        }
        p.received(b'G', b"");
        p.sent(b'd');
        p.sent(b'H');
        p.sent(b'c');
        assert!(!p.is_quiet(), "the COPY still needs its Sync");
        p.sent(b'S');
        p.received(b'Z', b"I");
        assert!(p.is_idle());
    }

    #[test]
    fn syncs_of_an_earlier_batch_are_not_taken_by_a_simple_copy() {
        let mut p = Position::default();
        for t in *b"PBES" {
            p.sent(t);
        }
        p.received(b'Z', b"I");
        p.sent(b'Q');
        p.received(b'G', b"");
        p.sent(b'c');
        p.sent(b'Q');
        p.received(b'Z', b"I");
        assert!(
            !p.is_quiet(),
            "the second query still owes its ReadyForQuery"
        );
        p.received(b'Z', b"I");
        assert!(p.is_idle());
    }

    #[test]
    fn an_error_ends_copy_in_and_a_lone_flush_opens_nothing() {
        let mut p = Position::default();
        for t in *b"PBES" {
            p.sent(t);
        }
        p.received(b'G', b"");
        p.received(b'E', b"");
        p.sent(b'S');
        p.received(b'Z', b"I");
        assert!(p.is_idle());
        p.sent(b'Q');
        p.sent(b'H');
        p.received(b'Z', b"T");
        p.sent(b'Q');
        p.received(b'Z', b"I");
        assert!(p.is_idle());
    }

    #[test]
    fn open_transaction_and_copy_in() {
        let mut p = Position::default();
        p.sent(b'Q');
        p.received(b'Z', b"T");
        assert!(!p.is_idle() && p.is_quiet());
        p.sent(b'Q');
        p.received(b'G', b"");
        assert!(!p.is_quiet());
        p.sent(b'c');
        p.received(b'Z', b"T");
        assert!(p.is_quiet());
    }
}
