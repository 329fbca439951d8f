//! Seeded scenarios for the randomized run: raw extended- and simple-protocol messages of one
//! or two clients, over named and unnamed statements, SQL PREPARE, DEALLOCATE, DISCARD,
//! transaction blocks, savepoints and session settings.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::raw::{bind, close_statement, describe_statement, execute, message, parse, query, sync};

pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What the default run leaves out of its scenarios: each a divergence from Postgres that a
/// part of issue 12 closes. `fuzz_with_known_divergences` (ignored) puts them all back.
pub const KNOWN: &[&str] = &[
    "issue 12 part 1: the unnamed statement used after the Sync that ends its Parse",
    "issue 12 part 4: DEALLOCATE ALL / DEALLOCATE a / DISCARD ALL as Parse texts and Queries",
    "issue 12 part 4: a reused name with bad SQL answered 42P05 where Postgres says 42601 \
     (tolerated as equal)",
    "issue 12 part 4: server error texts name the broker's statement (\"pgbroker_…\") where \
     Postgres names the client's (tolerated: only the SQLSTATE is compared)",
    "issue 12 parts 2, 3: SET / PREPARE pin, and a pinned client holds the one server another \
     client waits for (53300): used only in one-client scenarios",
];

/// Statement texts a Parse may carry, with their parameter counts; from index 5 on, the
/// ones of [`KNOWN`] part 4.
const TEXTS: &[(&str, usize)] = &[
    ("SELECT 1", 0),
    ("SELECT $1::int", 1),
    ("SELECT 1/$1::int", 1),
    ("SELEC 1", 0),
    ("SELECT 2", 0),
    ("DEALLOCATE ALL", 0),
    ("DEALLOCATE a", 0),
    ("DISCARD ALL", 0),
    ("BEGIN", 0),
    ("COMMIT", 0),
];

/// Simple queries: the first [`PLAIN`] change no session state; then the ones that pin
/// today; then the ones of [`KNOWN`] part 4.
const QUERIES: &[&str] = &[
    "SELECT 1",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SELECT 1/0",
    "SAVEPOINT s",
    "ROLLBACK TO SAVEPOINT s",
    "SET LOCAL search_path = pg_catalog",
    "SHOW search_path",
    "SET TimeZone = 'UTC'",
    "SHOW TimeZone",
    "RESET TimeZone",
    "SET search_path = pg_catalog, public",
    "RESET search_path",
    "PREPARE p AS SELECT 3",
    "EXECUTE p",
    "DEALLOCATE p",
    "DEALLOCATE a",
    "DEALLOCATE ALL",
    "DISCARD ALL",
    "DEALLOCATE b",
];
const PLAIN: usize = 12;
const PINNING: usize = 17;

