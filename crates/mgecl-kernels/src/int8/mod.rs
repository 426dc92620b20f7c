//! Integer matrix products for int8 models: activations quantised to `s8` and stored shifted
//! by 128 as `u8` (what x86's `vpdpbusd` multiplies), times `s8` weights, summed exactly in
//! `i32`: `dst[i][j] = sum_l (a[i][l] - 128) * w[l][j]`. The shift is undone with the
//! weights' column sums, computed once when they are packed.
//!
//! Picked at run time: AVX-512 VNNI (64 multiply-adds per instruction), AVX-VNNI (the same
//! on 256-bit registers, for CPUs without AVX-512), the aarch64 dot-product extension
//! (`sdot`, 16 per instruction), else a portable loop. All compute the same integers and
//! finish them with the same epilogue (`store.rs`), so results do not depend on the machine
//! or the number of threads.

use rayon::prelude::*;

use crate::conv::{im2col_codes, im2col_codes_window, tap_runs, ConvRows, IN_PAD};
use crate::scratch::with_code_scratch;
use crate::window::Window;

#[cfg(target_arch = "aarch64")]
mod arm;
mod store;
#[cfg(target_arch = "x86_64")]
mod x86;

use store::MAX_WIDTH;
pub use store::{Epilogue, Output};

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
    let (inverse, zero) = (1.0 / scale, f32::from(zero_point));
    for (o, &v) in out.iter_mut().zip(x) {
        *o = code_of(v, inverse, zero);
    }
}

/// The code of `v` given `1 / scale` and the zero point as f32: the one expression every
/// quantisation of activations (here and in the products' stores) evaluates.
#[inline(always)]
fn code_of(v: f32, inverse: f32, zero: f32) -> u8 {
    let code = (round_ties_even(v * inverse) + zero).clamp(0.0, 255.0);
    // An integer in 0..=255 plus 2^23 is that integer in the low mantissa bits: a bit
    // operation the compiler vectorises (a float-to-integer cast it does one by one).
    (code + 8_388_608.0).to_bits() as u8
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
        .for_each(|(dst, a)| kernel.run(a, dst.len() / n, w, &mut Output::Sums(dst)));
}

/// Every implementation compiled for this architecture, best first.
const ALL: &[Kernel] = &[
    #[cfg(target_arch = "x86_64")]
    Kernel::Avx512Vnni,
    #[cfg(target_arch = "x86_64")]
    Kernel::AvxVnni,
    #[cfg(target_arch = "aarch64")]
    Kernel::Dotprod,
    Kernel::Portable,
];

/// The implementations, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 VNNI (`vpdpbusd` on 512-bit registers).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// AVX-VNNI (`vpdpbusd` on 256-bit registers).
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// The aarch64 dot-product extension (`sdot` on 128-bit registers).
    #[cfg(target_arch = "aarch64")]
    Dotprod,
    /// Plain loops (the compiler vectorises them where it can).
    Portable,
}

