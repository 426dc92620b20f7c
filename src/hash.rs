//! FNV-1a, 64-bit: a hash that never changes between builds or platforms, so fingerprints
//! and checksums written into files stay valid. Not cryptographic: it detects accidents and
//! casual edits, not an attacker who recomputes it.

/// The FNV-1a 64-bit offset basis (the hash of nothing).
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues hash `hash` over `bytes`.
pub fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_published_test_vectors() {
        // From the FNV reference test suite.
        assert_eq!(super::fnv1a(super::FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(super::FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            super::fnv1a(super::FNV_OFFSET, b"foobar"),
            0x8594_4171_f739_67e8
        );
    }
}
