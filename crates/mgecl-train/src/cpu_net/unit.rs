//! A unit of the CPU network: a convolution (im2col + gemm, or Winograd) and training-mode
//! BatchNorm, forward and backward (batch statistics, input and weight gradients).

use rayon::prelude::*;

use super::winograd;
use super::MIN_CHUNK_ROWS;
use super::{thread_ranges, Param, Shape, Work, BLOCK_ROWS, BN_EPS, BN_MOMENTUM, CHUNK_VALUES};
use mgecl_kernels::conv::im2col;
use mgecl_kernels::scratch::with_scratch;
use mgecl_kernels::{gemm, Mat, Parallelism};

/// A convolution (stride 1, padding k/2) followed by training-mode BatchNorm, with the
/// step's saved state.
pub(super) struct Unit {
    pub(super) c_in: usize,
    pub(super) c_out: usize,
    pub(super) k: usize,
    pub(super) weight: usize,
    pub(super) bias: Option<usize>,
    pub(super) gamma: usize,
    pub(super) beta: usize,
    pub(super) running_mean: usize,
    pub(super) running_var: usize,
    /// Conv output (plus bias), `(pixels, c_out)`.
    pub(super) y: Vec<f32>,
    /// Batch mean and 1/sqrt(biased var + eps), per channel.
    pub(super) mean: Vec<f64>,
    pub(super) istd: Vec<f64>,
    /// Normalisation as `y * scale + shift`.
    pub(super) scale: Vec<f32>,
    pub(super) shift: Vec<f32>,
    /// Gradient with respect to `y`.
    pub(super) dy: Vec<f32>,
}

/// The gradient BatchNorm's backward starts from: given directly, or as the gradient of the
/// activation that follows it, `d_a * act'(a)` with `a = max(z, slope z)` (so `a > 0`
/// exactly when `z > 0`), computed on the fly.
#[derive(Clone, Copy)]
pub(super) enum GradIn<'a> {
    Direct(&'a [f32]),
    Activation {
        d_a: &'a [f32],
        a: &'a [f32],
        slope: f32,
    },
}

impl GradIn<'_> {
    /// Rows `range` (of `c` values each) of the gradient, computed into `buf` when needed.
    pub(super) fn rows<'b>(&'b self, start: usize, len: usize, buf: &'b mut [f32]) -> &'b [f32] {
        match *self {
            GradIn::Direct(dz) => &dz[start..start + len],
            GradIn::Activation { d_a, a, slope } => {
                let buf = &mut buf[..len];
                for ((o, a), d) in buf
                    .iter_mut()
                    .zip(&a[start..start + len])
                    .zip(&d_a[start..])
                {
                    *o = if *a > 0.0 { *d } else { slope * d };
                }
                buf
            }
        }
    }
}

impl Unit {
    /// Rows of the im2col matrix.
    pub(super) fn depth(&self) -> usize {
        self.k * self.k * self.c_in
    }

    /// Whether the 3x3 products run as Winograd F(2x2, 3x3) (inference's rule too).
    pub(super) fn winograd(&self) -> bool {
        mgecl_kernels::winograd::applies(self.k, self.c_in, self.c_out)
    }

