//! A client's named prepared statements on the way to the server (transaction pooling):
//! names are translated to the statements' server-side names; a statement is prepared on
//! whichever server connection serves the client when it is first used there; a Parse of a
//! statement the server has already is answered by the broker; each server keeps a bounded
//! LRU of statements and closes the ones it evicts.

use std::sync::Arc;

use bytes::BytesMut;

use super::conn::ServerConn;
use super::pipeline::{Answer, Entry, Refusal, Reply, Undo};
use super::statements::{ClientStatements, Statement};
use crate::error::FrameError;
use crate::protocol::query::PinReason;
use crate::protocol::{statement, write, HEADER_LEN};

/// A statement name no statement has: a Parse that reuses a client's name is sent as a
/// Describe of it, so that it fails on the server too (the error is replaced by 42P05).
const NO_SUCH_STATEMENT: &str = "pgbroker_no_such_statement";

/// SQLSTATE of a statement name used twice (duplicate_prepared_statement).
const DUPLICATE: &str = "42P05";

/// SQLSTATE of a client over the broker's bound on its statements (program_limit_exceeded).
const TOO_MANY: &str = "54000";

/// What happened to prepared statements while frames were sent, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatementEvents {
    /// Statements prepared on the server (a client's Parse, or on demand).
    pub prepared: u64,
    /// Client Parses answered by the broker: the server had the statement.
    pub reused: u64,
    /// Statements closed to keep the server's LRU within its bound.
    pub evicted: u64,
}

/// One client's side of the translation.
#[derive(Debug)]
pub struct Translation<'a> {
    /// The client's statement names.
    pub client: &'a mut ClientStatements,
    /// pool.prepared_statements_per_server.
    pub capacity: usize,
    /// Frames for the server.
    pub to_server: &'a mut BytesMut,
    /// Replies the broker gives the client itself.
    pub to_client: &'a mut BytesMut,
    /// Counts for metrics.
    pub events: &'a mut StatementEvents,
}

impl ServerConn {
    /// Sends a whole client frame with its statement names translated. `pin`: what the
    /// frame's statement text (a Query's, a Parse's) leaves on a session. Returns the pin to
    /// take now: a named Parse's is kept with its statement and taken by each Bind of it.
    pub fn send_translated(
        &mut self,
        frame: &[u8],
        pin: Option<PinReason>,
        t: &mut Translation<'_>,
    ) -> Result<Option<PinReason>, FrameError> {
        let tag = frame[0];
        let body = frame.get(HEADER_LEN..).unwrap_or_default();
        // After an error the server skips everything up to the next Sync.
        if self.pipeline.ignoring() && tag != b'S' {
            self.pass(frame, t);
            return Ok(pin);
        }
        match tag {
            b'P' => {
                let parse = statement::parse(body)?;
                if parse.name.is_empty() {
                    self.pass(frame, t);
                    return Ok(pin);
                }
                self.named_parse(parse, pin, t);
            }
            b'B' => {
                let bind = statement::bind(body)?;
                let Some(s) = named(t.client, bind.statement) else {
                    self.pass(frame, t);
                    return Ok(None);
                };
                self.ensure(&s, t);
                write::bind(t.to_server, bind.portal, &s.server_name, bind.rest);
                self.rewritten(b'B');
                return Ok(s.pin);
            }
            b'D' | b'C' => {
                let target = statement::target(body)?;
                let found = if target.kind == b'S' {
                    named(t.client, target.name)
                } else {
                    None
                };
                let Some(s) = found else {
                    self.pass(frame, t);
                    return Ok(None);
                };
                if tag == b'D' {
                    self.ensure(&s, t);
                    write::describe(t.to_server, b'S', &s.server_name);
                    self.rewritten(b'D');
                } else {
                    // The statement stays prepared on the server for other clients.
                    t.client.remove(target.name);
                    self.note_sent(b'C', frame);
                    let undo = Undo::Rebind(target.name.into(), s);
                    self.pipeline
                        .push_fake(Reply::Close, b'3', undo, t.to_client);
                }
            }
            _ => {
                self.pass(frame, t);
                return Ok(pin);
            }
        }
        Ok(None)
    }

