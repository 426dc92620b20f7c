//! CPU kernels for the two training operations candle runs slowly on CPU
//! (`scripts/bench/RESULTS.md`): im2col for convolutions (whose backward, col2im, replaces candle's naive
//! `conv_transpose2d` input gradient) and training-mode BatchNorm (fused forward and
//! backward instead of a dozen broadcast and strided-reduction passes). Each is a candle
//! custom op with its backward, so autograd works through it; other devices use the
//! composite tensor formulas in `layers`, and tests check both agree.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

type CResult<T> = candle_core::Result<T>;

fn contiguous<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> CResult<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("cpu_ops: input must be contiguous".into()))?;
    Ok(&s.as_slice::<T>()?[a..b])
}

/// Float types the kernels run on (f32 for training, f64 for gradient checks).
trait Float: WithDType + Copy + Send + Sync {
    fn f(self) -> f64;
    fn of(v: f64) -> Self;
}
impl Float for f32 {
    fn f(self) -> f64 {
        f64::from(self)
    }
    fn of(v: f64) -> Self {
        v as f32
    }
}
impl Float for f64 {
    fn f(self) -> f64 {
        self
    }
    fn of(v: f64) -> Self {
        v
    }
}

macro_rules! dispatch1 {
    ($s:expr, $l:expr, $body:ident, $($arg:expr),*) => {
        match $s {
            CpuStorage::F32(_) => { let (v, shape) = $body::<f32>(contiguous($s, $l)?, $($arg),*)?; Ok((CpuStorage::F32(v), shape)) }
            CpuStorage::F64(_) => { let (v, shape) = $body::<f64>(contiguous($s, $l)?, $($arg),*)?; Ok((CpuStorage::F64(v), shape)) }
            _ => Err(candle_core::Error::Msg("cpu_ops: f32 or f64 only".into())),
        }
    };
}

/// im2col for a k x k convolution with padding k/2, stride 1:
/// (B, C, H, W) -> (B, C*k*k, H*W), row `(c*k + dy)*k + dx`.
pub(crate) struct Im2Col {
    pub(crate) dims: (usize, usize, usize, usize),
    pub(crate) k: usize,
}

fn im2col<T: Float>(
    x: &[T],
    (b, c, h, w): (usize, usize, usize, usize),
    k: usize,
) -> CResult<(Vec<T>, Shape)> {
    let p = k / 2;
    let rows = c * k * k;
    let mut out = vec![T::of(0.0); b * rows * h * w];
    out.par_chunks_mut(rows * h * w)
        .enumerate()
        .for_each(|(bi, dst)| {
            let src = &x[bi * c * h * w..(bi + 1) * c * h * w];
            for ci in 0..c {
                for dy in 0..k {
                    for dx in 0..k {
                        let row = &mut dst[((ci * k + dy) * k + dx) * h * w..][..h * w];
                        for y in 0..h {
                            let sy = y as isize + dy as isize - p as isize;
                            if sy < 0 || sy >= h as isize {
                                continue;
                            }
                            let src_row = &src[ci * h * w + sy as usize * w..][..w];
                            let x0 = p.saturating_sub(dx);
                            let x1 = (w + p).saturating_sub(dx).min(w);
                            for xx in x0..x1 {
                                row[y * w + xx] = src_row[xx + dx - p];
                            }
                        }
                    }
                }
            }
        });
    Ok((out, Shape::from((b, rows, h * w))))
}

fn col2im<T: Float>(
    cols: &[T],
    (b, c, h, w): (usize, usize, usize, usize),
    k: usize,
) -> CResult<(Vec<T>, Shape)> {
    let p = k / 2;
    let rows = c * k * k;
    let mut out = vec![T::of(0.0); b * c * h * w];
    out.par_chunks_mut(c * h * w)
        .enumerate()
        .for_each(|(bi, dst)| {
            let src = &cols[bi * rows * h * w..(bi + 1) * rows * h * w];
            for ci in 0..c {
                let plane = &mut dst[ci * h * w..(ci + 1) * h * w];
                for dy in 0..k {
                    for dx in 0..k {
                        let row = &src[((ci * k + dy) * k + dx) * h * w..][..h * w];
                        for y in 0..h {
                            let sy = y as isize + dy as isize - p as isize;
                            if sy < 0 || sy >= h as isize {
                                continue;
                            }
                            let x0 = p.saturating_sub(dx);
                            let x1 = (w + p).saturating_sub(dx).min(w);
                            let base = sy as usize * w;
                            for xx in x0..x1 {
                                let t = &mut plane[base + xx + dx - p];
                                *t = T::of(t.f() + row[y * w + xx].f());
                            }
                        }
                    }
                }
            }
        });
    Ok((out, Shape::from((b, c, h, w))))
}

