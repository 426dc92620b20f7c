//! What a product does with its sums while they are in registers or L1: keep them, or turn
//! them into a convolution's outputs (dequantise, bias, residual, activation, optionally the
//! max of each pooling window of 4 rows) and store those as f32 or as the codes the next
//! layer reads. One generic body, the definition: the portable, AVX-VNNI and `sdot` kernels
//! inline it; the AVX-512 kernel repeats it in intrinsics (`x86.rs`, tested bit for bit).

use std::ops::Range;

use super::{code_of, PackedWeights};

/// Most columns one call of [`Output::store`] handles.
pub(super) const MAX_WIDTH: usize = 32;

/// Per output column `j`, what turns a product's exact sums into values, applied in this
/// order in f32 (no fused multiply-add, so every kernel gets the same bits):
///
/// `y = (sum + offsets[j]) as f32 * multipliers[j]`, then `y += bias[j]`, then
/// `y += addend[i][j]` (row `i` of the product), then `y = max(y, slope * y)` (ReLU at 0,
/// LeakyReLU below 1). A missing step is skipped.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    /// Added to each column's sum (undoes the input's zero point), `n` values.
    pub offsets: &'a [i32],
    /// Input scale times weight scale, `n` values.
    pub multipliers: &'a [f32],
    /// `n` values.
    pub bias: Option<&'a [f32]>,
    /// One value per output, row-major `(m, n)`: a residual added before the activation.
    pub addend: Option<&'a [f32]>,
    /// The activation's slope below zero.
    pub slope: Option<f32>,
}

/// Where a product writes, row-major `(m, n)` (`(m / 4, n)` when
/// [`Kernel::convolve`](super::Kernel::convolve) pools windows of 4 rows).
#[derive(Debug)]
pub enum Output<'a> {
    /// The exact sums `sum_l (a[i][l] - 128) * w[l][j]`.
    Sums(&'a mut [i32]),
    /// The epilogue's values.
    Floats(&'a mut [f32], Epilogue<'a>),
    /// The codes of the epilogue's values, as
    /// [`quantize_activations`](super::quantize_activations) makes them with this scale and
    /// zero point.
    Codes {
        /// `(m, n)` codes.
        codes: &'a mut [u8],
        /// What makes the values.
        epilogue: Epilogue<'a>,
        /// The codes' scale.
        scale: f32,
        /// The code of 0.0.
        zero_point: u8,
    },
}

impl Output<'_> {
    /// Checks that the output holds `(outputs, n)` values and the epilogue `n` columns and
    /// (its addend) the product's `(rows, n)`.
    ///
    /// # Panics
    /// When one is too short, or a scale is not finite and positive.
    pub(super) fn check(&self, rows: usize, outputs: usize, n: usize) {
        let check_epilogue = |e: &Epilogue| {
            assert!(e.offsets.len() >= n && e.multipliers.len() >= n);
            assert!(e.bias.is_none_or(|b| b.len() >= n));
            assert!(e.addend.is_none_or(|a| a.len() >= rows * n));
        };
        match self {
            Output::Sums(dst) => assert!(dst.len() >= outputs * n),
            Output::Floats(dst, e) => {
                assert!(dst.len() >= outputs * n);
                check_epilogue(e);
            }
            Output::Codes {
                codes,
                epilogue,
                scale,
                ..
            } => {
                assert!(codes.len() >= outputs * n && scale.is_finite() && *scale > 0.0);
                check_epilogue(epilogue);
            }
        }
    }

    /// Stores rows `i..i + rows`, columns `cols` (at most [`MAX_WIDTH`]) of the product
    /// from the kernel's raw sums `raw[r * stride + c]` (`c` counting from `cols.start`),
    /// which still include the `128 * sum_l w[l][j]` shift. With `pooled`, `i` and `rows`
    /// are multiples of 4 and each 4 rows (a pooling window) store their max as output row
    /// `(i + r) / 4`.
    #[inline(always)]
    pub(super) fn store(
        &mut self,
        raw: &[i32],
        stride: usize,
        (i, rows): (usize, usize),
        cols: Range<usize>,
        w: &PackedWeights,
        pooled: bool,
    ) {
        let (n, width) = (w.n, cols.len());
        debug_assert!(width <= MAX_WIDTH);
        let shift = &w.shift[cols.clone()];
        let group = if pooled { 4 } else { 1 };
        for r in (0..rows).step_by(group) {
            // Row r + q of the block: its raw sums, and its first value's index in (m, n)
            // (where its addend is).
            let raw_of = |q: usize| &raw[(r + q) * stride..(r + q) * stride + width];
            let addend_at = |q: usize| (i + r + q) * n + cols.start;
            let at = (i + r) / group * n + cols.start;
            match self {
                Output::Sums(dst) => {
                    let dst = &mut dst[at..at + width];
                    for q in 0..group {
                        for (d, (&s, &shift)) in dst.iter_mut().zip(raw_of(q).iter().zip(shift)) {
                            *d = if q == 0 {
                                s - shift
                            } else {
                                (*d).max(s - shift)
                            };
                        }
                    }
                }
                Output::Floats(dst, e) => {
                    let dst = &mut dst[at..at + width];
                    for q in 0..group {
                        let y = values(e, raw_of(q), shift, cols.clone(), addend_at(q));
                        for (d, &y) in dst.iter_mut().zip(&y[..width]) {
                            *d = if q == 0 { y } else { d.max(y) };
                        }
                    }
                }
                Output::Codes {
                    codes,
                    epilogue,
                    scale,
                    zero_point,
                } => {
                    let (inverse, zero) = (1.0 / *scale, f32::from(*zero_point));
                    let codes = &mut codes[at..at + width];
                    for q in 0..group {
                        let y = values(epilogue, raw_of(q), shift, cols.clone(), addend_at(q));
                        for (code, &y) in codes.iter_mut().zip(&y[..width]) {
                            let new = code_of(y, inverse, zero);
                            *code = if q == 0 { new } else { (*code).max(new) };
                        }
                    }
                }
            }
        }
    }
}

/// The epilogue of one row's columns `cols`: `raw` are the kernel's sums, `at` the index of
/// the row's first value in the product's `(m, n)` (for the addend).
#[inline(always)]
fn values(
    e: &Epilogue,
    raw: &[i32],
    shift: &[i32],
    cols: Range<usize>,
    at: usize,
) -> [f32; MAX_WIDTH] {
    let width = cols.len();
    let mut y = [0f32; MAX_WIDTH];
    let ys = &mut y[..width];
    let sums = raw.iter().zip(shift).zip(&e.offsets[cols.clone()]);
    for ((y, ((&s, &shift), &offset)), &m) in
        ys.iter_mut().zip(sums).zip(&e.multipliers[cols.clone()])
    {
        *y = (s - shift + offset) as f32 * m;
    }
    if let Some(bias) = e.bias {
        for (y, &b) in ys.iter_mut().zip(&bias[cols]) {
            *y += b;
        }
    }
    if let Some(addend) = e.addend {
        for (y, &a) in ys.iter_mut().zip(&addend[at..at + width]) {
            *y += a;
        }
    }
    if let Some(slope) = e.slope {
        for y in ys.iter_mut() {
            *y = y.max(slope * *y);
        }
    }
    y
}
