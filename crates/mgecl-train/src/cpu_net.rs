//! CPU training of Conv-4 and ResNet-12 with an explicit backward pass.
//!
//! candle's autograd on the CPU runs a training step 7-20x slower than PyTorch
//! (`scripts/bench/RESULTS.md`). This module does what made inference fast
//! (`src/model/cpu_fast.rs`) for training:
//!
//! - Activations are NHWC (`(pixels, channels)` row-major), so every convolution is a matrix
//!   product: forward `Y = im2col(X) W^T`, input gradient `dX = im2col(dY) W_flip` (the
//!   transposed convolution written as a convolution with the kernel rotated 180 degrees and
//!   its channel axes swapped, so no scatter is needed) and weight gradient
//!   `dW = dY^T im2col(X)`. im2col is built in chunks of rows in a per-thread scratch buffer;
//!   the products run on the `gemm` crate's kernels, one chunk per rayon task.
//! - BatchNorm in training mode keeps the conv output `y` and its batch statistics; the
//!   normalisation, the activation (and ResNet's residual add) are one pass, the max-pool a
//!   second; backward fuses unpooling with the activation's derivative, and BatchNorm's
//!   backward is one reduction pass plus one elementwise pass.
//! - Reductions that cross rows (batch statistics, weight gradients) are split into one
//!   contiguous part per thread and summed in a fixed order, so a step is deterministic for a
//!   given thread count and differs across thread counts only by float rounding.
//! - Every buffer lives in the network and is resized, not reallocated, between steps.
//! - SGD with momentum and weight decay (PyTorch semantics) updates the parameters in place.
//!
//! Convolution weights are held as `(c_out, ky, kx, c_in)`; names, shapes and values in
//! PyTorch's `(c_out, c_in, ky, kx)` layout are what goes in and out ([`CpuNet::export`]).
//! `tests/train_steps.rs` checks whole steps against PyTorch (float64) fixtures.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::net::{EncoderSpec, NamedValues, ParamKind, HEAD_BIAS, HEAD_WEIGHT, LEAKY_SLOPE};
use crate::winograd;
use mgecl::model::ConvBn;
use mgecl_kernels::conv::im2col;
use mgecl_kernels::layout::nchw_to_nhwc;
use mgecl_kernels::pool::{global_avg_pool, max_pool_2x2, max_pool_2x2_leaky_backward};
use mgecl_kernels::scratch::with_scratch;
use mgecl_kernels::{gemm, Mat, Parallelism};

const BN_MOMENTUM: f64 = 0.1;
const BN_EPS: f64 = 1e-5;
/// Values of one im2col chunk (4 MiB of f32)...
const CHUNK_VALUES: usize = 1 << 20;
/// ...or more, to give each product at least this many rows (wide layers: every chunk
/// streams the whole weight matrix, and each weight-gradient chunk its whole result).
const MIN_CHUNK_ROWS: usize = 512;
/// Fewest rows of an elementwise pass handed to one rayon task.
const MIN_ROWS_PER_TASK: usize = 256;
/// Rows of one block of BatchNorm's backward (a task, and the reduction's step).
const BLOCK_ROWS: usize = 128;

/// A named tensor of the network: value, gradient of the last step, momentum buffer.
struct Param {
    name: String,
    /// PyTorch shape.
    shape: Vec<usize>,
    kind: ParamKind,
    /// Values; convolution weights as `(c_out, k, k, c_in)`.
    value: Vec<f32>,
    grad: Vec<f32>,
    momentum: Option<Vec<f32>>,
}

impl Param {
    /// `(c_out, c_in, k)` of a convolution weight (4-d PyTorch shape).
    fn conv_dims(&self) -> Option<(usize, usize, usize)> {
        match self.shape[..] {
            [o, i, k, _] => Some((o, i, k)),
            _ => None,
        }
    }
}

/// PyTorch `(o, i, k, k)` -> ours `(o, k, k, i)`.
fn to_ohwi(v: &[f32], (o, i, k): (usize, usize, usize)) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for co in 0..o {
        for ci in 0..i {
            for t in 0..k * k {
                out[(co * k * k + t) * i + ci] = v[(co * i + ci) * k * k + t];
            }
        }
    }
    out
}