impl Kernel {
    /// The best implementation this CPU runs.
    pub fn detect() -> Self {
        ALL.iter()
            .copied()
            .find(|k| k.supported())
            .unwrap_or(Kernel::Portable)
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
            #[cfg(target_arch = "aarch64")]
            Kernel::Dotprod => std::arch::is_aarch64_feature_detected!("dotprod"),
            Kernel::Portable => true,
        }
    }

    /// Every implementation this CPU runs, best first (for tests and benchmarks).
    pub fn available() -> Vec<Self> {
        ALL.iter().copied().filter(|k| k.supported()).collect()
    }

    /// The product of `m` rows of `a` (`w.row_stride()` bytes apart) and `w`, on this
    /// thread with this implementation, written as `out` says.
    ///
    /// # Panics
    /// When `a` holds fewer than `m` rows, `out` (or its epilogue) fewer than `(m, n)`
    /// values, or this CPU lacks the implementation's instructions.
    pub fn run(self, a: &[u8], m: usize, w: &PackedWeights, out: &mut Output) {
        self.run_rows(Rows::Dense { a, lda: w.k4 }, m, w, out, false);
    }

    /// A stride-1 convolution of `input` (weights rows `[ky][kx][c]`) at the output pixels
    /// `rows`, on this thread, written as `out` says: one row per pixel, or with `pooled`
    /// (`rows` must be windows) one row per 2x2 window, the max of its 4 pixels' outputs
    /// (the 2x2 max-pool of the outputs: of the codes, the values or the sums). Where the
    /// channels are a multiple of 4 the kernel reads the input in place, each pixel as one
    /// run per kernel row ([`crate::conv::tap_runs`]: only the edge pixels' runs are
    /// copied); else through im2col rows in this thread's scratch.
    ///
    /// # Panics
    /// When `weights` are not `k * k * c` deep, `k` exceeds 3, the input is too short for
    /// the pixels' images, `pooled` is asked of pixels, `out` holds fewer than (rows,
    /// columns) values, or this CPU lacks the implementation's instructions.
    pub fn convolve(
        self,
        input: &ConvInput,
        rows: &ConvRows,
        pooled: bool,
        weights: &PackedWeights,
        out: &mut Output,
    ) {
        let &ConvInput {
            codes: x,
            hw,
            channels: c,
            kernel: k,
            zero_point,
        } = input;
        assert!(weights.k == k * k * c && k <= MAX_TAPS);
        assert!(
            !pooled || matches!(rows, ConvRows::Windows(_)),
            "only windows can be pooled"
        );
        let m = rows.len();
        if !c.is_multiple_of(4) {
            return with_code_scratch(m * weights.k4, |cols| {
                im2col_codes(x, hw, c, k, rows, weights.k4, zero_point, cols);
                let rows = Rows::Dense {
                    a: cols,
                    lda: weights.k4,
                };
                self.run_rows(rows, m, weights, out, pooled);
            });
        }
        if let (1, ConvRows::Pixels(pixels)) = (k, rows) {
            let a = &x[pixels.start * c..pixels.end * c];
            return self.run_rows(Rows::Dense { a, lda: c }, m, weights, out, false);
        }
        let runs = tap_runs(x, hw, c, k, rows, zero_point);
        let rows = Rows::Runs {
            x,
            pad: &runs.pad,
            offsets: &runs.offsets,
            count: k,
            len: k * c,
        };
        self.run_rows(rows, m, weights, out, pooled);
    }

    /// [`Kernel::convolve`] for any window (`k x k`, any stride and padding): `rows` are
    /// pixels (or 2x2 windows of pixels) of the output, `input.window.output_hw(input.hw)`.
    /// The stride-1 windows `convolve` reads in place (`Window::same(k)`, `k` 1 or 3) go
    /// through it; the others through dense im2col rows in this thread's scratch.
    ///
    /// Dense rows rather than [`crate::conv::tap_runs`]: in place, a row is `k` runs, and
    /// each kernel's blocks carry `MAX_TAPS` run pointers per row, so a 7x7 stem would make
    /// every 3x3 convolution carry 7. A ResNet has one such stem, on 3 channels (which take
    /// im2col rows anyway), and one strided convolution or projection per stage, whose
    /// outputs are a quarter of their inputs' pixels: copying their rows costs little.
    ///
    /// # Panics
    /// When the window does not fit the image ([`Window::output_hw`] is `None`), and as
    /// [`Kernel::convolve`] (any `k` allowed).
    pub fn convolve_window(
        self,
        input: &WindowInput,
        rows: &ConvRows,
        pooled: bool,
        weights: &PackedWeights,
        out: &mut Output,
    ) {
        let &WindowInput {
            codes,
            hw,
            channels: c,
            window,
            zero_point,
        } = input;
        let k = window.k;
        if window == Window::same(k) && k % 2 == 1 && k <= MAX_TAPS {
            let input = ConvInput {
                codes,
                hw,
                channels: c,
                kernel: k,
                zero_point,
            };
            return self.convolve(&input, rows, pooled, weights, out);
        }
        assert!(weights.k == k * k * c, "weights of the window's depth");
        assert!(
            !pooled || matches!(rows, ConvRows::Windows(_)),
            "only windows can be pooled"
        );
        let m = rows.len();
        with_code_scratch(m * weights.k4, |cols| {
            im2col_codes_window(codes, hw, c, window, rows, weights.k4, zero_point, cols);
            let rows = Rows::Dense {
                a: cols,
                lda: weights.k4,
            };
            self.run_rows(rows, m, weights, out, pooled);
        });
    }

    fn run_rows(self, rows: Rows, m: usize, w: &PackedWeights, out: &mut Output, pooled: bool) {
        rows.check(m, w);
        assert!(!pooled || m.is_multiple_of(4));
        out.check(m, if pooled { m / 4 } else { m }, w.n);
        assert!(self.supported(), "this CPU lacks {self:?}'s instructions");
        match self {
            // SAFETY (all three): the CPU has the features (asserted above); the operands are
            // as long as the kernel reads and writes (checked above).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe { x86::avx512::gemm(rows, m, w, out, pooled) },
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => unsafe { x86::avx256::gemm(rows, m, w, out, pooled) },
            #[cfg(target_arch = "aarch64")]
            Kernel::Dotprod => unsafe { arm::gemm(rows, m, w, out, pooled) },
            Kernel::Portable => portable(rows, m, w, out, pooled),
        }
    }
}

/// The input of a stride-1 `kernel x kernel` convolution (padding `kernel / 2`): NHWC
/// codes of `hw` images with `channels` channels, padded with `zero_point` (the code of 0.0).
/// Other windows: [`WindowInput`].
#[derive(Debug, Clone, Copy)]
pub struct ConvInput<'a> {
    /// The batch's codes.
    pub codes: &'a [u8],
    /// Image height and width.
    pub hw: (usize, usize),
    /// Channels per pixel.
    pub channels: usize,
    /// The kernel's side (1 or 3).
    pub kernel: usize,
    /// The code of 0.0, what padding reads.
    pub zero_point: u8,
}

