//! Framing: a message is a one-byte tag, a big-endian `u32` length that counts itself, then
//! the body. The broker reads headers only and forwards the original bytes.

use super::FrameError;

/// Tag byte plus length word.
pub const HEADER_LEN: usize = 5;

/// The header of one tagged message, peeked without consuming anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message type byte.
    pub tag: u8,
    /// The length word: body length plus 4.
    pub len: u32,
}

impl Header {
    /// Peeks the header at the start of `buf`; `None` while fewer than 5 bytes are there.
    pub fn parse(buf: &[u8]) -> Result<Option<Header>, FrameError> {
        let Some(&[tag, a, b, c, d]) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([a, b, c, d]);
        if len < 4 {
            return Err(FrameError::BadLength { tag, len });
        }
        Ok(Some(Header { tag, len }))
    }

    /// Length of the whole frame on the wire, tag included.
    pub fn frame_len(&self) -> usize {
        usize::try_from(self.len).map_or(usize::MAX, |len| len.saturating_add(1))
    }

    /// Fails when the frame is larger than `max` bytes.
    pub fn check_size(&self, max: usize) -> Result<(), FrameError> {
        if self.frame_len() > max {
            return Err(FrameError::TooLarge {
                tag: self.tag,
                len: self.len,
                max,
            });
        }
        Ok(())
    }
}

/// The whole frame at the start of `buf` as (header, body), or `None` while it is incomplete.
pub fn whole_frame(buf: &[u8]) -> Result<Option<(Header, &[u8])>, FrameError> {
    let Some(header) = Header::parse(buf)? else {
        return Ok(None);
    };
    Ok(buf
        .get(HEADER_LEN..header.frame_len())
        .map(|body| (header, body)))
}

/// Reads a NUL-terminated string at the start of `buf`; returns it and the rest after the NUL.
pub fn cstr(buf: &[u8]) -> Result<(&str, &[u8]), FrameError> {
    let nul = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(FrameError::Malformed {
            what: "string without terminator",
        })?;
    let s = std::str::from_utf8(&buf[..nul]).map_err(|_| FrameError::Malformed {
        what: "string is not UTF-8",
    })?;
    Ok((s, &buf[nul + 1..]))
}

/// The fields of an ErrorResponse or NoticeResponse body: (type, value) pairs, up to the
/// first malformed one.
pub fn error_fields(body: &[u8]) -> impl Iterator<Item = (u8, &str)> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let (&field, tail) = rest.split_first()?;
        if field == 0 {
            return None;
        }
        let (value, tail) = cstr(tail).ok()?;
        rest = tail;
        Some((field, value))
    })
}

/// The SQLSTATE of an ErrorResponse body.
pub fn sqlstate(body: &[u8]) -> Option<&str> {
    error_fields(body).find_map(|(field, value)| (field == b'C').then_some(value))
}

/// Reads a big-endian `i32` at the start of `buf`.
pub fn read_i32(buf: &[u8]) -> Result<(i32, &[u8]), FrameError> {
    match buf.split_first_chunk::<4>() {
        Some((word, rest)) => Ok((i32::from_be_bytes(*word), rest)),
        None => Err(FrameError::Malformed {
            what: "truncated integer",
        }),
    }
}

/// Passes server messages through to the client without buffering whole frames, except the
/// few the broker must read; a large DataRow streams through as it arrives.
#[derive(Debug, Default)]
pub struct Passthrough {
    /// Bytes of the current frame not yet seen.
    remaining: usize,
}

/// What the scanner hands to the caller for each frame it must look at.
pub enum Step<'a> {
    /// Bytes that pass through untouched (part of a frame the broker does not read).
    Pass(&'a [u8]),
    /// A whole frame the broker reads: header, body, and the original bytes.
    Frame(Header, &'a [u8], &'a [u8]),
}

impl Passthrough {
    /// Consumes up to `available` bytes of the partly forwarded frame; returns how many.
    pub fn skip(&mut self, available: usize) -> usize {
        let n = self.remaining.min(available);
        self.remaining -= n;
        n
    }

    /// True while a passthrough frame is only partly forwarded.
    pub fn mid_frame(&self) -> bool {
        self.remaining > 0
    }