/// Ours `(o, k, k, i)` -> PyTorch `(o, i, k, k)`.
fn to_oihw(v: &[f32], (o, i, k): (usize, usize, usize)) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for co in 0..o {
        for ci in 0..i {
            for t in 0..k * k {
                out[(co * i + ci) * k * k + t] = v[(co * k * k + t) * i + ci];
            }
        }
    }
    out
}

/// Image batch geometry of an NHWC activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Geom {
    pub(crate) n: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
}

impl Geom {
    fn pixels(self) -> usize {
        self.n * self.h * self.w
    }
    /// After a 2x2 floor-mode max-pool.
    fn pooled(self) -> Geom {
        Geom {
            n: self.n,
            h: self.h / 2,
            w: self.w / 2,
        }
    }
}

/// A convolution (stride 1, padding k/2) followed by training-mode BatchNorm, with the
/// step's saved state.
struct Unit {
    c_in: usize,
    c_out: usize,
    k: usize,
    weight: usize,
    bias: Option<usize>,
    gamma: usize,
    beta: usize,
    running_mean: usize,
    running_var: usize,
    /// Conv output (plus bias), `(pixels, c_out)`.
    y: Vec<f32>,
    /// Batch mean and 1/sqrt(biased var + eps), per channel.
    mean: Vec<f64>,
    istd: Vec<f64>,
    /// Normalisation as `y * scale + shift`.
    scale: Vec<f32>,
    shift: Vec<f32>,
    /// Gradient with respect to `y`.
    dy: Vec<f32>,
}

enum Block {
    Conv4 {
        unit: Unit,
        pool: bool,
        /// ReLU output, `(pixels, c)`.
        act: Vec<f32>,
    },
    ResNet {
        /// conv1, conv2, conv3, shortcut.
        units: Box<[Unit; 4]>,
        a1: Vec<f32>,
        a2: Vec<f32>,
        /// LeakyReLU of the residual sum, before pooling.
        act: Vec<f32>,
    },
}

impl Block {
    fn c_out(&self) -> usize {
        match self {
            Block::Conv4 { unit, .. } => unit.c_out,
            Block::ResNet { units, .. } => units[0].c_out,
        }
    }
    fn pools(&self) -> bool {
        match self {
            Block::Conv4 { pool, .. } => *pool,
            Block::ResNet { .. } => true,
        }
    }
    fn slope(&self) -> f32 {
        match self {
            Block::Conv4 { .. } => 0.0,
            Block::ResNet { .. } => LEAKY_SLOPE as f32,
        }
    }
}

/// Scratch reused between steps.
#[derive(Default)]
struct Work {
    /// Per-thread partial sums (BatchNorm statistics and gradients, f64).
    stats: Vec<f64>,
    /// BatchNorm backward's per-channel coefficients (3 x channels).
    coef: Vec<f32>,
    /// Per-thread partial weight gradients.
    dw: Vec<f32>,
    /// The 180-degree-rotated, channel-swapped weights of the input gradient (im2col), or
    /// the Winograd-transformed weights of the current product.
    w_flip: Vec<f32>,
    /// Gradients flowing between and inside blocks.
    d_out: Vec<f32>,
    d_in: Vec<f32>,
    dz: Vec<f32>,
    d_a: Vec<f32>,
    /// Head: logits (then their gradient), feature gradient.
    logits: Vec<f32>,
    d_features: Vec<f32>,
}

/// A trainable encoder (and optional linear head) on the CPU.
pub(crate) struct CpuNet {
    spec: EncoderSpec,
    params: Vec<Param>,
    blocks: Vec<Block>,
    /// `classifier.weight`, `classifier.bias` (None: no head).
    head: Option<(usize, usize)>,
    /// Network input (NHWC) and each block's output (pooled where the block pools).
    input: Vec<f32>,
    outputs: Vec<Vec<f32>>,
    features: Vec<f32>,
    geom: Option<Geom>,
    work: Work,
}

/// Loss and correct predictions of one cross-entropy step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CeStats {
    pub loss: f64,
    pub correct: usize,
}

