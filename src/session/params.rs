//! Session state that transaction pooling must carry from server to server: the parameters
//! a client set (at startup, or later with SET of a parameter Postgres reports back) are
//! replayed on whichever server serves it next.

use std::fmt::Write as _;

use crate::backend::{Params, ServerConn};
use crate::protocol::query::{analyze, Effects, PinReason};

/// Reported parameters that cannot (or must not) be SET by the broker.
pub const NOT_SETTABLE: [&str; 6] = [
    "server_version",
    "server_encoding",
    "integer_datetimes",
    "is_superuser",
    "session_authorization",
    "in_hot_standby",
];

/// Startup parameters that are not settings.
const NOT_SETTINGS: [&str; 4] = ["user", "database", "options", "replication"];

/// The statements that bring a server to a client's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// SET / RESET statements, client_encoding last.
    pub sql: String,
    /// Only reported parameters change: values a server reported itself, which stay valid,
    /// so the replay may go ahead of the client's messages without a round trip. Startup
    /// settings (which a dropped object can make invalid) go by round trip.
    pub reported_only: bool,
}

/// What one client expects of the server that serves it.
#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    /// Reported parameters as the client knows them (baseline overlaid with its own).
    pub reported: Params,
    /// Unreported settings from the startup packet (`options` included).
    pub extras: Params,
}

fn canonical<'a>(reported: &'a Params, name: &str) -> Option<&'a String> {
    reported.keys().find(|k| k.eq_ignore_ascii_case(name))
}

impl ClientParams {
    /// The client's view: the pool's baseline, overlaid with its startup settings; fails
    /// with the name of a reported parameter that cannot be set.
    pub fn new(baseline: &Params, startup: &[(String, String)]) -> Result<ClientParams, String> {
        let mut params = ClientParams {
            reported: baseline.clone(),
            extras: Params::new(),
        };
        for (name, value) in startup {
            if NOT_SETTINGS.contains(&name.as_str()) || name.starts_with("_pq_.") {
                continue;
            }
            match canonical(baseline, name).cloned() {
                Some(key) if is_settable(&key) => {
                    params.reported.insert(key, value.clone());
                }
                // Postgres refuses these at startup too ("cannot be changed").
                Some(key) => return Err(key),
                None => {
                    params
                        .extras
                        .insert(name.to_ascii_lowercase(), value.clone());
                }
            }
        }
        Ok(params)
    }

    /// What a client Query or Parse does to the session: pin, reset settings, deallocate
    /// statements. `track_named`: named statements are tracked by the broker (otherwise a
    /// named Parse pins).
    pub fn effects(&self, tag: u8, frame: &[u8], track_named: bool) -> Effects {
        let body = frame.get(crate::protocol::HEADER_LEN..).unwrap_or_default();
        let sql = match tag {
            b'Q' => body,
            b'P' => match body.iter().position(|&b| b == 0) {
                Some(0) => &body[1..],
                Some(end) if track_named => &body[end + 1..],
                _ => {
                    return Effects {
                        pin: Some(PinReason::NamedStatement),
                        ..Effects::default()
                    };
                }
            },
            _ => return Effects::default(),
        };
        let end = sql.iter().position(|&b| b == 0).unwrap_or(sql.len());
        let text = String::from_utf8_lossy(&sql[..end]);
        analyze(&text, !self.standard_strings(), |name| self.tracks(name))
    }

    /// A Query or unnamed Parse that is only `SET extra_float_digits = n` (what pgjdbc
    /// sends on connect):
    /// an unreported output-format setting the broker can carry as one of the client's
    /// extras, replayed on every server, instead of pinning. Returns its name and value.
    pub fn carried_set(frame: &[u8]) -> Option<(&'static str, String)> {
        const NAME: &str = "extra_float_digits";
        let body = match frame.first() {
            Some(b'Q') => frame.get(crate::protocol::HEADER_LEN..)?,
            // The unnamed statement (drivers send their setup this way).
            Some(b'P') => frame
                .get(crate::protocol::HEADER_LEN..)?
                .strip_prefix(b"\0")?,
            _ => return None,
        };
        let text = std::str::from_utf8(body.split(|&b| b == 0).next()?).ok()?;
        let text = text.trim().trim_end_matches(';').replace('=', " = ");
        let mut words = text.split_whitespace();
        if !words.next()?.eq_ignore_ascii_case("set") {
            return None;
        }
        let mut name = words.next()?;
        if name.eq_ignore_ascii_case("session") {
            name = words.next()?;
        }
        let op = words.next()?;
        let value = words.next()?;
        if !name.eq_ignore_ascii_case(NAME)
            || (op != "=" && !op.eq_ignore_ascii_case("to"))
            || words.next().is_some()
        {
            return None;
        }
        let digits: i32 = value.trim_matches('\'').parse().ok()?;
        (-15..=3)
            .contains(&digits)
            .then(|| (NAME, digits.to_string()))
    }

    /// True when SET of `name` is replayed by the broker (so it needs no pin).
    pub fn tracks(&self, name: &str) -> bool {
        canonical(&self.reported, name).is_some_and(|k| is_settable(k))
    }

    /// False when the client turned standard_conforming_strings off (backslashes then
    /// escape inside '…').
    pub fn standard_strings(&self) -> bool {
        self.reported
            .get("standard_conforming_strings")
            .is_none_or(|v| v != "off")
    }

