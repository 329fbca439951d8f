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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Semicolon,
    Dot,
    Other,
}

struct Tokens<'a> {
    sql: &'a str,
    pos: usize,
    /// standard_conforming_strings is off: backslashes escape inside every '…'.
    backslash: bool,
}

impl<'a> Tokens<'a> {
    fn new(sql: &'a str, backslash: bool) -> Self {
        Tokens {
            sql,
            pos: 0,
            backslash,
        }
    }

    fn rest(&self) -> &'a [u8] {
        self.sql.as_bytes().get(self.pos..).unwrap_or_default()
    }

    /// Skips to just past the first occurrence of `end` (or to the end of the text).
    fn skip_past(&mut self, end: &[u8]) {
        let rest = self.rest();
        let found = rest.windows(end.len()).position(|w| w == end);
        self.pos += found.map_or(rest.len(), |i| i + end.len());
    }

    fn skip_block_comment(&mut self) {
        let mut depth = 0usize;
        while let Some(two) = self.rest().get(..2) {
            match two {
                b"/*" => depth += 1,
                b"*/" => depth = depth.saturating_sub(1),
                _ => {
                    self.pos += 1;
                    continue;
                }
            }
            self.pos += 2;
            if depth == 0 {
                return;
            }
        }
        self.pos = self.sql.len();
    }

    /// Skips a quoted literal opened at `pos` by `quote`; doubled quotes stay inside, and so
    /// does a backslash-escaped one when `backslash` is set (E'' strings).
    fn skip_quoted(&mut self, quote: u8, backslash: bool) {
        self.pos += 1;
        while let Some(&c) = self.rest().first() {
            self.pos += 1;
            if backslash && c == b'\\' {
                self.pos += 1;
            } else if c == quote {
                if self.rest().first() != Some(&quote) {
                    return;
                }
                self.pos += 1;
            }
        }
        self.pos = self.pos.min(self.sql.len());
    }

    /// `$tag$ … $tag$`; returns false when `$` does not open a dollar quote.
    fn skip_dollar(&mut self) -> bool {
        let rest = self.rest();
        let Some(close) = rest[1..].iter().position(|&c| c == b'$') else {
            return false;
        };
        let tag = &rest[..close + 2];
        if !tag[1..tag.len() - 1]
            .iter()
            .all(|&c| c == b'_' || c.is_ascii_alphanumeric())
        {
            return false;
        }
        self.pos += tag.len();
        self.skip_past(tag);
        true
    }

    fn word(&mut self) -> Token<'a> {
        let start = self.pos;
        let len = self
            .rest()
            .iter()
            .take_while(|&&c| c == b'_' || c == b'$' || c.is_ascii_alphanumeric() || c >= 0x80)
            .count();
        self.pos += len;
        let word = self.sql.get(start..self.pos).unwrap_or_default();
        if matches!(word, "E" | "e") && self.rest().first() == Some(&b'\'') {
            self.skip_quoted(b'\'', true);
            return Token::Other;
        }
        Token::Word(word)
    }

    fn quoted_ident(&mut self) -> Token<'a> {
        let start = self.pos + 1;
        self.skip_quoted(b'"', false);
        let end = self.pos.saturating_sub(1).max(start);
        Token::Word(self.sql.get(start..end).unwrap_or_default())
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            let rest = self.rest();
            let &c = rest.first()?;
            match (c, rest.get(1).copied()) {
                (c, _) if c.is_ascii_whitespace() => self.pos += 1,
                (b'-', Some(b'-')) => self.skip_past(b"\n"),
                (b'/', Some(b'*')) => self.skip_block_comment(),
                (b'\'', _) => {
                    self.skip_quoted(b'\'', self.backslash);
                    return Some(Token::Other);
                }
                (b'.', _) => {
                    self.pos += 1;
                    return Some(Token::Dot);
                }
                (b'"', _) => return Some(self.quoted_ident()),
                (b'$', _) if self.skip_dollar() => return Some(Token::Other),
                (b';', _) => {
                    self.pos += 1;
                    return Some(Token::Semicolon);
                }
                (c, _) if c == b'_' || c.is_ascii_alphabetic() || c >= 0x80 => {
                    return Some(self.word())
                }
                _ => {
                    self.pos += 1;
                    return Some(Token::Other);
                }
            }
        }
    }
}

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
        if ended {
            return effects;
        }
    }
}