    /// Next step over `buf`: bytes to pass, a whole frame to read (`wanted(tag)` says which
    /// tags those are), or `None` when more input is needed. The caller consumes
    /// `step_len(step)` bytes of `buf` afterwards.
    pub fn next<'a>(
        &mut self,
        buf: &'a [u8],
        wanted: impl Fn(u8) -> bool,
    ) -> Result<Option<Step<'a>>, FrameError> {
        if self.remaining > 0 {
            let n = self.remaining.min(buf.len());
            if n == 0 {
                return Ok(None);
            }
            self.remaining -= n;
            return Ok(Some(Step::Pass(&buf[..n])));
        }
        let Some(header) = Header::parse(buf)? else {
            return Ok(None);
        };
        if wanted(header.tag) {
            return Ok(
                whole_frame(buf)?.map(|(h, body)| Step::Frame(h, body, &buf[..header.frame_len()]))
            );
        }
        self.remaining = header.frame_len();
        self.next(buf, wanted)
    }
}

impl Step<'_> {
    /// Bytes of input this step covers.
    pub fn len(&self) -> usize {
        match self {
            Step::Pass(bytes) | Step::Frame(_, _, bytes) => bytes.len(),
        }
    }

    /// True for an empty step (never produced by the scanner).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn header_needs_five_bytes() {
        assert_eq!(Header::parse(b"Q\0\0").unwrap(), None);
        let h = Header::parse(&msg(b'Q', b"x\0")).unwrap().unwrap();
        assert_eq!((h.tag, h.len, h.frame_len()), (b'Q', 6, 7));
    }

    #[test]
    fn lengths_below_four_are_errors() {
        for len in 0u32..4 {
            let mut v = vec![b'Q'];
            v.extend_from_slice(&len.to_be_bytes());
            assert!(matches!(
                Header::parse(&v),
                Err(FrameError::BadLength { .. })
            ));
        }
    }

    #[test]
    fn partial_frames_are_incomplete() {
        let m = msg(b'Q', b"select 1\0");
        for cut in 0..m.len() {
            assert!(whole_frame(&m[..cut]).unwrap().is_none(), "cut {cut}");
        }
        let (h, body) = whole_frame(&m).unwrap().unwrap();
        assert_eq!((h.tag, body), (b'Q', &b"select 1\0"[..]));
    }

    #[test]
    fn oversize_is_rejected_before_buffering() {
        let mut v = vec![b'd'];
        v.extend_from_slice(&(1u32 << 30).to_be_bytes());
        let h = Header::parse(&v).unwrap().unwrap();
        assert!(matches!(
            h.check_size(1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(h.check_size(usize::MAX).is_ok());
    }

    #[test]
    fn unknown_tags_frame_like_any_other() {
        let m = msg(b'~', b"abc");
        assert_eq!(whole_frame(&m).unwrap().unwrap().0.tag, b'~');
    }

    #[test]
    fn cstr_and_i32() {
        assert_eq!(cstr(b"ab\0rest").unwrap(), ("ab", &b"rest"[..]));
        assert!(cstr(b"no nul").is_err());
        assert_eq!(read_i32(&[0, 0, 1, 0, 9]).unwrap(), (256, &[9u8][..]));
        assert!(read_i32(&[0, 0]).is_err());
    }

    #[test]
    fn passthrough_streams_unwanted_frames_and_stops_on_wanted_ones() {
        let mut input = msg(b'D', &[7u8; 100]);
        input.extend(msg(b'Z', b"I"));
        let mut scan = Passthrough::default();
        let wanted = |t: u8| t == b'Z';
        // Feed the DataRow in two pieces: it passes through without waiting for the end.
        let step = scan.next(&input[..50], wanted).unwrap().unwrap();
        assert!(matches!(step, Step::Pass(b) if b.len() == 50));
        assert!(scan.mid_frame());
        let step = scan.next(&input[50..], wanted).unwrap().unwrap();
        assert_eq!(step.len(), 55);
        let rest = &input[105..];
        assert!(scan.next(&rest[..3], wanted).unwrap().is_none());
        match scan.next(rest, wanted).unwrap().unwrap() {
            Step::Frame(h, body, raw) => assert_eq!((h.tag, body, raw.len()), (b'Z', &b"I"[..], 6)),
            Step::Pass(_) => panic!("Z must be read whole"),
        }
    }
}