    /// The statements that make `server` match this client, or `None` when it already does.
    /// client_encoding comes last: the whole batch is decoded in the encoding in force
    /// when it arrives (see [`ClientParams::needs_utf8_first`]).
    pub fn sync_sql(&self, server: &ServerConn) -> Option<Replay> {
        let mut sql = String::new();
        let mut encoding = None;
        for (name, value) in &self.reported {
            if is_settable(name) && server.params.get(name) != Some(value) {
                if name == "client_encoding" {
                    encoding = Some(value);
                } else {
                    push_set(&mut sql, name, value);
                }
            }
        }
        let reported_end = sql.len();
        for (name, value) in &self.extras {
            if !server.extras_known() || server.extras.get(name) != Some(value) {
                push_set(&mut sql, name, value);
            }
        }
        for name in server
            .extras
            .keys()
            .filter(|k| !self.extras.contains_key(*k))
        {
            let _ = write!(sql, "RESET {};", quote_ident(name));
        }
        let reported_only = sql.len() == reported_end;
        if let Some(value) = encoding {
            push_set(&mut sql, "client_encoding", value);
        }
        (!sql.is_empty()).then_some(Replay { sql, reported_only })
    }

    /// True when `sql` must reach a server whose client_encoding is not UTF8: it must be
    /// switched to UTF8 first, or non-ASCII values would be decoded wrongly.
    pub fn needs_utf8_first(sql: &str, server: &ServerConn) -> bool {
        !sql.is_ascii()
            && server
                .params
                .get("client_encoding")
                .is_some_and(|e| e != "UTF8")
    }

    /// After a sync: the server holds this client's extras, and the client adopts the
    /// server's spelling of each reported value. Returns the values that changed, which the
    /// client must be told.
    pub fn adopt(&mut self, server: &mut ServerConn) -> Vec<(String, String)> {
        server.set_extras(&self.extras);
        let mut changed = Vec::new();
        for (name, value) in &server.params {
            if self.reported.get(name) != Some(value) {
                self.reported.insert(name.clone(), value.clone());
                changed.push((name.clone(), value.clone()));
            }
        }
        changed
    }

    /// Records a ParameterStatus the client was sent.
    pub fn reported_by_server(&mut self, name: &str, value: &str) {
        if self.reported.get(name).map(String::as_str) != Some(value) {
            self.reported.insert(name.to_owned(), value.to_owned());
        }
    }
}

fn is_settable(name: &str) -> bool {
    !NOT_SETTABLE.iter().any(|n| n.eq_ignore_ascii_case(name))
}

fn push_set(sql: &mut String, name: &str, value: &str) {
    let _ = write!(sql, "SET {} = {};", quote_ident(name), quote_literal(value));
}

/// A double-quoted identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An E'' literal, safe whatever standard_conforming_strings says.
pub fn quote_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_float_digits_is_carried_not_pinned() {
        let q = |sql: &str| {
            let mut frame = vec![b'Q', 0, 0, 0, 0];
            frame.extend_from_slice(sql.as_bytes());
            frame.push(0);
            ClientParams::carried_set(&frame)
        };
        let three = Some(("extra_float_digits", "3".to_owned()));
        assert_eq!(q("SET extra_float_digits = 3"), three);
        assert_eq!(q("set SESSION extra_float_digits TO '3';"), three);
        assert_eq!(
            q("SET extra_float_digits=-2"),
            Some(("extra_float_digits", "-2".into()))
        );
        assert_eq!(
            q("SET extra_float_digits = 4"),
            None,
            "out of range: Postgres refuses it"
        );
        assert_eq!(q("SET extra_float_digits = 3; SET work_mem = '1GB'"), None);
        assert_eq!(q("SET LOCAL extra_float_digits = 3"), None);
        assert_eq!(q("SET work_mem = 3"), None);
        let parse = b"P\0\0\0\0\0SET extra_float_digits = 3\0\0\0";
        assert_eq!(ClientParams::carried_set(parse), three);
        let named = b"P\0\0\0\0s\0SET extra_float_digits = 3\0\0\0";
        assert_eq!(ClientParams::carried_set(named), None);
    }

    fn baseline() -> Params {
        [
            ("DateStyle", "ISO, MDY"),
            ("application_name", ""),
            ("server_version", "15"),
            ("TimeZone", "UTC"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn startup_settings_split_into_reported_and_extras() {
        let startup = vec![
            ("user".to_owned(), "app".to_owned()),
            ("datestyle".to_owned(), "German".to_owned()),
            ("application_name".to_owned(), "orders".to_owned()),
            ("search_path".to_owned(), "s".to_owned()),
        ];
        let p = ClientParams::new(&baseline(), &startup).unwrap();
        assert_eq!(p.reported["DateStyle"], "German");
        assert_eq!(p.reported["application_name"], "orders");
        assert_eq!(p.reported["server_version"], "15");
        let fixed = vec![("server_version".to_owned(), "99".to_owned())];
        assert_eq!(
            ClientParams::new(&baseline(), &fixed).unwrap_err(),
            "server_version"
        );
        assert_eq!(p.extras["search_path"], "s");
        assert!(p.tracks("timezone") && p.tracks("DATESTYLE"));
        assert!(!p.tracks("server_version") && !p.tracks("work_mem"));
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("a'b\\c"), "E'a''b\\\\c'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