struct Col2Im {
    dims: (usize, usize, usize, usize),
    k: usize,
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        dispatch1!(s, l, col2im, self.dims, self.k)
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        dispatch1!(s, l, im2col, self.dims, self.k)
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2Im {
            dims: self.dims,
            k: self.k,
        })?))
    }
}

/// Per-channel batch statistics over (N, H, W): a (2, C) tensor of mean and unbiased
/// variance (what PyTorch folds into the running statistics).
pub(crate) struct BatchStats;

fn channel_moments<T: Float>(x: &[T], (b, c, hw): (usize, usize, usize)) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ci| {
            let mut sum = 0.0;
            for bi in 0..b {
                sum += x[(bi * c + ci) * hw..][..hw]
                    .iter()
                    .map(|v| v.f())
                    .sum::<f64>();
            }
            let n = (b * hw) as f64;
            let mean = sum / n;
            let mut sq = 0.0;
            for bi in 0..b {
                sq += x[(bi * c + ci) * hw..][..hw]
                    .iter()
                    .map(|v| (v.f() - mean).powi(2))
                    .sum::<f64>();
            }
            (mean, sq / n)
        })
        .collect()
}

fn batch_stats<T: Float>(x: &[T], dims: (usize, usize, usize)) -> CResult<(Vec<T>, Shape)> {
    let moments = channel_moments(x, dims);
    let n = (dims.0 * dims.2) as f64;
    let unbias = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
    let mut out: Vec<T> = moments.iter().map(|m| T::of(m.0)).collect();
    out.extend(moments.iter().map(|m| T::of(m.1 * unbias)));
    Ok((out, Shape::from((2, dims.1))))
}

impl CustomOp1 for BatchStats {
    fn name(&self) -> &'static str {
        "batch-stats"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let d = l.shape().dims();
        if d.len() != 4 {
            return Err(candle_core::Error::Msg(
                "batch-stats: 4-d input expected".into(),
            ));
        }
        dispatch1!(s, l, batch_stats, (d[0], d[1], d[2] * d[3]))
    }
}

/// Training-mode BatchNorm (x, gamma, beta) -> y with batch statistics and biased variance.
pub(crate) struct BatchNormTrain {
    pub(crate) eps: f64,
}

fn bn_forward<T: Float>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    (b, c, hw): (usize, usize, usize),
    eps: f64,
) -> Vec<T> {
    let coef: Vec<(f64, f64)> = channel_moments(x, (b, c, hw))
        .into_iter()
        .enumerate()
        .map(|(ci, (mean, var))| {
            let s = gamma[ci].f() / (var + eps).sqrt();
            (s, beta[ci].f() - mean * s)
        })
        .collect();
    let mut y = vec![T::of(0.0); x.len()];
    y.par_chunks_mut(c * hw)
        .zip(x.par_chunks(c * hw))
        .for_each(|(yb, xb)| {
            for ci in 0..c {
                let (s, t) = coef[ci];
                for (o, v) in yb[ci * hw..(ci + 1) * hw]
                    .iter_mut()
                    .zip(&xb[ci * hw..(ci + 1) * hw])
                {
                    *o = T::of(v.f() * s + t);
                }
            }
        });
    y
}

