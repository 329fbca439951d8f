//! The server messages the broker reads beyond framing: an ErrorResponse turned into a
//! [`ServerError`], what forwarding passed on that a session counts ([`Heard`]), and a
//! one-row query on a server connection the broker holds for itself (the backend check).

use bytes::{Buf, BytesMut};

use super::conn::ServerConn;
use super::{ServerError, StatementRefusal};
use crate::protocol::frame::{error_fields, read_i32, whole_frame};
use crate::protocol::write;
use crate::protocol::FrameError;

/// What [`ServerConn::forward_into`] passed on that a session keeps count of, or must
/// answer itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard<'a> {
    /// A ParameterStatus: name, value.
    Param(&'a str, &'a str),
    /// An ErrorResponse with this SQLSTATE.
    Error(&'a str),
    /// A ReadyForQuery with this transaction status; `more` when pipelined messages
    /// still await theirs.
    Ready {
        /// 'I', 'T' or 'E'.
        status: u8,
        /// More ReadyForQuery messages are owed.
        more: bool,
    },
    /// A client Parse the broker refused: the session writes its error to the client, in
    /// the place of the server's, into the bytes for the client.
    Refused(&'a StatementRefusal, &'a mut BytesMut),
}

pub(super) fn statement_error(what: &'static str, body: &[u8]) -> ServerError {
    let (mut code, mut message) = (String::new(), String::new());
    for (field, value) in error_fields(body) {
        match field {
            b'C' => code = value.to_owned(),
            b'M' => message = value.to_owned(),
            _ => {}
        }
    }
    ServerError::Statement {
        what,
        code,
        message,
    }
}

impl ServerConn {
    /// Runs `sql` (simple protocol) and returns the text values of its first row (`None`
    /// for NULL; no row gives an empty list). Not cancel-safe.
    pub async fn query_row(
        &mut self,
        sql: &str,
        what: &'static str,
    ) -> Result<Vec<Option<String>>, ServerError> {
        let mut out = BytesMut::new();
        write::query(&mut out, sql);
        self.send(&out).await?;
        self.position.sent(b'Q');
        self.first_row(what).await
    }

    /// Runs `sql` with `params` bound as text (extended protocol: nothing in a parameter
    /// is read as SQL) and returns its first row as [`ServerConn::query_row`] does.
    /// Not cancel-safe.
    pub async fn query_row_with(
        &mut self,
        sql: &str,
        params: &[&str],
        what: &'static str,
    ) -> Result<Vec<Option<String>>, ServerError> {
        let mut out = BytesMut::new();
        write::parse(&mut out, "", sql);
        write::bind_text(&mut out, params);
        write::execute(&mut out);
        write::sync(&mut out);
        self.send(&out).await?;
        for tag in [b'P', b'B', b'E', b'S'] {
            self.position.sent(tag);
        }
        self.first_row(what).await
    }

    /// Reads replies up to rest: the first DataRow's values, or the first error.
    async fn first_row(&mut self, what: &'static str) -> Result<Vec<Option<String>>, ServerError> {
        let (mut row, mut failure) = (None, None);
        while !self.position.is_quiet() {
            let Some((header, body)) = whole_frame(&self.rbuf)? else {
                self.fill().await?;
                continue;
            };
            let len = header.frame_len();
            self.position.received(header.tag, body);
            match header.tag {
                b'D' if row.is_none() => row = Some(data_row(body)?),
                b'E' if failure.is_none() => failure = Some(statement_error(what, body)),
                _ => {}
            }
            self.rbuf.advance(len);
        }
        failure.map_or(Ok(row.unwrap_or_default()), Err)
    }
}

/// The text values of a DataRow body.
fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, FrameError> {
    const MALFORMED: FrameError = FrameError::Malformed {
        what: "DataRow column",
    };
    let (count, mut rest) = body.split_first_chunk::<2>().ok_or(MALFORMED)?;
    let mut values = Vec::new();
    for _ in 0..u16::from_be_bytes(*count) {
        let (len, tail) = read_i32(rest)?;
        let Ok(len) = usize::try_from(len) else {
            values.push(None);
            rest = tail;
            continue;
        };
        let value = tail.get(..len).ok_or(MALFORMED)?;
        values.push(Some(String::from_utf8_lossy(value).into_owned()));
        rest = &tail[len..];
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_text_and_null_columns_and_rejects_truncation() {
        let body = b"\x00\x02\x00\x00\x00\x03100\xff\xff\xff\xff";
        assert_eq!(data_row(body).unwrap(), vec![Some("100".to_owned()), None]);
        assert!(data_row(b"\x00\x01\x00\x00\x00\x09abc").is_err());
        assert!(data_row(b"\x00").is_err());
    }
}
