//! Framing of tagged messages: a 1-byte tag, then an Int32 length that counts itself but not
//! the tag ("Message Formats"). Everything after start-up is framed this way in both directions.

use bytes::{Bytes, BytesMut};

use crate::WireError;

/// Bytes in a tagged message's header: the tag and the Int32 length.
pub const HEADER_LEN: usize = 5;

/// The smallest valid length field: just the four length bytes, no body.
const MIN_LEN: i32 = 4;

/// A tagged message's header, enough to know how many bytes the whole message spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type byte, e.g. `b'Q'`.
    pub tag: u8,
    /// The wire length field: body plus the 4 length bytes, never below 4.
    pub len: u32,
}

impl Header {
    /// Bytes of body after the header.
    pub fn body_len(&self) -> usize {
        usize::try_from(self.len)
            .unwrap_or(usize::MAX)
            .saturating_sub(4)
    }

    /// Bytes of the whole message on the wire: tag, length and body.
    pub fn frame_len(&self) -> usize {
        usize::try_from(self.len)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    }
}

/// Reads the header at the front of `buf`: Ok(None) if fewer than 5 bytes; Err(BadLength) if
/// the length field is below 4 (negative included).
pub fn peek_header(buf: &[u8]) -> Result<Option<Header>, WireError> {
    let Some((&tag, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let Some(len_bytes) = rest.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes(*len_bytes);
    if len < MIN_LEN {
        return Err(WireError::BadLength(i64::from(len)));
    }
    let len = u32::try_from(len).map_err(|_| WireError::BadLength(i64::from(len)))?;
    Ok(Some(Header { tag, len }))
}

/// One whole tagged message, header stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type byte.
    pub tag: u8,
    /// Body after the length field; parse it with the `backend` or `frontend` functions.
    pub body: Bytes,
}

/// Splits one whole message off the front of `buf` when complete.
///
/// Err(TooLarge) as soon as the header says the frame exceeds `max_len` (before waiting for the
/// body); Ok(None) when more bytes are needed, having reserved capacity only up to the checked
/// frame length. On Ok(None) or Err nothing is consumed.
pub fn read_message(buf: &mut BytesMut, max_len: usize) -> Result<Option<Message>, WireError> {
    let Some(header) = peek_header(buf)? else {
        return Ok(None);
    };
    let frame_len = header.frame_len();
    if frame_len > max_len {
        return Err(WireError::TooLarge {
            len: frame_len,
            limit: max_len,
        });
    }
    if buf.len() < frame_len {
        buf.reserve(frame_len.saturating_sub(buf.len()));
        return Ok(None);
    }
    let mut frame = buf.split_to(frame_len);
    let body = frame.split_off(HEADER_LEN).freeze();
    Ok(Some(Message {
        tag: header.tag,
        body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn header_lengths_count_tag_and_length_field() {
        let h = Header { tag: b'Q', len: 9 };
        assert_eq!(h.body_len(), 5);
        assert_eq!(h.frame_len(), 10);
        let empty = Header { tag: b'S', len: 4 };
        assert_eq!(empty.body_len(), 0);
        assert_eq!(empty.frame_len(), HEADER_LEN);
    }

    #[test]
    fn peek_header_needs_five_bytes() {
        let f = frame(b'Q', b"x\0");
        for cut in 0..HEADER_LEN {
            assert_eq!(peek_header(&f[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(
            peek_header(&f[..HEADER_LEN]),
            Ok(Some(Header { tag: b'Q', len: 6 }))
        );
    }

    #[test]
    fn peek_header_rejects_lengths_below_four() {
        for len in [-1i32, i32::MIN, 0, 3] {
            let mut b = vec![b'Q'];
            b.extend_from_slice(&len.to_be_bytes());
            assert_eq!(peek_header(&b), Err(WireError::BadLength(i64::from(len))));
        }
    }

    #[test]
    fn read_message_splits_whole_messages_in_order() {
        let mut buf = BytesMut::new();
        buf.put_slice(&frame(b'Q', b"select 1\0"));
        buf.put_slice(&frame(b'S', b""));
        let a = read_message(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(a.tag, b'Q');
        assert_eq!(&a.body[..], b"select 1\0");
        let b = read_message(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((b.tag, b.body.len()), (b'S', 0));
        assert_eq!(read_message(&mut buf, 1024), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn read_message_waits_at_every_split_point() {
        let f = frame(b'D', b"some row bytes");
        for cut in 0..f.len() {
            let mut buf = BytesMut::from(&f[..cut]);
            assert_eq!(read_message(&mut buf, 1024), Ok(None), "cut {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed at cut {cut}");
            buf.put_slice(&f[cut..]);
            let m = read_message(&mut buf, 1024).unwrap().unwrap();
            assert_eq!((m.tag, &m.body[..]), (b'D', &b"some row bytes"[..]));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn read_message_accepts_frame_exactly_at_limit() {
        let f = frame(b'd', &[7; 20]);
        let mut buf = BytesMut::from(&f[..]);
        assert!(read_message(&mut buf, f.len()).unwrap().is_some());
    }

    #[test]
    fn read_message_rejects_oversize_from_header_alone() {
        let mut buf = BytesMut::new();
        buf.put_u8(b'D');
        buf.put_i32(i32::MAX);
        assert_eq!(
            read_message(&mut buf, 1 << 20),
            Err(WireError::TooLarge {
                len: 1 << 31,
                limit: 1 << 20
            })
        );
        let f = frame(b'd', &[7; 20]);
        let mut buf = BytesMut::from(&f[..HEADER_LEN]);
        assert_eq!(
            read_message(&mut buf, f.len() - 1),
            Err(WireError::TooLarge {
                len: f.len(),
                limit: f.len() - 1
            })
        );
    }

    #[test]
    fn read_message_reserves_only_the_announced_frame() {
        let mut buf = BytesMut::with_capacity(0);
        buf.put_u8(b'D');
        buf.put_i32(104);
        assert_eq!(read_message(&mut buf, 1 << 30), Ok(None));
        assert!(buf.capacity() >= 105);
        assert!(buf.capacity() < 4096, "capacity {}", buf.capacity());
    }

    #[test]
    fn read_message_rejects_bad_length() {
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert_eq!(read_message(&mut buf, 1024), Err(WireError::BadLength(3)));
    }
}