impl CpuNet {
    /// Builds the network from named tensors in PyTorch layout (every tensor a network of
    /// `spec` has; `classifier.*` makes the head) and optional momentum buffers by name.
    pub(crate) fn new(
        spec: &EncoderSpec,
        tensors: Vec<NamedValues>,
        momentum: Vec<NamedValues>,
    ) -> Result<Self> {
        let mut params: Vec<Param> = Vec::new();
        for (name, shape, values) in tensors {
            let kind = if name.ends_with("running_mean") || name.ends_with("running_var") {
                ParamKind::Buffer
            } else {
                ParamKind::Weight
            };
            let mut p = Param {
                grad: vec![0.0; values.len()],
                value: values,
                name,
                shape,
                kind,
                momentum: None,
            };
            if let Some(d) = p.conv_dims() {
                p.value = to_ohwi(&p.value, d);
            }
            params.push(p);
        }
        for (name, shape, values) in momentum {
            let p = params
                .iter_mut()
                .find(|p| p.name == name)
                .ok_or_else(|| Error::Internal(format!("momentum for unknown tensor {name:?}")))?;
            if p.shape != shape {
                return Err(Error::Internal(format!(
                    "momentum {name:?}: shape {shape:?}"
                )));
            }
            p.momentum = Some(match p.conv_dims() {
                Some(d) => to_ohwi(&values, d),
                None => values,
            });
        }
        let find = |name: &str| -> Result<usize> {
            params
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| Error::Internal(format!("network tensor {name:?} missing")))
        };
        let unit = |u: &ConvBn| {
            let (c_in, c_out, k) = (u.c_in, u.c_out, u.kernel);
            let bn = |suffix: &str| find(&format!("{}.{suffix}", u.bn));
            let unit = Unit {
                c_in,
                c_out,
                k,
                weight: find(&u.weight())?,
                bias: match u.conv_bias {
                    true => Some(find(&u.bias())?),
                    false => None,
                },
                gamma: bn("weight")?,
                beta: bn("bias")?,
                running_mean: bn("running_mean")?,
                running_var: bn("running_var")?,
                y: Vec::new(),
                mean: vec![0.0; c_out],
                istd: vec![0.0; c_out],
                scale: vec![0.0; c_out],
                shift: vec![0.0; c_out],
                dy: Vec::new(),
            };
            if params[unit.weight].shape != [c_out, c_in, k, k] {
                return Err(Error::Internal(format!(
                    "{}: shape {:?}, expected {:?}",
                    u.weight(),
                    params[unit.weight].shape,
                    [c_out, c_in, k, k]
                )));
            }
            Ok::<Unit, Error>(unit)
        };
        let mut blocks = Vec::new();
        for block in spec.blocks() {
            blocks.push(match (&block.units[..], &block.shortcut) {
                ([u], None) => Block::Conv4 {
                    unit: unit(u)?,
                    pool: block.pool,
                    act: Vec::new(),
                },
                ([u1, u2, u3], Some(shortcut)) => Block::ResNet {
                    units: Box::new([unit(u1)?, unit(u2)?, unit(u3)?, unit(shortcut)?]),
                    a1: Vec::new(),
                    a2: Vec::new(),
                    act: Vec::new(),
                },
                _ => return Err(Error::Internal("a block this network cannot run".into())),
            });
        }
        let head = match (find(HEAD_WEIGHT), find(HEAD_BIAS)) {
            (Ok(w), Ok(b)) => {
                let d = spec.widths[3];
                if params[w].shape.len() != 2 || params[w].shape[1] != d {
                    return Err(Error::Internal(format!("{HEAD_WEIGHT}: bad shape")));
                }
                Some((w, b))
            }
            _ => None,
        };
        Ok(CpuNet {
            spec: spec.clone(),
            params,
            outputs: (0..blocks.len()).map(|_| Vec::new()).collect(),
            blocks,
            head,
            input: Vec::new(),
            features: Vec::new(),
            geom: None,
            work: Work::default(),
        })
    }

    /// Every tensor in PyTorch layout (name, shape, values), for checkpoints.
    pub(crate) fn export(&self) -> Vec<NamedValues> {
        self.params
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.shape.clone(),
                    self.pytorch_layout(p, &p.value),
                )
            })
            .collect()
    }

    /// Momentum buffers in PyTorch layout (only those that exist).
    pub(crate) fn momentum(&self) -> Vec<NamedValues> {
        self.params
            .iter()
            .filter_map(|p| {
                let m = p.momentum.as_ref()?;
                Some((p.name.clone(), p.shape.clone(), self.pytorch_layout(p, m)))
            })
            .collect()
    }

    fn pytorch_layout(&self, p: &Param, v: &[f32]) -> Vec<f32> {
        match p.conv_dims() {
            Some(d) => to_oihw(v, d),
            None => v.to_vec(),
        }
    }

    /// Feature dimension.
    pub(crate) fn feature_dim(&self) -> usize {
        self.spec.widths[3]
    }

    /// Training-mode forward of a normalised NCHW batch `(n, c, h, w)`: batch statistics,
    /// running statistics updated. Returns the features `(n, feature_dim)`, row-major.
    pub(crate) fn forward(
        &mut self,
        input: &[f32],
        n: usize,
        h: usize,
        w: usize,
    ) -> Result<&[f32]> {
        let c = self.spec.in_channels;
        if n == 0 || h == 0 || w == 0 || input.len() != n * c * h * w {
            return Err(Error::InvalidArgument(format!(
                "training batch: {} values for ({n}, {c}, {h}, {w})",
                input.len()
            )));
        }
        // Each pooling block halves the size; the last block needs at least one pixel.
        let mut g = Geom { n, h, w };
        for b in &self.blocks[..self.blocks.len() - 1] {
            if b.pools() {
                g = g.pooled();
            }
        }
        if g.h == 0 || g.w == 0 || (self.blocks[3].pools() && (g.h < 2 || g.w < 2)) {
            return Err(Error::InvalidArgument(format!(
                "training batch: {h}x{w} images are too small for this network"
            )));
        }
        self.input.resize(n * h * w * c, 0.0);
        nchw_to_nhwc(input, (n, c, h * w), &mut self.input);
        let mut g = Geom { n, h, w };
        self.geom = Some(g);
        for i in 0..self.blocks.len() {
            let (before, rest) = self.outputs.split_at_mut(i);
            let x: &[f32] = if i == 0 { &self.input } else { &before[i - 1] };
            let out = &mut rest[0];
            let block = &mut self.blocks[i];
            block_forward(block, &mut self.params, &mut self.work, x, g, out);
            if block.pools() {
                g = g.pooled();
            }
        }
        let d = self.feature_dim();
        self.features.resize(n * d, 0.0);
        global_avg_pool(&self.outputs[3], (g.n, g.h * g.w), d, &mut self.features);
        Ok(&self.features)
    }

    /// Backward from the gradient of the loss with respect to the features of the last
    /// [`forward`](Self::forward): fills every parameter's gradient (the head's untouched).
    pub(crate) fn backward(&mut self, d_features: &[f32]) -> Result<()> {
        let Some(g0) = self.geom else {
            return Err(Error::Internal("backward before forward".into()));
        };
        let d = self.feature_dim();
        if d_features.len() != g0.n * d {
            return Err(Error::Internal("feature gradient: wrong size".into()));
        }
        // Geometry at each block's input.
        let mut geoms = [g0; 4];
        for i in 1..4 {
            geoms[i] = if self.blocks[i - 1].pools() {
                geoms[i - 1].pooled()
            } else {
                geoms[i - 1]
            };
        }
        let g_last = if self.blocks[3].pools() {
            geoms[3].pooled()
        } else {
            geoms[3]
        };
        let work = &mut self.work;
        let mut d_out = std::mem::take(&mut work.d_out);
        d_out.resize(g_last.pixels() * d, 0.0);
        global_avg_pool_backward(d_features, g_last, d, &mut d_out);
        for i in (0..4).rev() {
            let x: &[f32] = if i == 0 {
                &self.input
            } else {
                &self.outputs[i - 1]
            };
            let mut d_in = std::mem::take(&mut self.work.d_in);
            block_backward(
                &mut self.blocks[i],
                &mut self.params,
                &mut self.work,
                x,
                geoms[i],
                &d_out,
                (i > 0).then_some(&mut d_in),
            );
            std::mem::swap(&mut d_out, &mut d_in);
            self.work.d_in = d_in;
        }
        self.work.d_out = d_out;
        Ok(())
    }

    /// One cross-entropy step on the head: forward, loss (label smoothing as PyTorch),
    /// backward, SGD update. Returns the loss (before the update) and the correct count.
    pub(crate) fn step_cross_entropy(
        &mut self,
        input: &[f32],
        (n, h, w): (usize, usize, usize),
        labels: &[usize],
        smoothing: f64,
        sgd: SgdSettings,
    ) -> Result<CeStats> {
        let Some((wi, bi)) = self.head else {
            return Err(Error::Internal(
                "cross-entropy step: the network has no head".into(),
            ));
        };
        let k = self.params[wi].shape[0];
        if labels.len() != n || labels.iter().any(|&l| l >= k) {
            return Err(Error::InvalidArgument(format!(
                "training batch: {} labels for {n} images, classes 0..{k}",
                labels.len()
            )));
        }
        self.forward(input, n, h, w)?;
        let d = self.feature_dim();
        let features = &self.features;
        let work = &mut self.work;
        work.logits.resize(n * k, 0.0);
        // logits = F W^T + b
        let (wv, bv) = (&self.params[wi].value, &self.params[bi].value);
        gemm(
            &mut work.logits,
            (n, k),
            false,
            Mat::rows(features, n, d),
            Mat::rows(wv, k, d).t(),
            Parallelism::None,
        );
        let mut loss = 0.0;
        let mut correct = 0;
        for (row, &label) in work.logits.chunks_exact_mut(k).zip(labels) {
            let (mut best, mut max) = (0, f32::NEG_INFINITY);
            for (j, (v, b)) in row.iter_mut().zip(bv).enumerate() {
                *v += b;
                if *v > max {
                    (best, max) = (j, *v);
                }
            }
            correct += usize::from(best == label);
            let max = f64::from(max);
            let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
            let lse = max + sum.ln();
            // loss = -sum_j t_j log p_j, t = (1 - eps) onehot + eps / K; dlogit = (p - t) / n
            let off = smoothing / k as f64;
            for (j, v) in row.iter_mut().enumerate() {
                let logp = f64::from(*v) - lse;
                let t = off + if j == label { 1.0 - smoothing } else { 0.0 };
                loss -= t * logp;
                *v = ((logp.exp() - t) / n as f64) as f32;
            }
        }
        let loss = loss / n as f64;
        // dW = dlogits^T F, db = column sums, dF = dlogits W.
        work.d_features.resize(n * d, 0.0);
        gemm(
            &mut work.d_features,
            (n, d),
            false,
            Mat::rows(&work.logits, n, k),
            Mat::rows(wv, k, d),
            Parallelism::None,
        );
        let mut dw = std::mem::take(&mut self.params[wi].grad);
        gemm(
            &mut dw,
            (k, d),
            false,
            Mat::rows(&work.logits, n, k).t(),
            Mat::rows(features, n, d),
            Parallelism::None,
        );
        self.params[wi].grad = dw;
        let db = &mut self.params[bi].grad;
        db.fill(0.0);
        for row in work.logits.chunks_exact(k) {
            for (g, v) in db.iter_mut().zip(row) {
                *g += v;
            }
        }
        let d_features = std::mem::take(&mut self.work.d_features);
        let result = self.backward(&d_features);
        self.work.d_features = d_features;
        result?;
        self.sgd_step(sgd);
        Ok(CeStats { loss, correct })
    }

    /// SGD with momentum and weight decay over every trained tensor (PyTorch semantics:
    /// `g = grad + wd p; buf = momentum buf + g` (`buf = g` on the first step); `p -= lr buf`).
    pub(crate) fn sgd_step(&mut self, s: SgdSettings) {
        let (lr, mom, wd) = (s.lr as f32, s.momentum as f32, s.weight_decay as f32);
        self.params.par_iter_mut().for_each(|p| {
            if p.kind != ParamKind::Weight {
                return;
            }
            if s.momentum == 0.0 {
                for (v, g) in p.value.iter_mut().zip(&p.grad) {
                    *v -= lr * (g + wd * *v);
                }
                return;
            }
            match &mut p.momentum {
                Some(buf) => {
                    for ((v, g), b) in p.value.iter_mut().zip(&p.grad).zip(buf.iter_mut()) {
                        *b = mom * *b + (g + wd * *v);
                        *v -= lr * *b;
                    }
                }
                None => {
                    let mut buf = vec![0.0; p.value.len()];
                    for ((v, g), b) in p.value.iter_mut().zip(&p.grad).zip(buf.iter_mut()) {
                        *b = g + wd * *v;
                        *v -= lr * *b;
                    }
                    p.momentum = Some(buf);
                }
            }
        });
    }
}

