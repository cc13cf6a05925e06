//! A small per-thread cache of I/O buffers. An idle client holds no buffers (thousands of idle
//! clients should cost little memory), so a client gives its buffers back after each
//! transaction and takes them again for the next. Without the cache that is two 8 KiB
//! allocations and frees per transaction, which glibc serves from its arena bins (its
//! per-thread cache stops at ~1 KiB): a few percent of the relay's CPU. Buffers of the usual
//! size go back to a bounded stack on the worker thread that freed them; anything larger (a
//! big result grew it) is freed, so the cache never holds more than
//! `KEPT * MAX_KEPT_CAPACITY` per thread.

use bytes::BytesMut;
use std::cell::RefCell;

/// Capacity of a fresh buffer.
pub const BUFFER_SIZE: usize = 8192;
/// Buffers kept per thread.
const KEPT: usize = 64;
/// Larger buffers are freed rather than kept.
const MAX_KEPT_CAPACITY: usize = 4 * BUFFER_SIZE;

thread_local! {
    static CACHE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least [`BUFFER_SIZE`] bytes.
pub fn take() -> BytesMut {
    CACHE
        .try_with(|c| c.try_borrow_mut().ok().and_then(|mut c| c.pop()))
        .ok()
        .flatten()
        .unwrap_or_else(|| BytesMut::with_capacity(BUFFER_SIZE))
}

/// Gives `buf` back (its contents are discarded); leaves an unallocated buffer in its place.
pub fn give(buf: &mut BytesMut) {
    let mut buf = std::mem::take(buf);
    buf.clear();
    // Messages split off the front leave the buffer's start further in; when nothing else
    // holds those parts any more, reserving takes the whole allocation back without copying.
    if buf.capacity() < BUFFER_SIZE {
        buf.reserve(BUFFER_SIZE);
    }
    if !(BUFFER_SIZE..=MAX_KEPT_CAPACITY).contains(&buf.capacity()) {
        return;
    }
    let _ = CACHE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            if c.len() < KEPT {
                c.push(buf);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_big_ones_are_not_kept() {
        let mut a = take();
        assert!(a.capacity() >= BUFFER_SIZE && a.is_empty());
        a.extend_from_slice(b"leftover");
        let ptr = a.as_ptr();
        give(&mut a);
        assert_eq!(a.capacity(), 0, "the giver is left without a buffer");
        let b = take();
        assert_eq!(b.as_ptr(), ptr, "the same allocation is reused");
        assert!(b.is_empty());

        let kept = || CACHE.with(|c| c.borrow().len());
        let before = kept();
        let mut big = BytesMut::with_capacity(MAX_KEPT_CAPACITY * 2);
        give(&mut big);
        assert_eq!(kept(), before, "a big buffer is freed, not kept");
    }

    #[test]
    fn a_buffer_with_messages_split_off_comes_back_whole() {
        let mut a = take();
        let ptr = a.as_ptr();
        a.extend_from_slice(&[7u8; 6000]);
        drop(a.split_to(5000).freeze());
        assert!(a.capacity() < BUFFER_SIZE);
        give(&mut a);
        let b = take();
        assert_eq!(b.as_ptr(), ptr, "the same allocation, from its start");
        assert!(b.capacity() >= BUFFER_SIZE && b.is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut bufs: Vec<BytesMut> = (0..KEPT + 10)
            .map(|_| BytesMut::with_capacity(BUFFER_SIZE))
            .collect();
        for b in &mut bufs {
            give(b);
        }
        assert_eq!(CACHE.with(|c| c.borrow().len()), KEPT);
    }
}
