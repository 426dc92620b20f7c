//! The x86 kernels: `vpdpbusd` (4 `u8 x s8` products summed into each `i32` lane) on
//! 512-bit (AVX-512 VNNI) or 256-bit (AVX-VNNI) registers. Each computes a block of rows x
//! columns with its accumulators in registers for the whole depth, then hands the sums to
//! [`Output::store`] while they are in L1.

use std::arch::x86_64::*;

use super::store::{Epilogue, Output, MAX_WIDTH};
use super::{PackedWeights, Rows, LANES, MAX_TAPS};

/// The 4 codes at `tap + 4 * group` as one `i32`: what the kernels broadcast.
///
/// # Safety
/// `tap` points at a run of at least `4 * group + 4` bytes.
#[inline(always)]
unsafe fn group_codes(tap: *const u8, group: usize) -> i32 {
    // SAFETY: inside the run (the caller's contract); unaligned reads are allowed.
    unsafe { tap.add(group * 4).cast::<i32>().read_unaligned() }
}

pub(super) mod avx512 {
    use super::*;

    /// Rows of the product one block computes.
    const MR: usize = 12;
    /// How many depth groups ahead the weights are prefetched.
    const PREFETCH: usize = 8;

    /// A block: the rows' run pointers, the rows, `(first row, row count)`, first column.
    type BlockAt<'a, 'r> = (
        &'a [[*const u8; MAX_TAPS]; MR],
        &'a Rows<'r>,
        (usize, usize),
        usize,
    );