/// Optimiser settings of one step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SgdSettings {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

fn global_avg_pool_backward(d_features: &[f32], g: Geom, c: usize, out: &mut [f32]) {
    let hw = g.h * g.w;
    let inv = 1.0 / hw as f32;
    for (img, df) in out.chunks_exact_mut(hw * c).zip(d_features.chunks_exact(c)) {
        for row in img.chunks_exact_mut(c) {
            for (o, v) in row.iter_mut().zip(df) {
                *o = v * inv;
            }
        }
    }
}

fn block_forward(
    block: &mut Block,
    params: &mut [Param],
    work: &mut Work,
    x: &[f32],
    g: Geom,
    out: &mut Vec<f32>,
) {
    let p = g.pixels();
    let slope = block.slope();
    let c = block.c_out();
    let pools = block.pools();
    match block {
        Block::Conv4 { unit, act, .. } => {
            unit.forward(params, work, x, g);
            act.resize(p * c, 0.0);
            normalize_activate(unit, None, slope, act);
        }
        Block::ResNet { units, a1, a2, act } => {
            let [u1, u2, u3, us] = &mut **units;
            u1.forward(params, work, x, g);
            a1.resize(p * c, 0.0);
            normalize_activate(u1, None, slope, a1);
            u2.forward(params, work, a1, g);
            a2.resize(p * c, 0.0);
            normalize_activate(u2, None, slope, a2);
            u3.forward(params, work, a2, g);
            us.forward(params, work, x, g);
            act.resize(p * c, 0.0);
            normalize_activate(u3, Some(us), slope, act);
        }
    }
    let act = match block {
        Block::Conv4 { act, .. } | Block::ResNet { act, .. } => act,
    };
    if pools {
        out.resize(g.pooled().pixels() * c, 0.0);
        max_pool_2x2(act, (g.n, g.h, g.w), c, out);
    } else {
        out.resize(p * c, 0.0);
        out.copy_from_slice(act);
    }
}

