//! The untagged packets a client may open with: StartupMessage, SSLRequest,
//! GSSENCRequest and CancelRequest.
//!
//! <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP>

use super::frame::{cstr, read_i32};
use super::FrameError;

/// Longest startup packet accepted; Postgres uses the same bound.
pub const MAX_STARTUP_PACKET_LENGTH: usize = 10_000;
pub(crate) const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
/// Protocol 3.0.
pub const PROTOCOL_3_0: i32 = 196_608;

/// One untagged packet from a client that has not started up yet.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet {
    /// Asks for TLS.
    SslRequest,
    /// Asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancels the query of another session.
    Cancel {
        /// The process id the broker handed that session.
        pid: i32,
        /// The secret the broker handed that session.
        secret: i32,
    },
    /// Starts a session.
    Startup(Startup),
}

/// A StartupMessage: the protocol version and the parameters, in order.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Startup {
    /// Major version (3).
    pub major: u16,
    /// Minor version requested by the client.
    pub minor: u16,
    /// Name/value pairs as sent.
    pub params: Vec<(String, String)>,
}

impl Startup {
    /// The value of a parameter, if the client sent it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Length of the packet at the start of `buf` (4-byte length word, counting itself), checked
/// against [`MAX_STARTUP_PACKET_LENGTH`]; `None` while fewer than 4 bytes are there.
pub fn packet_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(word) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*word);
    match usize::try_from(len) {
        Ok(n) if (8..=MAX_STARTUP_PACKET_LENGTH).contains(&n) => Ok(Some(n)),
        _ => Err(FrameError::BadStartupLength { len }),
    }
}

/// Parses one whole untagged packet (length word included).
pub fn parse(packet: &[u8]) -> Result<Packet, FrameError> {
    let (_, rest) = read_i32(packet)?;
    let (code, body) = read_i32(rest)?;
    match code {
        SSL_REQUEST => Ok(Packet::SslRequest),
        GSSENC_REQUEST => Ok(Packet::GssEncRequest),
        CANCEL_REQUEST => parse_cancel(body),
        _ => parse_startup(code, body).map(Packet::Startup),
    }
}

fn parse_cancel(body: &[u8]) -> Result<Packet, FrameError> {
    let (pid, rest) = read_i32(body)?;
    let (secret, _) = read_i32(rest)?;
    Ok(Packet::Cancel { pid, secret })
}

fn parse_startup(code: i32, mut body: &[u8]) -> Result<Startup, FrameError> {
    let version = u32::from_ne_bytes(code.to_ne_bytes());
    let major = u16::try_from(version >> 16).unwrap_or(0);
    let minor = u16::try_from(version & 0xffff).unwrap_or(0);
    let mut params = Vec::new();
    loop {
        let (name, rest) = cstr(body)?;
        if name.is_empty() {
            break;
        }
        let (value, rest) = cstr(rest)?;
        params.push((name.to_owned(), value.to_owned()));
        body = rest;
    }
    Ok(Startup {
        major,
        minor,
        params,
    })
}

/// Splits a libpq `options` value into `-c name=value` / `--name=value` settings; anything
/// else is returned as an error naming the word.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut words = split_options(options).into_iter();
    while let Some(word) = words.next() {
        let setting = match word.as_str() {
            "-c" => words.next().ok_or_else(|| word.clone())?,
            w if w.starts_with("--") => w[2..].to_owned(),
            w if w.starts_with("-c") => w[2..].to_owned(),
            _ => return Err(word),
        };
        let (name, value) = setting.split_once('=').ok_or(setting.clone())?;
        out.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(out)
}

/// Splits on unescaped whitespace; a backslash escapes the next character (as libpq does).
fn split_options(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&u32::try_from(body.len() + 8).unwrap().to_be_bytes());
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn startup_params() {
        let p = packet(PROTOCOL_3_0, b"user\0app\0database\0db\0\0");
        let Packet::Startup(s) = parse(&p).unwrap() else {
            panic!()
        };
        assert_eq!((s.major, s.minor), (3, 0));
        assert_eq!(s.get("user"), Some("app"));
        assert_eq!(s.get("database"), Some("db"));
    }

    #[test]
    fn special_codes() {
        assert_eq!(
            parse(&packet(SSL_REQUEST, b"")).unwrap(),
            Packet::SslRequest
        );
        assert_eq!(
            parse(&packet(GSSENC_REQUEST, b"")).unwrap(),
            Packet::GssEncRequest
        );
        let mut body = 7i32.to_be_bytes().to_vec();
        body.extend_from_slice(&(-9i32).to_be_bytes());
        assert_eq!(
            parse(&packet(CANCEL_REQUEST, &body)).unwrap(),
            Packet::Cancel { pid: 7, secret: -9 }
        );
    }

    #[test]
    fn malformed_startups_are_errors_not_panics() {
        assert!(parse(&packet(PROTOCOL_3_0, b"user\0app")).is_err());
        assert!(parse(&packet(CANCEL_REQUEST, b"\0\0")).is_err());
        assert!(parse(&[0, 0]).is_err());
        assert!(packet_len(&[0, 0, 0, 3]).is_err());
        assert!(packet_len(&[0, 1, 0, 0]).is_err());
        assert_eq!(packet_len(&[0, 0, 0, 8]).unwrap(), Some(8));
        assert_eq!(packet_len(&[0, 0]).unwrap(), None);
    }

    #[test]
    fn options_become_settings() {
        let got =
            parse_options("-c search_path=a\\ b --statement-timeout=5s -cwork_mem=4MB").unwrap();
        assert_eq!(
            got,
            vec![
                ("search_path".into(), "a b".into()),
                ("statement_timeout".into(), "5s".into()),
                ("work_mem".into(), "4MB".into())
            ]
        );
        assert_eq!(parse_options("-x"), Err("-x".to_owned()));
    }
}
