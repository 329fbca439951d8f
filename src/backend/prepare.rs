//! A client's named prepared statements on the way to the server (transaction pooling):
//! names are translated to the statements' server-side names; a statement is prepared on
//! whichever server connection serves the client when it is first used there; a Parse of a
//! statement the server has already is answered by the broker; each server keeps a bounded
//! LRU of statements and closes the ones it evicts.

use std::sync::Arc;

use bytes::BytesMut;

use super::conn::ServerConn;
use super::pipeline::{Answer, Entry, Reply, Undo};
use super::statements::{ClientStatements, Statement};
use super::StatementRefusal;
use crate::protocol::query::Effects;
use crate::protocol::statement::{self, SERVER_PREFIX};
use crate::protocol::FrameError;
use crate::protocol::{write, HEADER_LEN};

/// A statement name no statement has: a Parse that reuses a client's name is sent as a
/// Describe of it, so that it fails on the server too (the error is replaced by 42P05).
const NO_SUCH_STATEMENT: &str = "pgbroker_no_such_statement";

/// The statement a client's `DEALLOCATE name` is pointed at instead of the one the broker
/// shares between clients.
const STAND_IN: &str = "pgbroker_deallocate";

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
    /// Sends a whole client frame with its statement names translated. `effects`: what
    /// the frame's statement text (a Query's, a Parse's) does to a session. Returns the
    /// effects to act on now: a named Parse's are kept with its statement, for each Bind.
    pub fn send_translated(
        &mut self,
        frame: &[u8],
        effects: Effects,
        t: &mut Translation<'_>,
    ) -> Result<Effects, FrameError> {
        let tag = frame[0];
        // After an error the server skips everything up to the next Sync.
        if self.pipeline.ignoring() && tag != b'S' {
            self.pass(frame, t);
            return Ok(effects);
        }
        match tag {
            b'P' => self.parse(frame, effects, t),
            b'Q' => Ok(self.query(frame, effects, t)),
            b'B' => self.bind(frame, t),
            b'D' | b'C' => self.describe_or_close(frame, t),
            _ => {
                self.pass(frame, t);
                Ok(effects)
            }
        }
    }

    /// A Parse: a named one is the client's to keep; the unnamed one passes through.
    fn parse(
        &mut self,
        frame: &[u8],
        effects: Effects,
        t: &mut Translation<'_>,
    ) -> Result<Effects, FrameError> {
        let parse = statement::parse(frame.get(HEADER_LEN..).unwrap_or_default())?;
        if !parse.name.is_empty() {
            self.named_parse(parse, effects, t);
            return Ok(Effects::default());
        }
        self.deallocations(effects, t);
        self.pass(frame, t);
        Ok(effects)
    }

    /// A simple Query: `DEALLOCATE name` of a client's statement is pointed at a stand-in.
    fn query(&mut self, frame: &[u8], effects: Effects, t: &mut Translation<'_>) -> Effects {
        if self.deallocate_one(frame.get(HEADER_LEN..).unwrap_or_default(), t) {
            return Effects::default();
        }
        self.deallocations(effects, t);
        self.pass(frame, t);
        effects
    }

    /// A Bind of a client's named statement goes to its server-side name, prepared first
    /// where missing; its statement's effects are the ones to act on.
    fn bind(&mut self, frame: &[u8], t: &mut Translation<'_>) -> Result<Effects, FrameError> {
        let bind = statement::bind(frame.get(HEADER_LEN..).unwrap_or_default())?;
        let Some(s) = named(t.client, bind.statement) else {
            self.pass(frame, t);
            return Ok(Effects::default());
        };
        self.deallocations(s.effects, t);
        self.ensure(&s, t);
        write::bind(t.to_server, bind.portal, &s.server_name, bind.rest);
        self.rewritten(b'B');
        if s.effects.deallocates_all {
            // It deallocates itself too when it runs.
            self.prepared.remove(&s.server_name);
        }
        Ok(s.effects)
    }

    /// A Describe or Close of a statement: a client's is translated (Describe) or answered
    /// by the broker (Close: the statement stays prepared on the server for other clients).
    fn describe_or_close(
        &mut self,
        frame: &[u8],
        t: &mut Translation<'_>,
    ) -> Result<Effects, FrameError> {
        let tag = frame[0];
        let target = statement::target(frame.get(HEADER_LEN..).unwrap_or_default())?;
        let s = if target.kind == b'S' {
            named(t.client, target.name)
        } else {
            None
        };
        match (tag, s) {
            (b'D', Some(s)) => {
                self.ensure(&s, t);
                write::describe(t.to_server, b'S', &s.server_name);
                self.rewritten(b'D');
            }
            (_, Some(s)) => {
                t.client.remove(target.name);
                self.spare(b'C', b'3', Undo::Rebind(target.name.into(), s), t);
            }
            // The broker's statements are not the client's to close.
            (b'C', None) if target.kind == b'S' && target.name.starts_with(SERVER_PREFIX) => {
                self.spare(b'C', b'3', Undo::Nothing, t);
            }
            _ => self.pass(frame, t),
        }
        Ok(Effects::default())
    }

    /// What the client's names and this server's list must lose before a statement that
    /// deallocates (DEALLOCATE, DISCARD ALL) is sent.
    fn deallocations(&mut self, effects: Effects, t: &mut Translation<'_>) {
        // DISCARD ALL fails inside a transaction block, and everything fails in a failed
        // one: the names go only when the statement runs on its own.
        let runs = self.client_at_rest();
        if effects.deallocates_all && runs {
            t.client.clear();
        }
        if effects.deallocates {
            self.close_all(t.to_server);
        }
    }

    /// A Query that is only `DEALLOCATE name` of a client's statement (psycopg sends it
    /// past its cache size) unbinds the name and leaves the server's statement to its
    /// other users: what reaches the server is a DEALLOCATE of a statement prepared for it,
    /// so the client gets the reply (or the error, in a failed transaction) Postgres would
    /// give. False when the Query is anything else.
    fn deallocate_one(&mut self, body: &[u8], t: &mut Translation<'_>) -> bool {
        let text = body.split(|&b| b == 0).next().unwrap_or_default();
        let Some(name) = std::str::from_utf8(text)
            .ok()
            .and_then(statement::deallocated_name)
        else {
            return false;
        };
        let held = t.client.get(&name).is_some();
        // (In a failed block it fails as it is, and the name stays.)
        let failed_block = self.position.status == b'E';
        if !(held || name.starts_with(SERVER_PREFIX)) || self.position.unsynced || failed_block {
            return false;
        }
        t.client.remove(&name);
        write::parse(t.to_server, STAND_IN, "SELECT 1");
        write::sync(t.to_server);
        for tag in *b"PS" {
            self.position.sent(tag);
            let reply = Reply::of(tag).unwrap_or(Reply::Sync);
            self.pipeline.push(Entry {
                reply,
                answer: Answer::Silent,
                undo: Undo::Nothing,
            });
        }
        write::query(t.to_server, &format!("DEALLOCATE {STAND_IN}"));
        self.rewritten(b'Q');
        true
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
            self.close(name, to_server);
        }
        if !in_batch {
            write::sync(to_server);
            self.position.sent(b'S');
            self.pipeline
                .push(Entry::broker(Reply::Sync, Undo::Nothing));
        }
    }

    /// What earlier batches did to statement names is not confirmed yet (see
    /// [`ServerConn::send_translated`]'s callers).
    pub fn statements_uncertain(&self) -> bool {
        self.pipeline.uncertain()
    }

    /// No client message awaits its reply, and no transaction block is open: a statement
    /// sent now runs on its own (the broker's own statements in front change neither).
    pub fn client_at_rest(&self) -> bool {
        self.position.status == b'I' && !self.pipeline.client_in_flight()
    }

    /// Client messages still await their replies.
    pub fn client_in_flight(&self) -> bool {
        self.pipeline.client_in_flight()
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

    /// A client message the server is spared, answered with `answer` in its turn.
    fn spare(&mut self, tag: u8, answer: u8, undo: Undo, t: &mut Translation<'_>) {
        self.position.sent(tag);
        let reply = Reply::of(tag).unwrap_or(Reply::Parse);
        self.pipeline.push_fake(reply, answer, undo, t.to_client);
    }

    fn named_parse(
        &mut self,
        parse: statement::Parse<'_>,
        effects: Effects,
        t: &mut Translation<'_>,
    ) {
        let refused = self.position.status == b'E' && !ends_transaction(parse.definition);
        if t.client.get(parse.name).is_some() {
            // A failed block refuses the Parse before the name is looked at.
            if refused {
                return self.refuse(StatementRefusal::InFailedTransaction, t);
            }
            let name = parse.name.into();
            return self.refuse(StatementRefusal::Duplicate { name }, t);
        }
        if !t.client.has_room(parse.name, parse.definition) {
            let refusal = StatementRefusal::TooMany {
                count: ClientStatements::MAX_COUNT,
                megabytes: ClientStatements::MAX_BYTES >> 20,
            };
            return self.refuse(refusal, t);
        }
        let s = Statement::new(parse.definition, effects);
        t.client.insert(parse.name, Arc::clone(&s));
        let listed = self.prepared.touch(&s.server_name);
        // In a failed transaction block Postgres refuses most Parses (25P02): the server is
        // asked, so the client gets its answer (the statement stays on it either way).
        if listed && !refused {
            t.events.reused += 1;
            self.spare(b'P', b'1', Undo::Unbind(parse.name.into()), t);
        } else if listed {
            write::parse_definition(t.to_server, &s.server_name, &s.definition);
            self.position.sent(b'P');
            self.pipeline.push(Entry {
                reply: Reply::Parse,
                answer: Answer::Client,
                undo: Undo::Unbind(parse.name.into()),
            });
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
    fn refuse(&mut self, refusal: StatementRefusal, t: &mut Translation<'_>) {
        write::describe(t.to_server, b'S', NO_SUCH_STATEMENT);
        self.position.sent(b'D');
        self.pipeline.push(Entry {
            reply: Reply::Describe,
            answer: Answer::Refused(Box::new(refusal)),
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
    /// after Closes of the statements that makes the list evict.
    fn prepare(&mut self, s: &Statement, t: &mut Translation<'_>) {
        self.prepared.insert(&s.server_name);
        while let Some(old) = self.prepared.evict(t.capacity) {
            self.close(old, t.to_server);
            t.events.evicted += 1;
        }
        write::parse_definition(t.to_server, &s.server_name, &s.definition);
        self.position.sent(b'P');
        t.events.prepared += 1;
    }

    /// Closes one of the broker's statements (taken off the list already).
    fn close(&mut self, name: Arc<str>, to_server: &mut BytesMut) {
        write::close(to_server, b'S', &name);
        self.position.sent(b'C');
        self.pipeline
            .push(Entry::broker(Reply::Close, Undo::Reprepare(name)));
    }
}

/// Whether a statement's text starts with a command a failed transaction block still
/// accepts (COMMIT, ROLLBACK and their spellings).
fn ends_transaction(definition: &[u8]) -> bool {
    let text = definition.split(|&b| b == 0).next().unwrap_or_default();
    let word: Vec<u8> = (text.iter())
        .skip_while(|b| b.is_ascii_whitespace() || **b == b'(')
        .take_while(|b| b.is_ascii_alphabetic())
        .map(u8::to_ascii_lowercase)
        .collect();
    [&b"commit"[..], b"rollback", b"end", b"abort", b"prepare"].contains(&word.as_slice())
}

/// The statement a client's non-empty name stands for.
fn named(client: &ClientStatements, name: &str) -> Option<Arc<Statement>> {
    if name.is_empty() {
        return None;
    }
    client.get(name).cloned()
}