    /// Conv (plus bias) into `y`, batch statistics, running statistics, `scale`/`shift`.
    pub(super) fn forward(&mut self, params: &mut [Param], work: &mut Work, x: &[f32], g: Shape) {
        let p = g.pixels();
        let c = self.c_out;
        self.y.resize(p * c, 0.0);
        let weight = &params[self.weight].value;
        let bias = self.bias.map(|b| params[b].value.as_slice());
        if self.winograd() {
            winograd::forward_weights(weight, c, self.c_in, &mut work.w_flip);
            let u = (work.w_flip.as_slice(), winograd::PlaneLayout::OutIn);
            winograd::conv(x, g, self.c_in, c, u, bias, &mut self.y);
        } else {
            conv_rows(
                x,
                g,
                self.c_in,
                self.k,
                Mat::rows(weight, c, self.depth()).t(),
                &mut self.y,
                false,
                bias,
            );
        }
        // Batch statistics: per-thread f64 sums, combined in order.
        let ranges = thread_ranges(p);
        work.stats.resize(ranges.len() * 2 * c, 0.0);
        let y = &self.y;
        work.stats
            .par_chunks_mut(2 * c)
            .zip(ranges.par_iter())
            .for_each(|(acc, range)| {
                acc.fill(0.0);
                let (s, q) = acc.split_at_mut(c);
                for row in y[range.start * c..range.end * c].chunks_exact(c) {
                    for ((s, q), v) in s.iter_mut().zip(q.iter_mut()).zip(row) {
                        let v = f64::from(*v);
                        *s += v;
                        *q += v * v;
                    }
                }
            });
        let nf = p as f64;
        let unbias = if p > 1 { nf / (nf - 1.0) } else { 1.0 };
        for ch in 0..c {
            let (mut s, mut q) = (0.0, 0.0);
            for part in work.stats.chunks_exact(2 * c) {
                s += part[ch];
                q += part[c + ch];
            }
            let mean = s / nf;
            let var = (q / nf - mean * mean).max(0.0);
            let istd = 1.0 / (var + BN_EPS).sqrt();
            self.mean[ch] = mean;
            self.istd[ch] = istd;
            let gamma = f64::from(params[self.gamma].value[ch]);
            let beta = f64::from(params[self.beta].value[ch]);
            self.scale[ch] = (gamma * istd) as f32;
            self.shift[ch] = (beta - mean * gamma * istd) as f32;
            let rm = &mut params[self.running_mean].value[ch];
            *rm = ((1.0 - BN_MOMENTUM) * f64::from(*rm) + BN_MOMENTUM * mean) as f32;
            let rv = &mut params[self.running_var].value[ch];
            *rv = ((1.0 - BN_MOMENTUM) * f64::from(*rv) + BN_MOMENTUM * var * unbias) as f32;
        }
    }