/// Packed gradients: dx (B*C*H*W), then dgamma (C), then dbeta (C).
fn bn_backward<T: Float>(
    x: &[T],
    gamma: &[T],
    g: &[T],
    (b, c, hw): (usize, usize, usize),
    eps: f64,
) -> Vec<T> {
    let n = (b * hw) as f64;
    let moments = channel_moments(x, (b, c, hw));
    // Per channel: istd, dgamma = sum g * xhat, dbeta = sum g.
    let sums: Vec<(f64, f64, f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ci| {
            let (mean, var) = moments[ci];
            let istd = 1.0 / (var + eps).sqrt();
            let (mut dg, mut db) = (0.0, 0.0);
            for bi in 0..b {
                let o = (bi * c + ci) * hw;
                for (xv, gv) in x[o..o + hw].iter().zip(&g[o..o + hw]) {
                    db += gv.f();
                    dg += gv.f() * (xv.f() - mean) * istd;
                }
            }
            (mean, istd, dg, db)
        })
        .collect();
    let mut out = vec![T::of(0.0); x.len() + 2 * c];
    let (dx, rest) = out.split_at_mut(x.len());
    dx.par_chunks_mut(c * hw).enumerate().for_each(|(bi, dxb)| {
        for ci in 0..c {
            let (mean, istd, dg, db) = sums[ci];
            let k = gamma[ci].f() * istd / n;
            let o = (bi * c + ci) * hw;
            for ((d, xv), gv) in dxb[ci * hw..(ci + 1) * hw]
                .iter_mut()
                .zip(&x[o..o + hw])
                .zip(&g[o..o + hw])
            {
                let xhat = (xv.f() - mean) * istd;
                *d = T::of(k * (n * gv.f() - db - xhat * dg));
            }
        }
    });
    for ci in 0..c {
        rest[ci] = T::of(sums[ci].2);
        rest[c + ci] = T::of(sums[ci].3);
    }
    out
}

type Kernel3<T> = fn(&[T], &[T], &[T], (usize, usize, usize), f64) -> Vec<T>;

/// Runs a three-input BatchNorm kernel on f32 or f64 storage.
#[allow(clippy::too_many_arguments)]
fn apply3(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    s3: &CpuStorage,
    l3: &Layout,
    dims: (usize, usize, usize),
    eps: f64,
    f32_kernel: Kernel3<f32>,
    f64_kernel: Kernel3<f64>,
) -> CResult<CpuStorage> {
    match s1 {
        CpuStorage::F32(_) => Ok(CpuStorage::F32(f32_kernel(
            contiguous(s1, l1)?,
            contiguous(s2, l2)?,
            contiguous(s3, l3)?,
            dims,
            eps,
        ))),
        CpuStorage::F64(_) => Ok(CpuStorage::F64(f64_kernel(
            contiguous(s1, l1)?,
            contiguous(s2, l2)?,
            contiguous(s3, l3)?,
            dims,
            eps,
        ))),
        _ => Err(candle_core::Error::Msg(
            "batch-norm: f32 or f64 only".into(),
        )),
    }
}

fn dims3(l: &Layout) -> CResult<(usize, usize, usize)> {
    match l.shape().dims() {
        &[b, c, h, w] => Ok((b, c, h * w)),
        _ => Err(candle_core::Error::Msg(
            "batch-norm: 4-d input expected".into(),
        )),
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let d = dims3(l1)?;
        let storage = apply3(
            s1,
            l1,
            s2,
            l2,
            s3,
            l3,
            d,
            self.eps,
            bn_forward::<f32>,
            bn_forward::<f64>,
        )?;
        Ok((storage, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &gamma.contiguous()?,
            &grad.contiguous()?,
            &BatchNormBackward { eps: self.eps },
        )?;
        let (n, c) = (x.elem_count(), gamma.elem_count());
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, n, c)?;
        let dbeta = packed.narrow(0, n + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

struct BatchNormBackward {
    eps: f64,
}

impl CustomOp3 for BatchNormBackward {
    fn name(&self) -> &'static str {
        "batch-norm-train-backward"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let d = dims3(l1)?;
        let len = l1.shape().elem_count() + 2 * d.1;
        let storage = apply3(
            s1,
            l1,
            s2,
            l2,
            s3,
            l3,
            d,
            self.eps,
            bn_backward::<f32>,
            bn_backward::<f64>,
        )?;
        Ok((storage, Shape::from(len)))
    }
}
