//! Integer matrix products for int8 models: activations quantised to `s8` and stored shifted
//! by 128 as `u8` (what x86's `vpdpbusd` multiplies), times `s8` weights, summed exactly in
//! `i32`: `dst[i][j] = sum_l (a[i][l] - 128) * w[l][j]`. The shift is undone with the
//! weights' column sums, computed once when they are packed.
//!
//! Picked at run time: AVX-512 VNNI (64 multiply-adds per instruction), AVX-VNNI (the same
//! on 256-bit registers, for CPUs without AVX-512), else a portable loop.
//! Both compute the same integers, so results do not depend on the machine or the number of
//! threads.

use rayon::prelude::*;

/// The shift [`gemm_u8s8`] undoes: it multiplies `a - ZERO_POINT`, so symmetric `s8`
/// activations `v` are stored as the `u8` `v + 128`.
pub const ZERO_POINT: u8 = 128;

/// Columns one AVX-512 register holds (16 lanes of `i32`).
const LANES: usize = 16;
/// Rows each parallel task computes.
const ROWS_PER_TASK: usize = 256;

/// Quantises activations with one scale and zero point (affine, as PyTorch's `quint8`):
/// `code = clamp(round(x / scale) + zero_point, 0, 255)`, rounding ties to even. The code of
/// 0.0 is `zero_point` (the padding [`crate::conv::im2col_codes`] writes). [`gemm_u8s8`]
/// multiplies `code - ZERO_POINT`; a caller with another zero point adds
/// `(ZERO_POINT - zero_point) * sum_l w[l][j]` to column `j`.
///
/// # Panics
/// When `out` is shorter than `x`, or `scale` is not finite and positive.
pub fn quantize_activations(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    assert!(out.len() >= x.len() && scale.is_finite() && scale > 0.0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { quantize_avx2(x, scale, zero_point, out) };
    }
    quantize_loop(x, scale, zero_point, out);
}

/// [`quantize_loop`] compiled for AVX2 (8 lanes instead of SSE2's 4): the same IEEE
/// operations, so the same codes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    quantize_loop(x, scale, zero_point, out);
}

#[inline(always)]
fn quantize_loop(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    let inverse = 1.0 / scale;
    let zero = f32::from(zero_point);
    for (o, &v) in out.iter_mut().zip(x) {
        let code = (round_ties_even(v * inverse) + zero).clamp(0.0, 255.0);
        // An integer in 0..=255 plus 2^23 is that integer in the low mantissa bits: a bit
        // operation the compiler vectorises (a float-to-integer cast it does one by one).
        *o = (code + 8_388_608.0).to_bits() as u8;
    }
}

/// `v.round_ties_even()` for the values [`quantize_activations`] keeps, in plain arithmetic
/// the compiler vectorises (the library call it makes without SSE4.1 does not): adding and
/// subtracting 1.5 * 2^23 rounds to an integer, ties to even, under the default rounding
/// mode. `v` is first clamped to +-512, which changes no code (they clamp to 0..=255 after
/// adding a zero point of at most 255).
#[inline(always)]
fn round_ties_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v.clamp(-512.0, 512.0) + MAGIC) - MAGIC
}

/// Quantises row-major `(k, n)` weights per column (a convolution's output channel):
/// `scale[j] = max_l |w[l][j]| / 127`, `q = round(w / scale[j])` (ties to even). A column of
/// zeros gets scale 1. Returns the codes and the scales.
///
/// # Panics
/// When `weights.len() != k * n` or a weight is not finite.
pub fn quantize_weights(weights: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    assert_eq!(weights.len(), k * n);
    assert!(
        weights.iter().all(|v| v.is_finite()),
        "weights must be finite"
    );
    let scales: Vec<f32> = (0..n)
        .map(|j| {
            let largest = (0..k)
                .map(|l| weights[l * n + j].abs())
                .fold(0.0f32, f32::max);
            if largest > 0.0 {
                largest / 127.0
            } else {
                1.0
            }
        })
        .collect();
    let codes = weights
        .iter()
        .enumerate()
        .map(|(i, &v)| (v / scales[i % n]).round_ties_even().clamp(-127.0, 127.0) as i8)
        .collect();
    (codes, scales)
}