/// Backward of one block: `d_out` is the gradient of its output; fills its parameters'
/// gradients and, when asked, the gradient of its input `x`.
fn block_backward(
    block: &mut Block,
    params: &mut [Param],
    work: &mut Work,
    x: &[f32],
    g: Geom,
    d_out: &[f32],
    d_in: Option<&mut Vec<f32>>,
) {
    let p = g.pixels();
    let slope = block.slope();
    let c = block.c_out();
    let pools = block.pools();
    let mut dz = std::mem::take(&mut work.dz);
    dz.resize(p * c, 0.0);
    let act = match block {
        Block::Conv4 { act, .. } | Block::ResNet { act, .. } => act,
    };
    unpool_activation_backward(act, g, c, pools, slope, d_out, &mut dz);
    match block {
        Block::Conv4 { unit, .. } => {
            unit.bn_backward(params, work, GradIn::Direct(&dz));
            unit.weight_backward(params, work, x, g);
            if let Some(d_in) = d_in {
                d_in.resize(p * unit.c_in, 0.0);
                unit.input_backward(params, work, g, d_in, false);
            }
        }
        Block::ResNet { units, a1, a2, .. } => {
            let [u1, u2, u3, us] = &mut **units;
            u3.bn_backward(params, work, GradIn::Direct(&dz));
            us.bn_backward(params, work, GradIn::Direct(&dz));
            u3.weight_backward(params, work, a2, g);
            us.weight_backward(params, work, x, g);
            let mut d_a = std::mem::take(&mut work.d_a);
            d_a.resize(p * c, 0.0);
            u3.input_backward(params, work, g, &mut d_a, false);
            let grad = GradIn::Activation {
                d_a: &d_a,
                a: a2,
                slope,
            };
            u2.bn_backward(params, work, grad);
            u2.weight_backward(params, work, a1, g);
            u2.input_backward(params, work, g, &mut d_a, false);
            let grad = GradIn::Activation {
                d_a: &d_a,
                a: a1,
                slope,
            };
            u1.bn_backward(params, work, grad);
            u1.weight_backward(params, work, x, g);
            work.d_a = d_a;
            if let Some(d_in) = d_in {
                d_in.resize(p * u1.c_in, 0.0);
                u1.input_backward(params, work, g, d_in, false);
                us.input_backward(params, work, g, d_in, true);
            }
        }
    }
    work.dz = dz;
}

