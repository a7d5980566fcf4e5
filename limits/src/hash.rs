//! The keyed hash that places a counter in the table: the rule's id and
//! the call's values, under a per-process secret, so no caller can aim
//! calls at one bucket.

/// A keyed 64-bit hash of `s` (multiply-fold rounds over 8-byte words).
pub(crate) fn keyed_hash((seed, secret): (u64, u64), s: &[u8]) -> u64 {
    fn fold(a: u64, b: u64) -> u64 {
        let r = u128::from(a) * u128::from(b);
        (r as u64) ^ ((r >> 64) as u64)
    }
    let mut h = seed ^ (s.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = fold(h ^ u64::from_le_bytes(b), secret);
    }
    let rest = words.remainder().len();
    if rest > 0 {
        // The last bytes without a copy: the last eight (overlapping the
        // words above; the length is in the seed), or two overlapping
        // halves, or three bytes for the shortest.
        let n = s.len();
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&s[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let half = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&s[at..at + 4]);
            u64::from(u32::from_le_bytes(b))
        };
        let tail = if n >= 8 {
            word(n - 8)
        } else if n >= 4 {
            (half(0) << 32) | half(n - 4)
        } else {
            (u64::from(s[0]) << 16) | (u64::from(s[n / 2]) << 8) | u64::from(s[n - 1])
        };
        h = fold(h ^ tail, secret ^ 0xA076_1D64_78BD_642F);
    }
    fold(h, secret)
}

/// Combines two 64-bit hashes (order matters).
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let x = (a ^ b.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x ^ (x >> 32)).wrapping_add(b)
}
