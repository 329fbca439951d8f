//! The replies a server connection still owes, in the order its messages were sent, and who
//! reads each: the client, or the broker (for the messages it put in among the client's:
//! settings replayed, statements prepared on demand or evicted). This is what lets the
//! broker answer a client's Parse itself when the server has the statement already, drop
//! the replies to its own messages, and keep a client's statement names in step with what
//! the server really carried out: after an error in an extended-protocol batch the server
//! skips everything up to the next Sync, and what the skipped messages did to the broker's
//! bookkeeping is undone, newest first.
//!
//! <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-EXT-QUERY>

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::error::StatementRefusal;
use super::statements::{ClientStatements, ServerStatements, Statement};
use crate::protocol::errcodes::DUPLICATE_PREPARED_STATEMENT;
use crate::protocol::frame::sqlstate;

/// The reply a message sent to the server is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply {
    /// ParseComplete.
    Parse,
    /// BindComplete.
    Bind,
    /// RowDescription or NoData (after a ParameterDescription for a statement).
    Describe,
    /// CloseComplete.
    Close,
    /// CommandComplete, PortalSuspended or EmptyQueryResponse, after the rows.
    Execute,
    /// ReadyForQuery.
    Sync,
    /// Everything up to ReadyForQuery (a simple Query, a FunctionCall).
    Query,
}

impl Reply {
    /// The reply owed to a frontend message; `None` for those that get none of their own
    /// (Flush, CopyData, CopyDone, CopyFail).
    pub(super) fn of(tag: u8) -> Option<Reply> {
        Some(match tag {
            b'P' => Reply::Parse,
            b'B' => Reply::Bind,
            b'D' => Reply::Describe,
            b'C' => Reply::Close,
            b'E' => Reply::Execute,
            b'S' => Reply::Sync,
            b'Q' | b'F' => Reply::Query,
            _ => return None,
        })
    }

    /// Whether a server message with `tag` ends this reply (an ErrorResponse aside).
    fn ends_with(self, tag: u8) -> bool {
        match self {
            Reply::Parse => tag == b'1',
            Reply::Bind => tag == b'2',
            Reply::Close => tag == b'3',
            Reply::Describe => matches!(tag, b'T' | b'n'),
            Reply::Execute => matches!(tag, b'C' | b's' | b'I'),
            Reply::Sync | Reply::Query => tag == b'Z',
        }
    }

    /// An error in an extended-protocol message makes the server skip to the next Sync.
    fn extended(self) -> bool {
        !matches!(self, Reply::Sync | Reply::Query)
    }
}

/// Who reads a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// The client's own message: the reply goes to the client.
    Client,
    /// The broker's own message: the reply is dropped, an error kept for the broker.
    Broker,
    /// A Parse the broker put before a client's Bind or Describe: the reply is dropped, but
    /// an error goes to the client, in place of the reply it waits for.
    OnDemand,
    /// The broker's own message whose reply, errors included, nobody reads.
    Silent,
    /// A client message the server is spared: when its turn comes the broker answers with
    /// this message (ParseComplete, CloseComplete) itself.
    Fake(u8),
    /// A client Parse the broker refuses (a name reused, too many statements): the
    /// server's error (for a Describe of a statement that does not exist, sent in its
    /// place) is replaced by this one, so the server skips to the Sync as the client expects.
    Refused(Box<StatementRefusal>),
}

/// What to put back when the server never carries a message out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Undo {
    /// Nothing to put back.
    Nothing,
    /// The client's Parse bound this name.
    Unbind(Box<str>),
    /// The client's Close dropped this name.
    Rebind(Box<str>, Arc<Statement>),
    /// A Parse under this server-side name was sent.
    Unprepare(Arc<str>),
    /// The client's Parse bound a name and was sent under this server-side name.
    UnbindUnprepare(Box<str>, Arc<str>),
    /// The broker closed this server-side statement.
    Reprepare(Arc<str>),
}

