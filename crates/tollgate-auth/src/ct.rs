//! Constant-time comparison, so checking a secret does not leak where a guess first went wrong.

/// Compares two byte strings in time that depends only on their length, for secrets and digests.
///
/// Lengths are not secret where we use this (digests, proofs and md5 responses have fixed sizes),
/// so a length mismatch returns `false` at once.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn equal_slices_compare_equal() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
    }

    #[test]
    fn any_difference_or_length_mismatch_compares_unequal() {
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"xbc"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"a"));
    }
}