/// `out = act(y1 * scale1 + shift1 [+ y2 * scale2 + shift2])`, `act(v) = max(v, slope v)`.
fn normalize_activate(u: &Unit, residual: Option<&Unit>, slope: f32, out: &mut [f32]) {
    let c = u.c_out;
    let rows = (MIN_ROWS_PER_TASK * 4).max(1);
    out.par_chunks_mut(rows * c)
        .enumerate()
        .for_each(|(i, dst)| {
            let start = i * rows * c;
            let y = &u.y[start..start + dst.len()];
            match residual {
                None => {
                    for (drow, yrow) in dst.chunks_exact_mut(c).zip(y.chunks_exact(c)) {
                        for (((o, v), s), t) in
                            drow.iter_mut().zip(yrow).zip(&u.scale).zip(&u.shift)
                        {
                            let z = v * s + t;
                            *o = z.max(slope * z);
                        }
                    }
                }
                Some(r) => {
                    let y2 = &r.y[start..start + dst.len()];
                    for ((drow, yrow), y2row) in dst
                        .chunks_exact_mut(c)
                        .zip(y.chunks_exact(c))
                        .zip(y2.chunks_exact(c))
                    {
                        let (s1, t1, s2, t2) =
                            (&u.scale[..c], &u.shift[..c], &r.scale[..c], &r.shift[..c]);
                        let (yrow, y2row) = (&yrow[..c], &y2row[..c]);
                        for (j, o) in drow[..c].iter_mut().enumerate() {
                            let z = yrow[j] * s1[j] + t1[j] + (y2row[j] * s2[j] + t2[j]);
                            *o = z.max(slope * z);
                        }
                    }
                }
            }
        });
}