impl Undo {
    fn apply(self, client: &mut ClientStatements, server: &mut ServerStatements) {
        match self {
            Undo::Nothing => {}
            Undo::Unbind(name) => {
                client.remove(&name);
            }
            Undo::Rebind(name, statement) => client.insert(&name, statement),
            Undo::Unprepare(server_name) => server.remove(&server_name),
            Undo::UnbindUnprepare(name, server_name) => {
                client.remove(&name);
                server.remove(&server_name);
            }
            Undo::Reprepare(server_name) => server.insert(&server_name),
        }
    }
}

/// One message sent (or, for a fake, not sent) to the server, awaiting its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// The reply it is owed.
    pub(super) reply: Reply,
    /// Who reads it.
    pub(super) answer: Answer,
    /// What to put back if the server skips it.
    pub(super) undo: Undo,
}

impl Entry {
    /// The client's own message, with nothing to undo.
    pub(super) fn client(reply: Reply) -> Entry {
        Entry {
            reply,
            answer: Answer::Client,
            undo: Undo::Nothing,
        }
    }

    /// The broker's own message.
    pub(super) fn broker(reply: Reply, undo: Undo) -> Entry {
        Entry {
            reply,
            answer: Answer::Broker,
            undo,
        }
    }
}

/// Where a server message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route<'a> {
    /// To the client.
    Client,
    /// Nowhere.
    Drop,
    /// An error of the broker's own message: kept for the broker.
    Broker,
    /// Replaced by this error.
    Refused(&'a StatementRefusal),
}

/// The replies owed by one server connection.
#[derive(Debug, Default)]
pub(super) struct Pipeline {
    entries: VecDeque<Entry>,
    /// An error made the server skip messages up to a Sync not sent yet.
    ignoring: bool,
    /// Entries with something to undo.
    undoable: usize,
    /// Of those, the ones a Sync or Query sent after them closes: the messages after that
    /// boundary are not skipped if they fail, so they must not be translated on the
    /// strength of what those entries did until it is confirmed.
    undoable_closed: usize,
}

impl Pipeline {
    /// No reply is owed.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The server skips what is sent now, up to the next Sync.
    pub(super) fn ignoring(&self) -> bool {
        self.ignoring
    }

    /// Whether the whole server message with `tag` must be read: to see where a reply
    /// ends, or because it is not the client's.
    pub(super) fn wants(&self, tag: u8) -> bool {
        self.entries.front().is_some_and(|head| {
            head.answer != Answer::Client || tag == b'E' || tag == b'G' || head.reply.ends_with(tag)
        })
    }

