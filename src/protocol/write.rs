//! Writers for the backend messages the broker originates (it never re-encodes what it
//! forwards). Each appends one whole message to a `BytesMut` and backfills the length.

use bytes::{BufMut, BytesMut};

/// Severity of an ErrorResponse the broker sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// Appends a tagged message whose body `body` writes.
fn message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    body(buf);
    let len = u32::try_from(buf.len() - at).unwrap_or(u32::MAX);
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

/// ErrorResponse with severity, SQLSTATE, message and an optional hint.
pub fn error_response(
    buf: &mut BytesMut,
    severity: Severity,
    code: &str,
    text: &str,
    hint: Option<&str>,
) {
    message(buf, b'E', |b| {
        for (field, value) in [
            (b'S', severity.as_str()),
            (b'V', severity.as_str()),
            (b'C', code),
            (b'M', text),
        ] {
            b.put_u8(field);
            put_cstr(b, value);
        }
        if let Some(hint) = hint {
            b.put_u8(b'H');
            put_cstr(b, hint);
        }
        b.put_u8(0);
    });
}

/// ReadyForQuery with a transaction status byte ('I', 'T' or 'E').
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    message(buf, b'Z', |b| b.put_u8(status));
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    message(buf, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

/// BackendKeyData with the broker-issued cancel key.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    message(buf, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// An Authentication message: a request code and its payload.
fn authentication(buf: &mut BytesMut, code: i32, payload: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(code);
        b.put_slice(payload);
    });
}

/// AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    authentication(buf, 0, &[]);
}

/// AuthenticationCleartextPassword.
pub fn auth_cleartext(buf: &mut BytesMut) {
    authentication(buf, 3, &[]);
}

/// AuthenticationMD5Password with its salt.
pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    authentication(buf, 5, &salt);
}

/// AuthenticationSASL listing the mechanisms offered, preferred first.
pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let mut payload = BytesMut::new();
    for mechanism in mechanisms {
        put_cstr(&mut payload, mechanism);
    }
    payload.put_u8(0);
    authentication(buf, 10, &payload);
}

/// AuthenticationSASLContinue with server data.
pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    authentication(buf, 11, data);
}

/// AuthenticationSASLFinal with server data.
pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    authentication(buf, 12, data);
}

/// NegotiateProtocolVersion: the newest minor version supported and the options not recognised.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unrecognized: &[&str]) {
    message(buf, b'v', |b| {
        b.put_i32(minor);
        b.put_i32(i32::try_from(unrecognized.len()).unwrap_or(i32::MAX));
        for option in unrecognized {
            put_cstr(b, option);
        }
    });
}

/// A simple Query message (for the statements the broker runs on a server itself).
pub fn query(buf: &mut BytesMut, sql: &str) {
    message(buf, b'Q', |b| put_cstr(b, sql));
}

/// A Sync message.
pub fn sync(buf: &mut BytesMut) {
    message(buf, b'S', |_| {});
}

/// A Parse message with no parameter types.
pub fn parse(buf: &mut BytesMut, name: &str, sql: &str) {
    message(buf, b'P', |b| {
        put_cstr(b, name);
        put_cstr(b, sql);
        b.put_i16(0);
    });
}

/// A Parse message of `definition` (query text, parameter count and types, as a client
/// sent them) under `name`.
pub fn parse_definition(buf: &mut BytesMut, name: &str, definition: &[u8]) {
    message(buf, b'P', |b| {
        put_cstr(b, name);
        b.put_slice(definition);
    });
}

/// A Bind message of `statement` into `portal`, with the rest of a client's Bind body.
pub fn bind(buf: &mut BytesMut, portal: &str, statement: &str, rest: &[u8]) {
    message(buf, b'B', |b| {
        put_cstr(b, portal);
        put_cstr(b, statement);
        b.put_slice(rest);
    });
}

/// A Bind of the unnamed statement into the unnamed portal with `params` as text values,
/// results as text.
pub fn bind_text(buf: &mut BytesMut, params: &[&str]) {
    message(buf, b'B', |b| {
        put_cstr(b, "");
        put_cstr(b, "");
        b.put_i16(0);
        b.put_i16(i16::try_from(params.len()).unwrap_or(i16::MAX));
        for param in params {
            b.put_i32(i32::try_from(param.len()).unwrap_or(i32::MAX));
            b.put_slice(param.as_bytes());
        }
        b.put_i16(0);
    });
}

/// An Execute of the unnamed portal, all rows.
pub fn execute(buf: &mut BytesMut) {
    message(buf, b'E', |b| {
        put_cstr(b, "");
        b.put_i32(0);
    });
}

/// A Close message for a statement ('S') or portal ('P').
pub fn close(buf: &mut BytesMut, kind: u8, name: &str) {
    target(buf, b'C', kind, name);
}

/// A Describe message for a statement ('S') or portal ('P').
pub fn describe(buf: &mut BytesMut, kind: u8, name: &str) {
    target(buf, b'D', kind, name);
}

fn target(buf: &mut BytesMut, tag: u8, kind: u8, name: &str) {
    message(buf, tag, |b| {
        b.put_u8(kind);
        put_cstr(b, name);
    });
}

/// A CopyFail message.
pub fn copy_fail(buf: &mut BytesMut, why: &str) {
    message(buf, b'f', |b| put_cstr(b, why));
}

/// A Terminate message.
pub fn terminate(buf: &mut BytesMut) {
    message(buf, b'X', |_| {});
}

/// An SSLRequest packet (untagged), asking the server for TLS.
pub fn ssl_request(buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_i32(crate::protocol::startup::SSL_REQUEST);
}

/// A CancelRequest packet (untagged).
pub fn cancel_request(buf: &mut BytesMut, pid: i32, secret: i32) {
    buf.put_i32(16);
    buf.put_i32(80_877_102);
    buf.put_i32(pid);
    buf.put_i32(secret);
}

#[cfg(test)]
mod tests {
    use super::*;
    use fallible_iterator::FallibleIterator;
    use postgres_protocol::message::backend::Message;

    #[test]
    fn error_response_parses_with_postgres_protocol() {
        let mut buf = BytesMut::new();
        error_response(
            &mut buf,
            Severity::Fatal,
            "28P01",
            "pgbroker: no",
            Some("try again"),
        );
        let Some(Message::ErrorResponse(body)) = Message::parse(&mut buf).unwrap() else {
            panic!("not an ErrorResponse")
        };
        let mut fields = Vec::new();
        let mut it = body.fields();
        while let Some(f) = it.next().unwrap() {
            fields.push((
                f.type_(),
                String::from_utf8_lossy(f.value_bytes()).into_owned(),
            ));
        }
        assert!(fields.contains(&(b'C', "28P01".into())));
        assert!(fields.contains(&(b'S', "FATAL".into())));
        assert!(fields.contains(&(b'H', "try again".into())));
        assert!(buf.is_empty());
    }

    #[test]
    fn ready_and_key() {
        let mut buf = BytesMut::new();
        ready_for_query(&mut buf, b'I');
        backend_key_data(&mut buf, 1, 2);
        assert_eq!(&buf[..6], b"Z\0\0\0\x05I");
        assert!(matches!(
            Message::parse(&mut buf.split_off(6)).unwrap(),
            Some(Message::BackendKeyData(_))
        ));
    }
}
