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
            PinReason::NamedStatement => "named_statement",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Semicolon,
    Other,
}

struct Tokens<'a> {
    sql: &'a str,
    pos: usize,
}

impl<'a> Tokens<'a> {
    fn new(sql: &'a str) -> Self {
        Tokens { sql, pos: 0 }
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
                    self.skip_quoted(b'\'', false);
                    return Some(Token::Other);
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

/// Does `sql` (one or more statements) leave session state behind? `tracked(name)` tells
/// whether a parameter is one the broker tracks and replays (reported by the server and
/// settable), so that a SET of it needs no pin.
pub fn pin_reason(sql: &str, tracked: impl Fn(&str) -> bool) -> Option<PinReason> {
    let mut tokens = Tokens::new(sql);
    let mut reason = None;
    loop {
        let mut words = [""; 4];
        let mut n = 0;
        let mut ended = true;
        let mut with = false;
        for token in tokens.by_ref() {
            ended = false;
            match token {
                Token::Semicolon => break,
                Token::Word(w) => {
                    if ADVISORY_LOCKS.iter().any(|l| w.eq_ignore_ascii_case(l)) {
                        reason = reason.or(Some(PinReason::AdvisoryLock));
                    }
                    if with
                        && w.eq_ignore_ascii_case("hold")
                        && words[0].eq_ignore_ascii_case("declare")
                    {
                        reason = reason.or(Some(PinReason::HoldCursor));
                    }
                    with = w.eq_ignore_ascii_case("with");
                    if n < words.len() {
                        words[n] = w;
                        n += 1;
                    }
                }
                Token::Other => with = false,
            }
        }
        reason = reason.or_else(|| statement_pin(&words[..n], &tracked));
        if ended {
            return reason;
        }
    }
}

fn statement_pin(words: &[&str], tracked: &impl Fn(&str) -> bool) -> Option<PinReason> {
    let is = |i: usize, kw: &str| words.get(i).is_some_and(|w| w.eq_ignore_ascii_case(kw));
    if is(0, "listen") {
        return Some(PinReason::Listen);
    }
    if is(0, "prepare") {
        return Some(PinReason::Prepare);
    }
    if is(0, "create") {
        let temp = words[1..].iter().find(|w| {
            !["or", "replace", "global", "local", "unlogged"]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k))
        });
        return temp
            .filter(|w| w.eq_ignore_ascii_case("temp") || w.eq_ignore_ascii_case("temporary"))
            .map(|_| PinReason::TempObject);
    }
    if is(0, "set") {
        return set_pin(&words[1..], tracked);
    }
    None
}

/// SET [SESSION | LOCAL] name …: LOCAL and TRANSACTION end with the transaction; a tracked
/// parameter is replayed on every server; anything else pins.
fn set_pin(words: &[&str], tracked: &impl Fn(&str) -> bool) -> Option<PinReason> {
    let is = |i: usize, kw: &str| words.get(i).is_some_and(|w| w.eq_ignore_ascii_case(kw));
    if is(0, "local") || is(0, "transaction") {
        return None;
    }
    let words = if is(0, "session") { &words[1..] } else { words };
    let name = match words.first().copied() {
        Some(w) if w.eq_ignore_ascii_case("time") => "TimeZone",
        Some(w) if w.eq_ignore_ascii_case("names") => "client_encoding",
        Some(w) if w.eq_ignore_ascii_case("schema") => "search_path",
        Some(w) => w,
        None => return Some(PinReason::Set),
    };
    // `SET a.b = …` (a custom parameter) reaches here as "a": never tracked, so it pins.
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
