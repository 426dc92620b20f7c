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

mod block;
mod unit;
mod winograd;

use rayon::prelude::*;

use block::{block_backward, block_forward, global_avg_pool_backward, Block};
use unit::Unit;

use crate::error::{Error, Result};
use crate::loss::{cross_entropy_backward, distillation_backward};
use crate::net::{
    EncoderSpec, NamedValues, ParamKind, HEAD_BIAS, HEAD_WEIGHT, LEAKY_SLOPE, ROTATIONS,
    ROTATION_HEAD_BIAS, ROTATION_HEAD_WEIGHT,
};
use crate::optim::{sgd_update, SgdSettings};
use mgecl::internals::ConvBn;
use mgecl_kernels::layout::nchw_to_nhwc;
pub(crate) use mgecl_kernels::layout::Shape;
use mgecl_kernels::layout::{ohwi_to_oihw, oihw_to_ohwi};
use mgecl_kernels::pool::global_avg_pool;
use mgecl_kernels::{gemm, Mat, Parallelism};

const BN_MOMENTUM: f64 = 0.1;
const BN_EPS: f64 = mgecl::model::DEFAULT_BN_EPS;
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

/// Contiguous row ranges, one per thread (fixed for a given thread count).
pub(crate) fn thread_ranges(rows: usize) -> Vec<std::ops::Range<usize>> {
    let t = rayon::current_num_threads().max(1).min(rows.max(1));
    let per = rows.div_ceil(t);
    (0..t)
        .map(|i| (i * per).min(rows)..((i + 1) * per).min(rows))
        .collect()
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
    /// Head: logits (then their gradient), their distillation gradient, feature gradient.
    logits: Vec<f32>,
    d_distill: Vec<f32>,
    d_features: Vec<f32>,
}

/// What the class head's logits are fitted to in a cross-entropy step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClassTargets<'a> {
    /// Each image's class.
    pub labels: &'a [usize],
    /// Label smoothing of the cross-entropy.
    pub smoothing: f64,
    /// A teacher's logits (N, K), their temperature and the distillation's weight `w`: the
    /// head's loss is then `(1 - w) CE + w T^2 KL` ([`crate::loss::distillation`]).
    pub teacher: Option<(&'a [f32], f64, f64)>,
}