    /// Where a server message with `tag` goes.
    pub(super) fn route(&self, tag: u8) -> Route<'_> {
        let Some(head) = self.entries.front() else {
            return Route::Client;
        };
        match (&head.answer, tag) {
            (Answer::Client, _) | (Answer::OnDemand, b'E') => Route::Client,
            (Answer::Broker, b'E') => Route::Broker,
            (Answer::Refused(refusal), b'E') => Route::Refused(refusal),
            (Answer::Silent, _) => Route::Drop,
            _ => Route::Drop,
        }
    }

    /// Client messages still await replies (the broker's own may, too).
    pub(super) fn client_in_flight(&self) -> bool {
        (self.entries.iter()).any(|e| !matches!(e.answer, Answer::Broker | Answer::Silent))
    }

    /// What earlier messages did to the statement names is not confirmed yet, and a Sync
    /// or Query already closed their batch: a message that depends on those names must
    /// wait for the server's answer.
    pub(super) fn uncertain(&self) -> bool {
        self.undoable_closed > 0
    }

    /// Records a message sent. After an error the server skips what comes before the next
    /// Sync: the caller sends such messages as they are, without an entry.
    pub(super) fn push(&mut self, entry: Entry) {
        if entry.reply == Reply::Sync {
            self.ignoring = false;
        }
        self.undoable += usize::from(entry.undo != Undo::Nothing);
        if !entry.reply.extended() {
            self.undoable_closed = self.undoable;
        }
        self.entries.push_back(entry);
    }

    fn pop(&mut self) -> Option<Entry> {
        let entry = self.entries.pop_front()?;
        if entry.undo != Undo::Nothing {
            self.undoable -= 1;
            self.undoable_closed = self.undoable_closed.saturating_sub(1);
        }
        Some(entry)
    }

    /// Records a client message the server is spared, answered with a body-less `tag`
    /// (ParseComplete '1', CloseComplete '3') in its turn: at once when nothing is owed.
    pub(super) fn push_fake(
        &mut self,
        reply: Reply,
        tag: u8,
        undo: Undo,
        to_client: &mut BytesMut,
    ) {
        if self.entries.is_empty() {
            fake(to_client, tag);
        } else {
            self.push(Entry {
                reply,
                answer: Answer::Fake(tag),
                undo,
            });
        }
    }

    /// Accounts for a whole server message with `tag`, after it went where
    /// [`Pipeline::route`] said: ends the reply it completes, skips (and undoes) what an
    /// error made the server skip, and answers the fakes that come to the front. Returns
    /// how many Queries (or FunctionCalls) the server skipped: they get no ReadyForQuery.
    pub(super) fn advance(
        &mut self,
        tag: u8,
        body: &[u8],
        client: &mut ClientStatements,
        server: &mut ServerStatements,
        to_client: &mut BytesMut,
    ) -> u32 {
        let Some(head) = self.entries.front() else {
            return 0;
        };
        let mut skipped_queries = 0;
        match tag {
            b'E' if head.reply.extended() => {
                skipped_queries = self.skip_after_error(body, client, server);
            }
            // COPY IN: the server reads and ignores the Syncs pipelined behind the message
            // that started it.
            b'G' => {
                while self.entries.get(1).is_some_and(|e| e.reply == Reply::Sync) {
                    // Syncs carry nothing to undo: the counts stand.
                    self.entries.remove(1);
                }
            }
            // A ReadyForQuery ends whatever is owed up to the Sync or Query it answers.
            b'Z' => {
                while let Some(entry) = self.pop() {
                    if !entry.reply.extended() {
                        break;
                    }
                }
            }
            tag if head.reply.ends_with(tag) => {
                self.pop();
            }
            _ => return 0,
        }
        while let Some(Answer::Fake(tag)) = self.entries.front().map(|e| &e.answer) {
            fake(to_client, *tag);
            self.pop();
        }
        skipped_queries
    }

    /// An error in an extended batch: the server skips to the next Sync, so every entry up
    /// to it is owed nothing more and what each did is undone. Returns how many Queries
    /// were among them.
    fn skip_after_error(
        &mut self,
        body: &[u8],
        client: &mut ClientStatements,
        server: &mut ServerStatements,
    ) -> u32 {
        let mut undone = Vec::new();
        while let Some(entry) = self.entries.front() {
            if entry.reply == Reply::Sync && !undone.is_empty() {
                break;
            }
            undone.extend(self.pop());
        }
        self.ignoring = self.entries.is_empty();
        // A Parse under the broker's name that found it taken proves the statement is
        // there: keep it listed (the list heals instead of failing again).
        if sqlstate(body) == Some(DUPLICATE_PREPARED_STATEMENT) {
            if let Some(first) = undone.first_mut() {
                first.undo = match std::mem::replace(&mut first.undo, Undo::Nothing) {
                    Undo::UnbindUnprepare(name, _) => Undo::Unbind(name),
                    Undo::Unprepare(_) => Undo::Nothing,
                    other => other,
                };
            }
        }
        let mut skipped_queries = 0;
        for entry in undone.into_iter().rev() {
            skipped_queries += u32::from(entry.reply == Reply::Query);
            entry.undo.apply(client, server);
        }
        skipped_queries
    }
}

/// A body-less reply (ParseComplete '1', CloseComplete '3') the broker gives itself.
fn fake(to_client: &mut BytesMut, tag: u8) {
    to_client.put_u8(tag);
    to_client.put_u32(4);
}

#[cfg(test)]
mod tests;
