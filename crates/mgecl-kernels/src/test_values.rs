//! Reproducible test inputs shared by the kernels' tests: one xorshift stream.

/// The xorshift32 stream of `seed` (never zero).
pub(crate) fn xorshift(seed: u32) -> impl Iterator<Item = u32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9) | 1;
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    })
}

/// `len` integers in `-range..range` as f32: ties everywhere, and sums of a few thousand of
/// them (and their products) exact in f64.
pub(crate) fn integers(len: usize, range: i32, seed: u32) -> Vec<f32> {
    xorshift(seed)
        .take(len)
        .map(|s| ((s >> 8) as i32 % range) as f32)
        .collect()
}