    /// Rows in blocks of [`MR`], columns in blocks of 32 (then a last block of 16).
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI; `rows` holds `m` rows of `w`'s depth; `out` holds
    /// `(m, w.n)` values ([`Output::check`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(in super::super) unsafe fn gemm(
        rows: Rows,
        m: usize,
        w: &PackedWeights,
        out: &mut Output,
        pooled: bool,
    ) {
        // Each block's sums on their way to the store: one array for the whole product (a
        // fresh one per block cost a 1.5 KB memset each time, 8% of a shallow layer).
        let mut sums = [[0i32; MAX_WIDTH]; MR];
        let mut i = 0;
        while i < m {
            let count = MR.min(m - i);
            let taps = rows.taps::<MR>(i, count);
            let mut j = 0;
            while j < w.n16 {
                let wide = j + 2 * LANES <= w.n16;
                let block = (&taps, &rows, (i, count), j);
                // SAFETY: the taps hold rows i..i + count and columns j..j + 32 (or 16) are
                // inside the weights (the caller's contract; n16 pads them).
                unsafe {
                    if wide {
                        rows_block::<2>(block, w, &mut sums, out, pooled);
                    } else {
                        rows_block::<1>(block, w, &mut sums, out, pooled);
                    }
                }
                j += if wide { 2 * LANES } else { LANES };
            }
            i += count;
        }
    }

    /// [`block`] with the row count as a constant, so that the compiler unrolls the rows
    /// and keeps every accumulator in a register; then the store.
    ///
    /// # Safety
    /// As [`block`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn rows_block<const V: usize>(
        (taps, rows, (i, count), j): BlockAt,
        w: &PackedWeights,
        sums: &mut [[i32; MAX_WIDTH]; MR],
        out: &mut Output,
        pooled: bool,
    ) {
        let (tap_count, groups) = (rows.tap_count(), rows.tap_len() / 4);
        macro_rules! with_rows {
            ($($r:literal)*) => {
                match count {
                    // SAFETY: as this function's.
                    $($r => unsafe { block::<V, $r>(taps, (tap_count, groups), j, w, sums) },)*
                    _ => unreachable!("at most MR rows"),
                }
            };
        }
        with_rows!(1 2 3 4 5 6 7 8 9 10 11 12);
        let cols = j..(j + V * LANES).min(w.n);
        // SAFETY: the CPU has AVX-512 F and BW (the caller's contract).
        unsafe { store(sums, (i, count), cols, w, out, pooled) };
    }

    /// Columns `j..j + 16 * V` of the product's raw sums for `R` rows, row `r`'s depth read
    /// as `tap_count` runs of `4 * groups` codes at `taps[r][..]`, into `sums`.
    ///
    /// # Safety
    /// As [`gemm`]; `R <= MR`, `taps[..R][..tap_count]` point at runs of `4 * groups` codes,
    /// `tap_count * groups * 4 == w.k4` and `j + 16 * V <= w.n16`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn block<const V: usize, const R: usize>(
        taps: &[[*const u8; MAX_TAPS]; MR],
        (tap_count, groups): (usize, usize),
        j: usize,
        w: &PackedWeights,
        sums: &mut [[i32; MAX_WIDTH]; MR],
    ) {
        let n16 = w.n16;
        let mut acc = [[_mm512_setzero_si512(); V]; R];
        // `t` indexes the second dimension of `taps` and the weights' depth.
        #[allow(clippy::needless_range_loop)]
        for t in 0..tap_count {
            let runs: [*const u8; R] = std::array::from_fn(|r| taps[r][t]);
            // SAFETY: column j of depth group t * groups is inside the weights.
            let w_tap = unsafe { w.data.as_ptr().add((t * groups * n16 + j) * 4) };
            for group in 0..groups {
                // The weights PREFETCH groups ahead: the panel of a deep layer (2304 x 32
                // columns: 74 KB) streams from L2 for every block of rows.
                for v in 0..V {
                    let ahead = w_tap.wrapping_add(((group + PREFETCH) * n16 + v * LANES) * 4);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                }
                let mut b = [_mm512_setzero_si512(); V];
                for (v, b) in b.iter_mut().enumerate() {
                    // SAFETY: 64 bytes of the group's packed row at columns j + 16 v.
                    *b = unsafe {
                        _mm512_loadu_si512(w_tap.add((group * n16 + v * LANES) * 4).cast())
                    };
                }
                for (run, acc) in runs.iter().zip(acc.iter_mut()) {
                    // SAFETY: each run holds 4 * groups codes (the caller's contract).
                    let x = _mm512_set1_epi32(unsafe { group_codes(*run, group) });
                    for v in 0..V {
                        acc[v] = _mm512_dpbusd_epi32(acc[v], x, b[v]);
                    }
                }
            }
        }
        for (sums, acc) in sums.iter_mut().zip(&acc) {
            for (v, acc) in acc.iter().enumerate() {
                // SAFETY: 16 values into the row's array (V <= 2).
                unsafe { _mm512_storeu_si512(sums.as_mut_ptr().add(v * LANES).cast(), *acc) };
            }
        }
    }

    /// [`Output::store`] for AVX-512: the epilogue on 16 columns per instruction, its
    /// per-column operands loaded once per block. The same IEEE operations in the same
    /// order as the generic definition (`tests.rs` checks every bit; only a NaN output, which
    /// finite inputs and weights never give, may pool differently).
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW; the block is inside `out` ([`Output::check`]).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline(never)]
    unsafe fn store(
        sums: &[[i32; MAX_WIDTH]; MR],
        (i, rows): (usize, usize),
        cols: std::ops::Range<usize>,
        w: &PackedWeights,
        out: &mut Output,
        pooled: bool,
    ) {
        let (epilogue, target) = match out {
            Output::Sums(_) => {
                let raw = sums.as_flattened();
                return out.store(raw, MAX_WIDTH, (i, rows), cols, w, pooled);
            }
            Output::Floats(dst, e) => (*e, Target::Floats(dst.as_mut_ptr())),
            Output::Codes {
                codes,
                epilogue,
                scale,
                zero_point,
            } => (
                *epilogue,
                Target::Codes(codes.as_mut_ptr(), 1.0 / *scale, i32::from(*zero_point)),
            ),
        };
        let block = Block {
            sums,
            first: i,
            rows,
            n: w.n,
            shift: &w.shift,
            epilogue,
            target,
        };
        // Without a residual, every step of the epilogue is non-decreasing in the sum when
        // the multipliers are positive and the slope is not negative: the max of a window's
        // 4 sums gives the max of its 4 outputs, bit for bit, for one epilogue.
        let monotone = epilogue.addend.is_none()
            && epilogue.slope.is_none_or(|s| s >= 0.0)
            && epilogue.multipliers[cols.clone()].iter().all(|&m| m > 0.0);
        // One loop per combination, its choices constants (no branch per vector).
        // SAFETY (all): as this function's.
        for (v, j) in cols.clone().step_by(LANES).enumerate() {
            let valid = (cols.end - j).min(LANES);
            let at = (v, j, valid);
            unsafe {
                match (
                    matches!(target, Target::Codes(..)),
                    epilogue.addend.is_some(),
                    pooled,
                ) {
                    (true, false, false) => block.finish::<true, false, 1, false>(at),
                    (true, false, true) if monotone => block.finish::<true, false, 4, true>(at),
                    (true, false, true) => block.finish::<true, false, 4, false>(at),
                    (true, true, false) => block.finish::<true, true, 1, false>(at),
                    (true, true, true) => block.finish::<true, true, 4, false>(at),
                    (false, false, false) => block.finish::<false, false, 1, false>(at),
                    (false, false, true) if monotone => block.finish::<false, false, 4, true>(at),
                    (false, false, true) => block.finish::<false, false, 4, false>(at),
                    (false, true, false) => block.finish::<false, true, 1, false>(at),
                    (false, true, true) => block.finish::<false, true, 4, false>(at),
                }
            }
        }
    }

    /// Where [`store`] writes: f32 values, or codes (`1 / scale`, zero point).
    #[derive(Clone, Copy)]
    enum Target {
        Floats(*mut f32),
        Codes(*mut u8, f32, i32),
    }

    /// One block's sums on their way out.
    struct Block<'a> {
        sums: &'a [[i32; MAX_WIDTH]; MR],
        first: usize,
        rows: usize,
        n: usize,
        shift: &'a [i32],
        epilogue: Epilogue<'a>,
        target: Target,
    }

    impl Block<'_> {
        /// Columns `j..j + valid` (the `v`-th 16 of the block), every row: the epilogue,
        /// then codes when `CODES`, the addend when `ADDEND`; `GROUP` rows per output row
        /// (4: a pooling window, their max), through the max of their sums when `POOL_SUMS`.
        ///
        /// # Safety
        /// The CPU has AVX-512 F and BW; the block is inside the target and the addend.
        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        unsafe fn finish<
            const CODES: bool,
            const ADDEND: bool,
            const GROUP: usize,
            const POOL_SUMS: bool,
        >(
            &self,
            (v, j, valid): (usize, usize, usize),
        ) {
            let e = &self.epilogue;
            let mask: __mmask16 = if valid == LANES {
                0xFFFF
            } else {
                (1u16 << valid) - 1
            };
            // SAFETY (the loads): the mask reads columns j..j + valid, all below n.
            let load_i32 =
                |values: &[i32]| unsafe { _mm512_maskz_loadu_epi32(mask, values.as_ptr().add(j)) };
            let load_f32 =
                |values: &[f32]| unsafe { _mm512_maskz_loadu_ps(mask, values.as_ptr().add(j)) };
            // (sum - shift) + offset == sum + (offset - shift) in wrapping i32.
            let offset = _mm512_sub_epi32(load_i32(e.offsets), load_i32(self.shift));
            let multiplier = load_f32(e.multipliers);
            // A missing bias adds +0.0 and a missing activation is max(y, 1 * y): the same
            // bits (y is never -0.0: a zero sum gives +0.0, a sum of two values +0.0).
            let bias = e.bias.map_or(_mm512_setzero_ps(), load_f32);
            let slope = _mm512_set1_ps(e.slope.unwrap_or(1.0));
            let (inverse, zero) = match self.target {
                Target::Codes(_, inverse, zero) => (inverse, zero),
                Target::Floats(_) => (1.0, 0),
            };
            let (inverse, zero) = (_mm512_set1_ps(inverse), _mm512_set1_epi32(zero));
            let addend = e.addend.unwrap_or(&[]);
            // SAFETY: 16 values of row r's array (v < 2).
            let sum_of = |r: usize| unsafe {
                _mm512_loadu_si512(self.sums[r].as_ptr().add(v * LANES).cast())
            };
            // The epilogue of a sum whose row's first value is at `at` in (m, n).
            let value = |sum: __m512i, at: usize| {
                let mut y = _mm512_mul_ps(
                    _mm512_cvtepi32_ps(_mm512_add_epi32(sum, offset)),
                    multiplier,
                );
                y = _mm512_add_ps(y, bias);
                if ADDEND {
                    // SAFETY: the (m, n) addend holds the row (Output::check).
                    let a = unsafe { _mm512_maskz_loadu_ps(mask, addend.as_ptr().add(at)) };
                    y = _mm512_add_ps(y, a);
                }
                // f32::max returns the operand that is not NaN (inf * 0 is NaN); max_ps
                // returns its second when either is NaN: y goes second.
                _mm512_max_ps(_mm512_mul_ps(slope, y), y)
            };
            // code_of before the narrowing store: round(y / scale) (ties to even, the
            // default rounding mode) + zero point, clamped to 0..; the store saturates
            // above 255. Only the upper clamp before the conversion: below, its out-of-range
            // value (i32::MIN) clamps to 0 as well, and `min(512, NaN)` keeps the NaN for it
            // too (code_of's NaN gives code 0).
            let code = |y: __m512| {
                let t = _mm512_min_ps(_mm512_set1_ps(512.0), _mm512_mul_ps(y, inverse));
                _mm512_max_epi32(
                    _mm512_add_epi32(_mm512_cvtps_epi32(t), zero),
                    _mm512_setzero_si512(),
                )
            };
            let n = self.n;
            for r in (0..self.rows).step_by(GROUP) {
                let row = self.first + r;
                let at = row / GROUP * n + j;
                if CODES {
                    let q = if POOL_SUMS {
                        let sum =
                            (1..GROUP).fold(sum_of(r), |s, q| _mm512_max_epi32(s, sum_of(r + q)));
                        code(value(sum, row * n + j))
                    } else {
                        (1..GROUP).fold(code(value(sum_of(r), row * n + j)), |m, q| {
                            _mm512_max_epi32(m, code(value(sum_of(r + q), (row + q) * n + j)))
                        })
                    };
                    if let Target::Codes(codes, ..) = self.target {
                        // SAFETY: columns j..j + valid of output row at / n are in the codes.
                        unsafe {
                            _mm512_mask_cvtusepi32_storeu_epi8(codes.add(at).cast(), mask, q)
                        };
                    }
                } else {
                    let y = if POOL_SUMS {
                        let sum =
                            (1..GROUP).fold(sum_of(r), |s, q| _mm512_max_epi32(s, sum_of(r + q)));
                        value(sum, row * n + j)
                    } else {
                        (1..GROUP).fold(value(sum_of(r), row * n + j), |m, q| {
                            _mm512_max_ps(value(sum_of(r + q), (row + q) * n + j), m)
                        })
                    };
                    if let Target::Floats(dst) = self.target {
                        // SAFETY: columns j..j + valid of output row at / n are in dst.
                        unsafe { _mm512_mask_storeu_ps(dst.add(at), mask, y) };
                    }
                }
            }
        }
    }
}

