//! Streaming relay framing: find message boundaries in a byte stream so the relay can stop at
//! the few messages it must read (ReadyForQuery, ErrorResponse, Parse, ...) while forwarding the
//! rest in whatever chunks arrived, never buffering a whole pass-through body (a 1 GB DataRow
//! goes through in read-sized pieces).

use crate::frame::peek_header;
use crate::WireError;

/// Tracks where the current message ends across calls; holds no bytes itself.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Bytes of the current pass-through message still to come; 0 at a message boundary.
    pass_remaining: usize,
}

/// What the front of the buffer holds, as decided by [`Scanner::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// A whole message of interest sits at the front of the buffer: `len` bytes (tag + length +
    /// body). Caller inspects `buf[..len]` then consumes `len`.
    Whole {
        /// Message type byte.
        tag: u8,
        /// Bytes of the whole frame.
        len: usize,
    },
    /// `n` bytes at the front are (part of) a message the caller doesn't inspect; forward and
    /// consume them. `tag` is Some(tag) when these bytes begin a new message, None when
    /// continuing one.
    Pass {
        /// Bytes to forward; never 0.
        n: usize,
        /// The message's tag when this chunk starts it.
        tag: Option<u8>,
    },
    /// Not enough bytes to decide; read more.
    NeedMore,
}

impl Scanner {
    /// A scanner positioned at a message boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of the current pass-through message not yet seen (0 at a boundary).
    pub fn remaining(&self) -> usize {
        self.pass_remaining
    }

    /// True while in the middle of a pass-through message.
    pub fn mid_message(&self) -> bool {
        self.pass_remaining > 0
    }

    /// Decides what the unconsumed bytes `buf` start with; the caller consumes exactly what the
    /// returned chunk says before calling again.
    ///
    /// `inspect(tag)` says whether a message with this tag must be seen whole; such a message
    /// longer than `max_whole` bytes is Err(TooLarge), reported from its header alone. A
    /// pass-through message comes back as Pass with n = min(available, rest of message),
    /// its header included once the 5 header bytes are present.
    pub fn next(
        &mut self,
        buf: &[u8],
        inspect: impl Fn(u8) -> bool,
        max_whole: usize,
    ) -> Result<Chunk, WireError> {
        if self.pass_remaining > 0 {
            if buf.is_empty() {
                return Ok(Chunk::NeedMore);
            }
            let n = buf.len().min(self.pass_remaining);
            self.pass_remaining = self.pass_remaining.saturating_sub(n);
            return Ok(Chunk::Pass { n, tag: None });
        }
        let Some(header) = peek_header(buf)? else {
            return Ok(Chunk::NeedMore);
        };
        let frame_len = header.frame_len();
        if inspect(header.tag) {
            if frame_len > max_whole {
                return Err(WireError::TooLarge {
                    len: frame_len,
                    limit: max_whole,
                });
            }
            if buf.len() < frame_len {
                return Ok(Chunk::NeedMore);
            }
            return Ok(Chunk::Whole {
                tag: header.tag,
                len: frame_len,
            });
        }
        let n = buf.len().min(frame_len);
        self.pass_remaining = frame_len.saturating_sub(n);
        Ok(Chunk::Pass {
            n,
            tag: Some(header.tag),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::HEADER_LEN;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn is_z(tag: u8) -> bool {
        tag == b'Z'
    }

    /// Feeds `input` in pieces cut at `cuts`, returning the chunks and the forwarded bytes.
    fn run(input: &[u8], cuts: &[usize], max_whole: usize) -> (Vec<Chunk>, Vec<u8>) {
        let mut scanner = Scanner::new();
        let mut pending = Vec::new();
        let mut out = Vec::new();
        let mut chunks = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            pending.extend_from_slice(&input[start..end]);
            start = end;
            loop {
                let c = scanner.next(&pending, is_z, max_whole).unwrap();
                let n = match c {
                    Chunk::Whole { len, .. } => len,
                    Chunk::Pass { n, .. } => n,
                    Chunk::NeedMore => break,
                };
                chunks.push(c);
                out.extend(pending.drain(..n));
            }
        }
        assert!(pending.is_empty());
        assert!(!scanner.mid_message());
        (chunks, out)
    }

    #[test]
    fn all_at_once_passes_and_stops_at_inspected() {
        let d = frame(b'D', b"row");
        let z = frame(b'Z', b"I");
        let input = [d.clone(), z.clone()].concat();
        let (chunks, out) = run(&input, &[], 1024);
        assert_eq!(out, input);
        assert_eq!(
            chunks,
            vec![
                Chunk::Pass {
                    n: d.len(),
                    tag: Some(b'D')
                },
                Chunk::Whole {
                    tag: b'Z',
                    len: z.len()
                },
            ]
        );
    }

    #[test]
    fn split_at_every_byte_pair_reassembles() {
        let input = [
            frame(b'T', b"desc"),
            frame(b'D', &[9; 12]),
            frame(b'Z', b"T"),
            frame(b'C', b"SELECT 1\0"),
            frame(b'Z', b"I"),
        ]
        .concat();
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let (chunks, out) = run(&input, &[a, b], 1024);
                assert_eq!(out, input, "cuts {a} {b}");
                let wholes: Vec<_> = chunks
                    .iter()
                    .filter(|c| matches!(c, Chunk::Whole { .. }))
                    .collect();
                assert_eq!(wholes.len(), 2, "cuts {a} {b}");
                let starts: Vec<_> = chunks
                    .iter()
                    .filter_map(|c| match c {
                        Chunk::Pass { tag: Some(t), .. } => Some(*t),
                        _ => None,
                    })
                    .collect();
                assert_eq!(starts, b"TDC", "cuts {a} {b}");
            }
        }
    }

