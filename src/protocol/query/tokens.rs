//! The tokenizer under the pin scan: words, `;`, `.`, and everything else as one opaque
//! token; comments, string literals, quoted identifiers and dollar quotes are skipped.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token<'a> {
    Word(&'a str),
    Semicolon,
    Dot,
    Other,
}

pub(super) struct Tokens<'a> {
    sql: &'a str,
    pos: usize,
    /// standard_conforming_strings is off: backslashes escape inside every '…'.
    backslash: bool,
}

impl<'a> Tokens<'a> {
    pub(super) fn new(sql: &'a str, backslash: bool) -> Self {
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
