//! A light SQL scanner for the one decision the broker makes about query text: does this
//! statement leave session state behind that would leak to the next client of the server
//! (and so pin the client to its server)? It skips comments, string literals, quoted
//! identifiers and dollar quotes, splits on `;`, and looks at leading keywords. It never
//! allocates.

/// Why a client is pinned to its server connection for the rest of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinReason {
    /// SET of a parameter the server does not report back.
    Set,
    /// LISTEN.
    Listen,
    /// A session-level advisory lock.
    AdvisoryLock,
    /// A temporary table, view or sequence.
    TempObject,
    /// DECLARE … WITH HOLD.
    HoldCursor,
    /// SQL PREPARE.
    Prepare,
    /// A DO block (it may change anything).
    DoBlock,
    /// A named protocol-level prepared statement.
    NamedStatement,
}

impl PinReason {
    /// A short label (for logs and metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            PinReason::Set => "set",
            PinReason::Listen => "listen",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::TempObject => "temp_object",
            PinReason::HoldCursor => "hold_cursor",
            PinReason::Prepare => "prepare",
            PinReason::DoBlock => "do_block",
            PinReason::NamedStatement => "named_statement",
        }
    }
}

mod tokens;

use tokens::{Token, Tokens};

const ADVISORY_LOCKS: [&str; 4] = [
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// What a batch of statements does that the broker must act on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// It leaves session state behind: the client must keep its server.
    pub pin: Option<PinReason>,
    /// It resets settings (RESET, DISCARD): what the broker SET on the server is unknown now.
    pub resets: bool,
    /// It may deallocate prepared statements (DEALLOCATE, DISCARD ALL).
    pub deallocates: bool,
    /// It deallocates all of them (DEALLOCATE ALL, DISCARD ALL).
    pub deallocates_all: bool,
}

/// The first words of one statement, and which of them a `.` follows.
#[derive(Default)]
struct Lead<'a> {
    words: [&'a str; 4],
    dotted: [bool; 4],
    n: usize,
}

impl<'a> Lead<'a> {
    fn push(&mut self, word: &'a str) {
        if self.n < self.words.len() {
            self.words[self.n] = word;
            self.n += 1;
        }
    }

    fn dot(&mut self) {
        if let Some(d) = self.n.checked_sub(1).and_then(|i| self.dotted.get_mut(i)) {
            *d = true;
        }
    }

    fn is(&self, i: usize, keyword: &str) -> bool {
        i < self.n && self.words[i].eq_ignore_ascii_case(keyword)
    }
}

fn any_of(word: &str, list: &[&str]) -> bool {
    list.iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// What `sql` (one or more statements) does to the session. `tracked(name)` tells whether a
/// parameter is one the broker replays (reported by the server and settable), so that a
/// SET of it needs no pin. `backslash_quotes`: standard_conforming_strings is off, so a
/// backslash escapes a quote inside '…'.
pub fn analyze(sql: &str, backslash_quotes: bool, tracked: impl Fn(&str) -> bool) -> Effects {
    let mut tokens = Tokens::new(sql, backslash_quotes);
    let mut effects = Effects::default();
    loop {
        let mut lead = Lead::default();
        let mut prev = "";
        let mut ended = true;
        for token in tokens.by_ref() {
            ended = false;
            match token {
                Token::Semicolon => break,
                Token::Dot => lead.dot(),
                Token::Word(w) => {
                    effects.pin = effects.pin.or(word_pin(prev, w, &lead));
                    lead.push(w);
                    prev = w;
                    continue;
                }
                Token::Other => {}
            }
            prev = "";
        }
        effects.pin = effects.pin.or_else(|| statement_pin(&lead, &tracked));
        effects.resets |= lead.is(0, "reset") || lead.is(0, "discard");
        let all = if lead.is(1, "prepare") { 2 } else { 1 };
        let discard_all = lead.is(0, "discard") && lead.is(1, "all");
        effects.deallocates |= lead.is(0, "deallocate") || discard_all;
        effects.deallocates_all |= (lead.is(0, "deallocate") && lead.is(all, "all")) || discard_all;
        if ended {
            return effects;
        }
    }
}

/// Pins that a word anywhere in a statement causes (function calls, INTO TEMP, WITH HOLD).
fn word_pin(prev: &str, word: &str, lead: &Lead<'_>) -> Option<PinReason> {
    if any_of(word, &ADVISORY_LOCKS) {
        return Some(PinReason::AdvisoryLock);
    }
    if word.eq_ignore_ascii_case("set_config") {
        return Some(PinReason::Set);
    }
    if word.eq_ignore_ascii_case("pg_temp")
        || (prev.eq_ignore_ascii_case("into") && any_of(word, &["temp", "temporary"]))
    {
        return Some(PinReason::TempObject);
    }
    (prev.eq_ignore_ascii_case("with")
        && word.eq_ignore_ascii_case("hold")
        && lead.is(0, "declare"))
    .then_some(PinReason::HoldCursor)
}

fn statement_pin(lead: &Lead<'_>, tracked: &impl Fn(&str) -> bool) -> Option<PinReason> {
    if lead.is(0, "listen") {
        return Some(PinReason::Listen);
    }
    if lead.is(0, "prepare") {
        return Some(PinReason::Prepare);
    }
    // A DO block can SET, LISTEN or lock anything; the scan cannot see inside it.
    if lead.is(0, "do") {
        return Some(PinReason::DoBlock);
    }
    if lead.is(0, "create") {
        let kind = (1..lead.n).find(|&i| {
            !any_of(
                lead.words[i],
                &["or", "replace", "global", "local", "unlogged"],
            )
        });
        return kind
            .filter(|&i| any_of(lead.words[i], &["temp", "temporary"]))
            .map(|_| PinReason::TempObject);
    }
    if lead.is(0, "set") {
        return set_pin(lead, tracked);
    }
    None
}

/// SET [SESSION | LOCAL] name …: LOCAL and TRANSACTION end with the transaction; a tracked
/// parameter is replayed on every server; anything else (a custom `a.b`, ROLE, …) pins.
fn set_pin(lead: &Lead<'_>, tracked: &impl Fn(&str) -> bool) -> Option<PinReason> {
    let custom = |i: usize| lead.dotted[i];
    if (lead.is(1, "local") || lead.is(1, "transaction")) && !custom(1) {
        return None;
    }
    let at = if lead.is(1, "session") && !custom(1) {
        2
    } else {
        1
    };
    if at >= lead.n || custom(at) {
        return Some(PinReason::Set);
    }
    let word = lead.words[at];
    let name = match word {
        w if w.eq_ignore_ascii_case("time") => "TimeZone",
        w if w.eq_ignore_ascii_case("names") => "client_encoding",
        w if w.eq_ignore_ascii_case("schema") => "search_path",
        w => w,
    };
    (!tracked(name)).then_some(PinReason::Set)
}

#[cfg(test)]
mod tests;