/// The input of a convolution with any window ([`Kernel::convolve_window`]): NHWC codes of
/// `hw` images with `channels` channels, padded with `zero_point` (the code of 0.0).
#[derive(Debug, Clone, Copy)]
pub struct WindowInput<'a> {
    /// The batch's codes.
    pub codes: &'a [u8],
    /// Image height and width (of the input).
    pub hw: (usize, usize),
    /// Channels per pixel.
    pub channels: usize,
    /// The kernel's side, stride and padding.
    pub window: Window,
    /// The code of 0.0, what padding reads.
    pub zero_point: u8,
}

/// Most runs one row of a product is read in (a 3x3 convolution reads 3; other windows
/// are read as dense im2col rows, one run each: see [`Kernel::convolve_window`]).
const MAX_TAPS: usize = 3;

/// Where a product's rows come from, each read as runs of codes (a multiple of 4 bytes) that
/// together span the weights' padded depth.
#[derive(Debug, Clone, Copy)]
enum Rows<'a> {
    /// `m` rows `lda` bytes apart (im2col rows, or a 1x1 convolution's input): one run each.
    Dense { a: &'a [u8], lda: usize },
    /// A convolution read in place ([`crate::conv::TapRuns`]): row `i`'s run `t` is the `len`
    /// codes at `offsets[i * count + t]` in `x`, or with [`IN_PAD`] set in `pad`.
    Runs {
        x: &'a [u8],
        pad: &'a [u8],
        offsets: &'a [usize],
        count: usize,
        len: usize,
    },
}

impl<'a> Rows<'a> {
    /// Runs per row.
    fn tap_count(&self) -> usize {
        match *self {
            Rows::Dense { .. } => 1,
            Rows::Runs { count, .. } => count,
        }
    }

    /// Bytes per run.
    fn tap_len(&self) -> usize {
        match *self {
            Rows::Dense { lda, .. } => lda,
            Rows::Runs { len, .. } => len,
        }
    }

    /// Checks the runs span `w`'s depth and the table covers `m` rows.
    ///
    /// # Panics
    /// When they do not.
    fn check(&self, m: usize, w: &PackedWeights) {
        assert_eq!(self.tap_count() * self.tap_len(), w.k4);
        assert!(self.tap_len().is_multiple_of(4) && self.tap_count() <= MAX_TAPS);
        match *self {
            Rows::Dense { a, lda } => assert!(a.len() >= m * lda),
            Rows::Runs { offsets, count, .. } => assert!(offsets.len() >= m * count),
        }
    }

    /// Row `i`'s run `t` (bounds checked).
    #[inline(always)]
    fn tap(&self, i: usize, t: usize) -> &'a [u8] {
        match *self {
            Rows::Dense { a, lda } => &a[i * lda..(i + 1) * lda],
            Rows::Runs {
                x,
                pad,
                offsets,
                count,
                len,
            } => {
                let at = offsets[i * count + t];
                if at & IN_PAD == 0 {
                    &x[at..at + len]
                } else {
                    &pad[at & !IN_PAD..(at & !IN_PAD) + len]
                }
            }
        }
    }

    /// Pointers to the runs of rows `i..i + count` (`count <= R`), for the kernels' blocks:
    /// each was a checked slice of [`Rows::tap_len`] bytes.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[inline(always)]
    fn taps<const R: usize>(&self, i: usize, count: usize) -> [[*const u8; MAX_TAPS]; R] {
        let mut runs = [[std::ptr::null(); MAX_TAPS]; R];
        for (r, runs) in runs.iter_mut().enumerate().take(count) {
            for (t, run) in runs.iter_mut().enumerate().take(self.tap_count()) {
                *run = self.tap(i + r, t).as_ptr();
            }
        }
        runs
    }
}

/// Rows in blocks of 4 (a pooling window), all columns' sums in a buffer, stored
/// [`MAX_WIDTH`] columns at a time.
fn portable(rows: Rows, m: usize, w: &PackedWeights, out: &mut Output, pooled: bool) {
    const MR: usize = 4;
    let (n16, groups) = (w.n16, rows.tap_len() / 4);
    let mut block = vec![0i32; MR * n16];
    for i in (0..m).step_by(MR) {
        let count = MR.min(m - i);
        block.fill(0);
        for (r, sums) in block.chunks_exact_mut(n16).enumerate().take(count) {
            for t in 0..rows.tap_count() {
                for (g, a4) in rows.tap(i + r, t).chunks_exact(4).enumerate() {
                    let group = t * groups + g;
                    let weights = &w.data[group * n16 * 4..(group + 1) * n16 * 4];
                    for (acc, w4) in sums.iter_mut().zip(weights.chunks_exact(4)) {
                        *acc += a4
                            .iter()
                            .zip(w4)
                            .map(|(&x, &y)| i32::from(x) * i32::from(y))
                            .sum::<i32>();
                    }
                }
            }
        }
        for j in (0..w.n).step_by(MAX_WIDTH) {
            let cols = j..(j + MAX_WIDTH).min(w.n);
            out.store(&block[j..], n16, (i, count), cols, w, pooled);
        }
    }
}

#[cfg(test)]
mod tests;
