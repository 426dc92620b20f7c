//! Differentiable building blocks for training, written as plain functions of tensors so that
//! each one can be checked against finite differences (tests/train_gradients.rs).
//!
//! candle 0.11's `max_pool2d` backward is wrong (it was measured against PyTorch's), so max-pooling is
//! expressed as a reshape and two `max` reductions, whose backward is correct.

use candle_core::{DType, Tensor, D};

use crate::error::Result;

/// 2x2 max-pool with stride 2, floor mode (an odd last row/column is dropped, as PyTorch).
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (h2, w2) = (h / 2, w / 2);
    let x = if h % 2 == 1 || w % 2 == 1 {
        x.narrow(2, 0, 2 * h2)?.narrow(3, 0, 2 * w2)?
    } else {
        x.clone()
    };
    Ok(x.reshape((b, c, h2, 2, w2, 2))?.max(5)?.max(3)?)
}

/// Global average pool: (B, C, H, W) -> (B, C).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean((2, 3))?)
}

/// LeakyReLU: `max(x, slope * x)` for 0 <= slope < 1.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    Ok(x.maximum(&x.affine(slope, 0.0)?)?)
}

/// 3x3 (padding 1) or 1x1 (padding 0) convolution, stride 1, with an optional bias.
///
/// Written as im2col and one matrix product, not with candle's `conv2d`: candle computes
/// conv2d's input gradient with a naive `conv_transpose2d` (slow on the CPU), while the
/// backward of this form is two GEMMs and a col2im. On CPU im2col is a kernel of
/// `cpu_ops`; elsewhere nine shifted views of the padded input.
pub fn conv(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    conv_impl(x, weight, bias, x.device().is_cpu())
}

/// [`conv`] with the device-independent im2col (for tests comparing both paths).
pub fn conv_composite(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    conv_impl(x, weight, bias, false)
}

fn conv_impl(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cpu_kernel: bool,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (o, _, k, _) = weight.dims4()?;
    let cols = if k == 1 {
        x.reshape((b, c, h * w))?
    } else if cpu_kernel {
        x.contiguous()?.apply_op1(super::cpu_ops::Im2Col {
            dims: (b, c, h, w),
            k,
        })?
    } else {
        let p = k / 2;
        let padded = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
        let mut shifted = Vec::with_capacity(k * k);
        for dy in 0..k {
            for dx in 0..k {
                shifted.push(padded.narrow(2, dy, h)?.narrow(3, dx, w)?);
            }
        }
        // (B, C, k*k, H, W): row index c * k*k + dy * k + dx matches the weight layout.
        Tensor::stack(&shifted, 2)?.reshape((b, c * k * k, h * w))?
    };
    let y = weight
        .reshape((o, c * k * k))?
        .broadcast_matmul(&cols)?
        .reshape((b, o, h, w))?;
    Ok(match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, o, 1, 1))?)?,
        None => y,
    })
}

/// Linear map `x W^T + b` (PyTorch layout: W is (out, in)).
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    Ok(x.matmul(&weight.t()?)?.broadcast_add(bias)?)
}

/// BatchNorm output and the batch statistics it used.
pub struct BatchNormOutput {
    /// Normalised, scaled and shifted input.
    pub y: Tensor,
    /// Per-channel batch mean (C), detached.
    pub mean: Tensor,
    /// Per-channel unbiased batch variance (C), detached: what PyTorch folds into
    /// `running_var`.
    pub var_unbiased: Tensor,
}

/// Training-mode BatchNorm over (N, H, W): normalises with the batch mean and the biased
/// batch variance, as PyTorch does. On CPU a fused kernel of `cpu_ops`.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<BatchNormOutput> {
    if !x.device().is_cpu() {
        return batch_norm_train_composite(x, gamma, beta, eps);
    }
    let x = x.contiguous()?;
    let stats = x.detach().apply_op1_no_bwd(&super::cpu_ops::BatchStats)?;
    let y = x.apply_op3(gamma, beta, super::cpu_ops::BatchNormTrain { eps })?;
    Ok(BatchNormOutput {
        y,
        mean: stats.get(0)?,
        var_unbiased: stats.get(1)?,
    })
}

/// [`batch_norm_train`] from candle tensor operations (any device).
pub fn batch_norm_train_composite(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<BatchNormOutput> {
    let (b, c, h, w) = x.dims4()?;
    let n = (b * h * w) as f64;
    let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered
        .sqr()?
        .mean_keepdim(0)?
        .mean_keepdim(2)?
        .mean_keepdim(3)?;
    let inv_std = (var.clone() + eps)?.sqrt()?.recip()?;
    let y = centered
        .broadcast_mul(&inv_std)?
        .broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?
        .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
    let unbias = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
    Ok(BatchNormOutput {
        y,
        mean: mean.flatten_all()?.detach(),
        var_unbiased: (var.flatten_all()? * unbias)?.detach(),
    })
}

/// Evaluation-mode BatchNorm with running statistics.
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    let shape = (1, c, 1, 1);
    let scale = (gamma / (var + eps)?.sqrt()?)?;
    let shift = (beta - (mean * &scale)?)?;
    Ok(x.broadcast_mul(&scale.reshape(shape)?)?
        .broadcast_add(&shift.reshape(shape)?)?)
}

/// L2-normalises rows of a (N, D) tensor.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

/// Row-wise log-softmax of (N, K) logits.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// One-hot (N, K) matrix of `labels` in the dtype of `like`.
pub fn one_hot(labels: &[usize], k: usize, like: &Tensor) -> Result<Tensor> {
    let mut v = vec![0f32; labels.len() * k];
    for (i, &l) in labels.iter().enumerate() {
        v[i * k + l] = 1.0;
    }
    Ok(Tensor::from_vec(v, (labels.len(), k), like.device())?.to_dtype(like.dtype())?)
}

/// How many rows' argmax is their label.
pub fn correct_predictions(logits: &Tensor, labels: &[usize]) -> Result<usize> {
    let pred: Vec<u32> = logits.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1()?;
    Ok(pred
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p as usize == **l)
        .count())
}
