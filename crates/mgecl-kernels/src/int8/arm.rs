//! The aarch64 kernel: `sdot` (the dot-product extension: 4 `s8 x s8` products summed into
//! each `i32` lane) on 128-bit registers. The codes are made signed with one XOR
//! (`code ^ 0x80 == code - 128` as `s8`), so the lanes sum `(code - 128) * w` directly; the
//! shift the store undoes is added back when the sums leave the registers.

use std::arch::aarch64::*;
use std::arch::asm;

use super::store::{Output, MAX_WIDTH};
use super::{PackedWeights, Rows, LANES};

/// Rows per block (a pooling window): 4 rows of 16 columns (four registers each) keep 16 accumulators, 4 rows'
/// codes and 4 weight registers in the 32 NEON registers.
const MR: usize = 4;

/// `acc += the 4 dot products of b's 4-byte groups with group LANE of a`.
///
/// # Safety
/// The CPU has the dot-product extension.
#[inline(always)]
unsafe fn sdot<const LANE: i32>(acc: int32x4_t, b: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction the CPU has (the caller's contract).
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {b:v}.16b, {a:v}.4b[{lane}]",
            acc = inout(vreg) acc,
            b = in(vreg) b,
            a = in(vreg) a,
            lane = const LANE,
            options(pure, nomem, nostack),
        );
    }
    acc
}

/// Rows in blocks of [`MR`], columns in blocks of 16.
///
/// # Safety
/// The CPU has NEON and the dot-product extension; `rows` holds `m` rows of `w`'s depth;
/// `out` holds `(m, w.n)` values ([`Output::check`]).
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn gemm(rows: Rows, m: usize, w: &PackedWeights, out: &mut Output, pooled: bool) {
    let n16 = w.n16;
    let (tap_count, groups) = (rows.tap_count(), rows.tap_len() / 4);
    // Each block's sums on their way to the store (one array: no memset per block).
    let mut sums = [[0i32; MAX_WIDTH]; MR];
    let mut i = 0;
    while i < m {
        let count = MR.min(m - i);
        let taps = rows.taps::<MR>(i, count);
        for j in (0..n16).step_by(LANES).take_while(|&j| j < w.n) {
            let mut acc = [[vdupq_n_s32(0); 4]; MR];
            // `t` indexes the second dimension of `taps` and the weights' depth.
            #[allow(clippy::needless_range_loop)]
            for t in 0..tap_count {
                // SAFETY: column j of depth group t * groups is inside the weights.
                let w_tap = unsafe { w.data.as_ptr().add((t * groups * n16 + j) * 4) };
                // The 16 weights of group g for columns j + 4 v..j + 4 v + 4.
                // SAFETY: inside the packed group (n16 pads the columns).
                let weights = |g: usize| -> [int8x16_t; 4] {
                    std::array::from_fn(|v| unsafe { vld1q_s8(w_tap.add((g * n16 + 4 * v) * 4)) })
                };
                let mut g = 0;
                // Four depth groups per load of each row's codes.
                while g + 4 <= groups {
                    let a: [int8x16_t; MR] = std::array::from_fn(|r| {
                        // SAFETY: the run holds groups g..g + 4 (Rows::taps; unused rows
                        // repeat row 0's run).
                        signed(unsafe { vld1q_u8(taps[r.min(count - 1)][t].add(g * 4)) })
                    });
                    macro_rules! step {
                        ($lane:literal) => {
                            let b = weights(g + $lane);
                            for (acc, a) in acc.iter_mut().zip(&a) {
                                for (acc, b) in acc.iter_mut().zip(&b) {
                                    // SAFETY: the CPU has the extension.
                                    *acc = unsafe { sdot::<$lane>(*acc, *b, *a) };
                                }
                            }
                        };
                    }
                    step!(0);
                    step!(1);
                    step!(2);
                    step!(3);
                    g += 4;
                }
                // The last one to three groups, one at a time in lane 0.
                while g < groups {
                    let a: [int8x16_t; MR] = std::array::from_fn(|r| {
                        // SAFETY: 4 bytes of group g of the run.
                        let four = unsafe {
                            taps[r.min(count - 1)][t]
                                .add(g * 4)
                                .cast::<u32>()
                                .read_unaligned()
                        };
                        signed(vreinterpretq_u8_u32(vdupq_n_u32(four)))
                    });
                    let b = weights(g);
                    for (acc, a) in acc.iter_mut().zip(&a) {
                        for (acc, b) in acc.iter_mut().zip(&b) {
                            // SAFETY: the CPU has the extension.
                            *acc = unsafe { sdot::<0>(*acc, *b, *a) };
                        }
                    }
                    g += 1;
                }
            }
            let cols = j..(j + LANES).min(w.n);
            for (sums, acc) in sums.iter_mut().zip(&acc).take(count) {
                for (v, acc) in acc.iter().enumerate() {
                    // SAFETY: 4 values into the row's array.
                    unsafe { vst1q_s32(sums.as_mut_ptr().add(4 * v), *acc) };
                }
                // Back to the raw sums the store expects.
                for (sum, shift) in sums.iter_mut().zip(&w.shift[cols.clone()]) {
                    *sum = sum.wrapping_add(*shift);
                }
            }
            out.store(sums.as_flattened(), MAX_WIDTH, (i, count), cols, w, pooled);
        }
        i += count;
    }
}

/// `code - 128` as `s8`.
#[inline(always)]
fn signed(codes: uint8x16_t) -> int8x16_t {
    // SAFETY: NEON is part of aarch64.
    unsafe { vreinterpretq_s8_u8(veorq_u8(codes, vdupq_n_u8(0x80))) }
}