pub(super) mod avx256 {
    use super::*;

    /// Rows per block: 4 rows (a pooling window) of 16 columns (two registers each) keep 8
    /// accumulators, the weights and the broadcast in the 16 registers AVX2 has.
    const MR: usize = 4;

    /// Rows in blocks of [`MR`], columns in blocks of 16 (one packed group: two registers of
    /// 8 `i32`).
    ///
    /// # Safety
    /// The CPU has AVX-VNNI; `rows` holds `m` rows of `w`'s depth; `out` holds `(m, w.n)`
    /// values ([`Output::check`]).
    #[target_feature(enable = "avx2,avxvnni")]
    pub(in super::super) unsafe fn gemm(
        rows: Rows,
        m: usize,
        w: &PackedWeights,
        out: &mut Output,
        pooled: bool,
    ) {
        let n16 = w.n16;
        let (tap_count, groups) = (rows.tap_count(), rows.tap_len() / 4);
        // Each block's sums on their way to the store (one array: no memset per block).
        let mut sums = [[0i32; LANES]; MR];
        let mut i = 0;
        while i < m {
            let count = MR.min(m - i);
            let taps = rows.taps::<MR>(i, count);
            for j in (0..n16).step_by(LANES).take_while(|&j| j < w.n) {
                let mut acc = [[_mm256_setzero_si256(); 2]; MR];
                for t in 0..tap_count {
                    // SAFETY: column j of depth group t * groups is inside the weights.
                    let w_tap = unsafe { w.data.as_ptr().add((t * groups * n16 + j) * 4) };
                    for group in 0..groups {
                        // SAFETY: the 64 packed bytes of columns j..j + 16 at this depth.
                        let b = unsafe {
                            let at = w_tap.add(group * n16 * 4);
                            [
                                _mm256_loadu_si256(at.cast()),
                                _mm256_loadu_si256(at.add(32).cast()),
                            ]
                        };
                        for (taps, acc) in taps.iter().zip(acc.iter_mut()).take(count) {
                            // SAFETY: each run holds 4 * groups codes (Rows::taps).
                            let x = _mm256_set1_epi32(unsafe { group_codes(taps[t], group) });
                            acc[0] = _mm256_dpbusd_avx_epi32(acc[0], x, b[0]);
                            acc[1] = _mm256_dpbusd_avx_epi32(acc[1], x, b[1]);
                        }
                    }
                }
                for (sums, acc) in sums.iter_mut().zip(&acc).take(count) {
                    // SAFETY: 16 values into the row's array.
                    unsafe {
                        _mm256_storeu_si256(sums.as_mut_ptr().cast(), acc[0]);
                        _mm256_storeu_si256(sums.as_mut_ptr().add(8).cast(), acc[1]);
                    }
                }
                let cols = j..(j + LANES).min(w.n);
                // SAFETY: the CPU has AVX2 (the caller's contract).
                unsafe { store(&sums, (i, count), cols, w, out, pooled) };
            }
            i += count;
        }
    }

    /// [`Output::store`] compiled for AVX2, kept out of [`gemm`]'s loop so that its
    /// registers do not push the accumulators out of theirs.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    #[inline(never)]
    unsafe fn store(
        sums: &[[i32; LANES]; MR],
        rows: (usize, usize),
        cols: std::ops::Range<usize>,
        w: &PackedWeights,
        out: &mut Output,
        pooled: bool,
    ) {
        out.store(sums.as_flattened(), LANES, rows, cols, w, pooled);
    }
}