/// Weights `(k, n)` packed for [`gemm_u8s8`]: `k` padded to a multiple of 4 and `n` to a
/// multiple of 16 with zeros, stored `[k / 4][n][4]` so that one 64-byte load holds 4 depths
/// of 16 columns, plus each column's sum for undoing the activations' shift.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    /// `k` rounded up to a multiple of 4: the row stride the activations need.
    k4: usize,
    /// `n` rounded up to a multiple of 16.
    n16: usize,
    data: Vec<i8>,
    /// `128 * sum_l w[l][j]`, per column.
    shift: Vec<i32>,
}

impl PackedWeights {
    /// Packs row-major `(k, n)` weights.
    ///
    /// # Panics
    /// When `weights.len() != k * n`.
    pub fn new(weights: &[i8], k: usize, n: usize) -> Self {
        assert_eq!(weights.len(), k * n);
        let (k4, n16) = (k.div_ceil(4) * 4, n.div_ceil(LANES) * LANES);
        let mut data = vec![0i8; k4 * n16];
        for l in 0..k {
            for j in 0..n {
                data[(l / 4 * n16 + j) * 4 + l % 4] = weights[l * n + j];
            }
        }
        let shift = (0..n)
            .map(|j| (0..k).map(|l| i32::from(weights[l * n + j])).sum::<i32>() * 128)
            .collect();
        PackedWeights {
            k,
            n,
            k4,
            n16,
            data,
            shift,
        }
    }

    /// Depth of the product.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of the product.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The row stride (in bytes) [`gemm_u8s8`]'s activations need: `k` rounded up to a
    /// multiple of 4. The bytes past `k` may hold anything.
    pub fn row_stride(&self) -> usize {
        self.k4
    }
}

/// `dst (m, n) row-major = sum_l (a[i][l] - 128) * w[l][j]`, exact in `i32`, with `a`'s rows
/// `w.row_stride()` bytes apart. Rows are split across rayon's threads.
///
/// # Panics
/// When `a` holds fewer than `m` rows or `dst` fewer than `m * n` values.
pub fn gemm_u8s8(dst: &mut [i32], a: &[u8], m: usize, w: &PackedWeights) {
    let (n, lda) = (w.n, w.k4);
    assert!(a.len() >= m * lda && dst.len() >= m * n);
    let kernel = Kernel::detect();
    dst[..m * n]
        .par_chunks_mut(ROWS_PER_TASK * n)
        .zip(a[..m * lda].par_chunks(ROWS_PER_TASK * lda))
        .for_each(|(dst, a)| kernel.run(dst, a, dst.len() / n, w));
}

/// The implementations, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 VNNI (`vpdpbusd` on 512-bit registers).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// AVX-VNNI (`vpdpbusd` on 256-bit registers).
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// Plain loops (the compiler vectorises them where it can).
    Portable,
}

impl Kernel {
    /// The best implementation this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            return Kernel::Avx512Vnni;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avxvnni") {
            return Kernel::AvxVnni;
        }
        Kernel::Portable
    }

    /// Whether this CPU has the implementation's instructions.
    pub fn supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => std::arch::is_x86_feature_detected!("avxvnni"),
            Kernel::Portable => true,
        }
    }

    /// Every implementation this CPU runs, best first (for tests and benchmarks).
    pub fn available() -> Vec<Self> {
        let all = [
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni,
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni,
            Kernel::Portable,
        ];
        all.into_iter().filter(|k| k.supported()).collect()
    }

    /// [`gemm_u8s8`] on one thread with this implementation.
    ///
    /// # Panics
    /// As [`gemm_u8s8`]; also when this CPU lacks the implementation's instructions.
    pub fn run(self, dst: &mut [i32], a: &[u8], m: usize, w: &PackedWeights) {
        assert!(a.len() >= m * w.k4 && dst.len() >= m * w.n);
        assert!(self.supported(), "this CPU lacks {self:?}'s instructions");
        match self {
            // SAFETY (both): the CPU has the features (asserted above); the slices are as
            // long as the kernel reads and writes (asserted above).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe { avx512::gemm(dst, a, m, w) },
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => unsafe { avx256::gemm(dst, a, m, w) },
            Kernel::Portable => portable(dst, a, m, w),
        }
    }
}