/// A trainable encoder (and optional linear head) on the CPU.
pub(crate) struct CpuNet {
    spec: EncoderSpec,
    params: Vec<Param>,
    blocks: Vec<Block>,
    /// `classifier.weight`, `classifier.bias` (None: no head).
    head: Option<(usize, usize)>,
    /// `rotation.weight`, `rotation.bias` (None: no rotation head).
    rotation: Option<(usize, usize)>,
    /// Network input (NHWC) and each block's output (pooled where the block pools).
    input: Vec<f32>,
    outputs: Vec<Vec<f32>>,
    features: Vec<f32>,
    geom: Option<Shape>,
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
                p.value = oihw_to_ohwi(&p.value, d);
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
                Some(d) => oihw_to_ohwi(&values, d),
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
            let slope = block.activation.negative_slope(LEAKY_SLOPE) as f32;
            blocks.push(Block::new(
                block.units.iter().map(unit).collect::<Result<_>>()?,
                block.shortcut.as_ref().map(unit).transpose()?,
                slope,
                block.pool,
            ));
        }
        let linear_head = |weight: &str, bias: &str| match (find(weight), find(bias)) {
            (Ok(w), Ok(b)) => {
                let d = spec.feature_dim();
                let k = params[w].shape.first().copied().unwrap_or(0);
                if params[w].shape != [k, d] || params[b].shape != [k] {
                    return Err(Error::Internal(format!("{weight}: bad shape")));
                }
                Ok(Some((w, b)))
            }
            _ => Ok(None),
        };
        let head = linear_head(HEAD_WEIGHT, HEAD_BIAS)?;
        let rotation = linear_head(ROTATION_HEAD_WEIGHT, ROTATION_HEAD_BIAS)?;
        Ok(CpuNet {
            spec: spec.clone(),
            params,
            outputs: (0..blocks.len()).map(|_| Vec::new()).collect(),
            blocks,
            head,
            rotation,
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
            Some(d) => ohwi_to_oihw(v, d),
            None => v.to_vec(),
        }
    }

    /// Feature dimension.
    pub(crate) fn feature_dim(&self) -> usize {
        self.spec.feature_dim()
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
        // Each pooling block halves the size; the last block's output needs a pixel.
        let mut g = Shape { n, h, w };
        for b in &self.blocks {
            if b.pools() {
                g = g.pooled();
            }
        }
        if g.h == 0 || g.w == 0 {
            return Err(Error::InvalidArgument(format!(
                "training batch: {h}x{w} images are too small for this network"
            )));
        }
        self.input.resize(n * h * w * c, 0.0);
        nchw_to_nhwc(input, (n, c, h * w), &mut self.input);
        let mut g = Shape { n, h, w };
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
        let last = self.outputs.last().map_or(&[][..], |o| &o[..]);
        global_avg_pool(last, (g.n, g.h * g.w), d, &mut self.features);
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
        // Geometry at each block's input, and at the last one's output.
        let mut geoms = vec![g0];
        for block in &self.blocks {
            let g = geoms[geoms.len() - 1];
            geoms.push(if block.pools() { g.pooled() } else { g });
        }
        let g_last = geoms[self.blocks.len()];
        let work = &mut self.work;
        let mut d_out = std::mem::take(&mut work.d_out);
        d_out.resize(g_last.pixels() * d, 0.0);
        global_avg_pool_backward(d_features, g_last, d, &mut d_out);
        for i in (0..self.blocks.len()).rev() {
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

    /// One cross-entropy step on the head: forward, loss (label smoothing as PyTorch, and
    /// distillation when `class` has a teacher), backward, SGD. With `rotation` = (each
    /// image's quarter turn, weight) the rotation head's cross-entropy (no smoothing), times
    /// the weight, joins the loss. The loss returned is the total; `correct` counts class
    /// predictions only.
    pub(crate) fn step_cross_entropy(
        &mut self,
        input: &[f32],
        (n, h, w): (usize, usize, usize),
        class: ClassTargets<'_>,
        rotation: Option<(&[usize], f64)>,
        sgd: SgdSettings,
    ) -> Result<CeStats> {
        let labels = class.labels;
        let Some(head) = self.head else {
            return Err(Error::Internal(
                "cross-entropy step: the network has no head".into(),
            ));
        };
        let k = self.params[head.0].shape[0];
        if labels.len() != n || labels.iter().any(|&l| l >= k) {
            return Err(Error::InvalidArgument(format!(
                "training batch: {} labels for {n} images, classes 0..{k}",
                labels.len()
            )));
        }
        if let Some((teacher, _, _)) = class.teacher {
            if teacher.len() != n * k {
                return Err(Error::InvalidArgument(format!(
                    "training batch: {} teacher logits for {n} images of {k} classes",
                    teacher.len()
                )));
            }
        }
        let rotation = match (rotation, self.rotation) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Error::Internal(
                    "rotation step: the network has no rotation head".into(),
                ))
            }
            (Some((turns, weight)), Some(rot_head)) => {
                if turns.len() != n || turns.iter().any(|&t| t >= ROTATIONS) {
                    return Err(Error::InvalidArgument(format!(
                        "training batch: {} quarter turns for {n} images",
                        turns.len()
                    )));
                }
                Some((rot_head, turns, weight))
            }
        };
        self.forward(input, n, h, w)?;
        self.work.d_features.clear();
        self.work.d_features.resize(n * self.feature_dim(), 0.0);
        let (mut loss, correct) = self.head_backward(head, class, 1.0);
        match (rotation, self.rotation) {
            (Some((rot_head, turns, weight)), _) => {
                let targets = ClassTargets {
                    labels: turns,
                    smoothing: 0.0,
                    teacher: None,
                };
                loss += weight * self.head_backward(rot_head, targets, weight).0;
            }
            // An unused rotation head must not step on an old gradient.
            (None, Some((wi, bi))) => {
                self.params[wi].grad.fill(0.0);
                self.params[bi].grad.fill(0.0);
            }
            (None, None) => {}
        }
        let d_features = std::mem::take(&mut self.work.d_features);
        let result = self.backward(&d_features);
        self.work.d_features = d_features;
        result?;
        self.sgd_step(sgd);
        Ok(CeStats { loss, correct })
    }

    /// A linear head's loss on the current features (cross-entropy, and distillation when
    /// `targets` has a teacher), its gradient scaled by `weight`: sets the head's parameter
    /// gradients and adds the features' gradient to `work.d_features`. Returns the unscaled
    /// mean loss and the correct predictions.
    fn head_backward(
        &mut self,
        (wi, bi): (usize, usize),
        targets: ClassTargets<'_>,
        weight: f64,
    ) -> (f64, usize) {
        let labels = targets.labels;
        let (n, k, d) = (labels.len(), self.params[wi].shape[0], self.feature_dim());
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
        for row in work.logits.chunks_exact_mut(k) {
            for (v, b) in row.iter_mut().zip(bv) {
                *v += b;
            }
        }
        let mut distill_loss = None;
        if let Some((teacher, temperature, share)) = targets.teacher {
            work.d_distill.clear();
            work.d_distill.extend_from_slice(&work.logits);
            let kd = distillation_backward(&mut work.d_distill, teacher, k, temperature);
            distill_loss = Some((kd, share));
        }
        let (mut loss, correct) =
            cross_entropy_backward(&mut work.logits, labels, k, targets.smoothing);
        if let Some((kd, share)) = distill_loss {
            loss = (1.0 - share) * loss + share * kd;
            let (ce_share, share) = ((1.0 - share) as f32, share as f32);
            for (g, kd) in work.logits.iter_mut().zip(&work.d_distill) {
                *g = ce_share * *g + share * kd;
            }
        }
        if weight != 1.0 {
            let weight = weight as f32;
            work.logits.iter_mut().for_each(|v| *v *= weight);
        }
        // dW = dlogits^T F, db = column sums, dF += dlogits W.
        gemm(
            &mut work.d_features,
            (n, d),
            true,
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
        for row in self.work.logits.chunks_exact(k) {
            for (g, v) in db.iter_mut().zip(row) {
                *g += v;
            }
        }
        (loss, correct)
    }

    /// SGD with momentum and weight decay over every trained tensor ([`sgd_update`]).
    pub(crate) fn sgd_step(&mut self, settings: SgdSettings) {
        self.params.par_iter_mut().for_each(|p| {
            if p.kind == ParamKind::Weight {
                sgd_update(&mut p.value, &p.grad, &mut p.momentum, settings);
            }
        });
    }
}