/// Does `sql` leave session state behind? [`analyze`] without the rest.
pub fn pin_reason(sql: &str, tracked: impl Fn(&str) -> bool) -> Option<PinReason> {
    analyze(sql, false, tracked).pin
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
mod tests {
    use super::*;

    fn tracked(name: &str) -> bool {
        [
            "application_name",
            "TimeZone",
            "DateStyle",
            "client_encoding",
        ]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(name))
    }

    fn pin(sql: &str) -> Option<PinReason> {
        pin_reason(sql, tracked)
    }

    #[test]
    fn plain_statements_do_not_pin() {
        for sql in [
            "select 1",
            "BEGIN; insert into t values (1); COMMIT",
            "",
            ";;",
            "SET LOCAL work_mem = '4MB'",
            "set transaction isolation level serializable",
            "SET application_name = 'x'",
            "set time zone 'UTC'",
            "SET SESSION DateStyle TO ISO",
            "select 'LISTEN x'",
            "select 1 -- ; listen x",
            "/* listen x; */ select 1",
            "select $$; LISTEN a$$",
            "select $f$ ; prepare p as select 1 $f$",
            "select E'\\'; listen x'",
            "select pg_advisory_xact_lock(1)",
            "create table t (x int)",
            "declare c cursor for select 1",
            "reset all",
            "unlisten *",
        ] {
            assert_eq!(pin(sql), None, "{sql}");
        }
    }

    #[test]
    fn session_state_pins() {
        let cases = [
            ("SET work_mem = '8MB'", PinReason::Set),
            ("set session statement_timeout to 5", PinReason::Set),
            ("SET ROLE other", PinReason::Set),
            ("SET search_path TO x", PinReason::Set),
            ("SET myapp.tenant = 7", PinReason::Set),
            ("LISTEN chan", PinReason::Listen),
            ("select 1; listen chan", PinReason::Listen),
            ("SELECT pg_advisory_lock(42)", PinReason::AdvisoryLock),
            (
                "select PG_TRY_ADVISORY_LOCK_SHARED(1,2)",
                PinReason::AdvisoryLock,
            ),
            ("CREATE TEMP TABLE t (x int)", PinReason::TempObject),
            (
                "create global temporary table t (x int)",
                PinReason::TempObject,
            ),
            (
                "create or replace temp view v as select 1",
                PinReason::TempObject,
            ),
            (
                "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
                PinReason::HoldCursor,
            ),
            ("PREPARE p AS SELECT 1", PinReason::Prepare),
            (
                "  /* hi */ -- x\n prepare p as select 1",
                PinReason::Prepare,
            ),
            ("SET \"work_mem\" = 1", PinReason::Set),
        ];
        for (sql, want) in cases {
            assert_eq!(pin(sql), Some(want), "{sql}");
        }
    }

    #[test]
    fn state_set_through_functions_and_temp_schemas_pins() {
        let cases = [
            (
                "SELECT set_config('app.tenant', '42', false)",
                PinReason::Set,
            ),
            ("SET local.tenant = 1", PinReason::Set),
            ("set transaction.x = 1", PinReason::Set),
            ("SET SESSION my.x TO 1", PinReason::Set),
            ("SELECT 1 INTO TEMP t", PinReason::TempObject),
            ("CREATE TABLE pg_temp.t (x int)", PinReason::TempObject),
            ("DO $$BEGIN PERFORM 1; END$$", PinReason::DoBlock),
        ];
        for (sql, want) in cases {
            assert_eq!(pin(sql), Some(want), "{sql}");
        }
        assert_eq!(pin("SET LOCAL my.x = 1"), None);
    }

    #[test]
    fn reset_and_discard_are_reported() {
        for sql in [
            "RESET statement_timeout",
            "reset all",
            "DISCARD ALL",
            "select 1; discard plans",
        ] {
            assert!(analyze(sql, false, tracked).resets, "{sql}");
        }
        assert!(!analyze("select 'reset'", false, tracked).resets);
    }

    #[test]
    fn backslash_quotes_when_standard_strings_are_off() {
        let sql = r"SELECT 'it\'s'; SET work_mem = '1GB'";
        assert_eq!(analyze(sql, true, tracked).pin, Some(PinReason::Set));
        let sql = r"SELECT 'a\'; SET work_mem = '1GB'";
        assert_eq!(analyze(sql, false, tracked).pin, Some(PinReason::Set));
    }

    #[test]
    fn unterminated_input_never_panics() {
        for sql in [
            "'abc",
            "\"abc",
            "/* abc",
            "$a$ abc",
            "$",
            "e'\\",
            "--",
            "select é; set ü = 1",
            "$1",
        ] {
            let _ = pin(sql);
        }
    }
}