    /// BatchNorm backward from the gradient of its output: gamma and beta gradients, `dy`,
    /// and the conv bias gradient.
    pub(super) fn bn_backward(&mut self, params: &mut [Param], work: &mut Work, grad: GradIn<'_>) {
        let c = self.c_out;
        let p = self.y.len() / c;
        let y = &self.y;
        // Per channel, per thread: sum dz and sum dz * y (f64), over blocks of rows.
        let ranges = thread_ranges(p);
        work.stats.resize(ranges.len() * 2 * c, 0.0);
        work.stats
            .par_chunks_mut(2 * c)
            .zip(ranges.par_iter())
            .for_each(|(acc, r)| {
                acc.fill(0.0);
                let (s, sy) = acc.split_at_mut(c);
                with_scratch(BLOCK_ROWS * c, |buf| {
                    for start in (r.start..r.end).step_by(BLOCK_ROWS) {
                        let rows = BLOCK_ROWS.min(r.end - start);
                        let dz = grad.rows(start * c, rows * c, buf);
                        let yb = &y[start * c..(start + rows) * c];
                        for (drow, yrow) in dz.chunks_exact(c).zip(yb.chunks_exact(c)) {
                            for (((s, sy), d), yv) in
                                s.iter_mut().zip(sy.iter_mut()).zip(drow).zip(yrow)
                            {
                                let d = f64::from(*d);
                                *s += d;
                                *sy += d * f64::from(*yv);
                            }
                        }
                    }
                });
            });
        let nf = p as f64;
        // dy = a dz + b y + c0 with a = gamma istd, b = -gamma istd^2 dgamma / n,
        // c0 = -gamma istd dbeta / n - b mean  (xhat = (y - mean) istd).
        work.coef.resize(3 * c, 0.0);
        let (ca, rest) = work.coef.split_at_mut(c);
        let (cb, cc) = rest.split_at_mut(c);
        for ch in 0..c {
            let (mut dbeta, mut sdy) = (0.0, 0.0);
            for part in work.stats.chunks_exact(2 * c) {
                dbeta += part[ch];
                sdy += part[c + ch];
            }
            let (mean, istd) = (self.mean[ch], self.istd[ch]);
            let dgamma = (sdy - mean * dbeta) * istd;
            params[self.gamma].grad[ch] = dgamma as f32;
            params[self.beta].grad[ch] = dbeta as f32;
            let gamma = f64::from(params[self.gamma].value[ch]);
            let a = gamma * istd;
            let b = -gamma * istd * istd * dgamma / nf;
            let c0 = -gamma * istd * dbeta / nf - b * mean;
            (ca[ch], cb[ch], cc[ch]) = (a as f32, b as f32, c0 as f32);
            if let Some(bias) = self.bias {
                // sum over pixels of dy: analytically a dbeta + b sum(y) + n c0 = 0.
                let sum_y = mean * nf;
                params[bias].grad[ch] = (a * dbeta + b * sum_y + c0 * nf) as f32;
            }
        }
        self.dy.resize(p * c, 0.0);
        self.dy
            .par_chunks_mut(BLOCK_ROWS * c)
            .enumerate()
            .for_each(|(i, out)| {
                let start = i * BLOCK_ROWS * c;
                with_scratch(out.len(), |buf| {
                    let dz = grad.rows(start, out.len(), buf);
                    let yb = &y[start..start + out.len()];
                    for ((orow, drow), yrow) in out
                        .chunks_exact_mut(c)
                        .zip(dz.chunks_exact(c))
                        .zip(yb.chunks_exact(c))
                    {
                        let (drow, yrow) = (&drow[..c], &yrow[..c]);
                        let (ca, cb, cc) = (&ca[..c], &cb[..c], &cc[..c]);
                        for (j, o) in orow[..c].iter_mut().enumerate() {
                            *o = ca[j] * drow[j] + cb[j] * yrow[j] + cc[j];
                        }
                    }
                });
            });
    }

    /// `dW = dy^T im2col(x)`: per-thread partial products over contiguous row ranges,
    /// summed in order.
    pub(super) fn weight_backward(
        &self,
        params: &mut [Param],
        work: &mut Work,
        x: &[f32],
        g: Shape,
    ) {
        if self.winograd() {
            let grad = &mut params[self.weight].grad;
            winograd::weight_grad(x, &self.dy, g, self.c_in, self.c_out, &mut work.dw, grad);
            return;
        }
        let (c_out, depth) = (self.c_out, self.depth());
        let size = c_out * depth;
        let ranges = thread_ranges(g.pixels());
        work.dw.resize(ranges.len() * size, 0.0);
        let dy = &self.dy;
        work.dw
            .par_chunks_mut(size)
            .zip(ranges.par_iter())
            .for_each(|(acc, range)| {
                let rows_per = (CHUNK_VALUES / depth).max(MIN_CHUNK_ROWS);
                let mut first = true;
                let mut start = range.start;
                while start < range.end {
                    let rows = rows_per.min(range.end - start);
                    let dy_t = Mat::rows(&dy[start * c_out..], rows, c_out).t();
                    if self.k == 1 {
                        let cols = Mat::rows(&x[start * depth..], rows, depth);
                        gemm(acc, (c_out, depth), !first, dy_t, cols, Parallelism::None);
                    } else {
                        with_scratch(rows * depth, |cols| {
                            im2col(
                                x,
                                (g.h, g.w),
                                self.c_in,
                                self.k,
                                start..start + rows,
                                depth,
                                cols,
                            );
                            let cols = Mat::rows(cols, rows, depth);
                            gemm(acc, (c_out, depth), !first, dy_t, cols, Parallelism::None);
                        });
                    }
                    first = false;
                    start += rows;
                }
                if first {
                    acc.fill(0.0);
                }
            });
        let grad = &mut params[self.weight].grad;
        grad.copy_from_slice(&work.dw[..size]);
        for part in work.dw[..ranges.len() * size].chunks_exact(size).skip(1) {
            for (g, v) in grad.iter_mut().zip(part) {
                *g += v;
            }
        }
    }