fn portable(dst: &mut [i32], a: &[u8], m: usize, w: &PackedWeights) {
    let (n, n16, lda) = (w.n, w.n16, w.k4);
    let mut row = vec![0i32; n16];
    for i in 0..m {
        row.fill(0);
        let a_row = &a[i * lda..(i + 1) * lda];
        for (group, a4) in a_row.chunks_exact(4).enumerate() {
            let block = &w.data[group * n16 * 4..(group + 1) * n16 * 4];
            for (acc, w4) in row.iter_mut().zip(block.chunks_exact(4)) {
                *acc += a4
                    .iter()
                    .zip(w4)
                    .map(|(&x, &y)| i32::from(x) * i32::from(y))
                    .sum::<i32>();
            }
        }
        for ((out, acc), shift) in dst[i * n..(i + 1) * n].iter_mut().zip(&row).zip(&w.shift) {
            *out = acc - shift;
        }
    }
}

/// The 4 codes of row `r` at depth group `group` as one `i32`: what the VNNI kernels broadcast.
///
/// # Safety
/// `a_rows` points at rows of `lda` bytes, and row `r` holds bytes `4 * group..4 * group + 4`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn group_codes(a_rows: *const u8, r: usize, lda: usize, group: usize) -> i32 {
    // SAFETY: inside row r (the caller's contract); unaligned reads are allowed.
    unsafe {
        a_rows
            .add(r * lda + group * 4)
            .cast::<i32>()
            .read_unaligned()
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{group_codes, PackedWeights, LANES};

    /// Rows of `dst` one micro-kernel call computes.
    const MR: usize = 12;

    /// Rows in blocks of [`MR`], columns in blocks of 32 (then a last block of 16), each
    /// block's accumulators in registers for the whole depth.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI; `a` holds `m` rows of `w.k4` bytes and `dst`
    /// `m * w.n` values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn gemm(dst: &mut [i32], a: &[u8], m: usize, w: &PackedWeights) {
        let mut i = 0;
        while i < m {
            let rows = MR.min(m - i);
            let mut j = 0;
            while j < w.n16 {
                // SAFETY: rows i..i + rows and columns j..j + 32 (or 16) are inside the
                // operands (the caller's contract; n16 pads the weights).
                unsafe {
                    if j + 2 * LANES <= w.n16 {
                        block::<2>(dst, a, i, rows, j, w);
                    } else {
                        block::<1>(dst, a, i, rows, j, w);
                    }
                }
                j += if j + 2 * LANES <= w.n16 {
                    2 * LANES
                } else {
                    LANES
                };
            }
            i += rows;
        }
    }

    /// `dst` rows `i..i + rows`, columns `j..j + 16 * V` (clipped to `w.n`).
    ///
    /// # Safety
    /// As [`gemm`]; `rows <= MR` and `j + 16 * V <= w.n16`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn block<const V: usize>(
        dst: &mut [i32],
        a: &[u8],
        i: usize,
        rows: usize,
        j: usize,
        w: &PackedWeights,
    ) {
        let (lda, n16) = (w.k4, w.n16);
        let mut acc = [[_mm512_setzero_si512(); V]; MR];
        // SAFETY: row i and column j are inside the operands (the caller's contract).
        let (a_rows, w_cols) = unsafe { (a.as_ptr().add(i * lda), w.data.as_ptr().add(j * 4)) };
        for group in 0..lda / 4 {
            let mut b = [_mm512_setzero_si512(); V];
            for (v, b) in b.iter_mut().enumerate() {
                // SAFETY: 64 bytes of the group's packed row at columns j + 16 v.
                *b =
                    unsafe { _mm512_loadu_si512(w_cols.add((group * n16 + v * LANES) * 4).cast()) };
            }
            for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                // SAFETY: row i + r holds depth group `group` (the caller's contract).
                let x = _mm512_set1_epi32(unsafe { group_codes(a_rows, r, lda, group) });
                for v in 0..V {
                    acc[v] = _mm512_dpbusd_epi32(acc[v], x, b[v]);
                }
            }
        }
        // Store: subtract the shift; clip the columns to n (masked).
        for (r, acc) in acc.iter().enumerate().take(rows) {
            // SAFETY: row i + r is inside dst.
            let out = unsafe { dst.as_mut_ptr().add((i + r) * w.n) };
            for (v, acc) in acc.iter().enumerate() {
                let col = j + v * LANES;
                if col >= w.n {
                    break;
                }
                let valid = (w.n - col).min(LANES);
                let mask: __mmask16 = if valid == LANES {
                    0xFFFF
                } else {
                    (1u16 << valid) - 1
                };
                // SAFETY: the mask reads only columns col..col + valid, all below n.
                let shift = unsafe { _mm512_maskz_loadu_epi32(mask, w.shift.as_ptr().add(col)) };
                let value = _mm512_sub_epi32(*acc, shift);
                // SAFETY: columns col..col + valid of row i + r are inside dst.
                unsafe { _mm512_mask_storeu_epi32(out.add(col), mask, value) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx256 {
    use std::arch::x86_64::*;

    use super::{group_codes, PackedWeights, LANES};

    /// Rows per block: 6 rows of 16 columns (two registers each) keep 12 accumulators, the
    /// weights and the broadcast in the 16 registers AVX2 has.
    const MR: usize = 6;

    /// Rows in blocks of [`MR`], columns in blocks of 16 (one packed group: two registers of
    /// 8 `i32`), the accumulators in registers for the whole depth.
    ///
    /// # Safety
    /// The CPU has AVX-VNNI; `a` holds `m` rows of `w.k4` bytes and `dst` `m * w.n` values.
    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn gemm(dst: &mut [i32], a: &[u8], m: usize, w: &PackedWeights) {
        let (lda, n16) = (w.k4, w.n16);
        let mut i = 0;
        while i < m {
            let rows = MR.min(m - i);
            for j in (0..n16).step_by(LANES) {
                let mut acc = [[_mm256_setzero_si256(); 2]; MR];
                // SAFETY: row i and column j are inside the operands (the caller's contract).
                let (a_rows, w_cols) =
                    unsafe { (a.as_ptr().add(i * lda), w.data.as_ptr().add(j * 4)) };
                for group in 0..lda / 4 {
                    // SAFETY: the 64 packed bytes of columns j..j + 16 at this depth.
                    let b = unsafe {
                        let at = w_cols.add(group * n16 * 4);
                        [
                            _mm256_loadu_si256(at.cast()),
                            _mm256_loadu_si256(at.add(32).cast()),
                        ]
                    };
                    for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                        // SAFETY: row i + r holds depth group `group` (the caller's contract).
                        let x = _mm256_set1_epi32(unsafe { group_codes(a_rows, r, lda, group) });
                        acc[0] = _mm256_dpbusd_avx_epi32(acc[0], x, b[0]);
                        acc[1] = _mm256_dpbusd_avx_epi32(acc[1], x, b[1]);
                    }
                }
                let valid = w.n.saturating_sub(j).min(LANES);
                for (r, acc) in acc.iter().enumerate().take(rows) {
                    let mut values = [0i32; LANES];
                    // SAFETY: 16 values into a local array.
                    unsafe {
                        _mm256_storeu_si256(values.as_mut_ptr().cast(), acc[0]);
                        _mm256_storeu_si256(values.as_mut_ptr().add(8).cast(), acc[1]);
                    }
                    let out = &mut dst[(i + r) * w.n + j..][..valid];
                    for ((o, v), shift) in out.iter_mut().zip(values).zip(&w.shift[j..]) {
                        *o = v - shift;
                    }
                }
            }
            i += rows;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reproducible sequence covering the whole range of each type.
    fn bytes(len: usize, seed: u32) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9e37_79b9) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            })
            .collect()
    }

    /// Every implementation equals the definition exactly, for shapes with row, column and
    /// depth tails, the extremes of both types included (the largest products and sums).
    #[test]
    fn products_match_the_definition_exactly() {
        for (m, k, n) in [
            (1, 1, 1),
            (9, 7, 5),
            (17, 27, 32),
            (3, 288, 80),
            (20, 13, 48),
            (8, 4, 17),
            (25, 40, 33),
            (24, 12, 64),
        ] {
            let mut a = bytes(m * k, 3);
            let mut w: Vec<i8> = bytes(k * n, 7).into_iter().map(|b| b as i8).collect();
            a[0] = 255;
            w[0] = -128;
            let packed = PackedWeights::new(&w, k, n);
            let lda = packed.row_stride();
            // Rows padded to the stride with bytes that must not count.
            let mut rows = vec![0xEEu8; m * lda];
            for i in 0..m {
                rows[i * lda..i * lda + k].copy_from_slice(&a[i * k..(i + 1) * k]);
            }
            let want: Vec<i32> = (0..m * n)
                .map(|p| {
                    let (i, j) = (p / n, p % n);
                    (0..k)
                        .map(|l| (i32::from(a[i * k + l]) - 128) * i32::from(w[l * n + j]))
                        .sum()
                })
                .collect();
            for kernel in Kernel::available() {
                let mut dst = vec![i32::MIN; m * n + 3];
                kernel.run(&mut dst, &rows, m, &packed);
                assert_eq!(&dst[..m * n], &want[..], "{kernel:?} {m}x{k}x{n}");
                assert!(
                    dst[m * n..].iter().all(|&v| v == i32::MIN),
                    "{kernel:?}: tail written"
                );
            }
            let mut dst = vec![0; m * n];
            gemm_u8s8(&mut dst, &rows, m, &packed);
            assert_eq!(dst, want);
        }
    }

    #[test]
    fn quantisation_by_hand() {
        let mut out = [0u8; 7];
        let x = [0.0, 0.25, 0.75, -0.25, 100.0, -100.0, 0.5];
        quantize_activations(&x, 0.5, 128, &mut out);
        // 0.5 and 1.5 round to even (0 and 2); out of range clamps to 0 and 255.
        assert_eq!(out, [128, 128, 130, 128, 255, 0, 129]);
        quantize_activations(&x, 0.5, 3, &mut out);
        assert_eq!(out, [3, 3, 5, 3, 203, 0, 4]);
        let (codes, scales) = quantize_weights(&[1.0, 0.0, -2.54, 0.0, 0.5, 0.0], 3, 2);
        assert_eq!(scales, [0.02, 1.0]);
        assert_eq!(codes, [50, 0, -127, 0, 25, 0]);
    }

    /// The vectorisable rounding against the standard library's: ties both ways, tiny and
    /// huge values, infinities, every zero point's clamp.
    #[test]
    fn codes_match_the_definition() {
        let mut x: Vec<f32> = (-3000..3000).map(|i| i as f32 * 0.25).collect();
        x.extend([
            1e-8,
            -1e-8,
            0.49999997,
            -0.49999997,
            1e30,
            -1e30,
            8_388_609.0,
        ]);
        x.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::EPSILON,
        ]);
        for (scale, zero_point) in [(1.0, 0u8), (0.5, 128), (2.0, 255), (0.013, 77)] {
            let mut out = vec![0u8; x.len()];
            quantize_activations(&x, scale, zero_point, &mut out);
            // The portable loop gives the same codes as the dispatched (AVX2) one.
            let mut portable = vec![0u8; x.len()];
            quantize_loop(&x, scale, zero_point, &mut portable);
            assert_eq!(portable, out);
            let inverse = 1.0 / scale;
            for (&v, &code) in x.iter().zip(&out) {
                let want =
                    ((v * inverse).round_ties_even() + f32::from(zero_point)).clamp(0.0, 255.0);
                assert_eq!(
                    code, want as u8,
                    "{v} at scale {scale}, zero point {zero_point}"
                );
            }
        }
    }

    /// The largest depth the networks use, all values at the extremes: no overflow.
    #[test]
    fn the_deepest_product_at_the_extremes_is_exact() {
        let (m, k, n) = (2, 9 * 640, 16);
        let packed = PackedWeights::new(&vec![-128i8; k * n], k, n);
        let a = vec![0u8; m * packed.row_stride()];
        for kernel in Kernel::available() {
            let mut dst = vec![0; m * n];
            kernel.run(&mut dst, &a, m, &packed);
            assert!(dst.iter().all(|&v| v == 128 * 128 * k as i32), "{kernel:?}");
        }
    }
}