    /// The client's statement may deallocate prepared statements (DEALLOCATE, DISCARD
    /// ALL): the broker closes its own here first, so that what is prepared stays known
    /// whether or not that statement runs.
    pub fn close_all(&mut self, to_server: &mut BytesMut) {
        if self.pipeline.ignoring() || self.prepared.is_empty() {
            return;
        }
        let in_batch = self.position.unsynced;
        for name in self.prepared.take_all() {
            write::close(to_server, b'S', &name);
            self.position.sent(b'C');
            self.pipeline
                .push(Entry::broker(Reply::Close, Undo::Reprepare(name)));
        }
        if !in_batch {
            write::sync(to_server);
            self.position.sent(b'S');
            self.pipeline
                .push(Entry::broker(Reply::Sync, Undo::Nothing));
        }
    }

    /// Statements prepared here under the broker's names.
    pub fn prepared_statements(&self) -> usize {
        self.prepared.len()
    }

    fn pass(&mut self, frame: &[u8], t: &mut Translation<'_>) {
        self.sent(frame[0], frame);
        t.to_server.extend_from_slice(frame);
    }

    fn rewritten(&mut self, tag: u8) {
        self.position.sent(tag);
        self.pipeline
            .push(Entry::client(Reply::of(tag).unwrap_or(Reply::Query)));
    }

    fn named_parse(
        &mut self,
        parse: statement::Parse<'_>,
        pin: Option<PinReason>,
        t: &mut Translation<'_>,
    ) {
        if t.client.get(parse.name).is_some() {
            let message = format!("prepared statement \"{}\" already exists", parse.name);
            return self.refuse(DUPLICATE, message, t);
        }
        if !t.client.has_room(parse.name, parse.definition) {
            let message = format!(
                "pgbroker: a client may hold at most {} named prepared statements of {} MB \
                 together; close some first",
                ClientStatements::MAX_COUNT,
                ClientStatements::MAX_BYTES >> 20
            );
            return self.refuse(TOO_MANY, message, t);
        }
        let s = Statement::new(parse.definition, pin);
        t.client.insert(parse.name, Arc::clone(&s));
        self.position.sent(b'P');
        if self.prepared.touch(&s.server_name) {
            t.events.reused += 1;
            let undo = Undo::Unbind(parse.name.into());
            self.pipeline
                .push_fake(Reply::Parse, b'1', undo, t.to_client);
        } else {
            self.prepare(&s, t);
            self.pipeline.push(Entry {
                reply: Reply::Parse,
                answer: Answer::Client,
                undo: Undo::UnbindUnprepare(parse.name.into(), Arc::clone(&s.server_name)),
            });
        }
    }

    /// Refuses a client Parse with an error in its place in the pipeline: a Describe of a
    /// statement that does not exist goes to the server instead, so that the server fails
    /// too and skips to the Sync, and its error is replaced by this one.
    fn refuse(&mut self, code: &'static str, message: String, t: &mut Translation<'_>) {
        write::describe(t.to_server, b'S', NO_SUCH_STATEMENT);
        self.position.sent(b'D');
        self.pipeline.push(Entry {
            reply: Reply::Describe,
            answer: Answer::Refused(Box::new(Refusal { code, message })),
            undo: Undo::Nothing,
        });
    }

    /// Prepares `s` before a client's message that uses it, unless it is here already.
    fn ensure(&mut self, s: &Statement, t: &mut Translation<'_>) {
        if self.prepared.touch(&s.server_name) {
            return;
        }
        self.prepare(s, t);
        let undo = Undo::Unprepare(Arc::clone(&s.server_name));
        self.pipeline.push(Entry {
            reply: Reply::Parse,
            answer: Answer::OnDemand,
            undo,
        });
    }

    /// Writes a Parse of `s` under its server-side name (the caller records its entry),
    /// after a Close of the statement it evicts.
    fn prepare(&mut self, s: &Statement, t: &mut Translation<'_>) {
        if let Some(old) = self.prepared.insert(&s.server_name, t.capacity) {
            write::close(t.to_server, b'S', &old);
            self.position.sent(b'C');
            self.pipeline
                .push(Entry::broker(Reply::Close, Undo::Reprepare(old)));
            t.events.evicted += 1;
        }
        write::parse_definition(t.to_server, &s.server_name, &s.definition);
        self.position.sent(b'P');
        t.events.prepared += 1;
    }
}

/// The statement a client's non-empty name stands for.
fn named(client: &ClientStatements, name: &str) -> Option<Arc<Statement>> {
    if name.is_empty() {
        return None;
    }
    client.get(name).cloned()
}