    /// `d_in (+)= im2col(dy) W_flip` (3x3) or `dy W` (1x1).
    pub(super) fn input_backward(
        &self,
        params: &[Param],
        work: &mut Work,
        g: Shape,
        d_in: &mut [f32],
        accumulate: bool,
    ) {
        let (co, ci, k) = (self.c_out, self.c_in, self.k);
        let w = &params[self.weight].value;
        if k == 1 {
            conv_rows(
                &self.dy,
                g,
                co,
                1,
                Mat::rows(w, co, ci),
                d_in,
                accumulate,
                None,
            );
            return;
        }
        if self.winograd() {
            assert!(!accumulate, "the Winograd input gradient overwrites");
            winograd::input_grad_weights(w, co, ci, &mut work.w_flip);
            let u = (work.w_flip.as_slice(), winograd::PlaneLayout::InOut);
            winograd::conv(&self.dy, g, co, ci, u, None, d_in);
            return;
        }
        // W_flip[(ky, kx, co), ci] = W[co, k-1-ky, k-1-kx, ci].
        work.w_flip.resize(k * k * co * ci, 0.0);
        for ky in 0..k {
            for kx in 0..k {
                for o in 0..co {
                    let src = &w[((o * k + (k - 1 - ky)) * k + (k - 1 - kx)) * ci..][..ci];
                    work.w_flip[((ky * k + kx) * co + o) * ci..][..ci].copy_from_slice(src);
                }
            }
        }
        conv_rows(
            &self.dy,
            g,
            co,
            k,
            Mat::rows(&work.w_flip, k * k * co, ci),
            d_in,
            accumulate,
            None,
        );
    }
}

/// `out (+)= im2col(x) rhs (+ bias)`: `x` NHWC with `c` channels, `rhs` `(k*k*c, n_out)`.
/// Output rows are cut into chunks, one rayon task each, im2col built per chunk.
#[allow(clippy::too_many_arguments)]
fn conv_rows(
    x: &[f32],
    g: Shape,
    c: usize,
    k: usize,
    rhs: Mat<'_>,
    out: &mut [f32],
    accumulate: bool,
    bias: Option<&[f32]>,
) {
    let depth = k * k * c;
    let n_out = rhs.cols;
    let pixels = g.pixels();
    debug_assert_eq!(rhs.rows, depth);
    debug_assert_eq!(out.len(), pixels * n_out);
    let threads = rayon::current_num_threads().max(1);
    let rows = (CHUNK_VALUES / depth.max(n_out))
        .max(MIN_CHUNK_ROWS)
        .min(pixels.div_ceil(threads).max(1));
    out.par_chunks_mut(rows * n_out)
        .enumerate()
        .for_each(|(i, dst)| {
            let first = i * rows;
            let count = dst.len() / n_out;
            if k == 1 {
                let lhs = Mat::rows(&x[first * c..], count, c);
                gemm(dst, (count, n_out), accumulate, lhs, rhs, Parallelism::None);
            } else {
                with_scratch(count * depth, |cols| {
                    im2col(x, (g.h, g.w), c, k, first..first + count, depth, cols);
                    let lhs = Mat::rows(cols, count, depth);
                    gemm(dst, (count, n_out), accumulate, lhs, rhs, Parallelism::None);
                });
            }
            if let Some(b) = bias {
                for row in dst.chunks_exact_mut(n_out) {
                    for (v, b) in row.iter_mut().zip(b) {
                        *v += b;
                    }
                }
            }
        });
}