    #[test]
    fn pass_through_body_is_forwarded_without_waiting_for_the_end() {
        let mut s = Scanner::new();
        let mut header = vec![b'D'];
        header.extend_from_slice(&(1_000_000_000i32).to_be_bytes());
        header.extend_from_slice(b"abc");
        assert_eq!(
            s.next(&header, is_z, 64),
            Ok(Chunk::Pass {
                n: 8,
                tag: Some(b'D')
            })
        );
        assert!(s.mid_message());
        assert_eq!(s.next(&[], is_z, 64), Ok(Chunk::NeedMore));
        assert_eq!(
            s.next(&[0; 100], is_z, 64),
            Ok(Chunk::Pass { n: 100, tag: None })
        );
    }

    #[test]
    fn header_split_needs_more() {
        let mut s = Scanner::new();
        let f = frame(b'D', b"x");
        for cut in 0..HEADER_LEN {
            assert_eq!(s.next(&f[..cut], is_z, 64), Ok(Chunk::NeedMore));
            assert!(!s.mid_message());
        }
    }

    #[test]
    fn inspected_message_over_limit_is_rejected_from_header() {
        let mut s = Scanner::new();
        let f = frame(b'Z', b"I");
        assert_eq!(
            s.next(&f[..HEADER_LEN], is_z, f.len() - 1),
            Err(WireError::TooLarge {
                len: f.len(),
                limit: f.len() - 1
            })
        );
        assert_eq!(
            s.next(&f, is_z, f.len()),
            Ok(Chunk::Whole {
                tag: b'Z',
                len: f.len()
            })
        );
    }

    #[test]
    fn bad_length_is_an_error() {
        let mut s = Scanner::new();
        assert_eq!(
            s.next(&[b'D', 0, 0, 0, 2], is_z, 64),
            Err(WireError::BadLength(2))
        );
    }

    #[test]
    fn pass_through_message_larger_than_max_whole_is_fine() {
        let f = frame(b'D', &[1; 100]);
        let (chunks, out) = run(&f, &[10, 50], 16);
        assert_eq!(out, f);
        assert_eq!(chunks.len(), 3);
    }
}