/// The gradient BatchNorm's backward starts from: given directly, or as the gradient of the
/// activation that follows it, `d_a * act'(a)` with `a = max(z, slope z)` (so `a > 0`
/// exactly when `z > 0`), computed on the fly.
#[derive(Clone, Copy)]
enum GradIn<'a> {
    Direct(&'a [f32]),
    Activation {
        d_a: &'a [f32],
        a: &'a [f32],
        slope: f32,
    },
}

impl GradIn<'_> {
    /// Rows `range` (of `c` values each) of the gradient, computed into `buf` when needed.
    fn rows<'b>(&'b self, start: usize, len: usize, buf: &'b mut [f32]) -> &'b [f32] {
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

/// Gradient of the activation's input from the gradient of the (pooled) block output: the
/// pooled gradient goes to the first maximum of each window in row-major order (PyTorch's
/// choice), times the activation's derivative; pixels outside every window get 0.
fn unpool_activation_backward(
    a: &[f32],
    g: Geom,
    c: usize,
    pools: bool,
    slope: f32,
    d_out: &[f32],
    dz: &mut [f32],
) {
    if !pools {
        dz.par_chunks_mut(MIN_ROWS_PER_TASK * c)
            .zip(a.par_chunks(MIN_ROWS_PER_TASK * c))
            .zip(d_out.par_chunks(MIN_ROWS_PER_TASK * c))
            .for_each(|((dz, a), d)| {
                for ((o, a), d) in dz.iter_mut().zip(a).zip(d) {
                    *o = if *a > 0.0 { *d } else { slope * d };
                }
            });
        return;
    }
    max_pool_2x2_leaky_backward(a, (g.n, g.h, g.w), c, slope, d_out, dz);
}

/// Contiguous row ranges, one per thread (fixed for a given thread count).
pub(crate) fn thread_ranges(rows: usize) -> Vec<std::ops::Range<usize>> {
    let t = rayon::current_num_threads().max(1).min(rows.max(1));
    let per = rows.div_ceil(t);
    (0..t)
        .map(|i| (i * per).min(rows)..((i + 1) * per).min(rows))
        .collect()
}

impl Unit {
    /// Rows of the im2col matrix.
    fn depth(&self) -> usize {
        self.k * self.k * self.c_in
    }

    /// Whether the 3x3 products run as Winograd F(2x2, 3x3) (inference's rule too).
    fn winograd(&self) -> bool {
        mgecl_kernels::winograd::applies(self.k, self.c_in, self.c_out)
    }

    /// Conv (plus bias) into `y`, batch statistics, running statistics, `scale`/`shift`.
    fn forward(&mut self, params: &mut [Param], work: &mut Work, x: &[f32], g: Geom) {
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
    fn bn_backward(&mut self, params: &mut [Param], work: &mut Work, grad: GradIn<'_>) {
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
    fn weight_backward(&self, params: &mut [Param], work: &mut Work, x: &[f32], g: Geom) {
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
    fn input_backward(
        &self,
        params: &[Param],
        work: &mut Work,
        g: Geom,
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
    g: Geom,
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