#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    Parse(&'static str, usize, bool),
    Bind(&'static str, Vec<&'static str>),
    DescribeS(&'static str),
    DescribeP,
    Execute,
    CloseS(&'static str),
    Sync,
    Flush,
    Query(&'static str),
}

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Parse(name, text, typed) => {
                let (sql, params) = TEXTS[*text];
                let types = vec![23; if *typed { params } else { 0 }];
                parse(name, sql, &types)
            }
            Msg::Bind(statement, params) => bind(statement, params),
            Msg::DescribeS(name) => describe_statement(name),
            Msg::DescribeP => message(b'D', b"P\0"),
            Msg::Execute => execute(),
            Msg::CloseS(name) => close_statement(name),
            Msg::Sync => sync(),
            Msg::Flush => message(b'H', &[]),
            Msg::Query(sql) => query(sql),
        }
    }

    fn show(&self) -> String {
        match self {
            Msg::Parse(name, text, typed) => {
                let t = if *typed && TEXTS[*text].1 > 0 {
                    ",int"
                } else {
                    ""
                };
                format!("P({name:?},{:?}{t})", TEXTS[*text].0)
            }
            Msg::Bind(name, params) => format!("B({name:?},{params:?})"),
            Msg::DescribeS(name) => format!("DS({name:?})"),
            Msg::DescribeP => "DP".into(),
            Msg::Execute => "E".into(),
            Msg::CloseS(name) => format!("CS({name:?})"),
            Msg::Sync => "S".into(),
            Msg::Flush => "H".into(),
            Msg::Query(sql) => format!("Q({sql:?})"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Step {
    pub client: usize,
    pub msgs: Vec<Msg>,
}

impl Step {
    /// ReadyForQuery messages owed; `risky` when a Query follows unsynced extended
    /// messages (Postgres skips it after an error: one fewer).
    pub fn owed(&self) -> (usize, bool) {
        let (mut n, mut open, mut risky) = (0, false, false);
        for m in &self.msgs {
            match m {
                Msg::Sync => {
                    n += 1;
                    open = false;
                }
                Msg::Query(_) => {
                    n += 1;
                    risky |= open;
                }
                Msg::Flush => {}
                _ => open = true,
            }
        }
        (n, risky)
    }

    /// A step ends with a Sync or a Query, so that the server is not left mid-batch. Unless
    /// `known` (see [`KNOWN`] part 1), the unnamed statement is used only before the Sync or
    /// Query that ends the segment of its Parse.
    pub fn well_formed(&self, known: bool) -> bool {
        let mut unnamed = false;
        for m in &self.msgs {
            match m {
                Msg::Parse("", ..) => unnamed = true,
                Msg::Sync | Msg::Query(_) => unnamed = false,
                Msg::Bind("", _) | Msg::DescribeS("") if !unnamed && !known => return false,
                _ => {}
            }
        }
        matches!(self.msgs.last(), Some(Msg::Sync | Msg::Query(_)))
    }
}

pub fn show(steps: &[Step]) -> String {
    let mut s = String::new();
    for step in steps {
        let msgs: Vec<String> = step.msgs.iter().map(Msg::show).collect();
        let _ = writeln!(s, "  [{}] {}", step.client, msgs.join(" "));
    }
    s
}

/// Generates scenarios; `known`: with the divergences of [`KNOWN`].
pub struct Gen {
    pub rng: Rng,
    pub known: bool,
}

/// One scenario being generated, for one client at a time.
#[derive(Default)]
struct Draft {
    steps: Vec<Step>,
    /// Generated steps left out as ill-formed.
    dropped: usize,
    began: [bool; 2],
    /// Parameter counts of the names, as far as the generator knows.
    params: [HashMap<&'static str, usize>; 2],
    /// An unnamed Parse was sent in the current segment.
    unnamed: bool,
}

impl Gen {
    /// One scenario: 1 or 2 clients, a few steps; and how many generated steps were left
    /// out as ill-formed.
    pub fn scenario(&mut self) -> (usize, Vec<Step>, usize) {
        let clients = 1 + usize::from(self.rng.chance(40));
        let mut draft = Draft::default();
        let mut last = 0;
        for _ in 0..2 + self.rng.below(6) {
            let c = self.rng.below(clients);
            if c != last && draft.began[last] {
                // One server in the pool: a block left open would make the other client wait.
                let msgs = vec![Msg::Query("ROLLBACK")];
                draft.steps.push(Step { client: last, msgs });
                draft.began[last] = false;
            }
            last = c;
            draft.unnamed = false;
            let mut msgs = Vec::new();
            if self.rng.chance(25) {
                for _ in 0..1 + self.rng.below(3) {
                    msgs.push(self.query(clients, &mut draft.began[c]));
                }
            } else {
                for _ in 0..1 + self.rng.below(7) {
                    self.extended(clients, &mut msgs, &mut draft, c);
                }
                msgs.push(Msg::Sync);
            }
            let step = Step { client: c, msgs };
            if step.well_formed(self.known) {
                draft.steps.push(step);
            } else {
                draft.dropped += 1;
            }
        }
        (clients, draft.steps, draft.dropped)
    }

    /// A simple query: with two clients none that pins (see [`KNOWN`]).
    fn query(&mut self, clients: usize, began: &mut bool) -> Msg {
        let upto = match (self.known, clients) {
            (true, _) => QUERIES.len(),
            (false, 1) => PINNING,
            (false, _) => PLAIN,
        };
        let q = *self.rng.pick(&QUERIES[..upto]);
        *began |= q == "BEGIN";
        Msg::Query(q)
    }

    fn parse(&mut self, name: &'static str, msgs: &mut Vec<Msg>, draft: &mut Draft, c: usize) {
        draft.unnamed |= name.is_empty();
        let text = if self.rng.chance(8) && self.known {
            5 + self.rng.below(3)
        } else if self.rng.chance(6) {
            8 + self.rng.below(2)
        } else {
            self.rng.below(5)
        };
        draft.began[c] |= text == 8;
        draft.params[c].insert(name, TEXTS[text].1);
        msgs.push(Msg::Parse(name, text, self.rng.chance(50)));
    }

    /// Unless `known`, the unnamed statement of a Bind or Describe is parsed in its segment.
    fn unnamed(&mut self, name: &str, msgs: &mut Vec<Msg>, draft: &mut Draft, c: usize) {
        if name.is_empty() && !draft.unnamed && !self.known {
            self.parse("", msgs, draft, c);
        }
    }

    fn bind(&mut self, msgs: &mut Vec<Msg>, draft: &mut Draft, c: usize) {
        let name = *self.rng.pick(&["a", "b", "c", "", "", "zz"]);
        self.unnamed(name, msgs, draft, c);
        let mut n = draft.params[c].get(name).copied().unwrap_or(0);
        if self.rng.chance(7) {
            n = 1 - n.min(1);
        }
        let p = (0..n)
            .map(|_| if self.rng.chance(30) { "0" } else { "1" })
            .collect();
        msgs.push(Msg::Bind(name, p));
        if self.rng.chance(75) {
            if self.rng.chance(15) {
                msgs.push(Msg::DescribeP);
            }
            msgs.push(Msg::Execute);
        }
    }

    fn extended(&mut self, clients: usize, msgs: &mut Vec<Msg>, draft: &mut Draft, c: usize) {
        let names = ["a", "b", "c", ""];
        match self.rng.below(100) {
            0..=27 => {
                let name = *self.rng.pick(&names);
                self.parse(name, msgs, draft, c);
            }
            28..=52 => self.bind(msgs, draft, c),
            53..=60 => {
                let name = *self.rng.pick(&names);
                self.unnamed(name, msgs, draft, c);
                msgs.push(Msg::DescribeS(name));
            }
            61..=63 => msgs.push(Msg::DescribeP),
            64..=68 => msgs.push(Msg::Execute),
            69..=78 => {
                let name = *self.rng.pick(&["a", "b", "c", "zz", ""]);
                msgs.push(Msg::CloseS(name));
            }
            79..=89 => {
                draft.unnamed = false;
                msgs.push(Msg::Sync);
            }
            90..=93 => msgs.push(Msg::Flush),
            _ => {
                draft.unnamed = false;
                msgs.push(self.query(clients, &mut draft.began[c]));
            }
        }
    }
}
