//! A checked cursor over one message body: every read is bounds-checked and fails as
//! [`WireError::Malformed`] naming the message, so parsers never index input directly.

use crate::WireError;

/// Consumes a message body front to back; all integers are big-endian ("Message Data Types").
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts reading `body`, naming `what` message in any error.
    pub(crate) fn new(body: &'a [u8], what: &'static str) -> Self {
        Reader { rest: body, what }
    }

    /// An error about this message.
    pub(crate) fn malformed(&self, why: &'static str) -> WireError {
        WireError::Malformed {
            what: self.what,
            why,
        }
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| self.malformed("truncated"))?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| self.malformed("truncated"))?;
        self.rest = tail;
        Ok(*head)
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    /// An Int16.
    pub(crate) fn i16(&mut self) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    /// An Int32.
    pub(crate) fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// An Int32 read as unsigned (type OIDs).
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A String's bytes up to (not including) its NUL terminator, which is consumed.
    pub(crate) fn cstr_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let nul = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.malformed("missing NUL terminator"))?;
        let s = self.bytes(nul)?;
        self.bytes(1)?;
        Ok(s)
    }

    /// A NUL-terminated String that must be UTF-8.
    pub(crate) fn cstr(&mut self) -> Result<&'a str, WireError> {
        let bytes = self.cstr_bytes()?;
        std::str::from_utf8(bytes).map_err(|_| self.malformed("invalid UTF-8"))
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Checks that the whole body was read.
    pub(crate) fn finish(self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_integers_big_endian() {
        let mut r = Reader::new(&[0, 1, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 7], "T");
        assert_eq!(r.i16(), Ok(1));
        assert_eq!(r.i32(), Ok(2));
        assert_eq!(r.u32(), Ok(u32::MAX));
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn short_integer_is_truncated_and_consumes_nothing() {
        let mut r = Reader::new(&[0, 0, 1], "T");
        assert_eq!(r.i32(), Err(r.malformed("truncated")));
        assert_eq!(r.remaining(), 3);
    }

    #[test]
    fn cstr_requires_terminator_and_utf8() {
        assert_eq!(Reader::new(b"abc\0", "T").cstr(), Ok("abc"));
        let mut r = Reader::new(b"abc", "T");
        assert_eq!(r.cstr(), Err(r.malformed("missing NUL terminator")));
        let mut r = Reader::new(b"\xff\0", "T");
        assert_eq!(r.cstr(), Err(r.malformed("invalid UTF-8")));
        let mut r = Reader::new(b"\0x", "T");
        assert_eq!(r.cstr(), Ok(""));
        assert_eq!(
            r.finish(),
            Err(Reader::new(&[], "T").malformed("trailing bytes"))
        );
    }
}
